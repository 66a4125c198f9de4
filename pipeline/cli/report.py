"""``hardneg report``: flags and ``--config/--set`` mapped onto :class:`ReportConfig`."""

from __future__ import annotations

import argparse
import logging

from pipeline.core.config import add_config_args, config_from_args
from pipeline.report.config import ReportConfig
from pipeline.report.report import build_report, format_ci

log = logging.getLogger("hardneg")


def report_config_from_args(args: argparse.Namespace) -> ReportConfig:
    flags = {
        "blind.heldout_fraction": args.heldout_fraction, "blind.order": args.order,
        "blind.seed": args.seed, "blind.max_pairs": args.max_pairs, "examples": args.examples,
        "rule_examples": args.rule_examples, "learned.enabled": False if args.no_learned else None,
    }
    return config_from_args(ReportConfig, args, flags)


def _report(args: argparse.Namespace) -> int:
    cfg = report_config_from_args(args)
    report = build_report(args.dataset, args.out, cfg)
    bc, lc = report["blind_check"], report.get("learned_check")
    for f, v in report["families"].items():
        b = bc.get(f, {})
        blind = f"blind check {format_ci(b, '')} of {b['pairs']:,} pairs" if b.get("pairs") else "blind check: no pairs"
        if lc is not None:
            d = lc.get(f, {})
            blind += (f"; learned detector {format_ci(d, '', 'accuracy')} of {d['heldout_pairs']:,} held-out pairs"
                      if "accuracy" in d else f"; learned detector: {d.get('skipped', 'not run')}")
        log.info("  %-18s coverage %5.1f%%  %s", f, 100 * v["coverage"], blind)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="quality report of a dataset folder: figures, plots and the two blind checks")
    p.add_argument("dataset", help="dataset folder (<dir>/<split>/*.parquet, manifest.json)")
    p.add_argument("--out", "-o", help="folder for report.json, report.md and the plots (default: the dataset folder)")
    p.add_argument("--heldout-fraction", type=float, help="share of image groups that train the blind-check LM (default 0.2)")
    p.add_argument("--order", type=int, help="n-gram order of the blind-check LM (default 3)")
    p.add_argument("--seed", type=int, help="seed of the held-out split, pair sample and examples (default 0)")
    p.add_argument("--max-pairs", type=int, help="pairs scored per family, a seeded sample (default 5000)")
    p.add_argument("--examples", type=int, help="examples per family in report.md (default 5)")
    p.add_argument("--rule-examples", type=int,
                   help="examples per rule of each family in report.json and report.md (default 3; 0: counts and shares only)")
    p.add_argument("--no-learned", action="store_true", help="skip the learned text-only detector (learned.enabled=false)")
    add_config_args(p, "report")
    p.set_defaults(func=_report)
