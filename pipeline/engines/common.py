"""What both engines share to stay equal: the record key, the statistics sample, the skip filter.

Invariants:

- :func:`record_key` is a 16-byte digest of a record's id keyed by the seed; it depends on nothing
  else, so every engine, worker count, chunking and reading order gives a record the same key.
- The statistics sample is the ``size`` records with the smallest :func:`sample_hash` (the first 8
  bytes of the key), taken in source order; with ``size`` or fewer records it is every record, so
  the statistics equal those of a run that held the whole input. :class:`BottomK` finds its
  threshold in O(size) memory and merges across partitions (Ray blocks) to the same result.
- :func:`kept_records` is the one filter between a source's items and the records that get
  negatives: a :class:`Skip` or a caption over ``max_chars`` is counted by reason (with at most
  ``MAX_EXAMPLES`` example locations), never dropped silently.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np

from pipeline.records import CaptionRecord, Skip

#: skip locations kept for the manifest
MAX_EXAMPLES = 20
#: a sample hash above every real one: "all records are in the sample"
ALL = (1 << 64) - 1


def record_key(record_id: str, seed: int) -> bytes:
    """The record's 16-byte key (statistics sample and duplicate-id check)."""
    return hashlib.blake2b(
        record_id.encode("utf-8", "surrogatepass"), digest_size=16, key=b"hardneg-%d" % seed
    ).digest()


def sample_hash(key: bytes) -> int:
    return int.from_bytes(key[:8], "big")


class BottomK:
    """The ``k`` smallest sample hashes seen, in O(k) memory; ``threshold`` selects exactly them."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.seen = 0
        self._buf = array("Q")

    def add(self, h: int) -> None:
        self.seen += 1
        self._buf.append(h)
        if len(self._buf) >= 2 * self.k + 1024:
            self._shrink()

    def merge(self, other: "BottomK | Iterable[int]") -> None:
        values = other._buf if isinstance(other, BottomK) else array("Q", other)
        self.seen += other.seen if isinstance(other, BottomK) else len(values)
        self._buf.extend(values)
        if len(self._buf) >= 2 * self.k + 1024:
            self._shrink()

    def _shrink(self) -> None:
        a = np.frombuffer(self._buf, dtype=np.uint64)
        if len(a) > self.k:
            a = np.partition(a, self.k - 1)[: self.k] if self.k > 0 else a[:0]
        self._buf = array("Q", a.tobytes())

    def values(self) -> list[int]:
        self._shrink()
        return list(self._buf)

    @property
    def threshold(self) -> int:
        """Records whose hash is at most this form the sample (ALL when every record fits)."""
        if self.seen <= self.k:
            return ALL
        self._shrink()
        return int(np.frombuffer(self._buf, dtype=np.uint64).max()) if self.k > 0 else -1


def classify(item: CaptionRecord | Skip, max_chars: int) -> tuple[str, str] | None:
    """None for a record that gets negatives, else ``(reason, where)`` of the skip."""
    if isinstance(item, Skip):
        return item.reason, item.where
    if len(item.caption) > max_chars:
        return "too_long", item.id
    return None


def kept_records(
    items: Iterable[CaptionRecord | Skip], max_chars: int, skipped: Counter, examples: list[str]
) -> Iterator[CaptionRecord]:
    """The records that get negatives; every other item is counted in ``skipped`` by reason."""
    for item in items:
        skip = classify(item, max_chars)
        if skip is None:
            yield item  # type: ignore[misc]
            continue
        skipped[skip[0]] += 1
        if len(examples) < MAX_EXAMPLES:
            examples.append(f"{skip[0]}: {skip[1]}")
