"""Parse once, generate many times: ``hardneg generate`` from a parse store against parsing inline,
side by side in one run.

Every variant runs in a fresh Python process (so start-up is paid as a user pays it); the child
times its own work (``inner``: model load + parse, or the whole ``generate()``/``build_store()``
call) and the parent the whole process (``wall``: interpreter start, imports, work, exit). On the
same captions (all six families, 1 worker unless named):

  bare         load the spaCy pipeline + ``nlp.pipe`` over the captions: the parse rate per core
               (``import spacy`` before the clock starts)
  store        ``build_store``: the captions parsed once into a parse store (``hardneg parse``)
  gen-store    ``generate`` reading that store;      gen-store-x2: 2 workers
  gen-inline   ``generate`` parsing inline (today);  gen-inline-x2: 2 workers
  proc-bare    a whole process: load + ``nlp.pipe`` over the first ``--proc-limit`` captions
  proc-gen     a whole ``hardneg generate --limit N`` process (1 worker, parsing inline)

Rounds alternate the order of the variants (each round starts with the next one) and the table
shows medians and the ratios the targets are stated in: gen-store / bare >= 15, (store +
gen-store) / gen-inline (the first run's cost), x2 / x1 >= 1.8 for both, proc-gen / proc-bare >= 0.9.

  python bench/bench_parsestore.py [--captions ../shared/data/coco_karpathy_test.json] [--rounds 2]
      [--proc-limit 5000] [--variants bare,store,gen-store,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALL_SIX = "relation_swap,attribute_swap,object_swap,relation_replace,attribute_replace,object_replace"
VARIANTS = ("bare", "store", "gen-store", "gen-store-x2", "gen-inline", "gen-inline-x2", "proc-bare", "proc-gen")


def _captions(path: str, limit: int | None) -> list[str]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    caps = [c for item in data for c in (item["caption"] if isinstance(item["caption"], list) else [item["caption"]])]
    return caps[:limit] if limit else caps


def child(args: argparse.Namespace) -> int:
    """One variant, in this (fresh) process; prints ``{"inner": seconds, "rows": n}``."""
    sys.path.insert(0, str(ROOT))
    import logging

    logging.basicConfig(level=logging.WARNING)
    v, tmp = args.child, Path(args.tmp)
    if v in ("bare", "proc-bare"):
        from pipeline.config import ParseConfig
        from pipeline.nlp import load_nlp

        caps = _captions(args.captions, args.proc_limit if v == "proc-bare" else None)
        if v == "bare":  # the parse rate per core: spaCy's import untimed, the pipeline's load timed
            import spacy  # noqa: F401
        t = time.perf_counter()
        nlp = load_nlp(ParseConfig())
        for _ in nlp.pipe(caps, batch_size=ParseConfig().batch_size):
            pass
        print(json.dumps({"inner": time.perf_counter() - t, "rows": len(caps)}))
        return 0
    from pipeline.config import GenerateConfig, ParseStoreConfig, SourceConfig

    if v == "store":
        from pipeline.parse import build_store

        shutil.rmtree(tmp / "store", ignore_errors=True)
        t = time.perf_counter()
        m = build_store(ParseStoreConfig(source=SourceConfig(path=args.captions), out=str(tmp / "store")))
        print(json.dumps({"inner": time.perf_counter() - t, "rows": m["captions"]}))
        return 0
    from pipeline.generate import generate

    workers = 2 if v.endswith("-x2") else 1
    out = tmp / f"out-{v}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = GenerateConfig(name=f"bench-{v}", source=SourceConfig(path=args.captions), families=ALL_SIX.split(","),
                         out=str(out), manifest_dir=str(tmp / "manifests"), workers=workers,
                         parsed=str(tmp / "store") if v.startswith("gen-store") else None)
    t = time.perf_counter()
    m = generate(cfg)
    print(json.dumps({"inner": time.perf_counter() - t, "rows": m.rows}))
    return 0


def run(variant: str, args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> dict[str, float]:
    if variant == "proc-gen":
        out = tmp / "out-proc-gen"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())", "-q", "generate",
               "-i", args.captions, "--limit", str(args.proc_limit), "--families", ALL_SIX, "-j", "1",
               "--out", str(out), "--manifest-dir", str(tmp / "manifests"), "--name", "bench-proc"]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--captions", args.captions,
               "--tmp", str(tmp), "--proc-limit", str(args.proc_limit)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1]) if variant != "proc-gen" else {"inner": wall, "rows": args.proc_limit}
    return {"inner": res["inner"], "wall": wall, "rows": res["rows"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", default=str(ROOT.parent / "shared/data/coco_karpathy_test.json"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--proc-limit", type=int, default=5000, help="captions of the whole-process pair")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if not Path(args.captions).exists():
        print(f"captions file {args.captions} not found (pass --captions)", file=sys.stderr)
        return 2
    args.captions = str(Path(args.captions).resolve())
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        print(f"unknown variants {unknown}; known: {list(VARIANTS)}", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sys.path.insert(0, str(ROOT))
    from pipeline import _compiled

    print(f"rule modules: {_compiled.status()['reason']} (HARDNEG_PURE=1 runs the .py sources)", flush=True)
    res: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-parsestore-") as d:
        tmp = Path(d)
        if any(v.startswith("gen-store") for v in variants) and "store" not in variants:
            run("store", args, tmp, env)  # the store the gen-store variants read
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[: r % len(variants)]
            if "store" in order:  # the store exists before any variant reads it
                order.remove("store")
                order.insert(0, "store")
            for v in order:
                res[v].append(run(v, args, tmp, env))
                x = res[v][-1]
                print(f"round {r + 1} {v:<14} inner {x['inner']:7.2f} s  wall {x['wall']:7.2f} s  "
                      f"{x['rows'] / x['inner']:8.0f} captions/s", flush=True)

    def med(v: str, key: str = "inner") -> float:
        return statistics.median(x[key] for x in res[v])

    def rate(v: str, key: str = "inner") -> float:
        return statistics.median(x["rows"] / x[key] for x in res[v])

    print(f"\nmedians of {args.rounds} rounds")
    print(f"{'variant':<16}{'inner s':>9}{'wall s':>9}{'captions/s (inner)':>20}")
    for v in variants:
        print(f"{v:<16}{med(v):>9.2f}{med(v, 'wall'):>9.2f}{rate(v):>20.0f}")

    def verdict(name: str, r: float, target: float | None) -> None:
        goal = f"(target >= {target:.2f}) {'OK' if r >= target else 'MISSED'}" if target else ""
        print(f"  {name:<52}: {r:6.2f}  {goal}")

    print("\nratios of the medians:")
    have = set(variants)
    if {"gen-store", "bare"} <= have:
        verdict("regenerate all six from a store / bare parse rate", rate("gen-store") / rate("bare"), 15.0)
    if {"store", "gen-store", "gen-inline"} <= have:
        verdict("first run: (store + gen-store) / gen-inline time", (med("store") + med("gen-store")) / med("gen-inline"), None)
        verdict("store build rate / bare parse rate", rate("store") / rate("bare"), None) if "bare" in have else None
    if {"gen-store", "gen-store-x2"} <= have:
        verdict("from a store: 2 workers / 1", rate("gen-store-x2") / rate("gen-store"), 1.8)
    if {"gen-inline", "gen-inline-x2"} <= have:
        verdict("parsing inline: 2 workers / 1", rate("gen-inline-x2") / rate("gen-inline"), 1.8)
    if {"proc-gen", "proc-bare"} <= have:
        verdict(f"whole process, {args.proc_limit} captions: generate / bare", med("proc-bare", "wall") / med("proc-gen", "wall"), 0.9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
