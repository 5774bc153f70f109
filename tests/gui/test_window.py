"""The main window against a fake engine that speaks bci.engine's message protocol."""

import json

import pytest
from gui_fakes import FakeEngine, connected_msg, prediction_msg, scope_msg, status_msg

from gui.main_window import MainWindow
from gui.settings import LiveSettings


@pytest.fixture
def window(qtbot, tmp_path):
    FakeEngine.instances.clear()
    settings = LiveSettings(
        eeg_stream="eeg-x",
        checkpoint=str(tmp_path / "ckpt.safetensors"),
        data_dir=str(tmp_path / "sim"),
        runs_dir=str(tmp_path / "runs"),
        record_dir=str(tmp_path / "rec"),
    )
    win = MainWindow(settings, settings_path=tmp_path / "s.json", engine_factory=FakeEngine, auto_discover=False)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.shutdown()


def test_connect_feed_messages_and_disconnect(window, qtbot, tmp_path):
    assert window.connect_engine() is True
    eng = FakeEngine.instances[-1]
    assert eng.started and eng.values["eeg_stream"] == "eeg-x" and eng.values["templates"] == "image"
    assert not window.connect_button.isEnabled() and window.disconnect_button.isEnabled()
    eng.queue += [connected_msg(), scope_msg(0.0, markers=[(0.05, "cat")]), prediction_msg(true="cat"), status_msg()]
    qtbot.waitUntil(lambda: window.topk.names()[0] == "dog", timeout=2000)
    assert window.topk.highlighted() == ["cat"]
    assert window.scope.curves and window.scope.visible_markers()[0][1] == "cat"
    assert "p50 5.0" in window.status.text() and "nominal 1000" in window.status.text()
    assert window.history.accuracy.n == 1 and window.n_frames >= 1
    window.record_button.click()
    assert eng.sent[-1]["cmd"] == "record_start" and eng.sent[-1]["path"].startswith(str(tmp_path / "rec"))
    assert window.record_button.text() == "Stop recording"
    window.record_button.click()
    assert eng.sent[-1] == {"cmd": "record_stop"}
    window.disconnect_button.click()
    assert eng.stopped and window.engine is None and window.connect_button.isEnabled()
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["eeg_stream"] == "eeg-x"  # settings remembered


def test_errors_are_shown_not_raised(window, qtbot):
    window.connect_engine()
    eng = FakeEngine.instances[-1]
    eng.queue += [
        connected_msg(),
        {"type": "error", "message": "marker stream 'mk' not found"},
        {"type": "bogus"},
        {"type": "scope", "data": "not an array"},
    ]  # malformed message
    qtbot.waitUntil(lambda: len(window.banner.messages) >= 2, timeout=2000)
    assert "marker stream 'mk' not found" in window.banner.messages[-1]
    assert "bad engine message 'scope'" in window.banner.messages[0]
    assert window.engine is eng  # still running
    eng.alive = False  # the engine process died
    qtbot.waitUntil(lambda: window.engine is None, timeout=2000)
    assert "exited" in window.banner.messages[0] and window.connect_button.isEnabled()


def test_engine_failing_to_start_and_missing_inputs(window, qtbot):
    def broken(values):
        raise RuntimeError("checkpoint unreadable")

    window.engine_factory = broken
    assert window.connect_engine() is False and "checkpoint unreadable" in window.banner.messages[0]
    window.eeg_combo.setEditText("")
    assert window.connect_engine() is False and "eeg_stream" in window.banner.messages[0]


def test_stopped_message_and_missing_demo(window, qtbot, tmp_path):
    window.connect_engine()
    FakeEngine.instances[-1].queue.append({"type": "stopped"})
    qtbot.waitUntil(lambda: window.engine is None, timeout=2000)
    assert "hmavd-demo" in window.demo_notice.text()
    assert window.start_demo() is False and "hmavd-demo" in window.banner.messages[0]
    assert window.start_replay(tmp_path / "nope.fif") is False and "does not exist" in window.banner.messages[0]


def test_set_streams_fills_combos(window):
    from gui.streams import StreamEntry

    window.set_streams([StreamEntry("eeg-x", "EEG", 64, 1000.0), StreamEntry("mk", "Markers", 1, 0.0)])
    assert window.eeg_combo.count() == 1 and window.eeg_name() == "eeg-x"
    assert window.marker_combo.count() == 1


def test_window_draws_at_most_the_frame_rate(window, qtbot):
    window.connect_engine()
    eng = FakeEngine.instances[-1]
    eng.queue.append(connected_msg())
    t = [0.0]

    def feed():  # the engine sends scope data far faster than the window draws
        for _ in range(20):
            eng.queue.append(scope_msg(t[0], n=1))
            t[0] += 0.01

    from PyQt6 import QtCore

    feeder = QtCore.QTimer()
    feeder.timeout.connect(feed)
    feeder.start(5)
    qtbot.wait(700)
    feeder.stop()
    assert window.n_frames >= 5 and window.measured_fps() <= 40.0
