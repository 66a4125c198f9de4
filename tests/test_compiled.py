"""The compiled rule modules: same output as the sources, and a stale build never runs.

The guard tests build a throwaway copy of the package with a fake extension module (a file that
cannot be loaded), so they run on any machine, compiler or not: if the guard let Python pick the
extension, the import would fail.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import _compiled

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"

PROBE = """
import json, sys
import pipeline.rules.syntax, pipeline.rules.families.swap, pipeline.records
from pipeline._compiled import status
print(json.dumps({"status": status(), "syntax": pipeline.rules.syntax.__file__,
                  "swap": pipeline.rules.families.swap.__file__, "records": pipeline.records.__file__}))
"""


def probe(root: Path, **env: str) -> dict:
    """Import the package found in ``root`` in a fresh interpreter and report what got loaded."""
    full = {k: v for k, v in os.environ.items() if k != _compiled.PURE_ENV}
    full.update(PYTHONPATH=str(root), **env)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=root, env=full, capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


@pytest.fixture
def fake_build(tmp_path: Path) -> Path:
    """A copy of the package whose compiled modules have unloadable "builds" and a build record."""
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("*.so", "__pycache__", "_compiled.json"))
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for module in _compiled.COMPILED_MODULES:
        src = _compiled.source_path(module, tmp_path)
        src.with_name(src.stem + suffix).write_bytes(b"not a shared object")
    digests = _compiled.source_digests(tmp_path)
    (tmp_path / "pipeline" / _compiled.BUILD_INFO).write_text(json.dumps({"sources": digests}))
    return tmp_path


def test_every_compiled_module_has_a_source():
    for module in _compiled.COMPILED_MODULES:
        assert _compiled.source_path(module, ROOT).is_file(), module


def test_a_matching_build_is_preferred(fake_build):
    # the build record matches the sources, so the guard lets Python take the extension: the
    # fake one cannot load, which proves the extension, not the .py, would run
    with pytest.raises(subprocess.CalledProcessError) as e:
        probe(fake_build)
    assert "pipeline/rules/" in e.value.stderr and "ImportError" in e.value.stderr


def test_an_edited_source_runs_as_python_with_a_warning(fake_build):
    swap = fake_build / "pipeline" / "rules" / "families" / "swap.py"
    swap.write_text(swap.read_text() + "\n# edited after the build\n")
    got = probe(fake_build)
    assert got["status"] == {"compiled": False, "reason": "stale build: pipeline.rules.families.swap"}
    assert got["syntax"].endswith("pipeline/rules/syntax.py") and got["swap"].endswith("pipeline/rules/families/swap.py")
    assert "pipeline.rules.families.swap changed since hardneg was compiled" in got["stderr"]


def test_a_leftover_build_of_a_module_no_longer_compiled_is_ignored(fake_build):
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (fake_build / "pipeline" / f"records{suffix}").write_bytes(b"left over")
    got = probe(fake_build)
    assert got["status"] == {"compiled": False, "reason": "stale build: pipeline.records"}
    assert got["records"].endswith("pipeline/records.py") and got["syntax"].endswith("pipeline/rules/syntax.py")


def test_hardneg_pure_forces_the_sources(fake_build):
    got = probe(fake_build, HARDNEG_PURE="1")
    assert got["status"] == {"compiled": False, "reason": "HARDNEG_PURE is set"}
    assert got["syntax"].endswith("pipeline/rules/syntax.py")


def test_no_build_is_plain_python(tmp_path):
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("*.so", "__pycache__", "_compiled.json"))
    got = probe(tmp_path)
    assert got["status"] == {"compiled": False, "reason": "not compiled (pure Python)"}
    assert got["stderr"] == ""


GENERATE = """
import json, sys, logging
from pipeline.config import GenerateConfig, SourceConfig
from pipeline.generate import generate
from pipeline._compiled import status
from pipeline.core.atomic import sha256_file
from pathlib import Path
out = Path(sys.argv[2])
cfg = GenerateConfig(name="parity", source=SourceConfig(path=sys.argv[1], split="val"), out=str(out / "o"),
                     manifest_dir=str(out / "m"), shard_size=8)
cfg.families = ["relation_swap", "attribute_swap", "object_swap",
                "relation_replace", "attribute_replace", "object_replace"]
m = generate(cfg)
print(json.dumps({"status": status(), "families": m.to_dict()["families"],
                  "shards": {s.path: sha256_file(out / "o" / s.path) for s in m.shards}}))
"""


@pytest.mark.skipif(not _compiled.status()["compiled"], reason=f"no compiled build here ({_compiled.status()['reason']})")
def test_compiled_and_pure_write_identical_shards(tmp_path):
    runs = {}
    for name, env in (("compiled", {}), ("pure", {"HARDNEG_PURE": "1"})):
        full = {k: v for k, v in os.environ.items() if k != _compiled.PURE_ENV}
        full.update(env)
        out = subprocess.run(
            [sys.executable, "-c", GENERATE, str(FIXTURES / "captions.jsonl"), str(tmp_path / name)],
            env=full, capture_output=True, text=True, check=True,
        )
        runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs["compiled"]["status"]["compiled"] is True and runs["pure"]["status"]["compiled"] is False
    assert runs["compiled"]["shards"] == runs["pure"]["shards"]
    assert runs["compiled"]["families"] == runs["pure"]["families"]
    assert sum(f["negatives"] for f in runs["pure"]["families"].values()) > 0


def test_a_failed_build_is_reported_and_runs_the_sources(tmp_path):
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("*.so", "__pycache__", "_compiled.json"))
    (tmp_path / "pipeline" / _compiled.BUILD_INFO).write_text(json.dumps({"failed": "error: command 'cc' failed"}))
    got = probe(tmp_path)
    assert got["status"] == {"compiled": False, "reason": "build failed: error: command 'cc' failed"}
    assert "compiling the rule modules failed when hardneg was installed (error: command 'cc' failed)" in got["stderr"]
    assert got["syntax"].endswith("pipeline/rules/syntax.py")


def test_the_compile_boundary_is_the_rules_package():
    assert _compiled.COMPILED_MODULES[0] == "pipeline.rules"
    assert all(m.startswith("pipeline.rules") for m in _compiled.COMPILED_MODULES)
    assert {"pipeline.rules.syntax", "pipeline.rules.families.swap", "pipeline.rules.builder"} <= set(_compiled.COMPILED_MODULES)
    assert "pipeline.records" not in _compiled.COMPILED_MODULES
