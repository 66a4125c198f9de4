"""Compositionality against recognition: before and after each fine-tune, and along WiSE-FT sweeps.

Inputs are files other commands wrote: ``hardneg eval`` metrics (with ``shards`` and ``zeroshot``
sections) and ``hardneg wise-ft --eval-section`` sweeps (``<dir>/sweep.json``). Compositional
accuracy is the held-out shards' ``macro`` (mean over families); recognition is the mean zero-shot
top-1 over the evaluated sets. Nothing here trains or scores a model.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_bytes_atomic, write_json_atomic
from pipeline.core.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

TRADEOFF_JSON = "tradeoff.json"
SWEEP_JSON = "sweep.json"
SWEEP_CSV = "sweep.csv"
PLOT = "tradeoff.png"


def _read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SourceError(f"cannot read {path}: {e}") from e


def point(metrics: dict[str, Any]) -> dict[str, Any]:
    """``{compositional, recognition, zeroshot: {set: top1}, families: {...}}`` of one eval metrics dict."""
    shards = metrics.get("shards") or {}
    zs = {k: v["top1"] for k, v in (metrics.get("zeroshot") or {}).items()}
    return {
        "compositional": shards.get("macro"),
        "families": {f: v.get("accuracy") for f, v in (shards.get("families") or {}).items()},
        "zeroshot": zs,
        "recognition": sum(zs.values()) / len(zs) if zs else None,
    }


def sweep_eval(record: dict[str, Any], eval_cfg: Any, out_dir: str | Path) -> list[dict[str, Any]]:
    """Evaluate every model of a WiSE-FT sweep with ``eval_cfg`` (its ``model.pretrained`` is replaced)."""
    import dataclasses

    from trainer.evaluate import evaluate

    out = Path(out_dir)
    rows = []
    for m in record["models"]:
        weights = Path(m["weights"])
        cfg = dataclasses.replace(eval_cfg, model=dataclasses.replace(eval_cfg.model, pretrained=str(weights)),
                                  out=str(weights.parent / "metrics.json"), progress=False)
        rows.append({"alpha": m["alpha"], **point(evaluate(cfg))})
    write_json_atomic({"finetuned": record.get("finetuned"), "base": record.get("base"), "points": rows},
                      out / SWEEP_JSON)
    write_bytes_atomic(_csv(rows).encode("utf-8"), out / SWEEP_CSV)
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    fams = sorted({f for r in rows for f in r["families"]})
    sets = sorted({s for r in rows for s in r["zeroshot"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["alpha", "compositional", "recognition", *fams, *(f"zeroshot_{s}" for s in sets)])
    for r in rows:
        w.writerow([r["alpha"], r["compositional"], r["recognition"], *(r["families"].get(f) for f in fams),
                    *(r["zeroshot"].get(s) for s in sets)])
    return buf.getvalue()


def tradeoff(before: str | Path | None, evals: dict[str, str], sweeps: dict[str, str], out_dir: str | Path) -> dict[str, Any]:
    """Join the eval metrics and sweeps into ``<out>/tradeoff.json`` (a dvc metrics file)."""
    if set(sweeps) - set(evals):
        raise ConfigError(f"--sweep names {sorted(set(sweeps) - set(evals))} that --eval does not")
    doc: dict[str, Any] = {"before": point(_read_json(before)) if before else None,
                           "runs": {n: point(_read_json(p)) for n, p in evals.items()}, "wiseft": {}}
    for n, d in sweeps.items():
        doc["wiseft"][n] = _read_json(Path(d) / SWEEP_JSON)["points"]
    write_json_atomic(doc, Path(out_dir) / TRADEOFF_JSON)
    return doc


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def markdown(doc: dict[str, Any]) -> str:
    """The report section: recognition before/after each fine-tune, and the WiSE-FT curve points."""
    L = ["## Compositionality against recognition\n",
         "Recognition = mean zero-shot top-1 over the recognition sets; compositional = held-out "
         "macro pairwise accuracy. *Before* is the pretrained model the fine-tunes start from.\n"]
    runs = ({"before": doc["before"]} if doc.get("before") else {}) | doc["runs"]
    sets = sorted({s for p in runs.values() for s in p["zeroshot"]})
    L.append("| model | compositional (%) | recognition (%) | " + " | ".join(f"{s} top-1 (%)" for s in sets) + " |")
    L.append("|" + "---|" * (3 + len(sets)))
    for n, p in runs.items():
        L.append(f"| {n} | {_pct(p['compositional'])} | {_pct(p['recognition'])} | "
                 + " | ".join(_pct(p["zeroshot"].get(s)) for s in sets) + " |")
    L.append("")
    if doc.get("wiseft"):
        L.append("WiSE-FT: (1 - alpha) x before + alpha x fine-tuned, one point per alpha "
                 "(compositional / recognition, %).\n")
        names = list(doc["wiseft"])
        alphas = sorted({r["alpha"] for rows in doc["wiseft"].values() for r in rows})
        L.append("| alpha | " + " | ".join(names) + " |")
        L.append("|" + "---|" * (1 + len(names)))
        for a in alphas:
            cells = []
            for n in names:
                r = next((r for r in doc["wiseft"][n] if r["alpha"] == a), None)
                cells.append(f"{_pct(r['compositional'])} / {_pct(r['recognition'])}" if r else "")
            L.append(f"| {a:.2f} | " + " | ".join(cells) + " |")
        L.append("")
        L.append(f"![compositional against recognition]({PLOT})\n")
    return "\n".join(L)


def plot(doc: dict[str, Any], path: Path) -> None:
    """One line per fine-tune through its WiSE-FT points (alpha labelled), plus before and after."""
    from pipeline.core.plots import new_figure, save_png

    fig = new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    for n, rows in doc.get("wiseft", {}).items():
        rows = [r for r in rows if r["recognition"] is not None and r["compositional"] is not None]
        xs, ys = [100 * r["recognition"] for r in rows], [100 * r["compositional"] for r in rows]
        ax.plot(xs, ys, marker="o", label=f"WiSE-FT {n}")
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"{r['alpha']:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    b = doc.get("before")
    if b and b["recognition"] is not None and b["compositional"] is not None:
        ax.scatter([100 * b["recognition"]], [100 * b["compositional"]], marker="*", s=120, color="black",
                   label="before (pretrained)", zorder=3)
    ax.set_xlabel("recognition: mean zero-shot top-1 (%)")
    ax.set_ylabel("compositional: held-out macro accuracy (%)")
    ax.set_title("Compositionality against recognition")
    ax.legend(fontsize=8)
    save_png(fig, path)
