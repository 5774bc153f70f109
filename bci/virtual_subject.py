"""The simulated subject's forward model, rebuilt from its folder, as small pure functions for live use.

:func:`load_virtual_subject` reads a folder written by ``hmavd-simulate`` (``forward_model/sub-XX.npz``,
:mod:`hmavd.sim_forward`: the subject's source model — spatial patterns, waveforms, common ERP —, gains,
every image's latent sources and the noise parameters) and checks it against ``simulation.json``
(the signal gain recomputed from the stored model must be the reported one), so the live responses are
the simulator's own.

The live part is pure arithmetic on arrays:

- :func:`model_at_rate` — the source model resampled to the stream's rate (500 or 1000 Hz …);
- :func:`image_response` — one presentation's response ``(C, L)``, as :func:`hmavd.simulate.render_signal`;
- :func:`render_chunk` — the sum of pending responses over stream samples ``[start, stop)``;
- :class:`AR1Noise` — the simulator's noise model (spatially mixed AR(1)), continued chunk by chunk.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.signal

from hmavd.errors import UserError
from hmavd.sim_forward import forward_model_path, load_forward_model
from hmavd.simulate import CATCH_ID, SFREQ_RAW, SourceModel, signal_power

log = logging.getLogger(__name__)

__all__ = [
    "ACTICAP64",
    "VirtualSubject",
    "PendingResponse",
    "load_virtual_subject",
    "model_at_rate",
    "image_response",
    "render_chunk",
    "parse_code",
    "AR1Noise",
]

#: A 64-channel actiCAP-like montage in the amplifier's channel order: the 63 ThingsEEG2 channels plus
#: ``Fz`` (ThingsEEG2's reference, streamed here as an ordinary channel carrying noise only).
ACTICAP64: tuple[str, ...] = tuple(
    (
        "Fp1 Fz F3 F7 FT9 FC5 FC1 C3 T7 TP9 CP5 CP1 Pz P3 P7 O1 "
        "Oz O2 P4 P8 TP10 CP6 CP2 Cz C4 T8 FT10 FC6 FC2 F4 F8 Fp2 "
        "AF7 AF3 AFz F1 F5 FT7 FC3 C1 C5 TP7 CP3 P1 P5 PO7 PO3 POz "
        "PO4 PO8 P6 P2 CPz CP4 TP8 C6 C2 FC4 FT8 F6 AF8 AF4 F2 FCz"
    ).split()
)

_TRAILING_INT = re.compile(r"(\d+)\s*$")
_BLOCK = re.compile(r"^block:(training|test)$")


@dataclass(frozen=True)
class VirtualSubject:
    """One simulated subject's forward model (volts), as ``hmavd-simulate`` drew it.

    Attributes
    ----------
    ch_names : tuple of str
        The subject's recorded channels (rows of ``model.patterns``).
    model : SourceModel
        Patterns (C, K), waveforms (K, L) at :attr:`sfreq`, common ERP, window offset (samples).
    sfreq : float
        Rate of ``model``'s waveforms (Hz); 1000 as simulated, see :func:`model_at_rate`.
    gain_v, erp_gain_v : float
        Volts per unit of the image-specific response and of the common ERP.
    latents : dict
        ``"training"`` (n_train_images, K) and ``"test"`` (n_test_images, K) source amplitudes.
    noise_uv, noise_ar, noise_length_m, noise_white_fraction : float
        The noise model (std per channel in µV, AR(1) coefficient per 1 ms sample, spatial kernel).
    """

    ch_names: tuple[str, ...]
    model: SourceModel
    sfreq: float
    gain_v: float
    erp_gain_v: float
    latents: dict[str, np.ndarray]
    noise_uv: float
    noise_ar: float
    noise_length_m: float
    noise_white_fraction: float
    subject: int = 1
    folder: str = ""


@dataclass(frozen=True)
class PendingResponse:
    """A response to add to the stream: ``data`` (C, L) starting at absolute stream sample ``start``."""

    start: int
    data: np.ndarray

    @property
    def stop(self) -> int:
        return self.start + self.data.shape[1]


def load_virtual_subject(folder: str | Path, subject: int = 1) -> VirtualSubject:
    """Subject ``subject`` of the simulated dataset in ``folder`` (``forward_model/sub-XX.npz``), checked.

    The signal gain recomputed from the stored model and latents (the simulator's SNR definition,
    :func:`hmavd.simulate.signal_power`) must equal the one ``simulation.json`` reports for the subject.
    """
    folder = Path(folder)
    sim_path = folder / "simulation.json"
    if not sim_path.exists():
        raise UserError(
            f"subject_dir: {folder} holds no simulation.json; point at a folder written by hmavd-simulate "
            "(e.g. hmavd_data/sim from hmavd-demo)"
        )
    try:
        summary = json.loads(sim_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"subject_dir: {sim_path} is not readable JSON ({type(err).__name__}); re-simulate") from None
    subjects = {int(s["subject"]): s for s in summary.get("subjects", [])}
    if subject not in subjects:
        raise UserError(f"subject: {subject} is not simulated in {folder} (subjects {sorted(subjects)}); pick one")
    fm = load_forward_model(forward_model_path(folder, subject))
    snr = float(summary["config"]["snr"])
    power = signal_power(np.concatenate([fm["latents"]["training"], fm["latents"]["test"]]), fm["model"])
    gain = float(np.sqrt(snr * (fm["noise_uv"] * 1e-6) ** 2 / power))
    written = float(subjects[subject]["signal_gain_v"])
    if not (np.isclose(gain, written, rtol=1e-6, atol=0.0) and np.isclose(fm["gain_v"], written, rtol=1e-9)):
        raise UserError(
            f"subject_dir: {folder}'s forward model does not reproduce its signal gain ({gain:.6g} V vs "
            f"{written:.6g} V in simulation.json); re-simulate it with hmavd-simulate"
        )
    return VirtualSubject(
        ch_names=fm["ch_names"],
        model=fm["model"],
        sfreq=fm["sfreq"],
        gain_v=fm["gain_v"],
        erp_gain_v=fm["erp_gain_v"],
        latents=fm["latents"],
        noise_uv=fm["noise_uv"],
        noise_ar=fm["noise_ar"],
        noise_length_m=fm["noise_length_m"],
        noise_white_fraction=fm["noise_white_fraction"],
        subject=subject,
        folder=str(folder),
    )


def model_at_rate(subject: VirtualSubject, sfreq: float) -> VirtualSubject:
    """The subject with its waveforms sampled at ``sfreq`` (Hz): onset-relative times ``j / sfreq``.

    Exact subsampling when ``1000 / sfreq`` is an integer (500 Hz: every second sample), linear
    interpolation otherwise. ``window_offset`` becomes samples at ``sfreq``.
    """
    if sfreq <= 0:
        raise UserError(f"sfreq: {sfreq} must be > 0 (e.g. 500 or 1000)")
    if sfreq == subject.sfreq:
        return subject
    m = subject.model
    t0 = m.window_offset / subject.sfreq  # s
    t_src = t0 + np.arange(m.waveforms.shape[1]) / subject.sfreq
    start = int(np.ceil(t0 * sfreq - 1e-9))
    t_new = np.arange(start, int(np.floor(t_src[-1] * sfreq + 1e-9)) + 1) / sfreq  # (L',)

    pos = (t_new - t0) * subject.sfreq  # (L',) positions in the source waveform
    exact = np.allclose(pos, np.round(pos), atol=1e-6)

    def interp(w: np.ndarray) -> np.ndarray:
        if exact:
            return w[np.round(pos).astype(np.int64)]
        return np.interp(t_new, t_src, w, left=0.0, right=0.0)

    model = SourceModel(
        patterns=m.patterns,
        waveforms=np.stack([interp(w) for w in m.waveforms]),
        erp_pattern=m.erp_pattern,
        erp_waveform=interp(m.erp_waveform),
        window_offset=start,
    )
    return replace(subject, model=model, sfreq=float(sfreq))


def image_response(subject: VirtualSubject, latent: np.ndarray) -> np.ndarray:
    """One presentation's response over the signal window, volts: (C, L).

    ``gain · Σ_k z_k a_k w_k + erp_gain · a_0 w_0``, exactly the term :func:`hmavd.simulate.render_signal`
    adds at every onset (its first sample is ``model.window_offset`` samples after the onset).
    """
    m = subject.model
    z = np.asarray(latent, dtype=np.float64)  # (K,)
    return subject.gain_v * (m.patterns * z) @ m.waveforms + subject.erp_gain_v * np.outer(
        m.erp_pattern, m.erp_waveform
    )


def render_chunk(pending: list[PendingResponse], start: int, stop: int, n_chans: int) -> np.ndarray:
    """Sum of the parts of ``pending`` responses that fall in stream samples ``[start, stop)``: (C, n) volts."""
    out = np.zeros((n_chans, stop - start))
    for p in pending:
        a, b = max(p.start, start), min(p.stop, stop)
        if a < b:
            out[:, a - start : b - start] += p.data[:, a - p.start : b - p.start]
    return out


def parse_code(code: str) -> tuple[str, int | None]:
    """``("block", 0)`` for ``block:training``/``block:test``, ``("image", n)`` for a trailing integer ``n``
    (``"17"``, ``"Stimulus/S 17"``; ``n = 99999`` is the target/catch image), ``("unknown", None)`` else."""
    code = str(code).strip()
    if _BLOCK.match(code):
        return "block", 0
    m = _TRAILING_INT.search(code)
    return ("image", int(m.group(1))) if m else ("unknown", None)


def latent_for(subject: VirtualSubject, partition: str, image: int, rng: np.random.Generator) -> np.ndarray | None:
    """Source amplitudes of image ``image`` (1-based) of ``partition``; random ones for the target
    (:data:`~hmavd.simulate.CATCH_ID`, as the simulator's catch trials); ``None`` when out of range."""
    lat = subject.latents[partition]
    if image == CATCH_ID:
        return rng.standard_normal(lat.shape[1])
    if 1 <= image <= len(lat):
        return lat[image - 1]
    return None


class AR1Noise:
    """The simulator's noise (:func:`hmavd.simulate.ar1_noise`) continued across chunks.

    Each of the ``C`` latent processes is ``e[t] = ar e[t-1] + sqrt(1 - ar²) u[t]`` (unit variance,
    started stationary); a chunk is ``std · M @ e``. ``ar_per_ms`` is converted to the stream rate
    (``ar_per_ms ** (1000 / sfreq)`` per sample), so the temporal correlation in seconds is the simulator's.
    """

    def __init__(self, rng: np.random.Generator, mixing: np.ndarray, ar_per_ms: float, std: float, sfreq: float):
        if not 0 <= ar_per_ms < 1:
            raise UserError(f"noise_ar: {ar_per_ms} must be in [0, 1)")
        self.rng, self.mixing, self.std = rng, mixing, float(std)
        self.ar = float(ar_per_ms ** (SFREQ_RAW / sfreq))
        self._state = rng.standard_normal(mixing.shape[0])  # (C,) stationary start

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` samples: (C, n) float64 in the units of ``std``."""
        ar = self.ar
        u = np.sqrt(1 - ar**2) * self.rng.standard_normal((self.mixing.shape[0], n))
        e, zf = scipy.signal.lfilter([1.0], [1.0, -ar], u, axis=1, zi=(ar * self._state)[:, None])
        self._state = e[:, -1]
        return self.std * (self.mixing @ e)
