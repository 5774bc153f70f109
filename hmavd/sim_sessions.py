"""Sessions that differ: a new recording session of a simulated subject, with its own noise.

The simulated subject's noise model (:func:`hmavd.simulate.ar1_noise`) is the same in every session,
so a training session's MVNN matrix whitens any other session perfectly — unlike real EEG, where
electrodes, impedances and mains pick-up change between sessions. :class:`SessionChange` is a
documented per-session change of the recording (docs/new-session.md):

- **channel gains**: every channel (signal and noise: electrode impedance, amplifier gain) scaled by
  ``exp(N(0, gain_sd))`` (``gain_sd = 0.25``: about ±25 %);
- **spatial correlation**: the noise kernel's length ``length_m`` and white fraction ``white_fraction``
  (0.1 m / 0.2 in training → 0.2 m / 0.1: a broader, more correlated noise, e.g. a different reference
  contact or sweat bridges);
- **noisier channels**: ``n_noisy`` random channels with ``noisy_factor`` × the noise (a poor contact);
- **line noise**: a ``line_hz`` sinusoid with a per-channel amplitude uniform in ``[0, line_uv]`` µV and
  random phase (training sessions have none).

``scale`` interpolates every change between none (0: the training sessions' noise) and the full one (1).
:func:`write_new_session` renders such a session from the subject's saved forward model — the same
sources, latents and RSVP paradigm, none of it used for any training whitening — and writes it beside
the dataset under ``<root>/new_session/`` (``hmavd-simulate --out ROOT new_session=true``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .io import atomic_write_json

log = logging.getLogger(__name__)

__all__ = ["SessionChange", "draw_session", "line_noise", "render_session", "write_new_session", "NEW_SESSION_DIR"]

NEW_SESSION_DIR = "new_session"


@dataclass(frozen=True)
class SessionChange:
    """How a new session's recording differs from the training sessions (see the module docstring)."""

    gain_sd: float = 0.25
    length_m: float = 0.2
    white_fraction: float = 0.1
    n_noisy: int = 2
    noisy_factor: float = 3.0
    line_uv: float = 5.0
    line_hz: float = 50.0

    def scaled(self, scale: float, base_length_m: float, base_white: float) -> SessionChange:
        """The change at ``scale`` in [0, ...]: 0 = the training noise, 1 = this change."""
        if scale < 0:
            raise UserError(f"new_session_change: {scale} must be >= 0 (0 = the training noise, 1 = documented change)")
        return replace(
            self,
            gain_sd=scale * self.gain_sd,
            length_m=base_length_m + scale * (self.length_m - base_length_m),
            white_fraction=float(np.clip(base_white + scale * (self.white_fraction - base_white), 0.0, 1.0)),
            noisy_factor=1.0 + scale * (self.noisy_factor - 1.0),
            line_uv=scale * self.line_uv,
        )


def draw_session(rng: np.random.Generator, n_chans: int, change: SessionChange) -> dict[str, np.ndarray]:
    """Random per-channel parts of a session: ``gains`` (C,), ``noise_factor`` (C,), ``line_amp_v`` (C,),
    ``line_phase`` (C,) radians."""
    gains = np.exp(change.gain_sd * rng.standard_normal(n_chans))  # (C,)
    factor = np.ones(n_chans)
    noisy = rng.choice(n_chans, size=min(change.n_noisy, n_chans), replace=False)
    factor[noisy] = change.noisy_factor
    amp = rng.uniform(0.0, 1.0, n_chans) * change.line_uv * 1e-6  # (C,) volts
    phase = rng.uniform(0.0, 2 * np.pi, n_chans)
    return {
        "gains": gains,
        "noise_factor": factor,
        "noisy_channels": np.sort(noisy),
        "line_amp_v": amp,
        "line_phase": phase,
    }


def line_noise(n_samples: int, sfreq: float, hz: float, amp_v: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Mains pick-up: ``amp_v[c] · sin(2π hz t + phase[c])``, (C, n_samples) volts."""
    t = np.arange(n_samples) / sfreq  # (n,) s
    return np.asarray(amp_v)[:, None] * np.sin(2 * np.pi * hz * t[None] + np.asarray(phase)[:, None])  # (C, n)


def render_session(
    rng: np.random.Generator,
    fm: dict[str, Any],
    part: str,
    reps: int,
    change: SessionChange,
    drawn: dict[str, np.ndarray],
    catch_fraction: float,
    sequence_length: int,
    sequence_gap_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One part (training/test) of a new session from a forward model (:func:`hmavd.sim_forward.load_forward_model`).

    Returns
    -------
    data : ndarray, shape (C, n_samples), float64 volts
    onsets : ndarray, shape (n_events,), samples
    codes : ndarray, shape (n_events,), image numbers (1-based) and catch codes
    """
    from .simulate import CATCH_ID, ar1_noise, noise_mixing, render_signal, rsvp_schedule

    lat = fm["latents"][part]  # (N, K)
    codes = np.repeat(np.arange(1, len(lat) + 1), reps)
    onsets, ev, n_samples = rsvp_schedule(rng, codes, catch_fraction, sequence_length, sequence_gap_s)
    catch = ev == CATCH_ID
    z = np.where(catch[:, None], rng.standard_normal((len(ev), lat.shape[1])), lat[np.where(catch, 1, ev) - 1])
    x = render_signal(n_samples, onsets, z, fm["model"], fm["gain_v"], fm["erp_gain_v"])  # (C, n) volts
    mixing = noise_mixing(fm["ch_names"], change.length_m, change.white_fraction)  # (C, C)
    noise = ar1_noise(rng, mixing, n_samples, fm["noise_ar"], fm["noise_uv"] * 1e-6)  # (C, n)
    x += drawn["noise_factor"][:, None] * noise
    x += line_noise(n_samples, fm["sfreq"], change.line_hz, drawn["line_amp_v"], drawn["line_phase"])
    x *= drawn["gains"][:, None]
    return x, onsets, ev


def write_new_session(cfg, root: str | Path, scale: float = 1.0, change: SessionChange = SessionChange()) -> dict:
    """Render and write a new session of every simulated subject of the dataset at ``root``.

    Parameters
    ----------
    cfg : SimulateConfig
        The dataset's config (sizes, seed, paradigm); the subjects' forward models are read from ``root``.
    root : path
        A folder written by ``hmavd-simulate``.
    scale : float
        Size of the change (0 = same noise as training, 1 = :class:`SessionChange` as documented).

    Returns
    -------
    dict
        Written paths and the drawn change, also in ``<root>/new_session/session_change.json``.
    """
    from .preprocessing.raw_io import write_thingseeg2_raw
    from .sim_forward import forward_model_path, load_forward_model
    from .simulate_io import _write_replay_fif

    root = Path(root)
    if not (root / "simulation.json").exists():
        raise UserError(
            f"--out: {root} holds no simulated dataset (simulation.json); simulate it first, then add new_session=true"
        )
    out = root / NEW_SESSION_DIR
    summary: dict[str, Any] = {"scale": scale, "change": {}, "subjects": []}
    for subject in range(1, cfg.n_subjects + 1):
        fm = load_forward_model(forward_model_path(root, subject))
        ch = scaled = change.scaled(scale, fm["noise_length_m"], fm["noise_white_fraction"])
        rng = np.random.default_rng([cfg.seed, subject, 7919])  # not any training session's stream
        drawn = draw_session(rng, len(fm["ch_names"]), ch)
        sub = f"sub-{subject:02d}"
        paths = {}
        for part, reps in (("training", cfg.train_reps_per_session), ("test", cfg.test_reps_per_session)):
            x, onsets, ev = render_session(
                rng, fm, part, reps, ch, drawn, cfg.catch_fraction, cfg.sequence_length, cfg.sequence_gap_s
            )
            p = out / "raw_eeg" / sub / "ses-01" / f"raw_eeg_{part}.npy"
            paths[part] = str(write_thingseeg2_raw(p, x, fm["ch_names"], fm["sfreq"], np.column_stack([onsets, ev])))
            if part == "test":
                paths["replay"] = str(
                    _write_replay_fif(out / "recordings" / f"{sub}_test.fif", x, fm["ch_names"], onsets, ev)
                )
            del x
        summary["change"] = asdict(scaled)
        summary["subjects"].append(
            {
                "subject": subject,
                "paths": paths,
                "noisy_channels": [fm["ch_names"][i] for i in drawn["noisy_channels"]],
                "gain_range": [float(drawn["gains"].min()), float(drawn["gains"].max())],
                "line_uv_max": float(drawn["line_amp_v"].max() * 1e6),
            }
        )
        info = summary["subjects"][-1]
        log.info(
            "new session of %s: gains %.2f…%.2f, noisy %s, line ≤ %.1f µV",
            sub,
            *info["gain_range"],
            info["noisy_channels"],
            info["line_uv_max"],
        )
    atomic_write_json(out / "session_change.json", summary)
    return summary
