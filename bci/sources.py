"""EEG sources behind one interface: ``connect / acquire / get_data / disconnect``.

* :class:`InMemorySource` — arrays pushed by hand (unit tests, offline simulation).
* :class:`LSLSource` — an LSL stream read with pylsl directly: a thread blocks in
  ``pull_chunk(timeout, min_samples=1, dest_obj=…)`` and writes into a :class:`~bci.ringbuffer.RingBuffer`
  indexed by absolute sample number; timestamps are clock-corrected (``time_correction`` called before
  the first pull and refreshed off the hot path, guarded against ``TimeoutError``) and dejittered by
  :class:`~bci.ringbuffer.SampleClock`.

``poll_interval_s=None`` is the manual mode: nothing runs in the background and the caller calls
:meth:`EEGSource.acquire`. Otherwise a thread calls it in a loop (for LSL ``poll_interval_s`` is the pull
timeout; for in-memory sources the sleep between polls).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hmavd.errors import UserError

from .ringbuffer import RingBuffer, SampleClock

log = logging.getLogger(__name__)

__all__ = [
    "StreamDescription",
    "EEGSource",
    "InMemorySource",
    "LSLSource",
    "resolve_stream",
    "stream_channel_names",
    "stream_channels",
]


@dataclass(frozen=True)
class StreamDescription:
    """What a source delivers: channel names, nominal rate (Hz), sample dtype, channel units and types.

    ``ch_units`` / ``ch_types`` hold the stream description's ``unit`` / ``type`` per channel (``""`` where a
    channel has none; empty tuples when the source labels nothing).
    """

    name: str
    ch_names: tuple[str, ...]
    sfreq: float
    dtype: str = "float32"
    ch_units: tuple[str, ...] = ()
    ch_types: tuple[str, ...] = ()

    @property
    def n_chans(self) -> int:
        return len(self.ch_names)


class EEGSource:
    """Common machinery: ring buffer, sample clock, acquisition thread, new-data notification.

    Subclasses implement ``_open() -> StreamDescription``, ``_pull() -> (chunk (n, C), timestamps (n,))``
    and ``_close()``.

    Parameters
    ----------
    poll_interval_s : float or None
        ``None`` = manual :meth:`acquire`; else the background thread's pull timeout (s).
    buffer_s : float
        Seconds of data the ring buffer holds.
    jitter_tol_s : float
        Timestamp jump tolerance of gap detection (see :class:`~bci.ringbuffer.SampleClock`).
    """

    def __init__(self, poll_interval_s: float | None = None, buffer_s: float = 60.0, jitter_tol_s: float = 0.0005):
        self.poll_interval_s = poll_interval_s
        self.buffer_s = float(buffer_s)
        self.jitter_tol_s = float(jitter_tol_s)
        self.description: StreamDescription | None = None
        self.buffer: RingBuffer | None = None
        self.clock: SampleClock | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None
        #: Consumer-clock time (s) at which the stream was opened; markers stamped before it are stale
        #: (sent before this session started). ``-inf`` for sources whose clock is not LSL's.
        self.t_connected_s = float("-inf")

    # -- interface -------------------------------------------------------------------------------
    def connect(self) -> StreamDescription:
        """Open the stream, allocate the buffer and (unless manual) start the acquisition thread."""
        desc = self._open()
        self.description = desc
        cap = max(int(round(self.buffer_s * desc.sfreq)), 1024)
        self.buffer = RingBuffer(desc.n_chans, cap, dtype=np.dtype(desc.dtype))
        self.clock = SampleClock(desc.sfreq, self.jitter_tol_s)
        if self.poll_interval_s is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"acquire-{desc.name}", daemon=True)
            self._thread.start()
        return desc

    def acquire(self) -> int:
        """Pull what is available (blocking up to the pull timeout); returns the number of new samples."""
        chunk, timestamps = self._pull()
        n = 0 if chunk is None else int(chunk.shape[0])
        if n == 0:
            return 0
        arrival = time.perf_counter()
        assert self.buffer is not None and self.clock is not None
        first = self.buffer.n_written
        self.clock.add(first, timestamps)
        self.buffer.write(chunk, arrival)
        with self._cond:
            self._cond.notify_all()
        return n

    def get_data(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` (absolute indices) as ``(C, n)``; ``IndexError`` if not held."""
        assert self.buffer is not None, "connect() first"
        return self.buffer.read(start, stop)

    def disconnect(self) -> None:
        """Stop the thread and close the stream (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._close()
        with self._cond:
            self._cond.notify_all()

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def thread(self) -> threading.Thread | None:
        """The acquisition thread (``None`` in manual mode or when not connected)."""
        return self._thread

    @property
    def n_written(self) -> int:
        return 0 if self.buffer is None else self.buffer.n_written

    def wait_for_data(self, after: int, timeout_s: float) -> bool:
        """Block until more than ``after`` samples were received or ``timeout_s`` passes."""
        with self._cond:
            return self._cond.wait_for(lambda: self.n_written > after or self._stop.is_set(), timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.acquire()
            except Exception as err:  # noqa: BLE001 - reported to the engine, thread ends
                log.exception("acquisition stopped")
                self.error = err
                with self._cond:
                    self._cond.notify_all()
                return
            if n == 0 and self._idle_sleep_s() > 0:
                self._stop.wait(self._idle_sleep_s())

    def _idle_sleep_s(self) -> float:
        return 0.0

    def _open(self) -> StreamDescription:  # pragma: no cover - abstract
        raise NotImplementedError

    def _pull(self) -> tuple[np.ndarray | None, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        pass


class InMemorySource(EEGSource):
    """A source fed by hand: :meth:`push` queues chunks, :meth:`acquire` moves them into the buffer.

    Parameters
    ----------
    ch_names : sequence of str
        Channel names.
    sfreq : float
        Nominal rate (Hz).
    t_start_s : float
        Timestamp of the first sample (consumer clock).
    """

    def __init__(
        self,
        ch_names: Sequence[str],
        sfreq: float,
        t_start_s: float = 0.0,
        dtype: str = "float32",
        name: str = "in-memory",
        poll_interval_s: float | None = None,
        buffer_s: float = 60.0,
        ch_units: Sequence[str] = (),
        ch_types: Sequence[str] = (),
    ) -> None:
        super().__init__(poll_interval_s=poll_interval_s, buffer_s=buffer_s)
        self._desc = StreamDescription(name, tuple(ch_names), float(sfreq), dtype, tuple(ch_units), tuple(ch_types))
        self._queue: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._next_t = float(t_start_s)
        self._qlock = threading.Lock()

    def push(self, data: np.ndarray, timestamps: np.ndarray | None = None) -> None:
        """Queue ``data`` (C, n); timestamps default to continuing at the nominal rate."""
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[0] != self._desc.n_chans:
            raise ValueError(f"push expects ({self._desc.n_chans}, n) data, got {data.shape}")
        n = data.shape[1]
        if timestamps is None:
            timestamps = self._next_t + np.arange(n) / self._desc.sfreq
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if n:
            self._next_t = float(timestamps[-1]) + 1.0 / self._desc.sfreq
        with self._qlock:
            self._queue.append((np.ascontiguousarray(data.T, dtype=self._desc.dtype), timestamps))

    def skip(self, n_samples: int) -> None:
        """Simulate an outage: the next pushed sample is ``n_samples`` periods later than expected."""
        self._next_t += n_samples / self._desc.sfreq

    def _open(self) -> StreamDescription:
        return self._desc

    def _pull(self) -> tuple[np.ndarray | None, np.ndarray]:
        with self._qlock:
            if not self._queue:
                return None, np.zeros(0)
            return self._queue.popleft()

    def _idle_sleep_s(self) -> float:
        return self.poll_interval_s or 0.0


def stream_channel_names(info) -> list[str]:
    """Channel labels from an LSL ``StreamInfo`` description (``Ch1…`` when absent)."""
    return stream_channels(info)[0]


def stream_channels(info) -> tuple[list[str], list[str], list[str]]:
    """``(labels, units, types)`` per channel from an LSL ``StreamInfo`` description.

    Labels default to ``Ch1…`` and units/types to ``""`` when the description lacks them (also when it
    describes another number of channels than the stream has).
    """
    names: list[str] = []
    units: list[str] = []
    types: list[str] = []
    n = info.channel_count()
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(names) < n:
        names.append(ch.child_value("label") or f"Ch{len(names) + 1}")
        units.append(ch.child_value("unit") or "")
        types.append(ch.child_value("type") or "")
        ch = ch.next_sibling()
    if len(names) != n:
        return [f"Ch{i + 1}" for i in range(n)], [""] * n, [""] * n
    return names, units, types


def resolve_stream(name: str, stype: str, timeout_s: float, what: str):
    """Find one LSL stream by name (or by type when ``name`` is empty); a one-line error when absent."""
    import pylsl

    prop, value = ("name", name) if name else ("type", stype)
    found = pylsl.resolve_byprop(prop, value, 1, timeout_s)
    if not found:
        others = sorted({s.name() for s in pylsl.resolve_streams(0.2)})
        raise UserError(
            f"{what}: no LSL stream with {prop} {value!r} found within {timeout_s:g} s "
            f"(visible: {others or 'none'}); start the source (e.g. hmavd-replay) or fix the name"
        )
    return found[0]


class ClockOffset:
    """LSL clock offset of one inlet, refreshed by a background thread off the acquisition path.

    ``time_correction`` raises ``TimeoutError`` while the source is away: the last value is kept.
    """

    def __init__(self, inlet, refresh_s: float = 5.0, timeout_s: float = 1.0) -> None:
        self._inlet = inlet
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.offset_s = 0.0
        self.failures = 0
        self.history: deque[float] = deque(maxlen=100)  # the last successful measurements (s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self) -> float:
        try:
            self.offset_s = float(self._inlet.time_correction(timeout=self.timeout_s))
            self.history.append(self.offset_s)
        except Exception:  # noqa: BLE001 - TimeoutError / LostError while the source is away
            self.failures += 1
            log.debug("time_correction failed; keeping offset %.6f s", self.offset_s)
        return self.offset_s

    def start(self) -> None:
        self.update()  # before the first pull (the first call blocks ~0.6 s)
        self._thread = threading.Thread(target=self._run, name="lsl-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.update()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1.0)


def close_inlet(inlet: Any, offset: ClockOffset | None) -> None:
    """Stop a clock-offset refresher and close a pylsl inlet (either may be ``None``); never raises."""
    if offset is not None:
        offset.stop()
    if inlet is not None:
        try:
            inlet.close_stream()
        except Exception:  # noqa: BLE001 - closing a stream that already went away
            pass


class LSLSource(EEGSource):
    """An LSL EEG stream read with pylsl (see module doc).

    Parameters
    ----------
    name : str
        Stream name ("" = first stream of type ``stype``).
    stype : str
        Stream type used when ``name`` is empty.
    resolve_timeout_s : float
        How long to look for the stream at connect.
    poll_interval_s : float or None
        Pull timeout of the acquisition thread (s); ``None`` for manual :meth:`acquire`.
    max_chunk : int
        Largest chunk pulled at once.
    """

    def __init__(
        self,
        name: str,
        stype: str = "EEG",
        resolve_timeout_s: float = 5.0,
        poll_interval_s: float | None = 0.1,
        buffer_s: float = 60.0,
        max_chunk: int = 4096,
        clock_refresh_s: float = 5.0,
        jitter_tol_s: float = 0.0005,
    ) -> None:
        super().__init__(poll_interval_s=poll_interval_s, buffer_s=buffer_s, jitter_tol_s=jitter_tol_s)
        self.name, self.stype = name, stype
        self.resolve_timeout_s = resolve_timeout_s
        self.max_chunk = int(max_chunk)
        self.clock_refresh_s = clock_refresh_s
        self._inlet = None
        self._offset: ClockOffset | None = None
        self._dest: np.ndarray | None = None

    def _open(self) -> StreamDescription:
        import pylsl

        info = resolve_stream(self.name, self.stype, self.resolve_timeout_s, "eeg_stream")
        sfreq = float(info.nominal_srate())
        if sfreq <= 0:
            raise UserError(
                f"eeg_stream: {info.name()!r} has an irregular sampling rate ({sfreq}); stream EEG with a nominal rate"
            )
        fmt = {
            pylsl.cf_float32: "float32",
            pylsl.cf_double64: "float64",
            pylsl.cf_int32: "int32",
            pylsl.cf_int16: "int16",
        }.get(info.channel_format())
        if fmt is None:
            raise UserError(f"eeg_stream: {info.name()!r} has a non-numeric channel format; stream float32 EEG")
        self._inlet = pylsl.StreamInlet(info, max_buflen=360, recover=True, processing_flags=0)
        full = self._inlet.info(timeout=self.resolve_timeout_s)  # with the channel description
        ch_names, ch_units, ch_types = stream_channels(full)
        self._offset = ClockOffset(self._inlet, refresh_s=self.clock_refresh_s)
        self._offset.start()
        self._inlet.open_stream(timeout=self.resolve_timeout_s)
        self._dest = np.zeros((self.max_chunk, len(ch_names)), dtype=fmt)
        log.info(
            "connected to %s: %d ch at %g Hz (offset %.4f s)", info.name(), len(ch_names), sfreq, self._offset.offset_s
        )
        self.t_connected_s = pylsl.local_clock()
        return StreamDescription(info.name(), tuple(ch_names), sfreq, fmt, tuple(ch_units), tuple(ch_types))

    def _pull(self) -> tuple[np.ndarray | None, np.ndarray]:
        import pylsl

        timeout = self.poll_interval_s if self.poll_interval_s is not None else 0.0
        try:
            chunk, ts = self._inlet.pull_chunk(
                timeout=timeout, max_samples=self.max_chunk, dest_obj=self._dest, min_samples=1, as_numpy=True
            )
        except pylsl.LostError:
            return None, np.zeros(0)
        if chunk is None or len(ts) == 0:
            return None, np.zeros(0)
        ts = np.asarray(ts, dtype=np.float64) + self._offset.offset_s
        return chunk, ts

    def _close(self) -> None:
        close_inlet(self._inlet, self._offset)
        self._inlet = self._offset = None
