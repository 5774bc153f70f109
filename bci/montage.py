"""Montage matching: the model's channels found in an amplifier's stream, missing ones interpolated.

Stream labels are matched to the checkpoint's channel names case-insensitively, after stripping the
decorations EDF/BrainVision exports add (``"EEG Fp1-REF"`` → ``fp1``) and through the 10-20 → 10-10
renames (T3/T7, T4/T8, T5/P7, T6/P8, and the mastoid/inion synonyms). Non-EEG channels — an LSL
channel ``type`` other than EEG, or a name such as AUX, EOG, ECG, EMG, trigger/stim, a sample counter,
accelerometer — never stand in for an EEG channel. When channels the model needs are missing the
stream is refused with one line naming them, unless ``interpolate_missing=N`` allows up to N: they are
then interpolated with MNE's spherical splines on a standard 10-05 montage. The interpolation is one
matrix (:func:`interpolation_matrix`), computed once at connect and applied to every raw epoch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hmavd.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["normalize_label", "is_non_eeg", "MontageMatch", "match_montage", "interpolation_matrix"]

#: Old 10-20 name -> 10-10 name (lower case); both directions are tried.
ALIASES: dict[str, str] = {
    "t3": "t7",
    "t4": "t8",
    "t5": "p7",
    "t6": "p8",
    "a1": "m1",
    "a2": "m2",
    "o9": "i1",
    "o10": "i2",
}
_REVERSE = {v: k for k, v in ALIASES.items()}

_NON_EEG_TYPES = {
    "aux",
    "eog",
    "heog",
    "veog",
    "ecg",
    "ekg",
    "emg",
    "stim",
    "trigger",
    "trig",
    "misc",
    "marker",
    "markers",
    "acc",
    "accel",
    "gyro",
    "resp",
    "gsr",
    "ppg",
    "temp",
    "bio",
    "exg",
    "counter",
}
_NON_EEG_NAME = re.compile(
    r"(^|[\s_\-])(aux\w*|[hv]?eog\w*|ecg\w*|ekg\w*|emg\w*|trig\w*|stim\w*|sti\s?\d*|status|marker\w*|"
    r"counter|sample[_\s]?(index|counter|number)?|acc\w*|gyro\w*|resp\w*|gsr|ppg|battery|x_?\w*_acc)($|[\s_\-])",
    re.IGNORECASE,
)
_DECOR = re.compile(r"^(eeg[\s_\-:]+)|([\s_\-:]+(ref|le|ar|avg|a1|a2|m1|m2|cz)$)", re.IGNORECASE)


def normalize_label(label: str) -> str:
    """Comparable form of an electrode label: lower case, ``EEG``/``-REF`` decorations stripped."""
    s = str(label).strip()
    prev = None
    while prev != s:  # "EEG Fp1-REF" -> "Fp1"
        prev = s
        stripped = _DECOR.sub("", s)
        s = stripped if stripped else s
    return s.strip().lower()


def is_non_eeg(label: str, ch_type: str = "") -> bool:
    """True for channels that are not scalp EEG (by LSL ``type`` when given, else by name)."""
    t = str(ch_type or "").strip().lower()
    if t and t != "eeg":
        return t in _NON_EEG_TYPES or not t.startswith("eeg")
    return bool(_NON_EEG_NAME.search(str(label).strip()))


def _keys(name: str) -> set[str]:
    n = normalize_label(name)
    return {n, ALIASES.get(n, n), _REVERSE.get(n, n)}


@dataclass(frozen=True)
class MontageMatch:
    """How the model's channels come from the stream.

    Attributes
    ----------
    picks : tuple of int
        Stream channel index of every model channel that is present (model order, missing ones left out).
    present : tuple of int
        Model channel index of each entry of ``picks``.
    missing : tuple of str
        Model channel names not in the stream (interpolated).
    renamed : tuple of (str, str)
        ``(stream label, model name)`` pairs matched through case or an alias.
    ignored : tuple of str
        Stream channels skipped as non-EEG.
    """

    picks: tuple[int, ...]
    present: tuple[int, ...]
    missing: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...] = ()
    ignored: tuple[str, ...] = ()


def _generic(names: Sequence[str]) -> bool:
    return all(n == f"Ch{i + 1}" for i, n in enumerate(names))


def match_montage(
    stream_names: Sequence[str],
    model_names: Sequence[str],
    stream: str,
    ch_types: Sequence[str] = (),
    interpolate_missing: int = 0,
) -> MontageMatch:
    """Find the model's channels in a stream (see the module doc); a one-line refusal when some miss.

    Unnamed streams (``Ch1…``, LSL's default) must have exactly the model's number of EEG channels
    and are taken in order.
    """
    stream_names, model_names = list(stream_names), list(model_names)
    types = list(ch_types) + [""] * (len(stream_names) - len(ch_types))
    if not model_names:
        return MontageMatch(tuple(range(len(stream_names))), tuple(range(len(stream_names))), ())
    eeg = [i for i, (n, t) in enumerate(zip(stream_names, types)) if not is_non_eeg(n, t)]
    ignored = tuple(stream_names[i] for i in range(len(stream_names)) if i not in set(eeg))
    exact = {stream_names[i]: i for i in eeg}
    by_key: dict[str, int] = {}
    for i in eeg:
        for k in _keys(stream_names[i]):
            by_key.setdefault(k, i)
    picks, present, missing, renamed = [], [], [], []
    for m, name in enumerate(model_names):
        i = exact.get(name)
        if i is None:
            i = next((by_key[k] for k in _keys(name) if k in by_key), None)
            if i is not None:
                renamed.append((stream_names[i], name))
        if i is None or i in picks:
            missing.append(name)
        else:
            picks.append(i)
            present.append(m)
    if missing and _generic([stream_names[i] for i in eeg]) and eeg:
        if len(eeg) != len(model_names):
            raise UserError(
                f"eeg_stream: {stream!r} has {len(eeg)} unnamed channels, the model needs {len(model_names)}; "
                f"stream exactly {len(model_names)} channels or label them in the stream's description"
            )
        log.warning("%s has unnamed channels; feeding them to the model in stream order", stream)
        return MontageMatch(tuple(eeg), tuple(range(len(model_names))), (), (), ignored)
    if len(missing) > interpolate_missing:
        allow = (
            f"interpolate_missing={len(missing)} to interpolate them"
            if len(missing) <= len(model_names) // 4
            else "stream the channels the model was trained on"
        )
        raise UserError(
            f"eeg_stream: {stream!r} has {len(eeg)} EEG channels and lacks {len(missing)} of the model's "
            f"{len(model_names)}: {missing if len(missing) <= 12 else missing[:12] + ['…']}; {allow}"
        )
    if renamed:
        log.info("%s: matched %s", stream, ", ".join(f"{a} -> {b}" for a, b in renamed))
    if ignored:
        log.info("%s: ignoring non-EEG channels %s", stream, list(ignored))
    return MontageMatch(tuple(picks), tuple(present), tuple(missing), tuple(renamed), ignored)


def standard_montage():
    """MNE's standard 10-05 montage (``colin27_1005``, formerly ``standard_1005``)."""
    import mne

    for name in ("colin27_1005", "standard_1005"):
        try:
            return mne.channels.make_standard_montage(name)
        except ValueError:
            continue
    raise RuntimeError("MNE has no standard 10-05 montage")  # pragma: no cover


def interpolation_matrix(model_names: Sequence[str], match: MontageMatch) -> np.ndarray:
    """``(C_model, n_picks)`` matrix: model channels from the picked stream channels.

    Rows of present channels are unit vectors; rows of missing channels hold MNE's spherical-spline
    weights (``interpolate_bads`` on the standard 10-05 positions, origin fitted to the head), found by
    interpolating the identity: the spline interpolation is linear, so this is exactly the matrix MNE
    applies. A one-line error when a name has no standard position.
    """
    import mne

    model_names = list(model_names)
    n_model, n_have = len(model_names), len(match.picks)
    out = np.zeros((n_model, n_have))
    out[list(match.present), np.arange(n_have)] = 1.0
    if not match.missing:
        return out
    mont = standard_montage()
    pos = {k: v for k, v in mont.get_positions()["ch_pos"].items()}
    lookup = {}
    for k in pos:
        for key in _keys(k):
            lookup.setdefault(key, k)
    std_names = []
    for name in model_names:
        hit = next((lookup[k] for k in _keys(name) if k in lookup), None)
        if hit is None:
            raise UserError(
                f"interpolate_missing: channel {name!r} has no position in the standard 10-05 montage; "
                "stream it instead of interpolating"
            )
        std_names.append(hit)
    info = mne.create_info(std_names, 1000.0, "eeg")
    info.set_montage(mont, verbose="error")
    info["bads"] = [std_names[model_names.index(m)] for m in match.missing]
    impulses = np.zeros((n_model, n_have))
    impulses[list(match.present), np.arange(n_have)] = 1.0
    raw = mne.io.RawArray(impulses, info, verbose="error")
    raw.interpolate_bads(reset_bads=True, mode="accurate", verbose="error")
    return raw.get_data()
