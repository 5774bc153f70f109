"""A fake engine that follows bci.engine_process.EngineProcess's message protocol (for widget/window tests)."""

from __future__ import annotations

import numpy as np


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


def connected_msg(n_chans=4, sfreq=1000.0, concepts=("dog", "cat", "car", "tree", "boat", "cup")):
    return {
        "type": "connected",
        "ch_names": [f"E{i}" for i in range(n_chans)],
        "sfreq": sfreq,
        "n_chans": n_chans,
        "concepts": list(concepts),
    }


def scope_msg(t0_s, n=10, n_chans=4, markers=()):
    rng = np.random.default_rng(int(t0_s * 100))
    data = (rng.normal(0, 10e-6, (n_chans, n))).astype(np.float32)
    return {"type": "scope", "data": data, "t0_s": t0_s, "markers": list(markers)}


def prediction_msg(true="cat", topk=(("dog", 0.8), ("cat", 0.6), ("car", 0.3), ("tree", 0.2), ("cup", 0.1))):
    names = [c for c, _ in topk]
    return {
        "type": "prediction",
        "onset_s": 1.0,
        "marker": "2",
        "true_concept": true,
        "topk": list(topk),
        "latency_ms": 6.5,
        "top1_correct": None if true is None else names[0] == true,
        "top5_correct": None if true is None else true in names,
    }


def status_msg(**kw):
    msg = {
        "type": "status",
        "sfreq_measured": 1000.2,
        "latency_p50_ms": 5.0,
        "latency_p99_ms": 9.5,
        "dropped_samples": 0,
        "n_epochs": 12,
        "rejected": {"flat": 2},
        "running_top1": 0.5,
        "running_top5": 1.0,
        "recording": False,
    }
    msg.update(kw)
    return msg
