"""Eq. 2-4 and 7 on tiny tensors: named terms equal direct computations; totals follow the docs."""

import math

import pytest
import torch
import torch.nn.functional as F

from hmavd.losses import adapter_consistency, clip_ce, cosine_loss, hmavd_loss
from hmavd.models import HMAVD, ModelConfig


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def direct_ce(a, b, scale):
    """Eq. 3 written out: -1/B sum_i log softmax_j(a_i . b_j / tau)[i]."""
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        logits = [scale * float(a[i] @ b[j]) for j in range(n)]
        m = max(logits)
        log_z = m + math.log(sum(math.exp(v - m) for v in logits))
        total -= logits[i] - log_z
    return total / n


def test_clip_ce_both_directions_equal_direct_computation():
    a, b = unit(6, 5, seed=1), unit(6, 5, seed=2)
    ab, ba = clip_ce(a, b, 1 / 0.07)
    assert math.isclose(float(ab), direct_ce(a, b, 1 / 0.07), rel_tol=1e-5)
    assert math.isclose(float(ba), direct_ce(b, a, 1 / 0.07), rel_tol=1e-5)
    assert not math.isclose(float(ab), float(ba), rel_tol=1e-3)  # genuinely two directions


def test_clip_ce_perfect_alignment_is_near_zero():
    a = torch.eye(4)
    ab, ba = clip_ce(a, a, 100.0)
    assert float(ab) < 1e-6 and float(ba) < 1e-6


def test_cosine_loss_and_consistency():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([[3.0, 0.0], [2.0, 0.0]])  # cos = 1 and 0
    assert math.isclose(float(cosine_loss(x, y)), 0.5, rel_tol=1e-6)
    assert float(adapter_consistency(x, 5 * x)) == pytest.approx(0.0, abs=1e-6)
    assert float(adapter_consistency(x, -x)) == pytest.approx(2.0, abs=1e-6)


def fake_out(with_adapter=True, b=5, d=4):
    out = {
        "eeg_features": unit(b, d, seed=3),
        "image_features": unit(b, d, seed=4),
        "text_features": unit(b, d, seed=5),
        "logit_scale": torch.tensor(1 / 0.07),
    }
    if with_adapter:
        out["text_raw"] = torch.randn(b, 8, generator=torch.Generator().manual_seed(6))
        out["text_adapted"] = out["text_raw"] + 0.5 * torch.randn(b, 8, generator=torch.Generator().manual_seed(7))
    return out


def test_hmavd_total_is_documented_formula():
    out = fake_out()
    terms = hmavd_loss(out, use_text=True, consistency_weight=0.3)
    five = ["ce_eeg_img", "ce_img_eeg", "ce_eeg_text", "ce_text_eeg", "cos_img_text"]
    assert set(terms) == {*five, "adapter_consistency", "alignment", "total"}
    ce = clip_ce(out["eeg_features"], out["text_features"], out["logit_scale"])
    assert torch.allclose(terms["ce_eeg_text"], ce[0]) and torch.allclose(terms["ce_text_eeg"], ce[1])
    assert torch.allclose(terms["cos_img_text"], cosine_loss(out["image_features"], out["text_features"]))
    eq2 = sum(terms[k] for k in five) / 5
    assert torch.allclose(terms["alignment"], eq2)
    assert float(terms["adapter_consistency"]) > 0.01
    assert torch.allclose(terms["total"], eq2 + 0.3 * terms["adapter_consistency"])


def test_base_has_no_text_terms():
    out = fake_out(with_adapter=False)
    terms = hmavd_loss(out, use_text=False)
    assert set(terms) == {"ce_eeg_img", "ce_img_eeg", "alignment", "total"}
    assert torch.allclose(terms["total"], (terms["ce_eeg_img"] + terms["ce_img_eeg"]) / 2)


def test_text_without_adapters_has_no_consistency_term():
    terms = hmavd_loss(fake_out(with_adapter=False), use_text=True)
    assert "adapter_consistency" not in terms
    assert torch.allclose(terms["total"], terms["alignment"])


def test_loss_backpropagates_through_model():
    torch.manual_seed(0)
    cfg = ModelConfig(n_chans=4, n_times=80, feature_dim=16, proj_dim=8, txt_reduction=4, img_reduction=4)
    model = HMAVD(cfg)
    out = model(torch.randn(6, 4, 80), torch.randn(6, 16), torch.randn(6, 16))
    terms = hmavd_loss(out, use_text=True)
    terms["total"].backward()
    for name, params in model.modality_parameters().items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name
