"""Fakes that speak bci.engine_process.EngineProcess's protocol (bci.messages) for widget, window and session tests."""

from __future__ import annotations

import time

import numpy as np

from bci.messages import ConnectedMessage, PredictionMessage, ScopeMessage, StatusMessage

CONCEPTS = ("dog", "cat", "car", "tree", "boat", "cup")


class FakeEngine:
    """Records commands; ``poll`` returns whatever the test queued (the real protocol's dicts)."""

    instances: list[FakeEngine] = []

    def __init__(self, values):
        self.values = dict(values)
        self.queue: list[dict] = []
        self.sent: list[dict] = []
        self.started = self.stopped = False
        self.alive = True
        FakeEngine.instances.append(self)

    def start(self):
        self.started = True

    def stop(self, timeout_s=5.0):
        self.stopped = True
        self.alive = False

    def send(self, cmd):
        self.sent.append(cmd)

    def poll(self, max_items=1000):
        out, self.queue = self.queue[:max_items], self.queue[max_items:]
        return out


class FakeReplay:
    """Like gui.streams.ReplayProcess without a child process: ``running`` until the test ends it."""

    instances: list[FakeReplay] = []

    def __init__(self, recording, eeg_stream, marker_stream, replay_speed=1.0, loop=True):
        self.recording, self.eeg_stream, self.marker_stream = recording, eeg_stream, marker_stream
        self.replay_speed, self.loop = replay_speed, loop
        self.running = self.stopped = False
        self.returncode: int | None = None
        FakeReplay.instances.append(self)

    def start(self):
        self.running = True

    def stop(self, timeout_s=3.0):
        self.running, self.stopped = False, True

    def exit(self, code: int) -> None:
        self.running, self.returncode = False, code

    def error_output(self) -> str:
        return "" if self.running else "replay: file vanished"


def connected_msg(n_chans=4, sfreq=1000.0, concepts=CONCEPTS):
    return ConnectedMessage(
        type="connected",
        ch_names=[f"E{i}" for i in range(n_chans)],
        sfreq=sfreq,
        n_chans=n_chans,
        concepts=list(concepts),
        model_ch_names=["E0", "E1"],
        stream="eeg-x",
        notes=[],
    )


def scope_msg(t0_s, n=10, n_chans=4, markers=()):
    rng = np.random.default_rng(int(t0_s * 100))
    data = (rng.normal(0, 10e-6, (n_chans, n))).astype(np.float32)
    return ScopeMessage(type="scope", data=data, t0_s=t0_s, sfreq=100.0, markers=list(markers))


def prediction_msg(true="cat", topk=(("dog", 0.8), ("cat", 0.6), ("car", 0.3), ("tree", 0.2), ("cup", 0.1)), **acc):
    """A prediction; ``acc`` adds the accumulated fields (``acc_n``, ``acc_topk`` …) of bci.accumulate."""
    names = [c for c, _ in topk]
    msg = PredictionMessage(
        type="prediction",
        onset_s=1.0,
        onset_index=1000,
        marker="2",
        true_concept=true,
        topk=list(topk),
        latency_ms=6.5,
        epoch_latency_ms=2.0,
        top1_correct=None if true is None else names[0] == true,
        top5_correct=None if true is None else true in names,
        last_arrival_s=time.perf_counter(),
    )
    msg.update(acc)  # type: ignore[typeddict-item]
    return msg


def status_msg(**kw):
    msg = StatusMessage(
        type="status",
        sfreq_measured=1000.2,
        latency_p50_ms=5.0,
        latency_p99_ms=9.5,
        dropped_samples=0,
        n_epochs=12,
        rejected={"flat": 2},
        running_top1=0.5,
        running_top5=1.0,
        recording=False,
        unknown_markers=0,
        messages=[],
        mvnn=None,
        accumulated=None,
    )
    msg.update(kw)  # type: ignore[typeddict-item]
    return msg


def accumulated_run(n_images=6, n_reps=5, noise=1.5, seed=0):
    """A real bci.accumulate.RepetitionAccumulator fed noisy repetitions of ``n_images`` images in ThingsEEG2
    order (every image once, then again …): its last predictions' ``acc_*`` fields and its ``report()``."""
    from bci.accumulate import RepetitionAccumulator

    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((len(CONCEPTS), 8))  # (K, D)
    acc = RepetitionAccumulator(lambda x: x.reshape(len(x), -1), templates, CONCEPTS, mode="epochs")
    last = []
    for _ in range(n_reps):
        ids = np.arange(n_images) % len(CONCEPTS)
        epochs = (templates[ids] + noise * rng.standard_normal((n_images, 8)))[:, None, :]  # (B, 1, D)
        last = acc.add([CONCEPTS[i] for i in ids], epochs.astype(np.float32))
    return last, acc.report()
