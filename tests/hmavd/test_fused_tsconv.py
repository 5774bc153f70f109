"""The fused temporal conv + pool of TSConv equals NICE's two layers: outputs, gradients, state_dict."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hmavd.models.encoders import TSConv, build_encoder, fused_temporal_kernel, temporal_conv_pool

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def _pair(n_chans: int, n_times: int, dtype: torch.dtype, **kw) -> tuple[TSConv, TSConv]:
    """A fused encoder and an unfused copy with the same weights, both in eval mode."""
    torch.manual_seed(0)
    fused = TSConv(n_chans, n_times, fused=True, **kw).to(dtype)
    ref = TSConv(n_chans, n_times, fused=False, **kw).to(dtype)
    ref.load_state_dict(fused.state_dict())
    return fused.eval(), ref.eval()


def test_kernel_is_conv_kernel_convolved_with_box():
    w = torch.arange(1.0, 4.0, dtype=torch.float64).view(1, 1, 1, 3)  # taps 1, 2, 3
    k = fused_temporal_kernel(w, pool=2).view(-1)  # (4,)
    # [1, 2, 3] * [1/2, 1/2] = [0.5, 1.5, 2.5, 1.5]
    assert torch.allclose(k, torch.tensor([0.5, 1.5, 2.5, 1.5], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n_times", [75, 76, 101, 250, 253])
def test_conv_pool_equals_two_layers(dtype, n_times):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, 7, (1, 25)).to(dtype)
    pool = torch.nn.AvgPool2d((1, 51), (1, 5))
    x = torch.randn(3, 1, 5, n_times, dtype=dtype)  # (B, 1, C, T)
    want = pool(conv(x))  # (B, 7, C, T')
    got = temporal_conv_pool(x, conv.weight, conv.bias, 51, 5)
    assert got.shape == want.shape == (3, 7, 5, (n_times - 75) // 5 + 1)
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("n_chans", "n_times"), [(17, 250), (63, 250), (17, 137), (63, 99)])
def test_same_outputs_and_parameter_gradients(dtype, n_chans, n_times):
    fused, ref = _pair(n_chans, n_times, dtype)
    x = torch.randn(4, n_chans, n_times, dtype=dtype)  # (B, C, T)
    out_f, out_r = fused(x), ref(x)  # (B, F)
    assert out_f.shape == (4, fused.out_features)
    torch.testing.assert_close(out_f, out_r, **TOL[dtype])
    target = torch.randn_like(out_f)
    (out_f * target).sum().backward()
    (out_r * target).sum().backward()
    grads_f = dict(fused.named_parameters())
    for name, p_ref in ref.named_parameters():
        assert p_ref.grad is not None, name
        g_f, g_r = grads_f[name].grad, p_ref.grad
        scale = g_r.abs().max().clamp_min(1e-30)
        torch.testing.assert_close(g_f / scale, g_r / scale, **TOL[dtype], msg=name)
    # the first conv's kernel really received a gradient through the fused path
    assert fused.tsconv[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["tsconv_sa", "tsconv_ga"])
def test_spatial_variants_share_the_fused_front_end(name):
    torch.manual_seed(0)
    fused = build_encoder(name, 17, 120).to(torch.float64).eval()
    ref = build_encoder(name, 17, 120, fused=False).to(torch.float64).eval()
    ref.load_state_dict(fused.state_dict())
    assert fused.fused and not ref.fused
    x = torch.randn(3, 17, 120, dtype=torch.float64)  # (B, C, T)
    torch.testing.assert_close(fused(x), ref(x), **TOL[torch.float64])


@pytest.mark.parametrize("name", ["tsconv_sa", "tsconv_ga"])
def test_spatial_variants_same_gradients(name):
    """SA/GA put parameters in front of the conv: the fused path's input gradient reaches them unchanged."""
    torch.manual_seed(0)
    fused = build_encoder(name, 6, 90).to(torch.float64).eval()
    ref = build_encoder(name, 6, 90, fused=False).to(torch.float64).eval()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(3, 6, 90, dtype=torch.float64)  # (B, C, T)
    fused(x).square().sum().backward()
    ref(x).square().sum().backward()
    grads = dict(fused.named_parameters())
    spatial = [n for n, _ in ref.named_parameters() if n.startswith("spatial.")]
    assert spatial
    for n, p in ref.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n].grad, p.grad, **TOL[torch.float64], msg=n)
    assert all(grads[n].grad is not None and grads[n].grad.abs().sum() > 0 for n in spatial[:1])


def test_autograd_gradcheck_of_the_fused_conv():
    """Input, kernel and bias gradients of the custom backward against finite differences (float64)."""
    torch.manual_seed(2)
    x = torch.randn(2, 1, 3, 40, dtype=torch.float64, requires_grad=True)  # (B, 1, C, T)
    w = torch.randn(4, 1, 1, 6, dtype=torch.float64, requires_grad=True)  # (F, 1, 1, K)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)  # (F,)
    assert torch.autograd.gradcheck(lambda x, w, b: temporal_conv_pool(x, w, b, 9, 3), (x, w, b))


def test_kernel_gradient_over_several_chunks(monkeypatch):
    """The kernel gradient accumulated over batch chunks equals the one-shot reference."""
    import hmavd.models.encoders as enc_mod

    monkeypatch.setattr(enc_mod, "_GRAD_CHUNK", 3)
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(1, 5, (1, 25)).to(torch.float64)
    pool = torch.nn.AvgPool2d((1, 51), (1, 5))
    x = torch.randn(8, 1, 4, 130, dtype=torch.float64)  # (B, 1, C, T): 3 chunks of 3, 3, 2
    g = torch.randn(8, 5, 4, 12, dtype=torch.float64)  # (B, F, C, T')
    want = torch.autograd.grad((pool(conv(x)) * g).sum(), [conv.weight, conv.bias])
    got = torch.autograd.grad(
        (temporal_conv_pool(x, conv.weight, conv.bias, 51, 5) * g).sum(), [conv.weight, conv.bias]
    )
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_training_mode_batchnorm_statistics_agree():
    fused, ref = _pair(17, 250, torch.float64)
    fused.train(), ref.train()
    for m in (fused, ref):
        m.tsconv[7].p = 0.0  # dropout off, so both see the same values
    x = torch.randn(6, 17, 250, dtype=torch.float64)  # (B, C, T)
    torch.testing.assert_close(fused(x), ref(x), **TOL[torch.float64])
    torch.testing.assert_close(fused.tsconv[2].running_mean, ref.tsconv[2].running_mean, **TOL[torch.float64])
    torch.testing.assert_close(fused.tsconv[2].running_var, ref.tsconv[2].running_var, **TOL[torch.float64])


def test_state_dict_names_and_shapes_unchanged():
    fused, ref = _pair(63, 250, torch.float32)
    sd_f, sd_r = fused.state_dict(), ref.state_dict()
    assert list(sd_f) == list(sd_r)
    assert {k: v.shape for k, v in sd_f.items()} == {k: v.shape for k, v in sd_r.items()}
    assert sd_f["tsconv.0.weight"].shape == (40, 1, 1, 25)  # the learned kernel, not the fused one
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in ref.parameters())
    # a checkpoint of one loads into the other strictly, and the loaded pair agrees
    other = TSConv(63, 250, fused=False)
    other.load_state_dict(sd_f, strict=True)
    x = torch.randn(2, 63, 250)  # (B, C, T)
    torch.testing.assert_close(other.eval()(x), fused(x), **TOL[torch.float32])


def test_fused_is_the_default_and_not_equal_to_a_wrong_kernel():
    enc = build_encoder("tsconv", 17, 250).eval()
    assert enc.fused
    # the comparison above can fail: a kernel without the box average gives different maps
    x = torch.randn(2, 1, 17, 250)  # (B, 1, C, T)
    w, b = enc.tsconv[0].weight, enc.tsconv[0].bias
    wrong = F.conv2d(x, F.pad(w, (0, 50)), b, stride=(1, 5))  # (B, 40, C, T')
    assert not torch.allclose(wrong, temporal_conv_pool(x, w, b, 51, 5), atol=1e-5)
