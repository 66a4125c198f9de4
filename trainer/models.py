"""Building open_clip models (by name, pretrained tag, local weights or a custom config JSON).

The project's own small configs live in ``trainer/model_configs/*.json`` (``hardneg-tiny``: a 3-layer
ViT and text transformer of width 96 on 64x64 images, for tests, CPU runs and the synthetic world).
:func:`register_model_configs` makes them known to open_clip by name, so after it
``open_clip.create_model_and_transforms("hardneg-tiny", pretrained=PATH)`` works.

:class:`DenseForward` runs an open_clip ``CLIP`` with a ViT image tower and the built-in text tower
once and returns, beside the usual pooled features, the projected patch and token embeddings that
FSC-CLIP's local loss reads; its pooled features are those of ``model(images, text)``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_bytes_atomic
from pipeline.core.errors import ConfigError, ModelError
from trainer.config import ModelConfig

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "model_configs"
#: file names open_clip's ``local-dir:`` loader looks for
WEIGHTS_NAME = "open_clip_pytorch_model.bin"
CONFIG_NAME = "open_clip_config.json"

_registered = False


def register_model_configs() -> None:
    """Make the configs in ``trainer/model_configs`` loadable by name (idempotent)."""
    global _registered
    if _registered:
        return
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    _registered = True


def resolve_name(cfg: ModelConfig) -> str:
    """The open_clip name to build; registers a custom config JSON under its file stem."""
    register_model_configs()
    if cfg.model_config:
        import open_clip

        path = Path(cfg.model_config)
        if not path.is_file():
            raise ConfigError(f"model.model_config {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"model.model_config {path} is not valid JSON: {e}") from e
        if not all(k in data for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise ConfigError(f"model.model_config {path} needs embed_dim, vision_cfg and text_cfg")
        if cfg.name and cfg.name not in (path.stem, ModelConfig.name):
            raise ConfigError(
                f"model.name {cfg.name!r} differs from the config file's stem {path.stem!r}; "
                "open_clip registers a config JSON under its file name"
            )
        open_clip.add_model_config(path)
        return path.stem
    return cfg.name


@dataclass
class BuiltModel:
    model: Any
    tokenizer: Any
    name: str
    #: open_clip's preprocess config of the model: size, mean, std, interpolation, resize_mode
    preprocess: dict[str, Any]
    #: the architecture config (embed_dim, vision_cfg, text_cfg) when open_clip knows it
    model_cfg: dict[str, Any] | None


def build_model(cfg: ModelConfig, device: Any = "cpu") -> BuiltModel:
    """Create the model (fp32 weights; autocast handles mixed precision) and its tokenizer."""
    import open_clip

    name = resolve_name(cfg)
    pretrained = cfg.pretrained if cfg.pretrained and cfg.pretrained.lower() not in ("none", "null") else None
    try:
        model = open_clip.create_model(name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    except RuntimeError as e:
        msg = str(e)
        if "not found" in msg and "Model config" in msg:
            raise ConfigError(f"unknown open_clip model {name!r}: {msg}") from e
        raise ModelError(
            f"cannot build open_clip model {name!r} with pretrained={pretrained!r}: {msg}. "
            "Pretrained tags download weights on first use; without network pass a local file."
        ) from e
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    preprocess = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    return BuiltModel(model, tokenizer, name, preprocess, open_clip.get_model_config(name))


def save_weights(model: Any, out_dir: str | Path, model_cfg: dict[str, Any] | None, preprocess: dict[str, Any]) -> Path:
    """Write weights open_clip loads two ways.

    ``create_model_and_transforms(name, pretrained=<dir>/open_clip_pytorch_model.bin)`` and
    ``create_model_and_transforms("local-dir:<dir>")`` (the config JSON travels alongside).
    """
    from trainer.checkpoint import save_state

    out = Path(out_dir)
    weights = out / WEIGHTS_NAME
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_state(state, weights)
    if model_cfg is not None:
        pp = {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess.items()}
        blob = json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pp}, indent=2)
        write_bytes_atomic(blob.encode("utf-8"), out / CONFIG_NAME)
    return weights


def dense_support_error(model: Any, name: str) -> str | None:
    """Why :class:`DenseForward` cannot run ``model`` (named ``name``), or None when it can."""
    import open_clip
    from open_clip.transformer import VisionTransformer

    if type(model) is not open_clip.CLIP:
        return (f"model {name!r} is an open_clip {type(model).__name__}; the local hard-negative loss "
                "(loss.local_hn) needs an open_clip CLIP with the built-in text tower")
    from open_clip.modified_resnet import ModifiedResNet

    visual = model.visual
    if isinstance(visual, ModifiedResNet):
        return None
    if not isinstance(visual, VisionTransformer):
        return (f"model {name!r} has a {type(visual).__name__} image tower; the local hard-negative loss "
                "(loss.local_hn) needs patch embeddings, i.e. a ViT or ModifiedResNet image tower")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", None) not in ("tok", "avg"):
        return (f"model {name!r} pools its ViT with {getattr(visual, 'pool_type', '?')!r}/attention pooling; "
                "the local hard-negative loss (loss.local_hn) supports class-token or average pooling")
    if not all(hasattr(visual, a) for a in ("_embeds", "_pool", "transformer")):
        return f"this open_clip version's VisionTransformer lacks _embeds/_pool, which loss.local_hn needs (model {name!r})"
    return None


class DenseForward:
    """Builds (lazily, so torch loads only when used) an ``nn.Module`` wrapping an open_clip CLIP.

    ``DenseForward.wrap(model, name)`` returns a module whose ``forward(images, text)`` gives
    ``(image_features, text_features, logit_scale, patches (B, P, D), words (N, L, D))``: the first
    three as ``model(images, text)`` gives them (unit features, ``exp``-ed scale), the last two the
    projected patch embeddings (no class token) and the projected per-token text embeddings after
    the final layer norm. A ModifiedResNet's patches are its attention pool's outputs at every
    location of the last feature map (the pool attends from all of them and keeps the first, the
    mean token, as the image feature). The wrapper holds no parameters of its own.
    """

    @staticmethod
    def wrap(model: Any, name: str) -> Any:
        why = dense_support_error(model, name)
        if why:
            raise ConfigError(why)
        return _dense_module()(model)


def _dense_module() -> Any:
    import torch
    import torch.nn.functional as F
    from open_clip.transformer import text_global_pool

    def project(x: Any, proj: Any) -> Any:
        if proj is None:
            return x
        return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj

    def resnet_tokens(v: Any, images: Any) -> tuple[Any, Any]:
        """A ModifiedResNet's pooled feature and its attention pool's output at every location."""
        x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images.to(v.conv1.weight.dtype))))))
        ap = v.attnpool
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(2, 0, 1)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0) + ap.positional_embedding[:, None, :].to(x.dtype)
        out, _ = F.multi_head_attention_forward(
            query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=ap.num_heads,
            q_proj_weight=ap.q_proj.weight, k_proj_weight=ap.k_proj.weight, v_proj_weight=ap.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([ap.q_proj.bias, ap.k_proj.bias, ap.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=ap.c_proj.weight, out_proj_bias=ap.c_proj.bias,
            use_separate_proj_weight=True, training=ap.training, need_weights=False,
        )
        return out[0], out[1:].permute(1, 0, 2)

    class _Dense(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: Any, text: Any) -> tuple[Any, Any, Any, Any, Any]:
            m = self.model
            v = m.visual
            if hasattr(v, "attnpool"):
                image, patches = resnet_tokens(v, images)
            else:
                x = v.transformer(v._embeds(images))
                pooled, patches = v._pool(x)
                image = project(pooled, v.proj)
                patches = project(patches, v.proj)
            cast = m.transformer.get_cast_dtype()
            t = m.token_embedding(text).to(cast) + m.positional_embedding.to(cast)
            t = m.ln_final(m.transformer(t, attn_mask=m.attn_mask))
            words = project(t, m.text_projection)
            pooled_t = text_global_pool(t, text, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
            text_f = project(pooled_t, m.text_projection)
            return F.normalize(image, dim=-1), F.normalize(text_f, dim=-1), m.logit_scale.exp(), patches, words

    return _Dense
