"""``hmavd-prepare``: raw session recordings of one subject -> ThingsEEG2 preprocessed files + MVNN.

Steps (both presets, see ``docs/preprocessing.md``; the same as NICE ``preprocessing/`` and ThingsEEG2
``02_eeg_preprocessing/``), per session and partition:

1. read the recording and ``mne.find_events`` on ``stim`` *before* picking channels;
2. drop catch trials (99999), pick the preset's channels;
3. ``mne.Epochs(tmin=-0.2, tmax, baseline=(None, 0))`` at the recording rate, then
   ``Epochs.resample`` (in chunks of events: every step is per epoch, so chunking changes nothing
   but the memory), then the preset's crop (NICE: 0…0.996 s);
4. group repetitions per image (condition order = image order, checked), keeping a seeded subset
   as the public code does (``sklearn.utils.shuffle(..., random_state=20200220)``) or the first
   ones in time (``rep_order=chronological``);
5. MVNN per session: covariance (training only, or mean of test and training), whitening
   ``cov ** -0.5`` applied to that session's training and test epochs;
6. merge sessions (test: along repetitions; training: each image's repetitions from the sessions
   that showed it), permute the merged repetition axis with the same seed (preset order), and
   save float32 files atomically with the (session, chronological index) of every repetition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import ValidatedConfig, save_config
from ..data.thingseeg2 import EEGSplit, save_split
from ..errors import UserError
from ..io import atomic_path
from .presets import PRESETS, REP_ORDER_SEED, PreprocessPreset, get_preset
from .raw_io import RAW_SUFFIXES, read_recording
from .transforms import apply_whitening, crop, mvnn_covariance, whitening_matrix

log = logging.getLogger(__name__)

__all__ = [
    "PrepareConfig",
    "SessionEpochs",
    "prepare_subject",
    "find_session_files",
    "epoch_recording",
    "group_repetitions",
    "session_whitening",
    "merge_test_sessions",
    "merge_training_sessions",
    "repetition_permutation",
    "save_mvnn",
    "load_mvnn",
]

PARTITIONS = ("training", "test")


@dataclass(frozen=True)
class PrepareConfig(ValidatedConfig):
    """Config of ``hmavd-prepare`` (``configs/prepare-nice.yaml``, ``prepare-gifford.yaml``).

    Attributes
    ----------
    raw_dir : str
        Folder holding ``sub-XX/ses-YY/raw_eeg_{training,test}.<npy|fif|vhdr|edf|bdf|xdf>``.
    out_dir : str
        Output root; files go to ``<out_dir>/sub-XX/``.
    subject : int
        1-based subject number.
    sessions : tuple of int
        Session numbers to use (empty: every ``ses-YY`` folder).
    preset : str
        ``"nice"`` or ``"gifford"`` (see :mod:`hmavd.preprocessing.presets`).
    rep_order : str
        ``"preset"`` (the public code's seeded subset/permutation) or ``"chronological"``.
    seed : int
        Seed of the preset order (public code: 20200220).
    max_reps_training, max_reps_test : int
        Repetitions kept per image and session (0: the preset's, 2 and 20).
    format : str
        ``"npy"`` (ThingsEEG2 pickled dict) or ``"npz"`` (pickle-free).
    stim_channel : str
        Stim channel name ("" = every channel of type stim).
    chunk_size : int
        Events per ``mne.Epochs`` call (memory bound only).
    progress : bool
        Show tqdm progress bars.
    """

    raw_dir: str = "data/raw_eeg"
    out_dir: str = "data/preprocessed_eeg"
    subject: int = 1
    sessions: tuple[int, ...] = ()
    preset: str = "nice"
    rep_order: str = "preset"
    seed: int = REP_ORDER_SEED
    max_reps_training: int = 0
    max_reps_test: int = 0
    format: str = "npy"
    stim_channel: str = ""
    chunk_size: int = 256
    progress: bool = True

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"preset: {self.preset!r} is not one of {sorted(PRESETS)}; pick one of them")
        if self.rep_order not in ("preset", "chronological"):
            raise UserError(f"rep_order: {self.rep_order!r} is not 'preset' or 'chronological'; pick one")
        if self.format not in ("npy", "npz"):
            raise UserError(f"format: {self.format!r} is not 'npy' or 'npz'; pick one")
        if self.chunk_size < 1:
            raise UserError(f"chunk_size: {self.chunk_size} must be >= 1 (events per mne.Epochs call, e.g. 256)")
        for name in ("max_reps_training", "max_reps_test"):
            if getattr(self, name) < 0:
                raise UserError(f"{name}: {getattr(self, name)} must be >= 0 (0 = the preset's)")
        if self.subject < 1:
            raise UserError(f"subject: {self.subject} must be >= 1 (sub-01 is subject 1)")
        preset = PRESETS[self.preset]
        for part in PARTITIONS:
            if preset.mvnn_mode == "gifford" and self.max_reps(part, preset) < 2:
                raise UserError(
                    f"max_reps_{part}: {self.max_reps(part, preset)} is too few for preset={preset.name} (its "
                    "covariance is over repetitions); keep >= 2 repetitions per image and session or use preset=nice"
                )

    def max_reps(self, partition: str, preset: PreprocessPreset) -> int:
        """Repetitions kept per image and session for ``partition``."""
        if partition == "training":
            return self.max_reps_training or preset.max_reps_training
        return self.max_reps_test or preset.max_reps_test


@dataclass(frozen=True)
class SessionEpochs:
    """One session partition after grouping: data (n_images, n_reps, C, T), image numbers, provenance."""

    data: np.ndarray  # (n_img, R, C, T) float64 (float32 once whitened)
    images: np.ndarray  # (n_img,) int64 image numbers (1-based)
    provenance: np.ndarray  # (n_img, R, 2) int64: (session, chronological index)


# --------------------------------------------------------------------------- files


def _recording_in(folder: Path, partition: str) -> Path:
    cands = [p for p in sorted(folder.glob(f"raw_eeg_{partition}.*")) if p.name.lower().endswith(RAW_SUFFIXES)]
    if not cands:
        raise UserError(
            f"raw_dir: {folder} has no raw_eeg_{partition}.<{'|'.join(s.lstrip('.') for s in RAW_SUFFIXES)}>; "
            "put the session's recording there"
        )
    if len(cands) > 1:
        raise UserError(f"raw_dir: {folder} has several raw_eeg_{partition} files {[p.name for p in cands]}; keep one")
    return cands[0]


def find_session_files(raw_dir: str | Path, subject: int, sessions: Sequence[int] = ()) -> list[tuple[int, dict]]:
    """``[(session, {"training": path, "test": path}), ...]`` for a subject, sessions in order."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise UserError(f"raw_dir: {raw_dir} is not a folder; point raw_dir at the folder holding sub-XX/ses-YY")
    sub = raw_dir / f"sub-{subject:02d}"
    if not sub.is_dir():
        have = sorted(p.name for p in raw_dir.glob("sub-*"))
        raise UserError(f"subject: {subject} has no folder {sub} (found {have or 'none'}); pass subject=<n>")
    found = {int(p.name[4:]): p for p in sub.glob("ses-*") if p.is_dir() and p.name[4:].isdigit()}
    if not found:
        raise UserError(f"raw_dir: {sub} has no ses-YY folders; put each session's recordings in ses-01, ses-02, …")
    wanted = list(sessions) or sorted(found)
    missing = [s for s in wanted if s not in found]
    if missing:
        raise UserError(f"sessions: {missing} not found in {sub} (have {sorted(found)}); pick existing sessions")
    return [(s, {part: _recording_in(found[s], part) for part in PARTITIONS}) for s in wanted]


# --------------------------------------------------------------------------- epoching


def epoch_recording(
    raw,
    events: np.ndarray,
    preset: PreprocessPreset,
    chunk_size: int = 256,
    desc: str = "",
    progress: bool = False,
    source: str = "",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Drop catch trials, pick channels, epoch, baseline, resample and crop one recording.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        The recording (picked in place to the preset's channels).
    events : ndarray, shape (n_events, 3)
        From :func:`hmavd.preprocessing.raw_io.read_recording` (found before the pick).
    preset : PreprocessPreset
    chunk_size : int
        Events per ``mne.Epochs`` call.
    desc : str
        Progress-bar label.
    progress : bool
        Show a progress bar over the chunks.
    source : str
        The recording's file name, named in errors.

    Returns
    -------
    data : ndarray, shape (n_epochs, n_chans, n_times), float64, in time order
    codes : ndarray, shape (n_epochs,), int64 image numbers
    times : ndarray, shape (n_times,)
    ch_names : list of str
    """
    import mne

    events = np.asarray(events, dtype=np.int64)
    events = events[events[:, 2] != preset.catch_id]
    if len(events) == 0:
        raise UserError(f"recording {source or desc}: only catch trials ({preset.catch_id}); no stimulus events left")
    picked = preset.select_channels(list(raw.ch_names), where=source)
    raw.pick(picked)
    if list(raw.ch_names) != picked:
        raw.reorder_channels(picked)
    chunks = [events[i : i + chunk_size] for i in range(0, len(events), chunk_size)]
    out, codes, times = [], [], None
    baseline = (preset.baseline_tmin_s, preset.baseline_tmax_s)
    for ev in tqdm(chunks, desc=desc, unit="chunk", disable=not progress, leave=False):
        ep = mne.Epochs(
            raw, ev, tmin=preset.tmin_s, tmax=preset.tmax_s, baseline=baseline, preload=True, verbose="error"
        )
        if len(ep) == 0:
            continue
        if preset.sfreq != ep.info["sfreq"]:
            ep.resample(preset.sfreq, verbose="error")
        x, t = ep.get_data(copy=False), ep.times  # (n, C, T)
        if preset.crop_tmin_s is not None or preset.crop_tmax_s is not None:
            x, t = crop(x, t, preset.crop_tmin_s, preset.crop_tmax_s)
        out.append(np.array(x, dtype=np.float64))
        codes.append(ep.events[:, 2].copy())
        times = t
    n_kept = sum(len(c) for c in codes)
    if n_kept < len(events):
        log.warning("%s: %d of %d epochs dropped by MNE (too near the ends)", desc, len(events) - n_kept, len(events))
    if n_kept == 0:
        raise UserError(
            f"recording {source or desc}: no complete epoch ({preset.tmin_s}…{preset.tmax_s} s) fits the data"
        )
    return np.concatenate(out), np.concatenate(codes).astype(np.int64), np.asarray(times), picked


def group_repetitions(
    codes: np.ndarray, max_reps: int, order: str = "preset", seed: int = REP_ORDER_SEED, desc: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which epochs form each image's repetitions, as the public code sorts them.

    Parameters
    ----------
    codes : ndarray, shape (n_epochs,)
        Image number of each epoch, in time order.
    max_reps : int
        Repetitions kept per image.
    order : {"preset", "chronological"}
        ``"preset"``: ``sklearn.utils.shuffle(occurrences, random_state=seed, n_samples=max_reps)``
        per image (the public code); ``"chronological"``: the first ``max_reps`` in time.

    Returns
    -------
    images : ndarray, shape (n_images,)
        Sorted unique image numbers.
    index : ndarray, shape (n_images, max_reps)
        Epoch indices into ``codes``.
    chrono : ndarray, shape (n_images, max_reps)
        Chronological rank of each kept epoch among that image's epochs.
    """
    from sklearn.utils import shuffle

    codes = np.asarray(codes)
    images = np.unique(codes)
    index = np.empty((len(images), max_reps), dtype=np.int64)
    chrono = np.empty_like(index)
    for i, img in enumerate(images):
        occ = np.flatnonzero(codes == img)
        if len(occ) < max_reps:
            raise UserError(
                f"recording {desc}: image {img} has {len(occ)} repetitions, fewer than max_reps={max_reps}; "
                "lower max_reps_training/max_reps_test or check the events"
            )
        sel = shuffle(occ, random_state=seed, n_samples=max_reps) if order == "preset" else occ[:max_reps]
        index[i] = sel
        chrono[i] = np.searchsorted(occ, sel)
    return images.astype(np.int64), index, chrono


def session_whitening(
    training: np.ndarray, test: np.ndarray, preset: PreprocessPreset
) -> tuple[np.ndarray, np.ndarray]:
    """Whitening matrix and covariance of one session (training only, or mean of test and training).

    Parameters
    ----------
    training, test : ndarray, shape (n_images, n_reps, C, T)

    Returns
    -------
    whitening, covariance : ndarray, shape (C, C)
    """
    cov_train = mvnn_covariance(training, preset.mvnn_mode)
    if preset.mvnn_partitions == "both":
        cov = np.mean([mvnn_covariance(test, preset.mvnn_mode), cov_train], axis=0)  # public order: test, train
    else:
        cov = cov_train
    return whitening_matrix(cov), cov


def repetition_permutation(n_reps: int, seed: int = REP_ORDER_SEED) -> np.ndarray:
    """The public code's permutation of the merged repetition axis (``shuffle(arange(n), random_state=seed)``)."""
    from sklearn.utils import shuffle

    return np.asarray(shuffle(np.arange(n_reps), random_state=seed), dtype=np.int64)


def merge_test_sessions(
    sessions: Sequence[SessionEpochs], order: str = "preset", seed: int = REP_ORDER_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the test sessions along repetitions (every session shows every test image).

    Returns
    -------
    data : ndarray, shape (n_images, sum of reps, C, T)
    provenance : ndarray, shape (n_images, sum of reps, 2)
    """
    first = sessions[0].images
    for s in sessions[1:]:
        if not np.array_equal(s.images, first):
            raise UserError(
                f"test sessions: session {int(s.provenance[0, 0, 0])} shows images {s.images[:5]}… but the "
                f"first session {first[:5]}…; every session must show the same test images"
            )
    _check_image_order(first, "test")
    data = np.concatenate([s.data for s in sessions], axis=1)
    prov = np.concatenate([s.provenance for s in sessions], axis=1)
    if order == "preset":
        perm = repetition_permutation(data.shape[1], seed)
        data, prov = data[:, perm], prov[:, perm]
    return data, prov


def merge_training_sessions(
    sessions: Sequence[SessionEpochs], order: str = "preset", seed: int = REP_ORDER_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Merge training sessions: each image's repetitions from the sessions that showed it, in session order.

    Returns
    -------
    data : ndarray, shape (n_images, total reps per image, C, T)
    provenance : ndarray, shape (n_images, total reps per image, 2)
    """
    images = np.concatenate([s.images for s in sessions])
    owners = [(k, j) for k, s in enumerate(sessions) for j in range(len(s.images))]
    uniq, counts = np.unique(images, return_counts=True)
    _check_image_order(uniq, "training")
    if len(set(counts.tolist())) != 1:
        few = uniq[counts < counts.max()][:5]
        raise UserError(
            f"training sessions: images {few.tolist()} appear in fewer sessions than others ({counts.min()} vs "
            f"{counts.max()}); every image needs the same number of repetitions, use matching sessions"
        )
    n_img = len(uniq)
    r_per = sessions[0].data.shape[1]
    shape = sessions[0].data.shape[2:]
    data = np.empty((n_img, r_per * counts[0], *shape), dtype=sessions[0].data.dtype)
    prov = np.empty((n_img, r_per * counts[0], 2), dtype=np.int64)
    for i in range(n_img):
        rows = np.flatnonzero(images == i + 1)
        data[i] = np.concatenate([sessions[owners[r][0]].data[owners[r][1]] for r in rows], axis=0)
        prov[i] = np.concatenate([sessions[owners[r][0]].provenance[owners[r][1]] for r in rows], axis=0)
    if order == "preset":
        perm = repetition_permutation(data.shape[1], seed)
        data, prov = data[:, perm], prov[:, perm]
    return data, prov


def _check_image_order(images: np.ndarray, partition: str) -> None:
    expected = np.arange(1, len(images) + 1)
    if not np.array_equal(images, expected):
        missing = np.setdiff1d(np.arange(1, int(images.max()) + 1), images)[:5]
        raise UserError(
            f"{partition} events: image numbers must be 1…N so condition order = image order; "
            f"got {len(images)} images up to {int(images.max())} (missing e.g. {missing.tolist()}); "
            "include every session of the subject"
        )


# --------------------------------------------------------------------------- MVNN file


def save_mvnn(
    path: str | Path,
    whitening: np.ndarray,
    covariance: np.ndarray,
    sessions: Sequence[int],
    ch_names: Sequence[str],
    preset: PreprocessPreset,
    sfreq_in: float,
    times: np.ndarray,
) -> Path:
    """Write ``mvnn.npz`` (pickle-free) atomically: per-session whitening (n_ses, C, C) and context."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                whitening=np.asarray(whitening, dtype=np.float64),
                covariance=np.asarray(covariance, dtype=np.float64),
                sessions=np.asarray(sessions, dtype=np.int64),
                ch_names=np.array(list(ch_names), dtype=str),
                preset=np.array(preset.name),
                sfreq_in=np.array(float(sfreq_in)),
                sfreq=np.array(float(preset.sfreq)),
                units=np.array("V"),  # the EEG's units: MNE reads every format in volts
                times=np.asarray(times, dtype=np.float64),
            )
    return path


def load_mvnn(path: str | Path) -> dict:
    """Read ``mvnn.npz``: whitening (n_ses, C, C), covariance, sessions, ch_names (list), preset (str), …"""
    path = Path(path)
    if not path.exists():
        raise UserError(f"mvnn: {path} does not exist; run hmavd-prepare for this subject first")
    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    d["ch_names"] = [str(c) for c in d["ch_names"]]
    d["preset"] = str(d["preset"])
    return d


# --------------------------------------------------------------------------- the whole subject


def prepare_subject(cfg: PrepareConfig) -> dict[str, Path]:
    """Run the whole pipeline for one subject; returns the written paths (training, test, mvnn, config)."""
    preset = get_preset(cfg.preset)
    files = find_session_files(cfg.raw_dir, cfg.subject, cfg.sessions)
    stim = cfg.stim_channel or None
    grouped: dict[str, list[SessionEpochs]] = {p: [] for p in PARTITIONS}
    whitenings, covs = [], []
    ch_names: list[str] | None = None
    sfreq_in: float | None = None
    times = None
    for ses, paths in tqdm(files, desc=f"sub-{cfg.subject:02d} sessions", unit="session", disable=not cfg.progress):
        per_part = {}
        for part in PARTITIONS:
            raw, events = read_recording(paths[part], stim_channel=stim)
            sf = float(raw.info["sfreq"])
            if sfreq_in is None:
                sfreq_in = sf
            elif sf != sfreq_in:
                raise UserError(
                    f"recording: {paths[part]} is sampled at {sf} Hz but earlier files at {sfreq_in} Hz; "
                    "resample all sessions to one rate before preparing"
                )
            data, codes, t, picked = epoch_recording(
                raw, events, preset, cfg.chunk_size, f"ses-{ses:02d} {part}", cfg.progress, str(paths[part])
            )
            if ch_names is None:
                ch_names, times = picked, t
            elif picked != ch_names:
                raise UserError(f"recording: {paths[part]} picks channels {picked[:5]}… unlike earlier files")
            images, index, chrono = group_repetitions(
                codes, cfg.max_reps(part, preset), cfg.rep_order, cfg.seed, desc=str(paths[part])
            )
            prov = np.stack([np.full_like(chrono, ses), chrono], axis=-1)  # (n_img, R, 2)
            per_part[part] = SessionEpochs(data=data[index], images=images, provenance=prov)
            del data, raw
        w, cov = session_whitening(per_part["training"].data, per_part["test"].data, preset)
        whitenings.append(w)
        covs.append(cov)
        for part in PARTITIONS:
            s = per_part[part]
            white = apply_whitening(s.data, w).astype(np.float32)  # output dtype; merging only copies
            grouped[part].append(SessionEpochs(white, s.images, s.provenance))
    out = Path(cfg.out_dir) / f"sub-{cfg.subject:02d}"
    written: dict[str, Path] = {}
    merges = {"training": merge_training_sessions, "test": merge_test_sessions}
    merged = {part: merges[part](grouped[part], cfg.rep_order, cfg.seed) for part in PARTITIONS}  # check first
    for part in PARTITIONS:
        data, prov = merged[part]
        split = EEGSplit(eeg=data.astype(np.float32), ch_names=tuple(ch_names), times=times, provenance=prov)
        written[part] = save_split(out / f"preprocessed_eeg_{part}.{cfg.format}", split)
        log.info("wrote %s: %s (images, reps, channels, times)", written[part], data.shape)
    sessions = [s for s, _ in files]
    written["mvnn"] = save_mvnn(
        out / "mvnn.npz", np.stack(whitenings), np.stack(covs), sessions, ch_names, preset, sfreq_in, times
    )
    written["config"] = save_config(cfg, out / "prepare_config.yaml")
    return written
