"""Create the Qt application and the ``hmavd-live`` window (the only place a ``QApplication`` is made)."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PyQt6 import QtCore, QtWidgets

from .main_window import MainWindow
from .settings import load_settings

__all__ = ["get_app", "create_window", "run_app"]

log = logging.getLogger(__name__)


def get_app(argv: Sequence[str] | None = None) -> QtWidgets.QApplication:
    """The running ``QApplication``, created once."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(list(argv or ["hmavd-live"]))
        app.setApplicationName("hmavd-live")
        app.setOrganizationName("hmavd")
    return app  # type: ignore[return-value]


def create_window(
    settings_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    **window_kwargs: Any,
) -> MainWindow:
    """Load the remembered settings, apply ``overrides`` (LiveSettings fields) and build the window."""
    get_app()
    settings = load_settings(settings_path)
    for key, value in (overrides or {}).items():
        if value not in (None, "") and hasattr(settings, key):
            setattr(settings, key, type(getattr(settings, key))(value))
    return MainWindow(settings, settings_path=settings_path, **window_kwargs)


def run_app(
    settings_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    start_demo: bool = False,
    replay: str | None = None,
) -> int:
    """Show the window and run the Qt event loop until it is closed; returns the exit code."""
    app = get_app()
    window = create_window(settings_path, overrides)
    window.show()
    if replay:
        QtCore.QTimer.singleShot(0, lambda: window.start_replay(replay))
    elif start_demo:
        QtCore.QTimer.singleShot(0, window.start_demo)
    # Ctrl-C or a kill in the terminal closes the window cleanly (stops the engine and the replay);
    # Python handles the signals between Qt events, hence the keep-alive timer.
    signal.signal(signal.SIGINT, lambda *_: window.close())
    signal.signal(signal.SIGTERM, lambda *_: window.close())
    previous_hook = sys.excepthook
    sys.excepthook = lambda *exc: _show_uncaught(window, *exc)  # PyQt6 would abort the process
    keepalive = QtCore.QTimer()
    keepalive.timeout.connect(lambda: None)
    keepalive.start(200)
    try:
        code = app.exec()
    finally:
        keepalive.stop()
        window.shutdown()
        sys.excepthook = previous_hook
    return int(code)


def _show_uncaught(window: MainWindow, etype: type[BaseException], value: BaseException, tb: Any) -> None:
    """Last resort for an exception that escaped a Qt callback: log it and show it in the window."""
    log.error("uncaught exception", exc_info=(etype, value, tb))
    try:
        window.show_error(f"internal error: {etype.__name__}: {value} (details in the log)")
    except Exception:  # noqa: BLE001 - the window itself is broken; the log has it
        pass
