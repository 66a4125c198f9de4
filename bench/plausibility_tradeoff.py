"""Coverage against the blind checks, per plausibility floor: the table and plot of
docs/negative-quality.md.

For each floor value ``v`` it runs ``hardneg generate`` (all six families) with
``plausibility.cross_class_floor.{relation_swap,object_swap}=v`` and
``plausibility.floor.{relation_swap,relation_replace}=v`` (``none``: cross-class swaps never kept and
no relation_swap or relation_replace floor; the other floors stay at their defaults), then
``hardneg report``, and collects each family's coverage, n-gram blind
check and learned-detector accuracy (when the report has one) into ``tradeoff.json``, ``tradeoff.md``
and ``tradeoff.png``. The captions are parsed once, first, into a parse store (``hardneg parse``,
``<out>/parsed``) that every sweep point's ``generate`` reads (``--parsed``): the sweep pays the
parse once, not once per point.

  python bench/plausibility_tradeoff.py [--captions ../shared/data/coco_karpathy_test.json]
      [--values none,-1,-2,-3,-4,-6] [--out /tmp/hardneg-tradeoff] [-j 2] [--before OLD/tradeoff.json]

``--before`` takes the ``tradeoff.json`` of an earlier version of the rules (run this script from
that version's checkout): the plot draws its curves dashed beside the new ones, and
``tradeoff.md`` adds the earlier blind check at the new curve's coverage (linear interpolation
between the earlier points; "-" outside their range).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.contract.families import ALL_FAMILIES  # noqa: E402
from pipeline.core.atomic import write_bytes_atomic, write_json_atomic  # noqa: E402
from pipeline.core.plots import new_figure, save_png  # noqa: E402

#: the families each floor value moves
MOVED = ("relation_swap", "object_swap", "relation_replace")


def hardneg() -> str:
    return str(Path(sys.executable).with_name("hardneg"))


def parse_once(args: argparse.Namespace) -> str:
    """The parse store every sweep point reads (an up-to-date store is kept as it is)."""
    store = str(Path(args.out) / "parsed")
    subprocess.run([hardneg(), "-q", "parse", "-i", args.captions, "--out", store, "-j", str(args.workers)], check=True)
    return store


def run_one(args: argparse.Namespace, value: str, store: str) -> "dict[str, dict[str, float | None]]":
    v = "null" if value == "none" else value
    tag = "none" if value == "none" else value.replace("-", "m").replace(".", "p")
    out, report = Path(args.out) / f"neg-{tag}", Path(args.out) / f"report-{tag}"
    subprocess.run(
        [hardneg(), "-q", "generate", "-i", args.captions, "--parsed", store, "--families", ",".join(ALL_FAMILIES),
         "-j", str(args.workers),
         "--out", str(out), "--name", f"tradeoff-{tag}", "--manifest-dir", str(Path(args.out) / "manifests"),
         "--set", f"plausibility.cross_class_floor.relation_swap={v}",
         "--set", f"plausibility.cross_class_floor.object_swap={v}",
         "--set", f"plausibility.floor.relation_swap={v}",
         "--set", f"plausibility.floor.relation_replace={v}"],
        check=True,
    )
    subprocess.run([hardneg(), "-q", "report", str(out), "--out", str(report)], check=True)
    r = json.loads((report / "report.json").read_text(encoding="utf-8"))
    learned = r.get("learned_check", {})
    return {
        fam: {
            "coverage": r["families"][fam]["coverage"],
            "blind": r["blind_check"][fam].get("prefers_positive"),
            "learned": learned.get(fam, {}).get("accuracy") if isinstance(learned.get(fam), dict) else None,
        }
        for fam in ALL_FAMILIES
    }


def table(results: "Results") -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    head = "| floor (bits) | " + " | ".join(f"{f} coverage / blind / learned" for f in ALL_FAMILIES) + " |"
    lines = [head, "|---" * (len(ALL_FAMILIES) + 1) + "|"]
    for value, fams in results.items():
        cells = [f"{pct(fams[f]['coverage'])} / {pct(fams[f]['blind'])} / {pct(fams[f]['learned'])}" for f in ALL_FAMILIES]
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


Results = dict[str, dict[str, dict[str, float | None]]]


def _curve(results: Results, fam: str) -> list[tuple[str, float, float]]:
    """(floor, coverage, blind) of one family, by coverage."""
    return sorted(
        ((v, f[fam]["coverage"], f[fam]["blind"]) for v, f in results.items()
         if f[fam]["blind"] is not None and f[fam]["coverage"] is not None),
        key=lambda x: x[1],
    )  # type: ignore[arg-type,return-value]


def at_coverage(curve: list[tuple[str, float, float]], coverage: float) -> float | None:
    """The blind check of ``curve`` at ``coverage``, linearly interpolated; None outside its range."""
    for (_, c0, b0), (_, c1, b1) in zip(curve, curve[1:]):
        if c0 <= coverage <= c1:
            return b0 if c1 == c0 else b0 + (b1 - b0) * (coverage - c0) / (c1 - c0)
    if curve and curve[0][1] == coverage:
        return curve[0][2]
    return None


def comparison(results: Results, before: Results) -> str:
    """The new curve's points beside the earlier curve at the same coverage."""
    lines = ["| family | floor (bits) | coverage | blind now | blind before, same coverage |", "|---|---|---:|---:|---:|"]
    for fam in (*MOVED, "attribute_swap"):
        old = _curve(before, fam)
        for v, c, b in _curve(results, fam):
            prev = at_coverage(old, c)
            lines.append(f"| {fam} | {v} | {100 * c:.1f} | {100 * b:.1f} | {'-' if prev is None else f'{100 * prev:.1f}'} |")
    return "\n".join(lines) + "\n"


def plot(results: Results, path: Path, before: Results | None = None) -> None:
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for fam in MOVED:
        pts = _curve(results, fam)
        (line,) = ax.plot([100 * c for _, c, _ in pts], [100 * b for _, _, b in pts], marker="o", label=fam)
        for v, c, b in pts:
            ax.annotate(v, (100 * c, 100 * b), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if before is not None:
            old = _curve(before, fam)
            ax.plot([100 * c for _, c, _ in old], [100 * b for _, _, b in old], marker=".", linestyle="--",
                    color=line.get_color(), alpha=0.6, label=f"{fam}, before")
    for y, ls in ((75, ":"), (80, "--")):
        ax.axhline(y, color="grey", linestyle=ls, linewidth=0.8)
    ax.set_xlabel("coverage (% of captions with a negative)")
    ax.set_ylabel("n-gram blind check: prefers the positive (%)")
    ax.set_title("Coverage against the blind check, per plausibility floor")
    ax.legend()
    save_png(fig, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", default=str(ROOT.parent / "shared/data/coco_karpathy_test.json"))
    ap.add_argument("--values", default="none,-1,-2,-3,-4,-6")
    ap.add_argument("--out", default="/tmp/hardneg-tradeoff")
    ap.add_argument("-j", "--workers", type=int, default=2)
    ap.add_argument("--plot-only", action="store_true", help="redraw tradeoff.md/.png from --out's tradeoff.json")
    ap.add_argument("--before", help="an earlier version's tradeoff.json, drawn and tabulated beside this one")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    before = json.loads(Path(args.before).read_text(encoding="utf-8")) if args.before else None

    def write(results: Results) -> None:
        text = table(results) + ("\n" + comparison(results, before) if before is not None else "")
        write_bytes_atomic(text.encode("utf-8"), out / "tradeoff.md")
        plot(results, out / "tradeoff.png", before)

    if args.plot_only:
        write(json.loads((out / "tradeoff.json").read_text(encoding="utf-8")))
        return 0
    results = {}
    store = parse_once(args)
    for value in [v.strip() for v in args.values.split(",") if v.strip()]:
        results[value] = run_one(args, value, store)
        print(f"floor {value}: " + ", ".join(
            f"{f} {100 * results[value][f]['coverage']:.1f}% / {100 * (results[value][f]['blind'] or 0):.1f}%" for f in MOVED
        ), flush=True)
    write_json_atomic(results, out / "tradeoff.json")
    write(results)
    print((out / "tradeoff.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
