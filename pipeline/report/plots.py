"""The report's PNG plots: coverage, candidates per caption, length change, skips and rejects, blind checks.

Each plot reads ``report.json``'s figures (and the per-family tallies for the length-change bins),
so a plot never shows a number the JSON does not hold. Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pipeline.core.plots import new_figure, save_png
from pipeline.report.tally import FamilyTally

PLOTS = {
    "coverage": "report_coverage.png",
    "candidates": "report_candidates_per_caption.png",
    "length_change": "report_length_change.png",
    "skips_rejects": "report_skips_rejects.png",
    "blind_check": "report_blind_check.png",
}
#: length changes beyond this many words are pooled into the end bins of the plot
LENGTH_CLIP = 4


def write_plots(report: dict[str, Any], out: Path, has_manifest: bool, tallies: dict[str, FamilyTally] | None = None) -> dict[str, str]:
    """Write the PNG plots; returns ``{plot: file name}`` of those written."""
    fams = list(report["families"])
    jobs: dict[str, Callable[[Path], None]] = {
        "coverage": lambda p: plot_coverage(report, p),
        "candidates": lambda p: plot_candidates(report, p),
        "skips_rejects": lambda p: plot_skips_rejects(report, p, has_manifest),
        "blind_check": lambda p: plot_blind(report, p),
    }
    if tallies is not None:
        jobs["length_change"] = lambda p: plot_length_change(tallies, fams, p)
    written = {}
    for key, job in jobs.items():
        if not fams:
            break
        job(out / PLOTS[key])
        written[key] = PLOTS[key]
    return written


def plot_coverage(report: dict[str, Any], path: Path) -> None:
    fams = list(report["families"])
    cov = [100 * report["families"][f]["coverage"] for f in fams]
    fig = new_figure(7, 0.5 * len(fams) + 1.4)
    ax = fig.add_subplot()
    bars = ax.barh(fams, cov, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlim(0, 115)
    ax.set_xlabel("captions with at least one negative (%)")
    ax.set_title(f"Coverage per family ({report['dataset']['rows']:,} captions)")
    for bar, f in zip(bars, fams):
        v = report["families"][f]
        ax.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2,
                f"{100 * v['coverage']:.1f}% ({v['captions_covered']:,})", va="center", fontsize=9)
    save_png(fig, path)


def _grouped_bars(
    path: Path, labels: list[str], series: dict[str, list[float]], xlabel: str, ylabel: str, title: str
) -> None:
    """One bar per series at each label, side by side, saved as a PNG."""
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    n = max(1, len(series))
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + (i - (n - 1) / 2) * width for x in range(len(labels))], values, width, label=name)
    ax.set_xticks(range(len(labels)), labels)
    ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    save_png(fig, path)


def plot_candidates(report: dict[str, Any], path: Path) -> None:
    fams = report["families"]
    kmax = max((int(k) for f in fams.values() for k in f["candidates_per_caption"]), default=0)
    labels = [str(k) for k in range(kmax + 1)]
    rows = report["dataset"]["rows"] or 1
    series = {f: [100 * v["candidates_per_caption"].get(k, 0) / rows for k in labels] for f, v in fams.items()}
    _grouped_bars(path, labels, series, "negatives of the family for a caption", "captions (%)", "Candidates per caption")


def length_bins(lc: dict[int, int]) -> list[int]:
    """Negatives per length change, the ends pooled at +-LENGTH_CLIP words."""
    bins = [0] * (2 * LENGTH_CLIP + 1)
    for d, n in lc.items():
        bins[max(-LENGTH_CLIP, min(LENGTH_CLIP, d)) + LENGTH_CLIP] += n
    return bins


def plot_length_change(tallies: dict[str, FamilyTally], fams: list[str], path: Path) -> None:
    labels = [f"{d:+d}" if d else "0" for d in range(-LENGTH_CLIP, LENGTH_CLIP + 1)]
    labels[0], labels[-1] = f"≤{labels[0]}", f"≥{labels[-1]}"
    series = {}
    for f in fams:
        bins = length_bins(tallies[f].length_change)
        total = sum(bins) or 1
        series[f] = [100 * b / total for b in bins]
    _grouped_bars(path, labels, series, "negative length - positive length (words)", "negatives (%)", "Length change")


def plot_skips_rejects(report: dict[str, Any], path: Path, has_manifest: bool) -> None:
    fig = new_figure(10, 4)
    left, right = fig.subplots(1, 2)
    skipped = report.get("skipped", {})
    left.set_title(f"Source rows skipped ({sum(skipped.values()):,})")
    if skipped:
        left.barh(list(skipped), list(skipped.values()), color="tab:gray")
        left.invert_yaxis()
        left.set_xlabel("rows")
    else:
        left.text(0.5, 0.5, "none" if has_manifest else "no manifest", ha="center", va="center")
        left.set_axis_off()
    fams = [f for f, v in report["families"].items() if v.get("rejected")]
    reasons = sorted({r for f in fams for r in report["families"][f]["rejected"]})
    right.set_title("Candidates rejected by filters, per family")
    if fams:
        lefts = [0] * len(fams)
        for r in reasons:
            vals = [report["families"][f]["rejected"].get(r, 0) for f in fams]
            right.barh(fams, vals, left=lefts, label=r)
            lefts = [a + b for a, b in zip(lefts, vals)]
        right.invert_yaxis()
        right.set_xlabel("candidates")
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "none" if has_manifest else "no manifest", ha="center", va="center")
        right.set_axis_off()
    save_png(fig, path)


def plot_blind(report: dict[str, Any], path: Path) -> None:
    """Both blind judges per family: the n-gram LM's two verdicts and, when run, the learned detector's."""
    blind = report["blind_check"]
    learned = report.get("learned_check")
    fams = [f for f in report["families"]
            if blind.get(f, {}).get("pairs") or (learned is not None and "accuracy" in learned.get(f, {}))]
    # (figures, key prefix of the share, label, colour, vertical offset)
    series: list[tuple[dict[str, Any], str, str, str, str, float]] = [
        (blind, "", "prefers_positive", "sentence log-prob", "tab:red", -0.15),
        (blind, "per_token_", "prefers_positive", "per-token log-prob", "tab:blue", 0.15),
    ]
    if learned is not None:
        series = [(*s[:5], off) for s, off in zip(series, (-0.22, 0.0))]
        series.append((learned, "", "accuracy", "learned detector (held-out accuracy)", "tab:green", 0.22))
    fig = new_figure(7, 0.6 * max(1, len(fams)) + 1.6 + (0.3 if learned is not None else 0.0))
    ax = fig.add_subplot()
    ax.axvline(50, color="black", linestyle="--", linewidth=1)
    for figures, prefix, share, label, colour, off in series:
        ys, xs, lo, hi = [], [], [], []
        for i, f in enumerate(fams):
            v = figures.get(f, {})
            if f"{prefix}{share}" not in v:
                continue
            ys.append(i + off)
            xs.append(100 * v[f"{prefix}{share}"])
            lo.append(100 * (v[f"{prefix}{share}"] - v[f"{prefix}ci95_low"]))
            hi.append(100 * (v[f"{prefix}ci95_high"] - v[f"{prefix}{share}"]))
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", color=colour, capsize=3, label=label)
    ax.set_yticks(range(len(fams)), [_blind_label(f, blind, learned) for f in fams])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    if learned is None:
        ax.set_xlabel("pairs where the LM prefers the positive (%, 95% CI)\ndashed: 50% = the text alone gives nothing away")
        ax.set_title(f"Blind check ({blind.get('model', 'n-gram LM')})")
    else:
        ax.set_xlabel("pairs where the judge picks the positive (%, 95% CI)\ndashed: 50% = the text alone gives nothing away")
        ax.set_title("Blind checks: n-gram LM and learned detector")
    ax.legend(fontsize=8, loc="lower left")
    save_png(fig, path)


def _blind_label(family: str, blind: dict[str, Any], learned: dict[str, Any] | None) -> str:
    n = blind.get(family, {}).get("pairs", 0)
    if learned is None:
        return f"{family} (n={n:,})"
    return f"{family}\n(LM n={n:,}, detector n={learned.get(family, {}).get('heldout_pairs', 0):,})"
