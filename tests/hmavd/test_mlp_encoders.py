"""MLP EEG encoders (UBP/NeuroBridge EEGProject, BrainHIVE BrainMLP, visual-blur spatial conv + MLP).

Each is checked against a hand computation in numpy on a tiny input with explicit weights, and its
published sizes (parameter counts at 17 or 63 channels x 250 samples) against the layer formulae.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hmavd.models.encoders import ENCODERS, build_encoder
from hmavd.models.mlp_encoders import BlurSpatialMLP, BrainMLP, EEGProject

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 2, 3))  # (B, C, T)


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _elu(x):
    return np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1)


def _layer_norm(x, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def _set(layer, weight, bias=None):
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def _run(module):
    module.eval()
    with torch.no_grad():
        return module(torch.as_tensor(X, dtype=torch.float32)).numpy()


def test_eeg_project_by_hand():
    m = EEGProject(2, 3, out_features=2)
    w, b, w2, b2 = (
        RNG.standard_normal((2, 6)),
        RNG.standard_normal(2),
        RNG.standard_normal((2, 2)),
        RNG.standard_normal(2),
    )
    _set(m.linear, w, b)
    _set(m.residual[1], w2, b2)
    h = X.reshape(2, 6) @ w.T + b
    want = _layer_norm(h + _gelu(h) @ w2.T + b2, 1e-5)
    np.testing.assert_allclose(_run(m), want, atol=1e-5)
    assert m.residual[2].p == 0.3 and m.out_features == 2


def test_brain_mlp_by_hand():
    m = BrainMLP(2, 3, out_features=2, intermediate=3, num_layers=2)
    w0, b0 = RNG.standard_normal((2, 6)), RNG.standard_normal(2)
    _set(m.proj_in, w0, b0)
    h = X.reshape(2, 6) @ w0.T + b0
    for layer in m.layers:
        assert layer.w1.bias is None and layer.w2.bias is None
        w1, w2 = RNG.standard_normal((3, 2)), RNG.standard_normal((2, 3))
        _set(layer.w1, w1)
        _set(layer.w2, w2)
        h = _layer_norm(_gelu(h @ w1.T) @ w2.T + h, 1e-6)
    np.testing.assert_allclose(_run(m), h, atol=1e-5)
    assert BrainMLP(2, 3).layers[0].dropout.p == 0.1 and len(BrainMLP(2, 3).layers) == 1


def test_blur_spatial_mlp_by_hand():
    m = BlurSpatialMLP(2, 3, out_features=2, n_spatial=2, hidden=2)
    ws = np.array([[1.0, -2.0], [-0.5, 0.25]])  # negative entries: the filters are used as |w|
    _set(m.spatial, ws.reshape(2, 1, 2, 1))
    w1, b1, w2, b2 = (
        RNG.standard_normal((2, 3)),
        RNG.standard_normal(2),
        RNG.standard_normal((2, 2)),
        RNG.standard_normal(2),
    )
    wo, bo = RNG.standard_normal((2, 4)), RNG.standard_normal(2)
    _set(m.temporal[0], w1, b1)
    _set(m.temporal[3], w2, b2)
    _set(m.out, wo, bo)
    s = np.einsum("kc,bct->bkt", np.abs(ws), X) / np.sqrt(1 + 1e-5)  # (B, 25, T), BatchNorm at its initial stats
    h = _elu(_elu(s @ w1.T + b1) @ w2.T + b2)  # (B, K, hidden)
    want = h.reshape(2, 4) @ wo.T + bo
    np.testing.assert_allclose(_run(m), want, atol=1e-5)
    assert (m.spatial.weight >= 0).all()  # folded in place, as the reference does
    assert (m.temporal[2].p, m.temporal[5].p) == (0.25, 0.65) and m.spatial.bias is None


@pytest.mark.parametrize(
    ("name", "chans", "want"),
    [
        ("eeg_project", 17, (17 * 250 + 1) * 1024 + (1024 + 1) * 1024 + 2 * 1024),
        ("brain_mlp", 17, (17 * 250 + 1) * 1024 + 2 * 1024 * 1024 + 2 * 1024),
        ("blur_spatial_mlp", 63, 25 * 63 + 2 * 25 + (250 + 1) * 200 + (200 + 1) * 200 + (25 * 200 + 1) * 1024),
    ],
)
def test_registered_with_published_sizes(name, chans, want):
    assert name in ENCODERS
    enc = build_encoder(name, chans, 250)
    assert enc.out_features == 1024
    assert sum(p.numel() for p in enc.parameters()) == want
    out = enc(torch.randn(4, chans, 250))  # (B, F)
    assert out.shape == (4, 1024)
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
