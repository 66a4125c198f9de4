"""Replace families: one relation, attribute or object is replaced by a contrasting one of its kind.

- ``relation_replace``: a spatial relation ("on" -> "under", "in front of" -> "behind", "left" ->
  "right") or an action verb, keeping its inflection ("is sitting" -> "is standing", "rode" -> "pushed").
- ``attribute_replace``: colour, size, material, age, state, count ("an open refrigerator" -> "a closed
  refrigerator", "two dogs" -> "three dogs").
- ``object_replace``: an object noun by a sibling of the same pool ("dog" -> "cat"), keeping number,
  and flipping the pronouns that refer to a person whose gender changes ("boy ... his" -> "girl ... her").

Everything a rule looks up is compiled once, in the parent process, into :class:`ReplaceTables`
(plain dicts and tuples, cheap to pickle to workers): the rules themselves only read the token table
and those dicts, because they must cost little next to the parse.

Replacements are matched by frequency (docs/negative-quality.md): a word that turns up as a
replacement far more often than the positives use it gives its negatives away to a learned text-only
detector, and a word never used as one gives its positives away. So a slot (a replaced word) does not
always propose its most frequent candidates: it draws them, each with a probability proportional to
how often the input corpus uses it (:func:`draw`), from a hash of the seed, the caption and the slot.
Each replacement's share of the negatives then tracks its share of the positives' words, and the
choice is a pure function of the caption, the seed and the tables (never of worker count, shards or
order). The plausibility score then keeps the ``k`` that best fit their context.
"""

from __future__ import annotations

import logging
import math
import re
import time
import zlib
from collections import Counter
from typing import TYPE_CHECKING, Any, Hashable, Iterable, NamedTuple, Sequence, TypeVar

from tqdm import tqdm

from pipeline.lexicon import VERB_FORM_TAGS, Lexicon, load_lexicon
from pipeline.records import Edit, Replacement
from pipeline.rules.families import ParsedCaption, Resources, register
from pipeline.rules.grammar import match_case, pluralize, singularize
from pipeline.rules.plausibility import relabel_pairs
from pipeline.rules.syntax import POSITION_NOUNS, RELATIONAL_NOUNS, NounPhrase, Tok

if TYPE_CHECKING:
    from pipeline.config import GenerateConfig

log = logging.getLogger(__name__)

#: candidates drawn per replaced word at most (:func:`draw`); selection keeps ``k`` per family and
#: caption, the most plausible first: drawing more than ``k`` lets the plausibility score choose the
#: ones that fit their context (on the 25,010 COCO captions, 5 instead of 3 lowers the n-gram blind
#: check of object_replace by 2.3 points)
MAX_PER_SLOT = 5
#: a caption never yields more edits than this per family
MAX_EDITS = 12

#: the phrases that may say one relation, each with its corpus count: a seeded draw picks one in
#: proportion (:func:`pick_surface`), so "near" replaces "on" as often as captions say "near"
Surfaces = tuple[tuple[str, float], ...]

SG, PL, ONLY, INV = 0, 1, 2, 3  # number of a noun surface form: singular, plural, plural-only, invariant
COUNT, MASS, BOTH = 0, 1, 2  # countability of a noun group

#: Penn tag -> index in a verb's forms; VBN is left out: "a parked car" reads as a state, not an action
_TAG_FORM = {tag: VERB_FORM_TAGS.index(tag) for tag in ("VB", "VBZ", "VBD", "VBG")} | {"VBP": 0}
_SG_DETS = frozenset({"a", "an", "one", "another", "each", "every", "this", "that"})
_MASS_DETS = frozenset({"some", "more", "much", "less", "enough", "no", "any"})
_PL_DETS = frozenset({"these", "those", "many", "several", "few", "both", "various", "numerous", "multiple"})
_PRONOUNS = {
    "male": {"he": ("she", "she"), "him": ("her", "her"), "his": ("her", "hers"), "himself": ("herself", "herself")},
    "female": {"she": ("he", "he"), "her": ("his", "him"), "hers": ("his", "his"), "herself": ("himself", "himself")},
}
_PUNCT = re.compile(r"[^\w\s'-]+")
_CHUNK = 50_000  # captions per counting chunk (bounds memory on large corpora)


class GroupRow(NamedTuple):
    category: str
    pool: str
    generic: bool
    countability: int
    plural_only: bool
    opaque: bool
    #: the members a replacement says, most frequent in the corpus first: the first not in the
    #: caption (those of the group's countability only: "luggage" never says "suitcase")
    words: tuple[str, ...]


class AttrRow(NamedTuple):
    rule: str
    pos: frozenset[str]
    #: noun groups the head must (not) belong to; -1 stands for a noun the lexicon does not know
    for_: frozenset[int] | None
    not_for: frozenset[int]
    #: (words, weight) replacements, most frequent first: the words of one sibling group, most
    #: frequent first, and the weight of the group in the draw (:func:`weight_of`)
    cands: tuple[tuple[tuple[str, ...], float], ...]
    #: head noun group -> the only targets allowed for it
    only: dict[int, frozenset[str]]


class RelRow(NamedTuple):
    adverb: bool
    objects: frozenset[str] | None
    not_objects: frozenset[str]
    #: (phrases of one synonym group with their counts, weight), most frequent first
    cands: tuple[tuple[Surfaces, float], ...]


class VerbRow(NamedTuple):
    forms: tuple[str, ...]
    transitive: bool
    intransitive: bool
    #: (group ids, words) a transitive use accepts as object, or None for any object
    objects: tuple[frozenset[int], frozenset[str]] | None
    cands: tuple[tuple[int, float], ...]  # (verb id, weight), most frequent first
    animate: bool
    #: noun groups its subject may be replaced with, or None for any
    subjects: frozenset[int] | None


class ReplaceTables(NamedTuple):
    """Everything the replace rules look up, precompiled for dictionary access only.

    A NamedTuple, not a frozen dataclass: worker processes receive it pickled, and compiled
    (mypyc) frozen dataclasses cannot be unpickled."""

    noun_single: dict[str, tuple[int, int]]  # surface -> (group id, number)
    noun_multi: dict[str, tuple[tuple[tuple[str, ...], int, int], ...]]  # last word -> (words before, gid, number)
    groups: tuple[GroupRow, ...]
    group_members: tuple[tuple[str, ...], ...]
    #: gid -> ((target gid, weight in a singular slot, weight in a plural slot), ...)
    object_cands: tuple[tuple[tuple[int, float, float], ...], ...]
    gender: dict[str, str]
    attr_words: dict[str, tuple[int, ...]]
    attrs: tuple[AttrRow, ...]
    shade_words: frozenset[str]
    colour_words: frozenset[str]
    numbers: dict[str, tuple[tuple[str, float], ...]]
    rel_first: dict[str, tuple[tuple[tuple[str, ...], int], ...]]  # first word -> ((words, rel id), ...)
    rels: tuple[RelRow, ...]
    sides: dict[str, str]
    relational_nouns: dict[str, str]
    verb_surface: dict[str, tuple[tuple[int, int], ...]]  # surface -> ((form index, verb id), ...)
    #: phrasal verbs: (verb surface, particle) -> ((form index, verb id), ...) ("taking", "off")
    verb_phrasal: dict[tuple[str, str], tuple[tuple[int, int], ...]]
    verb_phrasal_heads: frozenset[str]
    verbs: tuple[VerbRow, ...]
    #: seeds the per-slot draws (:func:`draw`)
    seed: int = 0


# --------------------------------------------------------------------------- corpus counts


def corpus_counts(captions: Iterable[str], phrases: Iterable[str] = ()) -> Counter:
    """Word counts of the captions (lower case, punctuation dropped) plus counts of the given phrases.

    One plain pass, no parser: the counts only rank candidates, so tokenisation details do not
    matter. Words are gathered per chunk of captions and counted in one ``Counter.update`` (a call
    per caption costs more than the counting); a phrase is looked up only where its first word
    occurs, so the cost does not grow with the number of phrases.
    """
    counts: Counter = Counter()
    by_first: dict[str, list[tuple[str, ...]]] = {}
    for p in sorted({p for p in phrases if " " in p}):
        words = tuple(p.split())
        by_first.setdefault(words[0], []).append(words)
    chunk: list[str | None] = []  # words of many captions, None between captions

    def count_chunk() -> None:
        for i, w in enumerate(chunk):
            cands = by_first.get(w)  # type: ignore[arg-type]
            if cands:
                for words in cands:
                    if tuple(chunk[i : i + len(words)]) == words:
                        counts[" ".join(words)] += 1
        counts.update(chunk)
        del counts[None]
        chunk.clear()

    n = 0
    for c in tqdm(captions, desc="count words", unit=" captions", mininterval=2, leave=False, disable=None):
        chunk.extend(_PUNCT.sub(" ", c.lower()).split())
        chunk.append(None)
        n += 1
        if n % _CHUNK == 0:
            count_chunk()
    if chunk:
        count_chunk()
    return counts


K = TypeVar("K", bound=Hashable)


def by_count(items: Iterable[tuple[K, int]]) -> list[tuple[K, int]]:
    """``(key, count)`` pairs, most frequent first (ties keep their order)."""
    listed = list(items)
    return [listed[i] for i in sorted(range(len(listed)), key=lambda i: (-listed[i][1], i))]


def weight_of(count: float) -> float:
    """A candidate's weight in the draw: its corpus count, plus a half so a word the corpus never
    uses is still proposed where nothing else fits."""
    return count + 0.5


def slot_unit(seed: int, text: str, at: int, key: str = "") -> float:
    """A uniform number in [0, 1) that depends only on the seed, the caption, the slot's token and
    ``key`` (a candidate, for the draw of its surface)."""
    return zlib.crc32(f"{seed}|{at}|{key}|{text}".encode()) / 4294967296.0


def pick_surface(surfaces: Surfaces, u: float) -> str:
    """One of the words, with probability proportional to its count (the first when none has one)."""
    total = sum(c for _, c in surfaces)
    if total <= 0:
        return surfaces[0][0]
    x = u * total
    for word, c in surfaces:
        x -= c
        if x < 0:
            return word
    return next(w for w, c in reversed(surfaces) if c > 0)  # rounding: the last one that has a count


def draw(weights: Sequence[float], most: int, u: float) -> list[int]:
    """Which of a slot's candidates to propose (indices, in order).

    Each candidate is proposed with probability proportional to its weight, as many as that allows
    up to ``most``: probability ``w / max(largest weight, sum of weights / most)``, so at least one
    is always proposed and the proposals keep the weights' proportions exactly. Systematic sampling
    from the one uniform ``u`` (:func:`slot_unit`): candidate ``i`` is proposed when some ``u + j``
    (``j`` an integer) falls in its stretch of the cumulated probabilities.
    """
    n = len(weights)
    if n <= 1:
        return list(range(n))
    top = max(weights)
    denom = max(top, sum(weights) / most)
    out: list[int] = []
    lo = 0.0
    for i in range(n):
        hi = lo + weights[i] / denom
        if u + math.ceil(lo - u) < hi:
            out.append(i)
            if len(out) == most:
                break
        lo = hi
    if not out:  # only by rounding: at least one is proposed, the heaviest
        out.append(max(range(n), key=lambda i: weights[i]))
    return out


def _noun_count(counts: Counter, word: str, plural: bool | None = None) -> int:
    """Occurrences of ``word`` in the singular, the plural or both (None); an invariant noun
    ("sheep") counts for both numbers."""
    form = pluralize(word)
    if form == word:
        return counts.get(word, 0)
    sg, pl = counts.get(word, 0), counts.get(form, 0)
    return sg + pl if plural is None else pl if plural else sg


def _member_count(counts: Counter, word: str, members: tuple[str, ...], plural: bool | None = None) -> int:
    """Occurrences of ``word`` on its own: "teddy" inside "teddy bear" does not count as "teddy"."""
    c = _noun_count(counts, word, plural)
    if " " not in word:
        c -= sum(_noun_count(counts, m, plural) for m in members if " " in m and word in m.split())
    return max(c, 0)


# --------------------------------------------------------------------------- compilation


def lexicon_phrases(lex: Lexicon) -> set[str]:
    """Every multi-word term whose corpus count ranks candidates."""
    out: set[str] = set()
    for g in lex.noun_groups:
        for m in g.members:
            out.update((m, pluralize(m)))
    out.update(lex.relations)
    for r in lex.relations.values():
        out.update(r.to)
    for v in lex.verbs.values():
        out.update(v.forms)
    return {p for p in out if " " in p}


class _NounTables(NamedTuple):
    """The noun groups and how a surface form finds its group (the first tables, the others use them)."""

    groups: list[GroupRow]
    members: list[tuple[str, ...]]
    noun_single: dict[str, tuple[int, int]]
    noun_multi: dict[str, list[tuple[tuple[str, ...], int, int]]]
    #: corpus occurrences of each group's members (0 for generic nouns), in the singular and the plural
    group_count: list[tuple[int, int]]


def _noun_tables(lex: Lexicon, counts: Counter) -> _NounTables:
    """Generic nouns first, then every synonym group, each surface form by number."""
    t = _NounTables([], [], {}, {}, [])

    def add_form(surface: str, gid: int, number: int) -> None:
        words = surface.split()
        if len(words) == 1:
            t.noun_single[surface] = (gid, number)
        else:
            t.noun_multi.setdefault(words[-1], []).append((tuple(words[:-1]), gid, number))

    def kind(m: str) -> tuple[int, bool]:
        return (MASS if m in lex.mass_nouns else BOTH if m in lex.count_or_mass else COUNT), m in lex.plural_only

    for word, cat in lex.generic_nouns.items():
        gid = len(t.groups)
        t.groups.append(GroupRow(cat, cat, True, COUNT, False, True, (word,)))
        t.members.append((word,))
        t.group_count.append((0, 0))
        add_form(word, gid, SG)
        if pluralize(word) != word:
            add_form(pluralize(word), gid, PL)
    only_forms: list[tuple[str, int]] = []
    for g in lex.noun_groups:
        gid = len(t.groups)
        mc = {m: _member_count(counts, m, g.members) for m in g.members}
        ranked = sorted(g.members, key=lambda m: -mc[m])  # stable: ties keep lexicon order
        countability, plural_only = kind(g.members[0])
        words = tuple(m for m in ranked if kind(m) == (countability, plural_only))
        t.groups.append(GroupRow(g.category, g.pool, False, countability, plural_only,
                                 g.category not in lex.transparent_compounds, words))
        t.members.append(g.members)
        t.group_count.append((sum(_member_count(counts, m, g.members, False) for m in g.members),
                              sum(_member_count(counts, m, g.members, True) for m in g.members)))
        for m in g.members:
            if m in lex.plural_only:
                only_forms.append((m, gid))
                continue
            p = pluralize(m)
            add_form(m, gid, INV if p == m else SG)
            if p != m:
                add_form(p, gid, PL)
    for m, gid in only_forms:  # "glasses" is the eyewear, not two drinking glasses
        add_form(m, gid, ONLY)
    return t


def _object_candidates(lex: Lexicon, nouns: _NounTables) -> tuple[tuple[tuple[int, float, float], ...], ...]:
    """Per group, the other groups of its pool it may become (never a synonym, a hypernym or a
    hyponym), most frequent first, each weighted by its corpus count (all its members') in the
    singular and in the plural: a plural slot draws by plural counts ("dogs" -> "sheep" or "zebras"
    rather than "cats", which captions seldom count)."""
    by_pool: dict[str, list[int]] = {}
    for gid, row in enumerate(nouns.groups):
        if not row.generic:
            by_pool.setdefault(row.pool, []).append(gid)
    object_cands: list[tuple[tuple[int, float, float], ...]] = []
    for gid, row in enumerate(nouns.groups):
        if row.generic:
            object_cands.append(())
            continue
        mine = set(nouns.members[gid])
        found = []
        for other in by_pool[row.pool]:
            if other == gid or mine & set(nouns.members[other]):
                continue
            if any(lex.related_nouns(a, b) for a in mine for b in nouns.members[other]):
                continue
            found.append((other, sum(nouns.group_count[other])))
        object_cands.append(tuple((g, weight_of(nouns.group_count[g][0]), weight_of(nouns.group_count[g][1]))
                                  for g, _ in by_count(found)))
    return tuple(object_cands)


class _NounSelector:
    """Resolves the lexicon's noun selectors (a category, a ``category.pool`` or a noun) to group
    ids and words."""

    def __init__(self, lex: Lexicon, nouns: _NounTables) -> None:
        self.nouns = nouns
        self.pools = {g.pool for g in lex.noun_groups}
        self.cats = {g.category for g in lex.noun_groups} | set(lex.generic_nouns.values())

    def __call__(self, names: Iterable[str]) -> tuple[frozenset[int], frozenset[str]]:
        groups = self.nouns.groups
        gids: set[int] = set()
        words: set[str] = set()
        for name in names:
            if name in self.pools:
                gids.update(i for i, r in enumerate(groups) if r.pool == name)
            elif name in self.cats:
                gids.update(i for i, r in enumerate(groups) if r.category == name)
            else:
                hit = self.nouns.noun_single.get(name)
                if hit is None and " " in name:
                    words_ = name.split()
                    hit = next(
                        ((g, n) for w, g, n in self.nouns.noun_multi.get(words_[-1], ()) if list(w) == words_[:-1]), None
                    )
                if hit is not None:
                    gids.add(hit[0])
                words.add(name)
        return frozenset(gids), frozenset(words)


def _attribute_tables(
    lex: Lexicon, counts: Counter, resolve: _NounSelector
) -> tuple[dict[str, tuple[int, ...]], tuple[AttrRow, ...], frozenset[str]]:
    """Per adjective, its rows (contrasts, most frequent first, the nouns it may describe); and the
    colour words (a shade before one belongs to it). A contrast is another sibling group of the
    lexicon, weighted by the corpus count of all its words and said by its most frequent one the
    noun allows ("gold" / "golden": a dog is only "golden"), or an explicit contrast word."""
    attrs: list[AttrRow] = []
    attr_words: dict[str, list[int]] = {}
    colour_words: set[str] = set()
    for acat in lex.attributes:
        for_ = resolve(acat.for_)[0] if acat.for_ is not None else None
        not_for = resolve(acat.not_for)[0]
        only: dict[int, frozenset[str]] = {}
        for sel, allowed in acat.only_targets_for.items():
            for sel_gid in resolve([sel])[0]:
                only[sel_gid] = allowed
        entries: dict[str, tuple[tuple[str, ...], ...]] = {}
        if acat.groups:
            by_freq = [tuple(w for w, _ in by_count((w, counts.get(w, 0)) for w in ws)) for ws in acat.groups]
            for gi, ws in enumerate(acat.groups):
                for w in ws:
                    entries[w] = tuple(by_freq[o] for o in range(len(acat.groups)) if o != gi)
            if acat.rule == "colour":
                colour_words.update(w for ws in acat.groups for w in ws)
        for w, targets in acat.contrasts.items():
            entries[w] = tuple((x,) for x in targets)
        for w, groups in entries.items():
            cands = by_count((g, sum(counts.get(x, 0) for x in g)) for g in groups)
            attr_words.setdefault(w, []).append(len(attrs))
            attrs.append(AttrRow(acat.rule, acat.pos, for_, not_for, tuple((g, weight_of(c)) for g, c in cands), only))
    return {k: tuple(v) for k, v in attr_words.items()}, tuple(attrs), frozenset(colour_words)


def _number_table(lex: Lexicon, counts: Counter) -> dict[str, tuple[tuple[str, float], ...]]:
    """Per number word, its neighbours ("two" -> "three", "one" when listed), more frequent first,
    weighted by their counts."""
    numbers: dict[str, tuple[tuple[str, float], ...]] = {}
    for n, w in enumerate(lex.numbers):
        near = [lex.numbers[x] for x in (n - 1, n + 1) if 0 <= x < len(lex.numbers)]
        numbers[w] = tuple((t, weight_of(c)) for t, c in by_count((t, counts.get(t, 0)) for t in near))
    return numbers


def _relation_tables(
    lex: Lexicon, counts: Counter
) -> tuple[dict[str, tuple[tuple[tuple[str, ...], int], ...]], tuple[RelRow, ...]]:
    """Spatial relations by first word (longest phrase first), each with its contrasts, most frequent
    first. A contrast is a synonym group of the phrases the lexicon lists ("under" and "underneath"
    would make near-duplicate negatives), weighted by their corpus counts together; a slot that
    draws it says one of its phrases, drawn by count too."""

    def rel_synonyms(a: str, b: str) -> bool:
        return a == b or any(a in s and b in s for s in lex.relation_synonyms)

    def resolve_set(names: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        for n in names:
            out |= lex.noun_sets[n[1:]] if n.startswith("@") else {n}
        return frozenset(out)

    rels: list[RelRow] = []
    rel_first: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    for phrase, entry in lex.relations.items():
        groups: list[list[tuple[str, float]]] = []
        for t, c in by_count((t, counts.get(t, 0)) for t in entry.to if not rel_synonyms(phrase, t)):
            same = next((g for g in groups if rel_synonyms(t, g[0][0])), None)
            if same is None:
                groups.append([(t, float(c))])
            else:
                same.append((t, float(c)))
        cands = by_count((tuple(g), int(sum(c for _, c in g))) for g in groups)
        rid = len(rels)
        rels.append(
            RelRow(
                entry.adverb,
                resolve_set(entry.objects) if entry.objects is not None else None,
                resolve_set(entry.not_objects),
                tuple((g, weight_of(c)) for g, c in cands),
            )
        )
        words = tuple(phrase.split())
        rel_first.setdefault(words[0], []).append((words, rid))
    return {k: tuple(sorted(v, key=lambda x: -len(x[0]))) for k, v in rel_first.items()}, tuple(rels)


class _VerbTables(NamedTuple):
    verbs: tuple[VerbRow, ...]
    surface: dict[str, tuple[tuple[int, int], ...]]
    phrasal: dict[tuple[str, str], tuple[tuple[int, int], ...]]


def _verb_tables(lex: Lexicon, counts: Counter, resolve: _NounSelector) -> _VerbTables:
    """Verbs with their contrasts (most frequent first, weighted by the counts of their forms; one per
    synonym group: "holding" and "carrying" are one contrast) and the surface forms that find them."""
    vids = {lemma: n for n, lemma in enumerate(lex.verbs)}
    lex_names = list(lex.verbs)

    def verb_synonyms(a: str, b: str) -> bool:
        return a == b or any(a in s and b in s for s in lex.verb_synonyms)

    verbs: list[VerbRow] = []
    verb_surface: dict[str, list[tuple[int, int]]] = {}
    verb_phrasal: dict[tuple[str, str], list[tuple[int, int]]] = {}
    uses = [sum(counts.get(f, 0) for f in set(v.forms)) for v in lex.verbs.values()]
    for lemma, v in lex.verbs.items():
        vid = vids[lemma]
        to: list[tuple[int, float]] = []
        for t, c in by_count((vids[t], uses[vids[t]]) for t in v.to):
            if verb_synonyms(lemma, lex_names[t]) or any(verb_synonyms(lex_names[t], lex_names[u]) for u, _ in to):
                continue
            to.append((t, weight_of(c)))
        verbs.append(
            VerbRow(
                v.forms,
                v.transitive,
                v.intransitive,
                resolve(v.objects) if v.objects is not None else None,
                tuple(to),
                v.animate,
                resolve(v.subjects)[0] if v.subjects is not None else None,
            )
        )
        for fi, form in enumerate(v.forms):
            parts = form.split(" ")
            table: dict[Any, list[tuple[int, int]]] = verb_surface if len(parts) == 1 else verb_phrasal  # type: ignore[assignment]
            key = parts[0] if len(parts) == 1 else (parts[0], parts[1])
            if len(parts) <= 2 and (fi, vid) not in table.get(key, []):
                table.setdefault(key, []).append((fi, vid))
    return _VerbTables(
        tuple(verbs),
        {k: tuple(v) for k, v in verb_surface.items()},
        {k: tuple(v) for k, v in verb_phrasal.items()},
    )


def compile_tables(lex: Lexicon, counts: Counter | None = None, seed: int = 0) -> ReplaceTables:
    """Turn the lexicon and corpus counts into the lookup tables the rules read, one table at a time;
    ``seed`` seeds the rules' draws among candidates."""
    counts = counts if counts is not None else Counter()
    nouns = _noun_tables(lex, counts)
    resolve = _NounSelector(lex, nouns)
    attr_words, attrs, colour_words = _attribute_tables(lex, counts, resolve)
    rel_first, rels = _relation_tables(lex, counts)
    verbs = _verb_tables(lex, counts, resolve)
    return ReplaceTables(
        noun_single=nouns.noun_single,
        noun_multi={k: tuple(sorted(v, key=lambda x: -len(x[0]))) for k, v in nouns.noun_multi.items()},
        groups=tuple(nouns.groups),
        group_members=tuple(nouns.members),
        object_cands=_object_candidates(lex, nouns),
        gender=dict(lex.gender),
        attr_words=attr_words,
        attrs=attrs,
        shade_words=lex.shade_words,
        colour_words=colour_words,
        numbers=_number_table(lex, counts),
        rel_first=rel_first,
        rels=rels,
        sides=dict(lex.sides),
        relational_nouns=dict(lex.relational_nouns),
        verb_surface=verbs.surface,
        verb_phrasal=verbs.phrasal,
        verb_phrasal_heads=frozenset(k[0] for k in verbs.phrasal),
        verbs=verbs.verbs,
        seed=seed,
    )


def build_resources(cfg: "GenerateConfig", captions: list[str]) -> Resources:
    """Lexicons (plus WordNet when enabled and installed) ranked by the input corpus, compiled once."""
    from pipeline.lexicon import extend_with_wordnet, wordnet_available

    t0 = time.perf_counter()
    lex = load_lexicon()
    counts = corpus_counts(captions, lexicon_phrases(lex))
    if cfg.use_wordnet and wordnet_available():
        try:
            extended = extend_with_wordnet(lex, counts)
        except Exception as e:  # damaged WordNet data must not stop a run: the curated lexicon suffices
            log.warning("WordNet extension failed (%s: %s); using the curated lexicon only", type(e).__name__, e)
        else:
            lex = extended
            counts = corpus_counts(captions, lexicon_phrases(lex))
    tables = compile_tables(lex, counts, cfg.seed)
    log.info(
        "replace lexicon: %d noun groups, %d attribute words, %d relations, %d verbs ranked on %d captions (%.1fs)",
        sum(1 for g in tables.groups if not g.generic), len(tables.attr_words), len(tables.rels),
        len(tables.verbs), len(captions), time.perf_counter() - t0,
    )
    return Resources({"replace": tables})


_DEFAULT: list[ReplaceTables] = []


def tables_of(res: Resources) -> ReplaceTables:
    """The compiled tables; without corpus counts (a bare ``Resources()``) the lexicon order ranks."""
    t = res.data.get("replace")
    if t is not None:
        return t
    if not _DEFAULT:
        _DEFAULT.append(compile_tables(load_lexicon()))
    return _DEFAULT[0]


# --------------------------------------------------------------------------- shared helpers

Toks = tuple[Tok, ...]


def _lookup(toks: Toks, i: int, lo: int, t: ReplaceTables) -> tuple[int, int, int] | None:
    """The lexicon noun ending at token ``i`` (not starting before ``lo``): ``(start, gid, number)``."""
    low = toks[i].lower
    multi = t.noun_multi.get(low)
    if multi:
        for words, gid, number in multi:
            s = i - len(words)
            if s >= lo and all(toks[s + k].lower == w for k, w in enumerate(words)):
                return s, gid, number
    hit = t.noun_single.get(low)
    if hit is not None:
        return i, hit[0], hit[1]
    return None


def _case(tok: Tok, text: str) -> str:
    """Mid-sentence capitals of the replaced word carry over; the sentence start is left to realize."""
    return match_case(tok.text, text) if tok.i > 0 else text


def _span_lower(toks: Toks, start: int, end: int) -> str:
    return " ".join(toks[k].lower for k in range(start, end))


# --------------------------------------------------------------------------- relation_replace


@register("relation_replace")
def relation_replace(parsed: ParsedCaption, res: Resources) -> list[Edit]:
    t = tables_of(res)
    toks, children = parsed.toks, parsed.children
    n = len(toks)
    edits: list[Edit] = []
    heads = None
    i = 0
    while i < n and len(edits) < MAX_EDITS:
        tok = toks[i]
        low = tok.lower
        pos = tok.pos
        if pos == "VERB":
            if (low in t.verb_surface or low in t.verb_phrasal_heads) and tok.tag in _TAG_FORM:
                if heads is None:
                    heads = {p.head: p for p in parsed.phrases}
                _verb_edits(parsed, tok, t, heads, edits)
            i += 1
            continue
        entries = t.rel_first.get(low)
        if entries is not None and pos in ("ADP", "ADV", "ADJ", "SCONJ"):
            used = _relation_edits(parsed.text, toks, children, i, entries, t, edits)
            if used:
                i += used
                continue
        if low in t.sides and pos in ("NOUN", "ADJ"):
            edits.append(_spatial_word(tok, t.sides[low]))
        elif low in t.relational_nouns and pos == "NOUN" and any(
            toks[c].lower == "of" and toks[c].dep == "prep" for c in children[i]
        ):
            edits.append(_spatial_word(tok, t.relational_nouns[low]))
        i += 1
    return _with_pairs(parsed, edits, t)


def _with_pairs(parsed: ParsedCaption, edits: list[Edit], t: ReplaceTables) -> list[Edit]:
    """The edits with the dependency pairs they change (for the plausibility score): a replaced
    preposition relabels the pairs it joins, a replaced verb, adjective, number or noun gives its
    pairs a new lemma."""
    out = []
    deps, lemmas = parsed.deps, parsed.lemmas
    for e in edits:
        r = e.replacements[0]
        if e.family == "relation_replace" and e.rule == "spatial":
            old, new = relabel_pairs(deps, lemmas, {}, (r.start, r.end), e.items[0], e.items[1])
        else:
            word = e.items[1].split(" ")[-1] if e.items[1] else ""
            if e.family == "relation_replace":
                hits = t.verb_surface.get(e.items[1].split(" ")[0], ())
                word = t.verbs[hits[0][1]].forms[0].split(" ")[0] if hits else word
                at = r.start
            elif e.family == "object_replace":
                word = singularize(word)
                at = r.end - 1
            else:
                at = r.end - 1
            old, new = relabel_pairs(deps, lemmas, {at: word})
        out.append(e._replace(pairs_old=old, pairs_new=new))
    return out


def _spatial_word(tok: Tok, new: str) -> Edit:
    """One word with its opposite: "left" -> "right", "top (of)" -> "bottom (of)"."""
    return Edit(
        family="relation_replace",
        rule="spatial",
        replacements=(Replacement(tok.i, tok.i + 1, _case(tok, new)),),
        items=(tok.lower, new),
    )


def _relation_edits(
    caption: str,
    toks: Toks,
    children: tuple[tuple[int, ...], ...],
    i: int,
    entries: tuple[tuple[tuple[str, ...], int], ...],
    t: ReplaceTables,
    edits: list[Edit],
) -> int:
    """Edits for the relation starting at token ``i``; returns how many tokens it spans (0: none)."""
    n = len(toks)
    for words, rid in entries:
        size = len(words)
        if i + size > n or any(toks[i + k].lower != w for k, w in enumerate(words[1:], 1)):
            continue
        row = t.rels[rid]
        last = i + size - 1
        obj = next((c for c in children[last] if toks[c].dep == "pobj"), None)
        if obj is None:
            if not (row.adverb and size == 1 and toks[i].dep in ("advmod", "prep", "npadvmod")):
                continue
        else:
            o = toks[obj]
            if size == 1 and (o.lower in RELATIONAL_NOUNS or o.lower in POSITION_NOUNS):
                return 0  # "on the side of": the relational noun is the relation
            if o.pos == "PROPN":
                return size  # "on a Wii", "in New York": names carry their own preposition
            names = {o.lower, singularize(o.lower)}
            if obj > 0 and toks[obj - 1].dep == "compound":
                names |= {f"{toks[obj - 1].lower} {x}" for x in tuple(names)}
            if row.objects is not None and not (names & row.objects):
                return size
            if names & row.not_objects:
                return size
        phrase = " ".join(words)
        for c in draw([w for _, w in row.cands], MAX_PER_SLOT, slot_unit(t.seed, caption, i)):
            surfaces = row.cands[c][0]
            text = pick_surface(surfaces, slot_unit(t.seed, caption, i, surfaces[0][0]))
            edits.append(
                Edit(
                    family="relation_replace",
                    rule="spatial",
                    replacements=(Replacement(i, i + size, _case(toks[i], text)),),
                    items=(phrase, text),
                )
            )
        return size
    return 0


def _verb_edits(parsed: ParsedCaption, tok: Tok, t: ReplaceTables, heads: dict[int, NounPhrase], edits: list[Edit]) -> None:
    toks, children = parsed.toks, parsed.children
    form = _TAG_FORM[tok.tag]
    obj = None
    prt = None
    for c in children[tok.i]:
        dep = toks[c].dep
        if dep == "prt":
            prt = c
        elif dep == "dobj" and obj is None:
            obj = c
    if prt is None:
        hits = t.verb_surface.get(tok.lower, ())
        end = tok.i + 1
    elif prt == tok.i + 1:  # "taking off": the particle is part of the verb
        hits = t.verb_phrasal.get((tok.lower, toks[prt].lower), ())
        end = prt + 1
    else:
        hits = ()
    hit = next((h for h in hits if h[0] == form), None)
    if hit is None:
        # unknown phrasal use ("sitting down", "picking up"), or a spelling that is another form
        # than the tag says (a tagging error): leave it alone
        return
    src = t.verbs[hit[1]]
    if not (src.transitive if obj is not None else src.intransitive):
        return  # a use the lexicon does not describe ("spectators watch skiers fly by")
    if src.animate and not _animate_subject(parsed, tok.i, t, heads):
        return  # "a microwave sitting on a counter" is placed, not seated
    obj_gid = -1
    obj_word = ""
    if obj is not None:
        phrase = heads.get(obj)
        noun = phrase.noun if phrase is not None else obj
        obj_word = singularize(toks[noun].lower)
        found = _lookup(toks, noun, tok.i + 1, t)
        if found is not None:
            obj_gid = found[1]
    fits: list[tuple[VerbRow, float]] = []
    for vid, weight in src.cands:
        row = t.verbs[vid]
        if obj is not None:
            if not row.transitive:
                continue
            if row.objects is not None and obj_gid not in row.objects[0] and obj_word not in row.objects[1]:
                continue
        elif not row.intransitive:
            continue
        fits.append((row, weight))
    for c in draw([w for _, w in fits], MAX_PER_SLOT, slot_unit(t.seed, parsed.text, tok.i)):
        text = fits[c][0].forms[form]
        edits.append(
            Edit(
                family="relation_replace",
                rule="action",
                replacements=(Replacement(tok.i, end, _case(tok, text)),),
                items=(_span_lower(toks, tok.i, end), text),
            )
        )


_ANIMATE_PRONOUNS = frozenset("he she they who i you we someone somebody everyone".split())


def _animate_subject(parsed: ParsedCaption, v: int, t: ReplaceTables, heads: dict[int, NounPhrase]) -> bool:
    """Whether the subject of verb ``v`` is a person or an animal (unknown nouns are not)."""
    toks, children = parsed.toks, parsed.children
    for _ in range(4):
        verb = toks[v]
        subj = next((c for c in children[v] if toks[c].dep in ("nsubj", "nsubjpass")), None)
        if subj is not None and toks[subj].lower in ("who", "that", "which") and verb.dep == "relcl":
            subj = verb.head
        if subj is None:
            if verb.dep in ("acl", "relcl") or (verb.head != v and toks[verb.head].pos in ("NOUN", "PROPN")):
                subj = verb.head
            elif verb.dep in ("conj", "xcomp", "advcl") and verb.head != v:
                v = verb.head  # "a man sitting and reading": the first verb's subject
                continue
            else:
                return False
        s = toks[subj]
        if s.pos == "PRON":
            return s.lower in _ANIMATE_PRONOUNS
        ph = heads.get(subj)
        found = _lookup(toks, ph.noun, ph.start, t) if ph is not None else _lookup(toks, subj, 0, t)
        return found is not None and t.groups[found[1]].category in ("person", "animal")
    return False


# --------------------------------------------------------------------------- attribute_replace


@register("attribute_replace")
def attribute_replace(parsed: ParsedCaption, res: Resources) -> list[Edit]:
    t = tables_of(res)
    toks = parsed.toks
    edits: list[Edit] = []
    by_head: dict[int, int] = {}
    for ph in parsed.phrases:
        found = _lookup(toks, ph.noun, ph.start, t)
        gid = found[1] if found is not None else -1
        by_head[ph.head] = gid
        limit = found[0] if found is not None else ph.noun
        present = {toks[k].lower for k in range(ph.start, ph.end)}
        if ph.adjectives is not None:
            for k in range(ph.adjectives[0], min(ph.adjectives[1], limit)):
                _attribute_edits(parsed.text, toks, k, gid, present, t, edits)
        if ph.compound is not None:
            for k in range(ph.compound[0], min(ph.compound[1], limit)):
                _attribute_edits(parsed.text, toks, k, gid, present, t, edits)
        if ph.number is not None and ph.plural:
            _number_edits(parsed.text, toks[ph.number], t, edits)
    # predicative adjectives: "the refrigerator is open"
    for tok in toks:
        if tok.dep == "acomp" and tok.pos == "ADJ" and tok.lower in t.attr_words:
            subj = next((c for c in parsed.children[tok.head] if toks[c].dep == "nsubj"), None)
            if subj is not None and subj in by_head:
                _attribute_edits(parsed.text, toks, tok.i, by_head[subj], {tok.lower}, t, edits)
    return _with_pairs(parsed, edits[:MAX_EDITS], t)


def _attribute_edits(
    caption: str, toks: Toks, k: int, gid: int, present: set[str], t: ReplaceTables, edits: list[Edit]
) -> None:
    tok = toks[k]
    ids = t.attr_words.get(tok.lower)
    if ids is None:
        return
    if tok.lower in t.shade_words and k + 1 < len(toks) and toks[k + 1].lower in t.colour_words:
        return  # "dark blue": the shade belongs to the colour
    start = k
    if k > 0 and toks[k - 1].lower in t.shade_words and tok.lower in t.colour_words:
        start = k - 1  # "dark blue" -> "red", never "dark white"
    if k > 0 and toks[k - 1].text == "-" or k + 1 < len(toks) and toks[k + 1].text == "-":
        return  # part of a hyphenated word ("red-haired", "old-fashioned")
    fits: list[tuple[str, str, float]] = []  # (rule, word, weight)
    for a in ids:
        row = t.attrs[a]
        if tok.pos not in row.pos:
            continue
        if row.for_ is not None and gid not in row.for_:
            continue
        if gid in row.not_for:
            continue
        only = row.only.get(gid)
        for group, weight in row.cands:
            word = next((w for w in group if w not in present and (only is None or w in only)), None)
            if word is not None and all(f[1] != word for f in fits):  # ("old": age and newness)
                fits.append((row.rule, word, weight))
    for c in draw([f[2] for f in fits], MAX_PER_SLOT, slot_unit(t.seed, caption, k)):
        rule, word, _ = fits[c]
        edits.append(
            Edit(
                family="attribute_replace",
                rule=rule,
                replacements=(Replacement(start, k + 1, _case(toks[start], word)),),
                items=(_span_lower(toks, start, k + 1), word),
            )
        )


def _number_edits(caption: str, tok: Tok, t: ReplaceTables, edits: list[Edit]) -> None:
    low = tok.lower
    cands = t.numbers.get(low)
    if cands is None:
        if not low.isdigit() or not 2 <= int(low) <= 99:
            return
        v = int(low)
        cands = tuple((str(x), 1.0) for x in (v + 1, v - 1) if x >= 2)
    for c in draw([w for _, w in cands], MAX_PER_SLOT, slot_unit(t.seed, caption, tok.i)):
        word = cands[c][0]
        edits.append(
            Edit(
                family="attribute_replace",
                rule="count",
                replacements=(Replacement(tok.i, tok.i + 1, _case(tok, word)),),
                items=(low, word),
            )
        )


# --------------------------------------------------------------------------- object_replace


@register("object_replace")
def object_replace(parsed: ParsedCaption, res: Resources) -> list[Edit]:
    t = tables_of(res)
    toks = parsed.toks
    found = []
    for ph in parsed.phrases:
        m = _lookup(toks, ph.noun, ph.start, t) if toks[ph.noun].pos == "NOUN" else None
        found.append(m)
    present = {m[1] for m in found if m is not None}
    words: set[str] | None = None
    edits: list[Edit] = []
    for ph, m in zip(parsed.phrases, found):
        if m is None or len(edits) >= MAX_EDITS:
            continue
        start, gid, number = m
        row = t.groups[gid]
        cands = t.object_cands[gid]
        if not cands:
            continue
        if start > ph.start and toks[start - 1].text == "-":
            continue  # "t-shirt", "ice-cream": the match is only half the word
        if row.opaque and ph.nominal_start < start:
            continue  # "food truck" -> "food bus"
        end = ph.noun + 1
        if end < len(toks):
            longer = t.noun_multi.get(toks[end].lower)
            if longer and any(w[-1] == toks[ph.noun].lower for w, _, _ in longer):
                continue  # "microwave oven" with "oven" misparsed: the name goes on
        allowed = _verb_objects(toks, parsed.children, ph, gid, t)
        if words is None:
            words = {tk.lower for tk in toks}
        _object_edits(parsed, ph, start, gid, number, cands, present, words, allowed, t, edits)
    return _with_pairs(parsed, edits[:MAX_EDITS], t)


def _verb_objects(
    toks: Toks, children: tuple[tuple[int, ...], ...], ph: NounPhrase, gid: int, t: ReplaceTables
) -> frozenset[int] | None:
    """What the verb governing the phrase accepts in its place, when it constrains that and
    accepts the original: "flying a kite" never becomes "flying a ball", nor "an airplane flying"
    "a bus flying".
    """
    head = toks[ph.head]
    verb = -1
    if head.dep == "dobj":
        verb, role = head.head, 0
    elif head.dep in ("nsubj", "nsubjpass"):
        verb, role = head.head, 1
    else:
        verb = next((c for c in children[ph.head] if toks[c].dep == "acl" and toks[c].pos == "VERB"), -1)
        role = 1
    if verb < 0 or toks[verb].pos != "VERB":
        return None
    hits = t.verb_surface.get(toks[verb].lower)
    if not hits:
        return None
    row = t.verbs[hits[0][1]]
    allowed = row.objects[0] if role == 0 and row.objects is not None else row.subjects if role == 1 else None
    if allowed is None or gid not in allowed:
        return None
    return allowed


def _object_edits(
    parsed: ParsedCaption,
    ph: NounPhrase,
    start: int,
    gid: int,
    number: int,
    cands: tuple[tuple[int, float, float], ...],
    present: set[int],
    words: set[str],
    allowed: frozenset[int] | None,
    t: ReplaceTables,
    edits: list[Edit],
) -> None:
    toks = parsed.toks
    row = t.groups[gid]
    end = ph.noun + 1
    # in "a group of sheep" the article belongs to "group": look after the "of"
    dets = [toks[k] for k in range(ph.start if ph.head == ph.noun else ph.head + 2, start)]
    has_number = ph.number is not None
    article = any(d.lower in _SG_DETS for d in dets)
    # "some cake", "more bread" read as mass nouns, like a bare "cake"
    determined = any(
        (d.dep in ("det", "poss", "nummod", "predet") or d.pos in ("DET", "NUM", "PRON")) and d.lower not in _MASS_DETS
        for d in dets
    )
    if number == ONLY:
        if has_number or (end < len(toks) and toks[end].lower == "of"):
            return  # "two glasses of wine" are drinking glasses
        plural = True
    elif number == INV:
        plural = toks[ph.noun].tag == "NNS" or not article or ph.head != ph.noun
    else:
        # the spelling, not the tag ("broccoli" is sometimes tagged NNS), unless a determiner says
        # otherwise ("these broccoli")
        plural = number == PL or any(d.lower in _PL_DETS for d in dets)
    bare = not plural and not determined
    mass_usage = bare and (row.countability != COUNT or ph.start != 0)  # "Man riding a bike" is a headline
    src_gender = t.gender.get(singularize(_span_lower(toks, start, end)))
    original = _span_lower(toks, start, end)
    flips: dict[str | None, tuple[Replacement, ...] | None] = {}  # by the new noun's gender
    fits: list[tuple[str, tuple[Replacement, ...], float]] = []  # (text, pronoun flips, weight)
    for tgid, w_sg, w_pl in cands:
        if tgid in present or (allowed is not None and tgid not in allowed):
            continue  # "a man and a woman" -> "a woman and a woman" only repeats
        tr = t.groups[tgid]
        word = next((w for w in tr.words if w not in words), None)
        if word is None:
            continue
        if mass_usage:
            if tr.countability == COUNT:
                continue
        elif tr.countability == MASS and (article or plural):
            continue
        if tr.plural_only:
            if not (number == ONLY or (plural and not has_number)):
                continue
            text = word
        elif number == ONLY and tr.countability == MASS:
            continue
        elif plural:
            if tr.countability == MASS:
                continue
            text = pluralize(word)
        else:
            text = word
        dst = t.gender.get(word)
        if dst not in flips:
            flips[dst] = _pronoun_flips(toks, end, src_gender, dst, t)
        pronouns = flips[dst]
        if pronouns is None:
            continue
        fits.append((text, pronouns, w_pl if plural else w_sg))
    for c in draw([f[2] for f in fits], MAX_PER_SLOT, slot_unit(t.seed, parsed.text, start)):
        text, pronouns, _ = fits[c]
        edits.append(
            Edit(
                family="object_replace",
                rule=row.category,
                replacements=(Replacement(start, end, _case(toks[start], text)), *pronouns),
                items=(original, text),
            )
        )


def _pronoun_flips(
    toks: Toks, after: int, src: str | None, dst: str | None, t: ReplaceTables
) -> tuple[Replacement, ...] | None:
    """Replacements turning the pronouns that refer to the replaced person to the new gender.

    A pronoun refers to the replaced noun when it follows it and matches its gender (a neutral noun
    takes the gender of the first gendered pronoun after it); scanning stops at the next noun of
    that gender, which would be the nearer referent. Returns None when the new noun is neutral but
    gendered pronouns refer to it, so no candidate reads "a child ... her" by accident.
    """
    if src is None and dst is None:
        return ()
    out: list[Replacement] = []
    gender = src
    for k in range(after, len(toks)):
        tok = toks[k]
        low = tok.lower
        if tok.pos == "NOUN":
            g = t.gender.get(singularize(low))
            if g is not None and (gender is None or g == gender):
                break
            continue
        if tok.pos != "PRON":
            continue
        if gender is None:
            gender = "male" if low in _PRONOUNS["male"] else "female" if low in _PRONOUNS["female"] else None
            if gender is None:
                continue
        flips = _PRONOUNS[gender].get(low)
        if flips is None:
            continue
        if dst is None:
            return None if src is None else ()
        if dst == gender:
            return ()
        new = flips[0] if tok.tag == "PRP$" or low in ("he", "she", "him", "himself", "herself") else flips[1]
        out.append(Replacement(k, k + 1, match_case(tok.text, new)))
    return tuple(out)
