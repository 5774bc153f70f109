"""Builders for the GUI tests that run the real engine: a small FIF recording and a tiny checkpoint.

The recording has 4 occipital/parietal channels + stim at 200 Hz with a marker every 200 ms; the
checkpoint is a randomly initialised HMAVD (TSConv, ``gifford`` preset) with the bci tests' 6-concept
feature cache (``tests/bci/bci_testkit.py``, importable here through ``tests/gui/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bci_testkit import CH_NAMES, CONCEPTS, tiny_cache, tiny_model

__all__ = ["CH_NAMES", "SFREQ", "make_recording", "make_checkpoint", "process_gone", "child_pids"]

SFREQ = 200.0


def make_recording(path, duration_s=30.0, seed=0):
    import mne

    rng = np.random.default_rng(seed)
    n = int(duration_s * SFREQ)
    eeg = rng.normal(0.0, 10e-6, (len(CH_NAMES), n))  # volts
    stim = np.zeros((1, n))
    onsets = np.arange(int(0.5 * SFREQ), n - int(1.0 * SFREQ), int(0.2 * SFREQ))
    stim[0, onsets] = 1 + np.arange(len(onsets)) % len(CONCEPTS)
    info = mne.create_info(CH_NAMES + ["STI"], SFREQ, ["eeg"] * len(CH_NAMES) + ["stim"])
    mne.io.RawArray(np.concatenate([eeg, stim]), info, verbose="error").save(path, verbose="error")
    return path


def make_checkpoint(tmp_path):
    """``(checkpoint, feature cache)``: a random TSConv HMAVD on the ``gifford`` preset's times and its cache."""
    from hmavd.checkpoint import save_checkpoint
    from hmavd.preprocessing.presets import PRESETS
    from hmavd.preprocessing.transforms import preprocessed_times

    times = preprocessed_times(PRESETS["gifford"], SFREQ)
    extra = {"ch_names": CH_NAMES, "times": times.tolist(), "sfreq": 100.0, "preset": "gifford"}
    ckpt = save_checkpoint(tmp_path / "best.safetensors", tiny_model(len(CH_NAMES), len(times)), extra=extra)
    return ckpt, tiny_cache(tmp_path / "features", seed=1)


def process_gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie about to be)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def child_pids(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out
