"""Session recording, written incrementally so a crash loses at most about a second.

The default is one XDF file per session (:class:`XDFSessionRecorder`, ``record_format=xdf``)::

    session.xdf        streams EEG (raw samples as received, dejittered timestamps), Markers (every code)
                       and Predictions (one string sample per decoded epoch), with stream headers (channel
                       labels, types, units; the session's settings in the EEG header's desc/hmavd_session),
                       clock offsets every 5 s, boundary chunks, and stream footers at a clean close
    predictions.csv    the same predictions as a table, appended

The older folder format (:class:`SessionRecorder`, ``record_format=folder``)::

    meta.json          ch_names, sfreq, dtype, first_index, segments (dejittered time lines), rewritten atomically
    eeg.f32            raw samples, float32, sample-major (n_samples, n_chans), appended
    markers.csv        t_s, code, label, concept (consumer clock), appended
    predictions.csv    one row per decoded epoch, appended

Both are flushed (and fsync-ed) at least every ``flush_s`` seconds. :mod:`bci.recording_io` reads
either back (``read_session``) and converts a session to FIF (``recording_to_fif``).
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hmavd.errors import UserError
from hmavd.io import atomic_write_json

from .messages import PredictionMessage
from .ringbuffer import SampleClock
from .xdf import CHANNEL_FORMATS, XDFWriter

log = logging.getLogger(__name__)

__all__ = [
    "SessionRecorder",
    "XDFSessionRecorder",
    "open_recorder",
    "prediction_row",
    "sample_times",
    "PREDICTION_FIELDS",
    "XDF_NAME",
]

FORMAT_VERSION = 1
XDF_NAME = "session.xdf"
PREDICTION_FIELDS = (
    "onset_index",
    "onset_s",
    "marker",
    "true_concept",
    "topk",
    "scores",
    "latency_ms",
    "top1_correct",
    "top5_correct",
    "epoch_latency_ms",
    "sample_index",
)


class SessionRecorder:
    """Appends raw EEG, markers and predictions to a session folder.

    Parameters
    ----------
    path : path
        Folder to create (must not hold a recording already).
    ch_names : sequence of str
    sfreq : float
        Nominal rate (Hz).
    first_index : int
        Absolute sample index (of the live source) of the first recorded sample.
    flush_s : float
        Longest time between flushes.
    """

    def __init__(
        self,
        path: str | Path,
        ch_names: Sequence[str],
        sfreq: float,
        first_index: int = 0,
        flush_s: float = 1.0,
        extra_meta: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        if (self.path / "meta.json").exists():
            raise UserError(f"record_dir: {self.path} already holds a recording; choose a new folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self.ch_names = list(ch_names)
        self.sfreq = float(sfreq)
        self.first_index = int(first_index)
        self.flush_s = flush_s
        self.n_samples = 0
        self.meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "ch_names": self.ch_names,
            "sfreq": self.sfreq,
            "dtype": "float32",
            "first_index": self.first_index,
            "n_samples": 0,
            "segments": [],
            "created": time.time(),
            **(extra_meta or {}),
        }
        self._eeg = open(self.path / "eeg.f32", "ab")  # noqa: SIM115 - kept open while recording
        self._markers = open(self.path / "markers.csv", "a", newline="")  # noqa: SIM115
        self._preds = open(self.path / "predictions.csv", "a", newline="")  # noqa: SIM115
        self._mw = csv.writer(self._markers)
        self._pw = csv.writer(self._preds)
        self._mw.writerow(["t_s", "code", "label", "concept"])
        self._pw.writerow(PREDICTION_FIELDS)
        self._last_flush = time.monotonic()
        self._clock: SampleClock | None = None
        self.flush()

    def write_eeg(self, data: np.ndarray, start: int | None = None) -> None:
        """Append ``data`` (C, n); ``start`` (its absolute first index) is not needed by this format."""
        self._eeg.write(np.ascontiguousarray(np.asarray(data, dtype=np.float32).T).tobytes())
        self.n_samples += int(data.shape[1])

    def write_marker(self, t_s: float, code: str, label: str = "", concept: str | None = None) -> None:
        self._mw.writerow([f"{t_s:.6f}", code, label, concept or ""])

    def write_prediction(self, msg: PredictionMessage, t_s: float | None = None) -> None:
        """Append one ``"prediction"`` message (:class:`bci.messages.PredictionMessage`)."""
        self._pw.writerow(prediction_row(msg))

    def maybe_flush(self, clock: SampleClock | None = None) -> None:
        """Flush when ``flush_s`` has passed since the last flush."""
        if clock is not None:
            self._clock = clock
        if time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        for fh in (self._eeg, self._markers, self._preds):
            fh.flush()
            os.fsync(fh.fileno())
        self.meta["n_samples"] = self.n_samples
        if self._clock is not None:
            self.meta["segments"] = _segments(self._clock, self.first_index)
        atomic_write_json(self.path / "meta.json", self.meta)
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._eeg.closed:
            return
        self.flush()
        for fh in (self._eeg, self._markers, self._preds):
            fh.close()


class XDFSessionRecorder:
    """Records a session as ``<path>/session.xdf`` (EEG, Markers, Predictions) plus ``predictions.csv``.

    Same calls as :class:`SessionRecorder`. EEG timestamps are the dejittered sample times of the
    live source's :class:`~bci.ringbuffer.SampleClock`; like LabRecorder, each stream is stored on its
    own clock (consumer time minus the LSL clock offset the source applied) with a ClockOffset chunk
    at the start and every ``offset_every_s``, so ``pyxdf.load_xdf`` (clock synchronisation on) puts
    all three streams back on the consumer's clock. Predictions are stamped with their epoch's onset.

    Parameters
    ----------
    path : path
        Session folder to create (must not hold a recording already).
    ch_names : sequence of str
    sfreq : float
        Nominal rate (Hz).
    clock : SampleClock
        The live source's clock (sample index → consumer time, s).
    first_index : int
        Absolute sample index of the first recorded sample.
    flush_s : float
        Longest time between flushes (0.5 s: a ``kill -9`` loses at most about that much).
    dtype : str
        Sample format of the EEG stream (float32, float64, int16, int32).
    ch_types, ch_units : sequence of str, optional
        Per channel (default: ``misc`` / no unit for ``sample_index``-like counters, else ``EEG`` / ``volts``).
    eeg_stream, marker_stream : str
        Names of the recorded streams.
    eeg_offset, marker_offset : callable, optional
        Current LSL clock offset (s) of the EEG / marker inlet (default 0).
    extra_meta : dict, optional
        Session settings, stored in the EEG stream header's ``desc/hmavd_session``.
    """

    def __init__(
        self,
        path: str | Path,
        ch_names: Sequence[str],
        sfreq: float,
        clock: SampleClock,
        first_index: int = 0,
        flush_s: float = 0.5,
        dtype: str = "float32",
        ch_types: Sequence[str] | None = None,
        ch_units: Sequence[str] | None = None,
        eeg_stream: str = "eeg",
        marker_stream: str = "markers",
        eeg_offset: Callable[[], float] | None = None,
        marker_offset: Callable[[], float] | None = None,
        extra_meta: dict[str, Any] | None = None,
        offset_every_s: float = 5.0,
        boundary_every_s: float = 10.0,
    ) -> None:
        self.path = Path(path)
        if (self.path / XDF_NAME).exists() or (self.path / "meta.json").exists():
            raise UserError(f"record_dir: {self.path} already holds a recording; choose a new folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self.ch_names, self.sfreq, self.clock = list(ch_names), float(sfreq), clock
        self.first_index, self.flush_s, self.n_samples = int(first_index), float(flush_s), 0
        self._eeg_off = eeg_offset or (lambda: 0.0)
        self._mrk_off = marker_offset or (lambda: 0.0)
        self.offset_every_s, self.boundary_every_s = float(offset_every_s), float(boundary_every_s)
        types = list(ch_types) if ch_types else ["misc" if _is_counter(c) else "EEG" for c in self.ch_names]
        units = list(ch_units) if ch_units else ["" if t == "misc" else "volts" for t in types]
        chans = [{"label": c, "type": t, "unit": u} for c, t, u in zip(self.ch_names, types, units)]
        meta = {"format_version": FORMAT_VERSION, "first_index": self.first_index, **(extra_meta or {})}
        header = {"hmavd_session": {"stream": eeg_stream}}
        self.writer = XDFWriter(self.path / XDF_NAME, header=header, background=True)  # the disk never blocks
        self.fmt = XDFWriter.channel_format_of(dtype)
        self.dtype = np.dtype(CHANNEL_FORMATS[self.fmt])
        self._add_streams(eeg_stream, marker_stream, {"channels": {"channel": chans}, "hmavd_session": meta})
        self._preds = open(self.path / "predictions.csv", "a", newline="")  # noqa: SIM115 - kept open while recording
        self._pw = csv.writer(self._preds)
        self._pw.writerow(PREDICTION_FIELDS)
        self._now: float | None = None  # consumer time of the newest recorded sample
        self._t_offsets = self._t_boundary = self._last_flush = time.monotonic()
        self.flush()

    def _add_streams(self, eeg_stream: str, marker_stream: str, eeg_desc: dict[str, Any]) -> None:
        """The stream headers: EEG (``eeg_desc``: channels and session settings), Markers, Predictions."""
        w, n_chans = self.writer, len(self.ch_names)
        self.eeg_id = w.add_stream(eeg_stream, "EEG", n_chans, self.sfreq, self.fmt, eeg_desc, source_id=eeg_stream)
        code_desc = {"channels": {"channel": [{"label": "code", "type": "Markers"}]}}
        self.marker_id = w.add_stream(marker_stream, "Markers", 1, 0.0, "string", code_desc, source_id=marker_stream)
        pred_desc = {"channels": {"channel": [{"label": f, "type": "prediction"} for f in PREDICTION_FIELDS]}}
        self.pred_id = w.add_stream(
            "hmavd-predictions",
            "Predictions",
            len(PREDICTION_FIELDS),
            0.0,
            "string",
            pred_desc,
            source_id=f"{eeg_stream}-predictions",
        )

    def write_eeg(self, data: np.ndarray, start: int | None = None) -> None:
        """Append ``data`` (C, n) whose first sample has absolute index ``start`` (default: contiguous)."""
        n = int(data.shape[1])
        if n == 0:
            return
        start = self.first_index + self.n_samples if start is None else int(start)
        t = sample_times(self.clock, start, n)
        first = self._now is None
        self._now = float(t[-1])
        self.writer.write_samples(self.eeg_id, np.asarray(data, dtype=self.dtype).T, t - self._eeg_off())
        self.n_samples += n
        if first:
            self._write_offsets()

    def write_marker(self, t_s: float, code: str, label: str = "", concept: str | None = None) -> None:
        """Record a marker at ``t_s`` (consumer clock, s)."""
        self.writer.write_samples(self.marker_id, [[str(code)]], [t_s - self._mrk_off()])

    def write_prediction(self, msg: PredictionMessage, t_s: float | None = None) -> None:
        """Record one ``"prediction"`` message, stamped ``t_s`` (its onset, consumer clock)."""
        row = prediction_row(msg)
        self._pw.writerow(row)
        stamp = t_s if t_s is not None else (self._now if self._now is not None else 0.0)
        self.writer.write_samples(self.pred_id, [row], [stamp])

    def _write_offsets(self) -> None:
        if self._now is None:
            return
        for sid, off in ((self.eeg_id, self._eeg_off()), (self.marker_id, self._mrk_off()), (self.pred_id, 0.0)):
            self.writer.write_clock_offset(sid, self._now - off, off)
        self._t_offsets = time.monotonic()

    def maybe_flush(self, clock: SampleClock | None = None) -> None:
        """Flush when ``flush_s`` has passed; clock offsets every ``offset_every_s``, boundaries every 10 s."""
        now = time.monotonic()
        if now - self._t_offsets >= self.offset_every_s:
            self._write_offsets()
        if now - self._t_boundary >= self.boundary_every_s:
            self.writer.write_boundary()
            self._t_boundary = now
        if now - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        self._preds.flush()
        os.fsync(self._preds.fileno())
        self.writer.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Final clock offsets, stream footers, flush and close (idempotent)."""
        if self.writer.closed:
            return
        self._write_offsets()
        self._preds.close()
        self.writer.close()


def _is_counter(name: str) -> bool:
    return name.lower() in ("sample_index", "sample", "counter", "stim", "trigger")


def sample_times(clock: SampleClock, start: int, n: int) -> np.ndarray:
    """Dejittered times (s) of samples ``start … start + n - 1`` from the clock's segments, shape (n,)."""
    idx = np.arange(start, start + n, dtype=np.int64)
    out = np.full(n, np.nan)
    for seg in reversed(list(clock.segments)):
        if seg.stop <= start:
            break
        if seg.start >= start + n:
            continue
        t0, period = seg.line()
        sel = (idx >= seg.start) & (idx < seg.stop)
        out[sel] = t0 + (idx[sel] - seg.start) * period
    if np.isnan(out).any():  # before the first segment (never for received samples): extrapolate nominally
        k = np.flatnonzero(~np.isnan(out))
        ref = (idx[k[0]], out[k[0]]) if len(k) else (start, 0.0)
        out = np.where(np.isnan(out), ref[1] + (idx - ref[0]) / clock.sfreq, out)
    return out


def open_recorder(
    cfg: Any, path: str | Path, source: Any, first_index: int, meta: dict[str, Any], markers: Any = None
) -> XDFSessionRecorder | SessionRecorder:
    """The recorder ``cfg.record_format`` names (``xdf`` or ``folder``) for a connected live ``source``.

    The XDF header records ``meta`` plus every setting of ``cfg`` (a :class:`bci.live_config.LiveConfig`)
    under ``hmavd_session/settings``; channel units are the stream's labels (``stream_units`` where a
    channel has none), types its ``type`` labels.
    """
    from hmavd.config import config_to_dict

    desc = source.description
    fmt = str(getattr(cfg, "record_format", "xdf"))
    if fmt == "folder":
        return SessionRecorder(path, desc.ch_names, desc.sfreq, first_index=first_index, extra_meta=meta)
    if fmt != "xdf":
        raise UserError(f"record_format: {fmt!r} is not a recording format; use xdf (default) or folder")
    n = len(desc.ch_names)
    units = list(getattr(desc, "ch_units", ()) or ())
    types = list(getattr(desc, "ch_types", ()) or ())
    if len(units) == n:
        units = [u or getattr(cfg, "stream_units", "") for u in units]
    return XDFSessionRecorder(
        path,
        desc.ch_names,
        desc.sfreq,
        source.clock,
        first_index=first_index,
        dtype=desc.dtype,
        ch_units=units if len(units) == n and any(units) else None,
        ch_types=types if len(types) == n and all(types) else None,
        eeg_stream=desc.name,
        marker_stream=str(getattr(markers, "name", "") or "markers"),
        eeg_offset=lambda: _offset_of(source),
        marker_offset=lambda: _offset_of(markers),
        extra_meta={**meta, "settings": config_to_dict(cfg)},
    )


def _offset_of(part: Any) -> float:
    """The LSL clock offset an LSL source/marker inlet currently applies (0 for in-process sources)."""
    off = getattr(part, "_offset", None)
    return float(getattr(off, "offset_s", 0.0) or 0.0)


def _b(v: Any) -> str:
    return "" if v is None else str(int(bool(v)))


def prediction_row(msg: PredictionMessage) -> list[str]:
    """One ``"prediction"`` message as strings in :data:`PREDICTION_FIELDS` order."""
    topk = msg.get("topk") or []
    return [
        str(v)
        for v in (
            msg.get("onset_index", ""),
            f"{msg.get('onset_s', float('nan')):.6f}",
            msg.get("marker", ""),
            msg.get("true_concept") or "",
            "|".join(c for c, _ in topk),
            "|".join(f"{s:.5f}" for _, s in topk),
            f"{msg.get('latency_ms', float('nan')):.3f}",
            _b(msg.get("top1_correct")),
            _b(msg.get("top5_correct")),
            f"{msg.get('epoch_latency_ms', float('nan')):.3f}",
            msg.get("sample_index", ""),
        )
    ]


def _segments(clock: SampleClock, first_index: int) -> list[list[float]]:
    """``[start, n, t0, period]`` per segment, indices relative to the recording's first sample."""
    out = []
    for seg in list(clock.segments):
        if seg.stop <= first_index:
            continue
        t0, period = seg.line()
        start = max(seg.start, first_index)
        out.append([start - first_index, seg.stop - start, t0 + (start - seg.start) * period, period])
    return out
