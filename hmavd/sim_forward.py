"""A simulated subject's forward model on disk: ``<sim>/forward_model/sub-XX.npz``.

``hmavd-simulate`` writes, per subject, everything needed to produce that subject's EEG response to any
of its images again: the source model (spatial patterns, waveforms, common ERP; :class:`~hmavd.simulate.SourceModel`),
the gains, every image's latent source amplitudes and the noise parameters. The virtual amplifier
(:mod:`bci.virtual_subject`) reads it, so live responses are the simulator's own (not a re-drawn model).
Plain ``.npz`` arrays, no pickles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .io import atomic_path
from .simulate import SFREQ_RAW, SourceModel

__all__ = ["FORWARD_MODEL_DIR", "FORMAT_VERSION", "forward_model_path", "save_forward_model", "load_forward_model"]

#: Folder of the per-subject files under the simulated dataset's root.
FORWARD_MODEL_DIR = "forward_model"
FORMAT_VERSION = 1


def forward_model_path(root: str | Path, subject: int) -> Path:
    """``<root>/forward_model/sub-XX.npz``."""
    return Path(root) / FORWARD_MODEL_DIR / f"sub-{subject:02d}.npz"


def save_forward_model(
    path: str | Path,
    model: SourceModel,
    ch_names: tuple[str, ...] | list[str],
    latents: dict[str, np.ndarray],
    gain_v: float,
    erp_gain_v: float,
    noise: dict[str, float],
) -> Path:
    """Write one subject's forward model (float64 arrays, volts; ``noise``: noise_uv, noise_ar,
    noise_length_m, noise_white_fraction)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "format_version": np.array(FORMAT_VERSION),
        "ch_names": np.array(list(ch_names)),
        "sfreq": np.array(SFREQ_RAW),
        "patterns": model.patterns,
        "waveforms": model.waveforms,
        "erp_pattern": model.erp_pattern,
        "erp_waveform": model.erp_waveform,
        "window_offset": np.array(model.window_offset),
        "gain_v": np.array(gain_v),
        "erp_gain_v": np.array(erp_gain_v),
        "latents_training": latents["training"],
        "latents_test": latents["test"],
        **{k: np.array(float(v)) for k, v in noise.items()},
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def load_forward_model(path: str | Path) -> dict[str, Any]:
    """Read :func:`save_forward_model`'s file: ``model`` (SourceModel), ``ch_names``, ``sfreq``, ``latents``
    (``training``/``test`` (N, K)), ``gain_v``, ``erp_gain_v`` and the noise parameters."""
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"subject_dir: {path} not found; simulate the subject again with this version of hmavd-simulate "
            "(it writes forward_model/sub-XX.npz)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise UserError(f"subject_dir: {path} is not a readable .npz ({type(err).__name__}); re-simulate") from None
    if int(d.get("format_version", -1)) != FORMAT_VERSION:
        raise UserError(f"subject_dir: {path} has another format version; re-simulate with this hmavd-simulate")
    model = SourceModel(d["patterns"], d["waveforms"], d["erp_pattern"], d["erp_waveform"], int(d["window_offset"]))
    out: dict[str, Any] = {
        "model": model,
        "ch_names": tuple(str(c) for c in d["ch_names"]),
        "sfreq": float(d["sfreq"]),
        "latents": {"training": d["latents_training"], "test": d["latents_test"]},
        "gain_v": float(d["gain_v"]),
        "erp_gain_v": float(d["erp_gain_v"]),
    }
    for key in ("noise_uv", "noise_ar", "noise_length_m", "noise_white_fraction"):
        out[key] = float(d[key])
    return out
