"""Which images an evaluation set uses, so that none of them is trained on.

One key per image, whatever the spelling: a COCO image is ``coco:<id>`` whether it is written
``val2014/COCO_val2014_000000123456.jpg``, ``000000123456.jpg`` (val2017), an integer field
(``cocoid``, ``image_id``) or a bare ``123456`` line of a text list; any other image is
``file:<base name>`` (``file:1000092795.jpg`` for Flickr30k, ``file:2316414.jpg`` for a Visual
Genome image of ARO). A name counts as COCO only when it carries COCO's zero-padded 12-digit id, so
a Visual Genome or Flickr number is never read as a COCO id.

:func:`read_eval_images` reads the files of the benchmarks (SugarCrepe and SugarCrepe++ JSON,
ARO JSON, VALSE JSON, Winoground's ``examples.jsonl`` or parquet export, a Karpathy split JSON, a COCO annotation
file, a plain text list with one name or id per line) into a set of keys. Stage 1 drops the captions
whose image key is in that set (``source.exclude_images``, counted as ``excluded_eval_image``);
stage 2 compares the shards' image paths with it before training. Both call :func:`image_key`, the
one definition of an image's identity. A file none of whose records names an image is an error that
names the file and the record.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import SourceError

#: the skip reason of a caption dropped because its image is in an evaluation set
EXCLUDED_REASON = "excluded_eval_image"

#: record fields that name an image, in the order they are looked for
IMAGE_FIELDS = ("filename", "file_name", "image_path", "image_file", "image")
#: record fields that hold a COCO image id
COCO_ID_FIELDS = ("cocoid", "image_id")
#: Karpathy splits that are held out (evaluated on); ``train`` and ``restval`` images are not
HELD_OUT_SPLITS = ("val", "test")

_COCO_NAME = re.compile(r"^(?:COCO_[A-Za-z]+\d*_)?(\d{12})\.[A-Za-z]+$")


def image_key(ref: str | int) -> str | None:
    """The key of an image reference (a path, a file name, or a COCO id); None for an empty one."""
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        return f"coco:{ref}"
    name = str(ref).strip().replace("\\", "/").rsplit("/", 1)[-1]
    if not name:
        return None
    m = _COCO_NAME.match(name)
    if m:
        return f"coco:{int(m.group(1))}"
    if name.isdigit():
        return f"coco:{int(name)}"
    return f"file:{name}"


def _record_keys(rec: Any, where: str) -> list[str]:
    if not isinstance(rec, dict):
        raise SourceError(f"{where}: expected an object naming an image, found {type(rec).__name__}")
    keys = []
    for f in COCO_ID_FIELDS:
        v = rec.get(f)
        if isinstance(v, int) and not isinstance(v, bool):
            keys.append(f"coco:{v}")
        elif isinstance(v, str) and v.strip().isdigit():
            keys.append(f"coco:{int(v)}")
    for f in IMAGE_FIELDS:
        v = rec.get(f)
        if isinstance(v, str) and (k := image_key(v)):
            keys.append(k)
    for f in ("image_0", "image_1"):  # Winoground: two images per example, named without a suffix
        v = rec.get(f)
        if isinstance(v, str) and v.strip():
            keys.append(f"file:{v.strip()}.png")
    if not keys:
        raise SourceError(f"{where}: names no image: expected one of {list(COCO_ID_FIELDS + IMAGE_FIELDS)} "
                          f"or image_0/image_1; keys found: {sorted(rec)}")
    return keys


def _json_records(doc: Any, path: str) -> Iterator[tuple[Any, str]]:
    """``(record, where)`` of a benchmark JSON: a list, an object of records, a Karpathy split file
    (held-out splits only) or a COCO annotation file (its ``images``)."""
    if isinstance(doc, dict) and isinstance(doc.get("images"), list):
        images = doc["images"]
        karpathy = any(isinstance(e, dict) and "split" in e for e in images)
        for i, e in enumerate(images):
            if karpathy and isinstance(e, dict) and e.get("split") not in HELD_OUT_SPLITS:
                continue
            if isinstance(e, dict) and not karpathy and "id" in e:
                e = {"image_id": e["id"], **{k: v for k, v in e.items() if k != "id"}}
            yield e, f"{path}: images[{i}]"
    elif isinstance(doc, dict):
        for k, e in doc.items():
            yield e, f"{path}: item {k!r}"
    elif isinstance(doc, list):
        for i, e in enumerate(doc):
            yield e, f"{path}: item {i}"
    else:
        raise SourceError(f"{path}: expected a JSON list or object of benchmark items, found {type(doc).__name__}")


def _parquet_records(path: str) -> Iterator[tuple[Any, str]]:
    """``(record, where)`` of a parquet benchmark file (Winoground's parquet export): its id and
    image-naming columns, an image struct read as its ``path`` only (never the bytes). An image
    without a path is named as ``examples.jsonl`` names it, ``ex_<id>_img_<N>``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        cols = [n for n in ("id", *COCO_ID_FIELDS, *IMAGE_FIELDS, "image_0", "image_1") if n in schema.names]
        struct = {n for n in cols if pa.types.is_struct(schema.field(n).type)}
        table = pf.read(columns=[f"{n}.path" if n in struct else n for n in cols])
        values = {n: (table.column(n).combine_chunks().field("path") if n in struct else table.column(n)).to_pylist()
                  for n in cols}
    except (OSError, KeyError, pa.ArrowException) as e:
        raise SourceError(f"cannot read evaluation file {path}: {e}") from e
    for n in range(table.num_rows):
        rec = {k: v[n] for k, v in values.items()}
        for i in (0, 1):
            k = f"image_{i}"
            if k in rec and not rec.get(k) and isinstance(rec.get("id"), int):
                rec[k] = f"ex_{rec['id']}_img_{i}"
            elif isinstance(rec.get(k), str):
                rec[k] = rec[k].rsplit("/", 1)[-1].removesuffix(".png")
        rec.pop("id", None)
        yield rec, f"{path}: row {n}"


def _file_keys(path: str) -> frozenset[str]:
    p = Path(path)
    if p.suffix.lower() == ".parquet":
        keys = {k for rec, where in _parquet_records(path) for k in _record_keys(rec, where)}
        if not keys:
            raise SourceError(f"evaluation image list {path} names no image")
        return frozenset(keys)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"cannot read evaluation image list {path}: {e}") from e
    keys: set[str] = set()
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise SourceError(f"{path}: not valid JSON ({e})") from e
        for rec, where in _json_records(doc, path):
            keys.update(_record_keys(rec, where))
    elif p.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SourceError(f"{path}:{n}: not valid JSON ({e})") from e
                keys.update(_record_keys(rec, f"{path}:{n}"))
    else:  # a plain list: one file name, path or COCO id per line; '#' starts a comment
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line and (k := image_key(line)):
                keys.add(k)
    if not keys:
        raise SourceError(f"evaluation image list {path} names no image")
    return frozenset(keys)


@functools.lru_cache(maxsize=8)
def _cached(paths: tuple[str, ...]) -> frozenset[str]:
    return frozenset().union(*(_file_keys(p) for p in paths))


def read_eval_images(paths: Iterable[str]) -> frozenset[str]:
    """The image keys of every given evaluation file (read once per process and list of files)."""
    return _cached(tuple(paths))


def overlapping(refs: Iterable[str | None], keys: frozenset[str]) -> tuple[int, list[str]]:
    """How many of ``refs`` (image paths) fall in ``keys``, and up to five of them."""
    n, examples = 0, []
    for ref in refs:
        if ref and image_key(ref) in keys:
            n += 1
            if len(examples) < 5:
                examples.append(ref)
    return n, examples


def exclude_eval_images(items: Iterator[Any], paths: Iterable[str], skip: Callable[[str, str], Any]) -> Iterator[Any]:
    """``items`` (caption records and skips of a source) with every record whose ``image_path`` is
    in the evaluation files ``paths`` replaced by ``skip(EXCLUDED_REASON, where)``; unchanged when
    ``paths`` is empty. The files are read before the first item is."""
    paths = list(paths)
    if not paths:
        return items
    keys = read_eval_images(paths)

    def run() -> Iterator[Any]:
        for it in items:
            ref = getattr(it, "image_path", None)
            if ref and image_key(ref) in keys:
                yield skip(EXCLUDED_REASON, f"{it.id} ({ref})")
            else:
                yield it

    return run()
