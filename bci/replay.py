"""Replay a recording as an EEG LSL stream plus a marker stream (a small pylsl player).

Every sample carries its exact timestamp ``t_start + g / (sfreq * replay_speed)`` (``g`` = samples streamed
so far) and every marker the timestamp of *its own* sample (not the preceding one, which is what
mne-lsl's ``PlayerLSL`` does). The EEG stream's nominal rate is the recording's, also when the
replay is accelerated, so epochs keep their length in samples. An optional ``sample_index`` channel
carries each sample's index in the recording, or with ``global_index=True`` the number of samples
streamed before it (it keeps counting across loops); float32 holds it exactly up to 2**24 samples.

Besides the files :func:`hmavd.preprocessing.raw_io.read_recording` reads, :func:`load_replay`
accepts a session folder written by :class:`bci.recorder.SessionRecorder` (live recordings replay).

:class:`RecordingSource` replays a recording *in process*, behind the same
``connect / acquire / get_data / disconnect`` interface as the LSL source, with the recording's
events as markers (:class:`RecordingMarkers`): no LSL, no network, exact sample times.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hmavd.errors import UserError

from .sources import EEGSource, StreamDescription

log = logging.getLogger(__name__)

__all__ = [
    "ReplayData",
    "load_replay",
    "LSLPlayer",
    "unique_names",
    "check_replay_speed",
    "RecordingSource",
    "RecordingMarkers",
]


@dataclass(frozen=True)
class ReplayData:
    """What is streamed: data (C, N) in the recording's units (volts), names, rate, events (sample, code)."""

    data: np.ndarray
    ch_names: tuple[str, ...]
    ch_types: tuple[str, ...]
    sfreq: float
    events: tuple[tuple[int, str], ...]


def load_replay(path: str, sample_index: bool = False, stim_channel: str | None = None) -> ReplayData:
    """Read a recording (or a live session folder); drop stim channels.

    Event samples are relative to the first sample of the data (``raw.first_samp`` removed).
    ``sample_index`` adds a ``sample_index`` channel unless the recording already has one.
    """
    from hmavd.preprocessing.raw_io import read_recording

    if Path(path).is_dir():
        return _load_session(Path(path), sample_index)
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


def _load_session(path: Path, sample_index: bool) -> ReplayData:
    """A :class:`~bci.recorder.SessionRecorder` folder as :class:`ReplayData` (marker codes kept as strings)."""
    from .recording_io import read_session, session_channel_type

    data, meta, events = read_session(path)
    names = [str(c) for c in meta["ch_names"]]
    types = [session_channel_type(c) for c in names]
    keep = [i for i, t in enumerate(types) if t != "stim"]
    data = np.asarray(data[keep], dtype=np.float64)
    names, types = [names[i] for i in keep], [types[i] for i in keep]
    data *= _session_to_volts(meta, keep, types)[:, None]
    if sample_index and "sample_index" not in names:
        data = np.concatenate([data, np.arange(data.shape[1], dtype=np.float64)[None]], axis=0)
        names.append("sample_index")
        types.append("misc")
    if data.shape[1] == 0:
        raise UserError(f"recording: {path} holds no samples; record for longer or pick another session")
    return ReplayData(data, tuple(names), tuple(types), float(meta["sfreq"]), tuple(events))


def _session_to_volts(meta: dict, keep: Sequence[int], types: Sequence[str]) -> np.ndarray:
    """Per kept channel, the factor to volts of a session recorded as received (its ``ch_units`` labels,
    else the session's ``stream_units`` setting; unlabelled channels are taken as volts)."""
    from .units import unit_to_volts

    units = list(meta.get("ch_units") or [])
    setting = meta.get("stream_units") or (meta.get("hmavd_session") or {}).get("stream_units") or ""
    setting = str((setting or [""])[0] if isinstance(setting, list) else setting)  # pyxdf: lists of values
    out = np.ones(len(keep))
    for k, (i, t) in enumerate(zip(keep, types)):
        label = units[i] if i < len(units) else ""
        if t == "eeg":
            out[k] = unit_to_volts(label or setting, "recording units") or 1.0
    return out


def unique_names(prefix: str = "hmavd") -> tuple[str, str]:
    """Fresh ``(eeg_stream, marker_stream)`` names so parallel replays never collide."""
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}-eeg-{tag}", f"{prefix}-markers-{tag}"


def check_replay_speed(replay_speed: float) -> None:
    """One-line :class:`UserError` naming ``replay_speed`` unless it is > 0."""
    if replay_speed <= 0:
        raise UserError(f"replay_speed: {replay_speed} must be > 0 (1 = real time, 10 = ten times faster)")


#: Unit label written into the stream description for each ``units`` setting (LSL's spelled-out convention).
UNIT_LABELS = {"V": "volts", "mV": "millivolts", "uV": "microvolts", "nV": "nanovolts"}
_UNIT_SCALES = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "nV": 1e-9}  # volts per unit


def stream_units_key(units: str) -> str:
    """``units`` as one of :data:`UNIT_LABELS`' keys (case-insensitive, ``µV`` = ``uV``); one-line error else."""
    from .units import unit_to_volts

    scale = unit_to_volts(units, "units")
    key = {v: k for k, v in _UNIT_SCALES.items()}.get(scale) if scale is not None else None
    if key is None:
        raise UserError(f"units: {units!r} is not one of V, mV, uV, nV; pick the units the stream should carry")
    return key


def _eeg_info(name: str, ch_names: Sequence[str], ch_types: Sequence[str], sfreq: float, unit_label: str = "volts"):
    import pylsl

    info = pylsl.StreamInfo(name, "EEG", len(ch_names), sfreq, pylsl.cf_float32, source_id=name)
    chans = info.desc().append_child("channels")
    for n, t in zip(ch_names, ch_types):
        ch = chans.append_child("channel")
        ch.append_child_value("label", n)
        ch.append_child_value("type", "EEG" if t == "eeg" else t)
        ch.append_child_value("unit", unit_label if t == "eeg" else "")
    return info


class LSLPlayer:
    """Streams a :class:`ReplayData` in (accelerated) real time from a background thread.

    Parameters
    ----------
    rec : ReplayData
    eeg_stream, marker_stream : str
        LSL stream names (``marker_stream`` empty: no marker stream).
    replay_speed : float
        1 = real time, 10 = ten times faster.
    loop : bool
        Start again at the end (timestamps keep increasing).
    chunk_s : float
        Recording seconds per pushed chunk at real time (chunks grow with ``replay_speed``).
    start_sample, stop_sample : int
        Part of the recording to stream (``stop_sample`` ≤ 0 = to the end).
    global_index : bool
        Overwrite the ``sample_index`` channel with the number of samples streamed before each sample
        (``0, 1, 2, …`` also across loops), so a consumer can count dropped samples of a looping replay.
    log_pushes : bool
        Keep ``(samples streamed after the chunk, time.perf_counter() just before pushing it)`` for
        every chunk in :attr:`push_log` (benchmarks: when the last sample of an epoch left the player).
    units : str
        Units the EEG channels are streamed in (``V``, ``mV``, ``uV``, ``nV``; the recording's volts are
        converted), labelled in the description as LSL's ``volts`` / ``millivolts`` / ``microvolts`` /
        ``nanovolts``.
    label_units : bool
        False: leave the channels' ``unit`` empty (an unlabelled stream, as some amplifier apps send).
    """

    def __init__(
        self,
        rec: ReplayData,
        eeg_stream: str,
        marker_stream: str = "",
        replay_speed: float = 1.0,
        loop: bool = False,
        chunk_s: float = 0.01,
        start_sample: int = 0,
        stop_sample: int = 0,
        global_index: bool = False,
        log_pushes: bool = False,
        units: str = "V",
        label_units: bool = True,
    ) -> None:
        check_replay_speed(replay_speed)
        self.rec, self.replay_speed, self.loop = rec, float(replay_speed), bool(loop)
        self.eeg_stream, self.marker_stream = eeg_stream, marker_stream
        n = rec.data.shape[1]
        self.start_sample = int(start_sample)
        self.stop_sample = int(stop_sample) if stop_sample > 0 else n
        if not 0 <= self.start_sample < self.stop_sample <= n:
            sf = rec.sfreq
            raise UserError(
                f"start_s/stop_s: {start_sample / sf:g} … {self.stop_sample / sf:g} s is not a part of the "
                f"recording's {n / sf:g} s; pick 0 <= start_s < stop_s <= {n / sf:g} (stop_s 0 = the end)"
            )
        if global_index and "sample_index" not in rec.ch_names:
            raise UserError("global_index: the recording has no sample_index channel; load it with sample_index=True")
        self._index_ch = rec.ch_names.index("sample_index") if global_index else None
        self.push_log: list[tuple[int, float]] | None = [] if log_pushes else None
        self.chunk = max(1, int(round(chunk_s * rec.sfreq * self.replay_speed)))
        self.units = stream_units_key(units)
        self.unit_label = UNIT_LABELS[self.units] if label_units else ""
        to_units = 1.0 / _UNIT_SCALES[self.units]
        scale = np.array([to_units if t == "eeg" else 1.0 for t in rec.ch_types])
        self._data = np.ascontiguousarray((rec.data * scale[:, None]).T, dtype=np.float32)  # (N, C)
        ev = sorted((s, c) for s, c in rec.events if self.start_sample <= s < self.stop_sample)
        self._ev_samples = np.array([s for s, _ in ev], dtype=np.int64)
        self._ev_codes = [c for _, c in ev]
        self.n_events = len(self._ev_codes)  # markers in the streamed part, per loop
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

        info = _eeg_info(self.eeg_stream, self.rec.ch_names, self.rec.ch_types, self.rec.sfreq, self.unit_label)
        self.eeg_outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=360)
        if self.marker_stream:
            name = self.marker_stream
            info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, source_id=name)
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

        period = 1.0 / (self.rec.sfreq * self.replay_speed)
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
                    chunk = self._data[pos:end]
                    if self._index_ch is not None:
                        chunk = chunk.copy()
                        chunk[:, self._index_ch] = np.arange(g, g + n, dtype=np.float32)
                    if self.push_log is not None:
                        self.push_log.append((g + n, time.perf_counter()))
                    self.eeg_outlet.push_chunk(chunk, stamps.tolist())
                    lo, hi = np.searchsorted(self._ev_samples, [pos, end])
                    for k in range(lo, hi):
                        s = int(self._ev_samples[k])
                        if self.marker_outlet is not None:
                            self.marker_outlet.push_sample([self._ev_codes[k]], t_start + (g + s - pos) * period)
                        self.n_markers += 1
                    g += n
                    self.n_pushed = g
                self.n_loops += 1
                if not self.loop:
                    break
        finally:
            self.done.set()


class RecordingSource(EEGSource):
    """A :class:`ReplayData` replayed in process as an EEG source; its events come from :attr:`markers`.

    Sample ``i`` carries the timestamp ``i / sfreq`` (recording seconds), and each event the time of its
    own sample, so online epochs are cut exactly where offline ones are.

    Parameters
    ----------
    rec : ReplayData
    replay_speed : float
        Pace of the acquisition thread (1 = real time). Ignored in manual mode, where every
        :meth:`acquire` moves the next chunk at once.
    chunk_s : float
        Recording seconds per chunk.
    poll_interval_s : float or None
        ``None`` = manual :meth:`acquire`; else the longest the thread sleeps between chunks (s).
    """

    def __init__(
        self,
        rec: ReplayData,
        replay_speed: float = 1.0,
        chunk_s: float = 0.01,
        poll_interval_s: float | None = 0.01,
        buffer_s: float = 60.0,
        name: str = "replay",
    ) -> None:
        check_replay_speed(replay_speed)
        super().__init__(poll_interval_s=poll_interval_s, buffer_s=buffer_s)
        self.rec, self.replay_speed, self.name = rec, float(replay_speed), name
        self.chunk = max(1, int(round(chunk_s * rec.sfreq)))
        self._data = np.ascontiguousarray(rec.data.T, dtype=np.float32)  # (N, C)
        self.pos = 0
        self._t_start = 0.0
        self.markers = RecordingMarkers(self)

    @property
    def finished(self) -> bool:
        """Every sample of the recording was delivered."""
        return self.pos >= self._data.shape[0]

    def _open(self) -> StreamDescription:
        self.pos = 0
        self._t_start = time.monotonic()
        units = tuple("V" if t == "eeg" else "" for t in self.rec.ch_types)  # the recording's volts
        return StreamDescription(self.name, self.rec.ch_names, self.rec.sfreq, "float32", units, self.rec.ch_types)

    def _pull(self) -> tuple[np.ndarray | None, np.ndarray]:
        if self.finished:
            return None, np.zeros(0)
        end = min(self.pos + self.chunk, self._data.shape[0])
        if self.poll_interval_s is not None:
            wait = self._t_start + end / (self.rec.sfreq * self.replay_speed) - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, self.poll_interval_s))
                return None, np.zeros(0)
        chunk = self._data[self.pos : end]
        stamps = np.arange(self.pos, end, dtype=np.float64) / self.rec.sfreq
        self.pos = end
        return chunk, stamps

    def _idle_sleep_s(self) -> float:
        return (self.poll_interval_s or 0.0) if self.finished else 0.0


class RecordingMarkers:
    """The events of a :class:`RecordingSource`, released once their sample has been delivered."""

    def __init__(self, source: RecordingSource) -> None:
        self.source = source
        ev = sorted(source.rec.events)
        self._samples = np.array([s for s, _ in ev], dtype=np.int64)
        self._codes = [c for _, c in ev]
        self._next = 0

    def connect(self) -> None:
        self._next = 0

    def pull(self) -> list[tuple[float, str]]:
        """``(t_s, code)`` of the events whose sample has arrived since the last call."""
        stop = int(np.searchsorted(self._samples, self.source.n_written))
        out = [(int(self._samples[k]) / self.source.rec.sfreq, self._codes[k]) for k in range(self._next, stop)]
        self._next = max(self._next, stop)
        return out

    def disconnect(self) -> None:
        pass
