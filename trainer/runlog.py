"""Per-step training logs: JSONL (every field), CSV (fixed columns) and TensorBoard scalars.

On resume, rows after the checkpoint's step (written by the run that was killed) are dropped, so the
logs of a resumed run read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from pipeline.core.atomic import write_bytes_atomic

log = logging.getLogger(__name__)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


class RunLog:
    def __init__(
        self,
        out_dir: str | Path,
        fields: Sequence[str],
        *,
        tensorboard: bool = True,
        resume_step: int | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.fields = list(fields)
        self.out = Path(out_dir)
        self.jsonl_path = self.out / "metrics.jsonl"
        self.csv_path = self.out / "metrics.csv"
        self._tb = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self._truncate(resume_step)
        new_csv = not self.csv_path.exists()
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        self._csv_file = open(self.csv_path, "a", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=self.fields, extrasaction="ignore")
        if new_csv:
            self._csv.writeheader()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.out / "tensorboard"), purge_step=resume_step)
            except ImportError:
                log.warning("tensorboard is not installed; logging to CSV/JSONL only")

    def _truncate(self, resume_step: int | None) -> None:
        """Keep rows up to ``resume_step`` (all rows are dropped for a fresh run)."""
        for path in (self.jsonl_path, self.csv_path):
            if not path.exists():
                continue
            if resume_step is None:
                path.unlink()
                continue
            keep: list[str] = []
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
            if path.suffix == ".csv":
                if not lines or lines[0].strip().split(",") != self.fields:
                    log.warning("%s has other columns than this run; starting it again", path)
                    path.unlink()
                    continue
                keep.append(lines[0])
                for row, line in zip(csv.DictReader(lines), lines[1:]):
                    if int(row["step"]) <= resume_step:
                        keep.append(line)
            else:
                for line in lines:
                    try:
                        if int(json.loads(line)["step"]) <= resume_step:
                            keep.append(line)
                    except (ValueError, KeyError):
                        continue
            write_bytes_atomic("".join(keep).encode("utf-8"), path)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: _clean(v) for k, v in record.items()}
        self._jsonl.write(json.dumps(clean, sort_keys=True) + "\n")
        self._jsonl.flush()
        self._csv.writerow({k: ("" if clean.get(k) is None else clean.get(k)) for k in self.fields})
        self._csv_file.flush()
        if self._tb is not None:
            step = int(record["step"])
            for k, v in clean.items():
                if k in ("step", "epoch") or not isinstance(v, (int, float)) or isinstance(v, bool):
                    continue
                group = k.split("_", 1)
                tag = f"{group[0]}/{group[1]}" if group[0] in ("theta", "gap", "valid", "skipped") else f"train/{k}"
                self._tb.add_scalar(tag, v, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        self._csv_file.close()
        if self._tb is not None:
            self._tb.close()
