"""Scrolling EEG scope: channels stacked with offsets, marker ticks labelled with the stimulus.

Built for ≥ 30 frames/s with 64 channels on a small CPU: the view never moves (x is "seconds
before the newest sample", so the axes are not re-laid out per frame), the channels are drawn by
a handful of curve items (one per colour band, each a single polyline with a ``connect`` mask)
instead of one item per channel, and the marker ticks are one curve plus one item that paints
all labels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui, QtWidgets

from ..state import (
    ScopeBuffer,
    center_channels,
    channel_offsets,
    is_data_channel,
    robust_scale_uv,
    scale_for_display,
    stack_traces,
)

__all__ = ["ScopeWidget"]

log = logging.getLogger(__name__)

_MAX_BANDS = 8  # curve items (colour bands of neighbouring channels)
_MARKER_PEN = (200, 40, 40, 170)
_LABEL_COLOUR = (150, 25, 25)
_LABEL_CHARS = 14
_LANE_PX = 78  # height reserved above the top channel for the marker labels


def is_undecoded_label(text: str) -> bool:
    """Marker labels the engine never decodes (``catch``, ``unknown <code>``); drawn grey."""
    return text == "catch" or text.startswith("unknown ")


class _MarkerLabels(pg.GraphicsObject):
    """All marker labels in one item, painted upright in device pixels (vertical text at each tick)."""

    def __init__(self) -> None:
        super().__init__()
        self._labels: list[tuple[float, str]] = []
        self._rect = QtCore.QRectF()
        self._y_top = 0.0
        self.font = QtGui.QFont()
        self.font.setPointSizeF(max(7.0, self.font.pointSizeF() * 0.9))
        self._pen = QtGui.QPen(QtGui.QColor(*_LABEL_COLOUR))
        self._muted = QtGui.QPen(QtGui.QColor(150, 150, 150))  # catch / unknown codes: never decoded

    def set_labels(self, labels: list[tuple[float, str]], rect: QtCore.QRectF, y_top: float) -> None:
        """``labels`` [(x, text)] in view coordinates; ``rect`` the view area; text starts at ``y_top``."""
        self.prepareGeometryChange()
        self._labels, self._rect, self._y_top = labels, QtCore.QRectF(rect), float(y_top)
        self.update()

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 - Qt API
        return self._rect

    def paint(self, painter: QtGui.QPainter, *args: object) -> None:
        if not self._labels:
            return
        tr = painter.transform()
        painter.save()
        painter.resetTransform()
        painter.setFont(self.font)
        painter.setPen(self._pen)
        ascent = QtGui.QFontMetricsF(self.font).ascent()
        for x, text in self._labels:
            pt = tr.map(QtCore.QPointF(x, self._y_top))
            painter.save()
            painter.translate(pt.x() + 2.0 + ascent, pt.y() + 3.0)
            painter.rotate(90.0)
            painter.setPen(self._muted if is_undecoded_label(text) else self._pen)
            painter.drawText(QtCore.QPointF(0.0, 0.0), text)
            painter.restore()
        painter.restore()


class ScopeWidget(QtWidgets.QWidget):
    """The EEG scope.

    Feed it with :meth:`set_channels` (on ``connected``) and :meth:`append` (on each ``scope`` message);
    :meth:`redraw` draws only when new data arrived since the last draw (the window calls it from
    its ≤ 30 fps timer). Each channel is shown with its mean over the window removed; the scale
    (µV between neighbouring baselines) and the shown channels are adjustable.

    Parameters
    ----------
    window_s : float
        Seconds of data shown.
    scale_uv : float
        µV between neighbouring channel baselines.
    unit_v : float
        Unit of the incoming data in volts (1.0 = volts, 1e-6 = µV).

    Signals
    -------
    channels_changed(list)
        The names now shown.
    error(str)
        A user input could not be applied (unknown channel names …); the window shows it.
    """

    channels_changed = QtCore.pyqtSignal(list)
    error = QtCore.pyqtSignal(str)

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
        self.model_ch_names: list[str] = []
        self.shown: list[int] = []
        self.buffer: ScopeBuffer | None = None
        self._drawn_version = -1
        self.n_draws = 0
        self.error_text = ""
        self._lane = 0.0  # label lane height in channel slots
        self._x_cache: dict[tuple[int, int, float], np.ndarray] = {}
        self._bands: list[slice] = []
        self._last_y: np.ndarray | None = None  # (C_shown, n) drawn values (slot units, with offsets)
        self._drawn_markers: list[tuple[float, str]] = []

        self._build_plot()
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._build_controls())
        layout.addWidget(self.plot, 1)

    def _build_plot(self) -> None:
        """The pyqtgraph plot: axes, the marker lines and labels, the "not connected" placeholder."""
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "time before the newest sample", units="s")
        item.showGrid(x=True, y=False, alpha=0.25)
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            axis.setTextPen(pg.mkPen((40, 40, 40)))
            axis.setPen(pg.mkPen((120, 120, 120)))
        item.getAxis("left").setWidth(46)
        self.vb = item.getViewBox()
        self.vb.disableAutoRange()
        self.vb.setXRange(-self.window_s, 0.0, padding=0)
        self.vb.sigResized.connect(self._update_y_range)
        self.curves: list[pg.PlotCurveItem] = []
        self.marker_curve = pg.PlotCurveItem(pen=pg.mkPen(_MARKER_PEN, width=1), connect="pairs", skipFiniteCheck=True)
        self.plot.addItem(self.marker_curve, ignoreBounds=True)
        self.marker_labels = _MarkerLabels()
        self.plot.addItem(self.marker_labels, ignoreBounds=True)
        self.placeholder = pg.TextItem("not connected", color=(120, 120, 120), anchor=(0.5, 0.5))
        font = self.placeholder.textItem.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        self.placeholder.setFont(font)
        self.plot.addItem(self.placeholder, ignoreBounds=True)
        item.getAxis("left").setTicks([[], []])  # no channels yet: no numbers on the left axis
        self._update_y_range()

    def _build_controls(self) -> QtWidgets.QHBoxLayout:
        """The row above the plot: the scale spin box, "Auto scale" and the channel selection."""
        self.scale_spin = QtWidgets.QDoubleSpinBox()
        self.scale_spin.setRange(0.01, 1e6)
        self.scale_spin.setDecimals(1)
        self.scale_spin.setSuffix(" µV")
        self.scale_spin.setValue(self.scale_uv)
        self.scale_spin.setToolTip("µV between neighbouring channel baselines")
        self.scale_spin.valueChanged.connect(self.set_scale)
        auto = QtWidgets.QPushButton("Auto scale")
        auto.setToolTip("6 × the median channel standard deviation over the window")
        auto.clicked.connect(self.auto_scale)
        self.channel_edit = QtWidgets.QLineEdit()
        self.channel_edit.setPlaceholderText("all   (or model, visual17, Oz,O1,O2 …)")
        self.channel_edit.setToolTip(
            "channels shown: 'all' (EEG channels, no stim/sample_index), 'model' (the decoder's), "
            "a named set (visual17) or comma-separated names; Enter applies"
        )
        self.channel_edit.editingFinished.connect(self._channels_edited)

        controls = QtWidgets.QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(QtWidgets.QLabel("Scale"))
        controls.addWidget(self.scale_spin)
        controls.addWidget(auto)
        controls.addSpacing(12)
        controls.addWidget(QtWidgets.QLabel("Channels"))
        controls.addWidget(self.channel_edit, 1)
        return controls

    # -- data ---------------------------------------------------------------------------------
    def set_channels(self, ch_names: Sequence[str], sfreq: float, model_ch_names: Sequence[str] = ()) -> None:
        """Start a new stream: channel names, the scope data rate (Hz) and the decoder's channels."""
        self.ch_names = [str(c) for c in ch_names]
        self.model_ch_names = [str(c) for c in model_ch_names]
        self.buffer = ScopeBuffer(len(self.ch_names), sfreq, self.window_s)
        self.placeholder.setVisible(False)
        spec = self.channel_edit.text().strip() or "all"
        try:
            self.select_channels(spec)
        except ValueError as err:
            self.error.emit(f"scope channels: {err}; showing all")
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

    def set_placeholder(self, text: str) -> None:
        """A grey message in the middle of the empty scope (``""`` hides it)."""
        self.placeholder.setText(text)
        self._place_placeholder()
        self.placeholder.setVisible(bool(text))

    def _place_placeholder(self) -> None:
        (x0, x1), (y0, y1) = self.vb.viewRange()
        self.placeholder.setPos((x0 + x1) / 2, (y0 + y1) / 2)

    # -- display settings ---------------------------------------------------------------------
    def select_channels(self, spec: str | Sequence[str]) -> list[str]:
        """Show a subset of channels; raises ``ValueError`` (with the reason) for unknown names.

        ``"all"`` shows every data channel (counter and trigger channels left out), ``"model"`` the
        channels the decoder reads, anything else goes to :func:`hmavd.channels.resolve_channels`.
        """
        from hmavd.channels import resolve_channels
        from hmavd.errors import UserError

        key = spec.strip().lower() if isinstance(spec, str) else None
        if key in ("", "all"):
            names = [c for c in self.ch_names if is_data_channel(c)] or list(self.ch_names)
        elif key == "model" and self.model_ch_names:
            names = [c for c in self.model_ch_names if c in self.ch_names]
        else:
            try:
                names = resolve_channels(spec, self.ch_names)
            except (UserError, KeyError) as err:
                self.error_text = str(err)
                raise ValueError(str(err)) from None
        self.error_text = ""
        pos = {c: i for i, c in enumerate(self.ch_names)}
        self.shown = [pos[n] for n in names]
        self._rebuild_curves()
        self.channels_changed.emit(names)
        return names

    def _channels_edited(self) -> None:
        try:
            self.select_channels(self.channel_edit.text())
        except ValueError as err:
            self.error.emit(f"scope channels: {err}")

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
            self.set_scale(float(f"{s:.2g}"))

    def _rebuild_curves(self) -> None:
        for c in self.curves:
            self.plot.removeItem(c)
        self.curves = []
        n = len(self.shown)
        n_bands = min(n, _MAX_BANDS)
        edges = np.linspace(0, n, n_bands + 1).round().astype(int)
        self._bands = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
        for k in range(n_bands):
            colour = pg.intColor(k, hues=max(n_bands, 6), values=1, maxValue=170, minHue=0, maxHue=300)
            curve = pg.PlotCurveItem(pen=pg.mkPen(colour, width=1), skipFiniteCheck=True, antialias=True)
            self.plot.addItem(curve)
            self.curves.append(curve)
        left = self.plot.getPlotItem().getAxis("left")
        offsets = channel_offsets(n)
        step = max(1, int(np.ceil(n / 32)))  # at most ~32 tick labels
        ticks = [(float(offsets[k]), self.ch_names[i]) for k, i in enumerate(self.shown)]
        left.setTicks([ticks[::step], ticks])
        self._last_y = None
        self._update_y_range()
        self._drawn_version = -1

    def _update_y_range(self) -> None:
        """Fit the channels plus a label lane of ``_LANE_PX`` pixels above the top channel."""
        n = max(len(self.shown), 1)
        h = float(self.vb.height()) if self.vb.height() > 0 else 600.0
        lane_px = min(_LANE_PX, 0.3 * h)
        span = n + 0.2  # from -0.7 below the last channel to 0.5 above the first
        self._lane = lane_px * span / max(h - lane_px, 1.0)
        self.vb.setYRange(-0.7, n - 0.5 + self._lane, padding=0)
        self._place_placeholder()
        self._drawn_version = -1

    def _x_for(self, n_chans: int, n_times: int, sfreq: float) -> np.ndarray:
        key = (n_chans, n_times, sfreq)
        x = self._x_cache.get(key)
        if x is None:
            rel = -(n_times - 1 - np.arange(n_times)) / sfreq  # (n,) s; 0 = the newest sample
            x = np.tile(rel, n_chans).astype(np.float32)
            self._x_cache = {key: x} if len(self._x_cache) > 32 else {**self._x_cache, key: x}
        return x

    # -- drawing ------------------------------------------------------------------------------
    def redraw(self, force: bool = False) -> bool:
        """Draw the buffer if it changed since the last draw; returns whether it drew."""
        buf = self.buffer
        if buf is None or (not force and buf.version == self._drawn_version):
            return False
        self._drawn_version = buf.version
        n_shown = len(self.shown)
        if n_shown:
            y = scale_for_display(center_channels(buf.data[self.shown]), self.scale_uv, self.unit_v)  # (C, n)
            offsets = channel_offsets(n_shown)
            self._last_y = y + offsets[:, None].astype(np.float32)
            for curve, band in zip(self.curves, self._bands):
                values, connect = stack_traces(y[band], offsets[band])
                curve.setData(self._x_for(band.stop - band.start, buf.n_times, buf.sfreq), values, connect=connect)
        self._draw_markers(buf)
        self.n_draws += 1
        return True

    def _draw_markers(self, buf: ScopeBuffer) -> None:
        end = buf.t_end_s if buf.t_end_s is not None else 0.0
        newest = end - 1.0 / buf.sfreq  # time of the last column (x = 0)
        marks = [(t - newest, label) for t, label in buf.markers if -self.window_s <= t - newest <= 0.0]
        if marks == self._drawn_markers:
            return
        self._drawn_markers = marks
        n = max(len(self.shown), 1)
        top = n - 0.5 + self._lane
        if marks:
            xs = np.repeat(np.array([m[0] for m in marks], dtype=np.float32), 2)
            ys = np.tile(np.array([-0.7, top], dtype=np.float32), len(marks))
            self.marker_curve.setData(xs, ys)
        else:
            self.marker_curve.setData([], [])
        labels = [(x, _short(label)) for x, label in marks]
        rect = QtCore.QRectF(-self.window_s - 1.0, -1.0, self.window_s + 2.0, top + 2.0)
        self.marker_labels.set_labels(labels, rect, top)

    # -- inspection (tests, benchmarks) -----------------------------------------------------------
    def trace(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The drawn trace of the ``k``-th shown channel: x (s before the newest sample) and y (slot units
        with the channel's offset; NaN where no data), both (n,)."""
        if self._last_y is None or self.buffer is None:
            return np.zeros(0), np.zeros(0)
        x = self._x_for(1, self.buffer.n_times, self.buffer.sfreq)
        return x.copy(), self._last_y[k].copy()

    def visible_markers(self) -> list[tuple[float, str]]:
        """Marker ticks currently drawn: (time in s of the stream, label)."""
        buf = self.buffer
        if buf is None or buf.t_end_s is None:
            return []
        newest = buf.t_end_s - 1.0 / buf.sfreq
        return [(x + newest, label) for x, label in self._drawn_markers]


def _short(label: str) -> str:
    label = str(label)
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"
