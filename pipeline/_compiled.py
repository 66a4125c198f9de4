"""Which rule modules run compiled, and a guard that never lets a stale build run.

``pip install`` compiles the per-caption modules below with mypyc (``setup.py``); the outputs are
byte-identical to the pure-Python modules (tests/test_compiled.py), about twice as fast. Python
imports an extension module in preference to the ``.py`` beside it, so an edited source would be
shadowed by its old build. At import, ``pipeline/__init__.py`` calls :func:`activate`: when the
sources differ from the ones compiled (``_compiled.json`` holds their sha256), or ``HARDNEG_PURE=1``
is set, every module below is loaded from its ``.py`` file instead, with a warning in the stale case.

Stdlib only: ``setup.py`` reads this file to know what to compile.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the compile boundary: every module of this package (everything that runs once per caption) is
#: compiled, or none is. Types that cross process boundaries live outside it (``pipeline.records``):
#: compiled frozen dataclasses cannot be unpickled.
RULES_PACKAGE = "pipeline.rules"


def rule_modules(root: Path) -> tuple[str, ...]:
    """The modules of :data:`RULES_PACKAGE` found under ``root`` (the folder that holds ``pipeline/``)."""
    base = root.joinpath(*RULES_PACKAGE.split("."))
    names = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__") for p in base.rglob("*.py")}
    return tuple(sorted(names))


#: written next to the package by setup.py after a successful build
BUILD_INFO = "_compiled.json"
PURE_ENV = "HARDNEG_PURE"

_PACKAGE_DIR = Path(__file__).resolve().parent
#: the modules setup.py compiles
COMPILED_MODULES: tuple[str, ...] = rule_modules(_PACKAGE_DIR.parent)
_STATE: dict[str, Any] = {"compiled": False, "reason": "not checked"}


def source_path(module: str, root: Path) -> Path:
    """The ``.py`` file of ``module`` under ``root`` (the folder that holds ``pipeline/``)."""
    parts = module.split(".")
    pkg = root.joinpath(*parts)
    return pkg / "__init__.py" if pkg.is_dir() else root.joinpath(*parts[:-1], parts[-1] + ".py")


def source_digests(root: Path) -> dict[str, str]:
    """sha256 of every compiled module's source, as setup.py records it and the guard checks it."""
    return {m: hashlib.sha256(source_path(m, root).read_bytes()).hexdigest() for m in COMPILED_MODULES}


def extension_modules(root: Path) -> dict[str, list[Path]]:
    """Modules of the package that have a compiled extension beside their source (any build), and
    those extension files."""
    suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
    found: dict[str, list[Path]] = {}
    for path in (root / "pipeline").rglob("*.*"):
        suffix = next((x for x in suffixes if path.name.endswith(x)), None)
        if suffix is not None:
            rel = path.relative_to(root).with_name(path.name[: -len(suffix)])
            found.setdefault(".".join(rel.parts).removesuffix(".__init__"), []).append(path)
    return found


class _PureFinder(importlib.abc.MetaPathFinder):
    """Loads the given modules from their ``.py`` sources, ignoring any compiled build."""

    def __init__(self, root: Path, modules: set[str]) -> None:
        self.root = root
        self.modules = modules

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.modules:
            return None
        src = source_path(fullname, self.root)
        if src.name == "__init__.py":
            return importlib.util.spec_from_file_location(fullname, src, submodule_search_locations=[str(src.parent)])
        return importlib.util.spec_from_file_location(fullname, src)


def _use_pure(reason: str, modules: set[str]) -> None:
    if not any(isinstance(f, _PureFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureFinder(_PACKAGE_DIR.parent, modules))
    _STATE.update(compiled=False, reason=reason)


def activate() -> None:
    """Decide once, before any compiled module is imported, whether the compiled build may run."""
    root = _PACKAGE_DIR.parent
    built = set(extension_modules(root))
    failed = build_failure()
    if failed:
        log.warning(
            "compiling the rule modules failed when hardneg was installed (%s): running pure Python, same "
            "output at about half the rule speed; install a C compiler and reinstall (`make setup`)",
            failed,
        )
        _use_pure(f"build failed: {failed}", built | set(COMPILED_MODULES))
        return
    if not built:
        _STATE.update(compiled=False, reason="not compiled (pure Python)")
        return
    shadowed = built | set(COMPILED_MODULES)
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        _use_pure(f"{PURE_ENV} is set", shadowed)
        return
    try:
        recorded = json.loads((_PACKAGE_DIR / BUILD_INFO).read_text(encoding="utf-8"))["sources"]
    except (OSError, ValueError, KeyError):
        recorded = {}
    current = source_digests(root)
    changed = sorted(
        {m for m in COMPILED_MODULES if recorded.get(m) != current[m] or m not in built}
        | (built - set(COMPILED_MODULES))  # left over from a build of an older module list
    )
    if changed:
        log.warning(
            "%s changed since hardneg was compiled: running the pure-Python modules (slower, same output); "
            "reinstall (`make setup` or `pip install -e .`) to recompile",
            ", ".join(changed),
        )
        _use_pure(f"stale build: {', '.join(changed)}", shadowed)
        return
    _STATE.update(compiled=True, reason="compiled with mypyc")


def build_failure() -> str | None:
    """Why the last install's compile failed, when it was attempted and failed (setup.py records it)."""
    try:
        info = json.loads((_PACKAGE_DIR / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(info["failed"]) if isinstance(info, dict) and info.get("failed") else None


def status() -> dict[str, Any]:
    """Whether the compiled modules run, and why (for logs and the manifest)."""
    return dict(_STATE)
