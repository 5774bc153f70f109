"""Stream rates: epochs cut at the stream's rate, resampled to the model's, cropped to its time axis.

``hmavd-prepare``'s contract at any rate: the epoch window is cut at the recording rate, baselined
there and resampled (``Epochs.resample``) to the preset's rate, then cropped. At rates whose sample grid
does not fall on the preset's (256, 1024, 2048 Hz for NICE's −0.2 s start) or that keep one more sample
(250, 256 Hz keep the 1.000 s sample), the cropped epoch has one sample more or less than the model was
trained with. :func:`align_to_model` moves the crop onto the model's own time axis (from the
checkpoint): the ``n`` resampled samples nearest to the model's times, each within half an output
sample of it. Only the crop changes; baseline and resampling are the offline functions.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from hmavd.preprocessing.presets import PreprocessPreset
from hmavd.preprocessing.transforms import epoch_times, resampled_times

log = logging.getLogger(__name__)

__all__ = ["align_to_model"]


def align_to_model(
    preset: PreprocessPreset, sfreq_in: float, model_times: np.ndarray
) -> tuple[PreprocessPreset, float] | None:
    """A copy of ``preset`` whose crop yields exactly the model's ``n`` samples at ``sfreq_in``.

    Parameters
    ----------
    preset : PreprocessPreset
    sfreq_in : float
        Stream rate (Hz).
    model_times : ndarray, shape (n,)
        The model's input times (s), as the checkpoint records them.

    Returns
    -------
    (preset, max_offset_s) or None
        ``None`` when the resampled grid cannot cover the model's window within half a sample.
    """
    model_times = np.asarray(model_times, dtype=np.float64)
    n = len(model_times)
    grid = resampled_times(epoch_times(preset.tmin_s, preset.tmax_s, sfreq_in), sfreq_in, preset.sfreq)
    if n == 0 or len(grid) < n:
        return None
    i0 = int(np.argmin(np.abs(grid - model_times[0])))
    if i0 + n > len(grid):
        return None
    offset = float(np.abs(grid[i0 : i0 + n] - model_times).max())
    half = 0.5 / preset.sfreq
    if offset > half:
        return None
    q = 0.25 / preset.sfreq  # crop bounds a quarter sample outside the kept samples
    aligned = dataclasses.replace(preset, crop_tmin_s=float(grid[i0] - q), crop_tmax_s=float(grid[i0 + n - 1] + q))
    return aligned, offset
