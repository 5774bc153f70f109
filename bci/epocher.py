"""Online epoching: markers → raw windows → exactly the offline transforms (A's functions) + MVNN.

An epoch is cut as soon as its last sample has arrived. A marker whose data have not arrived waits;
one whose data never arrive within ``marker_timeout_s`` is rejected (``"timeout"``). Rejections, each
logged and counted by reason: ``nan`` (NaN/inf samples), ``flat`` (a channel with peak-to-peak
≤ ``flat_ptp``), ``clipped`` (``|x| ≥ clip_abs``, or a channel stuck at its extreme for ≥ ``clip_run``
samples), ``straddles_gap`` (the window crosses an outage), ``marker_in_gap`` (the onset falls in an
outage), ``before_stream`` / ``too_old`` (data not held).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hmavd.config import ValidatedConfig
from hmavd.errors import UserError
from hmavd.preprocessing.presets import PreprocessPreset
from hmavd.preprocessing.transforms import (
    apply_whitening,
    epoch_window_samples,
    preprocess_epoch,
    preprocessed_times,
)

from .early_transform import EarlyTransform, LateEpoch, Prepared, split_quality_reason
from .markers import Marker
from .sources import EEGSource

log = logging.getLogger(__name__)

__all__ = [
    "RejectConfig",
    "Epoch",
    "OnlineEpocher",
    "make_transform",
    "load_whitening",
    "read_whitening",
    "quality_reason",
]


@dataclass(frozen=True)
class RejectConfig(ValidatedConfig):
    """Thresholds of the epoch quality checks (on the picked raw channels, stream units)."""

    flat_ptp: float = 0.0
    clip_abs: float = 0.0  # 0 = off
    clip_run: int = 20  # 0 = off

    def validate(self) -> None:
        for name, hint in (
            ("flat_ptp", "0 = only exactly flat channels"),
            ("clip_abs", "0 = off"),
            ("clip_run", "samples at the rail; 0 = off"),
        ):
            if getattr(self, name) < 0:
                raise UserError(f"{name}: {getattr(self, name)} must be >= 0 ({hint})")


@dataclass
class Epoch:
    """One cut, transformed epoch.

    Attributes
    ----------
    data : ndarray, shape (n_chans, n_times)
        float32, preprocessed and whitened (the model's input).
    onset_index : int
        Absolute sample index (received samples) of the onset.
    onset_s : float
        Dejittered onset time (consumer clock, s).
    last_arrival_s : float
        ``time.perf_counter()`` when the window's last sample arrived.
    ready_s : float
        ``time.perf_counter()`` when the epoch was ready.
    """

    marker: Marker
    onset_index: int
    onset_s: float
    data: np.ndarray
    last_arrival_s: float
    ready_s: float
    extra: dict = field(default_factory=dict)


def quality_reason(x: np.ndarray, reject: RejectConfig) -> str | None:
    """Why a raw epoch ``x`` (C, T) is unusable (``"nan"``, ``"flat"``, ``"clipped"``) or ``None``."""
    if not np.isfinite(x).all():
        return "nan"
    hi, lo = x.max(axis=1), x.min(axis=1)  # (C,)
    if ((hi - lo) <= reject.flat_ptp).any():
        return "flat"
    if reject.clip_abs > 0 and max(float(hi.max()), -float(lo.min())) >= reject.clip_abs:
        return "clipped"
    if reject.clip_run > 0:
        at_ext = (x == hi[:, None]) | (x == lo[:, None])  # (C, T)
        # cheap pre-check: a channel needs >= clip_run samples at an extreme to hold one that long;
        # real data reach each extreme about once, so the full check below rarely runs (live hot path)
        if (at_ext.sum(axis=1) >= reject.clip_run).any():
            same = np.diff(x, axis=1) == 0  # (C, T-1)
            if ((same & at_ext[:, 1:]).sum(axis=1) >= reject.clip_run - 1).any():
                return "clipped"
    return None


def read_whitening(path: str, session: int | None = None) -> tuple[np.ndarray, list[str] | None]:
    """The MVNN matrix (C, C) of an ``mvnn.npz``/``.npy`` and the file's ``ch_names`` (``None`` if unlisted).

    Accepts an ``.npz`` (``whitening`` / ``whitening_matrices`` / first array: (C, C) or
    (n_sessions, C, C)) or ``.npy``; with several sessions, ``session`` picks one (default: their mean).
    """
    names: list[str] | None = None
    try:
        with np.load(path, allow_pickle=False) as z:
            if isinstance(z, np.ndarray):
                w = z
            else:
                key = next((k for k in ("whitening", "whitening_matrices", "W") if k in z.files), z.files[0])
                w = z[key]
                names = [str(c) for c in z["ch_names"]] if "ch_names" in z.files else None
    except AttributeError:
        w = np.load(path, allow_pickle=False)
    except (OSError, ValueError, IndexError) as err:
        raise UserError(
            f"whitening: cannot read {path!r} as an .npz/.npy array file ({type(err).__name__}); "
            "give the mvnn.npz of the prepared subject"
        ) from None
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 3:
        if session is not None and not 0 <= session < len(w):
            raise UserError(f"whitening_session: {session} but {path!r} holds {len(w)} sessions; pick 0…{len(w) - 1}")
        w = w.mean(axis=0) if session is None else w[session]
    if not np.isfinite(w).all():
        raise UserError(f"whitening: {path!r} holds NaN/inf entries; prepare the subject again")
    return w, names


def load_whitening(
    path: str, n_chans: int, session: int | None = None, ch_names: Sequence[str] | None = None
) -> np.ndarray:
    """The MVNN whitening matrix (C, C) saved at preparation time (see :func:`read_whitening`).

    ``path == ""`` means no whitening (identity). When the file lists its ``ch_names`` (as
    ``hmavd-prepare``'s ``mvnn.npz`` does) and ``ch_names`` is given, they must match in order.
    """
    if not path:
        return np.eye(n_chans)
    w, names = read_whitening(path, session)
    return check_whitening(w, names, path, n_chans, ch_names)


def check_whitening(
    w: np.ndarray, names: list[str] | None, path: str, n_chans: int, ch_names: Sequence[str] | None = None
) -> np.ndarray:
    """``w`` (as :func:`read_whitening` returned it with the file's ``names``) if it fits a model of
    ``n_chans`` channels ``ch_names``; a one-line :class:`UserError` otherwise."""
    if w.shape != (n_chans, n_chans):
        raise UserError(
            f"whitening: {path!r} holds a {w.shape} matrix, the model needs ({n_chans}, {n_chans}); "
            "use the mvnn.npz prepared with the model's channels"
        )
    if names is not None and ch_names is not None and list(ch_names) != names:
        diff = next(i for i, (a, b) in enumerate(zip(names, ch_names)) if a != b)
        raise UserError(
            f"whitening: {path!r} was computed for other channels or another order (position {diff}: "
            f"{names[diff]!r} vs the model's {list(ch_names)[diff]!r}); use the mvnn.npz of the model's data"
        )
    return w


def make_transform(
    preset: PreprocessPreset, sfreq_in: float, whitening: np.ndarray | None
) -> Callable[[np.ndarray], np.ndarray]:
    """``(B, C, T_in) volts -> (B, C, T_out) float32``: :func:`preprocess_epoch` then :func:`apply_whitening`."""

    def transform(raw: np.ndarray) -> np.ndarray:
        x = preprocess_epoch(np.asarray(raw, dtype=np.float64), sfreq_in, preset)  # (B, C, T_out)
        if whitening is not None:
            x = apply_whitening(x, whitening)
        return x.astype(np.float32)

    return transform


class OnlineEpocher:
    """Turns markers into epochs as data arrive.

    Parameters
    ----------
    source : EEGSource
        A connected source.
    preset : PreprocessPreset
        Window, baseline, resampling and crop (A's preset).
    picks : sequence of int
        Stream channel indices fed to the model, in the model's order.
    whitening : ndarray (C, C), (C, C_model) or None
        MVNN matrix; a rectangular ``W[:, model rows]`` whitens over all the picked channels (those of
        the whitening file) and keeps the model's, in its order.
    marker_timeout_s : float
        A marker whose window is still incomplete this long after it was received is dropped.
    now : callable
        Monotonic clock (injectable for tests).
    index_channel : int, optional
        Stream channel holding each sample's index in the recording (``sample_index``); its value at
        the onset goes to ``Epoch.extra["sample_index"]`` (proves no epoch is missed or duplicated).
    input_map : callable, optional
        ``(C_picks, T) -> (C_model, T)``: unit conversion and interpolation of missing channels
        (:meth:`bci.stream_setup.InputPlan.apply`), applied before the quality checks, so
        ``flat_ptp`` / ``clip_abs`` are in the model's units.
    """

    def __init__(
        self,
        source: EEGSource,
        preset: PreprocessPreset,
        picks: Sequence[int],
        whitening: np.ndarray | None = None,
        marker_timeout_s: float = 5.0,
        reject: RejectConfig = RejectConfig(),
        now: Callable[[], float] = time.monotonic,
        index_channel: int | None = None,
        input_map: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        assert source.description is not None, "connect the source first"
        self.source = source
        self.sfreq = source.description.sfreq
        self.preset = preset
        self.picks = np.asarray(list(picks), dtype=np.intp)
        # picks that are one ascending run of channels (the usual EEG-first layout) are read as a slice
        p = self.picks
        run = len(p) > 0 and bool(np.all(np.diff(p) == 1))
        self._pick_slice = slice(int(p[0]), int(p[-1]) + 1) if run else None
        self.first_offset, self.n_in = epoch_window_samples(preset.tmin_s, preset.tmax_s, self.sfreq)
        self.transform = make_transform(preset, self.sfreq, whitening)
        # the same transform split in two: the part not needing an epoch's tail runs before the tail arrives
        self.early_transform = EarlyTransform(preset, self.sfreq, whitening)
        self._prepared: dict[int, Prepared] = {}  # window's first sample -> its early part
        self._steps: deque[int] = deque(maxlen=50)  # samples arrived between recent polls (chunk sizes)
        self._seen_written = 0
        self.times = preprocessed_times(preset, self.sfreq)
        self.marker_timeout_s = marker_timeout_s
        self.reject = reject
        self.now = now
        self.index_channel = index_channel
        self.input_map = input_map  # picked raw (C_picks, T) -> model channels in model units (bci.stream_setup)
        self.pending: list[tuple[Marker, float]] = []  # (marker, received at)
        self.rejected: Counter[str] = Counter()
        self.n_epochs = 0

    @property
    def n_times_out(self) -> int:
        return int(self.times.shape[0])

    def add_markers(self, markers: Sequence[Marker]) -> None:
        t = self.now()
        self.pending.extend((m, t) for m in markers)

    def _reject(self, reason: str, marker: Marker) -> None:
        self.rejected[reason] += 1
        log.info("epoch at %.3f s (%s) rejected: %s", marker.t_s, marker.code, reason)

    #: Longest time (s) a poll that cut nothing waits, spinning, for the chunk that completes a pending
    #: epoch (only with a background acquisition thread, only when that next chunk completes it). The
    #: epoch is then cut the moment the acquisition thread has written its last sample, instead of after
    #: the consumer thread is woken again (scheduler-bound: several ms on a busy machine). 0 = off.
    spin_s = 0.015

    def poll(self) -> list[Epoch]:
        """Cut every pending epoch whose last sample has arrived; returns them in marker order.

        When none is ready but the next chunk completes one, waits for it up to :attr:`spin_s`
        (releasing the GIL between checks) and cuts it in the same call.
        """
        epochs = self._poll_once()
        due = None if epochs else self._due_next_chunk()
        if due is None:
            return epochs
        buf, deadline = self.source.buffer, time.perf_counter() + self.spin_s
        while buf.n_written < due and time.perf_counter() < deadline:
            time.sleep(0)  # lets the acquisition thread take the GIL and write the chunk
        return self._poll_once() if buf.n_written >= due else epochs

    def _due_next_chunk(self) -> int | None:
        """End index of the earliest pending window the next chunk (of the typical size) completes, or None."""
        thread = getattr(self.source, "thread", None)
        if self.spin_s <= 0 or not self.pending or thread is None or not thread.is_alive() or not self._steps:
            return None
        # the typical chunk (a burst after a stall must not make every poll wait), at most spin_s of samples
        reach = min(sorted(self._steps)[len(self._steps) // 2], int(self.spin_s * self.sfreq))
        clock, n_written, stops = self.source.clock, self.source.buffer.n_written, []
        for marker, _ in self.pending:
            status, onset = clock.locate(marker.t_s)
            stop = onset + self.first_offset + self.n_in
            if status == "ok" and 0 < stop - n_written <= reach:
                stops.append(stop)
        return min(stops) if stops else None

    def _poll_once(self) -> list[Epoch]:
        """One pass over the pending markers (:meth:`poll` without the wait)."""
        if not self.pending:
            return []
        clock, buf = self.source.clock, self.source.buffer
        n_written = buf.n_written
        keep: list[tuple[Marker, float]] = []
        raws: list[np.ndarray] = []
        metas: list[tuple[Marker, int, float, float, dict]] = []
        now = self.now()
        for marker, received in self.pending:
            status, onset = clock.locate(marker.t_s)
            first, stop = onset + self.first_offset, onset + self.first_offset + self.n_in
            if status == "ok" and (stop > n_written or self._settling(clock, onset)):
                status = "wait"
            if status == "wait":
                if now - received > self.marker_timeout_s:
                    self._reject("timeout", marker)
                else:
                    keep.append((marker, received))
                continue
            if status != "ok":
                self._reject({"gap": "marker_in_gap", "before": "before_stream"}[status], marker)
                continue
            seg = clock.segment_of(onset)
            if first < seg.start or stop > seg.stop:
                log.debug("window [%d, %d) of onset %d vs segment [%d, %d)", first, stop, onset, seg.start, seg.stop)
                self._reject("straddles_gap" if first >= 0 else "before_stream", marker)
                continue
            try:
                raw = self._read_window(first, stop)  # (C, n_in) model units, or the tail of a prepared epoch
                extra = {}
                if self.index_channel is not None:  # the recording's own index of the onset sample
                    idx = buf.read_channels(onset, onset + 1, slice(self.index_channel, self.index_channel + 1))
                    extra["sample_index"] = int(idx[0, 0])
            except IndexError:
                self._reject("too_old", marker)
                continue
            reason = self._quality(raw)
            if reason is not None:
                self._reject(reason, marker)
                continue
            raws.append(raw)
            metas.append((marker, onset, seg.time_of(onset), buf.arrival(stop - 1), extra))
        self.pending = keep
        self._prepare_early(n_written, finalised=bool(raws))
        if not raws:
            return []
        data = self._transform_all(raws)  # (B, C, T_out)
        ready = time.perf_counter()
        self.n_epochs += len(raws)
        return [
            Epoch(marker=m, onset_index=i, onset_s=t, data=data[k], last_arrival_s=a, ready_s=ready, extra=x)
            for k, (m, i, t, a, x) in enumerate(metas)
        ]

    # -- the per-epoch transform, split early / tail (bci/early_transform.py) ----------------------
    #: A segment whose timestamps jitter by more than a quarter period (packet-stamped amplifiers) first
    #: collects this much data before its epochs are cut, so the fitted time line puts each marker on its
    #: own sample (the Muse recording: 1 of 1,174 markers one sample off without it, 0 with 2 s).
    settle_s = 2.0

    def _settling(self, clock, onset: int) -> bool:
        """True while ``onset``'s segment is the newest, jittery and younger than :attr:`settle_s`."""
        seg = clock.segment_of(onset)
        if seg is None or seg is not clock.segments[-1] or seg.n >= self.settle_s * self.sfreq:
            return False
        return max(seg.jitter_s, clock.jitter_s) > 0.25 / self.sfreq  # its own or the stream's earlier jitter

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of the picked channels, float64, in model units: (C, stop − start)."""
        buf = self.source.buffer
        if self._pick_slice is not None:
            raw = buf.read_channels(start, stop, self._pick_slice)  # (C, n) float64
        else:
            raw = buf.read(start, stop)[self.picks].astype(np.float64)  # (C, n)
        return raw if self.input_map is None else self.input_map(raw)

    def _read_window(self, first: int, stop: int) -> np.ndarray | LateEpoch:
        """The whole window, or only its tail when its early part was prepared; ``IndexError`` if not held."""
        prep = self._prepared.get(first)
        if prep is None:
            return self._read_raw(first, stop)  # (C, n_in)
        if first < self.source.buffer.first_available:  # as the full read would: the window is gone
            raise IndexError(f"samples from {first} overwritten")
        return LateEpoch(prep, self._read_raw(first + prep.k, stop))  # tail (C, n_in − k)

    def _quality(self, raw: np.ndarray | LateEpoch) -> str | None:
        if isinstance(raw, LateEpoch):
            return split_quality_reason(raw.prep, raw.late, self.reject)
        return quality_reason(raw, self.reject)

    def _transform_all(self, raws: list) -> np.ndarray:
        """``(B, C, T_out)`` float32: whole windows in one batch, prepared ones from their tails."""
        whole = [r for r in raws if not isinstance(r, LateEpoch)]
        done = iter(self.transform(np.stack(whole)) if whole else ())  # (B_whole, C, T_out)
        return np.stack([self.early_transform.finish(r) if isinstance(r, LateEpoch) else next(done) for r in raws])

    def _prepare_early(self, n_written: int, finalised: bool) -> None:
        """Prepare the early part of every pending epoch whose tail is all that is missing.

        Runs only in polls that cut no epoch, so it never delays one. The tail is the transform's
        default (50 ms) or two of the largest recent chunks, whichever is longer, so a poll falls
        between the early part's arrival and the last sample's; epochs whose tail would exceed a
        quarter of the window (huge chunks) take the whole-window path.
        """
        if n_written > self._seen_written:
            self._steps.append(n_written - self._seen_written)
        self._seen_written = n_written
        et = self.early_transform
        if finalised:
            return
        tail = max(et.default_tail, 2 * max(self._steps, default=0))
        if tail > min(et.max_tail, self.n_in // 4):
            self._prepared.clear()
            return
        clock, kept = self.source.clock, {}
        for marker, _ in self.pending:
            status, onset = clock.locate(marker.t_s)
            first = onset + self.first_offset
            k = self.n_in - tail
            if status != "ok" or first < 0:
                continue
            if first in self._prepared:
                kept[first] = self._prepared[first]
                continue
            seg = clock.segment_of(onset)
            if not first + k <= n_written < first + self.n_in or seg is None or first < seg.start:
                continue
            try:
                kept[first] = et.prepare(first, self._read_raw(first, first + k))
            except IndexError:
                continue
        self._prepared = kept
