"""Selectional preferences: how attested the dependency pairs of a negative are, next to its positive's.

A caption's *dependency pairs* are the lemma pairs of four kinds of relation (:func:`dep_pairs`):
verb-subject (``subj``), verb-object (``obj``), a preposition's head and object (``p:<preposition>``,
multi-word prepositions whole: ``p:in front of``), and noun-modifier (``mod`` for adjectives, ``cmp``
for compound nouns, ``num`` for numbers); plus the noun at the root of the tree (``root``, with an
empty head: what a headline caption is about, or the main clause's subject). The generate stage counts them over a bounded, seeded
sample of the parsed input (:func:`count_pairs`) and compiles the counts once into
:class:`PairTables`.

A rule says which pairs its edit removes and which it creates (:func:`exchange_pairs` for swaps,
:func:`relabel_pairs` for replacements). The *plausibility* of the edit is the mean smoothed log2
count of the created pairs minus that of the removed ones (:func:`plausibility`), in bits: 0 means
the negative's new pairs are as attested as the positive's, -3 eight times rarer. A pair's smoothed
count adds to its own count the count its words' coarse classes lead one to expect (semantic
classes of nouns, types of modifiers; :class:`Scorer`), so a pair never seen still scores by what
its classes usually do. The positive's own occurrence is left out of its pairs' counts (a caption
is no evidence for itself).

Nothing here reads the surface word sequence: ranking by an n-gram model of the text is what the
report's blind check measures, and optimising against it would hide implausible negatives rather
than avoid them.

Pure and compiled with the rules; :class:`PairTables` is a ``NamedTuple`` so it pickles to workers.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Mapping, NamedTuple

from pipeline.rules.syntax import POSITION_NOUNS, QUANTITY_NOUNS, RELATIONAL_NOUNS, Tok, of_object

#: a dependency pair as counted: (relation, head lemma, dependent lemma)
PairKey = tuple[str, str, str]

_NOUN_POS = frozenset({"NOUN", "PROPN"})
_RELATIVE = frozenset({"who", "that", "which"})
_COPULA = frozenset({"be"})


class DepPair(NamedTuple):
    """A dependency pair of a parse, by token index; ``via`` is the first token of its preposition
    (``-1`` for relations without one), so a rule that replaces the preposition relabels the pair."""

    rel: str
    h: int
    d: int
    via: int
    via_end: int


def lemma_of(t: Tok) -> str:
    """The counted form of a token: the lemma of nouns and verbs, the lower-case word otherwise
    (comparatives and numbers keep their form: "larger", "two")."""
    if t.pos in ("NOUN", "PROPN", "VERB", "AUX"):
        return (t.lemma or t.text).lower()
    return t.lower


def _prep_chain(toks: tuple[Tok, ...], pobj: int) -> tuple[int, int, str]:
    """For the object of a preposition: the first token of the (multi-word) preposition, the token
    after its last word, and its text ("on top of", "in front of", "next to", "to the left of")."""
    prep = toks[pobj].head
    end = prep + 1
    while True:
        up = toks[toks[prep].head]
        if up.dep == "pobj" and up.lower in RELATIONAL_NOUNS and toks[up.head].dep == "prep" and up.head < prep:
            prep = up.head
        elif up.dep in ("advmod", "acomp", "amod") and up.pos in ("ADV", "ADJ") and up.i < prep:
            prep = up.i
        else:
            break
    words = [toks[k].lower for k in range(prep, end) if toks[k].dep != "det"]
    return prep, end, " ".join(words)


def _content(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...], i: int) -> int:
    """The noun that names the object: the "of" complement of a quantity noun ("a group of trees"
    -> "trees"), else ``i`` itself."""
    if toks[i].lower not in QUANTITY_NOUNS:
        return i
    g = of_object(toks, children, i)
    return i if g is None else g


def _subject(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...], verb: int) -> int:
    """The nominal subject of ``verb`` (a relative "that" / "who" stands for the noun it follows);
    -1 when there is none."""
    for c in children[verb]:
        if toks[c].dep in ("nsubj", "nsubjpass"):
            if toks[c].pos in _NOUN_POS:
                return c
            if toks[c].lower in _RELATIVE and toks[verb].dep == "relcl" and toks[toks[verb].head].pos in _NOUN_POS:
                return toks[verb].head
            return -1
    return -1


def dep_pairs(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...]) -> tuple[DepPair, ...]:
    """The dependency pairs of a parse (see the module docstring); same order for the same parse.

    A quantity noun stands aside for its complement ("a group of trees" counts as "tree")."""
    raw = _raw_pairs(toks, children)
    out: list[DepPair] = []
    for p in raw:
        h = _content(toks, children, p.h) if p.h >= 0 else -1
        d = _content(toks, children, p.d)
        if h == d:
            continue
        out.append(DepPair(p.rel, h, d, p.via, p.via_end) if (h != p.h or d != p.d) else p)
    return tuple(out)


def _raw_pairs(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...]) -> list[DepPair]:
    out: list[DepPair] = []
    for t in toks:
        dep = t.dep
        pos = t.pos
        if dep == "conj" and pos in _NOUN_POS and t.head != t.i:
            # a coordinated noun has its first conjunct's relation ("with cheese and a pepper")
            first = toks[t.head]
            if first.dep in ("nsubj", "nsubjpass", "dobj", "pobj") and first.pos in _NOUN_POS:
                out.extend(DepPair(p.rel, p.h, t.i, p.via, p.via_end) for p in _raw_pairs_of(toks, children, first))
            continue
        out.extend(_raw_pairs_of(toks, children, t))
    return out


def _raw_pairs_of(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...], t: Tok) -> list[DepPair]:
    """The pairs in which token ``t`` is the dependent (the root pair: the main noun)."""
    out: list[DepPair] = []
    dep = t.dep
    pos = t.pos
    if dep == "ROOT":
        if pos in _NOUN_POS:  # a headline caption: the noun it is about ("A man on a horse")
            out.append(DepPair("root", -1, t.i, -1, -1))
        else:
            subj = _subject(toks, children, t.i)
            if subj >= 0:  # the main clause's subject
                out.append(DepPair("root", -1, subj, -1, -1))
    elif dep in ("nsubj", "nsubjpass"):
        if pos in _NOUN_POS:
            verb = toks[t.head]
            if verb.pos in ("VERB", "AUX") and verb.lemma not in _COPULA and verb.i != t.i:
                out.append(DepPair("subj" if dep == "nsubj" else "obj", verb.i, t.i, -1, -1))
    elif dep in ("acl", "relcl"):
        head = toks[t.head]
        if pos == "VERB" and head.pos in _NOUN_POS and t.head != t.i:
            if dep == "acl":
                out.append(DepPair("obj" if t.tag == "VBN" else "subj", t.i, head.i, -1, -1))
            else:
                rel_subj = next((toks[c].dep for c in children[t.i] if toks[c].lower in _RELATIVE), "")
                if rel_subj in ("nsubj", "nsubjpass"):  # "a man who rides", "a car that is parked"
                    out.append(DepPair("subj" if rel_subj == "nsubj" else "obj", t.i, head.i, -1, -1))
    elif dep == "dobj":
        if pos in _NOUN_POS and toks[t.head].pos in ("VERB", "AUX") and t.head != t.i:
            out.append(DepPair("obj", t.head, t.i, -1, -1))
    elif dep == "pobj":
        if pos not in _NOUN_POS or t.lower in POSITION_NOUNS:
            return out
        if t.lower in RELATIONAL_NOUNS and any(toks[c].lower == "of" for c in children[t.i]):
            return out  # "on top of": part of the preposition, not its object
        start, end, rel = _prep_chain(toks, t.i)
        gov = toks[start].head
        g = toks[gov]
        if gov == start:
            return out
        if g.lemma in _COPULA:  # "a cat is on a bed": the subject is the head
            subj = _subject(toks, children, gov)
            if subj < 0:
                return out
            gov = subj
        elif g.pos not in ("NOUN", "PROPN", "VERB", "ADJ"):
            return out
        out.append(DepPair("p:" + rel, gov, t.i, start, end))
    elif dep == "amod" or dep == "acomp" or (dep == "conj" and toks[t.head].dep == "amod"):
        if pos not in ("ADJ", "VERB"):
            return out
        if dep == "acomp":
            subj = _subject(toks, children, t.head)
            if subj >= 0:
                out.append(DepPair("mod", subj, t.i, -1, -1))
            return out
        noun = t.head if dep == "amod" else toks[t.head].head
        if toks[noun].pos in _NOUN_POS and noun != t.i:
            out.append(DepPair("mod", noun, t.i, -1, -1))
    elif dep == "compound":
        if pos in _NOUN_POS and toks[t.head].pos in _NOUN_POS and t.head != t.i:
            out.append(DepPair("cmp", t.head, t.i, -1, -1))
    elif dep == "nummod":
        if toks[t.head].pos in _NOUN_POS and t.head != t.i:
            out.append(DepPair("num", t.head, t.i, -1, -1))
    return out


# --------------------------------------------------------------------------- what an edit changes


def pair_key(p: DepPair, lemmas: tuple[str, ...]) -> PairKey:
    """The counted key of a pair of a parse whose tokens' counted forms are ``lemmas``."""
    return (p.rel, lemmas[p.h] if p.h >= 0 else "", lemmas[p.d])


def exchange_pairs(
    pairs: tuple[DepPair, ...],
    toks: tuple[Tok, ...],
    children: tuple[tuple[int, ...], ...],
    lemmas: tuple[str, ...],
    a: tuple[int, int],
    b: tuple[int, int],
) -> tuple[tuple[PairKey, ...], tuple[PairKey, ...]]:
    """The pairs removed and created when token spans ``a`` and ``b`` change places.

    Pairs inside one span travel with it unchanged. A pair that crosses a span's border at one of
    its roots (tokens whose head lies outside the span, or the complement a quantity noun stands
    for) is re-made with the other span's roots in that place: exchanging "a cat" and "a bed"
    around "sitting on" turns subj(sit, cat) into subj(sit, bed) and p:on(sit, bed) into
    p:on(sit, cat).
    """
    ra = _roots(toks, children, a)
    rb = _roots(toks, children, b)
    roots_a = [lemmas[i] for i in ra]
    roots_b = [lemmas[i] for i in rb]
    a0, a1 = a
    b0, b1 = b
    old: list[PairKey] = []
    new: list[PairKey] = []
    for p in pairs:
        h, d = p.h, p.d
        ha, hb = a0 <= h < a1, b0 <= h < b1
        da, db = a0 <= d < a1, b0 <= d < b1
        if (ha and da) or (hb and db) or not (ha or hb or da or db):
            continue
        hs = _side(h, ha, hb, ra, rb, roots_a, roots_b, lemmas)
        ds = _side(d, da, db, ra, rb, roots_a, roots_b, lemmas)
        if hs is None or ds is None:
            continue
        old.append(pair_key(p, lemmas))
        for hl in hs:
            for dl in ds:
                k = (p.rel, hl, dl)
                if k not in new:
                    new.append(k)
    return tuple(old), tuple(new)


def _roots(toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...], span: tuple[int, int]) -> list[int]:
    lo, hi = span
    out = []
    for i in range(lo, hi):
        if not lo <= toks[i].head < hi or toks[i].head == i:
            c = _content(toks, children, i)
            out.append(c if lo <= c < hi else i)
    return out


def _side(
    i: int,
    in_a: bool,
    in_b: bool,
    ra: list[int],
    rb: list[int],
    roots_a: list[str],
    roots_b: list[str],
    lemmas: tuple[str, ...],
) -> list[str] | None:
    """The lemmas at token ``i``'s place after the exchange (None: a token inside a span that is not
    one of its roots, whose pair is left out of the score)."""
    if not in_a and not in_b:
        return [lemmas[i] if i >= 0 else ""]
    if in_a:
        return roots_b if i in ra else None
    return roots_a if i in rb else None


def relabel_pairs(
    pairs: tuple[DepPair, ...],
    lemmas: tuple[str, ...],
    subst: Mapping[int, str],
    via: tuple[int, int] = (-1, -1),
    old_rel: str = "",
    new_rel: str = "",
) -> tuple[tuple[PairKey, ...], tuple[PairKey, ...]]:
    """The pairs removed and created when tokens get new lemmas (``subst``: token -> lemma) and/or
    the words ``old_rel`` of a preposition over tokens ``via`` become ``new_rel`` ("on" -> "under",
    "left" -> "right" in "to the left of")."""
    old: list[PairKey] = []
    new: list[PairKey] = []
    v0, v1 = via
    for p in pairs:
        relabel = v0 >= 0 and p.via >= 0 and p.via <= v0 < p.via_end
        if not (relabel or p.h in subst or p.d in subst):
            continue
        old.append(pair_key(p, lemmas))
        rel = p.rel
        if relabel:
            words = rel[2:]
            rel = "p:" + (words.replace(old_rel, new_rel, 1) if old_rel and old_rel in words else new_rel)
        new.append(
            (
                rel,
                subst.get(p.h, lemmas[p.h]) if p.h >= 0 else "",
                subst.get(p.d, lemmas[p.d]),
            )
        )
    return tuple(old), tuple(new)


# --------------------------------------------------------------------------- counting


def count_pairs(keys: Iterable[PairKey], into: Counter | None = None) -> Counter:
    """Add pair keys to a counter (the corpus pass calls it once per parsed caption's pairs)."""
    counts: Counter = Counter() if into is None else into
    counts.update(keys)
    return counts


class PairTables(NamedTuple):
    """Pair counts of the corpus sample, with the class-level counts of the back-off, compiled once
    (in the parent process) and read by every worker."""

    pairs: dict[PairKey, int]
    #: (relation, head class, dependent class) counts
    class_pairs: dict[PairKey, int]
    #: (relation, head) / (relation, dependent) counts of words and of their classes
    head_word: dict[tuple[str, str], int]
    dep_word: dict[tuple[str, str], int]
    head_class: dict[tuple[str, str], int]
    dep_class: dict[tuple[str, str], int]
    #: word -> back-off class of a noun / of a modifier ("animal", "m:colour"); others are their own class
    noun_class: dict[str, str]
    modifier_class: dict[str, str]
    #: captions counted
    captions: int


#: weight of the class back-off's expected count, and the count every pair starts from
BACKOFF_WEIGHT = 1.0
PRIOR_COUNT = 0.5
#: entries of each of a :class:`Scorer`'s memos before it starts afresh: a worker scores the edits
#: of every caption it is given, so an unbounded memo grows with the input's vocabulary
MEMO_LIMIT = 1 << 16
_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def word_class(word: str, modifier: bool, noun_class: Mapping[str, str], modifier_class: Mapping[str, str]) -> str:
    """The back-off class of a word in a pair: a modifier's type, a noun's semantic class, or the
    word itself (verbs, prepositions' heads the lexicon does not class)."""
    if modifier:
        c = modifier_class.get(word)
        if c is not None:
            return c
    c = noun_class.get(word)
    if c is not None:
        return c
    return "w:" + word


def _is_modifier(rel: str) -> bool:
    return rel == "mod" or rel == "num"


def compile_pair_tables(
    counts: Mapping[PairKey, int],
    captions: int,
    noun_class: Mapping[str, str],
    modifier_type: Mapping[str, str],
) -> PairTables:
    """Class-level counts and the marginals the estimate needs, from the word-level pair counts."""
    mod_class = {w: "m:" + t for w, t in modifier_type.items()}
    mod_class.update({w: "m:count" for w in _NUMBERS})
    class_pairs: Counter = Counter()
    head_word: Counter = Counter()
    dep_word: Counter = Counter()
    head_class: Counter = Counter()
    dep_class: Counter = Counter()
    for key in sorted(counts):
        n = counts[key]
        rel, h, d = key
        ch = word_class(h, False, noun_class, mod_class)
        cd = word_class(d, _is_modifier(rel), noun_class, mod_class)
        class_pairs[(rel, ch, cd)] += n
        head_word[(rel, h)] += n
        dep_word[(rel, d)] += n
        head_class[(rel, ch)] += n
        dep_class[(rel, cd)] += n
    return PairTables(
        pairs=dict(counts),
        class_pairs=dict(class_pairs),
        head_word=dict(head_word),
        dep_word=dict(dep_word),
        head_class=dict(head_class),
        dep_class=dict(dep_class),
        noun_class=dict(noun_class),
        modifier_class=mod_class,
        captions=captions,
    )


# --------------------------------------------------------------------------- scoring


class Scorer:
    """Smoothed log2 counts of pairs under :class:`PairTables`, memoised per worker (each memo
    bounded by :data:`MEMO_LIMIT` entries).

    The smoothed count of a pair is its own count, plus the count its classes lead one to expect
    (the class pair's count times each word's share of its class in that role), plus a prior:
    ``log2(c(r,h,d) + BACKOFF_WEIGHT * c(r,Ch,Cd) * s(h) * s(d) + PRIOR_COUNT)``. ``logp(key, own)``
    leaves ``own`` occurrences (the scored caption's own) out of the pair's count.
    """

    def __init__(self, tables: PairTables) -> None:
        self.t = tables
        #: key -> (count, expected count from the classes)
        self._memo: dict[PairKey, tuple[int, float]] = {}
        #: key -> its score when the scored caption holds none of it (the common case)
        self._log0: dict[PairKey, float] = {}
        #: word -> its back-off class as a head / as a modifier
        self._head_cls: dict[str, str] = {}
        self._mod_cls: dict[str, str] = {}

    def _class(self, word: str, modifier: bool) -> str:
        memo = self._mod_cls if modifier else self._head_cls
        c = memo.get(word)
        if c is None:
            c = memo[word] = word_class(word, modifier, self.t.noun_class, self.t.modifier_class)
        return c

    def _parts(self, key: PairKey) -> tuple[int, float]:
        got = self._memo.get(key)
        if got is not None:
            return got
        t = self.t
        rel, h, d = key
        ch = self._class(h, False)
        cd = self._class(d, rel == "mod" or rel == "num")
        share_h = (t.head_word.get((rel, h), 0) + 0.5) / (t.head_class.get((rel, ch), 0) + 1.0)
        share_d = (t.dep_word.get((rel, d), 0) + 0.5) / (t.dep_class.get((rel, cd), 0) + 1.0)
        expected = t.class_pairs.get((rel, ch, cd), 0) * share_h * share_d
        got = (t.pairs.get(key, 0), expected)
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = got
        return got

    def logp(self, key: PairKey, own: int = 0) -> float:
        if own == 0:
            v = self._log0.get(key)
            if v is None:
                c, expected = self._parts(key)
                if len(self._log0) >= MEMO_LIMIT:
                    self._log0.clear()
                v = self._log0[key] = math.log2(c + BACKOFF_WEIGHT * expected + PRIOR_COUNT)
            return v
        c, expected = self._parts(key)
        return math.log2(max(c - own, 0) + BACKOFF_WEIGHT * expected + PRIOR_COUNT)


def plausibility(
    scorer: Scorer, old: tuple[PairKey, ...], new: tuple[PairKey, ...], own: Mapping[PairKey, int] | None
) -> float:
    """Mean smoothed log2 count of the created pairs minus that of the removed pairs (0.0 when the
    edit changes no counted pair); ``own``: the positive's pair counts, when it was in the sample."""
    if not old and not new:
        return 0.0
    s_new = 0.0
    for k in new:
        s_new += scorer.logp(k, own.get(k, 0) if own is not None else 0)
    s_old = 0.0
    for k in old:
        s_old += scorer.logp(k, own.get(k, 0) if own is not None else 0)
    return (s_new / len(new) if new else 0.0) - (s_old / len(old) if old else 0.0)
