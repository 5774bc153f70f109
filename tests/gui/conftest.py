"""GUI test set-up: settings in a tmp location; Qt runs offscreen (see tests/conftest.py).

The bci tests' kit (``tests/bci/bci_testkit.py``: tiny model, feature cache, recording) is importable
here too, so ``live_kit`` builds on it instead of repeating it.
"""

import gc
import sys
from pathlib import Path

import pytest

_BCI_TESTS = str(Path(__file__).resolve().parents[1] / "bci")
if _BCI_TESTS not in sys.path:
    sys.path.insert(0, _BCI_TESTS)


@pytest.fixture(autouse=True)
def _tmp_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HMAVD_LIVE_SETTINGS", str(tmp_path / "live-settings.json"))
    yield
    # the test's widgets become garbage here, in the GUI thread, not whenever another thread triggers the
    # cyclic collector (Qt objects must be destroyed in the thread that owns them)
    gc.collect()
