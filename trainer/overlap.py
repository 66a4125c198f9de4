"""Evaluation images in a training dataset: found before training starts.

``data.eval_sets`` names evaluation files (any :mod:`pipeline.contract.eval_images` reads, or a suite
YAML, whose benchmarks' files are taken); before the model is built, the image path of every
training row is compared with their images under the one key per image of that module (so
``COCO_train2014_000000123456.jpg`` in the shards matches ``000000123456.jpg`` in SugarCrepe). Shared
images are a warning that names how many rows, how many images and examples; with
``data.strict_eval_overlap`` the run refuses to start. The shards' image column is read (its
``path`` field only, never the image bytes) rather than a list in the manifest: it is what training
sees, it needs no change to datasets written before, and its cost is one column of the shards. Rows
whose image is embedded without a path cannot be compared; they are counted and said.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from pipeline.contract import schema
from pipeline.contract.eval_images import image_key, read_eval_images
from pipeline.core.errors import SourceError
from trainer.data import ShardIndex

log = logging.getLogger(__name__)

_SUITE_SUFFIXES = (".yaml", ".yml")


@dataclass
class Overlap:
    """Training rows whose image is in an evaluation set."""

    rows: int = 0
    images: set[str] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)
    #: rows with no image path (embedded bytes only): not compared
    unchecked: int = 0


def eval_set_files(paths: Sequence[str]) -> list[str]:
    """The evaluation files behind ``paths``: a suite YAML stands for its benchmarks' files."""
    from trainer.suite import suite_files

    out: list[str] = []
    for p in paths:
        out += suite_files(p) if Path(p).suffix.lower() in _SUITE_SUFFIXES else [p]
    return out


def _image_paths(index: ShardIndex) -> Iterator[str | None]:
    path_col = f"{schema.IMAGE}.path"
    for f, g, _ in index.units:
        try:
            table = index.open(f).read_row_group(g, columns=[path_col])
        except (OSError, ValueError, pa.ArrowException) as e:
            raise SourceError(f"{index.files[f].path}: row group {g}: cannot read its image paths ({e})") from None
        yield from table.column(schema.IMAGE).combine_chunks().field("path").to_pylist()


def find_overlap(index: ShardIndex, eval_sets: Sequence[str]) -> Overlap:
    keys = read_eval_images(eval_set_files(eval_sets))
    found = Overlap()
    for ref in _image_paths(index):
        if not ref:
            found.unchecked += 1
            continue
        k = image_key(ref)
        if k in keys:
            found.rows += 1
            found.images.add(k)
            if len(found.examples) < 3:
                found.examples.append(ref)
    return found


def check_eval_overlap(index: ShardIndex, eval_sets: Sequence[str], strict: bool, dataset: str,
                       report: bool = True) -> Overlap:
    """Warn (``report``) when the training rows show images of ``eval_sets``; refuse with ``strict``."""
    found = find_overlap(index, eval_sets)
    if found.unchecked and report:
        log.warning("%s: %d training rows hold an embedded image without a path; they were not compared with "
                    "the evaluation sets", dataset, found.unchecked)
    if found.rows:
        msg = (f"{dataset}: {found.rows} training rows ({len(found.images)} images) show images of the evaluation "
               f"sets {list(eval_sets)}, e.g. {', '.join(found.examples)}; regenerate the dataset with "
               "hardneg generate --exclude-images <those files> (source.exclude_images) to leave them out")
        if strict:
            raise SourceError(msg + " (data.strict_eval_overlap is set, so training does not start)")
        if report:
            log.warning("%s", msg)
    elif report:
        log.info("%s: no training image is in the evaluation sets %s", dataset, list(eval_sets))
    return found
