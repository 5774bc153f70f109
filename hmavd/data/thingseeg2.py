"""ThingsEEG2 preprocessed data and image metadata, in the real file format.

Layout of a dataset root (the simulated subject writes the same)::

    <root>/preprocessed_eeg/sub-01/preprocessed_eeg_training.npy   # (16540, 4, C, T)
    <root>/preprocessed_eeg/sub-01/preprocessed_eeg_test.npy       # (200, 80, C, T)
    <root>/image_set/image_metadata.npy
    <root>/features/<name>/                                        # see hmavd.features.cache

The official files are ``np.save``-d *pickled dicts* (keys ``preprocessed_eeg_data``, ``ch_names``,
``times``). Pickles can run code when loaded, so they are opened with ``allow_pickle=True`` only
from paths the user gave, and :func:`save_split` can write a pickle-free ``.npz`` twin which the
loader prefers (``hmavd-prepare --convert`` converts a folder).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..channels import resolve_channels
from ..errors import UserError
from ..io import atomic_path, save_npy_atomic

log = logging.getLogger(__name__)

__all__ = [
    "SPLITS",
    "EEGSplit",
    "ImageMetadata",
    "split_file",
    "subject_dir",
    "load_split",
    "save_split",
    "load_subject",
    "load_image_metadata",
    "save_image_metadata",
    "validation_split",
    "concept_name",
    "load_pickled_dict",
]

SPLITS = ("training", "test")
EEG_KEYS = ("preprocessed_eeg_data", "ch_names", "times")
META_KEYS = ("train_img_concepts", "train_img_files", "test_img_concepts", "test_img_files")


@dataclass(frozen=True)
class EEGSplit:
    """One split of a subject's preprocessed EEG.

    Attributes
    ----------
    eeg : ndarray, shape (n_conditions, n_reps, n_chans, n_times)
        float32, MVNN-whitened (unitless).
    ch_names : tuple of str
        ``n_chans`` names.
    times : ndarray, shape (n_times,)
        Sample times in seconds relative to stimulus onset.
    provenance : ndarray or None, shape (n_conditions, n_reps, 2)
        (session, chronological repetition index) of each repetition, when known.
    source : str
        The file it was loaded from ("" when built in memory); named in selection errors.
    """

    eeg: np.ndarray
    ch_names: tuple[str, ...]
    times: np.ndarray
    provenance: np.ndarray | None = None
    source: str = ""

    @property
    def n_conditions(self) -> int:
        return int(self.eeg.shape[0])

    @property
    def n_reps(self) -> int:
        return int(self.eeg.shape[1])

    @property
    def n_chans(self) -> int:
        return int(self.eeg.shape[2])

    @property
    def n_times(self) -> int:
        return int(self.eeg.shape[3])

    @property
    def sfreq(self) -> float:
        """Sampling rate in Hz, from ``times``."""
        if len(self.times) < 2:
            return float("nan")
        return float(round(1.0 / float(np.median(np.diff(self.times))), 6))

    def pick_channels(self, spec: str | Sequence[str]) -> EEGSplit:
        """Select channels by name (``"all"``, ``"visual17"``, ``"all63"``, or names), in that order."""
        names = resolve_channels(spec, self.ch_names, where=self.source)
        idx = [self.ch_names.index(n) for n in names]
        return replace(self, eeg=self.eeg[:, :, idx, :], ch_names=tuple(names))

    def crop(self, tmin_s: float | None = None, tmax_s: float | None = None) -> EEGSplit:
        """Keep samples with ``tmin_s <= t < tmax_s`` (seconds; ``None`` = open end)."""
        mask = np.ones(len(self.times), dtype=bool)
        eps = 1e-9
        if tmin_s is not None:
            mask &= self.times >= tmin_s - eps
        if tmax_s is not None:
            mask &= self.times < tmax_s - eps
        if not mask.any():
            where = f" of {self.source}" if self.source else ""
            raise UserError(
                f"time window: [{tmin_s}, {tmax_s}) s selects no sample{where} (data span "
                f"{self.times[0]:.3f}…{self.times[-1]:.3f} s); choose tmin_s/tmax_s inside it"
            )
        return replace(self, eeg=self.eeg[..., mask], times=self.times[mask])

    def average_repetitions(self) -> np.ndarray:
        """Mean over repetitions: (n_conditions, n_chans, n_times) float32."""
        return self.eeg.mean(axis=1, dtype=np.float64).astype(np.float32)  # (N, C, T)


@dataclass(frozen=True)
class ImageMetadata:
    """ThingsEEG2 ``image_metadata.npy``: concept folder and file name of every image, per split."""

    train_img_concepts: tuple[str, ...]
    train_img_files: tuple[str, ...]
    test_img_concepts: tuple[str, ...]
    test_img_files: tuple[str, ...]

    @property
    def train_concepts(self) -> tuple[str, ...]:
        """Unique training concept folders (``00001_aardvark`` …) in plain sorted order."""
        return tuple(sorted(set(self.train_img_concepts)))

    @property
    def test_concepts(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.test_img_concepts)))

    def concept_index(self, split: str) -> np.ndarray:
        """For each image of ``split`` ("training"/"test"), the index of its concept: (n_images,) int64."""
        imgs, concepts = (
            (self.train_img_concepts, self.train_concepts)
            if split == "training"
            else (self.test_img_concepts, self.test_concepts)
        )
        pos = {c: i for i, c in enumerate(concepts)}
        return np.array([pos[c] for c in imgs], dtype=np.int64)

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(getattr(self, k)) for k in META_KEYS}


def concept_name(folder: str) -> str:
    """``'00001_aircraft_carrier'`` -> ``'aircraft carrier'``."""
    head, sep, tail = folder.partition("_")
    name = tail if sep and head.isdigit() else folder
    return name.replace("_", " ")


def subject_dir(eeg_dir: str | Path, subject: int) -> Path:
    """``<eeg_dir>/sub-XX`` for a 1-based subject number; a one-line error when absent."""
    eeg_dir = Path(eeg_dir)
    d = eeg_dir / f"sub-{int(subject):02d}"
    if not d.is_dir():
        have = sorted(p.name for p in eeg_dir.glob("sub-*")) if eeg_dir.is_dir() else []
        raise UserError(
            f"subject: {subject} has no folder {d} (found {have or 'no sub-XX folders'}); "
            "pass --subject with one of those or point data_dir at a ThingsEEG2 root"
        )
    return d


def split_file(folder: str | Path, split: str) -> Path:
    """The file of ``split`` in a subject folder: the pickle-free ``.npz`` if present, else ``.npy``."""
    if split not in SPLITS:
        raise UserError(f"split: {split!r} is not one of {SPLITS}")
    folder = Path(folder)
    npz = folder / f"preprocessed_eeg_{split}.npz"
    return npz if npz.exists() else folder / f"preprocessed_eeg_{split}.npy"


def load_pickled_dict(path: str | Path, keys: Sequence[str], what: str) -> dict[str, Any]:
    """Open a ThingsEEG2 ``np.save``-d dict that the user pointed at (``allow_pickle=True``).

    This is the only place the package unpickles anything; it is called only for ThingsEEG2
    data/metadata/raw files below paths given on the command line or in a config.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what}: file {path} does not exist; check the path (expected keys {list(keys)})")
    try:
        obj = np.load(path, allow_pickle=True)
        if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
            obj = obj.item()
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
        raise UserError(f"{what}: {path} is not a readable .npy dict ({type(err).__name__}); re-export it") from None
    if not isinstance(obj, dict):
        raise UserError(f"{what}: {path} holds a {type(obj).__name__}, expected a dict with keys {list(keys)}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise UserError(f"{what}: {path} lacks keys {missing} (has {sorted(obj)}); expected {list(keys)}")
    return obj


def _read_eeg_file(path: Path) -> dict[str, Any]:
    if path.suffix == ".npz":
        if not path.exists():
            raise UserError(f"eeg file: {path} does not exist; check the path (expected keys {list(EEG_KEYS)})")
        try:
            with np.load(path, allow_pickle=False) as z:
                files = list(z.files)
                missing = [k for k in EEG_KEYS if k not in files]
                d = {} if missing else {k: z[k] for k in files}
        except (OSError, ValueError, EOFError) as err:
            raise UserError(f"eeg file: {path} is not a readable .npz ({type(err).__name__}); re-convert it") from None
        if missing:
            raise UserError(f"eeg file: {path} lacks keys {missing} (has {sorted(files)}); expected {list(EEG_KEYS)}")
        return d
    return load_pickled_dict(path, EEG_KEYS, "eeg file")


def load_split(
    path: str | Path,
    expected_conditions: int | None = None,
    expected_reps: int | None = None,
) -> EEGSplit:
    """Load one preprocessed split file (``.npy`` pickled dict or pickle-free ``.npz``).

    Parameters
    ----------
    path : path
        ``preprocessed_eeg_training.npy`` / ``_test.npy`` (or the ``.npz`` twin).
    expected_conditions, expected_reps : int, optional
        Checked against the data's first two axes (e.g. 16540 and 4 for the real training file).
    """
    path = Path(path)
    d = _read_eeg_file(path)
    eeg = np.asarray(d["preprocessed_eeg_data"])
    try:
        ch_names = tuple(str(c) for c in np.asarray(d["ch_names"]).reshape(-1).tolist())
        times = np.asarray(d["times"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"eeg file: {path} times are not numbers; expected sample times in seconds") from None
    if not np.issubdtype(eeg.dtype, np.number) or np.issubdtype(eeg.dtype, np.complexfloating):
        raise UserError(f"eeg file: {path} preprocessed_eeg_data has dtype {eeg.dtype}; expected a float array")
    if eeg.ndim != 4:
        raise UserError(
            f"eeg file: {path} preprocessed_eeg_data has shape {eeg.shape}; expected "
            "(n_conditions, n_reps, n_chans, n_times), e.g. (16540, 4, 63, 250)"
        )
    n, r, c, t = eeg.shape
    if len(ch_names) != c:
        raise UserError(f"eeg file: {path} has {len(ch_names)} ch_names for {c} channels in the data; they must match")
    if len(set(ch_names)) != len(ch_names):
        dup = sorted({n for n in ch_names if ch_names.count(n) > 1})
        raise UserError(f"eeg file: {path} repeats channel names {dup[:5]}; expected one unique name per channel")
    if len(times) != t:
        if len(times) > t:
            # The NICE pipeline saves the 300 uncropped times beside 250-sample data: keep the last t.
            log.warning("%s: %d times for %d samples; keeping the last %d (NICE crop)", path, len(times), t, t)
            times = times[-t:]
        else:
            raise UserError(f"eeg file: {path} has {len(times)} times for {t} samples; they must match")
    if expected_conditions is not None and n != expected_conditions:
        raise UserError(
            f"eeg file: {path} has {n} conditions, expected {expected_conditions} (one per image in "
            "image_metadata); use the metadata of the same dataset"
        )
    if expected_reps is not None and r != expected_reps:
        raise UserError(f"eeg file: {path} has {r} repetitions, expected {expected_reps}")
    if t > 1 and not np.all(np.diff(times) > 0):
        raise UserError(f"eeg file: {path} times do not increase; expected sample times in seconds")
    prov = np.asarray(d["provenance"]) if "provenance" in d else None
    if prov is not None and prov.shape != (n, r, 2):
        raise UserError(f"eeg file: {path} provenance has shape {prov.shape}; expected {(n, r, 2)}")
    return EEGSplit(
        eeg=eeg.astype(np.float32, copy=False), ch_names=ch_names, times=times, provenance=prov, source=str(path)
    )


def save_split(path: str | Path, split: EEGSplit, pickle_free: bool | None = None) -> Path:
    """Write a split atomically: ThingsEEG2's pickled-dict ``.npy`` or the pickle-free ``.npz``.

    The format follows the suffix of ``path`` unless ``pickle_free`` is given.
    """
    path = Path(path)
    if pickle_free is None:
        pickle_free = path.suffix == ".npz"
    d: dict[str, Any] = {
        "preprocessed_eeg_data": np.ascontiguousarray(split.eeg, dtype=np.float32),
        "ch_names": list(split.ch_names),
        "times": np.asarray(split.times, dtype=np.float64),
    }
    if split.provenance is not None:
        d["provenance"] = np.asarray(split.provenance, dtype=np.int32)
    if pickle_free:
        path = path.with_suffix(".npz")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{**d, "ch_names": np.array(d["ch_names"], dtype=str)})
        return path
    return save_npy_atomic(path.with_suffix(".npy"), d, allow_object=True)


def load_image_metadata(path: str | Path) -> ImageMetadata:
    """Load ``image_metadata.npy`` (pickled dict) or its pickle-free ``.npz`` / ``.json`` twin."""
    path = Path(path)
    if path.suffix == ".json" and path.exists():
        import json

        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(
                f"image metadata: {path} is not readable JSON ({type(err).__name__}); re-convert it"
            ) from None
    elif path.suffix == ".npz" and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k].tolist() for k in z.files}
        except (OSError, ValueError, EOFError) as err:
            raise UserError(f"image metadata: {path} is not a readable .npz ({type(err).__name__})") from None
    else:
        d = load_pickled_dict(path, META_KEYS, "image metadata")
    if not isinstance(d, dict):
        raise UserError(
            f"image metadata: {path} holds a {type(d).__name__}; expected a dict with keys {list(META_KEYS)}"
        )
    missing = [k for k in META_KEYS if k not in d]
    if missing:
        raise UserError(f"image metadata: {path} lacks keys {missing}; expected {list(META_KEYS)}")
    meta = ImageMetadata(**{k: tuple(str(x) for x in d[k]) for k in META_KEYS})
    for split in ("train", "test"):
        a, b = getattr(meta, f"{split}_img_concepts"), getattr(meta, f"{split}_img_files")
        if len(a) != len(b):
            raise UserError(f"image metadata: {path} has {len(a)} {split} concepts but {len(b)} {split} files")
    return meta


def save_image_metadata(path: str | Path, meta: ImageMetadata) -> Path:
    """Write ``image_metadata.npy`` in ThingsEEG2's pickled-dict format (``.npy``) or as ``.json``."""
    path = Path(path)
    if path.suffix == ".json":
        from ..io import atomic_write_json

        return atomic_write_json(path, meta.to_dict())
    return save_npy_atomic(path, meta.to_dict(), allow_object=True)


def load_subject(eeg_dir: str | Path, subject: int, meta: ImageMetadata | None = None) -> tuple[EEGSplit, EEGSplit]:
    """Load a subject's (training, test) splits, checking condition counts against ``meta``."""
    folder = subject_dir(eeg_dir, subject)
    n_train = len(meta.train_img_files) if meta is not None else None
    n_test = len(meta.test_img_files) if meta is not None else None
    train = load_split(split_file(folder, "training"), expected_conditions=n_train)
    test = load_split(split_file(folder, "test"), expected_conditions=n_test)
    if train.ch_names != test.ch_names:
        raise UserError(f"eeg files in {folder}: training and test channel names differ; re-prepare both")
    return train, test


def validation_split(n_conditions: int, n_val: int = 740, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random hold-out of ``n_val`` training conditions.

    Returns
    -------
    train_idx, val_idx : ndarray of int64
        Sorted, disjoint, covering ``range(n_conditions)``.
    """
    if not 0 <= n_val < n_conditions:
        raise UserError(
            f"n_val: {n_val} must be in [0, {n_conditions}) for {n_conditions} training conditions; lower it"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_conditions)
    val = np.sort(perm[:n_val])
    train = np.sort(perm[n_val:])
    return train.astype(np.int64), val.astype(np.int64)
