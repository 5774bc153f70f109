"""Builders for the GUI tests that run the real engine: a small FIF recording and a tiny checkpoint.

The recording has 4 occipital/parietal channels + stim at 200 Hz with a marker every 200 ms; the
checkpoint is a randomly initialised HMAVD (TSConv, ``gifford`` preset) with a 6-concept feature cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CH_NAMES = ["O1", "Oz", "O2", "Pz"]
CONCEPTS = [f"{i + 1:05d}_thing{i + 1}" for i in range(6)]
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
    from hmavd.checkpoint import save_checkpoint
    from hmavd.features.cache import save_feature_cache
    from hmavd.models.hmavd_model import HMAVD, ModelConfig
    from hmavd.preprocessing.presets import PRESETS
    from hmavd.preprocessing.transforms import preprocessed_times

    times = preprocessed_times(PRESETS["gifford"], SFREQ)
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="tsconv", n_chans=len(CH_NAMES), n_times=len(times), feature_dim=16, proj_dim=16,
                      img_reduction=2, txt_reduction=2)  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "best.safetensors", HMAVD(cfg).eval(),
                           extra={"ch_names": CH_NAMES, "times": times.tolist(), "sfreq": 100.0,
                                  "preset": "gifford"})  # fmt: skip
    rng = np.random.default_rng(1)
    k = len(CONCEPTS)
    arrays = {
        "train_image_features": rng.standard_normal((4, 16)).astype(np.float32),
        "test_image_features": rng.standard_normal((k, 16)).astype(np.float32),
        "train_text_features": rng.standard_normal((2, 16)).astype(np.float32),
        "test_text_features": rng.standard_normal((k, 16)).astype(np.float32),
    }
    prov = {"model": "random", "train_images": [f"a/{i}.jpg" for i in range(4)],
            "test_images": [f"{c}/{c}.jpg" for c in CONCEPTS], "train_concepts": ["x", "y"],
            "test_concepts": CONCEPTS}  # fmt: skip
    return ckpt, save_feature_cache(tmp_path / "features", arrays, prov)


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
