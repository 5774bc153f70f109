"""Trainable image-side heads of the open recipes (the gallery becomes a model output).

Every head maps the image input of one trial, a row of the feature cache (B, F), to the shared space
(B, D). Banks with several levels or several encoders are stored *concatenated* along the feature axis
(``hmavd-features extract variant_mode=concat``: V blocks of D), so the whole pipeline keeps 2-D arrays
and a head splits the row itself.

================ =====================================================================================
``linear``       ``Linear(F, D)`` (NeuroBridge's linear projector)
``mlp_adapter``  ``Linear(F, H) -> ELU -> Dropout(p) -> Linear(H, D)`` (visual-blur's image adapter:
                 H = 768, p = 0.85), optionally ``+ x`` (``residual=True``, needs F = D)
``blur_levels``  per-dimension softmax weighting over V stored levels (+ ``n_extra`` learned levels that
                 start at 0), then the adapter: the visual-blur method's image side. With weights
                 ``s`` (V + E, D) ~ U(0, 1): ``x_d = Σ_v softmax_v(s)_{v,d} · level_{v,d}``
``sum_fusion``   one ``Linear(d_k, D)`` per bank, summed, then BrainHIVE's residual layer
                 ``LayerNorm_eps1e-6(h + W2 Dropout(GELU(W1 h)))``
================ =====================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError
from .mlp_encoders import _ResLayer

__all__ = [
    "LinearHead",
    "MLPAdapter",
    "LevelWeighting",
    "BlurLevelHead",
    "SumFusion",
    "IMAGE_HEADS",
    "build_image_head",
]


class LinearHead(nn.Module):
    """``Linear(in_features, out_features)``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)  # (B, D)


class MLPAdapter(nn.Module):
    """``Linear(F, hidden) -> ELU -> Dropout -> Linear(hidden, D)`` (+ the input when ``residual``)."""

    def __init__(
        self, in_features: int, out_features: int, hidden: int = 768, dropout: float = 0.85, residual: bool = False
    ):
        super().__init__()
        if residual and in_features != out_features:
            raise UserError(
                f"image_head: a residual adapter needs in = out features (got {in_features}, {out_features})"
            )
        self.in_features, self.out_features, self.residual = in_features, out_features, residual
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ELU(), nn.Dropout(dropout), nn.Linear(hidden, out_features)
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x)  # (B, D)
        return x + y if self.residual else y


class LevelWeighting(nn.Module):
    """Learned per-dimension softmax weighting of V levels (+ ``n_extra`` learned levels).

    Parameters
    ----------
    n_levels : int
        V levels stored in each input row (F = V · dim, level-major).
    dim : int
        Size D of one level.
    n_extra : int
        Learned extra levels, initialised at 0 (visual-blur: 4).
    """

    def __init__(self, n_levels: int, dim: int, n_extra: int = 4):
        super().__init__()
        self.n_levels, self.dim = n_levels, dim
        self.scale = nn.Parameter(torch.rand(1, n_levels + n_extra, dim))
        self.extra = nn.Parameter(torch.zeros(1, n_extra, dim))

    def forward(self, x: Tensor) -> Tensor:
        levels = x.reshape(x.shape[0], self.n_levels, self.dim)  # (B, V, D)
        levels = torch.cat([levels, self.extra.expand(x.shape[0], -1, -1)], dim=1)  # (B, V + E, D)
        weights = torch.softmax(self.scale, dim=1)  # (1, V + E, D), sums to 1 over levels
        return (levels * weights).sum(dim=1)  # (B, D)


class BlurLevelHead(nn.Module):
    """The visual-blur image side: :class:`LevelWeighting` then :class:`MLPAdapter` (D -> hidden -> D)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_levels: int,
        n_extra: int = 4,
        hidden: int = 768,
        dropout: float = 0.85,
    ):
        super().__init__()
        if n_levels < 1 or in_features % n_levels:
            raise UserError(
                f"image_levels: {n_levels} does not divide the bank's {in_features} features; give the number of "
                "levels stored (variant_mode=concat), or 1 for a plain bank"
            )
        dim = in_features // n_levels
        self.in_features, self.out_features = in_features, out_features
        self.weighting = LevelWeighting(n_levels, dim, n_extra)
        self.adapter = MLPAdapter(dim, out_features, hidden, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(self.weighting(x))  # (B, D)


class SumFusion(nn.Module):
    """BrainHIVE's fusion: ``Σ_k Linear(d_k, D)(bank_k)`` then one residual layer (module docstring)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bank_dims: Sequence[int] = (),
        intermediate: int = 0,
        dropout: float = 0.1,
    ):
        super().__init__()
        dims = tuple(bank_dims) or (in_features,)
        if sum(dims) != in_features:
            raise UserError(f"image_bank_dims: {list(dims)} do not add up to the bank's {in_features} features")
        self.in_features, self.out_features, self.bank_dims = in_features, out_features, dims
        self.proj = nn.ModuleList(nn.Linear(d, out_features) for d in dims)
        self.block = _ResLayer(out_features, intermediate or out_features, dropout)

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.split(x, list(self.bank_dims), dim=-1)  # K x (B, d_k)
        h = torch.stack([p(part) for p, part in zip(self.proj, parts)]).sum(dim=0)  # (B, D)
        return self.block(h)


IMAGE_HEADS = {"linear": LinearHead, "mlp_adapter": MLPAdapter, "blur_levels": BlurLevelHead, "sum_fusion": SumFusion}


def build_image_head(name: str, in_features: int, out_features: int, **kwargs) -> nn.Module:
    """A head of :data:`IMAGE_HEADS` mapping (B, in_features) to (B, out_features)."""
    if name not in IMAGE_HEADS:
        raise UserError(f"image_head: {name!r} is not one of {sorted(IMAGE_HEADS)}")
    try:
        return IMAGE_HEADS[name](in_features, out_features, **kwargs)
    except TypeError as err:
        raise UserError(f"image_head: {kwargs} not accepted by {name!r} ({err}); fix the keys") from None


def head_kwargs(image_head: str, image_levels: int = 0, image_bank_dims: Sequence[int] = ()) -> tuple:
    """``ModelConfig.image_head_kwargs`` of the train-config keys ``image_levels`` / ``image_bank_dims``."""
    if image_head == "blur_levels":
        return (("n_levels", int(image_levels) or 1),)
    if image_head == "sum_fusion" and image_bank_dims:
        return (("bank_dims", tuple(int(d) for d in image_bank_dims)),)
    return ()


def default_proj_dim(proj_dim: int, feature_dim: int, image_head: str = "", image_levels: int = 0) -> int:
    """Shared-space size when ``proj_dim`` is 0: the size of one level for ``blur_levels``, else the bank's."""
    if proj_dim:
        return proj_dim
    if image_head == "blur_levels" and image_levels > 1:
        return feature_dim // image_levels
    return feature_dim


def check_bank_levels(image_head: str, image_levels: int, provenance: dict, where: str = "the bank") -> None:
    """Refuse a ``blur_levels`` head whose ``image_levels`` is not the number of levels the bank stores.

    A bank stores V levels side by side only when extracted with ``variant_mode=concat`` (its provenance
    lists them); any other bank is one level. Without this check a 768-d bank would split into 12 "levels".
    """
    if image_head != "blur_levels":
        return
    variants = list(provenance.get("variants") or [])
    stored = len(variants) if provenance.get("variant_mode") == "concat" and variants else 1
    if (image_levels or 1) != stored:
        raise UserError(
            f"image_levels: {image_levels or 1} but {where} stores {stored} level(s) side by side "
            f"({'variants ' + ', '.join(variants) if stored > 1 else 'no variant_mode=concat levels'}); "
            f"pass image_levels={stored} or extract the bank with variant_mode=concat"
        )
