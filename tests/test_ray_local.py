"""``engine: ray`` starting its own local Ray (``ray.address`` unset), as ``hardneg generate --engine
ray`` does on a laptop: the run writes the local engine's shards and leaves no Ray behind.

A module of its own: ``tests/test_ray_engine.py`` shares one Ray, started by its fixture, between
its tests, and an engine that finds Ray running joins it instead of starting one.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray", reason="the ray engine needs ray")

from pipeline.config import GenerateConfig, RayConfig, SourceConfig  # noqa: E402
from pipeline.engines.ray_engine import stop_autoscaler_monitor  # noqa: E402
from pipeline.generate import generate  # noqa: E402
from tests.test_engines import write_coco  # noqa: E402


def test_the_engine_starts_a_local_ray_writes_the_local_shards_and_shuts_it_down(tmp_path, monkeypatch):
    assert not ray.is_initialized()
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    write_coco(tmp_path / "captions_val2014.json", images=24)

    def cfg(out: str, engine: str) -> GenerateConfig:
        return GenerateConfig(name="t", source=SourceConfig(path="captions_val2014.json"), out=out,
                              manifest_dir="manifests", engine=engine, shard_size=8,
                              ray=RayConfig(actors=1, num_cpus=2))

    local = generate(cfg("local", "local"))
    m = generate(cfg("ray", "ray"))
    assert not ray.is_initialized()  # the Ray it started is gone
    assert {s.path: s.sha256 for s in m.shards} == {s.path: s.sha256 for s in local.shards}
    # skip locations name the source as given, whichever engine read it
    assert m.skip_examples == local.skip_examples == [
        "empty: captions_val2014.json:record 3", "not_string: captions_val2014.json:record 7",
        "no_image: captions_val2014.json:record 120"]
    assert m.timings._extra["ray_init_seconds"] > 0 and m.timings._extra["ray_shutdown_seconds"] > 0


def test_stop_autoscaler_monitor_kills_and_reaps_the_head_nodes_monitor_only():
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    try:
        head = SimpleNamespace(is_head=lambda: True, all_processes={"monitor": [SimpleNamespace(process=procs[0])]})
        worker = SimpleNamespace(is_head=lambda: False, all_processes={"monitor": [SimpleNamespace(process=procs[1])]})
        stop_autoscaler_monitor(SimpleNamespace(_private=SimpleNamespace(worker=SimpleNamespace(_global_node=head))))
        stop_autoscaler_monitor(SimpleNamespace(_private=SimpleNamespace(worker=SimpleNamespace(_global_node=worker))))
        assert procs[0].poll() == -9  # killed (SIGKILL) and reaped
        assert procs[1].poll() is None  # a joined cluster's node is not ours to touch
        stop_autoscaler_monitor(SimpleNamespace())  # a Ray without that internal: no error
    finally:
        for p in procs:
            p.kill()
            p.wait()
