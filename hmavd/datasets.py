"""Assemble training/validation/test tensors from a ThingsEEG2-layout folder and its feature cache.

Everything here works on numpy arrays; :mod:`hmavd.train` moves them to the device once (the whole
training set is resident there) and :mod:`hmavd.evaluate` encodes the test set.

Row conventions
---------------
* training: one row per training image (repetitions averaged, ``average_train_reps=True``) or per
  (image, repetition); ``image_features[i]`` is that image's feature, ``text_features[i]`` the text
  feature of its concept.
* validation: a seeded random hold-out of ``n_val`` training *images* (all their repetitions and, for
  several subjects, every subject's trials of those images), never seen in training.
* test: one row per test image, EEG averaged over its repetitions; ``labels[i]`` is the index of the
  image's concept in ``concepts`` (sorted folder names), which is also the row order of every template.

:func:`write_planted_dataset` writes a tiny dataset with a planted linear EEG-feature relation in the
real file format, for tests and smoke runs without the simulator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .channels import REGIONS, resolve_channels
from .data.thingseeg2 import (
    EEGSplit,
    ImageMetadata,
    load_image_metadata,
    load_split,
    save_image_metadata,
    save_split,
    split_file,
    subject_dir,
    validation_split,
)
from .errors import UserError
from .features.cache import FeatureCache, check_against_metadata, load_feature_cache, save_feature_cache

log = logging.getLogger(__name__)

__all__ = [
    "TrainingSet",
    "TestSet",
    "metadata_path",
    "list_subjects",
    "parse_subjects",
    "resolve_feature_cache",
    "resolve_channel_names",
    "cache_summary",
    "load_training_set",
    "load_test_set",
    "write_planted_dataset",
]


@dataclass(frozen=True)
class TrainingSet:
    """Training and validation arrays of one run.

    Attributes
    ----------
    eeg, val_eeg : ndarray, shape (N, C, T) / (N_val, C, T), float32
    image_features, val_image_features : ndarray, shape (N, D) / (N_val, D), float32
    text_features, val_text_features : ndarray, shape (N, D) / (N_val, D), float32
    ch_names : tuple of str
    times : ndarray, shape (T,), seconds
    subjects : tuple of int
        Subjects whose training data are pooled.
    cache : FeatureCache
    """

    eeg: np.ndarray
    image_features: np.ndarray
    text_features: np.ndarray
    val_eeg: np.ndarray
    val_image_features: np.ndarray
    val_text_features: np.ndarray
    ch_names: tuple[str, ...]
    times: np.ndarray
    subjects: tuple[int, ...]
    cache: FeatureCache
    val_images: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def sfreq(self) -> float:
        return float(round(1.0 / float(np.median(np.diff(self.times))), 6)) if len(self.times) > 1 else float("nan")


@dataclass(frozen=True)
class TestSet:
    """Test EEG of one subject, averaged over repetitions.

    Attributes
    ----------
    eeg : ndarray, shape (N_test, C, T), float32
    labels : ndarray, shape (N_test,), int64 — concept index of each test image
    concepts : tuple of str — test concept folders, the row order of all templates
    ch_names : tuple of str
    times : ndarray, shape (T,)
    """

    eeg: np.ndarray
    labels: np.ndarray
    concepts: tuple[str, ...]
    ch_names: tuple[str, ...]
    times: np.ndarray


def metadata_path(data_dir: str | Path) -> Path:
    """``<data_dir>/image_set/image_metadata.{json,npz,npy}`` (pickle-free twins preferred)."""
    base = Path(data_dir) / "image_set"
    for suffix in (".json", ".npz", ".npy"):
        p = base / f"image_metadata{suffix}"
        if p.exists():
            return p
    raise UserError(
        f"data_dir: {data_dir} has no image_set/image_metadata.npy; point data_dir at a ThingsEEG2 root "
        "(or run hmavd-simulate --out DIR)"
    )


def list_subjects(data_dir: str | Path) -> list[int]:
    """Subject numbers with a ``preprocessed_eeg/sub-XX`` folder, sorted."""
    eeg_dir = Path(data_dir) / "preprocessed_eeg"
    subs = []
    for p in eeg_dir.glob("sub-*"):
        tail = p.name[4:]
        if p.is_dir() and tail.isdigit():
            subs.append(int(tail))
    return sorted(subs)


def parse_subjects(spec: str | int | Sequence[Any], data_dir: str | Path) -> list[int]:
    """``"all"`` / ``"1,2"`` / ``[1, 2]`` / ``3`` -> sorted subject numbers present in ``data_dir``."""
    have = list_subjects(data_dir)
    if isinstance(spec, (list, tuple)) and len(spec) == 1:
        spec = spec[0]
    if isinstance(spec, str) and spec.strip().lower() == "all":
        if not have:
            raise UserError(f"subject: 'all' but {Path(data_dir) / 'preprocessed_eeg'} has no sub-XX folders")
        return have
    items = spec.split(",") if isinstance(spec, str) else (spec if isinstance(spec, (list, tuple)) else [spec])
    try:
        subs = sorted({int(str(s).strip()) for s in items if str(s).strip()})
    except ValueError:
        raise UserError(f"subject: {spec!r} is not 'all', a number or a comma-separated list (e.g. 1,2,3)") from None
    missing = [s for s in subs if s not in have]
    if missing or not subs:
        raise UserError(f"subject: {missing or spec} not found in {data_dir} (found {have}); pick from those")
    return subs


def resolve_feature_cache(data_dir: str | Path, features: str = "") -> Path:
    """The feature cache folder: ``features`` (path, or a name under ``<data_dir>/features/``), or the
    only cache in ``<data_dir>/features/`` when ``features`` is empty."""
    root = Path(data_dir) / "features"
    if features:
        p = Path(features)
        if p.is_dir():
            return p
        if (root / features).is_dir():
            return root / features
        raise UserError(f"features: {features!r} is neither a folder nor a cache under {root}; give a cache path")
    caches = sorted(p for p in root.glob("*") if (p / "provenance.json").exists()) if root.is_dir() else []
    if len(caches) != 1:
        names = [p.name for p in caches]
        raise UserError(
            f"features: {root} holds {len(caches)} feature caches {names}; set features=<name or path> "
            "(build one with hmavd-features when there is none)"
        )
    return caches[0]


def resolve_channel_names(
    available: Sequence[str], channels: str | Sequence[str] = "all", exclude: Sequence[str] = ()
) -> list[str]:
    """Pick channels by ``channels`` (see :func:`hmavd.channels.resolve_channels`), then drop ``exclude``:
    region names of :data:`hmavd.channels.REGIONS` or channel names."""
    names = resolve_channels(channels, available)
    drop: set[str] = set()
    for item in exclude:
        key = str(item).strip()
        if key.lower() in REGIONS:
            drop.update(REGIONS[key.lower()])
        elif key in available:
            drop.add(key)
        else:
            raise UserError(
                f"exclude_channels: {key!r} is neither a region {sorted(REGIONS)} nor a channel of the data; "
                "fix the name"
            )
    kept = [n for n in names if n not in drop]
    if not kept:
        raise UserError(f"exclude_channels: {list(exclude)} removes every channel; exclude fewer")
    return kept


def cache_summary(cache: FeatureCache) -> dict[str, Any]:
    """Short provenance of a feature cache, stored in checkpoints."""
    p = cache.provenance
    keys = ("model", "pretrained", "weights_file", "prompt", "simulated", "dim", "format_version")
    out = {k: p[k] for k in keys if k in p}
    out["path"] = str(Path(cache.path).resolve())  # absolute: the live engine finds it from anywhere
    out["n_train_images"] = int(cache.image_features("training").shape[0])
    out["n_test_images"] = int(cache.image_features("test").shape[0])
    return out


def _prepare_split(split: EEGSplit, ch_names: Sequence[str], tmin_s: float | None, tmax_s: float | None) -> EEGSplit:
    return split.pick_channels(list(ch_names)).crop(tmin_s, tmax_s)


def _load_meta_cache(data_dir: str | Path, features: str) -> tuple[ImageMetadata, FeatureCache]:
    meta = load_image_metadata(metadata_path(data_dir))
    cache = load_feature_cache(resolve_feature_cache(data_dir, features))
    check_against_metadata(cache, meta)
    return meta, cache


def load_training_set(
    data_dir: str | Path,
    subjects: Sequence[int],
    *,
    channels: str | Sequence[str] = "all",
    exclude_channels: Sequence[str] = (),
    tmin_s: float | None = None,
    tmax_s: float | None = None,
    features: str = "",
    average_train_reps: bool = True,
    n_val: int = 740,
    seed: int = 0,
) -> TrainingSet:
    """Load and pool the training EEG of ``subjects`` with their image/text features.

    ``n_val`` training images are held out (seeded); it is clamped to 10 % of the images, with a
    warning, when the data are too small for it.
    """
    meta, cache = _load_meta_cache(data_dir, features)
    n_img = len(meta.train_img_files)
    if n_val > n_img // 10 and n_img < 10 * 740:
        clamped = max(1, n_img // 10)
        if clamped != n_val:
            log.warning("n_val=%d is too many for %d training images; using %d", n_val, n_img, clamped)
            n_val = clamped
    train_idx, val_idx = validation_split(n_img, n_val, seed)
    img_f = np.asarray(cache.image_features("training"), dtype=np.float32)  # (N_img, D)
    txt_f = np.asarray(cache.text_features("training"), dtype=np.float32)[meta.concept_index("training")]
    eeg_parts: list[list[np.ndarray]] = [[], []]
    feat_parts: list[list[np.ndarray]] = [[], []]
    ch_names: tuple[str, ...] | None = None
    times = None
    for s in subjects:
        folder = subject_dir(Path(data_dir) / "preprocessed_eeg", s)
        split = load_split(split_file(folder, "training"), expected_conditions=n_img)
        if ch_names is None:
            ch_names = tuple(resolve_channel_names(split.ch_names, channels, exclude_channels))
        split = _prepare_split(split, ch_names, tmin_s, tmax_s)
        if times is None:
            times = split.times
        elif len(times) != len(split.times) or not np.allclose(times, split.times):
            raise UserError(f"subject {s}: its sample times differ from subject {subjects[0]}'s; re-prepare alike")
        for j, idx in enumerate((train_idx, val_idx)):
            if average_train_reps:
                x = split.eeg[idx].mean(axis=1, dtype=np.float64).astype(np.float32)  # (n, C, T)
                rows = idx
            else:
                x = split.eeg[idx].reshape(-1, split.n_chans, split.n_times)  # (n * R, C, T)
                rows = np.repeat(idx, split.n_reps)
            eeg_parts[j].append(x)
            feat_parts[j].append(rows)
    assert ch_names is not None and times is not None
    tr_rows, va_rows = (np.concatenate(p) for p in feat_parts)
    return TrainingSet(
        eeg=np.ascontiguousarray(np.concatenate(eeg_parts[0])),
        image_features=img_f[tr_rows],
        text_features=txt_f[tr_rows],
        val_eeg=np.ascontiguousarray(np.concatenate(eeg_parts[1])),
        val_image_features=img_f[va_rows],
        val_text_features=txt_f[va_rows],
        ch_names=ch_names,
        times=np.asarray(times),
        subjects=tuple(int(s) for s in subjects),
        cache=cache,
        val_images=val_idx,
    )


def load_test_set(
    data_dir: str | Path,
    subject: int,
    ch_names: Sequence[str],
    tmin_s: float | None = None,
    tmax_s: float | None = None,
    times: np.ndarray | None = None,
) -> TestSet:
    """A subject's test EEG averaged over repetitions, channels picked by name in ``ch_names`` order.

    ``times`` (from the checkpoint) is checked against the cropped data so a model never sees a
    different time axis than it was trained on.
    """
    meta = load_image_metadata(metadata_path(data_dir))
    folder = subject_dir(Path(data_dir) / "preprocessed_eeg", subject)
    split = load_split(split_file(folder, "test"), expected_conditions=len(meta.test_img_files))
    split = _prepare_split(split, ch_names, tmin_s, tmax_s)
    if times is not None and (len(times) != split.n_times or not np.allclose(times, split.times, atol=1e-6)):
        raise UserError(
            f"subject {subject}: test data time axis ({split.n_times} samples from {split.times[0]:.3f} s) "
            f"differs from the checkpoint's ({len(times)} samples); evaluate on data prepared alike"
        )
    return TestSet(
        eeg=split.average_repetitions(),
        labels=meta.concept_index("test"),
        concepts=meta.test_concepts,
        ch_names=tuple(ch_names),
        times=split.times,
    )


def write_planted_dataset(
    root: str | Path,
    *,
    n_train_concepts: int = 40,
    images_per_concept: int = 4,
    n_test_concepts: int = 40,
    n_train_reps: int = 2,
    n_test_reps: int = 4,
    ch_names: Sequence[str] = ("P7", "P3", "Pz", "P4", "P8", "PO7", "POz", "PO8", "O1", "Oz", "O2", "Cz"),
    n_times: int = 100,
    sfreq: float = 250.0,
    dim: int = 32,
    snr: float = 2.0,
    n_subjects: int = 1,
    seed: int = 0,
) -> Path:
    """Write a tiny ThingsEEG2-layout dataset whose EEG is a planted linear function of image features.

    EEG of image i, repetition r: ``x = A (f_i ⊗ w) + noise / snr`` with a fixed random channel mixing
    ``A`` (C, D), a per-feature temporal waveform ``w`` (D, T) and white Gaussian noise. Concepts have a
    random prototype; images are prototype + variation; text = prototype. A feature cache with test
    centers is written to ``<root>/features/planted/``. For tests and smoke runs only.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    c, t = len(ch_names), n_times
    times = np.arange(t) / sfreq

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    tr_concepts = [f"{i + 1:05d}_train{i:03d}" for i in range(n_train_concepts)]
    te_concepts = [f"{i + 1:05d}_test{i:03d}" for i in range(n_test_concepts)]
    tr_proto = unit(rng.standard_normal((n_train_concepts, dim)))
    te_proto = unit(rng.standard_normal((n_test_concepts, dim)))
    tr_img = unit(
        np.repeat(tr_proto, images_per_concept, 0)
        + 0.5 * rng.standard_normal((len(tr_proto) * images_per_concept, dim)) / np.sqrt(dim)
    )  # noqa: E501
    te_img = unit(te_proto + 0.5 * rng.standard_normal(te_proto.shape) / np.sqrt(dim))
    meta = ImageMetadata(
        train_img_concepts=tuple(np.repeat(tr_concepts, images_per_concept)),
        train_img_files=tuple(f"{c_[6:]}_{k:02d}s.jpg" for c_ in tr_concepts for k in range(images_per_concept)),
        test_img_concepts=tuple(te_concepts),
        test_img_files=tuple(f"{c_[6:]}_01s.jpg" for c_ in te_concepts),
    )
    save_image_metadata(root / "image_set" / "image_metadata.npy", meta)
    for s in range(1, n_subjects + 1):
        mix = rng.standard_normal((c, dim)) / np.sqrt(dim)  # (C, D)
        wave = np.sin(2 * np.pi * rng.uniform(2, 8, (dim, 1)) * times + rng.uniform(0, 2 * np.pi, (dim, 1)))
        wave *= np.exp(-(((times - 0.2) / 0.1) ** 2))  # (D, T) ERP-like envelope

        def eeg(feats: np.ndarray, reps: int, mix=mix, wave=wave) -> np.ndarray:
            sig = np.einsum("cd,nd,dt->nct", mix, feats * np.sqrt(dim), wave)  # (N, C, T)
            noise = rng.standard_normal((len(feats), reps, c, t)) / snr
            return (sig[:, None] + noise).astype(np.float32)  # (N, R, C, T)

        sub = root / "preprocessed_eeg" / f"sub-{s:02d}"
        save_split(sub / "preprocessed_eeg_training.npy", EEGSplit(eeg(tr_img, n_train_reps), tuple(ch_names), times))
        save_split(sub / "preprocessed_eeg_test.npy", EEGSplit(eeg(te_img, n_test_reps), tuple(ch_names), times))
    arrays = {
        "train_image_features": tr_img,
        "test_image_features": te_img,
        "train_text_features": tr_proto,
        "test_text_features": te_proto,
        "test_center_features": te_proto,
    }
    prov = {
        "model": "planted-linear",
        "simulated": True,
        "train_images": [f"{a}/{b}" for a, b in zip(meta.train_img_concepts, meta.train_img_files)],
        "test_images": [f"{a}/{b}" for a, b in zip(meta.test_img_concepts, meta.test_img_files)],
        "train_concepts": list(meta.train_concepts),
        "test_concepts": list(meta.test_concepts),
    }
    save_feature_cache(root / "features" / "planted", arrays, prov)
    return root
