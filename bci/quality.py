"""Signal quality of the live EEG: per-channel RMS, flat, railed and noisy channels, line-noise power.

Pure functions on a recent window ``x`` of shape ``(C, n)`` in volts, plus :func:`quality_message`,
which the engine calls about once a second (``quality_interval_s``, after the poll's epochs are
decoded, so it never delays an epoch) to send a ``{"type": "quality", …}`` message, and
:func:`quality_summary` / :func:`quality_changes`, the one-line text the window and
``hmavd-live --headless`` show.

A channel is

* **flat** when its peak-to-peak over the window is ≤ ``flat_ptp_v`` (0.1 µV: a dead or
  disconnected electrode, a zero-filled channel);
* **railed** when ≥ ``rail_fraction`` (5 %) of its samples sit exactly at its own maximum or
  minimum (an amplifier pinned at its input range or an ADC at full scale), or reach
  ``rail_abs_v`` when that is set;
* **noisy** when its RMS (about its mean) exceeds ``noisy_rms_v`` (200 µV: a loose electrode,
  movement);
* **line** when the power within ±1 Hz of the line frequency is ≥ ``line_ratio_max`` (30 %) of
  its power between 1 Hz and min(100 Hz, Nyquist) (Welch, 1 s Hann segments, in numpy). The line frequency is 50
  or 60 Hz, the one with more power over all channels, unless ``line_freq`` is set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hmavd.config import ValidatedConfig
from hmavd.errors import UserError

from .montage import is_non_eeg
from .units import unit_scale

log = logging.getLogger(__name__)

__all__ = [
    "QualityConfig",
    "channel_rms",
    "flat_channels",
    "railed_channels",
    "power_spectrum",
    "line_noise_ratio",
    "assess",
    "quality_message",
    "quality_summary",
    "quality_changes",
    "FLAGS",
]

#: Flags in the order they are reported (the first that applies colours a channel in the window).
FLAGS = ("flat", "railed", "line", "noisy")


@dataclass(frozen=True)
class QualityConfig(ValidatedConfig):
    """Thresholds of the quality flags (volts, Hz, fractions); see the module doc."""

    window_s: float = 2.0
    flat_ptp_v: float = 1e-7
    rail_fraction: float = 0.05
    rail_abs_v: float = 0.0
    noisy_rms_v: float = 200e-6
    line_freq: float = 0.0
    line_ratio_max: float = 0.3

    def validate(self) -> None:
        if not self.window_s > 0:
            raise UserError(f"window_s: {self.window_s} must be > 0 seconds (e.g. 2.0)")
        for name in ("flat_ptp_v", "rail_abs_v"):
            if getattr(self, name) < 0:
                raise UserError(f"{name}: {getattr(self, name)} must be >= 0 volts (0 disables rail_abs_v)")
        if not self.noisy_rms_v > 0:
            raise UserError(f"noisy_rms_v: {self.noisy_rms_v} must be > 0 volts (e.g. 200e-6)")
        for name in ("rail_fraction", "line_ratio_max"):
            if not 0 < getattr(self, name) <= 1:
                raise UserError(f"{name}: {getattr(self, name)} must be a fraction in (0, 1] (e.g. 0.05)")
        if self.line_freq < 0:
            raise UserError(f"line_freq: {self.line_freq} must be >= 0 Hz (0 = pick 50 or 60 Hz, else 50 or 60)")


def channel_rms(x: np.ndarray) -> np.ndarray:
    """RMS about each channel's mean (the DC offset many amplifiers carry is not signal).

    Parameters
    ----------
    x : ndarray (C, n)

    Returns
    -------
    ndarray (C,), in the units of ``x``
    """
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(np.mean((x - x.mean(axis=1, keepdims=True)) ** 2, axis=1))


def flat_channels(x: np.ndarray, ptp_max: float = 1e-7) -> np.ndarray:
    """Channels whose peak-to-peak over the window is ≤ ``ptp_max``; ndarray (C,) bool."""
    x = np.asarray(x)
    return np.ptp(x, axis=1) <= ptp_max


def railed_channels(x: np.ndarray, fraction: float = 0.05, abs_max: float = 0.0) -> np.ndarray:
    """Channels stuck at their extremes for ≥ ``fraction`` of the samples (or at ≥ ``abs_max`` when > 0).

    A clean signal visits its maximum and minimum once or twice per window; a clipped one sits
    there. Flat channels (a single value) are not called railed unless ``abs_max`` catches them.

    Parameters
    ----------
    x : ndarray (C, n)
    fraction : float
        Share of samples at the channel's own max or min.
    abs_max : float
        Absolute level (units of ``x``); 0 disables the check.

    Returns
    -------
    ndarray (C,) bool
    """
    x = np.asarray(x)
    n = max(x.shape[1], 1)
    hi, lo = x.max(axis=1, keepdims=True), x.min(axis=1, keepdims=True)
    at_edge = ((x == hi) | (x == lo)).sum(axis=1) / n
    out = (at_edge >= fraction) & (hi[:, 0] > lo[:, 0])
    if abs_max > 0:
        out |= (np.abs(x) >= abs_max).sum(axis=1) / n >= fraction
    return out


def power_spectrum(x: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectrum: 1 s Hann segments, 50 % overlap, each segment's mean removed.

    Parameters
    ----------
    x : ndarray (C, n)
    sfreq : float
        Sampling rate (Hz); a window shorter than 1 s is one segment of its length.

    Returns
    -------
    freqs : ndarray (F,) in Hz
    power : ndarray (C, F), unnormalised (only ratios are used)
    """
    x = np.asarray(x, dtype=np.float64)
    nper = int(min(x.shape[1], round(sfreq)))
    if nper < 8:
        return np.zeros(0), np.zeros((x.shape[0], 0))
    win = np.hanning(nper)
    starts = range(0, x.shape[1] - nper + 1, max(1, nper // 2))
    power = np.zeros((x.shape[0], nper // 2 + 1))
    for a in starts:
        seg = x[:, a : a + nper]
        power += np.abs(np.fft.rfft((seg - seg.mean(axis=1, keepdims=True)) * win, axis=1)) ** 2
    return np.fft.rfftfreq(nper, 1.0 / sfreq), power / len(starts)


def line_noise_ratio(
    x: np.ndarray,
    sfreq: float,
    freq: float,
    half_width: float = 1.0,
    spectrum: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Share of each channel's 1…min(100 Hz, Nyquist) power within ``freq ± half_width`` Hz.

    Parameters
    ----------
    x : ndarray (C, n)
    sfreq : float
        Sampling rate (Hz).
    freq : float
        Line frequency (Hz): 50 or 60.
    spectrum : (freqs, power), optional
        :func:`power_spectrum` of ``x``, when already computed.

    Returns
    -------
    ndarray (C,) in [0, 1]; 0 where the band lies above Nyquist or the channel has no power
    """
    x = np.asarray(x)
    if freq + half_width >= sfreq / 2:
        return np.zeros(x.shape[0])
    f, pxx = spectrum if spectrum is not None else power_spectrum(x, sfreq)
    if len(f) == 0:
        return np.zeros(x.shape[0])
    top = min(100.0, sfreq / 2 - half_width)
    band = (f >= 1.0) & (f <= max(top, freq + half_width))
    line = (f >= freq - half_width) & (f <= freq + half_width)
    total = pxx[:, band].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pxx[:, line].sum(axis=1) / np.where(total > 0, total, 1.0), 0.0)


def assess(x: np.ndarray, sfreq: float, ch_names: Sequence[str], cfg: QualityConfig = QualityConfig()) -> dict:
    """All flags of one window.

    Parameters
    ----------
    x : ndarray (C, n)
        Volts.
    sfreq : float
    ch_names : sequence of str, length C
    cfg : QualityConfig

    Returns
    -------
    dict
        ``ch_names``, ``rms_v`` (C,), ``ptp_v`` (C,), ``line_ratio`` (C,), ``line_freq``, and one bool
        list per flag of :data:`FLAGS`; ``bad`` maps each flagged channel to its flags. Plain lists.
    """
    x = np.asarray(x, dtype=np.float64)
    spec = power_spectrum(x, sfreq)
    if cfg.line_freq > 0:
        line_freq, ratio = float(cfg.line_freq), line_noise_ratio(x, sfreq, cfg.line_freq, spectrum=spec)
    else:
        r50, r60 = (line_noise_ratio(x, sfreq, f, spectrum=spec) for f in (50.0, 60.0))
        line_freq, ratio = (60.0, r60) if r60.sum() > r50.sum() else (50.0, r50)
    flags = {
        "flat": flat_channels(x, cfg.flat_ptp_v),
        "railed": railed_channels(x, cfg.rail_fraction, cfg.rail_abs_v),
    }
    rms = channel_rms(x)
    flags["line"] = (ratio >= cfg.line_ratio_max) & ~flags["flat"]
    flags["noisy"] = (rms > cfg.noisy_rms_v) & ~flags["railed"]
    names = [str(c) for c in ch_names]
    bad = {names[i]: [k for k in FLAGS if flags[k][i]] for i in range(len(names))}
    return {
        "ch_names": names,
        "rms_v": rms.tolist(),
        "ptp_v": np.ptp(x, axis=1).tolist(),
        "line_ratio": ratio.tolist(),
        "line_freq": line_freq,
        **{k: v.tolist() for k, v in flags.items()},
        "bad": {c: f for c, f in bad.items() if f},
    }


def _volts_per_unit(ch_units: Sequence[str], n: int, stream_units: str) -> tuple[np.ndarray, bool]:
    """Per-channel factor to volts from ``stream_units`` or the channels' labels; unknown → 1 (volts)."""
    out, known = np.ones(n), True
    for i in range(n):
        label = stream_units or (ch_units[i] if i < len(ch_units) else "")
        scale = unit_scale(label)
        if scale is None:
            known = False
        else:
            out[i] = scale
    return out, known


def quality_message(source: Any, stream_units: str = "", cfg: QualityConfig = QualityConfig()) -> dict | None:
    """The ``"quality"`` message for the newest ``cfg.window_s`` of a connected source (None before 0.5 s).

    Counters, triggers and non-EEG channels (``sample_index``, ``stim``, types misc/aux/eog/…) are
    left out. Samples are converted to volts by ``stream_units`` or the channels' ``unit`` labels;
    a stream without either is assumed to be in volts (``units_known`` False in the message).
    """
    desc = source.description
    sfreq = float(desc.sfreq)
    stop = source.n_written
    start = max(stop - int(round(cfg.window_s * sfreq)), source.buffer.first_available)
    if stop - start < int(0.5 * sfreq):
        return None
    types = list(getattr(desc, "ch_types", ()) or ())
    keep = [i for i, c in enumerate(desc.ch_names) if not is_non_eeg(c, types[i] if i < len(types) else "")]
    if not keep:
        return None
    units = list(getattr(desc, "ch_units", ()) or ())
    scale, known = _volts_per_unit([units[i] if i < len(units) else "" for i in keep], len(keep), stream_units)
    x = source.get_data(start, stop)[keep].astype(np.float64) * scale[:, None]
    msg = assess(x, sfreq, [desc.ch_names[i] for i in keep], cfg)
    return {"type": "quality", **msg, "window_s": (stop - start) / sfreq, "units_known": known}


def quality_summary(msg: Mapping[str, Any]) -> str:
    """One line: ``"63 ch: 61 ok · flat: Fp1 · line 50 Hz: O2 · median RMS 12.3 µV"``."""
    names = list(msg.get("ch_names") or [])
    bad = dict(msg.get("bad") or {})
    parts = [f"{len(names)} ch: {len(names) - len(bad)} ok"]
    for flag in FLAGS:
        hit = [c for c, f in bad.items() if flag in f]
        if hit:
            label = f"line {float(msg.get('line_freq') or 50):g} Hz" if flag == "line" else flag
            parts.append(f"{label}: {', '.join(hit[:6])}{' …' if len(hit) > 6 else ''}")
    rms = np.asarray(msg.get("rms_v") or [np.nan], dtype=np.float64)
    parts.append(f"median RMS {np.nanmedian(rms) * 1e6:.1f} µV" + ("" if msg.get("units_known", True) else " (units?)"))
    return " · ".join(parts)


def quality_changes(previous: Mapping[str, Any] | None, msg: Mapping[str, Any]) -> bool:
    """True when the set of flagged channels (or their flags) differs from ``previous``."""
    if previous is None:
        return True
    return dict(previous.get("bad") or {}) != dict(msg.get("bad") or {})
