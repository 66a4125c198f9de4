"""The shard files of a dataset folder: listing them and reading their hardneg metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


def list_shards(dataset_dir: str | Path) -> dict[str, list[Path]]:
    """``{split: [shard paths]}`` of a dataset folder (``<dir>/<split>/*.parquet``), sorted."""
    root = Path(dataset_dir)
    out: dict[str, list[Path]] = {}
    if not root.is_dir():
        return out
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        files = sorted(sub.glob("*.parquet"))
        if files:
            out[sub.name] = files
    return out


def shard_meta(path: str | Path) -> dict[str, Any]:
    """The hardneg metadata of a shard without reading its rows."""
    from pipeline.contract.schema import read_meta

    return read_meta(pq.read_schema(path))
