"""The signal-quality panel, fed real ``bci.quality`` messages (offscreen), alone and in the window."""

import numpy as np
import pytest
from gui_fakes import FakeEngine, connected_msg

from bci.quality import assess
from gui.main_window import MainWindow
from gui.settings import LiveSettings
from gui.widgets.quality import STATE_COLOURS, QualityPanel

SFREQ = 250.0


def _message(names=("Fz", "Cz", "Pz", "O1", "O2"), seed=0):
    """Fz clean, Cz flat, Pz clipped, O1 with 50 Hz noise, O2 clean."""
    rng = np.random.default_rng(seed)
    n = 500
    t = np.arange(n) / SFREQ
    x = rng.standard_normal((len(names), n)) * 10e-6
    x[1] = 2e-4
    x[2] = np.clip(x[2] * 1.5, -12e-6, 12e-6)
    x[3] += 40e-6 * np.sin(2 * np.pi * 50 * t)
    return {"type": "quality", **assess(x, SFREQ, list(names)), "window_s": 2.0, "units_known": True}


def test_panel_colours_each_channel_and_summarises(qtbot):
    panel = QualityPanel(columns=4)
    qtbot.addWidget(panel)
    panel.show()
    assert panel.summary.text() == "no data yet" and not panel.cells
    panel.show_quality(_message())
    assert list(panel.cells) == ["Fz", "Cz", "Pz", "O1", "O2"]
    assert panel.states == {"Fz": "ok", "Cz": "flat", "Pz": "railed", "O1": "line", "O2": "ok"}
    assert STATE_COLOURS["railed"] in panel.cells["Pz"].styleSheet()
    assert "flat: Cz" in panel.summary.text() and "line 50 Hz: O1" in panel.summary.text()
    assert "RMS" in panel.cells["Fz"].toolTip() and "% of the 1–100 Hz power" in panel.cells["O1"].toolTip()
    assert panel._grid.getItemPosition(panel._grid.indexOf(panel.cells["O2"]))[:2] == (1, 0)  # 4 per row
    # the same channels: cells kept, only their states change; other channels: rebuilt
    cell = panel.cells["Cz"]
    clean = _message()
    clean["bad"] = {}
    panel.show_quality(clean)
    assert panel.cells["Cz"] is cell and set(panel.states.values()) == {"ok"}
    panel.show_quality(_message(names=("A", "B", "C", "D", "E")))
    assert list(panel.cells) == ["A", "B", "C", "D", "E"] and panel.states["B"] == "flat"
    panel.clear()
    assert not panel.cells and panel.summary.text() == "no data yet"


@pytest.fixture
def window(qtbot, tmp_path):
    FakeEngine.instances.clear()
    settings = LiveSettings(
        eeg_stream="eeg-x",
        checkpoint=str(tmp_path / "c.safetensors"),
        data_dir=str(tmp_path / "sim"),
        runs_dir=str(tmp_path / "runs"),
    )
    win = MainWindow(settings, settings_path=tmp_path / "s.json", engine_factory=FakeEngine, auto_discover=False)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.shutdown()


def test_window_routes_quality_messages_to_the_panel(window, qtbot):
    window.connect_button.click()
    eng = FakeEngine.instances[-1]
    eng.queue += [connected_msg(), _message()]
    qtbot.waitUntil(lambda: window.quality.states.get("Cz") == "flat", timeout=5000)
    assert window.quality.isVisible() and "flat: Cz" in window.quality.summary.text()
    eng.queue += [connected_msg()]  # a new connection starts from a clean panel
    qtbot.waitUntil(lambda: not window.quality.cells, timeout=5000)
