"""Evaluation images kept out of training: one key per image across its spellings, the benchmark
files read into keys, and ``hardneg generate --exclude-images`` dropping and counting exactly the
captions of those images."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.config import GenerateConfig, SourceConfig
from pipeline.contract.eval_images import image_key, read_eval_images
from pipeline.core.errors import SourceError
from pipeline.generate import generate


def test_one_key_per_coco_image_across_spellings():
    spellings = ["val2014/COCO_val2014_000000123456.jpg", "COCO_train2014_000000123456.jpg", "000000123456.jpg",
                 "123456", " 123456\n", 123456]
    assert {image_key(s) for s in spellings} == {"coco:123456"}
    # numbers that are not COCO's 12-digit names stay file names: a Visual Genome or Flickr30k image
    assert image_key("vg/2316414.jpg") == "file:2316414.jpg"
    assert image_key("flickr30k-images/1000092795.jpg") == "file:1000092795.jpg"
    assert image_key("") is None


def _sugarcrepe(path, names):
    path.write_text(json.dumps({str(i): {"filename": n, "caption": "a dog on a sofa", "negative_caption": "a sofa on a dog"}
                                for i, n in enumerate(names)}))
    return path


def _karpathy(path, images):
    path.write_text(json.dumps({"images": [
        {"filepath": fp, "filename": fn, "cocoid": cid, "split": split, "sentences": [{"raw": "a cat"}]}
        for fp, fn, cid, split in images]}))
    return path


def test_benchmark_files_read_into_keys(tmp_path):
    sc = _sugarcrepe(tmp_path / "swap_att.json", ["000000000139.jpg", "000000000285.jpg"])
    kp = _karpathy(tmp_path / "dataset_coco.json", [
        ("val2014", "COCO_val2014_000000000042.jpg", 42, "test"),
        ("val2014", "COCO_val2014_000000000073.jpg", 73, "val"),
        ("train2014", "COCO_train2014_000000000009.jpg", 9, "train"),  # a training image: not held out
        ("val2014", "COCO_val2014_000000000074.jpg", 74, "restval"),
    ])
    aro = tmp_path / "visual_genome_relation.json"
    aro.write_text(json.dumps([{"image_path": "2316414.jpg", "true_caption": "x", "false_caption": "y"}]))
    wino = tmp_path / "examples.jsonl"
    wino.write_text('{"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "caption_0": "a", "caption_1": "b"}\n')
    listed = tmp_path / "ids.txt"
    listed.write_text("# COCO ids\n5\nval2014/COCO_val2014_000000000006.jpg\n")
    assert read_eval_images([str(sc)]) == {"coco:139", "coco:285"}
    assert read_eval_images([str(kp)]) == {"coco:42", "coco:73"}
    assert read_eval_images([str(aro), str(wino), str(listed)]) == {
        "file:2316414.jpg", "file:ex_0_img_0.png", "file:ex_0_img_1.png", "coco:5", "coco:6"}


def test_winoground_parquet_and_valse_pieces_read_into_keys(tmp_path):
    import pyarrow as pa

    # Winoground's parquet export: the image structs' paths are read (never their bytes); an image
    # without a path is named as examples.jsonl names it
    wino = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"id": 0, "image_0": {"bytes": b"x", "path": None}, "image_1": {"bytes": b"y", "path": None},
         "caption_0": "a", "caption_1": "b"},
        {"id": 1, "image_0": {"bytes": b"x", "path": "ex_1_img_0.png"}, "image_1": {"bytes": b"y", "path": None},
         "caption_0": "a", "caption_1": "b"}]), wino)
    assert read_eval_images([str(wino)]) == {"file:ex_0_img_0.png", "file:ex_0_img_1.png", "file:ex_1_img_0.png",
                                             "file:ex_1_img_1.png"}
    # VALSE: FOIL-it and coreference-standard name COCO 2014 files, plurals and relations val2017 ones
    valse = tmp_path / "coreference-standard.json"
    valse.write_text(json.dumps({
        "coref_train_528": {"dataset": "VisDial_v1.0", "image_file": "COCO_train2014_000000254009.jpg",
                            "caption": "x", "foil": "y", "mturk": {"foil": 0, "caption": 3, "other": 0}},
        "plurals:coco2017:308510": {"dataset": "coco2017", "dataset_idx": 308510, "image_file": "000000291619.jpg",
                                    "caption": "x", "foil": "y", "mturk": {"foil": 0, "caption": 3, "other": 0}},
        "existence_visual7w_2371044": {"dataset": "visual7w", "image_file": "v7w_2371044.jpg", "caption": "x",
                                       "foil": "y", "mturk": {"foil": 0, "caption": 3, "other": 0}}}))
    assert read_eval_images([str(valse)]) == {"coco:254009", "coco:291619", "file:v7w_2371044.jpg"}


def test_a_malformed_benchmark_file_names_the_file_and_the_item(tmp_path):
    bad = tmp_path / "replace_rel.json"
    bad.write_text(json.dumps({"0": {"filename": "000000000139.jpg"}, "1": {"caption": "no image here"}}))
    with pytest.raises(SourceError, match=r"replace_rel\.json: item '1': names no image"):
        read_eval_images([str(bad)])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SourceError, match=r"broken\.json: not valid JSON"):
        read_eval_images([str(broken)])
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(SourceError, match=r"empty\.txt names no image"):
        read_eval_images([str(empty)])


def test_generate_drops_and_counts_exactly_the_captions_of_evaluation_images(tmp_path):
    # a training source (COCO annotation layout, 2014 names) sharing images with a SugarCrepe file
    # (val2017 names) and a Karpathy split file (BLIP list, val2014 paths), each spelling differently
    captions = {
        139: ["a black dog sleeps on a red sofa", "a dog lying on a couch"],
        285: ["a brown bear walks past a tall tree"],
        42: ["a man rides a horse on a beach", "a person riding a horse"],
        7: ["a red car parked next to a white house"],
        8: ["a small cat sits on a wooden table"],
    }
    coco = {"images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"} for i in captions],
            "annotations": [{"id": 100 * i + j, "image_id": i, "caption": c}
                            for i, caps in captions.items() for j, c in enumerate(caps)]}
    src = tmp_path / "captions_train2014.json"
    src.write_text(json.dumps(coco))
    sc = _sugarcrepe(tmp_path / "swap_att.json", ["000000000139.jpg", "000000000285.jpg", "000000999999.jpg"])
    blip = tmp_path / "coco_karpathy_test.json"
    blip.write_text(json.dumps([{"image": "val2014/COCO_val2014_000000000042.jpg", "caption": ["x"]}]))

    out = tmp_path / "out"
    rc = main(["-q", "generate", "-i", str(src), "--name", "excl", "--out", str(out), "--manifest-dir",
               str(tmp_path / "m"), "--exclude-images", str(sc), str(blip)])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == {"excluded_eval_image": 5}
    assert manifest["config"]["source"]["exclude_images"] == [str(sc), str(blip)]
    rows = pq.read_table(out / "train").to_pylist()
    assert sorted(r["caption"] for r in rows) == sorted(captions[7] + captions[8])
    assert sorted(r["image"]["path"] for r in rows) == ["train2014/COCO_train2014_000000000007.jpg",
                                                        "train2014/COCO_train2014_000000000008.jpg"]
    examples = manifest["skip_examples"]
    assert any("coco-13900" in e and "COCO_train2014_000000000139.jpg" in e for e in examples)

    # without exclusion: every caption, and no key in the config (so the dataset's hash is as before)
    plain = generate(GenerateConfig(name="plain", source=SourceConfig(path=str(src)), out=str(tmp_path / "plain"),
                                    manifest_dir=str(tmp_path / "m")))
    assert plain.rows == 7 and plain.skipped == {}
    assert "exclude_images" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())["config"]["source"]


def test_train_warns_about_shared_images_and_refuses_when_strict(tmp_path, caplog):
    import logging

    from PIL import Image

    from trainer.data import ShardIndex
    from trainer.overlap import check_eval_overlap, find_overlap

    ids = {139: "a black dog sleeps on a red sofa", 7: "a red car parked next to a white house",
           8: "a small cat sits on a wooden table"}
    coco = {"images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"} for i in ids],
            "annotations": [{"id": i, "image_id": i, "caption": c} for i, c in ids.items()]}
    src = tmp_path / "captions_train2014.json"
    src.write_text(json.dumps(coco))
    out = tmp_path / "data"
    generate(GenerateConfig(name="t", source=SourceConfig(path=str(src)), out=str(out), manifest_dir=str(tmp_path / "m"),
                            families=["attribute_swap", "object_replace"]))
    root = tmp_path / "coco" / "train2014"
    root.mkdir(parents=True)
    for i in ids:
        Image.new("RGB", (16, 16), (200, 30, 30)).save(root / f"COCO_train2014_{i:012d}.jpg", format="PNG")
    sc = _sugarcrepe(tmp_path / "swap_att.json", ["000000000139.jpg", "000000000285.jpg"])
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"benchmarks:\n  sugarcrepe: {{format: sugarcrepe, files: [{sc}], image_root: x}}\n")

    found = find_overlap(ShardIndex.from_paths([str(out)], "train"), [str(suite)])
    assert (found.rows, found.images, found.examples) == (1, {"coco:139"}, ["train2014/COCO_train2014_000000000139.jpg"])
    assert find_overlap(ShardIndex.from_paths([str(out)], "train"),
                        [str(_sugarcrepe(tmp_path / "other.json", ["000000000285.jpg"]))]).rows == 0
    with caplog.at_level(logging.WARNING, logger="trainer.overlap"):
        check_eval_overlap(ShardIndex.from_paths([str(out)], "train"), [str(sc)], False, "the dataset")
    assert [r.getMessage() for r in caplog.records] == [
        f"the dataset: 1 training rows (1 images) show images of the evaluation sets {[str(sc)]}, e.g. "
        "train2014/COCO_train2014_000000000139.jpg; regenerate the dataset with hardneg generate --exclude-images "
        "<those files> (source.exclude_images) to leave them out"]
    caplog.clear()

    argv = ["-q", "train", "--data", str(out), "--image-root", str(tmp_path / "coco"), "--model", "hardneg-tiny",
            "--pretrained", "none", "--precision", "fp32", "--batch-size", "2", "--max-steps", "1", "--workers", "0",
            "--no-progress", "-o", str(tmp_path / "run"), "--eval-sets", str(sc), "--strict-eval-overlap"]
    with caplog.at_level(logging.ERROR, logger="hardneg"):
        assert main(argv) == 1
    assert "1 training rows (1 images) show images of the evaluation sets" in caplog.text
    assert "data.strict_eval_overlap is set, so training does not start" in caplog.text
    assert not (tmp_path / "run" / "final").exists()
