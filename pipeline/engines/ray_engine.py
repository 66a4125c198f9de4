"""``engine: ray``: stage 1 as Ray Data pipelines (a local Ray or a cluster), writing the rows the
local engine writes.

The stage (``pipeline.generate``) keeps what does not depend on the engine: the run's identity,
resume, the statistics, publishing the shards and the manifest. This engine supplies the passes:

1. **statistics** (a map plus an aggregation): the source is a Ray Dataset
   (``read_datasource``) read by the project's readers, one read task per part of the source (each
   file of a Parquet folder; the whole source otherwise, :func:`pipeline.sources.source_parts`); a
   ``map_batches`` summarises each block (16-byte record keys, runs of one image's captions,
   skips) and the driver aggregates the summaries, in source order, with the
   :class:`~pipeline.engines.streaming.ScanBuilder` the local engine feeds record by record: skip
   counts, the shard plan, the statistics-sample threshold, the duplicate-id check. The statistics
   sample streams from the same Dataset, filtered by its hash threshold (:class:`RaySample`).
2. **corpus and negatives passes**, one Ray Data pipeline, so that one pool of actors (each loading
   the spaCy pipeline once) serves both. It starts with the engine, before the statistics pass, so
   the actors load spaCy while the driver reads (a thread of the driver iterates it). It is
   ``read_datasource`` of one read task that cuts the shards with the local engine's
   :class:`~pipeline.engines.streaming.ShardStream` (with the on-disk grouping when the source
   scatters an image's captions), then ``map_batches`` with the stateful actor class
   :class:`_StageActor` on an ``ActorPoolStrategy``, then the driver. The read task waits at a
   gate (an actor, :class:`_Gates`) for the stage's plan (the statistics pass's result, through the
   object store once); then yields the corpus pass's count tasks and an end-of-corpus marker; then
   waits at a second gate until the driver has summed the counts and written the run's resources
   (with the compiled pair tables) to the work folder; then yields the shard tasks. The actors run the local
   engine's count and shard functions, passed in by the stage (one implementation of the rules,
   two engines); a shard task reuses the corpus pass's parses and writes the shard and its stats
   file atomically; the driver collects one summary per shard.

Invariants:

- Same rows as the local engine for the same config; even the shards are the same, because both
  engines cut them with the same code.
- Reads run on the driver's node (``supports_distributed_reads`` is False): the source is a path
  or Hugging Face dataset the driver can read. The actors may run on any node, so on a cluster the
  output folder (which holds the work folder: the corpus pass's token tables, the resources file)
  must be one every node sees (a shared filesystem).
- No shard task exists before the resources file does: the read task yields none until the
  ``resources`` gate opens, and it opens only once every count result has reached the driver.
- Faults: an actor that dies is restarted by Ray and its task retried (``ray.max_retries`` times);
  a restarted actor loads the model and the resources file again, and a retried shard is written
  again, atomically, with the same bytes. A driver that dies leaves its finished shards; the rerun
  skips them (they are not read into the pipeline, not parsed) and recounts the token tables the
  corpus pass kept instead of parsing them again.
- The driver holds one summary block at a time, the plan, the sample threshold, the summed counts
  until the tables are compiled and the shard results (O(shards)), never the input.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.config import GenerateConfig
from pipeline.core.errors import ConfigError
from pipeline.engines.common import ALL, MAX_EXAMPLES, classify, record_key, sample_hash
from pipeline.engines.streaming import ScanBuilder, ShardStream, SourceScan, source_items
from pipeline.records import CaptionRecord
from pipeline.sources import source_parts

log = logging.getLogger(__name__)

RECORD_COLUMNS = ("id", "caption", "image_path", "source", "split", "group", "image_bytes")
#: items per table a source read task builds (Ray then merges tables up to ``_SOURCE_BLOCK_BYTES``)
_SOURCE_TABLE_ROWS = 1000
#: blocks of the source's items (what one summary task and the driver hold at a time; each block
#: costs Ray a task, so not much smaller)
_SOURCE_BLOCK_BYTES = 4 << 20
#: the task pipeline's read task reserves no CPU: it is light next to parsing, and with any
#: reservation ``actors`` one-CPU actors on a machine of ``actors`` CPUs would leave it unscheduled
_TASK_READ_CPUS = 0
#: tasks an actor holds at a time: one running, one waiting, so an actor never waits for the driver
_PER_ACTOR = 2


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"engine: ray needs Ray Data ({e}); install it with `pip install 'hardneg[ray]'`"
        ) from None
    return ray


# --------------------------------------------------------------------------- the source as a Dataset


def _item_blocks(cfg: GenerateConfig, part: str | None) -> Iterator[Any]:
    """A part's items in tables of ``_SOURCE_TABLE_ROWS``, in source order: records with their key,
    and the skips (``skip`` holds the reason, ``where`` the location), so a summary counts them."""
    import pyarrow as pa

    names = (*RECORD_COLUMNS, "key", "skip", "where")
    types = [pa.string()] * 6 + [pa.binary(), pa.binary(), pa.string(), pa.string()]
    cols: dict[str, list[Any]] = {c: [] for c in names}
    for item in source_items(cfg, part):
        skip = classify(item, cfg.max_chars)
        if skip is None:
            for c in RECORD_COLUMNS:
                cols[c].append(getattr(item, c))
            cols["key"].append(record_key(item.id, cfg.seed))
            cols["skip"].append(None)
            cols["where"].append(None)
        else:
            for c in (*RECORD_COLUMNS, "key"):
                cols[c].append(None)
            cols["skip"].append(skip[0])
            cols["where"].append(skip[1])
        if len(cols["skip"]) >= _SOURCE_TABLE_ROWS:
            yield pa.table([pa.array(cols[c], t) for c, t in zip(names, types)], names=list(names))
            cols = {c: [] for c in names}
    if cols["skip"]:
        yield pa.table([pa.array(cols[c], t) for c, t in zip(names, types)], names=list(names))


def _datasource(read_fns: list[Callable[[], Iterator[Any]]]) -> Any:
    """A Ray datasource of one read task per function, run on the driver's node."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class _Source(Datasource):
        @property
        def supports_distributed_reads(self) -> bool:
            return False

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[Any]:
            meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
            return [ReadTask(fn, meta) for fn in read_fns]

    return _Source()


def _summarize(batch: Any) -> Any:
    """One row per block: its records' keys, runs of one image's captions, skips and examples."""
    import pyarrow as pa

    runs: list[list[Any]] = []
    skips: Counter = Counter()
    examples: list[str] = []
    key_bytes = bytearray()
    cols = (batch.column(c).to_pylist() for c in ("key", "skip", "where", "split", "group"))
    for k, s, w, sp, g in zip(*cols):
        if s is not None:
            skips[s] += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"{s}: {w}")
            continue
        key_bytes += k
        if runs and runs[-1][0] == sp and runs[-1][1] == g:
            runs[-1][2] += 1
        else:
            runs.append([sp, g, 1])
    return pa.table({
        "keys": pa.array([bytes(key_bytes)], pa.binary()),
        "runs": [json.dumps(runs)],
        "skips": [json.dumps(skips)],
        "examples": [json.dumps(examples)],
    })


def add_summaries(b: ScanBuilder, summaries: Any) -> int:
    """The aggregation of the statistics pass: block summaries, in source order, into ``b``;
    returns the number of records they hold."""
    n0 = b.scan.records
    for row in summaries.to_pylist():
        b.add_keys(row["keys"])
        for split, group, n in json.loads(row["runs"]):
            b.add_run(split, group, n)
        b.scan.skipped.update(json.loads(row["skips"]))
        room = MAX_EXAMPLES - len(b.scan.skip_examples)
        if room > 0:
            b.scan.skip_examples.extend(json.loads(row["examples"])[:room])
    return b.scan.records - n0


def _sample_filter(threshold: int) -> Callable[[Any], Any]:
    def keep(batch: Any) -> Any:
        import pyarrow.compute as pc

        batch = batch.filter(pc.is_null(batch.column("skip")))
        if threshold != ALL:
            batch = batch.filter([sample_hash(k) <= threshold for k in batch.column("key").to_pylist()])
        return batch.select(list(RECORD_COLUMNS))

    return keep


def _records_of(table: Any) -> list[CaptionRecord]:
    cols = [table.column(c).to_pylist() for c in RECORD_COLUMNS]
    return [CaptionRecord(*row) for row in zip(*cols)]


# --------------------------------------------------------------------------- the task pipeline


@dataclass
class _TaskPlan:
    """What the task pipeline's read task needs (pickled once into it)."""

    #: the driver's shard stream: its plan travels with it, so the read task does not read a
    #: scattered source's on-disk partitions again to plan
    stream: ShardStream
    #: ``(resources_file, i, split, records) -> task``: the stage's shard task
    task_of: Callable[..., Any]
    #: the resources file when there is no corpus pass (else the ``resources`` gate hands it over)
    resources: str | None
    done: frozenset[int]
    #: the stage's corpus plan (``tasks(shards)``) and its recount of kept token tables, or None
    corpus: Any
    recount: Callable[[Any], Any] | None


def _row(kind: str, index: int, n: int, payload: Any) -> Any:
    import pyarrow as pa

    return pa.table({"kind": [kind], "index": pa.array([index], pa.int64()), "n": pa.array([n], pa.int64()),
                     "blob": pa.array([pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)], pa.large_binary())})


def _task_rows(gates: Any) -> Iterator[Any]:
    """The read task of the task pipeline. It starts with the engine, before the statistics pass,
    so the actors load spaCy meanwhile, and waits for the stage's plan (gate ``plan``; None: nothing
    to do). Then: the corpus pass's count tasks (or, for token tables an interrupted run kept, their
    counts), an end marker with their number, and, once gate ``resources`` opens with the resources
    file, one task per shard still to do. One row per block, so Ray never splits a task and the
    actors share the work."""
    import ray

    try:
        plan: _TaskPlan | None = ray.get(gates.wait.remote("plan"))
    except ray.exceptions.RayActorError:  # the engine closed before its run (the stage failed)
        return
    if plan is None:
        return
    stream = plan.stream
    resources = plan.resources
    if plan.corpus is not None:
        assert plan.recount is not None
        n = 0
        for ct in plan.corpus.tasks(stream):
            kept = plan.recount(ct)
            yield _row("count", ct.index, len(ct.records), ct) if kept is None else \
                _row("counted", ct.index, len(ct.records), kept)
            n += 1
        yield _row("end", -1, n, None)
        # Ray Data (2.60) hands a read task's block on only once the task yields the next one or
        # ends: without a row after the marker, the marker would wait with the task, forever
        yield _row("flush", -1, 0, None)
        resources = ray.get(gates.wait.remote("resources"))
    for i, split, records in stream:
        if i not in plan.done:
            yield _row("shard", i, len(records), plan.task_of(resources, i, split, records))


class _Gates:
    """Named gates, each opening once with a value, for the read task that waits on them: ``plan``
    (the stage's plan, or None: nothing to do) and ``resources`` (the resources file). One actor for
    both: on a small machine every Ray process costs a Python start."""

    def __init__(self) -> None:
        import asyncio

        self._open = {name: asyncio.Event() for name in ("plan", "resources")}
        self._value: dict[str, Any] = {}

    async def wait(self, name: str) -> Any:
        await self._open[name].wait()
        return self._value[name]

    async def release(self, name: str, value: Any) -> None:
        self._value[name] = value
        self._open[name].set()


#: packages a spaCy pipeline needs torch for (transformer pipelines)
_TORCH_PIPELINE_PACKAGES = ("spacy-transformers", "spacy-curated-transformers", "curated-transformers")


def _without_torch(cfg: GenerateConfig) -> None:
    """Keep torch out of a fresh actor process when its spaCy pipeline does not need it.

    thinc imports torch, when installed, to offer torch-backed layers; the CNN pipelines
    (``en_core_web_sm``...) never use them, and the import is most of an actor's start: measured
    here, ``import spacy`` takes 1.5 s with torch and 0.44 s without. (The local engine's workers
    are forked from a driver that has imported it already.) A model that needs torch, or one given
    as a path, whose needs are unknown, keeps it."""
    import importlib.metadata as md
    import sys

    if "torch" in sys.modules or "thinc" in sys.modules:
        return
    for name in [cfg.parse.model, *cfg.parse.fallback_models]:
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            if Path(name).exists():
                return
            continue
        if any(r.lower().replace("_", "-").startswith(_TORCH_PIPELINE_PACKAGES) for r in requires):
            return
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError


class _StageActor:
    """The ``map_batches`` actor class of the task pipeline: the spaCy pipeline loaded once, when
    the actor starts, by the local engine's worker initializer; then, per row, the local engine's
    count or shard function on the task it holds (one implementation of the rules, two engines).
    Counts an earlier run kept, and the end marker, pass through. The run's resources come from the
    file a shard task names, so an actor Ray restarts loads them again by itself."""

    def __init__(self, cfg: GenerateConfig, init_fn: Callable[[GenerateConfig], None],
                 fns: dict[str, Callable[[Any], Any]]) -> None:
        _without_torch(cfg)
        init_fn(cfg)
        self.fns = fns

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        blobs = batch.column("blob").to_pylist()
        out = []
        for kind, blob in zip(batch.column("kind").to_pylist(), blobs):
            fn = self.fns.get(kind)
            out.append(blob if fn is None else pickle.dumps(fn(pickle.loads(blob)), protocol=pickle.HIGHEST_PROTOCOL))
        return batch.set_column(batch.schema.get_field_index("blob"), "blob", pa.array(out, pa.large_binary()))


# --------------------------------------------------------------------------- the engine


class RayEngine:
    """The passes on Ray Data (see the module docstring); ``close`` leaves Ray as it was found.

    ``fns`` is the stage's ``(shard_fn, count_fn, recount_fn)``: given now, because the actors
    start now (with the task pipeline, which waits for :meth:`run`), while the driver reads."""

    def __init__(self, cfg: GenerateConfig, scratch: Path, init_fn: Callable[[GenerateConfig], None],
                 fns: tuple[Any, Any, Any]) -> None:
        self.ray = ray = import_ray()
        from ray.data.context import DataContext

        self.cfg, self.scratch = cfg, scratch
        self.recount = fns[2]
        self.started = not ray.is_initialized()
        t0 = time.perf_counter()
        if self.started:
            if cfg.ray.address:
                ray.init(address=cfg.ray.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False)
        self.init_seconds = time.perf_counter() - t0
        self.shutdown_seconds = 0.0  # set by close, for a Ray this engine started
        log.info("Ray %s: %s CPUs (ray.init %.1fs)", ray.__version__, ray.cluster_resources().get("CPU"), self.init_seconds)
        self.ctx = DataContext.get_current()
        self._saved = (self.ctx.execution_options.preserve_order, self.ctx.target_max_block_size,
                       self.ctx.enable_progress_bars, self.ctx.print_on_execution_start)
        self.ctx.execution_options.preserve_order = True  # summaries and the sample in source order
        self.ctx.enable_progress_bars = False  # the stage's own bars say more (captions, not blocks)
        self.ctx.print_on_execution_start = False
        self.parts: list[str | None] = list(source_parts(cfg.source) or [None])
        #: source read tasks run beside the actors (reserving no CPU: the actors may hold them all)
        #: on the driver's node, as many at a time as it has cores; a map over them takes the same
        #: arguments, so Ray fuses it into the read task and no raw block enters the object store
        self.read_args = {"num_cpus": 0, "concurrency": max(1, min(len(self.parts), os.cpu_count() or 1))}
        self.scan: SourceScan | None = None
        self.stream: ShardStream | None = None
        self.closed = False
        self.gates: Any = None
        self.results: queue.Queue = queue.Queue()
        self.consumer: threading.Thread | None = None
        self._start_tasks(init_fn, {"shard": fns[0], "count": fns[1]})

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        (self.ctx.execution_options.preserve_order, self.ctx.target_max_block_size,
         self.ctx.enable_progress_bars, self.ctx.print_on_execution_start) = self._saved
        if self.gates is not None:  # a read task still waiting on one ends instead of hanging
            self.ray.kill(self.gates)
            self.gates = None
        if self.consumer is not None:  # done after a run; after a failure mid-pass, Ray's shutdown ends it
            self.consumer.join(timeout=5)
        if self.started:
            t0 = time.perf_counter()
            self.ray.shutdown()
            self.shutdown_seconds = time.perf_counter() - t0
            log.info("Ray shut down in %.1fs", self.shutdown_seconds)

    @contextmanager
    def _closing_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------- statistics

    def items(self) -> Any:
        """The source as a Ray Dataset of items (records and skips), a read task per part."""
        cfg = self.cfg
        self.ctx.target_max_block_size = _SOURCE_BLOCK_BYTES
        fns = [lambda part=part: _item_blocks(cfg, part) for part in self.parts]
        return self.ray.data.read_datasource(_datasource(fns), override_num_blocks=len(fns), **self.read_args)

    def scan_source(self) -> SourceScan:
        """The statistics pass: a map (a summary per block) plus an aggregation on the driver."""
        with self._closing_on_error():
            t0 = time.perf_counter()
            b = ScanBuilder(self.cfg, self.scratch)
            summaries = self.items().map_batches(_summarize, batch_size=None, batch_format="pyarrow",
                                                 **self.read_args)
            with tqdm(desc="read (statistics pass, ray)", unit=" captions", mininterval=2, leave=False) as bar:
                for batch in summaries.iter_batches(batch_size=None, batch_format="pyarrow"):
                    bar.update(add_summaries(b, batch))
            self.scan = b.finish(time.perf_counter() - t0)
            self.stream = ShardStream(self.cfg, self.scan, self.scratch)  # the on-disk grouping, when needed
            return self.scan

    @property
    def plan(self) -> list[tuple[str, int]]:
        assert self.stream is not None
        return self.stream.plan

    def sample(self) -> "RaySample":
        assert self.scan is not None
        return RaySample(self, self.scan)

    # ----------------------------------------------------------------------- the task pipeline

    def _start_tasks(self, init_fn: Callable[[GenerateConfig], None], fns: dict[str, Any]) -> None:
        """Start the task pipeline now, its actors loading spaCy, its read task waiting at the
        ``plan`` gate; a thread hands its output blocks to :meth:`run` (a Ray Data execution starts
        when it is iterated, and the driver has the statistics pass to run meanwhile)."""
        ray, cfg = self.ray, self.cfg
        self.gates = gates = ray.remote(num_cpus=0)(_Gates).remote()
        self.ctx.target_max_block_size = 1  # every task (one row) its own block
        ds = ray.data.read_datasource(_datasource([lambda: _task_rows(gates)]), override_num_blocks=1,
                                      num_cpus=_TASK_READ_CPUS)
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for an actor's restarts yet (the remote-args form is
            # deprecated for removal in 2.64); without them Ray would retry a crashing task forever
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = ds.map_batches(
                _StageActor,
                fn_constructor_kwargs={"cfg": cfg, "init_fn": init_fn, "fns": fns},
                batch_size=1,  # one task per call
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=cfg.ray.actors, max_tasks_in_flight_per_actor=_PER_ACTOR),
                num_cpus=cfg.ray.actor_cpus,
                max_restarts=cfg.ray.max_retries,
                max_task_retries=cfg.ray.max_retries,
            )
        results = self.results

        def consume() -> None:
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    results.put(batch)
                results.put(None)
            except BaseException as e:  # handed to the driver, which raises it
                results.put(e)

        self.consumer = threading.Thread(target=consume, name="hardneg-ray-tasks", daemon=True)
        self.consumer.start()

    def run(self, task_of: Callable[..., Any], resources: str | None, done: dict[int, Any], total: int,
            corpus: Any = None) -> None:
        """The corpus pass (when ``corpus``) and then every shard not in ``done``, on the task
        pipeline's actors; results go into ``corpus`` and ``done``. ``task_of(resources_file, i,
        split, records)`` is the stage's task for a shard, ``resources`` the resources file when
        there is no corpus pass. Closes the engine (and a Ray instance it started) when it fails."""
        with self._closing_on_error():
            assert self.stream is not None and self.gates is not None
            if corpus is None and not total:
                self.ray.get(self.gates.release.remote("plan", None))
                return
            plan = _TaskPlan(self.stream, task_of, resources, frozenset(done),
                             corpus.plan if corpus is not None else None, self.recount)
            self.ray.get(self.gates.release.remote("plan", plan))
            self._collect(done, total, corpus)

    def _collect(self, done: dict[int, Any], total: int, corpus: Any) -> None:
        counting, counted, expected = corpus is not None, 0, -1
        bar = tqdm(desc="corpus pass (ray)" if counting else "generate (ray)", unit=" captions",
                   total=None if counting else total, mininterval=2, smoothing=0.1)
        try:
            while True:
                batch = self.results.get()
                if batch is None:
                    break
                if isinstance(batch, BaseException):
                    raise batch
                for kind, i, n, blob in zip(*(batch.column(c).to_pylist() for c in ("kind", "index", "n", "blob"))):
                    if kind == "end":
                        expected = n
                    elif kind == "flush":
                        continue
                    elif kind == "shard":
                        _, stats, info = pickle.loads(blob)
                        done[i] = (stats, info)
                        bar.update(stats.rows)
                    else:  # "count" (parsed now) or "counted" (from kept token tables)
                        corpus.add(*pickle.loads(blob), n)
                        counted += 1
                        bar.update(n)
                    if counting and counted == expected:  # every count is in: compile, then the shards
                        corpus.finish()
                        self.ray.get(self.gates.release.remote("resources", corpus.resources_path))
                        counting = False
                        bar.close()
                        bar = tqdm(desc="generate (ray)", unit=" captions", total=total, smoothing=0.1)
        finally:
            bar.close()


class RaySample:
    """The statistics sample streamed from Ray in source order; re-iterable, ``len`` is its size."""

    def __init__(self, engine: RayEngine, scan: SourceScan) -> None:
        self.engine, self.threshold, self.size = engine, scan.sample_threshold, scan.sample_size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[CaptionRecord]:
        with self.engine._closing_on_error():
            ds = self.engine.items().map_batches(_sample_filter(self.threshold), batch_size=None,
                                                 batch_format="pyarrow", **self.engine.read_args)
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield from _records_of(batch)
