"""Qt-free state behind the widgets: the scope's rolling buffer, running accuracy, status text, thumbnails.

The engine process sends plain-dict messages (see :mod:`bci.engine`); these helpers turn them into
what the widgets draw. Everything here is pure Python/numpy and unit-tested without Qt.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ScopeBuffer",
    "is_data_channel",
    "center_channels",
    "stack_traces",
    "channel_offsets",
    "scale_for_display",
    "robust_scale_uv",
    "RunningAccuracy",
    "HistoryEntry",
    "PredictionHistory",
    "RepetitionCurve",
    "chance_levels",
    "format_status",
    "ThumbnailIndex",
]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class ScopeBuffer:
    """The last ``window_s`` seconds of decimated EEG for the scope, plus marker ticks.

    Parameters
    ----------
    n_chans : int
    sfreq : float
        Rate of the scope data in Hz (the engine's ``scope_sfreq``).
    window_s : float
        Seconds shown.

    Notes
    -----
    Chunks are placed by their start time ``t0_s``: a chunk that starts after the end of the buffer
    (a gap in the stream) is preceded by NaNs, so the gap shows as a break in the curves, and a
    chunk that overlaps already-drawn data overwrites it.
    """

    def __init__(self, n_chans: int, sfreq: float, window_s: float = 5.0) -> None:
        if n_chans < 1 or sfreq <= 0 or window_s <= 0:
            raise ValueError(f"ScopeBuffer needs n_chans>=1, sfreq>0, window_s>0; got {n_chans}, {sfreq}, {window_s}")
        self.n_chans, self.sfreq, self.window_s = int(n_chans), float(sfreq), float(window_s)
        self.n_times = max(2, int(round(window_s * sfreq)))
        self.data = np.full((self.n_chans, self.n_times), np.nan, dtype=np.float32)  # (C, n)
        self.t_end_s: float | None = None  # time just after the last sample held
        self.markers: deque[tuple[float, str]] = deque()
        self.version = 0  # bumped on every change; the widget redraws when it moved

    def times(self) -> np.ndarray:
        """Time (s) of each column, (n,) float64; the last column is the newest sample."""
        end = 0.0 if self.t_end_s is None else self.t_end_s
        return end - (self.n_times - np.arange(self.n_times)) / self.sfreq

    def append(self, data: np.ndarray, t0_s: float, markers: Iterable[tuple[float, str]] = ()) -> None:
        """Add a chunk ``data`` (C, n) whose first sample is at ``t0_s`` seconds, and its marker ticks."""
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] != self.n_chans:
            raise ValueError(f"scope chunk must be ({self.n_chans}, n), got {data.shape}")
        n = data.shape[1]
        if n:
            if self.t_end_s is None:
                self.t_end_s = float(t0_s)
            gap = int(round((t0_s - self.t_end_s) * self.sfreq))  # samples missing (>0) or overlapping (<0)
            if gap < -self.n_times or gap > self.n_times:  # stream restarted or a long outage: start over
                self.data.fill(np.nan)
                self.t_end_s, gap = float(t0_s), 0
            if gap < 0:  # overlap: overwrite the tail
                ov = min(-gap, n)
                self.data[:, self.n_times - (-gap) : self.n_times - (-gap) + ov] = data[:, :ov]
                data, n, gap = data[:, ov:], n - ov, 0
            shift = gap + n
            if shift >= self.n_times:
                self.data.fill(np.nan)
                keep = min(n, self.n_times)
                self.data[:, self.n_times - keep :] = data[:, n - keep :]
            elif shift > 0:
                self.data[:, :-shift] = self.data[:, shift:]
                self.data[:, self.n_times - shift : self.n_times - n] = np.nan
                if n:
                    self.data[:, self.n_times - n :] = data
            self.t_end_s += shift / self.sfreq
        for t, label in markers:
            self.markers.append((float(t), str(label)))
        if self.t_end_s is not None:
            t_min = self.t_end_s - self.window_s
            while self.markers and self.markers[0][0] < t_min:
                self.markers.popleft()
        self.version += 1


_NON_DATA_NAMES = {"sample_index", "sample", "stim", "trigger", "status", "marker", "markers", "events"}


def is_data_channel(name: str) -> bool:
    """False for counter/trigger channels (``sample_index``, ``stim``, ``STI 014``, ``Status`` …) the
    scope's "all" leaves out: drawn at EEG scale they are meaningless lines."""
    n = name.strip().lower()
    return n not in _NON_DATA_NAMES and not n.startswith("sti")


def center_channels(data: np.ndarray) -> np.ndarray:
    """Subtract each channel's mean over the finite samples (the display's DC removal).

    Parameters
    ----------
    data : ndarray, (C, n)
        May hold NaN (gaps); all-NaN channels stay NaN.

    Returns
    -------
    ndarray, (C, n) float32
    """
    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    count = finite.sum(axis=1, keepdims=True)
    total = np.where(finite, data, 0.0).sum(axis=1, keepdims=True, dtype=np.float64)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return data - mean.astype(np.float32)


def stack_traces(y: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lay several channels end to end as one polyline for a single curve item.

    Parameters
    ----------
    y : ndarray, (C, n)
        Display values (slot units), NaN where there is no data.
    offsets : ndarray, (C,)
        Baseline of each channel.

    Returns
    -------
    values : ndarray, (C * n,) float32
        ``y + offset`` channel after channel; NaN replaced by the baseline (never drawn).
    connect : ndarray, (C * n,) int32
        1 where a point joins the next one: both finite and in the same channel (pyqtgraph's
        ``connect`` array), so gaps and channel boundaries are not drawn.
    """
    y = np.asarray(y, dtype=np.float32)
    off = np.asarray(offsets, dtype=np.float32)[:, None]
    finite = np.isfinite(y)
    values = np.where(finite, y + off, off)
    connect = np.zeros(y.shape, dtype=np.int32)
    connect[:, :-1] = finite[:, :-1] & finite[:, 1:]
    return values.ravel(), connect.ravel()


def channel_offsets(n_shown: int, spacing: float = 1.0) -> np.ndarray:
    """Vertical offset of each shown channel, first channel on top: (n_shown,) float64."""
    return (n_shown - 1 - np.arange(n_shown)) * float(spacing)


def scale_for_display(data: np.ndarray, scale_uv: float, unit_v: float = 1.0) -> np.ndarray:
    """EEG → channel-slot heights: ``scale_uv`` microvolts span one slot between neighbouring channels.

    Parameters
    ----------
    data : ndarray, (C, n)
        EEG in units of ``unit_v`` volts (1.0 for volts, 1e-6 for µV).
    scale_uv : float
        µV per channel slot (> 0).

    Returns
    -------
    ndarray, (C, n) float32
    """
    if scale_uv <= 0:
        raise ValueError(f"scale_uv must be > 0, got {scale_uv}")
    return np.asarray(data, dtype=np.float32) * np.float32(unit_v / (scale_uv * 1e-6))


def robust_scale_uv(data: np.ndarray, unit_v: float = 1.0) -> float | None:
    """A scale (µV per slot) of 6 × the median channel std, for an "auto scale" button; None if no data."""
    data = np.asarray(data, dtype=np.float64)
    if data.size == 0:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
        std = np.nanstd(data, axis=-1) * unit_v / 1e-6  # (C,) µV
    std = std[np.isfinite(std) & (std > 0)]
    if std.size == 0:
        return None
    return float(6.0 * np.median(std))


class RunningAccuracy:
    """Running top-1/top-5 accuracy over predictions whose true concept is known."""

    def __init__(self) -> None:
        self.n = self.n_top1 = self.n_top5 = 0

    def update(self, top1_correct: bool | None, top5_correct: bool | None) -> None:
        if top1_correct is None and top5_correct is None:
            return
        self.n += 1
        self.n_top1 += int(bool(top1_correct))
        self.n_top5 += int(bool(top5_correct) or bool(top1_correct))

    @property
    def top1(self) -> float | None:
        return self.n_top1 / self.n if self.n else None

    @property
    def top5(self) -> float | None:
        return self.n_top5 / self.n if self.n else None

    def text(self, n_chance: int | None = None) -> str:
        if not self.n:
            return "accuracy: – (markers carry no true concept yet)"
        chance = f"  (chance {100 / n_chance:.1f} % / {min(500 / n_chance, 100):.1f} %)" if n_chance else ""
        return f"top-1 {100 * self.top1:.1f} %  top-5 {100 * self.top5:.1f} %  over {self.n}{chance}"


@dataclass(frozen=True)
class HistoryEntry:
    """One row of the prediction history."""

    onset_s: float
    predicted: str
    score: float
    true_concept: str | None
    top1_correct: bool | None
    top5_correct: bool | None
    latency_ms: float

    @classmethod
    def from_message(cls, msg: Mapping[str, Any]) -> HistoryEntry:
        topk = list(msg.get("topk") or [])
        pred, score = (str(topk[0][0]), float(topk[0][1])) if topk else ("–", float("nan"))
        return cls(
            onset_s=float(msg.get("onset_s", float("nan"))),
            predicted=pred,
            score=score,
            true_concept=msg.get("true_concept"),
            top1_correct=msg.get("top1_correct"),
            top5_correct=msg.get("top5_correct"),
            latency_ms=float(msg.get("latency_ms", float("nan"))),
        )

    def mark(self) -> str:
        """✓ top-1 hit, ~ top-5 hit, ✗ miss, blank when the truth is unknown."""
        if self.top1_correct:
            return "✓"
        if self.top5_correct:
            return "~"
        if self.top1_correct is False or self.top5_correct is False:
            return "✗"
        return ""


class PredictionHistory:
    """The newest ``max_rows`` predictions (newest first) and the running accuracy over all of them.

    Parameters
    ----------
    max_rows : int
        Entries kept (the accuracy counts every prediction).
    """

    def __init__(self, max_rows: int = 50) -> None:
        self.max_rows = int(max_rows)
        self.entries: deque[HistoryEntry] = deque(maxlen=self.max_rows)
        self.accuracy = RunningAccuracy()
        self.n_concepts: int | None = None

    def reset(self, n_concepts: int | None = None) -> None:
        """Forget every prediction; ``n_concepts`` gives the chance level of the summary."""
        self.entries.clear()
        self.accuracy = RunningAccuracy()
        self.n_concepts = n_concepts

    def add(self, msg: Mapping[str, Any]) -> HistoryEntry:
        """Count one ``prediction`` message; returns its row."""
        entry = HistoryEntry.from_message(msg)
        self.accuracy.update(entry.top1_correct, entry.top5_correct)
        self.entries.appendleft(entry)
        return entry

    def summary(self) -> str:
        return self.accuracy.text(self.n_concepts)


def chance_levels(n_concepts: int | None) -> tuple[float, float] | None:
    """Top-1 and top-5 chance accuracy (fractions) among ``n_concepts`` candidates; None when unknown."""
    if not n_concepts:
        return None
    return 1.0 / n_concepts, min(5.0 / n_concepts, 1.0)


@dataclass(frozen=True)
class RepetitionCurve:
    """Top-1/top-5 accuracy against the number of repetitions averaged (a status message's ``accumulated``).

    Attributes
    ----------
    k : ndarray, (n,) int
        Repetitions averaged, increasing.
    top1, top5 : ndarray, (n,) float
        Fraction of images whose k-repetition average ranks the true concept first / in the top 5.
    n_images : ndarray, (n,) int
        Images that reached ``k`` repetitions (each point's sample size).
    mode : str
        The average (``epochs`` or ``embeddings``; :mod:`bci.accumulate`).
    images, max_reps : int
        Images seen so far, most repetitions of one image.
    """

    k: np.ndarray
    top1: np.ndarray
    top5: np.ndarray
    n_images: np.ndarray
    mode: str = ""
    images: int = 0
    max_reps: int = 0

    @classmethod
    def from_report(cls, report: Mapping[str, Any] | None) -> RepetitionCurve | None:
        """From :meth:`bci.accumulate.RepetitionAccumulator.report`; None when it is missing or empty."""
        report = report or {}
        points = sorted(report.get("curve") or (), key=lambda p: int(p["k"]))
        if not points:
            return None
        return cls(
            k=np.array([int(p["k"]) for p in points]),
            top1=np.array([float(p["top1"]) for p in points]),
            top5=np.array([float(p["top5"]) for p in points]),
            n_images=np.array([int(p.get("n_images", 0)) for p in points]),
            mode=str(report.get("mode", "")),
            images=int(report.get("n_images", 0)),
            max_reps=int(report.get("max_reps", 0)),
        )

    def text(self) -> str:
        """One line: the newest point and how many images the curve rests on."""
        mode = f" ({self.mode} averaged)" if self.mode else ""
        return (
            f"k={int(self.k[-1])}: top-1 {100 * self.top1[-1]:.1f} % / top-5 {100 * self.top5[-1]:.1f} % over "
            f"{int(self.n_images[-1])} images{mode}; {self.images} images seen, up to {self.max_reps} repetitions"
        )


def _fmt_ms(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else f"{v:.1f}"


def format_status(msg: Mapping[str, Any], nominal_sfreq: float | None = None, display_fps: float | None = None) -> str:
    """One status-bar line from a ``status`` message.

    Shows measured (and nominal) sampling rate, p50/p99 latency, dropped samples, epoch count,
    rejected epochs with their reasons, the window's drawing rate (``display_fps`` frames/s) and
    whether a recording is running.
    """
    rate = msg.get("sfreq_measured")
    rate_s = "–" if rate is None else f"{float(rate):.1f} Hz"
    if nominal_sfreq:
        rate_s += f" (nominal {nominal_sfreq:g})"
    rejected: Mapping[str, int] = msg.get("rejected") or {}
    n_rej = int(sum(int(v) for v in rejected.values()))
    reasons = ", ".join(f"{k} {int(v)}" for k, v in sorted(rejected.items(), key=lambda kv: -int(kv[1])) if v)
    rej_s = f"rejected {n_rej}" + (f" ({reasons})" if reasons else "")
    parts = [
        f"rate {rate_s}",
        f"latency p50 {_fmt_ms(msg.get('latency_p50_ms'))} / p99 {_fmt_ms(msg.get('latency_p99_ms'))} ms",
        f"dropped {int(msg.get('dropped_samples') or 0)}",
        f"epochs {int(msg.get('n_epochs') or 0)}",
        rej_s,
    ]
    if display_fps is not None:
        parts.append(f"display {display_fps:.0f} fps")
    mv = msg.get("mvnn")  # bci.online_mvnn: the session's own whitening
    if mv:
        if mv["source"] == "online":
            changed = f", changed at epoch {mv['changed_at_epoch']}" if mv.get("changed_at_epoch") else ""
            frozen = " (frozen)" if mv.get("frozen") else ""
            parts.append(f"MVNN online, {mv['n_epochs']} epochs{frozen}{changed}")
        else:
            parts.append(f"MVNN {mv['source']} (warm-up {mv['n_epochs']}/{mv['warmup_epochs']})")
    acc = msg.get("accumulated")  # bci.accumulate: accuracy of k-repetition averages
    if acc and acc.get("curve"):
        last = acc["curve"][-1]
        parts.append(f"averaged k={last['k']}: top-1 {100 * last['top1']:.1f} % / top-5 {100 * last['top5']:.1f} %")
    if msg.get("recording"):
        parts.append("● REC")
    return "  |  ".join(parts)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


class ThumbnailIndex:
    """Maps concept names to a stimulus image file, when the images are on disk.

    Understands the ThingsEEG2 layout (``<image_dir>/{test,training}_images/00001_aircraft_carrier/*.jpg``),
    a flat folder of concept folders, or files named after the concept (``aircraft_carrier.png``).
    Concept names are matched ignoring case, digits prefixes, spaces and underscores.

    Parameters
    ----------
    image_dir : str or Path or None
        Root to search; ``None``/missing gives an empty index.
    concepts : sequence of str, optional
        Only index these (faster on the 1854-concept training set).
    """

    def __init__(self, image_dir: str | Path | None, concepts: Sequence[str] | None = None) -> None:
        self.paths: dict[str, Path] = {}
        if not image_dir:
            return
        root = Path(image_dir)
        if not root.is_dir():
            return
        wanted = {_norm(c) for c in concepts} if concepts is not None else None
        # the test set first: its images are the ones shown during the test session
        roots = [r for r in (root / "test_images", root / "training_images") if r.is_dir()] or [root]
        for r in roots:
            for path in sorted(r.rglob("*")):
                if path.suffix.lower() not in _IMAGE_SUFFIXES or not path.is_file():
                    continue
                for name in (path.parent.name, path.stem):
                    head, sep, tail = name.partition("_")
                    key = _norm(tail if sep and head.isdigit() else name)
                    if (wanted is None or key in wanted) and key not in self.paths:
                        self.paths[key] = path
                        break
                if wanted is not None and len(self.paths) == len(wanted):
                    return  # every concept has its image: no need to walk the rest

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, concept: str) -> Path | None:
        """The image file for ``concept`` or ``None``."""
        return self.paths.get(_norm(concept))
