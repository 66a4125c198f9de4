"""Decide which realised candidates become negatives, and count why the others did not.

Pure: a caption's candidates and the other captions of its image in, kept candidates and reject
counts out. With plausibility scores the survivors are ranked by their rule's tier, then score, best first,
ties broken by a hash of the seed, the caption and the edit; without them by tier, rule priority,
then that hash. Either
way the choice does not depend on worker count, shard boundaries or the order captions are
processed in.
"""

from __future__ import annotations

import string
import zlib
from typing import Callable, Collection, Iterable, Iterator, Mapping

from pipeline.records import Candidate, Edit, RejectCounts

REJECT_REASONS = (
    "class_mismatch", "broken_name", "same_kind", "agreement", "pronoun", "symmetric", "same_word", "implausible",
    "identity", "same_image", "duplicate", "repeated_word", "over_k", "rule_error",
    # the structures whose phrases cannot move whole (relation_swap)
    "coordinated", "partitive", "complement",
)

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


def _ranked(viable: list[int], edits: list[Edit], scores: list[float], seed: int, caption_id: str, family: str) -> list[int]:
    """``viable`` by tier, then plausibility, best first; equal scores in seeded-hash order."""
    order = sorted(viable, key=lambda i: (edits[i].tier, -scores[i]))
    n = len(order)
    start = 0
    while start < n:
        end = start + 1
        while end < n and scores[order[end]] == scores[order[start]] and edits[order[end]].tier == edits[order[start]].tier:
            end += 1
        if end - start > 1:
            order[start:end] = sorted(order[start:end], key=lambda i: _seeded_key(seed, caption_id, family, edits[i]))
        start = end
    return order


def _repeated_word(text: str, positive: str) -> bool:
    """Whether ``text`` says a word twice in a row where the positive does not ("fluorescent
    fluorescent jackets")."""
    words = text.split()
    for n in range(len(words) - 1):
        if words[n] == words[n + 1] and f"{words[n]} {words[n]}" not in positive:
            return True
    return False


def _seeded_order(viable: list[int], edits: list[Edit], seed: int, caption_id: str, family: str) -> Iterator[int]:
    """``viable`` by (priority, seeded key), lazily: the keys of a priority level are computed only
    when the examination reaches it (most captions fill ``k`` from the first level or two)."""
    levels: dict[tuple[int, int], list[int]] = {}
    for i in viable:
        levels.setdefault((edits[i].tier, edits[i].priority), []).append(i)
    for prio in sorted(levels):
        level = levels[prio]
        if len(level) > 1:
            level.sort(key=lambda i: _seeded_key(seed, caption_id, family, edits[i]))
        yield from level


def select(
    caption_id: str,
    caption: str,
    edits: list[Edit],
    realizer: Callable[[Edit], Candidate | None],
    group_keys: Collection[str],
    k: int,
    seed: int,
    rejects: RejectCounts,
    scores: list[float] | None = None,
    floors: Mapping[str, float] | None = None,
    cross_floors: Mapping[str, float] | None = None,
) -> dict[str, list[Candidate]]:
    """Filter and choose at most ``k`` candidates per family.

    ``group_keys`` are the :func:`normalize`-d captions of the positive's image (see
    :func:`group_keys`), computed once per image rather than once per caption. ``scores`` (one per
    edit, or None) are the edits' plausibility; ``floors`` the score per family under which an edit
    is rejected (``implausible``); ``cross_floors`` the score per family a swap between incompatible
    noun classes needs (``Edit.cross_class``; never kept without scores or a floor: ``class_mismatch``).

    Edits a rule refused (``Edit.reject``), edits that only exchange a symmetric relation's arguments
    or two equal words, and edits scoring under a floor are counted and dropped first. The others
    are examined best first (see the module docstring) and realised only when examined, until ``k``
    survive; the rest are counted as ``over_k``. A realised candidate is dropped when it equals the
    positive, another caption of the same image, or an earlier kept candidate, or says a word twice
    in a row. Kept candidates come best first when scored, else in the order the rule generated them.
    """
    positive = normalize(caption)
    same_image = group_keys
    by_family: dict[str, list[int]] = {}
    for n, e in enumerate(edits):
        fam_list = by_family.get(e.family)
        if fam_list is None:
            by_family[e.family] = [n]
        else:
            fam_list.append(n)
    kept: dict[str, list[Candidate]] = {}
    for fam, fam_idx in by_family.items():
        floor = floors.get(fam) if floors is not None and scores is not None else None
        cross_floor = cross_floors.get(fam) if cross_floors is not None and scores is not None else None
        viable: list[int] = []
        n_symmetric = n_same_word = n_implausible = 0
        for i in fam_idx:  # rejects that need no realisation, all counted
            e = edits[i]
            if e.reject:
                rejects.add(fam, e.reject)
            elif e.symmetric_link:
                n_symmetric += 1
            elif e.items[0] and e.items[0] == e.items[1]:
                n_same_word += 1
            elif e.cross_class and (cross_floor is None or scores is None or scores[i] < cross_floor):
                rejects.add(fam, "class_mismatch")
            elif floor is not None and scores is not None and scores[i] < floor:
                n_implausible += 1
            else:
                viable.append(i)
        if n_symmetric:
            rejects.add(fam, "symmetric", n_symmetric)
        if n_same_word:
            rejects.add(fam, "same_word", n_same_word)
        if n_implausible:
            rejects.add(fam, "implausible", n_implausible)
        order: Iterable[int]
        if scores is not None:
            order = _ranked(viable, edits, scores, seed, caption_id, fam) if len(viable) > 1 else viable
        elif len(viable) > k:  # only then does the order decide anything beyond duplicates
            order = _seeded_order(viable, edits, seed, caption_id, fam)
        else:
            order = viable
        chosen: list[tuple[int, Candidate]] = []
        seen: set[str] = set()
        for n, i in enumerate(order):
            if len(chosen) == k:
                rejects.add(fam, "over_k", len(viable) - n)
                break
            cand = realizer(edits[i])
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
                elif _repeated_word(key, positive):
                    reason = "repeated_word"
                else:
                    seen.add(key)
                    if scores is not None:
                        cand = cand._replace(plausibility=scores[i])
                    chosen.append((i, cand))
                    continue
            rejects.add(fam, reason)
        if len(chosen) > 1 and scores is None:
            chosen.sort(key=lambda x: x[0])
        kept[fam] = [c for _, c in chosen]
    return kept
