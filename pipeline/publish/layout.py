"""The repository layout of a published dataset: ``data/<split>-XXXXX-of-YYYYY.parquet`` and ``README.md``.

Shards are reused byte for byte when they fit the Hub's guidance (files of at most a few hundred MB,
which is what ``datasets.push_to_hub`` writes: 500 MB; row groups small enough for the dataset
viewer, whose scan limit is about 300 MB: ``datasets`` aims at 100 MB) and carry no image bytes that
must be left out; otherwise the whole split is rewritten, deterministically (the same input gives
the same files, so a re-publish of a rewritten split is recognised as unchanged). Rewritten files
keep the shards' schema and hardneg metadata.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.publish.config import PublishConfig

if TYPE_CHECKING:  # pyarrow is imported where used, so `hardneg --help` stays fast
    import pyarrow as pa
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)

CARD = "README.md"
DATA_DIR = "data"


@dataclass
class RepoEntry:
    """One file of the repository to publish and where its bytes are now."""

    path: str
    local: Path
    size: int
    sha256: str
    split: str | None = None
    rows: int = 0
    #: uncompressed Parquet bytes (the card's ``num_bytes``)
    data_bytes: int = 0
    #: "reused" (the shard itself), "rewritten" or "card"
    origin: str = "reused"


@dataclass
class Layout:
    entries: list[RepoEntry]
    embeds_images: bool
    images_included: bool

    def split_entries(self) -> dict[str, list[RepoEntry]]:
        out: dict[str, list[RepoEntry]] = {}
        for e in self.entries:
            if e.split is not None:
                out.setdefault(e.split, []).append(e)
        return out


def build_layout(dataset_dir: Path, cfg: PublishConfig, staging: Path, shard_sha: dict[str, str], copy_reused: bool) -> Layout:
    """The data files of the repository under ``staging`` (reused shards are only copied when asked)."""
    from pipeline.contract.shards import list_shards

    splits = list_shards(dataset_dir)
    infos = {split: [_shard_info(f) for f in files] for split, files in splits.items()}
    embeds = any(i["embedded_images"] for files in infos.values() for i in files)
    keep_images = embeds and cfg.with_images
    if cfg.with_images and not embeds:
        log.warning("--with-images: %s embeds no image bytes; the images stay references by path", dataset_dir)
    if embeds and not keep_images:
        log.info("the dataset embeds image bytes; they are left out (give --with-images to publish them)")

    entries: list[RepoEntry] = []
    (staging / DATA_DIR).mkdir(parents=True, exist_ok=True)
    for split, files in splits.items():
        info = infos[split]
        too_big = [i for i in info if i["size"] > cfg.max_shard_bytes or i["max_row_group"] > cfg.max_row_group_bytes]
        strip = any(i["embedded_images"] for i in info) and not keep_images
        if not too_big and not strip:
            entries.extend(_reused(dataset_dir, split, files, info, staging, shard_sha, copy_reused))
            continue
        why = "image bytes are left out" if strip else f"{len(too_big)} shard(s) exceed the Hub size guidance"
        log.info("rewriting split %s (%s)", split, why)
        entries.extend(reshard(split, files, staging, cfg, keep_images))
    return Layout(entries, embeds, keep_images)


def add_card(layout: Layout, text: str, staging: Path) -> None:
    """Write the dataset card into ``staging`` and list it last."""
    path = staging / CARD
    data = text.encode("utf-8")
    path.write_bytes(data)
    layout.entries.append(RepoEntry(CARD, path, len(data), hashlib.sha256(data).hexdigest(), origin="card"))


def _reused(
    dataset_dir: Path, split: str, files: list[Path], info: list[dict[str, Any]], staging: Path,
    shard_sha: dict[str, str], copy: bool,
) -> list[RepoEntry]:
    n = len(files)
    entries = []
    for j, (f, i) in enumerate(zip(files, info)):
        path = f"{DATA_DIR}/{split}-{j:05d}-of-{n:05d}.parquet"
        local = f
        if copy:
            local = staging / path
            shutil.copyfile(f, local)
        rel = f.relative_to(dataset_dir).as_posix()
        entries.append(RepoEntry(path, local, i["size"], shard_sha[rel], split, i["rows"], i["data_bytes"]))
    return entries


def _shard_info(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    rg_sizes = [md.row_group(i).total_byte_size for i in range(md.num_row_groups)]
    return {
        "size": path.stat().st_size,
        "rows": md.num_rows,
        "data_bytes": sum(rg_sizes),
        "max_row_group": max(rg_sizes, default=0),
        "embedded_images": _embedded_images(path, md),
    }


def _embedded_images(path: Path, md: pq.FileMetaData) -> int:
    """How many rows carry image bytes, from column statistics when written (else by reading the column)."""
    import pyarrow.parquet as pq

    from pipeline.contract.schema import IMAGE

    total = 0
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        col = next((rg.column(j) for j in range(rg.num_columns) if rg.column(j).path_in_schema == f"{IMAGE}.bytes"), None)
        if col is None:
            return 0
        stats = col.statistics
        if stats is None or not stats.has_null_count:
            table = pq.read_table(path, columns=[IMAGE])
            return len(table) - table.column(IMAGE).combine_chunks().field("bytes").null_count
        total += rg.num_rows - stats.null_count
    return total


# --------------------------------------------------------------------------- rewriting a split


def reshard(split: str, files: list[Path], staging: Path, cfg: PublishConfig, keep_images: bool) -> list[RepoEntry]:
    """Rewrite a split as files of at most ``max_shard_bytes`` with row groups under ``max_row_group_bytes``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    schema = pq.read_schema(files[0])
    metas = [pq.ParquetFile(f).metadata for f in files]
    rg_rows = _row_group_rows(files, metas, cfg)
    parts = _PartWriter(staging / DATA_DIR, split, schema, cfg.max_shard_bytes)
    bar = tqdm(total=sum(m.num_rows for m in metas), desc=f"reshard {split}", unit=" rows", mininterval=2, leave=False)
    try:
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=rg_rows):
                table = pa.Table.from_batches([batch]).replace_schema_metadata(schema.metadata)
                parts.write(table if keep_images else _strip_image_bytes(table), rg_rows)
                bar.update(table.num_rows)
        parts.close()
    finally:
        bar.close()
        parts.abort()
    return _final_parts(split, parts.parts, staging)


def _row_group_rows(files: list[Path], metas: list[pq.FileMetaData], cfg: PublishConfig) -> int:
    """Rows per row group: under the viewer's limit, and a quarter file at most so files close near the size."""
    rows = sum(m.num_rows for m in metas)
    raw = sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups))
    row_bytes = max(1.0, raw / max(rows, 1))
    stored_row_bytes = max(1.0, sum(f.stat().st_size for f in files) / max(rows, 1))
    return max(1, min(1000, int(cfg.max_row_group_bytes // row_bytes), int(cfg.max_shard_bytes // (4 * stored_row_bytes))))


class _PartWriter:
    """Temporary Parquet parts of one split; a part closes before its next row group would pass ``max_bytes``."""

    def __init__(self, folder: Path, split: str, schema: pa.Schema, max_bytes: int) -> None:
        self.folder, self.split, self.schema, self.max_bytes = folder, split, schema, max_bytes
        #: (temporary path, rows) of every closed part
        self.parts: list[tuple[Path, int]] = []
        self._writer: pq.ParquetWriter | None = None
        self._sink: Any = None
        self._path: Path | None = None
        self._rows = 0
        self._last_group_bytes = 0

    def write(self, table: pa.Table, row_group_size: int) -> None:
        if self._writer is not None and self._sink.tell() + self._last_group_bytes > self.max_bytes:
            self.close()
        if self._writer is None:
            self._open()
        assert self._writer is not None
        before = self._sink.tell()
        self._writer.write_table(table, row_group_size=row_group_size)
        self._last_group_bytes = self._sink.tell() - before
        self._rows += table.num_rows

    def _open(self) -> None:
        import pyarrow as pa

        self._path = self.folder / f".{self.split}-{len(self.parts):05d}.parquet.tmp"
        self._sink = pa.OSFile(str(self._path), "wb")
        self._writer = _parquet_writer(self._sink, self.schema)
        self._rows = 0

    def close(self) -> None:
        """Finish the open part (if any) and record it."""
        if self._writer is not None and self._path is not None:
            self._writer.close()
            self._sink.close()
            self.parts.append((self._path, self._rows))
            self._writer = self._sink = None

    def abort(self) -> None:
        """Release an open part's file handles after an error (the staging folder is discarded)."""
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None


def _final_parts(split: str, parts: list[tuple[Path, int]], staging: Path) -> list[RepoEntry]:
    """Rename the temporary parts to ``data/<split>-XXXXX-of-YYYYY.parquet`` now that their count is known."""
    import pyarrow.parquet as pq

    from pipeline.core.atomic import sha256_file

    n = len(parts)
    entries = []
    for j, (tmp, nrows) in enumerate(parts):
        path = f"{DATA_DIR}/{split}-{j:05d}-of-{n:05d}.parquet"
        final = staging / path
        os.replace(tmp, final)
        md = pq.ParquetFile(final).metadata
        data_bytes = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
        entries.append(RepoEntry(path, final, final.stat().st_size, sha256_file(final), split, nrows, data_bytes, "rewritten"))
    return entries


def _parquet_writer(sink: pa.NativeFile, schema: pa.Schema) -> pq.ParquetWriter:
    import pyarrow.parquet as pq

    kwargs: dict[str, Any] = {"compression": "zstd", "write_statistics": True, "write_page_index": True}
    try:  # content-defined chunking lets Xet deduplicate a re-published, slightly changed file
        return pq.ParquetWriter(sink, schema, use_content_defined_chunking=True, **kwargs)
    except TypeError:  # pyarrow < 21
        return pq.ParquetWriter(sink, schema, **kwargs)


def _strip_image_bytes(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    from pipeline.contract.schema import IMAGE

    idx = table.schema.get_field_index(IMAGE)
    col = table.column(IMAGE).combine_chunks()
    _, paths = col.flatten()
    stripped = pa.StructArray.from_arrays(
        [pa.nulls(len(col), pa.binary()), paths], fields=list(col.type), mask=col.is_null()
    )
    return table.set_column(idx, table.schema.field(idx), stripped)
