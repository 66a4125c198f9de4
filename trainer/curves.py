"""Accuracy-versus-step curves: per-family pairwise accuracy on held-out shards while a model trains.

The final number of a run says where training ended; the curve says when each ability appeared (the
issue's prototype: plain CLIP flat near 50% on relation swaps for thousands of steps, then a jump).
The trainer's callbacks see only the step's log record, not the model, so the curve reads what the
trainer already writes: a checkpoint every ``every`` steps. :class:`CheckpointCurve` notices each new
checkpoint at the next step, loads its weights into a private copy of the model and scores the
held-out pairs with them; training itself is untouched (no RNG use, no shared tensors). The scoring
is ``hardneg eval``'s own (:class:`trainer.evaluate.PairSet`), so the curve's last point equals the
evaluation of the final weights on the same shards (both on the CPU in fp32, same batch size).

``hardneg train-curves`` is ``hardneg train`` plus this callback; ``<output_dir>/curve.csv`` gets one
row per evaluated step (``step``, one accuracy column per family, ``macro``), ``curve.json`` the same
with pair counts.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.contract.families import ALL_FAMILIES
from pipeline.core.atomic import write_bytes_atomic, write_json_atomic
from pipeline.core.config import apply_overrides
from pipeline.core.errors import ConfigError, SourceError
from trainer.config import TrainConfig
from trainer.evaluate import PairSet

__all__ = ["CheckpointCurve", "CurveConfig", "PairSet", "train_with_curves"]

log = logging.getLogger(__name__)

CURVE_CSV = "curve.csv"
CURVE_JSON = "curve.json"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


@dataclass
class CurveConfig:
    """Settings of the accuracy-versus-step curve (the ``curves`` section of params.yaml)."""

    #: evaluate every N optimizer steps (the run's ``checkpoint_every`` is set to this)
    every: int = 100
    #: held-out shards (files, globs, dataset dirs); empty = the training ``data.paths``
    shards: list[str] = field(default_factory=list)
    split: str = "test"
    image_root: str | None = None
    #: families scored; empty = every family that has pairs in the shards
    families: list[str] = field(default_factory=list)
    #: score only the first N caption rows (quick curves); None = all
    limit: int | None = None
    batch_size: int = 256
    #: also score the untrained model (same seed, so the same initial weights as the run)
    initial: bool = True
    #: keep the run's checkpoints after training; False deletes them (the curve needed them only)
    keep_checkpoints: bool = False
    #: check the held-out shards against their manifest's sha256 (as ``data.verify``); None = the
    #: training data's setting when ``shards`` is empty, else yes for local folders
    verify: bool | None = None

    def validate(self) -> None:
        if self.every < 1:
            raise ConfigError(f"curves.every must be >= 1, got {self.every}")
        if self.batch_size < 1:
            raise ConfigError(f"curves.batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"curves.limit must be >= 1, got {self.limit}")
        unknown = [f for f in self.families if f not in ALL_FAMILIES]
        if unknown:
            raise ConfigError(f"unknown curves.families {unknown}; known: {list(ALL_FAMILIES)}")


class CheckpointCurve:
    """Training callback: scores each new checkpoint of the run on a :class:`PairSet`.

    A checkpoint written at step s is seen by the callback of step s + 1 (the loop saves after its
    callbacks); :meth:`finish` scores the one written at the end. Checkpoints whose step is not a
    multiple of ``every`` (epoch ends) are skipped, except the last. Only rank 0 scores.
    """

    def __init__(self, train_cfg: TrainConfig, cfg: CurveConfig) -> None:
        import torch

        from trainer.data import ImageSpec
        from trainer.models import build_model

        cfg.validate()
        self.cfg = cfg
        self.out = Path(train_cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.enabled = int(os.environ.get("RANK", "0")) == 0
        self.rows: list[dict[str, Any]] = []
        self._seen: str | None = None
        self.seconds = 0.0
        if not self.enabled:
            return
        with torch.random.fork_rng(devices=[]):
            # the trainer seeds, then builds: the same two calls give its initial weights
            torch.manual_seed(train_cfg.seed)
            built = build_model(apply_overrides(train_cfg.model, {"device": "cpu"}), "cpu")
        self.model = built.model
        self.spec = ImageSpec.from_preprocess(built.preprocess)
        t0 = time.perf_counter()
        self.pairs = PairSet.from_shards(
            cfg.shards or train_cfg.data.paths, cfg.split, cfg.families, self.spec, built.tokenizer,
            cfg.image_root if cfg.shards else (cfg.image_root or train_cfg.data.image_root), cfg.limit,
            verify=cfg.verify if (cfg.shards or cfg.verify is not None) else train_cfg.data.verify,
            root_flag="curves.image_root" if cfg.shards else "curves.image_root or data.image_root",
        )
        self.seconds += time.perf_counter() - t0

    def start(self) -> None:
        """Score the untrained model as step 0 (when ``initial``), before training starts."""
        if self.enabled and self.cfg.initial:
            self._score(0)

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        found = self._newest()
        if found is None or found[1] == self._seen:
            return
        step, name = found
        self._seen = name
        if step % self.cfg.every == 0:
            self._load_and_score(step, self.ckpt_dir / name)

    def finish(self) -> list[dict[str, Any]]:
        """Score the run's last checkpoint (written after the last callback) and return all rows."""
        if self.enabled:
            found = self._newest()
            if found is not None and found[1] != self._seen:
                self._seen = found[1]
                if not self.rows or self.rows[-1]["step"] < found[0]:
                    self._load_and_score(found[0], self.ckpt_dir / found[1])
            log.info("curve: %d points, %.1fs spent scoring", len(self.rows), self.seconds)
        return self.rows

    # -- internals --------------------------------------------------------------------------

    def _newest(self) -> tuple[int, str] | None:
        pointer = self.ckpt_dir / "latest"
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        m = _STEP_FILE.match(name)
        return (int(m.group(1)), name) if m else None

    def _load_and_score(self, step: int, path: Path) -> None:
        from trainer.checkpoint import load

        t0 = time.perf_counter()
        try:
            state = load(path)
        except (OSError, SourceError) as e:  # pruned since: the curve loses a point, not the run
            log.warning("curve: cannot read checkpoint %s (%s); step %d is not scored", path, e, step)
            return
        self.model.load_state_dict(state["model"])
        self.seconds += time.perf_counter() - t0
        self._score(step)

    def _score(self, step: int) -> None:
        t0 = time.perf_counter()
        res = self.pairs.accuracy(self.model, self.spec, self.cfg.batch_size)
        self.seconds += time.perf_counter() - t0
        row: dict[str, Any] = {"step": step}
        row.update({f: v["accuracy"] for f, v in res["families"].items()})
        row["macro"] = res["macro"]
        self.rows.append(row)
        self._write(res)
        log.info("curve step %d: %s", step, "  ".join(
            f"{f} {100 * v['accuracy']:.1f}%" for f, v in res["families"].items() if v["accuracy"] is not None))

    def _write(self, last: dict[str, Any]) -> None:
        cols = ["step", *self.pairs.families, "macro"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if r.get(k) is None else round(r[k], 6) if k != "step" else r[k]) for k in cols})
        write_bytes_atomic(buf.getvalue().encode("utf-8"), self.out / CURVE_CSV)
        doc = {
            "every": self.cfg.every,
            "split": self.cfg.split,
            "families": self.pairs.families,
            "pairs": {f: v["pairs"] for f, v in last["families"].items()},
            "points": self.rows,
        }
        write_json_atomic(doc, self.out / CURVE_JSON, sort_keys=True)


def train_with_curves(train_cfg: TrainConfig, cfg: CurveConfig) -> dict[str, Any]:
    """``trainer.loop.train`` with a checkpoint every ``cfg.every`` steps and each one scored."""
    from trainer.loop import train

    cfg.validate()
    train_cfg = apply_overrides(train_cfg, {"checkpoint_every": cfg.every})
    train_cfg.validate()
    if train_cfg.resume != "none" and (Path(train_cfg.output_dir) / "checkpoints" / "latest").exists():
        log.warning("%s holds a checkpoint: the run resumes and its curve starts there", train_cfg.output_dir)
    curve = CheckpointCurve(train_cfg, cfg)
    curve.start()
    results = train(train_cfg, callbacks=[curve])
    rows = curve.finish()
    results["curve"] = {"points": len(rows), "seconds": round(curve.seconds, 3),
                        "path": str(Path(train_cfg.output_dir) / CURVE_CSV)}
    if curve.enabled:
        out = Path(train_cfg.output_dir)
        if not cfg.keep_checkpoints:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            results["last_checkpoint"] = None
        # the trainer wrote its results before the curve's last point and the clean-up
        write_json_atomic(results, out / "train_results.json", sort_keys=True)
    return results


# --------------------------------------------------------------------------------------------- CLI
