"""Residual bottleneck adapters (Eq. 5-6) and the text fusion of Eq. 8.

* Eq. 5 (image): ``A_v(x) = x + α · W2(σ(W1 x))`` — no biases, reduction r = 8.
* Eq. 6 (text):  ``A_t(x) = x + α · W2(σ(W1 x + b1)) + b2`` — biases, reduction r = 16.

The hidden width is ``dim // r`` (docs/model.md, "Adapters": r is a compression *ratio*; the paper's "W1 ∈ R^{d×r}"
notation is read as d → d/r). σ is ReLU (the paper: "such as ReLU"). The paper's Figure 4 also shows a
dropout; it is applied to the bottleneck branch (default 0). ``b2`` sits outside the α scaling, as written
in Eq. 6, and starts at zero, so a fresh adapter with α = 0 is the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Adapter", "fuse"]


class Adapter(nn.Module):
    """Residual bottleneck adapter, Eq. 5 (``bias=False``) or Eq. 6 (``bias=True``).

    Parameters
    ----------
    dim : int
        Feature size d (input = output).
    reduction : int
        Compression ratio r; hidden width ``dim // reduction``.
    bias : bool
        ``True`` adds b1 (inside the activation) and b2 (after the α-scaled branch), Eq. 6.
    alpha : float
        Residual scale α.
    dropout : float
        Dropout on the bottleneck branch (Fig. 4).
    """

    def __init__(self, dim: int, reduction: int, bias: bool, alpha: float, dropout: float = 0.0):
        super().__init__()
        if reduction < 1 or dim // reduction < 1:
            raise ValueError(f"reduction must be in [1, dim={dim}], got {reduction}")
        self.dim, self.reduction, self.alpha = dim, reduction, float(alpha)
        self.hidden = dim // reduction
        self.down = nn.Linear(dim, self.hidden, bias=bias)  # W1 (+ b1)
        self.act = nn.ReLU()
        self.up = nn.Linear(self.hidden, dim, bias=False)  # W2
        self.drop = nn.Dropout(dropout)
        self.out_bias = nn.Parameter(torch.zeros(dim)) if bias else None  # b2

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, dim) to (B, dim)."""
        out = x + self.alpha * self.drop(self.up(self.act(self.down(x))))  # (B, dim)
        if self.out_bias is not None:
            out = out + self.out_bias
        return out


def fuse(adapted: Tensor, original: Tensor, beta: float) -> Tensor:
    """Eq. 8: ``F_new = β · A_t(F) + (1 − β) · F`` (β = 1 keeps only the adapter output)."""
    return beta * adapted + (1.0 - beta) * original
