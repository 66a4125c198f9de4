"""``hardneg train`` and ``hardneg eval``: flags and ``--config/--set`` mapped onto the typed configs.

Precedence: dataclass defaults < ``--config FILE --section S`` < explicit flags < ``--set key=value``.
torch and open_clip are imported only when a command runs, so ``hardneg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from pipeline.config import apply_overrides, from_dict, load_yaml_section
from pipeline.generate_cli import add_config_args

from .config import EvalConfig, TrainConfig

log = logging.getLogger("hardneg")

#: ``--objective`` presets: each is a set of loss switches
OBJECTIVES: dict[str, dict[str, Any]] = {
    "clip": {"loss.hard_negatives": False, "loss.imc": False, "loss.cmr": False},
    "negclip": {"loss.hard_negatives": True, "loss.imc": False, "loss.cmr": False},
    "ce-clip": {"loss.hard_negatives": True, "loss.imc": True, "loss.cmr": True},
}


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="open_clip model name (model.name), e.g. ViT-B-32 or hardneg-tiny")
    g.add_argument("--pretrained", help="pretrained tag or weights file; 'none' for random init")
    g.add_argument("--model-config", help="custom open_clip model config JSON (named after its file stem)")
    g.add_argument("--precision", choices=["amp", "bf16", "fp16", "fp32"])
    g.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")


def _model_flags(args: argparse.Namespace) -> dict[str, Any]:
    pretrained = args.pretrained
    if pretrained is not None and pretrained.lower() in ("none", "null", ""):
        pretrained = ""
    return {
        "model.name": args.model, "model.pretrained": pretrained, "model.model_config": args.model_config,
        "model.precision": args.precision, "model.device": args.device,
    }


def _build(cls: type, args: argparse.Namespace, flags: dict[str, Any]) -> Any:
    base = load_yaml_section(args.config, args.section) if args.config else {}
    cfg = from_dict(cls, base)
    cfg = apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
    cfg = apply_overrides(cfg, args.overrides)
    cfg.validate()
    return cfg


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    flags: dict[str, Any] = {
        **_model_flags(args),
        "data.paths": args.data or None, "data.split": args.split, "data.image_root": args.image_root,
        "data.families": args.families, "data.batch_size": args.batch_size, "data.workers": args.workers,
        "optim.epochs": args.epochs, "optim.max_steps": args.max_steps, "optim.lr": args.lr,
        "output_dir": args.output_dir, "seed": args.seed, "checkpoint_every": args.checkpoint_every,
        "resume": args.resume,
    }
    if args.objective:
        flags.update(OBJECTIVES[args.objective])
    if args.no_progress:
        flags["progress"] = False
    return _build(TrainConfig, args, flags)


def eval_config_from_args(args: argparse.Namespace) -> EvalConfig:
    flags: dict[str, Any] = {
        **_model_flags(args),
        "shards": args.shards or None, "split": args.split, "image_root": args.image_root,
        "families": args.families, "sugarcrepe": args.sugarcrepe or None,
        "sugarcrepe_image_root": args.sugarcrepe_image_root, "aro_relation": args.aro_relation,
        "aro_attribution": args.aro_attribution, "aro_image_root": args.aro_image_root,
        "coco_karpathy": args.coco, "coco_image_root": args.coco_image_root, "limit": args.limit,
        "batch_size": args.batch_size, "workers": args.workers, "out": args.out,
    }
    if args.no_progress:
        flags["progress"] = False
    return _build(EvalConfig, args, flags)


def _train(args: argparse.Namespace) -> int:
    from .loop import train

    cfg = train_config_from_args(args)
    res = train(cfg)
    log.info("done: %d steps, final loss %s, weights %s", res["steps"], res["final_loss"], res.get("final_weights"))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    cfg = eval_config_from_args(args)
    metrics = evaluate(cfg)
    summary = {k: v for k, v in metrics.items() if k not in ("config", "model")}
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune an open_clip model on negative shards with the CE-CLIP losses",
        description="Stream negative shards into an open_clip model and train it with contrastive + "
        "hard-negative, intra-modal (IMC) and cross-modal rank (CMR) losses. Multi-GPU: "
        "torchrun --nproc_per_node N --no-python hardneg train ...",
    )
    _model_args(p)
    g = p.add_argument_group("data")
    g.add_argument("--data", action="append", help="shard file, glob or dataset directory (repeatable)")
    g.add_argument("--split", help="split sub-directory of a dataset directory (default: train)")
    g.add_argument("--image-root", help="root for relative image paths in the shards")
    g.add_argument("--families", type=_csv, help="comma-separated hard-negative families")
    g.add_argument("--batch-size", type=int, help="per-rank batch size")
    g.add_argument("--workers", type=int, help="data-loader worker processes")
    g = p.add_argument_group("run")
    g.add_argument("--objective", choices=sorted(OBJECTIVES), help="loss preset (default: ce-clip)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--max-steps", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--output-dir", "-o", help="run folder: checkpoints, logs, final weights")
    g.add_argument("--seed", type=int)
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (0: epoch end only)")
    g.add_argument("--resume", help="auto (default), none, or a checkpoint path")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(p, "train")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "eval",
        help="per-family accuracy, SugarCrepe, ARO and COCO retrieval for an open_clip model",
        description="Evaluate a model on held-out negative shards and public compositionality and "
        "retrieval benchmarks; writes a metrics JSON.",
    )
    _model_args(p)
    g = p.add_argument_group("benchmarks")
    g.add_argument("--shards", action="append", help="held-out shard file, glob or dataset directory")
    g.add_argument("--split", help="split sub-directory of a dataset directory (default: test)")
    g.add_argument("--image-root", help="root for relative image paths in the shards")
    g.add_argument("--families", type=_csv, help="families to score (default: all)")
    g.add_argument("--sugarcrepe", action="append", help="SugarCrepe category JSON (repeatable)")
    g.add_argument("--sugarcrepe-image-root", help="COCO val2017 image folder")
    g.add_argument("--aro-relation", help="ARO visual_genome_relation.json")
    g.add_argument("--aro-attribution", help="ARO visual_genome_attribution.json")
    g.add_argument("--aro-image-root", help="ARO/Visual Genome image folder")
    g.add_argument("--coco", help="COCO Karpathy-split JSON")
    g.add_argument("--coco-image-root", help="COCO image folder (holding val2014/)")
    g.add_argument("--limit", type=int, help="at most this many items per benchmark")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--workers", type=int)
    g.add_argument("--out", "-o", help="metrics JSON path (default: metrics.json)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(p, "eval")
    p.set_defaults(func=_eval)
