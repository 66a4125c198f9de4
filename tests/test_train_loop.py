"""The training loop on the tiny model: gradients, schedule, logs, kill-and-resume, loss going down."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from support.shards import FAMILIES, shapes_dataset, tiny_run_cfg

from pipeline.cli import main
from pipeline.core.errors import ConfigError
from trainer.config import LossConfig, ModelConfig, train_config
from trainer.data import ImageSpec, NegativeStream, ShardIndex
from trainer.loop import encode_batch, global_losses, lr_lambda, param_groups, train
from trainer.models import build_model

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return shapes_dataset(tmp_path_factory.mktemp("ds"), 48, shards=2, row_group_size=12)


def run_cfg(ds: Path, out: Path, **over) -> dict:
    return tiny_run_cfg(ds, out, workers=2, max_steps=20, **over)


@pytest.fixture(scope="module")
def reference_run(ds, tmp_path_factory):
    """20 uninterrupted steps (3+ epochs of 6 steps), the run the resumed one must reproduce."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref")
    res = train(run_cfg(ds, out, tensorboard=True))
    return out, res


def test_lr_schedule_hand_values():
    f = lr_lambda(warmup=2, total=6, schedule="cosine")
    # warmup (step+1)/2, then 0.5 (1 + cos(pi (step-2)/4))
    expected = [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0]
    assert [f(s) for s in range(7)] == pytest.approx(expected, abs=1e-12)
    assert lr_lambda(0, 10, "constant")(7) == 1.0


def test_param_groups_exempt_gains_biases_and_scale():
    model = build_model(ModelConfig(name="hardneg-tiny", pretrained=None)).model
    decay, exempt = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt_names = {names[id(p)] for p in exempt["params"]}
    assert "logit_scale" in exempt_names and "ln_final.weight" in exempt_names
    assert "visual.class_embedding" in exempt_names
    assert {names[id(p)] for p in decay["params"]} >= {"token_embedding.weight", "visual.conv1.weight"}
    assert decay["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0


def test_gradients_reach_both_towers_and_skip_masked_negatives(ds):
    torch.manual_seed(0)
    built = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
    spec = ImageSpec.from_preprocess(built.preprocess)
    s = NegativeStream(ShardIndex.from_paths([str(ds)]), tokenizer=built.tokenizer, spec=spec, batch_size=8,
                       families=FAMILIES)
    batch = next(iter(s))
    img, txt, negs, mask, scale = encode_batch(built.model, batch, spec, torch.device("cpu"), True)
    assert negs.shape == (8, 3, 64) and mask[:, 0].sum() == 0  # relation_swap is empty: never encoded
    assert torch.equal(negs[:, 0], torch.zeros(8, 64))
    out = global_losses(img, txt, negs, mask, scale, LossConfig())
    out["total"].backward()
    m = built.model
    for name in ("visual.conv1.weight", "visual.transformer.resblocks.0.attn.in_proj_weight", "visual.proj",
                 "token_embedding.weight", "transformer.resblocks.0.mlp.c_fc.weight", "text_projection",
                 "logit_scale"):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_gradients(ds):
    from support.shards import global_batch

    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        built = build_model(ModelConfig(name="hardneg-tiny", pretrained=None, grad_checkpointing=ckpt))
        spec = ImageSpec.from_preprocess(built.preprocess)
        feats = encode_batch(built.model, global_batch(built.tokenizer), spec, torch.device("cpu"), True)
        global_losses(*feats, LossConfig())["total"].backward()
        grads.append({n: p.grad for n, p in built.model.named_parameters()})
    assert built.model.transformer.grad_checkpointing
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_autocast_path_returns_float32_features(ds):
    # GPUs train under bf16/fp16 autocast; the CPU can run the same code path in bf16
    torch.manual_seed(0)
    built = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
    spec = ImageSpec.from_preprocess(built.preprocess)
    s = NegativeStream(ShardIndex.from_paths([str(ds)]), tokenizer=built.tokenizer, spec=spec, batch_size=8,
                       families=FAMILIES)
    batch = next(iter(s))
    full = encode_batch(built.model, batch, spec, torch.device("cpu"), True)
    half = encode_batch(built.model, batch, spec, torch.device("cpu"), True, torch.bfloat16)
    for a, b in zip(full, half):
        assert b.dtype == a.dtype
        if a.is_floating_point():
            assert (a - b).abs().max() < 0.1
    out = global_losses(*half, LossConfig())
    assert out["total"].dtype == torch.float32 and torch.isfinite(out["total"])


def test_logs_thresholds_and_results(reference_run):
    out, res = reference_run
    assert res["steps"] == 20 and res["steps_per_epoch"] == 6 and res["samples_seen"] == 160
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    # relation_swap never has a candidate: no threshold; the other families get one every step
    assert all(r["theta_relation_swap"] == "" and r["valid_relation_swap"] == "0" for r in rows)
    assert all(0.0 <= float(r["theta_attribute_replace"]) <= 10.0 for r in rows)
    assert all(int(r["valid_object_replace"]) == 8 for r in rows)
    # thresholds equal the batch mean gap clamped to [0, 10]
    for r in rows:
        gap = float(r["gap_object_replace"])
        assert float(r["theta_object_replace"]) == pytest.approx(min(max(gap, 0.0), 10.0), abs=1e-6)
    jsonl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in jsonl] == list(range(1, 21))
    assert jsonl[0]["lr"] == pytest.approx(1e-3 / 3)
    assert any((out / "tensorboard").iterdir())
    saved = json.loads((out / "train_results.json").read_text())
    assert saved["final_weights"] == str(out / "final" / "open_clip_pytorch_model.bin")
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_00000018.pt", "step_00000020.pt"]  # keep_checkpoints=2


def test_final_weights_load_with_open_clip(reference_run):
    import open_clip

    out, _ = reference_run
    path = out / "final" / "open_clip_pytorch_model.bin"
    model, _, preprocess = open_clip.create_model_and_transforms("hardneg-tiny", pretrained=str(path))
    local, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out / 'final'}")
    state = torch.load(path, weights_only=True)
    for m in (model, local):
        for k, v in m.state_dict().items():
            assert torch.equal(v, state[k]), k
    last = torch.load(sorted((out / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)
    assert all(torch.equal(last["model"][k], state[k]) for k in state)


KILL_SCRIPT = """
import os, signal, sys, json, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from trainer.loop import train
cfg = json.loads({cfg!r})
def die(rec):
    if rec["step"] == 17:
        os.kill(os.getpid(), signal.SIGKILL)
train(cfg, callbacks=[die])
"""


@pytest.mark.slow
def test_kill_and_resume_gives_identical_weights(ds, reference_run, tmp_path):
    ref_out, ref_res = reference_run
    out = tmp_path / "killed"
    cfg = run_cfg(ds, out)
    script = KILL_SCRIPT.format(tests=str(ROOT / "tests"), cfg=json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000015.pt"
    assert not (out / "final").exists()
    logged = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 18))

    res = train(cfg)  # resume=auto picks up step 15: epoch 2, batch 3 of 6
    assert res["resumed_from_step"] == 15  # it continued from the checkpoint, it did not start over
    assert json.loads((out / "train_results.json").read_text())["resumed_from_step"] == 15
    assert ref_res["resumed_from_step"] is None
    assert res["steps"] == 20 and res["samples_seen"] == ref_res["samples_seen"]
    ref = torch.load(ref_out / "final" / "open_clip_pytorch_model.bin", weights_only=True)
    got = torch.load(out / "final" / "open_clip_pytorch_model.bin", weights_only=True)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    # the resumed logs read as one run: steps 16-17 of the killed run were replaced, not duplicated
    with open(out / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(1, 21))
    ref_losses = [json.loads(x)["loss"] for x in (ref_out / "metrics.jsonl").read_text().splitlines()]
    got_losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert got_losses == ref_losses


@pytest.mark.slow
def test_training_loss_falls(tmp_path):
    # 192 images of 12 colour/shape combinations; with all three losses the model must learn to
    # tell "a red circle" from "a blue circle" and "a red square". At the start the contrastive
    # term alone is about ln(16 + 32) / 2 + ln(16) / 2 = 3.3.
    data = shapes_dataset(tmp_path / "ds", 192, shards=2, row_group_size=48)
    res = train({
        "model": {"name": "hardneg-tiny", "pretrained": None},
        "data": {"paths": [str(data)], "families": FAMILIES, "batch_size": 16, "workers": 0, "augment": False},
        "optim": {"lr": 5e-4, "warmup_steps": 10, "max_steps": 150, "epochs": 100},
        "output_dir": str(tmp_path / "run"), "checkpoint_every": 0, "tensorboard": False, "progress": False,
    })
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 150
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)
    assert res["final_loss"] == pytest.approx(last)


def test_cli_maps_flags_config_and_overrides(tmp_path, ds):
    import argparse

    from trainer.cli import register, train_config_from_args

    params = tmp_path / "params.yaml"
    params.write_text(textwrap.dedent(f"""
        train:
          model: {{name: hardneg-tiny, pretrained: null}}
          data: {{paths: [{ds}], batch_size: 4, families: [attribute_replace]}}
          loss: {{w_imc: 0.5}}
          optim: {{lr: 0.001}}
    """))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--config", str(params), "--batch-size", "8", "--objective", "negclip",
                              "--set", "loss.w_cmr=0.7", "--set", "optim.lr=2e-4"])
    cfg = train_config_from_args(args)
    assert cfg.model.name == "hardneg-tiny" and cfg.model.pretrained is None
    assert cfg.data.batch_size == 8  # flag beats the file
    assert cfg.data.families == ["attribute_replace"]
    assert (cfg.loss.w_imc, cfg.loss.w_cmr, cfg.loss.imc, cfg.loss.cmr) == (0.5, 0.7, False, False)
    assert cfg.optim.lr == 2e-4  # --set beats the file
    with pytest.raises(ConfigError, match="unknown config key"):
        train_config({"loss": {"w_imcc": 1}})
    with pytest.raises(ConfigError, match="unknown families"):
        train_config({"data": {"paths": ["x"], "families": ["colour_swap"]}})
    with pytest.raises(ConfigError, match="threshold"):
        train_config({"data": {"paths": ["x"]}, "loss": {"threshold": "median"}})


def test_cli_train_runs_plain_clip_end_to_end(tmp_path, ds):
    out = tmp_path / "run"
    rc = main(["-q", "train", "--model", "hardneg-tiny", "--pretrained", "none", "--data", str(ds),
               "--batch-size", "8", "--workers", "0", "--max-steps", "3", "--objective", "clip",
               "--output-dir", str(out), "--no-progress", "--set", "tensorboard=false"])
    assert rc == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["imc"] is None and r["cmr"] is None for r in rows)
    assert (out / "final" / "open_clip_pytorch_model.bin").is_file()
    # a bad value is a config error (exit 2), not a traceback
    assert main(["-q", "train", "--data", str(ds), "--set", "data.batch_size=0"]) == 2


def test_too_little_data_for_one_batch_is_a_config_error(tmp_path, ds):
    with pytest.raises(ConfigError, match="do not fill one batch"):
        train(run_cfg(ds, tmp_path / "r", data={"batch_size": 64}))


def test_corrupt_images_are_counted_and_empty_batches_skipped(tmp_path):
    from support.shards import shapes_rows, write_shard

    rows = shapes_rows(16)
    for r in rows[1::2]:
        r["image"] = {"bytes": b"\x89PNG\r\n\x1a\n but then garbage", "path": None}
    write_shard(tmp_path / "ds" / "train" / "a.parquet", rows, row_group_size=4)
    # half the images are corrupt: allowed here (the default share, 1%, would stop the run)
    cfg = run_cfg(tmp_path / "ds", tmp_path / "run", data={"batch_size": 2, "workers": 0, "max_missing_fraction": 0.5},
                  optim={"max_steps": None, "epochs": 1})
    res = train(cfg)
    # the same stream, read directly: batches with no decodable image are not trained on
    built = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
    s = NegativeStream(ShardIndex.from_paths([str(tmp_path / "ds")], "train"), tokenizer=built.tokenizer,
                       spec=ImageSpec.from_preprocess(built.preprocess), batch_size=2, families=FAMILIES)
    sizes = [len(b["ids"]) for b in s]
    assert len(sizes) == 8 and 0 in sizes  # with this seed some batch holds two corrupt images
    assert res["skipped_images"] == {"missing": 0, "corrupt": 8, "no_image": 0}
    assert res["samples_seen"] == 8
    assert res["steps"] == sum(1 for n in sizes if n > 0)
    assert res["epoch"] == 1


def test_auto_resume_refuses_a_run_with_other_settings(ds, tmp_path):
    out = tmp_path / "run"
    train(run_cfg(ds, out, optim={"lr": 1e-3, "warmup_steps": 3, "max_steps": 4}))
    with pytest.raises(ConfigError, match=r"other settings \(loss.imc, optim.lr\)"):
        train(run_cfg(ds, out, optim={"lr": 5e-2, "warmup_steps": 3, "max_steps": 4}, loss={"imc": False}))
    # settings that do not change the result (workers, logging, checkpoint cadence) may differ
    res = train(run_cfg(ds, out, data={"paths": [str(ds)], "families": FAMILIES, "batch_size": 8, "workers": 0,
                                       "shuffle_buffer": 24}, checkpoint_every=2,
                        optim={"lr": 1e-3, "warmup_steps": 3, "max_steps": 4}))
    assert res["steps"] == 4 and res["resumed_from_step"] == 4  # resumed at the end: nothing left to do


def test_starting_over_sets_the_old_checkpoints_aside(ds, tmp_path):
    out = tmp_path / "run"
    train(run_cfg(ds, out, optim={"lr": 1e-3, "warmup_steps": 3, "max_steps": 10}))
    old = sorted(p.name for p in (out / "checkpoints").iterdir())
    train(run_cfg(ds, out, resume="none", optim={"lr": 1e-3, "warmup_steps": 3, "max_steps": 3}))
    assert sorted(p.name for p in (out / "checkpoints.old-1").iterdir()) == old
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000003.pt"]
