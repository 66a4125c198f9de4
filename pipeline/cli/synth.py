"""``hardneg synth``: render the embedded world; ``--config/--preset/--set`` mapped onto :class:`SynthConfig`."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from pipeline.core.config import add_config_args
from pipeline.synth.world import PRESETS, generate_world, load_config

log = logging.getLogger("hardneg")


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.section, args.preset, args.overrides)
    summary = generate_world(cfg, args.out)
    coll = summary["splits"]["train"]["relation_swap_collisions"]
    if coll:
        log.info(
            "in-batch relation-swap collisions (batch %d): exact text %.4f%%, same meaning %.4f%%, "
            "swapped pair in image %.4f%% of batches per caption",
            coll["batch_size"],
            100 * coll["exact_text"]["p_batch"],
            100 * coll["same_meaning"]["p_batch"],
            100 * coll["swapped_pair_in_image"]["p_batch"],
        )
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "synth",
        help="render the embedded compositional world (train/test Parquet + world.json)",
        description="Render a synthetic world of coloured shapes in spatial relations, with captions "
        "that only word order and attribute binding tell apart; some (colour, shape) pairs are "
        "held out of train.",
    )
    p.add_argument("--out", required=True, help="output folder (train.parquet, test.parquet, world.json)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named override set applied after --config")
    add_config_args(p, "synth")
    p.set_defaults(func=_run)
