"""Tiny, randomly initialised model, decoder, feature cache and checkpoint for the bci (and gui) tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bci.decoder import Decoder
from bci.engine import LiveEngine
from bci.live_config import LiveConfig
from bci.sources import EEGSource
from hmavd.checkpoint import save_checkpoint
from hmavd.features.cache import save_feature_cache
from hmavd.models.hmavd_model import HMAVD, ModelConfig
from hmavd.preprocessing.presets import PRESETS
from hmavd.preprocessing.transforms import preprocessed_times

CONCEPTS = [f"{i + 1:05d}_thing{i + 1}" for i in range(6)]
SFREQ_IN = 200.0
# -0.1 … 0.5 s at 200 Hz (121 raw samples), 100 Hz out, crop to 0 … 0.5 s -> 51 samples
CH_NAMES = ["O1", "Oz", "O2", "Pz"]
PRESET = dataclasses.replace(
    PRESETS["nice"],
    name="tiny",
    tmin_s=-0.1,
    tmax_s=0.5,
    sfreq=100.0,
    crop_tmin_s=0.0,
    crop_tmax_s=None,
    channels=tuple(CH_NAMES),
)
N_TIMES = len(preprocessed_times(PRESET, SFREQ_IN))


def tiny_model(n_chans: int = 4, n_times: int = N_TIMES, seed: int = 0, feature_dim: int = 16) -> HMAVD:
    """A randomly initialised (``torch.manual_seed(seed)``) HMAVD with a small TSConv, in eval mode; inputs
    (B, n_chans, n_times), image features of ``feature_dim``."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        encoder="tsconv",
        n_chans=n_chans,
        n_times=n_times,
        feature_dim=feature_dim,
        proj_dim=16,
        img_reduction=2,
        txt_reduction=2,
        encoder_kwargs=(("n_filters", 8), ("kernel", 5), ("pool", 11), ("pool_stride", 5)),
    )
    return HMAVD(cfg).eval()


def tiny_decoder(model: HMAVD | None = None, seed: int = 3) -> Decoder:
    """A CPU :class:`~bci.decoder.Decoder` of ``model`` (default :func:`tiny_model`) over random templates of
    the six :data:`CONCEPTS` (``numpy.random.default_rng(seed)``, shape (6, 16))."""
    templates = np.random.default_rng(seed).standard_normal((len(CONCEPTS), 16)).astype(np.float32)
    model = tiny_model() if model is None else model
    return Decoder.from_model(model, templates, CONCEPTS, len(CH_NAMES), N_TIMES, CH_NAMES, device="cpu")


def manual_engine(
    source: EEGSource, markers: Any, decoder: Decoder | None = None, whitening: np.ndarray | None = None, **cfg: Any
) -> LiveEngine:
    """A :class:`LiveEngine` on the given parts with :data:`PRESET`, sending status and scope at every step
    (``cfg``: more :class:`LiveConfig` fields)."""
    config = LiveConfig(status_interval_s=0.0, scope_interval_s=0.0, **cfg)
    decoder = tiny_decoder() if decoder is None else decoder
    return LiveEngine(config, source=source, markers=markers, decoder=decoder, preset=PRESET, whitening=whitening)


def cli_flags(**flags: Any) -> list[str]:
    """``eeg_stream="x", replay_speed=2`` as ``["--eeg-stream", "x", "--replay-speed", "2"]``."""
    return [arg for name, value in flags.items() for arg in ("--" + name.replace("_", "-"), str(value))]


def headless_argv(ckpt: Path, cache: Path, out_dir: Path, *overrides: str, **flags: Any) -> list[str]:
    """``hmavd-live --headless`` arguments for a tiny checkpoint on the CPU, more :func:`cli_flags`, then the
    ``key=value`` ``overrides``."""
    argv = ["--headless", *cli_flags(checkpoint=ckpt, features=cache, device="cpu", out_dir=out_dir, **flags)]
    return [*argv, *overrides]


def tiny_cache(path: Path, seed: int = 0) -> Path:
    """A random 16-d feature cache of the six :data:`CONCEPTS` (test images) and four training images."""
    rng = np.random.default_rng(seed)
    k = len(CONCEPTS)
    arrays = {
        "train_image_features": rng.standard_normal((4, 16)).astype(np.float32),
        "test_image_features": rng.standard_normal((k, 16)).astype(np.float32),
        "train_text_features": rng.standard_normal((2, 16)).astype(np.float32),
        "test_text_features": rng.standard_normal((k, 16)).astype(np.float32),
    }
    prov = {
        "model": "random",
        "train_images": [f"a/{i}.jpg" for i in range(4)],
        "test_images": [f"{c}/{c}.jpg" for c in CONCEPTS],
        "train_concepts": ["x", "y"],
        "test_concepts": CONCEPTS,
    }
    return save_feature_cache(path, arrays, prov)


def tiny_checkpoint(tmp: Path, seed: int = 0, ch_names=CH_NAMES, preset=PRESET, sfreq_in=SFREQ_IN):
    times = preprocessed_times(preset, sfreq_in)
    model = tiny_model(len(ch_names), len(times), seed=seed)
    ckpt = save_checkpoint(
        tmp / "best.safetensors",
        model,
        extra={"ch_names": list(ch_names), "times": times.tolist(), "sfreq": preset.sfreq},
    )
    return ckpt, tiny_cache(tmp / "features"), model


def make_recording(
    path: Path,
    duration_s: float = 12.0,
    onset_every_s: float = 0.2,
    seed: int = 0,
    extra_codes: dict[int, int] | None = None,
    ch_names=CH_NAMES,
    sfreq=SFREQ_IN,
):
    """A small continuous FIF (4 EEG ch in volts at 200 Hz + ``sample_index`` misc + ``stim``).

    Returns ``(path, data (4, N) float64, events (n, 3))``; events are image numbers 1…6 every
    ``onset_every_s`` seconds starting at 0.5 s (``extra_codes``: sample -> code overrides).
    """
    import mne

    rng = np.random.default_rng(seed)
    n, c = int(duration_s * sfreq), len(ch_names)
    eeg = rng.standard_normal((c, n)) * 1e-5  # volts
    eeg += 2e-5 * np.sin(2 * np.pi * 3 * np.arange(n) / sfreq)[None] * rng.standard_normal((c, 1))
    onsets = np.arange(int(0.5 * sfreq), n - int(1.1 * sfreq), int(onset_every_s * sfreq))
    codes = 1 + (np.arange(len(onsets)) % len(CONCEPTS))
    stim = np.zeros(n)
    stim[onsets] = codes
    for sample, code in (extra_codes or {}).items():
        stim[sample] = code
    idx = np.arange(n, dtype=np.float64)
    info = mne.create_info([*ch_names, "sample_index", "stim"], sfreq, ["eeg"] * c + ["misc", "stim"])
    raw = mne.io.RawArray(np.vstack([eeg, idx[None], stim[None]]), info, verbose="error")
    raw.save(path, overwrite=True, verbose="error")
    events = np.stack([onsets, np.zeros_like(onsets), codes], axis=1)
    return path, eeg, events


def offline_epochs(path: Path, whitening: np.ndarray | None = None, preset=PRESET) -> tuple[np.ndarray, np.ndarray]:
    """``hmavd-prepare``'s own per-recording code on the whole file: read_recording -> epoch_recording
    (catch trials dropped, channel pick, ``mne.Epochs`` baseline, ``Epochs.resample``, crop) -> MVNN.

    Returns ``(epochs (n, C, T) float32, events (n, 3))`` in time order.
    """
    from hmavd.preprocessing.prepare import epoch_recording
    from hmavd.preprocessing.raw_io import read_recording
    from hmavd.preprocessing.transforms import apply_whitening

    raw, events = read_recording(path)
    events = events[events[:, 2] != preset.catch_id]
    x, codes, _, _ = epoch_recording(raw.load_data(), events, preset)
    assert codes.tolist() == events[:, 2].tolist(), "MNE dropped an epoch: keep onsets away from the ends"
    if whitening is not None:
        x = apply_whitening(x, whitening)
    return x.astype(np.float32), events
