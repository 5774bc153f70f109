"""Image-side heads (linear, MLP adapter, blur-level weighting, sum fusion) against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hmavd.errors import UserError
from hmavd.models.image_heads import (
    BlurLevelHead,
    LevelWeighting,
    MLPAdapter,
    SumFusion,
    build_image_head,
    check_bank_levels,
)

RNG = np.random.default_rng(1)


def _t(x):
    return torch.as_tensor(x, dtype=torch.float32)


def _set(layer, w, b=None):
    with torch.no_grad():
        layer.weight.copy_(_t(w))
        if b is not None:
            layer.bias.copy_(_t(b))


def _elu(x):
    return np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1)


def test_level_weighting_by_hand():
    m = LevelWeighting(n_levels=3, dim=2, n_extra=1)
    s = RNG.standard_normal((1, 4, 2))
    extra = RNG.standard_normal((1, 1, 2))
    with torch.no_grad():
        m.scale.copy_(_t(s))
        m.extra.copy_(_t(extra))
    x = RNG.standard_normal((5, 6))  # (B, V·D), level-major
    levels = np.concatenate([x.reshape(5, 3, 2), np.repeat(extra, 5, 0)], axis=1)  # (B, 4, 2)
    w = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)  # softmax over levels, per dimension
    np.testing.assert_allclose(m(_t(x)).detach().numpy(), (levels * w).sum(1), atol=1e-6)
    fresh = LevelWeighting(3, 2)  # published init: scale ~ U(0, 1), extra levels 0
    assert (fresh.scale >= 0).all() and (fresh.scale < 1).all() and not fresh.extra.any()
    assert fresh.scale.shape == (1, 7, 2)


def test_mlp_adapter_and_blur_head_by_hand():
    a = MLPAdapter(2, 3, hidden=4, dropout=0.85).eval()
    w1, b1, w2, b2 = (
        RNG.standard_normal((4, 2)),
        RNG.standard_normal(4),
        RNG.standard_normal((3, 4)),
        RNG.standard_normal(3),
    )
    _set(a.net[0], w1, b1)
    _set(a.net[3], w2, b2)
    x = RNG.standard_normal((5, 2))
    want = _elu(x @ w1.T + b1) @ w2.T + b2
    np.testing.assert_allclose(a(_t(x)).detach().numpy(), want, atol=1e-5)
    assert a.net[2].p == 0.85
    r = MLPAdapter(2, 2, hidden=4, residual=True).eval()
    torch.testing.assert_close(r(_t(x)), _t(x) + r.net(_t(x)))
    with pytest.raises(UserError, match="residual"):
        MLPAdapter(2, 3, residual=True)
    head = BlurLevelHead(6, 3, n_levels=3, n_extra=0, hidden=4).eval()
    assert head(_t(RNG.standard_normal((5, 6)))).shape == (5, 3)
    xs = _t(RNG.standard_normal((5, 6)))
    torch.testing.assert_close(head(xs), head.adapter(head.weighting(xs)))
    with pytest.raises(UserError, match="image_levels"):
        BlurLevelHead(7, 3, n_levels=3)


def test_sum_fusion_by_hand():
    m = SumFusion(5, 2, bank_dims=(2, 3), intermediate=3, dropout=0.1).eval()
    wa, ba, wb, bb = (
        RNG.standard_normal((2, 2)),
        RNG.standard_normal(2),
        RNG.standard_normal((2, 3)),
        RNG.standard_normal(2),
    )
    w1, w2 = RNG.standard_normal((3, 2)), RNG.standard_normal((2, 3))
    _set(m.proj[0], wa, ba)
    _set(m.proj[1], wb, bb)
    _set(m.block.w1, w1)
    _set(m.block.w2, w2)
    x = RNG.standard_normal((4, 5))
    h = x[:, :2] @ wa.T + ba + x[:, 2:] @ wb.T + bb
    g = h @ w1.T
    g = 0.5 * g * (1 + np.vectorize(math.erf)(g / np.sqrt(2)))
    y = g @ w2.T + h
    want = (y - y.mean(1, keepdims=True)) / np.sqrt(y.var(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(m(_t(x)).detach().numpy(), want, atol=1e-5)
    with pytest.raises(UserError, match="add up"):
        SumFusion(5, 2, bank_dims=(2, 2))


def test_registry():
    assert build_image_head("linear", 4, 3)(torch.randn(2, 4)).shape == (2, 3)
    with pytest.raises(UserError, match="image_head"):
        build_image_head("conv", 4, 3)
    with pytest.raises(UserError, match="not accepted"):
        build_image_head("linear", 4, 3, hidden=2)


def test_bank_level_count_is_checked():
    concat = {"variants": ["blur:1", "blur:3", "blur:9"], "variant_mode": "concat"}
    check_bank_levels("blur_levels", 3, concat)
    check_bank_levels("blur_levels", 0, {"variants": ["blur:1", "blur:3"], "variant_mode": "mean"})  # one level
    check_bank_levels("linear", 12, {})
    with pytest.raises(UserError, match="pass image_levels=1"):
        check_bank_levels("blur_levels", 12, {})  # a plain 768-d bank is not 12 levels of 64
    with pytest.raises(UserError, match="pass image_levels=3"):
        check_bank_levels("blur_levels", 2, concat)
