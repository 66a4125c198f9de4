"""``hardneg generate``: read captions, parse, run the families, write shards and the manifest.

Work is cut into shards of whole image groups (so the same-image filter sees every caption of an
image). Each shard is an independent task: a worker process parses it with its own spaCy model,
writes it atomically and leaves a small stats file beside it. A rerun with the same config skips
finished shards; a run with a different config works in its own folder and replaces the old output
whole when it completes, so two configs never mix.

The corpus pass (plausibility scores, ``pipeline/rules/plausibility.py``) runs first: the same
workers parse the captions of a bounded, seeded sample (the ``plausibility.sample_captions``
records with the smallest seeded hash of their id: every record when there are no more), keep
their token tables in the work folder and count their dependency pairs; the counts are compiled
once, and the negatives pass reuses those token tables instead of parsing the captions again. So no
caption is parsed twice by either engine (the ray engine runs the same count tasks on its actors).

A process pool's workers start before the source is read: they are forked from a parent that holds
nothing of the input yet, so their memory does not grow with the input (the ray engine's actors are
fresh processes, started after its statistics pass). The run's resources reach them as one pickle
in the work folder (:data:`RESOURCES_FILE`), loaded once per worker; the driver holds at most
``workers x stream.in_flight`` tasks at a time and frees the counts and pair tables once that file
is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import gc
import json
import logging
import marshal
import multiprocessing as mp
import os
import pickle
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline import __version__, _compiled
from pipeline.config import GenerateConfig
from pipeline.contract.manifest import Manifest, build_manifest, read_manifest
from pipeline.contract.schema import SCHEMA_VERSION, arrow_schema
from pipeline.contract.shards import shard_meta
from pipeline.core.atomic import write_bytes_atomic, write_json_atomic, write_table_atomic
from pipeline.core.config import config_hash
from pipeline.core.errors import ConfigError, HardnegError
from pipeline.engines.common import ALL, BottomK, record_key, sample_hash
from pipeline.engines.streaming import SampleRecords, ShardStream, scan_source
from pipeline.nlp import load_nlp, model_info, model_version, parse, resolve_model
from pipeline.records import CaptionRecord, RejectCounts
from pipeline.rules.builder import ShardBuilder
from pipeline.rules.families import ParsedCaption, Resources, available_families
from pipeline.rules.filters import group_keys
from pipeline.rules.negatives import add_negatives
from pipeline.rules.plausibility import compile_pair_tables, dep_pairs, lemma_of, pair_key
from pipeline.rules.syntax import Tok, tokens_of
from pipeline.sources import fingerprint, source_name

log = logging.getLogger(__name__)

STATE_FILE = "_hardneg_state.json"
_new_tok = tuple.__new__


@dataclass
class ShardTask:
    index: int
    split: str
    records: list[CaptionRecord]
    path: str
    meta: dict[str, Any]
    #: the token tables the corpus pass kept for this shard's sampled captions (None: parse all)
    corpus: str | None = None
    #: the run's resources (with the corpus pass's pair tables) pickled in the work folder, loaded
    #: once per worker process or actor (None: the resources the worker was started with)
    resources: str | None = None


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


def _init_worker(cfg: GenerateConfig, resources: Resources | None = None) -> None:
    """Load the spaCy pipeline once per worker. A pool's workers start before the run has read its
    source (so they are forked from a small parent, and load the model while it reads); they then
    get ``resources`` from the file their first task names."""
    # Parsing allocates many short-lived objects; with the default thresholds the cyclic GC
    # rescans the long-lived model over and over. Freeze what exists and collect less often
    # (no full collection first: with torch imported by thinc it is costly; docs/benchmarks.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if cfg.parsed:  # the parses come from the store: no spaCy pipeline to load
        from pipeline.parsestore import ParseStore

        store = ParseStore(cfg.parsed)
        _WORKER["store"], _WORKER["nlp"], _WORKER["model_info"] = store, None, store.model_info
    else:
        _WORKER["nlp"] = load_nlp(cfg.parse)
        _WORKER["model_info"] = model_info(_WORKER["nlp"])
    _WORKER["cfg"] = cfg
    _WORKER["resources"] = resources if resources is not None else Resources()


def _ready() -> None:
    """A no-op task: submitting it makes a pool fork its workers now."""


def _run_shard(task: ShardTask) -> tuple[int, ShardStats, dict[str, Any]]:
    """Parse (or reuse the corpus pass's parses of) one shard, run the families, write it."""
    try:
        return _write_shard(task)
    finally:
        _release_freed_memory()


def _release_freed_memory() -> None:
    """Hand the heap pages a task freed back to the OS. glibc keeps them otherwise, and a worker's
    resident size creeps up shard after shard (figures in docs/benchmarks.md)."""
    trim = _WORKER.get("malloc_trim")
    if trim is None:
        try:
            trim = ctypes.CDLL(None).malloc_trim  # glibc only
        except (OSError, AttributeError):
            trim = False
        _WORKER["malloc_trim"] = trim
    if trim:
        trim(0)


def _write_shard(task: ShardTask) -> tuple[int, ShardStats, dict[str, Any]]:
    nlp, cfg, resources = _WORKER["nlp"], _WORKER["cfg"], _worker_resources(task)
    captions: dict[str, list[str]] = {}
    for r in task.records:
        captions.setdefault(r.group, []).append(r.caption)
    groups = {g: group_keys(caps) for g, caps in captions.items()}
    stats = ShardStats(rows=len(task.records), spacy=_WORKER["model_info"])
    rejects = RejectCounts()
    builder = ShardBuilder()
    t0 = time.perf_counter()
    # Parse the whole shard first, then run the rules: interleaving Python rule work between the
    # parser's batches evicts the model from the CPU caches (docs/benchmarks.md). A shard's docs
    # take a few MB.
    docs = _shard_docs(nlp, cfg, task)
    sampled = _sampled_ids(task.records, cfg.seed, resources.data.get("sample_threshold"))
    # The rules make only short-lived, acyclic objects (reference counting frees them); the cyclic
    # collector would scan them every 50,000 allocations for nothing. Off for the loop, on after.
    gc_on = gc.isenabled()
    if gc_on:
        gc.disable()
    try:
        stats.generated, stats.candidates, stats.covered = add_negatives(
            task.records, docs, groups, cfg.families, cfg.k, cfg.seed, resources, rejects, builder, sampled
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


# --------------------------------------------------------------------------- the corpus pass

#: folder of the corpus pass inside the run's work folder (deleted with it when the run completes)
CORPUS_DIR = ".corpus"
#: the run's resources, pickled in the work folder for the worker processes and actors
RESOURCES_FILE = "resources.pkl"


def write_resources(resources: Resources, work: Path) -> str:
    """Pickle the run's resources into the work folder, where every worker process and actor loads
    them (once each) from; returns the file's path."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / RESOURCES_FILE
    write_bytes_atomic(pickle.dumps(resources.data, protocol=pickle.HIGHEST_PROTOCOL), path)
    return str(path)


def _sampled_ids(records: list[CaptionRecord], seed: int, threshold: int | None) -> frozenset[str]:
    """Ids of the records in the corpus sample (the smallest seeded hashes, ``threshold`` included)."""
    if threshold is None:
        return frozenset()
    if threshold == ALL:
        return frozenset(r.id for r in records)
    return frozenset(r.id for r in records if sample_hash(record_key(r.id, seed)) <= threshold)


def _worker_resources(task: ShardTask) -> Resources:
    """The worker's resources: those of the file the task names, loaded once (a pool's workers
    start before the run has built its resources, and neither they nor the actors can have the
    corpus pass's tables before it has counted)."""
    if task.resources and _WORKER.get("resources_file") != task.resources:
        with open(task.resources, "rb") as f:
            _WORKER["resources"] = Resources(pickle.load(f))
        _WORKER["resources_file"] = task.resources
    return _WORKER["resources"]


def _shard_docs(nlp: Any, cfg: GenerateConfig, task: ShardTask) -> list[Any]:
    """Parses of a shard's captions: those the corpus pass kept (in this process, or as token
    tables in the work folder), the rest parsed now."""
    kept: dict[str, ParsedCaption] = _WORKER.get("kept", {}).pop(task.index, {})
    if not kept and task.corpus and os.path.exists(task.corpus):
        with open(task.corpus, "rb") as f:
            for rid, text, toks, children in marshal.load(f):
                kept[rid] = ParsedCaption.from_tokens(text, tuple([_new_tok(Tok, t) for t in toks]), children)
    todo = [r for r in task.records if r.id not in kept]
    parsed = iter(_parses(nlp, cfg, todo) if todo else [])
    return [kept[r.id] if r.id in kept else next(parsed) for r in task.records]


def _parses(nlp: Any, cfg: GenerateConfig, records: list[CaptionRecord]) -> list[Any]:
    """The records' parses: spaCy docs parsed now, or the parse store's views of them."""
    store = _WORKER.get("store")
    if store is None:
        return list(parse(nlp, [r.caption for r in records], cfg.parse.batch_size))
    tables = store.tables([r.id for r in records], [r.caption for r in records])
    return [ParsedCaption.from_tokens(r.caption, toks, children) for r, (toks, children) in zip(records, tables)]


def _token_tables(nlp: Any, cfg: GenerateConfig, records: list[CaptionRecord]) -> list[Any]:
    """The records' token tables and children, parsed now or read from the parse store."""
    store = _WORKER.get("store")
    if store is None:
        return [tokens_of(doc) for doc in parse(nlp, [r.caption for r in records], cfg.parse.batch_size)]
    return store.tables([r.id for r in records], [r.caption for r in records])


def _count_shard(task: ShardTask) -> tuple[int, dict[tuple[str, str, str], int], list[str]]:
    """Worker side of the corpus pass: parse one shard's sampled captions, keep their token tables
    (``task.corpus``) and count their dependency pairs; also returns the sample's nouns (for the
    WordNet classes of nouns the curated classes miss)."""
    try:
        return _count_sample(task)
    finally:
        _release_freed_memory()


def _count_sample(task: ShardTask) -> tuple[int, dict[tuple[str, str, str], int], list[str]]:
    nlp, cfg = _WORKER["nlp"], _WORKER["cfg"]
    counts: Counter = Counter()
    nouns: set[str] = set()
    in_process = "kept" in _WORKER  # one worker: the views stay in memory for the negatives pass
    from_store = "store" in _WORKER  # the negatives pass reads the store too: nothing to keep on disk
    kept: dict[str, ParsedCaption] = {}
    rows: list[Any] = []
    tables = _token_tables(nlp, cfg, task.records)
    # the views are acyclic and kept until their shard is written: the cyclic collector would
    # rescan them over and over for nothing (see _run_shard)
    gc_on = gc.isenabled()
    if gc_on:
        gc.disable()
    try:
        _count_docs(task, tables, in_process, kept, rows, counts, nouns)
    finally:
        if gc_on:
            gc.enable()
    if in_process:
        _WORKER["kept"][task.index] = kept
        gc.freeze()  # out of every later collection's way; freed as usual once popped
    elif not from_store:
        assert task.corpus is not None
        Path(task.corpus).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(marshal.dumps(rows), task.corpus)
    return task.index, dict(counts), sorted(nouns)


def _count_docs(
    task: ShardTask, tables: list[Any], in_process: bool, kept: dict[str, ParsedCaption], rows: list[Any],
    counts: Counter, nouns: set[str],
) -> None:
    keep_rows = not in_process and "store" not in _WORKER
    for r, (toks, children) in zip(task.records, tables):
        if in_process:
            p = ParsedCaption.from_tokens(r.caption, toks, children)
            kept[r.id] = p
            lemmas, deps = p.lemmas, p.deps
        else:
            lemmas = tuple([lemma_of(t) for t in toks])
            deps = dep_pairs(toks, children)
            if keep_rows:
                rows.append((r.id, r.caption, [tuple(t) for t in toks], children))
        _tally(toks, lemmas, deps, counts, nouns)


def _tally(toks: tuple[Tok, ...], lemmas: tuple[str, ...], deps: Iterable[Any], counts: Counter,
           nouns: set[str]) -> None:
    """Add one parsed caption to the corpus pass's counts: its dependency pairs, and its nouns."""
    counts.update([pair_key(d, lemmas) for d in deps])
    nouns.update(lemmas[t.i] for t in toks if t.pos == "NOUN")


def _tally_tokens(toks: tuple[Tok, ...], children: Any, counts: Counter, nouns: set[str]) -> None:
    """:func:`_tally` from a caption's token table alone."""
    _tally(toks, tuple([lemma_of(t) for t in toks]), dep_pairs(toks, children), counts, nouns)


@dataclass(frozen=True)
class CorpusPlan:
    """Which captions of a shard the corpus pass parses, and where it keeps their token tables:
    all a task needs of the corpus pass (small and picklable, for a Ray read task)."""

    folder: str
    seed: int
    threshold: int

    def path(self, index: int) -> str:
        return str(Path(self.folder) / f"part-{index:05d}.marshal")

    def tasks(self, shards: Iterable[tuple[int, str, list[CaptionRecord]]]) -> Iterator[ShardTask]:
        """One counting task per shard with sampled captions."""
        for i, split, recs in shards:
            ids = _sampled_ids(recs, self.seed, self.threshold)
            sample = [r for r in recs if r.id in ids]
            if sample:
                yield ShardTask(i, split, sample, "", {}, corpus=self.path(i))


def recount_kept(task: ShardTask) -> tuple[int, dict[tuple[str, str, str], int], list[str]] | None:
    """A count task's result from the token tables an earlier (interrupted) run kept, without
    parsing; None when there are none, or they are not this task's captions."""
    assert task.corpus is not None
    try:
        with open(task.corpus, "rb") as f:
            rows = marshal.load(f)
    except (OSError, ValueError, EOFError):
        return None
    if [r[0] for r in rows] != [r.id for r in task.records]:
        return None
    counts: Counter = Counter()
    nouns: set[str] = set()
    for _, _, toks, children in rows:
        _tally_tokens(tuple([_new_tok(Tok, t) for t in toks]), children, counts, nouns)
    return task.index, dict(counts), sorted(nouns)


class CorpusPass:
    """Plans the corpus pass, gathers the workers' counts and compiles the pair tables.

    The sample is the ``sample_captions`` records with the smallest seeded hash of their id
    (:mod:`pipeline.engines.common`), so it does not depend on sharding, worker count or engine;
    the counts are summed, so their order does not matter either.
    """

    def __init__(self, cfg: GenerateConfig, work: Path, threshold: int, resources: Resources,
                 in_process: bool = False) -> None:
        self.cfg, self.threshold, self.resources, self.work = cfg, threshold, resources, work
        #: the negatives pass runs in this process (one worker): the tables stay in ``resources``;
        #: otherwise they go to the workers through :data:`RESOURCES_FILE` and leave this process
        self.in_process = in_process
        self.plan = CorpusPlan(str(work / CORPUS_DIR), cfg.seed, threshold)
        self.counts: Counter = Counter()
        self.nouns: set[str] = set()
        self.captions = 0
        self.distinct_pairs = 0
        self.resources_path: str | None = None

    def tasks(self, shards: Iterable[tuple[int, str, list[CaptionRecord]]]) -> Iterator[ShardTask]:
        """One counting task per shard with sampled captions (kept token tables are reused: a
        resumed run recounts them without parsing)."""
        return self.plan.tasks(shards)

    def recount(self, task: ShardTask) -> bool:
        """Count a shard whose token tables an earlier (interrupted) run kept; False if there are none."""
        result = recount_kept(task)
        if result is None:
            return False
        self.add(*result, len(task.records))
        return True

    def add(self, index: int, counts: dict[tuple[str, str, str], int], nouns: list[str], n: int) -> None:
        self.counts.update(counts)
        self.nouns.update(nouns)
        self.captions += n

    def finish(self) -> None:
        """Compile the pair tables (with the run's semantic classes) and hand them to the workers
        (the resources file); the counts are freed, and so are the tables unless ``in_process``."""
        self.resources.data.update(pair_tables(self.cfg, self.resources, self.counts, self.captions, self.nouns))
        self.distinct_pairs = len(self.counts)
        log.info("corpus pass: %d dependency pairs (%d distinct) counted on %d captions",
                 sum(self.counts.values()), self.distinct_pairs, self.captions)
        self.counts, self.nouns = Counter(), set()
        if not self.in_process:
            self.resources_path = write_resources(self.resources, self.work)
            del self.resources.data["plausibility"]


def pair_tables(
    cfg: GenerateConfig, resources: Resources, counts: Counter, captions: int, nouns: Iterable[str]
) -> dict[str, Any]:
    """What the negatives pass needs of the corpus pass: the compiled pair tables, the swap rules'
    classes (extended with WordNet's for nouns the curated classes miss, when installed), floors."""
    from pipeline.lexicon import extend_semantics_with_wordnet, wordnet_available
    from pipeline.rules.families.swap import swap_tables

    sw = resources.data.get("swap") or swap_tables()
    sem = sw.sem
    if cfg.use_wordnet and wordnet_available():
        try:
            sem = extend_semantics_with_wordnet(sem, nouns)
        except Exception as e:  # damaged WordNet data must not stop a run: the curated classes suffice
            log.warning("WordNet classes failed (%s: %s); using the curated classes only", type(e).__name__, e)
    return {
        "swap": sw._replace(sem=sem),
        "plausibility": compile_pair_tables(counts, captions, sem.noun_class, sem.modifier_type),
    }


def sample_threshold(cfg: GenerateConfig, scan: Any, sample: Iterable[CaptionRecord]) -> int:
    """The seeded-hash threshold of the corpus sample, the ``plausibility.sample_captions`` smallest
    hashes of the statistics sample (``scan``; all of it when it is no larger)."""
    size = cfg.plausibility.sample_captions
    if scan.sample_size <= size:
        return int(scan.sample_threshold)
    bottom = BottomK(size)
    for r in sample:
        bottom.add(sample_hash(record_key(r.id, cfg.seed)))
    return bottom.threshold


def scoring_settings(cfg: GenerateConfig, resources: Resources, threshold: int) -> None:
    """What the negatives pass reads besides the tables: the sample's threshold (for leaving a
    sampled caption's own pairs out), the floors."""
    resources.data.update(
        sample_threshold=threshold,
        floors=cfg.plausibility.floor.as_dict(),
        cross_class_floors=cfg.plausibility.cross_class_floor.as_dict(),
    )


def plausibility_resources(cfg: GenerateConfig, resources: Resources, records: list[CaptionRecord]) -> None:
    """The corpus pass over records held in memory, in this process (a reference for the engines'
    tests, and the same statistics the engines compute)."""
    size = min(cfg.plausibility.sample_captions, cfg.stats_sample)
    if len(records) <= size:
        threshold = ALL
    else:
        threshold = sorted(sample_hash(record_key(r.id, cfg.seed)) for r in records)[size - 1]
    scoring_settings(cfg, resources, threshold)
    driver_statistics(cfg, resources, threshold, records)


def driver_statistics(cfg: GenerateConfig, resources: Resources, threshold: int, sample: Iterable[CaptionRecord]) -> Counter:
    """The corpus pass over ``sample`` in this process, parsed here (the reference the engines'
    tests compare the workers' and actors' counts with)."""
    nlp = load_nlp(cfg.parse)
    records = [r for r in sample if threshold == ALL or sample_hash(record_key(r.id, cfg.seed)) <= threshold]
    counts: Counter = Counter()
    nouns: set[str] = set()
    for doc in parse(nlp, [r.caption for r in records], cfg.parse.batch_size):
        _tally_tokens(*tokens_of(doc), counts, nouns)
    resources.data.update(pair_tables(cfg, resources, counts, len(records), nouns))
    return counts


# --------------------------------------------------------------------------- driver


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
    if cfg.use_wordnet and (cfg.plausibility.enabled or any(f.endswith("_replace") for f in cfg.families)):
        from pipeline.lexicon import wordnet_available

        # installing or removing WordNet changes the replace families' output and the swap classes
        identity["wordnet"] = wordnet_available()
    return identity


def is_url(out: str) -> bool:
    """Whether ``out`` names a remote fsspec location (``s3://``, ``gs://``, ``memory://``...) rather
    than a local folder (a plain path or ``file://``)."""
    return "://" in out and not out.startswith("file://")


def generate(cfg: GenerateConfig) -> Manifest:
    """Run stage 1 and return the manifest (also written to ``manifests/<name>.json``).

    ``cfg.out`` may be an fsspec URL: the dataset is then built in a local staging folder (which a
    rerun resumes) and uploaded once complete (:func:`_generate_to_url`)."""
    cfg.validate()
    if is_url(cfg.out):
        return _generate_to_url(cfg)
    if cfg.out.startswith("file://"):
        cfg = dataclasses.replace(cfg, out=cfg.out[len("file://"):])
    missing = [f for f in cfg.families if f not in available_families()]
    if missing:
        raise ConfigError(f"families {missing} are not implemented yet; available: {available_families()}")
    t_start = time.perf_counter()
    model = resolve_model(cfg.parse)
    input_fp = fingerprint(cfg.source)
    if cfg.parsed:
        from pipeline.parsestore import open_store

        open_store(cfg.parsed, input_fp, model, cfg.parse)  # refused here, before any work, if it does not match
        # absolute: the workers, actors and a joined cluster's processes may not share this directory
        cfg = dataclasses.replace(cfg, parsed=str(Path(cfg.parsed).absolute()))
    identity = run_identity(cfg, input_fp, model)
    run_hash = config_hash(identity)
    out = Path(cfg.out)
    mpath = manifest_path(cfg)

    state = _read_state(out)
    current = _current_manifest(out, state, run_hash)
    if current is not None:
        log.info("%s is up to date (config %s); nothing to do", out, run_hash[:12])
        listed = _manifest_or_none(mpath)
        if listed is None or listed.config_hash != run_hash or current.output_dir != str(cfg.out):
            current.output_dir = str(cfg.out)
            write_json_atomic(current.to_dict(), mpath)  # manifests/<name>.json went stale or missing
        return current
    _check_source_outside(cfg, out)

    # bounded memory: pass 1 counts and plans, pass 2 cuts shards as the source streams by
    # (pipeline/engines/streaming.py); no list of all records is ever built
    # absolute: the Ray engine's read task and actors write here, and a joined cluster's worker
    # processes do not share this process's working directory
    work = out.absolute() / f".partial-{run_hash[:12]}"
    # The pool's workers start first: they load spaCy while this process reads, and are forked
    # from a parent that holds nothing of the input yet, so no worker carries a copy of what the
    # passes below build. (engine: ray starts Ray here and its actors after the statistics pass,
    # pipeline/engines/ray_engine.py.)
    with contextlib.ExitStack() as stack:
        engine = pool = None
        if cfg.engine == "ray":
            from pipeline.engines.ray_engine import RayEngine

            fns = (_run_shard, _count_shard, recount_kept)  # what the actors run, and the recount
            engine = stack.enter_context(contextlib.closing(RayEngine(cfg, work, _init_worker, fns)))
        elif cfg.workers > 1:
            pool = stack.enter_context(_worker_pool(cfg))
        scan = engine.scan_source() if engine else scan_source(cfg, work)
        skipped, skip_examples, read_seconds = scan.skipped, scan.skip_examples, scan.read_seconds
        log.info("read %d captions (%d skipped: %s)", scan.records, sum(skipped.values()), dict(skipped))

        stream = engine.stream if engine else ShardStream(cfg, scan, work)
        plan = stream.plan
        _check_foreign_splits(out, {split for split, _ in plan}, state)
        resources = build_resources(cfg, engine.sample() if engine else SampleRecords(cfg, scan))
        corpus: CorpusPass | None = None
        statistics: dict[str, Any] = {"source": "none"}
        in_process = engine is None and pool is None
        if cfg.plausibility.enabled:
            threshold = sample_threshold(cfg, scan, engine.sample() if engine else SampleRecords(cfg, scan))
            scoring_settings(cfg, resources, threshold)
            corpus = CorpusPass(cfg, work, threshold, resources, in_process)
        meta = {"config_hash": run_hash, "families": list(cfg.families), "hardneg_version": __version__}
        done: dict[int, tuple[ShardStats, dict[str, Any]]] = {}
        counts_per_split: Counter = Counter(split for split, _ in plan)
        index_in_split: Counter = Counter()
        paths: list[str] = []
        for i, (split, _) in enumerate(plan):
            j = index_in_split[split]
            index_in_split[split] += 1
            paths.append(str(work / split / f"part-{j:05d}-of-{counts_per_split[split]:05d}.parquet"))
            finished = _finished_shard(Path(paths[i]), run_hash)
            if finished is not None:
                done[i] = finished
        if done:
            log.info("resuming: %d of %d shards already written", len(done), len(plan))
        resumed = len(done)
        todo_rows = sum(n for i, (_, n) in enumerate(plan) if i not in done)
        # the workers' resources: written now, or by the corpus pass with its tables
        res_file = None if in_process or corpus is not None else write_resources(resources, work)
        # shard i's task, given the resources file (the corpus pass's is known once it has run)
        task_of = functools.partial(_shard_task, paths, meta, corpus.plan if corpus else None)

        log.info("rule modules: %s", _compiled.status()["reason"])
        t1 = time.perf_counter()
        if engine:  # the actors run this module's shard and corpus count functions
            engine.run(task_of, res_file, done, todo_rows, corpus)
        else:

            def make_task(i: int, split: str, recs: list[CaptionRecord]) -> ShardTask:
                return task_of(corpus.resources_path if corpus else res_file, i, split, recs)

            tasks = (make_task(i, split, recs) for i, split, recs in stream if i not in done)
            count_tasks = corpus.tasks(stream) if corpus is not None else iter(())
            _run_tasks(cfg, resources, tasks, done, todo_rows, corpus, count_tasks, pool)
        if corpus is not None:
            statistics = {
                "source": "corpus sample",
                "sample_captions": corpus.captions,
                "distinct_pairs": corpus.distinct_pairs,
                "classes": resources.data["swap"].sem.source,
                "parsed_in": "parse store" if cfg.parsed else "actors" if engine else "workers",
            }
        generate_seconds = time.perf_counter() - t1

    # after the engine's close: a Ray it started is shut down (its start and stop are Ray's, not the run's)
    ray_timings = {"ray_init_seconds": round(engine.init_seconds, 3), "ray_shutdown_seconds": round(engine.shutdown_seconds, 3),
                   "ray_actors": cfg.ray.actors} if engine else {}
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
            "shards_resumed": resumed,
            "engine": cfg.engine,
            **ray_timings,
        },
        spacy=next((st.spacy for st, _ in done.values() if st.spacy), {"name": model, "version": model_version(model)}),
        rules_compiled=bool(_compiled.status()["compiled"]),
        statistics=statistics,
    )
    write_json_atomic(manifest.to_dict(), out / "manifest.json")
    write_json_atomic(manifest.to_dict(), mpath)  # written last: its presence means the run completed
    return manifest


def _generate_to_url(cfg: GenerateConfig) -> Manifest:
    """Build the dataset in a local staging folder, then upload it to the URL ``cfg.out``.

    The upload copies the shards and the state file first and ``manifest.json`` last, each object
    whole, so a reader that finds the manifest at the URL finds every shard it lists. The staging
    folder stays (a rerun of the same config finds it complete and uploads again; a killed run
    resumes there); with ``engine: ray`` on several nodes it must be a folder every node sees.
    """
    import fsspec

    url = cfg.out.rstrip("/")
    try:  # before any work: an unknown scheme or a missing filesystem package fails here
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"out {cfg.out!r} is not a location fsspec can write to: {e}") from e
    stage = Path(cfg.stage_dir) if cfg.stage_dir else Path(".hardneg-staging") / cfg.name
    manifest = generate(dataclasses.replace(cfg, out=str(stage)))
    manifest.output_dir = url
    write_json_atomic(manifest.to_dict(), stage / "manifest.json")
    files = sorted(p for p in stage.rglob("*") if p.is_file() and not p.relative_to(stage).parts[0].startswith(".partial-"))
    files.sort(key=lambda p: p.name == "manifest.json")  # the manifest last
    log.info("uploading %d files from %s to %s", len(files), stage, url)
    for p in files:
        rel = p.relative_to(stage).as_posix()
        fs.makedirs(f"{root}/{rel}".rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(p), f"{root}/{rel}")
    write_json_atomic(manifest.to_dict(), manifest_path(cfg))
    return manifest


def _shard_task(paths: list[str], meta: dict[str, Any], corpus: CorpusPlan | None, resources: str | None,
                i: int, split: str, records: list[CaptionRecord]) -> ShardTask:
    """The task of shard ``i``: the token tables the corpus pass kept for it, the resources file
    (the corpus pass's, with the pair tables, once it has run)."""
    return ShardTask(i, split, records, paths[i], meta, corpus.path(i) if corpus else None, resources)


def build_resources(cfg: GenerateConfig, records: Iterable[CaptionRecord]) -> Resources:
    """Shared read-only data for families that need it (the replace families' lexicons, the swap
    families' semantic classes)."""
    from pipeline.rules.families.swap import swap_tables

    needs = [f for f in cfg.families if f.endswith("_replace")]
    if not needs:
        return Resources({"swap": swap_tables()})
    from pipeline.rules.families.replace import build_resources as build_replace

    resources = build_replace(cfg, [r.caption for r in records])
    resources.data["swap"] = swap_tables()
    return resources


@contextlib.contextmanager
def _worker_pool(cfg: GenerateConfig) -> Iterator[ProcessPoolExecutor]:
    """``cfg.workers`` processes that have loaded spaCy, started now: forked from this process
    before it reads anything, so none of them holds a copy of the run's bookkeeping."""
    # an executor, not multiprocessing.Pool: a worker that dies (killed, or a task it cannot
    # unpickle) raises BrokenProcessPool instead of leaving the run waiting forever
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg,))
    try:
        pool.submit(_ready)  # an executor forks its workers on the first submit
        yield pool
    finally:  # on an error, shards not yet started are dropped (a rerun resumes them)
        pool.shutdown(wait=True, cancel_futures=True)


def _submit_bounded(pool: ProcessPoolExecutor, fn: Any, tasks: Iterable[ShardTask], limit: int,
                    collect: Any) -> None:
    """Run ``tasks`` as they are produced with at most ``limit`` submitted at a time; ``collect``
    gets each result (the driver holds no more than ``limit`` tasks)."""
    pending: set[Future] = set()
    for task in tasks:
        pending.add(pool.submit(fn, task))
        if len(pending) >= limit:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                collect(fut.result())
    for fut in as_completed(pending):
        collect(fut.result())


def _run_tasks(
    cfg: GenerateConfig,
    resources: Resources,
    tasks: Iterable[ShardTask],
    done: dict[int, tuple[ShardStats, dict[str, Any]]],
    total: int,
    corpus: CorpusPass | None = None,
    count_tasks: Iterable[ShardTask] = (),
    pool: ProcessPoolExecutor | None = None,
) -> None:
    """Run ``tasks`` (``total`` captions) as they are produced, holding at most
    ``workers * stream.in_flight`` of them at a time; the corpus pass's ``count_tasks`` first, on the
    same workers (each loads its spaCy pipeline once). Without ``pool``, in this process."""
    if not total:
        if corpus is not None:  # every shard written: the counts of the kept token tables suffice
            for ct in count_tasks:
                corpus.recount(ct)
            corpus.finish()
        return
    bar = tqdm(total=total, desc="generate", unit=" captions", smoothing=0.1)

    def collect(result: tuple[int, ShardStats, dict[str, Any]]) -> None:
        i, stats, info = result
        done[i] = (stats, info)
        bar.update(stats.rows)

    try:
        if pool is None:
            thresholds = gc.get_threshold()
            _init_worker(cfg, resources)
            _WORKER["kept"] = {}
            try:
                if corpus is not None:
                    for ct in count_tasks:
                        if not corpus.recount(ct):
                            i, counts, nouns = _count_shard(ct)
                            corpus.add(i, counts, nouns, len(ct.records))
                    corpus.finish()
                for task in tasks:
                    collect(_run_shard(task))
            finally:  # leave the caller's process as it was (GC settings, no model held)
                _WORKER.clear()
                gc.unfreeze()
                gc.set_threshold(*thresholds)
        else:
            limit = cfg.workers * cfg.stream.in_flight
            if corpus is not None:
                sizes: dict[int, int] = {}

                def counted(result: tuple[int, dict[tuple[str, str, str], int], list[str]]) -> None:
                    i, counts, nouns = result
                    corpus.add(i, counts, nouns, sizes.pop(i))

                def to_count() -> Iterator[ShardTask]:
                    for ct in count_tasks:
                        if not corpus.recount(ct):
                            sizes[ct.index] = len(ct.records)
                            yield ct

                _submit_bounded(pool, _count_shard, to_count(), limit, counted)
                corpus.finish()
            _submit_bounded(pool, _run_shard, tasks, limit, collect)
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


def _manifest_or_none(path: Path) -> Manifest | None:
    try:
        return read_manifest(path)
    except HardnegError:  # missing or unreadable: treated as stale
        return None


def _current_manifest(out: Path, state: dict[str, Any], run_hash: str) -> Manifest | None:
    """The manifest of a completed run of this very config in ``out``, or None."""
    if state.get("config_hash") != run_hash or not _outputs_intact(out, state):
        return None
    manifest = _manifest_or_none(out / "manifest.json")
    return manifest if manifest is not None and manifest.config_hash == run_hash else None


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
