"""``hardneg parse``: parse a source's captions once, into a parse store (``pipeline/parsestore.py``).

The source is read in order and cut into parts of ``part_size`` captions; each part is parsed (by
``workers`` processes, each loading the spaCy pipeline once) and written atomically to the work
folder ``<out>/.partial-<key>`` with a small stats file beside it. A rerun of the same key skips
the parts that are finished; when every part is written, the index and then ``store.json`` are
published into ``<out>``, replacing an older store there whole (``store.json`` goes first and comes
back last, so a reader never takes a half-replaced store for a complete one).

Invariants:

- The store holds every caption the source yields (skipped rows are counted by reason), in source
  order, parsed exactly as ``hardneg generate`` parses them (:func:`pipeline.nlp.parse` with the
  same ``parse`` settings, read out with :func:`pipeline.rules.syntax.tokens_of`).
- A store is complete only when ``store.json`` exists; ``hardneg generate --parsed`` refuses any
  other folder, and any store whose key differs from the run's.
- ``<out>`` holds nothing but a store: a folder with other files is refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.config import ParseConfig, ParseStoreConfig
from pipeline.core.atomic import sha256_file, write_json_atomic
from pipeline.core.errors import ConfigError
from pipeline.nlp import load_nlp, model_info, parse, resolve_model
from pipeline.parsestore import (
    INDEX_FILE,
    STORE_FILE,
    id_hash,
    key_hash,
    parse_key,
    part_name,
    part_table,
    read_store_manifest,
    write_index,
    write_part,
)
from pipeline.records import CaptionRecord
from pipeline.rules.syntax import tokens_of
from pipeline.sources import fingerprint, iter_source, source_name

log = logging.getLogger(__name__)


@dataclass
class PartTask:
    index: int
    ids: list[str]
    captions: list[str]
    path: str
    digest: str


@dataclass
class _ParseWorker:
    """A worker process's state: the spaCy pipeline, loaded once, and its settings."""

    nlp: Any
    info: dict[str, Any]
    batch_size: int


_STATE: list[_ParseWorker] = []


def _init_worker(parse_cfg: ParseConfig) -> None:
    gc.freeze()  # the model: out of every later collection's way (see pipeline.generate)
    gc.set_threshold(50_000, 20, 20)
    nlp = load_nlp(parse_cfg)
    _STATE[:] = [_ParseWorker(nlp, model_info(nlp), parse_cfg.batch_size)]


def _parse_part(task: PartTask) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Parse one part and write it (and its stats file) atomically."""
    w = _STATE[0]
    tables = [tokens_of(doc) for doc in parse(w.nlp, task.captions, w.batch_size)]
    info = write_part(part_table(task.ids, task.captions, tables), task.path)
    write_json_atomic({"part": info, "digest": task.digest}, _stats_path(task.path))
    return task.index, info, w.info


def _stats_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(f"_{p.stem}.json")


def _digest(ids: list[str], captions: list[str]) -> str:
    h = hashlib.sha256()
    for rid, cap in zip(ids, captions):
        h.update(rid.encode("utf-8", "surrogatepass") + b"\0" + cap.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def _finished(task: PartTask) -> dict[str, Any] | None:
    """The stats of a part an earlier run of the same key wrote for these very captions, or None."""
    try:
        data = json.loads(_stats_path(task.path).read_text(encoding="utf-8"))
        if data["digest"] == task.digest and data["part"]["sha256"] == sha256_file(task.path):
            return data["part"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _store_files(out: Path) -> bool:
    """Whether every entry of ``out`` is one a store (or a store being built) has."""
    for p in out.iterdir():
        n = p.name
        if not (n in (STORE_FILE, INDEX_FILE) or n.startswith(".partial-") or (n.startswith("part-") and n.endswith(".arrow"))):
            return False
    return True


def _current(out: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a complete store of this key in ``out``, or None."""
    if not (out / STORE_FILE).exists():
        return None
    try:
        m = read_store_manifest(out)
    except Exception:
        return None
    if m.get("key") != key:
        return None
    for part in m.get("parts", []):
        p = out / part["path"]
        if not p.exists() or p.stat().st_size != part["bytes"]:
            return None
    return m if (out / INDEX_FILE).exists() else None


def _tasks(cfg: ParseStoreConfig, work: Path, skipped: Counter, hashes: array) -> Iterator[PartTask]:
    """The parts, cut from the source as it streams by; every kept id's hash goes to ``hashes``."""
    ids: list[str] = []
    caps: list[str] = []
    index = 0
    for item in iter_source(cfg.source, stream_json=True, unique_ids=False):
        if not isinstance(item, CaptionRecord):
            skipped[item.reason] += 1
            continue
        ids.append(item.id)
        caps.append(item.caption)
        hashes.append(id_hash(item.id))
        if len(ids) == cfg.part_size:
            yield PartTask(index, ids, caps, str(work / part_name(index)), _digest(ids, caps))
            ids, caps, index = [], [], index + 1
    if ids:
        yield PartTask(index, ids, caps, str(work / part_name(index)), _digest(ids, caps))


def build_store(cfg: ParseStoreConfig) -> dict[str, Any]:
    """Parse ``cfg.source`` into the store ``cfg.out``; returns the store's manifest (a complete
    store of the same key is left as it is)."""
    cfg.validate()
    t_start = time.perf_counter()
    model = resolve_model(cfg.parse)
    key = parse_key(fingerprint(cfg.source), model, cfg.parse)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out {out} is a file; the parse store is a folder")
    if out.is_dir() and not _store_files(out):
        raise ConfigError(f"{out} holds files that are not a parse store's; choose another out or empty it")
    current = _current(out, key)
    if current is not None:
        log.info("parse store %s is up to date (%d captions); nothing to do", out, current["captions"])
        return current
    work = out / f".partial-{key_hash(key)[:12]}"
    work.mkdir(parents=True, exist_ok=True)

    skipped: Counter = Counter()
    hashes: array = array("Q")
    parts: dict[int, dict[str, Any]] = {}
    info: dict[str, Any] = {}
    resumed = 0
    bar = tqdm(desc="parse", unit=" captions", smoothing=0.1)

    def collect(result: tuple[int, dict[str, Any], dict[str, Any]]) -> None:
        i, part, minfo = result
        parts[i] = part
        info.update(minfo)
        bar.update(part["rows"])

    def todo() -> Iterator[PartTask]:
        nonlocal resumed
        for task in _tasks(cfg, work, skipped, hashes):
            done = _finished(task)
            if done is None:
                yield task
            else:
                parts[task.index] = done
                resumed += 1
                bar.update(done["rows"])

    t1 = time.perf_counter()
    try:
        with _pool(cfg) as pool:
            if pool is None:
                tasks = todo()
                first = next(tasks, None)
                if first is not None:  # the model is loaded only when a part needs parsing
                    _init_worker(cfg.parse)
                    collect(_parse_part(first))
                    for task in tasks:
                        collect(_parse_part(task))
            else:
                _submit_bounded(pool, todo(), 2 * cfg.workers, collect)
    finally:
        bar.close()
        _STATE.clear()
    parse_seconds = time.perf_counter() - t1
    if resumed:
        log.info("resumed: %d of %d parts were already parsed", resumed, len(parts))
    if not info:  # every part resumed: the pipeline's description without parsing
        nlp = load_nlp(cfg.parse)
        info = model_info(nlp)

    write_index(np.frombuffer(hashes, dtype=np.uint64), work / INDEX_FILE)
    manifest = {
        "key": key,
        "key_hash": key_hash(key),
        "source": source_name(cfg.source),
        "source_path": cfg.source.path,
        "model_info": info,
        "part_size": cfg.part_size,
        "captions": len(hashes),
        "skipped": dict(skipped),
        "parts": [{"path": part_name(i), **parts[i]} for i in range(len(parts))],
        "timings": {"parse_seconds": round(parse_seconds, 3), "total_seconds": round(time.perf_counter() - t_start, 3),
                    "parts_resumed": resumed, "workers": cfg.workers},
    }
    _publish(out, work, manifest)
    log.info("parse store %s: %d captions in %d parts (%d skipped)", out, len(hashes), len(parts), sum(skipped.values()))
    return manifest


def _publish(out: Path, work: Path, manifest: dict[str, Any]) -> None:
    """Replace the store in ``out`` by the one in ``work``: ``store.json`` removed first, the parts
    and index moved in, ``store.json`` written last."""
    (out / STORE_FILE).unlink(missing_ok=True)
    for old in out.glob("part-*.arrow"):
        old.unlink()
    for part in manifest["parts"]:
        os.replace(work / part["path"], out / part["path"])
    os.replace(work / INDEX_FILE, out / INDEX_FILE)
    write_json_atomic(manifest, out / STORE_FILE)
    for stale in out.glob(".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _pool(cfg: ParseStoreConfig) -> Iterator[ProcessPoolExecutor | None]:
    """``cfg.workers`` processes that load spaCy once each (None for one worker: this process)."""
    if cfg.workers == 1:
        yield None
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg.parse,))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _submit_bounded(pool: ProcessPoolExecutor, tasks: Iterator[PartTask], limit: int, collect: Any) -> None:
    pending: set[Future] = set()
    for task in tasks:
        pending.add(pool.submit(_parse_part, task))
        if len(pending) >= limit:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                collect(fut.result())
    for fut in pending:
        collect(fut.result())
