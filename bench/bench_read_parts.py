"""The Ray engine's statistics pass on one large JSONL file: read whole (one read task) against read in
parts (a read task per ``--part-mib`` of whole lines, :func:`pipeline.sources.source_parts`).

The input is the Karpathy test captions written as JSONL, one caption per line, ``--repeat`` times
with distinct image names (40 times: 1,000,400 lines, 117 MiB), under --workdir (never into the
repository). One local Ray (``--cpus`` CPUs, default 2) serves every round; the two variants run
in alternating rounds and the summary gives the medians and their ratio, beside the time the driver
took to find the cuts (one pass over the bytes). Both variants must count the same records.

Needs ``hardneg[ray]``.

  python bench/bench_read_parts.py [--captions ../shared/data/coco_karpathy_test.json] [--repeat 40]
                                   [--part-mib 16] [--rounds 3] [--cpus 2] [--workdir /tmp/hardneg-bench-parts]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(captions: Path, repeat: int, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"karpathy_test_x{repeat}.jsonl"
    if not out.exists():
        data = json.loads(captions.read_text(encoding="utf-8"))
        tmp = out.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for k in range(repeat):
                for rec in data:
                    image = rec["image"].replace(".jpg", f"_r{k:02d}.jpg")
                    for caption in rec["caption"]:
                        f.write(json.dumps({"image": image, "caption": caption}) + "\n")
        tmp.rename(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captions", type=Path, default=ROOT.parent / "shared" / "data" / "coco_karpathy_test.json")
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--part-mib", type=int, default=16, help="part size of the 'parts' variant")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/hardneg-bench-parts"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import ray

    from pipeline import generate as gen_mod
    from pipeline import sources
    from pipeline.config import GenerateConfig, RayConfig, SourceConfig
    from pipeline.engines.ray_engine import RayEngine

    src = write_jsonl(args.captions, args.repeat, args.workdir)
    size_mib = src.stat().st_size / (1 << 20)
    t0 = time.perf_counter()
    cuts = sources.source_parts(SourceConfig(path=str(src)), part_bytes=args.part_mib << 20)
    cut_seconds = time.perf_counter() - t0
    print(f"input: {src} ({size_mib:.0f} MiB); {len(cuts or [None])} parts of {args.part_mib} MiB, "
          f"cut in {cut_seconds:.2f}s", flush=True)

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    variants = {"whole": 1 << 50, "parts": args.part_mib << 20}
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    driver_cpu: dict[str, list[float]] = {v: [] for v in variants}
    counted: set[int] = set()
    try:
        for rnd in range(args.rounds):
            for name, part_bytes in variants.items():
                sources.PART_BYTES = part_bytes  # what the engine's source_parts call uses
                with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                    cfg = GenerateConfig(name="bench", source=SourceConfig(path=str(src)), out=str(Path(tmp) / "out"),
                                         engine="ray", ray=RayConfig(actors=2))
                    engine = RayEngine(cfg, Path(tmp) / "work", gen_mod._init_worker, (None, None, None))
                    try:
                        t0, c0 = time.perf_counter(), time.process_time()
                        scan = engine.scan_source()
                        # the engine's parts were cut at its init; process_time: the driver's CPU
                        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                    finally:
                        engine.close()
                seconds[name].append(dt)
                driver_cpu[name].append(cpu)
                counted.add(scan.records)
                print(f"round {rnd + 1} {name:5s} {len(engine.parts):3d} read tasks  {scan.records:,} records  "
                      f"{dt:.2f}s (driver CPU {cpu:.2f}s)", flush=True)
    finally:
        ray.shutdown()
    if len(counted) != 1:
        raise SystemExit(f"the variants counted different records: {sorted(counted)}")
    whole, parts = statistics.median(seconds["whole"]), statistics.median(seconds["parts"])
    print(f"\nstatistics pass, median of {args.rounds}: whole {whole:.2f}s, parts {parts:.2f}s, "
          f"speed-up {whole / parts:.2f}x on {args.cpus} CPUs (cuts found in {cut_seconds:.2f}s); driver CPU "
          f"{statistics.median(driver_cpu['whole']):.2f}s / {statistics.median(driver_cpu['parts']):.2f}s")


if __name__ == "__main__":
    main()
