"""Read raw EEG recordings with stimulus events; write the ThingsEEG2 raw session format.

Supported inputs of :func:`read_recording`:

- ThingsEEG2 raw session files ``raw_eeg_{training,test}.npy``: ``np.save``-d dicts with
  ``raw_eeg_data`` (64, n) float64 in volts (63 EEG rows + a last ``stim`` row), ``ch_names``,
  ``ch_types``, ``sfreq`` (1000), ``highpass``, ``lowpass``. The stim row holds single-sample
  pulses (image number at the onset sample; 99999 = catch trial). Opened with
  :func:`hmavd.data.thingseeg2.load_pickled_dict` (the package's only unpickling), because the
  user pointed at them.
- Anything ``mne.io.read_raw`` reads (FIF, BrainVision ``.vhdr``, EDF/BDF, …): events from a stim
  channel when there is one, else from annotations whose description ends in a number
  (``Stimulus/S16540`` -> 16540; MNE's default mapping would renumber it).
- XDF (via pyxdf): the EEG stream plus a marker stream; each marker goes to the nearest sample.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.thingseeg2 import load_pickled_dict
from ..errors import UserError
from ..io import save_npy_atomic

log = logging.getLogger(__name__)

__all__ = [
    "RAW_KEYS",
    "RAW_SUFFIXES",
    "read_recording",
    "read_thingseeg2_raw",
    "write_thingseeg2_raw",
    "events_from_stim",
    "events_from_annotations_numeric",
    "parse_event_code",
    "stim_row",
    "nearest_samples",
]

RAW_KEYS = ("raw_eeg_data", "ch_names", "ch_types", "sfreq")
#: File suffixes :func:`read_recording` accepts.
RAW_SUFFIXES = (".npy", ".fif", ".fif.gz", ".vhdr", ".edf", ".bdf", ".xdf", ".xdfz")
_TRAILING_INT = re.compile(r"(\d+)\s*$")


def parse_event_code(description: str) -> int | None:
    """The trailing integer of a marker/annotation (``"Stimulus/S16540"`` -> 16540), else ``None``."""
    m = _TRAILING_INT.search(str(description))
    return int(m.group(1)) if m else None


def nearest_samples(sample_times: np.ndarray, times: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Index of the sample nearest to each time, and which times fall inside the recording.

    Parameters
    ----------
    sample_times : ndarray, shape (n_samples,)
        Increasing time stamps of the samples (s).
    times : ndarray, shape (n,)
        Event times (s), on the same clock.
    sfreq : float
        Sampling rate (Hz); a time more than half a sample outside the recording is "outside".

    Returns
    -------
    index : ndarray, shape (n,) int64
        Nearest sample (clipped to the recording).
    inside : ndarray, shape (n,) bool
    """
    ts = np.asarray(sample_times, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    right = np.clip(np.searchsorted(ts, t), 1, len(ts) - 1) if len(ts) > 1 else np.zeros(len(t), dtype=np.int64)
    left = np.maximum(right - 1, 0)
    index = np.where(np.abs(ts[right] - t) < np.abs(t - ts[left]), right, left).astype(np.int64)
    half = 0.5 / float(sfreq)
    inside = (t >= ts[0] - half) & (t <= ts[-1] + half) if len(ts) else np.zeros(len(t), dtype=bool)
    return index, inside


def stim_row(n_samples: int, events: np.ndarray) -> np.ndarray:
    """A stim channel with a single-sample pulse of each event's code at its onset sample.

    Parameters
    ----------
    n_samples : int
    events : ndarray, shape (n_events, 3) or (n_events, 2)
        ``[sample, (previous,) code]`` rows (MNE layout or ``[sample, code]``).

    Returns
    -------
    ndarray, shape (n_samples,), float64
    """
    ev = _as_events(events)
    samples, codes = ev[:, 0], ev[:, 2]
    if len(ev):
        if samples.min() < 0 or samples.max() >= n_samples:
            raise UserError(
                f"events: onset samples {samples.min()}…{samples.max()} fall outside the recording's "
                f"{n_samples} samples; pass onsets inside it"
            )
        if np.any(np.diff(samples) < 2):
            raise UserError("events: onsets must increase by >= 2 samples (single-sample pulses); sort or space them")
        if np.any(codes <= 0):
            raise UserError("events: codes must be positive integers (0 is 'no event' on a stim channel)")
    row = np.zeros(n_samples, dtype=np.float64)
    row[samples] = codes
    return row


def _as_events(events: np.ndarray) -> np.ndarray:
    ev = np.asarray(events)
    if ev.ndim != 2 or ev.shape[1] not in (2, 3):
        raise UserError(f"events: shape {ev.shape}; expected (n_events, 3) MNE events or (n_events, 2) [sample, code]")
    if ev.shape[1] == 2:
        ev = np.column_stack([ev[:, 0], np.zeros(len(ev)), ev[:, 1]])
    return ev.astype(np.int64)


def write_thingseeg2_raw(
    path: str | Path,
    data_volts: np.ndarray,
    ch_names: Sequence[str],
    sfreq: float,
    events: np.ndarray,
    highpass: float = 0.01,
    lowpass: float = 100.0,
) -> Path:
    """Write a continuous recording in the exact ThingsEEG2 raw session format (atomically).

    Parameters
    ----------
    path : path
        Usually ``<raw_dir>/sub-XX/ses-YY/raw_eeg_{training,test}.npy``.
    data_volts : ndarray, shape (n_chans, n_samples)
        EEG in volts (no stim row; it is appended).
    ch_names : sequence of str
        ``n_chans`` EEG channel names (``"stim"`` is appended).
    sfreq : float
        Sampling rate in Hz (ThingsEEG2: 1000).
    events : ndarray, shape (n_events, 3) or (n_events, 2)
        Onset sample and image number (1-based; 99999 = catch) of every stimulus.
    highpass, lowpass : float
        Recorded filter settings (Hz), stored as in the real files.

    Returns
    -------
    Path
        The written file.
    """
    data = np.asarray(data_volts, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] != len(ch_names):
        raise UserError(f"data_volts: shape {data.shape} does not match {len(ch_names)} ch_names; pass (n_chans, n)")
    if "stim" in ch_names:
        raise UserError("ch_names: pass the EEG channels only; the 'stim' row is added by the writer")
    stim = stim_row(data.shape[1], events)
    d = {
        "raw_eeg_data": np.vstack([data, stim[None, :]]),  # (C + 1, n)
        "ch_names": [*map(str, ch_names), "stim"],
        "ch_types": ["eeg"] * len(ch_names) + ["stim"],
        "sfreq": float(sfreq),
        "highpass": float(highpass),
        "lowpass": float(lowpass),
    }
    return save_npy_atomic(Path(path), d, allow_object=True)


def read_thingseeg2_raw(path: str | Path):
    """A ThingsEEG2 raw session ``.npy`` as an ``mne.io.RawArray`` (stim channel kept)."""
    import mne

    d = load_pickled_dict(path, RAW_KEYS, "raw eeg file")
    data = np.asarray(d["raw_eeg_data"], dtype=np.float64)
    ch_names = [str(c) for c in d["ch_names"]]
    ch_types = [str(t) for t in d["ch_types"]]
    if data.ndim != 2 or data.shape[0] != len(ch_names) or len(ch_types) != len(ch_names):
        raise UserError(
            f"raw eeg file: {path} raw_eeg_data {data.shape} does not match {len(ch_names)} ch_names / "
            f"{len(ch_types)} ch_types; expected (n_channels, n_samples) with one name and type per row"
        )
    try:
        sfreq = float(d["sfreq"])
        info = mne.create_info(ch_names, sfreq, ch_types, verbose="error")
    except (TypeError, ValueError, KeyError) as err:
        raise UserError(f"raw eeg file: {path} has invalid sfreq/ch_types ({err}); fix the file") from None
    if "highpass" in d and "lowpass" in d:
        with info._unlock():
            info["highpass"] = float(d["highpass"])
            info["lowpass"] = float(d["lowpass"])
    return mne.io.RawArray(data, info, verbose="error")


def events_from_stim(raw, stim_channel: str | Sequence[str] | None = None, source: str = "") -> np.ndarray:
    """``mne.find_events`` with its defaults on the stim channel(s) (before any channel pick).

    ``source`` (the file name) is named in errors.

    Returns
    -------
    ndarray, shape (n_events, 3), int64
    """
    import mne

    where = source or (raw.filenames[0] if raw.filenames and raw.filenames[0] else "recording")
    wanted = [stim_channel] if isinstance(stim_channel, str) else list(stim_channel or [])
    missing = [c for c in wanted if c not in raw.ch_names]
    if missing:
        raise UserError(
            f"stim_channel: {missing} is not a channel of {where} (channels e.g. {raw.ch_names[-5:]}); "
            "name its stim channel or leave stim_channel empty"
        )
    try:
        events = mne.find_events(raw, stim_channel=stim_channel, verbose="error")
    except ValueError as err:
        raise UserError(f"events: {where}: {err}") from None
    return np.asarray(events, dtype=np.int64)


def events_from_annotations_numeric(raw) -> np.ndarray:
    """Events from annotations whose description ends in a number, coded by that number.

    ``Stimulus/S16540`` -> 16540, ``"42"`` -> 42; other annotations (``New Segment/``) are ignored.
    """
    import mne

    if len(raw.annotations) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    codes = {d: parse_event_code(d) for d in set(raw.annotations.description)}
    event_id = {d: c for d, c in codes.items() if c is not None}
    if not event_id:
        return np.zeros((0, 3), dtype=np.int64)
    events, _ = mne.events_from_annotations(raw, event_id=event_id, verbose="error")
    return np.asarray(events, dtype=np.int64)


def _recording_suffix(path: Path) -> str:
    name = path.name.lower()
    for suf in sorted(RAW_SUFFIXES, key=len, reverse=True):
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


def read_recording(path: str | Path, stim_channel: str | None = None):
    """Read a raw recording and its stimulus events.

    Parameters
    ----------
    path : path
        ThingsEEG2 raw ``.npy``, or a FIF / BrainVision / EDF / BDF / XDF recording.
    stim_channel : str, optional
        Stim channel name (default: every channel of type ``stim``; ThingsEEG2: ``"stim"``).

    Returns
    -------
    raw : mne.io.BaseRaw
        All channels (the stim channel too; pick channels after finding events).
    events : ndarray, shape (n_events, 3), int64
        ``[sample, previous, code]`` with the image number (or 99999 for catch trials) in column 2;
        samples in MNE's convention (``raw.first_samp`` included), ready for ``mne.Epochs``.

    Raises
    ------
    UserError
        Missing/unreadable file, unknown format, or a recording without stimulus events.
    """
    import mne

    path = Path(path)
    if not path.exists():
        raise UserError(f"recording: {path} does not exist; check the path")
    suffix = _recording_suffix(path)
    if suffix == ".npy":
        raw = read_thingseeg2_raw(path)
        stim_channel = stim_channel or ("stim" if "stim" in raw.ch_names else None)  # as the public code
    elif suffix in (".xdf", ".xdfz"):
        raw = _read_xdf(path)
        stim_channel = stim_channel or "stim"  # built from the marker stream
    elif suffix in RAW_SUFFIXES:
        try:
            raw = mne.io.read_raw(path, preload=False, verbose="error")
        except Exception as err:  # noqa: BLE001 - any reader failure is bad input here
            raise UserError(f"recording: {path} could not be read by MNE ({type(err).__name__}: {err})") from None
    else:
        raise UserError(f"recording: {path} has unsupported suffix {suffix!r}; use one of {list(RAW_SUFFIXES)}")
    has_stim = stim_channel is not None or "stim" in raw.get_channel_types()
    events = events_from_stim(raw, stim_channel, str(path)) if has_stim else np.zeros((0, 3), dtype=np.int64)
    if len(events) == 0:
        events = events_from_annotations_numeric(raw)
    if len(events) == 0:
        raise UserError(
            f"recording: {path} has no stimulus events (no stim channel pulses and no annotations ending "
            "in an image number); record the stimulus onsets"
        )
    return raw, events


def _read_xdf(path: Path):
    """An XDF file's EEG stream as RawArray with a ``stim`` channel built from its marker stream."""
    import mne
    import pyxdf

    try:
        streams, _ = pyxdf.load_xdf(str(path), verbose=False)
    except Exception as err:  # noqa: BLE001
        raise UserError(f"recording: {path} is not a readable XDF file ({type(err).__name__}); check it") from None
    eeg = [s for s in streams if float(s["info"]["nominal_srate"][0]) > 0 and np.ndim(s["time_series"]) == 2]
    markers = [s for s in streams if float(s["info"]["nominal_srate"][0]) == 0]
    marker_typed = [s for s in markers if str(s["info"]["type"][0]).lower() in ("markers", "marker", "events")]
    markers = marker_typed or [s for s in markers if str(s["info"]["type"][0]).lower() != "predictions"]
    typed = [s for s in eeg if str(s["info"]["type"][0]).lower() == "eeg"]
    eeg = typed or eeg
    if not eeg or not markers:
        raise UserError(
            f"recording: {path} needs one EEG stream and one marker stream; found {len(eeg)} signal "
            f"and {len(markers)} marker streams"
        )
    st = max(eeg, key=lambda s: np.shape(s["time_series"])[1])
    data = np.asarray(st["time_series"], dtype=np.float64).T  # (C, n)
    ts = np.asarray(st["time_stamps"], dtype=np.float64)
    sfreq = float(st["info"]["nominal_srate"][0])
    ch_names, scale = _xdf_channels(st, data.shape[0])
    data *= scale[:, None]
    times, codes = [], []
    for m in markers:
        for value, t in zip(m["time_series"], m["time_stamps"]):
            code = parse_event_code(value[0] if np.ndim(value) else value)
            if code is not None:
                times.append(float(t))
                codes.append(code)
    samples, inside = nearest_samples(ts, np.asarray(times), sfreq)
    if not inside.all():
        log.warning("%s: %d of %d markers fall outside the EEG stream; dropped", path, int((~inside).sum()), len(times))
    samples, codes_arr = samples[inside], np.asarray(codes, dtype=np.int64)[inside]
    order = np.argsort(samples, kind="stable")
    ev = np.column_stack([samples[order], codes_arr[order]]) if len(samples) else np.zeros((0, 2))
    stim = stim_row(data.shape[1], ev) if len(ev) else np.zeros(data.shape[1])
    info = mne.create_info([*ch_names, "stim"], sfreq, ["eeg"] * len(ch_names) + ["stim"], verbose="error")
    return mne.io.RawArray(np.vstack([data, stim[None]]), info, verbose="error")


def _xdf_channels(stream: dict, n_chans: int) -> tuple[list[str], np.ndarray]:
    names = [f"EEG{i + 1:03d}" for i in range(n_chans)]
    scale = np.ones(n_chans)
    try:
        chans = stream["info"]["desc"][0]["channels"][0]["channel"]
        for i, ch in enumerate(chans[:n_chans]):
            names[i] = str(ch["label"][0])
            unit = str(ch.get("unit", ["volts"])[0]).lower()
            if unit in ("microvolts", "microvolt", "uv", "µv"):
                scale[i] = 1e-6
            elif unit in ("millivolts", "millivolt", "mv"):
                scale[i] = 1e-3
    except (KeyError, IndexError, TypeError):
        log.warning("XDF stream has no channel labels; naming them EEG001…")
    return names, scale
