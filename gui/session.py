"""The live session behind the window, without Qt: engine and replay lifecycle, engine message dispatch.

:class:`LiveSession` owns the engine (:class:`bci.engine_process.EngineProcess`, made by an engine
factory), the ``hmavd-replay`` child process and the LSL discovery thread. User actions (connect,
disconnect, record, replay, demo) and the engine's messages (:mod:`bci.messages`) change its state and
collect in a :class:`gui.view.ViewUpdate`: plain data that :class:`gui.main_window.MainWindow` applies to its
widgets once per frame (the newest prediction, status and quality message; every scope chunk and
history row). No Qt here, so every rule — the connection state, the recording state's lag behind
the command, the silent-stream notice, a replay or engine that exits, the demo files — is unit-tested
with fake engines and no ``QApplication`` (``tests/gui/test_session.py``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bci import messages as bm
from bci.replay import unique_names

from .engine_link import EngineFactory, EngineLike, default_engine_factory, engine_alive
from .settings import LiveSettings, demo_paths
from .state import PredictionHistory, RepetitionCurve
from .streams import ReplayProcess, StreamEntry, discover_streams, split_streams
from .view import ConnectedView, Notice, ScopeChunk, ViewUpdate

__all__ = ["LiveSession", "MODEL_FIELDS", "REPLAY_RESOLVE_TIMEOUT_S"]

log = logging.getLogger(__name__)

#: The window's path fields the session may fill (simulated subject's defaults, the demo's files).
MODEL_FIELDS = ("checkpoint", "features", "whitening", "image_dir")
_SILENT_AFTER_S = 2.0  # no scope data for this long: say so in the scope
_RECORD_LAG_S = 3.0  # status messages contradicting a record command are ignored this long
#: How long the engine waits for a replay's streams (they appear once the child has loaded the file).
REPLAY_RESOLVE_TIMEOUT_S = 20.0


class LiveSession:
    """A live session's lifecycle and state, driven by the window (or a test) without Qt.

    Parameters
    ----------
    settings : LiveSettings
        Folders (``record_dir``, ``data_dir``, ``runs_dir``) and the amplifier settings; ``last_recording``
        is updated by :meth:`start_replay`.
    engine_factory : callable
        ``factory(live_config_values) -> EngineLike``; tests pass a fake.
    frame_interval_s : float
        The window's frame interval: the engine sends scope data twice per frame.
    discover : callable
        ``discover(timeout_s) -> list[StreamEntry]``, run in a worker thread.
    discover_timeout_s : float
    replay_factory : callable
        ``factory(recording, eeg_stream, marker_stream, replay_speed=, loop=)`` like :class:`ReplayProcess`.
    clock : callable
        Monotonic seconds (the silence and recording-lag rules).
    """

    def __init__(
        self,
        settings: LiveSettings,
        engine_factory: EngineFactory = default_engine_factory,
        frame_interval_s: float = 1 / 30,
        discover: Callable[[float], list[StreamEntry]] = discover_streams,
        discover_timeout_s: float = 1.0,
        replay_factory: Callable[..., ReplayProcess] = ReplayProcess,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.engine_factory = engine_factory
        self.frame_interval_s = float(frame_interval_s)
        self.discover, self.discover_timeout_s = discover, float(discover_timeout_s)
        self.replay_factory, self.clock = replay_factory, clock
        self.engine: EngineLike | None = None
        self.replay: ReplayProcess | None = None
        self.history = PredictionHistory()
        self.curve: RepetitionCurve | None = None
        self.n_predictions = self.n_status = 0
        self.scope_sfreq = 100.0  # Hz of the engine's decimated scope data
        self.view = ViewUpdate()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lsl-discover")
        self._discovery: concurrent.futures.Future[list[StreamEntry]] | None = None
        self._eeg_stream = ""
        self._reset()

    def _reset(self) -> None:
        """Forget the connection's state (not the counters, which a new engine resets)."""
        self.connected_info: dict[str, Any] = {}
        self.recording = False
        self.record_wanted: tuple[bool, float] | None = None  # (state asked for, when)
        self.last_scope_s = self.clock()
        self._silent_shown = -1
        self._marker_map: Any = None

    def take_view(self) -> ViewUpdate:
        """The changes collected since the last call (and a fresh, empty collection)."""
        view, self.view = self.view, ViewUpdate()
        return view

    def error(self, message: str) -> None:
        self.view.errors.append(message)

    # ------------------------------------------------------------------ streams
    @property
    def discovering(self) -> bool:
        return self._discovery is not None and not self._discovery.done()

    def refresh_streams(self) -> None:
        """Look for LSL streams in a worker thread; :meth:`tick` reports them when it is done."""
        if self.discovering:
            return
        if self.engine is None:
            self.view.state = "looking for LSL streams …"
        self._discovery = self._pool.submit(self.discover, self.discover_timeout_s)
        self.view.controls = True

    def _discovery_done(self) -> None:
        fut, self._discovery = self._discovery, None
        self.view.controls = True
        try:
            streams = fut.result() if fut is not None else []
        except Exception as err:  # noqa: BLE001 - shown to the user, never a crash
            self.error(f"stream discovery failed: {err}")
            return
        self.view.found_streams = list(streams)
        if self.engine is None:
            eeg, markers = split_streams(streams)
            self.view.state = f"{len(eeg)} EEG and {len(markers)} marker streams found (Refresh to look again)"

    # ------------------------------------------------------------------ engine
    def config_values(self, fields: Mapping[str, str]) -> dict[str, Any]:
        """The ``LiveConfig`` values of the window's fields (``eeg_stream``, ``marker_stream``, ``checkpoint``,
        ``features``, ``whitening``, ``templates``, ``image_source``; a missing one keeps ``LiveConfig``'s
        default) and the remembered settings."""
        keys = ("eeg_stream", "marker_stream", "checkpoint", "features", "whitening", "templates", "image_source")
        return {
            **{k: str(v).strip() for k, v in fields.items() if k in keys},
            "record_dir": self.settings.record_dir,
            "scope_sfreq": self.scope_sfreq,
            # scope data twice per frame, so every frame has new samples to draw (the engine's loop
            # only sends when an interval has passed, which rounds the rate down)
            "scope_interval_s": self.frame_interval_s / 2,
            **self.settings.amplifier_values(),  # stream_units, interpolate_missing, marker_map, marker_offset_s
        }

    def connect(self, values: Mapping[str, Any], resolve_timeout_s: float | None = None) -> bool:
        """Start a new engine with the ``LiveConfig`` ``values`` (stopping the running one)."""
        if self.engine is not None:
            self.disconnect()
        values = dict(values)
        missing = [k for k in ("eeg_stream", "checkpoint") if not values.get(k)]
        if missing:
            self.error(f"{' and '.join(missing)}: not set; choose them above (or press 'Start demo')")
            return False
        if resolve_timeout_s is not None:
            values["resolve_timeout_s"] = float(resolve_timeout_s)
        try:
            engine = self.engine_factory(values)
            engine.start()
        except Exception as err:  # noqa: BLE001 - a bad config must not crash the window
            self.error(f"cannot start the engine: {err}")
            return False
        self.engine, self._eeg_stream = engine, str(values["eeg_stream"])
        self._reset()
        self.n_predictions = self.n_status = 0
        self._clear_results(None)
        v = self.view
        v.dismiss_banner, v.controls = True, True
        v.state = f"connecting to {self._eeg_stream!r} (loading the model) …"
        v.placeholder = f"connecting to {self._eeg_stream} …"
        return True

    def _clear_results(self, n_concepts: int | None) -> None:
        self.history.reset(n_concepts)
        self.curve = None
        v = self.view
        v.cleared, v.history, v.prediction, v.curve = True, [], None, None

    def disconnect(self) -> None:
        """Stop the engine (if any) and forget the connection."""
        # before 'connected' the engine cannot read the stop command (it is loading or resolving)
        self._end_engine(5.0 if self.connected_info else 0.5, "disconnected", "disconnected")

    def _end_engine(self, timeout_s: float, state: str, placeholder: str, quiet: bool = False) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            try:
                engine.stop(timeout_s=timeout_s)
            except Exception as err:  # noqa: BLE001
                if quiet:
                    log.debug("engine stop failed", exc_info=True)
                else:
                    self.error(f"engine did not stop cleanly: {err}")
        self._reset()
        self.view.state, self.view.placeholder, self.view.controls = state, placeholder, True

    def toggle_recording(self) -> None:
        """Ask the engine to start (into a new ``record_dir`` folder) or stop recording."""
        if self.engine is None:
            self.error("record: not connected; connect to a stream first")
            return
        want = not self.recording
        if want:
            path = Path(self.settings.record_dir or "recordings") / time.strftime("session-%Y%m%d-%H%M%S")
            self.engine.send(dict(bm.record_start_command(str(path))))
            self.view.infos.append(f"recording to {path}")
        else:
            self.engine.send(dict(bm.record_stop_command()))
        self.recording = want
        self.record_wanted = (want, self.clock())  # status messages sent before the command lag
        self.view.controls = True

    # ------------------------------------------------------------------ replay / demo
    def start_replay(self, recording: str | Path, replay_speed: float, loop: bool = True) -> tuple[str, str] | None:
        """Replay ``recording`` with ``hmavd-replay`` under unique stream names; returns the names (or None)."""
        recording = Path(recording)
        if not recording.exists():
            self.error(f"replay: {recording} does not exist; choose an existing recording")
            return None
        self.stop_replay()
        eeg_stream, marker_stream = unique_names("hmavd-live")
        replay = self.replay_factory(recording, eeg_stream, marker_stream, replay_speed=replay_speed, loop=loop)
        try:
            replay.start()
        except OSError as err:
            self.error(f"replay: cannot start hmavd-replay ({err})")
            return None
        self.replay = replay
        self.settings.last_recording = str(recording)
        self.view.streams = (eeg_stream, marker_stream)
        self.view.notice = Notice(
            f"Replaying <b>{recording.name}</b> at {replay_speed:g}× ({'looping' if loop else 'once'}) as LSL "
            f"streams <code>{eeg_stream}</code> + <code>{marker_stream}</code>.",
            "ready",
            str(recording),
        )
        self.view.controls = True
        return eeg_stream, marker_stream

    def stop_replay(self) -> None:
        replay, self.replay = self.replay, None
        if replay is not None:
            replay.stop()
            self.check_demo()
        self.view.controls = True

    def check_demo(self) -> bool:
        """Offer the simulated subject's files for the empty path fields; explain how to create them if absent."""
        demo = demo_paths(self.settings.data_dir, self.settings.runs_dir)
        for name, value in (
            ("checkpoint", demo.checkpoint),
            ("features", demo.features),
            ("whitening", demo.whitening),
        ):
            if value is not None:
                self.view.default_paths[name] = str(value)
        image_set = Path(self.settings.data_dir) / "image_set"
        if image_set.is_dir():
            self.view.default_paths["image_dir"] = str(image_set)
        self.view.notice = Notice(*demo.notice())
        if self.engine is None:
            self.view.placeholder = (
                "press ▶ Start demo, or choose the streams and Connect"
                if demo.ready
                else "not connected: choose the streams and a checkpoint, then Connect"
            )
        return demo.ready

    def start_demo(self) -> Path | None:
        """The demo recording to replay, its model files set in the view; None (and why) when they are missing."""
        demo = demo_paths(self.settings.data_dir, self.settings.runs_dir)
        if not demo.ready:
            self.check_demo()
            self.error(f"demo: missing {'; '.join(demo.missing)}; run `{demo.create_command}` first")
            return None
        self.view.set_paths.update(
            checkpoint=str(demo.checkpoint), features=str(demo.features), whitening=str(demo.whitening)
        )
        return demo.recording

    # ------------------------------------------------------------------ messages
    def handle_message(self, msg: bm.EngineMessage | Mapping[str, Any]) -> None:
        """Apply one engine message to the session's state and the view; a malformed one becomes an error."""
        kind = msg.get("type")
        handler = getattr(self, f"_on_{kind}", None) if kind in bm.MESSAGE_TYPES else None
        if handler is None:
            log.debug("ignoring engine message %r", kind)
            return
        try:
            handler(msg)
        except Exception as err:  # noqa: BLE001 - a bad message must not stop the session
            log.exception("bad engine message")
            self.error(f"bad engine message {kind!r}: {err}")

    def marker_label(self, code: Any) -> str:
        """The engine labels scope markers (concept, mapped label, ``catch``, ``unknown N``); a bare
        number (an engine that sends codes) is mapped by the engine's code → concept rule."""
        text = str(code)
        if self._marker_map is None or not text.strip().isdigit():
            return text
        hit = self._marker_map.lookup(text)
        return str(hit[1]) if hit is not None and hit[1] else text

    def _on_scope(self, msg: bm.ScopeMessage) -> None:
        data = np.asarray(msg["data"], dtype=np.float32)  # (C, n)
        if data.ndim != 2:
            raise ValueError(f"scope data must be (n_chans, n_times), got shape {data.shape}")
        marks = [(float(t), self.marker_label(label)) for t, label in msg.get("markers") or ()]
        self.view.scope.append(ScopeChunk(data, float(msg.get("t0_s", 0.0)), marks, msg.get("sfreq")))
        self.last_scope_s = self.clock()

    def _on_prediction(self, msg: bm.PredictionMessage) -> None:
        self.n_predictions += 1
        self.view.history.append(self.history.add(msg))
        self.view.prediction = msg

    def _on_status(self, msg: bm.StatusMessage) -> None:
        self.n_status += 1
        self.view.status, self.view.state = msg, None  # the status line replaces an earlier state text
        rec, wanted = bool(msg.get("recording", self.recording)), self.record_wanted
        if wanted is None or rec == wanted[0] or self.clock() - wanted[1] > _RECORD_LAG_S:
            self.recording, self.record_wanted = rec, None
        curve = RepetitionCurve.from_report(msg.get("accumulated"))
        if curve is not None:
            self.curve = self.view.curve = curve
        self.view.controls = True

    def _on_quality(self, msg: bm.QualityMessage) -> None:
        self.view.quality = msg

    def _on_connected(self, msg: bm.ConnectedMessage) -> None:
        from bci.markers import MarkerMap

        self.connected_info = dict(msg)
        ch_names = list(msg.get("ch_names") or [f"ch{i}" for i in range(int(msg.get("n_chans", 0)))])
        concepts = list(msg.get("concepts") or [])
        self._marker_map = MarkerMap(concepts) if concepts else None
        self._clear_results(len(concepts) or None)
        sfreq = float(msg.get("sfreq") or 0)
        scope_sfreq = float(dict(msg).get("scope_sfreq") or self.scope_sfreq)  # engines that decimate differently
        self.view.connected = ConnectedView(
            ch_names, scope_sfreq, list(msg.get("model_ch_names") or ()), concepts, sfreq or None
        )
        self.view.state = (
            f"connected to {msg.get('stream', self._eeg_stream)}: {len(ch_names)} ch @ {sfreq:g} Hz, "
            f"{len(concepts)} concepts" + "".join(f"; {note}" for note in msg.get("notes") or ())
        )  # units, montage, interpolation
        self.last_scope_s = self.clock()
        self.view.dismiss_banner = True

    def _on_error(self, msg: bm.ErrorMessage) -> None:
        self.error(str(msg.get("message", "unknown engine error")))

    def _on_stopped(self, msg: Mapping[str, Any]) -> None:
        self._end_engine(1.0, "engine stopped (Connect to start it again)", "engine stopped", quiet=True)

    # ------------------------------------------------------------------ frames
    def poll(self) -> None:
        """Read the engine's messages; a dead engine process is reported and forgotten."""
        if self.engine is None:
            return
        for msg in self._drain():
            self.handle_message(msg)
        if self.engine is not None and not engine_alive(self.engine):
            for msg in self._drain():  # its last words (error, stopped)
                self.handle_message(msg)
            if self.engine is not None:
                self.error("the engine process exited; press Connect to restart it")
                self.handle_message(bm.stopped_message())

    def _drain(self) -> list[Mapping[str, Any]]:
        if self.engine is None:
            return []
        try:
            return list(self.engine.poll(max_items=1000))
        except Exception as err:  # noqa: BLE001 - a dead engine must not kill the GUI
            return [bm.error_message(f"engine connection lost: {err}"), bm.stopped_message()]

    def tick(self) -> ViewUpdate:
        """One frame: discovery results, engine messages, a replay that exited, a silent stream."""
        if self._discovery is not None and self._discovery.done():
            self._discovery_done()
        self.poll()
        if self.replay is not None and not self.replay.running:
            err = self.replay.error_output()
            self.error(f"replay exited (code {self.replay.returncode}){': ' + err if err else ''}")
            self.stop_replay()
        self._check_silence()
        return self.take_view()

    def _check_silence(self) -> None:
        if not self.connected_info or self.engine is None:
            return
        silent = int(self.clock() - self.last_scope_s)
        if silent >= _SILENT_AFTER_S and silent != self._silent_shown:
            self.view.placeholder = f"no EEG data from {self.connected_info.get('stream', '')} for {silent} s"
        elif silent < _SILENT_AFTER_S and self._silent_shown >= _SILENT_AFTER_S:
            self.view.placeholder = ""
        self._silent_shown = silent

    def shutdown(self) -> None:
        """Stop the engine, the replay and the discovery thread."""
        try:
            self.disconnect()
            self.stop_replay()
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
