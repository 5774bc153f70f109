"""Projection heads into the shared space (NICE ``Proj_eeg`` / ``Proj_img``)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Projection"]


class Projection(nn.Module):
    """``Linear(in, D)`` → residual ``(GELU, Linear(D, D), Dropout)`` → ``LayerNorm(D)``.

    NICE's ``Proj_eeg`` (dropout 0.5) and ``Proj_img`` (dropout 0.3) layout. Note: the NICE reference
    overrides ``Proj_img.forward`` to return its input unchanged, so its image "projection" is the
    identity; :class:`~hmavd.models.hmavd_model.HMAVD` reproduces that with ``image_projection=False``.

    Parameters
    ----------
    in_features : int
        Input size.
    out_features : int
        Shared-space size D.
    dropout : float
        Dropout inside the residual branch.
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.5):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear = nn.Linear(in_features, out_features)
        self.residual = nn.Sequential(nn.GELU(), nn.Linear(out_features, out_features), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(out_features)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, in_features) to (B, out_features)."""
        h = self.linear(x)  # (B, D)
        return self.norm(h + self.residual(h))  # (B, D)
