"""The input panel of the window: streams, model files, session (demo, replay, record) controls.

Only widgets, layout and reading or filling the stream combos; :class:`gui.main_window.MainWindow` connects them
to its actions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PyQt6 import QtCore, QtWidgets

from ..streams import StreamEntry, split_streams

__all__ = ["ControlPanel", "set_path_text"]

_NOTICE_STYLE = {
    "ready": "background-color: #e6f0fb; border: 1px solid #8fb0dc; border-radius: 4px; padding: 4px 8px;",
    "missing": "background-color: #fff4d6; border: 1px solid #d9b44a; border-radius: 4px; padding: 4px 8px;",
}
_PRIMARY = "QPushButton { font-weight: bold; padding: 3px 12px; }"


def set_path_text(edit: QtWidgets.QLineEdit, text: str) -> None:
    """Put a path in ``edit`` showing its end (the file name) and the whole path as the tooltip."""
    edit.setText(text)
    edit.setCursorPosition(len(text))
    edit.setToolTip(text)


class ControlPanel(QtWidgets.QWidget):
    """Three group boxes side by side (Streams | Model | Session) and a notice line below them.

    Parameters
    ----------
    pick_file : callable, optional
        ``pick_file(edit, directory)`` opens a file/folder chooser for a path field (default: a Qt dialog).
    """

    def __init__(self, pick_file: Callable[[QtWidgets.QLineEdit, bool], None] | None = None) -> None:
        super().__init__()
        boxes = QtWidgets.QHBoxLayout()
        boxes.setContentsMargins(0, 0, 0, 0)
        for title, inner, stretch in (
            ("Streams", self._streams_box(), 4),
            ("Model", self._model_box(pick_file or self.pick_path), 6),
            ("Session", self._session_box(), 0),
        ):
            box = QtWidgets.QGroupBox(title)
            box.setLayout(inner)
            boxes.addWidget(box, stretch)
        self.notice = QtWidgets.QLabel("")
        self.notice.setWordWrap(True)
        self.notice.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notice.setVisible(False)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(boxes)
        lay.addWidget(self.notice)

    def _streams_box(self) -> QtWidgets.QGridLayout:
        self.eeg_combo = QtWidgets.QComboBox(editable=True)
        self.marker_combo = QtWidgets.QComboBox(editable=True)
        for combo, tip in (
            (self.eeg_combo, "EEG LSL stream (Refresh lists the streams on the network; a name can be typed)"),
            (self.marker_combo, "marker LSL stream of stimulus onsets (codes → concepts)"),
        ):
            combo.setInsertPolicy(QtWidgets.QComboBox.InsertPolicy.NoInsert)
            combo.setMinimumContentsLength(22)
            combo.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setToolTip(tip)
        self.refresh_button = QtWidgets.QPushButton("Refresh")
        self.connect_button = QtWidgets.QPushButton("Connect")
        self.connect_button.setStyleSheet(_PRIMARY)
        self.disconnect_button = QtWidgets.QPushButton("Disconnect")
        streams = QtWidgets.QGridLayout()
        streams.addWidget(QtWidgets.QLabel("EEG"), 0, 0)
        streams.addWidget(self.eeg_combo, 0, 1)
        streams.addWidget(self.refresh_button, 0, 2)
        streams.addWidget(QtWidgets.QLabel("Markers"), 1, 0)
        streams.addWidget(self.marker_combo, 1, 1, 1, 2)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.connect_button)
        row.addWidget(self.disconnect_button)
        row.addStretch(1)
        streams.addLayout(row, 2, 1, 1, 2)
        streams.setColumnStretch(1, 1)
        return streams

    def _model_box(self, pick_file: Callable[[QtWidgets.QLineEdit, bool], None]) -> QtWidgets.QGridLayout:
        self.checkpoint_edit = QtWidgets.QLineEdit()
        self.features_edit = QtWidgets.QLineEdit()
        self.whitening_edit = QtWidgets.QLineEdit()
        self.image_dir_edit = QtWidgets.QLineEdit()
        self.checkpoint_edit.setPlaceholderText("trained checkpoint (.safetensors or run folder)")
        self.features_edit.setPlaceholderText("feature cache (default: the checkpoint's)")
        self.whitening_edit.setPlaceholderText("mvnn.npz (default: the training subject's)")
        self.image_dir_edit.setPlaceholderText("stimulus images, for thumbnails (optional)")
        self.templates_combo = QtWidgets.QComboBox()
        self.templates_combo.addItems(["image", "text", "fused"])
        self.templates_combo.setToolTip("what the EEG embedding is matched against")
        self.image_source_combo = QtWidgets.QComboBox()
        self.image_source_combo.addItems(["test-images", "centers"])
        self.image_source_combo.setToolTip("image templates: the test images, or concept centres")
        model = QtWidgets.QGridLayout()
        model.addWidget(QtWidgets.QLabel("Checkpoint"), 0, 0)
        model.addWidget(_path_row(self.checkpoint_edit, lambda: pick_file(self.checkpoint_edit, False)), 0, 1, 1, 3)
        model.addWidget(QtWidgets.QLabel("Features"), 1, 0)
        model.addWidget(_path_row(self.features_edit, lambda: pick_file(self.features_edit, True)), 1, 1)
        model.addWidget(QtWidgets.QLabel("Whitening"), 1, 2)
        model.addWidget(_path_row(self.whitening_edit, lambda: pick_file(self.whitening_edit, False)), 1, 3)
        model.addWidget(QtWidgets.QLabel("Images"), 2, 0)
        model.addWidget(_path_row(self.image_dir_edit, lambda: pick_file(self.image_dir_edit, True)), 2, 1)
        model.addWidget(QtWidgets.QLabel("Templates"), 2, 2)
        tmpl = QtWidgets.QHBoxLayout()
        tmpl.addWidget(self.templates_combo)
        tmpl.addWidget(self.image_source_combo)
        tmpl.addStretch(1)
        model.addLayout(tmpl, 2, 3)
        model.setColumnStretch(1, 1)
        model.setColumnStretch(3, 1)
        return model

    def _session_box(self) -> QtWidgets.QGridLayout:
        self.demo_button = QtWidgets.QPushButton("▶ Start demo")
        self.demo_button.setToolTip("replay the simulated subject's test session and decode it with the demo model")
        self.demo_button.setStyleSheet(_PRIMARY)
        self.replay_button = QtWidgets.QPushButton("Replay recording…")
        self.replay_button.setToolTip("stream a recording (FIF, BrainVision, EDF, XDF, ThingsEEG2 .npy) over LSL")
        self.stop_replay_button = QtWidgets.QPushButton("Stop replay")
        self.replay_speed_spin = QtWidgets.QDoubleSpinBox()
        self.replay_speed_spin.setRange(0.1, 100.0)
        self.replay_speed_spin.setDecimals(1)
        self.replay_speed_spin.setSuffix(" ×")
        self.replay_speed_spin.setToolTip("replay speed (1 = real time)")
        self.record_button = QtWidgets.QPushButton("● Record")
        self.record_button.setToolTip("write raw EEG + markers + predictions to the recordings folder")
        session = QtWidgets.QGridLayout()
        session.addWidget(self.demo_button, 0, 0)
        session.addWidget(self.replay_button, 0, 1)
        session.addWidget(QtWidgets.QLabel("speed"), 1, 0, alignment=QtCore.Qt.AlignmentFlag.AlignRight)
        session.addWidget(self.replay_speed_spin, 1, 1)
        session.addWidget(self.record_button, 2, 0)
        session.addWidget(self.stop_replay_button, 2, 1)
        return session

    def pick_path(self, edit: QtWidgets.QLineEdit, directory: bool) -> None:  # pragma: no cover - dialogs
        """Let the user choose a file (or a folder) for ``edit``."""
        start = edit.text() or str(Path.cwd())
        if directory:
            path = QtWidgets.QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        else:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Choose a file", start)
        if path:
            set_path_text(edit, path)

    def eeg_stream(self) -> str:
        """The chosen (or typed) EEG stream name."""
        return str(self.eeg_combo.currentData() or self.eeg_combo.currentText()).strip()

    def marker_stream(self) -> str:
        """The chosen (or typed) marker stream name."""
        return str(self.marker_combo.currentData() or self.marker_combo.currentText()).strip()

    def set_streams(self, streams: Sequence[StreamEntry]) -> None:
        """Fill the stream combos (EEG-like and marker-like), keeping the typed/selected names."""
        eeg, markers = split_streams(streams)
        for combo, entries, keep in (
            (self.eeg_combo, eeg, self.eeg_stream()),
            (self.marker_combo, markers, self.marker_stream()),
        ):
            combo.blockSignals(True)
            combo.clear()
            for e in entries:
                combo.addItem(e.label(), e.name)
            idx = combo.findData(keep)
            if idx >= 0:
                combo.setCurrentIndex(idx)
            else:
                combo.setEditText(keep)
            combo.blockSignals(False)

    def set_notice(self, html: str, kind: str = "ready", tooltip: str = "") -> None:
        """Show the demo notice (``kind`` "ready" blue, "missing" yellow); ``""`` hides it."""
        self.notice.setText(html)
        self.notice.setToolTip(tooltip)
        self.notice.setStyleSheet(_NOTICE_STYLE.get(kind, _NOTICE_STYLE["ready"]))
        self.notice.setVisible(bool(html))


def _path_row(edit: QtWidgets.QLineEdit, pick: Callable[[], None]) -> QtWidgets.QWidget:
    w = QtWidgets.QWidget()
    lay = QtWidgets.QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(2)
    lay.addWidget(edit, 1)
    b = QtWidgets.QToolButton()
    b.setText("…")
    b.setToolTip("choose")
    b.clicked.connect(pick)
    lay.addWidget(b)
    edit.textChanged.connect(lambda text: edit.setToolTip(text))
    return w
