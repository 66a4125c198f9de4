"""``engine: ray`` on a real local Ray instance: the local engine's rows, a killed actor, a failed
driver, a source read by several read tasks.

Skipped when Ray is not installed (``pip install 'hardneg[ray]'``; ``make test`` installs it).
Six Ray runs in all, to keep the module well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="the ray engine needs ray")

from pipeline import generate as gen_mod  # noqa: E402
from pipeline import sources as sources_mod  # noqa: E402
from pipeline.config import GenerateConfig, RayConfig, SourceConfig, StreamConfig  # noqa: E402
from pipeline.core.errors import ConfigError, SourceError  # noqa: E402
from pipeline.engines.ray_engine import RayEngine  # noqa: E402
from pipeline.generate import generate  # noqa: E402
from pipeline.sources import source_parts  # noqa: E402
from tests.test_engines import write_coco  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
_REAL_RUN_SHARD = gen_mod._run_shard


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # the workers import this module by the name pytest gave it, to run the test's shard functions
    paths = [str(Path(__file__).parent), str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}})
    yield
    ray.shutdown()


def config(tmp_path: Path, src: Path, out: str, engine: str, actors: int = 2, **kw) -> GenerateConfig:
    kw.setdefault("shard_size", 8)
    return GenerateConfig(
        name="t", source=SourceConfig(path=str(src)), out=str(tmp_path / out),  # the name is in the hash
        manifest_dir=str(tmp_path / "manifests"), engine=engine, ray=RayConfig(actors=actors),
        stream=StreamConfig(partition_rows=50), **kw,
    )


def rows(out: Path, m) -> dict[str, dict]:
    return {r["id"]: r for s in m.shards for r in pq.read_table(out / s.path).to_pylist()}


def _dies_once_on_the_second_shard(task):  # module level: Ray pickles it by name
    marker = Path(task.path).parents[2] / "killed-once"  # in the output folder, beside the work folder
    if task.index == 1 and not marker.exists():
        marker.touch()
        os._exit(1)  # the actor process dies mid-run, as when killed
    return _REAL_RUN_SHARD(task)


def _fails_on_the_last_shard(task):
    if task.index == 2:
        raise RuntimeError("driver gone")  # stands in for a driver killed after two shards
    return _REAL_RUN_SHARD(task)


def test_ray_engine_survives_a_killed_actor_and_writes_the_local_rows(tmp_path, monkeypatch):
    src = write_coco(tmp_path / "captions_val2014.json", images=24)  # scattered: grouped on disk
    families = ["relation_swap", "object_swap", "attribute_swap", "object_replace"]
    local = generate(config(tmp_path, src, "local", "local", families=families))
    monkeypatch.setattr(gen_mod, "_run_shard", _dies_once_on_the_second_shard)
    m = generate(config(tmp_path, src, "ray", "ray", families=families))
    assert (tmp_path / "ray" / "killed-once").exists()  # an actor did die mid-run
    got, want = rows(tmp_path / "ray", m), rows(tmp_path / "local", local)
    assert len(got) == m.rows == local.rows == 118
    assert got == want  # every row, with the same negatives and provenance
    assert {s.path: s.sha256 for s in m.shards} == {s.path: s.sha256 for s in local.shards}  # same shards, even
    assert (m.skipped, m.skip_examples) == (local.skipped, local.skip_examples)
    assert m.families == local.families
    assert m.timings._extra["engine"] == "ray" and m.timings._extra["ray_actors"] == 2
    assert m.timings._extra["ray_shutdown_seconds"] == 0.0  # the test's Ray, not the engine's: left running
    assert m.config_hash == local.config_hash  # the engine is not part of the data


def test_ray_engine_reads_a_parse_store_with_the_local_rows(tmp_path):
    # early in the module: later tests end runs on purpose, and their actors may still hold the CPUs
    from pipeline.config import ParseStoreConfig
    from pipeline.parse import build_store

    src = write_coco(tmp_path / "captions_val2014.json", images=24)  # scattered: grouped on disk
    families = ["relation_swap", "object_swap", "attribute_swap", "object_replace"]
    build_store(ParseStoreConfig(source=SourceConfig(path=str(src)), out=str(tmp_path / "store"), part_size=50))
    local = generate(config(tmp_path, src, "local", "local", families=families))
    m = generate(config(tmp_path, src, "ray", "ray", families=families, parsed=str(tmp_path / "store")))
    assert {s.path: s.sha256 for s in m.shards} == {s.path: s.sha256 for s in local.shards}
    assert m.rows == local.rows == 118 and m.config_hash == local.config_hash


def write_parquet_folder(folder: Path, files: int) -> Path:
    """The fixture captions as a folder of Parquet files, cut between images (a source the Ray
    engine reads with a read task per file)."""
    rows = [json.loads(line) for line in (FIXTURES / "captions.jsonl").read_text().splitlines() if line.strip()]
    per = -(-len(rows) // files)
    folder.mkdir()
    start = 0
    for k in range(files):
        end = min(len(rows), start + per)
        while 0 < end < len(rows) and rows[end]["image"] == rows[end - 1]["image"]:
            end += 1
        pq.write_table(pa.Table.from_pylist(rows[start:end]), folder / f"part-{k}.parquet")
        start = end
    return folder


def test_a_failed_driver_rerun_does_not_redo_finished_shards(tmp_path, monkeypatch):
    src = write_parquet_folder(tmp_path / "captions", files=3)
    assert len(source_parts(SourceConfig(path=str(src)))) == 3  # three read tasks
    monkeypatch.setattr(gen_mod, "_run_shard", _fails_on_the_last_shard)
    with pytest.raises(Exception, match="driver gone"):
        generate(config(tmp_path, src, "ray", "ray", actors=1))
    assert not (tmp_path / "manifests" / "ray.json").exists()  # no manifest for a partial run
    done = sorted(p.name for p in (tmp_path / "ray").glob(".partial-*/train/*.parquet"))
    assert done == ["part-00000-of-00003.parquet", "part-00001-of-00003.parquet"]
    monkeypatch.setattr(gen_mod, "_run_shard", _REAL_RUN_SHARD)
    m = generate(config(tmp_path, src, "ray", "ray", actors=1))
    assert m.timings.shards_resumed == 2  # the finished shards are not redone
    local = generate(config(tmp_path, src, "local", "local"))
    assert rows(tmp_path / "ray", m) == rows(tmp_path / "local", local)
    assert {s.path: s.sha256 for s in m.shards} == {s.path: s.sha256 for s in local.shards}


def test_a_jsonl_file_read_in_parts_gives_the_local_rows(tmp_path, monkeypatch):
    src = tmp_path / "captions_val.jsonl"
    lines = (FIXTURES / "captions.jsonl").read_text().splitlines()
    lines[5:5] = ['{"image": "val2014/000009.jpg", "caption": "   "}', "", '{"image": null, "caption": "A dog."}']
    src.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(sources_mod, "PART_BYTES", 400)
    assert len(source_parts(SourceConfig(path=str(src)))) == 5  # five read tasks, each cut at a line start
    local = generate(config(tmp_path, src, "local", "local"))
    m = generate(config(tmp_path, src, "ray", "ray", actors=1))
    assert m.rows == local.rows == 22
    assert rows(tmp_path / "ray", m) == rows(tmp_path / "local", local)
    assert {s.path: s.sha256 for s in m.shards} == {s.path: s.sha256 for s in local.shards}
    assert m.skipped == local.skipped == {"empty": 1, "no_image": 1}
    assert m.skip_examples == local.skip_examples == [f"empty: {src}:6", f"no_image: {src}:8"]


def test_a_source_error_stops_the_ray_run_with_the_readers_message(tmp_path, monkeypatch):
    src = tmp_path / "d.jsonl"
    rows = [{"id": f"r{i}", "image": f"{i}.jpg", "caption": f"A dog {i}."} for i in range(30)]
    rows[20]["id"] = "r3"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(tmp_path, src, "ray", "ray", actors=1)
    cfg.source.id_column = "id"
    monkeypatch.setattr(sources_mod, "PART_BYTES", 500)  # the two r3 in different read tasks
    assert len(source_parts(cfg.source)) == 4
    # the statistics pass fails, so the task pipeline never starts
    with pytest.raises(SourceError, match="duplicate id 'r3' \\(second time on caption 'A dog 20.'\\)"):
        generate(cfg)
    assert not list((tmp_path / "ray").rglob("*.parquet"))
    assert ray.is_initialized()  # a Ray the engine did not start is left running


def _fails_to_count(task):
    raise RuntimeError("parser gone")


def test_a_failed_corpus_pass_tells_the_waiting_read_task_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(gen_mod, "_count_shard", _fails_to_count)
    with pytest.raises(Exception, match="parser gone"):
        generate(config(tmp_path, FIXTURES / "captions.jsonl", "ray", "ray", actors=1))
    # the gate the read task waits at after the count tasks: written empty (end), not left to hang
    gates = list((tmp_path / "ray").glob(".partial-*/.ray-gate-*"))
    assert [g.read_text() for g in gates] == [""]
    # and no read task is left running (Ray titles a worker process by its task: ray::Read_Source)
    deadline = time.monotonic() + 20
    while _read_tasks_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _read_tasks_running()
    assert not list((tmp_path / "ray").rglob("*.parquet"))
    assert ray.is_initialized()


def _read_tasks_running() -> list[str]:
    titles = []
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if title.startswith("ray::Read"):
            titles.append(title)
    return titles


def test_a_local_ray_the_engine_starts_gets_the_configured_worker_niceness(tmp_path, monkeypatch):
    class Started(Exception):
        pass

    seen = {}

    def init(**kw):
        seen.update(kw)
        raise Started

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = config(tmp_path, FIXTURES / "captions.jsonl", "ray", "ray")
    cfg.ray.worker_niceness = 5
    with pytest.raises(Started):
        RayEngine(cfg, tmp_path / "work", gen_mod._init_worker, (None, None, None))
    # a new local Ray even if `ray start` left one; Ray's own default niceness is 15, with which
    # the actors would yield the CPU to every normal process
    assert seen["address"] == "local" and seen["_system_config"] == {"worker_niceness": 5}
    assert seen["num_cpus"] is None and seen["include_dashboard"] is False
    # Ray's RAY_ADDRESS (ray job submit, KubeRay) joins that cluster, whose settings are its own
    seen.clear()
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    with pytest.raises(Started):
        RayEngine(cfg, tmp_path / "work", gen_mod._init_worker, (None, None, None))
    assert seen["address"] == "10.0.0.7:6379" and "_system_config" not in seen and "num_cpus" not in seen


def test_ray_engine_needs_ray_and_a_known_engine(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="engine must be one of"):
        generate(config(tmp_path, FIXTURES / "captions.jsonl", "x", "spark"))
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from pipeline.engines.ray_engine import import_ray

    with pytest.raises(ConfigError, match=r"pip install 'hardneg\[ray\]'"):
        import_ray()

