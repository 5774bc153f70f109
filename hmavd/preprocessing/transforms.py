"""Pure preprocessing transforms shared by ``hmavd-prepare`` (offline) and ``bci`` (online).

Every function works on numpy arrays whose last two axes are (channels, times) and whose leading
axes are any batch dimensions (a single epoch ``(C, T)``, a batch ``(N, C, T)``, or
``(n_conditions, n_reps, C, T)``). Nothing here does IO, threading or logging-heavy work.

The order of the steps (SPEC §3, both public pipelines)::

    cut epoch tmin..tmax at the recording rate -> baseline_correct (mean of tmin..0, t = 0 included)
    -> resample_epochs (== mne.Epochs.resample) -> crop (NICE: keep 0..0.996 s) -> apply_whitening (MVNN)

:func:`preprocess_epoch` runs the first three for one or many epochs; the whitening matrix comes
from :func:`mvnn_covariance` + :func:`whitening_matrix` computed offline and saved in ``mvnn.npz``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.linalg
from sklearn.covariance import ledoit_wolf
from sklearn.preprocessing import StandardScaler

from ..channels import resolve_channels
from ..errors import UserError

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
    mask = np.ones(times.shape[0], dtype=bool)
    if tmin_s is not None:
        mask &= times >= tmin_s - TIME_EPS_S
    if tmax_s is not None:
        mask &= times <= tmax_s + TIME_EPS_S
    if not mask.any():
        raise UserError(
            f"baseline: ({tmin_s}, {tmax_s}) s selects no sample of {times[0]:.3f}…{times[-1]:.3f} s; "
            "choose a window inside the epoch"
        )
    mean = x[..., mask].mean(axis=-1, keepdims=True)  # (..., C, 1)
    return x - mean


# --------------------------------------------------------------------------- resampling


def resampled_length(n_times: int, sfreq_in: float, sfreq_out: float) -> int:
    """Number of samples after resampling ``n_times`` samples (MNE's rule: ``round(n * out / in)``)."""
    return int(round(float(sfreq_out) / float(sfreq_in) * n_times))


def resample_epochs(epochs: np.ndarray, sfreq_in: float, sfreq_out: float) -> np.ndarray:
    """Resample along the last axis exactly as ``mne.Epochs.resample(sfreq_out)`` does.

    FFT resampling with MNE's defaults for epochs (``npad="auto"``, ``window="auto"``,
    ``pad="edge"``), applied per epoch after epoching (not to the continuous recording).

    Parameters
    ----------
    epochs : ndarray, shape (..., n_chans, n_times)
    sfreq_in, sfreq_out : float
        Rates in Hz. Equal rates return a float64 copy.

    Returns
    -------
    ndarray, shape (..., n_chans, resampled_length(n_times, sfreq_in, sfreq_out)), float64
    """
    import mne

    x = np.asarray(epochs, dtype=np.float64)
    if sfreq_in <= 0 or sfreq_out <= 0:
        raise UserError(f"resample: rates must be positive, got sfreq_in={sfreq_in}, sfreq_out={sfreq_out}")
    if float(sfreq_in) == float(sfreq_out):
        return x.copy()
    out = mne.filter.resample(
        x,
        float(sfreq_out),
        float(sfreq_in),
        npad="auto",
        window="auto",
        pad="edge",
        method="fft",
        verbose="error",
    )
    return np.asarray(out, dtype=np.float64)


def resampled_times(times: np.ndarray, sfreq_in: float, sfreq_out: float) -> np.ndarray:
    """Times (s) after :func:`resample_epochs`: ``times[0] + arange(n_out) / sfreq_out`` (as MNE sets them)."""
    times = np.asarray(times, dtype=np.float64)
    if float(sfreq_in) == float(sfreq_out):
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
    mask = np.ones(times.shape[0], dtype=bool)
    if tmin_s is not None:
        mask &= times >= tmin_s - TIME_EPS_S
    if tmax_s is not None:
        mask &= times <= tmax_s + TIME_EPS_S
    if not mask.any():
        raise UserError(
            f"crop: [{tmin_s}, {tmax_s}] s selects no sample of {times[0]:.3f}…{times[-1]:.3f} s; "
            "choose a window inside the epoch"
        )
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


# --------------------------------------------------------------------------- MVNN


def shrunk_covariance_auto(x: np.ndarray) -> np.ndarray:
    """Ledoit–Wolf covariance on standardised features, rescaled (sklearn's ``_cov(X, shrinkage="auto")``).

    Standardising first makes Ledoit–Wolf shrink toward the diagonal of the sample covariance
    ``S``: the result is ``(1 - a) S + a diag(S)``. Built from public sklearn API only.

    Parameters
    ----------
    x : ndarray, shape (n_samples, n_features)

    Returns
    -------
    ndarray, shape (n_features, n_features), float64
    """
    scaler = StandardScaler()
    xs = scaler.fit_transform(np.asarray(x, dtype=np.float64))  # (S, F)
    cov = ledoit_wolf(xs)[0]  # (F, F)
    scale = scaler.scale_
    return scale[:, None] * cov * scale[None, :]


def shrunk_covariance_auto_batched(x: np.ndarray) -> np.ndarray:
    """:func:`shrunk_covariance_auto` for a batch of sample matrices at once (numpy, same formulas).

    Standardise each feature (population std; constant features keep scale 1 as ``StandardScaler``
    does), Ledoit–Wolf shrinkage of the standardised data with sklearn's ``ledoit_wolf_shrinkage``
    formula, shrink toward ``mu·I`` and rescale. Tested equal to the sklearn path to ~1e-12; tens to
    thousands of times faster for the many small matrices MVNN needs.

    Parameters
    ----------
    x : ndarray, shape (n_batch, n_samples, n_features)

    Returns
    -------
    ndarray, shape (n_batch, n_features, n_features), float64
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise UserError(f"covariance: samples have shape {x.shape}; expected (n_batch, n_samples, n_features)")
    _, n, p = x.shape
    xc = x - x.mean(axis=1, keepdims=True)  # (B, n, p)
    var = (xc**2).mean(axis=1)  # (B, p)
    scale = np.sqrt(var)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0  # StandardScaler's handling of constant features
    xs = xc / scale[:, None, :]  # (B, n, p)
    xs = xs - xs.mean(axis=1, keepdims=True)
    gram = np.swapaxes(xs, 1, 2) @ xs  # (B, p, p)
    emp = gram / n
    x2 = xs**2
    trace_per = x2.sum(axis=1) / n  # (B, p)
    mu = trace_per.sum(axis=1) / p  # (B,)
    beta_ = (np.swapaxes(x2, 1, 2) @ x2).sum(axis=(1, 2))
    delta_ = (gram**2).sum(axis=(1, 2)) / n**2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * trace_per.sum(axis=1) + p * mu**2) / p
    beta = np.minimum(beta, delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(beta == 0, 0.0, beta / delta)  # (B,)
    if p == 1:
        shrink = np.zeros_like(shrink)
    cov = (1.0 - shrink)[:, None, None] * emp
    cov[:, np.arange(p), np.arange(p)] += (shrink * mu)[:, None]
    return scale[:, :, None] * cov * scale[:, None, :]


def mvnn_covariance(
    epochs_by_condition: np.ndarray, mode: Literal["nice", "gifford"] = "nice", batch_matrices: int = 1024
) -> np.ndarray:
    """Noise covariance for multivariate noise normalisation of one session's partition.

    Parameters
    ----------
    epochs_by_condition : ndarray, shape (n_conditions, n_reps, n_chans, n_times)
        Epochs grouped per image.
    mode : {"nice", "gifford"}
        ``"nice"`` (NICE ``mvnn_dim="epochs"``): one covariance per (image, repetition) over its
        n_times samples, averaged over repetitions, then over images.
        ``"gifford"`` (ThingsEEG2 ``mvnn_dim="time"``): one covariance per (image, time point)
        over the repetitions, averaged over time points, then over images.
    batch_matrices : int
        Covariance matrices estimated per numpy batch (memory bound only).

    Returns
    -------
    ndarray, shape (n_chans, n_chans), float64
        Each matrix is :func:`shrunk_covariance_auto` (sklearn's ``_cov(X, "auto")``).
    """
    x = np.asarray(epochs_by_condition)
    if x.ndim != 4:
        raise UserError(f"mvnn: epochs have shape {x.shape}; expected (n_conditions, n_reps, n_chans, n_times)")
    if mode not in ("nice", "gifford"):
        raise UserError(f"mvnn mode: {mode!r} is not one of ('nice', 'gifford')")
    n_cond, n_reps, n_chans, n_times = x.shape
    if mode == "gifford" and n_reps < 2:
        raise UserError(
            f"mvnn: the gifford covariance (per image and time point, over repetitions) needs >= 2 repetitions "
            f"per image and session, got {n_reps}; keep more (max_reps_training/max_reps_test) or use preset=nice"
        )
    per_cond = n_reps if mode == "nice" else n_times
    step = max(1, batch_matrices // per_cond)
    sigma_cond = np.empty((n_cond, n_chans, n_chans))
    for i0 in range(0, n_cond, step):
        blk = np.asarray(x[i0 : i0 + step], dtype=np.float64)  # (n, R, C, T)
        n = blk.shape[0]
        if mode == "nice":
            samples = blk.transpose(0, 1, 3, 2).reshape(n * n_reps, n_times, n_chans)  # per (image, rep): (T, C)
        else:
            samples = blk.transpose(0, 3, 1, 2).reshape(n * n_times, n_reps, n_chans)  # per (image, t): (R, C)
        covs = shrunk_covariance_auto_batched(samples).reshape(n, per_cond, n_chans, n_chans)
        sigma_cond[i0 : i0 + n] = covs.mean(axis=1)
    return sigma_cond.mean(axis=0)


def whitening_matrix(cov: np.ndarray) -> np.ndarray:
    """Inverse matrix square root ``cov ** -0.5`` (``scipy.linalg.fractional_matrix_power``, real part).

    Parameters
    ----------
    cov : ndarray, shape (n_chans, n_chans)

    Returns
    -------
    ndarray, shape (n_chans, n_chans), float64
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise UserError(f"mvnn: covariance has shape {cov.shape}; expected a square (n_chans, n_chans) matrix")
    if not np.all(np.isfinite(cov)):
        raise UserError("mvnn: covariance has NaN/inf entries; check the epochs for NaN or flat channels")
    w = scipy.linalg.fractional_matrix_power(cov, -0.5)
    return np.real(np.asarray(w)).astype(np.float64)


def apply_whitening(epochs: np.ndarray, whitening: np.ndarray) -> np.ndarray:
    """Whiten every epoch: ``(epochᵀ @ W)ᵀ`` as the public code does (``W`` is symmetric).

    Parameters
    ----------
    epochs : ndarray, shape (..., n_chans, n_times)
    whitening : ndarray, shape (n_chans, n_chans)

    Returns
    -------
    ndarray, shape (..., n_chans, n_times), float64
    """
    x = np.asarray(epochs, dtype=np.float64)
    w = np.asarray(whitening, dtype=np.float64)
    if w.shape != (x.shape[-2], x.shape[-2]):
        raise UserError(
            f"mvnn: whitening matrix {w.shape} does not fit {x.shape[-2]} channels; "
            "use the mvnn.npz written for this channel set"
        )
    return np.swapaxes(np.swapaxes(x, -1, -2) @ w, -1, -2)  # (..., C, T)


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
