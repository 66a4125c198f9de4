"""Side-by-side results of runs trained the same way but for their objective (plain CLIP vs CE-CLIP).

``compare`` (the ``evaluate`` stage) joins each run's held-out evaluation (``hardneg eval``), its
accuracy-versus-step curve (``hardneg train-curves``) and its training facts into files that
``dvc metrics show`` and ``dvc plots show`` read:

- ``compare.json``: per run and family the pairwise accuracy, the gain of each run over the first
  (the reference), the steps, seed and pair counts;
- ``curves.csv``: one row per evaluated step, a column ``<run>_<family>`` per run and family;
- ``accuracy_<run>.csv``: ``family,accuracy`` rows (the bar charts).

``compare-report`` (the ``report`` stage) turns those plus each run's ``metrics.csv`` into
``report.md`` and PNG figures: accuracy bars, accuracy versus step, the CMR thresholds over training
(the paper's curriculum figure) and the loss curves.

The comparison is meaningful only between runs of the same length, so differing step counts are an
error unless explicitly allowed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.contract.families import ALL_FAMILIES
from pipeline.core.atomic import write_bytes_atomic
from pipeline.core.errors import ConfigError, SourceError
from pipeline.core.plots import new_figure, save_png
from trainer.tradeoff import PLOT as TRADEOFF_PLOT
from trainer.tradeoff import TRADEOFF_JSON
from trainer.tradeoff import markdown as tradeoff_markdown
from trainer.tradeoff import plot as plot_tradeoff

log = logging.getLogger(__name__)

COMPARE_JSON = "compare.json"
CURVES_CSV = "curves.csv"
REPORT_MD = "report.md"
PLOTS = {
    "bars": "accuracy_bars.png",
    "curves": "accuracy_vs_step.png",
    "thresholds": "thresholds.png",
    "loss": "loss.png",
}


def _read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SourceError(f"cannot read {path}: {e}") from e


def _read_csv(path: str | Path) -> list[dict[str, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e}") from e


def _num(v: str | None) -> float | None:
    return None if v in (None, "") else float(v)


def _write_text(path: Path, text: str) -> None:
    write_bytes_atomic(text.encode("utf-8"), path)


def _csv_text(fields: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in fields})
    return buf.getvalue()


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


# ------------------------------------------------------------------------------------ compare


def load_run(run_dir: str | Path, eval_json: str | Path) -> dict[str, Any]:
    """One run's facts: held-out accuracy per family, steps, seed, objective switches, its curve."""
    run = Path(run_dir)
    ev = _read_json(eval_json)
    if "shards" not in ev:
        raise SourceError(f"{eval_json} has no per-family shard accuracy (run hardneg eval with --shards)")
    results = _read_json(run / "train_results.json")
    cfg = _read_json(run / "train_config.json")
    curve_path = run / "curve.csv"
    curve = _read_csv(curve_path) if curve_path.exists() else []
    return {
        "dir": str(run),
        "families": {f: v for f, v in ev["shards"]["families"].items() if v.get("pairs")},
        "macro": ev["shards"].get("macro"),
        "steps": int(results["steps"]),
        "seed": cfg.get("seed"),
        "loss": cfg.get("loss", {}),
        "optim": cfg.get("optim", {}),
        "batch_size": cfg.get("data", {}).get("batch_size"),
        "train_families": cfg.get("data", {}).get("families"),
        "wall_s": results.get("wall_s"),
        "curve": curve,
    }


def compare(
    runs: dict[str, tuple[str | Path, str | Path]],
    out_dir: str | Path,
    allow_different_steps: bool = False,
) -> dict[str, Any]:
    """Write compare.json, curves.csv and accuracy_<run>.csv; the first run is the reference."""
    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs (NAME=RUN_DIR with an eval JSON each)")
    loaded = {name: load_run(d, e) for name, (d, e) in runs.items()}
    names = list(loaded)
    ref = names[0]
    steps = {n: r["steps"] for n, r in loaded.items()}
    if len(set(steps.values())) > 1 and not allow_different_steps:
        raise ConfigError(f"runs trained for different numbers of steps {steps}; compare them at equal steps")
    families = [f for f in ALL_FAMILIES if all(f in r["families"] for r in loaded.values())]
    if not families:
        raise ConfigError("the runs share no evaluated family with pairs")
    out = Path(out_dir)
    doc: dict[str, Any] = {
        "steps": steps[ref] if len(set(steps.values())) == 1 else steps,
        "seed": {n: r["seed"] for n, r in loaded.items()} if len({r["seed"] for r in loaded.values()}) > 1
        else loaded[ref]["seed"],
        "reference": ref,
        "pairs": {f: loaded[ref]["families"][f]["pairs"] for f in families},
    }
    for n, r in loaded.items():
        doc[n] = {f: _r(r["families"][f]["accuracy"]) for f in families}
        doc[n]["macro"] = _r(sum(r["families"][f]["accuracy"] for f in families) / len(families))
    doc["gain"] = {
        n: {k: _r(doc[n][k] - doc[ref][k]) for k in [*families, "macro"]} for n in names[1:]
    }
    if len(names) == 2:  # the usual case: one flat block that dvc metrics show prints as gain.<family>
        doc["gain"] = doc["gain"][names[1]]
    doc["train_seconds"] = {n: r["wall_s"] for n, r in loaded.items()}
    _write_text(out / COMPARE_JSON, json.dumps(doc, indent=2) + "\n")

    for n in loaded:
        rows = [{"family": f, "accuracy": doc[n][f]} for f in families]
        _write_text(out / f"accuracy_{n}.csv", _csv_text(["family", "accuracy"], rows))

    curves = merge_curves({n: r["curve"] for n, r in loaded.items()}, families)
    fields = ["step"] + [f"{n}_{f}" for f in families for n in names]
    _write_text(out / CURVES_CSV, _csv_text(fields, curves))
    _check_curve_end(loaded, families, names)
    log.info("compared %s at %s steps: %s", ", ".join(names), doc["steps"], "  ".join(
        f"{f} " + " vs ".join(f"{100 * doc[n][f]:.1f}%" for n in names) for f in families))
    return doc


def merge_curves(curves: dict[str, list[dict[str, str]]], families: Sequence[str]) -> list[dict[str, Any]]:
    """Rows at the steps every run was scored at, columns ``<run>_<family>``."""
    by_step: dict[str, dict[int, dict[str, str]]] = {
        n: {int(row["step"]): row for row in rows} for n, rows in curves.items()
    }
    common = sorted(set.intersection(*(set(v) for v in by_step.values()))) if by_step else []
    dropped = {n: len(v) - len(common) for n, v in by_step.items() if len(v) != len(common)}
    if dropped:
        log.warning("curve points not shared by every run were left out: %s", dropped)
    rows = []
    for s in common:
        row: dict[str, Any] = {"step": s}
        for n in curves:
            for f in families:
                row[f"{n}_{f}"] = _r(_num(by_step[n][s].get(f)))
        rows.append(row)
    return rows


def _check_curve_end(loaded: dict[str, Any], families: Sequence[str], names: Sequence[str]) -> None:
    """The curve's last point scores the final weights on the same pairs with the same code as the
    evaluation (trainer.evaluate.PairSet): the two must agree to the curve's six decimals."""
    for n in names:
        rows = loaded[n]["curve"]
        if not rows or int(rows[-1]["step"]) != loaded[n]["steps"]:
            continue
        for f in families:
            a, b = _num(rows[-1].get(f)), loaded[n]["families"][f]["accuracy"]
            if a is not None and b is not None and a != round(b, 6):
                log.warning("%s %s: the curve ends at %.6f but the evaluation says %.6f; were they scored on "
                            "other shards, or on another device, precision or batch size?", n, f, a, b)


# ------------------------------------------------------------------------------------ report


def _families(doc: dict[str, Any]) -> list[str]:
    return list(doc["pairs"])


def _names(doc: dict[str, Any]) -> list[str]:
    skip = {"steps", "seed", "reference", "pairs", "gain", "train_seconds"}
    return [k for k in doc if k not in skip]


def plot_bars(doc: dict[str, Any], path: Path) -> None:
    fams, names = _families(doc), _names(doc)
    fig = new_figure(7, 0.45 * len(fams) * len(names) + 1.5)
    ax = fig.add_subplot()
    h = 0.8 / len(names)
    for j, n in enumerate(names):
        ys = [i + (j - (len(names) - 1) / 2) * h for i in range(len(fams))]
        vals = [100 * doc[n][f] for f in fams]
        bars = ax.barh(ys, vals, height=h, label=n)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], padding=2, fontsize=8)
    ax.set_yticks(range(len(fams)), fams)
    ax.invert_yaxis()
    ax.axvline(50, color="gray", linestyle=":", linewidth=1)
    ax.set_xlim(0, 110)
    ax.set_xlabel(f"held-out pairwise accuracy (%) after {doc['steps']} steps; 50 = chance")
    ax.legend(loc="lower right", fontsize=8)
    save_png(fig, path)


def plot_curves(doc: dict[str, Any], curves: list[dict[str, str]], path: Path) -> None:
    fams, names = _families(doc), _names(doc)
    fig = new_figure(4 * len(fams), 3.4)
    axes = fig.subplots(1, len(fams), sharey=True, squeeze=False)[0]
    steps = [int(r["step"]) for r in curves]
    for ax, f in zip(axes, fams):
        for n in names:
            ax.plot(steps, [100 * (_num(r.get(f"{n}_{f}")) or float("nan")) for r in curves], marker="o",
                    markersize=3, label=n)
        ax.axhline(50, color="gray", linestyle=":", linewidth=1)
        ax.set_title(f)
        ax.set_xlabel("step")
        ax.set_ylim(30, 101)
    axes[0].set_ylabel("held-out pairwise accuracy (%)")
    axes[0].legend(fontsize=8)
    save_png(fig, path)


def plot_thresholds(metrics: list[dict[str, str]], fams: Sequence[str], name: str, path: Path) -> None:
    """The per-family CMR thresholds theta over training: the paper's curriculum figure."""
    fig = new_figure(7, 3.6)
    ax = fig.add_subplot()
    steps = [int(r["step"]) for r in metrics]
    for f in fams:
        vals = [_num(r.get(f"theta_{f}")) for r in metrics]
        if any(v is not None for v in vals):
            ax.plot(steps, [float("nan") if v is None else v for v in vals], linewidth=1, label=f)
    ax.set_xlabel("step")
    ax.set_ylabel("CMR threshold theta (logit units)")
    ax.set_title(f"adaptive thresholds of {name} (batch mean gap, clamped)")
    ax.legend(fontsize=8)
    save_png(fig, path)


def plot_loss(runs: dict[str, list[dict[str, str]]], path: Path) -> None:
    fig = new_figure(7, 3.6)
    ax = fig.add_subplot()
    for n, rows in runs.items():
        steps = [int(r["step"]) for r in rows]
        ax.plot(steps, [_num(r.get("loss")) for r in rows], linewidth=1, label=f"{n} total")
        if any(_num(r.get("contrastive")) != _num(r.get("loss")) for r in rows):
            ax.plot(steps, [_num(r.get("contrastive")) for r in rows], linewidth=1, linestyle="--",
                    label=f"{n} contrastive")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    save_png(fig, path)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _gain_block(doc: dict[str, Any], n: str) -> dict[str, Any]:
    names = _names(doc)
    return doc["gain"] if len(names) == 2 else doc["gain"][n]


def render_markdown(doc: dict[str, Any], curves: list[dict[str, str]], runs_cfg: dict[str, dict[str, Any]],
                    world: dict[str, Any] | None) -> str:
    fams, names = _families(doc), _names(doc)
    ref = doc["reference"]
    L: list[str] = []
    add = L.append
    add("# Plain CLIP vs CE-CLIP on the held-out test negatives\n")
    add(f"Steps: **{doc['steps']}** for every run; seed: **{doc['seed']}**. Accuracy = share of "
        "(image, caption, negative) triples of the held-out test split where the image scores its "
        "caption strictly above the negative (50% = chance).\n")
    head = "| family | pairs | " + " | ".join(f"{n} (%)" for n in names) + " | " + \
        " | ".join(f"{n} - {ref} (points)" for n in names[1:]) + " |"
    add(head)
    add("|" + "---|" * (2 + len(names) + len(names) - 1))
    for f in [*fams, "macro"]:
        pairs = f"{doc['pairs'][f]:,}" if f in doc["pairs"] else ""
        gains = " | ".join(f"{100 * _gain_block(doc, n)[f]:+.1f}" for n in names[1:])
        add(f"| {f} | {pairs} | " + " | ".join(_pct(doc[n][f]) for n in names) + f" | {gains} |")
    add("")
    add("## Runs\n")
    add("| run | objective (hard negatives / IMC / CMR) | families | batch | lr | train time (s) |")
    add("|---|---|---|---|---|---|")
    for n in names:
        c = runs_cfg.get(n, {})
        loss = c.get("loss", {})
        obj = " / ".join("on" if loss.get(k) else "off" for k in ("hard_negatives", "imc", "cmr"))
        extra = [label for k, label in (("global_hn", "global HN"), ("local_hn", "local HN"),
                                        ("distill_ema", "EMA distillation")) if loss.get(k)]
        obj += "".join(f" + {e}" for e in extra)  # FSC-CLIP's terms, self-distillation
        add(f"| {n} | {obj} | {', '.join(c.get('data', {}).get('families', []))} | "
            f"{c.get('data', {}).get('batch_size', '')} | {c.get('optim', {}).get('lr', '')} | "
            f"{doc['train_seconds'].get(n, '')} |")
    add("")
    if curves:
        add("## Accuracy versus step\n")
        add("| step | " + " | ".join(f"{n} {f}" for f in fams for n in names) + " |")
        add("|" + "---|" * (1 + len(fams) * len(names)))
        for r in curves:
            add(f"| {r['step']} | " + " | ".join(_pct(_num(r.get(f'{n}_{f}'))) for f in fams for n in names) + " |")
        add("")
    if world:
        held = ", ".join(f"{c} {s}" for c, s in world.get("heldout_pairs", []))
        coll = world.get("splits", {}).get("train", {}).get("relation_swap_collisions", {})
        add("## The world\n")
        tr, te = world.get("splits", {}).get("train", {}), world.get("splits", {}).get("test", {})
        add(f"{tr.get('images', '?')} train and {te.get('images', '?')} test images, "
            f"{tr.get('captions', '?')} / {te.get('captions', '?')} captions. Held-out (colour, shape) pairs, "
            f"seen only in test (every test image holds one): {held}.\n")
        if coll:
            add(f"Chance that a batch of {coll.get('batch_size')} holds a caption's relation swap as another "
                "image's caption (what teaches plain CLIP relations for free): exact text "
                f"{100 * coll['exact_text']['p_batch']:.2f}%, same meaning {100 * coll['same_meaning']['p_batch']:.2f}%, "
                f"same two objects swapped in an image {100 * coll['swapped_pair_in_image']['p_batch']:.2f}%.\n")
    add("## Figures\n")
    for key, label in (("bars", "per-family accuracy"), ("curves", "accuracy versus step"),
                       ("thresholds", "CMR thresholds over training (curriculum)"), ("loss", "training loss")):
        add(f"![{label}]({PLOTS[key]})\n")
    return "\n".join(L).rstrip() + "\n"


def compare_report(
    compare_dir: str | Path,
    runs: dict[str, str | Path],
    out_dir: str | Path,
    world_json: str | Path | None = None,
) -> dict[str, str]:
    """report.md and the PNG figures from compare's outputs and each run's metrics.csv."""
    cdir, out = Path(compare_dir), Path(out_dir)
    doc = _read_json(cdir / COMPARE_JSON)
    curves = _read_csv(cdir / CURVES_CSV) if (cdir / CURVES_CSV).exists() else []
    missing = [n for n in _names(doc) if n not in runs]
    if missing:
        raise ConfigError(f"compare.json holds runs {missing} that --run does not name")
    metrics = {n: _read_csv(Path(runs[n]) / "metrics.csv") for n in _names(doc)}
    cfgs = {n: _read_json(Path(runs[n]) / "train_config.json") for n in _names(doc)}
    world = _read_json(world_json) if world_json else None
    fams = _families(doc)
    plot_bars(doc, out / PLOTS["bars"])
    plot_curves(doc, curves, out / PLOTS["curves"])
    with_cmr = [n for n in _names(doc) if cfgs[n].get("loss", {}).get("cmr")]
    if with_cmr:
        plot_thresholds(metrics[with_cmr[-1]], fams, with_cmr[-1], out / PLOTS["thresholds"])
    plot_loss(metrics, out / PLOTS["loss"])
    text = render_markdown(doc, curves, cfgs, world)
    if (cdir / TRADEOFF_JSON).exists():  # hardneg tradeoff: recognition beside compositionality
        trade = _read_json(cdir / TRADEOFF_JSON)
        plot_tradeoff(trade, out / TRADEOFF_PLOT)
        text = text.rstrip() + "\n\n" + tradeoff_markdown(trade)
    _write_text(out / REPORT_MD, text)
    written = {k: str(out / v) for k, v in PLOTS.items() if (out / v).exists()}
    written["markdown"] = str(out / REPORT_MD)
    log.info("comparison report written to %s", out / REPORT_MD)
    return written


# ------------------------------------------------------------------------------------ CLI


__all__ = ["compare", "compare_report", "load_run", "merge_curves"]
