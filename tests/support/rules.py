"""Plausibility tables counted from a small hand-written corpus, as the generate stage counts them."""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

from pipeline.lexicon import load_semantics
from pipeline.rules.plausibility import compile_pair_tables, pair_key


def pair_tables(parsed: Callable[[str], Any], corpus: Sequence[str]) -> Any:
    """The pair tables of ``corpus`` (``parsed``: the conftest fixture, caption -> ParsedCaption)."""
    sem = load_semantics()
    counts: Counter = Counter()
    for c in corpus:
        p = parsed(c)
        counts.update(pair_key(d, p.lemmas) for d in p.deps)
    return compile_pair_tables(counts, len(corpus), sem.noun_class, sem.modifier_type)
