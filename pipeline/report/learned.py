"""The learned text-only detector: could a text model learn to tell a positive from its negative?

The n-gram blind check (:mod:`pipeline.report.blind`) asks a fixed language model which caption is
more likely. This second judge is trained for the task itself, as a text tower would be: per
family, a logistic regression over word n-gram counts learns which of (caption, negative) is the
positive, and is scored on pairs of image groups it never saw. Its held-out accuracy is what a
text-only shortcut is worth on that family; 50% means none was found.

Design choices and invariants:

- Pairs: one negative per caption and family (a seeded pick), at most ``max_pairs`` captions per
  family, chosen by a seeded hash (bottom-k), so the sample does not depend on row order.
- Split: by image group, a seeded hash of the group puts all its pairs on one side, never both;
  about ``heldout_fraction`` of the groups are held out for scoring.
- Features compare the two texts: ``x = f(first) - f(second)`` with ``f`` the n-gram counts of a
  vocabulary fitted on the training texts only (n-grams unseen in training count for nothing). The
  order of each training pair is swapped by a seeded hash (about half of them), the label says
  whether the first is the positive, and the model has no intercept, so ``(a, b)`` and ``(b, a)``
  get opposite scores: a held-out pair is right when ``w . (f(positive) - f(negative)) > 0``, and a
  tie (0) counts half, as in the blind check.
- A family with fewer than ``min_pairs`` training or held-out pairs reports ``not enough pairs``
  instead of a noisy figure. Everything is seeded: the same data and settings give the same figures.
- Tokens: :func:`pipeline.report.blind.tokenize` (lower-cased words and punctuation).
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from pipeline.core.errors import ConfigError
from pipeline.report.blind import tokenize, unit_hash, wilson_interval

log = logging.getLogger(__name__)

NOT_ENOUGH = "not enough pairs"


@dataclass
class LearnedConfig:
    """Settings of the learned text-only detector."""

    enabled: bool = True
    #: share of image groups whose pairs are held out to score the detector (never trained on)
    heldout_fraction: float = 0.3
    #: at most this many (positive, negative) pairs per family, a seeded sample, before the split
    max_pairs: int = 20000
    #: fewer training or held-out pairs than this: the family reports "not enough pairs"
    min_pairs: int = 100
    seed: int = 0
    #: word n-gram orders of the features, [lowest, highest]
    ngram_range: list[int] = field(default_factory=lambda: [1, 2])
    #: inverse regularisation strength of the logistic regression (scikit-learn's C)
    C: float = 1.0
    #: n-grams per family shown in report.md as the strongest tells of a negative, and of a positive
    top_ngrams: int = 5

    def validate(self) -> None:
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"learned.heldout_fraction must be between 0 and 1 (exclusive), got {self.heldout_fraction}")
        if self.max_pairs < 2:
            raise ConfigError(f"learned.max_pairs must be >= 2, got {self.max_pairs}")
        if self.min_pairs < 1:
            raise ConfigError(f"learned.min_pairs must be >= 1, got {self.min_pairs}")
        if len(self.ngram_range) != 2 or not 1 <= self.ngram_range[0] <= self.ngram_range[1]:
            raise ConfigError(f"learned.ngram_range must be [lowest, highest] with 1 <= lowest <= highest, got {self.ngram_range}")
        if not self.C > 0:
            raise ConfigError(f"learned.C must be > 0, got {self.C}")
        if self.top_ngrams < 0:
            raise ConfigError(f"learned.top_ngrams must be >= 0, got {self.top_ngrams}")


@dataclass(frozen=True)
class Pair:
    id: str
    group: str
    positive: str
    negative: str


@dataclass
class FamilyFit:
    """One family's detector: the split, the held-out verdicts and the n-grams that give the pairs away."""

    train: list[Pair]
    test: list[Pair]
    #: w . (f(positive) - f(negative)) per held-out pair (> 0: right)
    margins: list[float] = field(default_factory=list)
    #: (n-gram, weight), most negative first: n-grams whose presence marks a text as the negative
    negative_tells: list[tuple[str, float]] = field(default_factory=list)
    #: (n-gram, weight), most positive first: n-grams whose presence marks a text as the positive (for
    #: a replace family, words the rules replace more often than they use)
    positive_tells: list[tuple[str, float]] = field(default_factory=list)
    features: int = 0


@dataclass
class LearnedResult:
    """Per-family figures (JSON-ready scalars), the settings, and the fits (for report.md)."""

    families: dict[str, dict[str, Any]]
    info: dict[str, Any]
    fits: dict[str, FamilyFit] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``learned_check`` section of ``report.json``: one scalar dict per family, then the settings."""
        return {**self.families, **self.info}


class LearnedCheck:
    """Streamed detector: ``add`` every row once, then ``finish``.

    Rows are dicts with ``id``, ``caption``, ``group`` and one list of negatives per family; at most
    ``max_pairs`` pairs per family are kept in memory.
    """

    def __init__(self, families: Iterable[str], cfg: LearnedConfig | None = None) -> None:
        self.cfg = cfg or LearnedConfig()
        self.cfg.validate()
        self.families = list(families)
        self.available = {f: 0 for f in self.families}
        # bottom-k by hash: a max-heap of (-key, id, group, positive, negative) per family
        self._heaps: dict[str, list[tuple[float, str, str, str, str]]] = {f: [] for f in self.families}

    def is_heldout_group(self, group: str) -> bool:
        return unit_hash(self.cfg.seed, "learned-heldout", group) < self.cfg.heldout_fraction

    def add(self, row: dict[str, Any]) -> None:
        caption = row.get("caption") or ""
        rid = str(row.get("id"))
        group = row.get("group") or rid
        for fam in self.families:
            negs = [n for n in (row.get(fam) or []) if n]
            if not negs:
                continue
            self.available[fam] += 1
            neg = negs[int(unit_hash(self.cfg.seed, "learned-pick", fam, rid) * len(negs))]
            key = unit_hash(self.cfg.seed, "learned-sample", fam, rid)
            heap = self._heaps[fam]
            item = (-key, rid, group, caption, neg)
            if len(heap) < self.cfg.max_pairs:
                heapq.heappush(heap, item)
            elif -key > heap[0][0]:
                heapq.heapreplace(heap, item)

    def pairs(self, family: str) -> list[Pair]:
        """The sampled pairs of a family, in id order."""
        return [Pair(rid, g, p, n) for _, rid, g, p, n in sorted(self._heaps[family], key=lambda x: x[1])]

    def finish(self) -> LearnedResult:
        lo, hi = self.cfg.ngram_range
        info: dict[str, Any] = {
            "model": f"logistic regression over word {lo}-{hi}-gram count differences (scikit-learn)",
            "ngram_range": f"{lo}-{hi}",
            "C": self.cfg.C,
            "heldout_fraction": self.cfg.heldout_fraction,
            "seed": self.cfg.seed,
            "max_pairs_per_family": self.cfg.max_pairs,
            "min_pairs": self.cfg.min_pairs,
        }
        figures: dict[str, dict[str, Any]] = {}
        fits: dict[str, FamilyFit] = {}
        t0 = time.perf_counter()
        for fam in self.families:
            pairs = self.pairs(fam)
            test = [p for p in pairs if self.is_heldout_group(p.group)]
            train = [p for p in pairs if not self.is_heldout_group(p.group)]
            fit = FamilyFit(train, test)
            if min(len(train), len(test)) >= self.cfg.min_pairs and _both_labels(train, self.cfg.seed, fam):
                self._fit(fam, fit)
                fits[fam] = fit
            figures[fam] = family_figures(fit, self.available[fam], fitted=fam in fits)
        log.info("learned detector: %d families fitted in %.1fs", len(fits), time.perf_counter() - t0)
        return LearnedResult(figures, info, fits)

    def _fit(self, family: str, fit: FamilyFit) -> None:
        """Train on ``fit.train`` (order swapped by a seeded hash), score ``fit.test``; fills ``fit``."""
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression

        vec = CountVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None,
                              ngram_range=(self.cfg.ngram_range[0], self.cfg.ngram_range[1]))
        vec.fit([p.positive for p in fit.train] + [p.negative for p in fit.train])
        first_is_positive = [_first_is_positive(self.cfg.seed, family, p) for p in fit.train]
        first = [p.positive if y else p.negative for p, y in zip(fit.train, first_is_positive)]
        second = [p.negative if y else p.positive for p, y in zip(fit.train, first_is_positive)]
        x_train = vec.transform(first) - vec.transform(second)
        model = LogisticRegression(C=self.cfg.C, fit_intercept=False, solver="liblinear", random_state=self.cfg.seed)
        model.fit(x_train, [int(y) for y in first_is_positive])
        x_test = vec.transform([p.positive for p in fit.test]) - vec.transform([p.negative for p in fit.test])
        fit.margins = [float(m) for m in model.decision_function(x_test)]
        weights = model.coef_[0]
        names = vec.get_feature_names_out()
        top = self.cfg.top_ngrams
        order = sorted(range(len(weights)), key=lambda j: (weights[j], names[j]))
        fit.negative_tells = [(str(names[j]), float(weights[j])) for j in order[:top] if weights[j] < 0]
        order = sorted(range(len(weights)), key=lambda j: (-weights[j], names[j]))
        fit.positive_tells = [(str(names[j]), float(weights[j])) for j in order[:top] if weights[j] > 0]
        fit.features = len(names)


def _first_is_positive(seed: int, family: str, pair: Pair) -> bool:
    return unit_hash(seed, "learned-order", family, pair.id) < 0.5


def _both_labels(train: list[Pair], seed: int, family: str) -> bool:
    labels = {_first_is_positive(seed, family, p) for p in train}
    return len(labels) == 2


def family_figures(fit: FamilyFit, available: int, fitted: bool) -> dict[str, Any]:
    """The scalar figures of one family (shares and interval bounds rounded to 4 places)."""
    out: dict[str, Any] = {
        "available": available,
        "train_pairs": len(fit.train),
        "heldout_pairs": len(fit.test),
        "train_groups": len({p.group for p in fit.train}),
        "heldout_groups": len({p.group for p in fit.test}),
    }
    if not fitted:
        out["skipped"] = NOT_ENOUGH
        return out
    n = len(fit.margins)
    ties = sum(1 for m in fit.margins if m == 0.0)
    right = sum(1 for m in fit.margins if m > 0.0) + 0.5 * ties
    lo, hi = wilson_interval(right, n)
    out.update({
        "accuracy": round(right / n, 4),
        "ci95_low": round(lo, 4),
        "ci95_high": round(hi, 4),
        "ties": ties,
        "features": fit.features,
    })
    return out


def learned_check(rows: Iterable[dict[str, Any]], families: Iterable[str], cfg: LearnedConfig | None = None) -> LearnedResult:
    """Run the learned detector over ``rows`` (see :class:`LearnedCheck`)."""
    check = LearnedCheck(families, cfg)
    for row in rows:
        check.add(row)
    return check.finish()
