"""The benchmark formats of ``hardneg eval``: one reader per format, each reading the benchmark's own
published files, and a registry (:data:`FORMATS`) that says what each format's items are, which
fields a record must have, how it is scored and whether it counts as compositional or recognition.

Formats (``FORMATS[name].fields`` lists the fields a record must have):

``sugarcrepe``
    SugarCrepe's category JSON (``swap_att.json``...): ``{"0": {filename, caption, negative_caption}}``
    or a list of such records; images are COCO val2017 file names. Pairwise accuracy per file.
``sugarcrepe_pp``
    SugarCrepe++ (``data/replace_att.json``... of ``Sri-Harsha/scpp``): a list of ``{id, filename,
    caption, caption2, negative_caption}`` (two positives, one negative; COCO val2017 images).
    Image-to-text (ITT): the image scores both positives above the negative; text-only (TOT): the
    positives are nearer each other than either is to the negative (the paper's definitions).
``aro_relation``, ``aro_attribution``
    ARO's ``visual_genome_relation.json`` / ``visual_genome_attribution.json``: records
    ``{image_path, bbox_x, bbox_y, bbox_w, bbox_h, true_caption, false_caption}`` with
    ``relation_name`` / ``attributes``; the image is cropped to the box first.
``valse``
    A VALSE piece (``existence.json``, ``relations.json``...): ``{"<id>": {image_file, caption, foil,
    mturk: {caption, foil, other}}}``. Only items its validation marks valid are scored (at least two
    of the three annotators chose the caption, ``mturk.caption >= 2``); the rest are counted as
    ``not_valid``. Pairwise accuracy (caption above foil) per piece.
``winoground``
    Winoground (``facebook/winoground``): ``data/examples.jsonl`` with records ``{id, image_0, image_1,
    caption_0, caption_1, tag, secondary_tag, num_main_preds, collapsed_tag}`` whose ``image_N`` is a
    file stem (``ex_0_img_0``), the images ``<image_root>/<stem>.png`` (``data/images.zip`` unpacked);
    or the dataset's parquet export (``data/test-*.parquet``), whose ``image_N`` holds the image
    bytes. Text, image and group scores, per ``collapsed_tag`` (Object, Relation, Both).
``retrieval``
    A Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``: the images whose
    ``split`` is ``test``, ``filepath``/``filename``, ``sentences[*].raw``) or the BLIP-style list
    ``[{image, caption: [...]}]``. Image->text and text->image R@1/5/10.
``zeroshot``
    An ImageFolder directory or an ``image,label`` CSV (``trainer/zeroshot.py``). Top-1/top-5.

Every reader raises :class:`SourceError` naming the file and the item for a malformed record, and
returns the items it keeps with a count of the ones it leaves out by reason.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import SourceError

COMPOSITIONAL = "compositional"
RECOGNITION = "recognition"


@dataclass(frozen=True)
class PairItem:
    """One image with a positive and a negative caption; ``group`` names the family/category."""

    image: dict[str, Any]
    positive: str
    negative: str
    group: str
    crop: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class TripletItem:
    """SugarCrepe++: one image, two captions that describe it, one that does not."""

    image: dict[str, Any]
    positive: str
    positive2: str
    negative: str
    group: str


@dataclass(frozen=True)
class WinogroundItem:
    """Two images and two captions with the same words; caption ``i`` describes image ``i``."""

    images: tuple[dict[str, Any], dict[str, Any]]
    captions: tuple[str, str]
    group: str


@dataclass(frozen=True)
class RetrievalSet:
    """Images, their captions and each caption's image index."""

    images: list[str]
    captions: list[str]
    owner: list[int]


@dataclass
class Loaded:
    """What a reader keeps (``items``: a list of items, or one :class:`RetrievalSet`) and what it
    leaves out, by reason."""

    items: Any
    skipped: dict[str, int] = field(default_factory=dict)


def read_json(path: str | Path) -> Any:
    """A JSON file's content; an unreadable or invalid file is a :class:`SourceError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"cannot read {path}: {e}") from e


def _records(path: str | Path, data: Any) -> list[tuple[str, Any]]:
    """``(item name, record)`` of a JSON object of records or a list of them."""
    if isinstance(data, dict):
        return [(repr(k), v) for k, v in data.items()]
    if isinstance(data, list):
        return [(str(i), v) for i, v in enumerate(data)]
    raise SourceError(f"{path}: expected a JSON list or object of records, found {type(data).__name__}")


def _text(rec: Any, key: str, path: str | Path, item: str) -> str:
    """``rec[key]``, a non-empty string, or a :class:`SourceError` naming the file, item and field."""
    if not isinstance(rec, dict):
        raise SourceError(f"{path} item {item}: expected an object, found {type(rec).__name__}")
    v = rec.get(key)
    if not isinstance(v, str) or not v.strip():
        raise SourceError(f"{path} item {item}: missing or empty field {key!r}; keys found: {sorted(rec)}")
    return v


# --------------------------------------------------------------------------------------------- readers


def load_sugarcrepe(path: str | Path, limit: int | None = None) -> list[PairItem]:
    """A SugarCrepe category file: ``{"<n>": {filename, caption, negative_caption}}`` (or a list)."""
    items = []
    for item, e in _records(path, read_json(path))[:limit]:
        f, c, n = (_text(e, k, path, item) for k in FORMATS["sugarcrepe"].fields)
        items.append(PairItem({"path": f}, c, n, Path(path).stem))
    return items


def load_sugarcrepe_pp(path: str | Path, limit: int | None = None) -> list[TripletItem]:
    """A SugarCrepe++ type file: a list of ``{id, filename, caption, caption2, negative_caption}``."""
    items = []
    for item, e in _records(path, read_json(path))[:limit]:
        f, c, c2, n = (_text(e, k, path, item) for k in FORMATS["sugarcrepe_pp"].fields)
        items.append(TripletItem({"path": f}, c, c2, n, Path(path).stem))
    return items


def load_aro(path: str | Path, kind: str, limit: int | None = None) -> list[PairItem]:
    """ARO VG-Relation (``kind='relation'``) or VG-Attribution (``kind='attribution'``)."""
    data = read_json(path)
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON list of ARO items")
    items = []
    for i, e in enumerate(data[:limit] if limit else data):
        try:
            x, y, w, h = (float(e[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
            group = e["relation_name"] if kind == "relation" else "_".join(e["attributes"])
            items.append(PairItem({"path": e["image_path"]}, e["true_caption"], e["false_caption"], group,
                                  (x, y, x + w, y + h)))
        except (KeyError, TypeError, ValueError) as err:
            raise SourceError(f"{path} item {i}: missing or bad ARO field ({err})") from err
    return items


def load_valse(path: str | Path, limit: int | None = None) -> Loaded:
    """A VALSE piece's valid items (``mturk.caption >= 2``); the others are counted as ``not_valid``."""
    items: list[PairItem] = []
    skipped: Counter = Counter()
    for item, e in _records(path, read_json(path))[:limit]:
        f, c, n = (_text(e, k, path, item) for k in ("image_file", "caption", "foil"))
        votes = e.get("mturk")
        if not isinstance(votes, dict) or not isinstance(votes.get("caption"), int):
            raise SourceError(f"{path} item {item}: no annotator votes (mturk.caption), so its validity is unknown")
        if votes["caption"] < 2:
            skipped["not_valid"] += 1
            continue
        items.append(PairItem({"path": f}, c, n, Path(path).stem))
    return Loaded(items, dict(skipped))


def load_winoground(path: str | Path, limit: int | None = None) -> list[WinogroundItem]:
    """Winoground's ``examples.jsonl`` (image ``x`` is the file ``x.png`` under the image root) or the
    dataset's parquet export (``data/test-*.parquet``, the images embedded)."""
    if Path(path).suffix.lower() == ".parquet":
        return _winoground_parquet(path, limit)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"cannot read {path}: {e}") from e
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if limit is not None and len(items) >= limit:
            break
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            raise SourceError(f"{path}:{n}: not valid JSON ({err})") from err
        item = f"{e.get('id', n)} (line {n})" if isinstance(e, dict) else f"line {n}"
        i0, i1, c0, c1 = (_text(e, k, path, item) for k in FORMATS["winoground"].fields)
        items.append(WinogroundItem(({"path": f"{i0}.png"}, {"path": f"{i1}.png"}), (c0, c1), _wino_group(e)))
    return items


def _wino_group(rec: dict[str, Any]) -> str:
    return str(rec.get("collapsed_tag") or rec.get("tag") or "untagged")


def _winoground_parquet(path: str | Path, limit: int | None) -> list[WinogroundItem]:
    """The parquet export: ``image_0`` / ``image_1`` are ``{bytes, path}`` structs; each image is keyed
    by the file and row so that images without a path stay distinct."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise SourceError(f"cannot read {path}: {e}") from e
    rows = table.slice(0, limit).to_pylist() if limit is not None else table.to_pylist()
    items = []
    for n, e in enumerate(rows):
        item = f"{e.get('id', n)} (row {n})"
        c0, c1 = (_text(e, k, path, item) for k in ("caption_0", "caption_1"))
        refs = []
        for k in ("image_0", "image_1"):
            v = e.get(k)
            if not isinstance(v, dict) or not (v.get("bytes") or v.get("path")):
                raise SourceError(f"{path} item {item}: {k} holds no image (neither bytes nor a path)")
            refs.append({"bytes": v.get("bytes"), "path": v.get("path"), "key": f"{path}#{n}:{k}"})
        items.append(WinogroundItem((refs[0], refs[1]), (c0, c1), _wino_group(e)))
    return items


def load_karpathy(path: str | Path, limit: int | None = None) -> tuple[list[str], list[str], list[int]]:
    """``(image paths, captions, caption -> image index)`` of a Karpathy split file's ``test`` images
    (``filepath``/``filename``, ``sentences[*].raw``) or of a BLIP-style list (``image``, ``caption``:
    a string or a list). An image without a caption, or a file with no test image, is an error."""
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        records = [(f"images[{i}]", e) for i, e in enumerate(data["images"])
                   if not isinstance(e, dict) or e.get("split") == "test"]
        karpathy = True
    elif isinstance(data, list):
        records, karpathy = [(str(i), e) for i, e in enumerate(data)], False
    else:
        raise SourceError(f"{path}: neither a Karpathy split JSON ({{images: [...]}}) nor a list of {{image, caption}}")
    if not records:
        raise SourceError(f"{path}: no test image (a Karpathy file's images need split: test)")
    images: list[str] = []
    captions: list[str] = []
    owner: list[int] = []
    for item, e in records[:limit]:
        if karpathy:
            name = _text(e, "filename", path, item)
            folder = e.get("filepath") or ""
            sents = e.get("sentences")
            caps = [s.get("raw") if isinstance(s, dict) else None for s in sents] if isinstance(sents, list) else None
            img, field_name = os.path.join(folder, name) if isinstance(folder, str) else name, "sentences[*].raw"
        else:
            img = _text(e, "image", path, item)
            c = e.get("caption")
            caps, field_name = ([c] if isinstance(c, str) else c), "caption"
        if not caps or not all(isinstance(c, str) and c.strip() for c in caps):
            raise SourceError(f"{path} item {item} ({img}): missing or empty {field_name}")
        images.append(img)
        for c in caps:
            captions.append(c)
            owner.append(len(images) - 1)
    return images, captions, owner


def image_refs(items: Any, n: int) -> list[dict[str, Any]]:
    """The first ``n`` image references of a reader's items (a list of items or a :class:`RetrievalSet`)."""
    if isinstance(items, RetrievalSet):
        return [{"path": p} for p in items.images[:n]]
    refs: list[dict[str, Any]] = []
    for it in items:
        refs += list(it.images) if isinstance(it, WinogroundItem) else [it.image]
        if len(refs) >= n:
            break
    return refs[:n]


# --------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Format:
    """A benchmark format: its reader, the fields its records need, how it is scored (``kind``:
    ``pairs``, ``triplets``, ``winoground``, ``retrieval``, ``zeroshot``), whether it counts as
    compositional or recognition, and the metric that stands for it in a table (``headline``)."""

    read: Callable[[str, int | None], Loaded] | None
    kind: str
    fields: tuple[str, ...]
    counts_as: str
    headline: str
    #: the metrics shown as table columns, ``(column suffix, metric key)``
    columns: tuple[tuple[str, str], ...]
    #: pairs formats: the groups with fewer pairs are left out of ``macro_accuracy`` (ARO's own
    #: VG-Attribution evaluation drops attribute pairs with fewer than 25 test cases)
    macro_min_pairs: int = 1


def _loaded(fn: Callable[..., Any]) -> Callable[[str, int | None], Loaded]:
    def read(path: str, limit: int | None = None) -> Loaded:
        out = fn(path, limit)
        return out if isinstance(out, Loaded) else Loaded(out)
    return read


def _aro(kind: str) -> Callable[[str, int | None], Loaded]:
    return lambda path, limit=None: Loaded(load_aro(path, kind, limit))


def _retrieval(path: str, limit: int | None = None) -> Loaded:
    return Loaded(RetrievalSet(*load_karpathy(path, limit)))


_PAIR_COLUMNS = (("", "accuracy"),)
#: ARO (``dataset_zoo/aro_datasets.py``, ``VG_Attribution.evaluate_scores``) scores an attribute pair
#: only when it has at least this many test cases
ARO_MIN_ATTRIBUTE_PAIRS = 25
_ARO_FIELDS = ("image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption")

FORMATS: dict[str, Format] = {
    "sugarcrepe": Format(_loaded(load_sugarcrepe), "pairs", ("filename", "caption", "negative_caption"),
                         COMPOSITIONAL, "accuracy", _PAIR_COLUMNS),
    "sugarcrepe_pp": Format(_loaded(load_sugarcrepe_pp), "triplets",
                            ("filename", "caption", "caption2", "negative_caption"), COMPOSITIONAL, "itt",
                            (("_itt", "itt"), ("_tot", "tot"))),
    "aro_relation": Format(_aro("relation"), "pairs", (*_ARO_FIELDS, "relation_name"), COMPOSITIONAL,
                           "macro_accuracy", (("", "macro_accuracy"),)),
    "aro_attribution": Format(_aro("attribution"), "pairs", (*_ARO_FIELDS, "attributes"), COMPOSITIONAL,
                              "macro_accuracy", (("", "macro_accuracy"),), macro_min_pairs=ARO_MIN_ATTRIBUTE_PAIRS),
    "valse": Format(_loaded(load_valse), "pairs", ("image_file", "caption", "foil", "mturk"), COMPOSITIONAL,
                    "accuracy", _PAIR_COLUMNS),
    "winoground": Format(_loaded(load_winoground), "winoground", ("image_0", "image_1", "caption_0", "caption_1"),
                         COMPOSITIONAL, "group", (("_text", "text"), ("_image", "image"), ("_group", "group"))),
    "retrieval": Format(_retrieval, "retrieval", ("filename", "sentences"), RECOGNITION, "mean_R@1",
                        (("_i2t_R@1", "image_to_text_R@1"), ("_t2i_R@1", "text_to_image_R@1"))),
    "zeroshot": Format(None, "zeroshot", (), RECOGNITION, "top1", (("_top1", "top1"),)),
}

