"""``python -m gui.replay_child ARGS``: ``hmavd-replay ARGS`` that exits when the window's process dies.

The window starts its replays through this module. On Linux it first asks the kernel to send it
SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``, even when the parent is SIGKILLed), so
a crashed window never leaves a replay streaming; it is set here, after exec, because a
``preexec_fn`` is unsafe in the threaded parent. ``HMAVD_PARENT_PID`` (set by the parent) covers a
parent that died before the call.
"""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> bool:
    """Arrange SIGTERM on the parent's death; False when the parent is already gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    expected = os.environ.get("HMAVD_PARENT_PID", "")
    return not expected.isdigit() or os.getppid() == int(expected)


def main() -> int:
    if not _die_with_parent():
        return 0
    from bci.cli_replay import main as replay_main

    return int(replay_main(sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
