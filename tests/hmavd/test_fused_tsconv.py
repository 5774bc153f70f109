"""The fused TSConv front end equals NICE's layer order: outputs, every gradient, BatchNorm statistics, state_dict.

On CPU ``fused=True`` runs conv → pool → BatchNorm → ELU → spatial conv as one autograd function
(moving average, BatchNorm folded into the kernel, channel-major matrix products); on CUDA the conv + pool
is one strided convolution. Both are compared with ``fused=False`` (the modules in NICE's order).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hmavd.models.encoders as enc_mod
from hmavd.models.encoders import TSConv, box_average, build_encoder, fused_temporal_kernel, temporal_conv_pool

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


def _no_dropout(*models: torch.nn.Module) -> None:
    for model in models:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0


def _assert_same_gradients(fused: torch.nn.Module, ref: torch.nn.Module, dtype: torch.dtype, train: bool) -> None:
    """Every parameter's gradient agrees; in training mode the biases in front of a BatchNorm get ~0 in both.

    Those gradients are exactly 0 in exact arithmetic (the batch mean removes a bias), so they are compared
    against the scale of the largest gradient instead of their own (rounding noise).
    """
    grads = dict(fused.named_parameters())
    largest = max(float(p.grad.abs().max()) for p in ref.parameters() if p.grad is not None)
    for name, p_ref in ref.named_parameters():
        assert p_ref.grad is not None and grads[name].grad is not None, name
        g_f, g_r = grads[name].grad, p_ref.grad
        if train and name in ("tsconv.0.bias", "tsconv.4.bias"):
            assert float((g_f - g_r).abs().max()) <= 1e-5 * largest, name
            continue
        scale = g_r.norm().clamp_min(1e-30)
        err = float((g_f - g_r).norm() / scale)
        assert err < (1e-10 if dtype == torch.float64 else 1e-4), (name, err)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", ["tsconv", "tsconv_sa", "tsconv_ga"])
def test_every_gradient_equals_the_reference_in_train_and_eval_mode(name, train):
    """Outputs, every parameter's gradient, the input's gradient and BatchNorm's running statistics."""
    torch.manual_seed(0)
    fused = build_encoder(name, 9, 130).double().train(train)
    ref = build_encoder(name, 9, 130, fused=False).double().train(train)
    ref.load_state_dict(fused.state_dict())
    _no_dropout(fused, ref)
    x = (torch.randn(5, 9, 130, dtype=torch.float64) * 2 + 0.7).requires_grad_()  # (B, C, T)
    x_ref = x.detach().clone().requires_grad_()
    out_f, out_r = fused(x), ref(x_ref)  # (B, F)
    torch.testing.assert_close(out_f, out_r, **TOL[torch.float64])
    target = torch.randn_like(out_f)
    (out_f * target).sum().backward()
    (out_r * target).sum().backward()
    _assert_same_gradients(fused, ref, torch.float64, train)
    torch.testing.assert_close(x.grad, x_ref.grad, **TOL[torch.float64])
    for i in (2, 5):  # both BatchNorms: running statistics and batch counter
        bn_f, bn_r = fused.tsconv[i], ref.tsconv[i]
        torch.testing.assert_close(bn_f.running_mean, bn_r.running_mean, **TOL[torch.float64])
        torch.testing.assert_close(bn_f.running_var, bn_r.running_var, **TOL[torch.float64])
        assert int(bn_f.num_batches_tracked) == int(bn_r.num_batches_tracked) == int(train)
    if train:  # the running statistics really moved (the comparison above can fail)
        assert not torch.allclose(fused.tsconv[2].running_var, torch.ones(40, dtype=torch.float64))


@pytest.mark.parametrize("train", [True, False])
def test_float32_paper_sized_gradients_agree(train):
    fused, ref = _pair(63, 250, torch.float32)
    fused.train(train), ref.train(train)
    _no_dropout(fused, ref)
    x = torch.randn(8, 63, 250)  # (B, C, T)
    out_f, out_r = fused(x), ref(x)
    torch.testing.assert_close(out_f, out_r, **TOL[torch.float32])
    target = torch.randn_like(out_f)
    (out_f * target).sum().backward()
    (out_r * target).sum().backward()
    _assert_same_gradients(fused, ref, torch.float32, train)


@pytest.mark.parametrize("train", [True, False])
def test_channel_chunks_give_the_same_result(monkeypatch, train):
    """Tiny chunks (one channel each, the last chunk partial) change nothing but the order of the sums."""
    torch.manual_seed(4)
    x = torch.randn(4, 7, 120, dtype=torch.float64, requires_grad=True)  # (B, C, T)
    results = []
    for elems in (1 << 22, 1):
        monkeypatch.setattr(enc_mod, "_CHUNK_ELEMS", elems)
        torch.manual_seed(0)
        enc = build_encoder("tsconv_sa", 7, 120).double().train(train)
        _no_dropout(enc)
        x.grad = None
        enc(x).square().sum().backward()
        results.append([x.grad.clone()] + [p.grad.clone() for p in enc.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_momentum_none_running_average_matches_batchnorm():
    fused, ref = _pair(6, 100, torch.float64)
    for m in (fused, ref):
        m.train()
        m.tsconv[2].momentum = None  # cumulative average over batches
    for seed in range(3):
        x = torch.randn(3, 6, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        fused(x), ref(x)
    torch.testing.assert_close(fused.tsconv[2].running_var, ref.tsconv[2].running_var, **TOL[torch.float64])
    torch.testing.assert_close(fused.tsconv[2].running_mean, ref.tsconv[2].running_mean, **TOL[torch.float64])


def test_a_dc_offset_costs_no_more_precision_than_the_reference():
    """float32 with a large offset: the fused error against float64 stays within a few times NICE's own."""
    torch.manual_seed(5)
    exact = TSConv(17, 250, fused=False).double().train()
    fused32, ref32 = TSConv(17, 250).train(), TSConv(17, 250, fused=False).train()
    for m in (fused32, ref32):
        m.load_state_dict(exact.state_dict())
    _no_dropout(exact, fused32, ref32)
    x = torch.randn(6, 17, 250, dtype=torch.float64) + 300.0  # (B, C, T) far from zero mean
    with torch.no_grad():
        want = exact(x)
        err_fused = float((fused32(x.float()).double() - want).abs().max())
        err_ref = float((ref32(x.float()).double() - want).abs().max())
    assert err_fused <= 10 * err_ref + 1e-6, (err_fused, err_ref)


@pytest.mark.parametrize("width", [1, 2, 51])
def test_box_average_is_the_moving_mean(width):
    x = torch.randn(2, 3, 80, dtype=torch.float64) + 50.0  # (B, C, T) with an offset
    want = F.avg_pool1d(x, width, stride=1)  # (B, C, T − width + 1)
    torch.testing.assert_close(box_average(x, width), want, rtol=1e-12, atol=1e-12)
    got32 = box_average(x.float(), width).double()
    assert float((got32 - want).abs().max()) < 1e-4 * 50


def test_gradcheck_of_the_cpu_front_end():
    """Every input gradient of the custom backward (batch and fixed statistics) against finite differences."""
    torch.manual_seed(6)
    xb = torch.randn(3, 1, 4, 30, dtype=torch.float64, requires_grad=True)  # (B, 1, C, Tb)
    params = [
        torch.randn(5, 1, 1, 6, dtype=torch.float64),  # temporal kernel (F, 1, 1, L)
        torch.randn(5, dtype=torch.float64),  # its bias
        torch.rand(5, dtype=torch.float64) + 0.5,  # BatchNorm weight
        torch.randn(5, dtype=torch.float64),  # BatchNorm bias
        torch.randn(3, 5, 4, 1, dtype=torch.float64),  # spatial kernel (G, F, C, 1)
        torch.randn(3, dtype=torch.float64),  # its bias
    ]
    params = [p.requires_grad_() for p in params]
    running = (torch.randn(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.5)
    for stats in (None, running):

        def front(xb, *ps, stats=stats):
            return enc_mod._TSConvFront.apply(xb, *ps, stats, 4, 1e-5)[0]

        assert torch.autograd.gradcheck(front, (xb, *params))


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [True, False])
def test_cuda_paths_equal_the_cpu_fast_path(fused):
    """The CUDA encoder (strided fused conv or NICE's order) against the CPU front end: outputs and gradients."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    cpu = TSConv(17, 250).train()
    gpu = TSConv(17, 250, fused=fused).cuda().train()
    gpu.load_state_dict(cpu.state_dict())
    _no_dropout(cpu, gpu)
    x = torch.randn(8, 17, 250)  # (B, C, T)
    out_c, out_g = cpu(x), gpu(x.cuda())
    torch.testing.assert_close(out_g.cpu(), out_c, rtol=1e-3, atol=1e-4)  # TF32 convolutions on CUDA
    target = torch.randn_like(out_c)
    (out_c * target).sum().backward()
    (out_g * target.cuda()).sum().backward()
    grads = dict(gpu.named_parameters())
    for name, p in cpu.named_parameters():
        if name in ("tsconv.0.bias", "tsconv.4.bias"):
            continue  # ~0 in both (a BatchNorm follows)
        err = float((grads[name].grad.cpu() - p.grad).norm() / p.grad.norm())
        assert err < 1e-2, (name, err)
