"""Recognition beside compositionality: zero-shot classification in ``hardneg eval`` and WiSE-FT.

The zero-shot answer is known by construction: a stand-in model embeds an image as its mean colour
and a prompt as the colour word it names, so the classifier must get every solid-colour image right
(and every one wrong when the class names are permuted). The real tiny open_clip model then runs the
same path end to end through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.core.errors import ConfigError, SourceError
from trainer.cli import eval_config_from_args
from trainer.config import ModelConfig, ZeroShotSpec
from trainer.data import ImageSpec
from trainer.evaluate import Encoder, zeroshot_scores
from trainer.wiseft import WiseFTConfig, alpha_name, interpolate, wise_ft
from trainer.zeroshot import load_set, load_templates, topk_accuracy

RGB = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 220)}


def _folder(root: Path, per_class: int = 2) -> Path:
    for name, rgb in RGB.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (20, 16), rgb).save(root / name / f"{i}.png")
    return root


class ColourModel(torch.nn.Module):
    """Image -> its mean normalised colour; text -> the one-hot of the colour word it contains."""

    def encode_image(self, x, normalize=False):
        f = x.float().mean(dim=(2, 3))
        return torch.nn.functional.normalize(f, dim=-1) if normalize else f

    def encode_text(self, tokens, normalize=False):
        f = torch.nn.functional.one_hot(tokens, 3).float()
        return torch.nn.functional.normalize(f, dim=-1) if normalize else f


def colour_tokenizer(texts):
    names = list(RGB)
    return torch.tensor([next(i for i, n in enumerate(names) if n in t) for t in texts])


def _encoder(model=None) -> Encoder:
    spec = ImageSpec(8, 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return Encoder(model or ColourModel(), colour_tokenizer, spec, torch.device("cpu"), None, 4, 0, False)


def test_topk_accuracy_counts_the_label_among_the_k_best():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 0, 1])
    assert topk_accuracy(logits, labels, (1, 2, 5)) == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3), "top5": 1.0}


def test_zero_shot_on_a_folder_whose_answer_is_known(tmp_path):
    root = _folder(tmp_path / "colours")
    (tmp_path / "0.png").write_bytes(b"")  # not in a class folder: ignored
    Image.new("RGB", (4, 4)).save(root / "red" / "notes.txt.png")
    (root / "red" / "notes.txt.png").write_bytes(b"not a png")  # a broken image: counted, not scored
    got = zeroshot_scores(_encoder(), ZeroShotSpec(name="colours", path=str(root)))
    assert got == {"top1": 1.0, "top5": 1.0, "images": 6, "classes": 3, "templates": 1, "skipped_images": 1}
    names = tmp_path / "names.txt"
    names.write_text("green\nred\nblue\n")  # folder order is blue, green, red: every name is wrong
    got = zeroshot_scores(_encoder(), ZeroShotSpec(name="colours", path=str(root), classnames=str(names)))
    assert got["top1"] == 0.0 and got["images"] == 6


def test_zero_shot_from_a_csv_with_integer_labels_and_templates(tmp_path):
    root = _folder(tmp_path / "img", per_class=1)
    csv = tmp_path / "set.csv"
    csv.write_text("image,label\nimg/red/0.png,0\nimg/green/0.png,1\nimg/blue/0.png,2\nimg/missing.png,0\n")
    names = tmp_path / "names.txt"
    names.write_text("red\ngreen\nblue\n")
    tpl = tmp_path / "templates.txt"
    tpl.write_text("# prompts\na {} thing.\nsomething {}.\n")
    assert root.is_dir()
    got = zeroshot_scores(_encoder(), ZeroShotSpec(name="s", path=str(csv), classnames=str(names), templates=str(tpl)))
    assert got == {"top1": 1.0, "top5": 1.0, "images": 3, "classes": 3, "templates": 2, "skipped_images": 1}
    zs = load_set("s", str(csv))  # string labels: classes are the sorted labels
    assert zs.classnames == ["0", "1", "2"] and zs.labels == [0, 1, 2, 0]


def test_zero_shot_input_errors_name_the_file(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        load_set("x", str(tmp_path / "nope"))
    bad = tmp_path / "bad.csv"
    bad.write_text("path,cls\na.png,1\n")
    with pytest.raises(SourceError, match=r"bad\.csv needs a header with 'image' and 'label'"):
        load_set("x", str(bad))
    tpl = tmp_path / "t.txt"
    tpl.write_text("a photo of a cat\n")
    with pytest.raises(ConfigError, match=r"exactly one \{\}"):
        load_templates(str(tpl))
    assert len(load_templates("openai")) == 80 and load_templates(None) == ("a photo of a {}.",)


def test_eval_cli_maps_zeroshot_flags():
    from pipeline.cli import build_parser

    args = build_parser().parse_args([
        "eval", "--model", "hardneg-tiny", "--pretrained", "none", "--zeroshot", "in1k=/data/val",
        "--zeroshot-classnames", "in1k=imagenet", "--zeroshot-templates", "in1k=openai", "--zeroshot", "toy=t.csv",
    ])
    cfg = eval_config_from_args(args)
    assert [(z.name, z.path, z.classnames, z.templates) for z in cfg.zeroshot] == [
        ("in1k", "/data/val", "imagenet", "openai"), ("toy", "t.csv", None, None)]
    args = build_parser().parse_args(["eval", "--zeroshot", "a=x", "--zeroshot-templates", "b=openai"])
    with pytest.raises(ConfigError, match=r"--zeroshot-templates names \['b'\]"):
        eval_config_from_args(args)


def test_eval_runs_zero_shot_with_a_real_open_clip_model(tmp_path, one_thread):
    from pipeline.cli import main

    root = _folder(tmp_path / "colours")
    out = tmp_path / "m.json"
    assert main(["eval", "--model", "hardneg-tiny", "--pretrained", "none", "--device", "cpu", "--workers", "0",
                 "--zeroshot", f"colours={root}", "--no-progress", "-o", str(out)]) == 0
    z = json.loads(out.read_text())["zeroshot"]["colours"]
    assert z["images"] == 6 and z["classes"] == 3 and z["skipped_images"] == 0
    assert 0.0 <= z["top1"] <= 1.0 and z["top5"] == 1.0  # three classes: the label is always in the top 5


# --------------------------------------------------------------------------- WiSE-FT


def test_interpolate_returns_the_endpoints_exactly_and_refuses_mismatches():
    base = {"w": torch.tensor([0.1, 0.2, 0.3]), "ids": torch.arange(3)}
    tuned = {"w": torch.tensor([1.1, -0.7, 0.3000001]), "ids": torch.arange(3)}
    assert torch.equal(interpolate(base, tuned, 0.0)["w"], base["w"])
    assert torch.equal(interpolate(base, tuned, 1.0)["w"], tuned["w"])
    assert torch.allclose(interpolate(base, tuned, 0.25)["w"], torch.tensor([0.35, -0.025, 0.3]))
    assert torch.equal(interpolate(base, tuned, 0.5)["ids"], base["ids"])
    from pipeline.core.errors import ModelError

    with pytest.raises(ModelError, match="non-float tensor 'ids' differs"):
        interpolate(base, {**tuned, "ids": torch.tensor([0, 2, 1])}, 0.5)
    with pytest.raises(ModelError, match="different tensors"):
        interpolate(base, {"w": tuned["w"]}, 0.5)


def test_interpolate_batch_norm_statistics_and_counter():
    base = {"bn.running_mean": torch.tensor([0.0, 2.0]), "bn.num_batches_tracked": torch.tensor(600)}
    tuned = {"bn.running_mean": torch.tensor([1.0, 0.0]), "bn.num_batches_tracked": torch.tensor(1200)}
    half = interpolate(base, tuned, 0.5)
    assert torch.equal(half["bn.running_mean"], torch.tensor([0.5, 1.0]))
    assert [interpolate(base, tuned, a)["bn.num_batches_tracked"].item() for a in (0.0, 0.5, 1.0)] == [600, 1200, 1200]


def test_wise_ft_sweep_loads_with_plain_open_clip(tmp_path, one_thread):
    import open_clip

    from trainer.models import build_model, save_weights

    built = build_model(ModelConfig(name="hardneg-tiny", pretrained=None))
    base_file = save_weights(built.model, tmp_path / "base", built.model_cfg, built.preprocess)
    with torch.no_grad():
        for p in built.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tuned_file = save_weights(built.model, tmp_path / "tuned", built.model_cfg, built.preprocess)
    cfg = WiseFTConfig(model=ModelConfig(name="hardneg-tiny", pretrained=str(base_file)), finetuned=str(tuned_file),
                       alphas=[0.0, 0.5, 1.0], out=str(tmp_path / "sweep"))
    record = wise_ft(cfg)
    assert [m["alpha"] for m in record["models"]] == [0.0, 0.5, 1.0]
    base, tuned = (torch.load(f, weights_only=True) for f in (base_file, tuned_file))
    for alpha, want in ((0.0, base), (1.0, tuned)):
        d = tmp_path / "sweep" / alpha_name(alpha)
        model = open_clip.create_model(f"local-dir:{d}")
        assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    mid = torch.load(tmp_path / "sweep" / "alpha_0.50" / "open_clip_pytorch_model.bin", weights_only=True)
    k = "text_projection"
    assert torch.allclose(mid[k], (base[k] + tuned[k]) / 2, atol=1e-6)
    assert json.loads((tmp_path / "sweep" / "wiseft.json").read_text())["finetuned"] == str(tuned_file)
    with pytest.raises(ConfigError, match=r"alphas must lie in \[0, 1\]"):
        wise_ft(WiseFTConfig(model=cfg.model, finetuned=str(tuned_file), alphas=[1.5]))


@pytest.mark.parametrize("params", ["params.yaml", "params_coco.yaml"])
def test_the_recipes_configure_recognition_and_the_sweep(params):
    import yaml

    from pipeline.core.config import from_dict
    from trainer.config import EvalConfig

    p = yaml.safe_load((Path(__file__).resolve().parents[1] / params).read_text(encoding="utf-8"))
    ev = from_dict(EvalConfig, p["eval"])
    ev.validate()
    sweep = from_dict(WiseFTConfig, {**p["wiseft"], "finetuned": "x.bin"})
    sweep.validate()
    assert sweep.alphas[0] == 0.0 and sweep.alphas[-1] == 1.0
    names = [z.name for z in ev.zeroshot]
    if params == "params.yaml":  # the world's own recognition sets; the fine-tunes start from the pretrain
        assert names == ["colour", "shape"] and p["train"]["model"]["pretrained"] == sweep.model.pretrained
    else:
        assert names == ["imagenet"] and ev.zeroshot[0].classnames == "imagenet"
        assert sweep.model.pretrained == p["train"]["model"]["pretrained"] == "openai"
        # the FSC-CLIP recipe: the same model and data as CE-CLIP's, FSC-CLIP's switches and weights
        from trainer.config import OBJECTIVES, train_config

        fsc = train_config(p["train_fscclip"])
        assert fsc.model == train_config(p["train"]).model and fsc.data == train_config(p["train"]).data
        assert all(getattr(fsc.loss, k.split(".", 1)[1]) == v for k, v in OBJECTIVES["fsc-clip"].items())
        assert (fsc.loss.w_global_hn, fsc.loss.w_local_hn, fsc.optim.epochs) == (0.5, 0.2, 5)
