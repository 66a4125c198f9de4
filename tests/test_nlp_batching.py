"""``parse`` embeds in sub-batches of at most ``TOK2VEC_BATCH`` texts (a worker's peak memory) and
gives bit for bit the parses of one batch size throughout (annotations and ``doc.tensor``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from spacy.attrs import DEP, HEAD, IDX, LEMMA, LOWER, MORPH, ORTH, POS, SPACY, TAG

from pipeline import nlp as nlp_module
from pipeline.nlp import TOK2VEC_BATCH, parse

FIXTURE = Path(__file__).parent / "fixtures" / "captions.jsonl"
ATTRS = [ORTH, LOWER, POS, TAG, DEP, LEMMA, SPACY, IDX, HEAD, MORPH]


def _captions(n: int) -> list[str]:
    """``n`` captions: the fixture's, repeated in a seeded order (so batches mix them differently)."""
    base = [json.loads(line)["caption"] for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    out = (base * (n // len(base) + 1))[:n]
    random.Random(0).shuffle(out)
    return out


def _parses(docs) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(d.to_array(ATTRS), d.tensor.copy()) for d in docs]


def _same(a: list[tuple[np.ndarray, np.ndarray]], b: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) and np.array_equal(s, t) for (x, s), (y, t) in zip(a, b))


def _tok2vec(nlp):
    from spacy.pipeline import Tok2Vec

    return next(proc for _, proc in nlp.pipeline if isinstance(proc, Tok2Vec))


def test_the_embedding_runs_in_sub_batches_the_rest_in_the_configured_batches(nlp, monkeypatch):
    seen: dict[str, list[int]] = {"tok2vec": [], "tagger": []}
    for name, proc in [("tok2vec", _tok2vec(nlp)), ("tagger", nlp.get_pipe("tagger"))]:
        predict = proc.predict
        monkeypatch.setattr(proc, "predict", lambda docs, _p=predict, _n=name: seen[_n].append(len(docs)) or _p(docs))
    list(parse(nlp, _captions(154), 100))
    assert TOK2VEC_BATCH == 64
    # each component batches the stream of docs on its own (chained generators)
    assert seen == {"tok2vec": [64, 64, 26], "tagger": [100, 54]}


def test_sub_batches_give_the_parses_of_one_batch_size(nlp):
    texts = _captions(154)  # one batch of 154 texts; the embedding in 64 + 64 + 26
    assert _same(_parses(parse(nlp, texts, 256)), _parses(nlp.pipe(texts, batch_size=256)))


def test_sub_batches_that_split_the_batches_unevenly_give_the_same_parses(nlp, monkeypatch):
    texts = _captions(60)
    monkeypatch.setattr(nlp_module, "TOK2VEC_BATCH", 7)
    assert _same(_parses(parse(nlp, texts, 25)), _parses(nlp.pipe(texts, batch_size=25)))
    assert _same(_parses(parse(nlp, texts, 5)), _parses(nlp.pipe(texts, batch_size=5)))  # under the cap: 5
