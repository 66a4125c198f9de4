"""The embedded compositional world: rendered scenes whose captions only word order and binding tell apart.

COCO needs 13 GB of images and a GPU; this world runs the whole pipeline on a laptop CPU. Every
image of a fine-tuning world holds two (sometimes three) shapes of distinct colours in a clear
spatial relation, so a caption and its relation or attribute swap differ only in order or binding,
exactly what bag-of-words models miss. Some (colour, shape) pairs appear only in the test split, so
the test measures composition, not memory. A pretraining world (``single_object_prob`` > 0, the
``and`` template) also holds one-object images and names objects without relations, and can keep
out another world's test pairs (``exclude_pairs_from``).

Output (the same source format stage 1 reads): ``<out>/train.parquet`` and ``<out>/test.parquet``,
one row per caption, the PNG embedded in the ``image`` struct (the Hugging Face Image convention),
plus ground-truth columns; and ``<out>/world.json`` with the counts, vocabulary, held-out pairs and
the in-batch collision estimate. Same seed and config => byte-identical files.

Columns: ``id`` ("synth-train-000123#0", one row per caption), ``image`` (struct bytes/path, path
"train/000123.png"), ``caption``, ``split``, ``group`` (the image id; captions of one image share it),
``template``, ``objects`` (list of shape/colour/size/x/y/extent, x/y the centre pixel), ``relations``
(list of subject/predicate/object indices into ``objects``; object 1 is the anchor), ``relation``
(the first predicate: how object 0 stands to object 1) and ``heldout`` (the image holds a held-out pair).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from pipeline.contract import schema
from pipeline.core.atomic import write_bytes_atomic, write_table_atomic
from pipeline.core.config import build_config, config_hash, load_yaml_section, to_dict
from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

#: RGB of every colour name the world can use; distinct enough to survive JPEG-free PNG exactly
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "purple": (140, 50, 190),
    "pink": (245, 130, 190),
    "brown": (130, 80, 30),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "cyan": (40, 200, 220),
    "white": (255, 255, 255),
}

#: side of an object's bounding box as a fraction of the image side
SIZE_FRACTIONS: dict[str, float] = {"small": 0.22, "medium": 0.30, "large": 0.38}

RELATIONS = ("left_of", "right_of", "above", "below")
INVERSE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
HORIZONTAL = ("left_of", "right_of")
VERTICAL = ("above", "below")
#: how a relation reads between two noun phrases ("A <phrase> B")
REL_PHRASES: dict[str, tuple[str, ...]] = {
    "left_of": ("to the left of", "left of"),
    "right_of": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below", "under"),
}
#: "B with A <phrase>": A stands in the relation to B
ITS_PHRASES = {"left_of": "to its left", "right_of": "to its right", "above": "above it", "below": "below it"}

#: two-object templates; {a} {rel} {b} means "a stands in rel to b"
TEMPLATES_2: dict[str, str] = {
    "plain": "{a} {rel} {b}",
    "is": "{a} is {rel} {b}",
    "there_is": "there is {a} {rel} {b}",
    "two_shapes": "two shapes: {a} {rel} {b}",
    "image_of": "an image of {a} {rel} {b}",
    "with_its": "{b} with {a} {its}",
    # only realised with a left/top of b, see _caption_two
    "sides": "{a} {side_a} and {b} {side_b}",
    # names both objects and no relation (a pretraining world's scenes), either one first
    "and": "{a} and {b}",
}
#: three-object templates: a and c each stand in a relation to the anchor b; {bref} re-names b
TEMPLATES_3: dict[str, str] = {
    "plain3": "{a} {rel} {b}, and {c} {rel2} {bref}",
    "is3": "{a} is {rel} {b}, and {c} is {rel2} {bref}",
    "there_is3": "there is {a} {rel} {b}, and {c} is {rel2} {bref}",
    "three_shapes": "three shapes: {a} {rel} {b}, and {c} {rel2} {bref}",
    "with_its3": "{b} with {a} {its} and {c} {its2}",
}
#: one-object templates (``single_object_prob``)
TEMPLATES_1: dict[str, str] = {
    "one": "{a}",
    "there_is1": "there is {a}",
    "image_of1": "an image of {a}",
}
#: the templates a world uses unless ``templates`` says otherwise
DEFAULT_TEMPLATES = [*(t for t in TEMPLATES_2 if t != "and"), *TEMPLATES_3, *TEMPLATES_1]
SIDE_WORDS = {"h": ("on the left", "on the right"), "v": ("at the top", "at the bottom")}


def _unit_polygon(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Scale a polygon so its bounding box is the unit square centred on the origin."""
    pts = list(points)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    span = max(max(xs) - min(xs), max(ys) - min(ys))
    return [((x - cx) / span, (y - cy) / span) for x, y in pts]


def _regular(n: int, start_deg: float = -90.0) -> list[tuple[float, float]]:
    return [
        (math.cos(math.radians(start_deg + 360 * i / n)), math.sin(math.radians(start_deg + 360 * i / n)))
        for i in range(n)
    ]


def _star() -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        r = 1.0 if i % 2 == 0 else 0.45
        a = math.radians(-90 + 36 * i)
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _heart() -> list[tuple[float, float]]:
    pts = []
    for i in range(48):
        t = 2 * math.pi * i / 48
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x, y))
    return pts


def _arrow() -> list[tuple[float, float]]:
    """An arrow pointing right: a shaft and a head."""
    return [(-0.5, -0.14), (0.05, -0.14), (0.05, -0.42), (0.5, 0.0), (0.05, 0.42), (0.05, 0.14), (-0.5, 0.14)]


def _crescent() -> list[tuple[float, float]]:
    """A crescent opening to the right: the outer arc of a circle, back along an offset inner arc."""
    outer = [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in range(60, 301, 10)]
    inner = [(0.55 + 0.85 * math.cos(math.radians(a)), 0.85 * math.sin(math.radians(a))) for a in range(260, 99, -10)]
    return outer + [p for p in inner if (p[0] ** 2 + p[1] ** 2) < 1.0]


def _cross() -> list[tuple[float, float]]:
    t = 0.18  # half the arm thickness
    return [
        (-t, -0.5), (t, -0.5), (t, -t), (0.5, -t), (0.5, t), (t, t),
        (t, 0.5), (-t, 0.5), (-t, t), (-0.5, t), (-0.5, -t), (-t, -t),
    ]


#: every shape as a polygon inside the unit box; the names in :data:`ROUND_SHAPES` are drawn as
#: ellipses instead. All but the ring and the crescent cover the centre of their box.
SHAPE_POLYGONS: dict[str, list[tuple[float, float]] | None] = {
    "circle": None,
    "oval": None,
    "ring": None,
    "square": [(-0.43, -0.43), (0.43, -0.43), (0.43, 0.43), (-0.43, 0.43)],
    "triangle": _unit_polygon([(0.0, -0.866), (1.0, 0.866), (-1.0, 0.866)]),
    "star": _unit_polygon(_star()),
    "diamond": [(0.0, -0.5), (0.36, 0.0), (0.0, 0.5), (-0.36, 0.0)],
    "cross": _cross(),
    "heart": _unit_polygon(_heart()),
    "pentagon": _unit_polygon(_regular(5)),
    "hexagon": _unit_polygon(_regular(6)),
    "arrow": _arrow(),
    "crescent": _unit_polygon(_crescent()),
}
#: shapes drawn as ellipses: (height as a fraction of the box, inner hole as a fraction of the box)
ROUND_SHAPES: dict[str, tuple[float, float]] = {"circle": (1.0, 0.0), "oval": (0.6, 0.0), "ring": (1.0, 0.5)}


@dataclass
class SynthConfig:
    """Everything that decides what ``hardneg synth`` writes (the ``synth`` section of params.yaml)."""

    seed: int = 0
    image_size: int = 64
    n_train: int = 5000
    n_test: int = 1000
    #: 2 = two objects plus a third with ``third_object_prob``; 3 = always three
    objects_per_image: int = 2
    third_object_prob: float = 0.3
    shapes: list[str] = field(
        default_factory=lambda: [
            "circle", "square", "triangle", "star", "diamond", "cross", "heart", "hexagon",
        ]
    )
    colours: list[str] = field(
        default_factory=lambda: ["red", "orange", "yellow", "green", "blue", "purple", "pink", "black"]
    )
    sizes: list[str] = field(default_factory=lambda: ["small", "large"])
    relations: list[str] = field(default_factory=lambda: list(RELATIONS))
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    #: fraction of (colour, shape) pairs seen only in test; every test image holds at least one
    heldout_fraction: float = 0.125
    captions_per_image: int = 2
    #: chance that a caption names the sizes (of all its objects); otherwise it names none
    size_mention_prob: float = 0.75
    background: str = "white"
    #: True: PNG bytes inside the Parquet; False: PNG files under <out>/<split>/, paths in the rows
    embed_images: bool = True
    png_compress_level: int = 6
    #: batch size for which world.json reports the in-batch collision probabilities
    collision_batch_size: int = 128
    #: no training image pairs objects so that exchanging their colours or shapes (what attribute and
    #: object swaps write) names a held-out pair. Otherwise held-out pairs occur in training text only
    #: inside hard negatives, and a model trained on them learns "held-out pair => false caption",
    #: which the test (every image holds a held-out pair) punishes: below-chance binding accuracy.
    swap_safe_train: bool = True
    #: the words each relation is written with between two noun phrases, one drawn per caption.
    #: Bare "left of"/"right of" are realistic but the small spaCy model tags "left" as a verb there,
    #: so stage 1 finds no relation to swap in those captions
    relation_phrases: dict[str, list[str]] = field(
        default_factory=lambda: {k: list(v) for k, v in REL_PHRASES.items()}
    )
    #: recognition sets: single-object images per colour and per shape (ImageFolder layout under
    #: <out>/recognition/, with prompt templates from the world's own words); 0 = none
    recognition_per_class: int = 0
    #: share of images that hold one object (captioned with a ``TEMPLATES_1`` template): a broad
    #: pretraining world names objects alone, as a web corpus does; 0 draws nothing extra
    single_object_prob: float = 0.0
    #: chance that a one-object caption names the colour ("a red star"); otherwise the shape alone
    #: ("a star"), so telling such captions apart takes the shape
    colour_mention_prob: float = 1.0
    #: one-object scenes and the recognition sets draw objects this many times their size's extent
    #: (object-centric pictures, as in a classification corpus); at most 2.5
    single_object_scale: float = 1.0
    #: a world.json whose held-out (colour, shape) pairs this world never draws, in either split:
    #: a pretraining world that keeps the fine-tuning world's test pairs unseen
    exclude_pairs_from: str | None = None

    def validate(self) -> None:
        if self.image_size < 32:
            raise ConfigError(f"image_size must be >= 32, got {self.image_size}")
        if self.n_train < 1 or self.n_test < 0:
            raise ConfigError(f"n_train must be >= 1 and n_test >= 0, got {self.n_train}, {self.n_test}")
        if self.objects_per_image not in (2, 3):
            raise ConfigError(f"objects_per_image must be 2 or 3, got {self.objects_per_image}")
        if not 0.0 <= self.third_object_prob <= 1.0 or not 0.0 <= self.size_mention_prob <= 1.0:
            raise ConfigError("third_object_prob and size_mention_prob must lie in [0, 1]")
        _check_known("shapes", self.shapes, SHAPE_POLYGONS)
        _check_known("colours", self.colours, PALETTE)
        _check_known("sizes", self.sizes, SIZE_FRACTIONS)
        _check_known("relations", self.relations, RELATIONS)
        _check_known("templates", self.templates, {**TEMPLATES_2, **TEMPLATES_3, **TEMPLATES_1})
        if self.background not in PALETTE:
            raise ConfigError(f"unknown background {self.background!r}; known: {sorted(PALETTE)}")
        if self.background in self.colours:
            raise ConfigError(f"background {self.background!r} is also an object colour")
        most = self.max_objects()
        if len(self.shapes) < most or len(self.colours) < most:
            raise ConfigError(
                f"need at least {most} shapes and colours (objects in a scene differ in both);"
                " with two, set third_object_prob=0"
            )
        if not self.relations:
            raise ConfigError("relations must name at least one relation")
        missing = [r for r in self.relations if not self.relation_phrases.get(r)]
        if missing or not all(
            isinstance(p, str) and p.strip() for ps in self.relation_phrases.values() for p in ps
        ):
            raise ConfigError(
                f"relation_phrases needs a non-empty list of phrases for every relation; missing {missing}"
            )
        if most == 3:
            if not (set(self.relations) & set(HORIZONTAL) and set(self.relations) & set(VERTICAL)):
                raise ConfigError("three-object scenes need a horizontal and a vertical relation")
            if not any(t in TEMPLATES_3 for t in self.templates):
                raise ConfigError(f"three-object scenes need a template from {sorted(TEMPLATES_3)}")
        if not 0.0 <= self.heldout_fraction <= 0.5:
            raise ConfigError(f"heldout_fraction must lie in [0, 0.5], got {self.heldout_fraction}")
        if self.captions_per_image < 1:
            raise ConfigError(f"captions_per_image must be >= 1, got {self.captions_per_image}")
        if not 0 <= self.png_compress_level <= 9:
            raise ConfigError(f"png_compress_level must lie in 0..9, got {self.png_compress_level}")
        if self.collision_batch_size < 2:
            raise ConfigError(f"collision_batch_size must be >= 2, got {self.collision_batch_size}")
        if self.recognition_per_class < 0:
            raise ConfigError(f"recognition_per_class must be >= 0, got {self.recognition_per_class}")
        if not 0.5 <= self.single_object_scale <= 2.5:
            raise ConfigError(f"single_object_scale must lie in [0.5, 2.5], got {self.single_object_scale}")
        for name in ("single_object_prob", "colour_mention_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.single_object_prob > 0 and not any(t in TEMPLATES_1 for t in self.templates):
            raise ConfigError(f"single_object_prob > 0 needs a one-object template: {sorted(TEMPLATES_1)}")
        if self.single_object_prob < 1 and not any(t in TEMPLATES_2 for t in self.templates):
            raise ConfigError(f"templates must include a two-object template: {sorted(TEMPLATES_2)}")

    def max_objects(self) -> int:
        return 3 if self.objects_per_image == 3 or self.third_object_prob > 0 else 2


def _check_known(name: str, values: list[str], known: Iterable[str]) -> None:
    known = list(known)
    bad = [v for v in values if v not in known]
    if bad:
        raise ConfigError(f"unknown {name} {bad}; known: {known}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{name} has duplicates: {values}")


#: small world for tests and the miniature end-to-end run
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_train": 48, "n_test": 16, "collision_batch_size": 16},
}


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    #: centre pixel and bounding-box side, in pixels
    x: int
    y: int
    extent: int


@dataclass(frozen=True)
class Triple:
    """objects[subject] stands in ``predicate`` to objects[object]."""

    subject: int
    predicate: str
    object: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    triples: tuple[Triple, ...]


#: what a caption says about one object: (size or None when unnamed, colour, shape)
Desc = tuple[str | None, str, str]
#: a caption's meaning: its relation triples, normalised to left_of/above
Meaning = tuple[tuple[Desc, str, Desc], ...]


@dataclass(frozen=True)
class Caption:
    text: str
    template: str
    #: the caption with its first relation's two noun phrases exchanged (what a relation swap writes)
    swap_text: str
    meaning: Meaning
    swap_meaning: Meaning
    #: the swapped relation over (colour, shape) only, normalised: the loosest collision test
    swap_fact: tuple[Desc, str, Desc]


def article(word: str) -> str:
    """'a' or 'an' by the sound of the next word (a rule that is right for this vocabulary)."""
    w = word.lower()
    if w.startswith(("one", "uni", "use", "eu")):
        return "a"
    if w.startswith(("hour", "honest")):
        return "an"
    return "an" if w[:1] in "aeiou" else "a"


def heldout_pairs(cfg: SynthConfig) -> list[tuple[str, str]]:
    """(colour, shape) pairs kept out of train, spread so each colour and shape loses few partners."""
    n = round(cfg.heldout_fraction * len(cfg.colours) * len(cfg.shapes))
    if n == 0:
        return []
    rng = random.Random(f"{cfg.seed}-heldout")
    colours, shapes = list(cfg.colours), list(cfg.shapes)
    rng.shuffle(colours)
    rng.shuffle(shapes)
    shape_load = Counter({s: 0 for s in shapes})
    chosen: list[tuple[str, str]] = []
    while len(chosen) < n:
        for c in colours:
            if len(chosen) == n:
                break
            free = [s for s in shapes if (c, s) not in chosen]
            s = min(free, key=lambda s: shape_load[s])  # ties: first in the shuffled order
            chosen.append((c, s))
            shape_load[s] += 1
    return sorted(chosen)


def single_extent(cfg: SynthConfig, size: str) -> int:
    """Side in pixels of a one-object scene's object (and of a recognition image's)."""
    return min(cfg.image_size - 4, max(5, round(SIZE_FRACTIONS[size] * cfg.single_object_scale * cfg.image_size)))


def excluded_pairs(cfg: SynthConfig) -> set[tuple[str, str]]:
    """The held-out pairs of the world.json named by ``exclude_pairs_from`` (none when unset)."""
    if not cfg.exclude_pairs_from:
        return set()
    path = Path(cfg.exclude_pairs_from)
    try:
        pairs = json.loads(path.read_text(encoding="utf-8"))["heldout_pairs"]
        return {(str(c), str(s)) for c, s in pairs}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"exclude_pairs_from: cannot read held-out pairs from {path}: {e}") from e


def _pick_pairs(
    rng: random.Random,
    n: int,
    pool: list[tuple[str, str]],
    forced: tuple[str, str] | None,
    banned_cross: frozenset[tuple[str, str]] = frozenset(),
) -> list[tuple[str, str]]:
    """n (colour, shape) pairs with distinct colours and shapes; ``forced`` lands in a random slot.

    No two pairs may cross into a ``banned_cross`` pair (one's colour with the other's shape).
    """
    for _ in range(1000):
        pairs: list[tuple[str, str]] = [forced] if forced else []
        tries = 0
        while len(pairs) < n and tries < 100:
            tries += 1
            p = rng.choice(pool)
            if all(
                p[0] != q[0] and p[1] != q[1]
                and (p[0], q[1]) not in banned_cross and (q[0], p[1]) not in banned_cross
                for q in pairs
            ):
                pairs.append(p)
        if len(pairs) == n:
            if forced:
                slot = rng.randrange(n)
                pairs[0], pairs[slot] = pairs[slot], pairs[0]
            return pairs
    raise ConfigError("cannot draw objects with distinct colours and shapes; add colours or shapes")


def _place(
    rng: random.Random, extents: list[int], triples: list[Triple], size: int
) -> list[tuple[int, int]] | None:
    """Centres so every triple holds with clear geometry, or None when this draw does not fit.

    Object 1 is the anchor; the others stand in one relation to it. A satellite lies wholly on its
    side of the anchor with a gap, and its centre stays within a small jitter of the anchor's line,
    so "left of" is never also "above".
    """
    margin = max(1, round(0.03 * size))
    gap = max(2, round(0.06 * size))
    jitter = max(1, round(0.05 * size))
    eb = extents[1]
    lo = {"x": margin + eb // 2, "y": margin + eb // 2}
    hi = {"x": size - margin - (eb - eb // 2), "y": size - margin - (eb - eb // 2)}
    for t in triples:  # the anchor must leave room for each satellite on its side
        es = extents[t.subject]
        axis = "x" if t.predicate in HORIZONTAL else "y"
        if t.predicate in ("left_of", "above"):
            lo[axis] = max(lo[axis], margin + es + gap + eb // 2)
        else:
            hi[axis] = min(hi[axis], size - margin - es - gap - (eb - eb // 2))
    if lo["x"] > hi["x"] or lo["y"] > hi["y"]:
        return None
    centres: list[tuple[int, int] | None] = [None] * len(extents)
    bx, by = rng.randint(lo["x"], hi["x"]), rng.randint(lo["y"], hi["y"])
    centres[1] = (bx, by)
    for t in triples:
        es = extents[t.subject]
        main, perp = (bx, by) if t.predicate in HORIZONTAL else (by, bx)
        if t.predicate in ("left_of", "above"):
            m_lo, m_hi = margin + es // 2, main - (eb // 2) - gap - (es - es // 2)
        else:
            m_lo, m_hi = main + (eb - eb // 2) + gap + es // 2, size - margin - (es - es // 2)
        p_lo = max(margin + es // 2, perp - jitter)
        p_hi = min(size - margin - (es - es // 2), perp + jitter)
        if m_lo > m_hi or p_lo > p_hi:
            return None
        m, p = rng.randint(m_lo, m_hi), rng.randint(p_lo, p_hi)
        centres[t.subject] = (m, p) if t.predicate in HORIZONTAL else (p, m)
    done = [c for c in centres if c is not None]
    if len(done) != len(extents):
        return None
    for i in range(len(done)):  # satellites must not touch each other either
        for j in range(i + 1, len(done)):
            if _boxes_close(done[i], extents[i], done[j], extents[j], gap):
                return None
    return done


def _box(c: tuple[int, int], e: int) -> tuple[int, int, int, int]:
    """Pixel box [x0, x1) x [y0, y1) of an object centred at c with side e."""
    return c[0] - e // 2, c[0] + (e - e // 2), c[1] - e // 2, c[1] + (e - e // 2)


def _boxes_close(a: tuple[int, int], ea: int, b: tuple[int, int], eb: int, gap: int) -> bool:
    ax0, ax1, ay0, ay1 = _box(a, ea)
    bx0, bx1, by0, by1 = _box(b, eb)
    apart_x = ax1 + gap <= bx0 or bx1 + gap <= ax0
    apart_y = ay1 + gap <= by0 or by1 + gap <= ay0
    return not (apart_x or apart_y)


def sample_scene(
    rng: random.Random,
    cfg: SynthConfig,
    pool: list[tuple[str, str]],
    forced: list[tuple[str, str]] | None = None,
    banned_cross: frozenset[tuple[str, str]] = frozenset(),
) -> Scene:
    """One scene; with ``forced`` given, one of its objects is drawn from those pairs.

    ``banned_cross``: (colour, shape) pairs that swapping two objects' colours or shapes must not
    produce (see ``SynthConfig.swap_safe_train``).
    """
    if cfg.single_object_prob > 0 and rng.random() < cfg.single_object_prob:
        n = 1
    elif cfg.objects_per_image == 3:
        n = 3
    else:
        n = 3 if cfg.third_object_prob > 0 and rng.random() < cfg.third_object_prob else 2
    pairs = _pick_pairs(rng, n, pool, rng.choice(forced) if forced else None, banned_cross)
    if n == 1:
        size = rng.choice(cfg.sizes)
        e = single_extent(cfg, size)
        margin = max(1, round(0.03 * cfg.image_size))
        lo, hi = margin + e // 2, cfg.image_size - margin - (e - e // 2)
        obj = Obj(shape=pairs[0][1], colour=pairs[0][0], size=size, x=rng.randint(lo, hi), y=rng.randint(lo, hi), extent=e)
        return Scene((obj,), ())
    if n == 2:
        triples = [Triple(0, rng.choice(cfg.relations), 1)]
    else:
        h = rng.choice([r for r in cfg.relations if r in HORIZONTAL])
        v = rng.choice([r for r in cfg.relations if r in VERTICAL])
        first, second = (h, v) if rng.random() < 0.5 else (v, h)
        triples = [Triple(0, first, 1), Triple(2, second, 1)]
    for _ in range(200):
        sizes = [rng.choice(cfg.sizes) for _ in range(n)]
        extents = [max(5, round(SIZE_FRACTIONS[s] * cfg.image_size)) for s in sizes]
        centres = _place(rng, extents, triples, cfg.image_size)
        if centres is not None:
            objects = tuple(
                Obj(shape=p[1], colour=p[0], size=s, x=c[0], y=c[1], extent=e)
                for p, s, c, e in zip(pairs, sizes, centres, extents)
            )
            return Scene(objects, tuple(triples))
    raise ConfigError(
        f"objects do not fit a {cfg.image_size}px image; use a larger image_size or smaller sizes"
    )


def render(scene: Scene, cfg: SynthConfig) -> bytes:
    """The scene as PNG bytes: flat colours, no anti-aliasing, so a pixel's colour names its object."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (cfg.image_size, cfg.image_size), PALETTE[cfg.background])
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        fill = PALETTE[o.colour]
        x0, x1, y0, y1 = _box((o.x, o.y), o.extent)
        poly = SHAPE_POLYGONS[o.shape]
        if poly is None:
            height, hole = ROUND_SHAPES[o.shape]
            inset = round((y1 - y0) * (1 - height) / 2)
            draw.ellipse([x0, y0 + inset, x1 - 1, y1 - 1 - inset], fill=fill)
            if hole:
                cut = round((x1 - x0) * (1 - hole) / 2)
                draw.ellipse([x0 + cut, y0 + cut, x1 - 1 - cut, y1 - 1 - cut], fill=PALETTE[cfg.background])
        else:
            # map the unit box onto the pixel box [x0, x1 - 1] x [y0, y1 - 1]
            sx, sy = (x1 - 1 - x0), (y1 - 1 - y0)
            mx, my = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
            draw.polygon([(mx + u * sx, my + v * sy) for u, v in poly], fill=fill)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=cfg.png_compress_level)
    return buf.getvalue()


def _np(o: Obj, with_size: bool) -> str:
    words = ([o.size] if with_size else []) + [o.colour, o.shape]
    return f"{article(words[0])} {' '.join(words)}"


def _desc(o: Obj, with_size: bool) -> Desc:
    return (o.size if with_size else None, o.colour, o.shape)


def _norm(s: Desc, pred: str, o: Desc) -> tuple[Desc, str, Desc]:
    return (o, INVERSE[pred], s) if pred in ("right_of", "below") else (s, pred, o)


def _fact(s: Desc, pred: str, o: Desc) -> tuple[Desc, str, Desc]:
    return _norm((None, s[1], s[2]), pred, (None, o[1], o[2]))


def _meaning(triples: list[tuple[Desc, str, Desc]]) -> Meaning:
    return tuple(sorted((_norm(*t) for t in triples), key=repr))


def _caption_two(rng: random.Random, scene: Scene, cfg: SynthConfig, template: str) -> Caption:
    t = scene.triples[0]
    objs = scene.objects
    sized = rng.random() < cfg.size_mention_prob
    if template == "sides":
        axis = "h" if t.predicate in HORIZONTAL else "v"
        first_is_subject = t.predicate in ("left_of", "above")
        a, b = (t.subject, t.object) if first_is_subject else (t.object, t.subject)
        pred = "left_of" if axis == "h" else "above"
        side_a, side_b = SIDE_WORDS[axis]
        fill = {"side_a": side_a, "side_b": side_b}
    else:
        a, pred, b = t.subject, t.predicate, t.object
        if INVERSE[pred] in cfg.relations and rng.random() < 0.5:
            a, pred, b = b, INVERSE[pred], a
        fill = {"rel": rng.choice(cfg.relation_phrases[pred]), "its": ITS_PHRASES[pred]}
    na, nb = _np(objs[a], sized), _np(objs[b], sized)
    da, db = _desc(objs[a], sized), _desc(objs[b], sized)
    fmt = TEMPLATES_2[template]
    return Caption(
        text=fmt.format(a=na, b=nb, **fill),
        template=template,
        swap_text=fmt.format(a=nb, b=na, **fill),
        meaning=_meaning([(da, pred, db)]),
        swap_meaning=_meaning([(db, pred, da)]),
        swap_fact=_fact(db, pred, da),
    )


def _caption_three(rng: random.Random, scene: Scene, cfg: SynthConfig, template: str) -> Caption:
    t1, t2 = scene.triples if rng.random() < 0.5 else scene.triples[::-1]
    objs = scene.objects
    sized = rng.random() < cfg.size_mention_prob
    a, b, c = t1.subject, t1.object, t2.subject
    na, nb, nc = (_np(objs[i], sized) for i in (a, b, c))
    bref = f"the {objs[b].colour} {objs[b].shape}"
    fill = {
        "rel": rng.choice(cfg.relation_phrases[t1.predicate]),
        "rel2": rng.choice(cfg.relation_phrases[t2.predicate]),
        "its": ITS_PHRASES[t1.predicate],
        "its2": ITS_PHRASES[t2.predicate],
        "c": nc,
        "bref": bref,
    }
    da, db, dc = (_desc(objs[i], sized) for i in (a, b, c))
    dref: Desc = (None, objs[b].colour, objs[b].shape)
    fmt = TEMPLATES_3[template]
    if template == "with_its3":
        # the anchor is named once and "it" refers to the head, so a swap moves both relations
        meaning = [(da, t1.predicate, db), (dc, t2.predicate, db)]
        swapped = [(db, t1.predicate, da), (dc, t2.predicate, da)]
    else:
        meaning = [(da, t1.predicate, db), (dc, t2.predicate, dref)]
        swapped = [(db, t1.predicate, da), (dc, t2.predicate, dref)]
    return Caption(
        text=fmt.format(a=na, b=nb, **fill),
        template=template,
        swap_text=fmt.format(a=nb, b=na, **fill),
        meaning=_meaning(meaning),
        swap_meaning=_meaning(swapped),
        swap_fact=_fact(db, t1.predicate, da),
    )


#: the meaning of a caption that states no relation: it matches no relation swap
_NO_RELATION: tuple[Desc, str, Desc] = ((None, "", ""), "none", (None, "", ""))


def _caption_one(rng: random.Random, scene: Scene, cfg: SynthConfig, template: str) -> Caption:
    o = scene.objects[0]
    words = ([o.size] if rng.random() < cfg.size_mention_prob else [])
    words += [o.colour] if rng.random() < cfg.colour_mention_prob else []
    words.append(o.shape)
    text = TEMPLATES_1[template].format(a=f"{article(words[0])} {' '.join(words)}")
    return Caption(text=text, template=template, swap_text="", meaning=(), swap_meaning=(("none",),),
                   swap_fact=_NO_RELATION)


def _caption_and(rng: random.Random, scene: Scene, cfg: SynthConfig) -> Caption:
    sized = rng.random() < cfg.size_mention_prob
    a, b = (0, 1) if rng.random() < 0.5 else (1, 0)
    objs = scene.objects
    text = TEMPLATES_2["and"].format(a=_np(objs[a], sized), b=_np(objs[b], sized))
    meaning = (tuple(sorted((repr(_desc(objs[0], sized)), repr(_desc(objs[1], sized))))),)
    return Caption(text=text, template="and", swap_text="", meaning=meaning, swap_meaning=(("none",),),
                   swap_fact=_NO_RELATION)


def make_captions(rng: random.Random, scene: Scene, cfg: SynthConfig) -> list[Caption]:
    """``captions_per_image`` different true captions; template and word order drawn at random.

    A one-object scene with fewer possible wordings than ``captions_per_image`` gets them all.
    """
    table = {1: TEMPLATES_1, 2: TEMPLATES_2}.get(len(scene.objects), TEMPLATES_3)
    names = [t for t in cfg.templates if t in table]
    make = {1: _caption_one, 2: _caption_two}.get(len(scene.objects), _caption_three)
    out: list[Caption] = []
    seen: set[str] = set()
    for _ in range(100 * cfg.captions_per_image):
        name = rng.choice(names)
        cap = _caption_and(rng, scene, cfg) if name == "and" else make(rng, scene, cfg, name)
        if cap.text not in seen:
            seen.add(cap.text)
            out.append(cap)
            if len(out) == cfg.captions_per_image:
                return out
    if len(scene.objects) == 1 and out:
        return out
    raise ConfigError(
        f"cannot write {cfg.captions_per_image} different captions with templates {names}; "
        "lower captions_per_image or allow more templates"
    )


OBJECT_TYPE = pa.struct(
    [
        ("shape", pa.string()),
        ("colour", pa.string()),
        ("size", pa.string()),
        ("x", pa.int32()),
        ("y", pa.int32()),
        ("extent", pa.int32()),
    ]
)
RELATION_TYPE = pa.struct([("subject", pa.int32()), ("predicate", pa.string()), ("object", pa.int32())])
#: key of the world's metadata (JSON) in each Parquet file
SYNTH_META_KEY = b"hardneg_synth"


#: columns of the world's Parquet files; ``image`` follows the shard schema's struct
_WORLD_FIELDS = [
    pa.field(schema.ID, pa.string(), nullable=False),
    pa.field(schema.IMAGE, schema.IMAGE_TYPE),
    pa.field(schema.CAPTION, pa.string(), nullable=False),
    pa.field(schema.SPLIT, pa.string()),
    pa.field(schema.GROUP, pa.string()),
    pa.field("template", pa.string()),
    pa.field("objects", pa.list_(OBJECT_TYPE)),
    pa.field("relations", pa.list_(RELATION_TYPE)),
    pa.field("relation", pa.string()),
    pa.field("heldout", pa.bool_()),
]


def world_schema(meta: dict[str, Any]) -> pa.Schema:
    """Columns of the world's Parquet files; ``image`` follows the shard schema's struct."""
    return pa.schema(
        _WORLD_FIELDS,
        metadata={
            SYNTH_META_KEY: json.dumps(meta, sort_keys=True).encode(),
            schema.HF_META_KEY: json.dumps({"info": {"features": schema.hf_features_of(_WORLD_FIELDS)}}).encode(),
        },
    )




@dataclass
class _SplitResult:
    rows: dict[str, list[Any]]
    captions: list[Caption]
    groups: list[str]
    scenes: list[Scene]


def _generate_split(
    cfg: SynthConfig, split: str, n: int, pool: list[tuple[str, str]], forced: list[tuple[str, str]] | None,
    heldout: set[tuple[str, str]], image_dir: Path | None,
) -> _SplitResult:
    from tqdm import tqdm

    cols: dict[str, list[Any]] = {
        k: [] for k in (schema.ID, schema.IMAGE, schema.CAPTION, schema.SPLIT, schema.GROUP,
                        "template", "objects", "relations", "relation", "heldout")
    }
    captions: list[Caption] = []
    groups: list[str] = []
    scenes: list[Scene] = []
    for i in tqdm(range(n), desc=f"synth {split}", unit="img", mininterval=1.0, leave=False):
        # one generator per image: image i does not change when n_train or n_test grows
        rng = random.Random(f"{cfg.seed}-{split}-{i}")
        banned = frozenset(heldout) if split == "train" and cfg.swap_safe_train else frozenset()
        scene = sample_scene(rng, cfg, pool, forced, banned)
        caps = make_captions(rng, scene, cfg)
        png = render(scene, cfg)
        rel_path = f"{split}/{i:06d}.png"
        if image_dir is not None:
            (image_dir / f"{i:06d}.png").write_bytes(png)
        group = f"synth-{split}-{i:06d}"
        objects = [
            {"shape": o.shape, "colour": o.colour, "size": o.size, "x": o.x, "y": o.y, "extent": o.extent}
            for o in scene.objects
        ]
        relations = [
            {"subject": t.subject, "predicate": t.predicate, "object": t.object} for t in scene.triples
        ]
        has_heldout = any((o.colour, o.shape) in heldout for o in scene.objects)
        scenes.append(scene)
        for k, cap in enumerate(caps):
            cols[schema.ID].append(f"{group}#{k}")
            cols[schema.IMAGE].append({"bytes": png if image_dir is None else None, "path": rel_path})
            cols[schema.CAPTION].append(cap.text)
            cols[schema.SPLIT].append(split)
            cols[schema.GROUP].append(group)
            cols["template"].append(cap.template)
            cols["objects"].append(objects)
            cols["relations"].append(relations)
            cols["relation"].append(scene.triples[0].predicate if scene.triples else None)
            cols["heldout"].append(has_heldout)
            captions.append(cap)
            groups.append(group)
    return _SplitResult(cols, captions, groups, scenes)


def collision_stats(
    captions: list[Caption], groups: list[str], scenes: list[Scene], batch_size: int
) -> dict[str, Any]:
    """How often a random caption of another image is the relation swap of a given caption.

    A batch that holds such a caption teaches plain CLIP the relation for free (the issue's
    prototype learned relations late this way), so a useful world keeps these rare. Computed over
    all pairs (i, j) of the split with j from another image, i.e. the chance for a uniformly drawn
    batch-mate; ``p_batch`` = chance that at least one of ``batch_size - 1`` batch-mates collides.
    Three levels: the exact swapped string; the same meaning in any wording; and the loosest, an
    image holding the same two (colour, shape) objects in the swapped arrangement.
    """
    n = len(captions)
    if n < 2:
        return {}
    by_text = Counter(c.text for c in captions)
    by_meaning = Counter(c.meaning for c in captions)
    # per image: its relation facts over (colour, shape), normalised
    image_facts: dict[str, set[tuple[Any, ...]]] = {}
    for scene, g in zip(scenes, _unique(groups)):
        facts = set()
        for t in scene.triples:
            s, o = scene.objects[t.subject], scene.objects[t.object]
            facts.add(_fact(_desc(s, False), t.predicate, _desc(o, False)))
        image_facts[g] = facts
    by_fact: Counter = Counter(f for facts in image_facts.values() for f in facts)
    per_group = Counter(groups)
    n_images = len(image_facts)
    tot = {"exact_text": 0.0, "same_meaning": 0.0, "swapped_pair_in_image": 0.0}
    for c, g in zip(captions, groups):
        others = n - per_group[g]
        if others > 0:
            # a caption's own image never holds its swap (the swap is false of it), so no self-match
            tot["exact_text"] += by_text[c.swap_text] / others
            tot["same_meaning"] += by_meaning[c.swap_meaning] / others
        if n_images > 1:
            tot["swapped_pair_in_image"] += by_fact[c.swap_fact] / (n_images - 1)
    out: dict[str, Any] = {"batch_size": batch_size}
    for k, v in tot.items():
        p = v / n
        out[k] = {"p_pair": round(p, 8), "p_batch": round(1 - (1 - p) ** (batch_size - 1), 6)}
    return out


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for x in items:
        seen.setdefault(x, None)
    return list(seen)


def generate_world(cfg: SynthConfig, out_dir: str | Path) -> dict[str, Any]:
    """Render both splits and write train/test Parquet and world.json; returns the summary."""
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held = heldout_pairs(cfg)
    held_set = set(held)
    excluded = excluded_pairs(cfg)
    all_pairs = [(c, s) for c in cfg.colours for s in cfg.shapes if (c, s) not in excluded]
    train_pool = [p for p in all_pairs if p not in held_set]
    meta = {"seed": cfg.seed, "config_hash": config_hash(to_dict(cfg))}
    sch = world_schema(meta)
    summary: dict[str, Any] = {
        "seed": cfg.seed,
        "config": to_dict(cfg),
        "config_hash": meta["config_hash"],
        "vocab": {
            "shapes": list(cfg.shapes),
            "colours": list(cfg.colours),
            "sizes": list(cfg.sizes),
            "relations": list(cfg.relations),
            "templates": list(cfg.templates),
        },
        "heldout_pairs": [list(p) for p in held],
        "excluded_pairs": [list(p) for p in sorted(excluded)],
        "splits": {},
        "files": {},
    }
    plan = [("train", cfg.n_train, train_pool, None), ("test", cfg.n_test, all_pairs, held or None)]
    for split, n, pool, forced in plan:
        start = time.perf_counter()
        image_dir = None
        if not cfg.embed_images:
            image_dir = out / f".{split}.{os.getpid()}.tmp"
            shutil.rmtree(image_dir, ignore_errors=True)
            image_dir.mkdir(parents=True)
        res = _generate_split(cfg, split, n, pool, forced, held_set, image_dir)
        elapsed = time.perf_counter() - start
        log.info("rendered %d %s images in %.2fs (%.0f images/s)", n, split, elapsed, n / max(elapsed, 1e-9))
        if image_dir is not None:
            final = out / split
            shutil.rmtree(final, ignore_errors=True)
            os.replace(image_dir, final)
        table = pa.Table.from_pydict(res.rows, schema=sch)
        path = out / f"{split}.parquet"
        write_table_atomic(table, path, row_group_size=2000)
        summary["files"][split] = {"path": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        summary["splits"][split] = _split_summary(res, cfg, held_set)
    if cfg.recognition_per_class:
        summary["recognition"] = write_recognition_sets(cfg, out / RECOGNITION_DIR)
    write_bytes_atomic((json.dumps(summary, indent=2, sort_keys=True) + "\n").encode(), out / "world.json")
    log.info(
        "wrote %s: %d train and %d test images, %d held-out (colour, shape) pairs",
        out, cfg.n_train, cfg.n_test, len(held),
    )
    return summary


RECOGNITION_DIR = "recognition"


def recognition_templates(cfg: SynthConfig, task: str) -> list[str]:
    """Prompts for naming one attribute, in the world's own words: every value of the others fills in.

    ``colour``: "a small {} circle.", ...; ``shape``: "a small red {}.", .... The size leads, so the
    article never depends on the class name.
    """
    if task == "colour":
        return [f"{article(s)} {s} {{}} {shape}." for s in cfg.sizes for shape in cfg.shapes]
    return [f"{article(s)} {s} {colour} {{}}." for s in cfg.sizes for colour in cfg.colours]


def write_recognition_sets(cfg: SynthConfig, out: Path) -> dict[str, Any]:
    """Single-object images named by colour and by shape (``<out>/<task>/<class>/<i>.png``).

    Each image is one object of a random (colour, shape) pair, size and position, drawn from a
    generator seeded apart from the scenes, so adding the sets changes no scene. Held-out pairs
    appear too: recognition asks for one attribute, never for a binding.
    """
    rng = random.Random(f"{cfg.seed}:recognition")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    summary: dict[str, Any] = {}
    for task, classes in (("colour", cfg.colours), ("shape", cfg.shapes)):
        for cls in classes:
            (tmp / task / cls).mkdir(parents=True)
            for i in range(cfg.recognition_per_class):
                colour = cls if task == "colour" else rng.choice(cfg.colours)
                shape = cls if task == "shape" else rng.choice(cfg.shapes)
                size = rng.choice(cfg.sizes)
                e = single_extent(cfg, size)
                lo, hi = e // 2 + 1, cfg.image_size - (e - e // 2) - 1
                obj = Obj(shape=shape, colour=colour, size=size, x=rng.randint(lo, hi), y=rng.randint(lo, hi), extent=e)
                (tmp / task / cls / f"{i:04d}.png").write_bytes(render(Scene((obj,), ()), cfg))
        (tmp / f"{task}_templates.txt").write_text("\n".join(recognition_templates(cfg, task)) + "\n", encoding="utf-8")
        summary[task] = {"classes": len(classes), "images": len(classes) * cfg.recognition_per_class,
                         "folder": f"{RECOGNITION_DIR}/{task}", "templates": f"{RECOGNITION_DIR}/{task}_templates.txt"}
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return summary


def cross_pairs(scene: Scene) -> set[tuple[str, str]]:
    """(colour, shape) pairs made by giving one object of the scene another object's shape."""
    objs = scene.objects
    return {(a.colour, b.shape) for a in objs for b in objs if a is not b}


def _split_summary(res: _SplitResult, cfg: SynthConfig, held: set[tuple[str, str]]) -> dict[str, Any]:
    n_obj = Counter(len(s.objects) for s in res.scenes)
    pairs = Counter((o.colour, o.shape) for s in res.scenes for o in s.objects)
    return {
        "images": len(res.scenes),
        "captions": len(res.captions),
        "unique_captions": len(set(c.text for c in res.captions)),
        "objects_per_image": {str(k): v for k, v in sorted(n_obj.items())},
        "images_with_heldout_pair": sum(
            any((o.colour, o.shape) in held for o in s.objects) for s in res.scenes
        ),
        # images where exchanging two objects' colours or shapes names a held-out pair
        "images_with_heldout_cross_pair": sum(bool(cross_pairs(s) & held) for s in res.scenes),
        "templates": dict(sorted(Counter(c.template for c in res.captions).items())),
        "relations": dict(sorted(Counter(t.predicate for s in res.scenes for t in s.triples).items())),
        "colour_shape_pairs_seen": len(pairs),
        "relation_swap_collisions": collision_stats(
            res.captions, res.groups, res.scenes, cfg.collision_batch_size
        ),
    }


def load_config(
    config: str | Path | None = None,
    section: str | None = "synth",
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> SynthConfig:
    """Defaults, then the YAML section, then a preset, then ``key=value`` overrides."""
    if preset and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    base = load_yaml_section(config, section) if config else {}
    return build_config(SynthConfig, base, PRESETS[preset] if preset else None, overrides)
