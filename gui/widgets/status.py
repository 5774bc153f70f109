"""Status line (rate, latency, dropped samples, rejections, recording) and a dialog-free error banner."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from PyQt6 import QtCore, QtWidgets

from ..state import format_status

__all__ = ["StatusPanel", "ErrorBanner"]


class StatusPanel(QtWidgets.QLabel):
    """One line of engine status; shows "not connected" until the first ``status`` message."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("not connected", parent)
        self.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.nominal_sfreq: float | None = None
        self.last: dict[str, Any] = {}

    def show_status(self, msg: Mapping[str, Any], display_fps: float | None = None) -> None:
        self.last = dict(msg)
        self.setText(format_status(msg, self.nominal_sfreq, display_fps))
        rejected = msg.get("rejected") or {}
        tip = "rejected epochs by reason:\n" + "\n".join(f"{k}: {v}" for k, v in rejected.items())
        notes = list(msg.get("messages") or ())  # connect-time notes, amplitude warning, online MVNN
        self.setToolTip(tip + ("\n\n" + "\n".join(notes) if notes else ""))

    def show_state(self, text: str) -> None:
        self.setText(text)


class ErrorBanner(QtWidgets.QFrame):
    """A red banner with the latest error(s) and a close button; never a modal dialog.

    Errors are kept (most recent first, up to ``max_kept``) so tests and users can read them.
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None, max_kept: int = 20) -> None:
        super().__init__(parent)
        self.max_kept = int(max_kept)
        self.messages: list[str] = []
        self.setStyleSheet("ErrorBanner { background-color: #fbe3e3; border: 1px solid #c33; }")
        self.label = QtWidgets.QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QtWidgets.QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.dismiss)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(6, 3, 6, 3)
        lay.addWidget(self.label, 1)
        lay.addWidget(close)
        self.setVisible(False)
        self.kind = "error"

    def show_message(self, message: str, kind: str = "error") -> None:
        """Show ``message`` (``kind`` "error" red, "info" blue) with the time it happened."""
        text = f"{time.strftime('%H:%M:%S')}  {message}"
        self.kind = kind
        if kind == "error":
            self.messages.insert(0, message)
            del self.messages[self.max_kept :]
            self.setStyleSheet("ErrorBanner { background-color: #fbe3e3; border: 1px solid #c33; }")
        else:
            self.setStyleSheet("ErrorBanner { background-color: #e3eefb; border: 1px solid #36c; }")
        self.label.setText(text)
        self.setVisible(True)

    def dismiss(self) -> None:
        self.setVisible(False)

    @property
    def text(self) -> str:
        return self.label.text()
