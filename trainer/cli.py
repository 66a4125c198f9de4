"""``hardneg train``, ``eval``, ``train-curves``, ``compare`` and ``compare-report``: flags and ``--config/--set`` mapped onto the typed configs.

Precedence: dataclass defaults < ``--config FILE --section S`` < explicit flags < ``--set key=value``.
torch and open_clip are imported only when a command runs, so ``hardneg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from pipeline.core.config import add_config_args, config_from_args
from pipeline.core.errors import ConfigError
from trainer.config import OBJECTIVES, EvalConfig, TrainConfig

log = logging.getLogger("hardneg")

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


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    flags: dict[str, Any] = {
        **_model_flags(args),
        "data.paths": args.data or None, "data.split": args.split, "data.image_root": args.image_root,
        "data.families": args.families, "data.batch_size": args.batch_size, "data.workers": args.workers,
        "optim.epochs": args.epochs, "optim.max_steps": args.max_steps, "optim.lr": args.lr,
        "output_dir": args.output_dir, "seed": args.seed, "checkpoint_every": args.checkpoint_every,
        "resume": args.resume, "data.eval_sets": args.eval_sets,
        "data.strict_eval_overlap": True if args.strict_eval_overlap else None,
    }
    if args.objective:
        flags.update(OBJECTIVES[args.objective])
    if args.no_progress:
        flags["progress"] = False
    return config_from_args(TrainConfig, args, flags)


def eval_config_from_args(args: argparse.Namespace) -> EvalConfig:
    flags: dict[str, Any] = {
        **_model_flags(args),
        "shards": args.shards or None, "split": args.split, "image_root": args.image_root,
        "families": args.families, "sugarcrepe": args.sugarcrepe or None,
        "sugarcrepe_image_root": args.sugarcrepe_image_root, "aro_relation": args.aro_relation,
        "aro_attribution": args.aro_attribution, "aro_image_root": args.aro_image_root,
        "coco_karpathy": args.coco, "coco_image_root": args.coco_image_root, "limit": args.limit,
        "batch_size": args.batch_size, "workers": args.workers, "out": args.out,
        "zeroshot": _zeroshot_flags(args), "suite": args.suite,
    }
    if args.no_progress:
        flags["progress"] = False
    return config_from_args(EvalConfig, args, flags)


def _zeroshot_flags(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """``--zeroshot NAME=PATH`` sets, with ``--zeroshot-classnames/--zeroshot-templates NAME=SPEC``."""
    if not args.zeroshot:
        return None
    sets = _pairs(args.zeroshot, "--zeroshot")
    extra = {"classnames": _pairs(args.zeroshot_classnames or [], "--zeroshot-classnames"),
             "templates": _pairs(args.zeroshot_templates or [], "--zeroshot-templates")}
    for key, named in extra.items():
        if set(named) - set(sets):
            raise ConfigError(f"--zeroshot-{key} names {sorted(set(named) - set(sets))}, not given with --zeroshot")
    return [{"name": n, "path": p, **{k: v[n] for k, v in extra.items() if n in v}} for n, p in sets.items()]


def _train(args: argparse.Namespace) -> int:
    from trainer.loop import train

    cfg = train_config_from_args(args)
    res = train(cfg)
    log.info("done: %d steps, final loss %s, weights %s", res["steps"], res["final_loss"], res.get("final_weights"))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate

    cfg = eval_config_from_args(args)
    metrics = evaluate(cfg)
    summary = {k: v for k, v in metrics.items() if k not in ("config", "model")}
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _register_train_eval(sub)
    _register_curves(sub)
    _register_compare(sub)
    _register_wiseft(sub)


def _register_train_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune an open_clip model on negative shards with the CE-CLIP (or FSC-CLIP) losses",
        description="Stream negative shards into an open_clip model and train it with contrastive + "
        "hard-negative, intra-modal (IMC) and cross-modal rank (CMR) losses (--objective ce-clip), or "
        "FSC-CLIP's global and local hard-negative losses (--objective fsc-clip); --set loss.distill_ema=true "
        "adds EMA self-distillation. Multi-GPU: torchrun --nproc_per_node N --no-python hardneg train ...",
    )
    _model_args(p)
    g = p.add_argument_group("data")
    g.add_argument("--data", action="append", help="shard file, glob or dataset directory (repeatable)")
    g.add_argument("--split", help="split sub-directory of a dataset directory (default: train)")
    g.add_argument("--image-root", help="root for relative image paths in the shards")
    g.add_argument("--families", type=_csv, help="comma-separated hard-negative families")
    g.add_argument("--batch-size", type=int, help="per-rank batch size")
    g.add_argument("--workers", type=int, help="data-loader worker processes")
    g.add_argument("--eval-sets", nargs="+", metavar="FILE",
                   help="evaluation files or suite YAMLs: warn when training images are among theirs (data.eval_sets)")
    g.add_argument("--strict-eval-overlap", action="store_true",
                   help="refuse to train when they share images (data.strict_eval_overlap)")
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
    g.add_argument("--zeroshot", action="append", metavar="NAME=PATH",
                   help="zero-shot classification set: ImageFolder dir or image,label CSV (repeatable)")
    g.add_argument("--zeroshot-classnames", action="append", metavar="NAME=FILE",
                   help="class names of a zero-shot set: a file (one per line) or 'imagenet'")
    g.add_argument("--zeroshot-templates", action="append", metavar="NAME=FILE",
                   help="prompt templates of a zero-shot set: a file ('{}' = class) or 'openai' / 'simple'")
    g.add_argument("--suite", metavar="FILE", help="evaluation suite YAML (benchmark name -> format, files, "
                   "image_root): every score in the metrics JSON, plus <out stem>.md and .csv tables")
    g.add_argument("--limit", type=int, help="at most this many items per benchmark")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--workers", type=int)
    g.add_argument("--out", "-o", help="metrics JSON path (default: metrics.json)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(p, "eval")
    p.set_defaults(func=_eval)


# --------------------------------------------------------------------------- train-curves


def _train_curves(args: argparse.Namespace) -> int:
    if args.threads and args.threads > 1:
        # idle OpenMP threads sleep instead of spinning: on a shared machine a spinning pool
        # loses far more than it gains (read when torch loads, so before the import below)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from trainer.curves import CurveConfig, train_with_curves

    flags: dict[str, Any] = dict(OBJECTIVES[args.objective]) if args.objective else {}
    if args.output_dir:
        flags["output_dir"] = args.output_dir
    if args.no_progress:
        flags["progress"] = False
    tcfg = config_from_args(TrainConfig, args, flags)
    ccfg = config_from_args(CurveConfig, args, section=args.curves_section or "", overrides=args.curve_overrides)
    res = train_with_curves(tcfg, ccfg)
    log.info("done: %d steps, final loss %s, curve %s", res["steps"], res["final_loss"], res["curve"]["path"])
    return 0


def _register_curves(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-curves",
        help="hardneg train, scoring held-out per-family accuracy every N steps (accuracy-vs-step curve)",
        description="Train like `hardneg train` (settings from --config/--section/--set) and score each "
        "checkpoint on held-out negative shards; writes <output_dir>/curve.csv and curve.json.",
    )
    p.add_argument("--config", help="YAML file (e.g. params.yaml)")
    p.add_argument("--section", default="train", help="training section of --config (default: train)")
    p.add_argument("--curves-section", default="curves", help="curve section of --config (default: curves)")
    p.add_argument("--objective", choices=sorted(OBJECTIVES), help="loss preset: clip, negclip, ce-clip, fsc-clip")
    p.add_argument("--output-dir", "-o", help="run folder")
    p.add_argument("--threads", type=int, help="torch threads for this process (1 suits tiny models)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting, dotted (e.g. --set optim.lr=1e-3)")
    p.add_argument("--curve-set", dest="curve_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a curve setting (e.g. --curve-set every=50)")
    p.set_defaults(func=_train_curves)


# --------------------------------------------------------------------------- compare


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        if "=" not in v:
            raise ConfigError(f"{what} {v!r} must look like NAME=PATH")
        k, p = v.split("=", 1)
        if k in out:
            raise ConfigError(f"{what} names {k!r} twice")
        out[k] = p
    return out


def _compare(args: argparse.Namespace) -> int:
    runs, evals = _pairs(args.run, "--run"), _pairs(args.eval, "--eval")
    if set(runs) != set(evals):
        raise ConfigError(f"--run names {sorted(runs)} but --eval names {sorted(evals)}")
    from trainer.compare import compare

    compare({n: (runs[n], evals[n]) for n in runs}, args.out, args.allow_different_steps)
    return 0


def _compare_report(args: argparse.Namespace) -> int:
    from trainer.compare import compare_report

    compare_report(args.compare_dir, _pairs(args.run, "--run"), args.out, args.world)
    return 0


def _compare_suite(args: argparse.Namespace) -> int:
    from trainer.suite import join_suites

    joined = join_suites(_pairs(args.model, "--model"), args.out)
    log.info("joined %d models into %s/suite.md", len(joined["models"]), args.out)
    return 0


def _register_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="join runs' held-out evaluations and accuracy-vs-step curves into dvc metrics and plot files",
        description="Write compare.json (per-family accuracy of each run and the gain over the first run), "
        "curves.csv and accuracy_<run>.csv. The first --run is the reference.",
    )
    p.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR",
                   help="a run folder of hardneg train / train-curves (repeatable; the first is the reference)")
    p.add_argument("--eval", action="append", required=True, metavar="NAME=EVAL_JSON",
                   help="the run's hardneg eval metrics JSON (with per-family shard accuracy)")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--allow-different-steps", action="store_true",
                   help="compare runs of different lengths (otherwise an error)")
    p.set_defaults(func=_compare)

    p = sub.add_parser("compare-report", help="report.md and figures of a comparison (hardneg compare's folder)")
    p.add_argument("compare_dir", help="folder holding compare.json and curves.csv")
    p.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR",
                   help="the run folders (their metrics.csv gives loss and threshold curves)")
    p.add_argument("--world", help="world.json of hardneg synth, to describe the data")
    p.add_argument("--out", "-o", required=True, help="output folder for report.md and the PNGs")
    p.set_defaults(func=_compare_report)

    p = sub.add_parser(
        "compare-suite",
        help="join several models' suite results (hardneg eval --suite) into one table, a row per model",
        description="Write <out>/suite.md, suite.csv and suite.json: one row per --model, one column per "
        "benchmark metric, and the compositional and recognition means.",
    )
    p.add_argument("--model", action="append", required=True, metavar="NAME=METRICS_JSON",
                   help="a model's hardneg eval --suite metrics JSON (repeatable; rows keep this order)")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.set_defaults(func=_compare_suite)


# --------------------------------------------------------------------------- wise-ft


def _alphas(s: str) -> list[float]:
    try:
        return [float(x) for x in _csv(s)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alpha takes comma-separated numbers in [0, 1], got {s!r}") from None


def _wise_ft(args: argparse.Namespace) -> int:
    from trainer.wiseft import WiseFTConfig, wise_ft

    flags = {**_model_flags(args), "finetuned": args.finetuned, "alphas": args.alpha, "out": args.out}
    if args.base is not None:
        flags["model.pretrained"] = "" if args.base.lower() in ("none", "null", "") else args.base
    cfg = config_from_args(WiseFTConfig, args, flags)
    eval_cfg = None
    if args.eval_section:  # read before the sweep is written, so a bad section fails fast
        if not args.config:
            raise ConfigError("--eval-section needs --config (the file holding that eval section)")
        eval_cfg = config_from_args(EvalConfig, args, section=args.eval_section, overrides=[])
    res = wise_ft(cfg)
    log.info("wrote %d interpolated models to %s", len(res["models"]), cfg.out)
    if eval_cfg is not None:
        from trainer.tradeoff import sweep_eval

        for row in sweep_eval(res, eval_cfg, cfg.out):
            log.info("alpha %.2f: compositional %s, recognition %s", row["alpha"], row["compositional"], row["recognition"])
    return 0


def _register_wiseft(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "wise-ft",
        help="weight-space ensembles (WiSE-FT) of a base model and its fine-tune, one per alpha",
        description="Write (1 - alpha) * base + alpha * fine-tuned for each alpha as open_clip-loadable "
        "weights (<out>/alpha_0.30/open_clip_pytorch_model.bin) and <out>/wiseft.json; evaluate each "
        "with hardneg eval --pretrained <file>.",
    )
    _model_args(p)
    p.add_argument("--base", help="base weights: a pretrained tag or weights file (sets model.pretrained)")
    p.add_argument("--finetuned", help="fine-tuned weights (final/open_clip_pytorch_model.bin or a checkpoint)")
    p.add_argument("--alpha", type=_alphas, help="comma-separated mixing weights (default 0,0.1,...,1)")
    p.add_argument("--out", "-o", help="output folder (default: wiseft)")
    p.add_argument("--eval-section", help="also evaluate every alpha with this eval section of --config "
                   "(writes <out>/sweep.json and sweep.csv: compositional and recognition accuracy per alpha)")
    add_config_args(p, "wiseft")
    p.set_defaults(func=_wise_ft)

    p = sub.add_parser(
        "tradeoff",
        help="compositionality against recognition: before/after each fine-tune and WiSE-FT sweeps",
        description="Join hardneg eval metrics (with zeroshot sets) and wise-ft sweeps into <out>/tradeoff.json; "
        "hardneg compare-report adds its table and plot when the file sits in the compare folder.",
    )
    p.add_argument("--before", metavar="EVAL_JSON", help="eval metrics of the model the fine-tunes start from")
    p.add_argument("--eval", action="append", required=True, metavar="NAME=EVAL_JSON", help="a fine-tune's eval metrics")
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=DIR", help="a wise-ft --eval-section folder")
    p.add_argument("--out", "-o", required=True, help="output folder for tradeoff.json")
    p.set_defaults(func=_tradeoff)


def _tradeoff(args: argparse.Namespace) -> int:
    from trainer.tradeoff import tradeoff

    tradeoff(args.before, _pairs(args.eval, "--eval"), _pairs(args.sweep, "--sweep"), args.out)
    return 0
