"""``evaluate(config) -> metrics``: compositionality and retrieval benchmarks for an open_clip model.

Each benchmark runs when its input is configured; results go to one metrics JSON.

Input formats
-------------
Held-out shards (``shards``)
    Negative shards of stage 1. For every row, family and candidate: is the image's similarity to
    its caption strictly higher than to the candidate? Reported per family (``accuracy``,
    ``pairs``) and as ``macro`` (mean over families that have pairs). :class:`PairSet` does the
    scoring, for this benchmark and for every point of ``hardneg train-curves``, so the curve's last
    point equals the evaluation of the final weights (same device, precision and batch size).
SugarCrepe (``sugarcrepe``: one JSON per category, e.g. ``swap_att.json``)
    ``{"0": {"filename": "000000391895.jpg", "caption": "...", "negative_caption": "..."}, ...}``
    or a list of such objects; ``filename`` resolves against ``sugarcrepe_image_root`` (COCO
    val2017). Accuracy per category (the file stem).
ARO (``aro_relation`` = ``visual_genome_relation.json``, ``aro_attribution`` = ``visual_genome_attribution.json``)
    A list of ``{"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption",
    "false_caption", ...}`` with ``relation_name`` (relation) or ``attributes`` (a pair, attribution);
    the image is cropped to the box first, as ARO does. Reported: ``accuracy`` (micro) and
    ``macro_accuracy`` (mean over relations / attribute pairs), with per-group numbers.
Zero-shot classification (``zeroshot``: a list of ``{name, path, classnames, templates}``)
    An ImageFolder directory or an ``image,label`` CSV (trainer/zeroshot.py); top-1 and top-5
    accuracy per set with open_clip's zero-shot classifier, so recognition is measured beside
    compositionality.
COCO retrieval (``coco_karpathy``)
    The BLIP-style Karpathy test list ``[{"image": "val2014/x.jpg", "caption": [5 strings]}, ...]``
    or Karpathy's ``dataset_coco.json`` (``images[*]`` with ``filepath``, ``filename``, ``split``,
    ``sentences[*].raw``; its ``test`` split is used). Image->text and text->image R@1/5/10.

Missing or unreadable images are counted under ``skipped_images`` and their items left out. Each
section says which share of its items that was (``skipped_fraction``) and whether it passed
``max_missing_fraction`` (``over_missing_limit``, also logged and listed under ``warnings``); a section
that scores nothing at all is an error, and the held-out shards' image root is checked on their
first rows before the model is built (:func:`trainer.data.check_images`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.utils.data as tud

from pipeline.contract import schema
from pipeline.contract.families import ALL_FAMILIES
from pipeline.core.atomic import write_json_atomic
from pipeline.core.config import to_dict
from pipeline.core.errors import ConfigError, SourceError
from trainer.benchmarks import (  # noqa: F401  (the readers, re-exported for callers of this module)
    FORMATS,
    Format,
    Loaded,
    PairItem,
    RetrievalSet,
    TripletItem,
    WinogroundItem,
    image_refs,
    load_aro,
    load_karpathy,
    load_sugarcrepe,
    load_sugarcrepe_pp,
    load_valse,
    load_winoground,
)
from trainer.config import EvalConfig, eval_config
from trainer.data import (
    CARD_HINT,
    ImageSkip,
    ImageSpec,
    ImagesUnavailable,
    ShardIndex,
    SkipExample,
    check_images,
    decode_image,
    describe_data,
    images_to_tensor,
    normalize_images,
    open_image,
    unresolved_message,
)
from trainer.distributed import DistInfo
from trainer.loop import amp_dtype, resolve_device
from trainer.models import build_model
from trainer.suite import load_suite, read_benchmarks, summarize, write_tables

log = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)


# --------------------------------------------------------------------------------------------
# pure metric functions


def pairwise_correct(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bool per pair: the positive scores strictly above the negative (a tie counts as wrong)."""
    return pos_scores > neg_scores


def pair_correct(image_f: torch.Tensor, text_f: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """The one pairwise scorer: bool per ``(image, positive, negative)`` row of indices into the
    feature matrices, whether the image's similarity to its caption is strictly the higher."""
    im, pos, neg = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    return pairwise_correct((image_f[im] * text_f[pos]).sum(1), (image_f[im] * text_f[neg]).sum(1))


def family_accuracy(correct: torch.Tensor, family: torch.Tensor, families: Sequence[str]) -> dict[str, Any]:
    """Accuracy and pair count per family (``family`` indexes ``families``), ``macro`` over the
    families that have pairs, ``micro`` over all pairs; exact ratios of counts."""
    fams: dict[str, Any] = {}
    for k, f in enumerate(families):
        sel = family == k
        n = int(sel.sum())
        fams[f] = {"accuracy": int(correct[sel].sum()) / n if n else None, "pairs": n}
    with_pairs = [v["accuracy"] for v in fams.values() if v["pairs"]]
    n = len(correct)
    return {
        "families": fams,
        "macro": sum(with_pairs) / len(with_pairs) if with_pairs else None,
        "micro": int(correct.sum()) / n if n else None,
        "pairs": n,
    }


def grouped_accuracy(correct: Sequence[bool], groups: Sequence[str], macro_min_pairs: int = 1) -> dict[str, Any]:
    """Micro accuracy, macro accuracy over the groups of at least ``macro_min_pairs`` pairs (ARO's
    VG-Attribution: 25), and each group's accuracy and count."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c, g in zip(correct, groups):
        per[g][0] += int(bool(c))
        per[g][1] += 1
    n = sum(v[1] for v in per.values())
    groups_out = {g: {"accuracy": v[0] / v[1], "pairs": v[1]} for g, v in sorted(per.items())}
    macro = [x["accuracy"] for x in groups_out.values() if x["pairs"] >= macro_min_pairs]
    return {
        "accuracy": (sum(v[0] for v in per.values()) / n) if n else None,
        "macro_accuracy": (sum(macro) / len(macro)) if macro else None,
        "pairs": n,
        "groups": groups_out,
    }


def retrieval_recall(sim: torch.Tensor, text_to_image: Sequence[int], ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """R@K both ways from an (images x texts) similarity matrix.

    Image->text: an image is a hit when any of its captions is among its top K texts.
    Text->image: a caption is a hit when its image is among its top K images.
    """
    t2i = torch.as_tensor(list(text_to_image), dtype=torch.long)
    n_img, n_txt = sim.shape
    if n_txt != len(t2i):
        raise ValueError(f"{n_txt} texts but {len(t2i)} text->image entries")
    out: dict[str, float] = {}
    # rank of each text's own image among all images
    own = sim[t2i, torch.arange(n_txt)]
    t_rank = (sim.T > own[:, None]).sum(dim=1)
    # best rank over each image's captions
    order = sim.argsort(dim=1, descending=True)
    rank_of = torch.empty_like(order)
    rank_of.scatter_(1, order, torch.arange(n_txt).expand(n_img, n_txt))
    best = torch.full((n_img,), n_txt, dtype=torch.long)
    best = best.scatter_reduce(0, t2i, rank_of[t2i, torch.arange(n_txt)], reduce="amin")
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((best < k).float().mean()) if n_img else 0.0
        out[f"text_to_image_R@{k}"] = float((t_rank < k).float().mean()) if n_txt else 0.0
    return out


# --------------------------------------------------------------------------------------------
# benchmark readers


def shard_items(index: ShardIndex, families: Sequence[str], limit: int | None = None) -> list[PairItem]:
    """Every (caption, candidate) pair of the held-out shards, grouped by family."""
    items = []
    cols = [schema.IMAGE, schema.CAPTION, *families]
    for n, row in enumerate(index.iter_rows(cols)):
        if limit is not None and n >= limit:
            break
        for f in families:
            for c in row.get(f) or []:
                if c:
                    items.append(PairItem(row[schema.IMAGE] or {}, row[schema.CAPTION], c, f))
    return items


# --------------------------------------------------------------------------------------------
# encoding


class _Images(tud.Dataset):
    def __init__(self, refs: list[tuple[dict[str, Any], tuple | None]], root: str | None, spec: ImageSpec) -> None:
        self.refs, self.root, self.spec = refs, root, spec

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, SkipExample | None]:
        """``(i, pixels, None)``, or ``(i, None, why)`` for an image that cannot be used."""
        ref, crop = self.refs[i]
        try:
            img = open_image(ref, self.root)
            try:
                if crop is not None:
                    img = img.crop(tuple(int(round(v)) for v in crop))
                return i, decode_image(img, self.spec, draft=crop is None), None
            finally:
                img.close()
        except ImageSkip as e:
            return i, None, SkipExample(f"image {i}", e.reason, (ref or {}).get("path"), e.detail)
        except (OSError, ValueError, SyntaxError) as e:
            return i, None, SkipExample(f"image {i}", "corrupt", (ref or {}).get("path"), str(e))


def _collate(items):
    return items


class Encoder:
    """Encodes images and texts with one model, batched, into normalised float32 features."""

    def __init__(self, model, tokenizer, spec: ImageSpec, device: torch.device, dtype, batch_size: int,
                 workers: int, progress: bool) -> None:
        self.model, self.tokenizer, self.spec = model, tokenizer, spec
        self.device, self.dtype, self.batch_size, self.workers = device, dtype, batch_size, workers
        self.progress = progress
        self.skipped: dict[str, int] = defaultdict(int)
        #: the first image the last :meth:`images` call could not use, for messages
        self.example: SkipExample | None = None

    def amp(self) -> contextlib.AbstractContextManager:
        """The autocast context of this encoder's precision (a no-op in fp32)."""
        return torch.autocast(device_type=self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        with torch.no_grad(), self.amp():
            yield

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        feats = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[i : i + self.batch_size])).to(self.device)
            with self._ctx():
                feats.append(self.model.encode_text(tokens, normalize=True).float().cpu())
        if not feats:
            return torch.zeros((0, 0))
        return torch.cat(feats)

    def images(self, refs: list[tuple[dict[str, Any], tuple | None]], root: str | None, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, D)`` (zero rows where the image failed) and a bool ``ok`` mask."""
        from tqdm.auto import tqdm

        loader = tud.DataLoader(_Images(refs, root, self.spec), batch_size=self.batch_size,
                                num_workers=self.workers, collate_fn=_collate)
        feats: torch.Tensor | None = None
        ok = torch.zeros(len(refs), dtype=torch.bool)
        self.example = None
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not self.progress):
            good = [(i, a) for i, a, _ in batch if a is not None]
            for _, _, why in batch:
                if why is not None:
                    self.skipped[why.reason] += 1
                    self.example = self.example or why
            if not good:
                continue
            x = normalize_images(images_to_tensor([a for _, a in good], self.spec).to(self.device), self.spec)
            with self._ctx():
                f = self.model.encode_image(x, normalize=True).float().cpu()
            if feats is None:
                feats = torch.zeros((len(refs), f.shape[1]))
            idx = torch.tensor([i for i, _ in good])
            feats[idx] = f
            ok[idx] = True
        if feats is None:
            feats = torch.zeros((len(refs), 1))
        return feats, ok


def score_pairs(enc: Encoder, items: list[PairItem], root: str | None, desc: str,
                macro_min_pairs: int = 1) -> dict[str, Any]:
    """Encode each distinct image and text once; return grouped pairwise accuracy
    (:func:`grouped_accuracy`)."""
    img_key: dict[tuple, int] = {}
    refs: list[tuple[dict[str, Any], tuple | None]] = []
    for it in items:
        key = (it.image.get("path"), hash(it.image.get("bytes")), it.crop)
        if key not in img_key:
            img_key[key] = len(refs)
            refs.append((it.image, it.crop))
    texts = sorted({t for it in items for t in (it.positive, it.negative)})
    t_index = {t: i for i, t in enumerate(texts)}
    img_f, ok = enc.images(refs, root, desc)
    txt_f = enc.texts(texts)
    rows, groups = [], []
    skipped = 0
    for it in items:
        i = img_key[(it.image.get("path"), hash(it.image.get("bytes")), it.crop)]
        if not ok[i]:
            skipped += 1
            continue
        rows.append((i, t_index[it.positive], t_index[it.negative]))
        groups.append(it.group)
    correct = pair_correct(img_f, txt_f, torch.tensor(rows, dtype=torch.long)).tolist() if rows else []
    out = grouped_accuracy(correct, groups, macro_min_pairs)
    out["skipped_pairs"] = skipped
    return out


def _image_id(ref: dict[str, Any]) -> Any:
    """An image reference's identity: its ``key`` (embedded images) or else its path."""
    return ref.get("key") or ref.get("path")


def _distinct_images(refs_of_items: Sequence[dict[str, Any]]) -> tuple[list[tuple[dict[str, Any], None]], dict[Any, int]]:
    """Each distinct image reference once, and the index of each (:func:`_image_id`)."""
    index: dict[Any, int] = {}
    refs: list[tuple[dict[str, Any], None]] = []
    for ref in refs_of_items:
        key = _image_id(ref)
        if key not in index:
            index[key] = len(refs)
            refs.append((ref, None))
    return refs, index


def _texts(enc: Encoder, texts: Sequence[str]) -> tuple[torch.Tensor, dict[str, int]]:
    distinct = sorted(set(texts))
    return enc.texts(distinct), {t: i for i, t in enumerate(distinct)}


def score_triplets(enc: Encoder, items: list[TripletItem], root: str | None, desc: str) -> dict[str, Any]:
    """SugarCrepe++: image-to-text (``itt``: the image scores both positives strictly above the
    negative) and text-only (``tot``: the two positives are strictly nearer each other than either is
    to the negative) accuracy over the items whose image loads."""
    refs, index = _distinct_images([it.image for it in items])
    img_f, ok = enc.images(refs, root, desc)
    txt_f, t = _texts(enc, [x for it in items for x in (it.positive, it.positive2, it.negative)])
    itt = tot = scored = 0
    for it in items:
        i = index[_image_id(it.image)]
        if not ok[i]:
            continue
        p1, p2, n = txt_f[t[it.positive]], txt_f[t[it.positive2]], txt_f[t[it.negative]]
        im = img_f[i]
        itt += int(bool(im @ p1 > im @ n) and bool(im @ p2 > im @ n))
        tot += int(bool(p1 @ p2 > p1 @ n) and bool(p1 @ p2 > p2 @ n))
        scored += 1
    return {"itt": itt / scored if scored else None, "tot": tot / scored if scored else None,
            "items": scored, "skipped_items": len(items) - scored}


def score_winoground(enc: Encoder, items: list[WinogroundItem], root: str | None, desc: str) -> dict[str, Any]:
    """Winoground's three scores over the examples whose two images load: text (each image scores its
    own caption strictly higher), image (each caption scores its own image strictly higher) and group
    (both); also per ``collapsed_tag`` group."""
    refs, index = _distinct_images([im for it in items for im in it.images])
    img_f, ok = enc.images(refs, root, desc)
    txt_f, t = _texts(enc, [c for it in items for c in it.captions])
    total: Counter = Counter()
    per: dict[str, Counter] = defaultdict(Counter)
    for it in items:
        i0, i1 = (index[_image_id(im)] for im in it.images)
        if not (ok[i0] and ok[i1]):
            continue
        c0, c1 = txt_f[t[it.captions[0]]], txt_f[t[it.captions[1]]]
        # s<i><c>: image i against caption c
        s00, s01, s10, s11 = (float(img_f[i] @ c) for i, c in ((i0, c0), (i0, c1), (i1, c0), (i1, c1)))
        text, image = s00 > s01 and s11 > s10, s00 > s10 and s11 > s01
        hit = {"text": int(text), "image": int(image), "group": int(text and image), "n": 1}
        total.update(hit)
        per[it.group].update(hit)
    n = total["n"]
    out: dict[str, Any] = {k: total[k] / n if n else None for k in ("text", "image", "group")}
    out["groups"] = {g: {**{k: c[k] / c["n"] for k in ("text", "image", "group")}, "examples": c["n"]}
                     for g, c in sorted(per.items())}
    out.update({"examples": n, "skipped_examples": len(items) - n})
    return out


def score_retrieval(enc: Encoder, rs: RetrievalSet, root: str | None, desc: str) -> dict[str, Any]:
    """Image->text and text->image R@1/5/10 over the images that load and their captions."""
    img_f, ok = enc.images([({"path": p}, None) for p in rs.images], root, desc)
    keep_img = ok.nonzero().squeeze(1)
    remap = {int(old): new for new, old in enumerate(keep_img.tolist())}
    keep_txt = [j for j, o in enumerate(rs.owner) if o in remap]
    txt_f = enc.texts([rs.captions[j] for j in keep_txt])
    rec = retrieval_recall(img_f[keep_img] @ txt_f.T, [remap[rs.owner[j]] for j in keep_txt]) if len(keep_img) and keep_txt else {}
    return {**rec, "images": len(keep_img), "captions": len(keep_txt), "skipped_images": len(rs.images) - len(keep_img)}


def zeroshot_scores(enc: Encoder, spec: Any, limit: int | None = None) -> dict[str, Any]:
    """Top-1/top-5 zero-shot accuracy of one set (``spec``: a ``ZeroShotSpec``)."""
    from trainer import zeroshot

    zs = zeroshot.load_set(spec.name, spec.path, spec.classnames, spec.templates, spec.image_root)
    if limit is not None:
        zs.images, zs.labels = zs.images[:limit], zs.labels[:limit]
    feats, ok = enc.images([({"path": p}, None) for p in zs.images], None, f"zeroshot:{zs.name}")
    weights = zeroshot.classifier_weights(enc.model, enc.tokenizer, zs, enc.device, enc.amp())
    return zeroshot.score(zs, feats, ok, weights)


#: how many of a benchmark file's first images are looked for before a model is built
PROBE_IMAGES = 16


def _suite_flag(name: str) -> str:
    return f"the image_root (or image_roots) of benchmark {name} in the suite"


def probe_benchmark(name: str, spec: Any, loaded: dict[str, Loaded]) -> None:
    """Before a model is built: a file of benchmark ``name`` none of whose first images (given by
    path) exists under its image root is an :class:`ImagesUnavailable` error naming the file, an
    image, the root and the setting to change; some missing images are left to the run to count. A
    file with nothing to score (no record, or every record left out) is a :class:`SourceError`."""
    for path, ld in loaded.items():
        n = len(ld.items.images) if isinstance(ld.items, RetrievalSet) else len(ld.items)
        if not n:
            raise SourceError(f"benchmark {name} ({path}): nothing to score: it holds no item"
                              + (f" its reader keeps (left out: {ld.skipped})" if ld.skipped else ""))
        root = spec.image_roots.get(Path(path).stem, spec.image_root)
        paths = [r["path"] for r in image_refs(ld.items, PROBE_IMAGES) if r.get("path") and not r.get("bytes")]
        full = [p if (os.path.isabs(p) or not root) else os.path.join(root, p) for p in paths]
        if full and not any(os.path.exists(f) for f in full):
            example = SkipExample("image 0", "missing", paths[0], full[0])
            raise ImagesUnavailable(unresolved_message(
                f"benchmark {name} ({path}): none of its first {len(full)} images exists", example, root,
                _suite_flag(name)))


def run_benchmark(enc: Encoder, name: str, spec: Any, limit: int | None, judge: Callable[..., None],
                  loaded: dict[str, Loaded] | None = None) -> dict[str, Any]:
    """Score one benchmark of a suite (``spec``: a ``BenchmarkSpec``; ``loaded``: its files as
    :func:`trainer.suite.read_benchmarks` read them, else read here): per file for formats with one
    file per category or piece (``files``, keyed by file name), and each of the format's table
    metrics as the mean over those files. Every file reports the items it read (``items_read``),
    those its reader left out by reason (``left_out``, e.g. VALSE's ``not_valid``) and those left
    out for a missing image; ``judge`` fails a file that scores nothing."""
    from trainer.config import ZeroShotSpec

    fmt = FORMATS[spec.format]
    flag = _suite_flag(name)
    read = (lambda path: loaded[path]) if loaded is not None else (lambda path: fmt.read(path, limit))
    root = spec.image_root
    if fmt.kind == "zeroshot":
        z = ZeroShotSpec(name=name, path=spec.files[0], classnames=spec.classnames, templates=spec.templates,
                         image_root=root)
        res = zeroshot_scores(enc, z, limit)
        judge(f"{name} ({z.path})", res, res["images"], res["skipped_images"], "images", None, flag, enc.example)
        return res
    if fmt.kind == "retrieval":
        res = score_retrieval(enc, read(spec.files[0]).items, root, name)
        if res.get("image_to_text_R@1") is not None:
            res["mean_R@1"] = (res["image_to_text_R@1"] + res["text_to_image_R@1"]) / 2
        judge(f"{name} ({spec.files[0]})", res, res["images"], res["skipped_images"], "images", root, flag,
              enc.example)
        return res
    scorers = {"pairs": (score_pairs, "pairs", "skipped_pairs"), "triplets": (score_triplets, "items", "skipped_items"),
               "winoground": (score_winoground, "examples", "skipped_examples")}
    score, unit, skipped_key = scorers[fmt.kind]
    files: dict[str, Any] = {}
    for path in spec.files:
        got = read(path)
        stem = Path(path).stem
        root = spec.image_roots.get(stem, spec.image_root)
        extra = {"macro_min_pairs": fmt.macro_min_pairs} if fmt.kind == "pairs" else {}
        res = score(enc, got.items, root, f"{name}:{stem}", **extra)
        res["items_read"] = len(got.items) + sum(got.skipped.values())
        res["left_out"] = dict(got.skipped)
        judge(f"{name} {stem} ({path})", res, res[unit], res[skipped_key], unit, root, flag, enc.example)
        files[stem] = res
    out: dict[str, Any] = {"files": files}
    for _, key in fmt.columns:
        vals = [r[key] for r in files.values() if r.get(key) is not None]
        out[key] = sum(vals) / len(vals) if vals else None
    return out


# --------------------------------------------------------------------------------------------
# held-out shard pairs, scored again and again


class PairSet:
    """Held-out (image, caption, negative) pairs of negative shards, decoded and tokenised once.

    The shard benchmark of ``hardneg eval`` and every point of ``hardneg train-curves`` are this class's
    :meth:`accuracy`: the same pairs, the same validation transform, the same batches and the same
    scorer (:func:`pair_correct`), so the two agree exactly when they run on the same device and
    precision with the same batch size.
    """

    def __init__(self, images: torch.Tensor, tokens: torch.Tensor, pairs: torch.Tensor, families: list[str],
                 skipped_images: dict[str, int] | None = None, skipped_pairs: int = 0,
                 example: SkipExample | None = None) -> None:
        #: uint8 (N_img, 3, H, W); int64 (N_txt, context); int64 (N_pairs, 4) = image, pos, neg, family
        self.images, self.tokens, self.pairs, self.families = images, tokens, pairs, families
        #: images that could not be used, by reason, and the pairs left out for them
        self.skipped_images = dict(skipped_images or {})
        self.skipped_pairs = skipped_pairs
        #: the first image that could not be used
        self.example = example

    @classmethod
    def from_shards(
        cls,
        paths: Sequence[str],
        split: str | None,
        families: Sequence[str],
        spec: ImageSpec,
        tokenizer: Any,
        image_root: str | None = None,
        limit: int | None = None,
        *,
        verify: bool | None = None,
        root_flag: str = "image_root",
    ) -> PairSet:
        """The pairs of ``families`` in the shards (empty: every family with pairs there, renumbered);
        no pair at all is a :class:`ConfigError`, and no pair with a usable image an
        :class:`ImagesUnavailable` error that says to set ``root_flag``."""
        index = ShardIndex.from_paths(list(paths), split, verify=verify)
        fams = list(families) or [f for f in ALL_FAMILIES if any(f in sf.columns for sf in index.files)]
        try:
            items = shard_items(index, fams, limit)
        finally:
            index.close()
        pairs = cls.from_items(items, fams, spec, tokenizer, image_root)
        if not len(pairs.pairs) and pairs.skipped_pairs:
            raise ImagesUnavailable(unresolved_message(
                f"{describe_data(paths, split)}: no held-out pair can be scored, the images of all "
                f"{pairs.skipped_pairs} are missing or unreadable", pairs.example, image_root, root_flag, hint=CARD_HINT))
        if not len(pairs.pairs):
            raise ConfigError(f"no held-out pairs of families {fams} in {list(paths)} (split {split!r})")
        if not families:  # only the families that have pairs, renumbered
            present = sorted(set(pairs.pairs[:, 3].tolist()))
            renum = torch.full((len(fams),), -1, dtype=torch.long)
            renum[present] = torch.arange(len(present))
            pairs.pairs[:, 3] = renum[pairs.pairs[:, 3]]
            pairs.families = [fams[k] for k in present]
        return pairs

    @classmethod
    def from_items(cls, items: Sequence[PairItem], families: Sequence[str], spec: ImageSpec, tokenizer: Any,
                   image_root: str | None = None, workers: int = 0) -> PairSet:
        """Decode each distinct image once (validation transform; ``workers`` loader processes) and
        tokenise each distinct text once; a pair whose image is unusable is left out and counted."""
        fams = list(families)
        img_of: dict[tuple[Any, ...], int] = {}
        refs: list[tuple[dict[str, Any], tuple | None]] = []
        for it in items:
            key = (it.image.get("path"), it.image.get("bytes"))
            if key not in img_of:
                img_of[key] = len(refs)
                refs.append((it.image, None))
        arrays: list[np.ndarray | None] = [None] * len(refs)
        skipped_images: dict[str, int] = defaultdict(int)
        example: SkipExample | None = None
        loader = tud.DataLoader(_Images(refs, image_root, spec), batch_size=64, num_workers=workers,
                                collate_fn=_collate)
        for batch in loader:
            for i, array, why in batch:
                arrays[i] = array
                if why is not None:
                    skipped_images[why.reason] += 1
                    example = example or why
        position, kept = [-1] * len(refs), []
        for i, a in enumerate(arrays):
            if a is not None:
                position[i] = len(kept)
                kept.append(a)
        text_of: dict[str, int] = {}
        rows: list[tuple[int, int, int, int]] = []
        skipped_pairs = 0
        for it in items:
            img = position[img_of[(it.image.get("path"), it.image.get("bytes"))]]
            if img < 0:
                skipped_pairs += 1
                continue
            ids = [text_of.setdefault(t, len(text_of)) for t in (it.positive, it.negative)]
            rows.append((img, ids[0], ids[1], fams.index(it.group)))
        if skipped_pairs:
            log.warning("held-out pairs: %d left out, their image is missing or unreadable", skipped_pairs)
        tokens = tokenizer(list(text_of)) if text_of else torch.zeros((0, 0), dtype=torch.long)
        pairs = torch.tensor(rows, dtype=torch.long).reshape(-1, 4)
        log.info("held-out pairs: %d over %d images and %d texts", len(rows), len(kept), len(text_of))
        return cls(images_to_tensor(kept, spec), tokens, pairs, fams, dict(skipped_images), skipped_pairs, example)

    def accuracy(self, model: Any, spec: ImageSpec, batch_size: int = 256, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> dict[str, Any]:
        """Per-family share of pairs where the image scores its caption strictly above the negative.

        Features are computed in batches of ``batch_size`` on ``device`` (None: where the inputs are)
        under autocast to ``dtype`` (None: fp32); the model's train/eval mode is put back afterwards.
        """
        if not len(self.pairs):
            return family_accuracy(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.long), self.families)

        def on(x: torch.Tensor) -> torch.Tensor:
            return x if device is None else x.to(device)

        amp = torch.autocast(device_type=device.type, dtype=dtype) if device is not None and dtype else contextlib.nullcontext()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), amp:
                img = torch.cat([
                    model.encode_image(normalize_images(on(self.images[i : i + batch_size]), spec), normalize=True).float().cpu()
                    for i in range(0, len(self.images), batch_size)
                ])
                txt = torch.cat([
                    model.encode_text(on(self.tokens[i : i + batch_size]), normalize=True).float().cpu()
                    for i in range(0, len(self.tokens), batch_size)
                ])
        finally:
            model.train(was_training)
        return family_accuracy(pair_correct(img, txt, self.pairs[:, :3]), self.pairs[:, 3], self.families)


# --------------------------------------------------------------------------------------------
# the entry point

#: the setting that names each benchmark's image root, as the errors about images say it
_ROOT_FLAGS = {
    "shards": "--image-root (image_root)",
    "sugarcrepe": "--sugarcrepe-image-root (sugarcrepe_image_root)",
    "aro": "--aro-image-root (aro_image_root)",
    "coco": "--coco-image-root (coco_image_root)",
    "zeroshot": "the set's image_root (paths of a CSV resolve against it, else against the CSV's folder)",
}


def _judge_section(name: str, section: dict[str, Any], scored: int, skipped: int, unit: str, limit: float,
                   root: str | None, flag: str, example: SkipExample | None, warnings: list[str]) -> None:
    """Fail a section that scored nothing; otherwise record which share of its items was left out
    (``skipped_fraction``) and whether that passed ``limit`` (``over_missing_limit``, logged and
    added to ``warnings``)."""
    total = scored + skipped
    if not scored:
        if not total:
            raise SourceError(f"eval section {name} scores nothing: its input holds no {unit}")
        raise ImagesUnavailable(unresolved_message(
            f"eval section {name} scores nothing: the images of all its {total} {unit} are missing or unreadable",
            example, root, flag, hint=CARD_HINT if name == "shards" else ""))
    share = skipped / total
    section["skipped_fraction"] = share
    section["over_missing_limit"] = share > limit
    if share > limit:
        msg = (f"eval section {name}: {skipped} of {total} {unit} ({share:.1%}) were left out for a missing or "
               f"unreadable image, more than max_missing_fraction = {limit:g}; its figures cover the rest only")
        log.warning("%s", msg)
        warnings.append(msg)


def evaluate(config: EvalConfig | dict[str, Any]) -> dict[str, Any]:
    """Run every configured benchmark and write the metrics JSON to ``config.out``."""
    cfg = config if isinstance(config, EvalConfig) else eval_config(config)
    cfg.validate()
    t0 = time.time()
    suite = load_suite(cfg.suite) if cfg.suite else None  # read before a model is built: a bad file fails at once
    suite_items = read_benchmarks(suite, cfg.limit) if suite else {}
    for name, loaded in suite_items.items():
        probe_benchmark(name, suite[name], loaded)
    shards = None
    if cfg.shards:  # read (and checked) before a model is built, so damaged shards stop the run at once
        families = list(cfg.families) or list(ALL_FAMILIES)
        index = ShardIndex.from_paths(cfg.shards, cfg.split, verify=cfg.verify)
        try:
            check_images(index, cfg.image_root, describe_data(cfg.shards, cfg.split), _ROOT_FLAGS["shards"])
            shards = (shard_items(index, families, cfg.limit), families)
        finally:
            index.close()
    device = resolve_device(cfg.model.device, DistInfo())
    dtype = amp_dtype(cfg.model.precision, device)
    built = build_model(cfg.model, device)
    built.model.eval()
    spec = ImageSpec.from_preprocess(built.preprocess)
    enc = Encoder(built.model, built.tokenizer, spec, device, dtype, cfg.batch_size, cfg.workers, cfg.progress)
    metrics: dict[str, Any] = {
        "model": {"name": built.name, "pretrained": cfg.model.pretrained},
        "config": to_dict(cfg),
    }
    warnings: list[str] = []

    def judge(name: str, section: dict[str, Any], scored: int, skipped: int, unit: str, root: str | None,
              flag: str, example: SkipExample | None) -> None:
        _judge_section(name, section, scored, skipped, unit, cfg.max_missing_fraction, root, flag, example, warnings)

    if shards is not None:
        held_out = PairSet.from_items(shards[0], shards[1], spec, built.tokenizer, cfg.image_root, cfg.workers)
        for reason, n in held_out.skipped_images.items():
            enc.skipped[reason] += n
        if not shards[0]:
            raise ConfigError(f"eval section shards scores nothing: {describe_data(cfg.shards, cfg.split)} holds no "
                              f"pairs of families {shards[1]}")
        metrics["shards"] = {
            **held_out.accuracy(built.model, spec, cfg.batch_size, device, dtype),
            "skipped_pairs": held_out.skipped_pairs,
        }
        judge("shards", metrics["shards"], len(held_out.pairs), held_out.skipped_pairs, "pairs", cfg.image_root,
              _ROOT_FLAGS["shards"], held_out.example)

    if cfg.sugarcrepe:
        sc: dict[str, Any] = {}
        for path in cfg.sugarcrepe:
            res = score_pairs(enc, load_sugarcrepe(path, cfg.limit), cfg.sugarcrepe_image_root, Path(path).stem)
            sc[Path(path).stem] = {"accuracy": res["accuracy"], "pairs": res["pairs"], "skipped_pairs": res["skipped_pairs"]}
            judge(f"sugarcrepe {Path(path).stem} ({path})", sc[Path(path).stem], res["pairs"], res["skipped_pairs"],
                  "pairs", cfg.sugarcrepe_image_root, _ROOT_FLAGS["sugarcrepe"], enc.example)
        accs = [v["accuracy"] for v in sc.values() if v["accuracy"] is not None]
        metrics["sugarcrepe"] = {"categories": sc, "mean": sum(accs) / len(accs) if accs else None}

    for key, path, kind in (("aro_vg_relation", cfg.aro_relation, "relation"),
                            ("aro_vg_attribution", cfg.aro_attribution, "attribution")):
        if path:
            metrics[key] = score_pairs(enc, load_aro(path, kind, cfg.limit), cfg.aro_image_root, key,
                                       FORMATS[f"aro_{kind}"].macro_min_pairs)
            judge(f"{key} ({path})", metrics[key], metrics[key]["pairs"], metrics[key]["skipped_pairs"], "pairs",
                  cfg.aro_image_root, _ROOT_FLAGS["aro"], enc.example)

    if cfg.coco_karpathy:
        metrics["coco_retrieval"] = score_retrieval(enc, RetrievalSet(*load_karpathy(cfg.coco_karpathy, cfg.limit)),
                                                    cfg.coco_image_root, "coco")
        res = metrics["coco_retrieval"]
        judge(f"coco_retrieval ({cfg.coco_karpathy})", res, res["images"], res["skipped_images"], "images", cfg.coco_image_root, _ROOT_FLAGS["coco"], enc.example)

    if cfg.zeroshot:
        metrics["zeroshot"] = {}
        for z in cfg.zeroshot:
            res = metrics["zeroshot"][z.name] = zeroshot_scores(enc, z, cfg.limit)
            judge(f"zeroshot {z.name} ({z.path})", res, res["images"], res["skipped_images"], "images", None,
                  _ROOT_FLAGS["zeroshot"], enc.example)

    if suite is not None:
        results = {name: run_benchmark(enc, name, spec, cfg.limit, judge, suite_items.get(name))
                   for name, spec in suite.items()}
        metrics["suite"] = summarize(suite, results, str(cfg.suite))

    metrics["skipped_images"] = dict(enc.skipped)
    metrics["warnings"] = warnings
    metrics["wall_s"] = round(time.time() - t0, 3)
    if sum(enc.skipped.values()):
        log.warning("skipped images: %s", dict(enc.skipped))
    write_json_atomic(metrics, cfg.out, sort_keys=True)
    log.info("metrics written to %s", cfg.out)
    if suite is not None:
        md, table = write_tables(metrics["suite"], cfg.out, cfg.model.pretrained or built.name)
        log.info("suite table written to %s and %s", md, table)
    return metrics
