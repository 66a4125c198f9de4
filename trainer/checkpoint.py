"""Resumable training checkpoints: written atomically, found again by a ``latest`` pointer.

A checkpoint holds everything a killed run needs to continue to the same result: model, optimizer,
scheduler and scaler state, the step, the data position (epoch and batch within it), the last CMR
thresholds, running counters and every RNG state. It is stored with plain types only, so it loads
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.atomic import atomic_path, write_bytes_atomic
from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

LATEST = "latest"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[float(x) for x in np_state[2:]]],
        "python": _py_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state_to_plain(st: tuple) -> list[Any]:
    version, internal, gauss = st
    return [version, list(internal), gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(output_dir: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``step_<n>.pt`` atomically, point ``latest`` at it, and prune older step files."""
    d = checkpoint_dir(output_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step_{step:08d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    write_bytes_atomic((path.name + "\n").encode("utf-8"), d / LATEST)
    steps = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_FILE.match(p.name)))
    for _, old in steps[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def set_aside_stale(output_dir: str | Path) -> Path | None:
    """Move an earlier run's checkpoints out of the way of a fresh run (kept, not deleted)."""
    d = checkpoint_dir(output_dir)
    if not d.is_dir() or not any(d.iterdir()):
        return None
    n = 1
    while (aside := d.with_name(f"checkpoints.old-{n}")).exists():
        n += 1
    os.replace(d, aside)
    log.warning("starting over: moved the earlier run's checkpoints to %s", aside)
    return aside


def find_resume(output_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint to resume from: ``auto`` (latest in output_dir, if any), ``none``, or a path."""
    if resume in ("", "none", "never", "false", "False"):
        return None
    if resume != "auto":
        p = Path(resume)
        if p.is_dir():
            p = _latest_in(p) or p
        if not p.is_file():
            raise ConfigError(f"resume checkpoint {resume} does not exist")
        return p
    return _latest_in(checkpoint_dir(output_dir))


def _latest_in(d: Path) -> Path | None:
    pointer = d / LATEST
    if pointer.is_file():
        p = d / pointer.read_text(encoding="utf-8").strip()
        if p.is_file():
            return p
        log.warning("checkpoint pointer %s names a missing file; looking for the newest step file", pointer)
    if not d.is_dir():
        return None
    steps = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_FILE.match(p.name)))
    return steps[-1][1] if steps else None


def load(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
