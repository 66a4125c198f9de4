"""Benchmark of the stage-2 trainer on the CPU, measured side by side in one run.

(a) One training step of ``hardneg-tiny`` with K=3 hard negatives per caption and all three losses
    (contrastive with hard negatives, IMC, CMR), against a plain open_clip forward/backward with
    ``open_clip.ClipLoss`` over the same B images and B*(1+K) texts (one ClipLoss call per text
    block, so every text is encoded and back-propagated in both). Ours includes the trainer's check
    that the loss and every gradient are finite. Target: ratio <= 1.05.
(b) Data-loader throughput of ``trainer.data.NegativeStream`` (Parquet rows with image paths,
    draft-mode JPEG decode, uint8 hand-over, tokenisation of 1+K captions per sample) against a naive
    map-style pipeline: ``Image.open(path).convert("RGB")`` -> open_clip's own train (or val)
    transform -> default collate, on the same JPEG files, one loader worker each. Target: >= 1.5x.
    The images are 640x480 JPEGs of smooth gradients plus noise (quality 90, ~100 KB, compressing
    like photos) and the target is 224x224, as for ViT-B/32 fine-tuning on COCO.

(c) One full training step (encode, objective, backward, finiteness check, fused AdamW, and for
    distillation the EMA teacher's forward and update) of each objective on the world's model
    (``hardneg-tiny-ctx20``, B=128, K=3, about a fifth of the negatives invalid, as in real shards):
    CLIP (B texts), NegCLIP, CE-CLIP, FSC-CLIP (dense forward + global and local hard-negative
    terms) and CE-CLIP + ``loss.distill_ema``, printed as ratios to CLIP's step and FSC-CLIP's to
    CE-CLIP's. Target: FSC-CLIP <= 1.3x CE-CLIP.

Timings alternate between the sides (round-robin in (c)) and report medians, so background load
hits all alike.

    python bench/bench_train.py                 # defaults used for the docs/benchmarks.md figures
    python bench/bench_train.py --threads 2 --batch-size 64
    python bench/bench_train.py --only objectives --obj-repeats 12
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.contract import schema  # noqa: E402
from pipeline.records import Candidate, CaptionRecord  # noqa: E402
from pipeline.rules.builder import to_row  # noqa: E402


def bench_step(batch_size: int, k: int, repeats: int) -> dict:
    import open_clip

    from trainer.config import LossConfig, ModelConfig
    from trainer.data import ImageSpec, normalize_images
    from trainer.loop import all_finite, encode_batch, global_losses
    from trainer.models import build_model

    torch.manual_seed(0)
    built = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
    model, tok = built.model, built.tokenizer
    spec = ImageSpec.from_preprocess(built.preprocess)
    b = batch_size
    words = ["red", "blue", "green", "small", "large", "dog", "cat", "table", "on", "under", "next", "to"]
    rng = np.random.default_rng(0)
    caps = [" ".join(["a"] + list(rng.choice(words, 8))) for _ in range(b * (1 + k))]
    tokens = tok(caps)
    images_u8 = torch.randint(0, 256, (b, 3, spec.height, spec.width), dtype=torch.uint8)
    images_f = normalize_images(images_u8, spec)
    batch = {
        "images": images_u8,
        "text": tokens[:b],
        "neg_text": tokens[b:].view(b, k, -1),
        "neg_mask": torch.ones(b, k, dtype=torch.bool),
    }
    loss_cfg = LossConfig()
    clip_loss = open_clip.ClipLoss()
    dev = torch.device("cpu")

    def ours() -> None:
        img, txt, negs, mask, scale = encode_batch(model, batch, spec, dev, True)
        out = global_losses(img, txt, negs, mask, scale, loss_cfg)
        model.zero_grad(set_to_none=True)
        out["total"].backward()
        all_finite(out["total"], model.parameters())

    def plain() -> None:
        img, txt, scale = model(images_f, tokens)
        loss = sum(clip_loss(img, txt[j * b : (j + 1) * b], scale) for j in range(1 + k))
        model.zero_grad(set_to_none=True)
        loss.backward()

    # the loss functions alone, on fixed features (what the CE-CLIP terms add beyond encoding)
    with torch.no_grad():
        img0, txt0, negs0, mask0, scale0 = encode_batch(model, batch, spec, dev, True)
    feats = [t.detach().clone().requires_grad_(True) for t in (img0, txt0, negs0)]

    def losses_only() -> None:
        out = global_losses(feats[0], feats[1], feats[2], mask0, scale0, loss_cfg)
        out["total"].backward()

    def cliploss_only() -> None:
        allt = torch.cat([feats[1][:, None], feats[2]], 1).transpose(0, 1).reshape(-1, feats[1].shape[1])
        loss = sum(clip_loss(feats[0], allt[j * b : (j + 1) * b], scale0) for j in range(1 + k))
        loss.backward()

    for f in (ours, plain, ours, plain):
        f()
    t_ours, t_plain = [], []
    for r in range(repeats):
        pair = [(ours, t_ours), (plain, t_plain)]
        for f, acc in pair if r % 2 == 0 else pair[::-1]:
            t = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t)
    t_lo, t_cl = [], []
    for _ in range(repeats):
        for f, acc in ((losses_only, t_lo), (cliploss_only, t_cl)):
            t = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t)
    m_ours, m_plain = statistics.median(t_ours), statistics.median(t_plain)
    return {
        "batch_size": b,
        "negatives_per_caption": k,
        "texts": b * (1 + k),
        "ours_ms": 1000 * m_ours,
        "plain_ms": 1000 * m_plain,
        "ratio": m_ours / m_plain,
        "ce_clip_losses_fwd_bwd_ms": 1000 * statistics.median(t_lo),
        "clip_loss_fwd_bwd_ms": 1000 * statistics.median(t_cl),
    }


OBJECTIVE_RUNS = ("clip", "negclip", "ce-clip", "fsc-clip", "ce-clip+distill")


def bench_objectives(model_name: str, batch_size: int, k: int, repeats: int) -> dict:
    from trainer.config import OBJECTIVES, LossConfig, ModelConfig
    from trainer.data import ImageSpec
    from trainer.loop import (
        all_finite,
        ema_update,
        encode_batch,
        encode_batch_dense,
        global_losses,
        make_teacher,
        teacher_features,
    )
    from trainer.models import DenseForward, build_model

    torch.manual_seed(0)
    built = build_model(ModelConfig(name=model_name, pretrained=None))
    model, tok = built.model, built.tokenizer
    spec = ImageSpec.from_preprocess(built.preprocess)
    dense = DenseForward.wrap(model, model_name)
    teacher = make_teacher(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    b = batch_size
    words = ["red", "blue", "green", "small", "large", "dog", "cat", "table", "on", "under", "next", "to"]
    rng = np.random.default_rng(0)
    caps = [" ".join(["a"] + list(rng.choice(words, 8))) for _ in range(b * (1 + k))]
    tokens = tok(caps)
    mask = torch.from_numpy(rng.random((b, k)) < 0.8)
    batch = {
        "images": torch.randint(0, 256, (b, 3, spec.height, spec.width), dtype=torch.uint8),
        "text": tokens[:b],
        "neg_text": tokens[b:].view(b, k, -1),
        "neg_mask": mask,
    }
    dev = torch.device("cpu")

    def loss_cfg(name: str) -> LossConfig:
        base = name.split("+")[0]
        keys = {key.split(".", 1)[1]: v for key, v in OBJECTIVES[base].items()}
        return LossConfig(**keys, distill_ema=name.endswith("+distill"))

    def make_step(name: str):
        cfg = loss_cfg(name)

        def step() -> None:
            local = None
            if cfg.local_hn:
                img, txt, negs, m, scale, local = encode_batch_dense(dense, batch, spec, dev)
            else:
                img, txt, negs, m, scale = encode_batch(model, batch, spec, dev, cfg.needs_negatives)
            t = teacher_features(teacher, batch, spec, dev) if cfg.distill_ema else None
            out = global_losses(img, txt, negs, m, scale, cfg, local, t)
            opt.zero_grad(set_to_none=True)
            out["total"].backward()
            all_finite(out["total"], model.parameters())
            opt.step()
            if cfg.distill_ema:
                ema_update(teacher, model, cfg.ema_decay)

        return step

    steps = {n: make_step(n) for n in OBJECTIVE_RUNS}
    for f in steps.values():  # warm-up
        f()
    times: dict[str, list[float]] = {n: [] for n in OBJECTIVE_RUNS}
    for r in range(repeats):
        order = OBJECTIVE_RUNS[r % len(OBJECTIVE_RUNS):] + OBJECTIVE_RUNS[:r % len(OBJECTIVE_RUNS)]
        for n in order:
            t = time.perf_counter()
            steps[n]()
            times[n].append(time.perf_counter() - t)
    med = {n: statistics.median(v) for n, v in times.items()}
    return {
        "model": model_name, "batch_size": b, "negatives_per_caption": k, "valid_negatives": int(mask.sum()),
        "repeats": repeats, "ms": {n: 1000 * v for n, v in med.items()},
        "ratio_to_clip": {n: v / med["clip"] for n, v in med.items()},
        "fsc_to_ceclip": med["fsc-clip"] / med["ce-clip"],
        "distill_to_ceclip": med["ce-clip+distill"] / med["ce-clip"],
    }


def _photo_jpeg(rng: np.random.Generator, w: int = 640, h: int = 480) -> bytes:
    from PIL import Image

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    base = np.stack([127 + 90 * np.sin(xx / (40 + 30 * i) + yy / (55 + 20 * i) + phase[i]) for i in range(3)], -1)
    arr = np.clip(base + rng.normal(0, 14, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_images(root: Path, n: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, names = [], []
    for i in range(n):
        name = f"{i:06d}.jpg"
        (root / "images" / name).write_bytes(_photo_jpeg(rng))
        names.append(name)
        rec = CaptionRecord(id=f"b{i}", caption="a man riding a brown horse next to a small white dog",
                            image_path=name, source="bench", split="train", group=f"b{i}")
        cands = {
            "relation_swap": [Candidate("a small white dog riding a brown horse next to a man", "relation_swap", "r", ((0, 1),), ((0, 1),))],
            "attribute_swap": [Candidate("a man riding a white horse next to a small brown dog", "attribute_swap", "r", ((0, 1),), ((0, 1),))],
            "object_swap": [Candidate("a horse riding a brown man next to a small white dog", "object_swap", "r", ((0, 1),), ((0, 1),))],
        }
        rows.append(to_row(rec, cands))
    (root / "ds" / "train").mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema.arrow_schema({"name": "bench"}))
    pq.write_table(table, root / "ds" / "train" / "shard-00000.parquet", row_group_size=128)
    return names


class _Naive(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.open(self.paths[i]).convert("RGB"))


def bench_loader(n_images: int, batch_size: int, passes: int, train_mode: bool, root: Path) -> dict:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from trainer.data import ImageSpec, NegativeStream, ShardIndex, make_loader

    names = sorted(p.name for p in (root / "images").glob("*.jpg"))
    pp = PreprocessCfg(size=224)
    spec = ImageSpec.from_preprocess({"size": 224, "mean": pp.mean, "std": pp.std})
    tok = open_clip.get_tokenizer("ViT-B-32")
    stream = NegativeStream(
        ShardIndex.from_paths([str(root / "ds")], "train"), tokenizer=tok, spec=spec, batch_size=batch_size,
        families=["relation_swap", "attribute_swap", "object_swap"], image_root=str(root / "images"),
        shuffle_buffer=n_images, augment=train_mode,
    )
    ours_loader = make_loader(stream, workers=1)
    naive_loader = torch.utils.data.DataLoader(
        _Naive([str(root / "images" / n) for n in names], image_transform_v2(pp, is_train=train_mode)),
        batch_size=batch_size, shuffle=True, num_workers=1, persistent_workers=True, drop_last=True,
    )

    def run_ours(epoch: int) -> float:
        stream.set_position(epoch, 0)
        t, n = time.perf_counter(), 0
        for b in ours_loader:
            n += b["images"].shape[0]
        return n / (time.perf_counter() - t)

    def run_naive(_: int) -> float:
        t, n = time.perf_counter(), 0
        for b in naive_loader:
            n += b.shape[0]
        return n / (time.perf_counter() - t)

    run_ours(0), run_naive(0)  # start workers, warm the page cache
    ours, naive = [], []
    for p in range(passes):
        pair = [(run_ours, ours), (run_naive, naive)]
        for f, acc in pair if p % 2 == 0 else pair[::-1]:
            acc.append(f(p + 1))
    s_ours, s_naive = statistics.median(ours), statistics.median(naive)
    return {"mode": "train" if train_mode else "val", "images": n_images, "ours_samples_s": s_ours,
            "naive_samples_s": s_naive, "speedup": s_ours / s_naive}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=30, help="timed steps per side for (a)")
    ap.add_argument("--images", type=int, default=256, help="JPEGs for (b)")
    ap.add_argument("--passes", type=int, default=3, help="timed passes per side for (b)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--only", choices=["step", "loader", "objectives"], help="run one part only")
    ap.add_argument("--obj-model", default="hardneg-tiny-ctx20", help="model for (c)")
    ap.add_argument("--obj-batch-size", type=int, default=128, help="batch size for (c)")
    ap.add_argument("--obj-repeats", type=int, default=10, help="timed steps per objective for (c)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU")
    results: dict = {}
    if args.only in (None, "step"):
        results["step"] = _print_step(args)
    if args.only in (None, "loader"):
        results["loader"] = _print_loader(args)
    if args.only in (None, "objectives"):
        results["objectives"] = _print_objectives(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _print_objectives(args: argparse.Namespace) -> dict:
    r = bench_objectives(args.obj_model, args.obj_batch_size, args.k, args.obj_repeats)
    print(f"\n(c) one training step per objective, {r['model']}, B={r['batch_size']}, K={r['negatives_per_caption']} "
          f"({r['valid_negatives']} valid negatives), medians of {r['repeats']} round-robin steps")
    for n in OBJECTIVE_RUNS:
        print(f"    {n:16s}: {r['ms'][n]:8.1f} ms   {r['ratio_to_clip'][n]:5.2f}x CLIP")
    print(f"    FSC-CLIP / CE-CLIP          : {r['fsc_to_ceclip']:.3f}   (target <= 1.3)")
    print(f"    CE-CLIP + distill / CE-CLIP : {r['distill_to_ceclip']:.3f}")
    return r


def _print_step(args: argparse.Namespace) -> dict:
    step = bench_step(args.batch_size, args.k, args.repeats)
    print(f"\n(a) training step, hardneg-tiny, B={step['batch_size']}, K={step['negatives_per_caption']}, "
          f"{step['texts']} texts")
    print(f"    CE-CLIP step (3 losses, hard negatives) : {step['ours_ms']:8.1f} ms")
    print(f"    open_clip forward/backward + ClipLoss   : {step['plain_ms']:8.1f} ms")
    print(f"    ratio                                   : {step['ratio']:8.3f}   (target <= 1.05)")
    print(f"    losses alone fwd+bwd: CE-CLIP {step['ce_clip_losses_fwd_bwd_ms']:.2f} ms, "
          f"ClipLoss x{1 + args.k} {step['clip_loss_fwd_bwd_ms']:.2f} ms")
    return step


def _print_loader(args: argparse.Namespace) -> list:
    tmp = Path(tempfile.mkdtemp(prefix="hardneg-bench-"))
    try:
        make_images(tmp, args.images)
        size = sum(p.stat().st_size for p in (tmp / "images").glob("*.jpg")) / args.images / 1024
        print(f"\n(b) data loader, {args.images} JPEGs 640x480 (~{size:.0f} KB), target 224, batch "
              f"{args.batch_size}, 1 worker")
        loaders = [bench_loader(args.images, args.batch_size, args.passes, mode, tmp) for mode in (True, False)]
        for r in loaders:
            print(f"    {r['mode']:5s}: NegativeStream {r['ours_samples_s']:7.1f} samples/s, naive PIL + open_clip "
                  f"{r['naive_samples_s']:7.1f} samples/s, speedup {r['speedup']:.2f}x   (target >= 1.5x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return loaders


if __name__ == "__main__":
    main()
