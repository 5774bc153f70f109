"""Scrolling EEG scope: one pyqtgraph curve per shown channel, stacked with offsets, marker ticks."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtWidgets

from ..state import ScopeBuffer, channel_offsets, robust_scale_uv, scale_for_display

__all__ = ["ScopeWidget"]

log = logging.getLogger(__name__)

_N_MARKER_LINES = 64  # pool of reusable marker ticks (more than fit in a window at 5 onsets/s)


class ScopeWidget(QtWidgets.QWidget):
    """The EEG scope.

    Feed it with :meth:`set_channels` (on ``connected``) and :meth:`append` (on each ``scope`` message);
    :meth:`redraw` draws only when new data arrived since the last draw (the window calls it from
    its ≤ 30 fps timer). Scale (µV per channel slot) and the shown channels are adjustable.

    Parameters
    ----------
    window_s : float
        Seconds of data shown.
    scale_uv : float
        µV between neighbouring channel baselines.
    unit_v : float
        Unit of the incoming data in volts (1.0 = volts, 1e-6 = µV).
    """

    channels_changed = QtCore.pyqtSignal(list)

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        window_s: float = 5.0,
        scale_uv: float = 50.0,
        unit_v: float = 1.0,
    ) -> None:
        super().__init__(parent)
        self.window_s, self.scale_uv, self.unit_v = float(window_s), float(scale_uv), float(unit_v)
        self.ch_names: list[str] = []
        self.shown: list[int] = []
        self.buffer: ScopeBuffer | None = None
        self._drawn_version = -1
        self.n_draws = 0
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.getPlotItem().setLabel("bottom", "time", units="s")
        self.plot.getPlotItem().showGrid(x=True, y=False, alpha=0.2)
        self.curves: list[pg.PlotDataItem] = []
        self.marker_lines: list[pg.InfiniteLine] = []
        for _ in range(_N_MARKER_LINES):
            line = pg.InfiniteLine(
                angle=90,
                movable=False,
                pen=pg.mkPen((200, 40, 40), width=1),
                label="",
                labelOpts={"position": 0.97, "color": (160, 30, 30), "anchors": [(0, 0), (0, 0)]},
            )
            line.setVisible(False)
            self.plot.addItem(line, ignoreBounds=True)
            self.marker_lines.append(line)

        self.scale_spin = QtWidgets.QDoubleSpinBox()
        self.scale_spin.setRange(0.01, 1e6)
        self.scale_spin.setDecimals(2)
        self.scale_spin.setSuffix(" µV")
        self.scale_spin.setValue(self.scale_uv)
        self.scale_spin.setToolTip("µV between neighbouring channel baselines")
        self.scale_spin.valueChanged.connect(self.set_scale)
        auto = QtWidgets.QPushButton("Auto scale")
        auto.clicked.connect(self.auto_scale)
        self.channel_edit = QtWidgets.QLineEdit()
        self.channel_edit.setPlaceholderText("all  (or visual17, or Oz,O1,O2 …)")
        self.channel_edit.setToolTip("channels shown: 'all', a named set (visual17) or comma-separated names")
        self.channel_edit.editingFinished.connect(lambda: self.select_channels(self.channel_edit.text()))
        self.error_text = ""

        controls = QtWidgets.QHBoxLayout()
        controls.addWidget(QtWidgets.QLabel("Scale"))
        controls.addWidget(self.scale_spin)
        controls.addWidget(auto)
        controls.addWidget(QtWidgets.QLabel("Channels"))
        controls.addWidget(self.channel_edit, 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.plot, 1)

    # -- data ---------------------------------------------------------------------------------
    def set_channels(self, ch_names: Sequence[str], sfreq: float) -> None:
        """Start a new stream: channel names and the scope data rate (Hz)."""
        self.ch_names = [str(c) for c in ch_names]
        self.buffer = ScopeBuffer(len(self.ch_names), sfreq, self.window_s)
        spec = self.channel_edit.text().strip() or "all"
        try:
            self.select_channels(spec)
        except ValueError:
            self.select_channels("all")

    def append(
        self,
        data: np.ndarray,
        t0_s: float,
        markers: Sequence[tuple[float, str]] = (),
        sfreq: float | None = None,
    ) -> None:
        """Add a ``scope`` message's chunk: data (C, n) at ``sfreq`` Hz (default: the current rate),
        first sample at ``t0_s`` seconds; a new rate restarts the buffer."""
        if self.buffer is None:
            return
        if sfreq and abs(float(sfreq) - self.buffer.sfreq) > 1e-9:
            self.buffer = ScopeBuffer(self.buffer.n_chans, float(sfreq), self.window_s)
        self.buffer.append(data, t0_s, markers)

    def clear(self) -> None:
        if self.buffer is not None:
            self.buffer = ScopeBuffer(self.buffer.n_chans, self.buffer.sfreq, self.window_s)
        self._drawn_version = -1
        self.redraw(force=True)

    # -- display settings ---------------------------------------------------------------------
    def select_channels(self, spec: str | Sequence[str]) -> list[str]:
        """Show a subset of channels; raises ``ValueError`` (with the reason) for unknown names."""
        from hmavd.channels import resolve_channels
        from hmavd.errors import UserError

        if isinstance(spec, str) and spec.strip() in ("", "all"):
            names = list(self.ch_names)
        else:
            try:
                names = resolve_channels(spec, self.ch_names)
            except (UserError, KeyError) as err:
                self.error_text = str(err)
                raise ValueError(str(err)) from None
        pos = {c: i for i, c in enumerate(self.ch_names)}
        self.shown = [pos[n] for n in names]
        self._rebuild_curves()
        self.channels_changed.emit(names)
        return names

    def set_scale(self, scale_uv: float) -> None:
        if scale_uv > 0 and scale_uv != self.scale_uv:
            self.scale_uv = float(scale_uv)
            if self.scale_spin.value() != self.scale_uv:
                self.scale_spin.setValue(self.scale_uv)
            self.redraw(force=True)

    def auto_scale(self) -> None:
        if self.buffer is None or not self.shown:
            return
        s = robust_scale_uv(self.buffer.data[self.shown], self.unit_v)
        if s is not None:
            self.set_scale(float(f"{s:.3g}"))

    def _rebuild_curves(self) -> None:
        for c in self.curves:
            self.plot.removeItem(c)
        self.curves = []
        n = len(self.shown)
        for k in range(n):
            pen = pg.mkPen(pg.intColor(k, hues=max(n, 9), values=1, maxValue=180), width=1)
            curve = pg.PlotDataItem(pen=pen, connect="finite", skipFiniteCheck=False)
            curve.setClipToView(True)
            self.plot.addItem(curve)
            self.curves.append(curve)
        left = self.plot.getPlotItem().getAxis("left")
        offsets = channel_offsets(n)
        step = max(1, n // 32)  # at most ~32 tick labels
        left.setTicks([[(float(offsets[k]), self.ch_names[i]) for k, i in enumerate(self.shown)][::step], []])
        self.plot.setYRange(-1.0, max(n, 1), padding=0)
        self._drawn_version = -1

    # -- drawing ------------------------------------------------------------------------------
    def redraw(self, force: bool = False) -> bool:
        """Draw the buffer if it changed since the last draw; returns whether it drew."""
        buf = self.buffer
        if buf is None or (not force and buf.version == self._drawn_version):
            return False
        self._drawn_version = buf.version
        t = buf.times()  # (n,)
        if self.shown:
            y = scale_for_display(buf.data[self.shown], self.scale_uv, self.unit_v)  # (C_shown, n)
            offsets = channel_offsets(len(self.shown))
            for k, curve in enumerate(self.curves):
                curve.setData(t, y[k] + offsets[k])
        markers = list(buf.markers)[-len(self.marker_lines) :]
        for line, (t_s, label) in zip(self.marker_lines, markers):
            line.setValue(t_s)
            line.label.setFormat(label)
            line.setVisible(True)
        for line in self.marker_lines[len(markers) :]:
            if not line.isVisible():
                break
            line.setVisible(False)
        self.plot.setXRange(float(t[0]), float(t[-1]), padding=0)
        self.n_draws += 1
        return True

    def visible_markers(self) -> list[tuple[float, str]]:
        """Marker ticks currently drawn (time in s, label)."""
        return [(float(ln.value()), ln.label.format) for ln in self.marker_lines if ln.isVisible()]
