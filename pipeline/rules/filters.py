"""Decide which realised candidates become negatives, and count why the others did not.

Pure: a caption's candidates and the other captions of its image in, kept candidates and reject
counts out. The choice among more than ``k`` survivors is seeded per caption and family, so it does
not depend on worker count, shard boundaries or the order captions are processed in.
"""

from __future__ import annotations

import string
import zlib
from typing import Callable, Collection, Iterable, Iterator

from pipeline.records import Candidate, Edit, RejectCounts

REJECT_REASONS = ("symmetric", "same_word", "identity", "same_image", "duplicate", "over_k", "rule_error")

_PUNCT = str.maketrans({c: " " for c in string.punctuation if c != "'"})


def normalize(text: str) -> str:
    """Comparison key: case, punctuation, spacing and a/an differences do not make a new caption."""
    words = text.lower().translate(_PUNCT).split()
    if "an" in words:
        words = ["a" if w == "an" else w for w in words]
    return " ".join(words)


def group_keys(captions: Iterable[str]) -> frozenset[str]:
    """Comparison keys of the captions of one image, for the same-image filter."""
    return frozenset(normalize(c) for c in captions)


def _seeded_key(seed: int, caption_id: str, family: str, edit: Edit) -> int:
    """A tie-breaking key that depends only on the seed, the caption and the edit itself."""
    spans = ";".join([f"{r.start}:{r.end}:{r.text}" for r in edit.replacements])
    return zlib.crc32(f"{seed}|{caption_id}|{family}|{edit.rule}|{spans}".encode())


def _seeded_order(viable: list[int], edits: list[Edit], seed: int, caption_id: str, family: str) -> Iterator[int]:
    """``viable`` by (priority, seeded key), lazily: the keys of a priority level are computed only
    when the examination reaches it (most captions fill ``k`` from the first level or two)."""
    levels: dict[int, list[int]] = {}
    for i in viable:
        levels.setdefault(edits[i].priority, []).append(i)
    for prio in sorted(levels):
        level = levels[prio]
        if len(level) > 1:
            level.sort(key=lambda i: _seeded_key(seed, caption_id, family, edits[i]))
        yield from level


def select(
    caption_id: str,
    caption: str,
    edits: Iterable[Edit],
    realizer: Callable[[Edit], Candidate | None],
    group_keys: Collection[str],
    k: int,
    seed: int,
    rejects: RejectCounts,
) -> dict[str, list[Candidate]]:
    """Filter and choose at most ``k`` candidates per family.

    ``group_keys`` are the :func:`normalize`-d captions of the positive's image (see
    :func:`group_keys`), computed once per image rather than once per caption.

    Edits that only exchange a symmetric relation's arguments or two equal words are counted and
    dropped first. The others are examined in a seeded order (lower ``priority`` first; generation
    order when there are no more than ``k``) and realised only when examined, until ``k`` survive;
    the rest are counted as ``over_k``. A realised candidate is dropped when it equals the positive,
    another caption of the same image, or an earlier kept candidate. Kept candidates are returned in
    the order the rule generated them.
    """
    positive = normalize(caption)
    same_image = group_keys
    by_family: dict[str, list[Edit]] = {}
    for e in edits:
        fam_list = by_family.get(e.family)
        if fam_list is None:
            by_family[e.family] = [e]
        else:
            fam_list.append(e)
    kept: dict[str, list[Candidate]] = {}
    for fam, fam_edits in by_family.items():
        viable: list[int] = []
        n_symmetric = n_same_word = 0
        for i, e in enumerate(fam_edits):  # rejects that need no realisation, all counted
            if e.symmetric_link:
                n_symmetric += 1
            elif e.items[0] and e.items[0] == e.items[1]:
                n_same_word += 1
            else:
                viable.append(i)
        if n_symmetric:
            rejects.add(fam, "symmetric", n_symmetric)
        if n_same_word:
            rejects.add(fam, "same_word", n_same_word)
        if len(viable) > k:  # only then does the order decide anything beyond duplicates
            order: Iterable[int] = _seeded_order(viable, fam_edits, seed, caption_id, fam)
        else:
            order = viable
        chosen: list[tuple[int, Candidate]] = []
        seen: set[str] = set()
        for n, i in enumerate(order):
            if len(chosen) == k:
                rejects.add(fam, "over_k", len(viable) - n)
                break
            cand = realizer(fam_edits[i])
            if cand is None:
                reason = "rule_error"
            else:
                key = normalize(cand.text)
                if key == positive:
                    reason = "identity"
                elif key in same_image:  # (the positive's own key is caught just above)
                    reason = "same_image"
                elif key in seen:
                    reason = "duplicate"
                else:
                    seen.add(key)
                    chosen.append((i, cand))
                    continue
            rejects.add(fam, reason)
        if len(chosen) > 1:
            chosen.sort(key=lambda x: x[0])
        kept[fam] = [c for _, c in chosen]
    return kept
