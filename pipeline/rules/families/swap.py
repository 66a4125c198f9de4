"""Swap families: the bag of words stays the same, the binding changes.

- ``relation_swap``: exchange the two noun phrases around a preposition or verb.
- ``attribute_swap``: exchange adjectives, compound modifiers or numbers between two noun phrases.
- ``object_swap``: exchange the two object names, leaving their modifiers in place.
"""

from __future__ import annotations

from itertools import combinations

from pipeline.records import Edit, Replacement
from pipeline.rules.families import ParsedCaption, Resources, register
from pipeline.rules.grammar import agree_verb, inflect_noun, singularize
from pipeline.rules.realize import span_words
from pipeline.rules.syntax import Link, NounPhrase, Tok, part_of

#: nouns naming people; swapping a person with a thing is kept but ranked after like-for-like swaps
PERSON_NOUNS = frozenset(
    "man woman boy girl person people child kid baby guy lady gentleman player skier surfer "
    "skateboarder snowboarder rider batter catcher pitcher chef cook officer policeman soldier "
    "student teacher worker couple family crowd adult teenager toddler mother father son "
    "daughter friend tourist customer vendor driver pedestrian athlete bride groom".split()
)
ANIMAL_NOUNS = frozenset(
    "dog cat horse cow sheep bird elephant bear zebra giraffe puppy kitten duck goose pigeon "
    "seagull animal cattle calf lamb pony".split()
)


def _category(lemma: str) -> str:
    if lemma in PERSON_NOUNS:
        return "person"
    if lemma in ANIMAL_NOUNS:
        return "animal"
    return "thing"


Toks = tuple[Tok, ...]


def _with_complement(parsed: ParsedCaption, p: NounPhrase) -> int:
    """End of ``p`` together with its "of" complements ("a glass" -> "a glass of ale")."""
    end = p.end
    for q in parsed.phrases:
        if q.start == end + 1 and part_of(parsed.toks, p, q):
            end = _with_complement(parsed, q)
            break
    return end


def _moved_phrase(toks: Toks, p: NounPhrase, end: int | None = None) -> str:
    """A whole noun phrase as it reads elsewhere in the sentence.

    Headline captions start with bare nouns ("Man riding a bike"); moved mid-sentence a bare
    singular noun needs an article ("a bike riding a man"), which the a/an fix then adjusts.
    """
    text = span_words(toks, p.start, p.end if end is None else end)
    first = toks[p.start]
    if (
        p.start == 0
        and not p.plural
        and first.pos in ("NOUN", "ADJ")
        and first.dep not in ("det", "poss", "nummod")
        and toks[p.noun].pos == "NOUN"
    ):
        return "a " + text
    return text


def _norm(text: str) -> str:
    return " ".join(w for w in text.lower().split() if w not in ("a", "an"))


def _subject_agreement(
    toks: Toks, children: tuple[tuple[int, ...], ...], slot: NounPhrase, new_plural: bool
) -> list[Replacement]:
    """Replacements that make the verb agree when the subject slot changes grammatical number."""
    if new_plural == slot.plural:
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
        form = agree_verb(t.text, t.lemma, new_plural)
        if form is not None and form != t.text:
            out.append(Replacement(t.i, t.i + 1, form))
    return out


def _link_between(parsed: ParsedCaption, a: int, b: int) -> Link | None:
    for link in parsed.links:
        if (link.a == a and link.b == b) or (link.a == b and link.b == a):
            return link
    return None


@register("relation_swap")
def relation_swap(parsed: ParsedCaption, res: Resources) -> list[Edit]:
    toks = parsed.toks
    edits = []
    for link in parsed.links:
        if link.kind == "conj":
            continue  # coordination is not a relation: "a cat and a dog" means the same reversed
        a, b = parsed.phrases[link.a], parsed.phrases[link.b]
        a_end, b_end = _with_complement(parsed, a), _with_complement(parsed, b)
        if a_end > b.start:
            continue  # b is inside a's "of" complement: not two separate objects
        reps = [
            Replacement(a.start, a_end, _moved_phrase(toks, b, b_end)),
            Replacement(b.start, b_end, _moved_phrase(toks, a, a_end)),
        ]
        reps += _subject_agreement(toks, parsed.children, a, b.plural)
        edits.append(
            Edit(
                family="relation_swap",
                rule=link.kind,
                replacements=tuple(reps),
                items=(_norm(span_words(toks, a.start, a.end)), _norm(span_words(toks, b.start, b.end))),
                symmetric_link=link.symmetric,
            )
        )
    return edits


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


@register("attribute_swap")
def attribute_swap(parsed: ParsedCaption, res: Resources) -> list[Edit]:
    toks = parsed.toks
    edits = []
    for (ia, a), (ib, b) in combinations(enumerate(parsed.phrases), 2):
        link = _link_between(parsed, ia, ib)
        pairs = [("adjective", a.adjectives, b.adjectives), ("compound", a.compound, b.compound)]
        if a.number is not None and b.number is not None and a.plural and b.plural:
            pairs.append(("number", (a.number, a.number + 1), (b.number, b.number + 1)))
        for rule, sa, sb in pairs:
            if sa is None or sb is None:
                continue
            if rule == "adjective":
                aligned = _differing_runs(toks, sa, sb)
                if aligned is None:
                    continue
                sa, sb = aligned
            ta, tb = span_words(toks, *sa), span_words(toks, *sb)
            symmetric = bool(
                link
                and link.symmetric
                and _is_permutation(
                    parsed, a, b, _phrase_with(toks, a, sa[0], sa[1], tb), _phrase_with(toks, b, sb[0], sb[1], ta)
                )
            )
            edits.append(
                Edit(
                    family="attribute_swap",
                    rule=rule,
                    replacements=(Replacement(sa[0], sa[1], tb), Replacement(sb[0], sb[1], ta)),
                    items=(ta.lower(), tb.lower()),
                    symmetric_link=symmetric,
                    priority={"adjective": 0, "number": 1, "compound": 2}[rule],
                )
            )
    return edits


def _differing_runs(
    toks: Toks, sa: tuple[int, int], sb: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The parts of two adjective runs that differ ("small red" / "small blue" -> "red" / "blue").

    Swapping whole runs that share a word moves an adjective instead of exchanging two ("a large
    circle ... a large black square" -> "a large black circle ... a large square"). Returns None
    when one side has nothing of its own.
    """
    wa = [toks[i].lower for i in range(*sa)]
    wb = [toks[i].lower for i in range(*sb)]
    shared = set(wa) & set(wb)
    if not shared:
        return sa, sb
    da = [sa[0] + n for n, w in enumerate(wa) if w not in shared]
    db = [sb[0] + n for n, w in enumerate(wb) if w not in shared]
    if not da or not db or da[-1] - da[0] + 1 != len(da) or db[-1] - db[0] + 1 != len(db):
        return None
    return (da[0], da[-1] + 1), (db[0], db[-1] + 1)


@register("object_swap")
def object_swap(parsed: ParsedCaption, res: Resources) -> list[Edit]:
    toks = parsed.toks
    edits = []
    phrases = parsed.phrases
    # per phrase, once: its lemma and its name inflected for either number (pairs reuse them)
    lemmas = [(toks[p.noun].lemma or singularize(toks[p.noun].text)).lower() for p in phrases]
    names: dict[tuple[int, bool], str] = {}

    def name(i: int, plural: bool) -> str:
        key = (i, plural)
        if key not in names:
            names[key] = _nominal(toks, phrases[i], plural)
        return names[key]

    for (ia, a), (ib, b) in combinations(enumerate(phrases), 2):
        if toks[a.noun].pos == "PROPN" or toks[b.noun].pos == "PROPN":
            continue  # names are not object categories
        if part_of(toks, a, b):
            continue  # "a bouquet of flowers" -> "a flower of bouquets" is word salad
        la, lb = lemmas[ia], lemmas[ib]
        # each slot keeps its own number: "two dogs and a cat" -> "two cats and a dog"
        ta = name(ib, a.plural)
        tb = name(ia, b.plural)
        link = _link_between(parsed, ia, ib)
        symmetric = bool(
            link
            and link.symmetric
            and _is_permutation(
                parsed,
                a,
                b,
                _phrase_with(toks, a, a.nominal_start, a.noun + 1, ta),
                _phrase_with(toks, b, b.nominal_start, b.noun + 1, tb),
            )
        )
        edits.append(
            Edit(
                family="object_swap",
                rule="noun",
                replacements=(
                    Replacement(a.nominal_start, a.noun + 1, ta),
                    Replacement(b.nominal_start, b.noun + 1, tb),
                ),
                items=(la, lb),
                symmetric_link=symmetric,
                priority=0 if _category(la) == _category(lb) else 1,
            )
        )
    return edits


def _nominal(toks: Toks, p: NounPhrase, plural: bool) -> str:
    """The object name of ``p`` (compounds + noun) inflected for a slot of the given number."""
    noun = toks[p.noun]
    lemma = noun.lemma or singularize(noun.text)
    word = inflect_noun(lemma.lower() if not noun.text.isupper() else lemma, plural)
    prefix = span_words(toks, p.nominal_start, p.noun) if p.nominal_start < p.noun else ""
    return f"{prefix} {word}" if prefix else word
