"""``hmavd-live`` entry point: no Qt at import, window-mode arguments, --headless delegation."""

import subprocess
import sys

import pytest

from gui import cli


def test_cli_module_does_not_import_qt():
    code = "import sys, gui.cli; bad = [m for m in sys.modules if m.startswith(('PyQt6', 'pyqtgraph'))]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_help_and_bad_argument(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "--headless" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["--no-such-option"])
    assert exc.value.code == 2


def test_window_mode_passes_overrides(monkeypatch, tmp_path):
    import gui.app

    seen = {}

    def fake_run_app(settings_path, overrides, start_demo=False, replay=None):
        seen.update(settings_path=settings_path, overrides=overrides, start_demo=start_demo, replay=replay)
        return 0

    monkeypatch.setattr(gui.app, "run_app", fake_run_app)
    rc = cli.main(["--settings", str(tmp_path / "s.json"), "--eeg-stream", "amp", "--demo"])
    assert rc == 0 and seen["start_demo"] is True and seen["overrides"]["eeg_stream"] == "amp"
    assert seen["settings_path"] == str(tmp_path / "s.json")


def test_create_window_applies_overrides(qtbot, tmp_path):
    from gui.app import create_window

    win = create_window(tmp_path / "s.json", {"eeg_stream": "amp-1", "checkpoint": None}, auto_discover=False)
    qtbot.addWidget(win)
    assert win.eeg_stream() == "amp-1"
    win.shutdown()
    assert (tmp_path / "s.json").exists()


def test_headless_config_flags_yaml_and_overrides_resolve_in_that_order(tmp_path, capsys):
    """``hmavd-live --headless``: the packaged config, then ``--config``, the flags, and ``key=value`` last."""
    import yaml

    own = tmp_path / "my_live.yaml"
    own.write_text("eeg_stream: from-yaml\nmarker_stream: markers-yaml\ntop_k: 4\n")
    argv = ["--headless", "--config", str(own), "--eeg-stream", "from-flag", "--print-config", "top_k=2"]
    assert cli.main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["eeg_stream"] == "from-flag" and printed["marker_stream"] == "markers-yaml"
    assert printed["top_k"] == 2
    assert cli.main(["--headless", "--print-config", "--eeg-stream", "a", "eeg_stream=b"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["eeg_stream"] == "b"  # the override wins over the flag
    assert cli.main(["--headless", "--print-config", "top_kk=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "top_kk" in err[0], err
