"""Swap families: the bag of words stays the same, the binding changes.

- ``relation_swap``: exchange the two noun phrases around a preposition or verb, a subject and the
  possessor of its object, the subjects of two clauses, or two spatial prepositions.
- ``attribute_swap``: exchange the modifiers of two noun phrases (of one type, or of two types each
  fitting its new noun); lower ranked, move one or exchange a number with an article.
- ``object_swap``: exchange two whole noun phrases; lower ranked, the two names alone where neither
  phrase has a modifier.

Invariants, whatever the parse:

- only nouns of compatible semantic classes change places (``pipeline/data/semantics.json``: a
  person with a person or an animal, furniture with furniture or an appliance...); a body part, an
  abstract noun or a noun of unknown class never moves. Refused pairs come back as edits with
  ``reject="class_mismatch"`` so the filters count them; two nouns that can name the same thing
  ("a woman" / "people") come back as ``same_kind``;
- a multi-word name ("teddy bear", "fire hydrant", "hot dog") moves whole and its first word is
  never taken for a modifier;
- a modifier moves only to a noun it can describe ("young" never lands on a skateboard, "purple"
  never on a boy), and a coordinated modifier ("black and white") moves as one unit;
- an exchanged noun agrees with the determiners of its new place ("a person", never "a people";
  mass nouns stay singular: "luggage", never "luggages"); where no form agrees the edit is refused
  (``agreement``), and the verb follows a subject whose number changed;
- a pronoun that refers to a phrase whose noun changed follows the new noun ("a woman ... her hand"
  -> "a man ... his hand"); one that would point the wrong way is replaced or the edit refused.

- an exchange that only reorders the caption (two conjuncts, the two ends of a symmetric relation
  when neither has a relation of its own) is flagged ``symmetric_link`` so the filters drop it;
- a rule's rank within its family is its ``Edit.tier`` (:data:`TIERS`): the exchanges the
  benchmarks test come first.

Every edit names the dependency pairs it removes and creates, for the plausibility score.
"""

from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

from pipeline.lexicon import Semantics, load_lexicon, load_semantics
from pipeline.records import Edit, Replacement
from pipeline.rules.families import ParsedCaption, Resources, register
from pipeline.rules.grammar import agree_verb, pluralize, singularize
from pipeline.rules.plausibility import exchange_pairs, pair_key
from pipeline.rules.realize import span_words
from pipeline.rules.syntax import NON_ATTRIBUTE_ADJECTIVES, QUANTITY_NOUNS, Link, NounPhrase, Tok, finite_verb, part_of

Toks = tuple[Tok, ...]

_SG_DETS = frozenset({"a", "an", "one", "another", "each", "every", "this", "that", "either", "neither"})
_PL_DETS = frozenset({"these", "those", "many", "several", "few", "both", "various", "numerous", "multiple"})
#: determiners of a mass noun or a plural ("some rice", "some apples") and of a mass noun only
_SOME_DETS = frozenset({"some", "more", "any", "no", "enough", "lots", "plenty"})
_MUCH_DETS = frozenset({"much", "less", "little"})
#: quantifiers exchanged like numbers ("several pizzas on two plates")
_COUNT_WORDS = frozenset({"several", "many", "various", "numerous", "multiple"})
_DET_DEPS = frozenset({"det", "poss", "predet", "case", "nummod"})
_MOD_POS = frozenset({"ADJ", "VERB", "NOUN", "PROPN", "ADV", "NUM"})
#: modifier types exchanged by attribute_swap (quantifiers such as "all" or "only" are not attributes)
_SWAPPED_TYPES = frozenset({"colour", "size", "shape", "material", "pattern", "age", "count", "state", "other"})
#: the rank of each rule within its family (``Edit.tier``): every candidate of a lower tier is kept
#: before any of a higher one; a rule not listed is tier 0
TIERS: dict[str, dict[str, int]] = {
    "attribute_swap": {"exchange": 0, "cross_exchange": 0, "count": 1, "move": 2},
    "object_swap": {"phrase": 0, "noun": 1},
}



class SwapTables(NamedTuple):
    """The semantic classes and genders the swap rules read, as plain dicts (built once)."""

    sem: Semantics
    gender: dict[str, str]
    #: spatial prepositions ``relation_swap`` may exchange -> their meaning group (synonyms such as
    #: "near" / "next to" share one: exchanging them changes nothing)
    prep_group: dict[str, int]


_DEFAULT: list[SwapTables] = []


#: spatial prepositions the lexicon's relation table does not list but captions use ("at" is mostly a
#: verb's target, "looking at"; "between" and "among" need a plural object)
_MORE_PREPS = ("across", "along", "around", "through", "against", "past")


def swap_tables(sem: Semantics | None = None) -> SwapTables:
    """The tables for ``sem`` (the packaged classes when None) and the lexicon's genders and
    spatial prepositions."""
    lex = load_lexicon()
    groups: dict[str, int] = {}
    for n, group in enumerate(lex.relation_synonyms):
        for w in group:
            groups[w] = n
    for w in (*lex.relations, *_MORE_PREPS):
        if w not in groups:
            groups[w] = len(groups) + 1000
    return SwapTables(sem if sem is not None else load_semantics(), dict(lex.gender), groups)


def tables_of(res: Resources) -> SwapTables:
    """The run's tables, or the packaged ones for a bare ``Resources()`` (tests, one-off calls)."""
    t = res.data.get("swap")
    if t is not None:
        return t
    if not _DEFAULT:
        _DEFAULT.append(swap_tables())
    return _DEFAULT[0]


# --------------------------------------------------------------------------- the view of a phrase


class Unit(NamedTuple):
    """A modifier that moves as one: tokens ``[start, end)``, its type, its content words."""

    start: int
    end: int
    type: str
    words: tuple[str, ...]


class Slot(NamedTuple):
    """What the swap rules need to know about one noun phrase."""

    #: first token of the object's name (a multi-word name or compounds + noun)
    name_start: int
    #: the name's singular key ("teddy bear", "person"), its semantic class (None: unknown)
    key: str
    cls: str | None
    #: determiner constraint on the noun: "sg" (a, one, each), "pl" (two, several, these), "some"
    #: (a mass noun or a plural), "much" (a mass noun only) or "free" (the, possessives, none)
    det: str
    #: the phrase has no determiner at all (a bare noun)
    bare: bool
    plural: bool
    units: tuple[Unit, ...]
    #: the noun is the first part of a multi-word name the parser split ("a fire | hydrant"): the
    #: phrase is not a whole object and never moves
    broken: bool = False


def _noun_key(tok: Tok, sem: Semantics) -> str:
    low = tok.lower
    if low in sem.plural_only:
        return low
    alias = sem.aliases.get(low)
    if alias is not None:
        return alias
    lemma = (tok.lemma or tok.text).lower() if tok.pos in ("NOUN", "PROPN") else singularize(low)
    return sem.aliases.get(lemma, lemma)


def _name(toks: Toks, p: NounPhrase, sem: Semantics) -> tuple[int, str]:
    """Where the object's name starts and its key: the longest multi-word name ending at the noun
    ("teddy bear", "hot dog", whatever the parser made of "teddy" and "hot"), else the compounds
    before the noun that are not typed modifiers ("train signal"; "stone" in "stone wall" is a
    material)."""
    noun = toks[p.noun]
    lo = p.start if p.head == p.noun else p.head + 2
    cands = sem.multiword.get(noun.lower)
    if cands:
        for words in cands:
            s = p.noun - len(words)
            if s >= lo and all(toks[s + k].lower == w for k, w in enumerate(words)):
                last = singularize(noun.lower) if noun.lower not in sem.plural_only else noun.lower
                return s, " ".join(words) + " " + last
    start = p.nominal_start
    while start < p.noun and toks[start].lower in sem.modifier_type:
        start += 1
    return start, _noun_key(noun, sem)


def _class(key: str, head: str, sem: Semantics) -> str | None:
    c = sem.class_of(key)
    return c if c is not None or key == head else sem.class_of(head)


def _split_name(toks: Toks, i: int, sem: Semantics) -> str:
    """The multi-word name that token ``i`` starts or continues without ending it ("fire" before
    "hydrant"), or ""."""
    for k, words in sem.name_parts.get(toks[i].lower, ()):
        s = i - k
        if s >= 0 and s + len(words) <= len(toks) and all(toks[s + m].lower == w for m, w in enumerate(words)):
            return " ".join(words[:-1]) + " " + singularize(words[-1])
    return ""


def slot_of(toks: Toks, p: NounPhrase, sem: Semantics) -> Slot:
    name_start, key = _name(toks, p, sem)
    head = _noun_key(toks[p.noun], sem)
    broken = _split_name(toks, p.noun, sem) if key == head else ""
    if broken:
        key = head = broken
    lo = p.start if p.head == p.noun else p.head + 2
    det = "free"
    bare = True
    for k in range(lo, name_start):
        t = toks[k]
        low = t.lower
        if t.dep in _DET_DEPS or t.pos in ("DET", "NUM", "PRON") or low in _COUNT_WORDS:
            bare = False
            if low in _SG_DETS:
                det = "sg"
            elif low in _PL_DETS or (t.dep == "nummod" and low != "one") or low in _COUNT_WORDS:
                det = "pl"
            elif low in _SOME_DETS:
                det = "some"
            elif low in _MUCH_DETS:
                det = "much"
    if p.head != p.noun:  # "a group of sheep": the noun after "of" is free
        det, bare = "free", False
    plural = p.plural or key in sem.plural_only or (toks[p.noun].lower in sem.plural_only)
    return Slot(
        name_start, key, _class(key, head, sem), det, bare, plural, _units(toks, lo, name_start, sem), bool(broken)
    )


def _units(toks: Toks, lo: int, hi: int, sem: Semantics) -> tuple[Unit, ...]:
    """The typed modifiers between the determiners and the name, each as one unit.

    Joined into one unit: an adverb with what it modifies ("very large"), a shade with its colour
    ("dark blue"), adjacent colours ("fluorescent orange"), a hyphenated word ("red-haired"), and
    coordinated modifiers of one type ("black and white"). A unit whose words have different types
    is typed ``other``.
    """
    units: list[Unit] = []
    k = lo
    while k < hi and (toks[k].dep in _DET_DEPS or toks[k].pos in ("DET", "PRON") or toks[k].lower in ("'s", "’s")):
        if toks[k].dep == "nummod" or toks[k].pos == "NUM":
            break
        k += 1
    while k < hi:
        t = toks[k]
        if t.dep == "punct" or t.dep == "cc":
            k += 1
            continue
        start = k
        end = k + 1
        # extend over what belongs together
        while end < hi:
            prev, nxt = toks[end - 1], toks[end]
            if nxt.text == "-" or prev.text == "-":
                end += 1
            elif prev.pos == "ADV" and prev.head >= end and prev.lower not in sem.modifier_type:
                end += 1
            elif prev.lower in sem.shades and sem.modifier_type.get(nxt.lower) == "colour":
                end += 1
            elif sem.modifier_type.get(prev.lower) == "colour" and sem.modifier_type.get(nxt.lower) == "colour":
                end += 1
            elif nxt.dep in ("cc", "punct") and end + 1 < hi and toks[end + 1].dep == "conj":
                end += 2
            elif nxt.dep == "conj" and nxt.head < end:
                end += 1
            else:
                break
        units.append(_unit(toks, start, end, sem))
        k = end
    return tuple(units)


def _unit(toks: Toks, start: int, end: int, sem: Semantics) -> Unit:
    words = tuple(
        toks[i].lower for i in range(start, end)
        if toks[i].dep not in ("cc", "punct") and toks[i].text != "-"
        and not (toks[i].pos == "ADV" and toks[i].lower not in sem.modifier_type)
    )
    joined = "".join(toks[i].lower for i in range(start, end)) if any(toks[i].text == "-" for i in range(start, end)) else ""
    if joined:
        mtype = sem.modifier_type.get(joined, "other")
        return Unit(start, end, mtype, (joined,))
    if any(toks[i].dep == "nummod" or toks[i].pos == "NUM" for i in range(start, end)):
        return Unit(start, end, "count", words)
    if words and all(w in _COUNT_WORDS for w in words):
        return Unit(start, end, "count", words)
    if words and all(w in NON_ATTRIBUTE_ADJECTIVES for w in words):
        return Unit(start, end, "quantifier", words)  # "their own bowl", "different varieties": not attributes
    types = {sem.modifier_type.get(w, "other") for w in words if not (w in sem.shades and len(words) > 1)}
    if len(types) == 1:
        return Unit(start, end, types.pop(), words)
    if types == {"colour", "state"} and all(w in sem.shades or sem.modifier_type.get(w) == "colour" for w in words):
        return Unit(start, end, "colour", words)
    return Unit(start, end, "other", words)


#: the slots of the caption the three swap families last read (each family would otherwise
#: recompute them for the same caption, one after the other)
_LAST_SLOTS: list = [None, None, None]


def _slots(parsed: ParsedCaption, sem: Semantics) -> list[Slot]:
    if _LAST_SLOTS[0] is parsed and _LAST_SLOTS[1] is sem:
        return _LAST_SLOTS[2]
    slots = [slot_of(parsed.toks, p, sem) for p in parsed.phrases]
    _LAST_SLOTS[:] = [parsed, sem, slots]
    return slots


# --------------------------------------------------------------------------- shared helpers


def _with_complement(parsed: ParsedCaption, p: NounPhrase) -> int:
    """End of ``p`` together with its "of" complements ("a glass" -> "a glass of ale")."""
    end = p.end
    for q in parsed.phrases:
        if q.start == end + 1 and part_of(parsed.toks, p, q):
            end = _with_complement(parsed, q)
            break
    return end


def _moved_phrase(toks: Toks, p: NounPhrase, end: int | None = None, mass: bool = False) -> str:
    """A whole noun phrase as it reads elsewhere in the sentence.

    Headline captions start with bare nouns ("Man riding a bike"); moved mid-sentence a bare
    singular count noun needs an article ("a bike riding a man"), which the a/an fix then adjusts;
    a mass noun does not ("food").
    """
    text = span_words(toks, p.start, p.end if end is None else end)
    first = toks[p.start]
    if (
        p.start == 0
        and not mass
        and not p.plural
        and first.pos in ("NOUN", "ADJ")
        and first.dep not in ("det", "poss", "nummod")
        and toks[p.noun].pos == "NOUN"
    ):
        return "a " + text
    return text


def _norm(text: str) -> str:
    """Comparison form of a phrase: articles do not change what it names ("the grass" / "grass")."""
    return " ".join(w for w in text.lower().split() if w not in ("a", "an", "the"))


def _subject_agreement(
    toks: Toks, children: tuple[tuple[int, ...], ...], slot: NounPhrase, new_plural: bool, old_plural: bool
) -> list[Replacement]:
    """Replacements that make the verb agree when the subject slot changes grammatical number."""
    if new_plural == old_plural:
        return []
    head = toks[slot.head]
    if head.dep not in ("nsubj", "nsubjpass"):
        return []
    verb = toks[head.head]
    targets = [verb] + [toks[c] for c in children[verb.i] if toks[c].dep in ("aux", "auxpass")]
    out = []
    for t in targets:
        if t.tag not in ("VBZ", "VBP", "VBD") or t.i < slot.end:
            continue
        if t.text.startswith("'") and t.i != slot.end:
            continue  # a contraction belongs to the word before it ("it's"), whatever the parse says
        form = agree_verb(t.text, t.lemma, new_plural)
        if form is not None and form != t.text:
            out.append(Replacement(t.i, t.i + 1, form))
    return out


def _link_between(parsed: ParsedCaption, a: int, b: int) -> Link | None:
    for link in parsed.links:
        if (link.a == a and link.b == b) or (link.a == b and link.b == a):
            return link
    return None


def _only_symmetric(parsed: ParsedCaption, link: Link | None) -> bool:
    """Whether exchanging the two phrases of ``link`` changes nothing: the link is symmetric ("next
    to", "with", "and") and neither phrase has a relation of its own. "A man riding a horse next to a
    woman": the man rides, so exchanging him with the woman is a new caption; "a cross with a diamond
    to its left": the cross has the diamond on its left. Two conjuncts share their relations ("a cat
    and a dog on a bed"), unless each has its own ("a circle at the top and a diamond at the
    bottom")."""
    if link is None or not link.symmetric:
        return False
    toks, children = parsed.toks, parsed.children
    a, b = parsed.phrases[link.a].head, parsed.phrases[link.b].head
    if link.kind == "conj":
        return not (_own_relations(toks, children, a, b) and _own_relations(toks, children, b, a))
    ends = (link.a, link.b)
    if any(other is not link and (other.a in ends or other.b in ends) for other in parsed.links):
        return False
    return not _own_relations(toks, children, a, b) and not _own_relations(toks, children, b, a)


def _pure_reordering(parsed: ParsedCaption, a: NounPhrase, b: NounPhrase, link: Link | None) -> bool:
    """Whether exchanging phrases ``a`` and ``b`` only reorders the caption: the two ends of a
    symmetric relation (:func:`_only_symmetric`), or two members of one list ("gloves, cell phone
    and keys", however the parser hung them together) that have no relation of their own each."""
    if (link is None or link.kind != "conj") and _list_root(parsed.toks, a.head) == _list_root(parsed.toks, b.head) and (
        _coordinated(parsed.toks, parsed.children, a)
    ):
        toks, children = parsed.toks, parsed.children
        return not (_own_relations(toks, children, a.head, b.head) and _own_relations(toks, children, b.head, a.head))
    return _only_symmetric(parsed, link)


def _own_relations(toks: Toks, children: tuple[tuple[int, ...], ...], head: int, other: int) -> bool:
    """Whether noun ``head`` has a prepositional phrase that does not lead to noun ``other``."""
    for c in children[head]:
        if toks[c].dep != "prep":
            continue
        i = other
        while toks[i].head != i and i != c:
            i = toks[i].head
        if i != c:
            return True
    return False


def _class_reject(sa: Slot, sb: Slot, sem: Semantics, whole_phrases: bool = False) -> str:
    """Why two phrases may never change places ("" when they may): a body part, an abstract noun
    or a noun of unknown class (``class_mismatch``), nouns that can name the same thing. Whole
    phrases with the same noun still differ by their modifiers ("a large dog chasing a small dog")."""
    if sa.broken or sb.broken:
        return "broken_name"
    if sa.key == sb.key:
        return "" if whole_phrases and sa.cls is not None and sa.cls not in sem.never_swapped else "same_word"
    if sa.cls is None or sb.cls is None or sa.cls in sem.never_swapped or sb.cls in sem.never_swapped:
        return "class_mismatch"
    if sem.same_kind(sa.key, sb.key):
        return "same_kind"
    return ""


def _cross_class(sa: Slot, sb: Slot, sem: Semantics) -> bool:
    """Whether the classes are incompatible (the filters keep such a swap only when its
    plausibility clears the cross-class floor, else count it as ``class_mismatch``)."""
    return not (sa.cls is not None and sb.cls is not None and sem.swappable(sa.cls, sb.cls))


def _rejected(family: str, rule: str, reason: str, items: tuple[str, str]) -> Edit:
    return Edit(family=family, rule=rule, replacements=(), items=items, reject=reason)


# --------------------------------------------------------------------------- pronouns

_POSSESSIVE = {"male": "his", "female": "her", "neuter": "its", "plural": "their"}
_SUBJECT = {"male": "he", "female": "she", "neuter": "it", "plural": "they"}
_OBJECT = {"male": "him", "female": "her", "neuter": "it", "plural": "them"}
_REFLEXIVE = {"male": "himself", "female": "herself", "neuter": "itself", "plural": "themselves"}
_PRONOUN_FORMS: dict[str, tuple[str, str]] = {}
for _role, _table in (("poss", _POSSESSIVE), ("subj", _SUBJECT), ("obj", _OBJECT), ("refl", _REFLEXIVE)):
    for _g, _w in _table.items():
        if _w not in _PRONOUN_FORMS or _role == "poss":
            _PRONOUN_FORMS[_w] = (_role, _g)
_PRONOUN_FORMS["hers"] = ("poss_abs", "female")


def _referent_kind(slot: Slot, gender: dict[str, str], plural: bool) -> str:
    """"male", "female", "person" (either), "animal" (any but plural), "neuter" or "plural"."""
    if plural:
        return "plural"
    g = gender.get(slot.key)
    if g is not None:
        return g
    if slot.cls == "person":
        return "person"
    if slot.cls == "animal":
        return "animal"
    return "neuter"


def _agrees(kind: str, pron_gender: str) -> bool:
    if pron_gender == "plural":
        return kind == "plural"
    if pron_gender == "neuter":
        return kind in ("neuter", "animal")
    return kind == pron_gender or kind in ("person", "animal")


def _referent(t: Tok, phrases: tuple[NounPhrase, ...], slots: list[Slot], gender: dict[str, str]) -> int:
    """The phrase a pronoun refers to: the nearest earlier one that agrees with it, people before
    animals for "he" / "she" ("a man walking his dog on his lawn": both are the man's); -1: none."""
    pron_gender = _PRONOUN_FORMS[t.lower][1]
    for animals in (False, True):
        for n in range(len(phrases) - 1, -1, -1):
            if phrases[n].end > t.i:
                continue
            kind = _referent_kind(slots[n], gender, slots[n].plural)
            if (kind == "animal") != animals and pron_gender in ("male", "female"):
                continue
            if _agrees(kind, pron_gender):
                return n
        if pron_gender not in ("male", "female"):
            break
    return -1


def _pronoun_form(tok: Tok, old_kind: str, new_kind: str) -> str | None:
    """The pronoun ``tok`` becomes when its referent, of ``old_kind``, is now of ``new_kind``; None:
    no safe form (a neuter "it" cannot tell whether a child is a he or a she)."""
    role, old = _PRONOUN_FORMS[tok.lower]
    if role == "subj" and tok.dep not in ("nsubj", "nsubjpass", "expl"):
        role = "obj"  # "it" is both: "in front of it" -> "in front of them"
    if new_kind == "person" or (new_kind == "animal" and old_kind == "animal"):
        if old in ("male", "female") or (new_kind == "animal" and old == "neuter"):
            return tok.lower  # "a child ... his", "a cat ... her": still fine
        return None
    if new_kind == "animal":
        new_kind = "neuter"  # a person's "his" on a dog reads as a pet's "its"
    if role == "poss_abs":
        return None
    if role == "poss" and tok.lower == "her" and tok.tag != "PRP$":
        role = "obj"
    table = {"poss": _POSSESSIVE, "subj": _SUBJECT, "obj": _OBJECT, "refl": _REFLEXIVE}[role]
    return table[new_kind]


def pronoun_changes(
    parsed: ParsedCaption,
    slots: list[Slot],
    gender: dict[str, str],
    changed: dict[int, tuple[Slot, bool]],
    moved: tuple[tuple[int, int], ...] = (),
) -> list[Replacement] | None:
    """Replacements for the pronouns that refer to a phrase whose noun changed.

    ``changed``: phrase index -> (the slot now there, its new plural). A pronoun refers to the
    nearest earlier phrase it agrees with (number, gender, person or thing). When that phrase
    changed, the pronoun takes the new noun's form; a possessive moved away in front of its own
    referent (``moved`` spans) becomes "the". Returns None when no form is safe (the edit is refused).
    """
    toks = parsed.toks
    phrases = parsed.phrases
    out: list[Replacement] = []
    for t in toks:
        if t.pos != "PRON" or t.lower not in _PRONOUN_FORMS:
            continue
        ref = _referent(t, phrases, slots, gender)
        if ref < 0 or ref not in changed:
            continue
        inside = next((m for m in moved if m[0] <= t.i < m[1]), None)
        if inside is not None:
            if _PRONOUN_FORMS[t.lower][0] != "poss" or t.tag != "PRP$":
                return None
            out.append(Replacement(t.i, t.i + 1, "the"))
            continue
        new_slot, new_plural = changed[ref]
        old_kind = _referent_kind(slots[ref], gender, slots[ref].plural)
        form = _pronoun_form(t, old_kind, _referent_kind(new_slot, gender, new_plural))
        if form is None:
            return None
        if form != t.lower:
            if t.dep in ("nsubj", "nsubjpass") and (form == "they") != (t.lower == "they"):
                return None  # the verb would need another number too
            out.append(Replacement(t.i, t.i + 1, form if t.i > 0 else form.capitalize()))
    return out


# --------------------------------------------------------------------------- relation_swap


def _exchange_phrases(
    parsed: ParsedCaption, tables: SwapTables, slots: list[Slot], ia: int, ib: int, a_end: int, b_end: int,
    family: str, rule: str, symmetric: bool, tier: int = 0,
) -> Edit:
    """Exchange two whole noun phrases (tokens ``[a.start, a_end)`` and ``[b.start, b_end)``) with
    their determiners, numbers, modifiers, compounds and "of" complements; the verbs of a subject
    whose number changed and the pronouns that refer to either follow. A refused exchange comes
    back with its reason."""
    sem = tables.sem
    toks = parsed.toks
    a, b = parsed.phrases[ia], parsed.phrases[ib]
    sa, sb = slots[ia], slots[ib]
    items = (_norm(span_words(toks, a.start, a.end)), _norm(span_words(toks, b.start, b.end)))
    reason = _class_reject(sa, sb, sem, whole_phrases=True)
    if reason:
        return _rejected(family, rule, reason, items)
    pron = pronoun_changes(
        parsed, slots, tables.gender, {ia: (sb, sb.plural), ib: (sa, sa.plural)}, ((a.start, a_end), (b.start, b_end))
    )
    if pron is None:
        return _rejected(family, rule, "pronoun", items)
    reps = [
        Replacement(a.start, a_end, _moved_phrase(toks, b, b_end, _countability(sb.key, sem) == "mass")),
        Replacement(b.start, b_end, _moved_phrase(toks, a, a_end, _countability(sa.key, sem) == "mass")),
    ]
    reps += [r for r in pron if not (a.start <= r.start < a_end or b.start <= r.start < b_end)]
    inner = [r for r in pron if a.start <= r.start < a_end or b.start <= r.start < b_end]
    if inner:  # a possessive inside a moved phrase: rewrite the moved texts themselves
        reps[0] = Replacement(a.start, a_end, _moved_with(toks, b, b_end, inner))
        reps[1] = Replacement(b.start, b_end, _moved_with(toks, a, a_end, inner))
    for p, new_plural, old_plural in ((a, sb.plural, sa.plural), (b, sa.plural, sb.plural)):
        if not _coordinated(toks, parsed.children, p):  # a coordination's verb agrees with the whole
            reps += _subject_agreement(toks, parsed.children, p, new_plural, old_plural)
    return _exchange_edit(parsed, family, rule, reps, items, symmetric, _cross_class(sa, sb, sem),
                          (a.start, a_end), (b.start, b_end), tier)


def _exchange_edit(
    parsed: ParsedCaption, family: str, rule: str, reps: list[Replacement], items: tuple[str, str], symmetric: bool,
    cross_class: bool, span_a: tuple[int, int], span_b: tuple[int, int], tier: int,
) -> Edit:
    """The edit that exchanges token spans ``span_a`` and ``span_b``, with the dependency pairs the
    exchange removes and creates."""
    old, new = exchange_pairs(parsed.deps, parsed.toks, parsed.children, parsed.lemmas, span_a, span_b)
    return Edit(
        family=family,
        rule=rule,
        replacements=tuple(reps),
        items=items,
        symmetric_link=symmetric,
        cross_class=cross_class,
        pairs_old=old,
        pairs_new=new,
        tier=tier,
    )


@register("relation_swap")
def relation_swap(parsed: ParsedCaption, res: Resources) -> list[Edit]:
    """Exchange the two noun phrases of a relation, whole (rules ``prep``, ``verb_prep``,
    ``verb_object``: "a dog chasing a cat" -> "a cat chasing a dog"); the subject with the possessor
    of its object (``possessive``: "a woman brushing a girl's hair" -> "a girl brushing a woman's
    hair"); the subjects of two clauses (``clause_subject``: "a man cooks while a woman watches" ->
    "a woman cooks while a man watches"); two spatial prepositions (``preposition``).

    A relation whose phrases cannot move whole is counted, by structure: ``coordinated`` (one
    conjunct of "fruits and vegetables"), ``partitive`` (the object of "a lot of", "a bouquet of"),
    ``complement`` (one phrase inside the other's "of" complement).
    """
    tables = tables_of(res)
    sem = tables.sem
    toks = parsed.toks
    slots: list[Slot] | None = None
    edits = []
    for link in parsed.links:
        if link.kind == "conj":
            continue  # coordination is not a relation: "a cat and a dog" means the same reversed
        a, b = parsed.phrases[link.a], parsed.phrases[link.b]
        a_end, b_end = _with_complement(parsed, a), _with_complement(parsed, b)
        structure = ""
        if a_end > b.start:
            structure = "complement"  # b is inside a's "of" complement: not two separate objects
        elif any(part_of(toks, q, a) for q in parsed.phrases) or _completes_of(toks, a) or _completes_of(toks, b):
            structure = "partitive"  # "a bouquet of | flowers", "a lot of | fruits": moving one leaves the rest behind
        elif _coordinated(toks, parsed.children, a) or _coordinated(toks, parsed.children, b):
            structure = "coordinated"  # "fruits and vegetables are on the stove": one conjunct cannot take the other's place
        if slots is None:
            slots = _slots(parsed, sem)
        if structure:
            edits.append(_rejected("relation_swap", link.kind, structure, (slots[link.a].key, slots[link.b].key)))
            continue
        edits.append(
            _exchange_phrases(
                parsed, tables, slots, link.a, link.b, a_end, b_end, "relation_swap", link.kind, _only_symmetric(parsed, link)
            )
        )
        possessive = _possessor_exchange(parsed, tables, slots, link.a, link.b, a_end)
        if possessive is not None:
            edits.append(possessive)
    edits += _clause_subjects(parsed, tables, slots)
    edits += preposition_exchanges(parsed, tables.prep_group, sem)
    return edits


def _possessor(toks: Toks, p: NounPhrase) -> NounPhrase | None:
    """The possessor phrase inside ``p`` ("a girl" of "a girl's hair"), or None."""
    for i in range(p.start, p.noun):
        t = toks[i]
        if t.dep == "poss" and t.pos in ("NOUN", "PROPN") and t.head == p.noun and i + 1 < p.noun and toks[i + 1].dep == "case":
            nominal = i
            while nominal > p.start and toks[nominal - 1].dep == "compound" and toks[nominal - 1].head == i:
                nominal -= 1
            start = i
            while start > p.start and toks[start - 1].head == i:  # "a little girl's", not "an open | farmer's"
                start -= 1
            return NounPhrase(start, i + 1, i, i, nominal, None, None, None, t.tag in ("NNS", "NNPS"))
    return None


def _possessor_exchange(
    parsed: ParsedCaption, tables: SwapTables, slots: list[Slot], ia: int, ib: int, a_end: int
) -> Edit | None:
    """Exchange phrase ``ia`` with the possessor inside phrase ``ib`` (rule ``possessive``): "A man
    holding a woman's hand" -> "A woman holding a man's hand". The possessive ending follows the new
    possessor's number ("the dogs' owner"); a pronoun that refers to either refuses the edit. Only
    people and animals change places here (a possessor is a person or an animal far more often than
    not, and "a hospital bed's hand" is nonsense): other classes are ``class_mismatch``."""
    toks = parsed.toks
    sem = tables.sem
    a, b = parsed.phrases[ia], parsed.phrases[ib]
    q = _possessor(toks, b)
    if q is None or a_end > b.start:
        return None
    sa, sq = slots[ia], slot_of(toks, q, sem)
    items = (_norm(span_words(toks, a.start, a_end)), _norm(span_words(toks, q.start, q.end)))
    reason = _class_reject(sa, sq, sem, whole_phrases=True)
    if not reason and not (sa.cls in _ANIMATE and sq.cls in _ANIMATE):
        reason = "class_mismatch"
    if reason:
        return _rejected("relation_swap", "possessive", reason, items)
    for t in toks:
        if t.pos == "PRON" and t.lower in _PRONOUN_FORMS and _referent(t, parsed.phrases, slots, tables.gender) in (ia, ib):
            return _rejected("relation_swap", "possessive", "pronoun", items)
    if _coordinated(toks, parsed.children, a):
        return _rejected("relation_swap", "possessive", "coordinated", items)
    moved_a = _moved_phrase(toks, a, a_end, _countability(sa.key, sem) == "mass")
    reps = [
        Replacement(a.start, a_end, _moved_phrase(toks, q, q.end, _countability(sq.key, sem) == "mass")),
        Replacement(q.start, q.end, moved_a),
    ]
    ending = "'" if sa.plural and moved_a.endswith("s") else "'s"
    case = toks[q.end]
    if case.text != ending and case.text in ("'s", "'", "’s", "’"):
        reps.append(Replacement(q.end, q.end + 1, ending))
    reps += _subject_agreement(toks, parsed.children, a, sq.plural, sa.plural)
    return _exchange_edit(parsed, "relation_swap", "possessive", reps, items, False, _cross_class(sa, sq, sem),
                          (a.start, a_end), (q.start, q.end), 0)


_ANIMATE = frozenset({"person", "animal"})
#: how a second clause hangs on the first ("while a woman watches", "and a dog sleeps")
_CLAUSE_DEPS = frozenset({"advcl", "conj"})


def _clause_subjects(parsed: ParsedCaption, tables: SwapTables, slots: list[Slot] | None) -> list[Edit]:
    """Exchange the subjects of two clauses (rule ``clause_subject``), whole: "A man is cooking
    while a woman watches" -> "A woman is cooking while a man watches"; each verb follows its new
    subject's number."""
    toks = parsed.toks
    subjects = [
        n for n, p in enumerate(parsed.phrases)
        if toks[p.head].dep in ("nsubj", "nsubjpass") and toks[p.head].head != p.head
    ]
    if len(subjects) < 2:
        return []
    if slots is None:
        slots = _slots(parsed, tables.sem)
    out: list[Edit] = []
    for ia, ib in combinations(subjects, 2):
        a, b = parsed.phrases[ia], parsed.phrases[ib]
        va, vb = toks[a.head].head, toks[b.head].head
        if va == vb or not (toks[vb].dep in _CLAUSE_DEPS and toks[vb].head == va or toks[va].dep in _CLAUSE_DEPS and toks[va].head == vb):
            continue
        if finite_verb(toks, parsed.children, va) is None or finite_verb(toks, parsed.children, vb) is None:
            continue  # "watches two sheep cross a lane": a bare verb's subject is the first verb's object
        if _link_between(parsed, ia, ib) is not None:
            continue  # a relation between them is exchanged as such
        a_end, b_end = _with_complement(parsed, a), _with_complement(parsed, b)
        if not (_whole(parsed, a, a_end, b) and _whole(parsed, b, b_end, None)):
            continue
        if _coordinated(toks, parsed.children, a) or _coordinated(toks, parsed.children, b):
            out.append(_rejected("relation_swap", "clause_subject", "coordinated", (slots[ia].key, slots[ib].key)))
            continue
        out.append(_exchange_phrases(parsed, tables, slots, ia, ib, a_end, b_end, "relation_swap", "clause_subject", False))
    return out


#: classes whose "in" means wearing, not a place ("a man in a red shirt", "a woman in green")
_WORN = frozenset({"clothing", "accessory"})


def preposition_exchanges(parsed: ParsedCaption, prep_group: dict[str, int], sem: Semantics) -> list[Edit]:
    """Exchange two spatial prepositions of one caption (rule ``preposition``): every noun stays
    where it is and the relations between them change ("a cat sitting on a chair next to a table"
    -> "a cat sitting next to a chair on a table").

    No class table vouches for the new relations, so only the plausibility score ranks and
    filters these (the family's floor); prepositions of one meaning group ("near" / "next to"),
    "of", and an "in" of wearing ("a man in green", "in a red shirt") are never exchanged.
    """
    toks = parsed.toks
    spans: list[tuple[int, int, str]] = []
    seen: set[int] = set()
    for p in parsed.deps:
        if p.via < 0 or p.via in seen or not p.rel.startswith("p:"):
            continue
        words = p.rel[2:]
        if words not in prep_group:
            continue
        seen.add(p.via)
        obj = parsed.lemmas[p.d]
        if words == "in" and (sem.class_of(obj) in _WORN or sem.modifier_type.get(obj) == "colour"):
            continue
        spans.append((p.via, p.via_end, words))
    if len(spans) < 2:
        return []
    spans.sort()
    out: list[Edit] = []
    lem = parsed.lemmas
    for (s1, e1, w1), (s2, e2, w2) in combinations(spans, 2):
        if e1 > s2 or prep_group[w1] == prep_group[w2]:
            continue
        t1, t2 = span_words(toks, s1, e1), span_words(toks, s2, e2)
        old: list[tuple[str, str, str]] = []
        new: list[tuple[str, str, str]] = []
        for p in parsed.deps:
            if p.via == s1 or p.via == s2:
                key = pair_key(p, lem)
                old.append(key)
                new.append(("p:" + (w2 if p.via == s1 else w1), key[1], key[2]))
        out.append(
            Edit(
                family="relation_swap",
                rule="preposition",
                replacements=(Replacement(s1, e1, t2), Replacement(s2, e2, t1)),
                items=(t1.lower(), t2.lower()),
                pairs_old=tuple(old),
                pairs_new=tuple(new),
            )
        )
    return out


def _completes_of(toks: Toks, p: NounPhrase) -> bool:
    """Whether ``p`` is the object of the "of" of a quantity or kind word that no phrase holds ("a
    lot of", "a kind of"); a frame ("an image of") or a multi-word preposition ("in front of") does
    not count."""
    t = toks[p.head]
    if t.dep != "pobj" or toks[t.head].lower != "of":
        return False
    owner = toks[toks[t.head].head]
    return owner.lower in QUANTITY_NOUNS and owner.i < p.start


#: what may stand between a list's comma and the noun of its next member ("a", "small", "cell")
_PRE_NOUN_DEPS = frozenset({"det", "amod", "compound", "nummod", "advmod", "poss", "case", "punct"})


def _member(toks: Toks, i: int) -> bool:
    """Whether noun ``i`` hangs on the noun before it as the next member of a list: a conjunct, or
    an apposition after a comma (the small parser reads "gloves, cell phone, lip gloss" as
    appositions as often as conjuncts; "two shapes: a blue diamond ..." is no list)."""
    t = toks[i]
    if t.head == i or toks[t.head].pos not in ("NOUN", "PROPN"):
        return False
    if t.dep == "conj":
        return True
    if t.dep != "appos":
        return False
    start = i
    while start > 0 and toks[start - 1].head == i and toks[start - 1].dep in _PRE_NOUN_DEPS and toks[start - 1].text != ",":
        start -= 1
    return start > 0 and toks[start - 1].text == ","


def _coordinated(toks: Toks, children: tuple[tuple[int, ...], ...], p: NounPhrase) -> bool:
    """Whether ``p``'s noun is one member of a coordination or list of nouns."""
    return _member(toks, p.head) or any(toks[c].pos in ("NOUN", "PROPN") and _member(toks, c) for c in children[p.head])


def _list_root(toks: Toks, i: int) -> int:
    """The first member of the list of nouns that token ``i`` belongs to (``i`` itself if none)."""
    while _member(toks, i):
        i = toks[i].head
    return i


def _moved_with(toks: Toks, p: NounPhrase, end: int, reps: list[Replacement]) -> str:
    """The moved text of ``p`` with some of its own tokens replaced (a possessive made "the")."""
    words = []
    for i in range(p.start, end):
        r = next((r for r in reps if r.start == i), None)
        words.append((r.text if r is not None else toks[i].text) + toks[i].ws)
    text = "".join(words).rstrip()
    if p.start == 0 and not toks[0].pos == "PROPN":
        text = text[:1].lower() + text[1:]
    return text


# --------------------------------------------------------------------------- attribute_swap


def _fits_all(words: tuple[str, ...], cls: str | None, sem: Semantics) -> bool:
    return all(sem.fits(w, cls) for w in words)


#: the usual order of English modifiers before a noun; a moved modifier takes its place in it
_TYPE_ORDER = {"count": 0, "other": 1, "size": 2, "age": 3, "shape": 4, "state": 5, "colour": 6, "pattern": 7, "material": 8}
#: types a modifier may move with to a phrase that has none of its type ("other" has no fit data)
_MOVABLE = frozenset({"colour", "size", "shape", "material", "pattern", "age", "state"})


@register("attribute_swap")
def attribute_swap(parsed: ParsedCaption, res: Resources) -> list[Edit]:
    """Four rules, exchanges first (``Edit.tier``):

    - ``exchange``: exchange two modifiers of one type ("a white cat on a black mat" -> "a black cat
      on a white mat");
    - ``cross_exchange``: exchange the modifiers of two objects whatever their types, each fitting
      its new noun ("a small dog next to a white cat" -> "a white dog next to a small cat"); a
      phrase never ends up with two modifiers of one type, and modifiers keep their usual order;
    - ``count``: exchange a number with a singular article, re-inflecting both nouns ("two dogs and
      a cat" -> "a dog and two cats");
    - ``move``: move a modifier to a phrase with none of its type ("a white cat on a mat" -> "a cat
      on a white mat").
    """
    tables = tables_of(res)
    sem = tables.sem
    if len(parsed.phrases) < 2:
        return []
    slots = _slots(parsed, sem)
    edits: list[Edit] = []
    for (ia, a), (ib, b) in combinations(enumerate(parsed.phrases), 2):
        sa, sb = slots[ia], slots[ib]
        if not sa.units and not sb.units:
            continue
        symmetric_link = _only_symmetric(parsed, _link_between(parsed, ia, ib))
        for ua in sa.units:
            for ub in sb.units:
                if ua.words == ub.words:
                    continue
                if ub.type == ua.type:
                    if ua.type not in _SWAPPED_TYPES:
                        continue
                    if ua.type == "count" and not (sa.plural and sb.plural):
                        continue  # "one dog" and "two cats" would need new noun forms
                    edits.append(_exchange(parsed, sem, a, b, sa, sb, ua, ub, symmetric_link))
                elif ua.type in _MOVABLE and ub.type in _MOVABLE and _cross_fits(parsed.toks, sa, ua, ub, sem) and _cross_fits(
                    parsed.toks, sb, ub, ua, sem
                ):
                    edits.append(_exchange(parsed, sem, a, b, sa, sb, ua, ub, symmetric_link, "cross_exchange"))
        for src, dst, p_src, p_dst in ((sa, sb, a, b), (sb, sa, b, a)):
            types = {u.type for u in dst.units}
            if src.cls in sem.never_swapped or dst.cls in sem.never_swapped:
                continue  # no modifier moves to or from a body part ("her nose", "all four legs")
            for u in src.units:
                if u.type in _MOVABLE and u.type not in types:
                    edits.append(_move(parsed, sem, p_src, p_dst, src, dst, u, symmetric_link))
                elif u.type == "count" and src.plural and dst.det == "sg" and not dst.plural and u.start == p_src.start:
                    e = _count_for_article(parsed, tables, ia if src is sa else ib, ib if src is sa else ia, slots, u)
                    if e is not None:
                        edits.append(e)
    return edits


def _cross_fits(toks: Toks, s: Slot, out: Unit, into: Unit, sem: Semantics) -> bool:
    """Whether ``into`` can take the place of ``out`` in phrase ``s`` (a modifier of another type):
    not on a body part, no second modifier of its type, and the phrase's modifiers stay in their
    usual order ("a small red ball" never becomes "a red wooden ball" by way of "a wooden red ball")."""
    if s.cls in sem.never_swapped:
        return False
    rank = _order(toks, into)
    for v in s.units:
        if v is out:
            continue
        if v.type == into.type:
            return False
        if (v.start < out.start and _order(toks, v) > rank) or (v.start > out.start and _order(toks, v) < rank):
            return False
    return True


def _exchange(
    parsed: ParsedCaption, sem: Semantics, a: NounPhrase, b: NounPhrase, sa: Slot, sb: Slot, ua: Unit, ub: Unit,
    symmetric_link: bool, rule: str = "exchange",
) -> Edit:
    toks = parsed.toks
    ta, tb = span_words(toks, ua.start, ua.end), span_words(toks, ub.start, ub.end)
    items = (ta.lower(), tb.lower())
    if not (_fits_all(ub.words, sa.cls, sem) and _fits_all(ua.words, sb.cls, sem)):
        return _rejected("attribute_swap", rule, "class_mismatch", items)
    if _repeats(sa.units, ua, ub) or _repeats(sb.units, ub, ua):
        return _rejected("attribute_swap", rule, "same_word", items)
    symmetric = symmetric_link and _is_permutation(
        parsed, a, b, _phrase_with(toks, a, ua.start, ua.end, tb), _phrase_with(toks, b, ub.start, ub.end, ta)
    )
    old, new = exchange_pairs(parsed.deps, toks, parsed.children, parsed.lemmas, (ua.start, ua.end), (ub.start, ub.end))
    return Edit(
        family="attribute_swap",
        rule=rule,
        replacements=(Replacement(ua.start, ua.end, tb), Replacement(ub.start, ub.end, ta)),
        items=items,
        symmetric_link=symmetric,
        pairs_old=old,
        pairs_new=new,
    )


def _move(
    parsed: ParsedCaption, sem: Semantics, a: NounPhrase, b: NounPhrase, sa: Slot, sb: Slot, u: Unit,
    symmetric_link: bool,
) -> Edit:
    """Move unit ``u`` from phrase ``a`` to phrase ``b`` (which has no modifier of its type)."""
    toks = parsed.toks
    text = span_words(toks, u.start, u.end)
    items = (text.lower(), "")
    if not _fits_all(u.words, sb.cls, sem):
        return _rejected("attribute_swap", "move", "class_mismatch", items)
    if any(w in u.words for v in sb.units for w in v.words):
        return _rejected("attribute_swap", "move", "same_word", items)
    # where it goes: before the first modifier of b that comes later in the usual order, else
    # right before the name
    at = sb.name_start
    for v in sb.units:
        if _order(toks, v) > _order(toks, u):
            at = v.start
            break
    # the article in front of the removed modifier now meets the next word: "an old cat" -> "a cat"
    start = u.start
    if start > 0 and toks[start - 1].lower in ("a", "an") and start - 1 >= a.start:
        out = Replacement(start - 1, u.end, toks[start - 1].text)
    elif start == 0 and u.end < len(toks):  # "Grey horse ..." -> "Horse ...": no space left in front
        out = Replacement(0, u.end + 1, toks[u.end].text)
    else:
        out = Replacement(start, u.end, "")
    into = Replacement(at, at, text + " ")
    if symmetric_link:
        new_a = _phrase_with(toks, a, u.start, u.end, "")
        new_b = _phrase_with(toks, b, at, at, text)
        symmetric = _is_permutation(parsed, a, b, new_a, new_b)
    else:
        symmetric = False
    roots = {i for i in range(u.start, u.end) if not u.start <= toks[i].head < u.end or toks[i].head == i}
    noun_b = parsed.lemmas[b.noun]
    old: list[tuple[str, str, str]] = []
    new: list[tuple[str, str, str]] = []
    lem = parsed.lemmas
    for p in parsed.deps:
        if p.d in roots and not u.start <= p.h < u.end:
            old.append(pair_key(p, lem))
            new.append((p.rel, noun_b, lem[p.d]))
    return Edit(
        family="attribute_swap",
        rule="move",
        replacements=(out, into),
        items=items,
        symmetric_link=symmetric,
        pairs_old=tuple(old),
        pairs_new=tuple(new),
        tier=TIERS["attribute_swap"]["move"],
    )


def _order(toks: Toks, u: Unit) -> int:
    """A modifier's place in the usual order; nouns used as modifiers ("mosquito net") come last."""
    if u.type == "other" and all(toks[i].pos in ("NOUN", "PROPN") for i in range(u.start, u.end)):
        return 9
    return _TYPE_ORDER.get(u.type, 1)


def _count_for_article(
    parsed: ParsedCaption, tables: SwapTables, ia: int, ib: int, slots: list[Slot], u: Unit
) -> Edit | None:
    """Exchange the number ``u`` of phrase ``ia`` with the singular article of phrase ``ib``:
    "two dogs chasing a cat" -> "a dog chasing two cats"."""
    toks = parsed.toks
    sem = tables.sem
    a, b = parsed.phrases[ia], parsed.phrases[ib]
    sa, sb = slots[ia], slots[ib]
    art = next((k for k in range(b.start, sb.name_start) if toks[k].lower in ("a", "an", "one")), -1)
    if art < 0 or sa.name_start <= u.start:
        return None
    number = span_words(toks, u.start, u.end)
    items = (number.lower(), toks[art].lower)
    if _countability(sa.key, sem) != "count" or _countability(sb.key, sem) != "count":
        return _rejected("attribute_swap", "count", "agreement", items)
    # the names re-inflected: a's noun singular, b's noun plural
    fa = slot_form(sa._replace(det="sg", plural=False), sa.key, sem, False)
    fb = slot_form(sb._replace(det="pl", plural=True), sb.key, sem, False)
    if fa is None or fb is None:
        return _rejected("attribute_swap", "count", "agreement", items)
    name_a = _with_prefix(toks, sa, a, fa[0])
    name_b = _with_prefix(toks, sb, b, fb[0])
    article = toks[art].lower if toks[art].lower != "one" else "a"
    reps = [
        Replacement(u.start, u.end, article),
        Replacement(sa.name_start, a.noun + 1, name_a),
        Replacement(art, art + 1, number),
        Replacement(sb.name_start, b.noun + 1, name_b),
    ]
    pron = pronoun_changes(parsed, slots, tables.gender, {ia: (sa, False), ib: (sb, True)})
    if pron is None:
        return _rejected("attribute_swap", "count", "pronoun", items)
    reps += pron
    reps += _subject_agreement(toks, parsed.children, a, False, True)
    reps += _subject_agreement(toks, parsed.children, b, True, False)
    lem = parsed.lemmas
    old = [pair_key(p, lem) for p in parsed.deps if p.rel == "num" and u.start <= p.d < u.end]
    new = [(r, lem[b.noun], d) for r, _, d in old]
    return Edit(
        family="attribute_swap",
        rule="count",
        replacements=tuple(reps),
        items=items,
        pairs_old=tuple(old),
        pairs_new=tuple(new),
        tier=TIERS["attribute_swap"]["count"],
    )


def _repeats(units: tuple[Unit, ...], out: Unit, into: Unit) -> bool:
    """Whether moving ``into`` in place of ``out`` repeats a word another modifier of the phrase
    already has ("a small red ball" taking "red" from elsewhere in place of "small")."""
    others = {w for u in units if u is not out for w in u.words}
    return any(w in others for w in into.words)


def _is_permutation(parsed: ParsedCaption, a: NounPhrase, b: NounPhrase, new_a: str, new_b: str) -> bool:
    toks = parsed.toks
    old_a = _norm(span_words(toks, a.start, a.end))
    old_b = _norm(span_words(toks, b.start, b.end))
    return _norm(new_a) == old_b and _norm(new_b) == old_a


def _phrase_with(toks: Toks, p: NounPhrase, start: int, end: int, text: str) -> str:
    """The phrase ``p`` with tokens ``[start, end)`` replaced by ``text`` (for permutation checks)."""
    before = span_words(toks, p.start, start) if start > p.start else ""
    after = span_words(toks, end, p.end) if end < p.end else ""
    return " ".join(x for x in (before, text, after) if x)


# --------------------------------------------------------------------------- object_swap


def _countability(key: str, sem: Semantics) -> str:
    last = key.split(" ")[-1]
    if key in sem.plural_only or last in sem.plural_only:
        return "plural_only"
    if key in sem.invariant or last in sem.invariant:
        return "invariant"
    if (key in sem.mass or last in sem.mass) and key not in sem.count_or_mass:
        return "mass"
    return "count"


def slot_form(slot: Slot, key: str, sem: Semantics, sentence_start: bool) -> tuple[str, bool] | None:
    """The form of the noun ``key`` (singular key) in ``slot``, and whether it is plural; None when
    no form agrees with the slot's determiners ("a" + a mass noun, "two" + "luggage")."""
    kind = _countability(key, sem)
    if slot.det == "sg":
        if kind in ("mass", "plural_only"):
            return None
        plural = False
    elif slot.det == "pl":
        if kind in ("mass", "plural_only"):
            return None
        plural = True
    elif slot.det == "much" and kind != "mass":
        return None
    elif slot.det == "some" and kind in ("count", "invariant"):
        plural = True  # "some bread" -> "some apples"
    elif kind == "mass":
        plural = False
    elif kind == "plural_only":
        plural = True
    elif slot.bare and not slot.plural and not sentence_start and _countability(slot.key, sem) == "mass":
        plural = True  # "trunks and luggage" -> "luggage and trunks": a bare count noun goes plural
    else:
        plural = slot.plural
    if kind == "plural_only":
        return key, True
    words = key.split(" ")
    if plural:
        words[-1] = pluralize(words[-1])
    return " ".join(words), plural


@register("object_swap")
def object_swap(parsed: ParsedCaption, res: Resources) -> list[Edit]:
    """Two rules:

    - ``phrase``: exchange two whole noun phrases with their determiners, numbers, modifiers,
      compounds and "of" complements ("a large van in front of a small car" -> "a small car in
      front of a large van"), re-agreeing verbs and pronouns;
    - ``noun``: exchange the two names alone, each taking the number its new place allows ("two
      dogs on a bench" -> "two benches on a dog"), only where neither phrase has a modifier beyond
      its number (a modifier left behind would be an attribute edit too: "a large car in front of a
      small van").

    ``phrase`` ranks first (``Edit.tier``).
    """
    tables = tables_of(res)
    sem = tables.sem
    toks = parsed.toks
    phrases = parsed.phrases
    if len(phrases) < 2:
        return []
    slots = _slots(parsed, sem)
    edits = []
    for (ia, a), (ib, b) in combinations(enumerate(phrases), 2):
        if toks[a.noun].pos == "PROPN" or toks[b.noun].pos == "PROPN":
            continue  # names are not object categories
        if part_of(toks, a, b):
            continue  # "a bouquet of flowers" -> "a flower of bouquets" is word salad
        sa, sb = slots[ia], slots[ib]
        link = _link_between(parsed, ia, ib)
        a_end, b_end = _with_complement(parsed, a), _with_complement(parsed, b)
        whole = _whole(parsed, a, a_end, b) and _whole(parsed, b, b_end, None)
        if whole:
            edits.append(
                _exchange_phrases(parsed, tables, slots, ia, ib, a_end, b_end, "object_swap", "phrase",
                                  _pure_reordering(parsed, a, b, link))
            )
        if _modified(sa) or _modified(sb):
            continue
        if whole and _determiners(toks, a.start, sa.name_start) == _determiners(toks, b.start, sb.name_start):
            continue  # the same determiners: exchanging the names is exchanging the phrases
        edits.append(_noun_exchange(parsed, tables, slots, ia, ib, link))
    return edits


def _determiners(toks: Toks, start: int, end: int) -> str:
    """The words before a name, for comparison ("a" and "an" are one word here, "the" another)."""
    return " ".join("a" if w == "an" else w for w in span_words(toks, start, end).lower().split())


def _modified(s: Slot) -> bool:
    """Whether a phrase has a modifier beyond its number or quantifier ("two", "several", "own")."""
    return any(u.type not in ("count", "quantifier") for u in s.units)


def _whole(parsed: ParsedCaption, p: NounPhrase, end: int, nxt: NounPhrase | None) -> bool:
    """Whether ``p`` (with its complements up to ``end``) can move as a whole object: it ends before
    the phrase ``nxt`` and completes no other phrase ("a bouquet of | flowers", "a lot of | fruit")."""
    toks = parsed.toks
    if nxt is not None and end > nxt.start:
        return False
    return not _completes_of(toks, p) and not any(part_of(toks, q, p) for q in parsed.phrases)


def _noun_exchange(
    parsed: ParsedCaption, tables: SwapTables, slots: list[Slot], ia: int, ib: int, link: Link | None
) -> Edit:
    """Exchange the names of phrases ``ia`` and ``ib`` (neither has a modifier), each re-inflected
    for the determiners of its new place."""
    sem = tables.sem
    toks = parsed.toks
    a, b = parsed.phrases[ia], parsed.phrases[ib]
    sa, sb = slots[ia], slots[ib]
    items = (sa.key, sb.key)
    reason = _class_reject(sa, sb, sem)
    if reason:
        return _rejected("object_swap", "noun", reason, items)
    fa = slot_form(sa, sb.key, sem, sa.name_start == 0)
    fb = slot_form(sb, sa.key, sem, sb.name_start == 0)
    if fa is None or fb is None:
        return _rejected("object_swap", "noun", "agreement", items)
    (ta, pa), (tb, pb) = fa, fb
    ta = _with_prefix(toks, sb, b, ta)
    tb = _with_prefix(toks, sa, a, tb)
    pron = pronoun_changes(parsed, slots, tables.gender, {ia: (sb, pa), ib: (sa, pb)})
    if pron is None:
        return _rejected("object_swap", "noun", "pronoun", items)
    symmetric = bool(
        _only_symmetric(parsed, link)
        and _is_permutation(
            parsed, a, b,
            _phrase_with(toks, a, sa.name_start, a.noun + 1, ta),
            _phrase_with(toks, b, sb.name_start, b.noun + 1, tb),
        )
    )
    reps = [Replacement(sa.name_start, a.noun + 1, ta), Replacement(sb.name_start, b.noun + 1, tb), *pron]
    reps += _subject_agreement(toks, parsed.children, a, pa, sa.plural)
    reps += _subject_agreement(toks, parsed.children, b, pb, sb.plural)
    return _exchange_edit(parsed, "object_swap", "noun", reps, items, symmetric, _cross_class(sa, sb, sem),
                          (sa.name_start, a.noun + 1), (sb.name_start, b.noun + 1), TIERS["object_swap"]["noun"])


def _with_prefix(toks: Toks, s: Slot, p: NounPhrase, form: str) -> str:
    """The moving name: a multi-word name is already whole in ``form``; compounds that are part of
    the name ("train" in "train signal") travel with it."""
    noun = toks[p.noun].text
    if noun.isupper() and len(noun) > 1:  # "TV", "SUV"
        form = form.upper()
    n_words = len(s.key.split(" "))
    if n_words > 1 or s.name_start >= p.noun:
        return form
    prefix = span_words(toks, s.name_start, p.noun)
    return f"{prefix} {form}"
