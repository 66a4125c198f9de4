"""Stage 2 under faults: damaged or foreign shards, non-finite losses, a lost rank, a failed checkpoint write.

Each fault has a stated outcome (docs/training.md): a one-line error that names the file, a step that
makes no update, a restart that reaches the weights of an uninterrupted run, a previous checkpoint
that stays intact and loadable.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from support.shards import FAMILIES, shapes_dataset, shapes_rows, tiny_run_cfg, write_manifest, write_shard

import trainer.loop as loop
from pipeline.cli import main
from pipeline.contract import schema
from pipeline.core.errors import ConfigError, HardnegError, SourceError
from trainer import checkpoint as ckpt
from trainer.config import train_config
from trainer.data import ShardIndex
from trainer.distributed import DistInfo

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cfg(ds: Path, out: Path, **over) -> dict:
    return tiny_run_cfg(ds, out, workers=0, max_steps=12, **over)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return shapes_dataset(tmp_path_factory.mktemp("ds"), 48, shards=2, row_group_size=12)


@pytest.fixture(scope="module")
def reference(ds, tmp_path_factory) -> Path:
    """An uninterrupted 12-step run (2 epochs of 6 steps)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref")
    loop.train(run_cfg(ds, out))
    return out


# ---------------------------------------------------------------------------------- damaged data


def _damaged(tmp_path: Path, how: str, manifest: bool) -> tuple[Path, Path]:
    """A dataset folder with one shard damaged ``how``; returns (folder, damaged file)."""
    root = shapes_dataset(tmp_path / "ds", 24, shards=2, row_group_size=6)
    bad = root / "train" / "shard-00001.parquet"
    if how == "other_schema_version":  # written before the manifest: a consistent dataset of schema 2
        table = pa.Table.from_pylist(shapes_rows(12, start=12), schema=schema.arrow_schema({"schema_version": "2.0"}))
        pq.write_table(table, bad)
    if manifest:
        write_manifest(root)
    if how == "truncated":
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    return root, bad


def _cli_error(caplog, argv: list[str]) -> tuple[int, str]:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="hardneg"):
        rc = main(argv)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    return rc, "\n".join(errors)


@pytest.mark.parametrize("manifest", [False, True], ids=["no_manifest", "manifest"])
@pytest.mark.parametrize("how, says", [("truncated", "not a readable"),
                                       ("other_schema_version", "schema version 2.0 is not readable")])
def test_damaged_shard_is_one_line_naming_the_file_for_train_and_eval(tmp_path, caplog, how, says, manifest):
    root, bad = _damaged(tmp_path, how, manifest)
    model = ["--model", "hardneg-tiny", "--pretrained", "none", "--no-progress"]
    rc, msg = _cli_error(caplog, ["-q", "train", *model, "--data", str(root), "--batch-size", "4",
                                  "--workers", "0", "-o", str(tmp_path / "run")])
    assert rc == 1 and str(bad) in msg and says in msg and len(msg.splitlines()) == 1, msg
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training started
    rc, msg = _cli_error(caplog, ["-q", "eval", *model, "--shards", str(root), "--split", "train",
                                  "--workers", "0", "--out", str(tmp_path / "m.json")])
    assert rc == 1 and str(bad) in msg and says in msg and len(msg.splitlines()) == 1, msg
    assert not (tmp_path / "m.json").exists()


def test_foreign_columns_name_the_file_and_the_column(tmp_path):
    rows = shapes_rows(4)
    no_caption = schema.arrow_schema().remove(schema.arrow_schema().get_field_index(schema.CAPTION))
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != schema.CAPTION} for r in rows],
                                        schema=no_caption), tmp_path / "a.parquet")
    with pytest.raises(SourceError, match=r"a\.parquet: shard lacks columns \['caption'\]"):
        ShardIndex.from_paths([str(tmp_path / "a.parquet")])
    base = schema.arrow_schema()
    as_text = base.set(base.get_field_index("attribute_replace"), pa.field("attribute_replace", pa.string()))
    for r in rows:
        r["attribute_replace"] = ";".join(r["attribute_replace"])
    pq.write_table(pa.Table.from_pylist(rows, schema=as_text), tmp_path / "b.parquet")
    with pytest.raises(SourceError, match=r"b\.parquet: column 'attribute_replace' has type string, the shard "
                                          r"schema says list<item: string>"):
        ShardIndex.from_paths([str(tmp_path / "b.parquet")])
    (tmp_path / "c.parquet").write_bytes(b"")
    with pytest.raises(SourceError, match=r"c\.parquet: not a readable Parquet shard"):
        ShardIndex.from_paths([str(tmp_path / "c.parquet")])


def test_shards_are_checked_against_the_manifest(tmp_path):
    root = shapes_dataset(tmp_path / "ds", 24, shards=2, row_group_size=6)
    write_manifest(root)
    assert ShardIndex.from_paths([str(root)]).num_rows == 24
    assert ShardIndex.from_paths([str(root / "train")], "train").num_rows == 24  # a split folder: its parent's
    shard = root / "train" / "shard-00000.parquet"
    # the same rows written again with other row groups: readable, same row count, other bytes
    pq.write_table(pq.read_table(shard), shard, row_group_size=4)
    with pytest.raises(SourceError, match=r"shard-00000\.parquet changed since its manifest.*sha256"):
        ShardIndex.from_paths([str(root)])
    assert ShardIndex.from_paths([str(root)], verify=False).num_rows == 24  # rows only
    assert ShardIndex.from_paths([f"file://{root}"], "train", verify=False).num_rows == 24
    with pytest.raises(SourceError, match="sha256"):
        ShardIndex.from_paths([f"file://{root}"], "train")  # a local URL is a local folder
    write_shard(shard, shapes_rows(10))
    with pytest.raises(SourceError, match=r"holds 10 rows, the manifest lists 12"):
        ShardIndex.from_paths([str(root)], verify=False)
    with pytest.raises(ConfigError, match="data.verify: true"):
        ShardIndex.from_paths(["memory://nowhere/ds"], verify=True)


def test_a_damaged_row_group_mid_epoch_stops_every_worker_with_one_line(tmp_path):
    root = shapes_dataset(tmp_path / "ds", 48, shards=1, row_group_size=12)
    shard = root / "train" / "shard-00000.parquet"
    md = pq.read_metadata(shard)
    col = md.row_group(2).column(0)  # the third row group's id column: garbage behind an intact footer
    data = bytearray(shard.read_bytes())
    start = col.data_page_offset
    data[start : start + 64] = b"\xff" * 64
    shard.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"shard-00000\.parquet: row group 2 is unreadable") as e:
        loop.train(run_cfg(root, tmp_path / "run", data={"workers": 2}))
    assert "Traceback" not in str(e.value) and len(str(e.value).splitlines()) == 1


# --------------------------------------------------------------------------------- non-finite


def _poison_losses(monkeypatch, steps: set[int], what: str = "loss") -> None:
    """Make the loss (or one gradient) of the given 1-based steps NaN."""
    real = loop.global_losses
    calls = [0]

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] in steps:
            if what == "loss":
                out["total"] = out["total"] * float("nan")
            else:  # a finite loss whose backward puts NaN into the gradient of the logit scale only
                zero = args[4] * 0.0
                zero.register_hook(lambda g: g * float("nan"))
                out["total"] = out["total"] + zero.sum()
        return out

    monkeypatch.setattr(loop, "global_losses", poisoned)


@pytest.fixture(scope="module")
def built_run(ds, tmp_path_factory):
    torch.set_num_threads(1)
    cfg = train_config(run_cfg(ds, tmp_path_factory.mktemp("unit")))
    tr = loop.setup(cfg, DistInfo())
    batch = next(iter(tr.stream))
    return cfg, batch


@pytest.mark.parametrize("what", ["loss", "gradient"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_nonfinite_step_makes_no_update(built_run, monkeypatch, precision, what):
    cfg, batch = built_run
    tr = loop.setup(cfg, DistInfo())
    # the GPU's autocast paths, run on the CPU: bf16, and fp16 with its GradScaler
    tr.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    tr.scaler = torch.amp.GradScaler("cpu", init_scale=256.0, enabled=precision == "fp16")
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    _poison_losses(monkeypatch, {1}, what)
    out, updated = loop.train_step(tr, batch)
    assert not updated
    assert torch.isfinite(out["total"]).item() == (what == "gradient")
    assert_same_weights(before, tr.model.state_dict())
    assert not tr.optimizer.state  # no moments, no step count: AdamW never ran
    assert tr.scheduler.last_epoch == 1  # the step keeps its place in the schedule
    if precision == "fp16":
        assert tr.scaler.get_scale() == 128.0  # the scaler backs off, as for an overflow
    out, updated = loop.train_step(tr, batch)  # the next, clean step updates
    assert updated and torch.isfinite(out["total"])
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    assert all(torch.isfinite(v).all() for v in tr.model.state_dict().values())


def test_nonfinite_steps_are_counted_logged_and_the_run_goes_on(ds, tmp_path, monkeypatch):
    _poison_losses(monkeypatch, {4, 5})
    out = tmp_path / "run"
    res = loop.train(run_cfg(ds, out, log_every=3))
    assert res["steps"] == 12 and res["skipped_nonfinite"] == 2
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # every third step, and each skipped one (loss null), with the running count
    assert [(r["step"], r["skipped_nonfinite"], r["loss"] is None) for r in rows] == [
        (3, 0, False), (4, 1, True), (5, 2, True), (6, 2, False), (9, 2, False), (12, 2, False)]
    assert all(torch.isfinite(v).all() for v in weights(out / "final" / "open_clip_pytorch_model.bin").values())
    assert json.loads((out / "train_results.json").read_text())["skipped_nonfinite"] == 2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_too_many_nonfinite_steps_stop_the_run_leaving_the_last_good_checkpoint(ds, tmp_path, monkeypatch,
                                                                                 precision):
    if precision == "bf16":  # the autocast path of the loop, on the CPU
        monkeypatch.setattr(loop, "amp_dtype", lambda *_: torch.bfloat16)
    _poison_losses(monkeypatch, set(range(6, 100)))
    out = tmp_path / "run"
    with pytest.raises(loop.NonFiniteError, match=r"not finite for 3 steps in a row \(steps 6-8\).*last good "
                                                  r"checkpoint is .*step_00000005\.pt") as e:
        loop.train(run_cfg(ds, out, optim={"max_nonfinite_steps": 3}))
    assert isinstance(e.value, HardnegError)  # the CLI prints it as one line, exit 1
    # the epoch ended at step 6, inside the run of bad steps: no checkpoint was written there
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000005.pt"
    saved = ckpt.load(out / "checkpoints" / "step_00000005.pt")
    assert saved["step"] == 5 and all(torch.isfinite(v).all() for v in saved["model"].values())
    assert not (out / "final").exists()
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_nonfinite"] for r in logged][-3:] == [1, 2, 3]


# ---------------------------------------------------------------------------- checkpoint writes


@pytest.mark.parametrize("fails", ["checkpoint", "pointer"])
def test_a_failed_checkpoint_write_keeps_the_previous_one(ds, reference, tmp_path, monkeypatch, fails):
    real_save, real_write = ckpt.torch.save, ckpt.write_bytes_atomic
    calls = {"save": 0, "write": 0}

    def full_disk_save(obj, f, *args, **kwargs):
        calls["save"] += 1
        if calls["save"] == 2:  # the second checkpoint: half written, then the disk is full
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    def full_disk_write(data, path):
        calls["write"] += 1
        if calls["write"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(data, path)

    if fails == "checkpoint":
        monkeypatch.setattr(ckpt.torch, "save", full_disk_save)
    else:
        monkeypatch.setattr(ckpt, "write_bytes_atomic", full_disk_write)
    out = tmp_path / "run"
    with pytest.raises(ckpt.CheckpointError, match=r"cannot write checkpoint .*step_00000006\.pt \(.*No space left "
                                                   r"on device\); .*step_00000005\.pt is intact"):
        loop.train(run_cfg(ds, out))
    monkeypatch.undo()
    d = out / "checkpoints"
    assert (d / "latest").read_text().strip() == "step_00000005.pt"
    assert ckpt.load(d / "step_00000005.pt")["step"] == 5
    assert not [p.name for p in d.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    if fails == "checkpoint":
        assert not (d / "step_00000006.pt").exists()
    # a rerun resumes from the intact checkpoint and ends where the uninterrupted run ended
    res = loop.train(run_cfg(ds, out))
    assert res["steps"] == 12 and res["resumed_from_step"] == 5  # continued there, not started over
    assert_same_weights(weights(reference / "final" / "open_clip_pytorch_model.bin"),
                        weights(out / "final" / "open_clip_pytorch_model.bin"))


def test_the_same_state_is_saved_as_the_same_bytes(tmp_path):
    # saved to a path, torch names the zip's records after it: the atomic write's temporary name
    # would make every save of the same weights other bytes (and dvc see a changed output)
    from trainer.models import save_weights

    state = {"step": 3, "w": torch.arange(6.0).reshape(2, 3)}
    first, second = ckpt.save(tmp_path / "a", 3, state), ckpt.save(tmp_path / "b", 3, state)
    assert first.read_bytes() == second.read_bytes()
    assert ckpt.load(first)["step"] == 3
    model = torch.nn.Linear(3, 2)
    first, second = (save_weights(model, tmp_path / d, None, {}) for d in ("c", "d"))
    assert first.read_bytes() == second.read_bytes()
    assert torch.equal(torch.load(first, weights_only=True)["weight"], model.weight.detach())


def test_an_unreadable_checkpoint_is_a_clear_error(ds, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "step_00000005.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(SourceError, match=r"checkpoint .*step_00000005\.pt cannot be read .*--resume none"):
        loop.train(run_cfg(ds, out))


# --------------------------------------------------------------------------------- a lost rank


RESTART_SCRIPT = r"""
import hashlib, json, os, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
import trainer.loop as loop

rank, attempt = int(os.environ["RANK"]), int(os.environ["TORCHELASTIC_RESTART_COUNT"])
real_losses, real_wrap = loop.global_losses, loop.wrap_ddp
runs = []

def nan_on_rank_1(*args, **kwargs):
    # step 3's loss is NaN on rank 1 only (its value; the gradients stay finite): only the all-reduced
    # flag keeps the two ranks from deciding differently
    out = real_losses(*args, **kwargs)
    if rank == 1 and runs[-1].scheduler.last_epoch == 2:
        out["total"] = out["total"] + torch.tensor(float("nan"))
    return out

def wrap(tr):
    runs.append(tr)
    real_wrap(tr)

loop.global_losses, loop.wrap_ddp = nan_on_rank_1, wrap

def run(out, die_at=None):
    def die(rec):
        if die_at and rank == 1 and attempt == 0 and rec["step"] == die_at:
            os._exit(1)  # a lost rank: no clean-up, no goodbye
    res = loop.train(dict(json.loads({cfg!r}), output_dir=out), callbacks=[die])
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in runs[-1].model.parameters()))
    with open(out + f"/rank{{rank}}.sha", "w") as f:
        f.write(digest.hexdigest())
    return res

if not os.path.exists({ref!r} + "/final/open_clip_pytorch_model.bin"):
    run({ref!r})
res = run({out!r}, die_at=5)
if rank == 0:
    json.dump({{**res, "attempt": attempt}}, open({out!r} + "/result.json", "w"))
"""


def test_a_lost_rank_restarts_under_torchrun_and_reaches_the_uninterrupted_weights(tmp_path):
    data = shapes_dataset(tmp_path / "ds", 48, shards=2, row_group_size=12)
    cfg = {
        "model": {"name": "hardneg-tiny", "pretrained": None},
        "data": {"paths": [str(data)], "families": FAMILIES, "batch_size": 4, "workers": 1},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "max_steps": 8},
        "checkpoint_every": 2, "tensorboard": False, "progress": False,
    }
    ref, out = tmp_path / "ref", tmp_path / "run"
    script = tmp_path / "rank.py"
    script.write_text(RESTART_SCRIPT.format(tests=str(ROOT / "tests"), cfg=json.dumps(cfg), ref=str(ref),
                                            out=str(out)))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--max-restarts", "1",
         "--monitor-interval", "0.1", "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", str(script)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "result.json").read_text())
    # rank 1 died after step 5 of the first attempt; the restart resumed from the checkpoint of step 4
    assert res["attempt"] == 1 and res["steps"] == 8 and res["world_size"] == 2
    assert res["resumed_from_step"] == 4  # the restart continued from that checkpoint, not from scratch
    assert res["skipped_nonfinite"] == 1  # step 3, skipped by both ranks (it is in the checkpoint)
    assert_same_weights(weights(ref / "final" / "open_clip_pytorch_model.bin"),
                        weights(out / "final" / "open_clip_pytorch_model.bin"))
    for run in (ref, out):
        assert (run / "rank0.sha").read_text() == (run / "rank1.sha").read_text()
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # the resumed log reads as one run
