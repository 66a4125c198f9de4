"""The learned text-only detector, where the answer is known.

- A tell: every negative carries a word no positive has, so held-out accuracy must be near 1.
- No tell: the negative swaps the two colours of "a <c1> <s1> next to a <c2> <s2>" with every
  (c1, c2, s1, s2) equally likely, so (positive, negative) and (negative, positive) are equally
  likely and no detector can beat 50% on average; it must land near 0.5.
- The split is by image group, the sample is order-independent, and the figures are exact for a seed.
"""

from __future__ import annotations

import random

import pytest

from pipeline.core.errors import ConfigError
from pipeline.report.learned import NOT_ENOUGH, LearnedCheck, LearnedConfig, learned_check

COLOURS = ["red", "blue", "green", "yellow", "black", "white", "brown", "orange"]
SHAPES = ["dog", "cat", "ball", "car", "chair", "table", "cup", "bike", "horse", "bench"]
RELATIONS = ["next to", "on top of", "behind", "in front of", "near"]


def colour_rows(n: int, seed: int, tell: bool = False, per_group: int = 5, family: str = "attribute_swap") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        c1, c2 = rng.sample(COLOURS, 2)
        s1, s2, rel = rng.choice(SHAPES), rng.choice(SHAPES), rng.choice(RELATIONS)
        pos = f"A {c1} {s1} {rel} a {c2} {s2}."
        neg = f"A purple {s1} {rel} a {c2} {s2}." if tell else f"A {c2} {s1} {rel} a {c1} {s2}."
        rows.append({"id": f"cap{i:05d}", "caption": pos, "group": f"img{i // per_group}", family: [neg]})
    return rows


def test_a_word_only_negatives_have_is_found():
    result = learned_check(colour_rows(2000, seed=1, tell=True), ["attribute_swap"])
    fig = result.families["attribute_swap"]
    assert fig["heldout_pairs"] > 400 and fig["train_pairs"] > 1000
    assert fig["accuracy"] >= 0.99 and fig["ci95_low"] > 0.97
    fit = result.fits["attribute_swap"]
    assert fit.negative_tells[0][0] in ("purple", "a purple")
    # the positive's first colour is the one "purple" took: the colours mark the positive
    assert fit.positive_tells[0][0].split()[-1] in COLOURS and all(w > 0 for _, w in fit.positive_tells)


def test_exchangeable_pairs_are_chance():
    result = learned_check(colour_rows(3000, seed=2), ["attribute_swap"])
    fig = result.families["attribute_swap"]
    assert fig["heldout_pairs"] > 700
    assert fig["ci95_low"] < 0.5 < fig["ci95_high"]
    assert abs(fig["accuracy"] - 0.5) < 0.07


def test_groups_are_never_on_both_sides_and_the_sample_ignores_row_order():
    rows = colour_rows(1500, seed=3, tell=True)
    cfg = LearnedConfig(max_pairs=600, seed=5, min_pairs=50)
    check = LearnedCheck(["attribute_swap"], cfg)
    for r in rows:
        check.add(r)
    result = check.finish()
    fit = result.fits["attribute_swap"]
    train_groups, test_groups = {p.group for p in fit.train}, {p.group for p in fit.test}
    assert train_groups and test_groups and not train_groups & test_groups
    assert all(check.is_heldout_group(g) for g in test_groups)
    assert len(fit.train) + len(fit.test) == 600  # capped by max_pairs
    assert result.families["attribute_swap"]["available"] == 1500
    assert 0.2 < len(test_groups) / (len(test_groups) + len(train_groups)) < 0.4  # about heldout_fraction

    shuffled = rows[:]
    random.Random(9).shuffle(shuffled)
    again = learned_check(shuffled, ["attribute_swap"], cfg)
    assert again.families == result.families
    assert [p.id for p in again.fits["attribute_swap"].test] == [p.id for p in fit.test]


def test_figures_are_exact_for_a_seed_and_the_seed_matters():
    rows = colour_rows(1500, seed=4)
    cfg = LearnedConfig(seed=7)
    first = learned_check(rows, ["attribute_swap"], cfg)
    second = learned_check(rows, ["attribute_swap"], LearnedConfig(seed=7))
    assert first.to_json() == second.to_json()
    assert first.fits["attribute_swap"].margins == second.fits["attribute_swap"].margins
    other = learned_check(rows, ["attribute_swap"], LearnedConfig(seed=8))
    assert [p.id for p in other.fits["attribute_swap"].test] != [p.id for p in first.fits["attribute_swap"].test]


def test_too_few_pairs_says_so_instead_of_a_figure():
    rows = colour_rows(150, seed=5, tell=True)
    result = learned_check(rows, ["attribute_swap", "object_swap"], LearnedConfig(min_pairs=100))
    fig = result.families["attribute_swap"]
    assert fig["skipped"] == NOT_ENOUGH and "accuracy" not in fig
    assert fig["train_pairs"] + fig["heldout_pairs"] == 150
    assert result.families["object_swap"] == {"available": 0, "train_pairs": 0, "heldout_pairs": 0,
                                              "train_groups": 0, "heldout_groups": 0, "skipped": NOT_ENOUGH}
    assert result.fits == {}
    # the same pairs are enough with a lower floor
    assert "accuracy" in learned_check(rows, ["attribute_swap"], LearnedConfig(min_pairs=20)).families["attribute_swap"]


def test_settings_are_reported_and_validated():
    info = learned_check([], ["relation_swap"], LearnedConfig(ngram_range=[1, 3], C=0.5)).info
    assert info["ngram_range"] == "1-3" and info["C"] == 0.5 and info["min_pairs"] == 100
    for bad, match in (({"heldout_fraction": 1.0}, "heldout_fraction"), ({"ngram_range": [2, 1]}, "ngram_range"),
                       ({"ngram_range": [1]}, "ngram_range"), ({"C": 0}, "learned.C"), ({"min_pairs": 0}, "min_pairs")):
        with pytest.raises(ConfigError, match=match):
            LearnedConfig(**bad).validate()
