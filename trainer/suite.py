"""Evaluation suites: many benchmarks from one YAML, one table per model, one table of many models.

A suite file maps a benchmark name to its format, files and image root (``benchmarks:`` at the top
level, or under a ``suite:`` section so a params file can hold it)::

    benchmarks:
      sugarcrepe: {format: sugarcrepe, files: [swap_att.json, ...], image_root: coco/val2017}
      winoground: {format: winoground, files: [winoground/examples.jsonl], image_root: winoground/images}

``hardneg eval --suite FILE`` scores every benchmark into the metrics JSON (``suite``) and writes
``<out stem>.md`` and ``<out stem>.csv`` beside it: one row, the columns of each benchmark in the
file's order (a format's ``columns``, e.g. Winoground's text, image and group scores), then
``compositional_mean`` (the mean of the headline metric of every benchmark counted compositional)
and ``recognition_mean`` (likewise for recognition). Which benchmark counts as which is the format's
``counts_as`` unless the suite says otherwise (``counts_as: none`` leaves it out of both); the
metrics JSON lists both groups. ``hardneg compare-suite`` joins several models' suite metrics into
one table whose rows are the models. Values are fractions in the JSON and CSV and percentages in the
markdown. Every problem with the file is a :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.atomic import write_bytes_atomic
from pipeline.core.config import from_dict
from pipeline.core.errors import ConfigError, SourceError
from trainer.benchmarks import COMPOSITIONAL, FORMATS, RECOGNITION, Loaded
from trainer.config import BenchmarkSpec

COUNTS_AS = (COMPOSITIONAL, RECOGNITION, "none")
#: kinds of format that read exactly one file
_ONE_FILE = ("retrieval", "zeroshot", "winoground")
MEANS = ("compositional_mean", "recognition_mean")


def load_suite(path: str | Path) -> dict[str, BenchmarkSpec]:
    """The benchmarks of a suite file, checked: known formats, files given (one where the format reads
    one), distinct file stems within a benchmark, a valid ``counts_as``."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read suite {path}: {e}") from e
    if isinstance(doc, dict) and isinstance(doc.get("suite"), dict):
        doc, prefix = doc["suite"], "suite.benchmarks"
    else:
        prefix = "benchmarks"
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), dict) or not doc["benchmarks"]:
        raise ConfigError(f"suite {path}: expected a mapping '{prefix}' of benchmark name -> format, files, image_root")
    extra = sorted(set(doc) - {"benchmarks"})
    if extra:
        raise ConfigError(f"suite {path}: unknown key(s) {extra}; a suite holds 'benchmarks' only")
    out: dict[str, BenchmarkSpec] = {}
    for name, raw in doc["benchmarks"].items():
        where = f"suite {path}: {prefix}.{name}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping with format, files, image_root")
        spec = from_dict(BenchmarkSpec, raw, _where=f"{where}")
        if spec.format not in FORMATS:
            raise ConfigError(f"{where}.format: unknown format {spec.format!r}; known: {sorted(FORMATS)}")
        if not spec.files:
            raise ConfigError(f"{where}.files: no files given")
        if FORMATS[spec.format].kind in _ONE_FILE and len(spec.files) != 1:
            raise ConfigError(f"{where}.files: format {spec.format} reads one file, got {len(spec.files)}")
        stems = [Path(f).stem for f in spec.files]
        if len(set(stems)) != len(stems):
            raise ConfigError(f"{where}.files: two files share a name ({stems}); results are keyed by file name")
        unknown = sorted(set(spec.image_roots) - set(stems))
        if unknown:
            raise ConfigError(f"{where}.image_roots: {unknown} name no file of the benchmark (file names: {stems})")
        if spec.counts_as is not None and spec.counts_as not in COUNTS_AS:
            raise ConfigError(f"{where}.counts_as: must be one of {list(COUNTS_AS)}, got {spec.counts_as!r}")
        out[str(name)] = spec
    return out


def suite_files(path: str | Path) -> list[str]:
    """Every benchmark file a suite names (its image-bearing files, for the overlap check)."""
    return [f for spec in load_suite(path).values() if FORMATS[spec.format].kind != "zeroshot" for f in spec.files]


def read_benchmarks(specs: dict[str, BenchmarkSpec], limit: int | None = None) -> dict[str, dict[str, Loaded]]:
    """Every file of every benchmark read and checked (``name -> file -> Loaded``), so that a
    malformed file stops a run before any model is built or scored; zero-shot sets are read when
    scored (``trainer.zeroshot``)."""
    return {name: {path: FORMATS[spec.format].read(path, limit) for path in spec.files}
            for name, spec in specs.items() if FORMATS[spec.format].read is not None}


def counts_as(spec: BenchmarkSpec) -> str:
    return spec.counts_as or FORMATS[spec.format].counts_as


def summarize(specs: dict[str, BenchmarkSpec], results: dict[str, dict[str, Any]], path: str) -> dict[str, Any]:
    """The ``suite`` section of the metrics: each benchmark's results, the table row and both means."""
    row: dict[str, float | None] = {}
    groups: dict[str, list[str]] = {COMPOSITIONAL: [], RECOGNITION: []}
    heads: dict[str, list[float]] = {COMPOSITIONAL: [], RECOGNITION: []}
    for name, spec in specs.items():
        fmt = FORMATS[spec.format]
        res = results[name]
        for suffix, key in fmt.columns:
            row[f"{name}{suffix}"] = res.get(key)
        kind = counts_as(spec)
        if kind in groups:
            groups[kind].append(name)
            if res.get(fmt.headline) is not None:
                heads[kind].append(res[fmt.headline])
    for kind, col in zip((COMPOSITIONAL, RECOGNITION), MEANS):
        row[col] = sum(heads[kind]) / len(heads[kind]) if heads[kind] else None
    return {
        "file": str(path),
        "benchmarks": {n: {"format": specs[n].format, "counts_as": counts_as(specs[n]),
                           "headline": FORMATS[specs[n].format].headline, **results[n]} for n in specs},
        "compositional": groups[COMPOSITIONAL],
        "recognition": groups[RECOGNITION],
        "table": row,
        #: the table's column order (the JSON is written with sorted keys)
        "columns": list(row),
    }


# --------------------------------------------------------------------------------------------- tables


def _pct(v: Any) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def table_text(rows: dict[str, dict[str, Any]], columns: Sequence[str]) -> tuple[str, str]:
    """Markdown (percentages, one decimal) and CSV (fractions) of ``rows`` (model -> column -> value)."""
    md = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for model, row in rows.items():
        md.append(f"| {model} | " + " | ".join(_pct(row.get(c)) for c in columns) + " |")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", *columns])
    for model, row in rows.items():
        w.writerow([model, *("" if row.get(c) is None else repr(float(row[c])) for c in columns)])
    return "\n".join(md) + "\n", buf.getvalue()


def _legend(compositional: Sequence[str], recognition: Sequence[str]) -> str:
    return (f"\n`compositional_mean`: the mean of {', '.join(compositional) or 'no benchmark'}; "
            f"`recognition_mean`: the mean of {', '.join(recognition) or 'no benchmark'} "
            "(each benchmark's headline metric).\n")


def write_tables(suite: dict[str, Any], out_json: str | Path, model: str) -> tuple[Path, Path]:
    """``<out stem>.md`` and ``<out stem>.csv`` beside the metrics JSON: this model's row."""
    out = Path(out_json)
    columns = list(suite.get("columns") or suite["table"])
    md, text = table_text({model: suite["table"]}, columns)
    paths = out.with_suffix(".md"), out.with_suffix(".csv")
    write_bytes_atomic((md + _legend(suite["compositional"], suite["recognition"])).encode("utf-8"), paths[0])
    write_bytes_atomic(text.encode("utf-8"), paths[1])
    return paths


def join_suites(metrics: dict[str, str], out_dir: str | Path) -> dict[str, Any]:
    """One table of several models' suite metrics (``name -> metrics JSON``), rows in the given order,
    the columns of every model in order of first appearance; ``<out_dir>/suite.{json,md,csv}``."""
    if not metrics:
        raise ConfigError("compare-suite: give at least one --model NAME=METRICS_JSON")
    rows: dict[str, dict[str, Any]] = {}
    columns: list[str] = []
    comp: list[str] = []
    recog: list[str] = []
    for name, path in metrics.items():
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise SourceError(f"cannot read {path}: {e}") from e
        suite = doc.get("suite") if isinstance(doc, dict) else None
        if not isinstance(suite, dict) or not isinstance(suite.get("table"), dict):
            raise SourceError(f"{path} (model {name}): no suite results; run hardneg eval --suite FILE first")
        rows[name] = suite["table"]
        for c in suite.get("columns") or suite["table"]:
            if c not in columns and c not in MEANS:
                columns.append(c)
        comp += [b for b in suite.get("compositional", []) if b not in comp]
        recog += [b for b in suite.get("recognition", []) if b not in recog]
    columns += list(MEANS)
    out = Path(out_dir)
    md, text = table_text(rows, columns)
    joined = {"models": list(rows), "columns": columns, "rows": rows, "compositional": comp, "recognition": recog}
    write_bytes_atomic((json.dumps(joined, indent=2, sort_keys=True) + "\n").encode("utf-8"), out / "suite.json")
    write_bytes_atomic((md + _legend(comp, recog)).encode("utf-8"), out / "suite.md")
    write_bytes_atomic(text.encode("utf-8"), out / "suite.csv")
    return joined
