"""The manifest: how a negatives dataset was made, in one JSON file written last.

It is the dataset's provenance record (config and hash, model, input fingerprint, every shard
with its checksum) and its summary (per-family counts and coverage, skips and rejects, timings);
``inspect``, ``report`` and ``publish`` read it instead of re-deriving these figures.

In memory it is a typed :class:`Manifest` (sections :class:`SourceInfo`, :class:`SpacyInfo`,
:class:`ShardEntry`, :class:`FamilyCounts`, :class:`Timings`, :class:`PlatformInfo`); readers use
attributes, never string keys. Invariants of the JSON form:

- ``Manifest.from_dict(d).to_dict() == d`` with the same key order, for any manifest a hardneg
  writer produced: keys are written in the order they were read (fresh ones in field order);
- a key this version does not know (a newer writer's) is kept, in place, and written back; it never
  stops a reader. A known key that was absent stays absent. A section of the wrong JSON type (a
  list where a mapping belongs) is a :class:`SourceError` that names the key.
- ``config`` stays plain JSON: it is the resolved ``GenerateConfig`` of a layer above this one, kept
  as the mapping that was hashed.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

from pipeline.contract.schema import SCHEMA_VERSION
from pipeline.core.errors import HardnegError, SourceError

MANIFEST_VERSION = "1"
MANIFEST_FILE = "manifest.json"

R = TypeVar("R", bound="_Record")
_Convert = Callable[[Any, str], Any]


def _plain(value: Any) -> Any:
    """A JSON-ready deep copy: records become dicts, containers are rebuilt."""
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass
class _Record:
    """Known keys as typed fields; unknown keys kept in ``_extra``; ``_order`` is the key order read."""

    _extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False)
    _order: tuple[str, ...] = field(default=(), kw_only=True, repr=False, compare=False)
    #: key -> converter of its JSON value (sections, lists of sections, checked containers)
    _NESTED: ClassVar[dict[str, _Convert]] = {}

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if not f.name.startswith("_"))

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str = "manifest") -> R:
        if not isinstance(data, dict):
            raise SourceError(f"{where} must be a JSON object, got {type(data).__name__}")
        known = set(cls._keys())
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                convert = cls._NESTED.get(key)
                kwargs[key] = convert(value, f"{where}.{key}") if convert else value
            else:
                extra[key] = value
        return cls(**kwargs, _extra=extra, _order=tuple(data))

    def to_dict(self) -> dict[str, Any]:
        known = set(self._keys())
        order = self._order or self._keys()
        out: dict[str, Any] = {}
        for key in (*order, *(k for k in self._extra if k not in order)):
            if key in known:
                out[key] = _plain(getattr(self, key))
            elif key in self._extra:
                out[key] = _plain(self._extra[key])
        return out


def _section(cls: type[_Record]) -> _Convert:
    return cls.from_dict


def _list_of(cls: type[_Record]) -> _Convert:
    def convert(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise SourceError(f"{where} must be a JSON list, got {type(value).__name__}")
        return [cls.from_dict(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return convert


def _dict_of(cls: type[_Record]) -> _Convert:
    def convert(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise SourceError(f"{where} must be a JSON object, got {type(value).__name__}")
        return {k: cls.from_dict(v, f"{where}.{k}") for k, v in value.items()}

    return convert


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SourceError(f"{where} must be a JSON object, got {type(value).__name__}")
    return dict(value)


def _sequence(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SourceError(f"{where} must be a JSON list, got {type(value).__name__}")
    return list(value)


@dataclass
class SourceInfo(_Record):
    """Where the captions came from; ``fingerprint`` identifies the input's content."""

    name: str = ""
    path: str = ""
    format: str = ""
    fingerprint: str = ""


@dataclass
class SpacyInfo(_Record):
    """The spaCy pipeline that parsed the captions (``name``/``version`` as loaded, ``package`` as installed)."""

    name: str = ""
    version: str = ""
    spacy_version: str | None = None
    components: list[str] = field(default_factory=list)
    package: str = ""
    package_version: str | None = None

    _NESTED: ClassVar[dict[str, _Convert]] = {"components": _sequence}


@dataclass
class ShardEntry(_Record):
    """One shard file, relative to the dataset folder, with what a reader checks it against."""

    path: str = ""
    split: str = ""
    #: None (unknown) skips the row-count check; "" likewise skips the checksum
    rows: int | None = None
    bytes: int = 0
    sha256: str = ""


@dataclass
class FamilyCounts(_Record):
    """One family's figures: kept negatives, coverage, and what the filters rejected (by reason)."""

    negatives: int = 0
    captions_covered: int = 0
    coverage: float = 0.0
    negatives_per_caption: float = 0.0
    generated: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    _NESTED: ClassVar[dict[str, _Convert]] = {"rejected": _mapping}


@dataclass
class Timings(_Record):
    """Seconds per phase; ``captions_per_second`` is None when shards were resumed (not comparable)."""

    read_seconds: float | None = None
    generate_seconds: float | None = None
    total_seconds: float | None = None
    shards_resumed: int = 0
    parse_and_rules_seconds: float = 0.0
    captions_per_second: float | None = None
    workers: int = 0


@dataclass
class PlatformInfo(_Record):
    python: str = ""
    machine: str = ""
    #: speed only: compiled and pure-Python rules write identical shards
    rules_compiled: bool = False


@dataclass
class Manifest(_Record):
    """A dataset's manifest; see the module docstring for the JSON invariants."""

    manifest_version: str = MANIFEST_VERSION
    name: str = ""
    schema_version: str = SCHEMA_VERSION
    hardneg_version: str = ""
    created: str = ""
    #: the resolved generation config (plain JSON, as hashed)
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    source: SourceInfo = field(default_factory=SourceInfo)
    spacy: SpacyInfo = field(default_factory=SpacyInfo)
    output_dir: str = ""
    #: rows per split
    splits: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    shards: list[ShardEntry] = field(default_factory=list)
    families: dict[str, FamilyCounts] = field(default_factory=dict)
    #: where the plausibility scores' statistics came from ("source": "corpus sample" or "none"),
    #: how many captions were counted, and the classes used (see docs/negative-quality.md)
    statistics: dict[str, Any] = field(default_factory=dict)
    #: source rows skipped, by reason
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_total: int = 0
    skip_examples: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    platform: PlatformInfo = field(default_factory=PlatformInfo)

    _NESTED: ClassVar[dict[str, _Convert]] = {
        "config": _mapping,
        "source": _section(SourceInfo),
        "spacy": _section(SpacyInfo),
        "splits": _mapping,
        "shards": _list_of(ShardEntry),
        "families": _dict_of(FamilyCounts),
        "statistics": _mapping,
        "skipped": _mapping,
        "skip_examples": _sequence,
        "timings": _section(Timings),
        "platform": _section(PlatformInfo),
    }


def build_manifest(
    *,
    cfg: Any,
    identity: dict[str, Any],
    run_hash: str,
    model_name: str,
    shards: list[dict[str, Any]],
    stats: list[Any],
    skipped: dict[str, int],
    skip_examples: list[str],
    source: str,
    timings: dict[str, Any],
    spacy: dict[str, Any],
    rules_compiled: bool,
    statistics: dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of a finished run; ``cfg`` is its ``GenerateConfig`` (duck-typed: this layer sits below it).

    The JSON form is spelled out here, key by key, since its order is what files on disk show.
    """
    rows_per_split: dict[str, int] = {}
    for s in shards:
        rows_per_split[s["split"]] = rows_per_split.get(s["split"], 0) + s["rows"]
    total = sum(rows_per_split.values())
    families: dict[str, Any] = {}
    for fam in cfg.families:
        kept = sum(st.candidates.get(fam, 0) for st in stats)
        covered = sum(st.covered.get(fam, 0) for st in stats)
        generated = sum(st.generated.get(fam, 0) for st in stats)
        rejects: dict[str, int] = {}
        for st in stats:
            for reason, n in st.rejects.get(fam, {}).items():
                rejects[reason] = rejects.get(reason, 0) + n
        families[fam] = {
            "negatives": kept,
            "captions_covered": covered,
            "coverage": round(covered / total, 4) if total else 0.0,
            "negatives_per_caption": round(kept / total, 4) if total else 0.0,
            "generated": generated,
            "rejected": dict(sorted(rejects.items())),
        }
    parse_seconds = sum(st.parse_seconds for st in stats)
    return Manifest.from_dict({
        "manifest_version": MANIFEST_VERSION,
        "name": cfg.name,
        "schema_version": SCHEMA_VERSION,
        "hardneg_version": identity["hardneg_version"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": identity["config"],
        "config_hash": run_hash,
        "source": {
            "name": source,
            "path": cfg.source.path,
            "format": cfg.source.format,
            "fingerprint": identity["input_fingerprint"],
        },
        "spacy": {**spacy, "package": model_name, "package_version": identity["spacy_model_version"]},
        "output_dir": str(cfg.out),
        "splits": rows_per_split,
        "rows": total,
        "shards": shards,
        "families": families,
        **({"statistics": statistics} if statistics is not None else {}),
        "skipped": dict(sorted(skipped.items())),
        "skipped_total": sum(skipped.values()),
        "skip_examples": skip_examples,
        "timings": {
            **timings,
            "parse_and_rules_seconds": round(parse_seconds, 3),
            "captions_per_second": round(total / timings["generate_seconds"], 1)
            if timings.get("generate_seconds") and timings.get("shards_resumed", 0) == 0
            else None,
            "workers": cfg.workers,
        },
        "platform": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            # speed only: compiled and pure-Python rules write identical shards
            "rules_compiled": rules_compiled,
        },
    })


def read_manifest(path: str | Path) -> Manifest:
    """A manifest file (``manifests/<name>.json`` or a dataset's ``manifest.json``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HardnegError(f"{path} does not exist") from None
    except (OSError, ValueError) as e:
        raise SourceError(f"{path}: not a readable manifest ({e})") from None
    try:
        return Manifest.from_dict(data)
    except SourceError as e:
        raise SourceError(f"{path}: {e}") from None


def load_manifest(dataset_dir: str | Path) -> Manifest:
    """The manifest stored beside a dataset's shards."""
    p = Path(dataset_dir) / MANIFEST_FILE
    if not p.exists():
        raise HardnegError(f"{dataset_dir} has no {MANIFEST_FILE}; is it a hardneg dataset folder?")
    return read_manifest(p)
