"""The scorer's memos are bounded (a worker scores every caption it is given) and never change a score."""

from __future__ import annotations

from collections import Counter

from pipeline.lexicon import load_semantics
from pipeline.rules.plausibility import MEMO_LIMIT, Scorer, compile_pair_tables


def test_a_scorer_past_its_memo_limit_scores_as_a_fresh_one():
    sem = load_semantics()
    counts = Counter({("mod", "cat", "black"): 3, ("p:on", "cat", "bed"): 2, ("subj", "sit", "cat"): 4})
    tables = compile_pair_tables(counts, 5, sem.noun_class, sem.modifier_type)
    keys = [("mod", f"n{i}", "black") for i in range(MEMO_LIMIT + 10)] + list(counts)
    busy = Scorer(tables)
    got = [busy.logp(k) for k in keys] + [busy.logp(k, own=1) for k in counts]
    assert len(busy._memo) <= MEMO_LIMIT and len(busy._log0) <= MEMO_LIMIT
    assert got == [Scorer(tables).logp(k) for k in keys] + [Scorer(tables).logp(k, own=1) for k in counts]
    assert got[-3:] == [Scorer(tables).logp(k, own=1) for k in counts] and got[-1] < got[-4]  # own left out
