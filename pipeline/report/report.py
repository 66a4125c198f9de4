"""``hardneg report``: the quality report of a negatives dataset folder.

It reads the shards (any dataset in the shard format, so two datasets can be compared) and, when
present, the manifest beside them, and writes:

- ``report.json``: figures (nested dicts of scalars, no lists), so ``dvc metrics show`` reads it and
  ``hardneg publish`` summarises it in the dataset card (its ``blind_check`` and ``learned_check``
  sections are one dict of scalars per family, followed by the settings). Each family's ``rules``
  holds its negatives per rule (from ``provenance``), most first, with their share of the family and
  ``rule_examples`` seeded examples keyed ``"1"``, ``"2"``, ...: texts, but still no lists;
- ``report.md``: the same figures as tables, with examples (per family and per rule) and the plots linked;
- PNG plots: coverage, candidates per caption, length change, skip and reject reasons, blind checks.

Counts come from the shards themselves (what a trainer will read; :mod:`pipeline.report.tally`);
reasons for skips and rejects come from the manifest, since they leave nothing in the shards. The
two blind judges (:mod:`pipeline.report.blind`, :mod:`pipeline.report.learned`) see every row once,
in the same pass. The same data and settings give byte-identical files (no timings, no dates); with
``learned.enabled`` off they are those of a report without the learned detector.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.atomic import write_bytes_atomic
from pipeline.core.errors import HardnegError
from pipeline.report.blind import BlindCheck
from pipeline.report.config import ReportConfig
from pipeline.report.learned import LearnedCheck
from pipeline.report.markdown import format_ci, render_markdown
from pipeline.report.plots import PLOTS, write_plots
from pipeline.report.tally import DatasetTally, ExampleSample, FamilyTally, RuleExample, RuleSample

if TYPE_CHECKING:
    import pyarrow as pa

    from pipeline.contract.manifest import FamilyCounts, Manifest

log = logging.getLogger(__name__)

REPORT_VERSION = "1"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
#: rows per batch read from a shard (memory stays flat; the figures do not depend on it)
BATCH_ROWS = 8192
#: the fields of a ``provenance`` entry the report reads (the spans are left unconverted)
PROVENANCE_FIELDS = ("family", "rule", "text", "plausibility")

__all__ = ["PLOTS", "REPORT_JSON", "REPORT_MD", "ReportConfig", "build_report", "format_ci"]


def build_report(dataset_dir: str | Path, out_dir: str | Path | None = None, cfg: ReportConfig | None = None) -> dict[str, Any]:
    """Write the quality report of ``dataset_dir`` to ``out_dir`` (default: the dataset folder).

    Returns what was written to ``report.json``.
    """
    from pipeline.contract.schema import FAMILY_COLUMNS

    cfg = cfg or ReportConfig()
    cfg.validate()
    _require("pandas", "the report's tallies")
    if cfg.learned.enabled:
        _require("sklearn", "the learned detector", " (or skip it: --no-learned)")
    dataset_dir = Path(dataset_dir)
    out = Path(out_dir) if out_dir is not None else dataset_dir
    manifest = _manifest_or_none(dataset_dir)

    tally = DatasetTally(list(FAMILY_COLUMNS))
    examples = ExampleSample(list(FAMILY_COLUMNS), cfg.examples, cfg.blind.seed)
    rule_sample = RuleSample(cfg.rule_examples, cfg.blind.seed)
    blind_check = BlindCheck(FAMILY_COLUMNS, cfg.blind)
    learned_check = LearnedCheck(FAMILY_COLUMNS, cfg.learned) if cfg.learned.enabled else None
    consumers = [examples.add, rule_sample.add, blind_check.add, *([learned_check.add] if learned_check else [])]
    _read(dataset_dir, tally, consumers)
    tallies = tally.families()
    for fam, t in tallies.items():
        t.examples = examples.pool[fam]

    m_fams = manifest.families if manifest is not None else {}
    # families the dataset was made with, plus any other column that holds negatives
    families = [f for f in FAMILY_COLUMNS if f in m_fams or tallies[f].negatives]
    if not families:
        log.warning("%s holds no negatives in any family", dataset_dir)
    blind = blind_check.finish()
    learned = learned_check.finish() if learned_check is not None else None

    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "dataset": _dataset_section(dataset_dir, tally, manifest),
        "families": {
            f: {**family_section(tallies[f], tally.rows, m_fams.get(f) if manifest else None),
                "rules": rules_section(rule_sample, f, tallies[f].negatives)}
            for f in families
        },
    }
    if manifest is not None:
        report["skipped"] = dict(manifest.skipped)
    report["blind_check"] = _check_section(blind.to_json(), families)
    if learned is not None:
        report["learned_check"] = _check_section(learned.to_json(), families)

    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic((json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), out / REPORT_JSON)
    plots = write_plots(report, out, manifest is not None, tallies)
    md = render_markdown(report, tallies, blind, learned, plots, cfg, manifest)
    write_bytes_atomic(md.encode("utf-8"), out / REPORT_MD)
    log.info("wrote %s, %s and %d plots to %s", REPORT_JSON, REPORT_MD, len(plots), out)
    return report


def _require(module: str, what: str, alternative: str = "") -> None:
    """A clear error, before any work, when an optional dependency of the report is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise HardnegError(f"{what} needs {module}: pip install 'hardneg[report]'{alternative}")


def _manifest_or_none(dataset_dir: Path) -> Manifest | None:
    from pipeline.contract.manifest import load_manifest

    try:
        return load_manifest(dataset_dir)
    except HardnegError:
        log.warning("%s has no manifest.json: skip and reject reasons are left out of the report", dataset_dir)
        return None


def _read(dataset_dir: Path, tally: DatasetTally, row_consumers: list[Any]) -> None:
    """One pass over the shards, split by split in file order: batches to the tally, rows to the consumers."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from pipeline.contract.dataset import open_shards
    from pipeline.contract.schema import CAPTION, FAMILY_COLUMNS, GROUP, ID, PROVENANCE

    shards = open_shards(dataset_dir)
    total = sum(pq.ParquetFile(f).metadata.num_rows for files in shards.values() for f in files)
    cols = [ID, CAPTION, GROUP, *FAMILY_COLUMNS, PROVENANCE]
    with tqdm(total=total, desc="report", unit=" captions", disable=total < 5000) as bar:
        for split, files in shards.items():
            for f in files:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=cols):
                    tally.add(split, batch)
                    for row in _slim_provenance(batch).to_pylist():
                        for consume in row_consumers:
                            consume(row)
                    bar.update(batch.num_rows)


def _slim_provenance(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with its ``provenance`` entries cut to :data:`PROVENANCE_FIELDS` (a 1.0 shard has no
    ``plausibility``): converting the spans to Python lists, row by row, would cost more than the rest."""
    import pyarrow as pa

    from pipeline.contract.schema import PROVENANCE

    i = batch.schema.get_field_index(PROVENANCE)
    prov = batch.column(i)
    entries = prov.values
    children = dict(zip([f.name for f in entries.type], entries.flatten()))
    keep = [k for k in PROVENANCE_FIELDS if k in children]
    slim = pa.StructArray.from_arrays([children[k] for k in keep], names=keep)
    offsets = prov.offsets
    if prov.null_count and offsets.offset:  # from_arrays takes no null mask with sliced offsets
        offsets = pa.array(offsets.to_numpy(), offsets.type)
    lists = pa.ListArray.from_arrays(offsets, slim, mask=prov.is_null() if prov.null_count else None)
    return batch.set_column(i, PROVENANCE, lists)


def _dataset_section(dataset_dir: Path, tally: DatasetTally, manifest: Manifest | None) -> dict[str, Any]:
    rows = tally.rows
    dataset: dict[str, Any] = {
        "name": (manifest.name if manifest is not None else "") or dataset_dir.resolve().name,
        "rows": rows,
        "splits": dict(tally.splits),
        "groups": len(tally.groups),
        "mean_caption_words": round(tally.words / rows, 3) if rows else 0.0,
    }
    if manifest is not None:
        dataset["skipped_total"] = manifest.skipped_total
        if manifest.rows != rows:
            log.warning("the manifest lists %s rows but the shards hold %d", manifest.rows, rows)
    return dataset


def family_section(t: FamilyTally, rows: int, manifest_fam: FamilyCounts | None) -> dict[str, Any]:
    """A family's figures in ``report.json``; ``generated``/``rejected`` only with a manifest."""
    lc = t.length_change
    n_negs = sum(lc.values())
    out: dict[str, Any] = {
        "negatives": t.negatives,
        "captions_covered": t.covered,
        "coverage": round(t.covered / rows, 4) if rows else 0.0,
        "negatives_per_caption": round(t.negatives / rows, 4) if rows else 0.0,
        "candidates_per_caption": {str(k): n for k, n in sorted(t.per_caption.items())},
        "length_change": {
            "mean": round(sum(k * v for k, v in lc.items()) / n_negs, 4) if n_negs else 0.0,
            "min": min(lc) if lc else 0,
            "max": max(lc) if lc else 0,
            "unchanged_share": round(lc.get(0, 0) / n_negs, 4) if n_negs else 0.0,
        },
    }
    if manifest_fam is not None:
        out["generated"] = manifest_fam.generated
        out["rejected"] = dict(manifest_fam.rejected)
    return out


def rules_section(sample: RuleSample, family: str, negatives: int) -> dict[str, Any]:
    """A family's ``rules`` in ``report.json``: per rule (most negatives first) its negatives, its share
    of the family's ``negatives`` and, when sampled, its examples keyed ``"1"``, ``"2"``, ..."""
    out: dict[str, Any] = {}
    for rule, n, examples in sample.rules(family):
        entry: dict[str, Any] = {"negatives": n, "share": round(n / negatives, 4) if negatives else 0.0}
        if examples:
            entry["examples"] = {str(i): _example(ex) for i, ex in enumerate(examples, 1)}
        out[rule] = entry
    attributed = sum(v["negatives"] for v in out.values())
    if attributed != negatives:
        log.warning("%s: provenance names a rule for %d negatives, the column holds %d", family, attributed, negatives)
    return out


def _example(ex: RuleExample) -> dict[str, Any]:
    out: dict[str, Any] = {"positive": ex.positive, "negative": ex.negative}
    if ex.plausibility is not None:
        out["plausibility"] = round(ex.plausibility, 4)
    return out


def _check_section(figures: dict[str, Any], families: list[str]) -> dict[str, Any]:
    """A check's JSON: the report's families first (in order), then its settings."""
    from pipeline.contract.schema import FAMILY_COLUMNS

    return {**{f: figures[f] for f in families}, **{k: v for k, v in figures.items() if k not in FAMILY_COLUMNS}}
