"""The typed manifest: what ``generate`` writes round-trips exactly, keys a newer writer added survive
in place, and a malformed section is an error that names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import GenerateConfig, SourceConfig
from pipeline.contract.manifest import (
    FamilyCounts,
    Manifest,
    ShardEntry,
    load_manifest,
    read_manifest,
)
from pipeline.contract.shards import verify_shards
from pipeline.core.errors import HardnegError, SourceError

CAPTIONS = Path(__file__).parent / "fixtures" / "captions.jsonl"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    pytest.importorskip("spacy")
    from pipeline.generate import generate

    tmp = tmp_path_factory.mktemp("manifest")
    cfg = GenerateConfig(name="fixture", source=SourceConfig(path=str(CAPTIONS), split="val"), out=str(tmp / "out"),
                         manifest_dir=str(tmp / "manifests"), shard_size=8)
    generate(cfg)
    return tmp / "out"


def test_a_generated_manifest_round_trips_exactly(generated: Path):
    text = (generated / "manifest.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    m = load_manifest(generated)
    back = m.to_dict()
    assert back == raw
    assert json.dumps(back, indent=2) + "\n" == text  # same keys, same order, same values
    # typed access to what readers use
    assert m.rows == sum(s.rows for s in m.shards) == sum(m.splits.values())
    assert all(isinstance(s, ShardEntry) for s in m.shards)
    assert all(isinstance(f, FamilyCounts) for f in m.families.values())
    assert list(m.families) == raw["config"]["families"]
    assert m.families["relation_swap"].negatives == raw["families"]["relation_swap"]["negatives"]
    assert m.source.fingerprint == raw["source"]["fingerprint"] and m.spacy.package == raw["spacy"]["package"]
    assert m.timings.workers == raw["timings"]["workers"] and m.platform.python == raw["platform"]["python"]
    assert verify_shards(generated, m).keys() == {s.path for s in m.shards}


def test_keys_of_a_newer_writer_are_kept_in_place(generated: Path, tmp_path: Path):
    raw = json.loads((generated / "manifest.json").read_text())
    newer = {}
    for k, v in raw.items():
        newer[k] = v
        if k == "config_hash":
            newer["plausibility_source"] = {"kind": "sample", "captions": 22}
    newer["families"]["object_swap"]["implausible"] = 3
    newer["shards"][0]["row_groups"] = 1
    newer["timings"]["rank_seconds"] = 0.5
    path = tmp_path / "newer.json"
    path.write_text(json.dumps(newer, indent=2))

    m = read_manifest(path)
    assert json.dumps(m.to_dict()) == json.dumps(newer)  # order included
    assert m.families["object_swap"].negatives == raw["families"]["object_swap"]["negatives"]
    assert m._extra == {"plausibility_source": {"kind": "sample", "captions": 22}}


def test_a_fresh_manifest_writes_its_fields_in_order_and_absent_keys_stay_absent():
    m = Manifest(name="x", rows=3, shards=[ShardEntry("test/a.parquet", "test", 3, 10, "ab")])
    d = m.to_dict()
    assert list(d)[:3] == ["manifest_version", "name", "schema_version"]
    assert d["shards"] == [{"path": "test/a.parquet", "split": "test", "rows": 3, "bytes": 10, "sha256": "ab"}]
    assert Manifest.from_dict(d) == m

    partial = Manifest.from_dict({"name": "old", "shards": [{"path": "a", "split": "s"}]})
    assert partial.to_dict() == {"name": "old", "shards": [{"path": "a", "split": "s"}]}
    assert partial.shards[0].rows is None and partial.skipped_total == 0


def test_malformed_manifests_are_errors_that_name_the_key(tmp_path: Path):
    bad = tmp_path / "ds"
    bad.mkdir()
    with pytest.raises(HardnegError, match="has no manifest.json"):
        load_manifest(bad)
    (bad / "manifest.json").write_text('{"shards": {"a": 1}}')
    with pytest.raises(SourceError, match=r"manifest\.shards must be a JSON list"):
        load_manifest(bad)
    (bad / "manifest.json").write_text('{"families": {"relation_swap": [1]}}')
    with pytest.raises(SourceError, match=r"manifest\.families\.relation_swap must be a JSON object"):
        load_manifest(bad)
    (bad / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SourceError, match="manifest must be a JSON object"):
        load_manifest(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(SourceError, match="not a readable manifest"):
        load_manifest(bad)
