"""The swap families on real captions: every candidate a rule proposes, realised, exactly."""

from __future__ import annotations

import pytest

from pipeline.rules.families import Resources, get_family
from pipeline.rules.realize import realize


def proposals(parsed, caption: str, family: str) -> list[tuple[str, str, bool]]:
    p = parsed(caption)
    return [
        (e.rule, realize(p.text, p.toks, e).text, e.symmetric_link)
        for e in get_family(family)(p, Resources())
    ]


def texts(parsed, caption: str, family: str) -> list[str]:
    return [t for _, t, _ in proposals(parsed, caption, family)]


# ----------------------------------------------------------------------------- relation_swap


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a dog chasing a cat", ["a cat chasing a dog"]),
        ("a cup on a table", ["a table on a cup"]),
        ("a white cat on a black mat", ["a black mat on a white cat"]),
        ("A woman is holding an umbrella.", ["An umbrella is holding a woman."]),
        ("An elephant standing behind a fence", ["A fence standing behind an elephant"]),
        # multi-word preposition climbed whole; the final period stays where it was
        ("A cat is sitting on top of a laptop.", ["A laptop is sitting on top of a cat."]),
        ("A dog sits in front of an open refrigerator.", ["An open refrigerator sits in front of a dog."]),
        # subject-verb number follows the new subject
        (
            "A man on a motorcycle is waving at two men",
            ["A motorcycle on a man is waving at two men", "Two men on a motorcycle are waving at a man"],
        ),
        ("A couple of cellphones are on a table", ["A table is on a couple of cellphones"]),
        # a headline-style bare noun gets an article when it moves away from the start
        (
            "Man riding a motor bike on a dirt road.",
            ["A motor bike riding a man on a dirt road.", "A dirt road riding a motor bike on a man."],
        ),
    ],
)
def test_relation_swap(parsed, caption, expected):
    assert texts(parsed, caption, "relation_swap") == expected


def test_relation_swap_moves_of_complements_and_never_swaps_around_of(parsed):
    # "of" joins a container to its content: the pair moves as one, and is never split
    assert texts(parsed, "A glass of ale on a table", "relation_swap") == ["A table on a glass of ale"]
    assert texts(parsed, "A cat sitting on a pile of clothes", "relation_swap") == ["A pile of clothes sitting on a cat"]
    assert texts(parsed, "A glass of ale", "relation_swap") == []


def test_relation_swap_marks_symmetric_relations(parsed):
    # "with" and "next to" relate both ways: proposed, but flagged so the filter drops them
    assert proposals(parsed, "Blue bathroom with two white towels", "relation_swap") == [
        ("prep", "Two white towels with a blue bathroom", True)
    ]
    assert proposals(parsed, "a cat next to a dog", "relation_swap") == [("prep", "a dog next to a cat", True)]


def test_relation_swap_ignores_coordination(parsed):
    assert texts(parsed, "a cat and a dog", "relation_swap") == []
    assert texts(parsed, "An old man and a young woman", "relation_swap") == []


# ----------------------------------------------------------------------------- attribute_swap


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a white cat on a black mat", [("adjective", "a black cat on a white mat", False)]),
        ("Blue bathroom with two white towels", [("adjective", "White bathroom with two blue towels", False)]),
        # a/an follows the new adjective on both sides
        ("An old man and a young woman", [("adjective", "A young man and an old woman", False)]),
        # only the differing adjectives move: "small" stays on both
        (
            "a small pink diamond above a small green hexagon",
            [("adjective", "a small green diamond above a small pink hexagon", False)],
        ),
        ("Man riding a motor bike on a dirt road.", [("compound", "Man riding a dirt bike on a motor road.", False)]),
        # same noun, coordinated: exchanging the adjectives only reorders the phrase pair
        ("a white cat and a black cat", [("adjective", "a black cat and a white cat", True)]),
    ],
)
def test_attribute_swap(parsed, caption, expected):
    assert proposals(parsed, caption, "attribute_swap") == expected


def test_attribute_swap_numbers(parsed):
    assert proposals(parsed, "two dogs chasing three cats", "attribute_swap") == [
        ("number", "three dogs chasing two cats", False)
    ]


def test_attribute_swap_needs_an_attribute_on_both_sides(parsed):
    assert texts(parsed, "a dog chasing a cat", "attribute_swap") == []
    assert texts(parsed, "a white cat on a mat", "attribute_swap") == []


# ----------------------------------------------------------------------------- object_swap


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a white cat on a black mat", ["a white mat on a black cat"]),
        (
            "A woman prepares a pizza while a man watches",
            [
                "A pizza prepares a woman while a man watches",
                "A man prepares a pizza while a woman watches",
                "A woman prepares a man while a pizza watches",
            ],
        ),
        # each slot keeps its number: the nouns are re-inflected, the verb needs no change
        ("A couple of cellphones are on a table", ["A couple of tables are on a cellphone"]),
        (
            "Two dogs are playing with a ball in the park.",
            [
                "Two balls are playing with a dog in the park.",
                "Two parks are playing with a ball in the dog.",
                "Two dogs are playing with a park in the ball.",
            ],
        ),
        # compounds travel with their noun; a/an is fixed in front of the new noun
        ("A dog sits in front of an open refrigerator.", ["A refrigerator sits in front of an open dog."]),
    ],
)
def test_object_swap(parsed, caption, expected):
    assert texts(parsed, caption, "object_swap") == expected


def test_object_swap_never_swaps_a_noun_with_its_of_complement(parsed):
    assert texts(parsed, "A bouquet of blooming flowers inside a steel vase.", "object_swap") == [
        "A steel vase of blooming flowers inside a bouquet.",
        "A bouquet of blooming steel vases inside a flower.",
    ]


def test_object_swap_irregular_plural(parsed):
    assert texts(parsed, "Two men are standing next to a horse", "object_swap") == [
        "Two horses are standing next to a man"
    ]


def test_object_swap_flags_pure_reordering(parsed):
    # "a cat and a dog" -> "a dog and a cat" means the same: flagged symmetric
    assert proposals(parsed, "a cat and a dog", "object_swap") == [("noun", "a dog and a cat", True)]
    # with different modifiers the same exchange changes the scene, so it is kept
    assert proposals(parsed, "An old man and a young woman", "object_swap") == [
        ("noun", "An old woman and a young man", False)
    ]


def test_candidates_carry_provenance(parsed):
    p = parsed("a white cat on a black mat")
    (edit,) = get_family("attribute_swap")(p, Resources())
    cand = realize(p.text, p.toks, edit)
    assert (cand.family, cand.rule) == ("attribute_swap", "adjective")
    assert cand.token_spans == ((1, 2), (5, 6))
    assert cand.char_spans == ((2, 7), (17, 22))
    assert [p.text[a:b] for a, b in cand.char_spans] == ["white", "black"]
