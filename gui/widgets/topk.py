"""The live top-5 panel: concept names, score bars, thumbnails, the true concept highlighted."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from PyQt6 import QtCore, QtGui, QtWidgets

from ..state import ThumbnailIndex

__all__ = ["TopKPanel"]

_THUMB_PX = 64
_BAR_STYLE = (
    "QProgressBar {{ border: 1px solid #c4c4c4; border-radius: 3px; background: #f3f3f3; }}"
    "QProgressBar::chunk {{ background-color: {}; border-radius: 2px; }}"
)
_ROW_STYLE = "#topkRow {{ background-color: {}; border: 2px solid {}; border-radius: 5px; }}"
_PLAIN = ("transparent", "transparent", "#3b7dd8")
_HIT = ("#d5f2d5", "#2a8a2a", "#2a9a2a")


class _Row(QtWidgets.QFrame):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.setObjectName("topkRow")
        self.rank = QtWidgets.QLabel(f"{rank}")
        rank_font = self.rank.font()
        rank_font.setPointSizeF(rank_font.pointSizeF() * 1.2)
        self.rank.setFont(rank_font)
        self.rank.setFixedWidth(QtGui.QFontMetrics(rank_font).horizontalAdvance("00"))
        self.rank.setStyleSheet("color: #777;")
        self.thumb = QtWidgets.QLabel()
        self.thumb.setFixedSize(_THUMB_PX, _THUMB_PX)
        self.thumb.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.thumb.setVisible(False)
        self.name = QtWidgets.QLabel("–")
        font = self.name.font()
        font.setPointSizeF(font.pointSizeF() * 1.35)
        if rank == 1:
            font.setBold(True)
        self.name.setFont(font)
        self.name.setMinimumWidth(60)
        self.score = QtWidgets.QLabel("")
        self.score.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        self.score.setStyleSheet("color: #444;")
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(12)
        head = QtWidgets.QHBoxLayout()
        head.addWidget(self.name, 1)
        head.addWidget(self.score)
        text = QtWidgets.QVBoxLayout()
        text.setSpacing(3)
        text.addLayout(head)
        text.addWidget(self.bar)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(6, 3, 8, 3)
        lay.addWidget(self.rank)
        lay.addWidget(self.thumb)
        lay.addLayout(text, 1)
        self.highlighted = False
        self._style(False)

    def _style(self, on: bool) -> None:
        bg, border, chunk = _HIT if on else _PLAIN
        self.setStyleSheet(_ROW_STYLE.format(bg, border))
        self.bar.setStyleSheet(_BAR_STYLE.format(chunk))

    def set_highlight(self, on: bool) -> None:
        if on != self.highlighted:
            self.highlighted = on
            self._style(on)


class TopKPanel(QtWidgets.QGroupBox):
    """Shows the top-k concepts of the latest prediction.

    Scores are drawn as bars relative to the best score of the prediction (cosine similarities or
    probabilities alike); the row whose concept is the true one (from the marker) is highlighted,
    and the true concept is written under the list either way. Thumbnails appear only when the
    stimulus images were found.

    Parameters
    ----------
    k : int
        Rows shown.

    Attributes
    ----------
    draw_latencies_ms : deque of float
        For each shown prediction that carries ``last_arrival_s`` (``time.perf_counter`` seconds of
        its epoch's last sample, a clock shared by the engine process on Linux): last sample → this
        panel painted, ms (the last 1000).
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None, k: int = 5) -> None:
        super().__init__(f"Live top-{k}", parent)
        self.k = int(k)
        self.rows = [_Row(i + 1) for i in range(self.k)]
        self.truth = QtWidgets.QLabel("")
        truth_font = self.truth.font()
        truth_font.setPointSizeF(truth_font.pointSizeF() * 1.15)
        self.truth.setFont(truth_font)
        self.truth.setWordWrap(True)
        self.info = QtWidgets.QLabel("")
        self.info.setStyleSheet("color: #555;")
        self.accumulated = QtWidgets.QLabel("")  # this image's top-5 over its repetitions (bci.accumulate)
        self.accumulated.setWordWrap(True)
        self.thumbnails = ThumbnailIndex(None)
        self._pixmaps: dict[str, QtGui.QPixmap | None] = {}
        self.draw_latencies_ms: deque[float] = deque(maxlen=1000)
        self._await_paint: float | None = None
        lay = QtWidgets.QVBoxLayout(self)
        lay.setSpacing(4)
        for r in self.rows:
            lay.addWidget(r)
        lay.addSpacing(4)
        lay.addWidget(self.truth)
        lay.addWidget(self.info)
        lay.addWidget(self.accumulated)
        lay.addStretch(1)
        self.last_topk: list[tuple[str, float]] = []
        self.last_true: str | None = None
        self.clear()

    def set_thumbnails(self, index: ThumbnailIndex) -> None:
        self.thumbnails = index
        self._pixmaps.clear()
        for row in self.rows:
            row.thumb.setVisible(len(index) > 0)
            row.thumb.clear()

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
                row.score.setText(f"{score:.3f}")
                pm = self._pixmap(concept)
                if pm is None:
                    row.thumb.clear()
                else:
                    row.thumb.setPixmap(pm)
                row.set_highlight(true is not None and concept == true)
            else:
                row.name.setText("–")
                row.bar.setValue(0)
                row.score.setText("")
                row.thumb.clear()
                row.set_highlight(False)
        if not topk:
            self.truth.setText("")
        elif true is None:
            self.truth.setText("true concept: – (the marker carries none)")
        else:
            rank = next((i + 1 for i, (c, _) in enumerate(topk) if c == true), None)
            verdict = (
                "<span style='color:#2a8a2a'>✓ top-1</span>"
                if rank == 1
                else f"<span style='color:#2a8a2a'>✓ rank {rank}</span>"
                if rank
                else f"<span style='color:#b03030'>✗ not in the top-{self.k}</span>"
            )
            self.truth.setText(f"true concept: <b>{_html(true)}</b> &nbsp; {verdict}")
        if topk:
            marker = msg.get("marker", "")
            self.info.setText(
                f"onset {float(msg.get('onset_s', 0.0)):.2f} s · marker {marker} · latency "
                f"{float(msg.get('latency_ms', float('nan'))):.1f} ms"
            )
        self.accumulated.setText(accumulated_text(msg))
        arrival = msg.get("last_arrival_s")
        self._await_paint = float(arrival) if isinstance(arrival, (int, float)) else None

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802 - Qt API
        super().paintEvent(event)
        if self._await_paint is not None:
            self.draw_latencies_ms.append((time.perf_counter() - self._await_paint) * 1e3)
            self._await_paint = None

    def highlighted(self) -> list[str]:
        """Concepts of the highlighted rows (the true concept when it is in the top-k)."""
        return [r.name.text() for r in self.rows if r.highlighted]

    def names(self) -> list[str]:
        return [r.name.text() for r in self.rows]

    def clear(self, concepts: Sequence[str] = ()) -> None:
        self.show_prediction({"topk": [], "true_concept": None})
        self.info.setText(
            f"waiting for the first epoch · {len(concepts)} candidate concepts" if concepts else "no prediction yet"
        )


def _html(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def accumulated_text(msg: Mapping[str, Any]) -> str:
    """The accumulated top-5 of a prediction's image (``acc_n``, ``acc_topk``; ``bci.accumulate``), or ""."""
    acc, n = msg.get("acc_topk"), msg.get("acc_n")
    if not acc or not n:
        return ""
    names = ", ".join(f"{_html(str(c))} {float(s):.2f}" for c, s in list(acc)[:5])
    true = msg.get("true_concept")
    rank = next((i + 1 for i, (c, _) in enumerate(list(acc)[:5]) if c == true), None)
    verdict = "" if true is None else (" ✓ top-1" if rank == 1 else f" ✓ rank {rank}" if rank else " ✗")
    return f"averaged over {int(n)} repetition{'s' if n != 1 else ''}: {names}{verdict}"
