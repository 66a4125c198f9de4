"""Streaming negative shards into training batches.

Order of one epoch, a pure function of (seed, epoch, rank, shard footers and group column):

1. The row groups of all shards are shuffled (seeded by seed and epoch).
2. The resulting row sequence is cut into ``world_size`` contiguous ranges, one per rank, so each
   sample is seen once per epoch and ranks differ by at most one row.
3. A rank's rows are shuffled inside windows of at least ``shuffle_buffer`` rows made of whole row
   groups (a shuffle buffer that empties when full), so a worker holds about two windows of row
   groups in memory and never re-reads an old group for a straggler.
4. Rows of one ``group`` (captions of one image) are moved apart so no batch holds two of them
   (:func:`spread_groups`); this reads the small ``group`` column of the rank's row groups.
5. The rank's sequence is cut into batches; batch ``j`` is built by loader worker ``j mod workers``,
   which is the order ``DataLoader`` interleaves workers, so the batch sequence does not depend on
   the number of workers.

Because the order is computed from metadata and the group column alone, resuming at batch ``j``
decodes nothing of the skipped batches.
Images are decoded only in the worker that owns the batch, at reduced size where the target is
small (PIL draft mode for JPEG), and handed over as uint8; normalisation happens on the device.
A missing or corrupt image is counted in the batch's ``skipped`` and the sample is dropped; the
batch carries one :class:`SkipExample` so that an error can show a path that did not resolve.

Before training or evaluation starts, :func:`check_images` opens the images of the first rows
(:data:`PROBE_ROWS`), so an image root that resolves nothing is an error within seconds
(:class:`ImagesUnavailable`, whose message :func:`unresolved_message` writes).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import random
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.utils.data as tud
from PIL import Image

from pipeline.contract import schema
from pipeline.contract.shards import check_shard_schema, verify_dataset
from pipeline.core.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

SKIP_REASONS = ("missing", "corrupt", "no_image")
#: rows whose images :func:`check_images` opens before a run starts
PROBE_ROWS = 64
#: shard files kept open at once per process (datasets can have thousands of shards)
MAX_OPEN = 32
#: folder of Parquet files in a published dataset (``data/<split>-XXXXX-of-YYYYY.parquet``)
PUBLISHED_DIR = "data"


# --------------------------------------------------------------------------------------------
# shard discovery and metadata


def _is_url(p: str) -> bool:
    return "://" in p


def _local_files(p: str, split: str | None) -> list[str]:
    path = Path(p)
    if any(ch in p for ch in "*?["):
        parent = Path(p).parent
        return sorted(str(x) for x in parent.glob(Path(p).name) if x.is_file())
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        if split and (path / split).is_dir():
            path = path / split
        elif (path / PUBLISHED_DIR).is_dir():  # a `hardneg publish` layout (Hub repo or dry run)
            pattern = f"{split}-*.parquet" if split else "*.parquet"
            return sorted(str(x) for x in (path / PUBLISHED_DIR).glob(pattern))
        found = sorted(str(x) for x in path.glob("*.parquet"))
        if not found and not split:
            # a dataset directory read without a split: every split's shards
            found = sorted(str(x) for x in path.glob("*/*.parquet"))
        return found
    raise ConfigError(f"shard path {p} does not exist")


def _reason(e: BaseException) -> str:
    """A reader's error message on one line (pyarrow's span several and may hold control bytes), without
    object addresses (PIL names an in-memory file ``<_io.BytesIO object at 0x...>``)."""
    text = re.sub(r" ?<[\w.]+ object at 0x[0-9a-fA-F]+>", "", " ".join(str(e).split())) or type(e).__name__
    return "".join(c if c.isprintable() else "?" for c in text)


def _is_local_fs(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return bool({"file", "local"} & set(protocols))


def _check_manifest(path: Path, split: str | None, sha256: bool) -> None:
    """Check the dataset folder ``path`` (or, for a split folder, its parent) against its manifest."""
    if verify_dataset(path, sha256=sha256):
        return
    if split and path.name == split:
        verify_dataset(path.parent, sha256=sha256)


def _remote_files(url: str, split: str | None) -> tuple[Any, list[str]]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    if any(ch in root for ch in "*?["):
        return fs, sorted(fs.glob(root))
    if fs.isfile(root):
        return fs, [root]
    root = root.rstrip("/")
    if split and fs.isdir(f"{root}/{split}"):
        root = f"{root}/{split}"
    elif fs.isdir(f"{root}/{PUBLISHED_DIR}"):  # a `hardneg publish` layout, e.g. hf://datasets/O/N
        pattern = f"{split}-*.parquet" if split else "*.parquet"
        return fs, sorted(fs.glob(f"{root}/{PUBLISHED_DIR}/{pattern}"))
    return fs, sorted(fs.glob(f"{root}/*.parquet"))


@dataclass
class ShardFile:
    path: str
    row_groups: list[int]
    columns: list[str]
    #: index into ShardIndex.filesystems; -1 = local path
    fs: int = -1


@dataclass
class ShardIndex:
    """The shards of a dataset and their row groups, read from Parquet footers only."""

    files: list[ShardFile]
    filesystems: list[Any] = field(default_factory=list)

    @classmethod
    def from_paths(cls, paths: Sequence[str], split: str | None = None, verify: bool | None = None) -> "ShardIndex":
        """The shards under ``paths``, each checked before any row is read.

        Every shard's footer must read and its schema match the contract (:func:`check_shard_schema`).
        A local dataset folder (or one of its split folders) with its manifest is checked against it
        (:func:`verify_dataset`): the same shards with the listed rows, and with ``verify`` their
        sha256. ``verify=None`` means yes for local folders and no for remote URLs; ``verify=True``
        on a remote URL that is not a local ``file://`` one is a :class:`ConfigError`.
        Every problem is a :class:`SourceError` that names the file.
        """
        files: list[ShardFile] = []
        filesystems: list[Any] = []
        seen: set[str] = set()
        for p in paths:
            if _is_url(p):
                fs, found = _remote_files(p, split)
                filesystems.append(fs)
                fs_id = len(filesystems) - 1
                if _is_local_fs(fs):
                    local = Path(p.split("://", 1)[1])
                    if local.is_dir():
                        _check_manifest(local, split, verify is not False)
                elif verify:
                    raise ConfigError(
                        f"data.verify: true checks a local dataset folder against its manifest; {p} is remote "
                        "(its shards are still checked one by one: footer, schema version, columns)"
                    )
            else:
                found, fs_id = _local_files(p, split), -1
                if Path(p).is_dir():
                    _check_manifest(Path(p), split, verify is not False)
            if not found:
                raise ConfigError(f"no Parquet shards found under {p} (split {split!r})")
            for f in found:
                key = f"{fs_id}:{f}"
                if key in seen:
                    continue
                seen.add(key)
                files.append(ShardFile(f, [], [], fs_id))
        index = cls(files, filesystems)
        for i, sf in enumerate(files):
            try:
                pf = index.open(i)
                arrow, meta = pf.schema_arrow, pf.metadata
            except (OSError, ValueError, pa.ArrowException) as e:  # truncated, empty, not Parquet at all
                raise SourceError(f"{sf.path}: not a readable Parquet shard ({_reason(e)})") from None
            check_shard_schema(sf.path, arrow, (schema.ID, schema.IMAGE, schema.CAPTION))
            sf.columns = list(arrow.names)
            sf.row_groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        return index

    def __getstate__(self) -> dict[str, Any]:
        # open ParquetFile handles stay in their process
        return {"files": self.files, "filesystems": self.filesystems}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.files = state["files"]
        self.filesystems = state["filesystems"]

    def open(self, i: int) -> pq.ParquetFile:
        """An open handle on shard ``i``; at most ``MAX_OPEN`` stay open per process (LRU)."""
        # handles are per process: a forked loader worker must not share the parent's file objects
        if self.__dict__.get("_pid") != os.getpid():
            self.__dict__["_open"] = OrderedDict()
            self.__dict__["_pid"] = os.getpid()
        cache: OrderedDict[int, pq.ParquetFile] = self.__dict__["_open"]
        if i in cache:
            cache.move_to_end(i)
            return cache[i]
        sf = self.files[i]
        if sf.fs < 0:
            handle = pq.ParquetFile(sf.path)
        else:
            handle = pq.ParquetFile(self.filesystems[sf.fs].open(sf.path, "rb"))
        cache[i] = handle
        while len(cache) > MAX_OPEN:
            _, old = cache.popitem(last=False)
            old.close()
        return handle

    def close(self) -> None:
        """Close this process's open handles (a later :meth:`open` opens again); an index that is done
        with, or that an error stops, should not hold files until the garbage collector finds it."""
        cache: OrderedDict[int, pq.ParquetFile] = self.__dict__.get("_open") or OrderedDict()
        if self.__dict__.get("_pid") == os.getpid():
            while cache:
                cache.popitem(last=False)[1].close()

    @property
    def units(self) -> list[tuple[int, int, int]]:
        """Every row group as ``(file, row_group, rows)``, in file order."""
        return [(i, g, n) for i, sf in enumerate(self.files) for g, n in enumerate(sf.row_groups) if n > 0]

    @property
    def num_rows(self) -> int:
        return sum(sum(sf.row_groups) for sf in self.files)

    def read(self, file: int, group: int, columns: Sequence[str]) -> pa.Table:
        sf = self.files[file]
        cols = [c for c in columns if c in sf.columns]
        try:
            return self.open(file).read_row_group(group, columns=cols)
        except (OSError, ValueError, pa.ArrowException) as e:  # a damaged page behind an intact footer
            raise SourceError(f"{sf.path}: row group {group} is unreadable ({_reason(e)})") from None

    def iter_rows(self, columns: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Every row in file order, as dicts of the requested columns (absent columns are None)."""
        for f, g, _ in self.units:
            table = self.read(f, g, columns)
            data = {c: table.column(c).to_pylist() if c in table.column_names else None for c in columns}
            for r in range(table.num_rows):
                yield {c: (data[c][r] if data[c] is not None else None) for c in columns}


# --------------------------------------------------------------------------------------------
# seeded choices that do not depend on order, worker or rank


def stable_int(*parts: Any) -> int:
    """A 64-bit integer from the parts, the same in every process (unlike ``hash``)."""
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def pick_negative(candidates: Sequence[str] | None, seed: int, epoch: int, sample_id: str, family: str) -> str | None:
    """This epoch's candidate of one family for one sample, or None when it has none."""
    cands = [c for c in (candidates or []) if c]
    if not cands:
        return None
    return cands[stable_int(seed, epoch, sample_id, family) % len(cands)]


# --------------------------------------------------------------------------------------------
# image decoding


class ImageSkip(Exception):
    """An image that cannot be used; ``reason`` is one of SKIP_REASONS, ``path`` the row's image path
    (None for embedded bytes) and ``detail`` what went wrong (for a missing file: where it was looked up)."""

    def __init__(self, reason: str, detail: str = "", path: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.path = path


class ImagesUnavailable(SourceError):
    """The images of a dataset cannot be used (none of the first rows', or more than the allowed
    share in a run); the message names the dataset, an image that did not resolve, the image root
    searched and what to do (:func:`unresolved_message`)."""


@dataclass(frozen=True)
class SkipExample:
    """One image that could not be used, as a message shows it (plain data: it crosses process borders)."""

    sample_id: str
    reason: str
    #: the row's image path; None when the row embeds bytes (or has no image)
    path: str | None
    detail: str

    @classmethod
    def of(cls, sample_id: Any, e: ImageSkip) -> "SkipExample":
        return cls(str(sample_id), e.reason, e.path, e.detail)


def describe_counts(skipped: dict[str, int]) -> str:
    """``"12 missing, 1 corrupt"``: the non-zero counts of a skip tally."""
    return ", ".join(f"{n} {reason}" for reason, n in skipped.items() if n) or "none"


def describe_data(paths: Sequence[str], split: str | None) -> str:
    """The dataset as messages name it: its paths and split."""
    where = ", ".join(str(p) for p in paths) or "(no paths)"
    return f"{where} (split {split})" if split else where


def unresolved_example(example: SkipExample | None, image_root: str | None) -> str:
    """Which image failed and where it was looked for."""
    if example is None:
        return "no example on this process (see the other ranks' logs)"
    if example.reason == "missing" and example.path:
        if os.path.isabs(example.path):
            return f"e.g. {example.path} does not exist"
        if image_root:
            return f"e.g. {example.path} was looked up as {example.detail} under the image root {image_root}"
        return f"e.g. {example.path} was looked up under the working directory {os.getcwd()}, as no image root was given"
    if example.reason == "no_image":
        return f"e.g. row {example.sample_id} carries neither image bytes nor an image path"
    what = example.path or "its embedded bytes"
    return f"e.g. the image of row {example.sample_id} ({what}) cannot be read: {example.detail}"


#: what the errors about a shard dataset's images add: where to learn where they come from
CARD_HINT = "a published dataset's card says where its images come from"


def unresolved_advice(example: SkipExample | None, root_flag: str, hint: str = "") -> str:
    """What to do about images that did not resolve (``hint``: where to learn more, in brackets)."""
    if example is not None and example.reason == "missing" and example.path and not os.path.isabs(example.path):
        return (f"this dataset stores image paths only; pass {root_flag} pointing at the folder that holds "
                f"{example.path}" + (f" ({hint})" if hint else ""))
    if example is not None and example.reason == "missing":
        return "the rows name absolute image paths; make them readable on this machine"
    if example is not None and example.reason == "no_image":
        return "the dataset has no images to train or score on"
    return "replace the unreadable images or leave their rows out of the dataset"


def unresolved_message(what: str, example: SkipExample | None, image_root: str | None, root_flag: str,
                       advice: str | None = None, hint: str = "") -> str:
    """One line: ``what`` happened (it names the dataset), an example, the image root searched, and
    what to do (``advice``, by default :func:`unresolved_advice` with ``hint``)."""
    return (f"{what}; {unresolved_example(example, image_root)}; "
            f"{advice or unresolved_advice(example, root_flag, hint)}")


@dataclass
class ImageProbe:
    """The images of a dataset's first rows, opened (not decoded) before a run starts."""

    rows: int = 0
    usable: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    example: SkipExample | None = None


def probe_images(index: "ShardIndex", image_root: str | None, rows: int = PROBE_ROWS) -> ImageProbe:
    """Open the images of the first ``rows`` rows (file order) and count those that fail."""
    probe = ImageProbe()
    for row in index.iter_rows([schema.ID, schema.IMAGE]):
        if probe.rows >= rows:
            break
        probe.rows += 1
        try:
            open_image(row[schema.IMAGE], image_root).close()
            probe.usable += 1
        except ImageSkip as e:
            probe.skipped[e.reason] += 1
            if probe.example is None:
                probe.example = SkipExample.of(row[schema.ID], e)
    return probe


def check_images(index: "ShardIndex", image_root: str | None, dataset: str, root_flag: str,
                 rows: int = PROBE_ROWS) -> ImageProbe:
    """The probe of :func:`probe_images`; an :class:`ImagesUnavailable` error when none of the
    probed images opens (a wrong or missing image root, a dataset published without its images)."""
    probe = probe_images(index, image_root, rows)
    if probe.rows and not probe.usable:
        raise ImagesUnavailable(unresolved_message(
            f"{dataset}: none of the images of its first {probe.rows} rows can be opened "
            f"({describe_counts(probe.skipped)})", probe.example, image_root, root_flag, hint=CARD_HINT))
    if probe.usable < probe.rows:
        log.warning("%s: %d of the images of the first %d rows cannot be opened (%s); %s", dataset,
                    probe.rows - probe.usable, probe.rows, describe_counts(probe.skipped),
                    unresolved_example(probe.example, image_root))
    return probe


@dataclass(frozen=True)
class ImageSpec:
    """Target geometry and normalisation, taken from the open_clip model's preprocess config."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shortest"
    fill: int = 0

    @classmethod
    def from_preprocess(cls, pp: dict[str, Any]) -> "ImageSpec":
        size = pp.get("size", 224)
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        mean = tuple(float(x) for x in pp.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(float(x) for x in pp.get("std", (0.26862954, 0.26130258, 0.27577711)))
        return cls(h, w, mean, std, str(pp.get("resize_mode", "shortest")), int(pp.get("fill_color", 0)))  # type: ignore[arg-type]


def open_image(ref: dict[str, Any] | None, image_root: str | None) -> Image.Image:
    """Open (lazily, no decode yet) an image given as embedded bytes or a path under ``image_root``."""
    ref = ref or {}
    data, path = ref.get("bytes"), ref.get("path")
    try:
        if data:
            return Image.open(io.BytesIO(data))
        if path:
            full = path if (os.path.isabs(path) or not image_root) else os.path.join(image_root, path)
            if not os.path.exists(full):
                raise ImageSkip("missing", full, path)
            return Image.open(full)
    except ImageSkip:
        raise
    except FileNotFoundError as e:
        raise ImageSkip("missing", str(e), path) from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageSkip("corrupt", _reason(e), path) from e
    raise ImageSkip("no_image", "row has neither image bytes nor a path")


def _crop_box(w: int, h: int, spec: ImageSpec, rng: random.Random | None, scale: Sequence[float]) -> tuple[float, float, float, float]:
    """The region (in source pixels) that becomes the output image."""
    if rng is not None:
        # random resized crop: area fraction in `scale`, aspect ratio in [3/4, 4/3] (log-uniform)
        area = w * h
        for _ in range(10):
            target = area * rng.uniform(scale[0], scale[1])
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = math.sqrt(target * ratio), math.sqrt(target / ratio)
            if cw <= w and ch <= h:
                x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
                return (x0, y0, x0 + cw, y0 + ch)
        cw, ch = (w, min(h, w * 4 / 3)) if w / h < 3 / 4 else (min(w, h * 4 / 3), h)
        return ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    if spec.resize_mode == "squash" or spec.resize_mode == "longest":
        return (0.0, 0.0, float(w), float(h))
    # shortest side to target, then centre crop: the region with the target's aspect ratio
    s = min(w / spec.width, h / spec.height)
    cw, ch = spec.width * s, spec.height * s
    return ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)


def decode_image(
    img: Image.Image,
    spec: ImageSpec,
    rng: random.Random | None = None,
    scale: Sequence[float] = (0.9, 1.0),
    draft: bool = True,
) -> np.ndarray:
    """Decode to a ``(H, W, 3)`` uint8 array: crop box, resize, RGB.

    Without ``rng`` this is open_clip's validation transform (shortest side, centre crop) up to
    sub-pixel rounding; with ``rng`` a random resized crop like its training transform. Draft mode
    lets libjpeg decode at 1/2, 1/4 or 1/8 scale while the crop still has at least the target's
    resolution.
    """
    try:
        w, h = img.size
        box = _crop_box(w, h, spec, rng, scale)
        if spec.resize_mode == "longest" and rng is None:
            k = min(spec.width / w, spec.height / h)
            out_w, out_h = max(1, round(w * k)), max(1, round(h * k))
        else:
            out_w, out_h = spec.width, spec.height
        if draft:  # a no-op for formats without reduced decoding (only JPEG has it)
            bw, bh = box[2] - box[0], box[3] - box[1]
            need = (math.ceil(out_w * w / bw), math.ceil(out_h * h / bh))
            if need[0] < w and need[1] < h:
                img.draft("RGB", need)
                nw, nh = img.size
                if (nw, nh) != (w, h):
                    fx, fy = nw / w, nh / h
                    box = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
                    w, h = nw, nh
        if img.mode != "RGB":
            img = img.convert("RGB")
        out = img.resize((out_w, out_h), Image.Resampling.BICUBIC, box=box)
        if (out_w, out_h) != (spec.width, spec.height):
            canvas = Image.new("RGB", (spec.width, spec.height), (spec.fill,) * 3)
            canvas.paste(out, ((spec.width - out_w) // 2, (spec.height - out_h) // 2))
            out = canvas
        return np.asarray(out, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as e:
        raise ImageSkip("corrupt", _reason(e)) from e


def load_image(
    ref: dict[str, Any] | None,
    image_root: str | None,
    spec: ImageSpec,
    rng: random.Random | None = None,
    scale: Sequence[float] = (0.9, 1.0),
    draft: bool = True,
) -> np.ndarray:
    img = open_image(ref, image_root)
    try:
        return decode_image(img, spec, rng, scale, draft)
    except ImageSkip as e:
        e.path = (ref or {}).get("path")
        raise
    finally:
        img.close()


def images_to_tensor(arrays: list[np.ndarray], spec: ImageSpec):
    """Stack ``(H, W, 3)`` uint8 arrays into a ``(B, 3, H, W)`` uint8 tensor."""
    if not arrays:
        return torch.zeros((0, 3, spec.height, spec.width), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def normalize_images(images, spec: ImageSpec, dtype=None):
    """uint8 ``(B, 3, H, W)`` on any device -> normalised float, as open_clip's Normalize."""
    dtype = dtype or torch.float32
    mean = torch.tensor(spec.mean, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255.0
    return (images.to(dtype) - mean) / std


# --------------------------------------------------------------------------------------------
# the training stream


def spread_groups(codes: np.ndarray, batch_size: int) -> np.ndarray:
    """A reordering of positions so no batch holds two rows of one group, where that is possible.

    Captions of one image share a group and sit in neighbouring rows, so a shuffle window of a few
    thousand rows would often put two of them in one batch, where each is a false negative for the
    other. Walking the order batch by batch, a row whose group is already in the batch is carried to
    the next batch (carried rows go first); the order is otherwise kept.
    """
    from collections import deque

    out: list[int] = []
    carry: deque[int] = deque()
    n, i = len(codes), 0
    while i < n or carry:
        seen: set[int] = set()
        taken = 0
        for _ in range(len(carry)):
            p = carry.popleft()
            c = int(codes[p])
            if taken < batch_size and c not in seen:
                seen.add(c)
                out.append(p)
                taken += 1
            else:
                carry.append(p)
        while taken < batch_size and i < n:
            c = int(codes[i])
            if c in seen:
                carry.append(i)
            else:
                seen.add(c)
                out.append(i)
                taken += 1
            i += 1
    return np.asarray(out, dtype=np.int64)


def _tokenize_batch(tokenizer: Callable, captions: list[str], negs: list[list[str | None]], k: int):
    """Tokenise positives and valid negatives in one call; invalid negatives stay all-zero."""
    flat = [t for row in negs for t in row if t is not None]
    tokens = tokenizer(list(captions) + flat)
    b = len(captions)
    text = tokens[:b]
    mask = torch.tensor([[t is not None for t in row] for row in negs], dtype=torch.bool).reshape(b, k)
    neg = torch.zeros((b, k, tokens.shape[1]), dtype=tokens.dtype)
    if flat:
        neg[mask] = tokens[b:]
    return text, neg, mask


class NegativeStream(tud.IterableDataset):
    """An iterable dataset of training batches for one rank (see the module docstring for the order).

    Use :meth:`set_position` before each ``iter(loader)``: it lives in shared memory, so persistent
    loader workers see it.
    """

    def __init__(
        self,
        index: ShardIndex,
        *,
        tokenizer: Callable,
        spec: ImageSpec,
        batch_size: int,
        families: Sequence[str],
        image_root: str | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 2000,
        augment: bool = True,
        crop_scale: Sequence[float] = (0.9, 1.0),
        draft: bool = True,
        drop_last: bool = True,
        spread_groups: bool = True,
    ) -> None:
        super().__init__()
        self.index = index
        self.tokenizer = tokenizer
        self.spec = spec
        self.batch_size = batch_size
        self.families = list(families)
        self.image_root = image_root
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.augment = augment
        self.crop_scale = tuple(crop_scale)
        self.draft = draft
        self.drop_last = drop_last
        self.spread_groups = spread_groups
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()
        self.columns = [schema.ID, schema.IMAGE, schema.CAPTION, *self.families]
        absent = {f for f in self.families if not any(f in sf.columns for sf in index.files)}
        if absent:
            log.warning("families %s are in no shard; their negatives are always masked", sorted(absent))

    # -- position ---------------------------------------------------------------------------

    def set_position(self, epoch: int, batch: int = 0) -> None:
        self._state[0] = int(epoch)
        self._state[1] = int(batch)

    @property
    def position(self) -> tuple[int, int]:
        return int(self._state[0]), int(self._state[1])

    def rank_rows(self, rank: int | None = None) -> int:
        n, w = self.index.num_rows, self.world_size
        r = self.rank if rank is None else rank
        return (r + 1) * n // w - r * n // w

    def batches_per_epoch(self) -> int:
        """Batches on the smallest rank: the number of steps every rank can take together."""
        n = self.index.num_rows // self.world_size
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    # -- order ------------------------------------------------------------------------------

    def epoch_plan(self, epoch: int) -> tuple[list[tuple[int, int, int, int]], np.ndarray, np.ndarray]:
        """``(pieces, piece_of_position, row_of_position)`` for this rank and epoch.

        A piece is ``(file, row_group, first_row, rows)``: the part of a row group this rank reads.
        """
        units = self.index.units
        order = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(len(units))
        n = sum(u[2] for u in units)
        lo = self.rank * n // self.world_size
        hi = (self.rank + 1) * n // self.world_size
        pieces: list[tuple[int, int, int, int]] = []
        pos = 0
        for u in order:
            f, g, rows = units[u]
            a, b = max(lo, pos), min(hi, pos + rows)
            if a < b:
                pieces.append((f, g, a - pos, b - a))
            pos += rows
            if pos >= hi:
                break
        rng = np.random.default_rng([self.seed, epoch, self.rank, 0xB0FF])
        piece_ids: list[np.ndarray] = []
        row_ids: list[np.ndarray] = []
        window_p: list[np.ndarray] = []
        window_r: list[np.ndarray] = []
        filled = 0

        def flush() -> None:
            nonlocal filled
            if not window_p:
                return
            p, r = np.concatenate(window_p), np.concatenate(window_r)
            perm = rng.permutation(len(p))
            piece_ids.append(p[perm])
            row_ids.append(r[perm])
            window_p.clear()
            window_r.clear()
            filled = 0

        for i, (_, _, _, rows) in enumerate(pieces):
            window_p.append(np.full(rows, i, dtype=np.int32))
            window_r.append(np.arange(rows, dtype=np.int32))
            filled += rows
            if filled >= self.shuffle_buffer:
                flush()
        flush()
        if not piece_ids:
            return pieces, np.zeros(0, np.int32), np.zeros(0, np.int32)
        piece_of, row_of = np.concatenate(piece_ids), np.concatenate(row_ids)
        if self.spread_groups:
            codes = self._group_codes(pieces)
            starts = np.concatenate([[0], np.cumsum([p[3] for p in pieces])[:-1]]).astype(np.int64)
            order = spread_groups(codes[starts[piece_of] + row_of], self.batch_size)
            piece_of, row_of = piece_of[order], row_of[order]
        return pieces, piece_of, row_of

    def _group_codes(self, pieces: list[tuple[int, int, int, int]]) -> np.ndarray:
        """An integer per row (pieces in order) naming its image group; rows without one get their own."""
        chunks = []
        for f, g, first, rows in pieces:
            t = self.index.read(f, g, [schema.GROUP, schema.ID]).slice(first, rows)
            own = pc.binary_join_element_wise(pa.scalar("\x00"), t.column(schema.ID).cast(pa.string()), "")
            if schema.GROUP in t.column_names:
                chunks.append(pc.coalesce(t.column(schema.GROUP).cast(pa.string()), own))
            else:
                chunks.append(own)
        combined = pa.chunked_array(chunks, type=pa.string()).combine_chunks()
        return combined.dictionary_encode().indices.to_numpy(zero_copy_only=False)

    # -- iteration --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from self._batches()
        except SourceError as e:
            # from a loader worker an exception would reach the loop wrapped in a worker traceback; an
            # ``{"error": message}`` batch carries the one line, and the loop stops every rank with it
            yield {"error": str(e)}

    def _batches(self) -> Iterator[dict[str, Any]]:
        epoch, start = self.position
        info = tud.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        pieces, piece_of, row_of = self.epoch_plan(epoch)
        total = len(piece_of)
        n_batches = total // self.batch_size if self.drop_last else math.ceil(total / self.batch_size)
        # the last position at which each piece is needed, to drop its table afterwards
        last_use = np.full(len(pieces), -1, dtype=np.int64)
        if total:
            last_use[piece_of] = np.arange(total)
        cache: dict[int, pa.Table] = {}
        for j in range(start + worker, n_batches, workers):
            lo, hi = j * self.batch_size, min(total, (j + 1) * self.batch_size)
            yield self._make_batch(epoch, j, pieces, piece_of[lo:hi], row_of[lo:hi], cache)
            for p in [p for p in cache if last_use[p] < hi]:
                del cache[p]

    def _rows(self, pieces, piece_ids: np.ndarray, row_ids: np.ndarray, cache: dict[int, pa.Table]) -> list[dict[str, Any]]:
        out: list[dict[str, Any] | None] = [None] * len(piece_ids)
        for p in np.unique(piece_ids):
            if p not in cache:
                f, g, first, rows = pieces[p]
                cache[p] = self.index.read(f, g, self.columns).slice(first, rows)
            where = np.nonzero(piece_ids == p)[0]
            taken = cache[p].take(pa.array(row_ids[where])).to_pylist()
            for slot, row in zip(where, taken):
                out[slot] = row
        return out  # type: ignore[return-value]

    def _make_batch(self, epoch, j, pieces, piece_ids, row_ids, cache) -> dict[str, Any]:
        rows = self._rows(pieces, piece_ids, row_ids, cache)
        images: list[np.ndarray] = []
        captions: list[str] = []
        negs: list[list[str | None]] = []
        ids: list[str] = []
        skipped = dict.fromkeys(SKIP_REASONS, 0)
        example: SkipExample | None = None
        for row in rows:
            sid = str(row[schema.ID])
            rng = random.Random(stable_int(self.seed, epoch, sid, "crop")) if self.augment else None
            try:
                images.append(
                    load_image(row.get(schema.IMAGE), self.image_root, self.spec, rng, self.crop_scale, self.draft)
                )
            except ImageSkip as e:
                skipped[e.reason] += 1
                example = example or SkipExample.of(sid, e)
                log.debug("skipping sample %s: %s", sid, e)
                continue
            ids.append(sid)
            captions.append(row[schema.CAPTION])
            negs.append([pick_negative(row.get(f), self.seed, epoch, sid, f) for f in self.families])
        k = len(self.families)
        if captions:
            text, neg, mask = _tokenize_batch(self.tokenizer, captions, negs, k)
        else:
            ctx = self.tokenizer(["x"]).shape[1]
            text = torch.zeros((0, ctx), dtype=torch.long)
            neg = torch.zeros((0, k, ctx), dtype=torch.long)
            mask = torch.zeros((0, k), dtype=torch.bool)
        return {
            "images": images_to_tensor(images, self.spec),
            "text": text,
            "neg_text": neg,
            "neg_mask": mask,
            "ids": ids,
            "epoch": epoch,
            "index": j,
            "rows": len(rows),
            "skipped": skipped,
            "skip_example": example,
        }


def make_loader(stream: NegativeStream, workers: int, pin_memory: bool = False) -> tud.DataLoader:
    """A DataLoader over the stream's ready-made batches, with persistent workers."""
    return tud.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
