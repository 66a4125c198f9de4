"""Evaluation: metric functions on hand-made scores, benchmark readers, and the end-to-end run."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image
from support.shards import COLORS, SHAPES, shape_image, shapes_dataset

from pipeline.cli import main
from pipeline.core.errors import ConfigError, SourceError
from trainer.config import ModelConfig, eval_config
from trainer.data import ImageSpec, decode_image, normalize_images, open_image
from trainer.evaluate import (
    evaluate,
    grouped_accuracy,
    load_aro,
    load_karpathy,
    load_sugarcrepe,
    retrieval_recall,
)
from trainer.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_retrieval_recall_hand_example():
    # 3 images, 5 captions: captions 0,1 -> image 0; 2 -> image 1; 3,4 -> image 2
    sim = torch.tensor([
        [0.9, 0.1, 0.8, 0.0, 0.2],
        [0.2, 0.3, 0.1, 0.5, 0.0],
        [0.1, 0.2, 0.3, 0.4, 0.6],
    ])
    r = retrieval_recall(sim, [0, 0, 1, 2, 2], ks=(1, 2, 5))
    # image 0: best own caption ranks 1st; image 1: its caption 2 ranks 4th; image 2: caption 4 is 1st
    assert r["image_to_text_R@1"] == pytest.approx(2 / 3)
    assert r["image_to_text_R@2"] == pytest.approx(2 / 3)
    assert r["image_to_text_R@5"] == 1.0
    # own-image ranks per caption: 0, 2, 2, 1, 0
    assert r["text_to_image_R@1"] == pytest.approx(2 / 5)
    assert r["text_to_image_R@2"] == pytest.approx(3 / 5)
    assert r["text_to_image_R@5"] == 1.0


def test_grouped_accuracy_micro_macro_and_ties():
    pos = torch.tensor([0.5, 0.5, 0.4, 0.3])
    neg = torch.tensor([0.4, 0.5, 0.1, 0.9])  # the tie in pair 2 counts as wrong
    res = grouped_accuracy((pos > neg).tolist(), ["on", "on", "on", "under"])
    assert res["accuracy"] == pytest.approx(2 / 4)
    assert res["macro_accuracy"] == pytest.approx((2 / 3 + 0 / 1) / 2)
    assert res["groups"] == {"on": {"accuracy": pytest.approx(2 / 3), "pairs": 3},
                             "under": {"accuracy": 0.0, "pairs": 1}}
    assert grouped_accuracy([], [])["accuracy"] is None


def test_readers(tmp_path):
    sc = tmp_path / "swap_att.json"
    sc.write_text(json.dumps({"0": {"filename": "a.jpg", "caption": "a red cup on a blue table",
                                    "negative_caption": "a blue cup on a red table"}}))
    (item,) = load_sugarcrepe(sc)
    assert (item.image, item.positive, item.negative, item.group) == (
        {"path": "a.jpg"}, "a red cup on a blue table", "a blue cup on a red table", "swap_att")
    sc_list = tmp_path / "replace_rel.json"
    sc_list.write_text(json.dumps([{"filename": "b.jpg", "caption": "x", "negative_caption": "y"}] * 3))
    assert len(load_sugarcrepe(sc_list, limit=2)) == 2

    aro = tmp_path / "visual_genome_relation.json"
    aro.write_text(json.dumps([{"image_path": "1.jpg", "bbox_x": 10, "bbox_y": 5, "bbox_w": 30, "bbox_h": 20,
                                "true_caption": "the horse is eating the grass",
                                "false_caption": "the grass is eating the horse", "relation_name": "eating"}]))
    (a,) = load_aro(aro, "relation")
    assert a.crop == (10.0, 5.0, 40.0, 25.0) and a.group == "eating"
    att = tmp_path / "visual_genome_attribution.json"
    att.write_text(json.dumps([{"image_path": "2.jpg", "bbox_x": 0, "bbox_y": 0, "bbox_w": 5, "bbox_h": 5,
                                "true_caption": "the white dog and the black cat",
                                "false_caption": "the black dog and the white cat", "attributes": ["white", "black"]}]))
    assert load_aro(att, "attribution")[0].group == "white_black"

    blip = tmp_path / "coco_karpathy_test.json"
    blip.write_text(json.dumps([{"image": "val2014/1.jpg", "caption": ["c1", "c2"]},
                                {"image": "val2014/2.jpg", "caption": ["c3"]}]))
    assert load_karpathy(blip) == (["val2014/1.jpg", "val2014/2.jpg"], ["c1", "c2", "c3"], [0, 0, 1])
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": [
        {"filepath": "val2014", "filename": "1.jpg", "split": "test", "sentences": [{"raw": "c1"}]},
        {"filepath": "train2014", "filename": "2.jpg", "split": "train", "sentences": [{"raw": "c2"}]},
    ]}))
    assert load_karpathy(karpathy) == (["val2014/1.jpg"], ["c1"], [0])

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_path": "1.jpg", "true_caption": "x"}]))
    with pytest.raises(SourceError, match="item 0"):
        load_aro(bad, "relation")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SourceError, match="cannot read"):
        load_sugarcrepe(tmp_path / "broken.json")


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    images = root / "images"
    (images / "val2014").mkdir(parents=True)
    names = []
    for i, (c, s) in enumerate([(c, s) for s in SHAPES for c in COLORS][:6]):
        name = f"val2014/{i}.png"
        (images / name).write_bytes(shape_image(c, s))
        names.append((name, c, s))
    sc = root / "swap_att.json"
    sc.write_text(json.dumps({str(i): {"filename": n, "caption": f"a {c} {s}", "negative_caption": f"a {s} {c}"}
                              for i, (n, c, s) in enumerate(names)}))
    big = Image.new("RGB", (100, 80), (255, 255, 255))
    big.paste(Image.open(images / names[0][0]).resize((40, 40)), (10, 20))
    big.save(images / "vg1.png")
    aro = root / "visual_genome_relation.json"
    aro.write_text(json.dumps([
        {"image_path": "vg1.png", "bbox_x": 10, "bbox_y": 20, "bbox_w": 40, "bbox_h": 40,
         "true_caption": "a red circle on a white wall", "false_caption": "a white wall on a red circle",
         "relation_name": "on"},
        {"image_path": "vg1.png", "bbox_x": 0, "bbox_y": 0, "bbox_w": 100, "bbox_h": 80,
         "true_caption": "a circle near the wall", "false_caption": "a wall near the circle", "relation_name": "near"},
        {"image_path": "missing.png", "bbox_x": 0, "bbox_y": 0, "bbox_w": 5, "bbox_h": 5,
         "true_caption": "x", "false_caption": "y", "relation_name": "near"},
    ]))
    coco = root / "coco.json"
    coco.write_text(json.dumps([{"image": n, "caption": [f"a {c} {s}", f"one {s} that is {c}"]} for n, c, s in names]
                               + [{"image": "val2014/gone.jpg", "caption": ["nothing"]}]))
    shards = shapes_dataset(root / "ds", 10, shards=1, split="test")
    return {"root": root, "images": images, "sugarcrepe": sc, "aro": aro, "coco": coco, "shards": shards}


def test_evaluate_end_to_end_matches_direct_scoring(bench_files, tmp_path):
    f = bench_files
    out = tmp_path / "metrics.json"
    cfg = eval_config({
        "model": {"name": "hardneg-tiny", "pretrained": None},
        "shards": [str(f["shards"])], "families": ["attribute_replace", "object_replace", "relation_swap"],
        "sugarcrepe": [str(f["sugarcrepe"])], "sugarcrepe_image_root": str(f["images"]),
        "aro_relation": str(f["aro"]), "aro_image_root": str(f["images"]),
        "coco_karpathy": str(f["coco"]), "coco_image_root": str(f["images"]),
        "batch_size": 4, "workers": 0, "out": str(out), "progress": False,
    })
    torch.manual_seed(0)
    m = evaluate(cfg)
    assert json.loads(out.read_text())["sugarcrepe"] == m["sugarcrepe"]

    # held-out shards: 10 rows x (3 colour + 2 shape candidates); relation_swap has none
    fam = m["shards"]["families"]
    assert fam["attribute_replace"]["pairs"] == 30 and fam["object_replace"]["pairs"] == 20
    assert fam["relation_swap"] == {"accuracy": None, "pairs": 0}
    assert m["shards"]["macro"] == pytest.approx((fam["attribute_replace"]["accuracy"] + fam["object_replace"]["accuracy"]) / 2)

    # ARO: the missing image is skipped, not scored
    assert m["aro_vg_relation"]["pairs"] == 2 and m["aro_vg_relation"]["skipped_pairs"] == 1
    assert m["coco_retrieval"]["images"] == 6 and m["coco_retrieval"]["captions"] == 12
    assert m["coco_retrieval"]["skipped_images"] == 1
    assert m["skipped_images"] == {"missing": 2}
    # each section says which share it left out and whether that passed max_missing_fraction (1%)
    assert [(m[k]["skipped_fraction"], m[k]["over_missing_limit"]) for k in ("shards", "aro_vg_relation",
                                                                             "coco_retrieval")] == [
        (0.0, False), (1 / 3, True), (1 / 7, True)]
    assert m["sugarcrepe"]["categories"]["swap_att"]["over_missing_limit"] is False
    assert m["warnings"] == [
        f"eval section aro_vg_relation ({f['aro']}): 1 of 3 pairs (33.3%) were left out for a missing or unreadable "
        "image, more than max_missing_fraction = 0.01; its figures cover the rest only",
        f"eval section coco_retrieval ({f['coco']}): 1 of 7 images (14.3%) were left out for a missing or "
        "unreadable image, more than max_missing_fraction = 0.01; its figures cover the rest only",
    ]

    # the same model scored directly, item by item, gives the same numbers
    torch.manual_seed(0)
    built = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
    model, tok = built.model.eval(), built.tokenizer
    spec = ImageSpec.from_preprocess(built.preprocess)

    def img_feat(path, crop=None):
        img = open_image({"path": path}, str(f["images"]))
        if crop:
            img = img.crop(crop)
        x = torch.from_numpy(decode_image(img, spec, draft=crop is None).copy()).permute(2, 0, 1)[None]
        with torch.no_grad():
            return model.encode_image(normalize_images(x, spec), normalize=True)[0]

    def txt_feat(t):
        with torch.no_grad():
            return model.encode_text(tok([t]), normalize=True)[0]

    sc = json.loads(f["sugarcrepe"].read_text())
    correct = [float(img_feat(e["filename"]) @ txt_feat(e["caption"])) > float(img_feat(e["filename"]) @ txt_feat(e["negative_caption"]))
               for e in sc.values()]
    assert m["sugarcrepe"]["categories"]["swap_att"]["accuracy"] == pytest.approx(sum(correct) / len(correct))
    assert m["sugarcrepe"]["categories"]["swap_att"]["pairs"] == 6

    aro = json.loads(f["aro"].read_text())[:2]
    hits = []
    for e in aro:
        i = img_feat(e["image_path"], (e["bbox_x"], e["bbox_y"], e["bbox_x"] + e["bbox_w"], e["bbox_y"] + e["bbox_h"]))
        hits.append(float(i @ txt_feat(e["true_caption"])) > float(i @ txt_feat(e["false_caption"])))
    assert m["aro_vg_relation"]["groups"]["on"]["accuracy"] == float(hits[0])
    assert m["aro_vg_relation"]["groups"]["near"]["accuracy"] == float(hits[1])

    coco = json.loads(f["coco"].read_text())[:6]
    imgs = torch.stack([img_feat(e["image"]) for e in coco])
    txts = torch.stack([txt_feat(c) for e in coco for c in e["caption"]])
    expect = retrieval_recall(imgs @ txts.T, [i for i in range(6) for _ in range(2)])
    for k, v in expect.items():
        assert m["coco_retrieval"][k] == pytest.approx(v, abs=1e-6)


def test_eval_cli_and_config_errors(bench_files, tmp_path, capsys):
    out = tmp_path / "m.json"
    rc = main(["-q", "eval", "--model", "hardneg-tiny", "--pretrained", "none", "--sugarcrepe",
               str(bench_files["sugarcrepe"]), "--sugarcrepe-image-root", str(bench_files["images"]),
               "--workers", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sugarcrepe"]["categories"]["swap_att"]["pairs"] == 6
    assert json.loads(out.read_text())["model"] == {"name": "hardneg-tiny", "pretrained": ""}
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        eval_config({"model": {"name": "hardneg-tiny"}})
    assert main(["-q", "eval", "--model", "hardneg-tiny"]) == 2


def test_a_section_that_scores_nothing_fails(bench_files, tmp_path, caplog):
    """Every image of a requested section missing: an error that says why, and no metrics file."""
    out = tmp_path / "m.json"
    argv = ["-q", "eval", "--model", "hardneg-tiny", "--pretrained", "none", "--workers", "0", "--no-progress",
            "--out", str(out), "--sugarcrepe", str(bench_files["sugarcrepe"]), "--sugarcrepe-image-root",
            str(tmp_path / "nowhere")]
    with caplog.at_level(logging.ERROR, logger="hardneg"):
        assert main(argv) == 1
    missing = tmp_path / "nowhere" / "val2014" / "0.png"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"eval section sugarcrepe swap_att ({bench_files['sugarcrepe']}) scores nothing: the images of all its 6 "
        f"pairs are missing or unreadable; e.g. val2014/0.png was looked up as {missing} under the image root "
        f"{tmp_path / 'nowhere'}; this dataset stores image paths only; pass --sugarcrepe-image-root "
        "(sugarcrepe_image_root) pointing at the folder that holds val2014/0.png"
    ]
    assert not out.exists()
