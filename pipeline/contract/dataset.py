"""Read a negatives dataset folder back: shards, rows, per-family counts, JSONL export."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq

from pipeline.contract.schema import CAPTION, FAMILY_COLUMNS, ID, IMAGE, check_version, read_meta
from pipeline.contract.shards import list_shards
from pipeline.core.atomic import atomic_path, write_json_atomic
from pipeline.core.errors import HardnegError

log = logging.getLogger(__name__)


def open_shards(dataset_dir: str | Path) -> dict[str, list[Path]]:
    shards = list_shards(dataset_dir)
    if not shards:
        raise HardnegError(f"no shards under {dataset_dir} (expected <dir>/<split>/*.parquet)")
    for files in shards.values():
        for f in files:
            try:
                check_version(read_meta(pq.read_schema(f)))
            except (ValueError, OSError) as e:  # a foreign or damaged Parquet file
                raise HardnegError(f"{f}: {e}") from e
    return shards


def iter_rows(dataset_dir: str | Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of every shard, split by split, in file order (batches, so memory stays flat)."""
    for files in open_shards(dataset_dir).values():
        for f in files:
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=1024, columns=columns):
                yield from batch.to_pylist()


def summarize(dataset_dir: str | Path, examples: int = 3, seed: int = 0) -> dict[str, Any]:
    """Counts per split and family, and a few seeded examples per family."""
    cols = [ID, CAPTION, *FAMILY_COLUMNS]
    per_split: dict[str, int] = {}
    fams = {f: {"negatives": 0, "captions_covered": 0} for f in FAMILY_COLUMNS}
    pool: dict[str, list[tuple[str, str]]] = {f: [] for f in FAMILY_COLUMNS}
    rng = random.Random(seed)
    seen = 0
    for split, files in open_shards(dataset_dir).items():
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024, columns=cols):
                for row in batch.to_pylist():
                    seen += 1
                    per_split[split] = per_split.get(split, 0) + 1
                    for fam in FAMILY_COLUMNS:
                        negs = row[fam] or []
                        fams[fam]["negatives"] += len(negs)
                        if negs:
                            fams[fam]["captions_covered"] += 1
                            # reservoir sample, so examples come from the whole dataset
                            item = (row[CAPTION], negs[0])
                            if len(pool[fam]) < examples:
                                pool[fam].append(item)
                            else:
                                j = rng.randrange(fams[fam]["captions_covered"])
                                if j < examples:
                                    pool[fam][j] = item
    for fam in FAMILY_COLUMNS:
        fams[fam]["coverage"] = round(fams[fam]["captions_covered"] / seen, 4) if seen else 0.0
        fams[fam]["examples"] = [{"caption": c, "negative": n} for c, n in pool[fam]]
    return {"rows": seen, "splits": per_split, "families": fams}


def export_jsonl(dataset_dir: str | Path, out_path: str | Path, families: list[str] | None = None) -> int:
    """Write one ``{"id", "image", "caption", "negatives": {family: [...]}}`` per line, atomically.

    ``image`` is the image path; embedded image bytes are not exported (JSONL holds text only).
    """
    fams = families or list(FAMILY_COLUMNS)
    unknown = [f for f in fams if f not in FAMILY_COLUMNS]
    if unknown:
        raise HardnegError(f"unknown families {unknown}; known: {list(FAMILY_COLUMNS)}")
    n = 0
    with atomic_path(out_path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in iter_rows(dataset_dir, [ID, IMAGE, CAPTION, *fams]):
            img = row[IMAGE] or {}
            rec = {
                "id": row[ID],
                "image": img.get("path"),
                "caption": row[CAPTION],
                "negatives": {f: row[f] or [] for f in fams},
            }
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


__all__ = ["open_shards", "iter_rows", "summarize", "export_jsonl", "write_json_atomic"]
