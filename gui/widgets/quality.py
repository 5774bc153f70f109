"""Signal-quality panel: one coloured cell per channel (flat, railed, line noise, noisy) and a summary line.

Fed by the engine's ``"quality"`` messages (about one a second, see :mod:`bci.quality`); the cells
are rebuilt only when the channel list changes and restyled only when a channel's state changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PyQt6 import QtCore, QtWidgets

from bci.quality import FLAGS, quality_summary

__all__ = ["QualityPanel", "STATE_COLOURS"]

#: Cell background per state (the first flag of :data:`bci.quality.FLAGS` that applies).
STATE_COLOURS = {"ok": "#c8e6c9", "flat": "#b0b0b0", "railed": "#e57373", "line": "#ffd54f", "noisy": "#ffb74d"}
_LEGEND = " ".join(f'<span style="background-color:{STATE_COLOURS[k]}">&nbsp;{k}&nbsp;</span>' for k in ("ok", *FLAGS))


class QualityPanel(QtWidgets.QGroupBox):
    """Compact per-channel quality view.

    Parameters
    ----------
    columns : int
        Cells per row.
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None, columns: int = 12) -> None:
        super().__init__("Signal quality", parent)
        self.columns = int(columns)
        self.summary = QtWidgets.QLabel("no data yet")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        legend = QtWidgets.QLabel(_LEGEND)
        legend.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self._grid_host = QtWidgets.QWidget()
        self._grid = QtWidgets.QGridLayout(self._grid_host)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(2)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        lay.setSpacing(3)
        lay.addWidget(self.summary)
        lay.addWidget(self._grid_host)
        lay.addWidget(legend)
        lay.addStretch(1)
        self.cells: dict[str, QtWidgets.QLabel] = {}
        self.states: dict[str, str] = {}
        self.last: dict[str, Any] = {}

    def _build(self, names: Sequence[str]) -> None:
        for cell in self.cells.values():
            self._grid.removeWidget(cell)
            cell.deleteLater()
        self.cells, self.states = {}, {}
        for i, name in enumerate(names):
            cell = QtWidgets.QLabel(name)
            cell.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            cell.setMinimumWidth(30)
            font = cell.font()
            font.setPointSizeF(max(6.5, font.pointSizeF() * 0.8))
            cell.setFont(font)
            self._grid.addWidget(cell, i // self.columns, i % self.columns)
            self.cells[name] = cell

    def show_quality(self, msg: Mapping[str, Any]) -> None:
        """Apply one ``"quality"`` message."""
        self.last = dict(msg)
        names = [str(c) for c in msg.get("ch_names") or []]
        if list(self.cells) != names:
            self._build(names)
        bad = dict(msg.get("bad") or {})
        rms = list(msg.get("rms_v") or [])
        ratio = list(msg.get("line_ratio") or [])
        line_freq = float(msg.get("line_freq") or 50.0)
        for i, name in enumerate(names):
            flags = list(bad.get(name) or [])
            state = flags[0] if flags else "ok"
            cell = self.cells[name]
            if self.states.get(name) != state:
                cell.setStyleSheet(f"QLabel {{ background-color: {STATE_COLOURS.get(state, '#ffffff')}; }}")
                self.states[name] = state
            tip = f"{name}: {', '.join(flags) or 'ok'}"
            if i < len(rms):
                tip += f"\nRMS {rms[i] * 1e6:.1f} µV"
            if i < len(ratio):
                tip += f"\n{line_freq:g} Hz: {100 * ratio[i]:.0f} % of the 1–100 Hz power"
            cell.setToolTip(tip)
        self.summary.setText(quality_summary(msg))

    def clear(self) -> None:
        """Forget the channels (a new connection)."""
        self._build([])
        self.last = {}
        self.summary.setText("no data yet")
