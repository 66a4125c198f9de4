"""Stage 1 at scale: peak memory against input size, and the Ray engine's rate against the local one.

Runs ``hardneg generate`` (the CLI, as a user does) as a child process per variant and samples the
resident memory of its whole process tree (driver, worker processes, and for Ray its own daemons
and actors) every 0.5 s; reports the peak of the tree and of the driver process alone (and, with
``--pss``, of the tree's PSS: that sampling reads every process's smaps, which costs CPU; with
``--per-process``, of each process of the tree, and every sample written to ``<workdir>/<run>.rss.csv``):

  local  x25k / x400k   the local engine, 2 worker processes
  ray    x25k / x400k   the Ray engine, 2 actors, a local Ray instance of 2 CPUs

The inputs are the Karpathy test captions (25,010) and the same file repeated 16 times with the
image names made distinct (400,160 captions), written under --workdir (never into the repository).
Printed side by side, with the issue's targets:
  memory: peak(400k) - peak(25k) <= 100 MiB, for the local tree and for the Ray driver
  speed:  rate(ray, 25k) / rate(local, 25k) >= 0.75, the rate of Ray without ``ray.init`` (reported beside;
          also without ``ray.shutdown``, Ray's tear-down)
With ``--rounds N`` the variants run N times in alternation and the summary uses medians (a shared
machine's load drifts; alternating rounds keep the ratio fair).

Needs psutil (installed with ``hardneg[all]``) and, for the Ray variants, ``hardneg[ray]``.

  python bench/bench_scale.py [--captions ../shared/data/coco_karpathy_test.json] [--repeat 16]
                              [--variants local:25k,local:400k,ray:25k,ray:400k] [--workdir /tmp/hardneg-bench-scale]
                              [--rounds 1] [--pss] [--per-process]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def write_inputs(captions: Path, repeat: int, workdir: Path) -> dict[str, Path]:
    """The 25k file as is, and ``repeat`` copies of it with distinct image names (so distinct ids)."""
    workdir.mkdir(parents=True, exist_ok=True)
    small = workdir / "karpathy_test_25k.json"
    shutil.copyfile(captions, small)
    big = workdir / f"karpathy_test_x{repeat}.json"
    if not big.exists():
        data = json.loads(captions.read_text(encoding="utf-8"))
        with open(big, "w", encoding="utf-8") as f:  # written record by record: the bench stays small too
            f.write("[")
            first = True
            for k in range(repeat):
                for rec in data:
                    image = rec["image"].replace(".jpg", f"_r{k:02d}.jpg")
                    f.write(("" if first else ",") + json.dumps({"image": image, "caption": rec["caption"]}))
                    first = False
            f.write("]")
    return {"25k": small, "400k": big}


class TreeSampler(threading.Thread):
    """Peak RSS of a process and of its whole tree, sampled until the process ends; also the peak
    of the tree's PSS (shared pages split between the processes sharing them: forked workers share
    most of the driver's pages, which a sum of RSS counts once per process)."""

    def __init__(self, pid: int, every: float = 0.5, pss: bool = False, trace: Path | None = None) -> None:
        super().__init__(daemon=True)
        self.proc, self.every, self.pss = psutil.Process(pid), every, pss
        self.peak_tree = self.peak_driver = self.peak_pss = 0
        #: pid -> peak RSS of each process the tree ever had (the driver's included)
        self.peak_proc: dict[int, int] = {}
        #: with ``trace``: one line per sample and process (seconds since start, pid, RSS in MiB)
        self.trace = trace

    def run(self) -> None:
        t0 = time.perf_counter()
        out = open(self.trace, "w", encoding="utf-8") if self.trace else None
        try:
            if out:
                out.write("seconds,pid,rss_mib\n")
            while True:
                try:
                    procs = [self.proc, *self.proc.children(recursive=True)]
                    driver = self.proc.memory_info().rss
                except psutil.NoSuchProcess:
                    return
                tree = pss = 0
                now = time.perf_counter() - t0
                for p in procs:
                    try:
                        rss = p.memory_info().rss
                        tree += rss
                        self.peak_proc[p.pid] = max(self.peak_proc.get(p.pid, 0), rss)
                        if out:
                            out.write(f"{now:.1f},{p.pid},{rss / MIB:.1f}\n")
                        if self.pss:
                            pss += p.memory_full_info().pss
                    except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
                        pass
                self.peak_tree, self.peak_driver = max(self.peak_tree, tree), max(self.peak_driver, driver)
                self.peak_pss = max(self.peak_pss, pss)
                time.sleep(self.every)
        finally:
            if out:
                out.close()


def run_variant(engine: str, source: Path, workdir: Path, workers: int, sets: list[str], pss: bool,
                per_process: bool = False) -> dict:
    out, man = workdir / f"out-{engine}-{source.stem}", workdir / "manifests"
    shutil.rmtree(out, ignore_errors=True)
    name = f"bench-{engine}-{source.stem}"
    cmd = [str(Path(sys.executable).parent / "hardneg"), "generate", "-i", str(source), "-o", str(out),
           "--manifest-dir", str(man), "--name", name, "--engine", engine]
    cmd += ["--workers", str(workers)] if engine == "local" else ["--actors", str(workers), "--set", f"ray.num_cpus={workers}"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(workdir / f"{name}.log", "w"))
    sampler = TreeSampler(proc.pid, pss=pss, trace=workdir / f"{name}.rss.csv" if per_process else None)
    sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    sampler.join()
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}); see {workdir / f'{name}.log'}")
    m = json.loads((man / f"{name}.json").read_text())
    t = m["timings"]
    init, down = t.get("ray_init_seconds", 0.0), t.get("ray_shutdown_seconds", 0.0)
    return {
        "rows": m["rows"], "wall": wall, "total": t["total_seconds"], "init": init, "down": down,
        "rate": m["rows"] / (t["total_seconds"] - init),
        "rate_apart": m["rows"] / (t["total_seconds"] - init - down),
        "tree_mib": sampler.peak_tree / MIB, "driver_mib": sampler.peak_driver / MIB, "pss_mib": sampler.peak_pss / MIB,
        # the other processes' peaks, largest first (the local engine's workers; Ray's daemons and actors)
        "others_mib": sorted((v / MIB for k, v in sampler.peak_proc.items() if k != proc.pid), reverse=True),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=Path, default=ROOT.parent / "shared" / "data" / "coco_karpathy_test.json")
    ap.add_argument("--repeat", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="local worker processes and Ray actors")
    ap.add_argument("--variants", default="local:25k,ray:25k,local:400k,ray:400k")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/hardneg-bench-scale"))
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                    help="a config override for every variant (e.g. plausibility.sample_captions=25010)")
    ap.add_argument("--rounds", type=int, default=1, help="run the variants this many times, alternating")
    ap.add_argument("--pss", action="store_true", help="also sample the tree's PSS (costs CPU while sampling)")
    ap.add_argument("--per-process", action="store_true",
                    help="also print each process's peak RSS and write every sample to <workdir>/<run>.rss.csv")
    args = ap.parse_args()
    inputs = write_inputs(args.captions, args.repeat, args.workdir)
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.rounds):
        for v in args.variants.split(","):
            engine, size = v.split(":")
            r = run_variant(engine, inputs[size], args.workdir, args.workers, args.sets, args.pss, args.per_process)
            runs.setdefault((engine, size), []).append(r)
            print(f"{engine:5s} {size:>5s}: {r['rows']:7d} rows  {r['wall']:7.1f} s wall  {r['rate']:6.1f} captions/s"
                  f"  (ray.init {r['init']:.1f} s, ray.shutdown {r['down']:.1f} s)  peak tree {r['tree_mib']:7.0f} MiB  driver {r['driver_mib']:6.0f} MiB"
                  + (f"  tree PSS {r['pss_mib']:6.0f} MiB" if args.pss else "")
                  + (f"  others {' '.join(f'{m:.0f}' for m in r['others_mib'][:6])} MiB" if args.per_process else ""),
                  flush=True)
    results = {k: {f: statistics.median(r[f] for r in rs) for f in rs[0] if f != "others_mib"} for k, rs in runs.items()}
    print(f"\nmedians of {args.rounds} round(s):" if args.rounds > 1 else "")
    for engine in ("local", "ray"):
        a, b = results.get((engine, "25k")), results.get((engine, "400k"))
        if a and b:
            print(f"{engine:5s} memory growth 25k -> 400k: tree {b['tree_mib'] - a['tree_mib']:+7.0f} MiB,"
                  f" driver {b['driver_mib'] - a['driver_mib']:+6.0f} MiB"
                  + (f", tree PSS {b['pss_mib'] - a['pss_mib']:+6.0f} MiB" if args.pss else "") + "   (target <= +100 MiB)")
    loc, ray = results.get(("local", "25k")), results.get(("ray", "25k"))
    if loc and ray:
        rounds = zip(runs[("local", "25k")], runs[("ray", "25k")])
        per_round = ", ".join(f"{r['rate'] / lr['rate']:.2f}" for lr, r in rounds)
        print(f"speed on 25k: ray / local = {ray['rate'] / loc['rate']:.2f} (ratio of medians; per round: {per_round})"
              f"  (target >= 0.75; ray.init {ray['init']:.1f} s timed apart; with it:"
              f" {ray['rows'] / ray['total'] / loc['rate']:.2f}; with ray.shutdown {ray['down']:.1f} s timed"
              f" apart too: {ray['rate_apart'] / loc['rate']:.2f})")


if __name__ == "__main__":
    main()
