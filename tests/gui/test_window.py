"""The main window against a fake engine that speaks bci.engine's message protocol."""

import json

import pytest
from gui_fakes import FakeEngine, accumulated_run, connected_msg, prediction_msg, scope_msg, status_msg

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
    assert not window.disconnect_button.isEnabled() and not window.record_button.isEnabled()
    assert not window.stop_replay_button.isEnabled() and window.connect_button.isEnabled()
    window.connect_button.click()
    eng = FakeEngine.instances[-1]
    assert eng.started and eng.values["eeg_stream"] == "eeg-x" and eng.values["templates"] == "image"
    assert "resolve_timeout_s" not in eng.values  # clicked()'s `checked` flag is not taken for a timeout
    assert not window.connect_button.isEnabled() and window.disconnect_button.isEnabled()
    eng.queue += [
        connected_msg(),
        scope_msg(0.0, markers=[(0.05, "2"), (0.08, "x9")]),
        prediction_msg(true="cat"),
        status_msg(),
    ]
    qtbot.waitUntil(lambda: window.topk.names()[0] == "dog", timeout=5000)
    assert window.topk.highlighted() == ["cat"]
    # marker code 2 is the second concept (the engine's rule); an unknown code stays as it is
    assert window.scope.curves and [m[1] for m in window.scope.visible_markers()] == ["cat", "x9"]
    assert "p50 5.0" in window.status.text() and "nominal 1000" in window.status.text()
    assert window.history.accuracy.n == 1 and window.history.table.rowCount() == 1 and window.n_frames >= 1
    window.record_button.click()
    assert eng.sent[-1]["cmd"] == "record_start" and eng.sent[-1]["path"].startswith(str(tmp_path / "rec"))
    assert "Stop recording" in window.record_button.text()
    eng.queue.append(status_msg(recording=False))  # sent before the engine saw the command: ignored
    qtbot.waitUntil(lambda: not eng.queue, timeout=5000)
    assert window.recording and "Stop recording" in window.record_button.text()
    eng.queue.append(status_msg(recording=True, n_epochs=13))
    qtbot.waitUntil(lambda: "epochs 13" in window.status.text(), timeout=5000)
    assert window.session.record_wanted is None and window.recording
    window.record_button.click()
    assert eng.sent[-1] == {"cmd": "record_stop"} and "Record" in window.record_button.text()
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

    window.session.engine_factory = broken
    assert window.connect_engine() is False and "checkpoint unreadable" in window.banner.messages[0]
    window.eeg_combo.setEditText("")
    assert window.connect_engine() is False and "eeg_stream" in window.banner.messages[0]


def test_stopped_message_and_missing_demo(window, qtbot, tmp_path):
    window.connect_engine()
    FakeEngine.instances[-1].queue.append({"type": "stopped"})
    qtbot.waitUntil(lambda: window.engine is None, timeout=2000)
    notice = window.demo_notice.text()
    assert window.demo_notice.isVisible() and f"hmavd-demo --data {tmp_path / 'sim'}" in notice
    assert "missing" in window.demo_notice.toolTip()
    assert window.start_demo() is False and "hmavd-demo" in window.banner.messages[0]
    assert window.start_replay(tmp_path / "nope.fif") is False and "does not exist" in window.banner.messages[0]


def test_set_streams_fills_combos(window):
    from gui.streams import StreamEntry

    window.set_streams([StreamEntry("eeg-x", "EEG", 64, 1000.0), StreamEntry("mk", "Markers", 1, 0.0)])
    assert window.eeg_combo.count() == 1 and window.eeg_stream() == "eeg-x"
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


def test_user_errors_in_controls_and_the_timer_are_shown_not_raised(window, qtbot):
    window.connect_engine()
    eng = FakeEngine.instances[-1]
    eng.queue += [connected_msg(), scope_msg(0.0)]
    qtbot.waitUntil(lambda: window.scope.shown == [0, 1, 2, 3], timeout=5000)
    window.scope.channel_edit.setText("E1,Nope")
    window.scope.channel_edit.editingFinished.emit()
    assert "Nope" in window.banner.messages[0] and window.scope.shown == [0, 1, 2, 3]

    def broken(force=False):
        raise RuntimeError("paint exploded")

    window.scope.redraw = broken
    ticks = window.n_ticks
    qtbot.waitUntil(lambda: any("paint exploded" in m for m in window.banner.messages), timeout=5000)
    qtbot.waitUntil(lambda: window.n_ticks > ticks + 3, timeout=5000)  # the timer keeps running
    assert sum("paint exploded" in m for m in window.banner.messages) == 1  # not repeated every frame


def test_a_silent_stream_is_reported_in_the_scope(window, qtbot):
    window.connect_engine()
    eng = FakeEngine.instances[-1]
    eng.queue += [connected_msg(), scope_msg(0.0)]
    qtbot.waitUntil(lambda: bool(window.connected_info), timeout=5000)
    assert not window.scope.placeholder.isVisible()
    qtbot.waitUntil(lambda: window.scope.placeholder.isVisible(), timeout=10_000)
    assert "no EEG data" in window.scope.placeholder.textItem.toPlainText()
    eng.queue.append(scope_msg(0.1))
    qtbot.waitUntil(lambda: not window.scope.placeholder.isVisible(), timeout=5000)


def test_window_shows_the_accumulated_top5_and_the_repetition_curve(window, qtbot):
    last, report = accumulated_run(n_reps=12, noise=3.0)  # a real RepetitionAccumulator's fields and report
    window.connect_engine()
    eng = FakeEngine.instances[-1]
    eng.queue += [connected_msg(), prediction_msg(true="dog", **last[0]), status_msg(accumulated=report)]
    qtbot.waitUntil(lambda: window.curve.curve is not None, timeout=5000)
    assert window.topk.names()[0] == "dog" and window.topk.accumulated_names() == [c for c, _ in last[0]["acc_topk"]]
    assert window.topk.acc_title.text().startswith("averaged over 12 repetitions")
    k, top1 = window.curve.points()["top1"]
    assert k.tolist() == [1, 2, 5, 10] and top1 == pytest.approx([100 * p["top1"] for p in report["curve"]])
    assert window.curve.points()["top5"][1] == pytest.approx([100 * p["top5"] for p in report["curve"]])
    assert window.curve.chance_lines[0].value() == pytest.approx(100 / 6)  # six concepts connected
    assert window.curve.isVisible() and "k=10" in window.curve.summary.text()
    eng.queue.append(connected_msg(concepts=("a", "b")))  # a new connection starts an empty curve
    qtbot.waitUntil(lambda: window.curve.curve is None, timeout=5000)
    assert window.curve.points()["top1"][0].size == 0 and window.curve.chance_lines[0].value() == pytest.approx(50)
    assert window.topk.accumulated_names() == ["–"] * 5 and not window.topk.acc_title.isVisible()
