"""Caption readers: turn a caption file, folder or HF dataset into CaptionRecords and counted Skips.

Every reader yields one item per caption row, either a :class:`CaptionRecord` or a :class:`Skip`, so
the caller can count losses by reason instead of losing rows silently. A bad *row* is a Skip; a bad
*file* (unparseable document, missing columns, a record that is not an object) raises
:class:`SourceError` naming the file and the record, because guessing would corrupt the dataset.

Conventions (the same for every format, so ids stay stable across runs):

- ``where`` is ``"<file>:<line>"`` for line-based files (jsonl, csv/tsv; 1-based line numbers) and
  ``"<file>:record <N>"`` for record-based ones (JSON lists, COCO annotations, parquet rows, HF rows;
  N is the 0-based position, i.e. ``data[N]``).
- Derived ids: coco ``coco-<annotation id>``; karpathy ``<image stem>#<i>`` (i counts the captions
  of that image); csv/tsv/parquet ``<file stem>:<row>`` (0-based data row); jsonl
  ``<file stem>:<line>``; hf ``<split>:<row>``. A row holding a list of captions adds ``#<i>``.
  With ``id_column`` the id is that value (plus ``#<i>`` when the row holds several captions).
- ``group`` is the image reference (path, COCO image id, or a hash of embedded bytes), so captions of
  one image share it.
- ``split``: ``cfg.split`` when set, else the source's own (COCO file name, HF split name), else a
  ``train``/``val``/``test`` token of the file name, else ``train``. Sources with a split per record
  (Karpathy ``dataset_coco.json``) keep their own, and ``cfg.split`` then *selects* that split rather
  than relabelling every image (relabelling would leak test images into train).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import SourceConfig
from pipeline.contract.eval_images import exclude_eval_images
from pipeline.core.errors import ConfigError, SourceError
from pipeline.core.jsonstream import JsonArray, lazy_json
from pipeline.records import CaptionRecord, Skip

log = logging.getLogger(__name__)

FORMATS = ("coco", "karpathy", "csv", "tsv", "jsonl", "parquet", "hf")
#: formats whose sources can be read in parts (:func:`source_parts`)
_PART_FORMATS = ("csv", "tsv", "jsonl", "parquet")

#: open_clip's default csv/tsv column names, used when the configured ones are absent
OPEN_CLIP_COLUMNS = {"image": "filepath", "caption": "title"}

_CHUNK = 1 << 20
#: a CSV/TSV header line longer than this is not looked for (the file is then read whole, not in parts)
_MAX_HEADER = 1 << 20
_JSON_SUFFIXES = {".json"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_SPLIT_TOKENS = {
    "train": "train",
    "restval": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
}
_HF_DISK_MARKERS = ("dataset_dict.json", "state.json")

Item = CaptionRecord | Skip
#: what a JSON array is read as: a list, or a JsonArray when the document is streamed
_ARRAYS = (list, JsonArray)


# --------------------------------------------------------------------------------------------
# public API


def iter_source(cfg: SourceConfig, *, stream_json: bool = False, unique_ids: bool = True,
                part: SourcePart | None = None) -> Iterator[Item]:
    """Yield one CaptionRecord or Skip per caption row of the source.

    Path and format problems raise at call time; content problems raise while iterating.
    ``stream_json`` reads COCO and Karpathy JSON documents element by element instead of loading
    them whole (:mod:`pipeline.core.jsonstream`; the same items, in bounded memory).
    ``unique_ids=False`` leaves the duplicate-id check, which holds every id, to the caller.
    ``part`` (one of :func:`source_parts`) reads that part alone, with the ids, splits and skip
    locations it has in the whole source; its duplicate-id check then sees that part alone (the
    Ray engine checks the whole source's ids on its driver).
    """
    if cfg.limit is not None and cfg.limit < 0:
        raise ConfigError(f"source.limit must be >= 0, got {cfg.limit}")
    fmt = _resolve_format(cfg)
    name = source_name(cfg)
    if fmt in ("csv", "tsv") and cfg.format != fmt:  # the delimited reader reads its delimiter there
        cfg = _with_format(cfg, fmt)
    if part is not None:
        parquet_part = part.file is not None
        if cfg.limit is not None or fmt not in _PART_FORMATS or parquet_part != (fmt == "parquet"):
            raise ConfigError(f"source {cfg.path} is read whole, not by part ({part})")
        log.debug("reading part %s of %s", part, cfg.path)
        items: Iterator[Item] = (
            _read_parquet(cfg, name, only=part.file) if part.file is not None
            else _read_jsonl(cfg, name, part) if fmt == "jsonl" else _read_delimited(cfg, name, part)
        )
        items = exclude_eval_images(items, cfg.exclude_images, Skip)
        return _check_unique_ids(items) if unique_ids else items
    log.info("reading %s as %s (source name %r)", cfg.path, fmt, name)
    load: Callable[[str], Any] = lazy_json if stream_json else _load_json
    readers: dict[str, Callable[[SourceConfig, str], Iterator[Item]]] = {
        "coco": functools.partial(_read_coco, load=load),
        "karpathy": functools.partial(_read_karpathy, load=load),
        "json": functools.partial(_read_json_any, load=load),
        "csv": _read_delimited,
        "tsv": _read_delimited,
        "jsonl": _read_jsonl,
        "parquet": _read_parquet,
        "hf": _read_hf,
    }
    items = readers[fmt](cfg, name)
    if cfg.limit is not None:
        items = itertools.islice(items, cfg.limit)
    items = exclude_eval_images(items, cfg.exclude_images, Skip)
    return _check_unique_ids(items) if unique_ids else items


@dataclass(frozen=True)
class SourcePart:
    """A piece of a source that reads alone (``iter_source(..., part=p)``) with the ids, splits and
    skip locations it has in the whole source: a file of a Parquet folder (``file``, relative to
    the folder), or the lines of a JSONL/CSV/TSV file from byte ``start`` to ``end`` (line starts),
    the first of them line number ``line``. A CSV/TSV part holds data lines only; its reader takes
    the header from the file's first line."""

    file: str | None = None
    start: int = 0
    end: int = 0
    line: int = 1

    def __str__(self) -> str:
        return self.file if self.file is not None else f"bytes {self.start}-{self.end} (line {self.line})"


#: a line-based file is cut into parts of about this many bytes (Ray Data's blocks are 128 MiB)
PART_BYTES = 64 << 20


def source_parts(cfg: SourceConfig, part_bytes: int | None = None) -> list[SourcePart] | None:
    r"""The parts of the source that can be read apart, in source order, or None when it is read
    whole (in one piece).

    - a Parquet folder: its files (ids and skip locations name the file, not the files before it);
    - a JSONL, CSV or TSV file larger than ``part_bytes`` (default :data:`PART_BYTES`): runs of
      whole lines, found by one pass over the bytes that counts line ends. A CSV/TSV file is cut
      only where each line is one row: no ``\r`` other than in ``\r\n`` (the csv module ends a
      line there too) and, for CSV, no ``"`` (a quoted field may span lines). A TSV is read
      unquoted, so its quotes do not matter.

    A JSON document, a Hugging Face dataset and any source under ``limit`` (which counts across
    the whole source) are read whole.
    """
    fmt = _resolve_format(cfg)
    if cfg.limit is not None or fmt not in _PART_FORMATS:
        return None
    root = Path(cfg.path)
    if fmt == "parquet":
        if not root.is_dir():
            return None
        files = _parquet_files(root)
        return [SourcePart(file=f.relative_to(root).as_posix()) for f in files] if len(files) > 1 else None
    return _line_parts(root, fmt, part_bytes or PART_BYTES)


def _line_parts(path: Path, fmt: str, part_bytes: int) -> list[SourcePart] | None:
    """Cut a line-based file at the first line start after every ``part_bytes`` bytes; None when the
    file is one part or cannot be cut (see :func:`source_parts`)."""
    if not path.is_file() or path.stat().st_size <= part_bytes:
        return None
    try:
        return _cut_lines(path, fmt, part_bytes)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e}") from e


def _one_row_per_line(chunk: bytes, fmt: str) -> bool:
    r"""Whether the csv module reads each line of ``chunk`` (whole ``\r\n`` pairs) as one row."""
    if fmt not in ("csv", "tsv"):
        return True
    return chunk.count(b"\r") == chunk.count(b"\r\n") and not (fmt == "csv" and b'"' in chunk)


def _cut_lines(path: Path, fmt: str, part_bytes: int) -> list[SourcePart] | None:
    t0 = time.perf_counter()
    size = path.stat().st_size
    parts: list[SourcePart] = []
    with path.open("rb") as f:
        start, first = 0, 1  # the part being cut: its first byte and the number of its first line
        if fmt in ("csv", "tsv"):  # parts hold data lines; the header line is read by every part
            header = f.readline(_MAX_HEADER)
            if not header.endswith(b"\n") or not _one_row_per_line(header, fmt):
                return None
            start, first = len(header), 2
        pos, line, target = start, first, start + part_bytes  # ``line``: the number of the line at ``pos``
        carry = b""
        while True:
            chunk = carry + f.read(_CHUNK)
            carry = b""
            if not chunk:
                break
            if chunk.endswith(b"\r"):  # keep \r\n in one chunk for the check below
                more = f.read(1)
                chunk, carry = (chunk + more, b"") if more == b"\n" else (chunk, more)
            if not _one_row_per_line(chunk, fmt):
                log.info("%s: not cut into parts (a CSV quote or a bare \\r: a row may span lines)", path)
                return None
            while target < pos + len(chunk):
                nl = chunk.find(b"\n", max(0, target - pos))
                if nl < 0:
                    break
                cut = pos + nl + 1
                if cut < size:
                    parts.append(SourcePart(start=start, end=cut, line=first))
                    start, first = cut, line + chunk.count(b"\n", 0, nl + 1)
                target = cut + part_bytes
            line += chunk.count(b"\n")
            pos += len(chunk)
    if not parts:
        return None
    parts.append(SourcePart(start=start, end=size, line=first))
    log.info("%s: %d parts of about %d MiB (%d line ends, cut in %.1fs)", path, len(parts), part_bytes >> 20,
             line - 1, time.perf_counter() - t0)
    return parts


def detect_format(path: str) -> str:
    """Guess the format from the extension, and for JSON from the first bytes of the content."""
    p = Path(path)
    if not p.exists():
        if _looks_like_hub_id(path):
            return "hf"
        raise SourceError(f"source path {path} does not exist")
    if p.is_dir():
        if any((p / m).is_file() for m in _HF_DISK_MARKERS):
            return "hf"
        if _parquet_files(p):
            return "parquet"
        return "hf"
    suffix = p.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    if suffix == ".parquet":
        return "parquet"
    kind = _sniff_json(p)
    if kind is None:
        raise SourceError(
            f"{path}: cannot detect the caption format from the name or content; "
            f"set source.format to one of {list(FORMATS)}"
        )
    return kind


def fingerprint(cfg: SourceConfig) -> str:
    """A stable sha256 of the input, so a run can tell that its source changed.

    Local files are hashed byte for byte (folders: sorted relative paths and their bytes). A folder
    written by ``save_to_disk`` uses the fingerprints ``datasets`` stored with it, and a hub dataset
    its name, config, split and revision (the revision only when the hub can be reached).
    """
    p = Path(cfg.path)
    if p.is_file():
        return _hash_files([p], root=None)
    if p.is_dir():
        if any((p / m).is_file() for m in _HF_DISK_MARKERS):
            return _hf_disk_fingerprint(p)
        files = sorted(
            f
            for f in p.rglob("*")
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        if not files:
            raise SourceError(f"source folder {cfg.path} holds no files")
        return _hash_files(files, root=p)
    if _resolve_format(cfg) != "hf":
        raise SourceError(f"source path {cfg.path} does not exist")
    revision = _hub_revision(cfg.path)
    key = json.dumps(
        {"hub": cfg.path, "config": cfg.hf_config, "split": cfg.hf_split, "revision": revision},
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()


def source_name(cfg: SourceConfig) -> str:
    """The ``source`` column value: cfg.name, else the file stem / folder / hub dataset name."""
    if cfg.name:
        return cfg.name
    raw = cfg.path.rstrip("/\\")
    p = Path(raw)
    base = p.stem if (p.suffix and not p.is_dir()) else p.name
    if not p.exists() and "/" in raw and not raw.startswith((".", "/")):
        base = raw.split("/")[-1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_")
    return name or "source"


# --------------------------------------------------------------------------------------------
# shared helpers


def _with_format(cfg: SourceConfig, fmt: str) -> SourceConfig:
    return dataclasses.replace(cfg, format=fmt)


def _resolve_format(cfg: SourceConfig) -> str:
    fmt = (cfg.format or "auto").lower()
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"source.format {cfg.format!r} is unknown; use auto or one of {list(FORMATS)}")
    if not cfg.path:
        raise ConfigError("source.path is required")
    exists = Path(cfg.path).exists()
    if fmt == "hf":
        return fmt
    if not exists:
        if fmt == "auto" and _looks_like_hub_id(cfg.path):
            return "hf"
        raise SourceError(f"source path {cfg.path} does not exist")
    if fmt != "auto":
        return fmt
    detected = detect_format(cfg.path)
    # the JSON reader dispatches on the parsed document, so auto never reads a JSON file twice
    return "json" if detected in ("coco", "karpathy") else detected


def _looks_like_hub_id(path: str) -> bool:
    """``name`` or ``owner/name`` without a file suffix and not written as a local path."""
    if path.startswith((".", "/", "~")) or "\\" in path or path.count("/") > 1:
        return False
    suffix = Path(path).suffix.lower()
    known = _JSON_SUFFIXES | _JSONL_SUFFIXES | {".csv", ".tsv", ".parquet", ".txt", ".gz"}
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", path)) and suffix not in known


def _sniff_json(p: Path) -> str | None:
    """karpathy (a list, or an object with ``sentences``), coco (``annotations``) or jsonl."""
    with p.open("rb") as f:
        head = f.read(4096)
        first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
        if first == b"[":
            return "karpathy"
        if first != b"{":
            return None
        f.seek(0)
        line = f.readline(_CHUNK)
        if line.endswith(b"\n"):
            try:
                json.loads(line.decode("utf-8", "surrogateescape").lstrip("\ufeff"))
                rest = f.read(4096).strip()
                if rest[:1] == b"{":
                    return "jsonl"
            except ValueError:
                pass
        # find which key shows up first; in Karpathy's file "sentences" is in the first image,
        # in COCO's "annotations" follows the image list
        f.seek(0)
        tail = b""
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return "coco"
            buf = tail + chunk
            i_s, i_a = buf.find(b'"sentences"'), buf.find(b'"annotations"')
            if i_s >= 0 and (i_a < 0 or i_s < i_a):
                return "karpathy"
            if i_a >= 0:
                return "coco"
            tail = buf[-16:]


def _split_from_name(path: str) -> str | None:
    tokens = re.split(r"[^a-z]+", re.sub(r"\d+", " ", Path(path).stem.lower()))
    found = [_SPLIT_TOKENS[t] for t in tokens if t in _SPLIT_TOKENS]
    return found[-1] if found else None


def _default_split(cfg: SourceConfig, path: str) -> str:
    if cfg.split:
        return cfg.split
    split = _split_from_name(path)
    if split is None:
        log.info("no split in source.split or the name of %s; using 'train'", path)
        return "train"
    return split


def _is_bad_utf8(text: str) -> bool:
    """True when ``text`` holds surrogates: undecodable bytes (surrogateescape) or lone \\ud8xx escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _caption_problem(value: Any) -> tuple[str | None, str | None]:
    """(clean caption, None) or (None, skip reason)."""
    if not isinstance(value, str):
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return None, "invalid_utf8"
        else:
            return None, "not_string"
    if _is_bad_utf8(value):
        return None, "invalid_utf8"
    value = value.strip()
    if not value:
        return None, "empty"
    return value, None


def _image_ref(value: Any) -> tuple[str | None, bytes | None, str | None]:
    """(path, bytes, skip reason) from a path string, raw bytes or an HF ``{bytes, path}`` struct."""
    path: Any = None
    data: Any = None
    if isinstance(value, str):
        path = value
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, dict):
        path, data = value.get("path"), value.get("bytes")
    if isinstance(path, str):
        if _is_bad_utf8(path):
            return None, None, "invalid_utf8"
        if not path.strip():
            path = None
    else:
        path = None
    data = bytes(data) if isinstance(data, (bytes, bytearray)) and data else None
    if path is None and data is None:
        return None, None, "no_image"
    return path, data, None


def _group_of(path: str | None, data: bytes | None) -> str:
    if path:
        return path
    assert data is not None
    return "sha1:" + hashlib.sha1(data).hexdigest()


def _resolve_columns(cfg: SourceConfig, found: Iterable[str], where: str) -> tuple[str, str]:
    """The (image, caption) column names to use; falls back to open_clip's filepath/title."""
    found = list(found)
    cols = set(found)
    image, caption = cfg.image_column, cfg.caption_column
    if image not in cols and OPEN_CLIP_COLUMNS["image"] in cols:
        log.info("%s: no %r column; using open_clip's %r", where, image, OPEN_CLIP_COLUMNS["image"])
        image = OPEN_CLIP_COLUMNS["image"]
    if caption not in cols and OPEN_CLIP_COLUMNS["caption"] in cols:
        log.info("%s: no %r column; using open_clip's %r", where, caption, OPEN_CLIP_COLUMNS["caption"])
        caption = OPEN_CLIP_COLUMNS["caption"]
    missing = [c for c in (image, caption) if c not in cols]
    if cfg.id_column and cfg.id_column not in cols:
        missing.append(cfg.id_column)
    if missing:
        raise SourceError(
            f"{where}: missing column(s) {missing}; columns found: {found}. "
            "Set source.image_column / source.caption_column / source.id_column."
        )
    return image, caption


def _emit(
    captions: Any,
    image: Any,
    *,
    id_base: str,
    where: str,
    source: str,
    split: str,
    group: str | None = None,
    index_from: Callable[[], int] | None = None,
) -> Iterator[Item]:
    """Records (or skips) for one row whose caption value is a string or a list of them.

    ``index_from`` numbers captions per image across rows (karpathy ids); otherwise a list gets
    ``#<i>`` and a single caption the bare ``id_base``.
    """
    is_list = isinstance(captions, list)
    values = captions if is_list else [captions]
    if is_list and not values:
        yield Skip("empty", where)
        return
    path, data, img_problem = _image_ref(image)
    for i, value in enumerate(values):
        # number every caption, skipped or not, so fixing one caption never renames the others
        if index_from is not None:
            rid = f"{id_base}#{index_from()}"
        else:
            rid = f"{id_base}#{i}" if is_list else id_base
        text, problem = _caption_problem(value)
        problem = problem or img_problem
        if problem:
            yield Skip(problem, f"{where} caption {i}" if is_list else where)
            continue
        yield CaptionRecord(
            id=rid,
            caption=text,  # type: ignore[arg-type]
            image_path=path,
            source=source,
            split=split,
            group=group if group is not None else _group_of(path, data),
            image_bytes=data,
        )


def _check_unique_ids(items: Iterator[Item]) -> Iterator[Item]:
    """Duplicate ids would break resume and grouping downstream, so they stop the run."""
    seen: set[str] = set()
    for item in items:
        if isinstance(item, CaptionRecord):
            if item.id in seen:
                raise SourceError(
                    f"duplicate id {item.id!r} (second time on caption {item.caption!r:.60}); "
                    "ids must be unique, check source.id_column"
                )
            seen.add(item.id)
        yield item


def _load_json(path: str) -> Any:
    """Parse a JSON document, keeping undecodable bytes as surrogates so one bad caption is a Skip."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e}") from e
    text = raw.decode("utf-8", "surrogateescape").lstrip("\ufeff")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def _not_object(path: str, where: str, value: Any) -> SourceError:
    return SourceError(f"{path}:{where}: expected a JSON object, got {type(value).__name__}: {value!r:.80}")


# --------------------------------------------------------------------------------------------
# JSON: COCO and Karpathy


def _read_json_any(cfg: SourceConfig, name: str, load: Callable[[str], Any]) -> Iterator[Item]:
    doc = load(cfg.path)
    if isinstance(doc, dict) and "annotations" in doc:
        log.info("%s: COCO captions layout", cfg.path)
        yield from _coco_items(cfg, name, doc)
    else:
        log.info("%s: Karpathy layout", cfg.path)
        yield from _karpathy_items(cfg, name, doc)


def _read_coco(cfg: SourceConfig, name: str, load: Callable[[str], Any]) -> Iterator[Item]:
    yield from _coco_items(cfg, name, load(cfg.path))


def _read_karpathy(cfg: SourceConfig, name: str, load: Callable[[str], Any]) -> Iterator[Item]:
    yield from _karpathy_items(cfg, name, load(cfg.path))


def _coco_items(cfg: SourceConfig, name: str, doc: Any) -> Iterator[Item]:
    path = cfg.path
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), _ARRAYS) or not isinstance(
        doc.get("annotations"), _ARRAYS
    ):
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise SourceError(
            f"{path}: not a COCO captions file: expected an object with 'images' and 'annotations' "
            f"lists, found {found}"
        )
    m = re.search(r"captions_([A-Za-z]+\d*)", Path(path).stem)
    folder = m.group(1) if m else None
    if cfg.split:
        split = cfg.split
    elif folder:
        split = _SPLIT_TOKENS.get(re.sub(r"\d+$", "", folder).lower(), re.sub(r"\d+$", "", folder))
    else:
        split = _default_split(cfg, path)
    files: dict[Any, str | None] = {}
    for i, img in enumerate(doc["images"]):
        if not isinstance(img, dict):
            raise _not_object(path, f"images record {i}", img)
        if "id" not in img:
            raise SourceError(f"{path}:images record {i}: no 'id'; keys found: {sorted(img)}")
        fn = img.get("file_name")
        if isinstance(fn, str) and fn.strip() and folder and "/" not in fn:
            fn = f"{folder}/{fn}"
        files[img["id"]] = fn if isinstance(fn, str) else None
    id_col = cfg.id_column or "id"
    for i, ann in enumerate(doc["annotations"]):
        where = f"{path}:record {i}"
        if not isinstance(ann, dict):
            raise _not_object(path, f"record {i}", ann)
        if id_col not in ann:
            raise SourceError(f"{where}: annotation has no {id_col!r}; keys found: {sorted(ann)}")
        image_id = ann.get("image_id")
        rid = f"coco-{ann[id_col]}" if cfg.id_column is None else str(ann[id_col])
        yield from _emit(
            ann.get("caption"),
            files.get(image_id) if image_id is not None else None,
            id_base=rid,
            where=where,
            source=name,
            split=split,
            group=str(image_id),
        )


def _stem_counter() -> Callable[[str], Callable[[], int]]:
    counts: dict[str, int] = {}

    def for_stem(stem: str) -> Callable[[], int]:
        def nxt() -> int:
            n = counts.get(stem, 0)
            counts[stem] = n + 1
            return n

        return nxt

    return for_stem


def _karpathy_items(cfg: SourceConfig, name: str, doc: Any) -> Iterator[Item]:
    path = cfg.path
    counter = _stem_counter()
    if isinstance(doc, dict) and isinstance(doc.get("images"), _ARRAYS):
        yield from _karpathy_original(cfg, name, doc["images"], counter)
        return
    if not isinstance(doc, _ARRAYS):
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise SourceError(
            f"{path}: not a Karpathy caption file: expected a list of {{image, caption}} objects "
            f"or an object with an 'images' list, found {found}"
        )
    split = _default_split(cfg, path)
    image_col = caption_col = ""
    for i, rec in enumerate(doc):
        where = f"{path}:record {i}"
        if not isinstance(rec, dict):
            raise _not_object(path, f"record {i}", rec)
        if i == 0:
            image_col, caption_col = _resolve_columns(cfg, rec.keys(), where)
        image = rec.get(image_col)
        if cfg.id_column:
            if cfg.id_column not in rec:
                raise SourceError(f"{where}: no {cfg.id_column!r}; keys found: {sorted(rec)}")
            yield from _emit(
                rec.get(caption_col), image, id_base=str(rec[cfg.id_column]), where=where,
                source=name, split=split,
            )
            continue
        stem = Path(image).stem if isinstance(image, str) and image.strip() else f"record{i}"
        yield from _emit(
            rec.get(caption_col), image, id_base=stem, where=where, source=name, split=split,
            index_from=counter(stem),
        )


def _karpathy_original(
    cfg: SourceConfig, name: str, images: list[Any], counter: Callable[[str], Callable[[], int]]
) -> Iterator[Item]:
    """Karpathy's ``dataset_coco.json``: one object per image with its own split and sentences."""
    path = cfg.path
    dropped = 0
    for i, img in enumerate(images):
        where = f"{path}:record {i}"
        if not isinstance(img, dict):
            raise _not_object(path, f"record {i}", img)
        if "sentences" not in img or not isinstance(img["sentences"], list):
            raise SourceError(f"{where}: no 'sentences' list; keys found: {sorted(img)}")
        own = img.get("split")
        split = _SPLIT_TOKENS.get(own, own) if isinstance(own, str) and own else _default_split(cfg, path)
        if cfg.split and split != cfg.split:
            dropped += 1
            continue
        fn = img.get("filename")
        fp = img.get("filepath")
        image = f"{fp}/{fn}" if isinstance(fp, str) and fp and isinstance(fn, str) and fn else fn
        captions = [s.get("raw") if isinstance(s, dict) else s for s in img["sentences"]]
        if cfg.id_column:
            if cfg.id_column not in img:
                raise SourceError(f"{where}: no {cfg.id_column!r}; keys found: {sorted(img)}")
            yield from _emit(captions, image, id_base=str(img[cfg.id_column]), where=where,
                             source=name, split=split)
            continue
        stem = Path(image).stem if isinstance(image, str) and image.strip() else f"record{i}"
        yield from _emit(captions, image, id_base=stem, where=where, source=name, split=split,
                         index_from=counter(stem))
    if dropped:
        log.info("%s: kept split %r, left out %d images of other splits", path, cfg.split, dropped)


# --------------------------------------------------------------------------------------------
# line-based: jsonl, csv/tsv


def _open_source(path: str, mode: str = "rb", **kwargs: Any) -> Any:
    """``open``; a file that cannot be opened is a SourceError that names it."""
    try:
        return open(path, mode, **kwargs)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e}") from e


def _span_lines(f: Any, part: SourcePart) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for the lines of a part of the open binary file ``f``."""
    f.seek(part.start)
    pos, lineno = part.start, part.line
    while pos < part.end:
        raw = f.readline()
        if not raw:
            return
        yield lineno, raw
        pos += len(raw)
        lineno += 1


def _jsonl_record(raw: bytes, lineno: int, where: str) -> dict[str, Any] | None:
    """The object on a JSONL line, None for a blank line."""
    line = raw.decode("utf-8", "surrogateescape")
    if lineno == 1:
        line = line.lstrip("\ufeff")
    if not line.strip():
        return None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise SourceError(f"{where}: not valid JSON (column {e.colno}: {e.msg})") from None
    if not isinstance(rec, dict):
        raise SourceError(f"{where}: expected a JSON object, got {type(rec).__name__}: {rec!r:.80}")
    return rec


def _read_jsonl(cfg: SourceConfig, name: str, part: SourcePart | None = None) -> Iterator[Item]:
    """A JSONL file's items; ``part`` reads those of some of its lines, with the columns the file's
    first record decides (as when it is read whole)."""
    path = cfg.path
    stem = Path(path).stem
    split = _default_split(cfg, path)
    columns: tuple[str, str] | None = None
    with _open_source(path) as f:
        if part is not None and part.start > 0:  # the file's first record decides the columns
            for lineno, raw in enumerate(f, 1):
                where = f"{path}:{lineno}"
                rec = _jsonl_record(raw, lineno, where)
                if rec is not None:
                    columns = _resolve_columns(cfg, rec.keys(), where)
                    break
        lines = enumerate(f, 1) if part is None else _span_lines(f, part)
        for lineno, raw in lines:
            where = f"{path}:{lineno}"
            rec = _jsonl_record(raw, lineno, where)
            if rec is None:
                continue
            if columns is None:
                columns = _resolve_columns(cfg, rec.keys(), where)
            image_col, caption_col = columns
            if cfg.id_column:
                if cfg.id_column not in rec:
                    raise SourceError(f"{where}: no {cfg.id_column!r}; keys found: {sorted(rec)}")
                base = str(rec[cfg.id_column])
            else:
                base = f"{stem}:{lineno}"
            yield from _emit(rec.get(caption_col), rec.get(image_col), id_base=base, where=where,
                             source=name, split=split)


def _read_delimited(cfg: SourceConfig, name: str, part: SourcePart | None = None) -> Iterator[Item]:
    """A CSV/TSV file's items; ``part`` reads those of some of its lines (each line one row, see
    :func:`source_parts`) under the file's header."""
    path = cfg.path
    delimiter = "\t" if cfg.format == "tsv" else ","
    stem = Path(path).stem
    split = _default_split(cfg, path)
    f = (_open_source(path, "r", encoding="utf-8-sig", errors="surrogateescape", newline="") if part is None
         else _open_source(path))
    #: the part's lines follow the header in the reader, so its line 2 is the part's first line;
    #: ``offset`` turns the reader's line number into the file's (0 while it reads the header)
    shift = 0 if part is None else part.line - 2
    offset = 0
    with f:
        if part is None:
            lines: Iterable[str] = f
        else:
            header_line = f.readline().decode("utf-8-sig", "surrogateescape")
            lines = itertools.chain([header_line], (raw.decode("utf-8", "surrogateescape") for _, raw in _span_lines(f, part)))
        # open_clip/CC3M TSVs are not quoted: a caption may start with a '"' that must not
        # swallow the following lines; CSV keeps standard quoting
        reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        try:
            header = next(reader, None)
            if header is None:
                raise SourceError(f"{path}: empty file, expected a header row")
            image_col, caption_col = _resolve_columns(cfg, header, path)
            i_img, i_cap = header.index(image_col), header.index(caption_col)
            i_id = header.index(cfg.id_column) if cfg.id_column else None
            offset = shift
            for row_no, row in enumerate(reader, shift):
                if not row:
                    continue
                where = f"{path}:{reader.line_num + offset}"
                cap = row[i_cap] if i_cap < len(row) else None
                img = row[i_img] if i_img < len(row) else None
                if i_id is not None:
                    if i_id >= len(row) or not row[i_id]:
                        raise SourceError(f"{where}: empty {cfg.id_column!r}")
                    base = row[i_id]
                else:
                    base = f"{stem}:{row_no}"
                yield from _emit(cap, img, id_base=base, where=where, source=name, split=split)
        except csv.Error as e:
            raise SourceError(f"{path}:{reader.line_num + offset}: malformed {cfg.format} row: {e}") from None


# --------------------------------------------------------------------------------------------
# parquet and Hugging Face datasets


def _parquet_files(p: Path) -> list[Path]:
    return sorted(f for f in p.rglob("*.parquet") if not any(s.startswith(".") for s in f.relative_to(p).parts))


def _text_values(column: Any) -> list[Any]:
    """Python values of a string column, decoding per value so invalid UTF-8 is a per-row Skip."""
    import pyarrow as pa

    t = column.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        column = column.cast(pa.large_binary())
        return [None if b is None else b.decode("utf-8", "surrogateescape") for b in column.to_pylist()]
    return column.to_pylist()


def _read_parquet(cfg: SourceConfig, name: str, only: str | None = None) -> Iterator[Item]:
    """The items of a Parquet file or folder; ``only`` (a path relative to the folder) reads one of
    its files, with the ids and splits it has in the whole folder."""
    import pyarrow.parquet as pq

    root = Path(cfg.path)
    files = [root] if root.is_file() else [root / only] if only is not None else _parquet_files(root)
    if not files:
        raise SourceError(f"{cfg.path}: no .parquet files found")
    for file in files:
        fname = str(file)
        try:
            pf = pq.ParquetFile(file)
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError for non-parquet bytes
            raise SourceError(f"{fname}: not a readable parquet file: {e}") from None
        found = pf.schema_arrow.names
        image_col, caption_col = _resolve_columns(cfg, found, fname)
        columns = [image_col, caption_col] + ([cfg.id_column] if cfg.id_column else [])
        # a file in a split folder (<root>/test/part-0.parquet, hardneg's own layout) takes the
        # folder's split; ids carry the relative path so equal file names in two folders differ
        rel = file.relative_to(root) if root.is_dir() else Path(file.name)
        folder_split = _split_from_name(rel.parent.name) if rel.parent.name else None
        split = cfg.split or folder_split or _default_split(cfg, fname if root.is_dir() else cfg.path)
        stem = rel.with_suffix("").as_posix()
        row = 0
        for batch in pf.iter_batches(batch_size=1024, columns=list(dict.fromkeys(columns))):
            caps = _text_values(batch.column(caption_col))
            imgs = _text_values(batch.column(image_col))
            ids = batch.column(cfg.id_column).to_pylist() if cfg.id_column else None
            yield from _emit_columns(caps, imgs, ids, row, fname, stem, cfg.id_column, name, split)
            row += len(caps)


def _emit_columns(
    caps: list[Any], imgs: list[Any], ids: list[Any] | None, row: int, label: str, id_prefix: str,
    id_column: str | None, source: str, split: str,
) -> Iterator[Item]:
    """Items of one column batch of a table source; ``row`` is the batch's first row number."""
    for j, (cap, img) in enumerate(zip(caps, imgs)):
        where = f"{label}:record {row + j}"
        if ids is not None:
            if ids[j] is None:
                raise SourceError(f"{where}: null {id_column!r}")
            base = str(ids[j])
        else:
            base = f"{id_prefix}:{row + j}"
        yield from _emit(cap, img, id_base=base, where=where, source=source, split=split)


def _is_hf_disk(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in _HF_DISK_MARKERS)


def _load_hf(cfg: SourceConfig) -> list[tuple[str, Any]]:
    """(split name, dataset) pairs; all splits of a DatasetDict unless cfg.hf_split picks one."""
    import datasets

    try:
        if _is_hf_disk(cfg.path):
            ds = datasets.load_from_disk(cfg.path)
            if cfg.streaming and isinstance(ds, datasets.Dataset):
                ds = ds.to_iterable_dataset()
        else:
            ds = datasets.load_dataset(
                cfg.path, cfg.hf_config, split=cfg.hf_split, streaming=cfg.streaming
            )
    except Exception as e:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        raise SourceError(f"cannot load Hugging Face dataset {cfg.path}: {type(e).__name__}: {e}") from e
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if cfg.hf_split:
            if cfg.hf_split not in ds:
                raise SourceError(f"{cfg.path}: no split {cfg.hf_split!r}; splits: {list(ds)}")
            return [(cfg.hf_split, ds[cfg.hf_split])]
        return list(ds.items())
    split = cfg.hf_split or getattr(ds, "split", None) or "train"
    return [(re.sub(r"\[.*\]$", "", str(split)), ds)]


def _read_hf(cfg: SourceConfig, name: str) -> Iterator[Item]:
    import datasets

    for hf_split, ds in _load_hf(cfg):
        label = f"{cfg.path}[{hf_split}]"
        features = ds.features
        found = list(features) if features is not None else None
        if found is not None:
            image_col, caption_col = _resolve_columns(cfg, found, label)
            if isinstance(features[image_col], datasets.Image):
                ds = ds.cast_column(image_col, datasets.Image(decode=False))
        split = cfg.split or hf_split
        row = 0
        for batch in ds.iter(batch_size=1000):
            if found is None:  # streaming without known features: decide from the first batch
                found = list(batch)
                image_col, caption_col = _resolve_columns(cfg, found, label)
            caps, imgs = batch[caption_col], batch[image_col]
            ids = batch[cfg.id_column] if cfg.id_column else None
            yield from _emit_columns(caps, imgs, ids, row, label, hf_split, cfg.id_column, name, split)
            row += len(caps)


# --------------------------------------------------------------------------------------------
# fingerprints


def _hash_files(files: list[Path], root: Path | None) -> str:
    from tqdm import tqdm

    h = hashlib.sha256()
    total = sum(f.stat().st_size for f in files)
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="fingerprint", disable=total < (256 << 20)
    ) as bar:
        for f in files:
            if root is not None:
                rel = f.relative_to(root).as_posix().encode()
                h.update(len(rel).to_bytes(8, "big") + rel + f.stat().st_size.to_bytes(8, "big"))
            try:
                with f.open("rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        h.update(chunk)
                        bar.update(len(chunk))
            except OSError as e:
                raise SourceError(f"cannot read {f}: {e}") from e
    return h.hexdigest()


def _hf_disk_fingerprint(p: Path) -> str:
    """The fingerprints ``datasets`` stored at save time (one per split): cheap and content-bound."""
    states = sorted(p.rglob("state.json"))
    prints: dict[str, Any] = {}
    for s in states:
        try:
            prints[s.parent.relative_to(p).as_posix()] = json.loads(s.read_text("utf-8")).get("_fingerprint")
        except (OSError, ValueError) as e:
            raise SourceError(f"{s}: unreadable datasets state file: {e}") from e
    if not prints or any(v is None for v in prints.values()):
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return _hash_files(files, root=p)
    return hashlib.sha256(json.dumps(prints, sort_keys=True).encode()).hexdigest()


def _hub_revision(name: str) -> str | None:
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name, timeout=10).sha
    except Exception as e:  # offline, unknown dataset, no huggingface_hub: fall back to the name
        log.warning(
            "cannot resolve the hub revision of %s (%s); its fingerprint covers only name/config/split",
            name, type(e).__name__,
        )
        return None


__all__ = ["FORMATS", "detect_format", "fingerprint", "iter_source", "source_name"]
