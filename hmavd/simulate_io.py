"""Write a simulated subject: ThingsEEG2-layout dataset, raw session recordings and a replay FIF.

The forward model is in :mod:`hmavd.simulate`. For every subject and session this module renders the
continuous 1000 Hz recording, writes it in the ThingsEEG2 raw format
(:func:`hmavd.preprocessing.raw_io.write_thingseeg2_raw`), and computes the preprocessed dataset *from
that same signal* with the pure transforms and the grouping/MVNN/merge functions of
:mod:`hmavd.preprocessing.prepare` (chronological repetition order). Running ``hmavd-prepare`` on the
raw files with ``preset=<preset> rep_order=chronological max_reps_training=<train reps per session>
max_reps_test=<test reps per session>`` (stored in ``simulation.json`` under ``prepare_overrides``)
reproduces the files to float tolerance.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .channels import VISUAL17
from .config import config_to_dict
from .data.thingseeg2 import EEGSplit, ImageMetadata, save_image_metadata, save_split
from .errors import UserError
from .features.cache import image_ids, save_feature_cache
from .io import atomic_path, atomic_write_json
from .preprocessing.prepare import (
    SessionEpochs,
    group_repetitions,
    merge_test_sessions,
    merge_training_sessions,
    save_mvnn,
    session_whitening,
)
from .preprocessing.presets import PreprocessPreset, get_preset
from .preprocessing.raw_io import write_thingseeg2_raw
from .preprocessing.transforms import apply_whitening, epoch_window_samples, preprocess_epoch, preprocessed_times
from .sim_features import ReferenceFeatures, geometry_statistics
from .sim_forward import forward_model_path, save_forward_model
from .simulate import (
    CATCH_ID,
    SFREQ_RAW,
    SimulatedFeatures,
    SourceModel,
    ar1_noise,
    cut_epochs,
    fit_templates,
    latent_projection,
    latent_sources,
    make_image_metadata,
    make_source_model,
    noise_mixing,
    oracle_scores,
    render_signal,
    ridge_decoder_scores,
    rsvp_schedule,
    select_concepts,
    signal_power,
    simulate_features,
    topk_accuracy,
)
from .simulate_config import PAPER_SIZES, SimulateConfig

log = logging.getLogger(__name__)

__all__ = ["SimulateConfig", "PAPER_SIZES", "simulate_dataset", "simulate_subject", "check_output_dir"]

#: Written first and removed last: a folder holding it is an interrupted simulation (overwritable).
INCOMPLETE_MARKER = "simulation.incomplete"
#: What the simulator writes under ``--out`` (removed before re-simulating into a previous simulation).
OWN_OUTPUTS = (
    "raw_eeg",
    "preprocessed_eeg",
    "recordings",
    "image_set/image_metadata.npy",
    "simulation.json",
    "simulate_config.yaml",
    "forward_model",
)
#: Largest training set for the ridge baseline (its kernel is n_train_images²; skipped above).
RIDGE_MAX_TRAIN = 6000


# --------------------------------------------------------------------------- output folder


def check_output_dir(out: Path, cfg: SimulateConfig, force: bool) -> None:
    """Refuse a non-empty ``out`` that is not this very simulation, unless ``force``."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a folder; choose a folder path")
    if not any(out.iterdir()) or force or (out / INCOMPLETE_MARKER).exists():
        return  # empty, forced, or an interrupted simulation
    sim = out / "simulation.json"
    if sim.exists():
        try:
            old = json.loads(sim.read_text()).get("config")
        except (OSError, ValueError):
            old = None
        if old == config_to_dict(cfg):
            return
        what = "a simulated dataset with a different config"
    else:
        what = "files that are not a simulated dataset"
    raise UserError(f"--out: {out} is not empty and holds {what}; choose an empty folder or pass --force to overwrite")


# --------------------------------------------------------------------------- one subject


def _unit_templates(model: SourceModel, picks: list[int], preset: PreprocessPreset) -> np.ndarray:
    """Each source's unit response after baseline/resample/crop, channels picked: (K, C, T)."""
    off, n = epoch_window_samples(preset.tmin_s, preset.tmax_s, SFREQ_RAW)
    onset = -off + 10
    k = model.patterns.shape[1]
    out = []
    for j in range(k):
        single = SourceModel(
            model.patterns[:, j : j + 1],
            model.waveforms[j : j + 1],
            model.erp_pattern,
            model.erp_waveform,
            model.window_offset,
        )
        x = render_signal(onset + n + 10, np.array([onset]), np.ones((1, 1)), single, 1.0, 0.0)  # (C, n)
        ep = cut_epochs(x[picks], np.array([onset]), off, n)  # (1, C, n)
        out.append(preprocess_epoch(ep, SFREQ_RAW, preset)[0])
    return np.stack(out)  # (K, C, T)


def _write_replay_fif(
    path: Path, data: np.ndarray, ch_names: tuple[str, ...], onsets: np.ndarray, codes: np.ndarray
) -> Path:
    """Continuous EEG + ``stim`` + ``sample_index`` (absolute sample number) as an MNE FIF file."""
    import warnings

    import mne

    n = data.shape[1]
    stim = np.zeros(n)
    stim[onsets] = codes
    fmt = "single" if n < 2**24 else "double"  # float32 holds sample numbers exactly below 2**24
    info = mne.create_info([*ch_names, "stim", "sample_index"], SFREQ_RAW, ["eeg"] * len(ch_names) + ["stim", "misc"])
    raw = mne.io.RawArray(np.vstack([data, stim, np.arange(n, dtype=np.float64)]), info, verbose="error")
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw.save(tmp, fmt=fmt, overwrite=True, verbose="error")
    return path


def _reference_scores(
    model_templates: np.ndarray,
    avg: dict[str, np.ndarray],
    latents: dict[str, np.ndarray],
    features: dict[str, np.ndarray] | None,
) -> dict[str, Any]:
    """Top-1/top-5 of the three reference decoders on the test split (docs/simulated-subject.md).

    ``oracle``: knows the forward model; ``oracle_fitted``: knows the latent projection only and fits
    the templates to the training split; ``ridge``: kernel ridge EEG -> image features (skipped, None,
    above :data:`RIDGE_MAX_TRAIN` training images).
    """
    fitted = fit_templates(avg["training"], latents["training"])
    out: dict[str, Any] = {
        "oracle": topk_accuracy(oracle_scores(avg["test"], model_templates, latents["test"])),
        "oracle_fitted": topk_accuracy(oracle_scores(avg["test"], fitted, latents["test"])),
        "ridge": None,
    }
    if features is not None and len(avg["training"]) <= RIDGE_MAX_TRAIN:
        scores = ridge_decoder_scores(avg["training"], features["training"], avg["test"], features["test"])
        out["ridge"] = topk_accuracy(scores)
    elif features is not None:
        log.info("ridge baseline skipped: %d training images > %d", len(avg["training"]), RIDGE_MAX_TRAIN)
    return out


@dataclass(frozen=True)
class _Subject:
    """What every session of one simulated subject shares (set up by :func:`_subject_setup`)."""

    cfg: SimulateConfig
    sub: str  # "sub-01"
    preset: PreprocessPreset
    ch_names: tuple[str, ...]  # recorded channels
    picked: list[str]  # the preset's channels, in its order
    picks: list[int]  # their indices in ch_names
    model: SourceModel
    mixing: np.ndarray  # (C, C) spatial noise mixing
    noise_std: float  # volts
    gain: float  # signal gain (volts)
    erp_gain: float  # common-ERP gain (volts)


def _subject_setup(
    cfg: SimulateConfig, subject: int, latents: dict[str, np.ndarray]
) -> tuple[_Subject, np.random.Generator]:
    """The subject's forward model and gains, and its random generator (drawn from after the model)."""
    preset = get_preset(cfg.preset)
    ch_names = cfg.channel_names()
    picked = preset.select_channels(list(ch_names))
    rng = np.random.default_rng([cfg.seed, subject])
    model = make_source_model(rng, ch_names, cfg.n_sources, cfg.signal_tmin_s, cfg.signal_tmax_s, VISUAL17)
    mixing = noise_mixing(ch_names, cfg.noise_length_m, cfg.noise_white_fraction)
    noise_std = cfg.noise_uv * 1e-6  # volts
    power = signal_power(np.concatenate([latents["training"], latents["test"]]), model)
    gain = float(np.sqrt(cfg.snr * noise_std**2 / power))
    erp_gain = float(cfg.common_erp_ratio * np.sqrt(cfg.snr * noise_std**2 * len(ch_names)))
    picks = [ch_names.index(c) for c in picked]
    s = _Subject(cfg, f"sub-{subject:02d}", preset, ch_names, picked, picks, model, mixing, noise_std, gain, erp_gain)
    return s, rng


def _render_part(
    s: _Subject, rng: np.random.Generator, lat: np.ndarray, n_reps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One RSVP run of every image ``n_reps`` times: the (C, n) recording in volts, onsets and event codes."""
    cfg = s.cfg
    codes = np.repeat(np.arange(1, len(lat) + 1), n_reps)
    onsets, ev, n_samples = rsvp_schedule(rng, codes, cfg.catch_fraction, cfg.sequence_length, cfg.sequence_gap_s)
    catch = ev == CATCH_ID
    z = np.where(catch[:, None], rng.standard_normal((len(ev), lat.shape[1])), lat[np.where(catch, 1, ev) - 1])
    x = render_signal(n_samples, onsets, z, s.model, s.gain, s.erp_gain)  # (C, n) volts
    x += ar1_noise(rng, s.mixing, n_samples, cfg.noise_ar, s.noise_std)
    return x, onsets, ev


def _session_part(
    s: _Subject, rng: np.random.Generator, lat: np.ndarray, part: str, ses: int, out: Path, paths: dict[str, Path]
) -> SessionEpochs:
    """Render one part of one session, write its raw/replay files, return its grouped epochs (unwhitened)."""
    cfg = s.cfg
    n_reps = cfg.train_reps_per_session if part == "training" else cfg.test_reps_per_session
    x, onsets, ev = _render_part(s, rng, lat, n_reps)  # (C, n) volts
    if cfg.write_raw:
        p = out / "raw_eeg" / s.sub / f"ses-{ses:02d}" / f"raw_eeg_{part}.npy"
        events = np.column_stack([onsets, ev])
        paths[f"raw_ses-{ses:02d}_{part}"] = write_thingseeg2_raw(p, x, s.ch_names, SFREQ_RAW, events)
    if cfg.write_replay and ses == 1 and part == "test":
        paths["replay"] = _write_replay_fif(out / "recordings" / f"{s.sub}_test.fif", x, s.ch_names, onsets, ev)
    off, n_in = epoch_window_samples(s.preset.tmin_s, s.preset.tmax_s, SFREQ_RAW)
    keep = np.flatnonzero(ev != CATCH_ID)
    eps = [
        preprocess_epoch(cut_epochs(x[s.picks], onsets[idx], off, n_in), SFREQ_RAW, s.preset)
        for idx in np.array_split(keep, max(1, len(keep) // 256))
    ]  # (n, C, T) each
    data = np.concatenate(eps)
    del x, eps
    images, index, chrono = group_repetitions(ev[keep], n_reps, "chronological", desc=f"{s.sub} {part}")
    prov = np.stack([np.full_like(chrono, ses), chrono], axis=-1)  # (n_img, R, 2)
    return SessionEpochs(data=data[index], images=images, provenance=prov)


def _write_preprocessed(
    s: _Subject, grouped: dict[str, list[SessionEpochs]], eeg_dir: Path, paths: dict[str, Path]
) -> tuple[dict[str, list[int]], dict[str, np.ndarray]]:
    """Merge the whitened sessions of each part and save them; their shapes and repetition averages."""
    times = preprocessed_times(s.preset, SFREQ_RAW)
    shapes, avg = {}, {}
    for part, merge in (("training", merge_training_sessions), ("test", merge_test_sessions)):
        data, prov = merge(grouped.pop(part), "chronological")  # float32; the per-session copies are freed
        split = EEGSplit(
            eeg=data.astype(np.float32, copy=False), ch_names=tuple(s.picked), times=times, provenance=prov
        )
        paths[part] = save_split(eeg_dir / f"preprocessed_eeg_{part}.npy", split)
        shapes[part] = list(data.shape)
        avg[part] = split.average_repetitions()  # (N, C, T) float32
        del data, split
    return shapes, avg


def simulate_subject(
    cfg: SimulateConfig,
    subject: int,
    latents: dict[str, np.ndarray],
    out: Path,
    features: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Render, write and preprocess all sessions of one subject; returns its summary.

    Parameters
    ----------
    latents : dict
        ``"training"`` (n_train_images, K) and ``"test"`` (n_test_images, K) source amplitudes.
    features : dict, optional
        ``"training"`` / ``"test"`` image features (N, D), for the ridge baseline.
    """
    s, rng = _subject_setup(cfg, subject, latents)
    grouped: dict[str, list[SessionEpochs]] = {"training": [], "test": []}
    whitenings, covs, paths = [], [], {}
    bar = tqdm(total=2 * cfg.n_sessions, desc=f"{s.sub} sessions", unit="part", disable=not cfg.progress, leave=False)
    for ses in range(1, cfg.n_sessions + 1):
        per_part: dict[str, SessionEpochs] = {}
        for part in ("training", "test"):
            per_part[part] = _session_part(s, rng, latents[part], part, ses, out, paths)
            bar.update()
        w, cov = session_whitening(per_part["training"].data, per_part["test"].data, s.preset)
        whitenings.append(w)
        covs.append(cov)
        for part, ep in per_part.items():
            grouped[part].append(
                SessionEpochs(apply_whitening(ep.data, w).astype(np.float32), ep.images, ep.provenance)
            )
    bar.close()
    eeg_dir = out / "preprocessed_eeg" / s.sub
    shapes, avg = _write_preprocessed(s, grouped, eeg_dir, paths)
    sessions = list(range(1, cfg.n_sessions + 1))
    times = preprocessed_times(s.preset, SFREQ_RAW)
    paths["mvnn"] = save_mvnn(
        eeg_dir / "mvnn.npz", np.stack(whitenings), np.stack(covs), sessions, s.picked, s.preset, SFREQ_RAW, times
    )
    noise = {k: getattr(cfg, k) for k in ("noise_uv", "noise_ar", "noise_length_m", "noise_white_fraction")}
    paths["forward_model"] = save_forward_model(
        forward_model_path(out, subject), s.model, s.ch_names, latents, s.gain, s.erp_gain, noise
    )
    unit = _unit_templates(s.model, s.picks, s.preset)  # (K, C, T)
    templates = np.mean([apply_whitening(unit, w) for w in whitenings], axis=0)  # equal reps per session
    return {
        "subject": subject,
        "shapes": shapes,
        "signal_gain_v": s.gain,
        "erp_gain_v": s.erp_gain,
        **_reference_scores(templates, avg, latents, features),
        "paths": {k: str(v.relative_to(out)) for k, v in paths.items()},
    }


# --------------------------------------------------------------------------- whole dataset


def _feature_provenance(cfg: SimulateConfig, meta: ImageMetadata, source: str | None) -> dict[str, Any]:
    what = "generated parametric geometry (docs/simulated-subject.md)" if source is None else f"real ({source})"
    return {
        "model": f"simulated ({what})",
        "pretrained": "simulated",
        "simulated": True,
        "prompt": None,
        "source": f"hmavd-simulate: test image features {what}; training images and all text features are "
        "simulated, see docs/simulated-subject.md",
        "seed": cfg.seed,
        "train_images": image_ids(meta, "training"),
        "test_images": image_ids(meta, "test"),
        "train_concepts": list(meta.train_concepts),
        "test_concepts": list(meta.test_concepts),
    }


def _dataset_summary(
    cfg: SimulateConfig,
    meta: ImageMetadata,
    reference: ReferenceFeatures | None,
    feats: SimulatedFeatures,
    subjects: list[dict[str, Any]],
) -> dict[str, Any]:
    """The summary stored in ``simulation.json``: sizes, mean reference-decoder scores, provenance."""

    def mean_of(key: str) -> dict[str, float] | None:
        if any(s[key] is None for s in subjects):
            return None
        return {k: float(np.mean([s[key][k] for s in subjects])) for k in ("top1", "top5")}

    return {
        "simulated": True,
        "config": config_to_dict(cfg),
        "sfreq_raw": SFREQ_RAW,
        "snr_db": float(10 * np.log10(cfg.snr)),
        "n_train_images": len(meta.train_img_files),
        "n_test_images": len(meta.test_img_files),
        "chance_top1": 1.0 / len(meta.test_img_files),
        "oracle": mean_of("oracle"),
        "oracle_fitted": mean_of("oracle_fitted"),
        "ridge": mean_of("ridge"),
        "feature_geometry": "generated" if reference is None else f"features_from={reference.source}",
        "test_feature_statistics": geometry_statistics(feats.test_image, feats.test_center),
        "reference_decoders": "oracle: knows the forward model (patterns, waveforms, latent projection), reads the "
        "repetition-averaged noisy test EEG; oracle_fitted: knows only the latent projection, fits the response "
        "templates to the training split; ridge: kernel ridge EEG -> image features on the training split, no model "
        "knowledge (None when skipped). See docs/simulated-subject.md.",
        "subjects": subjects,
        "feature_cache": f"features/{cfg.feature_name}",
        "prepare_overrides": [
            f"preset={cfg.preset}",
            "rep_order=chronological",
            f"max_reps_training={cfg.train_reps_per_session}",
            f"max_reps_test={cfg.test_reps_per_session}",
        ],
        "attribution": "ThingsEEG2 layout (Gifford et al. 2022). All EEG is simulated; features and concept "
        "names are generated unless features_from / concepts_from name the user's files.",
    }


def simulate_dataset(cfg: SimulateConfig, out: str | Path, force: bool = False) -> dict[str, Any]:
    """Write the complete simulated dataset under ``out``; returns the summary stored in ``simulation.json``."""
    cfg.validate()  # also when called from Python: nothing is written for a bad config
    cfg = cfg.resolved()
    out = Path(out)
    check_output_dir(out, cfg, force)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "simulation.json"
    incomplete = out / INCOMPLETE_MARKER
    if marker.exists() or incomplete.exists():
        _remove_own_outputs(out, feature_names=(cfg.feature_name, _previous_feature_name(marker)))
    atomic_write_json(incomplete, {"config": config_to_dict(cfg)})  # a crash below leaves this, not a marker
    rng = np.random.default_rng(cfg.seed)
    source, reference = cfg.concept_source(), cfg.reference()
    train_folders, test_folders = select_concepts(cfg.n_train_concepts, cfg.n_test_concepts, source)
    meta = make_image_metadata(train_folders, cfg.n_train_images_per_concept, test_folders, source)
    feats: SimulatedFeatures = simulate_features(
        rng,
        cfg.n_train_concepts,
        cfg.n_train_images_per_concept,
        cfg.n_test_concepts,
        cfg.prototype_rank,
        cfg.image_variation,
        cfg.text_noise,
        cfg.modality_gap,
        reference=reference,
        geometry=cfg.geometry(),
    )
    every = np.concatenate([feats.train_image, feats.test_image])  # sources: unit variance over all images
    proj, mean, scale = latent_projection(rng, cfg.n_sources, every.shape[1], reference=every)
    latents = {
        "training": latent_sources(feats.train_image, proj, mean, scale),  # (Ntr, K)
        "test": latent_sources(feats.test_image, proj, mean, scale),  # (Nte, K)
    }
    save_image_metadata(out / "image_set" / "image_metadata.npy", meta)
    arrays = {
        "train_image_features": feats.train_image,
        "test_image_features": feats.test_image,
        "train_text_features": feats.train_text,
        "test_text_features": feats.test_text,
    }
    if feats.test_center is not None:
        arrays["test_center_features"] = feats.test_center
    prov = _feature_provenance(cfg, meta, reference.source if reference is not None else None)
    save_feature_cache(out / "features" / cfg.feature_name, arrays, prov)
    subjects = []
    for subject in tqdm(range(1, cfg.n_subjects + 1), desc="subjects", unit="subject", disable=not cfg.progress):
        feats_by_split = {"training": feats.train_image, "test": feats.test_image}
        subjects.append(simulate_subject(cfg, subject, latents, out, feats_by_split))

    summary = _dataset_summary(cfg, meta, reference, feats, subjects)
    atomic_write_json(marker, summary)
    incomplete.unlink()
    return summary


def _previous_feature_name(marker: Path) -> str:
    try:
        return str(json.loads(marker.read_text())["config"]["feature_name"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _remove_own_outputs(out: Path, feature_names: tuple[str, ...]) -> None:
    """Delete what an earlier simulation wrote under ``out`` (so no stale session or subject survives)."""
    import shutil

    names = [*OWN_OUTPUTS, *(f"features/{n}" for n in feature_names if n and "/" not in n and n not in (".", ".."))]
    for name in names:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    log.info("removed the outputs of the earlier simulation in %s", out)
