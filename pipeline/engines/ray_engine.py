"""``engine: ray``: stage 1 on a Ray cluster with Ray Data, writing the rows the local engine writes.

The stage (``pipeline.generate``) keeps what does not depend on the engine: the run's identity,
resume, publishing the shards and the manifest. This engine supplies the three passes:

1. **statistics**: the source is a Ray Dataset read by the project's readers inside a Ray read task
   (:class:`CaptionSource`); a ``map_batches`` summarises each block (16-byte record keys, skips,
   runs of one image's captions) and the driver aggregates the summaries with the same
   :class:`~pipeline.engines.streaming.ScanBuilder` the local engine feeds record by record: skip
   counts, the shard plan, the statistics-sample threshold, the duplicate-id check.
2. **sample and corpus pass**: the sample's records stream to the driver in source order
   (:class:`RaySample`) for the statistics the stage computes there (the replace families' word
   counts); the plausibility corpus pass runs the local engine's count tasks (one per shard, the
   shard's sampled captions) on a pool of actors, which keep their parses in the work folder, and
   the driver sums the counts. The run's resources are then put in the object store once.
3. **negatives**: a read task cuts the shards exactly as the local engine does
   (:class:`~pipeline.engines.streaming.ShardStream`, with the on-disk grouping when the source
   scatters an image's captions); ``map_batches`` with a pool of stateful actors runs them. Each
   actor loads the spaCy pipeline once with the local engine's worker initializer and runs the
   local engine's shard function (passed in by the stage: one implementation, two engines), which
   writes the shard and its stats file atomically; the driver collects one summary row per shard.

Invariants:

- Same rows as the local engine for the same config; even the shards are the same, because both
  engines cut them with the same code.
- Reads run on the driver's node (``supports_distributed_reads`` is False): the source is a path
  or Hugging Face dataset the driver can read. The actors may run on any node, so on a cluster the
  output folder must be one every node sees (a shared filesystem).
- Faults: an actor that dies is restarted and its batch retried (``ray.max_retries`` times); a
  retried shard is written again, atomically, with the same bytes. A driver that dies leaves its
  finished shards; the rerun skips them (they are not read into the negatives pass, not parsed).
- The driver holds the summaries of one block at a time, the plan, the sample threshold, the
  corpus pass's count tasks (the sampled captions: at most ``plausibility.sample_captions``) and
  the shard results (O(shards)), never the input.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.config import GenerateConfig
from pipeline.core.errors import ConfigError, HardnegError
from pipeline.engines.common import ALL, MAX_EXAMPLES, classify, record_key, sample_hash
from pipeline.engines.streaming import ScanBuilder, ShardStream, SourceScan, source_items
from pipeline.records import CaptionRecord

log = logging.getLogger(__name__)

RECORD_COLUMNS = ("id", "caption", "image_path", "source", "split", "group", "image_bytes")
#: blocks of the source's items when it is read for the statistics (what one summary task and the
#: driver hold at a time; each block costs Ray a task, so not much smaller)
_RAW_BLOCK_BYTES = 4 << 20
#: items per table the read task builds (Ray then merges tables up to ``_RAW_BLOCK_BYTES``)
_RAW_TABLE_ROWS = 1000
#: the read task reserves no CPU: it is light next to parsing, and with any reservation ``actors``
#: one-CPU actors on a machine of ``actors`` CPUs would leave it unscheduled forever
_READ_CPUS = 0


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"engine: ray needs Ray Data ({e}); install it with `pip install 'hardneg[ray]'`"
        ) from None
    return ray


def _records_of(table: Any) -> list[CaptionRecord]:
    cols = [table.column(c).to_pylist() for c in RECORD_COLUMNS]
    return [CaptionRecord(*row) for row in zip(*cols)]


# --------------------------------------------------------------------------- the source in Ray


def _raw_blocks(cfg: GenerateConfig, block_rows: int) -> Iterator[Any]:
    """The source's items in blocks, in source order: records with their key, and the skips
    (``skip`` holds the reason, ``where`` the location) so that a summary can count them."""
    import pyarrow as pa

    names = (*RECORD_COLUMNS, "key", "skip", "where")
    types = [pa.string()] * 6 + [pa.binary(), pa.binary(), pa.string(), pa.string()]
    cols: dict[str, list[Any]] = {c: [] for c in names}
    for item in source_items(cfg):
        skip = classify(item, cfg.max_chars)
        if skip is None:
            for c in RECORD_COLUMNS:
                cols[c].append(getattr(item, c))
            cols["key"].append(record_key(item.id, cfg.seed))  # type: ignore[union-attr]
            cols["skip"].append(None)
            cols["where"].append(None)
        else:
            for c in (*RECORD_COLUMNS, "key"):
                cols[c].append(None)
            cols["skip"].append(skip[0])
            cols["where"].append(skip[1])
        if len(cols["skip"]) >= block_rows:
            yield pa.table([pa.array(cols[c], t) for c, t in zip(names, types)], names=list(names))
            cols = {c: [] for c in names}
    if cols["skip"]:
        yield pa.table([pa.array(cols[c], t) for c, t in zip(names, types)], names=list(names))


def _shard_rows(cfg: GenerateConfig, scan: SourceScan, scratch: str, skip: frozenset[int],
                make_task: Callable[[int, str, list[CaptionRecord]], Any]) -> Iterator[Any]:
    """One row per shard still to do, cut by the local engine's :class:`ShardStream`: the stage's
    task for it, pickled in one cell, so Ray, which merges and splits blocks at will, never splits
    a shard."""
    import pyarrow as pa

    for i, split, records in ShardStream(cfg, scan, Path(scratch)):
        if i not in skip:
            task = pickle.dumps(make_task(i, split, records), protocol=pickle.HIGHEST_PROTOCOL)
            yield pa.table({"shard": pa.array([i], pa.int64()), "rows": pa.array([len(records)], pa.int64()),
                            "task": pa.array([task], pa.large_binary())})


def _make_source(cfg: GenerateConfig, mode: str, **kw: Any) -> Any:
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class CaptionSource(Datasource):
        """The project's readers as a Ray datasource: one read task, on the driver's node."""

        @property
        def supports_distributed_reads(self) -> bool:
            return False

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None) -> list[Any]:
            meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
            if mode == "raw":
                return [ReadTask(lambda: _raw_blocks(cfg, kw["block_rows"]), meta)]
            return [ReadTask(lambda: _shard_rows(cfg, kw["scan"], kw["scratch"], kw["skip"], kw["make_task"]), meta)]

    return CaptionSource()


def _summarize(batch: Any) -> Any:
    """One row per block: its records' keys, runs of one image's captions, skips and examples."""
    import pyarrow as pa

    skip = batch.column("skip").to_pylist()
    where = batch.column("where").to_pylist()
    keys = batch.column("key").to_pylist()
    splits = batch.column("split").to_pylist()
    groups = batch.column("group").to_pylist()
    runs: list[list[Any]] = []
    skips: Counter = Counter()
    examples: list[str] = []
    key_bytes = bytearray()
    for k, s, w, sp, g in zip(keys, skip, where, splits, groups):
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
    """The aggregation of pass 1: block summaries, in source order, into ``b``; returns the records."""
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
        if threshold == ALL:
            return batch.select(list(RECORD_COLUMNS))
        mask = [sample_hash(k) <= threshold for k in batch.column("key").to_pylist()]
        return batch.filter(mask).select(list(RECORD_COLUMNS))

    return keep


class _StageActor:
    """A Ray actor running the stage's task functions: the spaCy pipeline loaded once per actor by the
    local engine's worker initializer, then the local engine's shard (or corpus count) function on
    each task it is given (one implementation of the rules, two engines)."""

    def __init__(self, cfg: GenerateConfig, resources: list[Any], init_fn: Callable[..., Any],
                 task_fn: Callable[[Any], Any]) -> None:
        import ray

        init_fn(cfg, ray.get(resources[0]))
        self.task_fn = task_fn

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        out_i, out_r = [], []
        for i, n, blob in zip(*(batch.column(c).to_pylist() for c in ("shard", "rows", "task"))):
            task = pickle.loads(blob)
            if len(task.records) != n:
                raise HardnegError(f"shard {i} arrived with {len(task.records)} of its {n} captions")
            out_i.append(i)
            out_r.append(pickle.dumps(self.task_fn(task), protocol=pickle.HIGHEST_PROTOCOL))
        return pa.table({"shard": pa.array(out_i, pa.int64()), "result": pa.array(out_r, pa.large_binary())})


# --------------------------------------------------------------------------- the engine


class RayEngine:
    """The three passes on Ray (see the module docstring); ``close`` leaves Ray as it was found."""

    def __init__(self, cfg: GenerateConfig, scratch: Path) -> None:
        self.ray = ray = import_ray()
        from ray.data.context import DataContext

        self.cfg, self.scratch = cfg, scratch
        self.started = not ray.is_initialized()
        t0 = time.perf_counter()
        if self.started:
            if cfg.ray.address:
                ray.init(address=cfg.ray.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False)
        self.init_seconds = time.perf_counter() - t0
        log.info("Ray %s: %s CPUs (ray.init %.1fs)", ray.__version__, ray.cluster_resources().get("CPU"), self.init_seconds)
        self.ctx = DataContext.get_current()
        self._saved = (self.ctx.execution_options.preserve_order, self.ctx.target_max_block_size,
                       self.ctx.enable_progress_bars)
        self.ctx.execution_options.preserve_order = True  # summaries and the sample in source order
        self.ctx.target_max_block_size = _RAW_BLOCK_BYTES
        self.ctx.enable_progress_bars = False
        self.scan: SourceScan | None = None
        self.stream: ShardStream | None = None
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        (self.ctx.execution_options.preserve_order, self.ctx.target_max_block_size,
         self.ctx.enable_progress_bars) = self._saved
        if self.started:
            self.ray.shutdown()

    def _raw(self) -> Any:
        return self.ray.data.read_datasource(
            _make_source(self.cfg, "raw", block_rows=_RAW_TABLE_ROWS), num_cpus=_READ_CPUS,
            override_num_blocks=1,  # one read task; never re-split its blocks
        )

    def scan_source(self) -> SourceScan:
        """Pass 1 as a map (block summaries) plus an aggregation on the driver."""
        with self._closing_on_error():
            return self._scan_source()

    @contextmanager
    def _closing_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.close()
            raise

    def _scan_source(self) -> SourceScan:
        t0 = time.perf_counter()
        b = ScanBuilder(self.cfg, self.scratch)
        summaries = self._raw().map_batches(_summarize, batch_size=None, batch_format="pyarrow", zero_copy_batch=True)
        bar = tqdm(desc="read (pass 1, ray)", unit=" captions", mininterval=2, leave=False)
        for batch in summaries.iter_batches(batch_size=None, batch_format="pyarrow"):
            bar.update(add_summaries(b, batch))
        bar.close()
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

    def run(self, resources: Any, worker: tuple[Any, Any, Any], make_task: Callable[..., Any],
            done: dict[int, Any], total: int, corpus: Any = None) -> None:
        """The corpus pass (when ``corpus``) and then every shard not in ``done`` through pools of
        actors; results go into ``corpus`` and ``done``. ``worker`` is the stage's
        ``(init_fn, shard_fn, count_fn)``, ``make_task(i, split, records)`` its task for a shard.
        Closes the engine (and a Ray instance it started) when it returns or fails."""
        init_fn, shard_fn, count_fn = worker
        try:
            if corpus is not None:
                self._corpus_pass(resources, init_fn, count_fn, corpus)
            if total:
                self._negatives_pass(resources, init_fn, shard_fn, make_task, done, total)
        finally:
            self.close()

    def _actors(self, ds: Any, resources: Any, init_fn: Any, task_fn: Any) -> Any:
        cfg = self.cfg
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for an actor's restarts yet (the remote-args form is
            # deprecated for removal in 2.64); without them Ray would retry a crashing shard forever
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            return ds.map_batches(
                _StageActor,
                fn_constructor_kwargs={"cfg": cfg, "resources": [self.ray.put(resources)], "init_fn": init_fn,
                                       "task_fn": task_fn},
                batch_size=1,  # one task per call
                batch_format="pyarrow",
                compute=self.ray.data.ActorPoolStrategy(size=cfg.ray.actors),
                num_cpus=cfg.ray.actor_cpus,
                max_restarts=cfg.ray.max_retries,
                max_task_retries=cfg.ray.max_retries,
            )

    def _corpus_pass(self, resources: Any, init_fn: Any, count_fn: Any, corpus: Any) -> None:
        """The local engine's corpus pass with its count tasks on actors: the sample of each shard
        parsed once, its token tables kept in the work folder for the negatives pass, the counts
        summed here. Token tables an interrupted run kept are recounted, not parsed."""
        assert self.stream is not None
        todo = [ct for ct in corpus.tasks(self.stream) if not corpus.recount(ct)]  # the sample: bounded
        if todo:
            sizes = {ct.index: len(ct.records) for ct in todo}
            rows = [{"shard": ct.index, "rows": len(ct.records), "task": pickle.dumps(ct)} for ct in todo]
            ds = self.ray.data.from_items(rows, override_num_blocks=len(rows))  # one block per task
            with tqdm(total=sum(len(ct.records) for ct in todo), desc="corpus pass (ray)", unit=" captions",
                      mininterval=2, leave=False) as bar:
                for batch in self._actors(ds, resources, init_fn, count_fn).iter_batches(
                        batch_size=None, batch_format="pyarrow"):
                    for blob in batch.column("result").to_pylist():
                        i, counts, nouns = pickle.loads(blob)
                        corpus.add(i, counts, nouns, sizes[i])
                        bar.update(sizes[i])
        corpus.finish()

    def _negatives_pass(self, resources: Any, init_fn: Any, shard_fn: Any, make_task: Any,
                        done: dict[int, Any], total: int) -> None:
        assert self.scan is not None
        self.ctx.target_max_block_size = 1  # every shard (one row) its own block: actors share the work
        ds = self.ray.data.read_datasource(
            _make_source(self.cfg, "shards", scan=self.scan, scratch=str(self.scratch), skip=frozenset(done),
                         make_task=make_task),
            num_cpus=_READ_CPUS,
            override_num_blocks=1,  # one read task, cutting shards in the plan's order
        )
        with tqdm(total=total, desc="generate (ray)", unit=" captions", smoothing=0.1) as bar:
            for batch in self._actors(ds, resources, init_fn, shard_fn).iter_batches(
                    batch_size=None, batch_format="pyarrow"):
                for blob in batch.column("result").to_pylist():
                    i, stats, info = pickle.loads(blob)
                    done[i] = (stats, info)
                    bar.update(stats.rows)


class RaySample:
    """The statistics sample streamed from Ray in source order; re-iterable, ``len`` is its size."""

    def __init__(self, engine: RayEngine, scan: SourceScan) -> None:
        self.engine, self.threshold, self.size = engine, scan.sample_threshold, scan.sample_size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[CaptionRecord]:
        with self.engine._closing_on_error():
            ds = self.engine._raw().map_batches(_sample_filter(self.threshold), batch_size=None, batch_format="pyarrow")
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield from _records_of(batch)
