"""The manifest: how a negatives dataset was made, in one JSON file written last.

It is the dataset's provenance record (config and hash, model, input fingerprint, every shard
with its checksum) and its summary (per-family counts and coverage, skips and rejects, timings);
``inspect``, ``report`` and ``publish`` read it instead of re-deriving these figures.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.contract.schema import SCHEMA_VERSION
from pipeline.core.errors import HardnegError

MANIFEST_VERSION = "1"


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
) -> dict[str, Any]:
    """The manifest of a finished run; ``cfg`` is its ``GenerateConfig`` (duck-typed: this layer sits below it)."""
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
    return {
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
    }


def load_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    """The manifest stored beside a dataset's shards."""
    p = Path(dataset_dir) / "manifest.json"
    if not p.exists():
        raise HardnegError(f"{dataset_dir} has no manifest.json; is it a hardneg dataset folder?")
    return json.loads(p.read_text(encoding="utf-8"))
