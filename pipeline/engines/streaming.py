"""The local engine's input: the source streamed twice, shards planned and cut as it goes by.

``hardneg generate`` never holds the input. :func:`scan_source` (pass 1) reads it once and keeps only
counts: skips by reason, the shard plan, the statistics-sample threshold, whether the captions of
each image come together; ids go to an on-disk duplicate check. :class:`ShardStream` (pass 2) reads
it again and hands out one shard of records at a time, in the plan's order of indices per split.

Invariants:

- Memory is bounded by the configuration, not the input: a shard per split being filled (at most
  ``shard_size`` records plus one image's captions), the read buffer, a 16 MiB group filter, the
  sample's hashes (``8 x stats_sample`` bytes) and, for a source that scatters an image's captions,
  one on-disk partition (about ``stream.partition_rows`` records). Per-image state that a reader
  itself keeps (COCO's image table, Karpathy's caption counter per image) is O(images).
- The same config gives the same rows as a run that held every record: same records (one filter,
  :func:`pipeline.engines.common.kept_records`), every caption of an image in the same shard, the
  statistics from the sample, which is every record up to ``stats_sample`` records.
- When the source keeps each image's captions together (per split), the shards are exactly those of
  the in-memory plan: groups in order of first appearance, packed up to ``shard_size`` per split,
  never split. Otherwise (COCO annotation files) the records are hash-partitioned on disk by
  (split, image) and the groups are packed partition by partition; only the layout differs.
- A duplicate id stops the run after pass 1, before any shard is written, with the message
  :func:`pipeline.sources.iter_source` gives; the check spills 16-byte keys to disk.
- Nothing here writes output: scratch files live in the run's work folder (``.ids``,
  ``.partitions``), which the stage deletes when the run completes; a complete partitioning is
  reused by a resumed run of the same config.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.config import GenerateConfig
from pipeline.core.atomic import write_json_atomic
from pipeline.core.errors import SourceError
from pipeline.engines.common import ALL, BottomK, kept_records, record_key, sample_hash
from pipeline.records import CaptionRecord
from pipeline.sources import SourcePart, iter_source

log = logging.getLogger(__name__)

#: buckets of the on-disk duplicate-id check (a bucket holds 16 bytes per id / ID_BUCKETS)
ID_BUCKETS = 256
#: bits of the filter that tells whether an image's captions come together (16 MiB)
_FILTER_BITS = 1 << 27
_SPILL_BYTES = 4 << 20


def source_items(cfg: GenerateConfig, part: SourcePart | None = None) -> Iterator[Any]:
    """The source's items (or those of one of its parts, :func:`pipeline.sources.source_parts`)
    read in bounded memory (JSON documents streamed, no in-memory id set)."""
    return iter_source(cfg.source, stream_json=True, unique_ids=False, part=part)


def read_kept(cfg: GenerateConfig, skipped: Counter | None = None, examples: list[str] | None = None) -> Iterator[CaptionRecord]:
    return kept_records(source_items(cfg), cfg.max_chars, Counter() if skipped is None else skipped,
                        [] if examples is None else examples)


# --------------------------------------------------------------------------- pass 1


@dataclass
class SourceScan:
    """What pass 1 learnt; O(shards) in size."""

    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    skip_examples: list[str] = field(default_factory=list)
    #: the captions of each image come together in source order (per split)
    grouped: bool = True
    #: (split, rows) per shard, in index order (splits sorted); only when ``grouped``
    plan: list[tuple[str, int]] = field(default_factory=list)
    #: records whose sample hash is at most this form the statistics sample
    sample_threshold: int = ALL
    sample_size: int = 0
    read_seconds: float = 0.0


class _Packer:
    """Groups into shards per split exactly as the in-memory plan did: never split a group, cut
    before a group that would take the shard past ``shard_size``."""

    def __init__(self, shard_size: int) -> None:
        self.shard_size = shard_size
        self.rows: dict[str, int] = {}
        self.items: dict[str, list[CaptionRecord]] = {}
        self.index: Counter = Counter()

    def add(self, split: str, n: int, records: list[CaptionRecord] | None = None) -> tuple[str, int, Any] | None:
        """Add one group; returns ``(split, j, records)`` of the shard it closed, if any."""
        done = None
        rows = self.rows.get(split, 0)
        if rows and rows + n > self.shard_size:
            done = (split, self.index[split], self.items.pop(split, None))
            self.index[split] += 1
            rows = 0
        self.rows[split] = rows + n
        if records is not None:
            self.items.setdefault(split, []).extend(records)
        return done

    def finish(self) -> list[tuple[str, int, Any]]:
        out = []
        for split in sorted(self.rows):
            if self.rows[split]:
                out.append((split, self.index[split], self.items.pop(split, None)))
                self.index[split] += 1
                self.rows[split] = 0
        return out


class _SizePlan:
    """The plan from group sizes alone: shard row counts per split."""

    def __init__(self, shard_size: int) -> None:
        self.packer = _Packer(shard_size)
        self.sizes: dict[str, list[int]] = {}

    def add(self, split: str, n: int) -> None:
        before = self.packer.rows.get(split, 0)
        if self.packer.add(split, n) is not None:
            self.sizes.setdefault(split, []).append(before)

    def finish(self) -> list[tuple[str, int]]:
        rows = dict(self.packer.rows)
        for split, _, _ in self.packer.finish():
            self.sizes.setdefault(split, []).append(rows[split])
        return [(split, n) for split in sorted(self.sizes) for n in self.sizes[split]]


class _GroupFilter:
    """Has (split, group) started before? A Bloom filter: "no" is certain, "yes" may be wrong,
    which only sends a source down the (correct, slower) partitioned path."""

    def __init__(self) -> None:
        self.bits = bytearray(_FILTER_BITS // 8)

    def check_and_add(self, split: str, group: str) -> bool:
        d = record_key(f"{split}\x00{group}", 0)
        seen = True
        for i in range(4):
            b = int.from_bytes(d[4 * i : 4 * i + 4], "big") % _FILTER_BITS
            byte, bit = b >> 3, 1 << (b & 7)
            if not self.bits[byte] & bit:
                seen = False
                self.bits[byte] |= bit
        return seen


class _IdCheck:
    """Duplicate ids, found with 16-byte keys spilled to disk in buckets (bounded memory)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.buffers = [bytearray() for _ in range(ID_BUCKETS)]
        self.buffered = 0

    def add(self, key: bytes) -> None:
        self.buffers[key[8]].extend(key)
        self.buffered += 16
        if self.buffered >= _SPILL_BYTES:
            self._spill()

    def add_many(self, keys: np.ndarray) -> None:
        """Keys as an ``(n, 16)`` uint8 array."""
        order = np.argsort(keys[:, 8], kind="stable")
        keys = keys[order]
        bounds = np.searchsorted(keys[:, 8], np.arange(ID_BUCKETS + 1))
        for b in range(ID_BUCKETS):
            lo, hi = bounds[b], bounds[b + 1]
            if hi > lo:
                self.buffers[b].extend(keys[lo:hi].tobytes())
        self.buffered += 16 * len(keys)
        if self.buffered >= _SPILL_BYTES:
            self._spill()

    def _spill(self) -> None:
        for b, buf in enumerate(self.buffers):
            if buf:
                with open(self.folder / f"{b:03d}.keys", "ab") as f:
                    f.write(buf)
                buf.clear()
        self.buffered = 0

    def duplicates(self) -> set[bytes]:
        """Keys seen more than once (empty for a clean source); removes the spill files."""
        self._spill()
        dups: set[bytes] = set()
        for path in sorted(self.folder.glob("*.keys")):
            a = np.fromfile(path, dtype=np.dtype("V16"))
            a.sort()
            same = a[1:] == a[:-1]
            dups.update(bytes(k) for k in a[1:][same])
        shutil.rmtree(self.folder, ignore_errors=True)
        return dups


class ScanBuilder:
    """Pass 1's bookkeeping, fed record by record (local engine) or block by block (Ray engine)."""

    def __init__(self, cfg: GenerateConfig, scratch: Path) -> None:
        self.cfg = cfg
        self.scan = SourceScan()
        self.ids = _IdCheck(scratch / ".ids")
        self.sample = BottomK(cfg.stats_sample)
        self.seen_groups: _GroupFilter | None = _GroupFilter()
        self.plan = _SizePlan(cfg.shard_size)
        self.current: dict[str, tuple[str, int]] = {}  # split -> (group, captions so far)

    def add_key(self, key: bytes) -> None:
        self.scan.records += 1
        self.ids.add(key)
        self.sample.add(sample_hash(key))

    def add_keys(self, keys: bytes) -> None:
        """Many 16-byte keys at once (a Ray block's)."""
        a = np.frombuffer(keys, dtype=np.uint8).reshape(-1, 16)
        self.scan.records += len(a)
        self.ids.add_many(a)
        self.sample.merge(np.frombuffer(a[:, :8].tobytes(), dtype=">u8").astype(np.uint64).tolist())

    def add_run(self, split: str, group: str, n: int) -> None:
        """``n`` consecutive captions of one image (in source order)."""
        if self.seen_groups is None:
            return
        cur = self.current.get(split)
        if cur is not None and cur[0] == group:
            self.current[split] = (group, cur[1] + n)
            return
        if cur is not None:
            self.plan.add(split, cur[1])
        if self.seen_groups.check_and_add(split, group):
            self.scan.grouped = False
            self.seen_groups = None
            log.info("the captions of one image are not together in %s (image %r); grouping on disk",
                     self.cfg.source.path, group)
            return
        self.current[split] = (group, n)

    def finish(self, read_seconds: float) -> SourceScan:
        scan = self.scan
        self.seen_groups = None
        dups = self.ids.duplicates()
        if dups:
            _raise_duplicate(self.cfg, dups)
        if scan.grouped:
            for split, (_, n) in self.current.items():
                self.plan.add(split, n)
            scan.plan = self.plan.finish()
        scan.sample_threshold = self.sample.threshold
        scan.sample_size = min(scan.records, self.cfg.stats_sample)
        scan.read_seconds = read_seconds
        return scan


def scan_source(cfg: GenerateConfig, scratch: Path) -> SourceScan:
    """Pass 1: counts, the plan, the sample threshold, the duplicate check (see the module docstring)."""
    t0 = time.perf_counter()
    b = ScanBuilder(cfg, scratch)
    # refreshed twice a second and left on screen with its final count: with ``leave=False`` and a
    # 2-second interval, a source read in under 2 s only ever showed "0 captions"
    bar = tqdm(desc="read (pass 1)", unit=" captions", mininterval=0.5)
    for r in read_kept(cfg, b.scan.skipped, b.scan.skip_examples):
        bar.update()
        b.add_key(record_key(r.id, cfg.seed))
        b.add_run(r.split, r.group, 1)
    bar.close()
    return b.finish(time.perf_counter() - t0)


def _raise_duplicate(cfg: GenerateConfig, dups: set[bytes]) -> None:
    """Find the second occurrence of a duplicated id (a second read) and stop with its name."""
    seen: set[bytes] = set()
    for r in read_kept(cfg):
        key = record_key(r.id, cfg.seed)
        if key in dups:
            if key in seen:
                raise SourceError(
                    f"duplicate id {r.id!r} (second time on caption {r.caption!r:.60}); "
                    "ids must be unique, check source.id_column"
                )
            seen.add(key)
    raise SourceError(f"{cfg.source.path} changed while it was read (a duplicated id is gone)")


class SampleRecords:
    """The statistics sample as a re-iterable sequence of records in source order (each iteration
    reads the source again; nothing is held); ``len`` is its size."""

    def __init__(self, cfg: GenerateConfig, scan: SourceScan) -> None:
        self.cfg, self.threshold, self.size = cfg, scan.sample_threshold, scan.sample_size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[CaptionRecord]:
        if self.threshold == ALL:
            yield from read_kept(self.cfg)
            return
        for r in read_kept(self.cfg):
            if sample_hash(record_key(r.id, self.cfg.seed)) <= self.threshold:
                yield r


# --------------------------------------------------------------------------- pass 2


def _groups_in_order(records: Iterable[CaptionRecord]) -> Iterator[tuple[str, list[CaptionRecord]]]:
    """(split, captions of one image) for a source whose images' captions come together per split."""
    current: dict[str, list[CaptionRecord]] = {}
    for r in records:
        cur = current.get(r.split)
        if cur is not None and cur[0].group == r.group:
            cur.append(r)
            continue
        if cur is not None:
            yield r.split, cur
        current[r.split] = [r]
    for split, cur in current.items():
        yield split, cur


class ShardStream:
    """Pass 2: the plan, then ``(index, split, records)`` per shard as the source streams by."""

    def __init__(self, cfg: GenerateConfig, scan: SourceScan, scratch: Path) -> None:
        self.cfg, self.scan = cfg, scan
        self.parts = _Partitions(cfg, scan, scratch / ".partitions") if not scan.grouped else None
        self.plan: list[tuple[str, int]] = scan.plan if scan.grouped else self.parts.plan()  # type: ignore[union-attr]
        self.offsets: dict[str, int] = {}
        for i, (split, _) in enumerate(self.plan):
            self.offsets.setdefault(split, i)

    def _groups(self) -> Iterator[tuple[str, list[CaptionRecord]]]:
        if self.parts is None:
            return _groups_in_order(read_kept(self.cfg))
        return self.parts.groups()

    def __iter__(self) -> Iterator[tuple[int, str, list[CaptionRecord]]]:
        packer = _Packer(self.cfg.shard_size)
        for split, group in self._groups():
            done = packer.add(split, len(group), group)
            if done is not None:
                yield self._checked(*done)
        for done in packer.finish():
            yield self._checked(*done)

    def _checked(self, split: str, j: int, records: list[CaptionRecord]) -> tuple[int, str, list[CaptionRecord]]:
        i = self.offsets.get(split, -1) + j
        if split not in self.offsets or i >= len(self.plan) or self.plan[i] != (split, len(records)):
            raise SourceError(f"{self.cfg.source.path} changed while it was read (shard {j} of split {split!r})")
        return i, split, records


class _Partitions:
    """The records hash-partitioned on disk by (split, image): every image's captions in one file."""

    def __init__(self, cfg: GenerateConfig, scan: SourceScan, folder: Path) -> None:
        self.cfg, self.folder = cfg, folder
        self.n = max(1, -(-scan.records // cfg.stream.partition_rows))
        done = folder / "_complete.json"
        if done.exists() and _read_json(done) == {"partitions": self.n, "records": scan.records}:
            log.info("reusing the %d on-disk partitions of an earlier run", self.n)
            return
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self._write(scan.records)
        write_json_atomic({"partitions": self.n, "records": scan.records}, done)

    def _path(self, p: int) -> Path:
        return self.folder / f"part-{p:05d}.pkl"

    def _write(self, total: int) -> None:
        buffers: list[list[tuple]] = [[] for _ in range(self.n)]
        buffered = 0
        limit = max(1, min(self.cfg.stream.partition_rows, 50_000))
        written = 0

        def spill() -> None:
            for p, buf in enumerate(buffers):
                if buf:
                    with open(self._path(p), "ab") as f:
                        pickle.dump(buf, f, protocol=pickle.HIGHEST_PROTOCOL)
                    buf.clear()

        with tqdm(total=total, desc="partition", unit=" captions", mininterval=2, leave=False) as bar:
            for r in read_kept(self.cfg):
                p = int.from_bytes(record_key(f"{r.split}\x00{r.group}", 0)[:8], "big") % self.n
                buffers[p].append((r.id, r.caption, r.image_path, r.source, r.split, r.group, r.image_bytes))
                buffered += 1
                written += 1
                bar.update()
                if buffered >= limit:
                    spill()
                    buffered = 0
            spill()
        if written != total:
            raise SourceError(f"{self.cfg.source.path} changed while it was read ({written} captions, not {total})")

    def _load(self, p: int) -> list[tuple]:
        rows: list[tuple] = []
        path = self._path(p)
        if not path.exists():
            return rows
        with open(path, "rb") as f:
            while True:
                try:
                    rows.extend(pickle.load(f))
                except EOFError:
                    return rows

    def groups(self) -> Iterator[tuple[str, list[CaptionRecord]]]:
        """Per partition, its groups in order of first appearance."""
        for p in range(self.n):
            by_group: dict[tuple[str, str], list[CaptionRecord]] = {}
            for row in self._load(p):
                r = CaptionRecord(*row)
                by_group.setdefault((r.split, r.group), []).append(r)
            for (split, _), group in by_group.items():
                yield split, group

    def plan(self) -> list[tuple[str, int]]:
        plan = _SizePlan(self.cfg.shard_size)
        for p in range(self.n):
            sizes: dict[tuple[str, str], int] = {}
            for row in self._load(p):
                sizes[(row[4], row[5])] = sizes.get((row[4], row[5]), 0) + 1
            for (split, _), n in sizes.items():
                plan.add(split, n)
        return plan.finish()


def _read_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
