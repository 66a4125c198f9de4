"""Throughput of ``hardneg generate`` against a bare spaCy parse, side by side in one run.

Measures, on the same captions, with the same model and components, each from a cold start
(loading the spaCy pipeline is inside every timing; one-time imports are paid by an untimed warm-up):
  bare      load the pipeline + nlp.pipe over the captions, nothing else (the ceiling)
  one-by-one  nlp(caption) per caption, as NegCLIP's perturbation code parses (for reference)
  gen x1    the full ``generate()`` (read, load, parse, rules, filters, Parquet, manifest), 1 worker
  gen x2    the same with 2 worker processes
  gen all6  1 worker with the three replace families on as well (issue 5's budget)
Rounds alternate the variants, each round starting with the next one and collecting garbage before
every timing, so drift on a shared machine and order effects hit all of them alike; the table shows
the median of the rounds and the ratios the targets are stated in:
  gen x1 / bare >= 0.9, gen x2 / gen x1 >= 1.8, gen all6 / bare >= 0.85.

  python bench/bench_generate.py [--captions ../shared/data/coco_karpathy_test.json] [--limit N] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import _compiled  # noqa: E402
from pipeline.config import GenerateConfig, ParseConfig, SourceConfig  # noqa: E402
from pipeline.generate import generate  # noqa: E402
from pipeline.nlp import load_nlp  # noqa: E402


def captions_of(path: Path, limit: int | None) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    caps = [c for item in data for c in (item["caption"] if isinstance(item["caption"], list) else [item["caption"]])]
    return caps[:limit] if limit else caps


def time_bare(caps: list[str], parse: ParseConfig) -> float:
    """Load the pipeline and parse: the same fixed start-up cost that ``generate`` pays."""
    t = time.perf_counter()
    nlp = load_nlp(parse)
    for _ in nlp.pipe(caps, batch_size=parse.batch_size):
        pass
    return time.perf_counter() - t


def time_one_by_one(caps: list[str], parse: ParseConfig) -> float:
    nlp = load_nlp(parse)
    t = time.perf_counter()
    for c in caps:
        nlp(c)
    return time.perf_counter() - t


ALL_SIX = ["relation_swap", "attribute_swap", "object_swap", "relation_replace", "attribute_replace", "object_replace"]


def time_generate(src: Path, limit: int | None, workers: int, tmp: Path, families: list[str] | None = None) -> tuple[float, int]:
    out = tmp / f"out-{workers}-{len(families or [])}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = GenerateConfig(
        name=f"bench-{workers}",
        source=SourceConfig(path=str(src), limit=limit),
        out=str(out),
        manifest_dir=str(tmp / "manifests"),
        workers=workers,
    )
    if families:
        cfg.families = list(families)
    t = time.perf_counter()
    m = generate(cfg)
    return time.perf_counter() - t, m.rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", default=str(ROOT.parent / "shared/data/coco_karpathy_test.json"))
    ap.add_argument("--limit", type=int, default=None, help="use the first N captions (default: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one-by-one", type=int, default=2000, help="captions for the one-at-a-time reference")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    src = Path(args.captions)
    if not src.exists():
        print(f"captions file {src} not found (pass --captions)", file=sys.stderr)
        return 2
    caps = captions_of(src, args.limit)
    n = len(caps)
    parse = ParseConfig()
    rows: dict[str, list[float]] = {"bare": [], "gen_x1": [], "gen_x2": [], "gen_all6": []}
    # warm-up, not timed: the first spaCy import (with thinc and torch) costs ~2 s, and generate's
    # own first-use costs (pyarrow's first array imports pandas, ~0.25 s) would otherwise land on
    # whichever variant runs first; every timing still loads the spaCy pipeline itself
    load_nlp(parse)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        time_generate(src, 200, 1, tmp, ALL_SIX)
        variants: list[tuple[str, int, list[str] | None]] = [
            ("bare", 0, None), ("gen_x1", 1, None), ("gen_x2", 2, None), ("gen_all6", 1, ALL_SIX)
        ]
        for r in range(args.rounds):
            # each round starts with the next variant, so no variant always follows the same one, and
            # the garbage a variant leaves (a spaCy pipeline holds reference cycles) is collected
            # before the next timing instead of inside it
            for key, workers, fams in variants[r % 4 :] + variants[: r % 4]:
                gc.collect()
                if key == "bare":
                    rows[key].append(n / time_bare(caps, parse))
                else:
                    dt, written = time_generate(src, args.limit, workers, tmp, fams)
                    rows[key].append(written / dt)
            print(f"round {r + 1}: " + "  ".join(f"{k}={v[-1]:.0f}/s" for k, v in rows.items()), flush=True)
        obo = caps[: args.one_by_one]
        one = len(obo) / time_one_by_one(obo, parse)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\n{n} captions, {args.rounds} rounds (median), spaCy pipeline components as configured")
    print(f"rule modules: {_compiled.status()['reason']} (HARDNEG_PURE=1 runs the .py sources)")
    print(f"{'variant':<24}{'captions/s':>12}")
    print(f"{'bare nlp.pipe':<24}{med['bare']:>12.0f}")
    print(f"{'one-by-one nlp()':<24}{one:>12.0f}")
    print(f"{'generate, 1 worker':<24}{med['gen_x1']:>12.0f}")
    print(f"{'generate, 2 workers':<24}{med['gen_x2']:>12.0f}")
    print(f"{'generate, all six, x1':<24}{med['gen_all6']:>12.0f}")

    def per_round(a: str, b: str) -> str:
        return ", ".join(f"{x / y:.2f}" for x, y in zip(rows[a], rows[b]))

    print("\nper-round ratios (each round's variants ran back to back):")
    print(f"  generate x1 / bare : {per_round('gen_x1', 'bare')}")
    print(f"  generate x2 / x1   : {per_round('gen_x2', 'gen_x1')}")
    print(f"  all six x1 / bare  : {per_round('gen_all6', 'bare')}")

    def verdict(name: str, r: float, target: float) -> None:
        print(f"{name:<26}: {r:.2f}  (target >= {target:.2f}) {'OK' if r >= target else 'MISSED'}")

    print("\nratios of the medians:")
    verdict("generate x1 / bare parse", med["gen_x1"] / med["bare"], 0.90)
    verdict("generate x2 / generate x1", med["gen_x2"] / med["gen_x1"], 1.80)
    verdict("all six x1 / bare parse", med["gen_all6"] / med["bare"], 0.85)
    return 0


if __name__ == "__main__":
    sys.exit(main())
