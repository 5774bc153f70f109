"""Replay a recording as an EEG LSL stream plus a marker stream (a small pylsl player).

Every sample carries its exact timestamp ``t_start + g / (sfreq * speed)`` (``g`` = samples streamed
so far) and every marker the timestamp of *its own* sample (not the preceding one, which is what
mne-lsl's ``PlayerLSL`` does). The EEG stream's nominal rate is the recording's, also when the
replay is accelerated, so epochs keep their length in samples. An optional ``sample_index`` channel
carries each sample's index in the recording (exact in float32 up to 2**24 samples).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hmavd.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["ReplayData", "load_replay", "LSLPlayer", "unique_names"]


@dataclass(frozen=True)
class ReplayData:
    """What is streamed: data (C, N) in the recording's units (volts), names, rate, events (sample, code)."""

    data: np.ndarray
    ch_names: tuple[str, ...]
    ch_types: tuple[str, ...]
    sfreq: float
    events: tuple[tuple[int, str], ...]


def load_replay(path: str, sample_index: bool = False, stim_channel: str | None = None) -> ReplayData:
    """Read a recording with :func:`hmavd.preprocessing.raw_io.read_recording`; drop stim channels.

    Event samples are relative to the first sample of the data (``raw.first_samp`` removed).
    ``sample_index`` adds a ``sample_index`` channel unless the recording already has one.
    """
    from hmavd.preprocessing.raw_io import read_recording

    raw, events = read_recording(path, stim_channel=stim_channel)
    types = raw.get_channel_types()
    keep = [i for i, t in enumerate(types) if t != "stim"]
    data = raw.get_data(picks=keep).astype(np.float64)  # (C, N)
    names = [raw.ch_names[i] for i in keep]
    ctypes_ = [types[i] for i in keep]
    if sample_index and "sample_index" not in names:
        data = np.concatenate([data, np.arange(data.shape[1], dtype=np.float64)[None]], axis=0)
        names.append("sample_index")
        ctypes_.append("misc")
    ev = tuple((int(s) - int(raw.first_samp), str(int(c))) for s, _, c in np.asarray(events))
    return ReplayData(data, tuple(names), tuple(ctypes_), float(raw.info["sfreq"]), ev)


def unique_names(prefix: str = "hmavd") -> tuple[str, str]:
    """Fresh ``(eeg_name, marker_name)`` so parallel replays never collide."""
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}-eeg-{tag}", f"{prefix}-markers-{tag}"


def _eeg_info(name: str, ch_names: Sequence[str], ch_types: Sequence[str], sfreq: float):
    import pylsl

    info = pylsl.StreamInfo(name, "EEG", len(ch_names), sfreq, pylsl.cf_float32, source_id=name)
    chans = info.desc().append_child("channels")
    for n, t in zip(ch_names, ch_types):
        ch = chans.append_child("channel")
        ch.append_child_value("label", n)
        ch.append_child_value("type", "EEG" if t == "eeg" else t)
        ch.append_child_value("unit", "volts" if t == "eeg" else "")
    return info


class LSLPlayer:
    """Streams a :class:`ReplayData` in (accelerated) real time from a background thread.

    Parameters
    ----------
    rec : ReplayData
    eeg_name, marker_name : str
        LSL stream names (``marker_name`` empty: no marker stream).
    speed : float
        1 = real time, 10 = ten times faster.
    loop : bool
        Start again at the end (timestamps keep increasing).
    chunk_s : float
        Recording seconds per pushed chunk at real time (chunks grow with ``speed``).
    start_sample, stop_sample : int
        Part of the recording to stream (``stop_sample`` ≤ 0 = to the end).
    """

    def __init__(
        self, rec: ReplayData, eeg_name: str, marker_name: str = "", speed: float = 1.0, loop: bool = False,
        chunk_s: float = 0.01, start_sample: int = 0, stop_sample: int = 0,
    ) -> None:  # fmt: skip
        if speed <= 0:
            raise UserError(f"--speed: {speed} must be > 0 (1 = real time)")
        self.rec, self.speed, self.loop = rec, float(speed), bool(loop)
        self.eeg_name, self.marker_name = eeg_name, marker_name
        n = rec.data.shape[1]
        self.start_sample = int(start_sample)
        self.stop_sample = int(stop_sample) if stop_sample > 0 else n
        if not 0 <= self.start_sample < self.stop_sample <= n:
            raise UserError(f"replay window: samples [{start_sample}, {stop_sample}) outside the recording's {n}")
        self.chunk = max(1, int(round(chunk_s * rec.sfreq * self.speed)))
        self._data = np.ascontiguousarray(rec.data.T, dtype=np.float32)  # (N, C)
        ev = sorted((s, c) for s, c in rec.events if self.start_sample <= s < self.stop_sample)
        self._ev_samples = np.array([s for s, _ in ev], dtype=np.int64)
        self._ev_codes = [c for _, c in ev]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.n_pushed = 0
        self.n_markers = 0
        self.n_loops = 0
        self.done = threading.Event()
        self.eeg_outlet = self.marker_outlet = None
        self._open()

    def _open(self) -> None:
        import pylsl

        self.eeg_outlet = pylsl.StreamOutlet(_eeg_info(self.eeg_name, self.rec.ch_names, self.rec.ch_types,
                                                       self.rec.sfreq), chunk_size=0, max_buffered=360)  # fmt: skip
        if self.marker_name:
            info = pylsl.StreamInfo(self.marker_name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                    source_id=self.marker_name)  # fmt: skip
            self.marker_outlet = pylsl.StreamOutlet(info)

    def wait_for_consumers(self, timeout_s: float) -> bool:
        """Wait until the EEG (and marker) outlet have a consumer."""
        ok = self.eeg_outlet.wait_for_consumers(timeout_s)
        if ok and self.marker_outlet is not None:
            ok = self.marker_outlet.wait_for_consumers(timeout_s)
        return bool(ok)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="lsl-player", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.eeg_outlet = self.marker_outlet = None

    def run(self) -> None:
        """Stream until the end (or forever when looping, until :meth:`stop`)."""
        import pylsl

        period = 1.0 / (self.rec.sfreq * self.speed)
        t_start = pylsl.local_clock() + 0.05
        g = 0  # samples streamed so far
        a, b = self.start_sample, self.stop_sample
        try:
            while not self._stop.is_set():
                for pos in range(a, b, self.chunk):
                    end = min(pos + self.chunk, b)
                    n = end - pos
                    t_last = t_start + (g + n - 1) * period
                    wait = t_last - pylsl.local_clock()
                    if wait > 0 and self._stop.wait(wait):
                        return
                    stamps = t_start + (g + np.arange(n)) * period
                    self.eeg_outlet.push_chunk(self._data[pos:end], stamps.tolist())
                    lo, hi = np.searchsorted(self._ev_samples, [pos, end])
                    for k in range(lo, hi):
                        s = int(self._ev_samples[k])
                        self.marker_outlet is not None and self.marker_outlet.push_sample(
                            [self._ev_codes[k]], t_start + (g + s - pos) * period
                        )
                        self.n_markers += 1
                    g += n
                    self.n_pushed = g
                self.n_loops += 1
                if not self.loop:
                    break
        finally:
            self.done.set()
