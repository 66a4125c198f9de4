"""The suite's benchmark formats, each from small files in its published layout, scored by a
stand-in model whose answers are known: an image embeds as its mean colour (the test images are a
colour axis: red, green or blue at 255 over 128, which the normalisation maps to about 0), and a
caption embeds as the vector this file gives it in ``VEC``, so every similarity is that vector's
red, green or blue share, and every expected score below follows from the table by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.core.errors import ConfigError, SourceError
from trainer import evaluate as evaluate_mod
from trainer.benchmarks import FORMATS, load_karpathy, load_valse, load_winoground
from trainer.config import BenchmarkSpec, eval_config
from trainer.data import ImageSpec
from trainer.evaluate import Encoder, evaluate, run_benchmark
from trainer.models import BuiltModel
from trainer.suite import load_suite

COLOURS = {"red": (255, 128, 128), "green": (128, 255, 128), "blue": (128, 128, 255)}

#: caption -> embedding (normalised by the model); similarity to a colour image = that share
VEC: dict[str, tuple[float, float, float]] = {
    # SugarCrepe++ swap_att: (itt, tot) = (1, 1), (1, 0), (0, 1), (1, 1); the fifth item's image is missing
    "a red cube on a table": (1, 0, 0), "a table with a red cube on it": (0.9, 0.1, 0), "a blue cube on a table": (0, 0, 1),
    "a red cube": (1, 0, 0), "a cube coloured red": (0.8, 0.6, 0), "a cube coloured green": (0.6, 0.8, 0),
    "a kite in the sky": (0, 0.6, 0.8), "the sky with a kite": (0, 0.8, 0.6), "a blue kite": (0, 0, 1),
    "a green ball": (0, 1, 0), "a ball that is green": (0, 0.9, 0.1), "a red ball": (1, 0, 0),
    # SugarCrepe++ replace_rel: (itt, tot) = (1, 0)
    "a dog on a mat": (1, 0, 0), "a mat under a dog": (0.8, 0, 0.6), "a mat on a dog": (0.6, 0, 0.8) ,
    # VALSE existence: right, right, wrong, then two items its validation rejects
    "There is a cat.": (1, 0, 0), "There is no cat.": (0, 1, 0),
    "There are trees.": (0, 1, 0), "There are no trees.": (0.6, 0.8, 0),
    "There is a boat.": (1, 0, 0), "There is no boat.": (0, 0, 1),
    "There is a car.": (1, 0, 0), "There is no car.": (0, 1, 0),
    # Winoground: (text, image) = (1, 1), (1, 0), (0, 1), (0, 0)
    "a red square and a blue circle": (1, 0, 0), "a blue square and a red circle": (0, 0, 1),
    "the cup is in the box": (0.6, 0.8, 0), "the box is in the cup": (0, 1, 0),
    "a person rides a horse": (0.5, 0, 0.866), "a horse rides a person": (0.6, 0.8, 0),
    "some plants surround a lightbulb": (0, 0, 1), "a lightbulb surrounds some plants": (0, 0, 1.0001),
    # Flickr30k retrieval
    "a man in a red shirt": (1, 0, 0), "a man wearing red": (0.6, 0.8, 0),
    "two dogs on green grass": (0.8, 0.6, 0), "dogs playing on a lawn": (0, 0.5, 0.866),
    "a boat on blue water": (0.8, 0, 0.6), "a blue sailboat": (0, 0, 1),
    "a photo": (1, 1, 1),
}
TEXTS = list(VEC)


class TableModel(torch.nn.Module):
    """Image -> its mean normalised colour; caption -> its row of ``VEC``."""

    def __init__(self) -> None:
        super().__init__()
        self.vecs = torch.tensor([VEC[t] for t in TEXTS])

    def encode_image(self, x, normalize=False):
        f = x.float().mean(dim=(2, 3))
        return torch.nn.functional.normalize(f, dim=-1) if normalize else f

    def encode_text(self, tokens, normalize=False):
        f = self.vecs[tokens]
        return torch.nn.functional.normalize(f, dim=-1) if normalize else f


def table_tokenizer(texts):
    return torch.tensor([TEXTS.index(t) for t in texts])


SPEC = ImageSpec(8, 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _encoder() -> Encoder:
    return Encoder(TableModel(), table_tokenizer, SPEC, torch.device("cpu"), None, 4, 0, False)


def _images(root: Path, names: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, colour in names.items():
        Image.new("RGB", (12, 10), COLOURS[colour]).save(root / name, format="PNG")
    return root


def _judge_log():
    calls = []

    def judge(name, section, scored, skipped, unit, root, flag, example):
        calls.append((name.split(" (")[0], scored, skipped, unit))
    return judge, calls


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    d = tmp_path_factory.mktemp("benchmarks")
    coco = _images(d / "val2017", {"000000000001.jpg": "red", "000000000002.jpg": "green", "000000000003.jpg": "blue"})
    # SugarCrepe++ (Aman-J/SugarCrepe_pp data/*.json): a list of {id, filename, caption, caption2, negative_caption}
    scpp = [("000000000001.jpg", "a red cube on a table", "a table with a red cube on it", "a blue cube on a table"),
            ("000000000001.jpg", "a red cube", "a cube coloured red", "a cube coloured green"),
            ("000000000003.jpg", "a kite in the sky", "the sky with a kite", "a blue kite"),
            ("000000000002.jpg", "a green ball", "a ball that is green", "a red ball"),
            ("000000000009.jpg", "a red cube", "a cube coloured red", "a blue kite")]
    (d / "swap_att.json").write_text(json.dumps([
        {"id": i, "filename": f, "caption": c, "caption2": c2, "negative_caption": n}
        for i, (f, c, c2, n) in enumerate(scpp)]))
    (d / "replace_rel.json").write_text(json.dumps([
        {"id": 0, "filename": "000000000001.jpg", "caption": "a dog on a mat", "caption2": "a mat under a dog",
         "negative_caption": "a mat on a dog"}]))
    # VALSE (Heidelberg-NLP/VALSE data/<piece>.json): {"<piece>_<n>": {..., image_file, caption, foil, mturk}}
    valse = [("000000000001.jpg", "There is a cat.", "There is no cat.", 3),
             ("000000000002.jpg", "There are trees.", "There are no trees.", 2),
             ("000000000003.jpg", "There is a boat.", "There is no boat.", 2),
             ("000000000001.jpg", "There is a car.", "There is no car.", 1),
             ("000000000002.jpg", "There is a car.", "There is no car.", 0)]
    (d / "existence.json").write_text(json.dumps({
        f"existence_test_{i}": {"dataset": "visual7w", "original_split": "test", "dataset_idx": f"v7w_{i}",
                                "linguistic_phenomena": "existence", "image_file": f, "caption": c, "foil": n,
                                "classes": None, "classes_foil": None,
                                "mturk": {"foil": 3 - v, "caption": v, "other": 0}}
        for i, (f, c, n, v) in enumerate(valse)}))
    # Winoground (facebook/winoground data/examples.jsonl + images/<image_N>.png)
    wino = _images(d / "winoground" / "images", {
        "ex_0_img_0.png": "red", "ex_0_img_1.png": "blue", "ex_1_img_0.png": "red", "ex_1_img_1.png": "green",
        "ex_2_img_0.png": "red", "ex_2_img_1.png": "green", "ex_3_img_0.png": "red", "ex_3_img_1.png": "green"})
    examples = [("a red square and a blue circle", "a blue square and a red circle", "Object"),
                ("the cup is in the box", "the box is in the cup", "Relation"),
                ("a person rides a horse", "a horse rides a person", "Relation"),
                ("some plants surround a lightbulb", "a lightbulb surrounds some plants", "Both")]
    (d / "winoground" / "examples.jsonl").write_text("".join(
        json.dumps({"id": i, "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1", "caption_0": c0, "caption_1": c1,
                    "tag": "Noun", "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": t}) + "\n"
        for i, (c0, c1, t) in enumerate(examples)))
    # Flickr30k, Karpathy's dataset_flickr30k.json: filename only, the images in flickr30k-images/
    flickr = _images(d / "flickr30k-images", {"100.jpg": "red", "200.jpg": "green", "300.jpg": "blue", "400.jpg": "red"})
    caps = {"100.jpg": ["a man in a red shirt", "a man wearing red"],
            "200.jpg": ["two dogs on green grass", "dogs playing on a lawn"],
            "300.jpg": ["a boat on blue water", "a blue sailboat"], "400.jpg": ["a photo"]}
    (d / "dataset_flickr30k.json").write_text(json.dumps({"dataset": "flickr30k", "images": [
        {"filename": f, "imgid": i, "split": "train" if f == "400.jpg" else "test", "sentids": [],
         "sentences": [{"raw": c, "tokens": c.split(), "imgid": i} for c in cs]}
        for i, (f, cs) in enumerate(caps.items())]}))
    return {"dir": d, "coco": coco, "winoground": wino, "flickr": flickr}


def test_sugarcrepe_pp_image_to_text_and_text_only(bench):
    d = bench["dir"]
    judge, calls = _judge_log()
    spec = BenchmarkSpec(format="sugarcrepe_pp", files=[str(d / "swap_att.json"), str(d / "replace_rel.json")],
                         image_root=str(bench["coco"]))
    res = run_benchmark(_encoder(), "scpp", spec, None, judge)
    assert res["files"]["swap_att"] == {"itt": 3 / 4, "tot": 3 / 4, "items": 4, "skipped_items": 1, "items_read": 5,
                                        "left_out": {}}
    assert (res["files"]["replace_rel"]["itt"], res["files"]["replace_rel"]["tot"]) == (1.0, 0.0)
    assert (res["itt"], res["tot"]) == (pytest.approx((3 / 4 + 1) / 2), pytest.approx(3 / 8))
    assert calls == [("scpp swap_att", 4, 1, "items"), ("scpp replace_rel", 1, 0, "items")]


def test_valse_keeps_only_validated_items(bench):
    d = bench["dir"]
    spec = BenchmarkSpec(format="valse", files=[str(d / "existence.json")], image_root=str(bench["coco"]))
    res = run_benchmark(_encoder(), "valse", spec, None, _judge_log()[0])
    got = res["files"]["existence"]
    assert (got["accuracy"], got["pairs"], got["skipped_pairs"]) == (pytest.approx(2 / 3), 3, 0)
    assert got["items_read"] == 5 and got["left_out"] == {"not_valid": 2}
    assert res["accuracy"] == pytest.approx(2 / 3)
    # a piece's own image folder wins over the benchmark's
    spec = BenchmarkSpec(format="valse", files=[str(d / "existence.json")], image_root=str(d / "nowhere"),
                         image_roots={"existence": str(bench["coco"])})
    assert run_benchmark(_encoder(), "valse", spec, None, _judge_log()[0])["accuracy"] == pytest.approx(2 / 3)


def test_winoground_text_image_and_group_scores(bench):
    d = bench["dir"]
    spec = BenchmarkSpec(format="winoground", files=[str(d / "winoground" / "examples.jsonl")],
                         image_root=str(bench["winoground"]))
    res = run_benchmark(_encoder(), "winoground", spec, None, _judge_log()[0])
    got = res["files"]["examples"]
    assert (got["text"], got["image"], got["group"], got["examples"]) == (0.5, 0.5, 0.25, 4)
    assert got["groups"] == {"Both": {"text": 0.0, "image": 0.0, "group": 0.0, "examples": 1},
                             "Object": {"text": 1.0, "image": 1.0, "group": 1.0, "examples": 1},
                             "Relation": {"text": 0.5, "image": 0.5, "group": 0.0, "examples": 2}}
    assert (res["text"], res["image"], res["group"]) == (0.5, 0.5, 0.25)


def _winoground_parquet(bench, path: Path, tagged: bool = True) -> Path:
    """The same four examples as ``examples.jsonl``, as the dataset's parquet export (images embedded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for line in (bench["dir"] / "winoground" / "examples.jsonl").read_text().splitlines():
        e = json.loads(line)
        for k in ("image_0", "image_1"):
            e[k] = {"bytes": (bench["winoground"] / f"{e[k]}.png").read_bytes(), "path": None}
        if not tagged:
            del e["collapsed_tag"], e["tag"]
        rows.append(e)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_winoground_parquet_export_scores_as_the_jsonl(bench, tmp_path):
    spec = BenchmarkSpec(format="winoground", files=[str(_winoground_parquet(bench, tmp_path / "test-00000.parquet"))])
    got = run_benchmark(_encoder(), "winoground", spec, None, _judge_log()[0])["files"]["test-00000"]
    assert (got["text"], got["image"], got["group"], got["examples"], got["skipped_examples"]) == (0.5, 0.5, 0.25, 4, 0)
    assert got["groups"]["Relation"] == {"text": 0.5, "image": 0.5, "group": 0.0, "examples": 2}
    # untagged examples form one group; the totals are counted once
    spec = BenchmarkSpec(format="winoground", files=[str(_winoground_parquet(bench, tmp_path / "untagged.parquet",
                                                                               tagged=False))])
    got = run_benchmark(_encoder(), "winoground", spec, None, _judge_log()[0])["files"]["untagged"]
    assert (got["examples"], got["skipped_examples"], got["group"]) == (4, 0, 0.25)
    assert got["groups"] == {"untagged": {"text": 0.5, "image": 0.5, "group": 0.25, "examples": 4}}
    assert len(load_winoground(tmp_path / "untagged.parquet", limit=2)) == 2


def test_flickr30k_retrieval_from_the_karpathy_file(bench):
    d = bench["dir"]
    spec = BenchmarkSpec(format="retrieval", files=[str(d / "dataset_flickr30k.json")], image_root=str(bench["flickr"]))
    res = run_benchmark(_encoder(), "flickr", spec, None, _judge_log()[0])
    # the green image ranks a red caption first; 2 of 6 captions rank their own image first
    assert (res["images"], res["captions"], res["skipped_images"]) == (3, 6, 0)
    assert res["image_to_text_R@1"] == pytest.approx(2 / 3) and res["image_to_text_R@5"] == 1.0
    assert res["text_to_image_R@1"] == pytest.approx(1 / 3) and res["text_to_image_R@5"] == 1.0
    assert res["mean_R@1"] == pytest.approx(0.5)


def test_malformed_files_name_the_file_and_the_item(tmp_path):
    bad = tmp_path / "existence.json"
    bad.write_text(json.dumps({"existence_0": {"image_file": "a.jpg", "caption": "x", "foil": "y",
                                               "mturk": {"caption": 3}},
                               "existence_1": {"image_file": "b.jpg", "caption": "x", "mturk": {"caption": 3}}}))
    with pytest.raises(SourceError, match=r"existence\.json item 'existence_1': missing or empty field 'foil'"):
        load_valse(bad)
    novote = tmp_path / "plurals.json"
    novote.write_text(json.dumps({"p0": {"image_file": "a.jpg", "caption": "x", "foil": "y"}}))
    with pytest.raises(SourceError, match=r"plurals\.json item 'p0': no annotator votes"):
        load_valse(novote)
    wino = tmp_path / "examples.jsonl"
    wino.write_text('{"id": 0, "image_0": "a", "image_1": "b", "caption_0": "x", "caption_1": "y"}\n'
                    '{"id": 1, "image_0": "a", "caption_0": "x", "caption_1": "y"}\n')
    with pytest.raises(SourceError, match=r"examples\.jsonl item 1 \(line 2\): missing or empty field 'image_1'"):
        load_winoground(wino)
    scpp = tmp_path / "swap_obj.json"
    scpp.write_text(json.dumps([{"filename": "a.jpg", "caption": "x", "negative_caption": "z"}]))
    with pytest.raises(SourceError, match=r"swap_obj\.json item 0: missing or empty field 'caption2'"):
        FORMATS["sugarcrepe_pp"].read(str(scpp), None)


def test_malformed_retrieval_files_name_the_item(tmp_path):
    f = tmp_path / "dataset_flickr30k.json"
    f.write_text(json.dumps({"images": [
        {"filename": "1.jpg", "split": "test", "sentences": [{"raw": "a dog"}]},
        {"filename": "2.jpg", "split": "test", "sentences": [{"tokens": ["a", "cat"]}]}]}))
    with pytest.raises(SourceError, match=r"flickr30k\.json item images\[1\] \(2\.jpg\): missing or empty sentences"):
        load_karpathy(f)
    f.write_text(json.dumps({"images": [{"filename": "1.jpg", "split": "train", "sentences": [{"raw": "a dog"}]}]}))
    with pytest.raises(SourceError, match=r"flickr30k\.json: no test image"):
        load_karpathy(f)
    f.write_text(json.dumps([{"image": "1.jpg", "caption": ["a dog"]}, {"caption": ["a cat"]}]))
    with pytest.raises(SourceError, match=r"flickr30k\.json item 1: missing or empty field 'image'"):
        load_karpathy(f)
    bad = tmp_path / "examples.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(SourceError, match=r"cannot read .*examples\.parquet"):
        load_winoground(bad)


def _suite_file(path: Path, bench, **extra) -> Path:
    d = bench["dir"]
    text = f"""
suite:
  benchmarks:
    sugarcrepe_pp:
      format: sugarcrepe_pp
      files: [{d / 'swap_att.json'}, {d / 'replace_rel.json'}]
      image_root: {bench['coco']}
    valse: {{format: valse, files: [{d / 'existence.json'}], image_root: {bench['coco']}}}
    winoground: {{format: winoground, files: [{d / 'winoground' / 'examples.jsonl'}], image_root: {bench['winoground']}}}
    flickr: {{format: retrieval, files: [{d / 'dataset_flickr30k.json'}], image_root: {bench['flickr']}}}
"""
    path.write_text(text)
    return path


@pytest.fixture
def stand_in(monkeypatch):
    def build(cfg, device="cpu"):
        return BuiltModel(TableModel(), table_tokenizer, "table", {"size": 8, "mean": (0.5,) * 3, "std": (0.25,) * 3},
                          None)
    monkeypatch.setattr(evaluate_mod, "build_model", build)


def test_one_suite_run_writes_one_table(bench, tmp_path, stand_in):
    suite = _suite_file(tmp_path / "suite.yaml", bench)
    out = tmp_path / "run" / "suite_metrics.json"
    m = evaluate(eval_config({"model": {"name": "table", "pretrained": "ceclip"}, "suite": str(suite),
                              "workers": 0, "progress": False, "out": str(out)}))
    s = json.loads(out.read_text())["suite"]
    assert s == m["suite"]
    assert s["compositional"] == ["sugarcrepe_pp", "valse", "winoground"] and s["recognition"] == ["flickr"]
    comp = ((3 / 4 + 1) / 2 + 2 / 3 + 0.25) / 3  # headline: SugarCrepe++ ITT, VALSE accuracy, Winoground group
    assert s["table"] == {
        "sugarcrepe_pp_itt": pytest.approx(7 / 8), "sugarcrepe_pp_tot": pytest.approx(3 / 8),
        "valse": pytest.approx(2 / 3), "winoground_text": 0.5, "winoground_image": 0.5, "winoground_group": 0.25,
        "flickr_i2t_R@1": pytest.approx(2 / 3), "flickr_t2i_R@1": pytest.approx(1 / 3),
        "compositional_mean": pytest.approx(comp), "recognition_mean": pytest.approx(0.5),
    }
    md = (out.parent / "suite_metrics.md").read_text().splitlines()
    assert md[0] == ("| model | sugarcrepe_pp_itt | sugarcrepe_pp_tot | valse | winoground_text | winoground_image | "
                     "winoground_group | flickr_i2t_R@1 | flickr_t2i_R@1 | compositional_mean | recognition_mean |")
    assert md[2] == f"| ceclip | 87.5 | 37.5 | 66.7 | 50.0 | 50.0 | 25.0 | 66.7 | 33.3 | {100 * comp:.1f} | 50.0 |"
    assert "`compositional_mean`: the mean of sugarcrepe_pp, valse, winoground" in md[-1]
    csv_lines = (out.parent / "suite_metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,sugarcrepe_pp_itt,") and csv_lines[1].startswith("ceclip,0.875,0.375,")
    assert not math.isnan(float(csv_lines[1].split(",")[-1]))


def test_compare_suite_joins_two_models(bench, tmp_path, stand_in):
    suite = _suite_file(tmp_path / "suite.yaml", bench)
    for name in ("base", "ceclip"):
        assert main(["-q", "eval", "--model", "table", "--pretrained", name, "--suite", str(suite), "--workers", "0",
                     "--no-progress", "--out", str(tmp_path / f"{name}.json")]) == 0
    # the second model's numbers differ: give it a suite of VALSE alone
    only = tmp_path / "valse.yaml"
    only.write_text(f"benchmarks:\n  valse: {{format: valse, files: [{bench['dir'] / 'existence.json'}], "
                    f"image_root: {bench['coco']}}}\n")
    assert main(["-q", "eval", "--model", "table", "--pretrained", "x", "--suite", str(only), "--workers", "0",
                 "--no-progress", "--out", str(tmp_path / "valse_only.json")]) == 0
    assert main(["-q", "compare-suite", "--model", f"base={tmp_path / 'base.json'}",
                 "--model", f"valse_only={tmp_path / 'valse_only.json'}", "--out", str(tmp_path / "joined")]) == 0
    md = (tmp_path / "joined" / "suite.md").read_text().splitlines()
    assert md[0].startswith("| model | sugarcrepe_pp_itt |") and md[0].endswith("| compositional_mean | recognition_mean |")
    assert md[2].startswith("| base | 87.5 | 37.5 | 66.7 |")
    assert md[3] == "| valse_only |  |  | 66.7 |  |  |  |  |  | 66.7 |  |"
    joined = json.loads((tmp_path / "joined" / "suite.json").read_text())
    assert joined["models"] == ["base", "valse_only"]
    assert (tmp_path / "joined" / "suite.csv").read_text().splitlines()[2].startswith("valse_only,,,0.666")


def test_a_bad_benchmark_file_or_image_root_stops_the_run_before_the_model_is_built(bench, tmp_path, monkeypatch):
    from trainer.data import ImagesUnavailable

    built = []
    monkeypatch.setattr(evaluate_mod, "build_model", lambda *a, **k: built.append(1))
    d = bench["dir"]
    bad = tmp_path / "relations.json"
    bad.write_text(json.dumps({"relations_0": {"image_file": "000000000001.jpg", "caption": "x", "foil": "y"}}))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"benchmarks:\n"
                     f"  flickr: {{format: retrieval, files: [{d / 'dataset_flickr30k.json'}], image_root: {bench['flickr']}}}\n"
                     f"  valse: {{format: valse, files: [{bad}], image_root: {bench['coco']}}}\n")
    run = {"model": {"name": "table"}, "suite": str(suite), "workers": 0, "progress": False,
           "out": str(tmp_path / "m.json")}
    with pytest.raises(SourceError, match=r"relations\.json item 'relations_0': no annotator votes"):
        evaluate(eval_config(run))
    bad.write_text(json.dumps({"relations_0": {"image_file": "000000000001.jpg", "caption": "x", "foil": "y",
                                               "mturk": {"caption": 1, "foil": 2, "other": 0}}}))
    with pytest.raises(SourceError, match=r"benchmark valse \(.*relations\.json\): nothing to score: it holds no item "
                       r"its reader keeps \(left out: \{'not_valid': 1\}\)"):
        evaluate(eval_config(run))
    suite.write_text(f"benchmarks:\n  winoground: {{format: winoground, files: [{d / 'winoground' / 'examples.jsonl'}], "
                     f"image_root: {bench['coco']}}}\n")
    with pytest.raises(ImagesUnavailable, match=r"benchmark winoground \(.*examples\.jsonl\): none of its first 8 images "
                       r"exists; e\.g\. ex_0_img_0\.png was looked up as .* under the image root .*val2017; "
                       r"this dataset stores image paths only; pass the image_root \(or image_roots\) of benchmark "
                       r"winoground in the suite"):
        evaluate(eval_config(run))
    assert built == [] and not (tmp_path / "m.json").exists()


def test_suite_file_errors_name_the_key(tmp_path, bench):
    bad = tmp_path / "s.yaml"
    bad.write_text("benchmarks:\n  wino: {format: winogrande, files: [x.jsonl]}\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: benchmarks\.wino\.format: unknown format 'winogrande'"):
        load_suite(bad)
    bad.write_text("benchmarks:\n  flickr: {format: retrieval, files: [a.json, b.json]}\n")
    with pytest.raises(ConfigError, match=r"benchmarks\.flickr\.files: format retrieval reads one file, got 2"):
        load_suite(bad)
    bad.write_text("benchmarks:\n  valse: {format: valse, files: [a.json], image_dir: x}\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \[.*benchmarks\.valse\.image_dir'\]"):
        load_suite(bad)
    assert main(["-q", "compare-suite", "--model", f"a={bad}", "--out", str(tmp_path / "o")]) == 1


def test_the_coco_recipe_excludes_the_suite_images_and_runs_the_suite():
    import yaml

    from pipeline.config import GenerateConfig
    from pipeline.core.config import from_dict
    from trainer.config import EvalConfig, TrainConfig

    root = Path(__file__).resolve().parents[1]
    p = yaml.safe_load((root / "params_coco.yaml").read_text(encoding="utf-8"))
    suite = load_suite(root / "params_coco.yaml")
    assert {n: s.format for n, s in suite.items()} == {
        "sugarcrepe": "sugarcrepe", "sugarcrepe_pp": "sugarcrepe_pp", "aro_vg_relation": "aro_relation",
        "aro_vg_attribution": "aro_attribution", "valse": "valse", "winoground": "winoground",
        "coco_retrieval": "retrieval", "flickr_retrieval": "retrieval", "imagenet": "zeroshot"}
    ev = from_dict(EvalConfig, p["eval_suite"])
    ev.validate()
    assert ev.suite == "params_coco.yaml"
    tr = from_dict(TrainConfig, p["train"])
    tr.validate()
    assert tr.data.eval_sets == ["params_coco.yaml"] and tr.data.strict_eval_overlap
    gen = from_dict(GenerateConfig, p["negatives"])
    # every COCO-image benchmark file of the suite is excluded from the training captions
    coco_files = suite["sugarcrepe"].files + suite["sugarcrepe_pp"].files + [
        f"/path/to/valse/data/{piece}.json" for piece in ("plurals", "relations", "foil-it", "coreference-standard")]
    assert gen.source.exclude_images == coco_files


def test_aro_attribution_macro_accuracy_leaves_out_rare_attribute_pairs_as_aro_does():
    from trainer.evaluate import grouped_accuracy

    correct, groups = [True] * 25 + [False] * 2, ["white_black"] * 25 + ["red_blue"] * 2
    assert FORMATS["aro_attribution"].macro_min_pairs == 25 and FORMATS["aro_relation"].macro_min_pairs == 1
    got = grouped_accuracy(correct, groups, FORMATS["aro_attribution"].macro_min_pairs)
    assert (got["macro_accuracy"], got["accuracy"]) == (1.0, 25 / 27)
    assert got["groups"]["red_blue"] == {"accuracy": 0.0, "pairs": 2}
    assert grouped_accuracy(correct, groups)["macro_accuracy"] == 0.5
