"""``engine: ray``: stage 1 on a pool of Ray actors (a local Ray or a cluster), writing the rows
the local engine writes.

The stage (``pipeline.generate``) keeps what does not depend on the engine: the run's identity,
resume, the statistics, publishing the shards and the manifest. This engine runs the local engine's
passes with Ray actors in place of worker processes:

1. **actors first**: ``ray.actors`` actors start as soon as Ray is up; each loads the spaCy
   pipeline once with the local engine's worker initializer (passed in by the stage), while the
   driver reads.
2. **statistics** (pass 1) on the driver with the local engine's own code
   (:func:`~pipeline.engines.streaming.scan_source`): skip counts, the shard plan, the
   statistics-sample threshold, the duplicate-id check; the statistics sample is re-read there too.
   Reading is one process either way (the project's readers number rows and count bad ones), so
   it runs where the source is, without a round trip through Ray's object store.
3. **corpus pass**: the local engine's count tasks (one per shard: the shard's sampled captions)
   go to the actors, which parse them, keep their token tables in the work folder for the
   negatives pass and return the counts; the driver sums them, compiles the tables and writes the
   run's resources to the work folder, where each actor loads them once.
4. **negatives pass**: the driver cuts the shards as the source streams by
   (:class:`~pipeline.engines.streaming.ShardStream`, with the on-disk grouping when the source
   scatters an image's captions) and hands each to an actor (``_PER_ACTOR`` queued per actor), which
   runs the local engine's shard function on it (one implementation of the rules, two engines):
   it reuses the corpus pass's parses, writes the shard and its stats file atomically and returns
   the shard's summary.

Invariants:

- Same rows as the local engine for the same config; even the shards are the same, because both
  engines cut them with the same code.
- Reads run on the driver: the source is a path or Hugging Face dataset the driver can read. The
  actors may run on any node, so on a cluster the output folder (which holds the work folder) must
  be one every node sees (a shared filesystem).
- Faults: an actor that dies is restarted by Ray and its task retried (``ray.max_retries`` times);
  a restarted actor loads the model and the resources file again, and a retried shard is written
  again, atomically, with the same bytes. A driver that dies leaves its finished shards; the rerun
  skips them (they are not sent to the actors, not parsed).
- The driver holds what the local engine's driver holds: the plan, the sample threshold, at most
  ``_PER_ACTOR`` tasks per actor, the summed counts until the tables are compiled, and the shard
  results (O(shards)), never the input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.config import GenerateConfig
from pipeline.core.errors import ConfigError
from pipeline.engines.streaming import SampleRecords, ShardStream, SourceScan, scan_source

log = logging.getLogger(__name__)

#: tasks queued per actor: one running, one waiting, so an actor never waits for the driver
_PER_ACTOR = 2


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError(
            f"engine: ray needs Ray ({e}); install it with `pip install 'hardneg[ray]'`"
        ) from None
    return ray


class _StageActor:
    """A Ray actor running the stage's task functions: the spaCy pipeline loaded once, when the
    actor starts, by the local engine's worker initializer; then whichever of the local engine's
    functions (corpus count, shard) each call names, on one task (one implementation of the rules,
    two engines). The run's resources come from the file a shard task names, so an actor that Ray
    restarts loads them again by itself."""

    def __init__(self, cfg: GenerateConfig, init_fn: Callable[[GenerateConfig], None]) -> None:
        init_fn(cfg)

    def run(self, fn: Callable[[Any], Any], task: Any) -> Any:
        return fn(task)


# --------------------------------------------------------------------------- the engine


class RayEngine:
    """The passes on Ray (see the module docstring); ``close`` leaves Ray as it was found."""

    def __init__(self, cfg: GenerateConfig, scratch: Path, init_fn: Callable[[GenerateConfig], None]) -> None:
        self.ray = ray = import_ray()
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
        self.scan: SourceScan | None = None
        self.stream: ShardStream | None = None
        self.closed = False
        # the actors start now and load spaCy while the driver reads the source
        actor = ray.remote(_StageActor).options(
            num_cpus=cfg.ray.actor_cpus, max_restarts=cfg.ray.max_retries, max_task_retries=cfg.ray.max_retries)
        self.actors = [actor.remote(cfg, init_fn) for _ in range(cfg.ray.actors)]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()

    @contextmanager
    def _closing_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.close()
            raise

    def scan_source(self) -> SourceScan:
        """Pass 1 on the driver, with the local engine's code, while the actors start."""
        with self._closing_on_error():
            self.scan = scan_source(self.cfg, self.scratch)
            self.stream = ShardStream(self.cfg, self.scan, self.scratch)  # the on-disk grouping, when needed
        return self.scan

    @property
    def plan(self) -> list[tuple[str, int]]:
        assert self.stream is not None
        return self.stream.plan

    def sample(self) -> SampleRecords:
        assert self.scan is not None
        return SampleRecords(self.cfg, self.scan)

    def run(self, worker: tuple[Any, Any], make_task: Callable[..., Any], done: dict[int, Any], total: int,
            corpus: Any = None) -> None:
        """The corpus pass (when ``corpus``) and then every shard not in ``done``, on the actors;
        results go into ``corpus`` and ``done``. ``worker`` is the stage's ``(shard_fn, count_fn)``,
        ``make_task(i, split, records)`` its task for a shard. Closes the engine (and a Ray instance
        it started) when it fails."""
        shard_fn, count_fn = worker
        with self._closing_on_error():
            if corpus is not None:
                self._corpus_pass(count_fn, corpus)
            if total:
                self._negatives_pass(shard_fn, make_task, done, total)

    def _dispatch(self, fn: Callable[[Any], Any], tasks: Iterable[Any], collect: Callable[[Any], None]) -> None:
        """Run ``tasks`` on the actors as they are produced, ``_PER_ACTOR`` queued on each (so an
        actor never waits for its next task), results to ``collect`` as they finish. A task whose
        actor died is retried on the restarted actor by Ray (``ray.max_retries``)."""
        ray = self.ray
        free = [a for _ in range(_PER_ACTOR) for a in self.actors]
        pending: dict[Any, Any] = {}

        def finish_one() -> None:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                free.append(pending.pop(ref))
                collect(ray.get(ref))

        for task in tasks:
            if not free:
                finish_one()
            actor = free.pop(0)
            pending[actor.run.remote(fn, task)] = actor
        while pending:
            finish_one()

    def _corpus_pass(self, count_fn: Any, corpus: Any) -> None:
        """The local engine's corpus pass with its count tasks on the actors: the sample of each shard
        parsed once, its token tables kept in the work folder for the negatives pass, the counts
        summed here. Token tables an interrupted run kept are recounted, not parsed."""
        assert self.stream is not None
        sizes: dict[int, int] = {}
        with tqdm(desc="corpus pass (ray)", unit=" captions", mininterval=2,
                  leave=False) as bar:

            def todo() -> Iterator[Any]:
                for ct in corpus.tasks(self.stream):
                    if not corpus.recount(ct):
                        sizes[ct.index] = len(ct.records)
                        yield ct

            def collect(result: tuple[int, Any, Any]) -> None:
                i, counts, nouns = result
                n = sizes.pop(i)
                corpus.add(i, counts, nouns, n)
                bar.update(n)

            self._dispatch(count_fn, todo(), collect)
        corpus.finish()

    def _negatives_pass(self, shard_fn: Any, make_task: Any, done: dict[int, Any], total: int) -> None:
        assert self.stream is not None
        stream = self.stream
        tasks = (make_task(i, split, records) for i, split, records in stream if i not in done)
        with tqdm(total=total, desc="generate (ray)", unit=" captions", smoothing=0.1) as bar:

            def collect(result: tuple[int, Any, Any]) -> None:
                i, stats, info = result
                done[i] = (stats, info)
                bar.update(stats.rows)

            self._dispatch(shard_fn, tasks, collect)
