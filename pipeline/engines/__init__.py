"""How ``hardneg generate`` runs: the local engine's bounded-memory input, and the Ray engine.

Both engines write the same rows for the same config (ids, negatives, provenance); only the shard
layout may differ. They share one implementation of everything that decides a row:

- the records and the skips come from :func:`pipeline.sources.iter_source`, filtered by
  :func:`streaming.kept_records` (the ``too_long`` rule);
- the corpus statistics come from the same bounded, seeded sample (:mod:`pipeline.engines.common`);
- the captions of one image meet in one unit of work (a shard, on a worker process or a Ray actor);
- the per-caption work is :func:`pipeline.rules.negatives.add_negatives`.

Layering: this package sits between the stage (``pipeline.generate``, which dispatches to it) and
the per-caption work, sources and parsing; nothing below imports it.
"""

from __future__ import annotations

from pipeline.config import ENGINES  # noqa: F401  (the values of ``GenerateConfig.engine``)
