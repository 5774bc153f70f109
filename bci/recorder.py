"""Session recording, written incrementally so a crash loses at most about a second.

A session folder::

    meta.json          ch_names, sfreq, dtype, first_index, segments (dejittered time lines), rewritten atomically
    eeg.f32            raw samples, float32, sample-major (n_samples, n_chans), appended
    markers.csv        t_s, code, label, concept (consumer clock), appended
    predictions.csv    one row per decoded epoch, appended

Files are flushed (and fsync-ed) at least every ``flush_s`` seconds. :func:`recording_to_fif` converts
a folder to a FIF file with a ``stim`` channel (integer codes at their onset samples) and annotations,
which ``hmavd-prepare`` and ``hmavd-replay`` read.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hmavd.errors import UserError
from hmavd.io import atomic_write_json

from .ringbuffer import SampleClock

log = logging.getLogger(__name__)

__all__ = ["SessionRecorder", "read_session", "recording_to_fif", "PREDICTION_FIELDS"]

FORMAT_VERSION = 1
PREDICTION_FIELDS = (
    "onset_index", "onset_s", "marker", "true_concept", "topk", "scores", "latency_ms", "top1_correct", "top5_correct",
    "epoch_latency_ms", "sample_index",
)  # fmt: skip


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
        self, path: str | Path, ch_names: Sequence[str], sfreq: float, first_index: int = 0, flush_s: float = 1.0,
        extra_meta: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
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
            "format_version": FORMAT_VERSION, "ch_names": self.ch_names, "sfreq": self.sfreq, "dtype": "float32",
            "first_index": self.first_index, "n_samples": 0, "segments": [], "created": time.time(),
            **(extra_meta or {}),
        }  # fmt: skip
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

    def write_eeg(self, data: np.ndarray) -> None:
        """Append ``data`` (C, n)."""
        self._eeg.write(np.ascontiguousarray(np.asarray(data, dtype=np.float32).T).tobytes())
        self.n_samples += int(data.shape[1])

    def write_marker(self, t_s: float, code: str, label: str = "", concept: str | None = None) -> None:
        self._mw.writerow([f"{t_s:.6f}", code, label, concept or ""])

    def write_prediction(self, msg: dict[str, Any]) -> None:
        """Append one ``"prediction"`` message (see :mod:`bci.engine`)."""
        topk = msg.get("topk") or []
        self._pw.writerow([
            msg.get("onset_index", ""), f"{msg.get('onset_s', float('nan')):.6f}", msg.get("marker", ""),
            msg.get("true_concept") or "", "|".join(c for c, _ in topk), "|".join(f"{s:.5f}" for _, s in topk),
            f"{msg.get('latency_ms', float('nan')):.3f}", _b(msg.get("top1_correct")), _b(msg.get("top5_correct")),
            f"{msg.get('epoch_latency_ms', float('nan')):.3f}", msg.get("sample_index", ""),
        ])  # fmt: skip

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


def _b(v: Any) -> str:
    return "" if v is None else str(int(bool(v)))


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


def read_session(path: str | Path) -> tuple[np.ndarray, dict[str, Any], list[tuple[int, str]]]:
    """Read a session folder: data (C, n) float32, meta, and markers as ``(sample, code)``.

    Markers are mapped to their nearest sample through the saved segments; markers outside the
    recorded data (or in a gap) are dropped with a log line.
    """
    path = Path(path)
    if not (path / "meta.json").exists():
        raise UserError(f"recording: {path} has no meta.json; give a folder written by the live recorder")
    meta = json.loads((path / "meta.json").read_text())
    n_chans = len(meta["ch_names"])
    raw = np.fromfile(path / "eeg.f32", dtype=np.float32)
    n = raw.size // n_chans  # a crash may leave a partial last sample
    data = raw[: n * n_chans].reshape(n, n_chans).T  # (C, n)
    events: list[tuple[int, str]] = []
    segs = meta.get("segments") or [[0, n, 0.0, 1.0 / meta["sfreq"]]]
    with open(path / "markers.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            t = float(row["t_s"])
            idx = None
            for start, cnt, t0, period in segs:
                k = int(round((t - t0) / period))
                if 0 <= k < cnt:
                    idx = int(start + k)
            if idx is None or idx >= n:
                log.info("marker %s at %.3f s lies outside the recorded data; dropped", row["code"], t)
                continue
            events.append((idx, row["code"]))
    return data, meta, events


def recording_to_fif(path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Convert a session folder to FIF (EEG in volts, ``misc`` for ``sample_index``, a ``stim`` channel)."""
    import mne

    data, meta, events = read_session(path)
    ch_names = list(meta["ch_names"])
    types = ["misc" if c.lower() in ("sample_index", "sample") else "stim" if c.lower() == "stim" else "eeg"
             for c in ch_names]  # fmt: skip
    stim = np.zeros((1, data.shape[1]))
    for idx, code in events:
        digits = "".join(ch for ch in code if ch.isdigit())
        if digits:
            stim[0, idx] = int(digits)
    if "stim" not in [c.lower() for c in ch_names]:
        ch_names, types = [*ch_names, "stim"], [*types, "stim"]
        data = np.concatenate([data.astype(np.float64), stim], axis=0)
    info = mne.create_info(ch_names, meta["sfreq"], types)
    raw = mne.io.RawArray(np.asarray(data, dtype=np.float64), info, verbose="error")
    if events:
        onsets = np.array([i for i, _ in events]) / meta["sfreq"]
        raw.set_annotations(mne.Annotations(onsets, np.zeros(len(events)), [c for _, c in events]))
    out = Path(out)
    raw.save(out, overwrite=overwrite, verbose="error")
    return out
