"""``engine: ray``: stage 1 as Ray Data pipelines (a local Ray or a cluster), writing the rows the
local engine writes.

The stage (``pipeline.generate``) keeps what does not depend on the engine: the run's identity,
resume, the statistics, publishing the shards and the manifest. This engine supplies the passes:

1. **statistics** (a map plus an aggregation): the source is a Ray Dataset
   (``read_datasource``) read by the project's readers, one read task per part of the source (each
   file of a Parquet folder, runs of whole lines of a large JSONL/CSV/TSV file; the whole source
   otherwise, :func:`pipeline.sources.source_parts`); a
   ``map_batches`` summarises each block (16-byte record keys, runs of one image's captions,
   skips) and the driver aggregates the summaries, in source order, with the
   :class:`~pipeline.engines.streaming.ScanBuilder` the local engine feeds record by record: skip
   counts, the shard plan, the statistics-sample threshold, the duplicate-id check. The statistics
   sample streams from the same Dataset, filtered by its hash threshold (:class:`RaySample`).
2. **corpus and negatives passes**, one Ray Data pipeline, so that one pool of actors (each loading
   the spaCy pipeline once) serves both. It starts once the statistics pass is done (its read task
   then reuses the worker process that read the source: on two cores, starting the actors
   earlier cost a second reader process and a gate actor, more than the overlap gained). It is
   ``read_datasource`` of one read task that cuts the shards with the local engine's
   :class:`~pipeline.engines.streaming.ShardStream` (with the on-disk grouping when the source
   scatters an image's captions), then ``map_batches`` with the stateful actor class
   :class:`_StageActor` on an ``ActorPoolStrategy``, then the driver. The read task gets the
   stage's plan (the statistics pass's result) through the object store, put there once; it
   yields the corpus pass's count tasks and an end-of-corpus marker; then waits at a gate (a file
   of the work folder) until the driver has summed the counts and written the run's resources
   (with the compiled pair tables) to the work folder; then yields the shard tasks. The actors
   run the local engine's count and shard functions, passed in by the stage (one implementation of
   the rules, two engines); a shard task reuses the corpus pass's parses and writes the shard and
   its stats file atomically; the driver collects one summary per shard.

Invariants:

- Same rows as the local engine for the same config; even the shards are the same, because both
  engines cut them with the same code.
- Reads run on the driver's node (``supports_distributed_reads`` is False): the source is a path
  or Hugging Face dataset the driver can read. The actors may run on any node, so on a cluster the
  output folder (which holds the work folder: the corpus pass's token tables, the resources file)
  must be one every node sees (a shared filesystem).
- No shard task exists before the resources file does: the read task yields none until the gate
  file exists, and the driver writes it (with the resources file's path) only once every count
  result has reached it. A run that fails first writes it empty, so the read task ends instead
  of waiting; the gate's name is new for each run, so a killed run's gate never opens a rerun's.
- Faults: an actor that dies is restarted by Ray and its task retried (``ray.max_retries`` times);
  a restarted actor loads the model and the resources file again, and a retried shard is written
  again, atomically, with the same bytes. A driver that dies leaves its finished shards; the rerun
  skips them (they are not read into the pipeline, not parsed) and recounts the token tables the
  corpus pass kept instead of parsing them again.
- The driver holds one summary block at a time, the plan, the sample threshold, the summed counts
  until the tables are compiled and the shard results (O(shards)), never the input.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import pickle
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.config import GenerateConfig
from pipeline.core.atomic import write_bytes_atomic
from pipeline.core.errors import ConfigError
from pipeline.engines.common import ALL, MAX_EXAMPLES, classify, record_key, sample_hash
from pipeline.engines.streaming import ScanBuilder, ShardStream, SourceScan, source_items
from pipeline.nlp import without_torch
from pipeline.records import CaptionRecord
from pipeline.sources import SourcePart, source_parts

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
#: how often the task pipeline's read task looks for the gate file
_GATE_POLL_SECONDS = 0.02


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"engine: ray needs Ray Data ({e}); install it with `pip install 'hardneg[ray]'`"
        ) from None
    return ray


def stop_autoscaler_monitor(ray: Any) -> None:
    """Kill the autoscaler monitor of the local Ray this process started, before ``ray.shutdown``.

    A local Ray has nothing to autoscale, yet ``ray.init`` starts the monitor, and ``ray.shutdown``
    stops it after the GCS, with SIGTERM: its handler then reports its end to the GCS that is
    already gone, hangs, and is killed after Ray's one-second wait (figures in
    docs/benchmarks.md). Killed first it reports nothing. This reaches into Ray's private
    node object: a Ray whose internals moved is left to its own shutdown."""
    try:
        node = ray._private.worker._global_node
        monitors = node.all_processes.get("monitor", []) if node is not None and node.is_head() else []
        for info in monitors:
            info.process.kill()
            info.process.wait(timeout=5)
    except Exception as e:  # never fail a run at its end over Ray's internals
        log.debug("left Ray's autoscaler monitor to ray.shutdown (%s: %s)", type(e).__name__, e)


# --------------------------------------------------------------------------- the source as a Dataset


def _item_blocks(cfg: GenerateConfig, part: SourcePart | None) -> Iterator[Any]:
    """A part's items in tables of ``_SOURCE_TABLE_ROWS``, in source order: records with their key,
    and the skips (``skip`` holds the reason, ``where`` the location), so a summary counts them."""
    import pyarrow as pa

    names = (*RECORD_COLUMNS, "key", "skip", "where")
    types = [pa.string()] * 6 + [pa.binary(), pa.binary(), pa.string(), pa.string()]
    cols: dict[str, list[Any]] = {c: [] for c in names}

    def table() -> Any:
        return pa.table([pa.array(cols[c], t) for c, t in zip(names, types)], names=list(names))

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
            yield table()
            cols = {c: [] for c in names}
    if cols["skip"]:
        yield table()


def _datasource(read_fns: list[Callable[..., Iterator[Any]]]) -> Any:
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
    """What the task pipeline's read task needs: put in the object store once by the driver."""

    #: the driver's shard stream: its plan travels with it, so the read task does not read a
    #: scattered source's on-disk partitions again to plan
    stream: ShardStream
    #: ``(resources_file, i, split, records) -> task``: the stage's shard task
    task_of: Callable[..., Any]
    #: the resources file when there is no corpus pass (else the gate file hands it over)
    resources: str | None
    done: frozenset[int]
    #: the stage's corpus plan (``tasks(shards)``) and its recount of kept token tables, or None
    corpus: Any
    recount: Callable[[Any], Any] | None
    #: the gate: a file of the work folder the driver writes, once every count is in, with the
    #: resources file's path (empty: the run ended first); fresh per run; None without a corpus pass
    gate: str | None


def _row(kind: str, index: int, n: int, payload: Any) -> Any:
    import pyarrow as pa

    return pa.table({"kind": [kind], "index": pa.array([index], pa.int64()), "n": pa.array([n], pa.int64()),
                     "blob": pa.array([pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)], pa.large_binary())})


def _wait_for_gate(gate: str) -> str:
    """The resources file's path once the driver writes the gate ("" if the run ended first). The
    read task runs on the driver's node (the datasource has no distributed reads), which sees the
    file at once (a Ray Client driver elsewhere writes it through the shared work folder, whose
    caching may delay it); a poll every 20 ms costs nothing next to parsing and, unlike a gate
    actor, no process (an actor's start costs CPU while the actors load spaCy: docs/benchmarks.md)."""
    while not os.path.exists(gate):
        time.sleep(_GATE_POLL_SECONDS)
    return Path(gate).read_text(encoding="utf-8")


def _task_rows(plan_ref: Any) -> Iterator[Any]:
    """The read task of the task pipeline: the corpus pass's count tasks (or, for token tables an
    interrupted run kept, their counts), an end marker with their number, and, once the gate
    holds the resources file, one task per shard still to do. One row per block, so Ray never
    splits a task and the actors share the work."""
    import ray

    plan: _TaskPlan = ray.get(plan_ref)
    stream = plan.stream
    resources = plan.resources
    shards: Iterator[tuple[int, str, list[CaptionRecord]]] = (s for s in stream if s[0] not in plan.done)
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
        # the first shard is read while the driver compiles the counts (off the critical path)
        first = next(shards, None)
        assert plan.gate is not None
        resources = _wait_for_gate(plan.gate)
        if not resources:  # the driver failed before the negatives pass
            return
        if first is not None:
            shards = itertools.chain([first], shards)
    for i, split, records in shards:
        yield _row("shard", i, len(records), plan.task_of(resources, i, split, records))


class _StageActor:
    """The ``map_batches`` actor class of the task pipeline: the spaCy pipeline loaded once, when
    the actor starts, by the local engine's worker initializer; then, per row, the local engine's
    count or shard function on the task it holds (one implementation of the rules, two engines).
    Counts an earlier run kept, and the end marker, pass through. The run's resources come from the
    file a shard task names, so an actor Ray restarts loads them again by itself."""

    def __init__(self, cfg: GenerateConfig, init_fn: Callable[[GenerateConfig], None],
                 fns: dict[str, Callable[[Any], Any]]) -> None:
        without_torch(cfg.parse)
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

    ``fns`` is the stage's ``(shard_fn, count_fn, recount_fn)``; ``init_fn`` loads a worker's
    spaCy pipeline (the local engine's worker initializer, run once per actor)."""

    def __init__(self, cfg: GenerateConfig, scratch: Path, init_fn: Callable[[GenerateConfig], None],
                 fns: tuple[Any, Any, Any]) -> None:
        self.ray = ray = import_ray()
        from ray.data.context import DataContext

        # the source path is passed as given (the readers name skip locations by it, and both
        # engines must write the same); ``scratch`` comes absolute from the stage
        self.cfg, self.scratch, self.init_fn = cfg, scratch, init_fn
        self.fns = {"shard": fns[0], "count": fns[1]}
        self.recount = fns[2]
        # before ray.init: finding the cuts reads the source, which may fail with nothing to shut down
        parts = source_parts(cfg.source)
        self.parts: list[SourcePart | None] = list(parts) if parts else [None]
        self.started = not ray.is_initialized()
        #: the cluster to join: ``ray.address``, else Ray's own ``RAY_ADDRESS`` (set by ``ray job
        #: submit`` and KubeRay); None starts a new local Ray, even beside one ``ray start`` left
        self.address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or None
        t0 = time.perf_counter()
        if self.started:
            if self.address:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False,
                         _system_config={"worker_niceness": cfg.ray.worker_niceness})
        self.init_seconds = time.perf_counter() - t0
        self.shutdown_seconds = 0.0  # set by close, for a Ray this engine started
        log.info("Ray %s: %s CPUs (ray.init %.1fs)", ray.__version__, ray.cluster_resources().get("CPU"), self.init_seconds)
        self.ctx = DataContext.get_current()
        self._saved = (self.ctx.execution_options.preserve_order, self.ctx.target_max_block_size,
                       self.ctx.enable_progress_bars, self.ctx.print_on_execution_start)
        self.ctx.execution_options.preserve_order = True  # summaries and the sample in source order
        self.ctx.enable_progress_bars = False  # the stage's own bars say more (captions, not blocks)
        self.ctx.print_on_execution_start = False
        #: source read tasks run on the driver's node, as many at a time as it has cores, reserving
        #: no CPU (like the task pipeline's read task, which then reuses their worker process and
        #: runs beside actors that may hold every CPU); a map over them takes the same resources and
        #: a task pool of the same size (``map_args``), so Ray fuses it into the read task and no raw
        #: block enters the object store
        readers = max(1, min(len(self.parts), os.cpu_count() or 1))
        self.read_args = {"num_cpus": 0, "concurrency": readers}
        self.map_args = {"num_cpus": 0, "compute": ray.data.TaskPoolStrategy(size=readers)}
        self.scan: SourceScan | None = None
        self.stream: ShardStream | None = None
        self.closed = False
        #: the task pipeline's gate file while its read task may wait on it (see :meth:`run`)
        self.gate: Path | None = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        (self.ctx.execution_options.preserve_order, self.ctx.target_max_block_size,
         self.ctx.enable_progress_bars, self.ctx.print_on_execution_start) = self._saved
        gate, self.gate = self.gate, None
        try:
            if gate is not None and not gate.exists():  # a read task waiting at the gate ends instead of hanging
                write_bytes_atomic(b"", gate)
        except OSError as e:  # the run's own error matters more; Ray's shutdown ends the task
            log.warning("could not close the task pipeline's gate %s: %s", gate, e)
        if self.started:
            t0 = time.perf_counter()
            if not self.address:
                stop_autoscaler_monitor(self.ray)
            self.ray.shutdown()
            self.shutdown_seconds = time.perf_counter() - t0
            log.info("Ray shut down in %.1fs", self.shutdown_seconds)
            if gate is not None:  # no read task is left to see it
                gate.unlink(missing_ok=True)

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
                                                 **self.map_args)
            with tqdm(desc="read (statistics pass, ray)", unit=" captions", mininterval=0.5) as bar:
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

    def _tasks(self, plan_ref: Any) -> Any:
        """The task pipeline: one read task yielding the plan's tasks, then the actors."""
        ray, cfg = self.ray, self.cfg
        self.ctx.target_max_block_size = 1  # every task (one row) its own block
        ds = ray.data.read_datasource(_datasource([lambda: _task_rows(plan_ref)]), override_num_blocks=1,
                                      num_cpus=_TASK_READ_CPUS)
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for an actor's restarts yet (the remote-args form is
            # deprecated for removal in 2.64); without them Ray would retry a crashing task forever
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            return ds.map_batches(
                _StageActor,
                fn_constructor_kwargs={"cfg": cfg, "init_fn": self.init_fn, "fns": self.fns},
                batch_size=1,  # one task per call
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=cfg.ray.actors, max_tasks_in_flight_per_actor=_PER_ACTOR),
                num_cpus=cfg.ray.actor_cpus,
                max_restarts=cfg.ray.max_retries,
                max_task_retries=cfg.ray.max_retries,
            )

    def run(self, task_of: Callable[..., Any], resources: str | None, done: dict[int, Any], total: int,
            corpus: Any = None) -> None:
        """The corpus pass (when ``corpus``) and then every shard not in ``done``, on the task
        pipeline's actors; results go into ``corpus`` and ``done``. ``task_of(resources_file, i,
        split, records)`` is the stage's task for a shard, ``resources`` the resources file when
        there is no corpus pass. Closes the engine (and a Ray instance it started) when it fails.

        The pipeline starts now, after the statistics pass, so its read task reuses the worker
        process that read the source (on two cores a fresh one costs more than the actors gain by
        loading spaCy beside the statistics pass; on a cluster they start on other nodes anyway)."""
        with self._closing_on_error():
            assert self.stream is not None
            if corpus is None and not total:
                return
            if corpus is not None:  # the read task waits for the corpus pass's resources
                self.scratch.mkdir(parents=True, exist_ok=True)
                self.gate = self.scratch / f".ray-gate-{uuid.uuid4().hex}"
            plan = _TaskPlan(self.stream, task_of, resources, frozenset(done),
                             corpus.plan if corpus is not None else None, self.recount,
                             str(self.gate) if self.gate else None)
            self._collect(self._tasks(self.ray.put(plan)), done, total, corpus)
            if self.gate is not None:
                self.gate.unlink(missing_ok=True)
                self.gate = None

    def _collect(self, ds: Any, done: dict[int, Any], total: int, corpus: Any) -> None:
        counting, counted, expected = corpus is not None, 0, -1
        bar = tqdm(desc="corpus pass (ray)" if counting else "generate (ray)", unit=" captions",
                   total=None if counting else total, mininterval=2, smoothing=0.1)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
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
                        assert self.gate is not None
                        write_bytes_atomic(corpus.resources_path.encode("utf-8"), self.gate)
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
                                                 batch_format="pyarrow", **self.engine.map_args)
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield from _records_of(batch)
