"""``out`` as an fsspec URL: the dataset is built in a local staging folder and uploaded whole,
the manifest last; the rows are those of a local run (fsspec's in-memory filesystem stands in for
``s3://`` / ``gs://``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from pipeline.config import GenerateConfig, SourceConfig
from pipeline.core.errors import ConfigError
from pipeline.generate import generate, is_url

FIXTURES = Path(__file__).parent / "fixtures"


def _cfg(tmp_path: Path, out: str) -> GenerateConfig:
    return GenerateConfig(name="url", source=SourceConfig(path=str(FIXTURES / "captions.jsonl")), out=out,
                          manifest_dir=str(tmp_path / "manifests"), stage_dir=str(tmp_path / "stage"), shard_size=8)


@pytest.mark.parametrize("out, url", [("s3://b/x", True), ("memory://b/x", True), ("file:///tmp/x", False),
                                      ("data/negatives", False), ("/abs/path", False)])
def test_what_counts_as_a_url(out, url):
    assert is_url(out) is url


def test_a_url_gets_the_rows_of_a_local_run_and_the_manifest_last(tmp_path, monkeypatch):
    url = "memory://hardneg-test/negatives"
    fs = fsspec.filesystem("memory")
    order: list[str] = []
    put = type(fs).put_file

    def recording_put(self, lpath, rpath, *a, **kw):
        order.append(rpath.rsplit("/", 1)[-1])
        return put(self, lpath, rpath, *a, **kw)

    monkeypatch.setattr(type(fs), "put_file", recording_put)
    manifest = generate(_cfg(tmp_path, url))
    local = generate(dataclasses.replace(_cfg(tmp_path, str(tmp_path / "local")), stage_dir=None,
                                         manifest_dir=str(tmp_path / "local_manifests")))

    assert manifest.output_dir == url and order[-1] == "manifest.json"
    remote = json.loads(fs.cat("/hardneg-test/negatives/manifest.json"))
    assert remote["output_dir"] == url and remote["config_hash"] == local.config_hash
    assert json.loads((tmp_path / "manifests" / "url.json").read_text())["output_dir"] == url
    assert [s.path for s in manifest.shards] == [s.path for s in local.shards]
    for s in local.shards:
        with fs.open(f"/hardneg-test/negatives/{s.path}", "rb") as f:
            remote_rows = pq.read_table(f).to_pylist()
        assert remote_rows == pq.read_table(tmp_path / "local" / s.path).to_pylist()
    # a rerun finds the staging folder complete: nothing is generated again, the upload is repeated
    order.clear()
    again = generate(_cfg(tmp_path, url))
    assert again.config_hash == manifest.config_hash and order[-1] == "manifest.json"
    fs.rm("/hardneg-test", recursive=True)


def test_an_unknown_scheme_is_a_config_error_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="'nosuchfs://b/x' is not a location fsspec can write to"):
        generate(_cfg(tmp_path, "nosuchfs://b/x"))
    assert not (tmp_path / "stage").exists()
