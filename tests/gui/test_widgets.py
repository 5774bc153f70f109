"""Widgets driven by synthetic engine messages (pytest-qt, offscreen)."""

import numpy as np
import pytest
from gui_fakes import prediction_msg, status_msg

from gui.widgets import ErrorBanner, HistoryWidget, ScopeWidget, StatusPanel, TopKPanel


def test_scope_draws_new_data_markers_and_channel_selection(qtbot):
    scope = ScopeWidget(window_s=1.0, scale_uv=10.0)
    qtbot.addWidget(scope)
    assert scope.redraw() is False  # nothing connected yet
    scope.set_channels(["Oz", "O1", "O2", "Pz"], sfreq=100.0)
    assert len(scope.curves) == 4
    data = np.zeros((4, 50), np.float32)
    data[1] = 10e-6  # one slot (10 µV) above O1's baseline
    scope.append(data, t0_s=2.0, markers=[(2.2, "img 7")])
    assert scope.redraw() is True and scope.redraw() is False  # draws only when data changed
    x, y = scope.curves[1].getData()
    assert x[-1] == pytest.approx(2.49) and y[-1] == pytest.approx(2.0 + 1.0)  # offset 2 + 1 slot
    assert scope.visible_markers() == [(pytest.approx(2.2), "img 7")]
    scope.set_scale(20.0)  # halves the deflection, redraws at once
    assert scope.curves[1].getData()[1][-1] == pytest.approx(2.5)
    assert scope.select_channels("O2,Oz") == ["O2", "Oz"]
    assert len(scope.curves) == 2 and scope.redraw() is True
    assert scope.curves[0].getData()[1][-1] == pytest.approx(1.0)  # O2 (zeros) on top
    with pytest.raises(ValueError, match="not in the data"):
        scope.select_channels("Fz")
    scope.auto_scale()
    assert scope.scale_uv > 0


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
    assert panel.rows[1].bar.format() == "0.600"
    assert panel.rows[1].thumb.pixmap() is not None and not panel.rows[1].thumb.pixmap().isNull()
    assert panel.rows[0].thumb.pixmap().isNull()  # no image for "dog"
    panel.show_prediction(prediction_msg(true="zebra"))
    assert panel.highlighted() == [] and "not in top-5" in panel.truth.text()
    panel.show_prediction(prediction_msg(true=None, topk=(("boat", 0.4),)))
    assert panel.names()[:2] == ["boat", "–"] and panel.highlighted() == []


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


def test_status_panel_and_error_banner(qtbot):
    status = StatusPanel()
    qtbot.addWidget(status)
    status.nominal_sfreq = 1000.0
    status.show_status(status_msg(recording=True))
    text = status.text()
    assert "1000.2 Hz" in text and "p99 9.5" in text and "rejected 2 (flat 2)" in text and "REC" in text
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
