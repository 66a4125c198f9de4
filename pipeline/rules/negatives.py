"""Parsed captions in, kept negatives out: the per-caption work of ``hardneg generate``.

Pure (no I/O, no multiprocessing), so it is tested on single sentences and compiled with the rule
modules when hardneg is installed (see ``pipeline/_compiled.py``): this loop runs once per caption
and its cost is measured against the parse itself (bench/bench_generate.py).
"""

from __future__ import annotations

import logging
from typing import Any, Collection

from pipeline.records import Candidate, CaptionRecord, Edit, RejectCounts
from pipeline.rules.builder import ShardBuilder
from pipeline.rules.families import ParsedCaption, Resources, get_family
from pipeline.rules.filters import select
from pipeline.rules.realize import realize

log = logging.getLogger(__name__)


def negatives_for(
    parsed: ParsedCaption,
    record: CaptionRecord,
    group: Collection[str],
    families: list[str],
    k: int,
    seed: int,
    resources: Resources,
    rejects: RejectCounts,
) -> tuple[dict[str, list[Candidate]], dict[str, int]]:
    """Every family's kept candidates for one parsed caption, and how many edits each proposed.

    ``group`` holds the comparison keys of the captions of the same image (``filters.group_keys``).
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

    kept = select(record.id, record.caption, edits, realizer, group, k, seed, rejects)
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
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Run the families over a shard's parsed captions and add every row to ``builder``.

    Returns, per family, the edits proposed, the negatives kept and the captions with at least one.
    """
    generated_n: dict[str, int] = {}
    kept_n: dict[str, int] = {}
    covered_n: dict[str, int] = {}
    for record, doc in zip(records, docs):
        parsed = ParsedCaption.from_doc(doc, record.caption)
        kept, generated = negatives_for(parsed, record, groups[record.group], families, k, seed, resources, rejects)
        for fam, n in generated.items():
            generated_n[fam] = generated_n.get(fam, 0) + n
        for fam, cands in kept.items():
            if cands:
                kept_n[fam] = kept_n.get(fam, 0) + len(cands)
                covered_n[fam] = covered_n.get(fam, 0) + 1
        builder.add(record, kept)
    return generated_n, kept_n, covered_n
