"""Resumable training checkpoints: written atomically, found again by a ``latest`` pointer.

A checkpoint holds everything a killed run needs to continue to the same result: model, optimizer,
scheduler and scaler state, the step, the data position (epoch and batch within it), the last CMR
thresholds, running counters and every RNG state. It is stored with plain types only, so it loads
with ``torch.load(weights_only=True)``.

A checkpoint file is written under a temporary name, flushed to disk and renamed into place; only
then does ``latest`` move to it, and only then are older ones pruned. A write that fails (a full disk,
a lost permission) leaves the previous checkpoint and ``latest`` as they were and stops the run with
a :class:`CheckpointError` that says so.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.atomic import atomic_path, write_bytes_atomic
from pipeline.core.errors import ConfigError, HardnegError, SourceError

log = logging.getLogger(__name__)

LATEST = "latest"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(HardnegError):
    """A checkpoint could not be written; the message says which and what is left on disk."""


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_path(output_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is written."""
    return checkpoint_dir(output_dir) / f"step_{step:08d}.pt"


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


def save_state(obj: Any, path: Path, *, sync: bool = False) -> None:
    """``torch.save`` to ``path`` atomically, as the same bytes for the same state: through a file
    object, because saved to a path torch names the zip's records after it (here the temporary
    name). ``sync``: the bytes are on disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def save(output_dir: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``step_<n>.pt`` atomically, point ``latest`` at it, and prune older step files.

    A failed write raises :class:`CheckpointError`; the earlier checkpoints and ``latest`` are untouched.
    """
    d = checkpoint_dir(output_dir)
    path = step_path(output_dir, step)
    previous = _readable_latest(d)
    try:
        d.mkdir(parents=True, exist_ok=True)
        save_state(state, path, sync=True)  # on disk before the rename makes it the checkpoint
        write_bytes_atomic((path.name + "\n").encode("utf-8"), d / LATEST)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        kept = (f"{previous} is intact and `latest` still points at it; a rerun resumes from there"
                if previous is not None else "no earlier checkpoint exists")
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"cannot write checkpoint {path} ({reason}); {kept}") from e
    steps = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_FILE.match(p.name)))
    for _, old in steps[:-keep]:
        if old != path:
            try:
                old.unlink(missing_ok=True)
            except OSError as e:  # the new checkpoint is in place; an old one left behind is harmless
                log.warning("could not delete old checkpoint %s: %s", old, e)
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


def _readable_latest(d: Path) -> Path | None:
    """The checkpoint ``latest`` names now, for messages (None when there is none or it cannot be read)."""
    try:
        return _latest_in(d) if d.is_dir() else None
    except OSError:
        return None


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
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SourceError(
            f"checkpoint {path} cannot be read ({first}); resume from another one with --resume PATH, "
            "or start over with --resume none"
        ) from e
