"""The window with a real engine process on a replayed LSL stream (real pylsl on loopback, offscreen Qt).

A small FIF recording (4 occipital/parietal channels + stim at 200 Hz, a marker every 200 ms) is
replayed by ``hmavd-replay`` in a child process under unique stream names; a tiny randomly
initialised HMAVD checkpoint decodes it with the ``gifford`` preset. The window must show
predictions, scroll the scope with marker ticks, and survive the replay stopping.
"""

from __future__ import annotations

import numpy as np
import pytest
from live_kit import CH_NAMES, make_checkpoint, make_recording
from live_kit import process_gone as _gone

from gui.main_window import MainWindow
from gui.settings import LiveSettings

pytestmark = [pytest.mark.lsl]


def test_window_decodes_a_replayed_stream_and_survives_it_stopping(qtbot, tmp_path):
    ckpt, features = make_checkpoint(tmp_path)
    rec = make_recording(tmp_path / "rec_raw.fif")
    settings = LiveSettings(
        checkpoint=str(ckpt),
        features=str(features),
        replay_speed=2.0,
        data_dir=str(tmp_path / "nosim"),
        runs_dir=str(tmp_path / "noruns"),
        record_dir=str(tmp_path / "recordings"),
    )
    win = MainWindow(settings, settings_path=tmp_path / "s.json", auto_discover=False)
    qtbot.addWidget(win)
    win.show()
    pids = []
    try:
        assert win.start_replay(rec), win.banner.messages
        pids += [win.replay._proc.pid, win.engine._proc.pid]
        qtbot.waitUntil(lambda: win.n_predictions >= 5 or win.engine is None or win.replay is None, timeout=90_000)
        assert win.n_predictions >= 5, win.banner.messages
        assert win.connected_info["ch_names"][:4] == CH_NAMES
        names = win.topk.names()
        assert names[0] != "–" and set(names) <= {f"thing{i + 1}" for i in range(6)}
        assert win.topk.highlighted() or "not in the top-5" in win.topk.truth.text()  # markers carry the truth
        assert win.history.accuracy.n >= 5
        # the scope scrolls: new draws with finite data, marker ticks labelled with the concepts
        draws = win.scope.n_draws
        qtbot.waitUntil(lambda: win.scope.n_draws >= draws + 3, timeout=10_000)
        assert np.isfinite(win.scope.trace(0)[1]).sum() > 10
        assert {label for _, label in win.scope.visible_markers()} & {f"thing{i + 1}" for i in range(6)}
        qtbot.waitUntil(lambda: "latency p50" in win.status.text(), timeout=10_000)

        # record start/stop: the engine writes raw EEG, markers and predictions into a session folder
        win.record_button.click()
        qtbot.waitUntil(lambda: "REC" in win.status.text(), timeout=10_000)
        n_rec = win.n_predictions
        qtbot.waitUntil(lambda: win.n_predictions >= n_rec + 3, timeout=30_000)
        win.record_button.click()
        qtbot.waitUntil(lambda: win.n_status > 0 and "REC" not in win.status.text(), timeout=10_000)
        (session,) = (tmp_path / "recordings").iterdir()
        assert (session / "session.xdf").stat().st_size > 0  # an XDF session (bci.recorder)
        assert len((session / "predictions.csv").read_text().splitlines()) >= 3

        # the stream stops: the window notices, keeps running and shows no crash ...
        win.stop_replay()
        assert _gone(pids[0])
        qtbot.waitUntil(
            lambda: "no EEG data" in win.scope.placeholder.textItem.toPlainText() and win.scope.placeholder.isVisible(),
            timeout=30_000,
        )
        assert win.isVisible() and not [m for m in win.banner.messages if "internal error" in m]
        # ... and decodes again when a new replay starts (a fresh engine on the new streams)
        assert win.start_replay(rec), win.banner.messages
        engine = win.engine
        pids += [win.replay._proc.pid, engine._proc.pid]
        assert _gone(pids[1])  # the first engine was stopped, not left behind
        qtbot.waitUntil(lambda: win.n_predictions >= 2 or win.engine is not engine, timeout=90_000)
        assert win.engine is engine and win.n_predictions >= 2, win.banner.messages
        win.disconnect_engine()
        assert win.engine is None and win.connect_button.isEnabled()
    finally:
        win.shutdown()
    # closing the window leaves no replay or engine process behind
    assert [pid for pid in pids if not _gone(pid)] == []
