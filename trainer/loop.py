"""``train(config) -> results``: the CE-CLIP fine-tuning loop on one process, ``torchrun`` DDP or CPU.

One step: encode the images and, in one text batch, the positives plus only the *valid* negatives
(invalid ones are never encoded); gather features across ranks with gradients; compute the objective
(``trainer.losses``) on the global batch; AdamW with warmup + cosine. Mixed precision is autocast on
the GPU (bf16, or fp16 with a GradScaler); the CPU runs fp32.

FSC-CLIP's local loss runs the model through :class:`trainer.models.DenseForward` (the same
parameters, one forward that also returns patch and token embeddings); each rank scores its own
captions against its own images and the ``(B, 1+K)`` scores are gathered like the features. With
``loss.distill_ema`` an EMA teacher (a frozen copy of the model, updated after every update the
model makes) encodes the same images and captions; its weights are part of every checkpoint, so a
resumed run continues with the teacher it had.

A run is a :class:`Trainer` (what it is made of: model, optimizer, data stream) and a
:class:`TrainState` (what changes from step to step: position, counters, the last checkpoint);
:func:`resume`, :func:`train_step` and :func:`save_checkpoint` act on the two, and :func:`train`
strings them together. What the loop guarantees when something fails (damaged shards, a non-finite
loss, a lost rank, a failed checkpoint write) is written up in docs/training.md.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from pipeline.core.atomic import write_json_atomic
from pipeline.core.config import config_hash, to_dict
from pipeline.core.errors import ConfigError, HardnegError, SourceError
from trainer import checkpoint as ckpt
from trainer.config import LossConfig, TrainConfig, train_config
from trainer.data import (
    CARD_HINT,
    ImageSpec,
    ImagesUnavailable,
    NegativeStream,
    ShardIndex,
    SkipExample,
    check_images,
    describe_counts,
    describe_data,
    make_loader,
    normalize_images,
    unresolved_message,
)
from trainer.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    cleanup,
    gather_no_grad,
    gather_with_grad,
    init_distributed,
)
from trainer.losses import ce_clip_loss, local_hn_logits
from trainer.models import BuiltModel, DenseForward, build_model, save_weights
from trainer.overlap import check_eval_overlap
from trainer.runlog import RunLog

log = logging.getLogger(__name__)

SKIP_KEYS = ("missing", "corrupt", "no_image")
#: the log-space ceiling open_clip keeps the logit scale under (scale <= 100)
MAX_LOGIT_SCALE = math.log(100)


# --------------------------------------------------------------------------------------------
# pieces that the benchmark and tests reuse


def resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"model.device {name!r} asks for CUDA, which is not available")
    return dev


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. The CPU always trains in fp32."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "bf16" or (precision == "amp" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: gains, biases, the class embedding and the logit scale are exempt."""
    decay, exempt = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (exempt if p.ndim < 2 or "logit_scale" in name or "logit_bias" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; the fused kernel where this torch build has it (10x faster on the CPU than the loop)."""
    kwargs = dict(lr=cfg.optim.lr, betas=(cfg.optim.betas[0], cfg.optim.betas[1]), eps=cfg.optim.eps)
    try:
        return torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), **kwargs)


#: settings that do not change what a run computes: a resume may differ in these
_RUN_ONLY = frozenset(
    {"output_dir", "resume", "progress", "tensorboard", "log_every", "checkpoint_every", "keep_checkpoints",
     "data.workers", "data.verify", "data.max_missing_fraction", "optim.max_nonfinite_steps"}
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted names of result-affecting settings that differ between a checkpoint and this run.

    A setting the checkpoint's config lacks (one added to the trainer since) counts as its default."""
    a, b = _flatten(old), _flatten(new)
    defaults = _flatten(to_dict(TrainConfig()))
    return sorted(k for k in set(a) | set(b) if k not in _RUN_ONLY and a.get(k, defaults.get(k)) != b.get(k))


def lr_lambda(warmup: int, total: int, schedule: str) -> Callable[[int], float]:
    """Linear warmup over ``warmup`` steps, then cosine to zero at ``total`` (or constant)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        span = max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))

    return f


def _forward(
    model: torch.nn.Module,
    batch: dict[str, Any],
    spec: ImageSpec,
    device: torch.device,
    use_negatives: bool,
    autocast_dtype: torch.dtype | None,
) -> tuple[Any, torch.Tensor, torch.Tensor | None, int]:
    """One forward of the images and, in one text batch, the positives plus the valid negatives:
    ``(model output, the token ids encoded, mask or None, B)``."""
    images = normalize_images(batch["images"].to(device, non_blocking=True), spec)
    text = batch["text"].to(device, non_blocking=True)
    b = text.shape[0]
    mask = None
    tokens = text
    if use_negatives and batch["neg_mask"].shape[1] > 0:
        mask = batch["neg_mask"].to(device, non_blocking=True)
        tokens = torch.cat([text, batch["neg_text"].to(device, non_blocking=True)[mask]], dim=0)
    ctx = torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with ctx:
        out = model(images, tokens)
    return out, tokens, mask, b


def _features(
    out: Any, mask: torch.Tensor | None, b: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    img_f, txt_f, scale = out[0].float(), out[1].float(), out[2].float()
    negatives = None
    if mask is not None:
        k = mask.shape[1]
        where = mask.reshape(-1).nonzero().squeeze(1)
        flat = txt_f.new_zeros((b * k, txt_f.shape[1])).index_copy(0, where, txt_f[b:])
        negatives = flat.view(b, k, -1)
    return img_f, txt_f[:b], negatives, mask, scale


def encode_batch(
    model: torch.nn.Module,
    batch: dict[str, Any],
    spec: ImageSpec,
    device: torch.device,
    use_negatives: bool,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Local features ``(image, text, negatives (B,K,D) or None, mask, scale)`` in float32.

    Positives and valid negatives share one text forward; invalid negatives are not encoded and
    their rows of ``negatives`` stay zero (the losses never read them).
    """
    out, _, mask, b = _forward(model, batch, spec, device, use_negatives, autocast_dtype)
    return _features(out, mask, b)


#: the token id open_clip's tokenizer pads with; every other position is a real token
PAD_TOKEN = 0


def encode_batch_dense(
    model: torch.nn.Module,
    batch: dict[str, Any],
    spec: ImageSpec,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """:func:`encode_batch` through a :class:`~trainer.models.DenseForward` model, plus FSC-CLIP's
    local scores ``(B, 1+K)`` of each caption and its valid negatives with the caption's image."""
    out, tokens, mask, b = _forward(model, batch, spec, device, True, autocast_dtype)
    img_f, txt_f, negatives, mask, scale = _features(out, mask, b)
    if mask is None:
        mask = torch.zeros((b, 0), dtype=torch.bool, device=img_f.device)
    local = local_hn_logits(out[3].float(), out[4].float(), tokens != PAD_TOKEN, mask, scale)
    return img_f, txt_f, negatives, mask, scale, local


def teacher_features(
    teacher: torch.nn.Module,
    batch: dict[str, Any],
    spec: ImageSpec,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The EMA teacher's unit image and caption features (no graph) for the batch's positives."""
    with torch.no_grad():
        out, _, _, _ = _forward(teacher, batch, spec, device, False, autocast_dtype)
    return out[0].float(), out[1].float()


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``teacher <- decay * teacher + (1 - decay) * model`` for every parameter; buffers (masks such
    as the text tower's causal mask, which holds infinities) are copied."""
    t_params = list(teacher.parameters())
    m_params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(t_params, m_params, 1.0 - decay)
    for tb, mb in zip(teacher.buffers(), model.buffers()):
        tb.copy_(mb)


def make_teacher(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` in eval mode: the EMA teacher's starting point."""
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    return teacher.eval()


def global_losses(
    img_f: torch.Tensor,
    txt_f: torch.Tensor,
    negatives: torch.Tensor | None,
    mask: torch.Tensor | None,
    scale: torch.Tensor,
    loss_cfg: LossConfig,
    local_logits: torch.Tensor | None = None,
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Gather features from every rank (with gradients) and compute the objective on the global batch.

    ``local_logits`` (FSC-CLIP's local scores) are gathered with gradients, ``teacher`` (the EMA
    teacher's features) without."""
    if negatives is not None:
        packed = torch.cat([img_f[:, None], txt_f[:, None], negatives], dim=1)
        packed = gather_with_grad(packed)
        img_g, txt_g, neg_g = packed[:, 0], packed[:, 1], packed[:, 2:]
        mask_g = gather_no_grad(mask)
    else:
        packed = gather_with_grad(torch.stack([img_f, txt_f], dim=1))
        img_g, txt_g, neg_g, mask_g = packed[:, 0], packed[:, 1], None, None
    local_g = gather_with_grad(local_logits) if local_logits is not None else None
    teacher_g = None
    if teacher is not None:
        t = gather_no_grad(torch.stack(teacher, dim=1))
        teacher_g = (t[:, 0], t[:, 1])
    out = ce_clip_loss(img_g, txt_g, neg_g, mask_g, scale, loss_cfg, local_g, teacher_g)
    out["global_batch"] = img_g.shape[0]
    return out


# --------------------------------------------------------------------------------------------
# the run and its state


class NonFiniteError(HardnegError):
    """The loss or the gradients were not finite for ``optim.max_nonfinite_steps`` steps in a row."""


@dataclass
class TrainState:
    """What changes from step to step; with the module and RNG states, what a checkpoint restores."""

    step: int = 0
    epoch: int = 0
    #: batches of this epoch consumed (trained on or skipped), so a resume continues at the next one
    batch_in_epoch: int = 0
    samples_seen: int = 0
    #: images left out, by reason (SKIP_KEYS)
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_KEYS, 0))
    #: images left out in this epoch, all reasons and ranks (what ``data.max_missing_fraction`` bounds)
    skipped_in_epoch: int = 0
    #: steps that made no update because the loss or a gradient was not finite, and how many in a row
    skipped_nonfinite: int = 0
    nonfinite_streak: int = 0
    #: the last CMR threshold of each family
    thresholds: dict[str, float | None] = field(default_factory=dict)
    # of this process only (not in checkpoints): results and the checkpoint written last
    first_loss: float | None = None
    losses_tail: list[float] = field(default_factory=list)
    last_checkpoint: Path | None = None
    #: the latest image this process could not use, for messages
    skip_example: SkipExample | None = None
    #: the step of the checkpoint this process resumed from; None for a fresh start
    resumed_from_step: int | None = None

    def checkpoint_fields(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "samples_seen": self.samples_seen,
            "thresholds": dict(self.thresholds),
            "skipped": dict(self.skipped),
            "skipped_in_epoch": self.skipped_in_epoch,
            "skipped_nonfinite": self.skipped_nonfinite,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.step, self.epoch = int(saved["step"]), int(saved["epoch"])
        self.batch_in_epoch, self.samples_seen = int(saved["batch_in_epoch"]), int(saved["samples_seen"])
        self.skipped.update(saved.get("skipped", {}))
        self.skipped_in_epoch = int(saved.get("skipped_in_epoch", 0))
        self.skipped_nonfinite = int(saved.get("skipped_nonfinite", 0))
        self.thresholds.update(saved.get("thresholds", {}))


@dataclass
class Trainer:
    """What one run is made of; built once by :func:`setup`, not changed by the steps (but for the
    modules' own state)."""

    cfg: TrainConfig
    info: DistInfo
    out_dir: Path
    device: torch.device
    #: the autocast dtype, None for fp32
    dtype: torch.dtype | None
    built: BuiltModel
    spec: ImageSpec
    families: list[str]
    use_negs: bool
    stream: NegativeStream
    #: images a run may leave out per epoch (``data.max_missing_fraction`` of the dataset's rows)
    missing_budget: int
    steps_per_epoch: int
    total_steps: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    #: the model the steps run (DDP-wrapped under torchrun; see :func:`wrap_ddp`); a
    #: :class:`~trainer.models.DenseForward` around the model when the local loss is on
    ddp_model: torch.nn.Module
    #: FSC-CLIP's local loss is on: steps encode through the dense forward
    local_hn: bool = False
    #: the EMA teacher (``loss.distill_ema``), else None
    teacher: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.built.model


def setup(cfg: TrainConfig, info: DistInfo) -> Trainer:
    """Check the data, build model, data stream, optimizer, schedule and scaler (seeded: the same
    calls in the same order give the same initial weights)."""
    out_dir = Path(cfg.output_dir)
    device = resolve_device(cfg.model.device, info)
    dtype = amp_dtype(cfg.model.precision, device)
    if device.type == "cpu" and cfg.model.precision != "fp32" and info.is_main:
        log.info("training on the CPU in fp32 (precision %r applies to GPUs)", cfg.model.precision)
    # the shards first: a damaged or foreign dataset stops the run before a model is built or downloaded
    index = ShardIndex.from_paths(cfg.data.paths, cfg.data.split, verify=cfg.data.verify)
    try:
        return _setup(cfg, info, index, out_dir, device, dtype)
    except BaseException:
        index.close()  # the traceback keeps the index alive; its files need not stay open with it
        raise


def _setup(cfg: TrainConfig, info: DistInfo, index: ShardIndex, out_dir: Path, device: torch.device,
           dtype: torch.dtype | None) -> Trainer:
    # then the images of the first rows: a root that resolves nothing is an error in seconds
    _check_images_on_every_rank(index, cfg, info, device)
    if cfg.data.eval_sets:  # every rank checks (the same answer), so a strict refusal stops them all
        check_eval_overlap(index, cfg.data.eval_sets, cfg.data.strict_eval_overlap, _dataset(cfg), info.is_main)

    torch.manual_seed(cfg.seed)
    built = build_model(cfg.model, device)
    spec = ImageSpec.from_preprocess(built.preprocess)
    families = list(cfg.data.families)
    use_negs = cfg.loss.needs_negatives and bool(families)
    stream = NegativeStream(
        index,
        tokenizer=built.tokenizer,
        spec=spec,
        batch_size=cfg.data.batch_size,
        families=families if use_negs else [],
        image_root=cfg.data.image_root,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        shuffle_buffer=cfg.data.shuffle_buffer,
        augment=cfg.data.augment,
        crop_scale=cfg.data.crop_scale,
        draft=cfg.data.draft,
        spread_groups=cfg.data.spread_groups,
    )
    steps_per_epoch = stream.batches_per_epoch()
    if steps_per_epoch < 1:
        raise ConfigError(
            f"{index.num_rows} rows over {info.world_size} rank(s) do not fill one batch of {cfg.data.batch_size}"
        )
    total_steps = cfg.optim.epochs * steps_per_epoch
    if cfg.optim.max_steps is not None:
        total_steps = min(total_steps, cfg.optim.max_steps)

    optimizer = make_optimizer(built.model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, total_steps, cfg.optim.schedule)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    missing_budget = math.floor(cfg.data.max_missing_fraction * index.num_rows)
    local = cfg.loss.local_hn and use_negs
    forward = DenseForward.wrap(built.model, built.name) if local else built.model
    teacher = make_teacher(built.model) if cfg.loss.distill_ema else None
    return Trainer(cfg, info, out_dir, device, dtype, built, spec, families, use_negs, stream, missing_budget,
                   steps_per_epoch, total_steps, optimizer, scheduler, scaler, ddp_model=forward, local_hn=local,
                   teacher=teacher)


#: the setting that names the image root, as the errors about images say it
ROOT_FLAG = "--image-root (data.image_root)"


def _dataset(cfg: TrainConfig) -> str:
    return describe_data(cfg.data.paths, cfg.data.split)


def _check_images_on_every_rank(index: ShardIndex, cfg: TrainConfig, info: DistInfo, device: torch.device) -> None:
    """:func:`check_images` on every rank; one that fails stops them all (one collective)."""
    error: ImagesUnavailable | None = None
    try:
        check_images(index, cfg.data.image_root, _dataset(cfg), ROOT_FLAG)
    except ImagesUnavailable as e:
        error = e
    if all_reduce_sum([float(error is not None)], device)[0]:
        raise error or ImagesUnavailable(
            f"{_dataset(cfg)}: another rank cannot open the images of the first rows (see its log for the path "
            f"it looked up); pass {ROOT_FLAG} pointing at the folder that holds the dataset's image paths"
        )


def wrap_ddp(tr: Trainer) -> None:
    """Under torchrun, run the steps through DistributedDataParallel (after a resume has loaded the weights)."""
    if tr.info.enabled:
        tr.ddp_model = torch.nn.parallel.DistributedDataParallel(
            tr.ddp_model, device_ids=[tr.device.index] if tr.device.type == "cuda" else None
        )


# --------------------------------------------------------------------------------------------
# resume, step, checkpoint


def resume(tr: Trainer, state: TrainState) -> Path | None:
    """Load the checkpoint ``cfg.resume`` names (``auto``: the latest in output_dir) into the run and
    ``state``; None for a fresh start, which sets an earlier run's checkpoints aside."""
    cfg, info = tr.cfg, tr.info
    path = ckpt.find_resume(tr.out_dir, cfg.resume)
    saved = ckpt.load(path) if path is not None else None
    _same_start_on_every_rank(tr, int(saved["step"]) if saved is not None else None)
    if path is None or saved is None:
        if info.is_main:
            ckpt.set_aside_stale(tr.out_dir)  # a fresh run must not keep (or later prune into) an old run's files
        return None
    changed = _changed_settings(saved.get("config", {}), to_dict(cfg))
    if changed and cfg.resume == "auto":
        raise ConfigError(
            f"{tr.out_dir} holds a checkpoint of a run with other settings ({', '.join(changed)}); "
            "use another output_dir, --resume none to start over, or --resume PATH to continue from it"
        )
    if changed:
        log.warning("continuing from %s with changed settings: %s", path, ", ".join(changed))
    tr.model.load_state_dict(saved["model"])
    tr.optimizer.load_state_dict(saved["optimizer"])
    tr.scheduler.load_state_dict(saved["scheduler"])
    tr.scaler.load_state_dict(saved["scaler"])
    if tr.teacher is not None:
        if "ema" in saved:
            tr.teacher.load_state_dict(saved["ema"])
        else:
            log.warning("%s holds no EMA teacher; the teacher starts from its model weights", path)
            tr.teacher.load_state_dict(saved["model"])
    state.restore(saved)
    state.last_checkpoint = path
    ckpt.set_rng_state(saved["rng"])
    if saved.get("data_hash") != _data_hash(cfg):
        log.warning("resuming %s with other data settings than it was written with; the order differs", path)
    if int(saved.get("world_size", info.world_size)) != info.world_size:
        log.warning("resuming with %d ranks a checkpoint written by %s; the data order differs",
                    info.world_size, saved.get("world_size"))
    if info.is_main:
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, state.step, state.epoch,
                 state.batch_in_epoch)
    return path


def _same_start_on_every_rank(tr: Trainer, step: int | None) -> None:
    """Every rank resumes from the same step, or all start fresh (one collective)."""
    s = float(step) if step is not None else -1.0
    total, squares = all_reduce_sum([s, s * s], tr.device)
    if total * total != tr.info.world_size * squares:  # the steps differ (their variance is not zero)
        raise ConfigError(
            f"the ranks found different checkpoints to resume from in {tr.out_dir} (rank {tr.info.rank}: "
            f"{'step ' + str(step) if step is not None else 'none'}); output_dir must be storage that every rank sees"
        )


def next_batch(tr: Trainer, state: TrainState, it: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
    """The next batch of this epoch, None at its end; every rank learns the same from one collective.

    A batch in which no rank has a usable image comes back with no ``ids`` on some rank: the caller
    skips the step (all ranks alike). Image skips are counted into ``state``; once this epoch's pass
    ``data.max_missing_fraction`` of the dataset's rows, every rank stops with :class:`ImagesUnavailable`.
    A shard that cannot be read on any rank stops every rank with a :class:`SourceError`.
    """
    batch = next(it, None)
    error = batch.get("error") if batch is not None else None
    local = [float(batch is None), float(batch is not None and not error and len(batch["ids"]) == 0)]
    local += [float(batch["skipped"][k]) for k in SKIP_KEYS] if batch is not None and not error else [0.0] * 3
    local.append(float(error is not None))
    flags = all_reduce_sum(local, tr.device)
    if flags[-1]:
        raise SourceError(error or "another rank stopped: a shard could not be read (see that rank's log)")
    if flags[0]:
        return None
    state.batch_in_epoch += 1
    for k, v in zip(SKIP_KEYS, flags[2:5]):
        state.skipped[k] += int(v)
    state.skipped_in_epoch += int(sum(flags[2:5]))
    if batch is not None and batch.get("skip_example") is not None:
        state.skip_example = batch["skip_example"]
    if state.skipped_in_epoch > tr.missing_budget:  # the same counts on every rank: all stop together
        raise ImagesUnavailable(_too_many_missing(tr, state))
    if flags[1]:
        return {"ids": []}
    return batch


def train_step(tr: Trainer, batch: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """One optimizer step: ``(losses, updated)``.

    The update is made only when the loss and every gradient are finite on every rank (one
    collective, so all ranks decide alike); otherwise the parameters, the optimizer's moments and its
    step count stay as they were (in fp16 the GradScaler lowers its scale, as for any overflow). The
    learning-rate schedule advances either way: a step keeps its place in the schedule.
    """
    cfg = tr.cfg
    local = None
    if tr.local_hn:
        img_f, txt_f, negs, mask, scale, local = encode_batch_dense(tr.ddp_model, batch, tr.spec, tr.device, tr.dtype)
    else:
        img_f, txt_f, negs, mask, scale = encode_batch(tr.ddp_model, batch, tr.spec, tr.device, tr.use_negs, tr.dtype)
    teacher = teacher_features(tr.teacher, batch, tr.spec, tr.device, tr.dtype) if tr.teacher is not None else None
    out = global_losses(img_f, txt_f, negs, mask, scale, cfg.loss, local, teacher)
    out["scale"] = scale
    tr.optimizer.zero_grad(set_to_none=True)
    tr.scaler.scale(out["total"]).backward()
    tr.scaler.unscale_(tr.optimizer)  # a no-op without fp16; before the check, so it sees true gradients
    finite = all_finite(out["total"], tr.model.parameters())
    updated = all_reduce_sum([0.0 if finite else 1.0], tr.device)[0] == 0
    if updated:
        if cfg.optim.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(tr.model.parameters(), cfg.optim.grad_clip_norm)
        tr.scaler.step(tr.optimizer)
    tr.scaler.update()
    out["lr"] = tr.optimizer.param_groups[0]["lr"]
    with warnings.catch_warnings():
        if not updated:  # a first step without an update is meant: the schedule moves on regardless
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        tr.scheduler.step()
    if updated:
        with torch.no_grad():
            tr.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if tr.teacher is not None:
            ema_update(tr.teacher, tr.model, cfg.loss.ema_decay)
    return out, updated


def all_finite(loss: torch.Tensor, params: Iterable[torch.nn.Parameter]) -> bool:
    """Whether the loss and every gradient are finite.

    One sum over all gradients: a NaN or an infinity anywhere makes it non-finite (and a sum that
    overflows means gradients no step should take). It costs far less than a norm.
    """
    grads = [p.grad.detach() for p in params if p.grad is not None]
    ok = torch.isfinite(loss.detach()).all()
    if grads:
        ok = ok & torch.isfinite(torch.stack([g.sum(dtype=torch.float32) for g in grads]).sum())
    return bool(ok)


def snapshot(tr: Trainer, state: TrainState) -> dict[str, Any]:
    """Everything a resumed run needs to continue to the same result (plain types: loads weights_only)."""
    return {
        "version": 1,
        **state.checkpoint_fields(),
        "model": tr.model.state_dict(),
        "optimizer": tr.optimizer.state_dict(),
        "scheduler": tr.scheduler.state_dict(),
        "scaler": tr.scaler.state_dict(),
        **({"ema": tr.teacher.state_dict()} if tr.teacher is not None else {}),
        "rng": ckpt.rng_state(),
        "world_size": tr.info.world_size,
        "data_hash": _data_hash(tr.cfg),
        "config": to_dict(tr.cfg),
    }


def save_checkpoint(tr: Trainer, state: TrainState) -> None:
    """Rank 0 writes this step's checkpoint; every rank learns whether that worked (one collective,
    which is also the barrier) and all stop together with a :class:`ckpt.CheckpointError` if not."""
    error: ckpt.CheckpointError | None = None
    if tr.info.is_main:
        try:
            ckpt.save(tr.out_dir, state.step, snapshot(tr, state), keep=tr.cfg.keep_checkpoints)
        except ckpt.CheckpointError as e:
            error = e
    if all_reduce_sum([float(error is not None)], tr.device)[0]:
        raise error or ckpt.CheckpointError(f"rank 0 could not write the checkpoint of step {state.step} (see its log)")
    state.last_checkpoint = ckpt.step_path(tr.out_dir, state.step)


# --------------------------------------------------------------------------------------------
# the loop


def train(
    config: TrainConfig | dict[str, Any],
    *,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
) -> dict[str, Any]:
    """Train and return a results dict (also written to ``<output_dir>/train_results.json``).

    ``callbacks`` get each step's log record on every rank (progress hooks, tests).
    """
    cfg = config if isinstance(config, TrainConfig) else train_config(config)
    cfg.validate()
    started_pg = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = init_distributed()
    started_pg = started_pg and info.enabled
    try:
        return _train(cfg, info, callbacks)
    finally:
        if started_pg:
            cleanup()


def _train(cfg: TrainConfig, info: DistInfo, callbacks: Sequence[Callable[[dict[str, Any]], None]]) -> dict[str, Any]:
    t_start = time.time()
    tr = setup(cfg, info)
    try:
        return _train_run(tr, t_start, callbacks)
    finally:
        tr.stream.index.close()  # this process's shard handles: an error must not keep them open


def _train_run(tr: Trainer, t_start: float, callbacks: Sequence[Callable[[dict[str, Any]], None]]) -> dict[str, Any]:
    from tqdm.auto import tqdm

    cfg, info = tr.cfg, tr.info
    state = TrainState(thresholds={f: None for f in tr.families})
    resumed = resume(tr, state)
    state.resumed_from_step = state.step if resumed is not None else None
    wrap_ddp(tr)

    runlog = RunLog(tr.out_dir, _log_fields(tr.families), tensorboard=cfg.tensorboard,
                    resume_step=state.step if resumed is not None else None, enabled=info.is_main)
    if info.is_main:
        write_json_atomic(to_dict(cfg), tr.out_dir / "train_config.json", sort_keys=True)
    loader = make_loader(tr.stream, cfg.data.workers, pin_memory=tr.device.type == "cuda")
    bar = tqdm(total=tr.total_steps, initial=state.step, unit="step", dynamic_ncols=True,
               disable=not (info.is_main and cfg.progress), desc="train")
    tr.model.train()
    try:
        _run(tr, state, loader, runlog, bar, callbacks)
        if state.step == 0:  # every batch was skipped: there is nothing to save and no model to use
            raise ImagesUnavailable(unresolved_message(
                f"{_dataset(cfg)}: the run trained 0 steps, no batch held a usable image "
                f"({describe_counts(state.skipped)}); no weights were written",
                state.skip_example, cfg.data.image_root, ROOT_FLAG, hint=CARD_HINT))
        save_checkpoint(tr, state)
    finally:
        bar.close()
        runlog.close()
        _stop_workers(loader)
    return _finish(tr, state, t_start)


def _stop_workers(loader: Any) -> None:
    """End the loader's persistent worker processes now, not whenever the garbage collector meets
    them (from inside the collector their shutdown can stall for seconds)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


def _run(tr: Trainer, state: TrainState, loader: Any, runlog: RunLog, bar: Any,
         callbacks: Sequence[Callable[[dict[str, Any]], None]]) -> None:
    """Steps until ``total_steps`` or the last epoch: checkpoints every ``checkpoint_every`` steps and
    at each epoch's end, but not while a run of non-finite steps lasts (so the latest is a good one)."""
    cfg = tr.cfg
    t_last = time.perf_counter()
    while state.step < tr.total_steps and state.epoch < cfg.optim.epochs:
        tr.stream.set_position(state.epoch, state.batch_in_epoch)
        it = iter(loader)
        epoch_done = False
        while state.step < tr.total_steps:
            batch = next_batch(tr, state, it)
            if batch is None:
                epoch_done = True
                break
            if not batch["ids"]:
                log.warning("a rank's batch %d held no usable image; skipping the step", state.batch_in_epoch - 1)
                continue
            out, updated = train_step(tr, batch)
            state.step += 1
            state.samples_seen += int(out["global_batch"])
            loss_value = float(out["total"].detach())
            if updated:
                state.nonfinite_streak = 0
                state.first_loss = loss_value if state.first_loss is None else state.first_loss
                state.losses_tail = (state.losses_tail + [loss_value])[-20:]
            else:
                state.skipped_nonfinite += 1
                state.nonfinite_streak += 1
                if tr.info.is_main:
                    what = ("a gradient, or the loss on another rank," if math.isfinite(loss_value)
                            else f"the loss ({loss_value})")
                    log.warning("step %d: %s is not finite; no update (%d in a row, the run stops at %d)",
                                state.step, what, state.nonfinite_streak, cfg.optim.max_nonfinite_steps)
            now = time.perf_counter()
            record = _record(state, out, tr.families, out["global_batch"] / max(now - t_last, 1e-9))
            t_last = now
            if updated and "thresholds" in out:
                state.thresholds.update({f: record[f"theta_{f}"] for f in tr.families})
            if state.step % cfg.log_every == 0 or state.step == tr.total_steps or not updated:
                runlog.log(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{record['samples_per_s']:.1f}", refresh=False)
            for cb in callbacks:
                cb(record)
            if state.nonfinite_streak >= cfg.optim.max_nonfinite_steps:
                raise NonFiniteError(
                    f"the loss or the gradients were not finite for {state.nonfinite_streak} steps in a row "
                    f"(steps {state.step - state.nonfinite_streak + 1}-{state.step}), so the run stopped; "
                    f"{_last_good(state)}. Lower optim.lr, set optim.grad_clip_norm or train in bf16/fp32, "
                    "then resume"
                )
            if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.step < tr.total_steps
                    and state.nonfinite_streak == 0):
                save_checkpoint(tr, state)
        if epoch_done:
            state.epoch += 1
            state.batch_in_epoch = 0
            state.skipped_in_epoch = 0
            if state.step < tr.total_steps and state.nonfinite_streak == 0:
                save_checkpoint(tr, state)


def _too_many_missing(tr: Trainer, state: TrainState) -> str:
    cfg = tr.cfg
    rows = tr.stream.index.num_rows
    n = state.skipped_in_epoch
    what = (
        f"{_dataset(cfg)}: {n} image{'s' if n != 1 else ''} of epoch {state.epoch} (by its batch "
        f"{state.batch_in_epoch}, step {state.step}) {'were' if n != 1 else 'was'} missing or unreadable, more than "
        f"data.max_missing_fraction = {cfg.data.max_missing_fraction:g} of the dataset's {rows} rows allows "
        f"({tr.missing_budget}), so the run stopped; {_last_checkpoint(state)}; over the run: "
        f"{describe_counts(state.skipped)}"
    )
    advice = (
        f"put the missing images where {ROOT_FLAG} points (or point it at a folder that holds them all) and "
        "replace unreadable ones, or raise data.max_missing_fraction to train without them; a rerun resumes "
        "from the last checkpoint"
    )
    return unresolved_message(what, state.skip_example, cfg.data.image_root, ROOT_FLAG, advice)


def _last_checkpoint(state: TrainState) -> str:
    if state.last_checkpoint is None:
        return "no checkpoint was written yet"
    return f"the last good checkpoint is {state.last_checkpoint}"


def _last_good(state: TrainState) -> str:
    if state.last_checkpoint is None:
        return "no checkpoint was written before them"
    return f"the last good checkpoint is {state.last_checkpoint}"


def _finish(tr: Trainer, state: TrainState, t_start: float) -> dict[str, Any]:
    """Results of the run; rank 0 writes the final weights and ``train_results.json``."""
    info = tr.info
    results: dict[str, Any] = {
        "steps": state.step,
        "total_steps": tr.total_steps,
        "steps_per_epoch": tr.steps_per_epoch,
        "epoch": state.epoch,
        "samples_seen": state.samples_seen,
        "world_size": info.world_size,
        "first_loss": state.first_loss,
        "final_loss": sum(state.losses_tail) / len(state.losses_tail) if state.losses_tail else None,
        "skipped_images": dict(state.skipped),
        "skipped_nonfinite": state.skipped_nonfinite,
        "thresholds": dict(state.thresholds),
        "last_checkpoint": str(state.last_checkpoint) if state.last_checkpoint else None,
        "resumed_from_step": state.resumed_from_step,
        "output_dir": str(tr.out_dir),
        "wall_s": round(time.time() - t_start, 3),
    }
    if sum(state.skipped.values()):
        log.warning("skipped images over the run: %s", state.skipped)
    if state.skipped_nonfinite and info.is_main:
        log.warning("%d step(s) made no update: their loss or gradients were not finite", state.skipped_nonfinite)
    if info.is_main:
        weights = save_weights(tr.model, tr.out_dir / "final", tr.built.model_cfg, tr.built.preprocess)
        results["final_weights"] = str(weights)
        results["model_name"] = tr.built.name
        write_json_atomic(results, tr.out_dir / "train_results.json", sort_keys=True)
        log.info("trained %d steps; weights in %s", state.step, weights)
    barrier()
    return results


def _log_fields(families: Sequence[str]) -> list[str]:
    fields = ["step", "epoch", "lr", "loss", "contrastive", "imc", "cmr", "global_hn", "local_hn", "distill",
              "logit_scale", "global_batch", "samples_per_s"]
    fields += [f"theta_{f}" for f in families] + [f"gap_{f}" for f in families] + [f"valid_{f}" for f in families]
    fields += [f"skipped_{k}" for k in SKIP_KEYS] + ["skipped_nonfinite"]
    return fields


def _data_hash(cfg: TrainConfig) -> str:
    d = to_dict(cfg.data)
    d.pop("workers", None)
    d.pop("verify", None)  # checking the data does not change it
    d.pop("max_missing_fraction", None)
    return config_hash({"data": d, "seed": cfg.seed})


def _record(state: TrainState, out: dict[str, Any], families: Sequence[str], sps: float) -> dict[str, Any]:
    """A step's log record (one row of metrics.jsonl / metrics.csv)."""
    rec: dict[str, Any] = {
        "step": state.step,
        "epoch": state.epoch,
        "lr": out["lr"],
        "loss": float(out["total"].detach()),
        "contrastive": float(out["contrastive"]) if "contrastive" in out else None,
        "imc": float(out["imc"]) if "imc" in out else None,
        "cmr": float(out["cmr"]) if "cmr" in out else None,
        **{k: float(out[k]) if k in out else None for k in ("global_hn", "local_hn", "distill")},
        "logit_scale": float(out["scale"].detach()),
        "global_batch": int(out["global_batch"]),
        "samples_per_s": sps,
    }
    theta = out.get("thresholds")
    gaps = out.get("gaps")
    valid = out.get("valid")
    for i, f in enumerate(families):
        rec[f"theta_{f}"] = _maybe(theta, i)
        rec[f"gap_{f}"] = _maybe(gaps, i)
        rec[f"valid_{f}"] = int(valid[i]) if valid is not None else None
    for k, v in state.skipped.items():
        rec[f"skipped_{k}"] = v
    rec["skipped_nonfinite"] = state.skipped_nonfinite
    return rec


def _maybe(t: torch.Tensor | None, i: int) -> float | None:
    if t is None:
        return None
    v = float(t[i])
    return None if math.isnan(v) else v
