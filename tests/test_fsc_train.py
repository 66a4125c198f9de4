"""FSC-CLIP and EMA self-distillation in the training loop: dense forward, teacher, resume, CLI."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch
from support.shards import global_batch, shapes_dataset, tiny_run_cfg

from pipeline.core.errors import ConfigError
from trainer import checkpoint as ckpt
from trainer.config import OBJECTIVES, LossConfig, ModelConfig
from trainer.data import ImageSpec, normalize_images
from trainer.loop import PAD_TOKEN, ema_update, encode_batch, encode_batch_dense, global_losses, make_teacher, train
from trainer.losses import local_scores
from trainer.models import DenseForward, build_model

pytestmark = pytest.mark.usefixtures("one_thread")

FSC = {k.split(".", 1)[1]: v for k, v in OBJECTIVES["fsc-clip"].items()}


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return shapes_dataset(tmp_path_factory.mktemp("ds"), 48, shards=2, row_group_size=12)


def test_dense_forward_gives_the_models_features_and_the_local_scores():
    torch.manual_seed(0)
    built = build_model(ModelConfig(name="hardneg-tiny-ctx20", pretrained=None))
    spec = ImageSpec.from_preprocess(built.preprocess)
    batch = global_batch(built.tokenizer)
    dense = DenseForward.wrap(built.model, "hardneg-tiny-ctx20")
    assert list(dense.parameters()) == list(built.model.parameters())  # no parameters of its own
    plain = encode_batch(built.model, batch, spec, torch.device("cpu"), True)
    got = encode_batch_dense(dense, batch, spec, torch.device("cpu"))
    for a, b in zip(plain, got[:5]):
        assert a is None and b is None or torch.equal(a, b)
    # the local scores are those of local_scores on the dense outputs, caption by caption
    mask = batch["neg_mask"]
    images = normalize_images(batch["images"], spec)
    neg_tokens = batch["neg_text"][mask]
    with torch.no_grad():
        _, _, scale, patches, words = dense(images, batch["text"])
        _, _, _, _, neg_words = dense(images, neg_tokens)  # the text tower reads no image
    pos = local_scores(patches, words, batch["text"] != PAD_TOKEN, torch.arange(mask.shape[0]), scale)
    assert torch.allclose(got[5][:, 0], pos, atol=1e-5)
    owner = mask.nonzero()[:, 0]
    neg = local_scores(patches, neg_words, neg_tokens != PAD_TOKEN, owner, scale)
    assert torch.allclose(got[5][:, 1:][mask], neg, atol=1e-5)


RESNET = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_dense_forward_on_a_resnet_pools_as_the_model_and_gives_a_token_per_location(tmp_path):
    path = tmp_path / "hardneg-test-rn.json"
    path.write_text(json.dumps(RESNET))
    torch.manual_seed(0)
    built = build_model(ModelConfig(name="hardneg-test-rn", model_config=str(path), pretrained=None))
    built.model.eval()
    dense = DenseForward.wrap(built.model, "hardneg-test-rn")
    images = torch.randn(3, 3, 64, 64)
    text = built.tokenizer(["a red circle", "a blue square", "a star"])
    with torch.no_grad():
        image, text_f, _, patches, words = dense(images, text)
        want_image, want_text, _ = built.model(images, text)[:3]
    assert torch.allclose(image, want_image, atol=1e-6) and torch.equal(text_f, want_text)
    # 64 px through a ResNet's stride 32: a 2 x 2 map, one token per location, in the joint space
    assert tuple(patches.shape) == (3, 4, 32) and tuple(words.shape) == (3, 20, 32)


def test_the_local_loss_refuses_an_attention_pooled_vit_naming_the_model(ds, tmp_path):
    path = tmp_path / "hardneg-test-ap.json"
    path.write_text(json.dumps({**RESNET, "vision_cfg": {"image_size": 64, "layers": 1, "width": 32,
                                                         "head_width": 16, "patch_size": 16,
                                                         "attentional_pool": True}}))
    cfg = tiny_run_cfg(ds, tmp_path / "run", workers=0, max_steps=2, loss=FSC,
                       model={"name": "hardneg-test-ap", "model_config": str(path), "pretrained": None})
    with pytest.raises(ConfigError, match=r"model 'hardneg-test-ap' pools its ViT with .*attention pooling; the local "
                                          r"hard-negative loss \(loss.local_hn\) supports class-token or average pooling"):
        train(cfg)
    # the global hard-negative loss alone works with any tower
    res = train({**cfg, "loss": {**FSC, "local_hn": False}})
    assert res["steps"] == 2


def test_fsc_clip_trains_a_resnet(ds, tmp_path):
    path = tmp_path / "hardneg-test-rn.json"
    path.write_text(json.dumps(RESNET))
    cfg = tiny_run_cfg(ds, tmp_path / "run", workers=0, max_steps=2, loss=FSC,
                       model={"name": "hardneg-test-rn", "model_config": str(path), "pretrained": None})
    res = train(cfg)
    assert res["steps"] == 2
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [float(r["local_hn"]) > 0 for r in rows] == [True, True]


def test_ema_update_hand_values():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    teacher = make_teacher(model)
    assert not teacher.weight.requires_grad and not teacher.training
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema_update(teacher, model, 0.9)
    assert teacher.weight.item() == pytest.approx(0.1)
    ema_update(teacher, model, 0.9)
    assert teacher.weight.item() == pytest.approx(0.19)  # 0.9 * 0.1 + 0.1 * 1


def test_global_losses_gathers_local_scores_and_teacher_features():
    torch.manual_seed(1)
    built = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
    spec = ImageSpec.from_preprocess(built.preprocess)
    batch = global_batch(built.tokenizer)
    dense = DenseForward.wrap(built.model, "hardneg-tiny")
    img, txt, negs, mask, scale, local = encode_batch_dense(dense, batch, spec, torch.device("cpu"))
    cfg = LossConfig(**FSC, distill_ema=True)
    teacher = (img.detach(), txt.detach())  # a teacher equal to the model: no distillation loss
    out = global_losses(img, txt, negs, mask, scale, cfg, local, teacher)
    assert out["distill"].item() == 0.0
    assert set(out) >= {"contrastive", "global_hn", "local_hn", "total"} and "imc" not in out
    out["total"].backward()
    assert all(p.grad is not None for p in built.model.parameters() if p.requires_grad)


def _run(ds: Path, out: Path, **over) -> dict:
    loss = {**FSC, "distill_ema": True, "ema_decay": 0.5}
    return tiny_run_cfg(ds, out, workers=0, max_steps=8, loss=loss, checkpoint_every=3, **over)


class Stop(Exception):
    pass


def test_an_interrupted_fsc_clip_run_with_distillation_resumes_to_the_same_weights_and_teacher(ds, tmp_path):
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    ref = train(_run(ds, ref_out))
    assert ref["resumed_from_step"] is None

    def stop(rec):
        if rec["step"] == 5:
            raise Stop

    with pytest.raises(Stop):
        train(_run(ds, out), callbacks=[stop])
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000003.pt"
    res = train(_run(ds, out))
    assert res["resumed_from_step"] == 3 and res["steps"] == 8
    a = torch.load(ref_out / "final" / "open_clip_pytorch_model.bin", weights_only=True)
    b = torch.load(out / "final" / "open_clip_pytorch_model.bin", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref_last, got_last = (ckpt.load(d / "checkpoints" / "step_00000008.pt") for d in (ref_out, out))
    assert ref_last["ema"].keys() == got_last["ema"].keys()
    assert all(torch.equal(ref_last["ema"][k], got_last["ema"][k]) for k in ref_last["ema"])
    # the teacher is its own state: it lags the model
    assert not torch.equal(got_last["ema"]["text_projection"], got_last["model"]["text_projection"])
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert all(r["imc"] == "" and r["cmr"] == "" for r in rows)
    assert all(float(r["global_hn"]) > 0 and float(r["local_hn"]) > 0 for r in rows)
    assert float(rows[0]["distill"]) == 0.0 and float(rows[-1]["distill"]) > 0  # the teacher starts as the model


def test_cli_objective_fsc_clip_sets_the_switches_and_keeps_distillation(ds):
    from trainer.cli import register, train_config_from_args

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--data", str(ds), "--objective", "fsc-clip", "--set", "loss.distill_ema=true",
                              "--set", "loss.w_local_hn=0.5"])
    cfg = train_config_from_args(args)
    loss = cfg.loss
    assert (loss.hard_negatives, loss.imc, loss.cmr, loss.global_hn, loss.local_hn) == (False, False, False, True, True)
    assert (loss.w_global_hn, loss.w_local_hn, loss.focal_gamma, loss.hn_label_smoothing) == (0.5, 0.5, 2.0, 0.02)
    assert loss.distill_ema
    args = parser.parse_args(["train", "--data", str(ds), "--objective", "ce-clip"])
    loss = train_config_from_args(args).loss
    assert (loss.imc, loss.cmr, loss.global_hn, loss.local_hn, loss.distill_ema) == (True, True, False, False, False)
    args = parser.parse_args(["train-curves", "--objective", "fsc-clip"])
    assert args.objective == "fsc-clip"


def test_a_checkpoint_written_before_the_fsc_keys_existed_resumes_with_their_defaults():
    import copy

    from pipeline.core.config import to_dict
    from trainer.config import train_config
    from trainer.loop import _changed_settings

    new = to_dict(train_config({"data": {"paths": ["x"]}}))
    old = copy.deepcopy(new)
    for key in ("global_hn", "local_hn", "w_global_hn", "distill_ema", "ema_decay"):
        del old["loss"][key]
    assert _changed_settings(old, new) == []
    fsc = to_dict(train_config({"data": {"paths": ["x"]}, "loss": {"global_hn": True}}))
    assert _changed_settings(old, fsc) == ["loss.global_hn"]
