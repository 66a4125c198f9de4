"""Typed configuration for stage 2 (``hardneg train`` / ``hardneg eval``).

The same dataclasses serve ``params.yaml`` (a ``train:`` / ``eval:`` section), the CLI and Python
callers; dicts map onto them with :func:`pipeline.config.from_dict`, which rejects unknown keys so a
typo never silently falls back to a default. Defaults follow the CE-CLIP paper's COCO recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.contract.families import ALL_FAMILIES, SWAP_FAMILIES
from pipeline.core.config import from_dict, to_dict
from pipeline.core.errors import ConfigError

THRESHOLD_POLICIES = ("mean", "max", "fixed")
PRECISIONS = ("amp", "bf16", "fp16", "fp32")
SCHEDULES = ("cosine", "constant")


@dataclass
class ModelConfig:
    """Which open_clip model to build and how to run it."""

    #: open_clip model name (``ViT-B-32``, ``hardneg-tiny``, ``hf-hub:...``, ``local-dir:...``)
    name: str = "ViT-B-32"
    #: pretrained tag (``openai``, ``laion2b_s34b_b79k``) or a local weights file; None/"" = random init
    pretrained: str | None = "openai"
    #: a custom open_clip model config JSON; registered under its file stem, which ``name`` must match
    model_config: str | None = None
    #: amp = bf16 autocast where the GPU supports it, else fp16 with a GradScaler; the CPU runs fp32
    precision: str = "amp"
    #: auto = cuda:<local rank> when CUDA is available, else cpu
    device: str = "auto"
    grad_checkpointing: bool = False

    def validate(self) -> None:
        if not self.name and not self.model_config:
            raise ConfigError("model.name is required (an open_clip model name) or model.model_config")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"model.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")


@dataclass
class DataConfig:
    """Where the negative shards are and how they are streamed."""

    #: shard files, globs, dataset directories (``<dir>/<split>/*.parquet``) or fsspec URLs
    paths: list[str] = field(default_factory=list)
    #: sub-directory of a dataset directory to read; ignored for files and globs
    split: str = "train"
    #: root that relative image paths in the shards resolve against (embedded bytes need none)
    image_root: str | None = None
    #: hard-negative families to train with, one candidate of each per sample and epoch
    families: list[str] = field(default_factory=lambda: list(SWAP_FAMILIES))
    #: per-rank batch size; the contrastive loss sees batch_size * world_size samples
    batch_size: int = 256
    workers: int = 4
    #: rows held by each stream's shuffle buffer (rows are shuffled by row group, then in the buffer)
    shuffle_buffer: int = 2000
    #: random-resized-crop scale range for training images, as open_clip's default train transform
    crop_scale: list[float] = field(default_factory=lambda: [0.9, 1.0])
    augment: bool = True
    #: decode JPEGs at a reduced size (PIL draft mode) when the target is smaller than the image
    draft: bool = True
    #: keep captions of one image (one ``group``) out of the same batch, where they are false negatives
    spread_groups: bool = True
    #: check a dataset folder's shards against its manifest's sha256 before training (rows are always
    #: checked when the manifest is there); None = yes for local folders, no for remote URLs
    verify: bool | None = None
    #: share of the dataset's rows whose image may be missing or unreadable in an epoch (they are left
    #: out and counted); one more stops the run. Before training, the images of the first rows must open.
    max_missing_fraction: float = 0.01
    #: evaluation files (SugarCrepe/ARO/VALSE JSON, Winoground jsonl or parquet, a Karpathy split JSON, a list of
    #: names or COCO ids) or suite YAMLs: training rows showing their images are a warning before training
    eval_sets: list[str] = field(default_factory=list)
    #: refuse to train when a training row shows an image of ``eval_sets``
    strict_eval_overlap: bool = False

    def validate(self) -> None:
        if self.strict_eval_overlap and not self.eval_sets:
            raise ConfigError("data.strict_eval_overlap needs data.eval_sets (the evaluation files to compare with)")
        if not self.paths:
            raise ConfigError("data.paths is required: shard files, globs or a dataset directory")
        unknown = [f for f in self.families if f not in ALL_FAMILIES]
        if unknown:
            raise ConfigError(f"unknown families {unknown}; known: {list(ALL_FAMILIES)}")
        if len(set(self.families)) != len(self.families):
            raise ConfigError(f"data.families lists a family twice: {self.families}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"data.workers must be >= 0, got {self.workers}")
        if self.shuffle_buffer < 1:
            raise ConfigError(f"data.shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"data.crop_scale must be [low, high] in (0, 1], got {self.crop_scale}")
        if not 0.0 <= self.max_missing_fraction <= 1.0:
            raise ConfigError(f"data.max_missing_fraction must lie in [0, 1], got {self.max_missing_fraction}")


@dataclass
class LossConfig:
    """Which loss terms are on, and their weights.

    Plain CLIP: ``hard_negatives=false, imc=false, cmr=false``; NegCLIP: ``imc=false, cmr=false``;
    CE-CLIP: ``hard_negatives, imc, cmr`` on (the default); FSC-CLIP: ``hard_negatives, imc, cmr``
    off and ``global_hn, local_hn`` on (see ``OBJECTIVES``). ``distill_ema`` adds EMA
    self-distillation to any of them.
    """

    contrastive: bool = True
    #: put the valid hard negatives of the whole (gathered) batch into the image->text softmax
    hard_negatives: bool = True
    imc: bool = True
    cmr: bool = True
    w_contrastive: float = 1.0
    w_imc: float = 0.3
    w_cmr: float = 0.2
    #: per-family CMR threshold: batch mean gap, batch max gap, or ``fixed_threshold``
    threshold: str = "mean"
    fixed_threshold: float = 0.0
    #: thresholds are clamped to [0, upper_bound] (in logit units, i.e. already times the scale)
    upper_bound: float = 10.0
    #: FSC-CLIP's global hard-negative loss: per image, a (1+N)-way softmax over its caption and
    #: that caption's valid negatives (pooled features)
    global_hn: bool = False
    #: FSC-CLIP's local hard-negative loss: the same (1+N)-way loss on token-to-patch scores
    #: (ViT image towers with open_clip's built-in text tower only)
    local_hn: bool = False
    w_global_hn: float = 0.5
    w_local_hn: float = 0.2
    #: focal weighting (1 - p)^gamma of the hard-negative terms; 0 = plain cross-entropy
    focal_gamma: float = 2.0
    #: label smoothing of the hard-negative terms, spread evenly over the caption and its valid negatives
    hn_label_smoothing: float = 0.02
    #: self-distillation towards an exponential moving average of the model's own weights (any objective)
    distill_ema: bool = False
    #: teacher <- decay * teacher + (1 - decay) * model after every update
    ema_decay: float = 0.999
    #: weight of the distillation term: mean squared distance between the model's and the teacher's
    #: unit image and caption features
    w_distill: float = 1.0

    def validate(self) -> None:
        if self.threshold not in THRESHOLD_POLICIES:
            raise ConfigError(f"loss.threshold must be one of {list(THRESHOLD_POLICIES)}, got {self.threshold!r}")
        if self.upper_bound < 0:
            raise ConfigError(f"loss.upper_bound must be >= 0, got {self.upper_bound}")
        if not (self.contrastive or self.imc or self.cmr or self.global_hn or self.local_hn):
            raise ConfigError("every loss term is switched off; enable contrastive, imc, cmr, global_hn or local_hn")
        for key in ("w_global_hn", "w_local_hn", "focal_gamma", "w_distill"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loss.{key} must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.hn_label_smoothing < 1.0:
            raise ConfigError(f"loss.hn_label_smoothing must lie in [0, 1), got {self.hn_label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"loss.ema_decay must lie in [0, 1), got {self.ema_decay}")

    @property
    def needs_negatives(self) -> bool:
        return (self.contrastive and self.hard_negatives) or self.imc or self.cmr or self.global_hn or self.local_hn


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay (CE-CLIP's COCO recipe)."""

    lr: float = 5e-6
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 50
    schedule: str = "cosine"
    epochs: int = 10
    #: stop after this many optimizer steps (also shortens the cosine schedule); None = epochs decide
    max_steps: int | None = None
    #: clip the global gradient norm; None = no clipping
    grad_clip_norm: float | None = None
    #: stop after this many steps in a row whose loss or gradients are not finite (each makes no update)
    max_nonfinite_steps: int = 20

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas must be two numbers, got {self.betas}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs < 1:
            raise ConfigError(f"optim.epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"optim.max_steps must be >= 1, got {self.max_steps}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_nonfinite_steps < 1:
            raise ConfigError(f"optim.max_nonfinite_steps must be >= 1, got {self.max_nonfinite_steps}")


@dataclass
class TrainConfig:
    """Everything ``hardneg train`` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output_dir: str = "runs/train"
    seed: int = 0
    #: write a resumable checkpoint every N optimizer steps (and always at epoch end); 0 = epoch end only
    checkpoint_every: int = 500
    #: step checkpoints kept on disk (older ones are deleted)
    keep_checkpoints: int = 2
    #: auto = resume from ``<output_dir>/checkpoints`` when present; a path = that checkpoint; none = fresh
    resume: str = "auto"
    log_every: int = 1
    tensorboard: bool = True
    progress: bool = True

    def validate(self) -> None:
        self.model.validate()
        self.data.validate()
        self.loss.validate()
        self.optim.validate()
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1, got {self.log_every}")


@dataclass
class ZeroShotSpec:
    """One zero-shot classification set of ``hardneg eval`` (see trainer/zeroshot.py for the formats)."""

    name: str = ""
    #: an ImageFolder-style directory or an ``image,label`` CSV
    path: str = ""
    #: class-names file, ``imagenet`` (open_clip's), or empty (folder names / labels)
    classnames: str | None = None
    #: prompt-templates file (``{}`` = class name), ``openai`` / ``simple`` (open_clip's ImageNet sets), or empty
    templates: str | None = None
    #: root for relative image paths of a CSV (default: the CSV's folder)
    image_root: str | None = None


@dataclass
class BenchmarkSpec:
    """One benchmark of an evaluation suite (see trainer/benchmarks.py for the formats)."""

    #: a format of ``trainer.benchmarks.FORMATS``: sugarcrepe, sugarcrepe_pp, aro_relation,
    #: aro_attribution, valse, winoground, retrieval, zeroshot
    format: str = ""
    #: the benchmark's files (one per category or piece; one for retrieval, winoground and zeroshot)
    files: list[str] = field(default_factory=list)
    #: the folder the files' image paths resolve against
    image_root: str | None = None
    #: a file's own image folder, by file name without suffix (VALSE's pieces come from several datasets)
    image_roots: dict[str, str] = field(default_factory=dict)
    #: zeroshot only: class names and prompt templates (as ``ZeroShotSpec``)
    classnames: str | None = None
    templates: str | None = None
    #: compositional | recognition | none (in neither mean); None = the format's own
    counts_as: str | None = None


@dataclass
class EvalConfig:
    """Everything ``hardneg eval`` needs; each benchmark runs only when its input is given."""

    model: ModelConfig = field(default_factory=ModelConfig)
    #: held-out negative shards (files, globs, dataset directories) for per-family pairwise accuracy
    shards: list[str] = field(default_factory=list)
    split: str = "test"
    image_root: str | None = None
    #: check a dataset folder's shards against its manifest's sha256 first (rows are always checked
    #: when the manifest is there); None = yes for local folders, no for remote URLs
    verify: bool | None = None
    #: families scored on the shards; empty = all six
    families: list[str] = field(default_factory=list)
    #: SugarCrepe JSON files (one per category, named after the file stem)
    sugarcrepe: list[str] = field(default_factory=list)
    sugarcrepe_image_root: str | None = None
    aro_relation: str | None = None
    aro_attribution: str | None = None
    aro_image_root: str | None = None
    #: COCO Karpathy-split JSON (BLIP-style list, or Karpathy's dataset_coco.json: split ``test``)
    coco_karpathy: str | None = None
    coco_image_root: str | None = None
    #: zero-shot classification sets: top-1/top-5 recognition beside compositionality
    zeroshot: list[ZeroShotSpec] = field(default_factory=list)
    #: an evaluation suite: a YAML file whose ``benchmarks`` (or ``suite.benchmarks``) map a name to a
    #: :class:`BenchmarkSpec`; the run also writes a markdown and a CSV table beside ``out``
    suite: str | None = None
    #: score at most this many items per benchmark (quick checks); None = all
    limit: int | None = None
    #: share of a benchmark's items (pairs; images for retrieval and zero-shot) that may be left out for a
    #: missing or unreadable image before its metrics say so (``over_missing_limit``); scoring nothing fails
    max_missing_fraction: float = 0.01
    batch_size: int = 64
    workers: int = 2
    out: str = "metrics.json"
    progress: bool = True

    def validate(self) -> None:
        self.model.validate()
        unknown = [f for f in self.families if f not in ALL_FAMILIES]
        if unknown:
            raise ConfigError(f"unknown families {unknown}; known: {list(ALL_FAMILIES)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.max_missing_fraction <= 1.0:
            raise ConfigError(f"max_missing_fraction must lie in [0, 1], got {self.max_missing_fraction}")
        names = [z.name for z in self.zeroshot]
        if any(not z.name or not z.path for z in self.zeroshot) or len(set(names)) != len(names):
            raise ConfigError(f"zeroshot: every set needs a unique name and a path, got {names}")
        if not (self.shards or self.sugarcrepe or self.aro_relation or self.aro_attribution or self.coco_karpathy
                or self.zeroshot or self.suite):
            raise ConfigError(
                "nothing to evaluate: give shards, sugarcrepe, aro_relation, aro_attribution, coco_karpathy, "
                "zeroshot or suite"
            )


def train_config(data: dict[str, Any] | None = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a (possibly nested) dict."""
    cfg = from_dict(TrainConfig, data or {})
    cfg.validate()
    return cfg


def eval_config(data: dict[str, Any] | None = None) -> EvalConfig:
    cfg = from_dict(EvalConfig, data or {})
    cfg.validate()
    return cfg


__all__ = [
    "BenchmarkSpec",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "eval_config",
    "train_config",
    "to_dict",
]


_NO_FSC = {"loss.global_hn": False, "loss.local_hn": False}
#: ``--objective`` presets: each is a set of loss switches (``loss.distill_ema`` stays as configured)
OBJECTIVES: dict[str, dict[str, Any]] = {
    "clip": {"loss.hard_negatives": False, "loss.imc": False, "loss.cmr": False, **_NO_FSC},
    "negclip": {"loss.hard_negatives": True, "loss.imc": False, "loss.cmr": False, **_NO_FSC},
    "ce-clip": {"loss.hard_negatives": True, "loss.imc": True, "loss.cmr": True, **_NO_FSC},
    # Oh et al., EMNLP 2024: the batch contrastive loss on real pairs only, negatives in separate terms
    "fsc-clip": {"loss.hard_negatives": False, "loss.imc": False, "loss.cmr": False,
                 "loss.global_hn": True, "loss.local_hn": True},
}
