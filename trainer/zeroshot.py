"""Zero-shot classification: how much recognition a compositionality fine-tune costs.

A zero-shot set is an ImageFolder-style directory (``<root>/<class>/<image>``, classes in sorted
folder order) or a CSV of ``image,label`` rows (header required; ``image`` resolves against the
CSV's folder or ``image_root``). Class names come from a text file (one per line; for a CSV with
integer labels, line ``i`` names label ``i``), from open_clip's ImageNet class names
(``classnames: imagenet``), or from the folder names / labels themselves. Prompt templates come
from a text file (one per line, ``{}`` where the class name goes), from open_clip's ImageNet
templates (``templates: openai`` or ``simple``), or default to ``a photo of a {}.``.

The classifier is open_clip's own :func:`open_clip.build_zero_shot_classifier` (mean of the
normalised prompt embeddings per class); accuracy is top-1 and top-5 over the images that load.
Unreadable images are counted (``skipped_images``), never scored as wrong.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from pipeline.core.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
TOPK = (1, 5)


@dataclass
class ZeroShotSet:
    """Images with their class index, the class names and the prompt templates of one dataset."""

    name: str
    images: list[str]
    labels: list[int]
    classnames: list[str]
    templates: Sequence[str | Callable[[str], str]]


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} file {path}: {e}") from e
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise ConfigError(f"{what} file {path} is empty")
    return lines


def load_classnames(spec: str | None) -> list[str] | None:
    """Class names from a file, open_clip's ImageNet names (``imagenet``), or None (take them from the data)."""
    if not spec:
        return None
    if spec == "imagenet":
        from open_clip import IMAGENET_CLASSNAMES

        return list(IMAGENET_CLASSNAMES)
    return _read_lines(Path(spec), "class names")


def load_templates(spec: str | None) -> Sequence[str | Callable[[str], str]]:
    """Prompt templates from a file, open_clip's ImageNet sets (``openai``, ``simple``), or the default."""
    if not spec:
        return DEFAULT_TEMPLATES
    if spec in ("openai", "simple"):
        from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

        return tuple(OPENAI_IMAGENET_TEMPLATES if spec == "openai" else SIMPLE_IMAGENET_TEMPLATES)
    lines = _read_lines(Path(spec), "templates")
    bad = [t for t in lines if t.count("{}") != 1]
    if bad:
        raise ConfigError(f"templates file {spec}: every line needs exactly one {{}} (the class name): {bad[0]!r}")
    return tuple(lines)


def _from_folder(root: Path, classnames: list[str] | None) -> tuple[list[str], list[int], list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise SourceError(f"zero-shot folder {root} has no class sub-folders (<root>/<class>/<image>)")
    if classnames is not None and len(classnames) != len(classes):
        raise ConfigError(f"zero-shot folder {root} has {len(classes)} classes but {len(classnames)} class names were given")
    images, labels = [], []
    for i, c in enumerate(classes):
        for p in sorted((root / c).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                images.append(str(p))
                labels.append(i)
    return images, labels, classnames or [c.replace("_", " ") for c in classes]


def _from_csv(path: Path, classnames: list[str] | None, image_root: str | None) -> tuple[list[str], list[int], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SourceError(f"cannot read zero-shot CSV {path}: {e}") from e
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise SourceError(f"zero-shot CSV {path} needs a header with 'image' and 'label' columns")
    root = Path(image_root) if image_root else path.parent
    raw = [r["label"] for r in rows]
    if classnames is not None and all(x.strip().lstrip("-").isdigit() for x in raw):
        labels = [int(x) for x in raw]
        bad = [x for x in labels if not 0 <= x < len(classnames)]
        if bad:
            raise SourceError(f"zero-shot CSV {path}: label {bad[0]} is outside the {len(classnames)} class names")
        names = classnames
    else:
        names = classnames or sorted(set(raw))
        index = {c: i for i, c in enumerate(names)}
        missing = sorted(set(raw) - set(index))
        if missing:
            raise SourceError(f"zero-shot CSV {path}: labels {missing[:5]} are not among the class names")
        labels = [index[x] for x in raw]
    images = [str(p if (p := Path(r["image"])).is_absolute() else root / p) for r in rows]
    return images, labels, names


def load_set(name: str, path: str, classnames: str | None = None, templates: str | None = None,
             image_root: str | None = None) -> ZeroShotSet:
    """A zero-shot set from an ImageFolder directory or an ``image,label`` CSV."""
    p = Path(path)
    names = load_classnames(classnames)
    if p.is_dir():
        images, labels, names = _from_folder(p, names)
    elif p.is_file():
        images, labels, names = _from_csv(p, names, image_root)
    else:
        raise SourceError(f"zero-shot set {name!r}: {path} does not exist")
    if not images:
        raise SourceError(f"zero-shot set {name!r}: {path} holds no images")
    return ZeroShotSet(name, images, labels, list(names), load_templates(templates))


def topk_accuracy(logits: Any, labels: Any, ks: Sequence[int] = TOPK) -> dict[str, float]:
    """``{"top1": .., "top5": ..}``: share of rows whose label is among the k highest logits."""
    n, c = logits.shape
    out = {}
    for k in ks:
        top = logits.topk(min(k, c), dim=1).indices
        out[f"top{k}"] = float((top == labels[:, None]).any(dim=1).float().mean()) if n else 0.0
    return out


def classifier_weights(model: Any, tokenizer: Any, zs: ZeroShotSet, device: Any, amp: Any) -> Any:
    """``(D, classes)`` text-side classifier, built by open_clip's helper."""
    import torch
    from open_clip import build_zero_shot_classifier

    with torch.no_grad(), amp:
        w = build_zero_shot_classifier(model, tokenizer, zs.classnames, list(zs.templates), device=device)
    return w.float().cpu()


def score(zs: ZeroShotSet, image_features: Any, ok: Any, weights: Any) -> dict[str, Any]:
    """Top-1/top-5 accuracy of the images that loaded (``ok``), with counts."""
    import torch

    labels = torch.tensor(zs.labels)
    keep = ok.nonzero().squeeze(1)
    logits = image_features[keep] @ weights
    return {
        **topk_accuracy(logits, labels[keep]),
        "images": int(len(keep)),
        "classes": len(zs.classnames),
        "templates": len(zs.templates),
        "skipped_images": int(len(zs.images) - len(keep)),
    }
