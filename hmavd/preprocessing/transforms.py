"""Pure preprocessing transforms shared by ``hmavd-prepare`` (offline) and ``bci`` (online).

Every function works on numpy arrays whose last two axes are (channels, times) and whose leading
axes are any batch dimensions (a single epoch ``(C, T)``, a batch ``(N, C, T)``, or
``(n_conditions, n_reps, C, T)``). Nothing here does IO, threading or logging-heavy work.

The order of the steps (both public pipelines, ``docs/preprocessing.md``)::

    cut epoch tmin..tmax at the recording rate -> baseline_correct (mean of tmin..0, t = 0 included)
    -> resample_epochs (== mne.Epochs.resample) -> crop (NICE: keep 0..0.996 s) -> apply_whitening (MVNN)

:func:`preprocess_epoch` runs the first three for one or many epochs; the whitening matrix comes
from :func:`mvnn_covariance` + :func:`whitening_matrix` computed offline and saved in ``mvnn.npz``
(the MVNN functions live in :mod:`hmavd.preprocessing.mvnn` and are re-exported here).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft

from ..channels import resolve_channels
from ..errors import UserError
from .mvnn import (  # re-exported: callers import the MVNN functions from here
    apply_whitening,
    mvnn_covariance,
    shrunk_covariance_auto,
    shrunk_covariance_auto_batched,
    whitening_matrix,
)

if TYPE_CHECKING:  # pragma: no cover
    from .presets import PreprocessPreset

__all__ = [
    "TIME_EPS_S",
    "epoch_window_samples",
    "epoch_times",
    "baseline_correct",
    "resampled_length",
    "resample_epochs",
    "resampled_times",
    "crop",
    "crop_samples",
    "pick_channels",
    "pick_channels_regexp",
    "channel_indices",
    "shrunk_covariance_auto",
    "shrunk_covariance_auto_batched",
    "mvnn_covariance",
    "whitening_matrix",
    "apply_whitening",
    "preprocess_epoch",
    "preprocessed_times",
]

#: Tolerance (seconds) when comparing sample times with window edges.
TIME_EPS_S = 1e-9


# --------------------------------------------------------------------------- epoch window


def epoch_window_samples(tmin_s: float, tmax_s: float, sfreq: float) -> tuple[int, int]:
    """Sample offsets of an epoch window relative to the onset sample, as ``mne.Epochs`` cuts it.

    Parameters
    ----------
    tmin_s, tmax_s : float
        Window edges in seconds (both included).
    sfreq : float
        Sampling rate in Hz.

    Returns
    -------
    first_offset : int
        Offset of the first sample (e.g. -200 for -0.2 s at 1000 Hz).
    n_samples : int
        Number of samples, ``round(tmax_s * sfreq) - round(tmin_s * sfreq) + 1`` (1201 for -0.2…1.0 s).
    """
    start = int(round(tmin_s * sfreq))
    stop = int(round(tmax_s * sfreq))
    if stop < start:
        raise UserError(f"epoch window: tmax_s={tmax_s} is before tmin_s={tmin_s}; give tmin_s <= tmax_s")
    return start, stop - start + 1


def epoch_times(tmin_s: float, tmax_s: float, sfreq: float) -> np.ndarray:
    """Sample times (s) of an epoch cut from ``tmin_s`` to ``tmax_s`` at ``sfreq``: (n_samples,) float64.

    Equal to ``mne.Epochs(...).times`` for the same window.
    """
    start, n = epoch_window_samples(tmin_s, tmax_s, sfreq)
    return np.arange(start, start + n, dtype=np.float64) / float(sfreq)


# --------------------------------------------------------------------------- baseline


def _time_mask(times: np.ndarray, tmin_s: float | None, tmax_s: float | None, what: str) -> np.ndarray:
    """Samples with ``tmin_s <= t <= tmax_s`` (ends included, ``None`` = open), (T,) bool; a
    :class:`UserError` starting with ``what`` when it selects none."""
    mask = np.ones(times.shape[0], dtype=bool)
    if tmin_s is not None:
        mask &= times >= tmin_s - TIME_EPS_S
    if tmax_s is not None:
        mask &= times <= tmax_s + TIME_EPS_S
    if not mask.any():
        raise UserError(
            f"{what} selects no sample of {times[0]:.3f}…{times[-1]:.3f} s; choose a window inside the epoch"
        )
    return mask


def baseline_correct(
    epochs: np.ndarray,
    times: np.ndarray,
    tmin_s: float | None = None,
    tmax_s: float | None = 0.0,
) -> np.ndarray:
    """Subtract the per-channel mean over ``tmin_s <= t <= tmax_s`` (``mne`` ``baseline=(tmin_s, tmax_s)``).

    Parameters
    ----------
    epochs : ndarray, shape (..., n_chans, n_times)
        Epoched data (any unit).
    times : ndarray, shape (n_times,)
        Sample times in seconds.
    tmin_s, tmax_s : float or None
        Baseline window in seconds, both ends included (t = 0 is part of the default window);
        ``None`` means the first / last sample.

    Returns
    -------
    ndarray, shape (..., n_chans, n_times)
        float64 (or the input's floating dtype) copy with the baseline mean removed.
    """
    x = np.asarray(epochs)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    times = np.asarray(times, dtype=np.float64)
    if x.shape[-1] != times.shape[0]:
        raise UserError(
            f"baseline: data have {x.shape[-1]} samples but times has {times.shape[0]}; pass matching times"
        )
    mask = _time_mask(times, tmin_s, tmax_s, f"baseline: ({tmin_s}, {tmax_s}) s")
    mean = x[..., mask].mean(axis=-1, keepdims=True)  # (..., C, 1)
    return x - mean


# --------------------------------------------------------------------------- resampling


def _is_resample_noop(sfreq_in: float, sfreq_out: float) -> bool:
    """``mne.Epochs.resample``'s no-op rule: rates equal to a relative 1e-6 return the data unmodified.

    ``np.isclose(sfreq_out, sfreq_in, atol=0, rtol=1e-6)`` on two finite floats, without its ~20 µs of
    array overhead (this runs on the live epoch path).
    """
    return abs(float(sfreq_out) - float(sfreq_in)) <= 1e-6 * abs(float(sfreq_in))


def resampled_length(n_times: int, sfreq_in: float, sfreq_out: float) -> int:
    """Number of samples after resampling ``n_times`` samples (MNE's rule: ``max(round(n * out / in), 1)``)."""
    if _is_resample_noop(sfreq_in, sfreq_out):
        return int(n_times)
    return max(int(round(float(sfreq_out) / float(sfreq_in) * n_times)), 1)


@dataclass(frozen=True)
class _ResamplePlan:
    """Everything :func:`resample_epochs` needs for one (n_times, ratio), computed once.

    Attributes
    ----------
    pad_left, pad_right : int
        Edge-padding samples before / after the signal (MNE's ``npad="auto"``).
    n_fft : int
        Padded length that is transformed (``n_times + pad_left + pad_right``, a power of two).
    n_new : int
        Length of the inverse transform (``max(round(ratio * n_fft), 1)``).
    n_bins : int
        Spectrum bins that reach the inverse transform (``min(n_fft, n_new) // 2 + 1``).
    weights : ndarray, shape (n_bins,)
        Per-bin gain: ``n_new / n_fft`` (the boxcar window of ``window="auto"``), doubled on the kept
        Nyquist bin when downsampling and halved when upsampling (even lengths only), as MNE does.
    trim_left, n_out : int
        First kept sample of the inverse transform and the number kept.
    """

    pad_left: int
    pad_right: int
    n_fft: int
    n_new: int
    n_bins: int
    weights: np.ndarray = field(repr=False, compare=False)
    trim_left: int
    n_out: int


@functools.lru_cache(maxsize=64)
def _resample_plan(n_times: int, ratio: float) -> _ResamplePlan:
    """Padding, frequency weights and trimming of ``mne.filter.resample(npad="auto", window="auto")``."""
    n_out = max(int(round(ratio * n_times)), 1)
    # npad="auto": pad by at least min(n/8, 100) samples a side, up to the next power of two
    min_extra = 2 * min(n_times // 8, 100)
    total_pad = 2 ** int(np.ceil(np.log2(n_times + min_extra))) - n_times
    pad_left = total_pad // 2
    pad_right = total_pad - pad_left
    n_fft = n_times + total_pad
    n_new = max(int(round(ratio * n_fft)), 1)
    trim_left = int(round(ratio * pad_left))
    if n_new - n_out - trim_left < 0:  # MNE's own length check would fail here too
        raise RuntimeError(f"resample: no FFT plan for n_times={n_times}, ratio={ratio}")
    downsampling = n_new < n_fft
    n_used = n_new if downsampling else n_fft
    n_bins = n_used // 2 + 1
    # boxcar window folded onto the rfft half: a constant gain n_new / n_fft on every bin
    weights = np.full(n_bins, float(n_new) / float(n_fft))
    if n_used % 2 == 0:
        weights[n_used // 2] *= 2.0 if downsampling else 0.5  # the Nyquist bin (powers of 2: exact)
    weights.setflags(write=False)
    return _ResamplePlan(pad_left, pad_right, n_fft, n_new, n_bins, weights, trim_left, n_out)


def resample_epochs(epochs: np.ndarray, sfreq_in: float, sfreq_out: float) -> np.ndarray:
    """Resample along the last axis exactly as ``mne.Epochs.resample(sfreq_out)`` does, vectorised.

    MNE's FFT resampling with its defaults for epochs (``npad="auto"``, ``window="auto"``,
    ``pad="edge"``), applied per epoch after epoching (not to the continuous recording), but as one
    real FFT over all leading axes instead of a Python loop over channels. Each signal is
    edge-padded (``npad="auto"``: at least ``min(n/8, 100)`` samples a side, up to the next power of
    two), transformed, scaled by ``n_new / n_fft`` (``window="auto"`` is a boxcar) with MNE's Nyquist-bin
    rule, inverse-transformed at the new length and trimmed of the resampled padding. The plan for
    one ``(n_times, ratio)`` is cached. Tested equal to ``mne.filter.resample`` and
    ``mne.Epochs.resample`` to 1e-10 relative (bit-identical with SciPy 1.17), about 4x faster.

    Parameters
    ----------
    epochs : ndarray, shape (..., n_chans, n_times) or (n_times,)
        Any real data; cast to float64.
    sfreq_in, sfreq_out : float
        Rates in Hz. Rates equal to a relative 1e-6 (MNE's no-op rule) return a float64 copy.

    Returns
    -------
    ndarray, shape (..., n_chans, resampled_length(n_times, sfreq_in, sfreq_out)), float64
    """
    if not (float(sfreq_in) > 0 and float(sfreq_out) > 0):
        raise UserError(f"resample: rates must be positive, got sfreq_in={sfreq_in}, sfreq_out={sfreq_out}")
    x = np.asarray(epochs, dtype=np.float64)
    if x.ndim == 0:
        raise UserError(f"resample: epochs is a scalar ({x}); pass an array shaped (..., n_chans, n_times)")
    if _is_resample_noop(sfreq_in, sfreq_out) or x.shape[-1] == 0:
        return x.copy()
    return _fft_resample(x, float(sfreq_out) / float(sfreq_in))


#: Padded samples transformed per chunk of rows (256 KiB of float64): small enough that the padded
#: block and its spectrum stay in the CPU cache, which is ~2x faster than one transform of all rows.
_RESAMPLE_CHUNK_SAMPLES = 32768


def _fft_resample(x: np.ndarray, ratio: float) -> np.ndarray:
    """``mne.filter.resample(x, ratio, 1.0, npad="auto", window="auto", pad="edge")`` without the channel loop.

    ``x`` is float64 shaped (..., n_times) with n_times >= 1; returns (..., max(round(ratio * n_times), 1)),
    C-contiguous. Rows are independent, so they are visited in memory order (a strided or
    ``moveaxis`` view is never copied whole) and transformed in chunks of
    :data:`_RESAMPLE_CHUNK_SAMPLES` padded samples; no row's result depends on the chunking. Unlike
    :func:`resample_epochs` there is no no-op shortcut: ``ratio == 1`` runs the transform, as
    ``mne.filter.resample`` does.
    """
    n = int(x.shape[-1])
    plan = _resample_plan(n, float(ratio))
    x2 = x.reshape(1, n) if x.ndim == 1 else x  # (..., rows, n_times)
    order = sorted(range(x2.ndim - 1), key=lambda a: -abs(x2.strides[a])) + [x2.ndim - 1]
    xm = x2.transpose(order)
    if xm.flags.c_contiguous:  # the leading axes nest in memory: one block of all rows (a view)
        xm = xm.reshape(-1, n)
    out = np.empty(xm.shape[:-1] + (plan.n_out,), dtype=np.float64)  # xm's layout, (..., rows, n_out)
    step = max(1, _RESAMPLE_CHUNK_SAMPLES // plan.n_fft)
    padded = np.empty((min(step, xm.shape[-2]), plan.n_fft), dtype=np.float64)  # reused for every chunk
    left, stop = plan.pad_left, plan.pad_left + n
    for idx in np.ndindex(xm.shape[:-2]):
        block, dest = xm[idx], out[idx]  # (rows, n_times), (rows, n_out)
        for i0 in range(0, block.shape[0], step):
            chunk = block[i0 : i0 + step]
            buf = padded[: chunk.shape[0]]
            buf[:, left:stop] = chunk
            buf[:, :left] = chunk[:, :1]  # pad="edge"
            buf[:, stop:] = chunk[:, -1:]
            spec = scipy.fft.rfft(buf, axis=-1)[:, : plan.n_bins]  # (rows, n_bins) complex
            spec *= plan.weights
            y = scipy.fft.irfft(spec, n=plan.n_new, axis=-1)  # (rows, n_new)
            dest[i0 : i0 + chunk.shape[0]] = y[:, plan.trim_left : plan.trim_left + plan.n_out]
    out = out.reshape(tuple(x2.shape[a] for a in order[:-1]) + (plan.n_out,))
    out = np.ascontiguousarray(out.transpose(np.argsort(order)))  # back to x's axis order
    return out.reshape(x.shape[:-1] + (plan.n_out,))


def resampled_times(times: np.ndarray, sfreq_in: float, sfreq_out: float) -> np.ndarray:
    """Times (s) after :func:`resample_epochs`: ``times[0] + arange(n_out) / sfreq_out`` (as MNE sets them)."""
    times = np.asarray(times, dtype=np.float64)
    if _is_resample_noop(sfreq_in, sfreq_out):
        return times.copy()
    n_out = resampled_length(len(times), sfreq_in, sfreq_out)
    return np.arange(n_out, dtype=np.float64) / float(sfreq_out) + times[0]


# --------------------------------------------------------------------------- cropping


def crop(
    epochs: np.ndarray, times: np.ndarray, tmin_s: float | None = None, tmax_s: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Keep samples with ``tmin_s <= t <= tmax_s`` (both included; ``None`` = open end).

    Parameters
    ----------
    epochs : ndarray, shape (..., n_chans, n_times)
    times : ndarray, shape (n_times,)

    Returns
    -------
    epochs : ndarray, shape (..., n_chans, n_kept)
    times : ndarray, shape (n_kept,)
    """
    x = np.asarray(epochs)
    times = np.asarray(times, dtype=np.float64)
    if x.shape[-1] != times.shape[0]:
        raise UserError(f"crop: data have {x.shape[-1]} samples but times has {times.shape[0]}; pass matching times")
    mask = _time_mask(times, tmin_s, tmax_s, f"crop: [{tmin_s}, {tmax_s}] s")
    return x[..., mask], times[mask]


def crop_samples(epochs: np.ndarray, start: int, stop: int | None = None) -> np.ndarray:
    """Sample-index crop ``epochs[..., start:stop]`` (NICE keeps samples ``50:`` of 300)."""
    return np.asarray(epochs)[..., start:stop]


# --------------------------------------------------------------------------- channels


def channel_indices(ch_names: Sequence[str], names: Sequence[str]) -> list[int]:
    """Indices of ``names`` in ``ch_names`` (order of ``names``); one-line error when one is missing."""
    ch_names = list(ch_names)
    picked = resolve_channels(list(names), ch_names)
    return [ch_names.index(n) for n in picked]


def pick_channels(
    data: np.ndarray, ch_names: Sequence[str], names: str | Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Pick channels by name, in the order given (an *ordered* pick, as NICE does).

    Parameters
    ----------
    data : ndarray, shape (..., n_chans, n_times)
    ch_names : sequence of str
        The ``n_chans`` names of ``data``.
    names : str or sequence of str
        Anything :func:`hmavd.channels.resolve_channels` accepts (``"all63"``, ``"visual17"``, names).

    Returns
    -------
    data : ndarray, shape (..., len(names), n_times)
    names : list of str
    """
    data = np.asarray(data)
    if data.shape[-2] != len(ch_names):
        raise UserError(f"channels: data have {data.shape[-2]} channels but {len(ch_names)} names; pass matching names")
    picked = resolve_channels(names, list(ch_names))
    idx = [list(ch_names).index(n) for n in picked]
    return data[..., idx, :], picked


def pick_channels_regexp(ch_names: Sequence[str], regexp: str, where: str = "") -> list[str]:
    """Names matching ``regexp`` (``re.match``, as ``mne.pick_channels_regexp``), in their original order.

    Gifford's preset uses ``"^O *|^P *"``: every channel whose name starts with O or P. ``where``
    (e.g. a file name) is named in the error when nothing matches.
    """
    try:
        pattern = re.compile(regexp)
    except re.error as err:
        raise UserError(f"channel_regexp: {regexp!r} is not a valid regular expression ({err}); fix it") from None
    names = [c for c in ch_names if pattern.match(c)]
    if not names:
        raise UserError(
            f"channel_regexp: {regexp!r} matches none of the {len(ch_names)} channels{f' of {where}' if where else ''} "
            f"(e.g. {list(ch_names)[:5]}); use a pattern that matches the recording's names"
        )
    return names


# --------------------------------------------------------------------------- whole epoch


def preprocess_epoch(epoch_raw: np.ndarray, sfreq_in: float, preset: PreprocessPreset) -> np.ndarray:
    """Baseline -> resample -> crop one or many channel-picked raw epochs (no MVNN).

    Parameters
    ----------
    epoch_raw : ndarray, shape (..., n_chans, n_in)
        Epochs cut from ``preset.tmin_s`` to ``preset.tmax_s`` at ``sfreq_in`` with
        :func:`epoch_window_samples` (volts), channels already picked in the preset's order.
    sfreq_in : float
        Recording rate in Hz.
    preset : PreprocessPreset

    Returns
    -------
    ndarray, shape (..., n_chans, n_out), float64
        Apply the session's whitening matrix afterwards with :func:`apply_whitening`.
    """
    times = epoch_times(preset.tmin_s, preset.tmax_s, sfreq_in)
    x = np.asarray(epoch_raw)
    if x.shape[-1] != times.shape[0]:
        raise UserError(
            f"epoch: {x.shape[-1]} samples, expected {times.shape[0]} for {preset.tmin_s}…{preset.tmax_s} s "
            f"at {sfreq_in} Hz; cut the epoch with epoch_window_samples"
        )
    x = baseline_correct(x, times, preset.baseline_tmin_s, preset.baseline_tmax_s)  # (..., C, n_in)
    x = resample_epochs(x, sfreq_in, preset.sfreq)  # (..., C, n_res)
    times = resampled_times(times, sfreq_in, preset.sfreq)
    if preset.crop_tmin_s is not None or preset.crop_tmax_s is not None:
        x, times = crop(x, times, preset.crop_tmin_s, preset.crop_tmax_s)  # (..., C, n_out)
    return x


def preprocessed_times(preset: PreprocessPreset, sfreq_in: float) -> np.ndarray:
    """Times (s) of :func:`preprocess_epoch`'s output samples: (n_out,) float64."""
    times = resampled_times(epoch_times(preset.tmin_s, preset.tmax_s, sfreq_in), sfreq_in, preset.sfreq)
    if preset.crop_tmin_s is not None or preset.crop_tmax_s is not None:
        _, times = crop(np.zeros((1, len(times))), times, preset.crop_tmin_s, preset.crop_tmax_s)
    return times
