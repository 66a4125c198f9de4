"""The views ``pipeline.rules.syntax`` reads out of a parse, on real captions, exactly."""

from __future__ import annotations

from pipeline.rules.syntax import NounPhrase, finite_verb, is_plural, links, noun_phrases, part_of, tokens_of


def view(nlp, caption):
    toks, children = tokens_of(nlp(caption))
    phrases = noun_phrases(toks, children)
    return toks, children, phrases, links(toks, children, phrases)


def test_token_table(nlp):
    toks, children = tokens_of(nlp("A dog is sitting on a couch."))
    assert [(t.i, t.text, t.pos, t.dep, t.head) for t in toks] == [
        (0, "A", "DET", "det", 1), (1, "dog", "NOUN", "nsubj", 3), (2, "is", "AUX", "aux", 3),
        (3, "sitting", "VERB", "ROOT", 3), (4, "on", "ADP", "prep", 3), (5, "a", "DET", "det", 6),
        (6, "couch", "NOUN", "pobj", 4), (7, ".", "PUNCT", "punct", 3),
    ]
    # offsets, spacing and lower case are the caption's own; children in order
    assert [(t.idx, t.ws, t.lower) for t in toks[:2]] == [(0, " ", "a"), (2, " ", "dog")]
    assert children[3] == (1, 2, 4, 7) and children[6] == (5,)


def test_noun_phrases_with_adjectives_numbers_and_quantity_nouns(nlp):
    _, _, phrases, _ = view(nlp, "A small black dog is sitting on top of a red couch.")
    # "top" (of) is a relational noun, not an object
    assert phrases == [
        NounPhrase(start=0, end=4, head=3, noun=3, nominal_start=3, adjectives=(1, 3), compound=None, number=None, plural=False),
        NounPhrase(start=9, end=12, head=11, noun=11, nominal_start=11, adjectives=(10, 11), compound=None, number=None, plural=False),
    ]
    _, _, phrases, _ = view(nlp, "Two men are riding horses next to a couple of cows.")
    # the number is kept; "a couple of cows" names cows (noun) through "couple" (head)
    assert [(p.start, p.end, p.head, p.noun, p.number, p.plural) for p in phrases] == [
        (0, 2, 1, 1, 0, True), (4, 5, 4, 4, None, True), (7, 11, 8, 10, None, True),
    ]


def test_a_noun_inside_a_modifier_does_not_hide_the_object(nlp):
    # "snow" (npadvmod of "covered") describes the car: the car is the phrase, the snow is not one
    toks, _, phrases, _ = view(nlp, "A snow covered car parked next to a truck.")
    assert [(p.start, p.end, toks[p.noun].text) for p in phrases] == [(0, 4, "car"), (7, 9, "truck")]


def test_links_relations_between_phrases(nlp):
    *_, found = view(nlp, "A small black dog is sitting on top of a red couch.")
    assert [(x.a, x.b, x.kind, x.relation, x.symmetric, x.verb) for x in found] == [
        (0, 1, "verb_prep", "sitting on top of", False, 4),
    ]
    *_, found = view(nlp, "Two men are riding horses next to a couple of cows.")
    assert [(x.a, x.b, x.kind, x.relation, x.symmetric) for x in found] == [
        (0, 1, "verb_object", "riding", False),
        (0, 2, "verb_prep", "riding horses next to", True),
    ]
    *_, found = view(nlp, "a cat and a dog")
    assert [(x.kind, x.relation, x.symmetric) for x in found] == [("conj", "and", True)]
    # "of" is never a relation: "a glass of ale" is one object, related to the table by "on"
    *_, found = view(nlp, "A glass of ale on a wooden table")
    assert [(x.a, x.b, x.kind, x.relation) for x in found] == [(0, 2, "prep", "on")]


def test_part_of_and_position_nouns(nlp):
    toks, _, phrases, _ = view(nlp, "A glass of ale on a wooden table")
    glass, ale, table = phrases
    assert part_of(toks, glass, ale) and not part_of(toks, glass, table) and not part_of(toks, ale, glass)
    # "the left side of": a position, not an object
    _, _, phrases, found = view(nlp, "The left side of a plane flying over the ocean.")
    assert [(p.start, p.end) for p in phrases] == [(4, 6), (8, 10)]
    assert [(x.kind, x.relation) for x in found] == [("verb_prep", "flying over")]


def test_finite_verb_and_plural(nlp):
    toks, children, _, _ = view(nlp, "Two men are riding horses next to a couple of cows.")
    assert finite_verb(toks, children, 3) == 2  # "riding" agrees through "are"
    assert finite_verb(toks, children, 2) == 2
    assert [is_plural(t) for t in toks[:2]] == [False, True]
    toks, children, _, _ = view(nlp, "A man rides a horse.")
    assert finite_verb(toks, children, 2) == 2
