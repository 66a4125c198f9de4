"""The semantic classes and modifier types (pipeline/data/semantics.json) and their loader."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from pipeline.config import FamilyFloors
from pipeline.contract.families import ALL_FAMILIES
from pipeline.lexicon import (
    LexiconError,
    extend_semantics_with_wordnet,
    load_lexicon,
    load_semantics,
    semantics_path,
)


@pytest.fixture(scope="module")
def sem():
    return load_semantics()


def test_every_noun_of_the_replace_lexicon_has_a_class(sem):
    lex = load_lexicon()
    assert [m for g in lex.noun_groups for m in g.members if sem.class_of(m) is None] == []
    assert [w for w in lex.generic_nouns if sem.class_of(w) is None] == []


def test_classes(sem):
    assert [sem.class_of(w) for w in ("man", "people", "puppy", "teddy bear", "fire hydrant", "hot dog", "luggage")] == [
        "person", "person", "animal", "toy", "street", "food", "accessory"
    ]
    assert sem.class_of("buses") == "vehicle" and sem.class_of("flibbertigibbet") is None


def test_compatibility_is_symmetric_and_never_for_body_parts(sem):
    for a, others in sem.compatible.items():
        for b in others:
            assert a in sem.compatible[b], (a, b)
    assert sem.swappable("person", "animal") and sem.swappable("animal", "animal")
    assert not sem.swappable("person", "food") and not sem.swappable("vehicle", "person")
    assert sem.compatible["body_part"] == frozenset() and sem.compatible["abstract"] == frozenset()


def test_same_kind(sem):
    # synonyms and hypernyms name the same thing; siblings do not
    assert sem.same_kind("woman", "lady") and sem.same_kind("woman", "people") and sem.same_kind("child", "boy")
    assert sem.same_kind("athlete", "batter")  # transitively: athlete > player > batter
    assert not sem.same_kind("boy", "girl") and not sem.same_kind("man", "woman") and not sem.same_kind("cup", "glass")


@pytest.mark.parametrize(
    "word, cls, fits",
    [
        ("purple", "person", False), ("purple", "clothing", True), ("blue", "animal", False), ("brown", "animal", True),
        ("young", "vehicle", False), ("young", "person", True), ("old", "building", True),
        ("open", "animal", False), ("open", "appliance", True), ("square", "food", True), ("square", "animal", False),
        ("stone", "structure", True), ("stone", "plant", False), ("huge", "person", False), ("little", "person", True),
        ("fluorescent", "clothing", True), ("frobnicated", "person", True),
    ],
)
def test_modifier_fits(sem, word, cls, fits):
    assert sem.fits(word, cls) is fits


def test_modifier_types(sem):
    assert [sem.modifier_type.get(w) for w in ("black", "large", "tall", "round", "wooden", "striped", "old", "several", "wet")] == [
        "colour", "size", "size", "shape", "material", "pattern", "age", "quantifier", "state"
    ]


def _write(tmp_path, mutate):
    raw = json.loads(semantics_path().read_text(encoding="utf-8"))
    mutate(raw)
    p = tmp_path / "semantics.json"
    p.write_text(json.dumps(raw), encoding="utf-8")
    return p


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["classes"]["animal"].append("man"), "noun 'man' is in two classes"),
        (lambda r: r["compatible"].append(["person", "unicorns"]), "unknown classes ['unicorns']"),
        (lambda r: r["compatible"].append(["person", "body_part"]), "never-swapped class"),
        (lambda r: r["modifiers"]["size"]["words"].append("red"), "modifier 'red' has two types"),
        (lambda r: r["modifier_fits"].update({"zorby": {"for": ["person"]}}), "modifier_fits names 'zorby'"),
        (lambda r: r["aliases"].update({"dawg": "hound"}), "alias 'dawg' -> 'hound'"),
        (lambda r: r.pop("countability"), "countability"),
    ],
)
def test_malformed_files_are_clear_errors(tmp_path, mutate, message):
    with pytest.raises(LexiconError) as e:
        load_semantics(_write(tmp_path, mutate))
    assert message in str(e.value)


def test_wordnet_gives_classes_to_unknown_nouns(sem):
    lexnames = {"wombat": "noun.animal", "kumquat": "noun.food", "thingamajig": "noun.artifact"}
    wn = SimpleNamespace(
        synsets=lambda w, pos: [SimpleNamespace(lexname=lambda w=w: lexnames[w])] if w in lexnames else []
    )
    ext = extend_semantics_with_wordnet(sem, ["wombat", "kumquat", "dog", "nonword"], wn)
    assert (ext.class_of("wombat"), ext.class_of("kumquat"), ext.class_of("nonword")) == ("animal", "food", None)
    assert ext.class_of("dog") == "animal" and ext.source == "curated+wordnet"
    assert sem.class_of("wombat") is None and sem.source == "curated"  # the packaged classes are untouched
    assert extend_semantics_with_wordnet(sem, ["dog"], wn) is sem


def test_family_floors_follow_the_family_list():
    assert tuple(f.name for f in dataclasses.fields(FamilyFloors)) == ALL_FAMILIES


def test_cross_class_floors_name_the_noun_swapping_families():
    from pipeline.config import CrossClassFloors

    assert {f.name for f in dataclasses.fields(CrossClassFloors)} == {"relation_swap", "object_swap"}
