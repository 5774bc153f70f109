"""EEG encoders: NICE's temporal-spatial convolution (and its SA/GA variants) and a residual MLP.

Every encoder maps an epoch batch ``eeg`` of shape (B, C, T) float32 to features (B, F) and exposes
``out_features = F``. Build one by name with :func:`build_encoder`; the registry is :data:`ENCODERS`.

``tsconv`` is NICE's ``Enc_eeg`` (``PatchEmbedding`` + flatten, eeyhsong/NICE-EEG ``nice_stand.py``):
Conv2d 1→40 (1, 25), AvgPool (1, 51) stride (1, 5), BatchNorm, ELU, Conv2d 40→40 (C, 1), BatchNorm, ELU,
Dropout 0.5, 1×1 Conv 40→40, flatten. F = 40 · ((T − 24 − 51) // 5 + 1): 1440 for T = 250 whatever C.

The first two layers are linear with nothing between them, so by default (``fused=True``) they never
materialise the (B, 40, C, T − 24) map before pooling (2.3 GB for a 1000 × 63 × 250 batch). On CUDA they
run as one stride-5 convolution whose (1, 75) kernel is built inside ``forward`` from the learned (1, 25)
kernel (:func:`fused_temporal_kernel`). On CPU the first five layers (conv, pool, BatchNorm, ELU,
spatial conv) run as one autograd function: the pool becomes a moving average of the input
(:func:`box_average`) followed by the 25-tap kernel at stride 5, BatchNorm is folded into that kernel
(its batch statistics follow from the moments of the input windows), and every large operation is one
matrix product on channel-major maps that are written once. Either way the parameters, their names and
gradients, checkpoints and the NICE weight layout are those of the layer-by-layer reference, which
``fused=False`` keeps (``tests/hmavd/test_fused_tsconv.py`` compares outputs, every gradient and the
running statistics; ``benchmarks/bench_step_time.py`` measures both paths and each layer in one run).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..errors import UserError
from .attention import SpatialBlock
from .mlp_encoders import MLP_ENCODERS

__all__ = [
    "ENCODERS",
    "build_encoder",
    "TSConv",
    "ResMLP",
    "tsconv_out_features",
    "nice_init",
    "fused_temporal_kernel",
    "temporal_conv_pool",
]


def tsconv_out_features(
    n_times: int, n_filters: int = 40, kernel: int = 25, pool: int = 51, pool_stride: int = 5
) -> int:
    """Flattened feature size of :class:`TSConv` for ``n_times`` samples (independent of channels)."""
    t_conv = n_times - kernel + 1
    if t_conv < pool:
        return 0
    return n_filters * ((t_conv - pool) // pool_stride + 1)


def fused_temporal_kernel(weight: Tensor, pool: int) -> Tensor:
    """The kernel of a (1, K) convolution followed by a (1, ``pool``) average pool, as one (1, K + pool − 1) kernel.

    Parameters
    ----------
    weight : Tensor
        Conv2d weight (F, 1, 1, K) of the temporal convolution (input channels must be 1).
    pool : int
        Average-pooling window P in samples.

    Returns
    -------
    Tensor
        (F, 1, 1, K + P − 1): ``weight`` convolved with the P-tap box 1/P, differentiable in ``weight``.
        A stride-s convolution with it equals conv (stride 1) → avg-pool (P, stride s); the conv bias
        passes through the pool unchanged.
    """
    n_filters, _, _, k = weight.shape
    box = weight.new_full((1, 1, pool), 1.0 / pool)  # (1, 1, P); symmetric, so correlation = convolution
    taps = F.pad(weight.reshape(n_filters, 1, k), (pool - 1, pool - 1))  # (F, 1, K + 2P − 2)
    return F.conv1d(taps, box).reshape(n_filters, 1, 1, k + pool - 1)  # (F, 1, 1, K + P − 1)


def temporal_conv_pool(x: Tensor, weight: Tensor, bias: Tensor | None, pool: int, stride: int) -> Tensor:
    """Conv2d(1→F, (1, K)) then AvgPool2d((1, ``pool``), (1, ``stride``)) computed as one strided convolution.

    Parameters
    ----------
    x : Tensor
        (B, 1, C, T) input maps.
    weight, bias : Tensor
        The temporal convolution's weight (F, 1, 1, K) and bias (F,) or None.
    pool, stride : int
        Average-pool window and stride in samples.

    Returns
    -------
    Tensor
        (B, F, C, (T − K − P + 1) // stride + 1), equal to the two-layer form to float rounding.
    """
    kernel = fused_temporal_kernel(weight, pool)  # (F, 1, 1, K + P − 1)
    return F.conv2d(x, kernel, bias, stride=(1, stride))  # (B, F, C, T')


def box_average(x: Tensor, width: int) -> Tensor:
    """Moving average over the last axis: (..., T) -> (..., T − ``width`` + 1), differentiable.

    Averaging commutes with the temporal convolution, so conv (K taps) → avg-pool (P, stride s) equals
    this P-sample moving average followed by the K-tap convolution at stride s: a third of the
    multiply-adds of the fused (K + P − 1)-tap kernel. Computed as a difference of running sums of
    ``x`` minus its first sample (so a DC offset does not grow the sums).
    """
    x0 = x[..., :1]  # (..., 1)
    total = torch.cumsum(x - x0, -1)  # (..., T)
    out = total[..., width - 1 :].clone()  # (..., T − width + 1): sums of x[0 .. s + width − 1]
    out[..., 1:] -= total[..., :-width]
    return out.mul_(1.0 / width).add_(x0)


#: Elements of one chunk of the (C, F, B·T') maps in the CPU front end: 32 MB of float32 (whole channels;
#: below glibc's largest dynamic mmap threshold, so the per-chunk temporaries reuse heap memory instead of
#: faulting in fresh pages, and few enough chunks that two threads rarely wait on each other).
_CHUNK_ELEMS = 1 << 23


def _windows(xt: Tensor, length: int, stride: int, shift: float, buf: Tensor) -> Tensor:
    """Windows of ``xt`` (n, B, Tb) minus ``shift`` with a column of ones: (n, B·T', L + 1), written into ``buf``.

    ``buf`` is (≥ n, B, T', L + 1) with ones in its last column (see :func:`_window_buffer`); the ones
    column carries a bias in the products with the kernel and gives sums in the products with maps.
    """
    out = buf[: xt.shape[0]]  # (n, B, T', L + 1)
    torch.sub(xt.unfold(-1, length, stride), shift, out=out[..., :length])
    return out.view(xt.shape[0], -1, length + 1)  # (n, B·T', L + 1)


def _window_buffer(xt: Tensor, length: int, stride: int, chunk: int) -> Tensor:
    """The reusable window buffer (chunk, B, T', L + 1) of :func:`_windows`, its last column ones."""
    n_out = (xt.shape[-1] - length) // stride + 1
    buf = xt.new_empty(min(chunk, xt.shape[0]), xt.shape[1], n_out, length + 1)
    buf[..., length] = 1.0
    return buf


def _window_moments(xt: Tensor, length: int, stride: int, chunk: int, buf: Tensor) -> tuple[float, Tensor, Tensor]:
    """Mean shift, mean window and window covariance of ``xt`` (C, B, Tb), in float64.

    Returns ``mu`` (the global mean, subtracted before the products against cancellation), ``m`` (L,) the
    mean of the shifted windows and ``cov`` (L, L) their biased covariance over all C·B·T' windows.
    """
    mu = float(xt.mean(dtype=torch.float64))
    gram = torch.zeros(length + 1, length + 1, dtype=torch.float64)  # (L + 1, L + 1)
    for i in range(0, xt.shape[0], chunk):
        win = _windows(xt[i : i + chunk], length, stride, mu, buf)  # (n, B·T', L + 1)
        gram += torch.bmm(win.transpose(1, 2), win).sum(0).double()
    n = gram[length, length]  # the number of windows
    m = gram[:length, length] / n  # (L,)
    return mu, m, gram[:length, :length] / n - torch.outer(m, m)


class _TSConvFront(torch.autograd.Function):
    """conv → avg-pool → BatchNorm → ELU → spatial conv of TSConv as one CPU function.

    Computes ``s = W2 · ELU(BN(conv(xb, k) + b)) + b2`` (B, G, T') where ``xb`` is the moving-averaged input
    (:func:`box_average`), ``k`` the learned (F, 1, 1, L) temporal kernel and ``W2`` the (G, F, C, 1)
    spatial kernel. BatchNorm is folded into the temporal kernel: its batch statistics (training) follow
    from the window moments of ``xb`` (mean_f = k·m + b, var_f = k Σ kᵀ) before any map exists, so the ELU
    maps are written once, in place, channel-major (C, F, B·T'): each channel's maps are one matrix
    product of the kernel with that channel's windows, and the spatial convolution, its weight gradient
    and its input gradient are single (G, C·F) · (C·F, B·T') products. In the backward pass the BatchNorm
    gradient comes from per-filter sums and the moments instead of extra passes over the maps.
    ``running`` = (mean, var) normalises with those statistics instead (eval mode). Returns ``s`` and the
    batch mean / biased variance (F,) (the caller updates the running statistics).
    """

    @staticmethod
    def forward(ctx, xb, k, b, gamma, beta, w2, b2, running, stride: int, eps: float):
        n_f, length, n_g = k.shape[0], k.shape[-1], w2.shape[0]
        xt = xb[:, 0].transpose(0, 1).contiguous()  # (C, B, Tb)
        n_c, n_b, n_out = xt.shape[0], xt.shape[1], (xt.shape[-1] - length) // stride + 1
        chunk = max(1, _CHUNK_ELEMS // (n_f * n_b * n_out))  # channels per chunk
        kd = k.reshape(n_f, length).double()  # (F, L)
        buf = _window_buffer(xt, length, stride, chunk)  # (chunk, B, T', L + 1)
        if running is None:
            mu, m, cov = _window_moments(xt, length, stride, chunk, buf)
            mean = kd @ m + mu * kd.sum(1) + b.double()  # (F,)
            var = ((kd @ cov) * kd).sum(1)  # (F,) biased, as BatchNorm normalises
        else:
            mu, m, cov = 0.0, None, None
            mean, var = running[0].double(), running[1].double()
        rstd = (var + eps).rsqrt()  # (F,)
        a = gamma.double() * rstd  # (F,): the BatchNorm scale, folded into the kernel
        bias = beta.double() + a * (mu * kd.sum(1) + b.double() - mean)  # (F,)
        kern = torch.cat([kd * a[:, None], bias[:, None]], 1).to(k.dtype)  # (F, L + 1): kernel | bias
        maps = xb.new_empty(n_c, n_f, n_b * n_out)  # (C, F, B·T'): the ELU maps
        for i in range(0, n_c, chunk):
            win = _windows(xt[i : i + chunk], length, stride, mu, buf)  # (n, B·T', L + 1)
            e = maps[i : i + chunk]  # (n, F, B·T')
            F.elu_(torch.bmm(kern.expand(e.shape[0], -1, -1), win.transpose(1, 2), out=e))
        w2m = w2[..., 0].transpose(1, 2).reshape(n_g, -1)  # (G, C·F), channel-major as the maps
        out = torch.addmm(b2[:, None], w2m, maps.view(-1, n_b * n_out))  # (G, B·T')
        ctx.save_for_backward(xt, k, b, w2m, maps)
        ctx.stats = (mu, m, cov, mean, rstd, a, running is None)
        ctx.sizes = (stride, chunk, n_out)
        ctx.mark_non_differentiable(mean, var)
        return out.view(n_g, n_b, n_out).transpose(0, 1), mean.to(k.dtype), var.to(k.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, _grad_mean, _grad_var):  # grad_out (B, G, T')
        xt, k, b, w2m, maps = ctx.saved_tensors
        mu, m, cov, mean, rstd, a, batch_stats = ctx.stats
        stride, chunk, n_out = ctx.sizes
        gs = grad_out.transpose(0, 1).reshape(w2m.shape[0], -1)  # (G, B·T')
        g_w2 = gs @ maps.view(w2m.shape[1], -1).t()  # (G, C·F)
        s1, g1 = _front_sums(xt, maps, w2m, gs, mu, k.shape[-1], stride, chunk)
        kd, n_tot = k.reshape(k.shape[0], -1).double(), maps.numel() // maps.shape[1]
        if batch_stats:  # dy = a·gz + c_a + c_b·(y − mean): BatchNorm's training-mode gradient
            g_gamma = rstd * ((kd * g1).sum(1) - (kd @ m) * s1)
            c_a, c_b = -a * s1 / n_tot, -a * rstd * g_gamma / n_tot  # (F,)
            g_b = a * s1 + c_a * n_tot  # 0 up to rounding: the batch mean removes the bias
            g_k = a[:, None] * g1 + g_b[:, None] * mu + (c_a[:, None] * m + c_b[:, None] * (kd @ cov)) * n_tot
        else:  # fixed statistics: dy = a·gz
            c_a = c_b = None
            g_gamma = rstd * ((kd * g1).sum(1) + (mu * kd.sum(1) + b.double() - mean) * s1)
            g_b = a * s1
            g_k = a[:, None] * g1 + g_b[:, None] * mu
        grad_xb = None
        if ctx.needs_input_grad[0]:
            dy_terms = (a, c_a, c_b, kd @ m if batch_stats else None, mu)
            grad_xt = _front_input_grad(xt, k, maps, w2m, gs, dy_terms, stride, chunk)
            grad_xb = grad_xt.transpose(0, 1).unsqueeze(1)  # (B, 1, C, Tb)
        n_g, n_f = w2m.shape[0], k.shape[0]
        g_w2 = g_w2.view(n_g, -1, n_f).transpose(1, 2).unsqueeze(-1)  # (G, F, C, 1)
        grads = (g_k.view_as(k), g_b, g_gamma, s1)
        return (grad_xb, *(g.to(k.dtype) for g in grads), g_w2, gs.sum(1), None, None, None)


def _chunk_gz(e: Tensor, w2m: Tensor, gs: Tensor, first: int) -> Tensor:
    """∂loss/∂(BatchNorm output) (n, F, B·T') of the channels from ``first`` from their ELU maps ``e``."""
    rows = w2m[:, first * e.shape[1] : (first + e.shape[0]) * e.shape[1]]  # (G, n·F)
    ge = (rows.t() @ gs).view_as(e)  # (n, F, B·T')
    return torch.ops.aten.elu_backward.grad_input(ge, 1.0, 1.0, 1.0, True, e, grad_input=ge)


def _front_sums(xt, maps, w2m, gs, mu: float, length: int, stride: int, chunk: int) -> tuple[Tensor, Tensor]:
    """Σ gz (F,) and Σ gz·(window − mu) (F, L) in float64, gz = ∂loss/∂(BatchNorm output), by channel chunks."""
    buf = _window_buffer(xt, length, stride, chunk)
    g1 = torch.zeros(maps.shape[1], length + 1, dtype=torch.float64)  # (F, L + 1): last column Σ gz
    for i in range(0, maps.shape[0], chunk):
        gz = _chunk_gz(maps[i : i + chunk], w2m, gs, i)  # (n, F, B·T')
        g1 += torch.bmm(gz, _windows(xt[i : i + chunk], length, stride, mu, buf)).sum(0).double()
    return g1[:, length], g1[:, :length]


def _front_input_grad(xt, k, maps, w2m, gs, dy_terms, stride: int, chunk: int) -> Tensor:
    """∂loss/∂xt (C, B, Tb) of :class:`_TSConvFront` (SA/GA blocks and saliency maps need it).

    ``dy_terms`` = (a, c_a, c_b, k·m, mu): dy = a·gz + c_a + c_b·(y − mean), y − mean = k·(window − mu − m),
    all (F,); c_a, c_b and k·m are None with fixed statistics (dy = a·gz).
    """
    a, c_a, c_b, km, mu = dy_terms
    dt, length, n_out = k.dtype, k.shape[-1], maps.shape[-1] // xt.shape[1]
    kf = k.reshape(k.shape[0], length)  # (F, L)
    grad_xt = torch.zeros_like(xt)  # (C, B, Tb)
    buf = _window_buffer(xt, length, stride, chunk) if km is not None else None
    for i in range(0, xt.shape[0], chunk):
        gz = _chunk_gz(maps[i : i + chunk], w2m, gs, i)  # (n, F, B·T')
        n = gz.shape[0]
        if km is None:
            dy = gz.mul_(a.to(dt).view(1, -1, 1))
        else:
            win = _windows(xt[i : i + chunk], length, stride, mu, buf)  # (n, B·T', L + 1)
            kb = torch.cat([kf.double() * c_b[:, None], (c_a - c_b * km)[:, None]], 1).to(dt)  # (F, L + 1)
            dy = torch.bmm(kb.expand(n, -1, -1), win.transpose(1, 2))  # (n, F, B·T')
            dy.addcmul_(gz, a.to(dt).view(1, -1, 1))
        g_win = torch.bmm(dy.transpose(1, 2), kf.expand(n, -1, -1)).view(n, xt.shape[1], n_out, length)
        for lag in range(length):  # overlap-add the window gradients back onto the samples
            grad_xt[i : i + n, :, lag : lag + stride * (n_out - 1) + 1 : stride] += g_win[..., lag]
    return grad_xt


def nice_init(module: nn.Module) -> None:
    """NICE's ``weights_init_normal``: Conv/Linear weights ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02), bias 0.

    Apply with ``model.apply(nice_init)``. Biases of Conv/Linear keep PyTorch's default, as in the reference.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class TSConv(nn.Module):
    """NICE temporal-spatial convolution encoder, optionally behind an SA/GA spatial block.

    Parameters
    ----------
    n_chans, n_times : int
        Input epoch size (C channels × T samples).
    n_filters : int
        Filters of both convolutions and of the 1×1 projection (NICE: 40).
    kernel : int
        Temporal kernel length in samples (NICE: 25 at 250 Hz).
    pool, pool_stride : int
        Temporal average pooling (NICE: 51, stride 5).
    dropout : float
        Dropout after the spatial convolution (NICE: 0.5).
    spatial : {None, "sa", "ga"}
        Spatial block in front of the convolutions (NICE-SA / NICE-GA).
    spatial_dropout : float
        Dropout of the spatial block (reference: 0.3).
    ga_topk : int or None
        GA only: per-sample k-nearest-channel graph; ``None`` = all channels connected.
    fused : bool
        The fast path (default): on CPU layers 0–4 as one function (:class:`_TSConvFront`), on CUDA the
        conv + pool as one strided convolution. ``False`` runs NICE's layers in order (the reference).
        Same parameters, outputs and gradients either way (to float rounding).
    """

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        n_filters: int = 40,
        kernel: int = 25,
        pool: int = 51,
        pool_stride: int = 5,
        dropout: float = 0.5,
        spatial: str | None = None,
        spatial_dropout: float = 0.3,
        ga_topk: int | None = None,
        fused: bool = True,
    ):
        super().__init__()
        self.out_features = tsconv_out_features(n_times, n_filters, kernel, pool, pool_stride)
        if self.out_features <= 0:
            raise UserError(
                f"n_times: {n_times} samples is too short for the tsconv encoder (needs at least "
                f"{kernel + pool - 1}); use longer epochs or encoder 'resmlp'"
            )
        self.n_chans, self.n_times = n_chans, n_times
        self.fused = bool(fused)
        self._pool, self._pool_stride = pool, pool_stride
        self.spatial = SpatialBlock(spatial, n_chans, n_times, spatial_dropout, ga_topk) if spatial else nn.Identity()
        self.tsconv = nn.Sequential(
            nn.Conv2d(1, n_filters, (1, kernel), (1, 1)),
            nn.AvgPool2d((1, pool), (1, pool_stride)),
            nn.BatchNorm2d(n_filters),
            nn.ELU(),
            nn.Conv2d(n_filters, n_filters, (n_chans, 1), (1, 1)),
            nn.BatchNorm2d(n_filters),
            nn.ELU(),
            nn.Dropout(dropout),
        )
        self.projection = nn.Conv2d(n_filters, n_filters, (1, 1), stride=(1, 1))

    def forward(self, eeg: Tensor) -> Tensor:
        """Map (B, C, T) to (B, F)."""
        x = self.spatial(eeg).unsqueeze(1)  # (B, 1, C, T)
        if self.fused and x.device.type == "cpu":
            x = self._cpu_front(x)  # (B, 40, 1, T') after the spatial conv
            for layer in islice(self.tsconv, 5, None):
                x = layer(x)  # (B, 40, 1, T')
        elif self.fused:
            conv = self.tsconv[0]
            x = temporal_conv_pool(x, conv.weight, conv.bias, self._pool, self._pool_stride)  # (B, 40, C, T')
            for layer in islice(self.tsconv, 2, None):
                x = layer(x)  # (B, 40, 1, T') after the spatial conv
        else:
            x = self.tsconv(x)  # (B, 40, 1, T')
        x = self.projection(x)  # (B, 40, 1, T')
        # NICE rearranges 'b e h w -> b (h w) e' before flattening: time-major feature order
        return x.flatten(2).transpose(1, 2).reshape(x.shape[0], -1)  # (B, T' * 40)

    def _cpu_front(self, x: Tensor) -> Tensor:
        """Layers 0–4 (conv, pool, BatchNorm, ELU, spatial conv) in one :class:`_TSConvFront`.

        (B, 1, C, T) -> (B, G, 1, T'); in training mode BatchNorm's running statistics are updated as
        ``nn.BatchNorm2d`` updates them.
        """
        conv, bn, spatial = self.tsconv[0], self.tsconv[2], self.tsconv[4]
        batch_stats = bn.training or bn.running_mean is None
        running = None if batch_stats else (bn.running_mean, bn.running_var)
        xb = box_average(x, self._pool)  # (B, 1, C, T − P + 1)
        args = (conv.weight, conv.bias, bn.weight, bn.bias, spatial.weight, spatial.bias)
        out, mean, var = _TSConvFront.apply(xb, *args, running, self._pool_stride, bn.eps)  # (B, G, T')
        if bn.training and bn.track_running_stats:
            _update_running_stats(bn, mean, var, x.shape[0] * x.shape[2] * out.shape[-1])
        return out.unsqueeze(2)  # (B, G, 1, T')


@torch.no_grad()
def _update_running_stats(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, n: int) -> None:
    """BatchNorm2d's running-statistics update from a batch's mean and biased variance over ``n`` values."""
    bn.num_batches_tracked.add_(1)
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
    bn.running_var.mul_(1 - factor).add_(var * (n / max(n - 1, 1)), alpha=factor)


class ResMLP(nn.Module):
    """Residual MLP on the flattened epoch: a strong simple baseline.

    ``Linear(C·T, hidden)`` then ``n_blocks`` residual blocks ``h + Dropout(GELU(Linear(LayerNorm(h))))``
    and a final LayerNorm; ``out_features = hidden``.
    """

    def __init__(self, n_chans: int, n_times: int, hidden: int = 512, n_blocks: int = 2, dropout: float = 0.5):
        super().__init__()
        self.out_features = hidden
        self.inp = nn.Linear(n_chans * n_times, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))
            for _ in range(n_blocks)
        )
        self.norm = nn.LayerNorm(hidden)

    def forward(self, eeg: Tensor) -> Tensor:
        """Map (B, C, T) to (B, hidden)."""
        h = self.inp(eeg.flatten(1))  # (B, hidden)
        for block in self.blocks:
            h = h + block(h)  # (B, hidden)
        return self.norm(h)


def _tsconv(n_chans: int, n_times: int, **kw) -> nn.Module:
    return TSConv(n_chans, n_times, **kw)


def _tsconv_sa(n_chans: int, n_times: int, **kw) -> nn.Module:
    return TSConv(n_chans, n_times, spatial="sa", **kw)


def _tsconv_ga(n_chans: int, n_times: int, **kw) -> nn.Module:
    return TSConv(n_chans, n_times, spatial="ga", **kw)


def _resmlp(n_chans: int, n_times: int, **kw) -> nn.Module:
    return ResMLP(n_chans, n_times, **kw)


#: Encoder registry: name -> factory(n_chans, n_times, **kwargs).
ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "tsconv": _tsconv,
    "tsconv_sa": _tsconv_sa,
    "tsconv_ga": _tsconv_ga,
    "resmlp": _resmlp,
    **MLP_ENCODERS,  # eeg_project (UBP/NeuroBridge), brain_mlp (BrainHIVE), blur_spatial_mlp: mlp_encoders.py
}


def build_encoder(name: str, n_chans: int, n_times: int, **kwargs) -> nn.Module:
    """Build a registered EEG encoder.

    Parameters
    ----------
    name : str
        One of :data:`ENCODERS` (``"tsconv"``, ``"tsconv_sa"``, ``"tsconv_ga"``, ``"resmlp"``).
    n_chans, n_times : int
        Epoch size (C, T).
    **kwargs
        Passed to the encoder class (e.g. ``dropout``, ``ga_topk``, ``hidden``).

    Returns
    -------
    nn.Module
        ``module(eeg (B, C, T)) -> (B, F)`` with attribute ``out_features = F``.
    """
    if name not in ENCODERS:
        raise UserError(f"encoder: unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    if n_chans < 1 or n_times < 1:
        raise UserError(f"n_chans/n_times: got {n_chans}x{n_times}; both must be positive")
    try:
        return ENCODERS[name](n_chans, n_times, **kwargs)
    except TypeError as err:
        raise UserError(f"encoder_kwargs: {kwargs} not accepted by encoder {name!r} ({err}); fix the keys") from None
