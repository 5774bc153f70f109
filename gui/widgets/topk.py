"""The live top-5 panel: the single trial's and the image's accumulated top-5, score bars, thumbnails, the truth."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from PyQt6 import QtCore, QtGui, QtWidgets

from ..state import ThumbnailIndex

__all__ = ["TopKPanel", "accumulated_title", "verdict"]

_THUMB_PX = 64
_BAR_STYLE = (
    "QProgressBar {{ border: 1px solid #c4c4c4; border-radius: 3px; background: #f3f3f3; }}"
    "QProgressBar::chunk {{ background-color: {}; border-radius: 2px; }}"
)
_ROW_STYLE = "#topkRow {{ background-color: {}; border: 2px solid {}; border-radius: 5px; }}"
_PLAIN = ("transparent", "transparent", "#3b7dd8")
_HIT = ("#d5f2d5", "#2a8a2a", "#2a9a2a")


class _Row(QtWidgets.QFrame):
    """One ranked concept: rank, thumbnail (not when ``compact``), name, score and a bar."""

    def __init__(self, rank: int, compact: bool = False) -> None:
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
        font.setPointSizeF(font.pointSizeF() * (1.0 if compact else 1.35))
        if rank == 1:
            font.setBold(True)
        self.name.setFont(font)
        self.name.setMinimumWidth(40 if compact else 60)
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
    """Shows the top-k concepts of the latest prediction and, beside them, its image's accumulated top-k.

    Scores are drawn as bars relative to the best score of the prediction (cosine similarities or
    probabilities alike); the row whose concept is the true one (from the marker) is highlighted,
    and the true concept is written under the list either way. Thumbnails appear only when the
    stimulus images were found. The right column (hidden while predictions carry none) is the image's
    average over its repetitions so far (``acc_n``, ``acc_topk``; :mod:`bci.accumulate`).

    Parameters
    ----------
    top_k : int
        Rows shown in each column.

    Attributes
    ----------
    draw_latencies_ms : deque of float
        For each shown prediction that carries ``last_arrival_s`` (``time.perf_counter`` seconds of
        its epoch's last sample, a clock shared by the engine process on Linux): last sample → this
        panel painted, ms (the last 1000).
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None, top_k: int = 5) -> None:
        super().__init__(f"Live top-{top_k}", parent)
        self.top_k = int(top_k)
        self.rows = [_Row(i + 1) for i in range(self.top_k)]
        self.acc_rows = [_Row(i + 1, compact=True) for i in range(self.top_k)]
        self.single_title = QtWidgets.QLabel("single trial")
        self.acc_title = QtWidgets.QLabel("")  # "averaged over n repetitions ✓ rank r"
        for label in (self.single_title, self.acc_title):
            label.setStyleSheet("color: #555; font-weight: bold;")
        self.truth = QtWidgets.QLabel("")
        truth_font = self.truth.font()
        truth_font.setPointSizeF(truth_font.pointSizeF() * 1.15)
        self.truth.setFont(truth_font)
        self.truth.setWordWrap(True)
        self.info = QtWidgets.QLabel("")
        self.info.setStyleSheet("color: #555;")
        self.thumbnails = ThumbnailIndex(None)
        self._pixmaps: dict[str, QtGui.QPixmap | None] = {}
        self.draw_latencies_ms: deque[float] = deque(maxlen=1000)
        self._await_paint: float | None = None
        grid = self._grid = QtWidgets.QGridLayout()
        grid.setSpacing(4)
        grid.addWidget(self.single_title, 0, 0)
        grid.addWidget(self.acc_title, 0, 1)
        for i, (row, acc_row) in enumerate(zip(self.rows, self.acc_rows)):
            grid.addWidget(row, i + 1, 0)
            grid.addWidget(acc_row, i + 1, 1)
        grid.setColumnStretch(0, 3)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(grid)
        lay.addSpacing(4)
        lay.addWidget(self.truth)
        lay.addWidget(self.info)
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

    def _fill(self, rows: list[_Row], topk: list[tuple[str, float]], true: str | None, thumbs: bool) -> None:
        best = max((abs(s) for _, s in topk), default=1.0) or 1.0
        for i, row in enumerate(rows):
            concept, score = topk[i] if i < len(topk) else ("–", None)
            row.name.setText(concept)
            row.bar.setValue(0 if score is None else int(round(1000 * max(0.0, score) / best)))
            row.score.setText("" if score is None else f"{score:.3f}")
            pm = self._pixmap(concept) if thumbs and score is not None else None
            if pm is None:
                row.thumb.clear()
            else:
                row.thumb.setPixmap(pm)
            row.set_highlight(score is not None and true is not None and concept == true)

    def show_prediction(self, msg: Mapping[str, Any]) -> None:
        """Display a ``prediction`` message (``topk`` [(concept, score)…], ``true_concept``, ``latency_ms``,
        optionally the image's ``acc_n`` and ``acc_topk``)."""
        topk = [(str(c), float(s)) for c, s in list(msg.get("topk") or [])[: self.top_k]]
        true = msg.get("true_concept")
        self.last_topk, self.last_true = topk, true
        self._fill(self.rows, topk, true, thumbs=True)
        if not topk:
            self.truth.setText("")
        elif true is None:
            self.truth.setText("true concept: – (the marker carries none)")
        else:
            self.truth.setText(f"true concept: <b>{_html(true)}</b> &nbsp; {verdict(topk, true, self.top_k)}")
        if topk:
            marker = msg.get("marker", "")
            self.info.setText(
                f"onset {float(msg.get('onset_s', 0.0)):.2f} s · marker {marker} · latency "
                f"{float(msg.get('latency_ms', float('nan'))):.1f} ms"
            )
        acc = [(str(c), float(s)) for c, s in list(msg.get("acc_topk") or [])[: self.top_k]]
        self._fill(self.acc_rows, acc, true, thumbs=False)
        self.acc_title.setText(accumulated_title(msg, self.top_k))
        for w in (self.single_title, self.acc_title, *self.acc_rows):
            w.setVisible(bool(acc))
        self._grid.setColumnStretch(1, 2 if acc else 0)
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

    def accumulated_names(self) -> list[str]:
        """The accumulated column's concepts (``–`` for empty rows)."""
        return [r.name.text() for r in self.acc_rows]

    def accumulated_highlighted(self) -> list[str]:
        """The accumulated column's highlighted concepts (the true one when it is in its top-k)."""
        return [r.name.text() for r in self.acc_rows if r.highlighted]

    def clear(self, concepts: Sequence[str] = ()) -> None:
        self.show_prediction({"topk": [], "true_concept": None})
        self.info.setText(
            f"waiting for the first epoch · {len(concepts)} candidate concepts" if concepts else "no prediction yet"
        )


def _html(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def verdict(topk: Sequence[tuple[str, float]], true: str, top_k: int = 5) -> str:
    """HTML: ``✓ top-1``, ``✓ rank r`` or ``✗ not in the top-k`` for the true concept's rank in ``topk``."""
    rank = next((i + 1 for i, (c, _) in enumerate(list(topk)[:top_k]) if c == true), None)
    if rank == 1:
        return "<span style='color:#2a8a2a'>✓ top-1</span>"
    if rank:
        return f"<span style='color:#2a8a2a'>✓ rank {rank}</span>"
    return f"<span style='color:#b03030'>✗ not in the top-{top_k}</span>"


def accumulated_title(msg: Mapping[str, Any], top_k: int = 5) -> str:
    """Heading of the accumulated column: ``averaged over n repetitions`` and the truth's verdict, or ""."""
    acc, n = msg.get("acc_topk"), msg.get("acc_n")
    if not acc or not n:
        return ""
    true = msg.get("true_concept")
    head = f"averaged over {int(n)} repetition{'s' if n != 1 else ''}"
    return head if true is None else f"{head} &nbsp; {verdict(acc, true, top_k)}"
