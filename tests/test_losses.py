"""The CE-CLIP loss terms against values worked out by hand on 2-d unit vectors.

Setup used throughout (s = 2, D = 2):
  images    I1 = (1, 0)      I2 = (0, 1)
  positives T1 = (1, 0)      T2 = (0, 1)
  negatives N1 = (0.6, 0.8)  N2 = (0.6, 0.8)   (one family, K = 1)
So s<I1,T1> = s<I2,T2> = 2, s<I1,T2> = 0, s<I1,N1> = 1.2, s<I2,N2> = 1.6, s<T1,N1> = 1.2, s<T2,N2> = 1.6.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.config import LossConfig
from trainer.losses import ce_clip_loss, cmr_loss, cmr_thresholds, contrastive_loss, imc_loss


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


S = torch.tensor(2.0)
IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
T = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
N = torch.tensor([[[0.6, 0.8]], [[0.6, 0.8]]])
BOTH = torch.tensor([[True], [True]])
FIRST = torch.tensor([[True], [False]])


def test_contrastive_without_negatives_is_clip():
    # each row: logits (2, 0) or (0, 2), target the 2
    expected = lse(2, 0) - 2
    assert contrastive_loss(IMG, T, S).item() == pytest.approx(expected, abs=1e-6)


def test_contrastive_with_hard_negatives():
    # image->text columns [T1, T2, N1, N2]: I1 -> (2, 0, 1.2, 1.2), I2 -> (0, 2, 1.6, 1.6)
    i2t = ((lse(2, 0, 1.2, 1.2) - 2) + (lse(0, 2, 1.6, 1.6) - 2)) / 2
    t2i = lse(2, 0) - 2
    assert contrastive_loss(IMG, T, S, N, BOTH).item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)


def test_contrastive_excludes_masked_negatives():
    # only N1 enters: columns [T1, T2, N1]
    i2t = ((lse(2, 0, 1.2) - 2) + (lse(0, 2, 1.6) - 2)) / 2
    t2i = lse(2, 0) - 2
    got = contrastive_loss(IMG, T, S, N, FIRST).item()
    assert got == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    # whatever sits in the masked slot does not matter
    junk = N.clone()
    junk[1, 0] = torch.tensor([0.0, 1.0])
    assert contrastive_loss(IMG, T, S, junk, FIRST).item() == pytest.approx(got, abs=1e-7)


def test_contrastive_matches_open_clip_cliploss():
    from open_clip import ClipLoss

    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    b = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    ref = ClipLoss()(a, b, torch.tensor(14.0))
    assert contrastive_loss(a, b, torch.tensor(14.0)).item() == pytest.approx(ref.item(), abs=1e-5)


def test_imc_hand_value_and_rows_without_negatives_left_out():
    # row 1: softmax over (s<T1,T1>, s<T1,N1>) = (2, 1.2), target first; row 2 has no valid negative
    assert imc_loss(T, N, FIRST, S).item() == pytest.approx(lse(2, 1.2) - 2, abs=1e-6)
    both = ((lse(2, 1.2) - 2) + (lse(2, 1.6) - 2)) / 2
    assert imc_loss(T, N, BOTH, S).item() == pytest.approx(both, abs=1e-6)


def test_imc_is_per_caption_not_against_other_captions_negatives():
    # two families; caption 1 has N=(0.6,0.8) and a masked slot, caption 2 has (0,1) in family 2.
    # Another caption's negative must not appear in row 1 (the released code's B x BK matrix would).
    negs = torch.tensor([[[0.6, 0.8], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    mask = torch.tensor([[True, False], [False, True]])
    row1 = lse(2, 1.2) - 2  # (T1.T1, T1.N11)
    row2 = lse(2, 2.0) - 2  # (T2.T2, T2.N22): a negative identical to the caption -> log 2
    assert imc_loss(T, negs, mask, S).item() == pytest.approx((row1 + row2) / 2, abs=1e-6)
    assert row2 == pytest.approx(math.log(2))


def test_imc_without_any_valid_negative_is_zero_with_graph():
    t = T.clone().requires_grad_(True)
    loss = imc_loss(t, N, torch.zeros(2, 1, dtype=torch.bool), S)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(t.grad, torch.zeros_like(t))


# CMR: gaps g = s<I,T> - s<I,N> = (2 - 1.2, 2 - 1.6) = (0.8, 0.4)


@pytest.mark.parametrize(
    "policy,fixed,bound,theta,loss",
    [
        ("mean", 0.0, 10.0, 0.6, (0.0 + 0.2) / 2),  # relu(0.6-0.8), relu(0.6-0.4)
        ("max", 0.0, 10.0, 0.8, (0.0 + 0.4) / 2),
        ("fixed", 0.5, 10.0, 0.5, (0.0 + 0.1) / 2),
        ("mean", 0.0, 0.5, 0.5, (0.0 + 0.1) / 2),  # the upper bound clamps the mean 0.6 to 0.5
        ("fixed", 12.0, 10.0, 10.0, ((10 - 0.8) + (10 - 0.4)) / 2),
    ],
)
def test_cmr_hand_values(policy, fixed, bound, theta, loss):
    got, th = cmr_loss(IMG, T, N, BOTH, S, policy, fixed, bound)
    assert th.tolist() == pytest.approx([theta], abs=1e-6)
    assert got.item() == pytest.approx(loss, abs=1e-6)


def test_cmr_threshold_is_clamped_at_zero_and_nan_for_empty_family():
    # gaps: family 0 has -0.5 and -0.3 (negatives beat positives): mean -0.4 -> clamped to 0
    gaps = torch.tensor([[-0.5, 1.0], [-0.3, 2.0]])
    mask = torch.tensor([[True, False], [True, False]])
    th = cmr_thresholds(gaps, mask, "mean")
    assert th[0].item() == 0.0
    assert math.isnan(th[1].item())
    # with theta 0 the loss is the mean amount by which negatives win
    n = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # s<I,N> = 2 = s<I,T>: gaps 0 -> no loss
    got, _ = cmr_loss(IMG, T, n, BOTH, S, "mean")
    assert got.item() == 0.0


def test_cmr_ignores_masked_pairs_and_their_gradient():
    n = N.clone().requires_grad_(True)
    got, th = cmr_loss(IMG, T, n, FIRST, S, "fixed", 1.0, 10.0)
    # only pair (1,1): relu(1 - 0.8) = 0.2
    assert got.item() == pytest.approx(0.2, abs=1e-6)
    got.backward()
    assert torch.equal(n.grad[1], torch.zeros(1, 2))
    assert n.grad[0].abs().sum() > 0


def test_cmr_thresholds_are_detached():
    i = IMG.clone().requires_grad_(True)
    loss, th = cmr_loss(i, T, N, BOTH, S, "mean")
    assert not th.requires_grad
    loss.backward()
    # d/dI2 of relu(theta - s<I2,T2> + s<I2,N2>) = s (N2 - T2) / 2 (mean over 2 pairs), theta constant
    assert i.grad[1].tolist() == pytest.approx((2 * (N[1, 0] - T[1]) / 2).tolist(), abs=1e-6)
    assert i.grad[0].tolist() == [0.0, 0.0]


def test_total_is_weighted_sum_and_switches():
    cfg = LossConfig(w_imc=0.3, w_cmr=0.2)
    out = ce_clip_loss(IMG, T, N, BOTH, S, cfg)
    c = contrastive_loss(IMG, T, S, N, BOTH)
    m = imc_loss(T, N, BOTH, S)
    r, _ = cmr_loss(IMG, T, N, BOTH, S)
    assert out["total"].item() == pytest.approx((c + 0.3 * m + 0.2 * r).item(), abs=1e-6)
    assert out["thresholds"].tolist() == pytest.approx([0.6], abs=1e-6)
    assert out["gaps"].tolist() == pytest.approx([0.6], abs=1e-6)
    assert out["valid"].tolist() == [2]

    clip = ce_clip_loss(IMG, T, N, BOTH, S, LossConfig(hard_negatives=False, imc=False, cmr=False))
    assert clip["total"].item() == pytest.approx(contrastive_loss(IMG, T, S).item(), abs=1e-6)
    assert "imc" not in clip and "cmr" not in clip

    negclip = ce_clip_loss(IMG, T, N, BOTH, S, LossConfig(imc=False, cmr=False))
    assert negclip["total"].item() == pytest.approx(c.item(), abs=1e-6)


def test_gradients_flow_to_logit_scale_and_all_features():
    i = IMG.clone().requires_grad_(True)
    t = T.clone().requires_grad_(True)
    n = N.clone().requires_grad_(True)
    s = S.clone().requires_grad_(True)
    out = ce_clip_loss(i, t, n, BOTH, s, LossConfig())
    out["total"].backward()
    for g in (i.grad, t.grad, n.grad, s.grad):
        assert g is not None and g.abs().sum() > 0
