"""Diagnostic, not a speed benchmark: can the tiny image tower learn where things are?

Trains the ``hardneg-tiny`` image tower plus a linear head, with plain supervision, to name the
colour of the *left* object of the embedded world's left/right scenes, and prints held-out accuracy
every 100 steps. Naming a colour that is present but ignoring position scores about 50%; above that
the tower has learned position. docs/world.md uses it to separate "the image tower cannot encode
relations" from "contrastive training does not get it to" (the image tower learns this quickly).

  python bench/probe_position.py [--world data/world] [--steps 600]
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.config import ModelConfig  # noqa: E402
from trainer.models import build_model  # noqa: E402


def left_colour_set(path: Path, colours: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of left/right scenes (one per image group) and the index of the left object's colour."""
    rows = pq.read_table(path, columns=["image", "objects", "relation", "group"]).to_pylist()
    seen: set[str] = set()
    xs, ys = [], []
    for r in rows:
        if r["group"] in seen or r["relation"] not in ("left_of", "right_of"):
            continue
        seen.add(r["group"])
        left = min(r["objects"], key=lambda o: o["x"])
        xs.append(np.asarray(Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB")))
        ys.append(colours.index(left["colour"]))
    if not xs:
        raise SystemExit(f"{path}: no left/right scenes (the world needs left_of or right_of relations)")
    x = torch.tensor(np.stack(xs)).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.45) / 0.27, torch.tensor(ys)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default=str(ROOT / "data/world"), help="output folder of `hardneg synth`")
    ap.add_argument("--model", default="hardneg-tiny-ctx20")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    world = Path(args.world)
    import json

    colours = json.loads((world / "world.json").read_text())["config"]["colours"]
    x_tr, y_tr = left_colour_set(world / "train.parquet", colours)
    x_te, y_te = left_colour_set(world / "test.parquet", colours)
    print(f"{len(y_tr)} train and {len(y_te)} test left/right scenes, {len(colours)} colours")
    built = build_model(ModelConfig(name=args.model, pretrained=None, device="cpu"), "cpu")
    visual = built.model.visual
    head = torch.nn.Linear(built.model.visual.output_dim, len(colours))
    opt = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=1e-3, weight_decay=0.1)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(y_tr), (args.batch_size,))
        loss = torch.nn.functional.cross_entropy(head(visual(x_tr[idx])), y_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                acc = (head(visual(x_te)).argmax(-1) == y_te).float().mean().item()
            print(f"step {step:5d}  loss {loss.item():.3f}  held-out accuracy {acc:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
