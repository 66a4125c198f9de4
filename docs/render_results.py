"""Rewrites the generated result blocks of README.md and docs/world.md from what `dvc repro` writes.

A block is everything between ``<!-- results:begin NAME -->`` and ``<!-- results:end -->``; NAME
says what goes in it (see :data:`BLOCKS`). Nothing in a block is typed by hand: this script
rewrites it from

- ``metrics/compare.json``      per-family accuracy of each run and the gain (``hardneg compare``)
- ``metrics/eval_<run>.json``   each model's held-out evaluation (``hardneg eval``)
- ``metrics/tradeoff.json``     compositional against recognition accuracy (``hardneg tradeoff``)
- ``reports/negatives/report.json``  stage 1's figures on the world's negatives (``hardneg report``)
- ``reports/compare/report.md``  the comparison report (``hardneg compare-report``)

It is the last command of the ``report`` stage in dvc.yaml, so ``dvc repro`` keeps the pages
current; ``tests/test_docs.py`` fails when a block differs from what this script would write.
Stdlib only. A page that does not exist is skipped (a copy of the pipeline without docs); a block
whose NAME is unknown, or a begin without its end, is an error.

    python docs/render_results.py            # rewrite the blocks in place
    python docs/render_results.py --check    # exit 1 if a block is out of date, write nothing
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: the pages that hold generated blocks, relative to the project root
PAGES = ("README.md", "docs/world.md")

BEGIN = re.compile(r"<!-- results:begin ([\w-]+) -->")
END = "<!-- results:end -->"

COMPARE_JSON = "metrics/compare.json"
REPORT_JSON = "reports/negatives/report.json"
COMPARE_MD = "reports/compare/report.md"
TRADEOFF_JSON = "metrics/tradeoff.json"
#: the evaluation of the model the fine-tunes start from (``metrics/eval_<name>.json``), when there is one
BEFORE = "pretrain"
#: keys of compare.json that are not runs (as in trainer/compare.py)
NOT_RUNS = {"steps", "seed", "reference", "pairs", "gain", "train_seconds"}
#: how the runs of dvc.yaml are named in prose
RUN_LABELS = {"baseline": "plain CLIP", "ceclip": "CE-CLIP", "fscclip": "FSC-CLIP", "pretrain": "pretrained (before)",
              "before": "pretrained (before)"}
#: sections of report.json that are not per-family judges
NOT_JUDGES = {"report_version", "dataset", "families", "skipped"}
#: how known judge sections are named in prose
JUDGE_LABELS = {"blind_check": "n-gram LM", "learned": "learned detector", "learned_check": "learned detector",
                "learned_detector": "learned detector"}
#: the share a judge reports per family, first key found wins
JUDGE_SHARE_KEYS = ("prefers_positive", "accuracy", "held_out_accuracy")
Z95 = 1.959963984540054


class RenderError(Exception):
    """A page or a source file cannot be rendered (names the file and what is wrong)."""


# --- reading the sources ------------------------------------------------------------------------------


def _load_json(root: Path, rel: str) -> Any:
    path = root / rel
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise RenderError(f"cannot read {rel}: {e}") from e


def _missing(rel: str) -> str:
    return f"*`{rel}` is not there yet: `make repro` writes it.*\n"


def _runs(doc: dict[str, Any]) -> list[str]:
    """Run names of compare.json, the reference first."""
    names = [k for k, v in doc.items() if k not in NOT_RUNS and isinstance(v, dict)
             and any(f in v for f in doc.get("pairs", {}))]
    ref = doc.get("reference")
    return sorted(names, key=lambda n: n != ref)


def _families(doc: dict[str, Any]) -> list[str]:
    return list(doc.get("pairs", {}))


def _gain(doc: dict[str, Any], run: str, family: str) -> float | None:
    gain = doc.get("gain", {})
    block = gain.get(run, gain) if isinstance(gain.get(run), dict) else gain
    value = block.get(family)
    return value if isinstance(value, (int, float)) else None


def _label(run: str) -> str:
    return RUN_LABELS.get(run, run)


def _judge_entries(section: Any) -> dict[str, Any]:
    """A judge section's per-family entries (flat, or under ``families``)."""
    if not isinstance(section, dict):
        return {}
    return section["families"] if isinstance(section.get("families"), dict) else section


def _judges(report: dict[str, Any]) -> list[str]:
    """Sections of report.json that judge each family's negatives blind (text only), n-gram LM first."""
    fams = set(report.get("families", {}))
    out = []
    for name, section in report.items():
        if name in NOT_JUDGES:
            continue
        if any(_judge_share(_judge_entries(section).get(f)) for f in fams):
            out.append(name)
    return out


def _judge_share(entry: Any) -> tuple[float, float | None, float | None] | None:
    if not isinstance(entry, dict):
        return None
    for key in JUDGE_SHARE_KEYS:
        if isinstance(entry.get(key), (int, float)):
            return float(entry[key]), entry.get("ci95_low"), entry.get("ci95_high")
    return None


# --- formatting -----------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _points(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


def _int(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else "–"


def wilson(p: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a share ``p`` measured on ``n`` pairs."""
    if n <= 0:
        return 0.0, 1.0
    den = 1 + Z95 * Z95 / n
    centre = (p + Z95 * Z95 / (2 * n)) / den
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 * Z95 / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def _with_interval(p: float | None, n: Any) -> str:
    if p is None:
        return "–"
    if not isinstance(n, int) or n <= 0:
        return _pct(p)
    lo, hi = wilson(p, n)
    return f"{_pct(p)} ({_pct(lo)}–{_pct(hi)})"


def _share(entry: tuple[float, float | None, float | None] | None) -> str:
    if entry is None:
        return "–"
    p, lo, hi = entry
    if lo is None or hi is None:
        return f"{_pct(p)}%"
    return f"{_pct(p)}% ({_pct(lo)}–{_pct(hi)})"


def _table(head: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A Markdown table; ``align`` holds one ``l`` or ``r`` per column."""
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(head) + " |", "|" + "|".join(sep) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _verdicts(doc: dict[str, Any]) -> list[str]:
    """One sentence per compared run: where it is above / below the reference beyond both intervals."""
    runs, fams, pairs = _runs(doc), _families(doc), doc.get("pairs", {})
    if len(runs) < 2:
        return []
    ref = runs[0]
    out = []
    for run in runs[1:]:
        above, below, within = [], [], []
        for f in fams:
            a, b, n = doc[ref].get(f), doc[run].get(f), pairs.get(f)
            if a is None or b is None or not n:
                continue
            (alo, ahi), (blo, bhi) = wilson(a, n), wilson(b, n)
            (above if blo > ahi else below if bhi < alo else within).append(f"`{f}`")
        parts = []
        if above:
            parts.append(f"above on {', '.join(above)} (intervals apart)")
        if below:
            parts.append(f"below on {', '.join(below)} (intervals apart)")
        if within:
            parts.append(f"overlapping on {', '.join(within)}")
        if parts:
            out.append(f"{_label(run)} against {_label(ref)}, 95% Wilson intervals: " + "; ".join(parts) + ".")
    return out


# --- the blocks -----------------------------------------------------------------------------------------


def block_summary(root: Path) -> str:
    """README: final accuracy of each run per family, the gain, and the blind judges of the negatives."""
    doc = _load_json(root, COMPARE_JSON)
    if doc is None:
        return _missing(COMPARE_JSON)
    report = _load_json(root, REPORT_JSON) or {}
    runs, fams, pairs = _runs(doc), _families(doc), doc.get("pairs", {})
    judges = _judges(report)
    head = ["family", "test pairs", *(f"{_label(r)} (%)" for r in runs),
            *(f"gain of {_label(r)} (points)" for r in runs[1:]),
            *(f"{JUDGE_LABELS.get(j, j)} picks the positive (text only)" for j in judges)]
    rows = []
    for f in [*fams, "macro"]:
        rows.append([f"`{f}`" if f != "macro" else "macro", _int(pairs.get(f)) if f != "macro" else "",
                     *(_pct(doc[r].get(f)) for r in runs), *(_points(_gain(doc, r, f)) for r in runs[1:]),
                     *((_share(_judge_share(_judge_entries(report[j]).get(f))) if f != "macro" else "") for j in judges)])
    lines = [
        f"Pairwise accuracy on the world's held-out test negatives after **{_int(doc.get('steps'))} steps** "
        f"(seed {doc.get('seed', '–')}); 50% is chance.",
        "",
        *_table(head, rows, "lr" + "r" * (len(head) - 2)),
        "",
        *_verdicts(doc),
    ]
    sources = [COMPARE_JSON] + ([REPORT_JSON] if report else [])
    trade = _load_json(root, TRADEOFF_JSON)
    models = {**({"before": trade["before"]} if trade.get("before") else {}), **trade.get("runs", {})} \
        if isinstance(trade, dict) else {}
    if models:
        sources.append(TRADEOFF_JSON)
        lines += ["", "Compositional accuracy (held-out macro) and recognition (mean zero-shot top-1 over the "
                  "world's recognition sets), before fine-tuning and after each fine-tune:", "",
                  *_table(["model", "compositional (%)", "recognition (%)"],
                          [[_label(n), _pct(m.get("compositional")), _pct(m.get("recognition"))]
                           for n, m in models.items() if isinstance(m, dict)], "lrr")]
    lines += ["", "From " + ", ".join(f"`{x}`" for x in sources) + ", written by `dvc repro`."]
    return "\n".join(lines) + "\n"


def block_world_results(root: Path) -> str:
    """docs/world.md: accuracy with intervals, micro accuracy and timings of each run."""
    doc = _load_json(root, COMPARE_JSON)
    if doc is None:
        return _missing(COMPARE_JSON)
    runs, fams, pairs = _runs(doc), _families(doc), doc.get("pairs", {})
    head = ["family", "test pairs", *(f"{_label(r)} (%, 95% interval)" for r in runs),
            *(f"gain of {_label(r)} (points)" for r in runs[1:])]
    rows = []
    for f in fams:
        rows.append([f"`{f}`", _int(pairs.get(f)), *(_with_interval(doc[r].get(f), pairs.get(f)) for r in runs),
                     *(_points(_gain(doc, r, f)) for r in runs[1:])])
    rows.append(["macro", "", *(_pct(doc[r].get("macro")) for r in runs),
                 *(_points(_gain(doc, r, "macro")) for r in runs[1:])])
    lines = [
        f"{'Both runs' if len(runs) == 2 else 'Every run'}: **{_int(doc.get('steps'))} steps**, seed "
        f"{doc.get('seed', '–')}; pairwise accuracy on the "
        "held-out test negatives (`metrics/compare.json`).",
        "",
        *_table(head, rows, "lr" + "r" * (len(head) - 2)),
        "",
        *_verdicts(doc),
    ]
    loaded = {r: _load_json(root, f"metrics/eval_{r}.json") for r in [BEFORE, *runs]}
    loaded = {r: ev for r, ev in loaded.items() if isinstance(ev, dict) and ev.get("shards")}
    sets = sorted({z for ev in loaded.values() for z in (ev.get("zeroshot") or {})})
    evals = []
    for r, ev in loaded.items():
        shards, zs = ev["shards"], ev.get("zeroshot") or {}
        evals.append([_label(r), _int(shards.get("pairs")), _pct(shards.get("macro")), _pct(shards.get("micro")),
                      *(_pct((zs.get(z) or {}).get("top1")) for z in sets),
                      _int(shards.get("skipped_pairs")), _int(len(ev.get("skipped_images") or {}))])
    if evals:
        lines += ["", "Per model (`metrics/eval_<name>.json`)" + (
                  "; recognition is zero-shot top-1 on each recognition set:" if sets else ":"), "",
                  *_table(["model", "pairs scored", "macro (%)", "micro (%)", *(f"{z} top-1 (%)" for z in sets),
                           "skipped pairs", "skipped images"], evals, "lrrr" + "r" * len(sets) + "rr")]
    return "\n".join(lines) + "\n"


def block_world_negatives(root: Path) -> str:
    """docs/world.md: stage 1's figures on the world's negatives and the blind judges."""
    report = _load_json(root, REPORT_JSON)
    if report is None:
        return _missing(REPORT_JSON)
    ds, fams = report.get("dataset", {}), report.get("families", {})
    judges = _judges(report)
    splits = ", ".join(f"{k} {_int(v)}" for k, v in sorted(ds.get("splits", {}).items()))
    head = ["family", "negatives", "coverage", "generated", "rejected by reason",
            *(f"{JUDGE_LABELS.get(j, j)} picks the positive (text only, 95%)" for j in judges)]
    rows = []
    for f, fig in fams.items():
        rejected = fig.get("rejected") or {}
        rej = ", ".join(f"{k} {_int(v)}" for k, v in sorted(rejected.items())) or "none"
        cov = fig.get("coverage")
        rows.append([f"`{f}`", _int(fig.get("negatives")), "–" if cov is None else f"{_pct(cov)}%",
                     _int(fig.get("generated")), rej, *(_share(_judge_share(_judge_entries(report[j]).get(f))) for j in judges)])
    lines = [
        f"{_int(ds.get('rows'))} captions ({splits}) of {_int(ds.get('groups'))} image groups; "
        f"{_int(ds.get('skipped_total'))} skipped (`{REPORT_JSON}`).",
        "",
        *_table(head, rows, "lrrrl" + "r" * len(judges)),
    ]
    return "\n".join(lines) + "\n"


def block_world_report(root: Path) -> str:
    """docs/world.md: the sections of the comparison report, headings demoted, figures left out."""
    path = root / COMPARE_MD
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _missing(COMPARE_MD)
    except OSError as e:
        raise RenderError(f"cannot read {COMPARE_MD}: {e}") from e
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections and not line.lstrip().startswith("!["):
            sections[-1][1].append(("#" + line) if line.startswith("#") else line)
    out = []
    for title, body in sections:
        if title.lower() == "figures":
            continue
        while body and not body[-1].strip():
            body.pop()
        out += [f"#### {title}", *body, ""]
    out.append(f"From `{COMPARE_MD}`, which also holds the figures.")
    return "\n".join(out) + "\n"


BLOCKS: dict[str, Callable[[Path], str]] = {
    "summary": block_summary,
    "world-results": block_world_results,
    "world-negatives": block_world_negatives,
    "world-report": block_world_report,
}


# --- rewriting pages --------------------------------------------------------------------------------------


def render_text(text: str, root: Path, where: str = "page") -> str:
    """``text`` with every block rewritten from the files under ``root``."""
    out: list[str] = []
    pos = 0
    for m in BEGIN.finditer(text):
        if m.start() < pos:
            continue  # a begin marker inside a block being replaced
        name = m.group(1)
        if name not in BLOCKS:
            raise RenderError(f"{where}: unknown results block {name!r}; known: {sorted(BLOCKS)}")
        end = text.find(END, m.end())
        if end < 0:
            raise RenderError(f"{where}: results block {name!r} has no {END}")
        out += [text[pos:m.end()], "\n", BLOCKS[name](root)]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def block_names(text: str) -> list[str]:
    return BEGIN.findall(text)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(root: Path = ROOT, check: bool = False) -> list[str]:
    """Rewrite (or, with ``check``, only compare) every page; returns the pages that were out of date."""
    stale = []
    for rel in PAGES:
        path = root / rel
        if not path.is_file():
            print(f"render_results: {rel} not found, skipped", file=sys.stderr)
            continue
        text = path.read_text(encoding="utf-8")
        new = render_text(text, root, rel)
        if new != text:
            stale.append(rel)
            if not check:
                _write_atomic(path, new)
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="project root (default: the one holding this script)")
    ap.add_argument("--check", action="store_true", help="only report out-of-date pages (exit 1), write nothing")
    args = ap.parse_args(argv)
    try:
        stale = render(args.root, check=args.check)
    except RenderError as e:
        print(f"render_results: {e}", file=sys.stderr)
        return 2
    for rel in stale:
        print(f"render_results: {rel} {'is out of date' if args.check else 'rewritten'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
