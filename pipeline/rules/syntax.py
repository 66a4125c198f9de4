"""Read the structures the rules need out of a spaCy parse: noun phrases and the relations between them.

Everything here is a pure function of a ``Doc``; rules build on these views instead of walking
the dependency tree themselves, so one fix to (say) "on top of" serves every family.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Tok(NamedTuple):
    """The parse attributes the rules read, copied out of spaCy once per caption.

    Reading plain tuples is several times faster than spaCy's ``Token`` properties, which matters
    because rules must cost little next to the parse itself (see bench/bench_generate.py).
    """

    i: int
    text: str
    ws: str
    lower: str
    pos: str
    tag: str
    dep: str
    head: int
    lemma: str
    idx: int


_ATTRS: list[int] = []
#: (ORTH, LOWER, POS, TAG, DEP, LEMMA) hashes -> their strings. Captions repeat the same analysed
#: words over and over, so one dict hit per token replaces six string-store lookups.
_STRINGS: dict[tuple[int, ...], tuple[str, ...]] = {}
_STRINGS_MAX = 500_000  # a bound for very large, very varied inputs; refilled on demand
_new_tok = tuple.__new__
_SIGN = 1 << 63
_WRAP = 1 << 64


def tokens_of(doc: Any) -> tuple[tuple[Tok, ...], tuple[tuple[int, ...], ...]]:
    """The token table of a spaCy ``Doc`` and each token's children (in order).

    Reads the attributes in bulk with ``Doc.to_array`` (creating a spaCy ``Token`` per attribute
    access costs more than the rules themselves).
    """
    if not _ATTRS:
        from spacy.attrs import DEP, HEAD, IDX, LEMMA, LOWER, ORTH, POS, SPACY, TAG

        _ATTRS.extend([ORTH, LOWER, POS, TAG, DEP, LEMMA, SPACY, IDX, HEAD])
    store = doc.vocab.strings
    cache = _STRINGS
    if len(cache) > _STRINGS_MAX:
        cache.clear()
    rows = doc.to_array(_ATTRS).tolist()
    toks = []
    children: list[list[int]] = [[] for _ in rows]
    for i, (o, lo, p, t, d, lem, sp, idx, h) in enumerate(rows):
        key = (o, lo, p, t, d, lem)
        w = cache.get(key)
        if w is None:
            w = cache[key] = (store[o], store[lo], store[p], store[t], store[d], store[lem])
        if h:  # HEAD is a signed offset stored unsigned
            head = i + (h if h < _SIGN else h - _WRAP)
            children[head].append(i)
        else:
            head = i
        toks.append(_new_tok(Tok, (i, w[0], " " if sp else "", w[1], w[2], w[3], w[4], head, w[5], idx)))
    return tuple(toks), tuple(map(tuple, children))


#: nouns that, followed by "of", form a multi-word preposition ("on top of", "to the left of")
RELATIONAL_NOUNS = frozenset(
    "top front side middle edge left right center centre bottom back corner end rear "
    "inside outside underside surface base tip foot head".split()
)
#: position words that name a place, not an object, even without "of" ("to its left", "on the side")
POSITION_NOUNS = frozenset("left right top bottom front middle center centre side foreground background".split())
#: words too generic to be an object name, swapped or replaced ("three shapes:", "a picture of")
GENERIC_NOUNS = frozenset(
    "shape shapes object objects thing things item items picture pictures image images photo photos "
    "photograph view scene shot closeup close-up way part parts kind type sort lot".split()
)
#: quantity or group nouns whose "of" complement is the real object ("a couple of phones")
QUANTITY_NOUNS = frozenset(
    "couple group bunch lot lots pair number herd flock crowd team row set pile stack "
    "variety assortment collection bundle line dozen few handful series kind kinds type "
    "types sort sorts array cluster fleet batch".split()
)
#: adjectives that do not describe the object and must not be swapped or replaced
NON_ATTRIBUTE_ADJECTIVES = frozenset(
    "other another same different many several few various such own numerous multiple "
    "more most much some all each every both certain similar whole entire next last first "
    "only main".split()
)
#: relations whose arguments can be exchanged without changing the meaning
SYMMETRIC_RELATIONS = frozenset(
    [
        "with", "and", "or", "next to", "beside", "besides", "near", "nearby", "by",
        "alongside", "along with", "together with", "close to", "near to", "adjacent to",
        "across from", "opposite", "opposite to", "between", "among", "amongst",
        "meets", "meeting", "hugging", "hugs", "kissing", "kisses", "facing each other",
    ]
)
#: prepositions that join a noun to its part, content or kind rather than relating two objects
#: ("a glass of ale", "a bouquet of flowers"): exchanging around them yields word salad
NON_RELATIONS = frozenset({"of"})
_MODIFIER_DEPS = frozenset({"amod", "advmod", "npadvmod", "cc", "conj", "punct", "hmod", "hyph"})
_SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass"})
_NOUN_POS = frozenset({"NOUN", "PROPN"})


class NounPhrase(NamedTuple):
    """A base noun phrase, possibly extended through a quantity noun ("a couple of phones")."""

    start: int
    end: int
    #: the syntactic head (the quantity noun for "a couple of phones")
    head: int
    #: the noun that names the object ("phones"); equals head unless a quantity noun leads
    noun: int
    #: compound + noun: the object's name ("tennis racket")
    nominal_start: int
    #: contiguous adjective run before the nominal, (start, end), or None
    adjectives: tuple[int, int] | None
    #: compound modifiers before the noun, (start, end), or None
    compound: tuple[int, int] | None
    #: numeric modifier token ("two"), or None
    number: int | None
    plural: bool


class Link(NamedTuple):
    """A relation from noun phrase ``a`` (earlier) to noun phrase ``b`` (later)."""

    a: int  # index into the list of noun phrases
    b: int
    kind: str  # "prep", "verb_prep", "verb_object", "conj"
    #: lower-cased relation words ("on top of", "chasing", "sitting on")
    relation: str
    symmetric: bool
    #: token index of the finite verb whose subject is ``a``, or None
    verb: int | None


def is_plural(tok: Tok) -> bool:
    return tok.tag in ("NNS", "NNPS")


#: dependency labels under which spaCy's English noun-chunk iterator starts a noun phrase
_NP_DEPS = frozenset(
    {"nsubj", "nsubjpass", "dobj", "pobj", "attr", "ROOT", "appos", "dative", "oprd", "conj", "npadvmod", "pcomp"}
)


def _left_edge(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...], i: int) -> int:
    edge = i
    stack = [c for c in children[i] if c < i]
    while stack:
        c = stack.pop()
        edge = min(edge, c)
        stack.extend(children[c])
    return edge


def noun_phrases(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...]) -> list[NounPhrase]:
    """Base noun phrases whose head is a real noun (no pronouns, no relational parts like "top").

    Same spans as spaCy's English ``noun_chunks`` (a noun plus its left dependents), computed on the
    token table, then extended through quantity nouns ("a couple of phones").
    """
    chunks: list[tuple[int, int, int]] = []  # (start, end, head)
    prev_end = -1
    for t in toks:
        if t.pos not in _NOUN_POS or t.dep not in _NP_DEPS:
            continue
        if t.dep == "npadvmod" and toks[t.head].dep == "amod" and t.head > t.i:
            continue  # "snow" in "a snow covered car" describes the car, and must not hide it
        if t.dep == "conj":
            h = toks[t.head]
            if h.pos not in _NOUN_POS and h.pos != "PRON":
                continue
        start = _left_edge(toks, children, t.i)
        if start <= prev_end:  # nested in the previous chunk
            continue
        chunks.append((start, t.i + 1, t.i))
        prev_end = t.i
    phrases: list[NounPhrase] = []
    consumed: set[int] = set()
    for ci, (start, end, head) in enumerate(chunks):
        if head in consumed:
            continue
        h = toks[head]
        has_of = any(toks[c].dep == "prep" and toks[c].lower == "of" for c in children[head])
        if (h.lower in RELATIONAL_NOUNS and has_of) or h.lower in POSITION_NOUNS or h.lower in GENERIC_NOUNS:
            continue
        if h.lower in QUANTITY_NOUNS and has_of:
            obj = of_object(toks, children, head)
            inner = next((c for c in chunks[ci + 1 :] if c[2] == obj), None)
            if obj is not None and inner is not None and inner[0] == head + 2:
                consumed.add(obj)
                phrases.append(_make(toks, start, inner[1], head, obj, inner[0]))
                continue
        phrases.append(_make(toks, start, end, head, head, start))
    return phrases


def of_object(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...], i: int) -> int | None:
    """The noun object of token ``i``'s "of" ("a group of | trees"), or None."""
    for c in children[i]:
        if toks[c].dep == "prep" and toks[c].lower == "of":
            for g in children[c]:
                if toks[g].dep == "pobj" and toks[g].pos in _NOUN_POS:
                    return g
    return None


def _make(toks: tuple[Tok, ...], start: int, end: int, head: int, noun: int, mods_start: int) -> NounPhrase:
    # walk left from the noun over compounds, then adjectives; numbers and determiners stop it
    i = noun
    while i - 1 >= mods_start and toks[i - 1].dep == "compound" and toks[i - 1].head >= i - 1:
        i -= 1
    nominal_start = i
    compound = (nominal_start, noun) if nominal_start < noun else None
    j = nominal_start
    while j - 1 >= mods_start:
        t = toks[j - 1]
        if t.dep in ("det", "nummod", "poss", "predet", "case") or t.pos in ("DET", "NUM", "PRON"):
            break
        if t.dep not in _MODIFIER_DEPS and t.pos not in ("ADJ", "VERB", "ADV"):
            break
        j -= 1
    while j < nominal_start and toks[j].dep in ("cc", "punct"):  # no leading "and" or comma
        j += 1
    adjectives = None
    if j < nominal_start and any(toks[x].pos in ("ADJ", "VERB") for x in range(j, nominal_start)):
        if not any(toks[x].lower in NON_ATTRIBUTE_ADJECTIVES for x in range(j, nominal_start)):
            adjectives = (j, nominal_start)
    number = next(
        (x for x in range(mods_start, nominal_start) if toks[x].dep == "nummod" and toks[x].head == noun),
        None,
    )
    return NounPhrase(start, end, head, noun, nominal_start, adjectives, compound, number, is_plural(toks[noun]))


def _relation_text(toks: tuple[Tok, ...], start: int, end: int) -> str:
    return " ".join(t.lower for t in toks[start:end] if t.dep not in ("aux", "auxpass", "det", "punct"))


def part_of(toks: tuple[Tok, ...], a: NounPhrase, b: NounPhrase) -> bool:
    """Whether ``b`` completes ``a`` through a non-relation ("a bouquet of flowers", "a glass of ale")."""
    tb = toks[b.head]
    if tb.dep != "pobj":
        return False
    prep = toks[tb.head]
    return prep.lower in NON_RELATIONS and prep.head == a.head


def finite_verb(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...], i: int) -> int | None:
    """The token that carries subject agreement for a verb: itself when finite, else its auxiliary."""
    if toks[i].tag in ("VBZ", "VBP", "VBD"):
        return i
    for c in children[i]:
        if toks[c].dep in ("aux", "auxpass") and toks[c].tag in ("VBZ", "VBP", "VBD"):
            return c
    return None


def links(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...], phrases: list[NounPhrase]) -> list[Link]:
    """Relations between pairs of noun phrases: prepositions, verbs with objects, coordination."""
    by_head = {p.head: n for n, p in enumerate(phrases)}
    out: list[Link] = []
    for bn, b in enumerate(phrases):
        tok = toks[b.head]
        if tok.dep == "conj" and tok.head in by_head:
            out.append(Link(by_head[tok.head], bn, "conj", "and", True, None))
            continue
        if tok.dep == "pobj":
            prep = tok.head
            # climb multi-word prepositions: "on top of", "to the left of", "next to", "right of"
            while True:
                up = toks[toks[prep].head]
                if up.dep == "pobj" and up.lower in RELATIONAL_NOUNS and toks[up.head].dep == "prep":
                    prep = up.head
                elif up.dep in ("advmod", "acomp", "amod") and up.pos in ("ADV", "ADJ") and up.i < prep:
                    prep = up.i
                else:
                    break
            governor = toks[toks[prep].head]
            base_kind = "prep"
        elif tok.dep in ("dobj", "attr") and toks[tok.head].pos in ("VERB", "AUX"):
            governor, prep, base_kind = toks[tok.head], tok.head, "verb_object"
        else:
            continue
        for an, a in enumerate(phrases):
            if an == bn or a.end > b.start:
                continue
            atok = toks[a.head]
            verb = None
            kind = base_kind
            if governor.i == atok.i and kind == "prep":
                rel_start = prep
            elif governor.dep in ("acl", "relcl") and governor.head == atok.i:
                rel_start = governor.i
                kind = "verb_prep" if kind == "prep" else kind
            elif atok.dep in _SUBJECT_DEPS and atok.head == governor.i:
                rel_start = a.end
                verb = finite_verb(toks, children, governor.i)
                kind = "verb_prep" if kind == "prep" and governor.pos == "VERB" else kind
            else:
                continue
            relation = _relation_text(toks, rel_start, b.start)
            core = _relation_text(toks, prep, b.start) if kind != "verb_object" else relation
            if core in NON_RELATIONS:
                break
            symmetric = relation in SYMMETRIC_RELATIONS or core in SYMMETRIC_RELATIONS
            out.append(Link(an, bn, kind, relation, symmetric, verb))
            break
    return out
