"""Morphology helpers: articles, noun number, verb agreement."""

from __future__ import annotations

import pytest

from pipeline.rules.grammar import agree_verb, indefinite_article, pluralize, singularize


@pytest.mark.parametrize(
    "word, article",
    [
        ("apple", "an"), ("banana", "a"), ("umbrella", "an"), ("open", "an"), ("closed", "a"),
        ("hour", "an"), ("honest", "an"), ("umpire", "an"), ("university", "a"), ("unicorn", "a"),
        ("one", "a"), ("European", "a"), ("orange", "an"), ("SUV", "an"), ("TV", "a"), ("X", "an"),
    ],
)
def test_indefinite_article(word, article):
    assert indefinite_article(word) == article


@pytest.mark.parametrize(
    "singular, plural",
    [
        ("dog", "dogs"), ("bus", "buses"), ("box", "boxes"), ("bench", "benches"), ("dish", "dishes"),
        ("baby", "babies"), ("toy", "toys"), ("man", "men"), ("woman", "women"), ("child", "children"),
        ("person", "people"), ("knife", "knives"), ("sheep", "sheep"), ("tomato", "tomatoes"),
        ("snowman", "snowmen"), ("Man", "Men"),
    ],
)
def test_plural_round_trip(singular, plural):
    assert pluralize(singular) == plural
    assert singularize(plural) == singular


@pytest.mark.parametrize(
    "word, lemma, plural, expected",
    [
        ("is", "be", True, "are"), ("are", "be", False, "is"), ("was", "be", True, "were"),
        ("were", "be", False, "was"), ("has", "have", True, "have"), ("have", "have", False, "has"),
        ("Is", "be", True, "Are"), ("waves", "wave", True, "wave"), ("wave", "wave", False, "waves"),
        ("watch", "watch", False, "watches"), ("fly", "fly", False, "flies"), ("does", "do", True, "do"),
        ("are", "be", True, "are"),
    ],
)
def test_agree_verb(word, lemma, plural, expected):
    assert agree_verb(word, lemma, plural) == expected


@pytest.mark.parametrize("word, lemma", [("rode", "ride"), ("can", "can"), ("sitting", "sit")])
def test_non_agreeing_forms_are_left_alone(word, lemma):
    assert agree_verb(word, lemma, True) is None
