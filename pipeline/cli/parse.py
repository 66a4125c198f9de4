"""``hardneg parse``: flags and ``--config/--set`` mapped onto :class:`ParseStoreConfig`."""

from __future__ import annotations

import argparse
import logging

from pipeline.cli.generate import source_flags
from pipeline.config import ParseStoreConfig
from pipeline.core.config import add_config_args, config_from_args

log = logging.getLogger("hardneg")


def _parse(args: argparse.Namespace) -> int:
    from pipeline.nlp import without_torch
    from pipeline.parse import build_store

    flags = {**source_flags(args), "out": args.out, "workers": args.workers, "parse.model": args.model}
    cfg = config_from_args(ParseStoreConfig, args, flags)
    without_torch(cfg.parse)  # this process parses only: spaCy's import without torch's
    manifest = build_store(cfg)
    log.info("parse store %s: %d captions, %d parts", cfg.out, manifest["captions"], len(manifest["parts"]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("parse", help="parse a source's captions once, into a parse store for `generate --parsed`")
    p.add_argument("--input", "-i", help="caption file, folder or HF dataset (source.path)")
    p.add_argument("--format", help="auto|coco|karpathy|csv|tsv|jsonl|parquet|hf")
    p.add_argument("--split", help="split name for every row (default: from the source)")
    p.add_argument("--caption-column")
    p.add_argument("--image-column")
    p.add_argument("--limit", type=int, help="read at most this many captions")
    p.add_argument("--out", "-o", help="the parse store folder")
    p.add_argument("--workers", "-j", type=int, help="parallel worker processes")
    p.add_argument("--model", help="spaCy pipeline name (parse.model)")
    add_config_args(p, "parse")
    p.set_defaults(func=_parse)
