"""Raw EEG -> preprocessed epochs: pure transforms, the two public presets, raw readers, ``hmavd-prepare``.

The transforms are the single implementation used offline (``hmavd-prepare``) and online (``bci``).
"""

from .presets import PREPROCESS_PRESETS, PRESETS, PreprocessPreset, get_preset
from .transforms import (
    apply_whitening,
    baseline_correct,
    crop,
    crop_samples,
    epoch_times,
    epoch_window_samples,
    mvnn_covariance,
    pick_channels,
    pick_channels_regexp,
    preprocess_epoch,
    preprocessed_times,
    resample_epochs,
    resampled_times,
    shrunk_covariance_auto,
    whitening_matrix,
)

__all__ = [
    "PRESETS",
    "PREPROCESS_PRESETS",
    "PreprocessPreset",
    "get_preset",
    "apply_whitening",
    "baseline_correct",
    "crop",
    "crop_samples",
    "epoch_times",
    "epoch_window_samples",
    "mvnn_covariance",
    "pick_channels",
    "pick_channels_regexp",
    "preprocess_epoch",
    "preprocessed_times",
    "resample_epochs",
    "resampled_times",
    "shrunk_covariance_auto",
    "whitening_matrix",
]
