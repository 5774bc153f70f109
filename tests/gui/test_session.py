"""The window's live session without Qt: engine/replay lifecycle and message dispatch with fake engines."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from gui_fakes import (
    FakeEngine,
    FakeReplay,
    accumulated_run,
    connected_msg,
    prediction_msg,
    scope_msg,
    status_msg,
)

from bci.live_config import LiveConfig
from gui.session import LiveSession
from gui.settings import LiveSettings
from gui.streams import StreamEntry


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def session(tmp_path, clock):
    FakeEngine.instances.clear()
    FakeReplay.instances.clear()
    settings = LiveSettings(
        data_dir=str(tmp_path / "sim"),
        runs_dir=str(tmp_path / "runs"),
        record_dir=str(tmp_path / "rec"),
        stream_units="uV",
    )
    s = LiveSession(
        settings,
        FakeEngine,
        frame_interval_s=0.04,
        replay_factory=FakeReplay,
        clock=clock,
        discover=lambda timeout_s: [StreamEntry("eeg-x", "EEG", 4, 1000.0), StreamEntry("mk", "Markers", 1, 0.0)],
    )
    yield s
    s.shutdown()


def _connect(session, **fields):
    values = session.config_values({"eeg_stream": "eeg-x", "checkpoint": "c.safetensors", **fields})
    assert session.connect(values), session.view.errors
    return FakeEngine.instances[-1]


def test_config_values_come_from_the_fields_and_the_settings(session):
    values = session.config_values({"eeg_stream": " eeg-x ", "templates": "text", "image_dir": "imgs"})
    assert values["eeg_stream"] == "eeg-x" and values["templates"] == "text" and "marker_stream" not in values
    assert "image_dir" not in values  # the window's thumbnails, not a LiveConfig field
    assert values["scope_interval_s"] == pytest.approx(0.02)  # twice per frame
    assert values["stream_units"] == "uV" and values["record_dir"] == session.settings.record_dir
    fields = {
        "eeg_stream": "eeg-x",
        "marker_stream": "mk",
        "checkpoint": "c",
        "features": "",
        "whitening": "",
        "templates": "fused",
        "image_source": "centers",
        "image_dir": "",
    }
    cfg = LiveConfig(**session.config_values(fields))  # every value is a LiveConfig field, valid as it is
    assert (cfg.templates, cfg.scope_interval_s, cfg.stream_units) == ("fused", 0.02, "uV")


def test_connect_refuses_missing_inputs_and_a_failing_engine(session):
    assert session.connect({"eeg_stream": "", "checkpoint": ""}) is False
    assert session.take_view().errors == [
        "eeg_stream and checkpoint: not set; choose them above (or press 'Start demo')"
    ]

    def broken(values):
        raise RuntimeError("checkpoint unreadable")

    session.engine_factory = broken
    assert session.connect({"eeg_stream": "x", "checkpoint": "c"}) is False and session.engine is None
    assert session.take_view().errors == ["cannot start the engine: checkpoint unreadable"]


def test_connect_dispatch_and_disconnect(session):
    eng = _connect(session)
    view = session.take_view()
    assert eng.started and view.cleared and view.dismiss_banner and view.controls
    assert view.state == "connecting to 'eeg-x' (loading the model) …" and "resolve_timeout_s" not in eng.values
    eng.queue += [
        {**connected_msg(), "notes": ["channels matched by alias/case: T3→T7"]},
        scope_msg(0.0, markers=[(0.05, "2"), (0.08, "x9")]),
        scope_msg(0.1),
        prediction_msg(true="dog"),
        prediction_msg(true="zebra"),
        status_msg(),
        {"type": "bogus"},
    ]
    view = session.tick()
    assert view.connected.ch_names == ["E0", "E1", "E2", "E3"] and view.connected.nominal_sfreq == 1000.0
    assert view.connected.concepts[:2] == ["dog", "cat"] and view.connected.model_ch_names == ["E0", "E1"]
    assert [c.t0_s for c in view.scope] == [0.0, 0.1] and view.scope[0].data.shape == (4, 10)
    assert view.scope[0].markers == [(0.05, "cat"), (0.08, "x9")]  # code 2 = the second concept, x9 as it is
    assert [e.true_concept for e in view.history] == ["dog", "zebra"]  # every row, oldest first
    assert view.prediction["true_concept"] == "zebra"  # only the newest one is drawn
    assert view.status["n_epochs"] == 12 and view.state is None  # the status line replaces "connected to …"
    assert session.n_predictions == 2 and session.n_status == 1 and session.history.accuracy.n == 2
    assert session.history.accuracy.n_top1 == 1 and session.history.n_concepts == 6
    assert view.errors == [] and view.curve is None  # accumulate=off: no curve
    eng.queue.append(connected_msg())  # a new connection starts from a clean history
    view = session.tick()
    assert view.cleared and not session.history.entries and view.state.startswith("connected to eeg-x: 4 ch @ 1000 Hz")
    session.disconnect()
    view = session.take_view()
    assert eng.stopped and session.engine is None and not session.connected_info
    assert (view.state, view.placeholder, view.controls) == ("disconnected", "disconnected", True)


def test_malformed_messages_become_errors_not_exceptions(session):
    eng = _connect(session)
    eng.queue += [
        connected_msg(),
        {"type": "error", "message": "marker stream 'mk' not found"},
        {"type": "scope", "data": "not an array"},
        {"type": "scope", "data": np.zeros(3)},
        {"type": "prediction"},
    ]
    view = session.tick()
    assert view.errors[0] == "marker stream 'mk' not found"
    assert view.errors[1].startswith("bad engine message 'scope': could not convert")
    assert view.errors[2] == "bad engine message 'scope': scope data must be (n_chans, n_times), got shape (3,)"
    assert len(view.errors) == 3 and session.engine is eng  # a prediction without fields is still a row
    assert session.n_predictions == 1 and view.history[0].predicted == "–"


def test_status_messages_carry_the_repetition_curve(session):
    eng = _connect(session)
    _, report = accumulated_run(n_reps=5)
    eng.queue += [connected_msg(), status_msg(accumulated=report)]
    view = session.tick()
    assert view.curve is session.curve and view.curve.k.tolist() == [1, 2, 5]
    assert view.curve.top1.tolist() == [p["top1"] for p in report["curve"]] and view.curve.max_reps == 5
    eng.queue.append(status_msg(accumulated=None))
    assert session.tick().curve is None and session.curve is not None  # the last curve stays


def test_recording_state_follows_the_engine_after_the_command(session, clock):
    session.toggle_recording()
    assert session.take_view().errors == ["record: not connected; connect to a stream first"]
    eng = _connect(session)
    session.toggle_recording()
    view = session.take_view()
    assert eng.sent[-1]["cmd"] == "record_start" and eng.sent[-1]["path"].startswith(session.settings.record_dir)
    assert view.infos == [f"recording to {eng.sent[-1]['path']}"] and session.recording
    eng.queue.append(status_msg(recording=False))  # sent before the engine saw the command: ignored
    session.tick()
    assert session.recording and session.record_wanted is not None
    eng.queue.append(status_msg(recording=True))
    session.tick()
    assert session.recording and session.record_wanted is None
    session.toggle_recording()
    assert eng.sent[-1] == {"cmd": "record_stop"} and not session.recording
    clock.t += 3.5  # the engine never confirmed: after 3 s its state wins
    eng.queue.append(status_msg(recording=True))
    session.tick()
    assert session.recording and session.record_wanted is None


def test_recording_without_a_record_dir_goes_under_recordings(session):
    session.settings.record_dir = ""  # LiveConfig's default: the engine's recordings/ folder
    eng = _connect(session)
    session.toggle_recording()
    assert eng.sent[-1]["cmd"] == "record_start" and eng.sent[-1]["path"].startswith("recordings/session-")


def test_a_dead_or_stopped_engine_is_reported_and_forgotten(session):
    eng = _connect(session)
    eng.queue.append(connected_msg())
    session.tick()
    eng.alive = False
    view = session.tick()
    assert session.engine is None and view.errors == ["the engine process exited; press Connect to restart it"]
    assert view.state == "engine stopped (Connect to start it again)" and view.placeholder == "engine stopped"
    eng = _connect(session)
    eng.queue.append({"type": "stopped"})
    assert session.tick().errors == [] and session.engine is None and eng.stopped

    def lost(max_items=1000):
        raise BrokenPipeError("pipe closed")

    eng = _connect(session)
    eng.poll = lost
    view = session.tick()
    assert view.errors == ["engine connection lost: pipe closed"] and session.engine is None


def test_a_silent_stream_is_reported_once_a_second(session, clock):
    eng = _connect(session)
    session.take_view()
    eng.queue += [connected_msg(), scope_msg(0.0)]
    assert session.tick().placeholder is None
    clock.t += 1.5
    assert session.tick().placeholder is None
    clock.t += 1.0
    assert session.tick().placeholder == "no EEG data from eeg-x for 2 s"
    assert session.tick().placeholder is None  # not repeated within the second
    clock.t += 1.0
    assert session.tick().placeholder == "no EEG data from eeg-x for 3 s"
    eng.queue.append(scope_msg(0.1))
    assert session.tick().placeholder == ""  # data again: the notice goes


def test_replay_start_exit_and_stop(session, tmp_path):
    assert session.start_replay(tmp_path / "nope.fif", 2.0) is None
    assert "does not exist" in session.take_view().errors[0]
    rec = tmp_path / "rec.fif"
    rec.write_bytes(b"")
    names = session.start_replay(rec, 2.0)
    replay = FakeReplay.instances[-1]
    view = session.take_view()
    assert names == view.streams == (replay.eeg_stream, replay.marker_stream) and names[0] != names[1]
    assert replay.running and replay.replay_speed == 2.0 and replay.loop
    assert "Replaying <b>rec.fif</b> at 2× (looping)" in view.notice.html and session.settings.last_recording == str(
        rec
    )
    second = session.start_replay(rec, 1.0)
    assert replay.stopped and second != names  # a new replay under new names
    FakeReplay.instances[-1].exit(1)
    view = session.tick()
    assert view.errors == ["replay exited (code 1): replay: file vanished"] and session.replay is None
    assert view.notice.kind == "missing"  # back to the demo notice


def test_demo_paths_fill_the_empty_fields_or_say_what_is_missing(session, tmp_path):
    assert session.check_demo() is False
    view = session.take_view()
    assert view.notice.kind == "missing" and "hmavd-demo --data" in view.notice.html and not view.default_paths
    assert view.placeholder == "not connected: choose the streams and a checkpoint, then Connect"
    assert session.start_demo() is None and "run `hmavd-demo" in session.take_view().errors[0]
    sim, runs = tmp_path / "sim", tmp_path / "runs"
    for path in (
        sim / "recordings" / "sub-01_test.fif",
        sim / "preprocessed_eeg" / "sub-01" / "mvnn.npz",
        sim / "features" / "clip" / "features.safetensors",
        runs / "hmavd" / "best.safetensors",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (sim / "image_set").mkdir()
    assert session.check_demo() is True
    view = session.take_view()
    assert view.default_paths == {
        "checkpoint": str(runs / "hmavd" / "best.safetensors"),
        "features": str(sim / "features" / "clip"),
        "whitening": str(sim / "preprocessed_eeg" / "sub-01" / "mvnn.npz"),
        "image_dir": str(sim / "image_set"),
    }
    assert view.notice.kind == "ready" and not view.set_paths
    assert session.start_demo() == sim / "recordings" / "sub-01_test.fif"
    assert session.take_view().set_paths["checkpoint"] == str(runs / "hmavd" / "best.safetensors")


def test_stream_discovery_runs_in_a_worker_and_reports_in_a_tick(session):
    session.refresh_streams()
    assert session.take_view().state == "looking for LSL streams …"
    deadline = time.monotonic() + 5.0
    view = session.tick()
    while view.found_streams is None and time.monotonic() < deadline:
        time.sleep(0.01)
        view = session.tick()
    assert [s.name for s in view.found_streams] == ["eeg-x", "mk"] and not session.discovering
    assert view.state == "1 EEG and 1 marker streams found (Refresh to look again)"

    def broken(timeout_s):
        raise OSError("no network")

    session.discover = broken
    session.refresh_streams()
    while session.discovering:
        time.sleep(0.01)
    assert session.tick().errors == ["stream discovery failed: no network"]


def test_the_session_imports_no_qt():
    code = "import sys, gui.session; print(sorted(m for m in sys.modules if m.startswith(('PyQt', 'pyqtgraph'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
