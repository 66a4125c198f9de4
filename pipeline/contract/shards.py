"""The shard files of a dataset folder: listing them and reading their hardneg metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import SourceError


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


def verify_shards(dataset_dir: str | Path, manifest: dict[str, Any], *, sha256: bool = True) -> dict[str, str]:
    """Check a dataset folder against its manifest: the same shards, readable, of this schema's major
    version, each with the rows (and, with ``sha256``, the checksum) the manifest lists.

    Returns ``{relative path: sha256}`` (empty strings when ``sha256`` is off). Every problem is a
    :class:`SourceError` that names the file and says what is wrong.
    """
    from pipeline.contract.schema import check_version, read_meta
    from pipeline.core.atomic import sha256_file

    dataset_dir = Path(dataset_dir)
    listed = {s["path"]: s for s in manifest.get("shards", [])}
    if not listed:
        raise SourceError(f"the manifest of {dataset_dir} lists no shards")
    on_disk = {p.relative_to(dataset_dir).as_posix() for files in list_shards(dataset_dir).values() for p in files}
    missing, extra = sorted(set(listed) - on_disk), sorted(on_disk - set(listed))
    if missing or extra:
        raise SourceError(
            f"{dataset_dir} does not match its manifest (missing {missing[:5]}, not in the manifest {extra[:5]});"
            " rerun `hardneg generate` so shards and manifest agree"
        )
    sha: dict[str, str] = {}
    for rel, info in listed.items():
        path = dataset_dir / rel
        try:
            md = pq.read_metadata(path)
            check_version(read_meta(md.schema.to_arrow_schema()))
        except (OSError, ValueError, pa.ArrowException) as e:
            raise SourceError(f"{path}: not a readable hardneg shard ({e})") from None
        if info.get("rows") is not None and md.num_rows != info["rows"]:
            raise SourceError(
                f"{path} changed since its manifest was written (it holds {md.num_rows} rows, the manifest"
                f" lists {info['rows']}); regenerate it"
            )
        sha[rel] = sha256_file(path) if sha256 else ""
        if sha256 and info.get("sha256") and sha[rel] != info["sha256"]:
            raise SourceError(f"{path} changed since its manifest was written (sha256 differs); regenerate it")
    return sha
