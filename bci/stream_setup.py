"""Connect-time plan of how a stream feeds the model: channel picks, unit factors, interpolation.

:func:`plan_input` is computed once when the engine connects (montage match, units, spherical-spline
interpolation matrix) and gives the epocher one linear map from the picked stream channels to the
model's channels in its units; :class:`AmplitudeCheck` holds decoding back for the first seconds of an
unlabelled stream until its amplitude has been compared with the training data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hmavd.errors import UserError

from .montage import MontageMatch, interpolation_matrix, match_montage
from .sources import StreamDescription
from .units import amplitude_verdict, channel_scales, expected_std

log = logging.getLogger(__name__)

__all__ = ["InputPlan", "plan_input", "AmplitudeCheck", "model_time_axis"]


@dataclass
class InputPlan:
    """How raw stream samples become model input (before the preprocessing transforms).

    Attributes
    ----------
    picks : list of int
        Stream channels read for every epoch.
    scale : ndarray (n_picks,) or None
        Unit factors (``None`` when all are 1 and nothing is interpolated).
    matrix : ndarray (C_model, n_picks) or None
        Linear map with the unit factors folded in, when channels are interpolated.
    units_known : bool
        False: the stream carries no units and ``stream_units`` was not set (amplitude check needed).
    notes : list of str
        What was done, for the log and the window (units converted, channels renamed/ignored/interpolated).
    montage : MontageMatch
    """

    picks: list[int]
    scale: np.ndarray | None
    matrix: np.ndarray | None
    units_known: bool
    notes: list[str]
    montage: MontageMatch

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """``(..., n_picks, T)`` picked samples → ``(..., C_model, T)`` in model units."""
        if self.matrix is not None:
            return np.einsum("mc,...ct->...mt", self.matrix, raw)
        if self.scale is not None:
            return raw * self.scale[:, None]
        return raw


def plan_input(
    desc: StreamDescription,
    model_names: Sequence[str],
    model_units: str,
    stream_units: str = "",
    interpolate_missing: int = 0,
) -> InputPlan:
    """Match the stream to the model (see :mod:`bci.montage`, :mod:`bci.units`); one-line errors."""
    match = match_montage(desc.ch_names, model_names, desc.name, desc.ch_types, interpolate_missing)
    picks = list(match.picks)
    scales, known = channel_scales(desc.ch_units, picks, model_units, stream_units, desc.name)
    notes: list[str] = []
    if not np.allclose(scales, 1.0):
        units = sorted({desc.ch_units[i] for i in picks if i < len(desc.ch_units)} - {""}) or [stream_units]
        notes.append(f"stream units {'/'.join(units)} converted to the model's {model_units} (×{scales[0]:g})")
    if match.renamed:
        notes.append("channels matched by alias/case: " + ", ".join(f"{a}→{b}" for a, b in match.renamed[:8]))
    if match.ignored:
        notes.append(f"non-EEG channels ignored: {', '.join(match.ignored[:8])}")
    matrix = None
    if match.missing:
        matrix = interpolation_matrix(model_names, match) * scales[None, :]
        notes.append(
            f"interpolated {len(match.missing)} missing channel(s) (spherical splines): {', '.join(match.missing)}"
        )
        log.warning("%s: %s", desc.name, notes[-1])
    if not known:
        notes.append("stream has no channel units: checking its amplitude against the training data")
    for n in notes:
        log.info("%s: %s", desc.name, n)
    scale = None if np.allclose(scales, 1.0) else scales
    return InputPlan(picks, scale, matrix, known, notes, match)


class AmplitudeCheck:
    """Compares the first ``seconds`` of an unlabelled stream with the training data's amplitude.

    Parameters
    ----------
    plan : InputPlan
    whitening : ndarray (C, C) or None
        The model's MVNN matrix (gives the training data's channel std).
    model_units : str
    mode : str
        ``"refuse"`` (raise the one-line error), ``"warn"`` (log it loudly, report it, decode anyway)
        or ``"off"``.
    seconds : float
        How much data to look at.
    """

    def __init__(self, plan: InputPlan, whitening, model_units: str, mode: str = "refuse", seconds: float = 2.0):
        self.plan, self.mode, self.seconds = plan, mode, float(seconds)
        self.expected, self.where = expected_std(whitening, model_units)
        self.done = plan.units_known or mode == "off"
        self.message: str | None = None

    def update(self, source, stream: str) -> bool:
        """True once decoding may go ahead; raises :class:`UserError` in ``refuse`` mode when off."""
        if self.done:
            return True
        need = int(self.seconds * source.description.sfreq)
        start = source.buffer.first_available
        if source.n_written - start < need:
            return False
        raw = source.get_data(start, start + need)[self.plan.picks].astype(np.float64)
        verdict = amplitude_verdict(self.plan.apply(raw), self.expected, self.where, stream)
        self.done = True
        if verdict is None:
            log.info("%s: amplitude matches %s (no channel units given)", stream, self.where)
            return True
        self.message = verdict
        if self.mode == "refuse":
            raise UserError(verdict)
        log.warning("UNITS? %s", verdict)
        return True


def model_time_axis(preset, sfreq_in: float, model_times: Sequence[float], n_times: int, notes: list[str]):
    """The preset cropped onto the model's time axis at ``sfreq_in`` (:func:`bci.rates.align_to_model`).

    The model's times are the checkpoint's (``model_times``, s), else (empty) the preset's own output at a
    rate that is a multiple of its ``sfreq``. ``None`` when they cannot be matched within half a sample.
    """
    from hmavd.preprocessing.transforms import preprocessed_times

    from .rates import align_to_model

    times = np.asarray(
        model_times if len(model_times) else preprocessed_times(preset, 4 * preset.sfreq), dtype=np.float64
    )
    if len(times) != n_times:
        return None
    hit = align_to_model(preset, sfreq_in, times)
    if hit is None:
        return None
    aligned, offset = hit
    notes.append(
        f"epochs at {sfreq_in:g} Hz cropped onto the model's {n_times}-sample time axis "
        f"(largest time offset {offset * 1e3:.2f} ms)"
    )
    log.info("%s", notes[-1])
    return aligned
