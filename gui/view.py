"""What the live session hands the window each frame (plain data, no Qt): :class:`ViewUpdate` and its parts.

:class:`gui.session.LiveSession` collects them; :meth:`gui.main_window.MainWindow.apply` puts them on the
widgets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bci import messages as bm

from .state import HistoryEntry, RepetitionCurve
from .streams import StreamEntry

__all__ = ["ViewUpdate", "ConnectedView", "ScopeChunk", "Notice"]


@dataclass(frozen=True)
class ScopeChunk:
    """One scope message, its marker codes turned into labels: ``data`` (C, n) from ``t0_s`` seconds."""

    data: np.ndarray  # (C, n) float32
    t0_s: float
    markers: list[tuple[float, str]]
    sfreq: float | None


@dataclass(frozen=True)
class ConnectedView:
    """What a ``connected`` message changes: the scope's channels, the candidate concepts, the rate."""

    ch_names: list[str]
    scope_sfreq: float
    model_ch_names: list[str]
    concepts: list[str]
    nominal_sfreq: float | None


@dataclass(frozen=True)
class Notice:
    """The line under the controls: ``html``, ``kind`` ("ready" or "missing") and a tooltip."""

    html: str
    kind: str = "ready"
    tooltip: str = ""


@dataclass
class ViewUpdate:
    """What the window changes after an action or a frame (plain data, applied in this field order).

    Attributes
    ----------
    dismiss_banner : bool
        Hide the error banner (a new connection).
    cleared : bool
        A new engine or connection: clear the top-k panel, the history table and the curve.
    connected : ConnectedView or None
    scope : list of ScopeChunk
        Every scope chunk, in order.
    history : list of HistoryEntry
        New rows (oldest first) of :attr:`LiveSession.history`.
    prediction, status, quality
        The newest message of each kind.
    curve : RepetitionCurve or None
        The newest accuracy-vs-repetitions curve.
    state, placeholder : str or None
        Status-bar text (set after ``status``: it replaces the status line), the scope's placeholder
        (``""`` hides it).
    streams : (str, str) or None
        Put these names in the EEG and marker stream fields (a replay's streams).
    found_streams : list of StreamEntry or None
        The streams a discovery found (fill the combos).
    notice : Notice or None
    default_paths, set_paths : dict of str
        Path fields (:data:`MODEL_FIELDS`) to fill when empty / to set.
    infos, errors : list of str
        Banner lines.
    controls : bool
        Connection, recording, replay or discovery state changed: update the buttons.
    """

    dismiss_banner: bool = False
    cleared: bool = False
    connected: ConnectedView | None = None
    scope: list[ScopeChunk] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    prediction: bm.PredictionMessage | None = None
    status: bm.StatusMessage | None = None
    quality: bm.QualityMessage | None = None
    curve: RepetitionCurve | None = None
    state: str | None = None
    placeholder: str | None = None
    streams: tuple[str, str] | None = None
    found_streams: list[StreamEntry] | None = None
    notice: Notice | None = None
    default_paths: dict[str, str] = field(default_factory=dict)
    set_paths: dict[str, str] = field(default_factory=dict)
    infos: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    controls: bool = False
