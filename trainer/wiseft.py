"""WiSE-FT (Wortsman et al., 2022): weight-space ensembles of a base model and its fine-tune.

``theta(alpha) = (1 - alpha) * theta_base + alpha * theta_finetuned`` for every floating-point tensor;
alpha 0 is the base and alpha 1 the fine-tune, bit for bit. Batch-norm running statistics are float
buffers and are interpolated like weights; a batch-norm layer's batch counter (``num_batches_tracked``,
read only by layers without a momentum) is the base's at alpha 0 and the fine-tune's otherwise. Other
non-float buffers (token ids, position indices) must agree between the two and are copied. Each interpolated model is written the way
``hardneg train`` writes its final weights (``trainer.models.save_weights``), so plain open_clip loads
it: ``open_clip.create_model(name, pretrained=<dir>/open_clip_pytorch_model.bin)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_json_atomic
from pipeline.core.errors import ConfigError, ModelError
from trainer.config import ModelConfig

log = logging.getLogger(__name__)

SWEEP_JSON = "wiseft.json"


@dataclass
class WiseFTConfig:
    """Settings of ``hardneg wise-ft``."""

    #: the architecture and the base weights (``model.pretrained``: a tag or a weights file)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: the fine-tuned weights file (``hardneg train``'s ``final/open_clip_pytorch_model.bin``)
    finetuned: str = ""
    alphas: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    out: str = "wiseft"

    def validate(self) -> None:
        self.model.validate()
        if not self.finetuned:
            raise ConfigError("finetuned: the fine-tuned weights file is required")
        if not self.alphas:
            raise ConfigError("alphas: give at least one mixing weight")
        bad = [a for a in self.alphas if not 0.0 <= a <= 1.0]
        if bad:
            raise ConfigError(f"alphas must lie in [0, 1], got {bad}")
        if len({alpha_name(a) for a in self.alphas}) != len(self.alphas):
            raise ConfigError(f"alphas repeat a value: {self.alphas}")


def alpha_name(alpha: float) -> str:
    """The folder of one interpolated model: ``alpha_0.30``."""
    return f"alpha_{alpha:.2f}"


def interpolate(base: dict[str, Any], finetuned: dict[str, Any], alpha: float) -> dict[str, Any]:
    """The WiSE-FT state dict; endpoints are returned exactly (no float round trip)."""
    import torch

    if set(base) != set(finetuned):
        diff = sorted(set(base) ^ set(finetuned))
        raise ModelError(f"base and fine-tuned weights have different tensors: {diff[:5]}")
    out: dict[str, Any] = {}
    for k, b in base.items():
        f = finetuned[k]
        if b.shape != f.shape:
            raise ModelError(f"tensor {k!r} has shape {tuple(b.shape)} in the base, {tuple(f.shape)} fine-tuned")
        if not torch.is_floating_point(b):
            if k.endswith("num_batches_tracked"):
                out[k] = (b if alpha == 0.0 else f).clone()
                continue
            if not torch.equal(b, f):
                raise ModelError(f"non-float tensor {k!r} differs between base and fine-tune; cannot interpolate")
            out[k] = b.clone()
        elif alpha == 0.0:
            out[k] = b.clone()
        elif alpha == 1.0:
            out[k] = f.clone()
        else:
            out[k] = torch.lerp(b.float(), f.float(), alpha).to(b.dtype)
    return out


def _load_state(path: str) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as e:
        raise ModelError(f"cannot read weights {path}: {e}") from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "step" in state:
        state = state["model"]  # a training checkpoint (checkpoints/step_*.pt) rather than final weights
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def wise_ft(cfg: WiseFTConfig) -> dict[str, Any]:
    """Write one open_clip-loadable model per alpha under ``cfg.out``; returns the sweep record."""
    from trainer.models import build_model, save_weights

    cfg.validate()
    built = build_model(cfg.model)
    base = {k: v.detach().cpu() for k, v in built.model.state_dict().items()}
    tuned = _load_state(cfg.finetuned)
    out = Path(cfg.out)
    models = []
    for alpha in cfg.alphas:
        built.model.load_state_dict(interpolate(base, tuned, alpha))
        path = save_weights(built.model, out / alpha_name(alpha), built.model_cfg, built.preprocess)
        models.append({"alpha": alpha, "weights": str(path)})
        log.info("alpha %.2f -> %s", alpha, path)
    record = {"model": built.name, "base": cfg.model.pretrained, "finetuned": cfg.finetuned, "models": models}
    write_json_atomic(record, out / SWEEP_JSON)
    return record
