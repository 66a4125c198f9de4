"""``hardneg generate``, ``inspect`` and ``export``: flags and ``--config/--set`` mapped onto :class:`GenerateConfig`."""

from __future__ import annotations

import argparse
import json
import logging

from pipeline.config import GenerateConfig
from pipeline.core.config import add_config_args, config_from_args

log = logging.getLogger("hardneg")


def source_flags(args: argparse.Namespace) -> dict:
    """The source's command-line flags as dotted config keys (shared with ``hardneg parse``)."""
    return {
        "source.path": args.input, "source.format": args.format, "source.split": args.split,
        "source.caption_column": args.caption_column, "source.image_column": args.image_column,
        "source.limit": args.limit,
    }


def generate_config_from_args(args: argparse.Namespace) -> GenerateConfig:
    flags = {
        **source_flags(args), "name": args.name, "out": args.out, "workers": args.workers,
        "k": args.k, "seed": args.seed, "families": args.families, "parse.model": args.model,
        "manifest_dir": args.manifest_dir, "engine": args.engine, "ray.address": args.ray_address,
        "ray.actors": args.actors, "source.exclude_images": args.exclude_images, "parsed": args.parsed,
    }
    return config_from_args(GenerateConfig, args, flags)


def _generate(args: argparse.Namespace) -> int:
    from pipeline.generate import generate
    from pipeline.nlp import without_torch

    cfg = generate_config_from_args(args)
    without_torch(cfg.parse)  # this process runs stage 1 only: spaCy's import without torch's
    manifest = generate(cfg)
    log.info(
        "wrote %d rows in %d shards to %s; manifest %s/%s.json",
        manifest.rows, len(manifest.shards), cfg.out, cfg.manifest_dir, cfg.name,
    )
    for fam, f in manifest.families.items():
        log.info("  %-18s %7d negatives, coverage %.1f%%", fam, f.negatives, 100 * f.coverage)
    if manifest.skipped_total:
        log.info("  skipped rows: %s", manifest.skipped)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from pipeline.contract.dataset import summarize

    s = summarize(args.dataset, examples=args.examples, seed=args.seed)
    if args.json:
        print(json.dumps(s, indent=2, ensure_ascii=False))
        return 0
    print(f"{args.dataset}: {s['rows']} captions  " + "  ".join(f"{k}={v}" for k, v in s["splits"].items()))
    for fam, f in s["families"].items():
        if not f["negatives"]:
            continue
        print(f"\n{fam}: {f['negatives']} negatives, {f['captions_covered']} captions covered ({100 * f['coverage']:.1f}%)")
        for ex in f["examples"]:
            print(f"  + {ex['caption']}\n  - {ex['negative']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pipeline.contract.dataset import export_jsonl

    n = export_jsonl(args.dataset, args.out, args.families)
    log.info("exported %d rows to %s", n, args.out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="parse captions and write hard-negative shards")
    p.add_argument("--input", "-i", help="caption file, folder or HF dataset (source.path)")
    p.add_argument("--format", help="auto|coco|karpathy|csv|tsv|jsonl|parquet|hf")
    p.add_argument("--split", help="split name for every row (default: from the source)")
    p.add_argument("--caption-column")
    p.add_argument("--image-column")
    p.add_argument("--limit", type=int, help="read at most this many captions")
    p.add_argument("--exclude-images", nargs="+", metavar="FILE",
                   help="evaluation files (SugarCrepe/ARO/VALSE JSON, Winoground jsonl or parquet, a Karpathy split JSON, a "
                   "text list of names or COCO ids) whose images are left out (source.exclude_images)")
    p.add_argument("--name", help="dataset name (manifest file name)")
    p.add_argument("--out", "-o", help="output folder for the shards, or an fsspec URL (s3://bucket/path)")
    p.add_argument("--manifest-dir", help="folder for <name>.json (default: manifests)")
    p.add_argument("--workers", "-j", type=int, help="parallel worker processes")
    p.add_argument("--k", type=int, help="max candidates per family per caption")
    p.add_argument("--seed", type=int)
    p.add_argument("--families", help="comma-separated family names")
    p.add_argument("--model", help="spaCy pipeline name (parse.model)")
    p.add_argument("--parsed", help="a parse store of this source (`hardneg parse`): read the parses instead of parsing")
    p.add_argument("--engine", choices=["local", "ray"], help="local (process pool) or ray (Ray Data; docs/scale.md)")
    p.add_argument("--ray-address", help="Ray cluster to join (ray.address; default: RAY_ADDRESS if set, else start a local one)")
    p.add_argument("--actors", type=int, help="Ray actors of the negatives pass (ray.actors)")
    add_config_args(p, "generate")
    p.set_defaults(func=_generate)

    p = sub.add_parser("inspect", help="counts and examples per family of a dataset folder")
    p.add_argument("dataset")
    p.add_argument("--examples", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("export", help="write a dataset as JSONL")
    p.add_argument("dataset")
    p.add_argument("--format", choices=["jsonl"], default="jsonl")
    p.add_argument("--out", "-o", required=True)
    p.add_argument("--families", type=lambda s: [x for x in s.split(",") if x], default=None)
    p.set_defaults(func=_export)
