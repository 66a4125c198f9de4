"""``hardneg generate``: read captions, parse, run the families, write shards and the manifest.

Work is cut into shards of whole image groups (so the same-image filter sees every caption of an
image). Each shard is an independent task: a worker process parses it with its own spaCy model,
writes it atomically and leaves a small stats file beside it. A rerun with the same config skips
finished shards; a run with a different config works in its own folder and replaces the old output
whole when it completes, so two configs never mix.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline import __version__, _compiled
from pipeline.config import GenerateConfig
from pipeline.contract.manifest import build_manifest
from pipeline.contract.schema import SCHEMA_VERSION, arrow_schema
from pipeline.contract.shards import shard_meta
from pipeline.core.atomic import write_json_atomic, write_table_atomic
from pipeline.core.config import config_hash
from pipeline.core.errors import ConfigError
from pipeline.nlp import load_nlp, model_info, model_version, parse, resolve_model
from pipeline.records import CaptionRecord, RejectCounts, Skip
from pipeline.rules.builder import ShardBuilder
from pipeline.rules.families import Resources, available_families
from pipeline.rules.filters import group_keys
from pipeline.rules.negatives import add_negatives
from pipeline.sources import fingerprint, iter_source, source_name

log = logging.getLogger(__name__)

STATE_FILE = "_hardneg_state.json"


@dataclass
class ShardTask:
    index: int
    split: str
    records: list[CaptionRecord]
    path: str
    meta: dict[str, Any]


@dataclass
class ShardStats:
    rows: int = 0
    candidates: dict[str, int] = field(default_factory=dict)  # kept negatives per family
    covered: dict[str, int] = field(default_factory=dict)  # captions with >= 1 negative per family
    generated: dict[str, int] = field(default_factory=dict)  # realised before filtering
    rejects: dict[str, dict[str, int]] = field(default_factory=dict)
    parse_seconds: float = 0.0
    spacy: dict[str, Any] = field(default_factory=dict)  # the model that parsed this shard


# --------------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}


def _init_worker(cfg: GenerateConfig, resources: Resources) -> None:
    # Parsing allocates many short-lived objects; with the default thresholds the cyclic GC
    # rescans the long-lived model over and over. Freeze what exists and collect less often
    # (no full collection first: with torch imported by thinc it costs 0.16 s per run).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    _WORKER["nlp"] = load_nlp(cfg.parse)
    _WORKER["model_info"] = model_info(_WORKER["nlp"])
    _WORKER["cfg"] = cfg
    _WORKER["resources"] = resources


def _run_shard(task: ShardTask) -> tuple[int, ShardStats, dict[str, Any]]:
    nlp, cfg, resources = _WORKER["nlp"], _WORKER["cfg"], _WORKER["resources"]
    captions: dict[str, list[str]] = {}
    for r in task.records:
        captions.setdefault(r.group, []).append(r.caption)
    groups = {g: group_keys(caps) for g, caps in captions.items()}
    stats = ShardStats(rows=len(task.records), spacy=_WORKER["model_info"])
    rejects = RejectCounts()
    builder = ShardBuilder()
    t0 = time.perf_counter()
    # Parse the whole shard first, then run the rules: interleaving Python rule work between the
    # parser's batches evicts the model from the CPU caches; measured back to back on 6,000 COCO
    # captions it cost 50-90 us a caption more. A shard's docs take a few MB.
    docs = list(parse(nlp, [r.caption for r in task.records], cfg.parse.batch_size))
    # The rules make only short-lived, acyclic objects (reference counting frees them); the cyclic
    # collector would scan them every 50,000 allocations for nothing. Off for the loop, on after.
    gc_on = gc.isenabled()
    if gc_on:
        gc.disable()
    try:
        stats.generated, stats.candidates, stats.covered = add_negatives(
            task.records, docs, groups, cfg.families, cfg.k, cfg.seed, resources, rejects, builder
        )
    finally:
        if gc_on:
            gc.enable()
    stats.parse_seconds = time.perf_counter() - t0
    stats.rejects = rejects.counts
    table = builder.to_table(arrow_schema(task.meta))
    info = write_table_atomic(table, task.path, cfg.row_group_size)
    write_json_atomic({"shard": info, "stats": stats.__dict__}, _stats_path(task.path))
    return task.index, stats, info


def _stats_path(shard_path: str | Path) -> Path:
    p = Path(shard_path)
    return p.with_name(f"_{p.stem}.stats.json")


# --------------------------------------------------------------------------- driver


def read_records(cfg: GenerateConfig) -> tuple[list[CaptionRecord], Counter, list[str]]:
    """All records of the source, the skipped rows counted by reason, and example skip locations."""
    records: list[CaptionRecord] = []
    skipped: Counter = Counter()
    examples: list[str] = []
    for item in tqdm(iter_source(cfg.source), desc="read", unit=" captions", mininterval=2, leave=False):
        if isinstance(item, Skip):
            reason, where = item.reason, item.where
        elif len(item.caption) > cfg.max_chars:
            reason, where = "too_long", item.id
        else:
            records.append(item)
            continue
        skipped[reason] += 1
        if len(examples) < 20:
            examples.append(f"{reason}: {where}")
        log.debug("skipped %s: %s", reason, where)
    return records, skipped, examples


def plan_shards(records: list[CaptionRecord], shard_size: int) -> list[tuple[str, list[CaptionRecord]]]:
    """Cut records into shards per split, never splitting one image's captions across shards."""
    by_split: dict[str, dict[str, list[CaptionRecord]]] = {}
    for r in records:
        by_split.setdefault(r.split, {}).setdefault(r.group, []).append(r)
    plan: list[tuple[str, list[CaptionRecord]]] = []
    for split in sorted(by_split):
        current: list[CaptionRecord] = []
        for group in by_split[split].values():  # first-appearance order of groups
            if current and len(current) + len(group) > shard_size:
                plan.append((split, current))
                current = []
            current.extend(group)
        if current:
            plan.append((split, current))
    return plan


def run_identity(cfg: GenerateConfig, input_fp: str, model: str) -> dict[str, Any]:
    """Everything that decides the shard contents; its hash names the run."""
    identity = {
        "config": cfg.data_dict(),
        "schema_version": SCHEMA_VERSION,
        "hardneg_version": __version__,
        "input_fingerprint": input_fp,
        "spacy_model": model,
        "spacy_model_version": model_version(model),
    }
    if cfg.use_wordnet and any(f.endswith("_replace") for f in cfg.families):
        from pipeline.lexicon import wordnet_available

        # installing or removing WordNet changes the replace families' output
        identity["wordnet"] = wordnet_available()
    return identity


def generate(cfg: GenerateConfig) -> dict[str, Any]:
    """Run stage 1 and return the manifest (also written to ``manifests/<name>.json``)."""
    cfg.validate()
    missing = [f for f in cfg.families if f not in available_families()]
    if missing:
        raise ConfigError(f"families {missing} are not implemented yet; available: {available_families()}")
    t_start = time.perf_counter()
    model = resolve_model(cfg.parse)
    input_fp = fingerprint(cfg.source)
    identity = run_identity(cfg, input_fp, model)
    run_hash = config_hash(identity)
    out = Path(cfg.out)
    mpath = manifest_path(cfg)

    state = _read_state(out)
    current = _current_manifest(out, state, run_hash)
    if current is not None:
        log.info("%s is up to date (config %s); nothing to do", out, run_hash[:12])
        if _read_json(mpath).get("config_hash") != run_hash or current.get("output_dir") != str(cfg.out):
            current["output_dir"] = str(cfg.out)
            write_json_atomic(current, mpath)  # manifests/<name>.json went stale or missing
        return current
    _check_source_outside(cfg, out)

    t0 = time.perf_counter()
    records, skipped, skip_examples = read_records(cfg)
    read_seconds = time.perf_counter() - t0
    log.info("read %d captions (%d skipped: %s)", len(records), sum(skipped.values()), dict(skipped))

    work = out / f".partial-{run_hash[:12]}"
    plan = plan_shards(records, cfg.shard_size)
    _check_foreign_splits(out, {split for split, _ in plan}, state)
    resources = build_resources(cfg, records)
    meta = {"config_hash": run_hash, "families": list(cfg.families), "hardneg_version": __version__}
    tasks = []
    done: dict[int, tuple[ShardStats, dict[str, Any]]] = {}
    counts_per_split: Counter = Counter(split for split, _ in plan)
    index_in_split: Counter = Counter()
    for i, (split, recs) in enumerate(plan):
        j = index_in_split[split]
        index_in_split[split] += 1
        path = work / split / f"part-{j:05d}-of-{counts_per_split[split]:05d}.parquet"
        finished = _finished_shard(path, run_hash)
        if finished is not None:
            done[i] = finished
            continue
        tasks.append(ShardTask(i, split, recs, str(path), meta))
    if done:
        log.info("resuming: %d of %d shards already written", len(done), len(plan))

    log.info("rule modules: %s", _compiled.status()["reason"])
    t1 = time.perf_counter()
    _run_tasks(cfg, resources, tasks, done)
    generate_seconds = time.perf_counter() - t1

    shards = _publish(out, work, plan, done, run_hash, state)
    manifest = build_manifest(
        cfg=cfg,
        identity=identity,
        run_hash=run_hash,
        model_name=model,
        shards=shards,
        stats=[done[i][0] for i in range(len(plan))],
        skipped=dict(skipped),
        skip_examples=skip_examples,
        source=source_name(cfg.source),
        timings={
            "read_seconds": round(read_seconds, 3),
            "generate_seconds": round(generate_seconds, 3),
            "total_seconds": round(time.perf_counter() - t_start, 3),
            "shards_resumed": len(plan) - len(tasks),
        },
        spacy=next((st.spacy for st, _ in done.values() if st.spacy), {"name": model, "version": model_version(model)}),
        rules_compiled=bool(_compiled.status()["compiled"]),
    )
    write_json_atomic(manifest, out / "manifest.json")
    write_json_atomic(manifest, mpath)  # written last: its presence means the run completed
    return manifest


def build_resources(cfg: GenerateConfig, records: list[CaptionRecord]) -> Resources:
    """Shared read-only data for families that need it (the replace families' lexicons)."""
    needs = [f for f in cfg.families if f.endswith("_replace")]
    if not needs:
        return Resources()
    from pipeline.rules.families.replace import build_resources as build_replace

    return build_replace(cfg, [r.caption for r in records])


def _run_tasks(
    cfg: GenerateConfig,
    resources: Resources,
    tasks: list[ShardTask],
    done: dict[int, tuple[ShardStats, dict[str, Any]]],
) -> None:
    if not tasks:
        return
    total = sum(len(t.records) for t in tasks)
    bar = tqdm(total=total, desc="generate", unit=" captions", smoothing=0.1)
    try:
        if cfg.workers == 1:
            thresholds = gc.get_threshold()
            _init_worker(cfg, resources)
            try:
                for task in tasks:
                    i, stats, info = _run_shard(task)
                    done[i] = (stats, info)
                    bar.update(stats.rows)
            finally:  # leave the caller's process as it was (GC settings, no model held)
                _WORKER.clear()
                gc.unfreeze()
                gc.set_threshold(*thresholds)
        else:
            # an executor, not multiprocessing.Pool: a worker that dies (killed, or a task it cannot
            # unpickle) raises BrokenProcessPool here instead of leaving the run waiting forever
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg, resources))
            try:
                futures = [pool.submit(_run_shard, task) for task in tasks]
                for fut in as_completed(futures):
                    i, stats, info = fut.result()
                    done[i] = (stats, info)
                    bar.update(stats.rows)
            finally:  # on an error, shards not yet started are dropped (a rerun resumes them)
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def _finished_shard(path: Path, run_hash: str) -> tuple[ShardStats, dict[str, Any]] | None:
    """Stats of a shard that a previous run of the same config completed, or None."""
    sp = _stats_path(path)
    if not (path.exists() and sp.exists()):
        return None
    try:
        if shard_meta(path).get("config_hash") != run_hash:
            return None
        data = json.loads(sp.read_text(encoding="utf-8"))
        from pipeline.core.atomic import sha256_file

        if data["shard"]["sha256"] != sha256_file(path):
            return None
        return ShardStats(**data["stats"]), data["shard"]
    except Exception:  # unreadable leftovers are simply redone
        log.warning("redoing unreadable shard %s", path)
        return None


def _publish(
    out: Path,
    work: Path,
    plan: list[tuple[str, list[CaptionRecord]]],
    done: dict[int, tuple[ShardStats, dict[str, Any]]],
    run_hash: str,
    state: dict[str, Any],
) -> list[dict[str, Any]]:
    """Move the finished shards from the work folder into ``out``, replacing an older output.

    Only split folders that an earlier run recorded in the state file are replaced (moved aside
    first, deleted last); folders hardneg did not write are never touched.
    """
    out.mkdir(parents=True, exist_ok=True)
    splits = sorted({split for split, _ in plan})
    old_dir = work / ".replaced"
    for old in sorted(_state_splits(state)):
        if (out / old).is_dir():
            old_dir.mkdir(parents=True, exist_ok=True)
            os.replace(out / old, old_dir / old)
    for split in splits:
        dest = out / split
        dest.mkdir(parents=True, exist_ok=True)
        for f in (work / split).glob("*.parquet"):
            os.replace(f, dest / f.name)
    index_in_split: Counter = Counter()
    shards = []
    for i, (split, _) in enumerate(plan):
        info = done[i][1]
        j = index_in_split[split]
        index_in_split[split] += 1
        n = sum(1 for s, _ in plan if s == split)
        shards.append(
            {
                "path": f"{split}/part-{j:05d}-of-{n:05d}.parquet",
                "split": split,
                **info,
            }
        )
    write_json_atomic({"config_hash": run_hash, "shards": shards}, out / STATE_FILE)
    shutil.rmtree(work, ignore_errors=True)
    for stale in out.glob(".partial-*"):  # unfinished runs of other configs
        shutil.rmtree(stale, ignore_errors=True)
    return shards


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _read_state(out: Path) -> dict[str, Any]:
    return _read_json(out / STATE_FILE)


def _state_splits(state: dict[str, Any]) -> set[str]:
    return {s["split"] for s in state.get("shards", [])}


def _current_manifest(out: Path, state: dict[str, Any], run_hash: str) -> dict[str, Any] | None:
    """The manifest of a completed run of this very config in ``out``, or None."""
    if state.get("config_hash") != run_hash or not _outputs_intact(out, state):
        return None
    manifest = _read_json(out / "manifest.json")
    return manifest if manifest.get("config_hash") == run_hash else None


def _check_source_outside(cfg: GenerateConfig, out: Path) -> None:
    """Refuse an output folder that holds the input: replacing outputs must never touch it."""
    src = Path(cfg.source.path)
    if not src.exists():
        return
    src, dest = src.resolve(), out.resolve()
    if src == dest or dest in src.parents:
        raise ConfigError(f"output folder {out} contains the input {cfg.source.path}; choose another --out")


def _check_foreign_splits(out: Path, splits: set[str], state: dict[str, Any]) -> None:
    """Refuse to replace split folders that no earlier hardneg run recorded as its own."""
    ours = _state_splits(state)
    foreign = sorted(s for s in splits if (out / s).exists() and s not in ours)
    if foreign:
        raise ConfigError(
            f"{out} already has {', '.join(foreign)} folder(s) that hardneg did not write "
            f"(no record in {STATE_FILE}); choose another --out or remove them"
        )


def _outputs_intact(out: Path, state: dict[str, Any]) -> bool:
    for s in state.get("shards", []):
        p = out / s["path"]
        if not p.exists() or p.stat().st_size != s["bytes"]:
            return False
    return bool(state.get("shards"))


def manifest_path(cfg: GenerateConfig) -> Path:
    return Path(cfg.manifest_dir) / f"{cfg.name}.json"
