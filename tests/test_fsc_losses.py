"""FSC-CLIP's hard-negative terms and EMA self-distillation: hand values and a loop-based reference.

The reference below is written independently of ``trainer/losses.py``: plain Python loops over
rows, classes, tokens and patches, with torch scalars only so that autograd gives its gradients.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.config import OBJECTIVES, LossConfig
from trainer.losses import (
    calibrated_hn_loss,
    ce_clip_loss,
    contrastive_loss,
    distill_loss,
    global_hn_logits,
    local_hn_logits,
    local_scores,
)

# ------------------------------------------------------------------------------------ reference


def ref_calibrated(logits: torch.Tensor, mask: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    """Row by row: classes are the caption and its valid negatives; focal, smoothed cross-entropy."""
    rows = []
    for i in range(logits.shape[0]):
        cols = [0] + [1 + k for k in range(mask.shape[1]) if bool(mask[i, k])]
        if len(cols) == 1:
            continue
        z = [logits[i, j] for j in cols]
        top = max(float(v.detach()) for v in z)
        denom = sum(torch.exp(v - top) for v in z)
        row = 0.0
        for pos, v in enumerate(z):
            logp = v - top - torch.log(denom)
            p = torch.exp(logp)
            q = eps / len(cols) + (1.0 - eps if pos == 0 else 0.0)
            row = row - q * (1.0 - p) ** gamma * logp
        rows.append(row)
    return sum(rows) / len(rows)


def ref_local_score(patches: torch.Tensor, words: torch.Tensor, real: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """One caption (L, D) against one image's patches (P, D)."""
    token_scores = []
    for t in range(words.shape[0]):
        if not bool(real[t]):
            continue
        w = words[t]
        sims = [float((w * patches[p]).sum().detach()) for p in range(patches.shape[0])]
        lo, hi = min(sims), max(sims)
        weights = [(x - lo) / (hi - lo) if hi > lo else 1.0 for x in sims]
        total = sum(weights)
        g = sum((weights[p] / total) * patches[p] for p in range(patches.shape[0]))
        cos = (g * w).sum() / (torch.sqrt((g * g).sum()) * torch.sqrt((w * w).sum()))
        token_scores.append(s * cos)
    top = max(float(v.detach()) for v in token_scores)
    return top + torch.log(sum(torch.exp(v - top) for v in token_scores))


def ref_local_logits(patches, words, real, mask, s):
    """(B, 1+K) with words ordered as the trainer encodes them: B captions, then valid negatives."""
    b, k = mask.shape
    out = [[None] * (1 + k) for _ in range(b)]
    for i in range(b):
        out[i][0] = ref_local_score(patches[i], words[i], real[i], s)
    m = b
    for i in range(b):
        for j in range(k):
            if bool(mask[i, j]):
                out[i][1 + j] = ref_local_score(patches[i], words[m], real[m], s)
                m += 1
    return out


def ref_global_hn(image, text, negatives, mask, s, gamma, eps):
    b, k = mask.shape
    rows = []
    for i in range(b):
        row = [s * (image[i] * text[i]).sum()] + [s * (image[i] * negatives[i, j]).sum() for j in range(k)]
        rows.append(torch.stack(row))
    logits = torch.stack(rows)
    return ref_calibrated(logits, mask, gamma, eps)


def random_batch(seed: int, b: int = 5, k: int = 3, d: int = 8, p: int = 4, length: int = 6):
    g = torch.Generator().manual_seed(seed)
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    mask = torch.rand(b, k, generator=g) < 0.6
    mask[0] = False  # a row without any valid negative
    mask[1] = True
    v = int(mask.sum())
    lengths = torch.randint(2, length + 1, (b + v,), generator=g)
    real = torch.arange(length)[None, :] < lengths[:, None]
    return {
        "image": unit(b, d), "text": unit(b, d), "negatives": unit(b, k, d), "mask": mask,
        "patches": torch.randn(b, p, d, generator=g), "words": torch.randn(b + v, length, d, generator=g),
        "real": real, "s": torch.tensor(3.0),
    }


def leaves(batch, names):
    return {n: batch[n].clone().requires_grad_(True) for n in names}


# ------------------------------------------------------------------------------ calibrated loss


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_calibrated_loss_and_gradient_by_hand():
    # row 0: caption logit 2, one valid negative 0, a masked slot holding junk; row 1: nothing valid
    logits = torch.tensor([[2.0, 0.0, 5.0], [1.0, 3.0, -1.0]], requires_grad=True)
    mask = torch.tensor([[True, False], [False, False]])
    gamma, eps = 2.0, 0.1
    loss = calibrated_hn_loss(logits, mask, gamma, eps)
    loss.backward()
    p0, p1 = sig(2.0), sig(-2.0)
    q0, q1 = 0.9 + 0.1 / 2, 0.1 / 2  # smoothing spread over the 2 classes, masked slot excluded
    expected = -(q0 * p1**2 * math.log(p0) + q1 * p0**2 * math.log(p1))
    assert loss.item() == pytest.approx(expected, abs=1e-6)

    def fprime(p: float) -> float:  # d/dp of -(1-p)^2 log p
        return gamma * (1 - p) * math.log(p) - (1 - p) ** 2 / p

    d0 = q0 * fprime(p0) * p0 * p1 - q1 * fprime(p1) * p0 * p1  # dp0/dz0 = p0 p1, dp1/dz0 = -p0 p1
    assert logits.grad.flatten().tolist() == pytest.approx([d0, -d0, 0.0, 0.0, 0.0, 0.0], abs=1e-6)


def test_calibrated_loss_without_focus_or_smoothing_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 1.0]], requires_grad=True)
    mask = torch.tensor([[True, True]])
    loss = calibrated_hn_loss(logits, mask, 0.0, 0.0)
    loss.backward()
    lse = math.log(math.exp(2) + 1 + math.exp(1))
    assert loss.item() == pytest.approx(lse - 2, abs=1e-6)
    p = [math.exp(x - lse) for x in (2.0, 0.0, 1.0)]
    assert logits.grad.flatten().tolist() == pytest.approx([p[0] - 1, p[1], p[2]], abs=1e-6)


def test_calibrated_loss_with_no_valid_negative_is_zero_with_graph():
    logits = torch.tensor([[2.0, 0.0]], requires_grad=True)
    loss = calibrated_hn_loss(logits, torch.tensor([[False]]), 2.0, 0.02)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.tolist() == [[0.0, 0.0]]


# ------------------------------------------------------------------------------- global HN loss


def test_global_hn_hand_values():
    # s = 2: I1 = T1 = (1, 0), N1 = (0.6, 0.8) -> logits (2, 1.2); I2 = T2 = (0, 1), N2 -> (2, 1.6)
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negs = torch.tensor([[[0.6, 0.8]], [[0.6, 0.8]]])
    logits = global_hn_logits(img, img, negs, torch.tensor(2.0))
    assert logits.flatten().tolist() == pytest.approx([2.0, 1.2, 2.0, 1.6], abs=1e-6)
    both = torch.tensor([[True], [True]])
    ce = ((math.log(math.exp(2) + math.exp(1.2)) - 2) + (math.log(math.exp(2) + math.exp(1.6)) - 2)) / 2
    assert calibrated_hn_loss(logits, both, 0.0, 0.0).item() == pytest.approx(ce, abs=1e-6)


@pytest.mark.parametrize("seed,gamma,eps", [(0, 2.0, 0.02), (1, 0.0, 0.0), (2, 1.0, 0.3), (3, 2.0, 0.0)])
def test_global_hn_matches_reference_values_and_gradients(seed, gamma, eps):
    batch = random_batch(seed)
    a = leaves(batch, ("image", "text", "negatives"))
    got = calibrated_hn_loss(global_hn_logits(a["image"], a["text"], a["negatives"], batch["s"]), batch["mask"],
                             gamma, eps)
    got.backward()
    r = leaves(batch, ("image", "text", "negatives"))
    ref = ref_global_hn(r["image"], r["text"], r["negatives"], batch["mask"], batch["s"], gamma, eps)
    ref.backward()
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)
    for n in a:
        assert torch.allclose(a[n].grad, r[n].grad, atol=1e-5), n
    # masked negatives get no gradient
    assert torch.equal(a["negatives"].grad[~batch["mask"]], torch.zeros_like(a["negatives"].grad[~batch["mask"]]))


# -------------------------------------------------------------------------------- local HN loss


def test_local_score_and_word_gradient_by_hand():
    # patches a = (1, 0), b = (0, 1), c = (-1, 0); s = 2
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]], requires_grad=True)
    # token 1 (2, 1): similarities (2, 1, -2) -> min-max weights (1, 0.75, 0) -> average (4/7, 3/7),
    #   unit (0.8, 0.6), cosine with (2, 1)/sqrt5 = 2.2/sqrt5
    # token 2 (0, 3): similarities (0, 3, 0) -> weights (0, 1, 0) -> b, cosine 1
    # token 3 is padding (junk values, left out)
    words = torch.tensor([[[2.0, 1.0], [0.0, 3.0], [9.0, -9.0]]], requires_grad=True)
    real = torch.tensor([[True, True, False]])
    s = torch.tensor(2.0)
    score = local_scores(patches, words, real, torch.tensor([0]), s)
    t1, t2 = 2 * 2.2 / math.sqrt(5), 2.0
    assert score.item() == pytest.approx(math.log(math.exp(t1) + math.exp(t2)), abs=1e-6)
    score.sum().backward()
    # the weights are detached, so d score / d w = softmax share * s * (g - cos * w_hat) / |w|
    pi1 = math.exp(t1) / (math.exp(t1) + math.exp(t2))
    w_hat, cos1 = (2 / math.sqrt(5), 1 / math.sqrt(5)), 2.2 / math.sqrt(5)
    g1 = [pi1 * 2 * (gk - cos1 * wk) / math.sqrt(5) for gk, wk in zip((0.8, 0.6), w_hat)]
    g2 = [0.0, 0.0]  # token 2 points exactly at its patch average: cosine at its maximum
    assert words.grad.flatten().tolist() == pytest.approx([*g1, *g2, 0.0, 0.0], abs=1e-6)
    # patch c got weight 0 for both tokens: no gradient
    assert patches.grad[0, 2].tolist() == [0.0, 0.0]


def test_local_score_with_tied_patches_averages_them_all():
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    words = torch.tensor([[[1.0, 1.0]]])  # equal similarity to both patches: uniform weights
    score = local_scores(patches, words, torch.tensor([[True]]), torch.tensor([0]), torch.tensor(1.0))
    assert score.item() == pytest.approx(1.0, abs=1e-6)  # average (0.5, 0.5) is parallel to (1, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_local_logits_match_reference_values_and_gradients(seed):
    batch = random_batch(seed)
    a = leaves(batch, ("patches", "words"))
    got = local_hn_logits(a["patches"], a["words"], batch["real"], batch["mask"], batch["s"])
    r = leaves(batch, ("patches", "words"))
    ref = ref_local_logits(r["patches"], r["words"], batch["real"], batch["mask"], batch["s"])
    b, k = batch["mask"].shape
    for i in range(b):
        assert got[i, 0].item() == pytest.approx(ref[i][0].item(), abs=1e-5)
        for j in range(k):
            if batch["mask"][i, j]:
                assert got[i, 1 + j].item() == pytest.approx(ref[i][1 + j].item(), abs=1e-5)
    loss = calibrated_hn_loss(got, batch["mask"], 2.0, 0.02)
    loss.backward()
    ref_logits = torch.stack([
        torch.stack([v if v is not None else torch.tensor(0.0) for v in row]) for row in ref
    ])
    ref_loss = ref_calibrated(ref_logits, batch["mask"], 2.0, 0.02)
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-5)
    for n in a:
        assert torch.allclose(a[n].grad, r[n].grad, atol=1e-5), n
    # padding tokens get no gradient
    assert a["words"].grad[~batch["real"]].abs().sum().item() == 0.0


# ---------------------------------------------------------------------- the objective and distill


def fsc_cfg(**over) -> LossConfig:
    keys = {k.split(".", 1)[1]: v for k, v in OBJECTIVES["fsc-clip"].items()}
    return LossConfig(**{**keys, **over})


def test_fsc_objective_is_clip_plus_weighted_hn_terms():
    batch = random_batch(4)
    local = ref_local_logits(batch["patches"], batch["words"], batch["real"], batch["mask"], batch["s"])
    local_t = torch.stack([torch.stack([v if v is not None else torch.tensor(0.0) for v in row]) for row in local])
    cfg = fsc_cfg()
    out = ce_clip_loss(batch["image"], batch["text"], batch["negatives"], batch["mask"], batch["s"], cfg, local_t)
    clip = contrastive_loss(batch["image"], batch["text"], batch["s"])  # real pairs only: no negatives
    g = ref_global_hn(batch["image"], batch["text"], batch["negatives"], batch["mask"], batch["s"], 2.0, 0.02)
    h = ref_calibrated(local_t, batch["mask"], 2.0, 0.02)
    assert out["contrastive"].item() == pytest.approx(clip.item(), abs=1e-6)
    assert out["total"].item() == pytest.approx((clip + 0.5 * g + 0.2 * h).item(), abs=1e-5)
    assert "imc" not in out and "cmr" not in out and "distill" not in out
    with pytest.raises(ValueError, match="local_logits"):
        ce_clip_loss(batch["image"], batch["text"], batch["negatives"], batch["mask"], batch["s"], cfg)


def test_distill_hand_value_and_gradient():
    img = torch.tensor([[1.0, 0.0]], requires_grad=True)
    txt = torch.tensor([[0.0, 1.0]], requires_grad=True)
    t_img, t_txt = torch.tensor([[0.6, 0.8]]), torch.tensor([[0.0, 1.0]])
    d = distill_loss(img, txt, t_img, t_txt)
    # images: |(0.4, -0.8)|^2 = 0.8; captions: 0 -> mean 0.4
    assert d.item() == pytest.approx(0.4, abs=1e-6)
    d.backward()
    assert img.grad.flatten().tolist() == pytest.approx([0.4, -0.8], abs=1e-6)  # (2 (x - t)) / 2
    assert txt.grad.tolist() == [[0.0, 0.0]]


def test_distill_adds_to_any_objective_and_ce_clip_is_unchanged_without_it():
    batch = random_batch(5)
    args = (batch["image"], batch["text"], batch["negatives"], batch["mask"], batch["s"])
    teacher = (F.normalize(batch["image"] + 0.1, dim=-1), batch["text"])
    plain = ce_clip_loss(*args, LossConfig())
    with_d = ce_clip_loss(*args, LossConfig(distill_ema=True, w_distill=2.0), teacher=teacher)
    d = distill_loss(batch["image"], batch["text"], *teacher)
    assert torch.equal(with_d["total"], plain["total"] + 2.0 * d)
    with pytest.raises(ValueError, match="teacher"):
        ce_clip_loss(*args, LossConfig(distill_ema=True))


@pytest.mark.parametrize("key,value,match", [
    ("focal_gamma", -1.0, "loss.focal_gamma"), ("hn_label_smoothing", 1.0, "loss.hn_label_smoothing"),
    ("ema_decay", 1.0, "loss.ema_decay"), ("w_local_hn", -0.1, "loss.w_local_hn"),
])
def test_bad_fsc_settings_name_the_key(key, value, match):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        LossConfig(**{key: value}).validate()


def test_local_score_gradients_are_bit_reproducible_on_two_threads():
    # many captions share an image, so the patches' gradient sums several terms per image: the sum
    # must run in a fixed order, or a rerun of the same training drifts
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        patches0, words0 = torch.randn(64, 4, 32, generator=g), torch.randn(256, 20, 32, generator=g)
        mask = torch.rand(256, 20, generator=g) > 0.3
        owner = torch.cat([torch.arange(64), torch.randint(0, 64, (192,), generator=g)])
        grads = []
        for _ in range(4):
            p = patches0.clone().requires_grad_(True)
            local_scores(p, words0.clone().requires_grad_(True), mask, owner, torch.tensor(14.0)).sum().backward()
            grads.append(p.grad)
        assert all(torch.equal(grads[0], x) for x in grads[1:])
    finally:
        torch.set_num_threads(threads)
