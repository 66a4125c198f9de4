"""The typed vocabularies behind the families: objects, attributes, relations, verbs (the replace
families, ``pipeline/data/lexicon.json``) and the semantic classes of nouns and types of modifiers
(the swap families and the plausibility back-off, ``pipeline/data/semantics.json``).

Both ship as package data so a run never depends on a download. WordNet, when its NLTK data happens
to be installed, adds co-hyponyms for frequent nouns and antonyms for frequent adjectives the curated
lists miss, and the class of nouns the curated classes miss (from its lexicographer files); without
it the curated data is used alone (logged once), so results never silently depend on the machine,
and the run's identity records whether it was installed.
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


# --------------------------------------------------------------------------- semantic classes


@dataclass(frozen=True)
class ModifierEntry:
    """One group of modifier words of one type, and the noun classes they may describe."""

    type: str
    #: classes the words may describe (None: any class not in ``not_for``)
    for_: frozenset[str] | None
    not_for: frozenset[str]
    #: noun class -> the only words of this entry that may describe it ("a blue dog" reads as a cheat)
    only_for: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Semantics:
    """Coarse classes of nouns and types of modifiers (``pipeline/data/semantics.json``).

    Invariants (checked at load): every noun has one class; every class named anywhere is a class of
    ``classes``; a modifier word has one type; ``compatible`` is symmetric and holds every class
    with itself except the ``never_swapped`` ones.
    """

    noun_class: Mapping[str, str]
    #: last word of a multi-word name -> the words before it, longest first ("teddy bear": "bear" -> ("teddy",))
    multiword: Mapping[str, tuple[tuple[str, ...], ...]]
    #: a word that is not the last of a multi-word name -> (its position, the name's words) ("fire"
    #: -> (0, ("fire", "hydrant"))), to recognise a name the parser split
    name_parts: Mapping[str, tuple[tuple[int, tuple[str, ...]], ...]]
    compatible: Mapping[str, frozenset[str]]
    never_swapped: frozenset[str]
    #: noun -> the class it names as a whole ("person", "animal", "food")
    generic: Mapping[str, str]
    #: noun -> its synonyms (itself included), and -> the nouns it covers (hyponyms and their
    #: synonyms, transitively)
    synonyms: Mapping[str, frozenset[str]]
    covers: Mapping[str, frozenset[str]]
    aliases: Mapping[str, str]
    mass: frozenset[str]
    count_or_mass: frozenset[str]
    plural_only: frozenset[str]
    invariant: frozenset[str]
    modifier_type: Mapping[str, str]
    modifier_entries: Mapping[str, tuple[ModifierEntry, ...]]
    #: word-level restrictions: word -> (for classes or None, not_for classes)
    modifier_fits: Mapping[str, tuple[frozenset[str] | None, frozenset[str]]]
    shades: frozenset[str]
    wordnet_lexnames: Mapping[str, str]
    #: where the classes of nouns the curated lists miss came from ("curated" or "curated+wordnet")
    source: str = "curated"

    def class_of(self, noun: str) -> str | None:
        """The class of a lower-case noun or multi-word name (after aliases; a regular plural is
        looked up singular too); None if unknown."""
        c = self.noun_class.get(self.aliases.get(noun, noun))
        if c is None and noun.endswith("s"):
            for cut in (1, 2, 3):
                stem = noun[:-cut] + ("y" if cut == 3 and noun.endswith("ies") else "")
                if cut == 3 and not noun.endswith("ies") or cut == 2 and not noun.endswith("es"):
                    continue
                c = self.noun_class.get(stem)
                if c is not None:
                    break
        return c

    def swappable(self, a: str, b: str) -> bool:
        """Whether nouns of classes ``a`` and ``b`` may be exchanged by object_swap / relation_swap."""
        return b in self.compatible.get(a, frozenset())

    def same_kind(self, a: str, b: str) -> bool:
        """Whether two nouns can name the same thing: synonyms, or one is a hypernym of the other."""
        a, b = self.aliases.get(a, a), self.aliases.get(b, b)
        if a == b:
            return True
        ga, gb = self.generic.get(a), self.generic.get(b)
        if ga is not None and ga == self.noun_class.get(b) or gb is not None and gb == self.noun_class.get(a):
            return True
        return (
            b in self.synonyms.get(a, frozenset())
            or b in self.covers.get(a, frozenset())
            or a in self.covers.get(b, frozenset())
        )

    def fits(self, modifier: str, noun_class: str | None) -> bool:
        """Whether ``modifier`` can describe a noun of ``noun_class`` (an unknown class: only if
        nothing restricts the modifier to named classes)."""
        entries = self.modifier_entries.get(modifier)
        if not entries:
            return True
        word = self.modifier_fits.get(modifier)
        if word is not None:
            for_, not_for = word
            if noun_class is None:
                if for_ is not None:
                    return False
            elif noun_class in not_for or (for_ is not None and noun_class not in for_):
                return False
        for e in entries:
            if noun_class is None:
                if e.for_ is None:
                    return True
                continue
            if noun_class in e.not_for or (e.for_ is not None and noun_class not in e.for_):
                continue
            only = e.only_for.get(noun_class)
            if only is not None and modifier not in only:
                continue
            return True
        return False


def semantics_path() -> Path:
    return Path(str(resources.files("pipeline") / "data" / "semantics.json"))


_SEMANTICS: dict[str, Semantics] = {}


def load_semantics(path: str | Path | None = None) -> Semantics:
    """Read and check the semantic classes (the packaged file unless ``path`` names another); the
    packaged one is read once per process."""
    key = str(path) if path is not None else ""
    if key in _SEMANTICS:
        return _SEMANTICS[key]
    p = Path(path) if path is not None else semantics_path()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LexiconError(f"cannot read semantic classes {p}: {e}") from e
    try:
        sem = _parse_semantics(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise LexiconError(f"malformed semantic classes {p}: {e}") from e
    _SEMANTICS[key] = sem
    return sem


def _classes_of(names: Iterable[str], classes: set[str], where: str) -> frozenset[str]:
    out = frozenset(names)
    unknown = sorted(out - classes)
    if unknown:
        raise ValueError(f"{where} names unknown classes {unknown}")
    return out


def _parse_semantics(raw: dict[str, Any]) -> Semantics:
    noun_class: dict[str, str] = {}
    for cls, words in raw["classes"].items():
        for w in words:
            w = w.lower()
            if w in noun_class and noun_class[w] != cls:
                raise ValueError(f"noun {w!r} is in two classes: {noun_class[w]} and {cls}")
            noun_class[w] = cls
    classes = set(raw["classes"])
    never = _classes_of(raw.get("never_swapped", ()), classes, "never_swapped")
    compatible: dict[str, set[str]] = {c: set() if c in never else {c} for c in classes}
    for pair in raw.get("compatible", ()):
        _classes_of(pair, classes, f"compatible {pair}")
        a, b = pair
        if a in never or b in never:
            raise ValueError(f"compatible {pair} names a never-swapped class")
        compatible[a].add(b)
        compatible[b].add(a)
    generic: dict[str, str] = {}
    for cls, words in raw.get("generic", {}).items():
        _classes_of([cls], classes, "generic")
        for w in words:
            generic[w.lower()] = cls
    synonyms: dict[str, set[str]] = {}
    for group in raw.get("synonyms", ()):
        words = {w.lower() for w in group}
        for w in words:
            synonyms.setdefault(w, {w}).update(words)
    covers: dict[str, set[str]] = {}
    for w, hypos in raw.get("hypernyms", {}).items():
        for x in synonyms.get(w.lower(), {w.lower()}):
            for h in hypos:
                covers.setdefault(x, set()).update(synonyms.get(h.lower(), {h.lower()}))
    changed = True
    while changed:  # transitive: "athlete" covers "player" covers "batter"
        changed = False
        for w, cs in covers.items():
            more = set().union(*(covers.get(c, set()) for c in cs)) - cs - {w}
            if more:
                cs |= more
                changed = True
    aliases = {k.lower(): v.lower() for k, v in raw.get("aliases", {}).items()}
    for k, v in aliases.items():
        if v not in noun_class and v not in raw["countability"]["plural_only"]:
            raise ValueError(f"alias {k!r} -> {v!r}: the target has no class")
    multiword: dict[str, list[tuple[str, ...]]] = {}
    name_parts: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    for w in noun_class:
        parts = tuple(w.split())
        if len(parts) > 1:
            for last in {parts[-1], _plural_of(parts[-1])}:
                multiword.setdefault(last, []).append(parts[:-1])
                for k, part in enumerate(parts[:-1]):
                    name_parts.setdefault(part, []).append((k, parts[:-1] + (last,)))
    count = raw["countability"]
    modifier_type: dict[str, str] = {}
    entries: dict[str, list[ModifierEntry]] = {}
    shades: set[str] = set()
    for name, m in raw["modifiers"].items():
        mtype = m.get("type", name)
        only = {c: _words(ws) for c, ws in m.get("only_for", {}).items()}
        _classes_of(only, classes, f"{name}.only_for")
        entry = ModifierEntry(
            mtype,
            _classes_of(m["for"], classes, f"{name}.for") if "for" in m else None,
            _classes_of(m.get("not_for", ()), classes, f"{name}.not_for"),
            only,
        )
        shades |= _words(m.get("shades", ()))
        for w in m["words"]:
            w = w.lower()
            if modifier_type.setdefault(w, mtype) != mtype:
                raise ValueError(f"modifier {w!r} has two types: {modifier_type[w]} and {mtype}")
            entries.setdefault(w, []).append(entry)
    fits: dict[str, tuple[frozenset[str] | None, frozenset[str]]] = {}
    for w, f in raw.get("modifier_fits", {}).items():
        if w.startswith("_"):
            continue
        if w not in modifier_type:
            raise ValueError(f"modifier_fits names {w!r}, which has no type")
        fits[w] = (
            _classes_of(f["for"], classes, f"modifier_fits.{w}") if "for" in f else None,
            _classes_of(f.get("not_for", ()), classes, f"modifier_fits.{w}"),
        )
    lexnames = dict(raw.get("wordnet_lexnames", {}))
    _classes_of(lexnames.values(), classes, "wordnet_lexnames")
    return Semantics(
        noun_class=noun_class,
        multiword={k: tuple(sorted(set(v), key=lambda x: -len(x))) for k, v in multiword.items()},
        name_parts={k: tuple(sorted(set(v), key=lambda x: (-len(x[1]), x))) for k, v in name_parts.items()},
        compatible={c: frozenset(s) for c, s in compatible.items()},
        never_swapped=never,
        generic=generic,
        synonyms={k: frozenset(v) for k, v in synonyms.items()},
        covers={k: frozenset(v) for k, v in covers.items()},
        aliases=aliases,
        mass=_words(count["mass"]),
        count_or_mass=_words(count["count_or_mass"]),
        plural_only=_words(count["plural_only"]),
        invariant=_words(count["invariant"]),
        modifier_type=modifier_type,
        modifier_entries={k: tuple(v) for k, v in entries.items()},
        modifier_fits=fits,
        shades=frozenset(shades),
        wordnet_lexnames=lexnames,
    )


def _plural_of(word: str) -> str:
    """Regular plural for matching multi-word names ("teddy bears"); irregulars are rare in names."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + "s"


def extend_semantics_with_wordnet(sem: Semantics, nouns: Iterable[str], wn: Any = None) -> Semantics:
    """Classes for nouns the curated lists miss, from the lexicographer file of their first WordNet
    noun sense (``noun.animal`` -> animal); ``wn`` is NLTK's reader or a stand-in with ``synsets``."""
    if wn is None:
        from nltk.corpus import wordnet as wn  # type: ignore[no-redef]
    added: dict[str, str] = {}
    for noun in sorted(set(nouns)):
        if sem.class_of(noun) is not None or not noun.isalpha():
            continue
        syns = wn.synsets(noun, pos="n")
        if not syns:
            continue
        cls = sem.wordnet_lexnames.get(syns[0].lexname())
        if cls is not None:
            added[noun] = cls
    log.info("WordNet gave classes to %d nouns the curated lists miss", len(added))
    if not added:
        return sem
    return dataclasses.replace(sem, noun_class={**sem.noun_class, **added}, source="curated+wordnet")
