"""Stage 2 on data whose images are not at hand (issue 27): a published dataset without its images,
an image root that resolves nothing, a few missing images in a long run, and the dataset card's
commands.

The main fixture is the flow of a new user: a tiny embedded world (``hardneg synth``), its negatives
(``hardneg generate``, spaCy), and ``hardneg publish --dry-run`` with default settings, which keeps
``image.path`` and drops the image bytes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.shards import FAMILIES, shape_image, shapes_rows, tiny_run_cfg, write_shard

import trainer.loop as loop
from pipeline.cli import main
from pipeline.core.errors import ConfigError
from trainer.config import train_config
from trainer.data import ImageSpec, ImagesUnavailable, NegativeStream, ShardIndex

ROOT = Path(__file__).resolve().parents[1]
REPO = "someone/world-hardneg"
WORLD = ["n_train=24", "n_test=8", "third_object_prob=0", "shapes=[circle, square, triangle]",
         "colours=[red, green, blue]", "recognition_per_class=0"]
TINY = ["--model", "hardneg-tiny-ctx20", "--pretrained", "none"]
QUICK_TRAIN = [*TINY, "--max-steps", "2", "--batch-size", "8", "--workers", "0", "--no-progress"]
QUICK_EVAL = ["--model", "hardneg-tiny-ctx20", "--workers", "0", "--no-progress"]
WEIGHTS = "final/open_clip_pytorch_model.bin"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, Path]:
    """world -> negatives -> ``publish --dry-run`` (default: paths only) and ``--with-images``."""
    from pipeline.config import GenerateConfig, SourceConfig
    from pipeline.generate import generate
    from pipeline.nlp import resolve_model
    from pipeline.publish.publish import publish
    from pipeline.synth.world import generate_world, load_config

    root = tmp_path_factory.mktemp("flow")
    cfg = GenerateConfig(name="world", out=str(root / "negatives"), manifest_dir=str(root / "manifests"),
                         families=["relation_swap", "attribute_swap", "object_swap"], workers=1)
    try:
        resolve_model(cfg.parse)
    except Exception:
        pytest.skip("no spaCy English model installed")
    generate_world(load_config(overrides=WORLD), root / "world")
    cfg.source = SourceConfig(path=str(root / "world"), format="parquet", id_column="id")
    generate(cfg)
    publish(root / "negatives", REPO, dry_run_dir=root / "world-hardneg")
    publish(root / "negatives", REPO, dry_run_dir=root / "with-images", with_images=True)
    return {"root": root, "paths_only": root / "world-hardneg", "with_images": root / "with-images"}


@pytest.fixture(scope="module")
def images(published) -> Path:
    """The world's images as files (``<root>/train/000000.png``): what ``--image-root`` points at."""
    from pipeline.synth.world import generate_world, load_config

    out = published["root"] / "images"
    generate_world(load_config(overrides=[*WORLD, "embed_images=false"]), out)
    return out


def _cli(caplog, argv: list[str]) -> tuple[int, list[str]]:
    """Exit code and the error lines the CLI logged."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rc = main(["-q", *argv])
    return rc, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _not_found(data: str, split: str, rows: int, first: str, flag: str, cwd: Path, root: Path | None = None) -> str:
    where = (f"was looked up as {root / first} under the image root {root}" if root else
             f"was looked up under the working directory {cwd}, as no image root was given")
    return (f"{data} (split {split}): none of the images of its first {rows} rows can be opened ({rows} missing); "
            f"e.g. {first} {where}; this dataset stores image paths only; pass {flag} pointing at the folder that "
            f"holds {first} (a published dataset's card says where its images come from)")


# ------------------------------------------------------------------------ a published dataset


def test_train_without_the_images_fails_before_writing_anything(published, caplog, monkeypatch):
    monkeypatch.chdir(published["root"])
    rc, errors = _cli(caplog, ["train", "--data", "world-hardneg", *QUICK_TRAIN, "-o", "run"])
    assert rc == 1
    assert errors == [_not_found("world-hardneg", "train", 48, "train/000000.png", "--image-root (data.image_root)",
                                 published["root"])]
    assert not (published["root"] / "run").exists()  # no weights, no checkpoint, no log
    # a wrong root: the message names it and the path looked up under it
    rc, errors = _cli(caplog, ["train", "--data", "world-hardneg", "--image-root", "nowhere", *QUICK_TRAIN,
                               "-o", "run"])
    assert rc == 1 and errors == [_not_found("world-hardneg", "train", 48, "train/000000.png",
                                             "--image-root (data.image_root)", published["root"], Path("nowhere"))]
    assert not (published["root"] / "run").exists()


def test_train_with_an_image_root_or_embedded_images(published, images, tmp_path, caplog):
    for data, root in ((published["paths_only"], ["--image-root", str(images)]), (published["with_images"], [])):
        out = tmp_path / data.name
        rc, errors = _cli(caplog, ["train", "--data", str(data), *root, *QUICK_TRAIN, "-o", str(out)])
        assert (rc, errors) == (0, [])
        res = json.loads((out / "train_results.json").read_text())
        assert res["steps"] == 2 and res["skipped_images"] == {"missing": 0, "corrupt": 0, "no_image": 0}
        assert (out / WEIGHTS).is_file()


def test_eval_without_the_images_fails_and_with_them_scores(published, images, caplog, monkeypatch):
    monkeypatch.chdir(published["root"])
    rc, errors = _cli(caplog, ["eval", "--shards", "world-hardneg", "--split", "test", *QUICK_EVAL, "--pretrained",
                               "none", "-o", "m.json"])
    assert rc == 1
    assert errors == [_not_found("world-hardneg", "test", 16, "test/000000.png", "--image-root (image_root)",
                                 published["root"])]
    assert not (published["root"] / "m.json").exists()
    for data, root in (("world-hardneg", ["--image-root", str(images)]), ("with-images", [])):
        rc, errors = _cli(caplog, ["eval", "--shards", data, "--split", "test", *root, *QUICK_EVAL, "--pretrained",
                                   "none", "-o", "m.json"])
        assert (rc, errors) == (0, [])
        shards = json.loads((published["root"] / "m.json").read_text())["shards"]
        assert shards["pairs"] > 0 and shards["skipped_pairs"] == 0
        assert (shards["skipped_fraction"], shards["over_missing_limit"]) == (0.0, False)


def _card_commands(card: str) -> list[str]:
    """The ``hardneg`` command lines of the card's training section, continuation lines joined."""
    section = card[card.index("## Training and evaluating with hardneg"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the training section has no bash block"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    assert lines[0] == f"hf download {REPO} --repo-type dataset --local-dir world-hardneg"
    return [line for line in lines if line.startswith("hardneg ")]


def test_the_cards_commands_train_and_evaluate_on_the_dry_run_folder(published, tmp_path, caplog, monkeypatch):
    card = (published["paths_only"] / "README.md").read_text()
    assert "Images are **not** included: they are the rendered scenes of a hardneg synth world (seed 0" in card
    commands = _card_commands(card)
    assert [c.split()[:2] for c in commands] == [["hardneg", "synth"], ["hardneg", "train"], ["hardneg", "eval"]]
    assert commands[1:] == [
        "hardneg train --data world-hardneg --image-root images -o runs/world-hardneg",
        "hardneg eval --shards world-hardneg --split test --image-root images "
        f"--pretrained runs/world-hardneg/{WEIGHTS} -o runs/world-hardneg/eval.json",
    ]
    # the card's folder layout: the repository (here the dry run) beside the images the card's synth renders
    (tmp_path / "world-hardneg").symlink_to(published["paths_only"])
    monkeypatch.chdir(tmp_path)
    synth, train, evaluate = (shlex.split(c)[1:] for c in commands)
    assert _cli(caplog, synth) == (0, [])
    # the test's model and length are added; the data, the split, the root and the paths are the card's
    assert _cli(caplog, [*train, *QUICK_TRAIN]) == (0, [])
    assert _cli(caplog, [*evaluate, *QUICK_EVAL]) == (0, [])
    metrics = json.loads((tmp_path / "runs/world-hardneg/eval.json").read_text())
    assert metrics["model"]["pretrained"] == f"runs/world-hardneg/{WEIGHTS}"
    assert metrics["shards"]["pairs"] > 0 and metrics["skipped_images"] == {}

    embedded = (published["with_images"] / "README.md").read_text()
    assert "Images are embedded in the `image` column" in embedded
    assert _card_commands(embedded) == [
        "hardneg train --data world-hardneg -o runs/world-hardneg",
        f"hardneg eval --shards world-hardneg --split test --pretrained runs/world-hardneg/{WEIGHTS} "
        "-o runs/world-hardneg/eval.json",
    ]


# ------------------------------------------------------------------------ missing images in a run


def _files_dataset(root: Path, n: int, missing: set[int] = frozenset()) -> Path:
    """``n`` shape rows with their images as files under ``root / "images"``, but for the rows in ``missing``."""
    (root / "images").mkdir(parents=True)
    rows = shapes_rows(n, image_dir=root / "images")
    for i in missing:
        (root / "images" / rows[i]["image"]["path"]).unlink()
    write_shard(root / "ds" / "train" / "shard-00000.parquet", rows, row_group_size=64)
    return root


def test_one_missing_image_in_a_thousand_is_counted_and_the_run_goes_on(tmp_path):
    root = _files_dataset(tmp_path, 1000, missing={700})
    cfg = tiny_run_cfg(root / "ds", tmp_path / "run", workers=0, max_steps=None,
                       data={"image_root": str(root / "images"), "batch_size": 50, "augment": False},
                       optim={"epochs": 1}, checkpoint_every=0)
    res = loop.train(cfg)
    assert res["steps"] == 20 and res["samples_seen"] == 999
    assert res["skipped_images"] == {"missing": 1, "corrupt": 0, "no_image": 0}
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped_missing"] == 1 and sum(r["global_batch"] for r in rows) == 999
    assert (tmp_path / "run" / WEIGHTS).is_file()


def _batch_ids(root: Path, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[str]]:
    """The sample ids of each batch of epoch 0 of ``_files_dataset(root)``, in the trainer's order (seed 0)."""
    stream = NegativeStream(ShardIndex.from_paths([str(root / "ds")]), tokenizer=lambda t: torch.zeros((len(t), 4)),
                            spec=ImageSpec(8, 8, (0.5,) * 3, (0.5,) * 3), batch_size=batch_size, families=[],
                            image_root=str(root / "images"), rank=rank, world_size=world_size, shuffle_buffer=24)
    batches = [b["ids"] for b in stream]
    assert all(len(ids) == batch_size for ids in batches)
    return batches


def test_more_missing_images_than_the_share_allows_stop_the_run_naming_the_last_checkpoint(tmp_path):
    root = _files_dataset(tmp_path, 48)
    order = _batch_ids(root, 8)
    gone = [int(sid[1:]) for sid in order[3][:2] + order[4][:1]]  # 2 images in batch 4, one in batch 5
    for i in gone:
        (root / "images" / f"img_{i:05d}.png").unlink()
    cfg = tiny_run_cfg(root / "ds", tmp_path / "run", workers=0, max_steps=12,
                       data={"image_root": str(root / "images"), "max_missing_fraction": 0.05}, checkpoint_every=2)
    with pytest.raises(ImagesUnavailable) as e:
        loop.train(cfg)
    first = f"img_{gone[2]:05d}.png"
    assert str(e.value) == (
        f"{root / 'ds'} (split train): 3 images of epoch 0 (by its batch 5, step 4) were missing or unreadable, "
        "more than data.max_missing_fraction = 0.05 of the dataset's 48 rows allows (2), so the run stopped; "
        f"the last good checkpoint is {tmp_path / 'run' / 'checkpoints' / 'step_00000004.pt'}; over the run: "
        f"3 missing; e.g. {first} was looked up as {root / 'images' / first} under the image root {root / 'images'}; "
        "put the missing images where --image-root (data.image_root) points (or point it at a folder that holds "
        "them all) and replace unreadable ones, or raise data.max_missing_fraction to train without them; a rerun "
        "resumes from the last checkpoint"
    )
    assert not (tmp_path / "run" / "final").exists()
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_00000004.pt"
    # with the images back, a rerun resumes there and finishes
    for i in gone:
        (root / "images" / f"img_{i:05d}.png").write_bytes(shape_image("red", "circle"))
    res = loop.train(cfg)
    assert res["steps"] == 12 and res["skipped_images"]["missing"] == 2  # counted before the stop, kept
    assert res["resumed_from_step"] == 4


def test_a_run_that_trains_no_step_fails_without_weights(tmp_path):
    # every image opens (its header is fine) and none decodes: the check of the first rows passes, no
    # batch holds a usable image, and with the share limit off the run reaches its end with 0 steps
    rows = shapes_rows(16)
    for r in rows:
        r["image"] = {"bytes": r["image"]["bytes"][:60], "path": None}
    write_shard(tmp_path / "ds" / "train" / "a.parquet", rows)
    cfg = tiny_run_cfg(tmp_path / "ds", tmp_path / "run", workers=0, max_steps=4,
                       data={"max_missing_fraction": 1.0}, optim={"epochs": 1})
    with pytest.raises(ImagesUnavailable, match=r"^.*ds \(split train\): the run trained 0 steps, no batch held a "
                                                r"usable image \(16 corrupt\); no weights were written; e\.g\. the "
                                                r"image of row s000\d\d \(its embedded bytes\) cannot be read: "):
        loop.train(cfg)
    assert not (tmp_path / "run" / "final").exists()


def test_the_share_is_a_checked_setting():
    with pytest.raises(ConfigError, match=r"data\.max_missing_fraction must lie in \[0, 1\], got 1\.5"):
        train_config({"data": {"paths": ["x"], "max_missing_fraction": 1.5}})
    from trainer.config import eval_config

    with pytest.raises(ConfigError, match=r"max_missing_fraction must lie in \[0, 1\], got -0\.1"):
        eval_config({"shards": ["x"], "max_missing_fraction": -0.1})


# ------------------------------------------------------------------------ two gloo ranks


RANKS_SCRIPT = r"""
import json, os, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from trainer.loop import train
from pipeline.core.errors import HardnegError

rank = int(os.environ["RANK"])
outcome = {{}}
for name, cfg in json.loads({cfgs!r}).items():
    cfg["data"]["image_root"] = cfg["data"]["image_root"][rank]
    try:
        train(cfg)
        outcome[name] = "trained"
    except HardnegError as e:
        outcome[name] = f"{{type(e).__name__}}: {{e}}"
json.dump(outcome, open({out!r} + f"/rank{{rank}}.json", "w"))
"""


def test_two_gloo_ranks_stop_together(tmp_path):
    root = _files_dataset(tmp_path, 48)
    images = str(root / "images")
    # rank 1 misses one image in its second batch and one in its third; budget: 1 (0.03 of 48 rows)
    rank1 = _batch_ids(root, 4, rank=1, world_size=2)
    gone = [int(rank1[1][0][1:]), int(rank1[2][0][1:])]
    base = {
        "model": {"name": "hardneg-tiny", "pretrained": None},
        "data": {"paths": [str(root / "ds")], "families": FAMILIES, "batch_size": 4, "workers": 0,
                 "shuffle_buffer": 24, "max_missing_fraction": 0.03},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "max_steps": 6},
        "checkpoint_every": 1, "tensorboard": False, "progress": False,
    }
    cfgs = {
        # only rank 1 is given a root that resolves nothing: both stop before a model is built
        "wrong_root": {**base, "data": {**base["data"], "image_root": [images, str(tmp_path / "nowhere")]},
                       "output_dir": str(tmp_path / "a")},
        "share": {**base, "data": {**base["data"], "image_root": [images, images]}, "output_dir": str(tmp_path / "b")},
    }
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT.format(tests=str(ROOT / "tests"), cfgs=json.dumps(cfgs), out=str(tmp_path)))
    for i in gone:
        (root / "images" / f"img_{i:05d}.png").unlink()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv_backend", "c10d",
         "--rdzv_endpoint", "localhost:0", str(script)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r1["wrong_root"] == "ImagesUnavailable: " + _not_found(
        str(root / "ds"), "train", 48, "img_00000.png", "--image-root (data.image_root)", ROOT,
        tmp_path / "nowhere")
    assert r0["wrong_root"] == (
        f"ImagesUnavailable: {root / 'ds'} (split train): another rank cannot open the images of the first rows (see "
        "its log for the path it looked up); pass --image-root (data.image_root) pointing at the folder that holds "
        "the dataset's image paths")
    assert not (tmp_path / "a").exists()  # nothing written
    # the share: the counts are summed over the ranks, so both stop at rank 1's second miss (batch 3); only
    # rank 1 met the image, so only its message shows it
    missed = f"img_{gone[1]:05d}.png"
    examples = ["no example on this process (see the other ranks' logs)",
                f"e.g. {missed} was looked up as {images}/{missed} under the image root {images}"]
    for rank, res in enumerate((r0, r1)):
        assert res["share"] == (
            f"ImagesUnavailable: {root / 'ds'} (split train): 2 images of epoch 0 (by its batch 3, step 2) were "
            "missing or unreadable, more than data.max_missing_fraction = 0.03 of the dataset's 48 rows allows (1), "
            f"so the run stopped; the last good checkpoint is {tmp_path / 'b' / 'checkpoints' / 'step_00000002.pt'}; "
            f"over the run: 2 missing; {examples[rank]}; put the missing images where --image-root "
            "(data.image_root) points (or point it at a folder that holds them all) and replace unreadable ones, or "
            "raise data.max_missing_fraction to train without them; a rerun resumes from the last checkpoint")
    assert not (tmp_path / "b" / "final").exists()
