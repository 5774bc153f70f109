"""The simulated subject: a documented forward model from image features to continuous EEG.

Everything here is a pure function of arrays and a seeded ``numpy.random.Generator``; writing the
dataset lives in :mod:`hmavd.simulate_io` and the command in :mod:`hmavd.cli.simulate`. The model,
its parameters, the SNR definition and the three reference decoders are documented in
``docs/simulated-subject.md``. In short:

- **Features** (:mod:`hmavd.sim_features`, re-exported here): by default a generated, seeded parametric
  geometry with the published figures of CLIP ViT-L/14 test features (768-d, mean pairwise cosine 0.54,
  image–centre cosine 0.89, power-law spectrum, categories and concepts); with ``features_from=`` the
  user's real test features, training features drawn from Gaussians fitted to them. Text features are
  ``normalize(normalize(p_c) + text_noise·e_c + modality_gap·g)``.
- **EEG**: ``K`` latent sources ``z = diag(1/s) P (f − mu)`` of the image feature ``f``, each with a
  scalp pattern ``a_k`` (occipito-parietal Gaussian blob) and a Gabor waveform ``w_k(t)`` that is
  zero outside the signal window; response ``R = gain·Σ_k z_k a_k w_k(t)`` + a common ERP, added at
  every RSVP onset of a 1000 Hz recording; noise spatially correlated (exponential distance kernel)
  and AR(1) in time. ``snr`` = single-trial power of the image-specific response in the signal
  window / noise power.
- **Reference decoders** (:func:`oracle_scores`): the oracle knows the forward model (patterns,
  waveforms, ``P``) and reads only the repetition-averaged, preprocessed *noisy* test EEG; with
  templates from :func:`fit_templates` it knows only ``P`` and learns the response shapes from the
  training split; :func:`ridge_decoder_scores` knows nothing about the model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.signal

from .data.concepts import make_image_metadata, select_concepts, test_image_files
from .errors import UserError
from .sim_features import (
    FeatureGeometry,
    GeometryParams,
    ReferenceFeatures,
    SimulatedFeatures,
    fit_low_rank_gaussian,
    generate_concepts,
    l2_normalize,
    sample_low_rank_gaussian,
    simulate_features,
)

__all__ = [
    "SFREQ_RAW",
    "SOA_S",
    "CATCH_ID",
    "FeatureGeometry",
    "GeometryParams",
    "ReferenceFeatures",
    "SimulatedFeatures",
    "SourceModel",
    "select_concepts",
    "test_image_files",
    "make_image_metadata",
    "l2_normalize",
    "fit_low_rank_gaussian",
    "sample_low_rank_gaussian",
    "simulate_features",
    "latent_projection",
    "latent_sources",
    "electrode_positions",
    "spatial_patterns",
    "temporal_waveforms",
    "make_source_model",
    "noise_mixing",
    "ar1_noise",
    "rsvp_schedule",
    "signal_power",
    "render_signal",
    "cut_epochs",
    "oracle_scores",
    "fit_templates",
    "ridge_decoder_scores",
    "topk_accuracy",
]

#: Rate of the simulated continuous recording (Hz), as ThingsEEG2's raw files.
SFREQ_RAW = 1000.0
#: Stimulus onset asynchrony of the RSVP (100 ms image + 100 ms blank), seconds.
SOA_S = 0.2
#: Event code of target/catch trials (dropped by the preprocessing).
CATCH_ID = 99999


# --------------------------------------------------------------------------- features (hmavd.sim_features)


def latent_projection(
    rng: np.random.Generator, n_sources: int, dim: int, reference: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed random projection to ``n_sources`` latents, normalised on reference image features.

    Parameters
    ----------
    reference : ndarray, shape (N, D), optional
        The test image features the projection is normalised on (the simulator passes its own); None:
        200 test images of the default generated geometry (seed 0).

    Returns
    -------
    projection : ndarray, shape (K, D)
    mean : ndarray, shape (D,)
        Mean of the reference features (subtracted before projecting).
    scale : ndarray, shape (K,)
        Per-source standard deviation over the reference features (divided out).
    """
    if n_sources < 1:
        raise UserError(f"n_sources: {n_sources} must be >= 1")
    proj = rng.standard_normal((n_sources, dim)) / np.sqrt(dim)  # (K, D)
    if reference is None:
        reference = _default_reference(dim)
    ref = np.asarray(reference, dtype=np.float64)  # (N, D)
    mean = ref.mean(axis=0)
    scale = (ref - mean) @ proj.T  # (N, K)
    return proj, mean, scale.std(axis=0)


@functools.lru_cache(maxsize=2)
def _default_reference(dim: int) -> np.ndarray:
    ((_, img, _),) = generate_concepts(np.random.default_rng(0), [200], [1], GeometryParams(dim=dim))
    return img  # (200, D)


def latent_sources(features: np.ndarray, projection: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``z = diag(1/scale) P (f - mean)``: (N, D) features -> (N, K) source amplitudes."""
    return ((np.asarray(features, dtype=np.float64) - mean) @ projection.T) / scale  # (N, K)


# --------------------------------------------------------------------------- sources


@functools.lru_cache(maxsize=4)
def _montage_positions() -> dict[str, np.ndarray]:
    import warnings

    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        montage = mne.channels.make_standard_montage("standard_1005")
    return {k: np.asarray(v, dtype=np.float64) for k, v in montage.get_positions()["ch_pos"].items()}


def electrode_positions(ch_names: Sequence[str]) -> np.ndarray:
    """Scalp positions (m, head coordinates) of 10-05 electrodes: (C, 3)."""
    pos = _montage_positions()
    missing = [c for c in ch_names if c not in pos]
    if missing:
        raise UserError(f"channels: {missing[:5]} are not 10-05 electrode names; use standard 10-10 names")
    return np.stack([pos[c] for c in ch_names])


@dataclass(frozen=True)
class SourceModel:
    """One subject's sources: spatial patterns, temporal waveforms and the common ERP.

    Attributes
    ----------
    patterns : ndarray, shape (C, K)
        Unit-norm spatial pattern of each source.
    waveforms : ndarray, shape (K, L)
        Unit-RMS waveform of each source over the signal window (``L`` samples at 1000 Hz).
    erp_pattern : ndarray, shape (C,)
    erp_waveform : ndarray, shape (L,)
    window_offset : int
        Sample offset of the window's first sample from the onset (e.g. 100 for 0.1 s).
    """

    patterns: np.ndarray
    waveforms: np.ndarray
    erp_pattern: np.ndarray
    erp_waveform: np.ndarray
    window_offset: int


def spatial_patterns(
    rng: np.random.Generator, ch_names: Sequence[str], n_sources: int, visual: Sequence[str]
) -> np.ndarray:
    """Scalp patterns weighted toward occipital/parietal electrodes: (C, K), unit-norm columns.

    Each source is a Gaussian blob (width 3–6 cm) centred on a random electrode of ``visual``
    (falling back to all channels when none of ``visual`` is recorded), random sign, plus 10 %
    spatially white jitter.
    """
    pos = electrode_positions(ch_names)  # (C, 3)
    centres = [c for c in visual if c in ch_names] or list(ch_names)
    cpos = electrode_positions(centres)  # (V, 3)
    out = np.empty((len(ch_names), n_sources))
    for k in range(n_sources):
        centre = cpos[rng.integers(len(centres))]
        width = rng.uniform(0.03, 0.06)
        blob = np.exp(-np.sum((pos - centre) ** 2, axis=1) / (2 * width**2))  # (C,)
        blob = blob / np.linalg.norm(blob) + 0.1 * rng.standard_normal(len(ch_names)) / np.sqrt(len(ch_names))
        out[:, k] = rng.choice([-1.0, 1.0]) * blob / np.linalg.norm(blob)
    return out


def temporal_waveforms(
    rng: np.random.Generator, n_sources: int, tmin_s: float, tmax_s: float, sfreq: float = SFREQ_RAW
) -> np.ndarray:
    """ERP-like Gabor waveforms inside ``[tmin_s, tmax_s]``: (K, L) unit RMS, exactly 0 at both ends.

    Latency uniform in the window's central 80 %, width 20–60 ms, frequency 2–10 Hz, random phase,
    multiplied by a Hann taper spanning the window.
    """
    if not 0 <= tmin_s < tmax_s:
        raise UserError(f"signal window: [{tmin_s}, {tmax_s}] s must satisfy 0 <= signal_tmin_s < signal_tmax_s")
    n = int(round((tmax_s - tmin_s) * sfreq)) + 1
    t = tmin_s + np.arange(n) / sfreq  # (L,)
    span = tmax_s - tmin_s
    lat = rng.uniform(tmin_s + 0.1 * span, tmax_s - 0.1 * span, n_sources)[:, None]  # (K, 1)
    width = rng.uniform(0.02, 0.06, n_sources)[:, None]
    freq = rng.uniform(2.0, 10.0, n_sources)[:, None]
    phase = rng.uniform(0, 2 * np.pi, n_sources)[:, None]
    w = np.exp(-((t - lat) ** 2) / (2 * width**2)) * np.cos(2 * np.pi * freq * (t - lat) + phase)  # (K, L)
    w = w * np.hanning(n)  # zero at the window edges
    return w / np.sqrt(np.mean(w**2, axis=1, keepdims=True))


def make_source_model(
    rng: np.random.Generator,
    ch_names: Sequence[str],
    n_sources: int,
    signal_tmin_s: float,
    signal_tmax_s: float,
    visual: Sequence[str],
) -> SourceModel:
    """Draw one subject's :class:`SourceModel`."""
    patterns = spatial_patterns(rng, ch_names, n_sources + 1, visual)  # (C, K+1)
    waves = temporal_waveforms(rng, n_sources + 1, signal_tmin_s, signal_tmax_s)  # (K+1, L)
    return SourceModel(
        patterns=patterns[:, 1:],
        waveforms=waves[1:],
        erp_pattern=patterns[:, 0],
        erp_waveform=waves[0],
        window_offset=int(round(signal_tmin_s * SFREQ_RAW)),
    )


# --------------------------------------------------------------------------- noise


def noise_mixing(ch_names: Sequence[str], length_m: float = 0.1, white_fraction: float = 0.2) -> np.ndarray:
    """Spatial mixing matrix ``M`` (C, C), ``M Mᵀ = (1 - w) exp(-d / length_m) + w I`` (unit diagonal)."""
    pos = electrode_positions(ch_names)
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)  # (C, C)
    cov = (1 - white_fraction) * np.exp(-dist / max(length_m, 1e-6)) + white_fraction * np.eye(len(ch_names))
    return np.linalg.cholesky(cov)


def ar1_noise(
    rng: np.random.Generator,
    mixing: np.ndarray,
    n_samples: int,
    ar: float,
    std: float,
    chunk: int = 200_000,
) -> np.ndarray:
    """Spatially mixed, stationary AR(1) noise: (C, n_samples) float64 with per-channel std ``std``.

    Each of the ``C`` latent processes is ``e[t] = ar * e[t-1] + sqrt(1 - ar²) u[t]`` (unit
    variance, started from its stationary distribution); the output is ``std * M @ e``.
    Generated in time chunks to bound memory.
    """
    if not 0 <= ar < 1:
        raise UserError(f"noise_ar: {ar} must be in [0, 1)")
    c = mixing.shape[0]
    out = np.empty((c, n_samples))
    state = rng.standard_normal(c)  # (C,) stationary start
    gain = np.sqrt(1 - ar**2)
    for start in range(0, n_samples, chunk):
        stop = min(start + chunk, n_samples)
        u = gain * rng.standard_normal((c, stop - start))  # (C, n)
        e, zf = scipy.signal.lfilter([1.0], [1.0, -ar], u, axis=1, zi=(ar * state)[:, None])
        state = zf[:, 0] / ar if ar > 0 else e[:, -1]
        out[:, start:stop] = std * (mixing @ e)
    return out


# --------------------------------------------------------------------------- stimulus sequence


def rsvp_schedule(
    rng: np.random.Generator,
    codes: np.ndarray,
    catch_fraction: float,
    sequence_length: int,
    sequence_gap_s: float,
    lead_s: float = 1.0,
    tail_s: float = 1.5,
    sfreq: float = SFREQ_RAW,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Shuffle ``codes`` into RSVP sequences with catch trials.

    Parameters
    ----------
    codes : ndarray, shape (n_trials,)
        Image numbers (1-based) to present, each as often as it appears.
    catch_fraction : float
        Expected fraction of catch trials (code 99999) inserted at random positions.
    sequence_length : int
        Presentations per sequence (onsets every ``SOA_S``); sequences are separated by an extra
        ``sequence_gap_s``.

    Returns
    -------
    onsets : ndarray, shape (n_events,) int64
        Onset samples, increasing.
    event_codes : ndarray, shape (n_events,) int64
    n_samples : int
        Length of the recording.
    """
    order = rng.permutation(np.asarray(codes, dtype=np.int64))
    n_catch = int(round(catch_fraction * len(order)))
    if n_catch:
        pos = np.sort(rng.integers(0, len(order) + 1, n_catch))
        order = np.insert(order, pos, CATCH_ID)
    idx = np.arange(len(order))
    onset_s = lead_s + idx * SOA_S + (idx // max(sequence_length, 1)) * sequence_gap_s
    onsets = np.round(onset_s * sfreq).astype(np.int64)
    n_samples = int(onsets[-1] + round(tail_s * sfreq)) if len(onsets) else int(round((lead_s + tail_s) * sfreq))
    return onsets, order, n_samples


# --------------------------------------------------------------------------- signal


def signal_power(latents: np.ndarray, model: SourceModel) -> float:
    """Mean power of the image-specific response over images, channels and window samples.

    ``mean_n z_nᵀ ((AᵀA) ∘ (W Wᵀ)) z_n / (C L)`` for latents (N, K).
    """
    a, w = model.patterns, model.waveforms
    m = (a.T @ a) * (w @ w.T)  # (K, K)
    return float(np.mean(np.einsum("nk,kj,nj->n", latents, m, latents)) / (a.shape[0] * w.shape[1]))


def render_signal(
    n_samples: int,
    onsets: np.ndarray,
    latents: np.ndarray,
    model: SourceModel,
    gain: float,
    erp_gain: float,
    chunk: int = 256,
) -> np.ndarray:
    """Noise-free continuous signal: every presentation's response added at its onset.

    Parameters
    ----------
    onsets : ndarray, shape (n_events,)
        Onset samples.
    latents : ndarray, shape (n_events, K)
        Source amplitudes of each presentation.
    gain, erp_gain : float
        Volts per unit of the image-specific response and of the common ERP.

    Returns
    -------
    ndarray, shape (C, n_samples) float64, volts
    """
    c, length = model.patterns.shape[0], model.waveforms.shape[1]
    out = np.zeros((c, n_samples))
    erp = erp_gain * np.outer(model.erp_pattern, model.erp_waveform)  # (C, L)
    for start in range(0, len(onsets), chunk):
        z = latents[start : start + chunk]  # (n, K)
        resp = gain * np.einsum("ck,nk,kl->ncl", model.patterns, z, model.waveforms) + erp  # (n, C, L)
        for i, onset in enumerate(onsets[start : start + chunk]):
            s = int(onset) + model.window_offset
            out[:, s : s + length] += resp[i]
    return out


def cut_epochs(data: np.ndarray, onsets: np.ndarray, first_offset: int, n_times: int) -> np.ndarray:
    """Epochs ``data[:, onset + first_offset : ... + n_times]``: (n_events, C, n_times)."""
    idx = np.asarray(onsets, dtype=np.int64)[:, None] + first_offset + np.arange(n_times)  # (n, T)
    if idx.min() < 0 or idx.max() >= data.shape[1]:
        raise ValueError("epoch window runs past the recording")
    return np.moveaxis(data[:, idx], 0, 1)  # (n, C, T)


# --------------------------------------------------------------------------- oracle


def oracle_scores(eeg_avg: np.ndarray, templates: np.ndarray, latents: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Similarity of every test trial to every test image for a decoder that knows the forward model.

    Parameters
    ----------
    eeg_avg : ndarray, shape (N, C, T)
        Repetition-averaged preprocessed test EEG.
    templates : ndarray, shape (K, C, T)
        Each source's unit response after the same preprocessing (including whitening).
    latents : ndarray, shape (N, K)
        True source amplitudes of the N test images.
    ridge : float
        Ridge strength relative to the mean eigenvalue of ``GᵀG``.

    Returns
    -------
    ndarray, shape (N, N)
        Cosine similarity between the estimated ``ẑ_i`` (rows) and true ``z_j`` (columns), both
        centred across the N test images (removes what every image shares, e.g. the common ERP).
    """
    g = templates.reshape(templates.shape[0], -1).T  # (C*T, K)
    y = eeg_avg.reshape(eeg_avg.shape[0], -1).T  # (C*T, N)
    gtg = g.T @ g  # (K, K)
    lam = ridge * np.trace(gtg) / gtg.shape[0]
    z_hat = np.linalg.solve(gtg + lam * np.eye(gtg.shape[0]), g.T @ y).T  # (N, K)
    a = l2_normalize(z_hat - z_hat.mean(axis=0))  # centred across test images
    b = l2_normalize(latents - latents.mean(axis=0))
    return a @ b.T


def fit_templates(eeg_avg: np.ndarray, latents: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Each source's response estimated from training data: ridge least squares of EEG on known latents.

    Parameters
    ----------
    eeg_avg : ndarray, shape (N, C, T)
        Repetition-averaged preprocessed training EEG.
    latents : ndarray, shape (N, K)
        True source amplitudes of the N training images (needs the latent projection ``P``).
    ridge : float
        Ridge strength relative to the mean eigenvalue of ``ZᵀZ``.

    Returns
    -------
    ndarray, shape (K, C, T)
        Templates for :func:`oracle_scores` (both sides centred across images, so the common ERP
        and the mean response drop out).
    """
    n, c, t = eeg_avg.shape
    x = eeg_avg.reshape(n, -1).astype(np.float64)
    x = x - x.mean(axis=0)  # (N, C*T)
    z = np.asarray(latents, dtype=np.float64)
    z = z - z.mean(axis=0)  # (N, K)
    ztz = z.T @ z
    lam = ridge * np.trace(ztz) / ztz.shape[0]
    g = np.linalg.solve(ztz + lam * np.eye(ztz.shape[0]), z.T @ x)  # (K, C*T)
    return g.reshape(-1, c, t)


def ridge_decoder_scores(
    train_eeg: np.ndarray,
    train_features: np.ndarray,
    test_eeg: np.ndarray,
    test_features: np.ndarray,
    alpha: float = 1.0,
) -> np.ndarray:
    """A model-free baseline: kernel (dual) ridge regression from flattened EEG to image features.

    Parameters
    ----------
    train_eeg, test_eeg : ndarray, shape (N, C, T) and (M, C, T)
        Repetition-averaged preprocessed EEG.
    train_features, test_features : ndarray, shape (N, D) and (M, D)
        Image features of the training images and of the test gallery.
    alpha : float
        Ridge strength relative to the mean diagonal of the linear kernel (fixed, not tuned).

    Returns
    -------
    ndarray, shape (M, M)
        Cosine similarity of each predicted feature (rows) to each test image feature (columns),
        both minus the mean training feature (CLIP features share a large common direction).
    """
    x = train_eeg.reshape(len(train_eeg), -1).astype(np.float64)
    mx = x.mean(axis=0)
    x -= mx  # (N, C*T)
    y = np.asarray(train_features, dtype=np.float64)
    my = y.mean(axis=0)
    k = x @ x.T  # (N, N)
    lam = alpha * np.trace(k) / len(k)
    coef = np.linalg.solve(k + lam * np.eye(len(k)), y - my)  # (N, D)
    kt = (test_eeg.reshape(len(test_eeg), -1).astype(np.float64) - mx) @ x.T  # (M, N)
    pred = kt @ coef  # (M, D) predicted feature minus my
    return l2_normalize(pred) @ l2_normalize(np.asarray(test_features, dtype=np.float64) - my).T


def topk_accuracy(scores: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose own column (the diagonal) ranks within the top ``k``: {"top1": …, "top5": …}.

    One rank rule for the whole toolkit: :func:`hmavd.evaluate.topk_accuracy` (ties count against the
    true column).
    """
    from .evaluate import topk_accuracy as rank_rule  # torch is imported only when scores are ranked

    labels = np.arange(scores.shape[0])  # (N,) row i's true column is i
    return {f"top{k}": rank_rule(scores, labels, k) for k in ks}
