"""GUI test set-up: settings in a tmp location; Qt runs offscreen (see tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _tmp_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HMAVD_LIVE_SETTINGS", str(tmp_path / "live-settings.json"))
    yield
