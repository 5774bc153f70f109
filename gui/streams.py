"""LSL stream discovery and the ``hmavd-replay`` subprocess the window launches (no Qt).

Discovery runs ``pylsl.resolve_streams`` with a short timeout; the window calls it from a worker
thread so the GUI never blocks. A replay is started as a separate process (``hmavd-replay``) with
unique stream names, so the window can connect to exactly that replay's streams.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["StreamEntry", "discover_streams", "split_streams", "ReplayProcess"]

log = logging.getLogger(__name__)

_MARKER_TYPES = ("markers", "marker", "events", "stim")


@dataclass(frozen=True)
class StreamEntry:
    """One LSL stream seen on the network.

    Attributes
    ----------
    name, type, source_id, hostname : str
    n_chans : int
    sfreq : float
        Nominal rate in Hz; 0 for irregular (marker) streams.
    """

    name: str
    type: str
    n_chans: int
    sfreq: float
    source_id: str = ""
    hostname: str = ""

    @property
    def is_marker(self) -> bool:
        return self.type.lower() in _MARKER_TYPES or self.sfreq == 0.0

    def label(self) -> str:
        """``name (type, 64 ch @ 1000 Hz, host)`` for a combo box."""
        rate = "irregular" if self.sfreq == 0 else f"{self.sfreq:g} Hz"
        host = f", {self.hostname}" if self.hostname else ""
        return f"{self.name} ({self.type}, {self.n_chans} ch @ {rate}{host})"


def discover_streams(timeout_s: float = 1.0) -> list[StreamEntry]:
    """All LSL streams visible within ``timeout_s`` seconds, sorted by name (never raises for 'none')."""
    import pylsl

    infos = pylsl.resolve_streams(wait_time=float(timeout_s))
    out = {
        (i.name(), i.source_id(), i.hostname()): StreamEntry(
            name=i.name(),
            type=i.type(),
            n_chans=int(i.channel_count()),
            sfreq=float(i.nominal_srate()),
            source_id=i.source_id(),
            hostname=i.hostname(),
        )
        for i in infos
    }
    return sorted(out.values(), key=lambda s: (s.name, s.source_id))


def split_streams(streams: Sequence[StreamEntry]) -> tuple[list[StreamEntry], list[StreamEntry]]:
    """``(eeg_like, marker_like)``: regular-rate streams vs marker/irregular streams."""
    eeg = [s for s in streams if not s.is_marker]
    markers = [s for s in streams if s.is_marker]
    return eeg, markers


class ReplayProcess:
    """``hmavd-replay <recording>`` run as a child process with the given stream names.

    Parameters
    ----------
    recording : str or Path
        Any recording ``hmavd-replay`` reads (FIF, BrainVision, EDF, XDF, ThingsEEG2 raw).
    eeg_stream, marker_stream : str
        LSL stream names to publish (see :func:`bci.replay.unique_names`).
    replay_speed : float
        Replay speed factor (1 = real time).
    loop : bool
        Restart at the end.
    extra_args : sequence of str
        More ``hmavd-replay`` arguments.
    """

    def __init__(
        self,
        recording: str | Path,
        eeg_stream: str,
        marker_stream: str,
        replay_speed: float = 1.0,
        loop: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.recording = Path(recording)
        self.eeg_stream, self.marker_stream = eeg_stream, marker_stream
        self.replay_speed, self.loop = float(replay_speed), bool(loop)
        self.extra_args = list(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        """The argv used to start the replay (the console script through this interpreter)."""
        args = [
            str(self.recording),
            "--eeg-stream",
            self.eeg_stream,
            "--marker-stream",
            self.marker_stream,
            "--replay-speed",
            f"{self.replay_speed:g}",
        ]
        if self.loop:
            args.append("--loop")
        # through gui.replay_child: the replay exits when this process dies, even by SIGKILL
        return [sys.executable, "-m", "gui.replay_child", *args, *self.extra_args]

    def start(self) -> None:
        if self.running:
            return
        log.info("starting replay: %s", " ".join(self.command()))
        self._close_log()
        self._log = tempfile.TemporaryFile()  # not a pipe: a chatty child never blocks on it
        self._proc = subprocess.Popen(
            self.command(),
            env={**os.environ, "HMAVD_PARENT_PID": str(os.getpid())},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def error_output(self) -> str:
        """The last line of the replay's stderr once it has exited ('' while running)."""
        if self._proc is None or self._proc.poll() is None or self._log is None:
            return ""
        try:
            self._log.seek(0)
            text = self._log.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return text.splitlines()[-1] if text else ""

    def stop(self, timeout_s: float = 3.0) -> None:
        """Terminate (SIGTERM, then SIGKILL after ``timeout_s``) and reap the child."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
