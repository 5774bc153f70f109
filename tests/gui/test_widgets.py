"""Widgets driven by synthetic engine messages (pytest-qt, offscreen)."""

import numpy as np
import pytest
from gui_fakes import accumulated_run, prediction_msg, status_msg

from gui.widgets import ErrorBanner, HistoryWidget, RepetitionCurveWidget, ScopeWidget, StatusPanel, TopKPanel


def test_scope_draws_new_data_markers_and_channel_selection(qtbot):
    scope = ScopeWidget(window_s=1.0, scale_uv=10.0)
    qtbot.addWidget(scope)
    assert scope.redraw() is False  # nothing connected yet
    scope.set_channels(["Oz", "O1", "O2", "Pz", "sample_index"], sfreq=100.0, model_ch_names=["O1", "Oz"])
    assert scope.shown == [0, 1, 2, 3]  # the counter channel is not drawn at EEG scale
    data = np.zeros((5, 50), np.float32)
    data[1, 25:] = 20e-6  # a 20 µV step: ±10 µV (one slot) around the channel's mean
    data[4] = np.arange(50)
    scope.append(data, t0_s=2.0, markers=[(2.2, "img 7")])
    assert scope.redraw() is True and scope.redraw() is False  # draws only when data changed
    assert sum(len(c.getData()[0]) for c in scope.curves) == 4 * 100  # every shown channel, whole window
    x, y = scope.trace(1)  # O1, baseline 2 (four channels: offsets 3, 2, 1, 0)
    assert x[-1] == pytest.approx(0.0) and x[0] == pytest.approx(-0.99)
    assert np.isnan(y[:50]).all()  # before the first sample: nothing drawn
    assert y[50] == pytest.approx(1.0) and y[-1] == pytest.approx(3.0)
    assert scope.visible_markers() == [(pytest.approx(2.2), "img 7")]
    scope.set_scale(20.0)  # halves the deflection, redraws at once
    assert scope.trace(1)[1][-1] == pytest.approx(2.5)
    assert scope.select_channels("O2,Oz") == ["O2", "Oz"]
    assert scope.redraw() is True and scope.trace(0)[1][-1] == pytest.approx(1.0)  # O2 (flat) on top
    assert scope.select_channels("model") == ["O1", "Oz"]
    with pytest.raises(ValueError, match="not in the data"):
        scope.select_channels("Fz")
    with qtbot.waitSignal(scope.error, timeout=2000) as sig:  # typed in the field: a message, no exception
        scope.channel_edit.setText("Fz")
        scope.channel_edit.editingFinished.emit()
    assert "Fz" in sig.args[0] and scope.shown == [1, 0]
    scope.auto_scale()
    assert scope.scale_uv > 0


def test_scope_scrolls_out_old_markers_and_shows_gaps(qtbot):
    scope = ScopeWidget(window_s=1.0, scale_uv=10.0)
    qtbot.addWidget(scope)
    scope.set_channels(["Oz"], sfreq=100.0)
    scope.append(np.zeros((1, 50), np.float32), t0_s=0.0, markers=[(0.1, "a")])
    scope.append(np.zeros((1, 20), np.float32), t0_s=0.7, markers=[(0.8, "b")])  # 0.5 .. 0.7 s missing
    assert scope.redraw()
    y = scope.trace(0)[1]
    assert np.isnan(y[-40:-20]).all() and np.isfinite(y[-20:]).all()
    assert [m[1] for m in scope.visible_markers()] == ["a", "b"]
    scope.append(np.zeros((1, 60), np.float32), t0_s=0.9)
    assert scope.redraw() and [m[1] for m in scope.visible_markers()] == ["b"]


def test_topk_panel_shows_names_scores_and_highlights_truth(qtbot, tmp_path):
    from PyQt6 import QtGui

    from gui.state import ThumbnailIndex

    img = QtGui.QImage(8, 8, QtGui.QImage.Format.Format_RGB32)
    img.fill(QtGui.QColor("red"))
    (tmp_path / "cat").mkdir()
    assert img.save(str(tmp_path / "cat" / "cat_01.png"))
    panel = TopKPanel()
    qtbot.addWidget(panel)
    panel.set_thumbnails(ThumbnailIndex(tmp_path))
    panel.show_prediction(prediction_msg(true="cat"))
    assert panel.names() == ["dog", "cat", "car", "tree", "cup"]
    assert panel.highlighted() == ["cat"]
    assert panel.rows[0].bar.value() == 1000 and panel.rows[1].bar.value() == 750
    assert panel.rows[1].score.text() == "0.600" and "rank 2" in panel.truth.text()
    assert panel.rows[1].thumb.isVisibleTo(panel)
    assert panel.rows[1].thumb.pixmap() is not None and not panel.rows[1].thumb.pixmap().isNull()
    assert panel.rows[0].thumb.pixmap().isNull()  # no image for "dog"
    panel.show_prediction(prediction_msg(true="zebra"))
    assert panel.highlighted() == [] and "not in the top-5" in panel.truth.text()
    panel.show_prediction(prediction_msg(true=None, topk=(("boat", 0.4),)))
    assert panel.names()[:2] == ["boat", "–"] and panel.highlighted() == []
    panel.set_thumbnails(ThumbnailIndex(None))  # no images: no empty thumbnail boxes
    assert not panel.rows[0].thumb.isVisibleTo(panel)


def test_topk_panel_measures_last_sample_to_painted(qtbot):
    import time

    panel = TopKPanel()
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitExposed(panel)
    msg = prediction_msg(true="dog")
    msg["last_arrival_s"] = time.perf_counter() - 0.05  # the epoch's last sample arrived 50 ms ago
    panel.show_prediction(msg)
    qtbot.waitUntil(lambda: len(panel.draw_latencies_ms) == 1, timeout=5000)
    assert panel.draw_latencies_ms[0] >= 50.0
    plain = prediction_msg(true="dog")
    del plain["last_arrival_s"]
    panel.show_prediction(plain)  # no arrival time: nothing measured
    panel.repaint()
    assert len(panel.draw_latencies_ms) == 1


def test_history_running_accuracy(qtbot):
    hist = HistoryWidget(max_rows=2)
    qtbot.addWidget(hist)
    hist.reset(n_concepts=200)
    hist.add_prediction(prediction_msg(true="dog"))  # top-1 hit
    hist.add_prediction(prediction_msg(true="car"))  # top-5 hit
    hist.add_prediction(prediction_msg(true="zebra"))  # miss
    hist.add_prediction(prediction_msg(true=None))  # unknown truth: not counted
    assert hist.table.rowCount() == 2 and hist.accuracy.n == 3
    assert "top-1 33.3 %" in hist.summary.text() and "top-5 66.7 %" in hist.summary.text()
    assert hist.table.item(1, 4).text() == "✗"  # rows are newest first
    assert [e.true_concept for e in hist.history.entries] == [None, "zebra"]
    hist.history.reset(6)  # the session resets its history: the widget redraws from it
    hist.refresh()
    assert (
        hist.table.rowCount() == 0 and hist.accuracy.n == 0 and "markers carry no true concept" in hist.summary.text()
    )


def test_status_panel_and_error_banner(qtbot):
    status = StatusPanel()
    qtbot.addWidget(status)
    status.nominal_sfreq = 1000.0
    status.show_status(status_msg(recording=True, messages=["stream units uV converted to the model's V"]))
    text = status.text()
    assert "1000.2 Hz" in text and "p99 9.5" in text and "rejected 2 (flat 2)" in text and "REC" in text
    assert status.toolTip().endswith("flat: 2\n\nstream units uV converted to the model's V")
    banner = ErrorBanner(max_kept=2)
    qtbot.addWidget(banner)
    assert banner.isHidden()
    for i in range(3):
        banner.show_message(f"boom {i}")
    assert banner.messages == ["boom 2", "boom 1"] and "boom 2" in banner.text and not banner.isHidden()
    banner.show_message("just info", kind="info")
    assert banner.messages == ["boom 2", "boom 1"]
    banner.dismiss()
    assert banner.isHidden()


def test_topk_panel_shows_the_accumulated_top5_beside_the_single_trial(qtbot):
    last, _ = accumulated_run()  # a real RepetitionAccumulator's fields for the image "dog" after 5 repetitions
    acc = last[0]
    panel = TopKPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.show_prediction(prediction_msg(true="dog"))  # accumulation off: no second column
    assert not panel.acc_title.isVisible() and not panel.acc_rows[0].isVisible()
    panel.show_prediction(prediction_msg(true="dog", **acc))
    assert panel.names()[0] == "dog"  # the single trial's column is unchanged
    assert panel.accumulated_names() == [c for c, _ in acc["acc_topk"]]
    assert panel.acc_rows[0].score.text() == f"{acc['acc_topk'][0][1]:.3f}" and panel.acc_rows[0].bar.value() == 1000
    second = acc["acc_topk"][1][1] / acc["acc_topk"][0][1]
    assert panel.acc_rows[1].bar.value() == round(1000 * second)
    assert panel.accumulated_highlighted() == ["dog"] and panel.acc_rows[0].isVisible()
    assert panel.acc_title.text().startswith("averaged over 5 repetitions") and "✓ top-1" in panel.acc_title.text()
    assert not panel.acc_rows[0].thumb.isVisible()  # thumbnails only in the single-trial column
    miss = {**acc, "acc_topk": [("cup", 0.5), ("car", 0.4)], "acc_n": 1}
    panel.show_prediction(prediction_msg(true="dog", **miss))
    assert panel.accumulated_names() == ["cup", "car", "–", "–", "–"] and panel.accumulated_highlighted() == []
    assert (
        "averaged over 1 repetition " in panel.acc_title.text() + " " and "not in the top-5" in panel.acc_title.text()
    )
    panel.show_prediction(prediction_msg(true="dog"))
    assert not panel.acc_title.isVisible()


def test_repetition_curve_draws_the_accumulators_report(qtbot):
    from gui.state import RepetitionCurve

    _, report = accumulated_run(n_reps=12, noise=3.0)
    widget = RepetitionCurveWidget()
    qtbot.addWidget(widget)
    widget.reset(n_concepts=6)
    assert widget.points()["top1"][0].size == 0 and all(line.isVisible() for line in widget.chance_lines)
    assert [line.value() for line in widget.chance_lines] == pytest.approx([100 / 6, 500 / 6])
    status = status_msg(accumulated=report)
    assert widget.show_curve(RepetitionCurve.from_report(status["accumulated"])) is True
    points = widget.points()
    assert points["top1"][0].tolist() == [1, 2, 5, 10] == [p["k"] for p in report["curve"]]
    assert points["top1"][1] == pytest.approx([100 * p["top1"] for p in report["curve"]])
    assert points["top5"][1] == pytest.approx([100 * p["top5"] for p in report["curve"]])
    assert "k=10" in widget.summary.text() and "6 images" in widget.summary.text()
    assert widget.show_curve(RepetitionCurve.from_report(report)) is False  # the same points: nothing redrawn
    assert widget.show_curve(None) is False and widget.points()["top1"][0].size == 4
    widget.reset(None)
    assert widget.points()["top5"][0].size == 0 and not widget.chance_lines[0].isVisible()
