"""RSVP presentation: the schedule, the marker contract and the frame-locked runner (no display code).

``hmavd-present`` (:mod:`bci.cli_present`) shows images in the ThingsEEG2 paradigm: sequences of
``sequence_length`` images, each ``image_s`` on and ``blank_s`` off, a blank of ``sequence_gap_s``
before every sequence, target images (code ``99999``) to detect with a key press. Everything here is
pure or a thin loop around a *display*:

- :func:`build_schedule` — the block's trials (shuffled repetitions plus targets) cut into sequences;
- :func:`sequence_frames` — what each video frame of a sequence shows, on the display's frame grid;
- :class:`Presenter` — flips frame by frame through a display and pushes each image's marker with the
  timestamp *of the flip that showed it* (LSL ``local_clock`` seconds); it keeps the shown sequence,
  every flip time and the dropped frames (:class:`PresentationLog`, written by :func:`write_log`);
- :class:`DryRunDisplay` — a clock-driven flip simulator on an exact ``refresh_hz`` grid (``--dry-run``,
  CI): no window, the same markers at the same times. The PsychoPy window is :mod:`bci.present_window`;
- :func:`photodiode_delays` — the display delay: from each marker's sample to the photodiode's edge.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hmavd.errors import UserError
from hmavd.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

__all__ = [
    "TARGET_CODE",
    "Timing",
    "Trial",
    "Schedule",
    "build_schedule",
    "sequence_frames",
    "score_responses",
    "Display",
    "DryRunDisplay",
    "PresentationLog",
    "Presenter",
    "write_log",
    "write_schedule",
    "photodiode_delays",
]

#: Marker code of a target image (ThingsEEG2's catch trials; dropped by the preprocessing).
TARGET_CODE = "99999"


@dataclass(frozen=True)
class Timing:
    """Frame-locked timing (seconds, rounded to whole frames of ``refresh_hz``)."""

    refresh_hz: float = 60.0
    image_s: float = 0.1
    blank_s: float = 0.1
    sequence_gap_s: float = 0.75

    def frames(self, seconds: float, what: str) -> int:
        """Whole frames of ``seconds``; refuses a duration more than a quarter frame off the grid."""
        n = seconds * self.refresh_hz
        if seconds > 0 and (round(n) < 1 or abs(n - round(n)) > 0.25):
            raise UserError(
                f"{what}: {seconds} s is {n:.2f} frames at {self.refresh_hz:g} Hz; use a multiple of "
                f"{1 / self.refresh_hz:.4f} s (e.g. {max(round(n), 1) / self.refresh_hz:.4f})"
            )
        return int(round(n))

    @property
    def image_frames(self) -> int:
        return self.frames(self.image_s, "image_s")

    @property
    def blank_frames(self) -> int:
        return self.frames(self.blank_s, "blank_s")

    @property
    def soa_frames(self) -> int:
        """Frames from one image onset to the next."""
        return self.image_frames + self.blank_frames


@dataclass(frozen=True)
class Trial:
    """One presentation: ``image`` is its 1-based number in the block's image list (0 for a target)."""

    index: int
    sequence: int
    position: int
    image: int
    code: str
    file: str
    target: bool


@dataclass(frozen=True)
class Schedule:
    """A block: its trials in presentation order, grouped into sequences (``sequences[i]`` = trial indices)."""

    trials: tuple[Trial, ...]
    sequences: tuple[tuple[int, ...], ...]
    partition: str

    def __len__(self) -> int:
        return len(self.trials)


def build_schedule(
    files: Sequence[str],
    reps: int,
    sequence_length: int = 20,
    target_fraction: float = 0.05,
    rng: np.random.Generator | None = None,
    codes: Sequence[str] | None = None,
    target_file: str = "",
    partition: str = "test",
    max_sequences: int = 0,
) -> Schedule:
    """Shuffle ``reps`` repetitions of every image, insert targets, cut into sequences.

    Parameters
    ----------
    files : sequence of str
        The block's images; image ``n`` (1-based) is ``files[n - 1]``.
    reps : int
        Presentations of every image in the block.
    target_fraction : float
        Targets inserted at random positions, ``round(target_fraction · n_images · reps)`` of them
        (as the simulator's catch trials).
    codes : sequence of str, optional
        Marker code of each image (default: its number, ``"17"``).
    max_sequences : int
        Keep only the first sequences (0 = all; short test blocks).
    """
    if reps < 1 or sequence_length < 1 or not 0 <= target_fraction < 1 or not files:
        raise UserError(
            f"reps/sequence_length/target_fraction: {reps}/{sequence_length}/{target_fraction} with {len(files)} "
            "images; give reps >= 1, sequence_length >= 1, 0 <= target_fraction < 1 and at least one image"
        )
    if codes is not None and len(codes) != len(files):
        raise UserError(f"code_table: {len(codes)} codes for {len(files)} images; give one code per image")
    rng = rng or np.random.default_rng(0)
    order = rng.permutation(np.repeat(np.arange(1, len(files) + 1), reps))
    n_target = int(round(target_fraction * len(order)))
    if n_target:
        order = np.insert(order, np.sort(rng.integers(0, len(order) + 1, n_target)), 0)
    trials, sequences = [], []
    for s, start in enumerate(range(0, len(order), sequence_length)):
        if max_sequences and s >= max_sequences:
            break
        idx = []
        for pos, image in enumerate(order[start : start + sequence_length]):
            image = int(image)
            code = TARGET_CODE if image == 0 else (codes[image - 1] if codes is not None else str(image))
            file = target_file if image == 0 else files[image - 1]
            idx.append(len(trials))
            trials.append(Trial(len(trials), s, pos, image, str(code), file, image == 0))
        sequences.append(tuple(idx))
    return Schedule(tuple(trials), tuple(sequences), partition)


def sequence_frames(n_trials: int, timing: Timing) -> tuple[np.ndarray, np.ndarray]:
    """What each frame of one sequence shows: ``(shown (F,) int, onset (F,) bool)``.

    ``shown[f]`` is the position of the trial on screen at frame ``f`` (−1 = blank/fixation); the
    sequence opens with ``sequence_gap_s`` of blank and ends with the last image's blank. ``onset[f]``
    marks the first frame of each image (the flip whose time its marker carries).
    """
    gap, on, soa = timing.frames(timing.sequence_gap_s, "sequence_gap_s"), timing.image_frames, timing.soa_frames
    shown = np.full(gap + n_trials * soa, -1, dtype=np.int64)
    onset = np.zeros(len(shown), dtype=bool)
    for j in range(n_trials):
        shown[gap + j * soa : gap + j * soa + on] = j
        onset[gap + j * soa] = True
    return shown, onset


def score_responses(target_s: Sequence[float], key_s: Sequence[float], window_s: tuple[float, float] = (0.15, 1.5)):
    """Hits, misses and false alarms: a key press within ``window_s`` after a target's onset is a hit
    (each press counts for at most one target). Returns ``{"hits", "misses", "false_alarms"}``."""
    keys = sorted(key_s)
    used = [False] * len(keys)
    hits = 0
    for t in sorted(target_s):
        for i, k in enumerate(keys):
            if not used[i] and window_s[0] <= k - t <= window_s[1]:
                used[i] = True
                hits += 1
                break
    return {"hits": hits, "misses": len(target_s) - hits, "false_alarms": used.count(False)}


class Display(Protocol):
    """What the :class:`Presenter` needs from a screen (PsychoPy window or :class:`DryRunDisplay`)."""

    refresh_hz: float

    def prepare(self, files: Sequence[str]) -> None: ...  # load the next sequence's images
    def flip(self, file: str | None) -> float: ...  # show ``file`` (None: blank) from the next frame; its flip time
    def rest(self, min_s: float) -> None: ...  # a rest screen: at least ``min_s``, then until a key
    def keys(self) -> list[tuple[str, float]]: ...  # key presses since the last call, (key, LSL time)
    def close(self) -> None: ...


class DryRunDisplay:
    """A display without a screen: flip ``k`` happens at exactly ``t_start + k / refresh_hz``.

    ``flip`` sleeps until the next grid time and returns it. When the caller comes back too late for
    that frame (a loaded machine), the flip lands on the next grid time still ahead and the skipped
    frames are dropped, as with a real vertical sync.

    Parameters
    ----------
    clock, sleep : callable
        Time source (s; ``pylsl.local_clock`` by default) and sleep function; tests pass a fake clock
        whose ``sleep`` advances it.
    """

    def __init__(
        self,
        refresh_hz: float = 60.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rest_s: float | None = None,
    ) -> None:
        if clock is None:
            import pylsl

            clock = pylsl.local_clock
        self.refresh_hz, self.clock, self.sleep = float(refresh_hz), clock, sleep
        self.rest_s = rest_s
        self.t_start: float | None = None
        self.frame = -1

    def prepare(self, files: Sequence[str]) -> None:
        pass

    def flip(self, file: str | None) -> float:
        now = self.clock()
        if self.t_start is None:
            self.t_start = now + 2 / self.refresh_hz
        k = self.frame + 1
        earliest = math.ceil((now - self.t_start) * self.refresh_hz - 1e-6)  # first grid frame not yet past
        self.frame = max(k, earliest)
        t = self.t_start + self.frame / self.refresh_hz
        if t > now:
            self.sleep(t - now)
        return t

    def rest(self, min_s: float) -> None:
        self.sleep(min_s if self.rest_s is None else self.rest_s)

    def keys(self) -> list[tuple[str, float]]:
        return []

    def close(self) -> None:
        pass


@dataclass
class PresentationLog:
    """What was shown: per trial the flip time (LSL s) and frame; all flip intervals; key presses."""

    shown: list[dict[str, Any]] = field(default_factory=list)
    flip_times: list[float] = field(default_factory=list)
    dropped: list[dict[str, float]] = field(default_factory=list)
    keys: list[tuple[str, float]] = field(default_factory=list)
    push_lag_s: list[float] = field(default_factory=list)
    block_marker_t: float | None = None


class Presenter:
    """Runs a :class:`Schedule` through a :class:`Display`, pushing one marker per image onset.

    Parameters
    ----------
    push : callable
        ``push(code, timestamp_s)``: sends a marker (an LSL outlet's ``push_sample``; a list in tests).
    marker_delay_s : float
        Added to every image marker's timestamp (the display delay measured with a photodiode, so that
        every consumer and every recording gets the time the image really appeared); 0 = the flip time.
    block_marker : bool
        Send ``block:<partition>`` once before the first flip (lets a virtual subject know which image set
        the codes name; the live app counts it as an unknown code and skips it).
    rest_every, rest_s : int, float
        A rest screen before every ``rest_every``-th sequence (0 = none), at least ``rest_s`` long.
    clock : callable
        LSL clock (for the push lag and the block marker).
    """

    def __init__(
        self,
        schedule: Schedule,
        timing: Timing,
        display: Display,
        push: Callable[[str, float], None],
        block_marker: bool = True,
        rest_every: int = 0,
        rest_s: float = 0.0,
        clock: Callable[[], float] | None = None,
        marker_delay_s: float = 0.0,
    ) -> None:
        self.schedule, self.timing, self.display, self.push = schedule, timing, display, push
        self.block_marker, self.rest_every, self.rest_s = block_marker, rest_every, rest_s
        self.marker_delay_s = float(marker_delay_s)
        if clock is None:
            import pylsl

            clock = pylsl.local_clock
        self.clock = clock
        self.log = PresentationLog()
        self.stopped = False

    def run(self) -> PresentationLog:
        """Show every sequence; returns (and keeps) the log. ``stop()`` from another thread ends it early."""
        lg, trials = self.log, self.schedule.trials
        if self.block_marker:
            lg.block_marker_t = self.clock()
            self.push(f"block:{self.schedule.partition}", lg.block_marker_t)
        period = 1.0 / self.display.refresh_hz
        for s, seq in enumerate(self.schedule.sequences):
            if self.stopped:
                break
            if self.rest_every and s and s % self.rest_every == 0:
                self.display.rest(self.rest_s)
            self.display.prepare([trials[i].file for i in seq])
            shown, onset = sequence_frames(len(seq), self.timing)
            for f in range(len(shown)):
                t = self.display.flip(None if shown[f] < 0 else trials[seq[shown[f]]].file)
                if lg.flip_times and t - lg.flip_times[-1] > 1.5 * period:
                    lg.dropped.append({"frame": len(lg.flip_times), "interval_s": t - lg.flip_times[-1]})
                lg.flip_times.append(t)
                if onset[f]:
                    trial = trials[seq[shown[f]]]
                    self.push(trial.code, t + self.marker_delay_s)
                    lg.push_lag_s.append(self.clock() - t)
                    lg.shown.append(
                        {
                            "trial": trial.index,
                            "frame": len(lg.flip_times) - 1,
                            "flip_time_s": t,
                            "marker_s": t + self.marker_delay_s,
                        }
                    )
            lg.keys.extend(self.display.keys())
        lg.keys.extend(self.display.keys())
        return lg

    def stop(self) -> None:
        self.stopped = True


_SHOWN_COLUMNS = (
    "trial",
    "sequence",
    "position",
    "image",
    "code",
    "target",
    "file",
    "frame",
    "flip_time_s",
    "marker_s",
    "frames_late",
)


def write_log(
    out: str | Path, schedule: Schedule, timing: Timing, lg: PresentationLog, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``shown.tsv`` (one row per shown image: its flip time and frame) and ``presentation.json``
    (timing, frame statistics, dropped frames, key presses and their scoring) into ``out``; returns the JSON."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    flips = np.asarray(lg.flip_times)
    period = 1.0 / timing.refresh_hz
    with atomic_path(out / "shown.tsv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(_SHOWN_COLUMNS)
        for row in lg.shown:
            t = schedule.trials[row["trial"]]
            late = round((row["flip_time_s"] - flips[0]) / period) - row["frame"] if len(flips) else 0
            w.writerow(
                [
                    t.index,
                    t.sequence,
                    t.position,
                    t.image,
                    t.code,
                    int(t.target),
                    t.file,
                    row["frame"],
                    f"{row['flip_time_s']:.6f}",
                    f"{row['marker_s']:.6f}",
                    late,
                ]
            )
    intervals = np.diff(flips) if len(flips) > 1 else np.zeros(0)
    target_s = [r["flip_time_s"] for r in lg.shown if schedule.trials[r["trial"]].target]
    lag = np.asarray(lg.push_lag_s) * 1e3
    summary = {
        "clock": "LSL local_clock (s); each marker's timestamp is its image's flip time",
        "partition": schedule.partition,
        "refresh_hz": timing.refresh_hz,
        "image_frames": timing.image_frames,
        "blank_frames": timing.blank_frames,
        "n_trials_planned": len(schedule),
        "n_shown": len(lg.shown),
        "n_targets": len(target_s),
        "n_frames": len(flips),
        "first_flip_s": float(flips[0]) if len(flips) else None,
        "frame_interval_ms": {"mean": float(intervals.mean() * 1e3), "max": float(intervals.max() * 1e3)}
        if len(intervals)
        else None,
        "dropped_frames": lg.dropped,
        "n_dropped": len(lg.dropped),
        "push_lag_ms": {"p50": float(np.median(lag)), "max": float(lag.max())} if len(lag) else None,
        "block_marker_s": lg.block_marker_t,
        "keys": [[k, t] for k, t in lg.keys],
        "responses": score_responses(target_s, [t for _, t in lg.keys]),
        **(extra or {}),
    }
    atomic_write_json(out / "presentation.json", summary)
    (out / "flip_times.json").write_text(json.dumps(lg.flip_times))
    return summary


def write_schedule(out: str | Path, schedule: Schedule) -> Path:
    """The planned order, ``schedule.tsv`` (trial, sequence, position, image, code, target, file)."""
    path = Path(out) / "schedule.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(_SHOWN_COLUMNS[:7])
        for t in schedule.trials:
            w.writerow([t.index, t.sequence, t.position, t.image, t.code, int(t.target), t.file])
    return path


def photodiode_delays(signal: np.ndarray, onsets: Sequence[int], sfreq: float, max_delay_s: float = 0.25) -> np.ndarray:
    """Display delay of every marker: seconds from its sample to the photodiode's rising edge.

    Parameters
    ----------
    signal : ndarray, shape (n_samples,)
        The photodiode channel (any units; high while the patch is white).
    onsets : sequence of int
        Sample of each image marker in the same recording.
    sfreq : float
        Rate (Hz).
    max_delay_s : float
        Edges later than this after a marker are not its own (NaN).

    Returns
    -------
    ndarray, shape (n_markers,)
        Delay in seconds (a multiple of ``1 / sfreq``), NaN where no edge follows within ``max_delay_s``.
        The threshold is halfway between the signal's 5th and 95th percentiles.
    """
    x = np.asarray(signal, dtype=np.float64)
    lo, hi = np.percentile(x, [5, 95])
    if not hi > lo:
        raise UserError("photodiode_channel: the channel is flat; record the photodiode (photodiode=<corner>)")
    above = x >= (lo + hi) / 2
    n = int(round(max_delay_s * sfreq))
    out = np.full(len(onsets), np.nan)
    for i, s in enumerate(np.asarray(onsets, dtype=np.int64)):
        seg = above[max(s, 0) : s + n + 1]
        hit = np.flatnonzero(seg)
        if len(hit):
            out[i] = hit[0] / sfreq
    return out
