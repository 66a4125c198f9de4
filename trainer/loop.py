"""``train(config) -> results``: the CE-CLIP fine-tuning loop on one process, ``torchrun`` DDP or CPU.

One step: encode the images and, in one text batch, the positives plus only the *valid* negatives
(invalid ones are never encoded); gather features across ranks with gradients; compute the CE-CLIP
objective on the global batch; AdamW with warmup + cosine. Mixed precision is autocast on the GPU
(bf16, or fp16 with a GradScaler); the CPU runs fp32.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from pipeline.core.atomic import write_json_atomic
from pipeline.core.config import config_hash, to_dict
from pipeline.core.errors import ConfigError
from trainer import checkpoint as ckpt
from trainer.config import LossConfig, TrainConfig, train_config
from trainer.data import ImageSpec, NegativeStream, ShardIndex, make_loader, normalize_images
from trainer.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    cleanup,
    gather_no_grad,
    gather_with_grad,
    init_distributed,
)
from trainer.losses import ce_clip_loss
from trainer.models import build_model, save_weights
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
     "data.workers"}
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
    """Dotted names of result-affecting settings that differ between a checkpoint and this run."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if k not in _RUN_ONLY and a.get(k) != b.get(k))


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
    img_f, txt_f, scale = out[0].float(), out[1].float(), out[2].float()
    negatives = None
    if mask is not None:
        k = mask.shape[1]
        where = mask.reshape(-1).nonzero().squeeze(1)
        flat = txt_f.new_zeros((b * k, txt_f.shape[1])).index_copy(0, where, txt_f[b:])
        negatives = flat.view(b, k, -1)
    return img_f, txt_f[:b], negatives, mask, scale


def global_losses(
    img_f: torch.Tensor,
    txt_f: torch.Tensor,
    negatives: torch.Tensor | None,
    mask: torch.Tensor | None,
    scale: torch.Tensor,
    loss_cfg: LossConfig,
) -> dict[str, Any]:
    """Gather features from every rank (with gradients) and compute the objective on the global batch."""
    if negatives is not None:
        packed = torch.cat([img_f[:, None], txt_f[:, None], negatives], dim=1)
        packed = gather_with_grad(packed)
        img_g, txt_g, neg_g = packed[:, 0], packed[:, 1], packed[:, 2:]
        mask_g = gather_no_grad(mask)
    else:
        packed = gather_with_grad(torch.stack([img_f, txt_f], dim=1))
        img_g, txt_g, neg_g, mask_g = packed[:, 0], packed[:, 1], None, None
    out = ce_clip_loss(img_g, txt_g, neg_g, mask_g, scale, loss_cfg)
    out["global_batch"] = img_g.shape[0]
    return out


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


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
    from tqdm.auto import tqdm

    t_start = time.time()
    out_dir = Path(cfg.output_dir)
    device = resolve_device(cfg.model.device, info)
    dtype = amp_dtype(cfg.model.precision, device)
    if device.type == "cpu" and cfg.model.precision != "fp32" and info.is_main:
        log.info("training on the CPU in fp32 (precision %r applies to GPUs)", cfg.model.precision)

    torch.manual_seed(cfg.seed)
    built = build_model(cfg.model, device)
    model = built.model
    spec = ImageSpec.from_preprocess(built.preprocess)
    families = list(cfg.data.families)
    use_negs = cfg.loss.needs_negatives and bool(families)

    index = ShardIndex.from_paths(cfg.data.paths, cfg.data.split)
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

    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, total_steps, cfg.optim.schedule)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    step, epoch, batch_in_epoch, samples_seen = 0, 0, 0, 0
    skipped = dict.fromkeys(SKIP_KEYS, 0)
    thresholds: dict[str, float | None] = {f: None for f in families}
    resume_path = ckpt.find_resume(out_dir, cfg.resume)
    if resume_path is None and info.is_main:
        ckpt.set_aside_stale(out_dir)  # a fresh run must not keep (or later prune into) an old run's files
    if resume_path is not None:
        state = ckpt.load(resume_path)
        changed = _changed_settings(state.get("config", {}), to_dict(cfg))
        if changed and cfg.resume == "auto":
            raise ConfigError(
                f"{out_dir} holds a checkpoint of a run with other settings ({', '.join(changed)}); "
                "use another output_dir, --resume none to start over, or --resume PATH to continue from it"
            )
        if changed:
            log.warning("continuing from %s with changed settings: %s", resume_path, ", ".join(changed))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        samples_seen = int(state["samples_seen"])
        skipped.update(state.get("skipped", {}))
        thresholds.update(state.get("thresholds", {}))
        ckpt.set_rng_state(state["rng"])
        if state.get("data_hash") != _data_hash(cfg):
            log.warning("resuming %s with other data settings than it was written with; the order differs", resume_path)
        if int(state.get("world_size", info.world_size)) != info.world_size:
            log.warning("resuming with %d ranks a checkpoint written by %s; the data order differs",
                        info.world_size, state.get("world_size"))
        if info.is_main:
            log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_path, step, epoch, batch_in_epoch)

    ddp_model: torch.nn.Module = model
    if info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    fields = ["step", "epoch", "lr", "loss", "contrastive", "imc", "cmr", "logit_scale", "global_batch",
              "samples_per_s"]
    fields += [f"theta_{f}" for f in families] + [f"gap_{f}" for f in families] + [f"valid_{f}" for f in families]
    fields += [f"skipped_{k}" for k in SKIP_KEYS]
    runlog = RunLog(out_dir, fields, tensorboard=cfg.tensorboard,
                    resume_step=step if resume_path is not None else None, enabled=info.is_main)
    if info.is_main:
        write_json_atomic(to_dict(cfg), out_dir / "train_config.json", sort_keys=True)

    loader = make_loader(stream, cfg.data.workers, pin_memory=device.type == "cuda")
    bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
               disable=not (info.is_main and cfg.progress), desc="train")
    losses_tail: list[float] = []
    first_loss: float | None = None
    last_ckpt: Path | None = resume_path

    def snapshot() -> dict[str, Any]:
        return {
            "version": 1,
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "samples_seen": samples_seen,
            "model": _unwrap(ddp_model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "thresholds": dict(thresholds),
            "skipped": dict(skipped),
            "rng": ckpt.rng_state(),
            "world_size": info.world_size,
            "data_hash": _data_hash(cfg),
            "config": to_dict(cfg),
        }

    def save_checkpoint() -> None:
        nonlocal last_ckpt
        if info.is_main:
            last_ckpt = ckpt.save(out_dir, step, snapshot(), keep=cfg.keep_checkpoints)
        barrier()

    model.train()
    t_last = time.perf_counter()
    try:
        while step < total_steps and epoch < cfg.optim.epochs:
            stream.set_position(epoch, batch_in_epoch)
            it = iter(loader)
            epoch_done = False
            while step < total_steps:
                batch = next(it, None)
                # one collective tells every rank whether any rank ran out or got only bad images
                local = [float(batch is None), float(batch is not None and len(batch["ids"]) == 0)]
                local += [float(batch["skipped"][k]) for k in SKIP_KEYS] if batch is not None else [0.0] * 3
                flags = all_reduce_sum(local, device)
                if flags[0]:
                    epoch_done = True
                    break
                batch_in_epoch += 1
                for k, v in zip(SKIP_KEYS, flags[2:]):
                    skipped[k] += int(v)
                if flags[1]:
                    log.warning("a rank's batch %d held no usable image; skipping the step", batch_in_epoch - 1)
                    continue

                img_f, txt_f, negs, mask, scale = encode_batch(ddp_model, batch, spec, device, use_negs, dtype)
                out = global_losses(img_f, txt_f, negs, mask, scale, cfg.loss)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(out["total"]).backward()
                if cfg.optim.grad_clip_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                with torch.no_grad():
                    _unwrap(ddp_model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                step += 1
                samples_seen += int(out["global_batch"])

                loss_value = float(out["total"].detach())
                first_loss = loss_value if first_loss is None else first_loss
                losses_tail = (losses_tail + [loss_value])[-20:]
                now = time.perf_counter()
                record = _record(step, epoch, lr, loss_value, out, scale, families, skipped,
                                 out["global_batch"] / max(now - t_last, 1e-9))
                t_last = now
                if "thresholds" in out:
                    thresholds.update({f: record[f"theta_{f}"] for f in families})
                if step % cfg.log_every == 0 or step == total_steps:
                    runlog.log(record)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{record['samples_per_s']:.1f}", refresh=False)
                for cb in callbacks:
                    cb(record)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
                    save_checkpoint()
            if epoch_done:
                epoch += 1
                batch_in_epoch = 0
                if step < total_steps:
                    save_checkpoint()
        save_checkpoint()
    finally:
        bar.close()
        runlog.close()

    results: dict[str, Any] = {
        "steps": step,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "epoch": epoch,
        "samples_seen": samples_seen,
        "world_size": info.world_size,
        "first_loss": first_loss,
        "final_loss": sum(losses_tail) / len(losses_tail) if losses_tail else None,
        "skipped_images": dict(skipped),
        "thresholds": dict(thresholds),
        "last_checkpoint": str(last_ckpt) if last_ckpt else None,
        "output_dir": str(out_dir),
        "wall_s": round(time.time() - t_start, 3),
    }
    if sum(skipped.values()):
        log.warning("skipped images over the run: %s", skipped)
    if info.is_main:
        weights = save_weights(_unwrap(ddp_model), out_dir / "final", built.model_cfg, built.preprocess)
        results["final_weights"] = str(weights)
        results["model_name"] = built.name
        write_json_atomic(results, out_dir / "train_results.json", sort_keys=True)
        log.info("trained %d steps; weights in %s", step, weights)
    barrier()
    return results


def _data_hash(cfg: TrainConfig) -> str:
    d = to_dict(cfg.data)
    d.pop("workers", None)
    return config_hash({"data": d, "seed": cfg.seed})


def _record(step, epoch, lr, loss_value, out, scale, families, skipped, sps) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "step": step,
        "epoch": epoch,
        "lr": lr,
        "loss": loss_value,
        "contrastive": float(out["contrastive"]) if "contrastive" in out else None,
        "imc": float(out["imc"]) if "imc" in out else None,
        "cmr": float(out["cmr"]) if "cmr" in out else None,
        "logit_scale": float(scale.detach()),
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
    for k, v in skipped.items():
        rec[f"skipped_{k}"] = v
    return rec


def _maybe(t: torch.Tensor | None, i: int) -> float | None:
    if t is None:
        return None
    v = float(t[i])
    return None if math.isnan(v) else v
