"""The live epoch transform split in two: everything that does not need an epoch's last samples, early.

The offline transform of one raw epoch ``x`` (C, n_in) is baseline correction, resampling, crop and
MVNN whitening (:func:`bci.epocher.make_transform`). All of it is linear in ``x`` once the baseline mean
``m`` is known, and the baseline (NICE: −0.2…0 s) ends long before the epoch does (1.0 s). So, with
``x = [x_e, x_l]`` split ``k`` samples in (the last ``n_in − k`` samples, the *tail*, still to come):

    crop(resample(x − m)) = crop(resample([x_e − m, 0])) + (x_l − m) @ R_tail

where ``R_tail`` (n_in − k, n_out) is the cropped resampling of unit impulses at the tail positions
(the edge padding is linear too: its left part copies ``x[0]``, its right part ``x[−1]``). The first
term (one FFT) and ``m`` are computed by :meth:`EarlyTransform.prepare` as soon as the first ``k``
samples are in; when the last sample arrives, :meth:`EarlyTransform.finish` only multiplies the tail
(C × 50 × 250 at 1000 Hz) and whitens. The quality checks of :func:`bci.epocher.quality_reason` are
split the same way (per-channel extremes and their counts combine exactly). The result equals the
offline transform to float64 rounding (tested against :func:`hmavd.preprocessing.transforms.preprocess_epoch`).
See docs/realtime.md (latency).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from hmavd.preprocessing.presets import PreprocessPreset
from hmavd.preprocessing.transforms import (
    _time_mask,
    apply_whitening,
    crop,
    epoch_times,
    resample_epochs,
    resampled_times,
)

__all__ = ["EarlyTransform", "Prepared", "LateEpoch", "split_quality_reason"]


@dataclass
class Prepared:
    """The early part of one epoch, computed before its tail arrived.

    Attributes
    ----------
    first : int
        Absolute index of the window's first sample (the key the epocher matches on).
    k : int
        Early samples (window positions ``[0, k)``); the tail is ``[k, n_in)``.
    early : ndarray, shape (C, k)
        The early raw samples (model channels and units), kept for the rare full clip-run check.
    mean : ndarray, shape (C, 1)
        Baseline mean.
    partial : ndarray, shape (C, n_out)
        ``crop(resample([early − mean, 0]))``, float64, not whitened.
    finite : bool
    hi, lo : ndarray, shape (C,)
        Per-channel extremes of ``early``; ``n_hi`` / ``n_lo`` count the samples equal to them.
    """

    first: int
    k: int
    early: np.ndarray
    mean: np.ndarray
    partial: np.ndarray
    finite: bool
    hi: np.ndarray
    lo: np.ndarray
    n_hi: np.ndarray
    n_lo: np.ndarray


@dataclass
class LateEpoch:
    """A prepared epoch and its tail (C, n_in − k), ready for :meth:`EarlyTransform.finish`."""

    prep: Prepared
    late: np.ndarray


def _extremes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel max, min and how many samples equal each: four (C,) arrays of ``x`` (C, n)."""
    hi, lo = x.max(axis=1), x.min(axis=1)  # (C,)
    return hi, lo, (x == hi[:, None]).sum(axis=1), (x == lo[:, None]).sum(axis=1)


def split_quality_reason(prep: Prepared, late: np.ndarray, reject) -> str | None:
    """:func:`bci.epocher.quality_reason` of ``[prep.early, late]`` from the early statistics and the tail.

    Same answer in the same order (``nan``, ``flat``, ``clipped``); the full clip-run scan runs only
    when the cheap pre-check (a channel with ``clip_run`` samples at an extreme) cannot rule it out.
    """
    if not (prep.finite and np.isfinite(late).all()):
        return "nan"
    hi_l, lo_l, nh_l, nl_l = _extremes(late)
    hi, lo = np.maximum(prep.hi, hi_l), np.minimum(prep.lo, lo_l)  # (C,)
    if ((hi - lo) <= reject.flat_ptp).any():
        return "flat"
    if reject.clip_abs > 0 and max(float(hi.max()), -float(lo.min())) >= reject.clip_abs:
        return "clipped"
    if reject.clip_run > 0:
        n_hi = np.where(prep.hi == hi, prep.n_hi, 0) + np.where(hi_l == hi, nh_l, 0)  # (C,) samples at max
        n_lo = np.where(prep.lo == lo, prep.n_lo, 0) + np.where(lo_l == lo, nl_l, 0)
        # at_ext counts a sample once even when max == min (a flat channel was rejected above)
        if ((n_hi + n_lo) >= reject.clip_run).any():
            from .epocher import quality_reason  # the full scan on the whole window (rare)

            return quality_reason(np.concatenate([prep.early, late], axis=1), reject)
    return None


class EarlyTransform:
    """:func:`bci.epocher.make_transform` of one epoch in two steps: early part, then the tail.

    Parameters
    ----------
    preset : PreprocessPreset
        Window, baseline, resampling and crop.
    sfreq_in : float
        Stream rate (Hz).
    whitening : ndarray (C, C), (C, C_model) or None
        MVNN matrix, applied in :meth:`finish` (rectangular: whitened over all C channels, the model's kept).
    tail_s : float
        Default tail length in seconds (at least one sample; the epocher lengthens it when data
        arrive in larger chunks).

    Attributes
    ----------
    n_in, n_out : int
        Raw and output samples per epoch.
    max_tail : int
        Longest tail allowed: the early part must hold the whole baseline (0 = splitting impossible).
    """

    def __init__(
        self, preset: PreprocessPreset, sfreq_in: float, whitening: np.ndarray | None, tail_s: float = 0.05
    ) -> None:
        self.preset, self.sfreq_in = preset, float(sfreq_in)
        self.whitening = None if whitening is None else np.asarray(whitening, dtype=np.float64)
        times = epoch_times(preset.tmin_s, preset.tmax_s, sfreq_in)  # (n_in,)
        self.n_in = int(times.shape[0])
        base = np.flatnonzero(_time_mask(times, preset.baseline_tmin_s, preset.baseline_tmax_s, "baseline"))
        self._base = slice(int(base[0]), int(base[-1]) + 1)  # the mask is one run of samples
        res_times = resampled_times(times, sfreq_in, preset.sfreq)  # (n_res,)
        if preset.crop_tmin_s is not None or preset.crop_tmax_s is not None:
            idx, _ = crop(
                np.arange(res_times.shape[0], dtype=np.float64)[None], res_times, preset.crop_tmin_s, preset.crop_tmax_s
            )
            kept = idx[0].astype(np.intp)
            self._crop = slice(int(kept[0]), int(kept[-1]) + 1)
        else:
            self._crop = slice(0, res_times.shape[0])
        self.n_out = self._crop.stop - self._crop.start
        self.max_tail = self.n_in - self._base.stop
        self.default_tail = min(max(1, int(round(tail_s * self.sfreq_in))), self.max_tail)
        self._scratch: np.ndarray | None = None  # (C, n_in) zero-tailed early window, reused
        if self.max_tail > 0:
            self.tail_matrix(self.default_tail)  # warm

    def _resample_crop(self, x: np.ndarray) -> np.ndarray:
        """``crop(resample(x))`` along the last axis: (..., n_in) -> (..., n_out) float64."""
        y = resample_epochs(x, self.sfreq_in, self.preset.sfreq)  # (..., n_res)
        return y[..., self._crop]

    @functools.lru_cache(maxsize=8)  # noqa: B019 - one instance per epocher, a handful of tail lengths
    def tail_matrix(self, n_tail: int) -> np.ndarray:
        """``R_tail`` (n_tail, n_out): the cropped resampling of unit impulses at the last ``n_tail`` positions."""
        impulses = np.zeros((n_tail, self.n_in))  # (n_tail, n_in)
        impulses[np.arange(n_tail), self.n_in - n_tail + np.arange(n_tail)] = 1.0
        return np.ascontiguousarray(self._resample_crop(impulses))  # (n_tail, n_out)

    def prepare(self, first: int, early: np.ndarray) -> Prepared:
        """Baseline mean, resampled early part and quality statistics of ``early`` (C, k), k >= n_in − max_tail."""
        c, k = early.shape
        if not self.n_in - self.max_tail <= k < self.n_in:
            raise ValueError(f"early part of {k} samples; need {self.n_in - self.max_tail}…{self.n_in - 1}")
        mean = early[:, self._base].mean(axis=1, keepdims=True)  # (C, 1)
        if self._scratch is None or self._scratch.shape[0] != c:
            self._scratch = np.zeros((c, self.n_in))
        x = self._scratch  # (C, n_in)
        np.subtract(early, mean, out=x[:, :k])
        x[:, k:] = 0.0
        partial = self._resample_crop(x)  # (C, n_out), a new array
        self.tail_matrix(self.n_in - k)  # computed here, off the critical path, if this tail is new
        finite = bool(np.isfinite(early).all())
        hi, lo, n_hi, n_lo = _extremes(early)
        return Prepared(first, k, early, mean, partial, finite, hi, lo, n_hi, n_lo)

    def finish(self, late: LateEpoch, dtype: type = np.float32) -> np.ndarray:
        """The epoch (C_model, n_out) as ``dtype`` (float32): ``partial + (tail − mean) @ R_tail``, whitened."""
        p = late.prep
        y = p.partial + (late.late - p.mean) @ self.tail_matrix(self.n_in - p.k)  # (C, n_out)
        if self.whitening is not None:
            y = apply_whitening(y, self.whitening)  # (C_model, n_out)
        return y.astype(dtype)
