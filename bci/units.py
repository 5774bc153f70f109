"""Stream units: parse LSL channel ``unit`` labels, convert to the model's units, check amplitudes.

The live loop feeds the model data in the units it was trained in (``hmavd-prepare`` writes volts,
MNE's convention; a checkpoint records them as ``units``, old ones without it mean volts). An LSL
stream labels each channel's unit in its description (``<unit>microvolts</unit>`` as the BrainVision,
actiCHamp and OpenBCI connectors write it); a stream without units takes an explicit
``stream_units=`` setting, and with none the amplitude of its first seconds is compared with the
training data (:func:`amplitude_verdict`) so a µV stream is not silently decoded as volts.

Everything here is a small pure function on strings and arrays.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from hmavd.errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "UNIT_SCALE",
    "unit_to_volts",
    "unit_scale",
    "channel_scales",
    "expected_std",
    "amplitude_verdict",
    "TYPICAL_EEG_STD_V",
]

#: Unit label (lower case) -> its size in volts.
UNIT_SCALE: dict[str, float] = {
    "v": 1.0, "volt": 1.0, "volts": 1.0,
    "mv": 1e-3, "millivolt": 1e-3, "millivolts": 1e-3,
    "uv": 1e-6, "µv": 1e-6, "μv": 1e-6, "microvolt": 1e-6, "microvolts": 1e-6,
    "nv": 1e-9, "nanovolt": 1e-9, "nanovolts": 1e-9,
}  # fmt: skip

#: Per-channel standard deviation of scalp EEG in volts that counts as plausible (0.3 µV … 1 mV).
TYPICAL_EEG_STD_V: tuple[float, float] = (3e-7, 1e-3)


def unit_to_volts(label: str, what: str = "stream_units") -> float | None:
    """Size of one ``label`` unit in volts (``"µV"`` → 1e-6); ``None`` for an empty label.

    Case-insensitive; accepts ``V``, ``mV``, ``µV``/``uV``/``μV``, ``nV`` and the spelled-out forms
    (``microvolts``). Anything else raises a one-line :class:`UserError` naming ``what``.
    """
    key = str(label or "").strip().lower().replace(" ", "")
    if not key:
        return None
    if key not in UNIT_SCALE:
        raise UserError(
            f"{what}: unit {label!r} is not a voltage unit this toolkit knows; use one of V, mV, uV (µV), nV "
            "(or microvolts, millivolts, volts, nanovolts)"
        )
    return UNIT_SCALE[key]


def unit_scale(label: str) -> float | None:
    """Size of one ``label`` unit in volts, or ``None`` for an empty or non-voltage label (never raises).

    The lenient twin of :func:`unit_to_volts`, for readers that keep going on a label they do not know
    (the quality panel, reading back a recording).
    """
    return UNIT_SCALE.get(str(label or "").strip().lower().replace(" ", ""))


def channel_scales(
    ch_units: Sequence[str], picks: Sequence[int], model_units: str, stream_units: str = "", stream: str = ""
) -> tuple[np.ndarray, bool]:
    """Factors that turn the picked channels' samples into the model's units.

    Parameters
    ----------
    ch_units : sequence of str
        The stream's unit label per channel (``""`` when not labelled; may be empty altogether).
    picks : sequence of int
        Stream channel indices fed to the model.
    model_units : str
        Units the model was trained in (``"V"`` for checkpoints without a record).
    stream_units : str
        User setting: the units of every channel, overriding the labels (``""``: use the labels).
    stream : str
        Stream name for messages.

    Returns
    -------
    (scales (n_picks,) float64, known)
        ``known`` is False when at least one picked channel has no unit (then its factor is 1 and the
        caller checks the amplitude instead).
    """
    to_model = unit_to_volts(model_units, "checkpoint units") or 1.0
    if stream_units:
        s = unit_to_volts(stream_units, "stream_units")
        return np.full(len(picks), s / to_model), True
    labels = [ch_units[i] if i < len(ch_units) else "" for i in picks]
    scales, known = np.ones(len(picks)), True
    for k, label in enumerate(labels):
        try:
            s = unit_to_volts(label, "eeg_stream")
        except UserError:
            raise UserError(
                f"eeg_stream: {stream!r} labels channel {picks[k]} in {label!r}, not a voltage unit; set "
                "stream_units=uV (or V, mV, nV) to say what the stream sends"
            ) from None
        if s is None:
            known = False
        else:
            scales[k] = s / to_model
    return scales, known


def expected_std(whitening: np.ndarray | None, model_units: str) -> tuple[float, str]:
    """Typical per-channel standard deviation of the training data, in the model's units.

    From the MVNN whitening when given (``W = C^{-1/2}``, so the training covariance is ``(W W)^{-1}``
    and the median of ``sqrt(diag)`` is the channels' typical std); otherwise the geometric middle of
    :data:`TYPICAL_EEG_STD_V` (≈ 17 µV) converted to ``model_units``. Returns ``(std, where_from)``.
    """
    if whitening is not None and not np.allclose(whitening, np.eye(len(whitening))):
        try:
            cov = np.linalg.inv(whitening @ whitening)
            std = float(np.median(np.sqrt(np.abs(np.diag(cov)))))
            if std > 0 and math.isfinite(std):
                return std, "the training data (MVNN covariance)"
        except np.linalg.LinAlgError:
            pass
    to_model = unit_to_volts(model_units, "checkpoint units") or 1.0
    lo, hi = TYPICAL_EEG_STD_V
    return math.sqrt(lo * hi) / to_model, "typical scalp EEG"


def amplitude_verdict(
    data: np.ndarray, expected: float, where_from: str, stream: str, tolerance_decades: float = 2.0
) -> str | None:
    """``None`` when ``data`` looks like the training data's units, else a one-line explanation.

    Parameters
    ----------
    data : ndarray, shape (n_chans, n_samples)
        The first seconds of the picked channels, after any unit conversion (model units).
    expected : float
        Typical per-channel std of the training data (:func:`expected_std`).
    tolerance_decades : float
        How many orders of magnitude the median channel std may differ before it is refused.
    """
    x = np.asarray(data, dtype=np.float64)
    x = x[:, np.isfinite(x).all(axis=0)] if x.size else x
    if x.shape[-1] < 2:
        return None
    std = np.std(x - x.mean(axis=1, keepdims=True), axis=1)
    std = std[std > 0]
    if std.size == 0:
        return None  # flat channels are the quality check's business
    got = float(np.median(std))
    ratio = got / expected
    if abs(math.log10(ratio)) < tolerance_decades:
        return None
    guess = min(
        ((abs(math.log10(ratio * s)), name) for name, s in (("V", 1.0), ("mV", 1e-3), ("uV", 1e-6), ("nV", 1e-9)))
    )[1]
    return (
        f"eeg_stream: {stream!r} has no channel units and its amplitude (median channel std {got:.3g}) is "
        f"{ratio:.0e} times that of {where_from} ({expected:.3g}); set stream_units={guess} (what the amplifier "
        "sends) or label the channels' units in the stream"
    )
