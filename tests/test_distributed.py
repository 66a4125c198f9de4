"""DDP with gloo on the CPU: two ``torchrun`` ranks give the loss and gradients of one process
(CE-CLIP, and FSC-CLIP with its locally computed, gathered token-to-patch scores).

The ranks hold 3 and 5 samples of the same 8-sample global batch (uneven on purpose: a skipped
image makes local batches differ), so the gather must pad and trim.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.shards import FAMILIES, global_batch, shapes_dataset

from trainer.config import OBJECTIVES, LossConfig, ModelConfig
from trainer.data import ImageSpec
from trainer.loop import encode_batch, encode_batch_dense, global_losses
from trainer.models import DenseForward, build_model

ROOT = Path(__file__).resolve().parents[1]
FSC = LossConfig(**{k.split(".", 1)[1]: v for k, v in OBJECTIVES["fsc-clip"].items()})

RANK_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from trainer.config import LossConfig, ModelConfig
from trainer.data import ImageSpec
from trainer.distributed import init_distributed, gather_with_grad
from trainer.loop import encode_batch, global_losses, train
from trainer.models import build_model
from support.shards import global_batch, slice_batch

info = init_distributed()
assert info.world_size == 2, info
torch.manual_seed(0)
built = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
spec = ImageSpec.from_preprocess(built.preprocess)
model = torch.nn.parallel.DistributedDataParallel(built.model)
lo, hi = (0, 3) if info.rank == 0 else (3, 8)
local = slice_batch(global_batch(built.tokenizer), lo, hi)
img, txt, negs, mask, scale = encode_batch(model, local, spec, torch.device("cpu"), True)
out = global_losses(img, txt, negs, mask, scale, LossConfig())
out["total"].backward()
grads = {{n: p.grad.clone() for n, p in built.model.named_parameters()}}
torch.save({{"loss": out["total"].detach(), "thresholds": out["thresholds"], "gaps": out["gaps"],
            "global_batch": out["global_batch"], "grads": grads}}, {out!r} + f"/rank{{info.rank}}.pt")

# FSC-CLIP on a second copy of the same initial model (no DDP: the gather's backward alone)
from trainer.config import OBJECTIVES
from trainer.loop import encode_batch_dense
from trainer.models import DenseForward
fsc = LossConfig(**{{k.split(".", 1)[1]: v for k, v in OBJECTIVES["fsc-clip"].items()}})
torch.manual_seed(0)
copy = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
feats = encode_batch_dense(DenseForward.wrap(copy.model, "hardneg-tiny"), local, spec, torch.device("cpu"))
fout = global_losses(*feats[:5], fsc, feats[5])
fout["total"].backward()
torch.save({{"loss": fout["total"].detach(), "local_hn": fout["local_hn"],
            "grads": {{n: p.grad.clone() for n, p in copy.model.named_parameters()}}}},
           {out!r} + f"/fsc{{info.rank}}.pt")

# the whole loop under DDP: 8 steps of 2 x 4 samples, crossing an epoch boundary (6 steps/epoch)
cfg = json.loads({cfg!r})
res = train(cfg)
if info.rank == 0:
    json.dump(res, open({out!r} + "/train.json", "w"))
# and FSC-CLIP with EMA self-distillation: DDP around the dense forward, a teacher on every rank
res = train({{**cfg, "output_dir": cfg["output_dir"] + "_fsc",
             "loss": {{**fsc.__dict__, "distill_ema": True, "ema_decay": 0.5}}}})
if info.rank == 0:
    json.dump(res, open({out!r} + "/train_fsc.json", "w"))
"""


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    torch.set_num_threads(1)
    data = shapes_dataset(tmp_path / "ds", 48, shards=2, row_group_size=12)
    cfg = {
        "model": {"name": "hardneg-tiny", "pretrained": None},
        "data": {"paths": [str(data)], "families": FAMILIES, "batch_size": 4, "workers": 1},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "max_steps": 8},
        "output_dir": str(tmp_path / "run"), "checkpoint_every": 3, "tensorboard": False, "progress": False,
    }
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT.format(tests=str(ROOT / "tests"), out=str(tmp_path), cfg=json.dumps(cfg)))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
         "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", str(script)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # one process, the same model init, the whole global batch
    torch.manual_seed(0)
    built = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
    spec = ImageSpec.from_preprocess(built.preprocess)
    batch = global_batch(built.tokenizer)
    img, txt, negs, mask, scale = encode_batch(built.model, batch, spec, torch.device("cpu"), True)
    ref = global_losses(img, txt, negs, mask, scale, LossConfig())
    ref["total"].backward()

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for got in ranks:
        assert got["global_batch"] == 8
        assert got["loss"].item() == pytest.approx(ref["total"].item(), rel=1e-6)
        assert torch.allclose(got["thresholds"], ref["thresholds"], atol=1e-5, equal_nan=True)
        assert torch.allclose(got["gaps"], ref["gaps"], atol=1e-5, equal_nan=True)
        for name, p in built.model.named_parameters():
            assert torch.allclose(got["grads"][name], p.grad, rtol=1e-4, atol=1e-6), name
    # the masked relation_swap slots of samples 0, 3, 6 never reach the loss
    assert ref["valid"].tolist() == [5, 8, 6]

    # FSC-CLIP: every rank computes the global loss; the ranks' gradients sum to twice the one-process one
    torch.manual_seed(0)
    copy = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
    feats = encode_batch_dense(DenseForward.wrap(copy.model, "hardneg-tiny"), batch, spec, torch.device("cpu"))
    fref = global_losses(*feats[:5], FSC, feats[5])
    fref["total"].backward()
    franks = [torch.load(tmp_path / f"fsc{r}.pt", weights_only=True) for r in (0, 1)]
    for got in franks:
        assert got["loss"].item() == pytest.approx(fref["total"].item(), rel=1e-6)
        assert got["local_hn"].item() == pytest.approx(fref["local_hn"].item(), rel=1e-6)
    for name, p in copy.model.named_parameters():
        summed = (franks[0]["grads"][name] + franks[1]["grads"][name]) / 2
        assert torch.allclose(summed, p.grad, rtol=1e-4, atol=1e-6), name
    fsc_res = json.loads((tmp_path / "train_fsc.json").read_text())
    assert fsc_res["steps"] == 8 and fsc_res["world_size"] == 2
    fsc_rows = [json.loads(x) for x in (tmp_path / "run_fsc" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["local_hn"] > 0 and r["global_hn"] > 0 and r["distill"] is not None for r in fsc_rows)

    res = json.loads((tmp_path / "train.json").read_text())
    assert res["world_size"] == 2 and res["steps"] == 8 and res["samples_seen"] == 64
    assert res["epoch"] == 1  # 6 steps per epoch per rank (24 rows / 4)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_batch"] for r in rows] == [8] * 8
    assert (tmp_path / "run" / "final" / "open_clip_pytorch_model.bin").is_file()
