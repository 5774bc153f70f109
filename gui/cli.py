"""``hmavd-live``: the live decoding window, or ``--headless`` the same pipeline without one.

This module only dispatches: ``--headless`` command lines go to :func:`bci.headless.headless_main`, the
others open the window (:func:`gui.app.run_app`). Qt is imported only when the window is opened, so
``hmavd-live --headless`` runs without Qt.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hmavd.errors import UserError, run_command, setup_logging

__all__ = ["main", "build_gui_parser"]

_EPILOG = """\
With no arguments the window opens with the simulated subject's model and a 'Start demo' button that
replays its test session (create them once with `hmavd-demo`). Settings are remembered in
$XDG_CONFIG_HOME/hmavd/live.json (override with --settings or HMAVD_LIVE_SETTINGS).
`hmavd-live --headless --help` lists the options of the window-less pipeline."""


#: The window's flags that preselect a remembered setting (``gui.settings.LiveSettings``; dest = the field).
_WINDOW_FIELDS = ("eeg_stream", "marker_stream", "checkpoint", "features", "whitening", "data_dir", "runs_dir")


def build_gui_parser() -> argparse.ArgumentParser:
    """Arguments of the window mode."""
    p = argparse.ArgumentParser(
        prog="hmavd-live",
        description="Live EEG visual decoding: LSL streams -> HMAVD decoder -> top-5 concepts.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--headless", action="store_true", help="run without a window (see --headless --help)")
    p.add_argument("--settings", default=None, help="settings JSON file (default: user config dir)")
    p.add_argument("--demo", action="store_true", help="start the simulated subject's demo at once")
    p.add_argument("--replay", default=None, metavar="RECORDING", help="replay this recording and connect")
    p.add_argument("--eeg-stream", default=None, help="EEG LSL stream name to preselect")
    p.add_argument("--marker-stream", default=None, help="marker LSL stream name to preselect")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint (default: the demo model)")
    p.add_argument("--features", default=None, help="feature cache folder for the templates")
    p.add_argument("--whitening", default=None, help="mvnn.npz whitening matrices")
    p.add_argument("--data-dir", default=None, help="simulated subject's data dir (default hmavd_data/sim)")
    p.add_argument("--runs-dir", default=None, help="demo runs dir (default runs/demo)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _window(argv: list[str]) -> int:
    args = build_gui_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        from .app import run_app
    except ImportError as err:
        raise UserError(
            f"hmavd-live: the window needs PyQt6 and pyqtgraph ({err}); "
            "install them with `pip install hmavd[gui]` or run `hmavd-live --headless`"
        ) from None
    overrides = {name: getattr(args, name) for name in _WINDOW_FIELDS}
    return run_app(args.settings, overrides, start_demo=args.demo, replay=args.replay)


def _body(argv: Sequence[str] | None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--headless" in argv:  # the window-less pipeline lives in bci (no Qt)
        from bci.headless import headless_main

        return headless_main(argv)
    return _window(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hmavd-live``."""
    return run_command("hmavd-live", _body, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
