"""The Makefile's install targets, run with a stand-in Python that records what it is asked to do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/bin/sh
echo "HARDNEG_COMPILE=${HARDNEG_COMPILE:-1} $*" >> "$(dirname "$0")/calls.log"
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_first_make_compiles_the_rules_once_and_a_second_does_nothing(tmp_path: Path) -> None:
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
    bin_dir.mkdir()
    venv.mkdir()
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {**os.environ, "MAKEFLAGS": ""}
    env.pop("HARDNEG_COMPILE", None)

    def make() -> list[str]:
        log = bin_dir / "calls.log"
        log.unlink(missing_ok=True)
        subprocess.run(["make", "-s", "-C", str(ROOT), f"VENV={venv}", f"BIN={bin_dir}", "setup"], env=env,
                       check=True, capture_output=True)
        return log.read_text().splitlines() if log.exists() else []

    calls = make()
    installs = [c for c in calls if " pip install " in f" {c.split(' ', 1)[1]} " and "--upgrade pip" not in c]
    assert installs == [
        "HARDNEG_COMPILE=0 -m pip install --quiet -e .[all]",  # the dependencies, nothing compiled
        "HARDNEG_COMPILE=1 -m pip install --quiet --no-deps -e .",  # the one compile
    ]
    assert make() == []  # up to date: nothing installed, nothing compiled
