"""``pipeline.rules.realize``: edits on token ranges become the text of a negative, exactly."""

from __future__ import annotations

import pytest

from pipeline.records import Edit, Replacement
from pipeline.rules.realize import keeps_case, realize, span_words


def edit(*reps: tuple[int, int, str]) -> Edit:
    return Edit("object_swap", "noun", tuple(Replacement(*r) for r in reps))


def test_span_words_undoes_the_sentence_start(parsed):
    p = parsed("A dog and NASA on a TV screen.")
    assert span_words(p.toks, 0, 2) == "a dog"
    assert span_words(p.toks, 3, 4) == "NASA"  # a proper name keeps its capital
    assert span_words(p.toks, 6, 9) == "TV screen."
    assert span_words(p.toks, 2, 2) == ""
    assert [keeps_case(t) for t in p.toks[:4]] == [False, False, False, True]


def test_replacements_keep_the_captions_own_spacing(parsed):
    p = parsed("A dog  chasing a cat,   quickly.")
    cand = realize(p.text, p.toks, edit((1, 2, "cat"), (5, 6, "dog")))
    assert cand.text == "A cat  chasing a dog,   quickly."
    assert cand.token_spans == ((1, 2), (5, 6))
    assert [p.text[a:b] for a, b in cand.char_spans] == ["dog", "cat"]


def test_articles_follow_the_new_words(parsed):
    p = parsed("A dog next to an apple")
    assert realize(p.text, p.toks, edit((1, 2, "elephant"), (5, 6, "pear"))).text == "An elephant next to a pear"
    # an article inside a replacement, and one ending it, meet their next words too
    p = parsed("A man holding a bag")
    assert realize(p.text, p.toks, edit((3, 5, "an umbrella"))).text == "A man holding an umbrella"
    assert realize(p.text, p.toks, edit((0, 2, "a"))).text == "A holding a bag"  # "a" before "holding"
    p = parsed("A old cat on a mat")  # a positive's own wrong article is left alone
    assert realize(p.text, p.toks, edit((5, 6, "rug"))).text == "A old cat on a rug"


def test_sentence_start_is_capitalised(parsed):
    p = parsed("A man riding a horse.")
    assert realize(p.text, p.toks, edit((0, 2, "a horse"), (3, 5, "a man"))).text == "A horse riding a man."
    p = parsed("a man riding a horse")  # a lower-case caption stays lower case
    assert realize(p.text, p.toks, edit((0, 2, "a horse"), (3, 5, "a man"))).text == "a horse riding a man"


def test_deletion_and_insertion(parsed):
    p = parsed("A white cat on a mat.")
    # a deletion takes its leading space with it; an insertion brings its own
    assert realize(p.text, p.toks, edit((0, 2, "A"), (5, 5, "white "))).text == "A cat on a white mat."
    assert realize(p.text, p.toks, edit((5, 6, ""))).text == "A white cat on a."
    p = parsed("An old man on a bench")
    assert realize(p.text, p.toks, edit((0, 2, "An"), (5, 5, "old "))).text == "A man on an old bench"


def test_overlapping_replacements_are_an_error(parsed):
    p = parsed("A dog chasing a cat")
    with pytest.raises(ValueError, match="overlapping replacements"):
        realize(p.text, p.toks, edit((1, 3, "x"), (2, 4, "y")))
