"""The shard files of a dataset folder: listing them and reading their hardneg metadata."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import SourceError

if TYPE_CHECKING:
    from pipeline.contract.manifest import Manifest


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


def verify_shards(dataset_dir: str | Path, manifest: Manifest, *, sha256: bool = True) -> dict[str, str]:
    """Check a dataset folder against its manifest: the same shards, readable, of this schema's major
    version, each with the rows (and, with ``sha256``, the checksum) the manifest lists.

    Returns ``{relative path: sha256}`` (empty strings when ``sha256`` is off). Every problem is a
    :class:`SourceError` that names the file and says what is wrong.
    """
    from pipeline.contract.schema import check_version, read_meta
    from pipeline.core.atomic import sha256_file

    dataset_dir = Path(dataset_dir)
    listed = {s.path: s for s in manifest.shards}
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
        if info.rows is not None and md.num_rows != info.rows:
            raise SourceError(
                f"{path} changed since its manifest was written (it holds {md.num_rows} rows, the manifest"
                f" lists {info.rows}); regenerate it"
            )
        sha[rel] = sha256_file(path) if sha256 else ""
        if sha256 and info.sha256 and sha[rel] != info.sha256:
            raise SourceError(f"{path} changed since its manifest was written (sha256 differs); regenerate it")
    return sha


def verify_dataset(dataset_dir: str | Path, *, sha256: bool = True) -> bool:
    """Check a dataset folder against the manifest beside its shards, when it has one.

    Returns False, having checked nothing, for a folder without a manifest; otherwise runs
    :func:`verify_shards` (every problem a :class:`SourceError` that names the file) and returns True.
    """
    from pipeline.contract.manifest import MANIFEST_FILE, load_manifest

    root = Path(dataset_dir)
    if not (root / MANIFEST_FILE).is_file():
        return False
    verify_shards(root, load_manifest(root), sha256=sha256)
    return True


def check_shard_schema(path: str | Path, schema: pa.Schema, required: tuple[str, ...] | list[str] = ()) -> None:
    """A shard's Arrow schema against the contract, without reading rows.

    The hardneg metadata of this major schema version, the ``required`` columns, and for every column
    the contract knows, its type (``large_`` variants and nullability aside). Every problem is a
    :class:`SourceError` that names the file and says what is wrong.
    """
    from pipeline.contract.schema import arrow_schema, check_version, read_meta

    try:
        check_version(read_meta(schema))
    except ValueError as e:  # a foreign Parquet file, or one of another major schema version
        raise SourceError(f"{path}: {e}") from None
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise SourceError(f"{path}: shard lacks columns {missing}")
    contract = arrow_schema()
    for name in schema.names:
        if name in contract.names and not _same_type(schema.field(name).type, contract.field(name).type):
            raise SourceError(
                f"{path}: column {name!r} has type {schema.field(name).type}, the shard schema says "
                f"{contract.field(name).type}"
            )


def _same_type(got: pa.DataType, want: pa.DataType) -> bool:
    """Equal Arrow types up to ``large_`` variants and field nullability (what readers can take)."""
    if got == want:
        return True
    if pa.types.is_string(want) or pa.types.is_large_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got)
    if pa.types.is_binary(want) or pa.types.is_large_binary(want):
        return pa.types.is_binary(got) or pa.types.is_large_binary(got)
    if pa.types.is_list(want) or pa.types.is_large_list(want):
        return (pa.types.is_list(got) or pa.types.is_large_list(got)) and _same_type(got.value_type, want.value_type)
    if pa.types.is_struct(want):
        if not pa.types.is_struct(got):
            return False
        fields = {got.field(i).name: got.field(i).type for i in range(got.num_fields)}
        return all(
            want.field(i).name in fields and _same_type(fields[want.field(i).name], want.field(i).type)
            for i in range(want.num_fields)
        ) and len(fields) == want.num_fields
    return False
