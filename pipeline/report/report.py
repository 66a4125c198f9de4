"""``hardneg report``: the quality report of a negatives dataset folder.

It reads the shards (any dataset in the shard format, so two datasets can be compared) and, when
present, the manifest beside them, and writes:

- ``report.json``: numbers only (nested dicts, no long lists), so ``dvc metrics show`` reads it and
  ``hardneg publish`` summarises it in the dataset card (its ``blind_check`` section is one dict of
  scalars per family, followed by the settings);
- ``report.md``: the same figures as tables, with examples and the plots linked;
- PNG plots: coverage, candidates per caption, length change, skip and reject reasons, blind check.

Counts come from the shards themselves (what a trainer will read); reasons for skips and rejects
come from the manifest, since they leave nothing in the shards.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.core.atomic import write_bytes_atomic
from pipeline.core.errors import ConfigError, HardnegError
from pipeline.core.plots import new_figure, save_png
from pipeline.report.blind import BlindCheck, BlindConfig, BlindResult, PairScore

log = logging.getLogger(__name__)

REPORT_VERSION = "1"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOTS = {
    "coverage": "report_coverage.png",
    "candidates": "report_candidates_per_caption.png",
    "length_change": "report_length_change.png",
    "skips_rejects": "report_skips_rejects.png",
    "blind_check": "report_blind_check.png",
}
#: length changes beyond this many words are pooled into the end bins of the plot
_LENGTH_CLIP = 4


@dataclass
class ReportConfig:
    """Settings of ``hardneg report``."""

    #: seeded examples per family in report.md
    examples: int = 5
    #: negatives per family that the language model found most obvious, shown in report.md
    obvious_examples: int = 3
    blind: BlindConfig = field(default_factory=BlindConfig)

    def validate(self) -> None:
        if self.examples < 0 or self.obvious_examples < 0:
            raise ConfigError("examples and obvious_examples must be >= 0")
        self.blind.validate()


# --------------------------------------------------------------------------- reading the dataset


@dataclass
class _FamilyTally:
    negatives: int = 0
    covered: int = 0
    per_caption: Counter = field(default_factory=Counter)
    length_change: Counter = field(default_factory=Counter)
    examples: list[tuple[str, str]] = field(default_factory=list)


def _words(text: str) -> int:
    return len(text.split())


def _tally(dataset_dir: Path, cfg: ReportConfig, check: BlindCheck) -> tuple[dict[str, Any], dict[str, _FamilyTally]]:
    """One pass over the shards: counts per split and family, length changes, examples, blind-check input."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from pipeline.contract.dataset import open_shards
    from pipeline.contract.schema import CAPTION, FAMILY_COLUMNS, GROUP, ID

    shards = open_shards(dataset_dir)
    total = sum(pq.ParquetFile(f).metadata.num_rows for files in shards.values() for f in files)
    cols = [ID, CAPTION, GROUP, *FAMILY_COLUMNS]
    tallies = {f: _FamilyTally() for f in FAMILY_COLUMNS}
    rng = random.Random(cfg.blind.seed)
    splits: Counter = Counter()
    groups: set[str] = set()
    words = 0
    with tqdm(total=total, desc="report", unit=" captions", disable=total < 5000) as bar:
        for split, files in shards.items():
            for f in files:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=1024, columns=cols):
                    for row in batch.to_pylist():
                        splits[split] += 1
                        caption = row[CAPTION] or ""
                        groups.add(row[GROUP] or row[ID])
                        n_words = _words(caption)
                        words += n_words
                        for fam in FAMILY_COLUMNS:
                            negs = row[fam] or []
                            t = tallies[fam]
                            t.per_caption[len(negs)] += 1
                            if not negs:
                                continue
                            t.negatives += len(negs)
                            t.covered += 1
                            for neg in negs:
                                t.length_change[_words(neg) - n_words] += 1
                            # reservoir sample of captions, so examples come from the whole dataset
                            item = (caption, negs[rng.randrange(len(negs))])
                            if len(t.examples) < cfg.examples:
                                t.examples.append(item)
                            else:
                                j = rng.randrange(t.covered)
                                if j < cfg.examples:
                                    t.examples[j] = item
                        check.add(row)
                    bar.update(batch.num_rows)
    rows = sum(splits.values())
    dataset = {
        "rows": rows,
        "splits": dict(splits),
        "groups": len(groups),
        "mean_caption_words": round(words / rows, 3) if rows else 0.0,
    }
    return dataset, tallies


def _family_section(t: _FamilyTally, rows: int, manifest_fam: dict[str, Any] | None) -> dict[str, Any]:
    lc = t.length_change
    n_negs = sum(lc.values())
    out: dict[str, Any] = {
        "negatives": t.negatives,
        "captions_covered": t.covered,
        "coverage": round(t.covered / rows, 4) if rows else 0.0,
        "negatives_per_caption": round(t.negatives / rows, 4) if rows else 0.0,
        "candidates_per_caption": {str(k): t.per_caption[k] for k in sorted(t.per_caption)},
        "length_change": {
            "mean": round(sum(k * v for k, v in lc.items()) / n_negs, 4) if n_negs else 0.0,
            "min": min(lc) if lc else 0,
            "max": max(lc) if lc else 0,
            "unchanged_share": round(lc[0] / n_negs, 4) if n_negs else 0.0,
        },
    }
    if manifest_fam is not None:
        out["generated"] = manifest_fam.get("generated", 0)
        out["rejected"] = dict(manifest_fam.get("rejected", {}))
    return out


# --------------------------------------------------------------------------- the public API


def build_report(dataset_dir: str | Path, out_dir: str | Path | None = None, cfg: ReportConfig | None = None) -> dict[str, Any]:
    """Write the quality report of ``dataset_dir`` to ``out_dir`` (default: the dataset folder).

    Returns what was written to ``report.json``.
    """
    from pipeline.contract.manifest import load_manifest
    from pipeline.contract.schema import FAMILY_COLUMNS

    cfg = cfg or ReportConfig()
    cfg.validate()
    dataset_dir = Path(dataset_dir)
    out = Path(out_dir) if out_dir is not None else dataset_dir
    try:
        manifest: dict[str, Any] | None = load_manifest(dataset_dir)
    except HardnegError:
        log.warning("%s has no manifest.json: skip and reject reasons are left out of the report", dataset_dir)
        manifest = None

    check = BlindCheck(FAMILY_COLUMNS, cfg.blind)
    dataset, tallies = _tally(dataset_dir, cfg, check)
    m_fams = (manifest or {}).get("families", {})
    # families the dataset was made with, plus any other column that holds negatives
    families = [f for f in FAMILY_COLUMNS if f in m_fams or tallies[f].negatives]
    if not families:
        log.warning("%s holds no negatives in any family", dataset_dir)
    blind = check.finish()

    name = (manifest or {}).get("name") or dataset_dir.resolve().name
    dataset = {"name": name, **dataset}
    if manifest is not None:
        dataset["skipped_total"] = manifest.get("skipped_total", 0)
        if manifest.get("rows") not in (None, dataset["rows"]):
            log.warning("the manifest lists %s rows but the shards hold %d", manifest.get("rows"), dataset["rows"])
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "dataset": dataset,
        "families": {f: _family_section(tallies[f], dataset["rows"], m_fams.get(f) if manifest else None) for f in families},
    }
    if manifest is not None:
        report["skipped"] = dict(manifest.get("skipped", {}))
    blind_json = blind.to_json()
    report["blind_check"] = {
        **{f: blind_json[f] for f in families},
        **{k: v for k, v in blind_json.items() if k not in FAMILY_COLUMNS},
    }

    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic((json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), out / REPORT_JSON)
    plots = write_plots(report, out, manifest is not None, tallies)
    md = render_markdown(report, tallies, blind, plots, cfg, manifest)
    write_bytes_atomic(md.encode("utf-8"), out / REPORT_MD)
    log.info("wrote %s, %s and %d plots to %s", REPORT_JSON, REPORT_MD, len(plots), out)
    return report


# --------------------------------------------------------------------------- plots


def _plot_coverage(report: dict[str, Any], path: Path) -> None:
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


def _grouped_bars(ax: Any, labels: list[str], series: dict[str, list[float]]) -> None:
    n = max(1, len(series))
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + (i - (n - 1) / 2) * width for x in range(len(labels))], values, width, label=name)
    ax.set_xticks(range(len(labels)), labels)
    ax.legend(fontsize=8)


def _plot_candidates(report: dict[str, Any], path: Path) -> None:
    fams = report["families"]
    kmax = max((int(k) for f in fams.values() for k in f["candidates_per_caption"]), default=0)
    labels = [str(k) for k in range(kmax + 1)]
    rows = report["dataset"]["rows"] or 1
    series = {f: [100 * v["candidates_per_caption"].get(k, 0) / rows for k in labels] for f, v in fams.items()}
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    _grouped_bars(ax, labels, series)
    ax.set_xlabel("negatives of the family for a caption")
    ax.set_ylabel("captions (%)")
    ax.set_title("Candidates per caption")
    save_png(fig, path)


def _length_bins(lc: Counter) -> list[int]:
    bins = [0] * (2 * _LENGTH_CLIP + 1)
    for d, n in lc.items():
        bins[max(-_LENGTH_CLIP, min(_LENGTH_CLIP, d)) + _LENGTH_CLIP] += n
    return bins


def _plot_length_change(tallies: dict[str, _FamilyTally], fams: list[str], path: Path) -> None:
    labels = [f"{d:+d}" if d else "0" for d in range(-_LENGTH_CLIP, _LENGTH_CLIP + 1)]
    labels[0], labels[-1] = f"≤{labels[0]}", f"≥{labels[-1]}"
    series = {}
    for f in fams:
        bins = _length_bins(tallies[f].length_change)
        total = sum(bins) or 1
        series[f] = [100 * b / total for b in bins]
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    _grouped_bars(ax, labels, series)
    ax.set_xlabel("negative length - positive length (words)")
    ax.set_ylabel("negatives (%)")
    ax.set_title("Length change")
    save_png(fig, path)


def _plot_skips_rejects(report: dict[str, Any], path: Path, has_manifest: bool) -> None:
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


def _plot_blind(report: dict[str, Any], path: Path) -> None:
    blind = report["blind_check"]
    fams = [f for f in report["families"] if blind.get(f, {}).get("pairs")]
    fig = new_figure(7, 0.6 * max(1, len(fams)) + 1.6)
    ax = fig.add_subplot()
    ax.axvline(50, color="black", linestyle="--", linewidth=1)
    for off, prefix, label, colour in ((-0.15, "", "sentence log-prob", "tab:red"),
                                       (0.15, "per_token_", "per-token log-prob", "tab:blue")):
        ys, xs, lo, hi = [], [], [], []
        for i, f in enumerate(fams):
            v = blind[f]
            ys.append(i + off)
            xs.append(100 * v[f"{prefix}prefers_positive"])
            lo.append(100 * (v[f"{prefix}prefers_positive"] - v[f"{prefix}ci95_low"]))
            hi.append(100 * (v[f"{prefix}ci95_high"] - v[f"{prefix}prefers_positive"]))
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", color=colour, capsize=3, label=label)
    ax.set_yticks(range(len(fams)), [f"{f} (n={blind[f]['pairs']:,})" for f in fams])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("pairs where the LM prefers the positive (%, 95% CI)\ndashed: 50% = the text alone gives nothing away")
    ax.set_title(f"Blind check ({blind.get('model', 'n-gram LM')})")
    ax.legend(fontsize=8, loc="lower left")
    save_png(fig, path)


def write_plots(report: dict[str, Any], out: Path, has_manifest: bool, tallies: dict[str, _FamilyTally] | None = None) -> dict[str, str]:
    """Write the PNG plots; returns ``{plot: file name}`` of those written."""
    fams = list(report["families"])
    jobs: dict[str, Callable[[Path], None]] = {
        "coverage": lambda p: _plot_coverage(report, p),
        "candidates": lambda p: _plot_candidates(report, p),
        "skips_rejects": lambda p: _plot_skips_rejects(report, p, has_manifest),
        "blind_check": lambda p: _plot_blind(report, p),
    }
    if tallies is not None:
        jobs["length_change"] = lambda p: _plot_length_change(tallies, fams, p)
    written = {}
    for key, job in jobs.items():
        if not fams:
            break
        job(out / PLOTS[key])
        written[key] = PLOTS[key]
    return written


# --------------------------------------------------------------------------- markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_ci(v: dict[str, Any], prefix: str) -> str:
    return f"{_pct(v[prefix + 'prefers_positive'])} [{_pct(v[prefix + 'ci95_low'])}, {_pct(v[prefix + 'ci95_high'])}]"


def render_markdown(
    report: dict[str, Any],
    tallies: dict[str, _FamilyTally],
    blind: BlindResult,
    plots: dict[str, str],
    cfg: ReportConfig,
    manifest: dict[str, Any] | None,
) -> str:
    ds, fams = report["dataset"], report["families"]
    L: list[str] = []
    add = L.append
    add(f"# Quality report: {ds['name']}\n")
    splits = ", ".join(f"{k}: {v:,}" for k, v in ds["splits"].items())
    add(f"{ds['rows']:,} captions ({splits}) of {ds['groups']:,} image groups, {ds['mean_caption_words']:.1f} words on average.")
    if manifest is None:
        add("The dataset has no manifest: skip and reject reasons are not known.")
    add("")

    add("## Coverage\n")
    add("| family | negatives | captions covered | coverage | negatives per caption |")
    add("|---|---:|---:|---:|---:|")
    for f, v in fams.items():
        add(f"| {f} | {v['negatives']:,} | {v['captions_covered']:,} | {_pct(v['coverage'])} | {v['negatives_per_caption']:.3f} |")
    add("")
    if "coverage" in plots:
        add(f"![coverage]({plots['coverage']})\n")

    add("## Candidates per caption\n")
    kmax = max((int(k) for v in fams.values() for k in v["candidates_per_caption"]), default=0)
    add("Captions by the number of negatives they have of each family.\n")
    add("| family | " + " | ".join(str(k) for k in range(kmax + 1)) + " |")
    add("|---|" + "---:|" * (kmax + 1))
    for f, v in fams.items():
        add(f"| {f} | " + " | ".join(f"{v['candidates_per_caption'].get(str(k), 0):,}" for k in range(kmax + 1)) + " |")
    add("")
    if "candidates" in plots:
        add(f"![candidates per caption]({plots['candidates']})\n")

    add("## Length change\n")
    add("Negative length minus positive length, in words, over all negatives. Swaps keep the words;"
        " a replacement can change the length, which a text-only model can use.\n")
    add("| family | mean | min | max | unchanged |")
    add("|---|---:|---:|---:|---:|")
    for f, v in fams.items():
        lc = v["length_change"]
        add(f"| {f} | {lc['mean']:+.3f} | {lc['min']:d} | {lc['max']:d} | {_pct(lc['unchanged_share'])} |")
    add("")
    if "length_change" in plots:
        add(f"![length change]({plots['length_change']})\n")

    add("## Skips and rejects\n")
    if manifest is None:
        add("No manifest, so no reasons are known.\n")
    else:
        skipped = report.get("skipped", {})
        if skipped:
            add("| source rows skipped | rows |\n|---|---:|")
            for r, n in skipped.items():
                add(f"| {r} | {n:,} |")
            add("")
        else:
            add("No source rows were skipped.\n")
        add("| family | generated | kept | rejected by reason |")
        add("|---|---:|---:|---|")
        for f, v in fams.items():
            rej = ", ".join(f"{r}: {n:,}" for r, n in v.get("rejected", {}).items()) or "none"
            add(f"| {f} | {v.get('generated', 0):,} | {v['negatives']:,} | {rej} |")
        add("")
        if manifest.get("skip_examples"):
            add("Examples of skipped rows:\n")
            for ex in manifest["skip_examples"][: cfg.examples]:
                add(f"- {_cell(str(ex))}")
            add("")
    if "skips_rejects" in plots:
        add(f"![skips and rejects]({plots['skips_rejects']})\n")

    bc = report["blind_check"]
    add("## Blind check\n")
    add(
        f"A text-only language model ({bc['model']}) trained on {bc.get('train_captions', 0):,} positive captions"
        f" of {bc.get('train_groups', 0):,} held-out image groups ({_pct(bc['heldout_fraction'])} of the groups, seed"
        f" {bc['seed']}; these groups are never scored) compares each sampled positive with one of its negatives"
        f" (one pair per caption, at most {bc['max_pairs_per_family']:,} per family). The share is the pairs where it"
        " finds the positive more likely (a tie counts half); 50% means the text alone does not give the"
        " negative away, far above 50% means the family teaches a text shortcut. Intervals are 95% Wilson.\n"
    )
    if bc.get("skipped"):
        add(f"Not run: {bc['skipped']}.\n")
    add("| family | pairs | prefers positive (sentence) | prefers positive (per token) | mean margin (bits) |")
    add("|---|---:|---:|---:|---:|")
    for f in fams:
        v = bc.get(f, {})
        if not v.get("pairs"):
            add(f"| {f} | 0 | | | |")
            continue
        add(f"| {f} | {v['pairs']:,} | {format_ci(v, '')} | {format_ci(v, 'per_token_')} | {v['mean_margin_bits']:+.2f} |")
    add("")
    if "blind_check" in plots:
        add(f"![blind check]({plots['blind_check']})\n")
    if cfg.obvious_examples:
        shown = False
        for f in fams:
            pairs: list[PairScore] = sorted(blind.pairs.get(f, []), key=lambda p: (-p.per_token_margin, p.id))
            if not pairs:
                continue
            if not shown:
                add("The negatives the model found least plausible relative to their positive (largest per-token margin):\n")
                shown = True
            add(f"**{f}**\n")
            add("| positive | negative | margin (bits/token) |\n|---|---|---:|")
            for p in pairs[: cfg.obvious_examples]:
                add(f"| {_cell(p.positive)} | {_cell(p.negative)} | {p.per_token_margin:+.2f} |")
            add("")

    add("## Examples\n")
    add("A seeded sample per family (a positive and one of its negatives).\n")
    for f in fams:
        exs = tallies[f].examples
        if not exs:
            continue
        add(f"**{f}**\n")
        add("| positive | negative |\n|---|---|")
        for pos, neg in exs:
            add(f"| {_cell(pos)} | {_cell(neg)} |")
        add("")
    return "\n".join(L).rstrip() + "\n"


# --------------------------------------------------------------------------- CLI
