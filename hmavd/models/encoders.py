"""EEG encoders: NICE's temporal-spatial convolution (and its SA/GA variants) and a residual MLP.

Every encoder maps an epoch batch ``eeg`` of shape (B, C, T) float32 to features (B, F) and exposes
``out_features = F``. Build one by name with :func:`build_encoder`; the registry is :data:`ENCODERS`.

``tsconv`` is NICE's ``Enc_eeg`` (``PatchEmbedding`` + flatten, eeyhsong/NICE-EEG ``nice_stand.py``):
Conv2d 1→40 (1, 25), AvgPool (1, 51) stride (1, 5), BatchNorm, ELU, Conv2d 40→40 (C, 1), BatchNorm, ELU,
Dropout 0.5, 1×1 Conv 40→40, flatten. F = 40 · ((T − 24 − 51) // 5 + 1): 1440 for T = 250 whatever C.

The first two layers are linear with nothing between them, so by default (``fused=True``) they run as one
stride-5 convolution whose (1, 75) kernel is built inside ``forward`` from the learned (1, 25) kernel
(:func:`fused_temporal_kernel`): the parameters, their names and gradients, checkpoints and the NICE
weight layout are those of the two-layer reference, which ``fused=False`` keeps. The fused form never
materialises the (B, 40, C, T − 24) map before pooling (2.3 GB for a 1000 × 63 × 250 batch), which made
a training step several times slower (``benchmarks/bench_step_time.py`` measures both in one run; the
README's benchmark table has the figures).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    if x.device.type == "cpu":
        return _StridedTemporalConv.apply(x, kernel, bias, stride)  # (B, F, C, T')
    return F.conv2d(x, kernel, bias, stride=(1, stride))  # (B, F, C, T')


class _StridedTemporalConv(torch.autograd.Function):
    """``F.conv2d(x, kernel, bias, stride=(1, s))`` for one input map, with a faster CPU kernel gradient.

    oneDNN's weight gradient of a single-input-channel strided convolution is several times slower than
    its forward pass; the same gradient as a matrix product of the output gradient with the unfolded
    input windows (in batch chunks, so the unfolded copy stays small) is equal to float rounding.
    """

    @staticmethod
    def forward(ctx, x: Tensor, kernel: Tensor, bias: Tensor | None, stride: int) -> Tensor:
        ctx.save_for_backward(x, kernel)
        ctx.stride, ctx.has_bias = stride, bias is not None
        return F.conv2d(x, kernel, bias, stride=(1, stride))  # (B, F, C, T')

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # grad_out (B, F, C, T')
        x, kernel = ctx.saved_tensors
        s, length = ctx.stride, kernel.shape[-1]
        grad_x = grad_k = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, kernel, grad_out, stride=(1, s))  # (B, 1, C, T)
        if ctx.needs_input_grad[1]:
            n_out = grad_out.shape[-1]
            grad_k = kernel.new_zeros(kernel.shape[0], length)  # (F, L)
            for i in range(0, x.shape[0], _GRAD_CHUNK):
                win = x[i : i + _GRAD_CHUNK, 0].unfold(-1, length, s)[..., :n_out, :]  # (b, C, T', L)
                grad_k += torch.einsum("bfct,bctl->fl", grad_out[i : i + _GRAD_CHUNK], win)
            grad_k = grad_k.view_as(kernel)  # (F, 1, 1, L)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))  # (F,)
        return grad_x, grad_k, grad_b, None


#: Trials per chunk of the kernel gradient (an unfolded chunk of 63 × 36 × 75 windows is ~27 MB).
_GRAD_CHUNK = 100


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
        Run the temporal conv + pool as one strided convolution (default, several times faster); ``False``
        runs NICE's two layers in order (the reference). Same parameters and outputs either way.
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
        if self.fused:
            conv = self.tsconv[0]
            x = temporal_conv_pool(x, conv.weight, conv.bias, self._pool, self._pool_stride)  # (B, 40, C, T')
            for layer in islice(self.tsconv, 2, None):
                x = layer(x)  # (B, 40, 1, T') after the spatial conv
        else:
            x = self.tsconv(x)  # (B, 40, 1, T')
        x = self.projection(x)  # (B, 40, 1, T')
        # NICE rearranges 'b e h w -> b (h w) e' before flattening: time-major feature order
        return x.flatten(2).transpose(1, 2).reshape(x.shape[0], -1)  # (B, T' * 40)


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
