"""Small negative shards for the trainer tests, written with the schema module (no spaCy needed).

The world: one coloured shape on a plain background per image. Captions name colour and shape
("a red circle"); the attribute_replace negative changes the colour, object_replace the shape, and
relation_swap is left empty on purpose so masks get exercised.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from pipeline.contract import schema
from pipeline.records import Candidate, CaptionRecord
from pipeline.rules.builder import to_row

COLORS = {"red": (220, 30, 30), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (240, 220, 30)}
SHAPES = ("circle", "square", "triangle")


def shape_image(color: str, shape: str, size: int = 64, offset: int = 0, fmt: str = "PNG") -> bytes:
    img = Image.new("RGB", (size, size), (245, 245, 245))
    d = ImageDraw.Draw(img)
    lo, hi = size // 4 + offset, 3 * size // 4 + offset
    rgb = COLORS[color]
    if shape == "circle":
        d.ellipse([lo, lo, hi, hi], fill=rgb)
    elif shape == "square":
        d.rectangle([lo, lo, hi, hi], fill=rgb)
    else:
        d.polygon([(size // 2 + offset, lo), (lo, hi), (hi, hi)], fill=rgb)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def cand(text: str, family: str) -> Candidate:
    return Candidate(text=text, family=family, rule="test", token_spans=((1, 2),), char_spans=((2, 5),))


def shapes_rows(n: int, *, image_dir: Path | None = None, start: int = 0, fmt: str = "PNG") -> list[dict]:
    """``n`` rows cycling through colours x shapes; images embedded, or written under ``image_dir``."""
    rows = []
    colors = list(COLORS)
    for i in range(start, start + n):
        color, shape = colors[i % len(colors)], SHAPES[(i // len(colors)) % len(SHAPES)]
        data = shape_image(color, shape, offset=(i % 5) - 2, fmt=fmt)
        path = None
        if image_dir is not None:
            path = f"img_{i:05d}.{fmt.lower()}"
            (image_dir / path).write_bytes(data)
            data = None
        rec = CaptionRecord(
            id=f"s{i:05d}", caption=f"a {color} {shape}", image_path=path, source="test", split="train",
            group=f"g{i:05d}", image_bytes=data,
        )
        other_colors = [c for c in colors if c != color]
        other_shapes = [s for s in SHAPES if s != shape]
        cands = {
            "attribute_replace": [cand(f"a {c} {shape}", "attribute_replace") for c in other_colors],
            "object_replace": [cand(f"a {color} {s}", "object_replace") for s in other_shapes],
        }
        rows.append(to_row(rec, cands))
    return rows


def write_shard(path: Path, rows: Sequence[dict], row_group_size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=schema.arrow_schema({"name": "test"}))
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def shapes_dataset(root: Path, n: int, *, shards: int = 2, row_group_size: int = 16, split: str = "train",
                   image_dir: Path | None = None, fmt: str = "PNG") -> Path:
    """``<root>/<split>/shard-XXXXX.parquet`` holding ``n`` rows over ``shards`` files."""
    per = -(-n // shards)
    for s in range(shards):
        lo, hi = s * per, min(n, (s + 1) * per)
        if lo >= hi:
            break
        write_shard(root / split / f"shard-{s:05d}.parquet", shapes_rows(hi - lo, start=lo, image_dir=image_dir, fmt=fmt),
                    row_group_size)
    return root


FAMILIES = ["relation_swap", "attribute_replace", "object_replace"]


def global_batch(tokenizer, n: int = 8, size: int = 64, seed: int = 0) -> dict:
    """A fixed training batch (as NegativeStream yields) with a mix of valid and masked negatives."""
    import torch

    g = torch.Generator().manual_seed(seed)
    colors, shapes = list(COLORS), list(SHAPES)
    captions = [f"a {colors[i % 4]} {shapes[i % 3]} next to a {colors[(i + 1) % 4]} ball" for i in range(n)]
    negs = []
    for i in range(n):
        swap = f"a {colors[(i + 1) % 4]} ball next to a {colors[i % 4]} {shapes[i % 3]}" if i % 3 else None
        attr = f"a {colors[(i + 2) % 4]} {shapes[i % 3]} next to a {colors[(i + 1) % 4]} ball"
        obj = f"a {colors[i % 4]} {shapes[(i + 1) % 3]} next to a {colors[(i + 1) % 4]} ball" if i % 4 else None
        negs.append([swap, attr, obj])
    flat = [t for row in negs for t in row if t is not None]
    tokens = tokenizer(captions + flat)
    mask = torch.tensor([[t is not None for t in row] for row in negs])
    neg = torch.zeros((n, 3, tokens.shape[1]), dtype=tokens.dtype)
    neg[mask] = tokens[n:]
    return {
        "images": torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
        "text": tokens[:n],
        "neg_text": neg,
        "neg_mask": mask,
        "ids": [f"g{i}" for i in range(n)],
    }


def slice_batch(batch: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] for k, v in batch.items()}


def write_manifest(root: Path, name: str = "test") -> Path:
    """A ``manifest.json`` beside the shards of ``root`` listing each with its rows, bytes and sha256
    (the part of a manifest that readers check shards against)."""
    import json

    from pipeline.contract.shards import list_shards
    from pipeline.core.atomic import sha256_file

    shards = [
        {"path": p.relative_to(root).as_posix(), "split": split, "rows": pq.read_metadata(p).num_rows,
         "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for split, files in list_shards(root).items() for p in files
    ]
    doc = {"manifest_version": "1", "name": name, "schema_version": schema.SCHEMA_VERSION,
           "rows": sum(s["rows"] for s in shards), "shards": shards}
    (root / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return root / "manifest.json"


def tiny_run_cfg(ds: Path, out: Path, *, workers: int = 2, max_steps: int = 20, **over: object) -> dict:
    """A ``train()`` config of the tiny model on ``ds``; ``over`` replaces keys (a dict merges into its section)."""
    cfg: dict = {
        "model": {"name": "hardneg-tiny", "pretrained": None},
        "data": {"paths": [str(ds)], "families": FAMILIES, "batch_size": 8, "workers": workers, "shuffle_buffer": 24},
        "optim": {"lr": 1e-3, "warmup_steps": 3, "max_steps": max_steps},
        "output_dir": str(out),
        "checkpoint_every": 5,
        "tensorboard": False,
        "progress": False,
    }
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg
