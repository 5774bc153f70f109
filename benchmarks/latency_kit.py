"""The parts of ``benchmarks/bench_latency.py`` that do not depend on the live pipeline.

* the stream player (:func:`player_main`, a child process: :class:`bci.replay.LSLPlayer` looping a
  random recording with a ``sample_index`` channel and a marker every :data:`ONSET_EVERY_S`);
* the independent minimal pylsl consumer (:func:`minimal_main`, a child process: only pylsl, numpy
  and ``mne.filter.resample``) and its latencies (:func:`minimal_figures`);
* CPU time of this process's threads (:func:`threads_cpu_s`, :func:`thread_cpu_s`, :class:`CPUTimer`);
* percentile and ratio strings of the report (:func:`percentiles`, :func:`ratios`).
"""

from __future__ import annotations

import os
import time

import numpy as np

ONSET_EVERY_S = 0.2
LOOP_S = 4.0  # the player loops a recording this long (markers every 200 ms, first at 0.1 s)
N_CONCEPTS = 200
MINIMAL_SETTLE_S = 3.0  # the minimal consumer's epochs in its first seconds are left out (connect backlog)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def ch_names(n: int) -> tuple[str, ...]:
    """The EEG channel names of the player's recording and of the random checkpoint."""
    return tuple(f"E{i + 1:03d}" for i in range(n))


def player_main(n_chans: int, sfreq: float, duration_s: float, names: tuple[str, str], out: str) -> None:
    """Child process: stream a looping random recording for ``duration_s`` and save the push log."""
    from bci.replay import LSLPlayer, ReplayData

    n = int(LOOP_S * sfreq)
    rng = np.random.default_rng(0)
    data = np.vstack([rng.standard_normal((n_chans, n)) * 1e-5, np.zeros((1, n))])  # volts + sample_index
    step = int(round(ONSET_EVERY_S * sfreq))
    events = tuple((int(s), str(1 + k % N_CONCEPTS)) for k, s in enumerate(range(step // 2, n, step)))
    rec = ReplayData(data, (*ch_names(n_chans), "sample_index"), ("eeg",) * n_chans + ("misc",), sfreq, events)
    player = LSLPlayer(rec, names[0], names[1], loop=True, global_index=True, log_pushes=True)
    if not player.wait_for_consumers(60.0):
        raise SystemExit("no consumer connected within 60 s")
    time.sleep(1.0)  # let the consumer open both inlets
    player.start()
    time.sleep(duration_s)
    player.close()
    np.save(out, np.asarray(player.push_log, dtype=np.float64))


def onsets(sfreq: float, n_samples: int) -> np.ndarray:
    """Global sample indices of the player's onsets among its first ``n_samples`` streamed samples."""
    step, n_loop = int(round(ONSET_EVERY_S * sfreq)), int(LOOP_S * sfreq)
    per_loop = np.arange(step // 2, n_loop, step)
    return (np.arange(n_samples // n_loop + 1)[:, None] * n_loop + per_loop[None]).ravel()


def minimal_main(name: str, n_chans: int, sfreq: float, duration_s: float, mvnn: str, out: str) -> None:
    """Child process: a minimal independent consumer (pylsl + numpy + mne only) of the same EEG stream.

    Saves one row per epoch: global onset index, perf_counter when the chunk holding the window's last
    sample was received, and when its epoch (baseline, ``mne.filter.resample``, crop, whitening) was ready.
    """
    import mne
    import pylsl

    first, n_in, n_base, down = -int(0.2 * sfreq), int(1.2 * sfreq) + 1, int(0.2 * sfreq) + 1, sfreq / 250.0
    w = np.load(mvnn)["whitening"][0]  # (C, C)
    mne.filter.resample(np.zeros((n_chans, n_in)), down=down, npad="auto", verbose=False)  # warm, before streaming
    (info,) = pylsl.resolve_byprop("name", name, 1, 60.0)
    inlet = pylsl.StreamInlet(info, max_buflen=360, processing_flags=0)
    inlet.open_stream(timeout=30.0)
    cap = 1 << 15
    ring = np.zeros((cap, n_chans + 1), np.float32)  # (cap, C + index)
    dest = np.zeros((4096, n_chans + 1), np.float32)
    due = onsets(sfreq, int((duration_s + 30.0) * sfreq))
    nxt, rows, first_seen, t_end = 0, [], None, time.monotonic() + duration_s + 30.0
    while time.monotonic() < t_end:
        _, ts = inlet.pull_chunk(timeout=0.5, max_samples=len(dest), dest_obj=dest, min_samples=1)  # as they come
        if not ts:
            continue
        got = time.perf_counter()
        n = len(ts)
        idx = dest[:n, -1].astype(np.int64)  # global sample_index of each sample
        first_seen = int(idx[0]) if first_seen is None else first_seen
        ring[idx % cap] = dest[:n]
        while nxt < len(due) and due[nxt] + first + n_in - 1 <= idx[-1]:
            o = int(due[nxt])
            nxt += 1
            if o + first < max(first_seen, int(idx[-1]) - cap + 1):
                continue  # not held (this consumer connected after the window began)
            x = ring[np.arange(o + first, o + first + n_in) % cap, :n_chans].T.astype(np.float64)  # (C, n_in)
            x -= x[:, :n_base].mean(axis=1, keepdims=True)
            y = mne.filter.resample(x, down=down, npad="auto", verbose=False)[:, 50:300]  # (C, 250)
            y = (y.T @ w).T.astype(np.float32)
            rows.append((o, got, time.perf_counter()))
    np.save(out, np.asarray(rows, dtype=np.float64))


def threads_cpu_s() -> dict[str, float]:
    """CPU seconds of every thread of this process by name (Python threads by their name, others by tid)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            out[names.get(int(task), f"native-{task}")] = thread_cpu_s(int(task))
        except (OSError, ValueError):
            continue
    return out


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc."""
    with open(f"/proc/self/task/{native_id}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CPUTimer:
    """Wraps a bound method: sums the calling thread's CPU time in it, keeps the wall time of busy calls."""

    def __init__(self, fn):
        self.fn, self.cpu_s, self.busy_ms, self.busy_cpu_ms, self.wake_ms, self.onsets = fn, 0.0, [], [], [], []

    def __call__(self, *args, **kw):
        t, w = time.thread_time(), time.perf_counter()
        out = self.fn(*args, **kw)
        cpu = time.thread_time() - t
        self.cpu_s += cpu
        if len(out):
            self.busy_ms.append((time.perf_counter() - w) * 1e3)
            self.busy_cpu_ms.append(cpu * 1e3)  # wall − CPU = time this thread was not running
            if hasattr(out[0], "last_arrival_s"):  # epochs: from the last sample's arrival to this call
                self.wake_ms.append((w - max(e.last_arrival_s for e in out)) * 1e3)
                self.onsets.append(out[0].onset_index)
        return out


def push_time(push: np.ndarray, last_g: np.ndarray) -> np.ndarray:
    """perf_counter (s) at which the player pushed the chunk holding global sample ``last_g``."""
    k = np.clip(np.searchsorted(push[:, 0], last_g, side="right"), 0, len(push) - 1)
    return push[k, 1]


def minimal_figures(mini: np.ndarray, push: np.ndarray, last_offset: int) -> dict[str, np.ndarray]:
    """Latencies (ms) of the minimal consumer's epochs: pushed → received, received → ready, pushed → ready.

    ``mini`` holds :func:`minimal_main`'s rows, ``push`` the player's push log and ``last_offset`` the
    offset of a window's last sample from its onset (samples).
    """
    if not len(mini) or not len(push):
        return {}
    mini = mini[mini[:, 1] >= mini[0, 1] + MINIMAL_SETTLE_S]  # its first seconds drain the connect backlog
    if not len(mini):
        return {}
    pushed = push_time(push, mini[:, 0] + last_offset)
    return {
        "pushed → received": (mini[:, 1] - pushed) * 1e3,
        "received → epoch ready": (mini[:, 2] - mini[:, 1]) * 1e3,
        "pushed → epoch ready": (mini[:, 2] - pushed) * 1e3,
    }


def percentiles(v: np.ndarray) -> str:
    """``"p50 …  p99 …  max … ms"`` of one latency sample, as the report's columns."""
    return f"p50 {np.percentile(v, 50):7.2f}  p99 {np.percentile(v, 99):7.2f}  max {np.max(v):7.2f} ms"


def ratios(a: np.ndarray, b: np.ndarray) -> str:
    """``"p50 x, p99 y"``: ratios of the percentiles of two latency samples."""
    return (
        f"p50 {np.percentile(a, 50) / np.percentile(b, 50):.2f}, p99 {np.percentile(a, 99) / np.percentile(b, 99):.2f}"
    )
