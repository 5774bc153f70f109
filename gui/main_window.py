"""The ``hmavd-live`` main window: the widgets, and a timer that applies the live session's view at ≤ 30 fps.

Decoding never runs here: :class:`gui.session.LiveSession` (no Qt) drives the engine process, the replay
child and the stream discovery, and turns the engine's messages into a :class:`gui.view.ViewUpdate`
that a ``QTimer`` applies to the widgets at most ``fps`` times a second. Errors go to a banner in the
window, never to a crash or a modal dialog: every user action and the timer are guarded (PyQt6 aborts
the process on an exception that escapes a slot).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from PyQt6 import QtCore, QtWidgets

from .engine_link import EngineFactory, default_engine_factory
from .session import MODEL_FIELDS, REPLAY_RESOLVE_TIMEOUT_S, LiveSession
from .settings import LiveSettings, save_settings
from .state import ThumbnailIndex
from .streams import StreamEntry
from .view import ViewUpdate
from .widgets import ErrorBanner, HistoryWidget, RepetitionCurveWidget, ScopeWidget, StatusPanel, TopKPanel
from .widgets.controls import ControlPanel, set_path_text
from .widgets.quality import QualityPanel

__all__ = ["MainWindow", "guarded"]

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])


def guarded(method: _F) -> _F:
    """Turn an exception of a window action into a banner message (and a log entry), never a crash."""

    @functools.wraps(method)
    def wrapper(self: MainWindow, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - shown to the user
            log.exception("%s failed", method.__name__)
            self.show_error(f"{method.__name__.strip('_').replace('_', ' ')}: {type(err).__name__}: {err}")
            return None

    return wrapper  # type: ignore[return-value]


class MainWindow(QtWidgets.QMainWindow):
    """The live decoding window.

    Parameters
    ----------
    settings : LiveSettings
        Remembered settings (modified in place and saved on connect and close).
    settings_path : str or Path or None
        Where settings are saved (``None``: the default user config file).
    engine_factory : callable
        ``factory(live_config_values) -> EngineLike``; tests pass a fake.
    fps : float
        Maximum polling/drawing rate (frames per second).
    discover_timeout_s : float
        ``resolve_streams`` wait of the Refresh button.
    auto_discover : bool
        Look for streams when the window opens.
    """

    def __init__(
        self,
        settings: LiveSettings | None = None,
        settings_path: str | Path | None = None,
        engine_factory: EngineFactory = default_engine_factory,
        fps: float = 30.0,
        discover_timeout_s: float = 1.0,
        auto_discover: bool = True,
    ) -> None:
        super().__init__()
        self.setWindowTitle("hmavd-live — EEG visual decoding")
        self.settings = settings if settings is not None else LiveSettings()
        self.settings_path = settings_path
        self.frame_interval_s = 1.0 / float(fps)
        self.session = LiveSession(
            self.settings, engine_factory, self.frame_interval_s, discover_timeout_s=discover_timeout_s
        )
        self.n_frames = 0  # timer ticks that drew something
        self.n_ticks = 0
        self.draw_times_s: list[float] = []  # monotonic time of each drawn frame (last 300)
        self._last_tick_error = ("", 0.0)
        self._build()
        self._load_fields()
        self.timer = QtCore.QTimer(self)
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.setInterval(max(1, int(1000.0 / fps)))
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self._update_buttons()
        self.check_demo()
        if auto_discover:
            self.refresh_streams()

    # ------------------------------------------------------------------ the session's state
    engine = property(lambda self: self.session.engine, doc="The running engine, or None.")
    replay = property(lambda self: self.session.replay, doc="The running replay child, or None.")
    connected_info = property(lambda self: self.session.connected_info, doc="The last 'connected' message.")
    n_predictions = property(lambda self: self.session.n_predictions, doc="Predictions of this engine.")
    n_status = property(lambda self: self.session.n_status, doc="Status messages of this engine.")
    recording = property(lambda self: self.session.recording, doc="The engine records (as last known).")

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        s = self.settings
        c = self.controls = ControlPanel()
        self.eeg_combo, self.marker_combo, self.refresh_button = c.eeg_combo, c.marker_combo, c.refresh_button
        self.checkpoint_edit, self.features_edit = c.checkpoint_edit, c.features_edit
        self.whitening_edit, self.image_dir_edit = c.whitening_edit, c.image_dir_edit
        self.templates_combo, self.image_source_combo = c.templates_combo, c.image_source_combo
        self.connect_button, self.disconnect_button = c.connect_button, c.disconnect_button
        self.record_button, self.replay_button = c.record_button, c.replay_button
        self.stop_replay_button = c.stop_replay_button
        self.demo_button, self.replay_speed_spin, self.demo_notice = c.demo_button, c.replay_speed_spin, c.notice
        self.replay_speed_spin.setValue(s.replay_speed)
        for button, action in (
            (c.refresh_button, self.refresh_streams),
            (c.connect_button, self.connect_engine),
            (c.disconnect_button, self.disconnect_engine),
            (c.record_button, self.toggle_recording),
            (c.replay_button, self._pick_replay),
            (c.stop_replay_button, self.stop_replay),
            (c.demo_button, self.start_demo),
        ):
            # not the bare method: it would receive clicked()'s `checked` flag as its first argument
            button.clicked.connect(lambda _checked=False, act=action: act())

        self.banner = ErrorBanner()
        self.scope = ScopeWidget(window_s=s.scope_window_s, scale_uv=s.scope_scale_uv)
        if s.scope_channels:
            self.scope.channel_edit.setText(",".join(s.scope_channels))
        self.scope.error.connect(self.show_error)
        self.topk, self.curve = TopKPanel(), RepetitionCurveWidget()
        self.history, self.quality = HistoryWidget(self.session.history), QualityPanel()
        left, right = (
            QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical),
            QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical),
        )
        left.addWidget(self.scope)
        left.addWidget(self.curve)
        left.setSizes([520, 190])
        for widget in (self.topk, self.history, self.quality):
            right.addWidget(widget)
        right.setSizes([330, 250, 130])
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([900, 500])

        central = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(central)
        lay.setContentsMargins(8, 6, 8, 4)
        lay.addWidget(self.controls)
        lay.addWidget(self.banner)
        lay.addWidget(split, 1)
        self.setCentralWidget(central)
        self.status = StatusPanel()
        self.statusBar().addPermanentWidget(self.status, 1)
        self.resize(1400, 900)
        self._path_edits = dict(
            zip(MODEL_FIELDS, (c.checkpoint_edit, c.features_edit, c.whitening_edit, c.image_dir_edit))
        )

    def _load_fields(self) -> None:
        s = self.settings
        self.eeg_combo.setEditText(s.eeg_stream)
        self.marker_combo.setEditText(s.marker_stream)
        for name, edit in self._path_edits.items():
            set_path_text(edit, getattr(s, name))
        self.templates_combo.setCurrentText(s.templates)
        self.image_source_combo.setCurrentText(s.image_source)
        if s.geometry:
            try:
                self.restoreGeometry(QtCore.QByteArray.fromHex(s.geometry.encode()))
            except (TypeError, ValueError):  # pragma: no cover - corrupt value
                pass

    def fields(self) -> dict[str, str]:
        """The stream, model and template fields as typed (``LiveConfig`` names)."""
        paths = {name: edit.text().strip() for name, edit in self._path_edits.items()}
        return {
            "eeg_stream": self.eeg_stream(),
            "marker_stream": self.marker_stream(),
            **paths,
            "templates": self.templates_combo.currentText(),
            "image_source": self.image_source_combo.currentText(),
        }

    def save_settings(self) -> None:
        s = self.settings
        for name, value in self.fields().items():
            setattr(s, name, value)
        s.replay_speed = float(self.replay_speed_spin.value())
        s.scope_scale_uv = float(self.scope.scale_uv)
        text = self.scope.channel_edit.text().strip()
        s.scope_channels = [c.strip() for c in text.split(",") if c.strip()] if text and text != "all" else []
        s.geometry = bytes(self.saveGeometry().toHex()).decode()
        save_settings(self.settings, self.settings_path)

    @guarded
    def _pick_replay(self) -> None:  # pragma: no cover - dialogs
        start = self.settings.last_recording or str(Path(self.settings.data_dir) / "recordings")
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open a recording to replay", start, "Recordings (*.fif *.vhdr *.edf *.xdf *.npy);;All (*)"
        )
        if path:
            self.start_replay(path)

    # ------------------------------------------------------------------ actions
    def eeg_stream(self) -> str:
        return self.controls.eeg_stream()

    def marker_stream(self) -> str:
        return self.controls.marker_stream()

    @guarded
    def refresh_streams(self) -> None:
        """Look for LSL streams in a worker thread; the combos are filled when it returns."""
        self.session.refresh_streams()
        self.apply(self.session.take_view())

    def set_streams(self, streams: list[StreamEntry]) -> None:
        """Fill the stream combos (EEG-like and marker-like), keeping the typed/selected names."""
        self.controls.set_streams(streams)

    def live_config_values(self) -> dict[str, Any]:
        """The ``LiveConfig`` fields from the window's inputs."""
        return self.session.config_values(self.fields())

    @guarded
    def connect_engine(self, resolve_timeout_s: float | None = None) -> bool:
        """Start the engine process on the chosen streams and model; errors go to the banner."""
        ok = self.session.connect(self.live_config_values(), resolve_timeout_s)
        self.apply(self.session.take_view())
        if ok:
            self.save_settings()
        return ok

    @guarded
    def disconnect_engine(self) -> None:
        self.session.disconnect()
        self.apply(self.session.take_view())

    @guarded
    def toggle_recording(self) -> None:
        self.session.toggle_recording()
        self.apply(self.session.take_view())

    @guarded
    def start_replay(self, recording: str | Path, connect: bool = True, loop: bool = True) -> bool:
        """Replay ``recording`` with ``hmavd-replay`` under unique stream names, then connect to it."""
        streams = self.session.start_replay(recording, float(self.replay_speed_spin.value()), loop)
        self.apply(self.session.take_view())
        if streams is None:
            return False
        return bool(self.connect_engine(resolve_timeout_s=REPLAY_RESOLVE_TIMEOUT_S)) if connect else True

    @guarded
    def stop_replay(self) -> None:
        self.session.stop_replay()
        self.apply(self.session.take_view())

    def check_demo(self) -> bool:
        """Fill empty model fields with the simulated subject's files; explain how to create them if absent."""
        ready = self.session.check_demo()
        self.apply(self.session.take_view())
        return ready

    @guarded
    def start_demo(self) -> bool:
        """Replay the simulated subject's test session and decode it with the demo model."""
        recording = self.session.start_demo()
        self.apply(self.session.take_view())
        return recording is not None and bool(self.start_replay(recording))

    # ------------------------------------------------------------------ the view
    def show_error(self, message: str) -> None:
        log.warning("%s", message)
        self.banner.show_message(message, "error")

    def show_info(self, message: str) -> None:
        self.banner.show_message(message, "info")

    def apply(self, view: ViewUpdate) -> bool:
        """Apply the session's changes to the widgets; True when something was drawn."""
        if view.dismiss_banner:
            self.banner.dismiss()
        if view.cleared:  # the session's history restarted: redraw it whole, rows included
            self.topk.clear()
            self.history.refresh()
            self.curve.reset(self.session.history.n_concepts)
        if view.connected is not None:
            self._apply_connected(view)
        for chunk in view.scope:
            try:
                self.scope.append(chunk.data, chunk.t0_s, chunk.markers, chunk.sfreq)
            except Exception as err:  # noqa: BLE001 - a chunk that does not fit the channels
                self.show_error(f"bad engine message 'scope': {err}")
        for entry in () if view.cleared else view.history:
            self.history.add_row(entry)
        if view.status is not None:
            self.status.show_status(view.status, self.measured_fps() if self.draw_times_s else None)
        if view.quality is not None:
            self.quality.show_quality(view.quality)
        self._apply_fields(view)
        if view.state is not None:
            self.status.show_state(view.state)
        if view.placeholder is not None:
            self.scope.set_placeholder(view.placeholder)
        for text in view.infos:
            self.show_info(text)
        for text in view.errors:
            self.show_error(text)
        if view.controls:
            self._update_buttons()
        drew = self.curve.show_curve(view.curve)
        if view.prediction is not None:
            self.topk.show_prediction(view.prediction)
            drew = True
        return drew

    def _apply_connected(self, view: ViewUpdate) -> None:
        info = view.connected
        assert info is not None
        self.scope.set_channels(info.ch_names, info.scope_sfreq, info.model_ch_names)
        self.quality.clear()
        self.topk.clear(info.concepts)
        self.topk.set_thumbnails(ThumbnailIndex(self.image_dir_edit.text().strip() or None, info.concepts or None))
        self.status.nominal_sfreq = info.nominal_sfreq

    def _apply_fields(self, view: ViewUpdate) -> None:
        if view.found_streams is not None:
            self.set_streams(view.found_streams)
        if view.streams is not None:
            self.eeg_combo.setEditText(view.streams[0])
            self.marker_combo.setEditText(view.streams[1])
        for name, path in view.default_paths.items():
            if not self._path_edits[name].text().strip():
                set_path_text(self._path_edits[name], path)
        for name, path in view.set_paths.items():
            set_path_text(self._path_edits[name], path)
        if view.notice is not None:
            self.controls.set_notice(view.notice.html, view.notice.kind, view.notice.tooltip)

    def _update_buttons(self) -> None:
        on = self.engine is not None
        self.connect_button.setEnabled(not on)
        self.disconnect_button.setEnabled(on)
        self.record_button.setEnabled(on)
        self.record_button.setText("■ Stop recording" if self.recording else "● Record")
        self.stop_replay_button.setEnabled(self.replay is not None)
        self.refresh_button.setEnabled(not self.session.discovering)

    def _tick(self) -> None:
        self.n_ticks += 1
        try:
            drew = self.apply(self.session.tick())
            drew = self.scope.redraw() or drew
            if drew:
                self.n_frames += 1
                self.draw_times_s.append(time.monotonic())
                del self.draw_times_s[:-300]
        except Exception as err:  # noqa: BLE001 - the timer must keep running
            text, when = f"display update failed: {type(err).__name__}: {err}", time.monotonic()
            if text != self._last_tick_error[0] or when - self._last_tick_error[1] > 5.0:
                log.exception("display update failed")
                self.show_error(text)
            self._last_tick_error = (text, when)

    def measured_fps(self) -> float:
        """Frames drawn per second over the last (up to) 300 frames."""
        t = self.draw_times_s
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Stop the timer, the engine process, the replay and the discovery thread; save settings."""
        self.timer.stop()
        try:
            self.save_settings()
        finally:
            self.session.shutdown()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
