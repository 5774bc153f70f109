"""User-facing errors and the thin wrapper every console command runs under.

A :class:`UserError` carries one line that names the argument, the value and the fix.
Commands print it as ``<prog>: error: <message>`` and exit with status 2; no traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

__all__ = ["UserError", "run_command", "setup_logging"]


class UserError(Exception):
    """Bad input from the user: a one-line message naming argument, value and fix."""


def setup_logging(verbose: bool = False) -> None:
    """Configure root logging for a console command (INFO, or DEBUG when ``verbose``)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run_command(prog: str, body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Run a command body, turning :class:`UserError` into one line on stderr and exit code 2.

    Parameters
    ----------
    prog : str
        The command name used as prefix of the error line (e.g. ``"hmavd-train"``).
    body : callable
        ``body(argv) -> int``; the command's real work.
    argv : sequence of str or None
        Arguments (``None`` means ``sys.argv[1:]``).
    """
    try:
        return int(body(argv) or 0)
    except UserError as err:
        msg = str(err).replace("\n", " ")
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
