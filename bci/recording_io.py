"""Reading recorded sessions back: :func:`read_session`, :func:`read_xdf_session`, :func:`recording_to_fif`.

The recorders of :mod:`bci.recorder` write either ``session.xdf`` (EEG, Markers and Predictions
streams) or the older folder format (``meta.json``, ``eeg.f32``, ``markers.csv``). :func:`read_session`
reads either layout as ``(data (C, n), meta, [(sample, code), …])``; :func:`recording_to_fif` converts a
session to a FIF file with a ``stim`` channel (integer codes at their onset samples) and annotations,
which ``hmavd-prepare`` and ``hmavd-replay`` read (they also read ``session.xdf`` itself).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from hmavd.errors import UserError

from .recorder import PREDICTION_FIELDS, XDF_NAME
from .units import unit_scale

log = logging.getLogger(__name__)

__all__ = ["read_session", "read_xdf_session", "recording_to_fif", "session_channel_type"]


def session_channel_type(name: str) -> str:
    """MNE channel type of a recorded channel: ``misc`` for the sample counter, ``stim`` for ``stim``, else ``eeg``."""
    low = name.lower()
    if low in ("sample_index", "sample"):
        return "misc"
    return "stim" if low == "stim" else "eeg"


def read_session(path: str | Path) -> tuple[np.ndarray, dict[str, Any], list[tuple[int, str]]]:
    """Read a session (folder or ``.xdf``): data (C, n) float32, meta, and markers as ``(sample, code)``.

    A folder holding ``session.xdf`` (or an ``.xdf`` file) is read by :func:`read_xdf_session`. In the
    folder format markers are mapped to their nearest sample through the saved segments; markers
    outside the recorded data (or in a gap) are dropped with a log line.
    """
    path = Path(path)
    if path.suffix.lower() == ".xdf" or (path / XDF_NAME).exists():
        return read_xdf_session(path if path.suffix.lower() == ".xdf" else path / XDF_NAME)
    if not (path / "meta.json").exists():
        raise UserError(f"recording: {path} has no {XDF_NAME} or meta.json; give a folder written by the live recorder")
    meta = json.loads((path / "meta.json").read_text())
    n_chans = len(meta["ch_names"])
    raw = np.fromfile(path / "eeg.f32", dtype=np.float32)
    n = raw.size // n_chans  # a crash may leave a partial last sample
    data = raw[: n * n_chans].reshape(n, n_chans).T  # (C, n)
    events: list[tuple[int, str]] = []
    segs = meta.get("segments") or [[0, n, 0.0, 1.0 / meta["sfreq"]]]
    with open(path / "markers.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            t = float(row["t_s"])
            idx = None
            for start, cnt, t0, period in segs:
                k = int(round((t - t0) / period))
                if 0 <= k < cnt:
                    idx = int(start + k)
            if idx is None or idx >= n:
                log.info("marker %s at %.3f s lies outside the recorded data; dropped", row["code"], t)
                continue
            events.append((idx, row["code"]))
    return data, meta, events


def read_xdf_session(
    path: str | Path, to_volts: bool = True
) -> tuple[np.ndarray, dict[str, Any], list[tuple[int, str]]]:
    """Read an XDF session: the EEG stream (C, n) float32, meta, and markers as ``(sample, code)``.

    ``pyxdf.load_xdf`` with clock synchronisation (the ClockOffset chunks) and the timestamps as
    written; each marker goes to the nearest EEG sample, markers outside the data are dropped. The
    Predictions stream is returned in ``meta["predictions"]`` as a list of dicts (one per epoch).
    ``meta`` has ``ch_names``, ``ch_types``, ``ch_units``, ``sfreq``, ``n_samples``, ``format``
    (``"xdf"``), ``timestamps`` (n,) and the header's ``hmavd_session`` settings. With ``to_volts``
    channels labelled in mV, µV or nV are converted to volts (as the FIF export and replays expect).
    """
    import pyxdf

    from hmavd.preprocessing.raw_io import nearest_samples

    try:
        streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False, verbose=False)
    except Exception as err:  # noqa: BLE001 - unreadable input
        raise UserError(f"recording: {path} is not a readable XDF file ({type(err).__name__}: {err})") from None
    by_type: dict[str, dict] = {}
    for st in streams:
        by_type.setdefault(str(st["info"]["type"][0]).lower(), st)
    eeg = by_type.get("eeg")
    if eeg is None or len(eeg["time_stamps"]) == 0:
        raise UserError(f"recording: {path} holds no EEG samples; record for longer or pick another session")
    chans = _xdf_list(eeg["info"], "desc", "channels", "channel")
    field = lambda key: [str((c.get(key) or [""])[0] or "") for c in chans]  # noqa: E731
    ts = np.asarray(eeg["time_stamps"], dtype=np.float64)
    sfreq = float(eeg["info"]["nominal_srate"][0])
    events: list[tuple[int, str]] = []
    mk = by_type.get("markers")
    if mk is not None and len(mk["time_stamps"]):
        codes = [str(v[0]) for v in mk["time_series"]]
        idx, inside = nearest_samples(ts, np.asarray(mk["time_stamps"]), sfreq)
        if not inside.all():
            log.info("%s: %d markers lie outside the recorded data; dropped", path, int((~inside).sum()))
        events = [(int(i), c) for i, c, ok in zip(idx, codes, inside) if ok]
    pr = by_type.get("predictions")
    preds = [dict(zip(PREDICTION_FIELDS, row)) for row in pr["time_series"]] if pr is not None else []
    session = _xdf_list(eeg["info"], "desc", "hmavd_session")
    meta = {
        "format": "xdf",
        "ch_names": field("label"),
        "ch_types": field("type"),
        "ch_units": field("unit"),
        "sfreq": sfreq,
        "n_samples": len(ts),
        "timestamps": ts,
        "stream": str(eeg["info"]["name"][0]),
        "hmavd_session": session[0] if session else {},
        "predictions": preds,
    }
    data = np.asarray(eeg["time_series"], dtype=np.float32).T  # (C, n)
    if to_volts:  # channels labelled in a voltage unit other than volts
        for i, unit in enumerate(meta["ch_units"]):
            scale = unit_scale(unit)
            if scale is not None and scale != 1.0:
                data[i] *= np.float32(scale)
                meta["ch_units"][i] = "volts"
    return data, meta, events


def _xdf_list(node: Any, *keys: str) -> list:
    """``node[k1][0][k2][0]…[kn]`` of pyxdf's nested dict-of-lists, ``[]`` when a level is missing."""
    for k in keys[:-1]:
        try:
            node = node[k][0]
        except (KeyError, IndexError, TypeError):
            return []
    try:
        return list(node[keys[-1]] or [])
    except (KeyError, TypeError):
        return []


def recording_to_fif(path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Convert a session folder to FIF (EEG in volts, ``misc`` for ``sample_index``, a ``stim`` channel)."""
    import mne

    data, meta, events = read_session(path)
    ch_names = list(meta["ch_names"])
    types = [session_channel_type(c) for c in ch_names]
    stim = np.zeros((1, data.shape[1]))
    for idx, code in events:
        digits = "".join(ch for ch in code if ch.isdigit())
        if digits:
            stim[0, idx] = int(digits)
    if "stim" not in [c.lower() for c in ch_names]:
        ch_names, types = [*ch_names, "stim"], [*types, "stim"]
        data = np.concatenate([data.astype(np.float64), stim], axis=0)
    info = mne.create_info(ch_names, meta["sfreq"], types)
    raw = mne.io.RawArray(np.asarray(data, dtype=np.float64), info, verbose="error")
    if events:
        onsets = np.array([i for i, _ in events]) / meta["sfreq"]
        raw.set_annotations(mne.Annotations(onsets, np.zeros(len(events)), [c for _, c in events]))
    out = Path(out)
    raw.save(out, overwrite=overwrite, verbose="error")
    return out
