"""The live session's running statistics and its status message (no IO, no threads).

:class:`RunningStats` keeps the latencies (for the percentiles), the prediction count and the running
top-1 / top-5 accuracy over the epochs whose true concept the templates know; :func:`status_message`
builds the ``"status"`` message (:class:`bci.messages.StatusMessage`) from it and the engine's parts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from .messages import StatusMessage

__all__ = ["RunningStats", "score_prediction", "status_message"]


def score_prediction(
    true: str | None, ranked: Sequence[str], concepts: Collection[str]
) -> tuple[bool | None, bool | None]:
    """``(top1, top5)`` of one prediction ranked best first; ``(None, None)`` when ``true`` is not a template."""
    if true is None or true not in concepts:
        return None, None
    return ranked[0] == true, true in ranked[:5]


class RunningStats:
    """Latencies and running accuracy of one live session.

    Parameters
    ----------
    n_latencies : int
        How many of the newest latencies the percentiles are computed over.
    """

    def __init__(self, n_latencies: int = 1000) -> None:
        self.latencies_ms: deque[float] = deque(maxlen=n_latencies)
        self.n_predictions = 0
        self.n_scored = self.n_top1 = self.n_top5 = 0

    def add(self, latency_ms: float, top1: bool | None, top5: bool | None) -> None:
        """One prediction: its latency and, when it was scored, whether it was right."""
        self.latencies_ms.append(float(latency_ms))
        self.n_predictions += 1
        if top1 is not None:
            self.n_scored += 1
            self.n_top1 += bool(top1)
            self.n_top5 += bool(top5)

    def latency_percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile of the recent latencies (ms); NaN before the first prediction."""
        return float(np.percentile(np.asarray(self.latencies_ms), q)) if self.latencies_ms else float("nan")

    @property
    def running_top1(self) -> float | None:
        return self.n_top1 / self.n_scored if self.n_scored else None

    @property
    def running_top5(self) -> float | None:
        return self.n_top5 / self.n_scored if self.n_scored else None


def status_message(
    stats: RunningStats, clock: Any = None, rejected: Mapping[str, int] | None = None, recording: bool = False,
    unknown_markers: int = 0, messages: Sequence[str] = (), mvnn: dict | None = None,
    accumulated: dict | None = None,
) -> StatusMessage:  # fmt: skip
    """The ``"status"`` message.

    Parameters
    ----------
    stats : RunningStats
    clock : bci.ringbuffer.SampleClock, optional
        The source's clock (measured rate, dropped samples); ``None`` before connect.
    rejected : mapping, optional
        Rejected epochs per reason.
    recording : bool
    unknown_markers : int
    messages : sequence of str
        Lines for the banner.
    mvnn, accumulated : dict, optional
        :meth:`bci.online_mvnn.OnlineMVNN.report`, :meth:`bci.accumulate.RepetitionAccumulator.report`.
    """
    return StatusMessage(
        type="status",
        sfreq_measured=clock.measured_sfreq() if clock else 0.0,
        latency_p50_ms=stats.latency_percentile_ms(50),
        latency_p99_ms=stats.latency_percentile_ms(99),
        dropped_samples=int(clock.gap_samples_estimate) if clock else 0,
        n_epochs=stats.n_predictions,
        rejected=dict(rejected or {}),
        running_top1=stats.running_top1,
        running_top5=stats.running_top5,
        recording=bool(recording),
        unknown_markers=int(unknown_markers),
        messages=list(messages),
        mvnn=mvnn,
        accumulated=accumulated,
    )
