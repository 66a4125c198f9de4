"""Compiles stage 1's per-caption modules with mypyc; everything else is in pyproject.toml.

The list of modules and the stale-build guard live in ``pipeline/_compiled.py``. The build is
optional: ``HARDNEG_COMPILE=0`` skips it, and without mypy or a C compiler hardneg installs as pure
Python (same output, about half the rule speed; see docs/compiled-rules.md and docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _compiled_module():
    spec = importlib.util.spec_from_file_location("_hardneg_compiled", ROOT / "pipeline" / "_compiled.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


COMPILED = _compiled_module()


class OptionalBuildExt(build_ext):
    """Builds the extensions, records the sources they came from, and falls back to pure Python."""

    def run(self) -> None:
        if self.inplace:  # an editable install: drop builds of modules no longer in the list
            for module, paths in COMPILED.extension_modules(ROOT).items():
                if module not in COMPILED.COMPILED_MODULES:
                    for path in paths:
                        path.unlink()
        try:
            super().run()
        except Exception as e:  # noqa: BLE001  (no compiler, no headers: install anyway, pure Python)
            for path in self.get_outputs():
                Path(path).unlink(missing_ok=True)
            banner = "!" * 78
            print(f"{banner}\nhardneg: COMPILING THE RULE MODULES FAILED ({e});\n"
                  f"installing pure Python (same output, about half the rule speed)\n{banner}", file=sys.stderr)
            # recorded, so every run warns too (pipeline/_compiled.py), and `make setup` prints it
            self._record({"failed": str(e) or type(e).__name__})
            return
        self._record({"sources": COMPILED.source_digests(ROOT), "compiler": "mypyc"})

    def _record(self, info: dict) -> None:
        targets = {Path(self.build_lib) / "pipeline"}
        if self.inplace:
            targets.add(ROOT / "pipeline")
        for target in targets:
            target.mkdir(parents=True, exist_ok=True)
            (target / COMPILED.BUILD_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


def ext_modules() -> list:
    if os.environ.get("HARDNEG_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("hardneg: mypy is not installed; installing pure Python", file=sys.stderr)
        return []
    paths = [str(COMPILED.source_path(m, ROOT).relative_to(ROOT)) for m in COMPILED.COMPILED_MODULES]
    return mypycify(["--config-file", str(ROOT / "pyproject.toml"), *paths], opt_level="3", group_name="hardneg_rules")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
