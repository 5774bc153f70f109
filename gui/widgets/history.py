"""History of recent predictions with running top-1/top-5 accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PyQt6 import QtCore, QtGui, QtWidgets

from ..state import HistoryEntry, PredictionHistory, RunningAccuracy

__all__ = ["HistoryWidget"]

_COLUMNS = ("onset s", "predicted", "score", "true", "", "latency ms")


_RIGHT = QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter


class HistoryWidget(QtWidgets.QGroupBox):
    """The newest predictions of a :class:`gui.state.PredictionHistory` (newest on top) and its accuracy.

    Parameters
    ----------
    history : PredictionHistory, optional
        What is shown (the window passes its session's; a new one of ``max_rows`` otherwise).
    max_rows : int
        Rows of a new history (the accuracy counts every prediction).
    """

    def __init__(
        self,
        history: PredictionHistory | None = None,
        parent: QtWidgets.QWidget | None = None,
        max_rows: int = 50,
    ) -> None:
        super().__init__("History", parent)
        self.history = history if history is not None else PredictionHistory(max_rows)
        self.summary = QtWidgets.QLabel(self.history.summary())
        self.table = QtWidgets.QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(QtCore.Qt.TextElideMode.ElideRight)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        for col in (1, 3):  # concept names share the free width
            header.setSectionResizeMode(col, QtWidgets.QHeaderView.ResizeMode.Stretch)
        for col, tip in ((4, "✓ top-1 hit, ~ top-5 hit, ✗ miss"), (5, "last sample → prediction (engine)")):
            self.table.horizontalHeaderItem(col).setToolTip(tip)
        self.summary.setStyleSheet("font-weight: bold;")
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)

    @property
    def accuracy(self) -> RunningAccuracy:
        """The running top-1/top-5 accuracy shown."""
        return self.history.accuracy

    def reset(self, n_concepts: int | None = None) -> None:
        """Forget every prediction (the history too)."""
        self.history.reset(n_concepts)
        self.refresh()

    def refresh(self) -> None:
        """Redraw the table and the summary from the history (after it was reset elsewhere)."""
        self.table.setRowCount(0)
        for entry in reversed(self.history.entries):  # oldest first: each row goes on top
            self.add_row(entry)
        self.summary.setText(self.history.summary())

    def add_prediction(self, msg: Mapping[str, Any]) -> HistoryEntry:
        """Count a ``prediction`` message in the history and show its row."""
        entry = self.history.add(msg)
        self.add_row(entry)
        return entry

    def add_row(self, entry: HistoryEntry) -> None:
        """Show one entry already counted in the history on top of the table."""
        self.table.insertRow(0)
        cells = (
            f"{entry.onset_s:.2f}",
            entry.predicted,
            f"{entry.score:.3f}",
            entry.true_concept or "",
            entry.mark(),
            f"{entry.latency_ms:.1f}",
        )
        colour = None
        if entry.top1_correct:
            colour = QtGui.QColor(200, 240, 200)
        elif entry.top5_correct:
            colour = QtGui.QColor(240, 240, 190)
        for col, text in enumerate(cells):
            item = QtWidgets.QTableWidgetItem(text)
            if col in (0, 2, 5):
                item.setTextAlignment(_RIGHT)
            elif col == 4:
                item.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            if colour is not None:
                item.setBackground(colour)
            self.table.setItem(0, col, item)
        while self.table.rowCount() > self.history.max_rows:
            self.table.removeRow(self.table.rowCount() - 1)
        self.summary.setText(self.history.summary())
