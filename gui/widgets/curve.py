"""The live accuracy-vs-repetitions curve: top-1/top-5 of the images' k-repetition averages against k.

The engine's ``status`` messages carry :meth:`bci.accumulate.RepetitionAccumulator.report` as
``accumulated``; :class:`gui.state.RepetitionCurve` turns it into arrays (Qt-free, tested there) and
this widget only draws them: two lines over a fixed logarithmic k axis (1, 2, 5, 10, 20, 40, 80
repetitions, ThingsEEG2's 80 test repetitions at the end) with the chance levels dashed.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtWidgets

from ..state import RepetitionCurve, chance_levels

__all__ = ["RepetitionCurveWidget"]

_TOP1, _TOP5 = "#3b7dd8", "#2a9a2a"
_K_TICKS = (1, 2, 5, 10, 20, 40, 80)  # the ks of bci.accumulate's report


class RepetitionCurveWidget(QtWidgets.QGroupBox):
    """Top-1 and top-5 accuracy (%) against the number of repetitions averaged, and the chance levels.

    Attributes
    ----------
    curve : RepetitionCurve or None
        What is drawn.
    top1_item, top5_item : pyqtgraph.PlotDataItem
        The two lines (x = k, y = accuracy in %).
    chance_lines : tuple of pyqtgraph.InfiniteLine
        Top-1 and top-5 chance (%), hidden while the number of concepts is unknown.
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Accuracy vs repetitions averaged", parent)
        self.curve: RepetitionCurve | None = None
        self.plot = pg.PlotWidget(background="w")
        item = self.plot.getPlotItem()
        item.setLogMode(x=True, y=False)
        item.setLabel("bottom", "repetitions averaged (k)")
        item.setLabel("left", "accuracy (%)")
        item.showGrid(x=True, y=True, alpha=0.25)
        item.setMenuEnabled(False)
        item.setMouseEnabled(x=False, y=False)
        item.hideButtons()
        item.setYRange(0.0, 100.0, padding=0.02)
        item.setXRange(0.0, float(np.log10(_K_TICKS[-1])), padding=0.04)  # fixed: the curve grows along it
        item.enableAutoRange(x=False, y=False)
        item.getAxis("bottom").setTicks([[(float(np.log10(k)), str(k)) for k in _K_TICKS]])
        item.addLegend(offset=(-8, -8))  # bottom right: the curves rise to the top right
        self.top1_item, self.top5_item = (
            item.plot(
                [],
                [],
                pen=pg.mkPen(colour, width=2),
                symbol=symbol,
                symbolSize=6,
                symbolBrush=colour,
                symbolPen=None,
                name=name,
            )
            for colour, symbol, name in ((_TOP1, "o", "top-1"), (_TOP5, "s", "top-5"))
        )
        self.chance_lines = tuple(
            pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen(colour, width=1, style=QtCore.Qt.PenStyle.DashLine))
            for colour in (_TOP1, _TOP5)
        )
        for line in self.chance_lines:
            item.addItem(line, ignoreBounds=True)
        self.summary = QtWidgets.QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color: #444;")
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.summary)
        self.reset()

    def reset(self, n_concepts: int | None = None) -> None:
        """Empty the curve; ``n_concepts`` places the chance lines."""
        self.curve = None
        self.top1_item.setData([], [])
        self.top5_item.setData([], [])
        chance = chance_levels(n_concepts)
        for line, level in zip(self.chance_lines, chance or (0.0, 0.0)):
            line.setPos(100.0 * level)
            line.setVisible(chance is not None)
        self.summary.setText(
            "no image repeated yet: each point is the accuracy of the images' average over their first k "
            "repetitions" + (f" (chance dashed: {100 * chance[0]:.1f} % / {100 * chance[1]:.1f} %)" if chance else "")
        )

    def show_curve(self, curve: RepetitionCurve | None) -> bool:
        """Draw ``curve``; returns False when there is nothing new (None, or the points already drawn)."""
        if curve is None or (self.curve is not None and _same(self.curve, curve)):
            return False
        self.curve = curve
        k = curve.k.astype(np.float64)
        self.top1_item.setData(k, 100.0 * curve.top1)
        self.top5_item.setData(k, 100.0 * curve.top5)
        self.summary.setText(curve.text())
        return True

    def points(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"top1": (k, %), "top5": (k, %)}`` as drawn (the plot items' data, before the log axis)."""
        out = {}
        for name, plot_item in (("top1", self.top1_item), ("top5", self.top5_item)):
            x, y = plot_item.getOriginalDataset()
            out[name] = (np.asarray(x if x is not None else []), np.asarray(y if y is not None else []))
        return out


def _same(a: RepetitionCurve, b: RepetitionCurve) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("k", "top1", "top5", "n_images"))
