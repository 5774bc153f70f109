"""What a checkpoint and the live settings imply for one session, worked out once at connect.

:func:`resolve_session` turns a checkpoint's metadata (``info``, :func:`hmavd.checkpoint.load_checkpoint`)
and a :class:`bci.live_config.LiveConfig` into a :class:`SessionPlan`: the preprocessing preset, the
model's units, channels and time axis, where the MVNN whitening comes from (and why), the templates and
the feature cache, and which sources feed the session. It checks what can be checked before any stream
is opened (files, names) with one-line :class:`~hmavd.errors.UserError` messages.
:func:`resolve_stream` then checks an opened stream against the plan (rate, channels, epoch length) and
gives the :class:`StreamPlan` the epocher is built from. :class:`bci.engine.LiveEngine` calls both once
and afterwards only reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hmavd.errors import UserError
from hmavd.preprocessing.presets import PRESETS, PreprocessPreset, get_preset
from hmavd.preprocessing.transforms import epoch_window_samples, preprocess_epoch, preprocessed_times

from .decoder import checkpoint_whitening
from .live_config import LiveConfig
from .sources import StreamDescription
from .stream_setup import InputPlan, model_time_axis, plan_input

log = logging.getLogger(__name__)

__all__ = [
    "SessionPlan",
    "StreamPlan",
    "TemplatesPlan",
    "WhiteningPlan",
    "SessionWhitening",
    "load_session_whitening",
    "resolve_whitening",
    "preset_for_checkpoint",
    "resolve_session",
    "resolve_stream",
]


@dataclass(frozen=True)
class WhiteningPlan:
    """Where the session's MVNN matrix comes from.

    Attributes
    ----------
    kind : str
        ``"file"`` (an ``mvnn.npz``), ``"given"`` (a matrix handed to the engine) or ``"none"``.
    path : str
        The file (``kind == "file"``), else ``""``.
    session : int or None
        Which of the file's per-session matrices; ``None``: their mean.
    online : bool
        ``mvnn_online``: the session's own running estimate replaces this matrix after the warm-up.
    reason : str
        Why (for the log and the session record).
    """

    kind: str
    path: str = ""
    session: int | None = None
    online: bool = False
    reason: str = ""


@dataclass(frozen=True)
class TemplatesPlan:
    """What the decoder compares EEG features with.

    ``kind`` (image/text/fused) and ``image_source`` (test-images/centers) from the settings;
    ``features_path`` the feature cache they are encoded from (``""`` for the gallery); ``gallery`` True
    when they are the checkpoint's own stored gallery.
    """

    kind: str
    image_source: str
    features_path: str
    gallery: bool = False


@dataclass(frozen=True)
class SessionPlan:
    """The live session's complete description before any stream is opened.

    Attributes
    ----------
    checkpoint : str
        The checkpoint file ("" when the decoder was handed to the engine).
    preset : PreprocessPreset
        The preprocessing the model was trained with.
    preset_reason : str
        ``"preset="``, ``"recorded"``, ``"time axis"``, ``"default"`` or ``"given"``.
    units : str
        The model's input units (``V`` unless the checkpoint records others).
    model_ch_names : tuple of str
        The model's channels in input order (empty: taken from the stream).
    model_times : tuple of float
        The model's time axis (s; empty when the checkpoint records none).
    model_sfreq : float
        Rate of that time axis (Hz; 0 when unrecorded).
    whitening : WhiteningPlan
    templates : TemplatesPlan
    source : str
        ``"replay"`` (``cfg.replay`` in process) or ``"lsl"`` (``cfg.eeg_stream``).
    markers : str
        ``"replay"``, ``"stride"`` (no marker stream, ``stride_s`` > 0) or ``"lsl"`` (``cfg.marker_stream``).
    """

    checkpoint: str
    preset: PreprocessPreset
    preset_reason: str
    units: str
    model_ch_names: tuple[str, ...]
    model_times: tuple[float, ...]
    model_sfreq: float
    whitening: WhiteningPlan
    templates: TemplatesPlan
    source: str
    markers: str


@dataclass
class StreamPlan:
    """How an opened stream feeds the model: its picks and units (:class:`InputPlan`) and the epoch preset.

    ``epoch_preset`` is ``plan.preset`` or, at a rate that is not a multiple of the model's, the preset
    cropped onto the model's time axis (:func:`bci.stream_setup.model_time_axis`).
    """

    input: InputPlan
    epoch_preset: PreprocessPreset
    index_channel: int | None = None  # the stream's ``sample_index`` channel
    notes: list[str] = field(default_factory=list)

    @property
    def picks(self) -> list[int]:
        return self.input.picks


def preset_for_checkpoint(info: Mapping[str, Any]) -> PreprocessPreset:
    """The preprocessing preset a checkpoint was trained with.

    Its recorded ``preset`` name when present; else the packaged preset whose output rate and time
    axis equal the checkpoint's ``sfreq`` and ``times`` (NICE: 250 Hz, 0 … 0.996 s; Gifford:
    100 Hz, −0.2 … 0.79 s); else ``nice`` (logged).
    """
    return _preset_and_reason(info)[0]


def _preset_and_reason(info: Mapping[str, Any]) -> tuple[PreprocessPreset, str]:
    if info.get("preset"):
        return get_preset(str(info["preset"])), "recorded"
    times = np.asarray(info.get("times") or [], dtype=np.float64)
    sfreq = float(info.get("sfreq") or 0.0)
    for preset in PRESETS.values():
        ref = preprocessed_times(preset, 4 * preset.sfreq)
        if sfreq == preset.sfreq and len(ref) == len(times) and np.allclose(ref, times, atol=0.5 / preset.sfreq):
            return preset, "time axis"
    log.warning(
        "the checkpoint's time axis (%d samples at %g Hz) matches no packaged preset; using 'nice' "
        "(set preset=<name> if it was prepared otherwise)",
        len(times),
        sfreq,
    )
    return get_preset("nice"), "default"


def _whitening_plan(cfg: LiveConfig, info: Mapping[str, Any], given: bool) -> WhiteningPlan:
    """``cfg.whitening``, else the training subject's ``mvnn.npz`` (``none``: no whitening)."""
    session = None if cfg.whitening_session < 0 else cfg.whitening_session
    online = bool(cfg.mvnn_online)
    if given:
        return WhiteningPlan("given", online=online, reason="matrix handed to the engine")
    if cfg.whitening.lower() == "none":
        return WhiteningPlan("none", online=online, reason="whitening=none")
    if cfg.whitening:
        if not Path(cfg.whitening).exists():
            raise UserError(
                f"whitening: {cfg.whitening!r} does not exist; give the prepared subject's mvnn.npz "
                "(or whitening=none for a model trained without MVNN)"
            )
        return WhiteningPlan("file", cfg.whitening, session, online, "whitening=")
    recorded, found = checkpoint_whitening(dict(info))
    if not recorded:
        log.warning(
            "no whitening given and the checkpoint names no training subject: epochs are not "
            "MVNN-whitened (pass whitening=<mvnn.npz>, or whitening=none to silence this)"
        )
        return WhiteningPlan("none", online=online, reason="the checkpoint names no training subject")
    if found is None:
        raise UserError(
            f"whitening: not set, and the training subject's {recorded!r} was not found; pass "
            "--whitening <prepared subject>/mvnn.npz (or whitening=none for a model trained without MVNN)"
        )
    log.info("whitening from the training subject's %s", found)
    return WhiteningPlan("file", str(found), session, online, "the training subject's")


def _check_files(cfg: LiveConfig) -> None:
    """The settings that name files: one line each when the file is absent."""
    if cfg.marker_map and not Path(cfg.marker_map).is_file():
        raise UserError(
            f"marker_map: {cfg.marker_map!r} is not a file; give a .json/.yaml/.csv mapping of code -> image or concept"
        )
    if cfg.replay and not Path(cfg.replay).exists():
        raise UserError(f"replay: {cfg.replay!r} does not exist; give a recording (.fif, .xdf) or a session folder")


def resolve_session(
    cfg: LiveConfig,
    info: Mapping[str, Any],
    ch_names: Sequence[str] = (),
    preset: PreprocessPreset | None = None,
    whitening_given: bool = False,
) -> SessionPlan:
    """Everything a checkpoint and the settings imply for a live session; one-line errors.

    Parameters
    ----------
    cfg : LiveConfig
    info : mapping
        The checkpoint's metadata (``{}`` for a decoder built in Python): ``preset``, ``times``,
        ``sfreq``, ``units``, ``ch_names``, ``features_path``, ``train_config``, ``train_subjects``, ``path``.
    ch_names : sequence of str
        The decoder's channels (default: the checkpoint's ``ch_names``).
    preset : PreprocessPreset, optional
        A preset handed to the engine (overrides ``cfg.preset`` and the checkpoint).
    whitening_given : bool
        A whitening matrix was handed to the engine (``cfg.whitening`` is not read).
    """
    _check_files(cfg)
    if preset is not None:
        reason = "given"
    elif cfg.preset:
        preset, reason = get_preset(cfg.preset), "preset="
    else:
        preset, reason = _preset_and_reason(info)
    if cfg.stride_s > 0 and not cfg.marker_stream and not cfg.replay:
        markers = "stride"
    else:
        markers = "replay" if cfg.replay else "lsl"
    features = str(info.get("features_path") or cfg.features or "")
    return SessionPlan(
        checkpoint=str(info.get("path") or cfg.checkpoint),
        preset=preset,
        preset_reason=reason,
        units=str(info.get("units") or "V"),  # checkpoints without a record: volts
        model_ch_names=tuple(ch_names or info.get("ch_names") or ()),
        model_times=tuple(float(t) for t in info.get("times") or ()),
        model_sfreq=float(info.get("sfreq") or 0.0),
        whitening=_whitening_plan(cfg, info, whitening_given),
        templates=TemplatesPlan(cfg.templates, cfg.image_source, features, _uses_gallery(info)),
        source="replay" if cfg.replay else "lsl",
        markers=markers,
    )


def _uses_gallery(info: Mapping[str, Any]) -> bool:
    """The decoder took its templates from the checkpoint's stored gallery (``template_source``, set by
    :meth:`bci.decoder.Decoder.from_checkpoint`; else whether the checkpoint holds one)."""
    source = info.get("template_source")
    return source == "gallery" if source else info.get("gallery") is not None


def load_session_whitening(plan: SessionPlan, ch_names: Sequence[str]) -> np.ndarray | None:
    """The plan's MVNN matrix (C, C) for the model's channels ``ch_names``; ``None`` unless it names a file."""
    if plan.whitening.kind != "file":
        return None
    from .epocher import load_whitening

    return load_whitening(plan.whitening.path, len(ch_names), plan.whitening.session, ch_names=list(ch_names))


@dataclass(frozen=True)
class SessionWhitening:
    """The session's MVNN matrix and the channels it was computed on.

    Attributes
    ----------
    matrix : ndarray (C_file, C_file)
        The file's whitening (the amplitude check reads the training data's std from it).
    ch_names : tuple of str
        The file's channels: the ones the stream must supply, in this order.
    rows : tuple of int
        The model's channels' positions in ``ch_names`` (empty: the model's channels are ``ch_names``).
    """

    matrix: np.ndarray
    ch_names: tuple[str, ...]
    rows: tuple[int, ...] = ()

    @property
    def epoch_matrix(self) -> np.ndarray:
        """``W[:, rows]`` (C_file, C_model): whitens over the file's channels, keeps the model's, in its order."""
        return self.matrix[:, list(self.rows)] if self.rows else self.matrix


def resolve_whitening(plan: SessionPlan, ch_names: Sequence[str], mvnn_online: bool = False) -> SessionWhitening | None:
    """The plan's MVNN file for the model's channels ``ch_names``; ``None`` unless it names a file.

    As ``hmavd-prepare`` whitens on all the recorded channels before a model picks its ``channels``,
    a file whose ``ch_names`` are a strict superset of the model's is used whole: the stream must then
    supply all its channels and the epoch keeps the model's rows of the whitened data. One-line
    :class:`UserError` when the channels do not fit, or with ``mvnn_online`` on such a file.
    """
    if plan.whitening.kind != "file":
        return None
    from .epocher import check_whitening, read_whitening

    path, model = plan.whitening.path, list(ch_names)
    w, names = read_whitening(path, plan.whitening.session)
    if names is None or names == model or not set(model) < set(names) or w.shape != (len(names), len(names)):
        w = check_whitening(w, names, path, len(model), model)  # the usual checks, on the matrix already read
        return SessionWhitening(w, tuple(model))
    if mvnn_online:
        raise UserError(
            f"mvnn_online: the model reads {len(model)} of the {len(names)} channels {path!r} was computed on, "
            "and online MVNN estimates and whitens the model's channels only; use a model trained on all the "
            "channels, or mvnn_online=false (or whitening=none)"
        )
    rows = tuple(names.index(c) for c in model)
    log.info("whitening on the file's %d channels, the model keeps %d of them", len(names), len(model))
    return SessionWhitening(w, tuple(names), rows)


def resolve_stream(
    plan: SessionPlan,
    desc: StreamDescription,
    cfg: LiveConfig,
    n_chans: int = 0,
    n_times: int = 0,
    whitening: SessionWhitening | None = None,
) -> StreamPlan:
    """Check an opened stream against the plan and the model's input shape ``(n_chans, n_times)``.

    One-line :class:`UserError` when the rate differs from ``expected_sfreq`` or is below the model's,
    when the channels do not match (see :func:`bci.stream_setup.plan_input`), or when no crop of the
    preset at the stream's rate yields the model's ``n_times`` samples. A ``whitening`` over more
    channels than the model's (:func:`resolve_whitening`) makes the stream supply all of its channels
    (none interpolated).
    """
    preset = plan.preset
    if cfg.expected_sfreq > 0 and abs(desc.sfreq - cfg.expected_sfreq) > 1e-6:
        raise UserError(
            f"eeg_stream: {desc.name!r} runs at {desc.sfreq:g} Hz, expected_sfreq is {cfg.expected_sfreq:g} Hz; "
            "stream at that rate or change expected_sfreq"
        )
    if desc.sfreq < preset.sfreq:
        raise UserError(
            f"eeg_stream: {desc.name!r} runs at {desc.sfreq:g} Hz, below the model's {preset.sfreq:g} Hz "
            f"(preset {preset.name}); stream at >= {preset.sfreq:g} Hz"
        )
    if whitening is not None and whitening.rows:  # the file's channels are read, the model keeps its rows
        try:
            inp = plan_input(desc, whitening.ch_names, plan.units, cfg.stream_units, 0)
        except UserError as err:
            what = str(err).split("; ")[0].replace("of the model's", "of the whitening file's")
            raise UserError(
                f"{what}; the model's channels were whitened together with all of these in training: stream "
                "them all (or whitening=<an mvnn.npz of the model's channels only>)"
            ) from None
        inp.notes.append(
            f"reading the whitening file's {len(whitening.ch_names)} channels; the model keeps "
            f"{len(whitening.rows)} of them after whitening"
        )
    else:
        inp = plan_input(desc, plan.model_ch_names, plan.units, cfg.stream_units, cfg.interpolate_missing)
    n_model = len(plan.model_ch_names) if plan.model_ch_names else len(inp.picks)
    if n_chans and n_model != n_chans:
        raise UserError(
            f"eeg_stream: {desc.name!r} has {desc.n_chans} channels, the model needs {n_chans}; "
            "stream the channels the model was trained on"
        )
    _, n_in = epoch_window_samples(preset.tmin_s, preset.tmax_s, desc.sfreq)
    n_out = preprocess_epoch(np.zeros((1, n_in)), desc.sfreq, preset).shape[-1]
    epoch_preset = preset
    if n_times and n_out != n_times:
        epoch_preset = model_time_axis(preset, desc.sfreq, plan.model_times, n_times, inp.notes)
    if epoch_preset is None:
        raise UserError(
            f"eeg_stream: {desc.name!r} at {desc.sfreq:g} Hz gives {n_out} samples per epoch after preset "
            f"{preset.name!r}, the model needs {n_times}; use the rate/preset the model was trained with"
        )
    index = desc.ch_names.index("sample_index") if "sample_index" in desc.ch_names else None
    return StreamPlan(inp, epoch_preset, index, inp.notes)
