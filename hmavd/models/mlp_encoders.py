"""Small MLP EEG encoders of the strongest open ThingsEEG2 recipes (reconstructed, not copied).

Each maps ``eeg`` (B, C, T) to (B, F) with ``out_features = F`` like every registered encoder
(:data:`hmavd.models.encoders.ENCODERS`). In the published models the encoder output *is* the EEG
embedding; the recipe configs therefore set ``eeg_projection: false`` so no NICE projection is stacked
on top, and ``init: default`` so PyTorch's default initialisation is kept (none of the three
re-initialises its layers). ``out_features`` defaults to 1024 (OpenCLIP RN50's embedding size).

``eeg_project`` — UBP (Wu et al., CVPR 2025, ``EEGProjectLayer``) and NeuroBridge (``EEGProject``), the same
module in both codes::

    flatten (B, C·T) -> Linear(C·T, F) -> h + Dropout(Linear(F, F)(GELU(h))) -> LayerNorm(F)

Dropout 0.3 on the residual branch. (The NICE ``Proj_eeg`` layout, applied to the raw flattened epoch.)

``brain_mlp`` — BrainHIVE (ICLR 2026, ``BrainMLP``)::

    flatten (B, C·T) -> Linear(C·T, F) -> num_layers × [h = LayerNorm_eps1e-6(h + W2(Dropout(GELU(W1 h))))]

``W1`` (F → ``intermediate``) and ``W2`` (``intermediate`` → F) have no bias; one layer, intermediate = F =
1024 and dropout 0.1 as its retrieval config. Its model is a Hugging Face ``PreTrainedModel`` whose
``post_init`` may re-initialise Linear layers depending on the transformers version; we keep PyTorch's
default (documented difference).

``blur_spatial_mlp`` — the visual-blur-perception method (AAAI 2026, ``Brain_Visual_Encoder_EEG``)::

    (B, 1, C, T) -> Conv2d(1, 25, (C, 1), bias=False) with |w| -> BatchNorm2d(25)      # (B, 25, 1, T)
                 -> Linear(T, 200), ELU, Dropout 0.25, Linear(200, 200), ELU, Dropout 0.65  (along time)
                 -> flatten (B, 25·200) -> Linear(5000, F)

The spatial filters are kept non-negative as in the reference, which replaces the weight by its absolute
value in place before every forward pass (so the gradient is taken at ``|w|``, and an optimiser step that
makes a filter negative is folded back on the next pass).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EEGProject", "BrainMLP", "BlurSpatialMLP", "MLP_ENCODERS"]


class EEGProject(nn.Module):
    """UBP / NeuroBridge ``EEGProject`` (module docstring).

    Parameters
    ----------
    n_chans, n_times : int
        Epoch size (C, T).
    out_features : int
        Embedding size F (the target bank's dimension; 1024 for OpenCLIP RN50).
    dropout : float
        Dropout of the residual branch (0.3 in both codes).
    """

    def __init__(self, n_chans: int, n_times: int, out_features: int = 1024, dropout: float = 0.3):
        super().__init__()
        self.out_features = out_features
        self.linear = nn.Linear(n_chans * n_times, out_features)
        self.residual = nn.Sequential(nn.GELU(), nn.Linear(out_features, out_features), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(out_features)

    def forward(self, eeg: Tensor) -> Tensor:
        """(B, C, T) -> (B, F)."""
        h = self.linear(eeg.flatten(1))  # (B, F)
        return self.norm(h + self.residual(h))  # (B, F)


class _ResLayer(nn.Module):
    """BrainHIVE's residual MLP layer: ``LayerNorm(h + W2(Dropout(GELU(W1 h))))``, bias-free W1/W2."""

    def __init__(self, width: int, intermediate: int, dropout: float):
        super().__init__()
        self.w1 = nn.Linear(width, intermediate, bias=False)
        self.w2 = nn.Linear(intermediate, width, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, h: Tensor) -> Tensor:
        return self.norm(self.w2(self.dropout(F.gelu(self.w1(h)))) + h)  # (B, F)


class BrainMLP(nn.Module):
    """BrainHIVE ``BrainMLP`` (module docstring).

    Parameters
    ----------
    n_chans, n_times : int
        Epoch size (C, T).
    out_features : int
        Hidden size F (1024).
    intermediate : int or None
        Width of the residual layers' inner layer (None = F, as published).
    num_layers : int
        Residual layers (1).
    dropout : float
        Dropout inside the residual layers (0.1).
    """

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        out_features: int = 1024,
        intermediate: int | None = None,
        num_layers: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.out_features = out_features
        self.proj_in = nn.Linear(n_chans * n_times, out_features)
        inner = intermediate or out_features
        self.layers = nn.ModuleList(_ResLayer(out_features, inner, dropout) for _ in range(num_layers))

    def forward(self, eeg: Tensor) -> Tensor:
        """(B, C, T) -> (B, F)."""
        h = self.proj_in(eeg.flatten(1))  # (B, F)
        for layer in self.layers:
            h = layer(h)  # (B, F)
        return h


class BlurSpatialMLP(nn.Module):
    """The visual-blur method's spatial convolution + temporal MLP (module docstring).

    Parameters
    ----------
    n_chans, n_times : int
        Epoch size (C, T).
    out_features : int
        Embedding size F (1024 for RN50).
    n_spatial : int
        Non-negative spatial filters (25).
    hidden : int
        Width of the temporal MLP (200).
    dropout1, dropout2 : float
        Dropouts after its two layers (0.25, 0.65).
    """

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        out_features: int = 1024,
        n_spatial: int = 25,
        hidden: int = 200,
        dropout1: float = 0.25,
        dropout2: float = 0.65,
    ):
        super().__init__()
        self.out_features = out_features
        self.spatial = nn.Conv2d(1, n_spatial, (n_chans, 1), bias=False)
        self.bn = nn.BatchNorm2d(n_spatial)
        self.temporal = nn.Sequential(
            nn.Linear(n_times, hidden),
            nn.ELU(),
            nn.Dropout(dropout1),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Dropout(dropout2),
        )
        self.out = nn.Linear(n_spatial * hidden, out_features)

    def forward(self, eeg: Tensor) -> Tensor:
        """(B, C, T) -> (B, F)."""
        with torch.no_grad():
            self.spatial.weight.abs_()  # non-negative spatial filters, in place as in the reference
        x = self.bn(self.spatial(eeg[:, None]))  # (B, 25, 1, T)
        x = self.temporal(x)  # (B, 25, 1, 200)
        return self.out(x.flatten(1))  # (B, F)


def _eeg_project(n_chans: int, n_times: int, **kw) -> nn.Module:
    return EEGProject(n_chans, n_times, **kw)


def _brain_mlp(n_chans: int, n_times: int, **kw) -> nn.Module:
    return BrainMLP(n_chans, n_times, **kw)


def _blur_spatial_mlp(n_chans: int, n_times: int, **kw) -> nn.Module:
    return BlurSpatialMLP(n_chans, n_times, **kw)


#: The MLP encoders, merged into :data:`hmavd.models.encoders.ENCODERS`.
MLP_ENCODERS = {"eeg_project": _eeg_project, "brain_mlp": _brain_mlp, "blur_spatial_mlp": _blur_spatial_mlp}
