"""A ring buffer of multichannel samples indexed by absolute sample number, plus the sample clock.

The acquisition thread appends chunks; readers ask for absolute sample ranges ``[start, stop)``.
Sample numbers count *received* samples (0, 1, 2, … since connect). When the source drops out and
comes back, the received samples continue without a hole in the numbering, so outages are tracked
separately by :class:`SampleClock` as *segments*: runs of samples whose timestamps follow each other
at the sampling period. A gap between segments is where samples were lost.

Times are on the consumer's clock (LSL ``local_clock`` seconds after clock-offset correction). Each
segment is dejittered by a least-squares line ``t = t0 + (i - start) * period`` through its
timestamps, so sample times are exact to far below one sample even with ±0.1 ms LSL jitter.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RingBuffer", "SampleClock", "Segment"]


class RingBuffer:
    """Fixed-capacity circular store of ``(n_samples, n_chans)`` data addressed by absolute sample index.

    Parameters
    ----------
    n_chans : int
        Number of channels.
    capacity : int
        Samples kept (older samples are overwritten).
    dtype : numpy dtype
        Sample type (the stream's, e.g. float32).

    Notes
    -----
    One writer thread and any number of readers. A reader copies the range, then re-checks that the
    writer has not overwritten it meanwhile; ``n_written`` is published after the data.
    """

    def __init__(self, n_chans: int, capacity: int, dtype: np.dtype | type = np.float32) -> None:
        if capacity < 1 or n_chans < 1:
            raise ValueError("RingBuffer needs capacity >= 1 and n_chans >= 1")
        self.n_chans = int(n_chans)
        self.capacity = int(capacity)
        self._data = np.zeros((self.capacity, self.n_chans), dtype=dtype)  # (capacity, C)
        self._arrival = np.zeros(self.capacity, dtype=np.float64)  # (capacity,) perf_counter at arrival
        self.n_written = 0

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def first_available(self) -> int:
        """Oldest absolute sample index still held."""
        return max(0, self.n_written - self.capacity)

    def write(self, chunk: np.ndarray, arrival_s: float = 0.0) -> int:
        """Append ``chunk`` (n, C); returns the absolute index of its first sample.

        ``arrival_s`` is the monotonic time (``time.perf_counter``) the chunk was received.
        """
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or chunk.shape[1] != self.n_chans:
            raise ValueError(f"chunk must be (n, {self.n_chans}), got {chunk.shape}")
        n = chunk.shape[0]
        first = self.n_written
        if n == 0:
            return first
        if n > self.capacity:  # only the newest samples fit
            chunk = chunk[-self.capacity :]
            skipped = n - self.capacity
        else:
            skipped = 0
        start = (first + skipped) % self.capacity
        m = chunk.shape[0]
        k = min(m, self.capacity - start)
        self._data[start : start + k] = chunk[:k]
        self._arrival[start : start + k] = arrival_s
        if k < m:
            self._data[: m - k] = chunk[k:]
            self._arrival[: m - k] = arrival_s
        self.n_written = first + n  # publish after the data
        return first

    def _check(self, start: int, stop: int) -> None:
        if stop > self.n_written:
            raise IndexError(f"samples [{start}, {stop}) not yet received (have {self.n_written})")
        if start < self.first_available:
            raise IndexError(f"samples [{start}, {stop}) overwritten (oldest kept {self.first_available})")
        if stop < start:
            raise IndexError(f"empty range [{start}, {stop})")

    def _take(self, arr: np.ndarray, start: int, stop: int) -> np.ndarray:
        a, b = start % self.capacity, stop - start
        if a + b <= self.capacity:
            return arr[a : a + b].copy()
        return np.concatenate([arr[a:], arr[: a + b - self.capacity]])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Copy of samples ``[start, stop)`` as ``(C, n)``; ``IndexError`` if not held."""
        self._check(start, stop)
        out = self._take(self._data, start, stop)  # (n, C)
        self._check(start, stop)  # the writer may have lapped us during the copy
        return out.T

    def read_channels(self, start: int, stop: int, channels: slice, dtype: Any = np.float64) -> np.ndarray:
        """Samples ``[start, stop)`` of ``channels`` as a C-contiguous ``(C_sel, n)`` array of ``dtype``.

        One copy straight from the buffer (the live epocher's hot path: no intermediate (n, C) copy);
        ``IndexError`` if not held.
        """
        self._check(start, stop)
        a, n = start % self.capacity, stop - start
        out = np.empty((len(range(self.n_chans)[channels]), n), dtype=dtype)  # (C_sel, n)
        k = min(n, self.capacity - a)
        out[:, :k] = self._data[a : a + k, channels].T
        if k < n:
            out[:, k:] = self._data[: n - k, channels].T
        self._check(start, stop)  # the writer may have lapped us during the copy
        return out

    def arrival(self, index: int) -> float:
        """Monotonic arrival time (s) of absolute sample ``index``."""
        self._check(index, index + 1)
        return float(self._arrival[index % self.capacity])


@dataclass
class Segment:
    """A run of contiguous samples: absolute indices ``[start, start + n)`` with a dejittered time line."""

    start: int
    nominal_period_s: float
    n: int = 0
    t_ref: float = 0.0  # first timestamp (keeps the least-squares sums well conditioned)
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    t_last: float = float("nan")  # raw timestamp of the newest sample
    jitter_s: float = 0.0  # largest |timestamp - fitted line| seen once the line is fitted (gap tolerance)

    @property
    def stop(self) -> int:
        return self.start + self.n

    def add(self, timestamps: np.ndarray) -> None:
        ts = np.asarray(timestamps, dtype=np.float64)
        if self.n == 0:
            self.t_ref = float(ts[0])
        x = np.arange(self.n, self.n + len(ts), dtype=np.float64)
        y = ts - self.t_ref
        self.sx += float(x.sum())
        self.sy += float(y.sum())
        self.sxx += float(x @ x)
        self.sxy += float(x @ y)
        self.n += len(ts)
        self.t_last = float(ts[-1])

    def line(self) -> tuple[float, float]:
        """``(t0, period_s)``: dejittered time of sample ``start`` and the fitted sample period."""
        n = self.n
        if n >= 16:
            den = n * self.sxx - self.sx * self.sx
            if den > 0:
                period = (n * self.sxy - self.sx * self.sy) / den
                if period > 0:
                    return self.t_ref + (self.sy - period * self.sx) / n, period
        period = self.nominal_period_s
        return self.t_ref + (self.sy - period * self.sx) / max(n, 1), period

    def time_of(self, index: int) -> float:
        t0, period = self.line()
        return t0 + (index - self.start) * period


class SampleClock:
    """Dejittered sample times and gap (outage) detection from per-sample timestamps.

    Parameters
    ----------
    sfreq : float
        Nominal sampling rate (Hz).
    jitter_tol_s : float
        A jump between consecutive timestamps larger than ``1.5 periods + jitter_tol_s`` starts
        a new segment (samples were lost).
    """

    def __init__(self, sfreq: float, jitter_tol_s: float = 0.0005) -> None:
        self.sfreq = float(sfreq)
        self.period_s = 1.0 / self.sfreq
        self.jitter_tol_s = float(jitter_tol_s)
        self.segments: list[Segment] = []
        self._starts: list[int] = []
        self._lock = threading.Lock()
        self.gap_samples_estimate = 0  # samples estimated lost in gaps
        self.jitter_s = 0.0  # the stream's timestamp jitter: largest residual of a segment with >= 1 s of data

    def add(self, first_index: int, timestamps: np.ndarray) -> None:
        """Register the timestamps (consumer clock, s) of samples ``first_index …``.

        A gap (new segment) is judged from the data received: a sample later than its segment's
        fitted time line by more than ``0.5 period + jitter_tol_s + 3 × the segment's own timestamp
        jitter`` (largest residual seen), or a chunk that does not continue the newest segment's
        indices. Jittery stamps (packet-stamped amplifiers, 1 ms rounding) therefore do not split a
        stream; in the first second of a segment, before its jitter is known, only jumps over
        :attr:`cold_gap_s` count.
        """
        ts = np.asarray(timestamps, dtype=np.float64)
        if ts.size == 0:
            return
        with self._lock:
            a, n = 0, len(ts)
            while a < n:
                seg = self.segments[-1] if self.segments else None
                idx = first_index + a
                if seg is None or seg.stop != idx:
                    seg = self._new_segment(idx, seg, ts[a])
                    seg.add(ts[a : a + 1])
                    a += 1
                    continue
                b = a + self._first_late(seg, ts[a:])
                if b > a:
                    self._extend(seg, ts[a:b])
                if b < n:  # a gap before sample b: it starts the next segment
                    self._new_segment(first_index + b, seg, ts[b]).add(ts[b : b + 1])
                    b += 1
                a = b

    #: Gap tolerance (s) of the stream's first segment until it has a second of data (its jitter unknown).
    cold_gap_s = 0.1

    def _tolerance(self, seg: Segment) -> float:
        base = 0.5 * seg.line()[1] + self.jitter_tol_s
        jitter = max(seg.jitter_s, self.jitter_s)  # this segment's, or the stream's earlier segments'
        if seg is self.segments[0] and seg.n < max(16, int(self.sfreq)):
            return max(base + 3.0 * jitter, self.cold_gap_s)
        return base + 3.0 * jitter

    def _first_late(self, seg: Segment, ts: np.ndarray) -> int:
        """Position of the first sample of ``ts`` (continuing ``seg``) that starts a gap (``len(ts)``: none)."""
        t0, period = seg.line()
        pred = t0 + (seg.stop - seg.start + np.arange(len(ts))) * period
        late = np.flatnonzero(ts - pred > self._tolerance(seg))
        return int(late[0]) if late.size else len(ts)

    def _extend(self, seg: Segment, ts: np.ndarray) -> None:
        seg.add(ts)
        if seg.n >= 16:
            t0, period = seg.line()
            resid = ts - (t0 + (seg.n - len(ts) + np.arange(len(ts))) * period)
            seg.jitter_s = max(seg.jitter_s, float(np.abs(resid).max()))
            if seg.n >= self.sfreq:
                self.jitter_s = max(self.jitter_s, seg.jitter_s)

    def _new_segment(self, idx: int, prev: Segment | None, t_first: float) -> Segment:
        if prev is not None and prev.n:
            t0, period = prev.line()
            lost = round((t_first - (t0 + (idx - prev.start) * period)) / period)
            self.gap_samples_estimate += max(0, int(lost))
        seg = Segment(start=idx, nominal_period_s=self.period_s)
        self.segments.append(seg)
        self._starts.append(idx)
        return seg

    def segment_of(self, index: int) -> Segment | None:
        """The segment holding absolute sample ``index`` (None before the first)."""
        with self._lock:
            k = bisect.bisect_right(self._starts, index) - 1
            return self.segments[k] if k >= 0 else None

    def locate(self, t_s: float) -> tuple[str, int]:
        """Nearest sample to time ``t_s``.

        Returns
        -------
        (status, index)
            ``"ok"`` and the index when ``t_s`` lies within a segment's data (±½ period);
            ``"wait"`` when it lies after the newest sample; ``"gap"`` when it falls between
            two segments; ``"before"`` when it precedes the first sample.
        """
        with self._lock:
            segs = list(self.segments)
        if not segs:
            return "wait", -1
        for k in range(len(segs) - 1, -1, -1):
            seg = segs[k]
            t0, period = seg.line()
            if t_s >= t0 - 0.5 * period:
                idx = seg.start + int(round((t_s - t0) / period))
                if idx < seg.stop:
                    return "ok", idx
                return ("wait", idx) if k == len(segs) - 1 else ("gap", -1)
        return "before", -1

    def time_of(self, index: int) -> float:
        seg = self.segment_of(index)
        if seg is None:
            raise IndexError(f"sample {index} precedes the stream")
        return seg.time_of(index)

    def measured_sfreq(self) -> float:
        """Sampling rate from the newest segment's fitted period (nominal until 16 samples)."""
        with self._lock:
            seg = self.segments[-1] if self.segments else None
        return 1.0 / seg.line()[1] if seg is not None else float("nan")
