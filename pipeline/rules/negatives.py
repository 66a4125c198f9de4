"""Parsed captions in, kept negatives out: the per-caption work of ``hardneg generate``.

Pure (no I/O, no multiprocessing), so it is tested on single sentences and compiled with the rule
modules when hardneg is installed (see ``pipeline/_compiled.py``): this loop runs once per caption
and its cost is measured against the parse itself (bench/bench_generate.py).

When the run's resources hold pair tables (the corpus pass), every edit a family proposes is scored
(``pipeline.rules.plausibility``) before the filters rank and floor them; the resources also carry
the floors (``floors``: family -> bits; ``cross_class_floors``: family -> bits).
"""

from __future__ import annotations

import logging
from typing import Any, Collection

from pipeline.records import Candidate, CaptionRecord, Edit, RejectCounts
from pipeline.rules.builder import ShardBuilder
from pipeline.rules.families import ParsedCaption, Resources, get_family
from pipeline.rules.filters import select
from pipeline.rules.plausibility import PairKey, PairTables, Scorer, pair_key, plausibility
from pipeline.rules.realize import realize

log = logging.getLogger(__name__)

#: the scorer of the tables a worker holds (its memo lives as long as the worker)
_SCORER: list[Scorer] = []


def scorer_of(resources: Resources) -> Scorer | None:
    """The plausibility scorer of the run's pair tables, or None when the run scores nothing."""
    tables: PairTables | None = resources.data.get("plausibility")
    if tables is None:
        return None
    if not _SCORER or _SCORER[0].t is not tables:
        _SCORER[:] = [Scorer(tables)]
    return _SCORER[0]


def own_pairs(parsed: ParsedCaption) -> dict[PairKey, int]:
    """The positive's pair counts (left out of the corpus counts when it was in the sample)."""
    own: dict[PairKey, int] = {}
    lem = parsed.lemmas
    for p in parsed.deps:
        k = pair_key(p, lem)
        own[k] = own.get(k, 0) + 1
    return own


def negatives_for(
    parsed: ParsedCaption,
    record: CaptionRecord,
    group: Collection[str],
    families: list[str],
    k: int,
    seed: int,
    resources: Resources,
    rejects: RejectCounts,
    in_sample: bool = False,
) -> tuple[dict[str, list[Candidate]], dict[str, int]]:
    """Every family's kept candidates for one parsed caption, and how many edits each proposed.

    ``group`` holds the comparison keys of the captions of the same image (``filters.group_keys``);
    ``in_sample``: the caption was counted by the corpus pass (its own pairs are left out).
    """
    edits: list[Edit] = []
    generated: dict[str, int] = {}
    for fam in families:
        try:
            fam_edits = get_family(fam)(parsed, resources)
        except Exception:  # a rule bug on one odd parse must not kill a long run: count it
            log.debug("rule error in %s on %r", fam, record.caption, exc_info=True)
            rejects.add(fam, "rule_error")
            continue
        generated[fam] = len(fam_edits)
        edits.extend(fam_edits)

    def realizer(edit: Edit) -> Candidate | None:
        try:
            return realize(parsed.text, parsed.toks, edit)
        except Exception:
            log.debug("realisation error in %s on %r", edit.rule, record.caption, exc_info=True)
            return None

    scorer = scorer_of(resources)
    scores: list[float] | None = None
    if scorer is not None:
        own = own_pairs(parsed) if in_sample else None
        scores = [0.0 if e.reject else plausibility(scorer, e.pairs_old, e.pairs_new, own) for e in edits]
    kept = select(
        record.id, record.caption, edits, realizer, group, k, seed, rejects, scores,
        resources.data.get("floors"), resources.data.get("cross_class_floors"),
    )
    return kept, generated


def add_negatives(
    records: list[CaptionRecord],
    docs: list[Any],
    groups: dict[str, frozenset[str]],
    families: list[str],
    k: int,
    seed: int,
    resources: Resources,
    rejects: RejectCounts,
    builder: ShardBuilder,
    sampled: Collection[str] = (),
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Run the families over a shard's parsed captions and add every row to ``builder``.

    ``docs`` are spaCy docs or already built :class:`ParsedCaption` views (the corpus pass keeps
    the token tables of the captions it parsed); ``sampled`` the ids of the records the corpus pass
    counted. Returns, per family, the edits proposed, the negatives kept and the captions with at
    least one.
    """
    generated_n: dict[str, int] = {}
    kept_n: dict[str, int] = {}
    covered_n: dict[str, int] = {}
    for record, doc in zip(records, docs):
        parsed = doc if isinstance(doc, ParsedCaption) else ParsedCaption.from_doc(doc, record.caption)
        kept, generated = negatives_for(
            parsed, record, groups[record.group], families, k, seed, resources, rejects, record.id in sampled
        )
        for fam, n in generated.items():
            generated_n[fam] = generated_n.get(fam, 0) + n
        for fam, cands in kept.items():
            if cands:
                kept_n[fam] = kept_n.get(fam, 0) + len(cands)
                covered_n[fam] = covered_n.get(fam, 0) + 1
        builder.add(record, kept)
    return generated_n, kept_n, covered_n
