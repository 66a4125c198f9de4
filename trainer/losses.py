"""The training objectives (CLIP, NegCLIP, CE-CLIP, FSC-CLIP, EMA self-distillation) as pure tensor functions.

Shapes: ``image`` and ``text`` are ``(B, D)``, ``negatives`` is ``(B, K, D)`` (one hard negative
per family), ``neg_mask`` is ``(B, K)`` bool (False where a caption had no candidate of that family),
``logit_scale`` is the scale ``s`` itself (``exp`` already applied). Features are L2-normalised by
the caller; in DDP the caller passes the gathered global batch. Invalid negatives never enter a
softmax or an average: they are selected out, not fed in as placeholder text.

FSC-CLIP's hard-negative terms (Oh et al., EMNLP 2024) are (1+N)-way losses per caption: column 0
is the caption, columns 1..K its negatives, of which only the valid ones are classes. Focal
weighting and label smoothing (:func:`calibrated_hn_loss`) spread the smoothed mass over the
caption and its *valid* negatives only; rows without a valid negative are left out of the mean.

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


# --------------------------------------------------------------------------------------------
# FSC-CLIP


def calibrated_hn_loss(logits: Tensor, neg_mask: Tensor, gamma: float = 0.0, smoothing: float = 0.0) -> Tensor:
    """Focal, label-smoothed (1+N)-way cross-entropy with the caption (column 0) as the target.

    ``logits`` is ``(B, 1+K)``. Row i's classes are the caption and its valid negatives (``n_i``
    of them in all); the target puts ``1 - smoothing + smoothing / n_i`` on the caption and
    ``smoothing / n_i`` on each valid negative, and the row's loss is
    ``-sum_j q_j (1 - p_j)^gamma log p_j`` over those classes (``p`` the softmax over them).
    The mean runs over rows with at least one valid negative; with none it is a zero with graph.
    """
    rows = neg_mask.any(dim=1)
    if not bool(rows.any()):
        return _zero(logits)
    valid = torch.cat([torch.ones_like(neg_mask[:, :1]), neg_mask], dim=1)[rows]
    z = logits[rows].masked_fill(~valid, float("-inf"))
    logp = torch.where(valid, F.log_softmax(z, dim=1), torch.zeros_like(z))
    n = valid.sum(dim=1, keepdim=True).to(z.dtype)
    q = torch.where(valid, smoothing / n, torch.zeros_like(z))
    q[:, 0] += 1.0 - smoothing
    if gamma:
        weight = torch.where(valid, (1.0 - logp.exp()).clamp(min=0.0).pow(gamma), torch.zeros_like(z))
        q = q * weight
    return -(q * logp).sum(dim=1).mean()


def global_hn_logits(image: Tensor, text: Tensor, negatives: Tensor, logit_scale: Tensor) -> Tensor:
    """``(B, 1+K)``: ``s<I_i,T_i>`` then ``s<I_i,N_ik>`` for every family (masked ones included)."""
    pos = (image * text).sum(-1, keepdim=True)
    neg = torch.einsum("bd,bkd->bk", image, negatives)
    return logit_scale * torch.cat([pos, neg], dim=1)


def local_scores(patches: Tensor, words: Tensor, word_mask: Tensor, owner: Tensor, logit_scale: Tensor) -> Tensor:
    """FSC-CLIP's token-to-patch score of each caption with its image: ``(M,)``.

    ``patches`` ``(B, P, D)`` are image patch embeddings, ``words`` ``(M, L, D)`` caption token
    embeddings (not normalised), ``word_mask`` ``(M, L)`` marks real tokens, ``owner`` ``(M,)`` the
    image of each caption. Each token gets the average of its image's patches weighted by their
    min-max-normalised similarity to the token (weights detached; uniform where all patches tie); the
    caption's score is the logsumexp over its real tokens of ``s * cos(token, its patch average)``.
    """
    # index_select, not patches[owner]: its backward (index_add_) sums in a fixed order on the CPU,
    # where indexing's (an accumulating index_put_) does not, so a run is bit-reproducible
    img = patches.index_select(0, owner)
    with torch.no_grad():
        sim = torch.einsum("mld,mpd->mlp", words, img)
        lo = sim.amin(dim=-1, keepdim=True)
        span = sim.amax(dim=-1, keepdim=True) - lo
        w = torch.where(span > 0, (sim - lo) / span.clamp(min=torch.finfo(sim.dtype).tiny), torch.ones_like(sim))
        w = w / w.sum(dim=-1, keepdim=True)
    grouped = F.normalize(torch.einsum("mlp,mpd->mld", w, img), dim=-1)
    tok = logit_scale * (grouped * F.normalize(words, dim=-1)).sum(-1)
    return torch.logsumexp(tok.masked_fill(~word_mask, float("-inf")), dim=1)


def local_hn_logits(
    patches: Tensor, words: Tensor, word_mask: Tensor, neg_mask: Tensor, logit_scale: Tensor
) -> Tensor:
    """``(B, 1+K)`` local scores: ``words``/``word_mask`` hold the B captions then the valid negatives
    in row-major ``neg_mask`` order (as the trainer encodes them); masked columns are 0 (never read)."""
    b, k = neg_mask.shape
    where = neg_mask.reshape(-1).nonzero().squeeze(1)
    owner = torch.cat([torch.arange(b, device=patches.device), where // max(k, 1)])
    scores = local_scores(patches, words, word_mask, owner, logit_scale)
    negs = scores.new_zeros(b * k).index_copy(0, where, scores[b:])
    return torch.cat([scores[:b, None], negs.view(b, k)], dim=1)


def distill_loss(image: Tensor, text: Tensor, teacher_image: Tensor, teacher_text: Tensor) -> Tensor:
    """Feature self-distillation: the mean squared distance between the model's unit features and
    the (detached) teacher's, averaged over images and captions."""
    di = (image - teacher_image.detach()).pow(2).sum(-1).mean()
    dt = (text - teacher_text.detach()).pow(2).sum(-1).mean()
    return (di + dt) / 2


def ce_clip_loss(
    image: Tensor,
    text: Tensor,
    negatives: Tensor | None,
    neg_mask: Tensor | None,
    logit_scale: Tensor,
    cfg: LossConfig,
    local_logits: Tensor | None = None,
    teacher: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Any]:
    """Total = w_c * contrastive + w_imc * IMC + w_cmr * CMR + w_ghn * global HN + w_lhn * local HN
    + w_distill * distillation, each term switchable (CE-CLIP's terms are computed first, unchanged).

    ``local_logits`` ``(B, 1+K)`` (from :func:`local_hn_logits`) is needed with ``cfg.local_hn``;
    ``teacher`` (the EMA teacher's image and caption features) with ``cfg.distill_ema``.
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
    if use_negs and cfg.global_hn:
        g = calibrated_hn_loss(global_hn_logits(image, text, negatives, logit_scale), neg_mask,
                               cfg.focal_gamma, cfg.hn_label_smoothing)
        out["global_hn"] = g.detach()
        total = total + cfg.w_global_hn * g
    if use_negs and cfg.local_hn:
        if local_logits is None:
            raise ValueError("loss.local_hn needs local_logits (token-to-patch scores)")
        h = calibrated_hn_loss(local_logits, neg_mask, cfg.focal_gamma, cfg.hn_label_smoothing)
        out["local_hn"] = h.detach()
        total = total + cfg.w_local_hn * h
    if cfg.distill_ema:
        if teacher is None:
            raise ValueError("loss.distill_ema needs the teacher's features")
        d = distill_loss(image, text, teacher[0], teacher[1])
        out["distill"] = d.detach()
        total = total + cfg.w_distill * d
    if use_negs:
        out["gaps"] = mean_gaps(image, text, negatives, neg_mask, logit_scale)
        out["valid"] = neg_mask.sum(dim=0)
    out["total"] = total
    return out
