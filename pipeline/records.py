"""Plain data types passed between the stages of stage 1.

They carry no behaviour beyond small conveniences, so rules, filters and writers can be tested on
hand-made values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class CaptionRecord:
    """One caption of one image, as read from a source."""

    id: str
    caption: str
    #: image reference: a path (relative to an image root) and/or embedded bytes
    image_path: str | None
    source: str
    split: str
    #: captions of the same image share a group; filters compare a negative against its group
    group: str
    image_bytes: bytes | None = None


@dataclass(frozen=True)
class Skip:
    """A source row that was not turned into a record, and why (counted, never silent)."""

    reason: str
    where: str


class Replacement(NamedTuple):
    """Replace tokens ``[start, end)`` of the parse with ``text`` (which may be empty)."""

    start: int
    end: int
    text: str


class Edit(NamedTuple):
    """What a rule wants to change, before realisation. Pure data, so rules stay pure."""

    family: str
    rule: str
    replacements: tuple[Replacement, ...]
    #: the two items exchanged (lower-cased), used by the same-word and symmetry filters
    items: tuple[str, str] = ("", "")
    #: True when the edit only exchanges the arguments of a symmetric relation or a coordination
    #: ("a cat and a dog" -> "a dog and a cat"): the meaning is unchanged and a filter drops it
    symmetric_link: bool = False
    #: lower sorts first when more than k candidates compete and no plausibility score ranks them
    priority: int = 0
    #: why the rule refuses this edit (``class_mismatch``, ``same_kind``, ``agreement``...): counted
    #: by the filters, never realised; empty for a real candidate
    reject: str = ""
    #: a swap between nouns of incompatible semantic classes ("a man" / "a skateboard"): kept only
    #: when its plausibility clears the cross-class floor, else counted as ``class_mismatch``
    cross_class: bool = False
    #: the dependency pairs (relation, head lemma, dependent lemma) the edit removes and creates,
    #: which its plausibility score compares (``pipeline.rules.plausibility``)
    pairs_old: tuple[tuple[str, str, str], ...] = ()
    pairs_new: tuple[tuple[str, str, str], ...] = ()
    #: the rule's rank within its family: every candidate of a lower tier is examined before any of
    #: a higher one, scored or not (``attribute_swap`` exchanges before it moves a modifier)
    tier: int = 0


class Candidate(NamedTuple):
    """A realised negative caption with its provenance."""

    text: str
    family: str
    rule: str
    #: token spans of the positive's parse that the edit touched, ``(start, end)``
    token_spans: tuple[tuple[int, int], ...]
    #: the same spans as character offsets into the positive caption
    char_spans: tuple[tuple[int, int], ...]
    items: tuple[str, str] = ("", "")
    symmetric_link: bool = False
    priority: int = 0
    #: plausibility in bits (mean log2 probability of the created dependency pairs minus that of the
    #: removed ones); None when the run scores nothing
    plausibility: float | None = None


@dataclass
class RejectCounts:
    """Per family, how many candidates each filter dropped."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, family: str, reason: str, n: int = 1) -> None:
        fam = self.counts.setdefault(family, {})
        fam[reason] = fam.get(reason, 0) + n

    def merge(self, other: "RejectCounts | dict[str, dict[str, int]]") -> None:
        data = other.counts if isinstance(other, RejectCounts) else other
        for fam, reasons in data.items():
            for reason, n in reasons.items():
                self.add(fam, reason, n)
