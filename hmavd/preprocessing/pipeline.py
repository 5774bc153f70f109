"""Per-epoch entry point named in ``docs/architecture.md`` (thin alias of :func:`transforms.preprocess_epoch`)."""

from __future__ import annotations

import numpy as np

from .presets import PreprocessPreset
from .transforms import preprocess_epoch

__all__ = ["epoch_to_preprocessed"]


def epoch_to_preprocessed(epoch_raw: np.ndarray, preset: PreprocessPreset, sfreq_in: float) -> np.ndarray:
    """Baseline -> resample -> crop: (..., C, T_in) volts -> (..., C, T_out) float64; no MVNN."""
    return preprocess_epoch(epoch_raw, sfreq_in, preset)
