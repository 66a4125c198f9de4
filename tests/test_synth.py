"""The embedded world: deterministic, held-out pairs only in test, captions true of the pixels."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.core.errors import ConfigError
from pipeline.synth.world import (
    PALETTE,
    TEMPLATES_2,
    TEMPLATES_3,
    Obj,
    Scene,
    SynthConfig,
    Triple,
    _caption_two,
    article,
    collision_stats,
    generate_world,
    heldout_pairs,
    load_config,
    make_captions,
    sample_scene,
)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(load_config(preset="tiny"), out)
    return out, summary


def _rows(out: Path, split: str) -> list[dict]:
    return pq.read_table(out / f"{split}.parquet").to_pylist()


def _pixels(row: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))


# ---- an independent reading of the captions, to check them against the pixels -------------------

NP = r"(?:a|an) (?:(small|medium|large) )?(\w+) (\w+)"
REF = r"the (\w+) (\w+)"
REL = r"(to the left of|left of|to the right of|right of|above|below|under)"
ITS = r"(to its left|to its right|above it|below it)"
REL_OF = {
    "to the left of": "left_of", "left of": "left_of", "to its left": "left_of",
    "to the right of": "right_of", "right of": "right_of", "to its right": "right_of",
    "above": "above", "above it": "above", "below": "below", "under": "below", "below it": "below",
}


def read_caption(text: str) -> list[tuple[tuple, str, tuple]]:
    """(subject, relation, object) facts of a caption; each side is (size or None, colour, shape)."""

    def np_(g: tuple) -> tuple:
        return (g[0], g[1], g[2])

    m = re.fullmatch(rf"{NP} (on the left|at the top) and {NP} (on the right|at the bottom)", text)
    if m:
        g = m.groups()
        return [(np_(g[0:3]), "left_of" if g[3] == "on the left" else "above", np_(g[4:7]))]
    m = re.fullmatch(rf"{NP} with {NP} {ITS} and {NP} {ITS}", text)
    if m:
        g = m.groups()
        return [(np_(g[3:6]), REL_OF[g[6]], np_(g[0:3])), (np_(g[7:10]), REL_OF[g[10]], np_(g[0:3]))]
    m = re.fullmatch(rf"{NP} with {NP} {ITS}", text)
    if m:
        g = m.groups()
        return [(np_(g[3:6]), REL_OF[g[6]], np_(g[0:3]))]
    three = rf"(?:there is |three shapes: )?{NP} (?:is )?{REL} {NP}, and {NP} (?:is )?{REL} {REF}"
    m = re.fullmatch(three, text)
    if m:
        g = m.groups()
        # "the ..." re-names an object of the first clause (the anchor, or its subject after a swap)
        assert (g[11], g[12]) in ((g[1], g[2]), (g[5], g[6])), f"'the ...' names no object: {text}"
        return [(np_(g[0:3]), REL_OF[g[3]], np_(g[4:7])), (np_(g[7:10]), REL_OF[g[10]], (None, g[11], g[12]))]
    m = re.fullmatch(rf"(?:there is |two shapes: |an image of )?{NP} (?:is )?{REL} {NP}", text)
    if m:
        g = m.groups()
        return [(np_(g[0:3]), REL_OF[g[3]], np_(g[4:7]))]
    raise AssertionError(f"caption matches no known wording: {text!r}")


def _mask_box(pix: np.ndarray, colour: str) -> tuple[int, int, int, int]:
    """Inclusive pixel box (x0, x1, y0, y1) of all pixels of exactly this colour."""
    ys, xs = np.nonzero((pix == np.array(PALETTE[colour], dtype=np.uint8)).all(-1))
    assert len(xs), f"no {colour} pixel in the image"
    return int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())


def _holds(a: tuple[int, int, int, int], rel: str, b: tuple[int, int, int, int]) -> bool:
    """The relation holds clearly: apart on its axis, centres close on the other one."""
    acx, acy = (a[0] + a[1]) / 2, (a[2] + a[3]) / 2
    bcx, bcy = (b[0] + b[1]) / 2, (b[2] + b[3]) / 2
    if rel == "left_of":
        return a[1] < b[0] and abs(acx - bcx) > 2 * abs(acy - bcy)
    if rel == "right_of":
        return b[1] < a[0] and abs(acx - bcx) > 2 * abs(acy - bcy)
    if rel == "above":
        return a[3] < b[2] and abs(acy - bcy) > 2 * abs(acx - bcx)
    if rel == "below":
        return b[3] < a[2] and abs(acy - bcy) > 2 * abs(acx - bcx)
    raise AssertionError(rel)


def test_every_caption_is_true_of_its_pixels(tiny_world: tuple[Path, dict]) -> None:
    out, _ = tiny_world
    n_three = 0
    for split in ("train", "test"):
        for row in _rows(out, split):
            pix = _pixels(row)
            objects = {o["colour"]: o for o in row["objects"]}
            # every object is named, by its own colour, shape and (when named) size
            facts = read_caption(row["caption"])
            named: dict[str, tuple] = {}
            for f in facts:  # the first mention of an object carries its size; "the ..." does not
                for d in (f[0], f[2]):
                    named.setdefault(d[1], d)
            assert set(named) == set(objects), row["caption"]
            for colour, (size, _, shape) in named.items():
                assert objects[colour]["shape"] == shape, row["caption"]
                x0, x1, y0, y1 = _mask_box(pix, colour)
                side = max(x1 - x0, y1 - y0) + 1
                # bounding boxes are 14 px (small) and 24 px (large) at 64 px; shapes fill >= 80%
                if size == "small":
                    assert side <= 14, (row["caption"], side)
                elif size == "large":
                    assert side >= 19, (row["caption"], side)
            for subj, rel, obj in facts:
                assert _holds(_mask_box(pix, subj[1]), rel, _mask_box(pix, obj[1])), row["caption"]
            # the image holds nothing but the background and the named objects
            colours = {tuple(c) for c in pix.reshape(-1, 3).tolist()}
            assert colours == {PALETTE["white"], *(PALETTE[c] for c in objects)}
            n_three += len(objects) == 3
    assert n_three > 0, "the tiny world should include three-object scenes"


def test_ground_truth_columns_match_pixels(tiny_world: tuple[Path, dict]) -> None:
    out, _ = tiny_world
    for row in _rows(out, "train")[::2] + _rows(out, "test")[::2]:
        pix = _pixels(row)
        objs = row["objects"]
        for o in objs:
            assert tuple(pix[o["y"], o["x"]]) == PALETTE[o["colour"]], o
        for t in row["relations"]:
            s, o = objs[t["subject"]], objs[t["object"]]
            if t["predicate"] == "left_of":
                assert s["x"] + s["extent"] / 2 < o["x"] - o["extent"] / 2
            elif t["predicate"] == "right_of":
                assert s["x"] - s["extent"] / 2 > o["x"] + o["extent"] / 2
            elif t["predicate"] == "above":
                assert s["y"] + s["extent"] / 2 < o["y"] - o["extent"] / 2
            else:
                assert s["y"] - s["extent"] / 2 > o["y"] + o["extent"] / 2
        assert row["relation"] == row["relations"][0]["predicate"]
        assert len({o["colour"] for o in objs}) == len({o["shape"] for o in objs}) == len(objs)


def test_exact_captions_for_seed_zero(tiny_world: tuple[Path, dict]) -> None:
    # checked by eye on the rendered images: the small orange diamond (x=9) is left of the large red
    # hexagon (x=40); the large green star (y=22) sits above the small black square (y=48); in image 4
    # the blue square (x=15) is left of the black circle (x=36), sizes unnamed; image 5 holds an orange
    # cross left of a green heart and a purple triangle above the heart.
    out, _ = tiny_world
    by_id = {r["id"]: r["caption"] for r in _rows(out, "train")}
    assert by_id["synth-train-000000#0"] == "a large red hexagon is to the right of a small orange diamond"
    assert by_id["synth-train-000001#0"] == "there is a large green star above a small black square"
    assert by_id["synth-train-000004#0"] == "a black circle right of a blue square"
    assert by_id["synth-train-000004#1"] == (
        "a small blue square on the left and a small black circle on the right"
    )
    assert by_id["synth-train-000005#0"] == (
        "a small orange cross left of a large green heart, and a large purple triangle above the green heart"
    )


def test_heldout_pairs_only_in_test(tmp_path: Path) -> None:
    cfg = load_config(preset="tiny", overrides=["n_test=48"])
    summary = generate_world(cfg, tmp_path)
    held = {tuple(p) for p in summary["heldout_pairs"]}
    # 12.5% of 8 x 8 pairs, spread one per colour and one per shape
    assert len(held) == 8
    assert len({c for c, _ in held}) == 8 and len({s for _, s in held}) == 8
    train_pairs = {(o["colour"], o["shape"]) for r in _rows(tmp_path, "train") for o in r["objects"]}
    test_rows = _rows(tmp_path, "test")
    test_pairs = {(o["colour"], o["shape"]) for r in test_rows for o in r["objects"]}
    assert not train_pairs & held
    assert held <= test_pairs
    for r in test_rows:  # every test image holds a pair never seen in training
        assert r["heldout"] and any((o["colour"], o["shape"]) in held for o in r["objects"])
    # every colour and shape still appears in training, with other partners
    assert {c for c, _ in train_pairs} == set(cfg.colours)
    assert {s for _, s in train_pairs} == set(cfg.shapes)
    assert summary["splits"]["test"]["images_with_heldout_pair"] == 48


def test_swaps_of_training_scenes_never_name_a_heldout_pair(tmp_path: Path) -> None:
    # an attribute or object swap gives one object another's colour or shape: in training, such a
    # crossed pair must not be held out, or held-out pairs would appear in training text as negatives
    def crossed(rows: list[dict]) -> set[tuple[str, str]]:
        return {
            (a["colour"], b["shape"]) for r in rows for a in r["objects"] for b in r["objects"] if a is not b
        }

    over = ["n_train=300", "n_test=4"]
    safe = generate_world(load_config(preset="tiny", overrides=over), tmp_path / "safe")
    held = {tuple(p) for p in safe["heldout_pairs"]}
    assert not crossed(_rows(tmp_path / "safe", "train")) & held
    assert safe["splits"]["train"]["images_with_heldout_cross_pair"] == 0
    # without the rule the same world does cross into held-out pairs, and the summary counts them
    loose = generate_world(load_config(preset="tiny", overrides=[*over, "swap_safe_train=false"]), tmp_path / "loose")
    rows = _rows(tmp_path / "loose", "train")
    n_cross = len({r["group"] for r in rows if {
        (a["colour"], b["shape"]) for a in r["objects"] for b in r["objects"] if a is not b} & held})
    assert n_cross > 0 and loose["splits"]["train"]["images_with_heldout_cross_pair"] == n_cross
    # test images are drawn as before: they must hold a held-out pair, crossed or not
    assert safe["splits"]["test"]["images_with_heldout_pair"] == 4


def test_heldout_fraction_zero_holds_nothing_out() -> None:
    assert heldout_pairs(SynthConfig(heldout_fraction=0.0)) == []
    assert len(heldout_pairs(SynthConfig(heldout_fraction=0.5))) == 32


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    cfg = load_config(preset="tiny", overrides=["n_train=20", "n_test=6"])
    generate_world(cfg, tmp_path / "a")
    generate_world(cfg, tmp_path / "b")
    for name in ("train.parquet", "test.parquet", "world.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    generate_world(load_config(preset="tiny", overrides=["n_train=20", "n_test=6", "seed=1"]), tmp_path / "c")
    assert (tmp_path / "a" / "train.parquet").read_bytes() != (tmp_path / "c" / "train.parquet").read_bytes()


def test_growing_the_world_keeps_earlier_images(tmp_path: Path, tiny_world: tuple[Path, dict]) -> None:
    out, _ = tiny_world
    generate_world(load_config(preset="tiny", overrides=["n_train=5", "n_test=2"]), tmp_path)
    small = _rows(tmp_path, "train")
    assert small == _rows(out, "train")[: len(small)]


def test_articles() -> None:
    assert [article(w) for w in ("orange", "image", "small", "red", "hexagon", "unicorn", "hour")] == [
        "an", "an", "a", "a", "a", "a", "an",
    ]


def test_a_and_an_in_captions(tmp_path: Path) -> None:
    cfg = load_config(
        preset="tiny",
        overrides=["size_mention_prob=0.3", "colours=[orange,red,blue,green,yellow,purple]", "n_train=60"],
    )
    generate_world(cfg, tmp_path)
    text = " ".join(r["caption"] for r in _rows(tmp_path, "train"))
    for art, word in re.findall(r"\b(a|an) (\w+)", text):
        assert art == ("an" if word[0] in "aeiou" else "a"), f"{art} {word}"
    assert "an orange" in text and "an image of" in text and "a red" in text


def test_files_load_with_pyarrow_and_datasets(tiny_world: tuple[Path, dict], tmp_path: Path) -> None:
    import datasets

    out, summary = tiny_world
    table = pq.read_table(out / "train.parquet")
    assert table.num_rows == 48 * 2 == summary["splits"]["train"]["captions"]
    assert table.column_names[:5] == ["id", "image", "caption", "split", "group"]
    ds = datasets.load_dataset(
        "parquet",
        data_files={"train": str(out / "train.parquet"), "test": str(out / "test.parquet")},
        cache_dir=str(tmp_path / "hf"),
    )
    assert ds["test"].num_rows == 16 * 2
    assert isinstance(ds["train"].features["image"], datasets.Image)
    row = ds["train"][0]
    assert row["image"].size == (64, 64) and row["image"].mode == "RGB"
    assert row["id"] == "synth-train-000000#0" and row["group"] == "synth-train-000000"
    assert row["split"] == "train" and row["objects"][0]["colour"] == "orange"
    world = json.loads((out / "world.json").read_text())
    assert world["heldout_pairs"] == summary["heldout_pairs"] and world["seed"] == 0


def test_image_files_instead_of_embedded_bytes(tmp_path: Path) -> None:
    cfg = load_config(preset="tiny", overrides=["n_train=3", "n_test=2", "embed_images=false"])
    generate_world(cfg, tmp_path)
    rows = _rows(tmp_path, "train")
    assert rows[0]["image"] == {"bytes": None, "path": "train/000000.png"}
    img = Image.open(tmp_path / rows[0]["image"]["path"])
    assert img.size == (64, 64)
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == ["000000.png", "000001.png"]


def _normalised(facts: list[tuple[tuple, str, tuple]]) -> list[tuple[tuple, str, tuple]]:
    flip = {"right_of": "left_of", "below": "above"}
    return sorted(((o, flip[r], s) if r in flip else (s, r, o) for s, r, o in facts), key=repr)


def test_meaning_and_swap_agree_with_the_words() -> None:
    # the collision estimate rests on each caption's meaning and its swap's meaning: read both back
    cfg = SynthConfig(captions_per_image=4)
    pool = [(c, s) for c in cfg.colours for s in cfg.shapes]
    seen_templates = set()
    for i in range(150):
        rng = random.Random(i)
        for cap in make_captions(rng, sample_scene(rng, cfg, pool), cfg):
            seen_templates.add(cap.template)
            assert list(cap.meaning) == _normalised(read_caption(cap.text)), cap.text
            assert list(cap.swap_meaning) == _normalised(read_caption(cap.swap_text)), cap.swap_text
            assert cap.swap_meaning != cap.meaning
    assert seen_templates == (set(TEMPLATES_2) - {"and"}) | set(TEMPLATES_3)


def _scene(a: tuple[str, str], rel: str, b: tuple[str, str]) -> Scene:
    return Scene(
        (Obj(a[1], a[0], "small", 0, 0, 14), Obj(b[1], b[0], "small", 0, 0, 14)), (Triple(0, rel, 1),)
    )


def test_collision_stats_on_hand_made_scenes() -> None:
    # one wording only ("above" has a single phrase, no inverse allowed), so captions are fixed
    cfg = SynthConfig(relations=["above"], templates=["plain"], size_mention_prob=1.0, third_object_prob=0.0)
    scenes = [
        _scene(("red", "circle"), "above", ("blue", "square")),
        _scene(("blue", "square"), "above", ("red", "circle")),  # the swap of the first
        _scene(("green", "star"), "above", ("yellow", "heart")),
    ]
    caps = [_caption_two(random.Random(0), s, cfg, "plain") for s in scenes]
    assert caps[0].text == "a small red circle above a small blue square"
    assert caps[0].swap_text == caps[1].text
    stats = collision_stats(caps, ["g0", "g1", "g2"], scenes, batch_size=4)
    # captions 0 and 1 each find their swap among the 2 others (1/2), caption 2 finds none
    for level in ("exact_text", "same_meaning", "swapped_pair_in_image"):
        assert stats[level]["p_pair"] == pytest.approx(1 / 3, abs=1e-8)
        assert stats[level]["p_batch"] == pytest.approx(1 - (2 / 3) ** 3, abs=1e-6)


def test_summary_reports_three_collision_levels(tiny_world: tuple[Path, dict]) -> None:
    _, summary = tiny_world
    stats = summary["splits"]["train"]["relation_swap_collisions"]
    assert stats["batch_size"] == 16
    assert set(stats) == {"batch_size", "exact_text", "same_meaning", "swapped_pair_in_image"}
    p = {k: stats[k]["p_pair"] for k in ("exact_text", "same_meaning", "swapped_pair_in_image")}
    # each level is looser than the one before: an equal string means an equal meaning, and so on
    assert p["exact_text"] <= p["same_meaning"] <= p["swapped_pair_in_image"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("colours=[red,white]", "background"),
        ("shapes=[circle,blob]", "unknown shapes"),
        ("relations=[left_of]", "horizontal and a vertical"),
        ("heldout_fraction=0.9", "heldout_fraction"),
        ("nonsense=1", "unknown key"),
    ],
)
def test_bad_config_is_a_clear_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(preset="tiny", overrides=[override])


def test_too_many_captions_for_the_templates_is_an_error(tmp_path: Path) -> None:
    cfg = load_config(
        preset="tiny",
        overrides=["templates=[sides]", "third_object_prob=0", "size_mention_prob=1", "captions_per_image=2"],
    )
    with pytest.raises(ConfigError, match="different captions"):
        generate_world(cfg, tmp_path)


def test_cli_reads_params_section_and_overrides(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("synth:\n  n_train: 4\n  n_test: 2\n  seed: 7\n", encoding="utf-8")
    out = tmp_path / "w"
    assert main(["-q", "synth", "--out", str(out), "--config", str(params), "--set", "n_test=3"]) == 0
    world = json.loads((out / "world.json").read_text())
    assert world["seed"] == 7
    assert (world["splits"]["train"]["images"], world["splits"]["test"]["images"]) == (4, 3)
    assert main(["-q", "synth", "--out", str(out), "--set", "colour=red"]) == 2


def test_relation_phrases_setting(tmp_path: Path) -> None:
    cfg = load_config(preset="tiny", overrides=[
        "n_train=60", "n_test=2", "templates=[plain,is,two_shapes]", "third_object_prob=0",
        "relation_phrases.left_of=[to the left of]", "relation_phrases.right_of=[to the right of]",
    ])
    generate_world(cfg, tmp_path)
    rows = _rows(tmp_path, "train")
    horizontal = [r["caption"] for r in rows if r["relation"] in ("left_of", "right_of")]
    assert horizontal and all(re.search(r"\bto the (left|right) of\b", c) for c in horizontal)
    assert not any(re.search(r"(?<!the )\b(left|right) of\b", c) for c in horizontal)
    for row in rows:  # the phrase still says what the pixels say (read back independently)
        for subj, rel, obj in read_caption(row["caption"]):
            assert _holds(_mask_box(_pixels(row), subj[1]), rel, _mask_box(_pixels(row), obj[1])), row["caption"]
    with pytest.raises(ConfigError, match="relation_phrases"):
        load_config(overrides=["relation_phrases.above=[]"])


# ---- the pretraining world: one-object scenes, "and" captions, shapes named alone, excluded pairs ----

PRETRAIN = [
    "n_train=60", "n_test=0", "third_object_prob=0", "heldout_fraction=0", "single_object_prob=0.5",
    "colour_mention_prob=0.5", "single_object_scale=1.6", "templates=[and,one,there_is1,image_of1]",
    "shapes=[circle,square,star,oval,ring,arrow,crescent]",
    "colours=[red,yellow,green,blue,orange,purple,cyan]",
]
ONE = re.compile(r"(?:there is |an image of )?(?:a|an) (?:(small|large) )?(?:(\w+) )?(\w+)")
AND = re.compile(rf"{NP} and {NP}")


def test_pretraining_world_captions_are_true_of_their_pixels(tmp_path: Path) -> None:
    cfg = load_config(preset="tiny", overrides=PRETRAIN)
    generate_world(cfg, tmp_path)
    seen = {"one_with_colour": 0, "one_shape_only": 0, "and": 0}
    for row in _rows(tmp_path, "train"):
        pix, objs = _pixels(row), row["objects"]
        if len(objs) == 1:
            o = objs[0]
            m = ONE.fullmatch(row["caption"])
            assert m and m.group(3) == o["shape"] and m.group(2) in (None, o["colour"]), row["caption"]
            assert m.group(1) in (None, o["size"]) and row["template"] in ("one", "there_is1", "image_of1")
            seen["one_with_colour" if m.group(2) else "one_shape_only"] += 1
            x0, x1, y0, y1 = _mask_box(pix, o["colour"])
            # drawn 1.6 times larger than in a two-object scene: 22 px (small) and 39 px (large) boxes at
            # 64 px, which every shape fills to at least 70% along its longer side
            side = max(x1 - x0, y1 - y0) + 1
            assert (16 <= side <= 23) if o["size"] == "small" else (28 <= side <= 40), (row["caption"], side)
            assert row["relations"] == [] and row["relation"] is None
        else:
            m = AND.fullmatch(row["caption"])
            assert m and row["template"] == "and", row["caption"]
            named = {(m.group(2), m.group(3)), (m.group(5), m.group(6))}
            assert named == {(o["colour"], o["shape"]) for o in objs}, row["caption"]
            seen["and"] += 1
    assert all(seen.values()), seen


def test_new_shapes_are_drawn_in_their_box(tmp_path: Path) -> None:
    from pipeline.synth.world import render

    cfg = SynthConfig()
    for shape in ("oval", "ring", "arrow", "crescent"):
        pix = np.asarray(Image.open(io.BytesIO(render(Scene((Obj(shape, "red", "large", 32, 32, 24),), ()), cfg))))
        x0, x1, y0, y1 = _mask_box(pix, "red")
        assert 20 <= x0 and x1 <= 43 and 20 <= y0 and y1 <= 43, shape
        centre_is_red = tuple(pix[32, 32]) == PALETTE["red"]
        assert centre_is_red == (shape in ("oval", "arrow")), shape  # the ring's hole, the crescent's hollow
    # an oval is wider than tall
    pix = np.asarray(Image.open(io.BytesIO(render(Scene((Obj("oval", "red", "large", 32, 32, 24),), ()), cfg))))
    x0, x1, y0, y1 = _mask_box(pix, "red")
    assert (x1 - x0 + 1, y1 - y0 + 1) == (24, 14)


def test_excluded_pairs_never_appear(tmp_path: Path) -> None:
    first = generate_world(load_config(preset="tiny", overrides=["third_object_prob=0"]), tmp_path / "a")
    held = {tuple(p) for p in first["heldout_pairs"]}
    assert held
    cfg = load_config(preset="tiny", overrides=[*PRETRAIN[:-2], "n_train=80", f"exclude_pairs_from={tmp_path / 'a' / 'world.json'}"])
    summary = generate_world(cfg, tmp_path / "b")
    assert {tuple(p) for p in summary["excluded_pairs"]} == held
    drawn = {(o["colour"], o["shape"]) for r in _rows(tmp_path / "b", "train") for o in r["objects"]}
    assert drawn and not drawn & held


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["single_object_scale=3"], "single_object_scale must lie in"),
        (["single_object_prob=0.5", "third_object_prob=0", "templates=[plain]"], "needs a one-object template"),
        (["colour_mention_prob=1.5"], "colour_mention_prob must lie in"),
    ],
)
def test_bad_pretraining_settings_are_clear_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(preset="tiny", overrides=overrides)


def test_a_missing_world_json_to_exclude_is_a_clear_error(tmp_path: Path) -> None:
    cfg = load_config(preset="tiny", overrides=[f"exclude_pairs_from={tmp_path / 'nope.json'}"])
    with pytest.raises(ConfigError, match=r"exclude_pairs_from: cannot read held-out pairs from .*nope\.json"):
        generate_world(cfg, tmp_path / "w")
