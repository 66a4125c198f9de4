"""The CE-CLIP objective as pure tensor functions.

Shapes: ``image`` and ``text`` are ``(B, D)``, ``negatives`` is ``(B, K, D)`` (one hard negative
per family), ``neg_mask`` is ``(B, K)`` bool (False where a caption had no candidate of that family),
``logit_scale`` is the scale ``s`` itself (``exp`` already applied). Features are L2-normalised by
the caller; in DDP the caller passes the gathered global batch. Invalid negatives never enter a
softmax or an average: they are selected out, not fed in as placeholder text.

Everything is computed in the dtype it gets; the training loop passes float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.config import THRESHOLD_POLICIES, LossConfig


def _zero(like: Tensor) -> Tensor:
    """A zero that keeps the graph connected, so backward still reaches every parameter."""
    return like.sum() * 0.0


def contrastive_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor,
    negatives: Tensor | None = None,
    neg_mask: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE; image->text also ranks the batch's valid hard negatives (NegCLIP).

    image->text: each image's softmax runs over the B positives plus every valid negative of the
    batch (``B + V`` columns); text->image: each positive over the B images.
    """
    b = image.shape[0]
    candidates = text
    if negatives is not None:
        if neg_mask is None:
            raise ValueError("neg_mask is required with negatives")
        valid = negatives.reshape(-1, negatives.shape[-1])[neg_mask.reshape(-1)]
        candidates = torch.cat([text, valid], dim=0)
    labels = torch.arange(b, device=image.device)
    logits_i2t = logit_scale * image @ candidates.T
    logits_t2i = logit_scale * text @ image.T
    return (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels)) / 2


def imc_loss(text: Tensor, negatives: Tensor, neg_mask: Tensor, logit_scale: Tensor) -> Tensor:
    """Intra-modal contrastive loss: each caption must be nearer itself than its own negatives.

    Row i is a softmax over ``[s<t_i,t_i>, s<t_i,n_ik> for valid k]`` with the first as target;
    rows without any valid negative carry no information and are left out of the mean.
    """
    rows = neg_mask.any(dim=1)
    if not bool(rows.any()):
        return _zero(text) + _zero(negatives)
    pos = logit_scale * (text * text).sum(-1, keepdim=True)
    neg = logit_scale * torch.einsum("bd,bkd->bk", text, negatives)
    neg = neg.masked_fill(~neg_mask, float("-inf"))
    logits = torch.cat([pos, neg], dim=1)[rows]
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def cmr_thresholds(
    gaps: Tensor,
    neg_mask: Tensor,
    policy: str = "mean",
    fixed: float = 0.0,
    upper_bound: float = 10.0,
) -> Tensor:
    """Per-family thresholds ``(K,)`` from the detached gaps ``s<I_i,T_i> - s<I_i,T_i^k>``.

    ``mean``/``max`` take the batch mean/max gap over valid pairs; ``fixed`` uses ``fixed``. All are
    clamped to ``[0, upper_bound]``. A family with no valid pair in the batch gets NaN (nothing to
    threshold; the loss never reads it).
    """
    if policy not in THRESHOLD_POLICIES:
        raise ValueError(f"unknown threshold policy {policy!r}; known: {list(THRESHOLD_POLICIES)}")
    gaps = gaps.detach()
    count = neg_mask.sum(dim=0)
    if policy == "mean":
        theta = torch.where(neg_mask, gaps, torch.zeros_like(gaps)).sum(dim=0) / count.clamp(min=1)
    elif policy == "max":
        theta = gaps.masked_fill(~neg_mask, float("-inf")).amax(dim=0)
    else:
        theta = torch.full_like(gaps[0], float(fixed))
    theta = theta.clamp(min=0.0, max=float(upper_bound))
    return torch.where(count > 0, theta, torch.full_like(theta, float("nan")))


def cmr_loss(
    image: Tensor,
    text: Tensor,
    negatives: Tensor,
    neg_mask: Tensor,
    logit_scale: Tensor,
    policy: str = "mean",
    fixed: float = 0.0,
    upper_bound: float = 10.0,
) -> tuple[Tensor, Tensor]:
    """Cross-modal rank loss with adaptive per-family thresholds; returns ``(loss, thresholds)``.

    For each valid (i, k): ``relu(theta_k + s<I_i,T_i^k> - s<I_i,T_i>)``, averaged over valid pairs.
    """
    pos = logit_scale * (image * text).sum(-1)
    neg = logit_scale * torch.einsum("bd,bkd->bk", image, negatives)
    gaps = pos[:, None] - neg
    theta = cmr_thresholds(gaps, neg_mask, policy, fixed, upper_bound)
    if not bool(neg_mask.any()):
        return _zero(image) + _zero(text) + _zero(negatives), theta
    theta_used = torch.nan_to_num(theta, nan=0.0)
    violation = F.relu(theta_used[None, :] - gaps)
    return violation[neg_mask].mean(), theta


def mean_gaps(image: Tensor, text: Tensor, negatives: Tensor, neg_mask: Tensor, logit_scale: Tensor) -> Tensor:
    """Per-family mean gap ``s<I,T> - s<I,T^k>`` over valid pairs (NaN where none), for the logs."""
    with torch.no_grad():
        pos = logit_scale * (image * text).sum(-1)
        neg = logit_scale * torch.einsum("bd,bkd->bk", image, negatives)
        gaps = torch.where(neg_mask, pos[:, None] - neg, torch.zeros_like(neg))
        count = neg_mask.sum(dim=0)
        out = gaps.sum(dim=0) / count.clamp(min=1)
        return torch.where(count > 0, out, torch.full_like(out, float("nan")))


def ce_clip_loss(
    image: Tensor,
    text: Tensor,
    negatives: Tensor | None,
    neg_mask: Tensor | None,
    logit_scale: Tensor,
    cfg: LossConfig,
) -> dict[str, Any]:
    """Total = w_c * contrastive + w_imc * IMC + w_cmr * CMR, each term switchable.

    Returns the total (with graph) and each term, thresholds and mean gaps (detached) for logging.
    """
    use_negs = negatives is not None and neg_mask is not None and negatives.shape[1] > 0
    out: dict[str, Any] = {}
    total = _zero(image) + _zero(text)
    if cfg.contrastive:
        hn = use_negs and cfg.hard_negatives
        c = contrastive_loss(image, text, logit_scale, negatives if hn else None, neg_mask if hn else None)
        out["contrastive"] = c.detach()
        total = total + cfg.w_contrastive * c
    if use_negs and cfg.imc:
        m = imc_loss(text, negatives, neg_mask, logit_scale)
        out["imc"] = m.detach()
        total = total + cfg.w_imc * m
    if use_negs and cfg.cmr:
        r, theta = cmr_loss(
            image, text, negatives, neg_mask, logit_scale, cfg.threshold, cfg.fixed_threshold, cfg.upper_bound
        )
        out["cmr"] = r.detach()
        out["thresholds"] = theta
        total = total + cfg.w_cmr * r
    if use_negs:
        out["gaps"] = mean_gaps(image, text, negatives, neg_mask, logit_scale)
        out["valid"] = neg_mask.sum(dim=0)
    out["total"] = total
    return out
