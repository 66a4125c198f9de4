"""The local engine in bounded memory: streamed JSON, the two-pass shard stream, the on-disk grouping.

The reference for "the same rows as before" is the in-memory flow the engine replaced: every record
read with the plain reader, the statistics from all of them, one task holding every caption.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import generate as gen_mod
from pipeline.config import GenerateConfig, SourceConfig, StreamConfig
from pipeline.core import jsonstream
from pipeline.core.errors import SourceError
from pipeline.core.jsonstream import JsonArray, lazy_json
from pipeline.engines import common, streaming
from pipeline.engines.common import ALL, BottomK, kept_records, record_key, sample_hash
from pipeline.generate import generate
from pipeline.records import CaptionRecord
from pipeline.sources import iter_source

FIXTURES = Path(__file__).parent / "fixtures"
SUBJECTS = ["man", "woman", "dog", "cat", "boy", "girl", "horse", "bird"]
COLOURS = ["red", "blue", "green", "black", "white", "small", "large", "young"]
THINGS = ["table", "bench", "car", "bed", "couch", "boat", "truck", "chair"]
VERBS = ["sitting on", "standing next to", "looking at", "jumping over", "lying under", "riding"]


def caption(rng: random.Random) -> str:
    return (f"A {rng.choice(COLOURS)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} "
            f"a {rng.choice(COLOURS)} {rng.choice(THINGS)} near a {rng.choice(SUBJECTS)}.")


def write_coco(path: Path, images: int = 60, per_image: int = 5, seed: int = 0) -> Path:
    """A COCO-style annotation file whose captions of one image are scattered (as COCO's are),
    with a few bad rows: an empty caption, a number, an annotation of an unknown image."""
    rng = random.Random(seed)
    anns = []
    for img in range(images):
        for _ in range(per_image):
            anns.append({"id": 1000 + len(anns), "image_id": img, "caption": caption(rng)})
    rng.shuffle(anns)
    anns[3]["caption"] = "   "
    anns[7]["caption"] = 17
    anns.append({"id": 99999, "image_id": 123456, "caption": "A cat on a mat."})
    doc = {"info": {"description": "test"},
           "images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in range(images)],
           "annotations": anns}
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def config(tmp_path: Path, src: Path, out: str = "out", **kw) -> GenerateConfig:
    kw.setdefault("shard_size", 16)
    kw.setdefault("stream", StreamConfig(partition_rows=50))
    return GenerateConfig(name="t", source=SourceConfig(path=str(src)), out=str(tmp_path / out),
                          manifest_dir=str(tmp_path / "manifests"), **kw)


def rows_of(out: Path, manifest) -> list[dict]:
    return [r for s in manifest.shards for r in pq.read_table(out / s.path).to_pylist()]


def reference_rows(cfg: GenerateConfig, tmp_path: Path, run_hash: str) -> dict[str, dict]:
    """The rows of the in-memory flow: all records, statistics from the sample, one task."""
    skipped: Counter = Counter()
    records = list(kept_records(iter_source(cfg.source), cfg.max_chars, skipped, []))
    if len(records) > cfg.stats_sample:
        keys = sorted(sample_hash(record_key(r.id, cfg.seed)) for r in records)
        records_for_stats = [r for r in records if sample_hash(record_key(r.id, cfg.seed)) <= keys[cfg.stats_sample - 1]]
    else:
        records_for_stats = records
    resources = gen_mod.build_resources(cfg, records_for_stats)
    if cfg.plausibility.enabled:  # the corpus pass of the plausibility scores, in this process
        gen_mod.plausibility_resources(cfg, resources, records)
    gen_mod._init_worker(cfg, resources)
    try:
        meta = {"config_hash": run_hash, "families": list(cfg.families), "hardneg_version": "ref"}
        gen_mod._run_shard(gen_mod.ShardTask(0, "x", records, str(tmp_path / "ref.parquet"), meta))
    finally:
        gen_mod._WORKER.clear()
    return {r["id"]: r for r in pq.read_table(tmp_path / "ref.parquet").to_pylist()}


# ----------------------------------------------------------------------------- streamed JSON


def _materialize(v):
    if isinstance(v, JsonArray):
        return [_materialize(x) for x in v]
    if isinstance(v, dict):
        return {k: _materialize(x) for k, x in v.items()}
    return v


DOCS = [
    [{"image": "a.jpg", "caption": ["Café x", "b"]}, 12345, 1.5e10, None, True, 'q"uote', [], {}],
    {"info": {"a": 1}, "images": [{"id": i} for i in range(30)], "n": 7,
     "annotations": [{"id": i, "caption": "x" * i} for i in range(40)], "empty": []},
    {}, [], "scalar", 42,
]


@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_streamed_json_equals_json_loads(tmp_path, monkeypatch, chunk, indent):
    monkeypatch.setattr(jsonstream, "_CHUNK", chunk)
    for i, doc in enumerate(DOCS):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps(doc, indent=indent, ensure_ascii=False), encoding="utf-8")
        assert _materialize(lazy_json(path)) == doc
    # undecodable bytes become surrogates, a BOM is dropped, a repeated key keeps the last value
    path = tmp_path / "raw.json"
    path.write_bytes(b'\xef\xbb\xbf{"a": [1], "c": "Caf\xe9", "a": ["\xc3\xa9", 2]}')
    expected = json.loads(path.read_bytes().decode("utf-8", "surrogateescape").lstrip("\ufeff"))
    got = lazy_json(path)
    assert list(got) == ["a", "c"] and _materialize(got) == expected


@pytest.mark.parametrize("chunk", [2, 1 << 20])
@pytest.mark.parametrize("text", ['[{"a": 1}, {"b": 2]', '{"images": [1, 2], "x": }', "[1, 2",
                                  '{"a": [1]} x', "\n\n  [1,\n 2,\n x]", '{"a": [1, 2], "b": [3 4]}'])
def test_streamed_json_errors_name_line_and_column(tmp_path, monkeypatch, chunk, text):
    monkeypatch.setattr(jsonstream, "_CHUNK", chunk)
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text)
    e = want.value
    with pytest.raises(SourceError) as got:
        _materialize(lazy_json(path))
    assert str(got.value) == f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}"


def test_streamed_array_has_no_len(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("[1, 2]")
    arr = lazy_json(path)
    with pytest.raises(TypeError, match="no len"):
        len(arr)
    with pytest.raises(TypeError, match="cannot be indexed"):
        arr[0]
    assert list(arr) == [1, 2] == list(arr)  # re-iterable


@pytest.mark.parametrize("case", [
    "test_coco_train_file", "test_coco_val_file_and_split_override", "test_coco_unknown_image_is_no_image_skip",
    "test_karpathy_list", "test_karpathy_original_dataset_coco", "test_invalid_utf8_in_json_document",
    "test_limit_counts_caption_rows_including_skips",
])
def test_the_json_readers_give_the_same_items_when_streamed(tmp_path, monkeypatch, case):
    """The COCO/Karpathy cases of test_sources (exact items and skips), re-run on streamed documents."""
    from tests import test_sources

    monkeypatch.setattr(jsonstream, "_CHUNK", 5)
    monkeypatch.setattr(test_sources, "iter_source", functools.partial(iter_source, stream_json=True))
    getattr(test_sources, case)(tmp_path)


@pytest.mark.parametrize("case", [0, 1, 2, 3, 4, 5, 6, 7, 8])
def test_malformed_json_files_raise_the_same_when_streamed(tmp_path, monkeypatch, case):
    from tests import test_sources

    params = [p for p in test_sources.test_malformed_files_raise.pytestmark[0].args[1] if p[0].endswith(".json")]
    name, content, kw, message = params[case]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SourceError, match=message):
        list(iter_source(SourceConfig(path=str(path), **kw), stream_json=True))


# ----------------------------------------------------------------------------- sample


def test_bottom_k_selects_the_k_smallest_and_merges_to_the_same_threshold():
    rng = random.Random(1)
    values = [rng.getrandbits(64) for _ in range(5000)]
    whole = BottomK(300)
    for v in values:
        whole.add(v)
    assert whole.threshold == sorted(values)[299]
    assert sum(v <= whole.threshold for v in values) == 300
    a, b = BottomK(300), BottomK(300)
    for v in values[:1234]:
        a.add(v)
    b.merge(values[1234:])
    a.merge(b)
    assert a.threshold == whole.threshold and a.seen == 5000
    small = BottomK(10)
    for v in values[:10]:
        small.add(v)
    assert small.threshold == ALL  # every record fits: all of them are the sample


def test_record_key_depends_on_id_and_seed_only():
    assert record_key("coco-1", 0) == record_key("coco-1", 0)
    assert record_key("coco-1", 0) != record_key("coco-1", 1) != record_key("coco-2", 1)
    assert len(record_key("x\udcff", 3)) == 16  # undecodable bytes in ids are hashed, not fatal


# ----------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coco")
    src = write_coco(tmp / "captions_val2014.json")
    cfg = config(tmp, src, families=["relation_swap", "object_swap", "attribute_swap", "object_replace"])
    return tmp, cfg, generate(cfg)


def test_scattered_coco_file_gives_the_rows_of_the_in_memory_flow(coco_run):
    tmp, cfg, m = coco_run
    rows = rows_of(tmp / "out", m)
    assert m.rows == 298 and len(rows) == 298 and m.splits == {"val": 298}
    assert m.skipped == {"empty": 1, "no_image": 1, "not_string": 1}
    ref = reference_rows(cfg, tmp, m.config_hash)
    got = {r["id"]: r for r in rows}
    assert got.keys() == ref.keys()
    assert got == ref  # ids, captions, images, groups, negatives and provenance, row for row
    assert sum(len(r["relation_swap"]) + len(r["object_replace"]) for r in rows) > 100  # not vacuous


def test_scattered_coco_file_keeps_each_image_in_one_shard(coco_run):
    tmp, cfg, m = coco_run
    shard_of: dict[str, set[str]] = {}
    for s in m.shards:
        for r in pq.read_table(tmp / "out" / s.path, columns=["group"]).to_pylist():
            shard_of.setdefault(r["group"], set()).add(s.path)
    assert len(shard_of) == 60 and all(len(v) == 1 for v in shard_of.values())
    assert all(s.rows <= 16 for s in m.shards) and sum(s.rows for s in m.shards) == 298
    assert not list((tmp / "out").glob(".partial-*"))  # scratch (partitions, id keys) is gone


def test_scan_finds_scattered_and_grouped_sources(tmp_path):
    coco = write_coco(tmp_path / "captions_val2014.json", images=10)
    scan = streaming.scan_source(config(tmp_path, coco), tmp_path / "scratch")
    assert (scan.grouped, scan.records, scan.plan) == (False, 48, [])
    fixture = config(tmp_path, FIXTURES / "captions.jsonl", shard_size=8)
    scan = streaming.scan_source(fixture, tmp_path / "scratch")
    # the plan of the in-memory flow: images of 3+2+3, 2+3+2, 2+2+2+1 captions
    assert (scan.grouped, scan.records, scan.plan) == (True, 22, [("train", 8), ("train", 7), ("train", 7)])
    assert not list((tmp_path / "scratch").rglob("*.keys"))


def test_shards_are_cut_as_the_source_streams_by(tmp_path, monkeypatch):
    """Pass 2 holds one shard (plus one image) per split, not the input."""
    src = tmp_path / "k.jsonl"
    with open(src, "w") as f:
        for i in range(400):
            f.write(json.dumps({"image": f"{i // 4}.jpg", "caption": f"A dog number {i}."}) + "\n")
    cfg = config(tmp_path, src, shard_size=20)
    scan = streaming.scan_source(cfg, tmp_path / "s")
    assert scan.grouped and [n for _, n in scan.plan] == [20] * 20
    read = []
    real = streaming.read_kept

    def counting(*a, **kw):
        for r in real(*a, **kw):
            read.append(r.id)
            yield r

    monkeypatch.setattr(streaming, "read_kept", counting)
    it = iter(streaming.ShardStream(cfg, scan, tmp_path / "s"))
    i, split, first = next(it)
    assert (i, split, len(first)) == (0, "train", 20)
    assert len(read) <= 20 + 4 + 1  # the shard, the next image's first caption, nothing more
    assert [r.id for r in first] == [f"k:{n}" for n in range(1, 21)]


def test_partitions_hold_a_part_of_the_input_at_a_time(tmp_path, monkeypatch):
    src = write_coco(tmp_path / "captions_val2014.json", images=80)
    cfg = config(tmp_path, src, stream=StreamConfig(partition_rows=60))
    scan = streaming.scan_source(cfg, tmp_path / "s")
    loaded = []
    real = streaming._Partitions._load
    monkeypatch.setattr(streaming._Partitions, "_load", lambda self, p: loaded.append(len(x := real(self, p))) or x)
    stream = streaming.ShardStream(cfg, scan, tmp_path / "s")
    shards = list(stream)
    assert stream.parts.n == 7 and sum(loaded) == 2 * 398  # planned, then cut: each part read twice
    assert max(loaded) <= 2 * 60
    assert sorted(len(r) for _, _, r in shards) == sorted(n for _, n in stream.plan)
    ids = [r.id for _, _, recs in shards for r in recs]
    assert len(ids) == len(set(ids)) == 398


def test_a_small_sample_gives_the_statistics_of_its_records(tmp_path):
    src = write_coco(tmp_path / "captions_val2014.json", images=30)
    cfg = config(tmp_path, src, families=["object_replace", "attribute_replace"], stats_sample=40)
    m = generate(cfg)
    got = {r["id"]: r for r in rows_of(tmp_path / "out", m)}
    assert got == reference_rows(cfg, tmp_path, m.config_hash)
    sample = streaming.SampleRecords(cfg, streaming.scan_source(cfg, tmp_path / "s"))
    assert len(sample) == 40 == len(list(sample))


def test_duplicate_ids_stop_the_run_before_any_shard(tmp_path):
    src = tmp_path / "d.jsonl"
    rows = [{"id": f"r{i}", "image": f"{i}.jpg", "caption": f"A dog {i}."} for i in range(30)]
    rows[20]["id"] = "r3"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(tmp_path, src)
    cfg.source.id_column = "id"
    with pytest.raises(SourceError) as streamed:
        generate(cfg)
    with pytest.raises(SourceError) as plain:
        list(iter_source(cfg.source))
    assert str(streamed.value) == str(plain.value)
    assert "duplicate id 'r3'" in str(streamed.value)
    assert not list((tmp_path / "out").rglob("*.parquet"))


def test_a_killed_run_on_a_scattered_source_resumes_with_its_partitions(tmp_path, monkeypatch, caplog):
    src = write_coco(tmp_path / "captions_val2014.json", images=30)
    real = gen_mod._run_shard
    calls = []

    def dies_after_first(task):
        if calls:
            raise KeyboardInterrupt
        calls.append(task.index)
        return real(task)

    monkeypatch.setattr(gen_mod, "_run_shard", dies_after_first)
    with pytest.raises(KeyboardInterrupt):
        generate(config(tmp_path, src))
    monkeypatch.setattr(gen_mod, "_run_shard", real)
    with caplog.at_level("INFO"):
        m = generate(config(tmp_path, src))
    assert "reusing the 3 on-disk partitions" in caplog.text
    assert m.timings.shards_resumed == 1
    clean = generate(config(tmp_path, src, out="clean"))
    digests = {s.path: s.sha256 for s in m.shards}
    assert digests == {s.path: s.sha256 for s in clean.shards}


def test_record_order_within_a_group_is_the_source_order(tmp_path):
    src = write_coco(tmp_path / "captions_val2014.json", images=12)
    cfg = config(tmp_path, src)
    scan = streaming.scan_source(cfg, tmp_path / "s")
    order = {r.id: n for n, r in enumerate(common.kept_records(iter_source(cfg.source), 300, Counter(), []))}
    for _, _, recs in streaming.ShardStream(cfg, scan, tmp_path / "s"):
        by_group: dict[str, list[CaptionRecord]] = {}
        for r in recs:
            by_group.setdefault(r.group, []).append(r)
        for g in by_group.values():
            assert [order[r.id] for r in g] == sorted(order[r.id] for r in g)


def test_engine_flags_map_onto_the_config(tmp_path):
    from pipeline.cli import build_parser
    from pipeline.cli.generate import generate_config_from_args

    args = build_parser().parse_args(["generate", "-i", "c.jsonl", "--engine", "ray", "--actors", "8",
                                      "--ray-address", "auto", "--set", "stream.partition_rows=5000"])
    cfg = generate_config_from_args(args)
    assert (cfg.engine, cfg.ray.actors, cfg.ray.address, cfg.stream.partition_rows) == ("ray", 8, "auto", 5000)
    plain = generate_config_from_args(build_parser().parse_args(["generate", "-i", "c.jsonl"]))
    assert (plain.engine, plain.ray.actors, plain.ray.address) == ("local", 2, None)
    assert plain.data_dict() == cfg.data_dict()  # neither the engine nor its settings change the data
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "-i", "c.jsonl", "--engine", "spark"])


# ----------------------------------------------------------------------------- the worker pool


def test_the_pool_forks_its_workers_before_the_source_is_read(tmp_path, monkeypatch):
    """Forked from a parent that holds nothing of the input: no worker carries a copy of pass 1's
    bookkeeping, so their memory does not grow with the input."""
    import multiprocessing as mp

    seen = []
    real_scan = gen_mod.scan_source

    def scan(cfg, work):
        seen.append(len(mp.active_children()))
        return real_scan(cfg, work)

    monkeypatch.setattr(gen_mod, "scan_source", scan)
    m = generate(config(tmp_path, FIXTURES / "captions.jsonl", workers=2, shard_size=8))
    assert seen == [2] and m.rows == 22
    assert mp.active_children() == []  # and shut down with the run


def test_the_driver_holds_at_most_limit_tasks_of_a_pool():
    from concurrent.futures import Future

    class Pool:  # runs each task when it is submitted
        def submit(self, fn, task):
            f: Future = Future()
            f.set_result(fn(task))
            return f

    produced, collected, ahead = [], [], []

    def tasks():
        for i in range(10):
            produced.append(i)
            ahead.append(len(produced) - len(collected))
            yield i

    gen_mod._submit_bounded(Pool(), lambda t: t * 10, tasks(), 3, collected.append)
    assert sorted(collected) == [i * 10 for i in range(10)]
    assert max(ahead) == 3  # never more than `limit` tasks between the source and the results


_ACTOR_START = """
import importlib.metadata as md, sys
from pipeline.config import GenerateConfig, ParseConfig
from pipeline.nlp import without_torch
from pipeline.nlp import load_nlp
real = md.requires
md.requires = lambda name: ["spacy-transformers<1.4,>=1.3"] if name == "en_core_web_trf" else real(name)
without_torch(ParseConfig(model="en_core_web_trf"))
print("trf", "torch" in sys.modules)
without_torch(ParseConfig())
try:
    import torch
    print("sm imported")
except ImportError:
    print("sm refused", "torch" in sys.modules)
try:  # libraries that look torch up in sys.modules still import (nltk did not with a None entry)
    from nltk.corpus import wordnet as wn
    wn.ensure_loaded()
    print("nltk imports")
except LookupError:  # no WordNet data installed: the lookup fails, not the import
    print("nltk imports")
print([t.dep_ for t in load_nlp(GenerateConfig().parse)("A cat sitting on a black mat.")])
"""


def test_a_ray_actor_skips_torch_only_when_its_spacy_pipeline_does_not_need_it():
    # in a fresh process, as an actor starts (this one has imported torch long ago)
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _ACTOR_START], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout
    assert out.splitlines() == [
        "trf False",  # a transformer pipeline keeps torch (nothing imported it yet)
        "sm refused False",  # the CNN pipeline: `import torch` now fails, thinc runs without it
        "nltk imports",
        "['det', 'ROOT', 'acl', 'prep', 'det', 'amod', 'pobj', 'punct']",  # as with torch
    ]


def test_pass_1_progress_shows_the_captions_read(tmp_path, capsys):
    """The read bar ends on the count read (a fast read used to leave only "0 captions" on screen)."""
    scan = streaming.scan_source(GenerateConfig(source=SourceConfig(path=str(Path(__file__).parent / "fixtures/captions.jsonl"))),
                       tmp_path)
    assert scan.records == 22
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("read (pass 1): 22 captions")
