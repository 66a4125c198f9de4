"""Dependency pairs of real captions, what an edit changes, and the plausibility score."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from support.rules import pair_tables

from pipeline.lexicon import load_semantics
from pipeline.rules.families import Resources, get_family
from pipeline.rules.plausibility import (
    BACKOFF_WEIGHT,
    PRIOR_COUNT,
    Scorer,
    compile_pair_tables,
    exchange_pairs,
    pair_key,
    plausibility,
    relabel_pairs,
)


def pairs(parsed, caption):
    p = parsed(caption)
    return [pair_key(d, p.lemmas) for d in p.deps]


@pytest.mark.parametrize(
    "caption, expected",
    [
        # a multi-word preposition is one relation; the subject of a verb and the root noun
        (
            "A cat is sitting on top of a laptop.",
            [("subj", "sit", "cat"), ("root", "", "cat"), ("p:on top of", "sit", "laptop")],
        ),
        # a quantity noun stands aside for what it counts
        (
            "A group of people standing in front of a bus.",
            [("root", "", "people"), ("subj", "stand", "people"), ("p:in front of", "stand", "bus")],
        ),
        # "be" + preposition: the subject is the preposition's head; numbers and adjectives modify
        (
            "Two white dogs are on a bed.",
            [("num", "dog", "two"), ("mod", "dog", "white"), ("root", "", "dog"), ("p:on", "dog", "bed")],
        ),
        # a coordinated object has the first one's relation; a passive participle takes an object
        (
            "A pizza topped with cheese and a red pepper.",
            [
                ("root", "", "pizza"), ("obj", "top", "pizza"), ("p:with", "top", "cheese"),
                ("mod", "pepper", "red"), ("p:with", "top", "pepper"),
            ],
        ),
        # a relative "that" stands for the noun it follows
        (
            "A car that is parked next to a fire hydrant.",
            [("root", "", "car"), ("obj", "park", "car"), ("cmp", "hydrant", "fire"), ("p:next to", "park", "hydrant")],
        ),
        ("The kitchen is clean.", [("root", "", "kitchen"), ("mod", "kitchen", "clean")]),
    ],
)
def test_dep_pairs(parsed, caption, expected):
    assert pairs(parsed, caption) == expected


def test_exchange_pairs_of_a_relation_swap(parsed):
    p = parsed("A cat sitting on a bed.")
    a, b = p.phrases
    old, new = exchange_pairs(p.deps, p.toks, p.children, p.lemmas, (a.start, a.end), (b.start, b.end))
    assert old == (("root", "", "cat"), ("subj", "sit", "cat"), ("p:on", "sit", "bed"))
    assert new == (("root", "", "bed"), ("subj", "sit", "bed"), ("p:on", "sit", "cat"))


def test_relabel_pairs_of_a_replacement(parsed):
    p = parsed("A cat sitting on a bed.")
    on = next(t.i for t in p.toks if t.lower == "on")
    assert relabel_pairs(p.deps, p.lemmas, {}, (on, on + 1), "on", "under") == (
        (("p:on", "sit", "bed"),),
        (("p:under", "sit", "bed"),),
    )
    sit = next(t.i for t in p.toks if t.lower == "sitting")
    assert relabel_pairs(p.deps, p.lemmas, {sit: "stand"}) == (
        (("subj", "sit", "cat"), ("p:on", "sit", "bed")),
        (("subj", "stand", "cat"), ("p:on", "stand", "bed")),
    )


CORPUS = [
    "A cat sitting on a bed.",
    "A dog sitting on a bed.",
    "A cat sitting on a couch.",
    "A man sitting on a bench.",
    "A woman sitting on a bench.",
    "A man riding a horse.",
]


@pytest.fixture(scope="module")
def tables(parsed):
    return pair_tables(parsed, CORPUS)


def test_scorer_smooths_by_class_and_leaves_the_caption_out(tables):
    s = Scorer(tables)
    seen = s.logp(("subj", "sit", "cat"))
    # never seen, but a dog is an animal like the cat that sits: more than a bed that sits
    dog, bed = s.logp(("subj", "sit", "dog")), s.logp(("subj", "sit", "bed"))
    assert s.logp(("subj", "sit", "dog")) > s.logp(("subj", "sit", "bed"))
    assert seen > dog > bed
    # the caption's own occurrences are no evidence for itself
    c, expected = tables.pairs[("subj", "sit", "cat")], s._parts(("subj", "sit", "cat"))[1]
    assert c == 2
    assert s.logp(("subj", "sit", "cat"), own=1) == pytest.approx(math.log2(1 + BACKOFF_WEIGHT * expected + PRIOR_COUNT))
    assert s.logp(("subj", "sit", "cat"), own=2) < s.logp(("subj", "sit", "cat"), own=1) < seen


def test_plausibility_of_swaps(parsed, tables):
    s = Scorer(tables)
    p = parsed("A cat sitting on a bed.")
    (swap,) = get_family("relation_swap")(p, Resources())
    score = plausibility(s, swap.pairs_old, swap.pairs_new, None)
    assert score < -1.0  # a bed sitting on a cat: its pairs are far rarer than the positive's
    assert plausibility(s, (), (), None) == 0.0
    # same pairs, same score: the mean over pairs, whatever their order
    assert plausibility(s, swap.pairs_old[::-1], swap.pairs_new[::-1], None) == pytest.approx(score)


def test_tables_do_not_depend_on_count_order(parsed):
    sem = load_semantics()
    keys = [pair_key(d, parsed(c).lemmas) for c in CORPUS for d in parsed(c).deps]
    a = compile_pair_tables(Counter(keys), 6, sem.noun_class, sem.modifier_type)
    b = compile_pair_tables(dict(reversed(list(Counter(keys).items()))), 6, sem.noun_class, sem.modifier_type)
    assert a == b
