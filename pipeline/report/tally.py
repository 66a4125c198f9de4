"""The report's counts of a dataset, as pandas (pyarrow-backed) group-bys over the shard columns.

Each batch of a shard becomes a DataFrame; two long tables are grouped and counted per batch and
summed over batches, so memory stays flat whatever the dataset's size:

- captions by (family, number of negatives): coverage, negatives, candidates per caption;
- negatives by (family, words of the negative - words of its positive): the length change.

Words are counted exactly as Python's ``str.split()`` does (every character ``str.isspace`` knows
separates words), so the figures equal a row-by-row count. A row's image group is its ``group`` or,
when that is empty, its ``id``. The seeded examples are a reservoir sample drawn in row order
(:class:`ExampleSample`); they need the rows one by one, so the caller feeds them. So does
:class:`RuleSample`, which counts the negatives of each (family, rule) from ``provenance`` (one entry
per kept negative) and keeps a reservoir of examples per rule: its memory is ``n`` examples and one
counter per rule, whatever the dataset's size, and it never draws from :class:`ExampleSample`'s
random stream, so the family examples are the same with or without it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

#: a word: a run of characters that ``str.isspace`` does not know (RE2 syntax, for pyarrow)
_WORD = (r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}"
         r"\x{205f}\x{3000}]+")


@dataclass
class FamilyTally:
    """One family's counts over the whole dataset."""

    negatives: int = 0
    covered: int = 0
    #: captions by their number of negatives of the family (0 included)
    per_caption: dict[int, int] = field(default_factory=dict)
    #: negatives by words of the negative minus words of its positive
    length_change: dict[int, int] = field(default_factory=dict)
    #: seeded (positive, negative) examples
    examples: list[tuple[str, str]] = field(default_factory=list)


class DatasetTally:
    """Counts accumulated batch by batch (:meth:`add`), read once at the end (:meth:`families`)."""

    def __init__(self, families: list[str]) -> None:
        self.family_names = list(families)
        self.splits: dict[str, int] = {}
        self.groups: set[str] = set()
        self.words = 0
        self._per_caption: list[pd.Series] = []
        self._length_change: list[pd.Series] = []

    @property
    def rows(self) -> int:
        return sum(self.splits.values())

    def add(self, split: str, batch: pa.RecordBatch) -> None:
        """Count one batch of ``split`` (columns ``id``, ``caption``, ``group`` and the families)."""
        import pandas as pd

        from pipeline.contract.schema import CAPTION, GROUP, ID

        if batch.num_rows == 0:  # a split is listed only once it has rows
            return
        df = batch.to_pandas(types_mapper=pd.ArrowDtype)
        self.splits[split] = self.splits.get(split, 0) + len(df)
        group = df[GROUP].where(df[GROUP].fillna("") != "", df[ID])
        self.groups.update(group.unique().tolist())
        words = df[CAPTION].fillna("").str.count(_WORD).astype("int64")
        self.words += int(words.sum())

        counts = pd.DataFrame({f: df[f].list.len().fillna(0).astype("int64") for f in self.family_names})
        long = counts.melt(var_name="family", value_name="k")
        self._per_caption.append(long.groupby(["family", "k"]).size())

        negatives = pd.concat({f: df[f].explode() for f in self.family_names}, names=["family", "row"]).dropna()
        delta = negatives.str.count(_WORD).astype("int64") - words.reindex(negatives.index.get_level_values("row")).to_numpy()
        self._length_change.append(delta.groupby([delta.index.get_level_values("family"), delta.rename("delta")]).size())

    def families(self) -> dict[str, FamilyTally]:
        """Per-family counts (examples are filled in by :class:`ExampleSample`)."""
        per_caption = _sum(self._per_caption)
        length_change = _sum(self._length_change)
        out = {}
        for fam in self.family_names:
            pc = _level(per_caption, fam)
            lc = _level(length_change, fam)
            out[fam] = FamilyTally(
                negatives=sum(k * n for k, n in pc.items()),
                covered=sum(n for k, n in pc.items() if k > 0),
                per_caption=pc,
                length_change=lc,
            )
        return out


def _sum(parts: list[pd.Series]) -> pd.Series | None:
    import pandas as pd

    if not parts:
        return None
    return pd.concat(parts).groupby(level=[0, 1]).sum()


def _level(counts: pd.Series | None, family: str) -> dict[int, int]:
    """``{key: count}`` of one family, keys ascending, zero counts left out."""
    if counts is None or family not in counts.index.get_level_values(0):
        return {}
    s = counts.xs(family, level=0)
    return {int(k): int(n) for k, n in sorted(s.items()) if n}


class ExampleSample:
    """A reservoir sample of ``n`` (positive, negative) pairs per family, over rows in dataset order.

    One seeded ``random.Random`` is drawn from row by row and family by family (a negative of the
    caption, then the reservoir slot), so the sample is that of the whole dataset at any batch size.
    """

    def __init__(self, families: list[str], n: int, seed: int) -> None:
        self.families = list(families)
        self.n = n
        self.rng = random.Random(seed)
        self.seen = {f: 0 for f in self.families}
        self.pool: dict[str, list[tuple[str, str]]] = {f: [] for f in self.families}

    def add(self, row: dict[str, Any]) -> None:
        caption = row.get("caption") or ""
        for fam in self.families:
            negs = row.get(fam) or []
            if negs:
                self._offer(fam, caption, negs)

    def _offer(self, fam: str, caption: str, negs: list[str]) -> None:
        self.seen[fam] += 1
        reservoir_keep(self.pool[fam], self.n, self.seen[fam], (caption, negs[self.rng.randrange(len(negs))]), self.rng)


def reservoir_keep(pool: list[Any], n: int, seen: int, item: Any, rng: random.Random) -> None:
    """One step of reservoir sampling: ``item`` is the ``seen``-th offered; ``pool`` keeps at most ``n``
    of them, each offered item with the same chance (one draw from ``rng`` once the pool is full)."""
    if len(pool) < n:
        pool.append(item)
        return
    j = rng.randrange(seen)
    if j < n:
        pool[j] = item


class RuleExample(NamedTuple):
    """A positive, one of its negatives made by a rule, and the negative's plausibility (None: not scored)."""

    positive: str
    negative: str
    plausibility: float | None


class RuleSample:
    """Negatives per (family, rule) from the rows' ``provenance``, and ``n`` seeded examples per rule.

    A caption offers one example to each (family, rule) it has negatives of, a seeded pick among
    them, in provenance order; each rule keeps a reservoir sample of the captions offered. The seeded
    ``random.Random`` is its own (seeded from ``seed`` with a prefix), drawn from in row order, so the
    sample is that of the whole dataset at any batch size. Rule names are whatever the rows carry.
    """

    def __init__(self, n: int, seed: int) -> None:
        from pipeline.contract.schema import CAPTION, PROVENANCE

        self._caption, self._provenance = CAPTION, PROVENANCE
        self.n = n
        self.rng = random.Random(f"rules/{seed}")
        #: family -> rule -> negatives
        self.negatives: dict[str, dict[str, int]] = {}
        #: family -> rule -> captions offered
        self.seen: dict[str, dict[str, int]] = {}
        #: family -> rule -> examples (at most ``n``)
        self.pool: dict[str, dict[str, list[RuleExample]]] = {}

    def add(self, row: dict[str, Any]) -> None:
        entries = row.get(self._provenance) or []
        if not entries:
            return
        by_rule: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for e in entries:
            by_rule.setdefault((e.get("family") or "", e.get("rule") or ""), []).append(e)
        caption = row.get(self._caption) or ""
        for (fam, rule), es in by_rule.items():
            counts = self.negatives.setdefault(fam, {})
            counts[rule] = counts.get(rule, 0) + len(es)
            if self.n:
                self._offer(fam, rule, caption, es)

    def _offer(self, fam: str, rule: str, caption: str, entries: list[dict[str, Any]]) -> None:
        seen = self.seen.setdefault(fam, {})
        seen[rule] = seen.get(rule, 0) + 1
        e = entries[self.rng.randrange(len(entries))]
        item = RuleExample(caption, e.get("text") or "", e.get("plausibility"))
        reservoir_keep(self.pool.setdefault(fam, {}).setdefault(rule, []), self.n, seen[rule], item, self.rng)

    def rules(self, family: str) -> list[tuple[str, int, list[RuleExample]]]:
        """``(rule, negatives, examples)`` of a family, most negatives first (ties by name)."""
        counts = self.negatives.get(family, {})
        pool = self.pool.get(family, {})
        return [(r, n, pool.get(r, [])) for r, n in sorted(counts.items(), key=lambda rn: (-rn[1], rn[0]))]
