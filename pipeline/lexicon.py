"""The typed vocabularies behind the replace families: objects, attributes, relations, verbs.

The curated lexicon ships as package data (``pipeline/data/lexicon.json``) so a run never depends
on a download. WordNet, when its NLTK data happens to be installed, adds co-hyponyms for frequent
nouns and antonyms for frequent adjectives the curated lists miss; without it the curated lexicon
is used alone (logged once), so results never silently depend on the machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from pipeline.core.errors import HardnegError

log = logging.getLogger(__name__)

#: Penn tags of the verb forms, in the order of a lexicon ``forms`` list
VERB_FORM_TAGS = ("VB", "VBZ", "VBD", "VBN", "VBG")


class LexiconError(HardnegError):
    """The lexicon file is malformed (a contrast names an unknown verb, a field has a wrong type)."""


@dataclass(frozen=True)
class NounGroup:
    """Words that name the same kind of object; they are never replacements for each other."""

    members: tuple[str, ...]
    category: str
    pool: str


@dataclass(frozen=True)
class AttributeCategory:
    """Adjectives of one kind: sibling ``groups`` (any other group is a contrast) or explicit ``contrasts``."""

    name: str
    rule: str
    pos: frozenset[str]
    #: the head noun must be one of these categories, ``category.pool`` names or nouns (None: any,
    #: including nouns the lexicon does not know)
    for_: frozenset[str] | None
    not_for: frozenset[str]
    groups: tuple[tuple[str, ...], ...] = ()
    contrasts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: head noun selector -> the only targets allowed for it ("a blue dog" reads as a cheat)
    only_targets_for: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RelationEntry:
    to: tuple[str, ...]
    #: noun-set names ("@enclosure") or nouns the object must belong to (None: any)
    objects: tuple[str, ...] | None = None
    not_objects: tuple[str, ...] = ()
    #: may stand without an object ("standing outside")
    adverb: bool = False


@dataclass(frozen=True)
class VerbEntry:
    lemma: str
    forms: tuple[str, str, str, str, str]
    to: tuple[str, ...]
    transitive: bool
    intransitive: bool
    #: categories, ``category.pool`` names or nouns a transitive *replacement* accepts as object
    objects: tuple[str, ...] | None
    #: only replaced when its subject is a person or an animal
    animate: bool = False
    #: what a subject of this verb may be replaced with (same selectors as ``objects``)
    subjects: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Lexicon:
    noun_groups: tuple[NounGroup, ...]
    generic_nouns: Mapping[str, str]  # word -> category
    hypernyms: Mapping[str, frozenset[str]]
    plural_only: frozenset[str]
    mass_nouns: frozenset[str]
    count_or_mass: frozenset[str]
    gender: Mapping[str, str]  # word -> "male" | "female"
    transparent_compounds: frozenset[str]
    attributes: tuple[AttributeCategory, ...]
    shade_words: frozenset[str]
    numbers: tuple[str, ...]
    relations: Mapping[str, RelationEntry]
    relation_synonyms: tuple[frozenset[str], ...]
    relational_nouns: Mapping[str, str]
    sides: Mapping[str, str]
    noun_sets: Mapping[str, frozenset[str]]
    verbs: Mapping[str, VerbEntry]
    verb_synonyms: tuple[frozenset[str], ...]

    def group_of(self, noun: str) -> NounGroup | None:
        """The synonym group containing ``noun`` (singular, lower case), or None."""
        for g in self.noun_groups:
            if noun in g.members:
                return g
        return None

    def related_nouns(self, a: str, b: str) -> bool:
        """Whether one noun covers or overlaps the other (hypernym either way)."""
        return b in self.hypernyms.get(a, ()) or a in self.hypernyms.get(b, ())


# --------------------------------------------------------------------------- inflection


def _doubles_final(lemma: str) -> bool:
    """One-syllable verbs ending consonant-vowel-consonant double it: drop -> dropping."""
    vowels = "aeiou"
    if len(lemma) < 3 or lemma[-1] in vowels + "wxy" or lemma[-2] not in vowels or lemma[-3] in vowels:
        return False
    groups = sum(1 for i, ch in enumerate(lemma) if ch in vowels and (i == 0 or lemma[i - 1] not in vowels))
    return groups == 1


def inflect_verb(lemma: str) -> tuple[str, str, str, str, str]:
    """The regular forms (VB, VBZ, VBD, VBN, VBG); irregular verbs list theirs in the lexicon."""
    if " " in lemma:  # phrasal: inflect the verb, keep the particle ("take off" needs forms listed)
        head, rest = lemma.split(" ", 1)
        return tuple(f"{f} {rest}" for f in inflect_verb(head))  # type: ignore[return-value]
    if lemma.endswith(("s", "x", "z", "ch", "sh", "o")):
        third = lemma + "es"
    elif lemma.endswith("y") and lemma[-2:-1] not in ("a", "e", "i", "o", "u"):
        third = lemma[:-1] + "ies"
    else:
        third = lemma + "s"
    if lemma.endswith("e") and not lemma.endswith(("ee", "ye", "oe")):
        past, ing = lemma + "d", lemma[:-1] + "ing"
    elif lemma.endswith("y") and lemma[-2:-1] not in ("a", "e", "i", "o", "u"):
        past, ing = lemma[:-1] + "ied", lemma + "ing"
    elif _doubles_final(lemma):
        past, ing = lemma + lemma[-1] + "ed", lemma + lemma[-1] + "ing"
    else:
        past, ing = lemma + "ed", lemma + "ing"
    return (lemma, third, past, past, ing)


# --------------------------------------------------------------------------- loading


def default_path() -> Path:
    return Path(str(resources.files("pipeline") / "data" / "lexicon.json"))


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """Read and check the curated lexicon (the packaged one unless ``path`` names another)."""
    p = Path(path) if path is not None else default_path()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LexiconError(f"cannot read lexicon {p}: {e}") from e
    try:
        return _parse(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise LexiconError(f"malformed lexicon {p}: {e!r}") from e


def _words(items: Iterable[str]) -> frozenset[str]:
    return frozenset(w.lower() for w in items)


def _parse(raw: dict[str, Any]) -> Lexicon:
    groups = []
    for category, pools in raw["objects"].items():
        for pool, members in pools.items():
            for m in members:
                groups.append(NounGroup(tuple(w.lower() for w in m), category, f"{category}.{pool}"))
    generic = {w.lower(): cat for cat, ws in raw["generic_nouns"].items() for w in ws}
    hyper = {k: _words(v) for k, v in raw["hypernyms"].items() if not k.startswith("_")}
    gender = {w: g for g, ws in raw["gender"].items() for w in ws}
    attrs = []
    for name, a in raw["attributes"].items():
        if name.startswith("_"):
            continue
        attrs.append(
            AttributeCategory(
                name=name,
                rule=a.get("rule", name),
                pos=frozenset(a.get("pos", ["ADJ"])),
                for_=frozenset(a["for"]) if "for" in a else None,
                not_for=frozenset(a.get("not_for", ())),
                groups=tuple(tuple(g) for g in a.get("groups", ())),
                contrasts={k: tuple(v) for k, v in a.get("contrasts", {}).items()},
                only_targets_for={k: _words(v) for k, v in a.get("only_targets_for", {}).items()},
            )
        )
    rel = raw["relations"]
    relations = {
        k: RelationEntry(
            to=tuple(v["to"]),
            objects=tuple(v["objects"]) if "objects" in v else None,
            not_objects=tuple(v.get("not_objects", ())),
            adverb=bool(v.get("adverb", False)),
        )
        for k, v in rel["spatial"].items()
    }
    verbs = {}
    for lemma, v in raw["verbs"].items():
        if lemma.startswith("_"):
            continue
        forms = tuple(v["forms"]) if "forms" in v else inflect_verb(lemma)
        if len(forms) != 5:
            raise ValueError(f"verb {lemma!r} needs 5 forms, got {forms}")
        verbs[lemma] = VerbEntry(
            lemma=lemma,
            forms=forms,  # type: ignore[arg-type]
            to=tuple(v.get("to", ())),
            transitive=bool(v.get("transitive", False)),
            intransitive=bool(v.get("intransitive", False)),
            objects=tuple(v["objects"]) if "objects" in v else None,
            animate=bool(v.get("animate", False)),
            subjects=tuple(v["subjects"]) if "subjects" in v else None,
        )
    for v in verbs.values():
        unknown = [t for t in v.to if t not in verbs]
        if unknown:
            raise ValueError(f"verb {v.lemma!r} contrasts with unknown verbs {unknown}")
    return Lexicon(
        noun_groups=tuple(groups),
        generic_nouns=generic,
        hypernyms=hyper,
        plural_only=_words(raw["plural_only"]),
        mass_nouns=_words(raw["mass_nouns"]),
        count_or_mass=_words(raw["count_or_mass"]),
        gender=gender,
        transparent_compounds=frozenset(raw["transparent_compounds"]),
        attributes=tuple(attrs),
        shade_words=_words(raw["shade_words"]),
        numbers=tuple(raw["numbers"]),
        relations=relations,
        relation_synonyms=tuple(_words(g) for g in rel["synonyms"]),
        relational_nouns=dict(rel["relational_nouns"]),
        sides=dict(rel["sides"]),
        noun_sets={k: _words(v) for k, v in rel["noun_sets"].items()},
        verbs=verbs,
        verb_synonyms=tuple(_words(g) for g in raw["verb_synonyms"]),
    )


# --------------------------------------------------------------------------- WordNet


_WORDNET_STATE: dict[str, bool] = {}


def wordnet_available() -> bool:
    """Whether NLTK's WordNet data is installed (it cannot be fetched at run time); checked once."""
    if "ok" in _WORDNET_STATE:
        return _WORDNET_STATE["ok"]
    ok = False
    try:
        from nltk.corpus import wordnet as wn

        wn.ensure_loaded()
        ok = True
    except LookupError:
        log.info("NLTK WordNet data is not installed; the replace families use the curated lexicon only")
    except Exception as e:  # a broken nltk install must not stop a run: the curated lexicon suffices
        log.warning("WordNet unusable (%s: %s); using the curated lexicon only", type(e).__name__, e)
    _WORDNET_STATE["ok"] = ok
    return ok


def _name(lemma_name: str) -> str:
    return lemma_name.replace("_", " ").lower()


def _ancestors(syn: Any, depth: int = 12) -> set[Any]:
    out: set[Any] = set()
    frontier = [syn]
    for _ in range(depth):
        nxt = []
        for s in frontier:
            for h in s.hypernyms():
                if h not in out:
                    out.add(h)
                    nxt.append(h)
        if not nxt:
            break
        frontier = nxt
    return out


def extend_with_wordnet(
    lex: Lexicon,
    counts: Mapping[str, int],
    wn: Any = None,
    min_count: int = 5,
    max_words: int = 3000,
) -> Lexicon:
    """Add WordNet co-hyponyms of frequent unknown nouns and antonyms of frequent unknown adjectives.

    Only words frequent in the input corpus are added (on both sides of a pair), so the additions
    read as naturally as the curated entries. ``wn`` is the ``nltk.corpus.wordnet`` reader (or a
    stand-in with the same few methods); a synset's own lemmas form one synonym group and a
    sibling that is an ancestor or descendant of it is never used.
    """
    if wn is None:
        from nltk.corpus import wordnet as wn  # type: ignore[no-redef]
    known_nouns = {w for g in lex.noun_groups for w in g.members} | set(lex.generic_nouns)
    pool_of = {w: g for g in lex.noun_groups for w in g.members}
    known_adj = {w for a in lex.attributes for grp in a.groups for w in grp} | {
        w for a in lex.attributes for w in a.contrasts
    }
    frequent = sorted((w for w, c in counts.items() if c >= min_count and w.isalpha()), key=lambda w: (-counts[w], w))
    frequent = frequent[:max_words]

    def freq_names(syn: Any) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for n in map(_name, syn.lemma_names()) if counts.get(n, 0) >= min_count))

    new_groups: list[NounGroup] = []
    assigned: set[str] = set()
    for w in frequent:
        if w in known_nouns or w in assigned:
            continue
        syns = wn.synsets(w, pos="n")
        if not syns or w not in map(_name, syns[0].lemma_names()):
            continue
        syn = syns[0]
        hyps = syn.hypernyms()
        if not hyps:
            continue
        parent = hyps[0]
        anc = _ancestors(syn)
        own = tuple(n for n in freq_names(syn) if n not in known_nouns and n not in assigned) or (w,)
        siblings = []
        home: NounGroup | None = None
        for sib in parent.hyponyms():
            if sib == syn or sib in anc or syn in _ancestors(sib):
                continue
            names = freq_names(sib)
            if not names:
                continue
            in_lex = next((pool_of[n] for n in names if n in pool_of), None)
            if in_lex is not None:
                home = home or in_lex
                continue
            names = tuple(n for n in names if n not in assigned and n not in known_nouns)
            if names:
                siblings.append(names)
        if home is not None:  # join the curated pool its sibling belongs to
            new_groups.append(NounGroup(own, home.category, home.pool))
            assigned.update(own)
        elif siblings:
            pool = f"wordnet.{parent.name()}"
            for names in [own, *siblings]:
                new_groups.append(NounGroup(names, "wordnet", pool))
                assigned.update(names)
    contrasts: dict[str, tuple[str, ...]] = {}
    for w in frequent:
        if w in known_adj:
            continue
        ants: list[str] = []
        for syn in wn.synsets(w, pos="a")[:2]:
            for lemma in syn.lemmas():
                if _name(lemma.name()) != w:
                    continue
                ants += [n for n in (_name(a.name()) for a in lemma.antonyms()) if counts.get(n, 0) >= min_count]
        if ants:
            contrasts[w] = tuple(dict.fromkeys(ants))
    log.info("WordNet added %d noun groups and %d adjective contrasts", len(new_groups), len(contrasts))
    attrs = lex.attributes
    if contrasts:
        attrs = attrs + (
            AttributeCategory("wordnet_antonym", "state", frozenset({"ADJ"}), None, frozenset({"person"}), (), contrasts),
        )
    return dataclasses.replace(lex, noun_groups=lex.noun_groups + tuple(new_groups), attributes=attrs)
