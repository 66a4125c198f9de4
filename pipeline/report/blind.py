"""The blind check: can a text-only language model tell a positive caption from its negative?

Negatives that are ungrammatical, implausible or use rare words teach a contrastive model to spot
bad text instead of looking at the image (SugarCrepe showed blind text models beating CLIP on
benchmarks built that way). So an n-gram language model is trained on the positive captions of a
held-out part of the dataset (whole image groups, chosen by a seeded hash, never scored) and asked,
for sampled (positive, negative) pairs of the other groups, which of the two it finds more likely.
A share near 50% means the text alone does not give the negative away.

Design choices:

- Model: ``nltk.lm`` Witten-Bell interpolation (order 3 by default). It has no discount to tune and
  behaves well on the small training sets a held-out part gives. NLTK's Kneser-Ney recounts
  continuation counts over every higher-order n-gram on each call (seconds per sentence on a
  25k-caption dataset), and Laplace/Lidstone flatten sparse contexts towards uniform. Rare training
  words (seen once) become ``<UNK>`` so unknown words in scored captions get a real probability.
- Speed: NLTK's Witten-Bell recounts a context's distinct continuations on every call; that count
  and every n-gram probability are cached, and each positive is scored once for all its families.
- Pairs: one negative per caption and family (a seeded pick), so pairs are nearly independent and
  the Wilson interval means what it says; at most ``max_pairs`` captions per family, chosen by a
  seeded hash (bottom-k), so the sample is the same whatever the row order.
- Verdicts: whole-sentence log-probability (what a model scoring captions would use) and the
  length-normalised mean per-token log-probability (negatives can be shorter or longer than their
  positive, and shorter sentences win on the total alone). A tie counts 0.5.
- Tokens: lower-cased words and punctuation by a regex (NLTK's punkt data is not installed).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
#: z of a two-sided 95% interval
Z95 = 1.959963984540054


@dataclass
class BlindConfig:
    """Settings of the blind check."""

    #: share of image groups whose positives train the language model (never scored)
    heldout_fraction: float = 0.2
    #: n-gram order of the language model
    order: int = 3
    seed: int = 0
    #: at most this many (positive, negative) pairs per family are scored (a seeded sample)
    max_pairs: int = 5000
    #: training words seen fewer times than this become <UNK>
    unk_cutoff: int = 2

    def validate(self) -> None:
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction must be between 0 and 1 (exclusive), got {self.heldout_fraction}")
        if self.order < 1:
            raise ConfigError(f"order must be >= 1, got {self.order}")
        if self.max_pairs < 1:
            raise ConfigError(f"max_pairs must be >= 1, got {self.max_pairs}")
        if self.unk_cutoff < 1:
            raise ConfigError(f"unk_cutoff must be >= 1, got {self.unk_cutoff}")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def unit_hash(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from ``parts`` (same on every machine and run)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (good near 0 and 1 and for small n, unlike the normal one)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


class NgramScorer:
    """An ``nltk.lm`` Witten-Bell model with cached scores; log-probabilities are in bits."""

    def __init__(self, order: int = 3, unk_cutoff: int = 2) -> None:
        self.order = order
        self.unk_cutoff = unk_cutoff
        self._cache: dict[tuple[str, ...], float] = {}
        self.model: Any = None
        self._floor = 0.0

    def fit(self, sentences: list[list[str]]) -> "NgramScorer":
        from nltk.lm import Vocabulary
        from nltk.lm.models import InterpolatedLanguageModel
        from nltk.lm.preprocessing import padded_everygram_pipeline
        from nltk.lm.smoothing import WittenBell

        class _CachedWittenBell(WittenBell):
            """NLTK's Witten-Bell with the per-context distinct-continuation count memoised."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._gammas: dict[tuple[str, ...], float] = {}

            def _gamma(self, context: tuple[str, ...]) -> float:
                g = self._gammas.get(context)
                if g is None:
                    g = self._gammas[context] = super()._gamma(context)
                return g

        class _WittenBellModel(InterpolatedLanguageModel):
            def __init__(self, order: int, **kwargs: Any) -> None:
                super().__init__(_CachedWittenBell, order, **kwargs)

        if not sentences:
            raise ValueError("the language model needs at least one training sentence")
        train, vocab_text = padded_everygram_pipeline(self.order, sentences)
        self.model = _WittenBellModel(self.order, vocabulary=Vocabulary(unk_cutoff=self.unk_cutoff))
        self.model.fit(train, vocab_text)
        # half a count: the probability of a word when even <UNK> was never seen in training
        self._floor = 0.5 / max(1, self.model.counts.unigrams.N())
        self._cache.clear()
        return self

    @property
    def vocab_size(self) -> int:
        return len(self.model.vocab) if self.model is not None else 0

    def logprob(self, tokens: list[str]) -> tuple[float, int]:
        """Log2-probability of a padded sentence and the number of predicted tokens (words + end)."""
        from nltk.util import ngrams

        if self.model is None:
            raise RuntimeError("fit the scorer before scoring")
        # the padding of nltk.lm's training pipeline, but one end symbol: P(</s> | ... </s>) is 1
        # and would only dilute the per-token figure
        padded = ["<s>"] * (self.order - 1) + list(self.model.vocab.lookup(tokens)) + ["</s>"]
        total, n = 0.0, 0
        for gram in ngrams(padded, self.order):
            lp = self._cache.get(gram)
            if lp is None:
                p = self.model.unmasked_score(gram[-1], gram[:-1] or None)
                lp = self._cache[gram] = math.log2(max(p, self._floor))
            total += lp
            n += 1
        return total, n


@dataclass
class PairScore:
    """One scored (positive, negative) pair; log-probabilities in bits."""

    family: str
    id: str
    positive: str
    negative: str
    pos_logprob: float
    neg_logprob: float
    pos_tokens: int
    neg_tokens: int

    @property
    def margin(self) -> float:
        return self.pos_logprob - self.neg_logprob

    @property
    def per_token_margin(self) -> float:
        return self.pos_logprob / self.pos_tokens - self.neg_logprob / self.neg_tokens


@dataclass
class BlindResult:
    """Per-family figures (JSON-ready scalars) and the scored pairs (for examples and plots)."""

    families: dict[str, dict[str, Any]]
    info: dict[str, Any]
    pairs: dict[str, list[PairScore]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``blind_check`` section of ``report.json``: one scalar dict per family, then the settings."""
        return {**self.families, **self.info}


def _preference(margins: list[float]) -> tuple[float, int]:
    """Share of pairs with a positive margin (ties count half) and the number of ties."""
    ties = sum(1 for m in margins if m == 0.0)
    wins = sum(1 for m in margins if m > 0.0)
    return wins + 0.5 * ties, ties


def family_figures(pairs: list[PairScore], available: int) -> dict[str, Any]:
    """The scalar figures of one family (shares and interval bounds rounded to 4 places)."""
    n = len(pairs)
    out: dict[str, Any] = {"pairs": n, "available": available}
    if n == 0:
        return out
    for prefix, margins in (
        ("", [p.margin for p in pairs]),
        ("per_token_", [p.per_token_margin for p in pairs]),
    ):
        wins, ties = _preference(margins)
        lo, hi = wilson_interval(wins, n)
        out[f"{prefix}prefers_positive"] = round(wins / n, 4)
        out[f"{prefix}ci95_low"] = round(lo, 4)
        out[f"{prefix}ci95_high"] = round(hi, 4)
        out[f"{prefix}ties"] = ties
        out[f"{prefix}mean_margin_bits"] = round(sum(margins) / n, 4)
    return out


class BlindCheck:
    """Streamed blind check: ``add`` every row once, then ``finish``.

    Rows are dicts with ``id``, ``caption``, ``group`` and one list of negatives per family. Only
    the training captions and at most ``max_pairs`` candidate pairs per family are kept in memory.
    """

    def __init__(self, families: Iterable[str], cfg: BlindConfig | None = None) -> None:
        self.cfg = cfg or BlindConfig()
        self.cfg.validate()
        self.families = list(families)
        self.train: list[list[str]] = []
        self.train_groups: set[str] = set()
        self.scored_groups: set[str] = set()
        self.scored_captions = 0
        self.available = {f: 0 for f in self.families}
        # bottom-k by hash: a max-heap of (-key, id, positive, negative) per family
        self._heaps: dict[str, list[tuple[float, str, str, str]]] = {f: [] for f in self.families}

    def is_training_group(self, group: str) -> bool:
        return unit_hash(self.cfg.seed, "lm-train", group) < self.cfg.heldout_fraction

    def add(self, row: dict[str, Any]) -> None:
        caption = row.get("caption") or ""
        rid = str(row.get("id"))
        group = row.get("group") or rid
        if self.is_training_group(group):
            self.train_groups.add(group)
            tokens = tokenize(caption)
            if tokens:
                self.train.append(tokens)
            return
        self.scored_groups.add(group)
        self.scored_captions += 1
        for fam in self.families:
            negs = [n for n in (row.get(fam) or []) if n]
            if not negs:
                continue
            self.available[fam] += 1
            neg = negs[int(unit_hash(self.cfg.seed, "pick", fam, rid) * len(negs))]
            key = unit_hash(self.cfg.seed, "sample", fam, rid)
            heap = self._heaps[fam]
            item = (-key, rid, caption, neg)
            if len(heap) < self.cfg.max_pairs:
                heapq.heappush(heap, item)
            elif -key > heap[0][0]:
                heapq.heapreplace(heap, item)

    def finish(self) -> BlindResult:
        info: dict[str, Any] = {
            "model": f"nltk.lm Witten-Bell interpolated {self.cfg.order}-gram",
            "order": self.cfg.order,
            "heldout_fraction": self.cfg.heldout_fraction,
            "seed": self.cfg.seed,
            "max_pairs_per_family": self.cfg.max_pairs,
            "train_captions": len(self.train),
            "train_groups": len(self.train_groups),
            "scored_captions": self.scored_captions,
            "scored_groups": len(self.scored_groups),
        }
        wanted = sum(len(h) for h in self._heaps.values())
        if not self.train:
            log.warning("blind check skipped: no training captions in the held-out part")
            info["skipped"] = "no training captions"
            return BlindResult({f: {"pairs": 0, "available": self.available[f]} for f in self.families}, info)
        t0 = time.perf_counter()
        scorer = NgramScorer(self.cfg.order, self.cfg.unk_cutoff).fit(self.train)
        info["vocab_size"] = scorer.vocab_size
        train_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        pos_cache: dict[str, tuple[float, int]] = {}
        pairs: dict[str, list[PairScore]] = {}
        from tqdm import tqdm

        with tqdm(total=wanted, desc="blind check", unit=" pairs", disable=wanted < 2000) as bar:
            for fam in self.families:
                scored = []
                for _, rid, pos, neg in sorted(self._heaps[fam], key=lambda x: x[1]):
                    if pos not in pos_cache:
                        pos_cache[pos] = scorer.logprob(tokenize(pos))
                    plp, pn = pos_cache[pos]
                    nlp, nn = scorer.logprob(tokenize(neg))
                    scored.append(PairScore(fam, rid, pos, neg, plp, nlp, pn, nn))
                    bar.update(1)
                pairs[fam] = scored
        # timings are logged, not returned, so the report of the same data is byte-identical
        figures = {f: family_figures(pairs[f], self.available[f]) for f in self.families}
        log.info(
            "blind check: LM trained on %d captions of %d groups (vocab %d) in %.1fs; %d pairs scored in %.1fs",
            len(self.train), len(self.train_groups), scorer.vocab_size, train_seconds, wanted,
            time.perf_counter() - t1,
        )
        return BlindResult(figures, info, pairs)


def blind_check(rows: Iterable[dict[str, Any]], families: Iterable[str], cfg: BlindConfig | None = None) -> BlindResult:
    """Run the blind check over ``rows`` (see :class:`BlindCheck`)."""
    check = BlindCheck(families, cfg)
    for row in rows:
        check.add(row)
    return check.finish()
