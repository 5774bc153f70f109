"""A session recorder fed from a live source's ring buffer (:class:`RecordingDrain`).

The engine calls :meth:`RecordingDrain.drain` once per step: the samples received since the previous call
go to the recorder (:mod:`bci.recorder`), which flushes when its interval has passed. Markers and
predictions are passed straight through.
"""

from __future__ import annotations

import logging
from typing import Any

from .messages import PredictionMessage
from .recorder import SessionRecorder, XDFSessionRecorder

log = logging.getLogger(__name__)

__all__ = ["RecordingDrain"]


class RecordingDrain:
    """Writes a connected source's samples to ``recorder`` from absolute sample ``first_index`` on.

    Parameters
    ----------
    recorder : XDFSessionRecorder or SessionRecorder
    source : bci.sources.EEGSource
        Connected; its ring buffer is read, never consumed.
    first_index : int
        Absolute index of the first sample to record (older samples that left the buffer are skipped).
    """

    def __init__(self, recorder: XDFSessionRecorder | SessionRecorder, source: Any, first_index: int) -> None:
        self.recorder, self.source = recorder, source
        self.next_index = int(first_index)
        self.lost_samples = 0  # samples that left the ring buffer before they were recorded

    def drain(self) -> int:
        """Record every sample received since the last call; returns how many were written.

        When the recorder fell so far behind that samples left the source's ring buffer (``buffer_s``) before
        they were written, the recording gets a gap there (logged, counted in :attr:`lost_samples`) instead
        of stopping the session.
        """
        src = self.source
        n = 0
        for _ in range(3):  # the acquisition thread may overwrite the oldest samples while we read
            stop = src.n_written
            first = max(self.next_index, src.buffer.first_available)
            if stop <= first:
                break
            try:
                data = src.get_data(first, stop)
            except IndexError:
                continue
            if first > self.next_index:
                self.lost_samples += first - self.next_index
                log.warning(
                    "recording: samples %d-%d left the %g s buffer before they were written (a gap in the "
                    "recording); raise buffer_s or lower replay_speed",
                    self.next_index,
                    first - 1,
                    getattr(src, "buffer_s", float("nan")),
                )
            self.recorder.write_eeg(data, first)
            self.next_index, n = stop, stop - first
            break
        self.recorder.maybe_flush(src.clock)
        return n

    def write_marker(self, t_s: float, code: str, label: str = "", concept: str | None = None) -> None:
        self.recorder.write_marker(t_s, code, label, concept)

    def write_prediction(self, msg: PredictionMessage, t_s: float | None = None) -> None:
        self.recorder.write_prediction(msg, t_s)

    def close(self) -> None:
        """Record what is left, flush and close the recorder."""
        self.drain()
        self.recorder.maybe_flush(self.source.clock)
        self.recorder.close()
