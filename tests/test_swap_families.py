"""The swap families on real captions: every edit a rule proposes, realised exactly, or the reason
it refuses one.

A proposal reads ``(rule, text, symmetric, cross_class)``; a refusal ``("REJECT", reason, items)``.
``cross_class`` edits exchange nouns of incompatible semantic classes: the filters keep them only
when their plausibility clears the cross-class floor (tests/test_filters.py).
"""

from __future__ import annotations

import pytest

from pipeline.rules.families import Resources, get_family
from pipeline.rules.realize import realize


def proposals(parsed, caption: str, family: str) -> list[tuple]:
    p = parsed(caption)
    out: list[tuple] = []
    for e in get_family(family)(p, Resources()):
        if e.reject:
            out.append(("REJECT", e.reject, e.items))
        else:
            out.append((e.rule, realize(p.text, p.toks, e).text, e.symmetric_link, e.cross_class))
    return out


def texts(parsed, caption: str, family: str) -> list[str]:
    return [t[1] for t in proposals(parsed, caption, family) if t[0] != "REJECT"]


# ----------------------------------------------------------------------------- the examples


def test_no_berry_topped_with_a_cake_covered_in_tables(parsed):
    # table (furniture) and berries (food) never change places; cake and berries (both food) do
    caption = "A table topped with a cake covered in berries next to a plate of sandwiches."
    got = proposals(parsed, caption, "object_swap")
    assert ("REJECT", "class_mismatch", ("table", "berry")) not in got  # proposed, but only on a score
    swapped = {t[1]: t[3] for t in got if t[0] == "noun"}
    assert swapped["A berry topped with a cake covered in tables next to a plate of sandwiches."] is True
    assert swapped["A table topped with a berry covered in cakes next to a plate of sandwiches."] is False
    assert swapped["A table topped with a cake covered in sandwiches next to a plate of berries."] is False


def test_no_food_taking_a_photo(parsed):
    caption = "A man taking a photo with his right hand and eating food with his left hand."
    got = proposals(parsed, caption, "object_swap")
    # "a man" has an article, "food" is a mass noun: no form of either fits the other's place;
    # hands are body parts, never exchanged
    assert ("REJECT", "agreement", ("man", "food")) in got
    assert ("REJECT", "class_mismatch", ("man", "his right hand")) in got
    # the whole phrases exchanged: a person and food are classes apart, kept only on a score
    assert [t for t in got if t[0] != "REJECT"] == [
        ("phrase", "Food taking a photo with its right hand and eating a man with its left hand.", False, True)
    ]
    assert proposals(parsed, caption, "relation_swap") == [("REJECT", "class_mismatch", ("man", "his right hand"))]


def test_never_a_people(parsed):
    # "a woman" / "people" can name the same person: no negative
    got = proposals(parsed, "A woman sits on a bench as people walk down a sidewalk.", "object_swap")
    assert ("REJECT", "same_kind", ("woman", "people")) in got
    assert not any("a people" in t[1].lower() for t in got if t[0] != "REJECT")
    # a dog is not a person: "people" takes the singular of the place it moves to
    got = texts(parsed, "A dog sits on a bench as people walk down a sidewalk.", "object_swap")
    assert "A person sits on a bench as dogs walk down a sidewalk." in got
    # whole phrases take their number along, and both verbs follow
    assert "People sit on a bench as a dog walks down a sidewalk." in got
    assert not any("a people" in t.lower() for t in got)


def test_mass_nouns_stay_singular(parsed):
    # the issue's "luggages": trunks are body parts here (elephants'), so nothing moves at all
    assert proposals(parsed, "A large stack of trunks and luggage on a sidewalk", "object_swap") == [
        ("REJECT", "class_mismatch", ("large stack of trunks", "luggage")),
        ("REJECT", "class_mismatch", ("trunk", "luggage")),
        ("REJECT", "class_mismatch", ("large stack of trunks", "sidewalk")),
        ("REJECT", "class_mismatch", ("trunk", "sidewalk")),
        ("phrase", "A large stack of trunks and a sidewalk on luggage", False, True),
        ("REJECT", "agreement", ("luggage", "sidewalk")),
    ]
    # a mass noun in a plural place stays singular and the verb follows; a count noun in a mass
    # noun's place without an article goes plural
    assert proposals(parsed, "Carrots are in a bowl next to the rice.", "object_swap") == [
        ("phrase", "A bowl is in carrots next to the rice.", False, True),
        ("noun", "Bowls are in a carrot next to the rice.", False, True),
        ("phrase", "The rice is in a bowl next to carrots.", False, False),
        ("noun", "Rice is in a bowl next to the carrot.", False, False),
        ("phrase", "Carrots are in the rice next to a bowl.", False, True),
        ("REJECT", "agreement", ("bowl", "rice")),
    ]
    assert texts(parsed, "Two bowls of rice next to carrots.", "object_swap")[-1] == "Two bowls of carrots next to rice."
    assert texts(parsed, "Apples are sitting next to some bread.", "object_swap") == [
        "Some bread is sitting next to apples.",
        "Bread is sitting next to some apples.",
    ]
    # "several" needs a plural, which a mass noun has not
    assert ("REJECT", "agreement", ("carrot", "broccoli")) in proposals(
        parsed, "Several carrots next to broccoli on a plate.", "object_swap"
    )


def test_fluorescent_orange_moves_whole(parsed):
    caption = "Workers in fluorescent orange jackets standing under a yellow umbrella."
    got = proposals(parsed, caption, "attribute_swap")
    assert ("exchange", "Workers in yellow jackets standing under a fluorescent orange umbrella.", False, False) in got
    assert not any("fluorescent fluorescent" in t[1] for t in got if t[0] != "REJECT")


def test_colour_only_with_colour_and_never_on_a_person(parsed):
    assert proposals(parsed, "A young boy with a purple shirt is on a gold skateboard.", "attribute_swap") == [
        ("REJECT", "class_mismatch", ("young", "purple")),
        ("REJECT", "class_mismatch", ("young", "")),
        ("REJECT", "class_mismatch", ("purple", "")),
        ("REJECT", "class_mismatch", ("young", "gold")),
        ("REJECT", "class_mismatch", ("young", "")),
        ("REJECT", "class_mismatch", ("gold", "")),
        ("exchange", "A young boy with a gold shirt is on a purple skateboard.", False, False),
    ]


def test_teddy_bear_is_never_broken_apart(parsed):
    caption = "Three teddy bears and a stuffed cat on a stone wall."
    assert proposals(parsed, caption, "attribute_swap") == [
        ("count", "A teddy bear and three stuffed cats on a stone wall.", False, False),
        ("count", "A teddy bear and a stuffed cat on three stone walls.", False, False),
    ]
    assert proposals(parsed, caption, "object_swap") == [
        ("phrase", "A stuffed cat and three teddy bears on a stone wall.", True, False),
        ("noun", "Three stuffed cats and a teddy bear on a stone wall.", False, False),
        ("phrase", "A stone wall and a stuffed cat on three teddy bears.", False, True),
        ("noun", "Three stone walls and a stuffed cat on a teddy bear.", False, True),
        ("phrase", "Three teddy bears and a stone wall on a stuffed cat.", False, True),
    ]
    # a name the parser split ("a fire | hydrant") is not a phrase that can move
    assert proposals(parsed, "A fire hydrant next to a red car.", "relation_swap") == [
        ("REJECT", "broken_name", ("fire", "red car"))
    ]
    assert proposals(parsed, "A fire hydrant next to a red car.", "attribute_swap") == [
        ("move", "A red fire hydrant next to a car.", False, False)
    ]


def test_a_quantifier_does_not_block_adjectives(parsed):
    assert proposals(parsed, "Several square pizzas are sitting on round plates.", "attribute_swap") == [
        ("exchange", "Several round pizzas are sitting on square plates.", False, False)
    ]


def test_coordinated_colours_move_as_one(parsed):
    assert proposals(parsed, "A black and white cat laying on white blanket", "attribute_swap") == [
        ("exchange", "A white cat laying on black and white blanket", False, False)
    ]


# ----------------------------------------------------------------------------- relation_swap


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a dog chasing a cat", [("verb_object", "a cat chasing a dog", False, False)]),
        ("a cup on a table", [("prep", "a table on a cup", False, True)]),
        ("A woman is holding an umbrella.", [("verb_object", "An umbrella is holding a woman.", False, True)]),
        # multi-word preposition climbed whole; the final period stays where it was
        ("A cat is sitting on top of a laptop.", [("verb_prep", "A laptop is sitting on top of a cat.", False, True)]),
        # subject-verb number follows the new subject; phrases with one noun still differ
        (
            "A man on a motorcycle is waving at two men",
            [
                ("prep", "A motorcycle on a man is waving at two men", False, True),
                ("verb_prep", "Two men on a motorcycle are waving at a man", False, False),
            ],
        ),
        ("A couple of cellphones are on a table", [("prep", "A table is on a couple of cellphones", False, True)]),
        # a headline-style bare noun gets an article when it moves away from the start
        (
            "Man riding a motor bike on a dirt road.",
            [
                ("verb_object", "A motor bike riding a man on a dirt road.", False, True),
                ("verb_prep", "A dirt road riding a motor bike on a man.", False, True),
            ],
        ),
        ("A large brown dog chasing a small cat.", [("verb_object", "A small cat chasing a large brown dog.", False, False)]),
    ],
)
def test_relation_swap(parsed, caption, expected):
    assert proposals(parsed, caption, "relation_swap") == expected


def test_relation_swap_moves_of_complements_and_never_swaps_around_of(parsed):
    # "of" joins a container to its content: the pair moves as one, and is never split
    assert texts(parsed, "A glass of ale on a table", "relation_swap") == ["A table on a glass of ale"]
    assert texts(parsed, "A cat sitting on a pile of clothes", "relation_swap") == ["A pile of clothes sitting on a cat"]
    assert texts(parsed, "A glass of ale", "relation_swap") == []
    # the content alone never moves out of its container ("a bouquet of | flowers")
    assert texts(parsed, "A bouquet of blooming flowers inside a steel vase.", "relation_swap") == []


def test_relation_swap_marks_symmetric_relations(parsed):
    # "with" and "next to" relate both ways: proposed, but flagged so the filter drops them
    assert proposals(parsed, "Blue bathroom with two white towels", "relation_swap") == [
        ("prep", "Two white towels with a blue bathroom", True, True)
    ]
    assert proposals(parsed, "a cat next to a dog", "relation_swap") == [("prep", "a dog next to a cat", True, False)]


def test_relation_swap_ignores_coordination(parsed):
    assert texts(parsed, "a cat and a dog", "relation_swap") == []
    assert texts(parsed, "An old man and a young woman", "relation_swap") == []


def test_relation_swap_pronouns_follow_the_phrase(parsed):
    # "his dog" moves in front of its owner: the possessive becomes "the"
    assert proposals(parsed, "A man walking his dog on a leash.", "relation_swap") == [
        ("verb_object", "The dog walking a man on a leash.", False, False),
        ("verb_prep", "A leash walking its dog on a man.", False, True),
    ]
    # a pronoun outside the moved phrases refers to the place, which now holds the other noun;
    # "next to" relates both ways, but the woman also holds the dog: exchanged, it is a new caption
    assert proposals(parsed, "A woman holding her dog next to a man.", "relation_swap") == [
        ("verb_object", "The dog holding a woman next to a man.", False, False),
        ("verb_prep", "A man holding his dog next to a woman.", False, False),
    ]


# ----------------------------------------------------------------------------- attribute_swap


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a white cat on a black mat", [("exchange", "a black cat on a white mat", False, False)]),
        ("Blue bathroom with two white towels", [("exchange", "White bathroom with two blue towels", False, False)]),
        # a/an follows the new adjective on both sides
        ("An old man and a young woman", [("exchange", "A young man and an old woman", False, False)]),
        # only modifiers of one type move: "small" stays on both
        (
            "a small pink diamond above a small green hexagon",
            [("exchange", "a small green diamond above a small pink hexagon", False, False)],
        ),
        # an adverb moves with its adjective; each type separately
        ("A very large elephant standing next to a small tree.", [("exchange", "A small elephant standing next to a very large tree.", False, False)]),
        (
            "A large brown dog chasing a small cat.",
            [
                ("exchange", "A small brown dog chasing a large cat.", False, False),
                ("move", "A large dog chasing a small brown cat.", False, False),
            ],
        ),
        # same noun, coordinated: exchanging the adjectives only reorders the phrase pair
        ("a white cat and a black cat", [("exchange", "a black cat and a white cat", True, False)]),
    ],
)
def test_attribute_swap(parsed, caption, expected):
    assert proposals(parsed, caption, "attribute_swap") == expected


def test_attribute_moves_to_a_phrase_without_one_of_its_type(parsed):
    assert proposals(parsed, "A white cat on a mat.", "attribute_swap") == [
        ("move", "A cat on a white mat.", False, False)
    ]
    # the article in front of the removed adjective meets the next word
    assert proposals(parsed, "An old man sitting on a bench.", "attribute_swap") == [
        ("move", "A man sitting on an old bench.", False, False)
    ]
    # never onto a noun it cannot describe: an open dog, a steel bouquet
    assert proposals(parsed, "A dog sits in front of an open refrigerator.", "attribute_swap") == [
        ("REJECT", "class_mismatch", ("open", ""))
    ]


def test_attribute_swap_numbers(parsed):
    assert proposals(parsed, "two dogs chasing three cats", "attribute_swap") == [
        ("exchange", "three dogs chasing two cats", False, False)
    ]
    # a number and a singular article change places; nouns and verbs follow
    assert proposals(parsed, "Two men are standing next to a horse", "attribute_swap") == [
        ("count", "A man is standing next to two horses", False, False)
    ]
    assert proposals(parsed, "Two dogs and a cat on a couch.", "attribute_swap") == [
        ("count", "A dog and two cats on a couch.", False, False),
        ("count", "A dog and a cat on two couches.", False, False),
    ]


def test_attribute_swap_needs_an_attribute(parsed):
    assert texts(parsed, "a dog chasing a cat", "attribute_swap") == []
    assert texts(parsed, "a white cat", "attribute_swap") == []


# ----------------------------------------------------------------------------- object_swap


@pytest.mark.parametrize(
    "caption, expected",
    [
        # whole phrases move, modifiers with them (the "a large car in front of a small van")
        ("a white cat on a black mat", [("phrase", "a black mat on a white cat", False, True)]),
        ("a large van in front of a small car", [("phrase", "a small car in front of a large van", False, False)]),
        # the same determiners: exchanging the names alone would be the same edit
        (
            "A woman prepares a pizza while a man watches",
            [
                ("phrase", "A pizza prepares a woman while a man watches", False, True),
                ("phrase", "A man prepares a pizza while a woman watches", False, False),
                ("phrase", "A woman prepares a man while a pizza watches", False, True),
            ],
        ),
        # the phrase takes its number along and the verb follows; exchanging the names alone keeps
        # each place's number and re-inflects the nouns
        (
            "A couple of cellphones are on a table",
            [
                ("phrase", "A table is on a couple of cellphones", False, True),
                ("noun", "A couple of tables are on a cellphone", False, True),
            ],
        ),
        (
            "Two men are standing next to a horse",
            [
                ("phrase", "A horse is standing next to two men", True, False),
                ("noun", "Two horses are standing next to a man", False, False),
            ],
        ),
        # the modifiers move with their noun: an open refrigerator stays open
        ("A dog sits in front of an open refrigerator.", [("phrase", "An open refrigerator sits in front of a dog.", False, True)]),
    ],
)
def test_object_swap(parsed, caption, expected):
    assert proposals(parsed, caption, "object_swap") == expected


def test_object_swap_never_swaps_a_noun_with_its_of_complement(parsed):
    # bouquet/flowers: an "of" complement; the bouquet moves with its flowers, and the flowers
    # alone never leave "a bouquet of" behind (they have a modifier, so their name stays too)
    assert proposals(parsed, "A bouquet of blooming flowers inside a steel vase.", "object_swap") == [
        ("phrase", "A steel vase inside a bouquet of blooming flowers.", False, True),
    ]


def test_object_swap_flags_pure_reordering(parsed):
    # "a cat and a dog" -> "a dog and a cat" means the same: flagged symmetric
    assert proposals(parsed, "a cat and a dog", "object_swap") == [("phrase", "a dog and a cat", True, False)]
    # whole phrases with their modifiers: still a reordering (exchanging the ages is attribute_swap's)
    assert proposals(parsed, "An old man and a young woman", "object_swap") == [
        ("phrase", "A young woman and an old man", True, False)
    ]


def test_object_swap_pronouns_follow_the_new_noun(parsed):
    assert proposals(parsed, "A woman holding her dog next to a man.", "object_swap") == [
        ("phrase", "The dog holding a woman next to a man.", False, False),
        ("noun", "A dog holding its woman next to a man.", False, False),
        ("phrase", "A man holding his dog next to a woman.", False, False),
        ("phrase", "A woman holding a man next to her dog.", False, False),
        ("noun", "A woman holding her man next to a dog.", False, False),
    ]


def test_candidates_carry_provenance(parsed):
    p = parsed("a white cat on a black mat")
    (edit,) = get_family("attribute_swap")(p, Resources())
    cand = realize(p.text, p.toks, edit)
    assert (cand.family, cand.rule) == ("attribute_swap", "exchange")
    assert cand.token_spans == ((1, 2), (5, 6))
    assert cand.char_spans == ((2, 7), (17, 22))
    assert [p.text[a:b] for a, b in cand.char_spans] == ["white", "black"]
    # the dependency pairs it changes, for the plausibility score
    assert edit.pairs_old == (("mod", "cat", "white"), ("mod", "mat", "black"))
    assert edit.pairs_new == (("mod", "cat", "black"), ("mod", "mat", "white"))


@pytest.mark.parametrize(
    "caption, expected",
    [
        (
            "A red circle to the left of a blue square",
            {
                "relation_swap": [("prep", "A blue square to the left of a red circle", False, False)],
                "attribute_swap": [("exchange", "A blue circle to the left of a red square", False, False)],
                "object_swap": [("phrase", "A blue square to the left of a red circle", False, False)],
            },
        ),
        (
            "a small yellow star above a large gray heart",
            {
                "relation_swap": [("prep", "a large gray heart above a small yellow star", False, False)],
                "attribute_swap": [
                    ("exchange", "a large yellow star above a small gray heart", False, False),
                    ("exchange", "a small gray star above a large yellow heart", False, False),
                ],
                "object_swap": [("phrase", "a large gray heart above a small yellow star", False, False)],
            },
        ),
        (
            # "two shapes: ..." is an apposition, not a list: its phrase still moves
            "two shapes: a small blue diamond to the left of a large black cross",
            {
                "relation_swap": [("prep", "two shapes: a large black cross to the left of a small blue diamond", False, False)],
                "attribute_swap": [
                    ("exchange", "two shapes: a large blue diamond to the left of a small black cross", False, False),
                    ("exchange", "two shapes: a small black diamond to the left of a large blue cross", False, False),
                ],
                "object_swap": [("phrase", "two shapes: a large black cross to the left of a small blue diamond", False, False)],
            },
        ),
    ],
)
def test_the_embedded_world_stays_swappable(parsed, caption, expected):
    # shapes are one class, colours and sizes typed: every swap the world's CE-CLIP run trains on
    assert {f: proposals(parsed, caption, f) for f in expected} == expected


# ----------------------------------------------------------------------------- relation words exchanged


def test_relation_swap_exchanges_two_prepositions(parsed):
    # every noun stays; the relations between them change
    got = proposals(parsed, "A cat sitting on a chair next to a table.", "relation_swap")
    assert ("preposition", "A cat sitting next to a chair on a table.", False, False) in got
    edit = next(e for e in get_family("relation_swap")(parsed("A cat sitting on a chair next to a table."), Resources())
                if e.rule == "preposition")
    assert edit.items == ("on", "next to")
    assert edit.pairs_old == (("p:on", "sit", "chair"), ("p:next to", "sit", "table"))
    assert edit.pairs_new == (("p:next to", "sit", "chair"), ("p:on", "sit", "table"))
    assert ("preposition", "A dog on a car near a street.", False, False) in proposals(
        parsed, "A dog near a car on a street.", "relation_swap"
    )
    # a preposition that starts the caption takes its capital letter along
    assert ("preposition", "Next to a table is a plate on a cup.", False, False) in proposals(
        parsed, "On a table is a plate next to a cup.", "relation_swap"
    )


@pytest.mark.parametrize(
    "caption",
    [
        "A dog near a car next to a tree.",  # one meaning group: "near" / "next to" say the same
        "A glass of wine on a table.",  # "of" is not a relation
        "A man on a motorcycle is waving at two men",  # "at" is the verb's target, not a place
        "A man in a red shirt standing next to a car.",  # an "in" of wearing is no place
        "A man in green is near a man in white.",
    ],
)
def test_relation_swap_leaves_prepositions_that_say_the_same(parsed, caption):
    assert not [t for t in proposals(parsed, caption, "relation_swap") if t[0] == "preposition"]


def test_relation_swap_moves_whole_objects_only(parsed):
    # "a lot of | fruits": moving the fruits would leave "a lot of" behind ("A lot of a bowl ...")
    assert proposals(parsed, "A lot of fruits that are in a bowl.", "relation_swap") == [
        ("REJECT", "partitive", ("fruit", "bowl"))
    ]
    # a frame is not a quantity: "a picture of" stays and the objects in it exchange
    assert proposals(parsed, "A picture of a cat on a bed.", "relation_swap") == [
        ("prep", "A picture of a bed on a cat.", False, True)
    ]
    # one conjunct cannot take the other's relation alone ("A bowl and oranges in apples ..."); the
    # prepositions still exchange
    assert proposals(parsed, "Apples and oranges in a bowl on a table.", "relation_swap") == [
        ("REJECT", "coordinated", ("orange", "bowl")),
        ("REJECT", "coordinated", ("orange", "table")),
        ("preposition", "Apples and oranges on a bowl in a table.", False, False),
    ]


def test_swaps_keep_a_noun_inside_a_modifier_in_place(parsed):
    # "snow covered" describes the car: the car moves with it, the snow is never an object
    assert proposals(parsed, "A snow covered car parked next to a truck.", "object_swap") == [
        ("phrase", "A truck parked next to a snow covered car.", True, False)
    ]


def test_attribute_swap_leaves_words_that_are_not_attributes(parsed):
    # "different" and "own" say nothing about what the noun looks like
    assert proposals(parsed, "a plate containing different varieties of food each in their own bowl", "attribute_swap") == []
    assert texts(parsed, "A red plate with the same blue cup.", "attribute_swap") == ["A blue plate with the same red cup."]


# ----------------------------------------------------------------------------- the edits that test binding


@pytest.mark.parametrize(
    "caption, expected",
    [
        # attributes of two objects exchanged whatever their types, ranked before the moves
        (
            "a small dog next to a white cat",
            [
                ("cross_exchange", "a white dog next to a small cat", False, False),
                ("move", "a dog next to a small white cat", False, False),
                ("move", "a small white dog next to a cat", False, False),
            ],
        ),
        (
            "a red bus next to a tall tree",
            [
                ("cross_exchange", "a tall bus next to a red tree", False, False),
                ("move", "a bus next to a tall red tree", False, False),
                ("move", "a tall red bus next to a tree", False, False),
            ],
        ),
        # the articles re-agree with the words they now meet
        (
            "An old car next to a red bike.",
            [
                ("cross_exchange", "A red car next to an old bike.", False, False),
                ("move", "A car next to an old red bike.", False, False),
                ("move", "An old red car next to a bike.", False, False),
            ],
        ),
        # never two colours on one ball, never "a wooden red ball" against the usual order: only
        # colour <-> material is exchanged
        (
            "A small red ball next to a wooden box.",
            [
                ("cross_exchange", "A small wooden ball next to a red box.", False, False),
                ("move", "A red ball next to a small wooden box.", False, False),
                ("move", "A small ball next to a red wooden box.", False, False),
                ("move", "A small red wooden ball next to a box.", False, False),
            ],
        ),
        # no modifier lands on or leaves a body part ("blue hair", "a long shirt")
        ("A man with long hair and a blue shirt.", [("REJECT", "class_mismatch", ("blue", ""))]),
    ],
)
def test_attribute_exchange_across_types(parsed, caption, expected):
    assert proposals(parsed, caption, "attribute_swap") == expected


def test_exchanges_rank_before_moves(parsed):
    from pipeline.rules.families.swap import TIERS

    edits = get_family("attribute_swap")(parsed("a small dog next to a white cat"), Resources())
    assert [(e.rule, e.tier) for e in edits] == [("cross_exchange", 0), ("move", 2), ("move", 2)]
    assert TIERS["attribute_swap"] == {"exchange": 0, "cross_exchange": 0, "count": 1, "move": 2}
    assert TIERS["object_swap"] == {"phrase": 0, "noun": 1}


@pytest.mark.parametrize(
    "caption, expected",
    [
        # the subject and the possessor of its object exchange (people and animals); the
        # relation's own exchange is refused by class
        (
            "a woman brushing a girl's hair",
            [
                ("REJECT", "class_mismatch", ("woman", "girl's hair")),
                ("possessive", "a girl brushing a woman's hair", False, False),
            ],
        ),
        # the possessive ending follows the new possessor's number
        (
            "A dog chasing the cats' toy.",
            [
                ("verb_object", "The cats' toy chasing a dog.", False, True),
                ("possessive", "The cats chasing a dog's toy.", False, False),
            ],
        ),
        # a toy is no person: the possessor stays
        (
            "A teddy bear is sitting on a woman's neck.",
            [
                ("REJECT", "class_mismatch", ("teddy bear", "woman's neck")),
                ("REJECT", "class_mismatch", ("teddy bear", "woman")),
            ],
        ),
        # a pronoun that refers to the possessor ("his dog") refuses the exchange
        (
            "A man holding his dog's leash next to a woman.",
            [
                ("verb_object", "The dog's leash holding a man next to a woman.", False, True),
                ("REJECT", "pronoun", ("man", "his dog")),
                ("verb_prep", "A woman holding her dog's leash next to a man.", False, False),
            ],
        ),
        # a number on one side: the verb follows the new subject
        ("A woman talks to three men.", [("verb_prep", "Three men talk to a woman.", False, False)]),
        # the subjects of two clauses
        ("A man is cooking while a woman watches.", [("clause_subject", "A woman is cooking while a man watches.", False, False)]),
    ],
)
def test_relation_swap_possessives_numbers_and_clauses(parsed, caption, expected):
    assert proposals(parsed, caption, "relation_swap") == expected


def test_relation_swap_counts_the_structures_it_cannot_move(parsed):
    assert proposals(parsed, "Fruits and vegetables are on the stove.", "relation_swap") == [
        ("REJECT", "coordinated", ("fruit", "stove"))
    ]


def test_members_of_one_list_exchange_symmetrically(parsed):
    # a comma list parsed as appositions: two of its members exchanged change nothing
    got = proposals(parsed, "Gloves, cell phone, lip gloss, a hairbrush and other items are on the table.", "object_swap")
    assert ("phrase", "Cell phone, gloves, lip gloss, a hairbrush and other items are on the table.", True, True) in got
    assert proposals(parsed, "Gloves, cell phone, lip gloss, a hairbrush and other items are on the table.", "relation_swap") == [
        ("REJECT", "coordinated", ("glove", "table"))
    ]


def test_a_symmetric_relation_with_a_relation_of_its_own_is_a_new_caption(parsed):
    # "with" relates both ways, but the cross has the diamond on its left: exchanged, that changes
    assert proposals(parsed, "a large black cross with a small blue diamond to its left", "relation_swap") == [
        ("prep", "a small blue diamond with a large black cross to its left", False, False)
    ]
    # each conjunct has its own place: exchanging them says which shape is where
    assert proposals(parsed, "a small gray circle at the top and a large blue diamond at the bottom", "object_swap") == [
        ("phrase", "a large blue diamond at the top and a small gray circle at the bottom", False, False)
    ]
    # one place for both: the conjuncts share it
    assert ("phrase", "a dog and a cat on a bed", True, False) in proposals(parsed, "a cat and a dog on a bed", "object_swap")
