"""The ``hmavd-live`` main window: drives the engine process and draws its messages at ≤ 30 fps.

Decoding never runs here: :class:`bci.engine_process.EngineProcess` (a separate process) does it and sends
plain-dict messages, which a ``QTimer`` polls (non-blocking) at most ``fps`` times a second. Stream
discovery runs in a worker thread; a replay is a child process (``hmavd-replay``). Errors go to a
banner in the window, never to a crash or a modal dialog: every user action and the timer are
guarded (PyQt6 aborts the process on an exception that escapes a slot).
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from PyQt6 import QtCore, QtWidgets

from .engine_link import EngineFactory, EngineLike, default_engine_factory, engine_alive
from .settings import LiveSettings, demo_paths, save_settings
from .state import ThumbnailIndex
from .streams import ReplayProcess, StreamEntry, discover_streams, split_streams, unique_stream_names
from .widgets import ErrorBanner, HistoryWidget, ScopeWidget, StatusPanel, TopKPanel
from .widgets.controls import ControlPanel, set_path_text
from .widgets.quality import QualityPanel

__all__ = ["MainWindow", "EngineLike", "default_engine_factory", "guarded"]

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])
_SILENT_AFTER_S = 2.0  # no scope data for this long: say so in the scope


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
        self.engine_factory = engine_factory
        self.discover_timeout_s = float(discover_timeout_s)
        self.engine: EngineLike | None = None
        self.replay: ReplayProcess | None = None
        self.connected_info: dict[str, Any] = {}
        self.n_predictions = 0
        self.n_status = 0  # status messages received from the engine
        self.n_frames = 0  # timer ticks that drew something
        self.n_ticks = 0
        self.draw_times_s: list[float] = []  # monotonic time of each drawn frame (last 300)
        self.recording = False
        self.scope_sfreq = 100.0  # Hz of the engine's decimated scope data
        self._record_wanted: tuple[bool, float] | None = None  # (state asked for, when)
        self._last_scope_s = 0.0
        self._silent_shown = -1
        self._marker_map: Any = None
        self._last_tick_error = ("", 0.0)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lsl-discover")
        self._discovery: concurrent.futures.Future[list[StreamEntry]] | None = None
        self._pending_prediction: dict[str, Any] | None = None
        self._build()
        self._load_fields()
        self.timer = QtCore.QTimer(self)
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.frame_interval_s = 1.0 / float(fps)
        self.timer.setInterval(max(1, int(1000.0 / fps)))
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self._update_buttons()
        self.check_demo()
        if auto_discover:
            self.refresh_streams()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        s = self.settings
        c = self.controls = ControlPanel(self._pick)
        self.eeg_combo, self.marker_combo, self.refresh_button = c.eeg_combo, c.marker_combo, c.refresh_button
        self.checkpoint_edit, self.features_edit = c.checkpoint_edit, c.features_edit
        self.whitening_edit, self.image_dir_edit = c.whitening_edit, c.image_dir_edit
        self.templates_combo, self.image_source_combo = c.templates_combo, c.image_source_combo
        self.connect_button, self.disconnect_button = c.connect_button, c.disconnect_button
        self.record_button, self.replay_button, self.stop_replay_button = (
            c.record_button,
            c.replay_button,
            c.stop_replay_button,
        )
        self.demo_button, self.speed_spin, self.demo_notice = c.demo_button, c.speed_spin, c.notice
        self.speed_spin.setValue(s.replay_speed)
        # lambdas: a bare method would receive clicked()'s `checked` flag as its first argument
        self.refresh_button.clicked.connect(lambda: self.refresh_streams())
        self.connect_button.clicked.connect(lambda: self.connect_engine())
        self.disconnect_button.clicked.connect(lambda: self.disconnect_engine())
        self.record_button.clicked.connect(lambda: self.toggle_recording())
        self.replay_button.clicked.connect(lambda: self._pick_replay())
        self.stop_replay_button.clicked.connect(lambda: self.stop_replay())
        self.demo_button.clicked.connect(lambda: self.start_demo())

        self.banner = ErrorBanner()
        self.scope = ScopeWidget(window_s=s.scope_window_s, scale_uv=s.scope_scale_uv)
        if s.scope_channels:
            self.scope.channel_edit.setText(",".join(s.scope_channels))
        self.scope.error.connect(self.show_error)
        self.topk = TopKPanel()
        self.history = HistoryWidget()
        right = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        right.addWidget(self.topk)
        right.addWidget(self.history)
        self.quality = QualityPanel()
        right.addWidget(self.quality)
        right.setSizes([330, 290, 140])
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(self.scope)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([930, 470])

        central = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(central)
        lay.setContentsMargins(8, 6, 8, 4)
        lay.addWidget(self.controls)
        lay.addWidget(self.banner)
        lay.addWidget(split, 1)
        self.setCentralWidget(central)
        self.status = StatusPanel()
        self.statusBar().addPermanentWidget(self.status, 1)
        self.resize(1400, 860)

    def _load_fields(self) -> None:
        s = self.settings
        self.eeg_combo.setEditText(s.eeg_stream)
        self.marker_combo.setEditText(s.marker_stream)
        for edit, value in (
            (self.checkpoint_edit, s.checkpoint),
            (self.features_edit, s.features),
            (self.whitening_edit, s.whitening),
            (self.image_dir_edit, s.image_dir),
        ):
            set_path_text(edit, value)
        self.templates_combo.setCurrentText(s.templates)
        self.image_source_combo.setCurrentText(s.image_source)
        if s.geometry:
            try:
                self.restoreGeometry(QtCore.QByteArray.fromHex(s.geometry.encode()))
            except (TypeError, ValueError):  # pragma: no cover - corrupt value
                pass

    def _store_fields(self) -> None:
        s = self.settings
        s.eeg_stream, s.marker_stream = self.eeg_name(), self.marker_name()
        s.checkpoint, s.features = self.checkpoint_edit.text().strip(), self.features_edit.text().strip()
        s.whitening, s.image_dir = self.whitening_edit.text().strip(), self.image_dir_edit.text().strip()
        s.templates, s.image_source = self.templates_combo.currentText(), self.image_source_combo.currentText()
        s.replay_speed = float(self.speed_spin.value())
        s.scope_scale_uv = float(self.scope.scale_uv)
        text = self.scope.channel_edit.text().strip()
        s.scope_channels = [c.strip() for c in text.split(",") if c.strip()] if text and text != "all" else []
        s.geometry = bytes(self.saveGeometry().toHex()).decode()

    def save_settings(self) -> None:
        self._store_fields()
        save_settings(self.settings, self.settings_path)

    @guarded
    def _pick(self, edit: QtWidgets.QLineEdit, directory: bool) -> None:  # pragma: no cover - dialogs
        start = edit.text() or str(Path.cwd())
        if directory:
            path = QtWidgets.QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        else:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Choose a file", start)
        if path:
            set_path_text(edit, path)

    @guarded
    def _pick_replay(self) -> None:  # pragma: no cover - dialogs
        start = self.settings.last_recording or str(Path(self.settings.data_dir) / "recordings")
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open a recording to replay", start, "Recordings (*.fif *.vhdr *.edf *.xdf *.npy);;All (*)"
        )
        if path:
            self.start_replay(path)

    # ------------------------------------------------------------------ streams
    def eeg_name(self) -> str:
        return str(self.eeg_combo.currentData() or self.eeg_combo.currentText()).strip()

    def marker_name(self) -> str:
        return str(self.marker_combo.currentData() or self.marker_combo.currentText()).strip()

    @guarded
    def refresh_streams(self) -> None:
        """Look for LSL streams in a worker thread; the combos are filled when it returns."""
        if self._discovery is not None and not self._discovery.done():
            return
        self.refresh_button.setEnabled(False)
        if self.engine is None:
            self.status.show_state("looking for LSL streams …")
        self._discovery = self._pool.submit(discover_streams, self.discover_timeout_s)

    def _discovery_done(self) -> None:
        fut, self._discovery = self._discovery, None
        self.refresh_button.setEnabled(True)
        try:
            streams = fut.result() if fut is not None else []
        except Exception as err:  # noqa: BLE001 - shown to the user, never a crash
            self.show_error(f"stream discovery failed: {err}")
            return
        self.set_streams(streams)

    def set_streams(self, streams: list[StreamEntry]) -> None:
        """Fill the stream combos (EEG-like and marker-like), keeping the typed/selected names."""
        eeg, markers = split_streams(streams)
        for combo, entries, keep in (
            (self.eeg_combo, eeg, self.eeg_name()),
            (self.marker_combo, markers, self.marker_name()),
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
        if self.engine is None:
            self.status.show_state(f"{len(eeg)} EEG and {len(markers)} marker streams found (Refresh to look again)")

    # ------------------------------------------------------------------ engine
    def live_config_values(self) -> dict[str, Any]:
        """The ``LiveConfig`` fields from the window's inputs."""
        return {
            "eeg_stream": self.eeg_name(),
            "marker_stream": self.marker_name(),
            "checkpoint": self.checkpoint_edit.text().strip(),
            "features": self.features_edit.text().strip(),
            "whitening": self.whitening_edit.text().strip(),
            "templates": self.templates_combo.currentText(),
            "image_source": self.image_source_combo.currentText(),
            "record_dir": self.settings.record_dir,
            "scope_sfreq": self.scope_sfreq,
            # scope data twice per frame, so every frame has new samples to draw (the engine's loop
            # only sends when an interval has passed, which rounds the rate down)
            "scope_interval_s": self.frame_interval_s / 2,
            **self.settings.amplifier_values(),  # stream_units, interpolate_missing, marker_map, marker_offset_s
        }

    @guarded
    def connect_engine(self, resolve_timeout_s: float | None = None) -> bool:
        """Start the engine process on the chosen streams and model; errors go to the banner."""
        if self.engine is not None:
            self.disconnect_engine()
        values = self.live_config_values()
        missing = [k for k in ("eeg_stream", "checkpoint") if not values[k]]
        if missing:
            self.show_error(f"{' and '.join(missing)}: not set; choose them above (or press 'Start demo')")
            return False
        if resolve_timeout_s is not None:
            values["resolve_timeout_s"] = float(resolve_timeout_s)
        try:
            engine = self.engine_factory(values)
            engine.start()
        except Exception as err:  # noqa: BLE001 - a bad config must not crash the window
            self.show_error(f"cannot start the engine: {err}")
            return False
        self.engine = engine
        self.connected_info = {}
        self.n_predictions = self.n_status = 0
        self._last_scope_s = time.monotonic()
        self.history.reset()
        self.topk.clear()
        self.banner.dismiss()
        self.status.show_state(f"connecting to {values['eeg_stream']!r} (loading the model) …")
        self.scope.set_placeholder(f"connecting to {values['eeg_stream']} …")
        self.save_settings()
        self._update_buttons()
        return True

    @guarded
    def disconnect_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            # before 'connected' the engine cannot read the stop command (it is loading or resolving)
            timeout = 5.0 if self.connected_info else 0.5
            try:
                engine.stop(timeout_s=timeout)
            except Exception as err:  # noqa: BLE001
                self.show_error(f"engine did not stop cleanly: {err}")
        self.recording = False
        self._record_wanted = None
        self.connected_info = {}
        self.status.show_state("disconnected")
        self.scope.set_placeholder("disconnected")
        self._update_buttons()

    @guarded
    def toggle_recording(self) -> None:
        if self.engine is None:
            self.show_error("record: not connected; connect to a stream first")
            return
        want = not self.recording
        if want:
            path = Path(self.settings.record_dir) / time.strftime("session-%Y%m%d-%H%M%S")
            self.engine.send({"cmd": "record_start", "path": str(path)})
            self.show_info(f"recording to {path}")
        else:
            self.engine.send({"cmd": "record_stop"})
        self.recording = want
        self._record_wanted = (want, time.monotonic())  # status messages sent before the command lag
        self._update_buttons()

    def _update_buttons(self) -> None:
        on = self.engine is not None
        self.connect_button.setEnabled(not on)
        self.disconnect_button.setEnabled(on)
        self.record_button.setEnabled(on)
        self.record_button.setText("■ Stop recording" if self.recording else "● Record")
        self.stop_replay_button.setEnabled(self.replay is not None)

    # ------------------------------------------------------------------ replay / demo
    @guarded
    def start_replay(self, recording: str | Path, connect: bool = True, loop: bool = True) -> bool:
        """Replay ``recording`` with ``hmavd-replay`` under unique stream names, then connect to it."""
        recording = Path(recording)
        if not recording.exists():
            self.show_error(f"replay: {recording} does not exist; choose an existing recording")
            return False
        self.stop_replay()
        eeg, markers = unique_stream_names()
        self.replay = ReplayProcess(recording, eeg, markers, speed=self.speed_spin.value(), loop=loop)
        try:
            self.replay.start()
        except OSError as err:
            self.replay = None
            self.show_error(f"replay: cannot start hmavd-replay ({err})")
            return False
        self.settings.last_recording = str(recording)
        self.eeg_combo.setEditText(eeg)
        self.marker_combo.setEditText(markers)
        self.controls.set_notice(
            f"Replaying <b>{recording.name}</b> at {self.speed_spin.value():g}× (looping) as LSL streams "
            f"<code>{eeg}</code> + <code>{markers}</code>.",
            "ready",
            str(recording),
        )
        self._update_buttons()
        return bool(self.connect_engine(resolve_timeout_s=20.0)) if connect else True

    @guarded
    def stop_replay(self) -> None:
        replay, self.replay = self.replay, None
        if replay is not None:
            replay.stop()
            self.check_demo()
        self._update_buttons()

    def check_demo(self) -> bool:
        """Fill empty model fields with the simulated subject's files; explain how to create them if absent."""
        demo = demo_paths(self.settings.data_dir, self.settings.runs_dir)
        for edit, value in (
            (self.checkpoint_edit, demo.checkpoint),
            (self.features_edit, demo.features),
            (self.whitening_edit, demo.whitening),
        ):
            if value is not None and not edit.text().strip():
                set_path_text(edit, str(value))
        if not self.image_dir_edit.text().strip() and (Path(self.settings.data_dir) / "image_set").is_dir():
            set_path_text(self.image_dir_edit, str(Path(self.settings.data_dir) / "image_set"))
        if demo.ready:
            self.controls.set_notice(
                "The simulated subject is ready: press <b>▶ Start demo</b> to replay its test session and "
                "decode it live with the demo model (or choose streams and a checkpoint, then Connect).",
                "ready",
                str(demo.recording),
            )
        else:
            where = Path.cwd() if not demo.data_dir.is_absolute() else demo.data_dir.parent
            self.controls.set_notice(
                f"<b>No simulated subject here yet.</b> Create it and its demo model once with "
                f"<code>{demo.create_command}</code> (run in {where}; a few minutes on a CPU), then press "
                "<b>▶ Start demo</b>. Or choose your own streams and checkpoint above.",
                "missing",
                "missing:\n" + "\n".join(demo.missing),
            )
        if self.engine is None:
            self.scope.set_placeholder(
                "press ▶ Start demo, or choose the streams and Connect"
                if demo.ready
                else "not connected: choose the streams and a checkpoint, then Connect"
            )
        return demo.ready

    @guarded
    def start_demo(self) -> bool:
        """Replay the simulated subject's test session and decode it with the demo model."""
        demo = demo_paths(self.settings.data_dir, self.settings.runs_dir)
        if not demo.ready:
            self.check_demo()
            self.show_error(f"demo: missing {'; '.join(demo.missing)}; run `{demo.create_command}` first")
            return False
        set_path_text(self.checkpoint_edit, str(demo.checkpoint))
        set_path_text(self.features_edit, str(demo.features))
        set_path_text(self.whitening_edit, str(demo.whitening))
        return bool(self.start_replay(demo.recording))

    # ------------------------------------------------------------------ messages
    def show_error(self, message: str) -> None:
        log.warning("%s", message)
        self.banner.show_message(message, "error")

    def show_info(self, message: str) -> None:
        self.banner.show_message(message, "info")

    def handle_message(self, msg: Mapping[str, Any]) -> None:
        """Apply one engine message to the widgets (drawing happens once per tick)."""
        kind = msg.get("type")
        if kind == "scope":
            marks = [(float(t), self._marker_label(label)) for t, label in msg.get("markers") or ()]
            self.scope.append(msg["data"], float(msg.get("t0_s", 0.0)), marks, msg.get("sfreq"))
            self._last_scope_s = time.monotonic()
        elif kind == "prediction":
            self.n_predictions += 1
            self.history.add_prediction(msg)
            self._pending_prediction = dict(msg)
        elif kind == "status":
            self.n_status += 1
            self.status.show_status(msg, self.measured_fps() if self.draw_times_s else None)
            rec, wanted = bool(msg.get("recording", self.recording)), self._record_wanted
            if wanted is None or rec == wanted[0] or time.monotonic() - wanted[1] > 3.0:
                self.recording, self._record_wanted = rec, None
            self._update_buttons()
        elif kind == "quality":
            self.quality.show_quality(msg)
        elif kind == "connected":
            self._on_connected(msg)
        elif kind == "error":
            self.show_error(str(msg.get("message", "unknown engine error")))
        elif kind == "stopped":
            engine, self.engine = self.engine, None
            if engine is not None:
                try:
                    engine.stop(timeout_s=1.0)
                except Exception:  # noqa: BLE001
                    log.debug("engine stop after 'stopped' failed", exc_info=True)
            self.recording = False
            self.connected_info = {}
            self.status.show_state("engine stopped (Connect to start it again)")
            self.scope.set_placeholder("engine stopped")
            self._update_buttons()
        else:
            log.debug("ignoring engine message %r", kind)

    def _marker_label(self, code: Any) -> str:
        """The engine labels scope markers (concept, mapped label, ``catch``, ``unknown N``); a bare
        number (an engine that sends codes) is mapped by the engine's code → concept rule."""
        text = str(code)
        if self._marker_map is None or not text.strip().isdigit():
            return text
        hit = self._marker_map.lookup(text)
        return str(hit[1]) if hit is not None and hit[1] else text

    def _on_connected(self, msg: Mapping[str, Any]) -> None:
        from bci.markers import MarkerMap

        self.connected_info = dict(msg)
        ch_names = list(msg.get("ch_names") or [f"ch{i}" for i in range(int(msg.get("n_chans", 0)))])
        scope_sfreq = float(msg.get("scope_sfreq") or self.scope_sfreq)
        self.scope.set_channels(ch_names, scope_sfreq, msg.get("model_ch_names") or ())
        concepts = list(msg.get("concepts") or [])
        self._marker_map = MarkerMap(concepts) if concepts else None
        self.history.reset(len(concepts) or None)
        self.quality.clear()
        self.topk.clear(concepts)
        self.topk.set_thumbnails(ThumbnailIndex(self.image_dir_edit.text().strip() or None, concepts or None))
        self.status.nominal_sfreq = float(msg.get("sfreq") or 0) or None
        self.status.show_state(
            f"connected to {msg.get('stream', self.eeg_name())}: {len(ch_names)} ch @ "
            f"{float(msg.get('sfreq') or 0):g} Hz, {len(concepts)} concepts"
            + "".join(f"; {note}" for note in msg.get("notes") or ())  # units, montage, interpolation
        )
        self._last_scope_s = time.monotonic()
        self.banner.dismiss()

    def _poll_engine(self) -> None:
        if self.engine is None:
            return
        try:
            msgs = self.engine.poll(max_items=1000)
        except Exception as err:  # noqa: BLE001 - a dead engine must not kill the GUI
            msgs = [{"type": "error", "message": f"engine connection lost: {err}"}, {"type": "stopped"}]
        for msg in msgs:
            try:
                self.handle_message(msg)
            except Exception as err:  # noqa: BLE001
                log.exception("bad engine message")
                self.show_error(f"bad engine message {msg.get('type')!r}: {err}")
        if self.engine is not None and not engine_alive(self.engine):
            for msg in self.engine.poll(max_items=1000):  # its last words (error, stopped)
                self.handle_message(msg)
            if self.engine is not None:
                self.show_error("the engine process exited; press Connect to restart it")
                self.handle_message({"type": "stopped"})

    def _tick(self) -> None:
        self.n_ticks += 1
        try:
            self._tick_body()
        except Exception as err:  # noqa: BLE001 - the timer must keep running
            text, when = f"display update failed: {type(err).__name__}: {err}", time.monotonic()
            if text != self._last_tick_error[0] or when - self._last_tick_error[1] > 5.0:
                log.exception("display update failed")
                self.show_error(text)
            self._last_tick_error = (text, when)

    def _tick_body(self) -> None:
        if self._discovery is not None and self._discovery.done():
            self._discovery_done()
        self._poll_engine()
        if self.replay is not None and not self.replay.running:
            err = self.replay.error_output()
            self.show_error(f"replay exited (code {self.replay.returncode}){': ' + err if err else ''}")
            self.stop_replay()
        if self.connected_info and self.engine is not None:
            silent = int(time.monotonic() - self._last_scope_s)
            if silent >= _SILENT_AFTER_S and silent != self._silent_shown:
                self.scope.set_placeholder(f"no EEG data from {self.connected_info.get('stream', '')} for {silent} s")
            elif silent < _SILENT_AFTER_S and self._silent_shown >= _SILENT_AFTER_S:
                self.scope.set_placeholder("")
            self._silent_shown = silent
        drew = False
        if self._pending_prediction is not None:
            self.topk.show_prediction(self._pending_prediction)
            self._pending_prediction = None
            drew = True
        drew = self.scope.redraw() or drew
        if drew:
            self.n_frames += 1
            self.draw_times_s.append(time.monotonic())
            del self.draw_times_s[:-300]

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
            self.disconnect_engine()
            self.stop_replay()
            self._pool.shutdown(wait=False, cancel_futures=True)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
