"""The live top-5 panel: concept names, score bars, thumbnails, the true concept highlighted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PyQt6 import QtCore, QtGui, QtWidgets

from ..state import ThumbnailIndex

__all__ = ["TopKPanel"]

_HIT_STYLE = "background-color: #c8f0c8; border: 2px solid #2a8a2a; border-radius: 4px;"
_ROW_STYLE = "background-color: transparent; border: 2px solid transparent; border-radius: 4px;"
_THUMB_PX = 56


class _Row(QtWidgets.QFrame):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = QtWidgets.QLabel(f"{rank}.")
        self.thumb = QtWidgets.QLabel()
        self.thumb.setFixedSize(_THUMB_PX, _THUMB_PX)
        self.thumb.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.name = QtWidgets.QLabel("–")
        font = self.name.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        self.name.setFont(font)
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.bar.setFormat("")
        self.bar.setFixedHeight(14)
        text = QtWidgets.QVBoxLayout()
        text.setSpacing(2)
        text.addWidget(self.name)
        text.addWidget(self.bar)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.addWidget(self.rank)
        lay.addWidget(self.thumb)
        lay.addLayout(text, 1)
        self.setStyleSheet(_ROW_STYLE)
        self.highlighted = False

    def set_highlight(self, on: bool) -> None:
        if on != self.highlighted:
            self.highlighted = on
            self.setStyleSheet(_HIT_STYLE if on else _ROW_STYLE)


class TopKPanel(QtWidgets.QGroupBox):
    """Shows the top-k concepts of the latest prediction.

    Scores are drawn as bars relative to the best score of the prediction (cosine similarities or
    probabilities alike); the row whose concept is the true one (from the marker) is highlighted,
    and the true concept is written under the list either way.

    Parameters
    ----------
    k : int
        Rows shown.
    thumbnails : ThumbnailIndex, optional
        Concept → image file; rows show a thumbnail when one is found.
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None, k: int = 5) -> None:
        super().__init__("Live top-5", parent)
        self.k = int(k)
        self.rows = [_Row(i + 1) for i in range(self.k)]
        self.truth = QtWidgets.QLabel("true concept: –")
        self.info = QtWidgets.QLabel("")
        self.thumbnails = ThumbnailIndex(None)
        self._pixmaps: dict[str, QtGui.QPixmap | None] = {}
        lay = QtWidgets.QVBoxLayout(self)
        for r in self.rows:
            lay.addWidget(r)
        lay.addWidget(self.truth)
        lay.addWidget(self.info)
        lay.addStretch(1)
        self.last_topk: list[tuple[str, float]] = []
        self.last_true: str | None = None

    def set_thumbnails(self, index: ThumbnailIndex) -> None:
        self.thumbnails = index
        self._pixmaps.clear()

    def _pixmap(self, concept: str) -> QtGui.QPixmap | None:
        if concept not in self._pixmaps:
            path = self.thumbnails.get(concept)
            pm = None
            if path is not None:
                img = QtGui.QPixmap(str(path))
                if not img.isNull():
                    pm = img.scaled(
                        _THUMB_PX,
                        _THUMB_PX,
                        QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                        QtCore.Qt.TransformationMode.SmoothTransformation,
                    )
            self._pixmaps[concept] = pm
        return self._pixmaps[concept]

    def show_prediction(self, msg: Mapping[str, Any]) -> None:
        """Display a ``prediction`` message (``topk`` [(concept, score)…], ``true_concept``, ``latency_ms``)."""
        topk = [(str(c), float(s)) for c, s in list(msg.get("topk") or [])[: self.k]]
        true = msg.get("true_concept")
        self.last_topk, self.last_true = topk, true
        best = max((abs(s) for _, s in topk), default=1.0) or 1.0
        for i, row in enumerate(self.rows):
            if i < len(topk):
                concept, score = topk[i]
                row.name.setText(concept)
                row.bar.setValue(int(round(1000 * max(0.0, score) / best)))
                row.bar.setFormat(f"{score:.3f}")
                pm = self._pixmap(concept)
                if pm is None:
                    row.thumb.clear()
                else:
                    row.thumb.setPixmap(pm)
                row.set_highlight(true is not None and concept == true)
            else:
                row.name.setText("–")
                row.bar.setValue(0)
                row.bar.setFormat("")
                row.thumb.clear()
                row.set_highlight(False)
        if true is None:
            self.truth.setText("true concept: – (marker carries none)")
        else:
            hit = any(c == true for c, _ in topk)
            self.truth.setText(f"true concept: {true}" + ("" if hit else "  (not in top-5)"))
        marker = msg.get("marker", "")
        self.info.setText(
            f"onset {float(msg.get('onset_s', 0.0)):.2f} s  marker {marker}  latency "
            f"{float(msg.get('latency_ms', float('nan'))):.1f} ms"
        )

    def highlighted(self) -> list[str]:
        """Concepts of the highlighted rows (the true concept when it is in the top-k)."""
        return [r.name.text() for r in self.rows if r.highlighted]

    def names(self) -> list[str]:
        return [r.name.text() for r in self.rows]

    def clear(self, concepts: Sequence[str] = ()) -> None:
        self.show_prediction({"topk": [], "true_concept": None})
        self.truth.setText(f"true concept: –  ({len(concepts)} candidate concepts)" if concepts else "")
