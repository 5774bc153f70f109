"""The scope's feed: the newest raw samples, decimated, and the markers received since the last message."""

from __future__ import annotations

from typing import Any

import numpy as np

from .messages import ScopeMessage

__all__ = ["ScopeFeed"]


class ScopeFeed:
    """Builds ``"scope"`` messages (:class:`bci.messages.ScopeMessage`) from a connected source.

    Parameters
    ----------
    scope_sfreq : float
        Target rate (Hz): samples are decimated by ``round(sfreq / scope_sfreq)`` on a fixed grid.
    history_s : float
        At most this many seconds are sent at once (after a pause, older samples are skipped).
    """

    def __init__(self, scope_sfreq: float, history_s: float = 2.0) -> None:
        self.scope_sfreq, self.history_s = float(scope_sfreq), float(history_s)
        self.next_index = 0  # absolute index of the first sample not sent yet
        self.markers: list[tuple[float, str]] = []  # (t_s consumer clock, label) since the last message

    def add_marker(self, t_s: float, label: str) -> None:
        self.markers.append((float(t_s), str(label)))

    def message(self, source: Any, t_first_s: float) -> ScopeMessage | None:
        """The samples and markers since the last message (``None`` when no new sample is on the grid).

        ``t_first_s`` (the stream's first sample, consumer clock) is the origin of the marker times.
        """
        sfreq = source.description.sfreq
        q = max(1, int(round(sfreq / self.scope_sfreq)))
        stop = source.n_written
        start = max(self.next_index, stop - int(self.history_s * sfreq), source.buffer.first_available)
        start = -(-start // q) * q  # align to the decimation grid
        if stop <= start:
            return None
        data = source.get_data(start, stop)[:, ::q].astype(np.float32)  # (C, n)
        self.next_index = start + data.shape[1] * q
        marks = [(t - t_first_s, label) for t, label in self.markers]
        self.markers = []
        return ScopeMessage(type="scope", data=data, t0_s=start / sfreq, sfreq=sfreq / q, markers=marks)
