"""A virtual amplifier: continuous simulated EEG on an LSL outlet, answering every marker it receives.

:class:`VirtualAmp` streams the noise of a simulated subject (:mod:`bci.virtual_subject`) at the
amplifier's rate, and when a marker arrives from any marker stream (``hmavd-present``, PsychoPy, a
user's script) it adds that subject's response to the image the marker names, starting at the
marker's own timestamp: onset sample ``round((t_marker - t0) · sfreq)``, ``t0`` being the timestamp of
stream sample 0 (LSL ``local_clock`` seconds, the marker's clock offset applied). Sample ``s`` is
stamped ``t0 + s / sfreq`` and pushed ``push_delay_s`` after that time, as a real amplifier delivers
its blocks a little late; a marker can therefore arrive up to ``push_delay_s`` plus the response's
onset offset (100 ms) after its flip without losing any of the response (later ones lose the part
already pushed; counted in :attr:`VirtualAmp.lost_samples`).

A simulated display can be made slow: with ``display_delay_s`` the image reaches the subject (and the
optional ``Photo`` photodiode channel, 1 while an image is on) that long after its marker, as a real
screen's input lag; measuring it from the photodiode channel and setting the live app's
``marker_offset_s`` realigns the epochs (docs/experiment.md).

Follows ``connect / acquire / get_data / disconnect``: with ``poll_interval_s=None`` nothing runs in the
background and every :meth:`VirtualAmp.acquire` produces the next ``chunk`` samples at once (tests);
otherwise a thread produces the samples that are due, in real time.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from hmavd.config import ValidatedConfig
from hmavd.errors import UserError
from hmavd.simulate import electrode_positions, noise_mixing

from .virtual_subject import (
    ACTICAP64,
    AR1Noise,
    PendingResponse,
    VirtualSubject,
    image_response,
    latent_for,
    model_at_rate,
    parse_code,
    render_chunk,
)

log = logging.getLogger(__name__)

__all__ = ["UNITS", "AmpSettings", "Onset", "VirtualAmp", "montage_names"]

#: LSL unit label -> factor from volts.
UNITS: dict[str, float] = {"volts": 1.0, "microvolts": 1e6}


@dataclass(frozen=True)
class AmpSettings(ValidatedConfig):
    """What the amplifier streams (see :class:`bci.cli_virtual_amp.VirtualAmpConfig` for the meanings)."""

    sfreq: float = 1000.0
    unit: str = "microvolts"
    montage: str = "acticap64"
    sample_index: bool = False
    chunk_ms: float = 10.0
    push_delay_s: float = 0.02
    partition: str = "test"
    seed: int = 0
    display_delay_s: float = 0.0
    photodiode: bool = False
    photodiode_on_s: float = 0.1

    def validate(self) -> None:
        if self.unit not in UNITS:
            raise UserError(f"unit: {self.unit!r} is not one of {sorted(UNITS)}; pick one (microvolts as most amps)")
        if not 100 <= self.sfreq <= 20000:
            raise UserError(f"sfreq: {self.sfreq} is outside 100 … 20000 Hz; use e.g. 500 or 1000")
        if self.partition not in ("training", "test"):
            raise UserError(f"partition: {self.partition!r} is not 'training' or 'test'; pick the block's image set")
        if self.chunk_ms <= 0 or self.push_delay_s < 0:
            raise UserError(f"chunk_ms/push_delay_s: {self.chunk_ms}/{self.push_delay_s} must be > 0 / >= 0")
        if not 0 <= self.display_delay_s <= 0.5 or self.photodiode_on_s <= 0:
            raise UserError(
                f"display_delay_s/photodiode_on_s: {self.display_delay_s}/{self.photodiode_on_s}; give a delay in "
                "0 … 0.5 s (a screen's input lag, e.g. 0.02) and an on time > 0 (the image duration, 0.1)"
            )


@dataclass(frozen=True)
class Onset:
    """A marker the amplifier answered: its code, timestamp (s), onset sample (the marker's), image, lost
    samples and ``shown``, the sample the simulated display showed the image (``sample`` + display delay)."""

    code: str
    t_s: float
    sample: int
    partition: str
    image: int
    lost: int
    shown: int


def montage_names(montage: str, subject_channels: tuple[str, ...]) -> tuple[str, ...]:
    """Streamed EEG channels: ``acticap64``, ``subject`` (the subject's own list) or comma-separated names.

    Every channel of the subject must be streamed (the decoder needs them); extra channels carry noise only.
    """
    if montage == "acticap64":
        names = ACTICAP64
    elif montage == "subject":
        names = subject_channels
    else:
        names = tuple(c.strip() for c in montage.split(",") if c.strip())
    missing = [c for c in subject_channels if c not in names]
    if missing or len(set(names)) != len(names):
        raise UserError(
            f"montage: {montage!r} lacks the subject's channels {missing[:4]} or repeats a name; use acticap64, "
            "subject, or a comma-separated list holding every simulated channel once"
        )
    electrode_positions(names)
    return tuple(names)


class VirtualAmp:
    """Simulated EEG of one :class:`VirtualSubject`, with its responses to the markers it receives.

    Parameters
    ----------
    subject : VirtualSubject
        At any rate; resampled to ``settings.sfreq``.
    settings : AmpSettings
    markers : object, optional
        A marker source with ``connect() / pull() -> [(t_s, code)] / disconnect()`` (an
        :class:`bci.markers.LSLMarkerSource`, or :class:`bci.markers.InMemoryMarkers` in tests), times on
        the LSL clock. ``None`` with ``marker_stream`` given: looked up in the background until found.
    eeg_stream : str
        LSL stream name of the EEG outlet ("" = no outlet: only :meth:`get_data`).
    marker_stream : str or None
        Name of the marker stream to answer when ``markers`` is ``None`` ("" = the first stream of type
        ``Markers``; ``None`` = no markers). It is looked up once the EEG outlet has a reader, so a
        presenter waiting for its first consumer starts only when the EEG is being recorded/decoded.
    poll_interval_s : float or None
        ``None`` = manual :meth:`acquire` (no thread); else the longest the thread sleeps (s).
    keep_record : bool
        Keep every streamed sample (stream units) and the noise-free signal (volts) for :meth:`get_data`.
    clock : callable
        Time source in seconds (``pylsl.local_clock`` by default).
    """

    def __init__(
        self,
        subject: VirtualSubject,
        settings: AmpSettings = AmpSettings(),
        markers: Any = None,
        eeg_stream: str = "",
        marker_stream: str | None = None,
        poll_interval_s: float | None = None,
        keep_record: bool = False,
        clock=None,
    ) -> None:
        self.settings = settings
        self.subject = model_at_rate(subject, settings.sfreq)
        self.sfreq = float(settings.sfreq)
        self.eeg_names = montage_names(settings.montage, subject.ch_names)
        self.rows = np.array([self.eeg_names.index(c) for c in subject.ch_names])  # subject channel -> stream row
        extra = (("Photo",) if settings.photodiode else ()) + (("sample_index",) if settings.sample_index else ())
        self.ch_names = (*self.eeg_names, *extra)
        self.delay_samples = int(round(settings.display_delay_s * self.sfreq))
        self.scale = UNITS[settings.unit]
        self.chunk = max(1, int(round(settings.chunk_ms * 1e-3 * self.sfreq)))
        rng = np.random.default_rng([settings.seed, subject.subject, 18])
        self._rng = rng
        mixing = noise_mixing(self.eeg_names, subject.noise_length_m, subject.noise_white_fraction)
        self.noise = AR1Noise(rng, mixing, subject.noise_ar, subject.noise_uv * 1e-6, self.sfreq)
        self.markers, self.eeg_stream, self.marker_stream = markers, eeg_stream, marker_stream
        self.poll_interval_s, self.keep_record = poll_interval_s, keep_record
        self.partition = settings.partition
        self.n_written = 0
        self.t0 = 0.0
        self.onsets: list[Onset] = []
        self.lost_samples = 0
        self.n_unknown = 0
        self._pending: list[PendingResponse] = []
        self._photo: list[PendingResponse] = []
        self._record: list[np.ndarray] = []
        self._signal: list[np.ndarray] = []
        self._outlet = None
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- interface -------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the outlet, connect the markers, fix ``t0``; start the thread unless manual."""
        import pylsl

        if self._clock is None:
            self._clock = pylsl.local_clock
        if self.eeg_stream:
            self._outlet = pylsl.StreamOutlet(self._info(), chunk_size=0, max_buffered=360)
        if self.markers is not None:
            self.markers.connect()
        elif self.marker_stream is not None:
            self._start(self._find_markers, "virtual-amp-markers")
        self.t0 = self._clock() + 0.1
        if self.poll_interval_s is not None:
            self._start(self._run, "virtual-amp")

    def acquire(self) -> int:
        """Answer new markers, then produce (and push) the samples that are due; returns how many."""
        self._take_markers()
        if self.poll_interval_s is None:
            n = self.chunk
        else:
            due = (self._clock() - self.settings.push_delay_s - self.t0) * self.sfreq
            n = int(np.floor(due)) + 1 - self.n_written
            if n < self.chunk:
                return 0
        start, stop = self.n_written, self.n_written + n
        with self._lock:
            signal = render_chunk(self._pending, start, stop, len(self.subject.ch_names))  # (C_subj, n) volts
            self._pending = [p for p in self._pending if p.stop > stop]
            photo = np.minimum(render_chunk(self._photo, start, stop, 1), 1.0)  # (1, n)
            self._photo = [p for p in self._photo if p.stop > stop]
        eeg = self.noise.next(n)  # (C_stream, n) volts
        eeg[self.rows] += signal
        out = eeg * self.scale
        if self.settings.photodiode:
            out = np.vstack([out, photo])
        if self.settings.sample_index:
            out = np.vstack([out, np.arange(start, stop, dtype=np.float64)[None]])
        out32 = np.ascontiguousarray(out.T, dtype=np.float32)  # (n, C)
        if self._outlet is not None:
            self._outlet.push_chunk(out32, (self.t0 + np.arange(start, stop) / self.sfreq).tolist())
        if self.keep_record:
            self._record.append(out32)
            self._signal.append(signal.astype(np.float32))
        self.n_written = stop
        return n

    def get_data(self, start: int = 0, stop: int | None = None, signal: bool = False) -> np.ndarray:
        """Streamed samples ``[start, stop)`` as ``(C, n)`` float32 in stream units (``keep_record=True``);
        ``signal=True``: the noise-free response part instead, ``(C_subject, n)`` volts."""
        if not self.keep_record:
            raise RuntimeError("get_data needs keep_record=True")
        parts = self._signal if signal else self._record
        data = np.concatenate(parts, axis=0 if not signal else 1) if parts else np.zeros((0, len(self.ch_names)))
        data = data if signal else data.T
        return data[:, start:stop]

    def disconnect(self) -> None:
        """Stop the threads, close the marker inlet and the outlet (idempotent)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads = []
        if self.markers is not None:
            self.markers.disconnect()
        self._outlet = None

    # -- helpers ---------------------------------------------------------------------------------
    def time_of(self, sample: int) -> float:
        """Timestamp of stream sample ``sample`` (s, LSL clock)."""
        return self.t0 + sample / self.sfreq

    def add_marker(self, t_s: float, code: str) -> Onset | None:
        """Answer one marker now: schedule its image's response at the sample nearest ``t_s``."""
        kind, image = parse_code(code)
        if kind == "block":
            self.partition = str(code).split(":", 1)[1]
            log.info("block marker %r: answering %s images from now on", code, self.partition)
            return None
        lat = latent_for(self.subject, self.partition, image, self._rng) if kind == "image" else None
        if lat is None:
            if self.n_unknown == 0:
                log.warning(
                    "marker %r names no %s image of the subject (1 … %d); no response",
                    code,
                    self.partition,
                    len(self.subject.latents[self.partition]),
                )
            self.n_unknown += 1
            return None
        sample = int(round((t_s - self.t0) * self.sfreq))
        shown = sample + self.delay_samples
        p = PendingResponse(shown + self.subject.model.window_offset, image_response(self.subject, lat))
        with self._lock:
            lost = int(min(max(self.n_written - p.start, 0), p.data.shape[1]))
            self._pending.append(p)
            if self.settings.photodiode:
                n_on = max(1, int(round(self.settings.photodiode_on_s * self.sfreq)))
                self._photo.append(PendingResponse(shown, np.ones((1, n_on))))
        self.lost_samples += lost
        if lost:
            log.warning("marker %r arrived %d samples too late; that part of its response is lost", code, lost)
        onset = Onset(str(code), float(t_s), sample, self.partition, int(image), lost, shown)
        self.onsets.append(onset)
        return onset

    def _take_markers(self) -> None:
        if self.markers is None:
            return
        for t_s, code in self.markers.pull():
            self.add_marker(t_s, code)

    def _info(self):
        import pylsl

        info = pylsl.StreamInfo(
            self.eeg_stream, "EEG", len(self.ch_names), self.sfreq, pylsl.cf_float32, source_id=self.eeg_stream
        )
        desc = info.desc()
        desc.append_child_value("manufacturer", "hmavd virtual amplifier (simulated subject)")
        chans = desc.append_child("channels")
        for name in self.ch_names:
            ch = chans.append_child("channel")
            ch.append_child_value("label", name)
            kind = {"sample_index": "MISC", "Photo": "AUX"}.get(name, "EEG")
            ch.append_child_value("type", kind)
            ch.append_child_value("unit", self.settings.unit if kind == "EEG" else "")
        return info

    def _start(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.acquire() == 0:
                next_due = self.t0 + (self.n_written + self.chunk - 1) / self.sfreq + self.settings.push_delay_s
                self._stop.wait(min(max(next_due - self._clock(), 0.0005), self.poll_interval_s or 0.01))

    def _find_markers(self) -> None:
        from .markers import LSLMarkerSource

        while self._outlet is not None and not self._outlet.have_consumers():  # nobody reads the EEG yet
            if self._stop.wait(0.1):
                return
        while not self._stop.is_set():
            src = LSLMarkerSource(self.marker_stream, resolve_timeout_s=1.0)
            try:
                src.connect()
            except UserError:
                continue
            log.info("answering the markers of %r", self.marker_stream)
            self.markers = src
            return
