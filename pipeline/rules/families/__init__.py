"""Generation rules, one module per kind of edit, registered by family name.

A family is a pure function ``(ParsedCaption, Resources) -> list[Edit]``: it never does I/O and never
sees multiprocessing, so it can be tested on one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from pipeline.records import Edit
from pipeline.rules.plausibility import DepPair, dep_pairs, lemma_of
from pipeline.rules.syntax import Link, NounPhrase, Tok, links, noun_phrases, tokens_of


class ParsedCaption(NamedTuple):
    """A parse with the views every rule uses, computed once per caption."""

    text: str
    toks: tuple[Tok, ...]
    children: tuple[tuple[int, ...], ...]
    phrases: tuple[NounPhrase, ...]
    links: tuple[Link, ...]
    #: the counted form of every token and the caption's dependency pairs (``plausibility``)
    lemmas: tuple[str, ...]
    deps: tuple[DepPair, ...]

    @classmethod
    def from_doc(cls, doc: Any, text: str | None = None) -> "ParsedCaption":
        """``text`` is the caption the doc was parsed from (saves rebuilding it from tokens)."""
        toks, children = tokens_of(doc)
        return cls.from_tokens(doc.text if text is None else text, toks, children)

    @classmethod
    def from_tokens(
        cls, text: str, toks: tuple[Tok, ...], children: tuple[tuple[int, ...], ...]
    ) -> "ParsedCaption":
        """The views of a token table (one read back from the corpus pass, or a parse's)."""
        phrases = noun_phrases(toks, children)
        return cls(text, toks, children, tuple(phrases), tuple(links(toks, children, phrases)),
                   tuple([lemma_of(t) for t in toks]), dep_pairs(toks, children))


@dataclass
class Resources:
    """Read-only data some families need (lexicons, semantic classes, corpus counts); built once, in
    the parent process, and sent to every worker."""

    data: dict[str, Any] = field(default_factory=dict)


FamilyFn = Callable[[ParsedCaption, Resources], list[Edit]]
REGISTRY: dict[str, FamilyFn] = {}


def register(name: str) -> Callable[[FamilyFn], FamilyFn]:
    def deco(fn: FamilyFn) -> FamilyFn:
        REGISTRY[name] = fn
        return fn

    return deco


def get_family(name: str) -> FamilyFn:
    if name not in REGISTRY:
        _load_builtin()
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"family {name!r} is not implemented; available: {sorted(REGISTRY)}") from None


def available_families() -> list[str]:
    _load_builtin()
    return sorted(REGISTRY)


def _load_builtin() -> None:
    import importlib.util

    from pipeline.rules.families import swap  # noqa: F401  (registers the swap families)

    if importlib.util.find_spec(f"{__name__}.replace") is not None:
        from pipeline.rules.families import replace  # noqa: F401  (registers the replace families)
