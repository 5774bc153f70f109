"""The live engine's messages and commands: typed, plain picklable dicts on the wire.

:class:`bci.engine.LiveEngine` emits these messages into its outbox; :class:`bci.engine_process.EngineProcess`
carries them from its ``spawn`` child to the parent through a queue (so they stay plain ``dict`` objects;
numpy arrays are allowed), and the window, ``hmavd-live --headless`` and the recorder read them. The
``TypedDict`` classes below only describe them for readers and type checkers: ``ConnectedMessage(...)``
builds an ordinary ``dict``.

Messages (``msg["type"]``)
--------------------------
``connected``
    Once, after the streams were opened and checked against the model: the stream's ``ch_names``,
    ``sfreq`` and ``n_chans``, the decoder's ``concepts``, the ``model_ch_names`` it reads, the
    stream's name (``stream``) and the connect-time ``notes`` (units, montage, interpolation).
``scope``
    About every ``scope_interval_s``: ``data`` (C, n) float32 decimated to about ``scope_sfreq``,
    ``t0_s`` (time of its first sample), its ``sfreq`` and the ``markers`` received since the last
    one as ``(t_s, label)``.
``prediction``
    One per decoded epoch: ``onset_s``, ``onset_index`` (absolute sample index), the ``marker``'s label,
    the ``true_concept`` (``None`` when the marker names none), ``topk`` as ``(concept, score)``,
    ``latency_ms`` / ``epoch_latency_ms`` (from the arrival of the epoch's last sample to the
    prediction / to the preprocessed epoch), ``top1_correct`` / ``top5_correct`` (``None`` without a
    known true concept) and ``last_arrival_s`` (consumer clock). Optional: ``sample_index`` (the
    stream's ``sample_index`` channel at the onset, only when the stream has that channel) and the
    image's accumulated result over its repetitions (:mod:`bci.accumulate`) ``acc_n``, ``acc_topk``,
    ``acc_top1_correct``, ``acc_top5_correct`` (unless ``accumulate=off`` or the image has no template).
``status``
    About every ``status_interval_s`` and once at the end: ``sfreq_measured``, ``latency_p50_ms`` /
    ``latency_p99_ms`` (NaN before the first prediction), ``dropped_samples``, ``n_epochs``,
    ``rejected`` (reason → count), ``running_top1`` / ``running_top5`` (``None`` before the first
    epoch with a known concept), ``recording``, ``unknown_markers``, ``messages`` (lines for the
    banner), ``mvnn`` (:meth:`bci.online_mvnn.OnlineMVNN.report`, ``None`` without ``mvnn_online``) and
    ``accumulated`` (:meth:`bci.accumulate.RepetitionAccumulator.report`, ``None`` with
    ``accumulate=off``).
``quality``
    About every ``quality_interval_s``: :func:`bci.quality.quality_message` (per-channel RMS, flags).
``error``
    ``message``: one line for the banner (a ``"warning: "`` prefix when decoding goes on).
``stopped``
    Last message of an engine process.

Scope and marker times ``t_s`` and ``onset_s`` are seconds since the stream's first received sample.

Commands (``cmd["cmd"]``, :meth:`bci.engine_process.EngineProcess.send`, :meth:`bci.engine.LiveEngine.handle`)
--------------------------------------------------------------------------------------------------------------
``{"cmd": "stop"}``, ``{"cmd": "record_start", "path": str}`` (``path`` empty: a new folder under
``record_dir``), ``{"cmd": "record_stop"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict

import numpy as np

__all__ = [
    "AccumulatedFields",
    "Command",
    "ConnectedMessage",
    "EngineMessage",
    "ErrorMessage",
    "MESSAGE_TYPES",
    "PredictionMessage",
    "QualityMessage",
    "RecordStartCommand",
    "RecordStopCommand",
    "ScopeMessage",
    "StatusMessage",
    "StopCommand",
    "StoppedMessage",
    "COMMANDS",
    "error_message",
    "record_start_command",
    "record_stop_command",
    "stop_command",
    "stopped_message",
    "prediction_message",
]

#: Every ``type`` an engine message can have.
MESSAGE_TYPES = ("connected", "scope", "prediction", "status", "quality", "error", "stopped")
#: Every ``cmd`` the engine understands.
COMMANDS = ("stop", "record_start", "record_stop")


class ConnectedMessage(TypedDict):
    """The streams are open and match the model."""

    type: Literal["connected"]
    ch_names: list[str]  # the stream's channels
    sfreq: float  # the stream's nominal rate (Hz)
    n_chans: int
    concepts: list[str]  # the decoder's template concepts
    model_ch_names: list[str]  # the channels the model reads
    stream: str  # the EEG stream's name
    notes: list[str]  # connect-time notes (units, montage, interpolation)


class ScopeMessage(TypedDict):
    """Decimated raw signal for the scope."""

    type: Literal["scope"]
    data: np.ndarray  # (C, n) float32 at ~scope_sfreq
    t0_s: float  # time of data[:, 0], s since the stream's first sample
    sfreq: float  # rate of data (Hz)
    markers: list[tuple[float, str]]  # (t_s, label) received since the last scope message


class _PredictionRequired(TypedDict):
    type: Literal["prediction"]
    onset_s: float  # s since the stream's first sample
    onset_index: int  # absolute sample index of the onset
    marker: str  # the marker's label
    true_concept: str | None
    topk: list[tuple[str, float]]  # (concept, score), best first
    latency_ms: float  # last sample's arrival -> prediction
    epoch_latency_ms: float  # last sample's arrival -> preprocessed epoch
    top1_correct: bool | None
    top5_correct: bool | None
    last_arrival_s: float  # consumer clock (time.perf_counter)


class AccumulatedFields(TypedDict):
    """One image's result averaged over its repetitions so far (:meth:`bci.accumulate.RepetitionAccumulator.add`)."""

    acc_n: int  # repetitions averaged
    acc_topk: list[tuple[str, float]]
    acc_top1_correct: bool
    acc_top5_correct: bool


class PredictionMessage(_PredictionRequired, total=False):
    """One decoded epoch; ``sample_index`` and the ``acc_*`` fields are optional."""

    sample_index: int  # the stream's sample_index channel at the onset
    acc_n: int
    acc_topk: list[tuple[str, float]]
    acc_top1_correct: bool
    acc_top5_correct: bool


class StatusMessage(TypedDict):
    """Running statistics of the session."""

    type: Literal["status"]
    sfreq_measured: float
    latency_p50_ms: float  # NaN before the first prediction
    latency_p99_ms: float
    dropped_samples: int
    n_epochs: int
    rejected: dict[str, int]  # reason -> count
    running_top1: float | None  # None before the first epoch with a known concept
    running_top5: float | None
    recording: bool
    unknown_markers: int
    messages: list[str]  # lines for the banner
    mvnn: dict[str, Any] | None  # bci.online_mvnn.OnlineMVNN.report()
    accumulated: dict[str, Any] | None  # bci.accumulate.RepetitionAccumulator.report()


class _QualityRequired(TypedDict):
    type: Literal["quality"]
    ch_names: list[str]
    rms_v: list[float]
    ptp_v: list[float]
    line_ratio: list[float]
    line_freq: float
    bad: dict[str, list[str]]  # channel -> its flags
    window_s: float
    units_known: bool


class QualityMessage(_QualityRequired, total=False):
    """Signal quality of the newest window (:func:`bci.quality.quality_message`); one bool list per flag."""

    flat: list[bool]
    railed: list[bool]
    line: list[bool]
    noisy: list[bool]


class ErrorMessage(TypedDict):
    """One line for the banner."""

    type: Literal["error"]
    message: str


class StoppedMessage(TypedDict):
    """The engine process has ended."""

    type: Literal["stopped"]


EngineMessage = (
    ConnectedMessage | ScopeMessage | PredictionMessage | StatusMessage | QualityMessage | ErrorMessage | StoppedMessage
)


class StopCommand(TypedDict):
    cmd: Literal["stop"]


class _RecordStartRequired(TypedDict):
    cmd: Literal["record_start"]


class RecordStartCommand(_RecordStartRequired, total=False):
    """``path`` empty or missing: a new folder under ``record_dir``."""

    path: str


class RecordStopCommand(TypedDict):
    cmd: Literal["record_stop"]


Command = StopCommand | RecordStartCommand | RecordStopCommand


def error_message(message: str) -> ErrorMessage:
    """``{"type": "error", "message": message}``."""
    return ErrorMessage(type="error", message=str(message))


def stopped_message() -> StoppedMessage:
    """``{"type": "stopped"}``."""
    return StoppedMessage(type="stopped")


def stop_command() -> StopCommand:
    """``{"cmd": "stop"}``."""
    return StopCommand(cmd="stop")


def record_start_command(path: str = "") -> RecordStartCommand:
    """``{"cmd": "record_start", "path": path}`` (empty: a new folder under ``record_dir``)."""
    return RecordStartCommand(cmd="record_start", path=str(path))


def record_stop_command() -> RecordStopCommand:
    """``{"cmd": "record_stop"}``."""
    return RecordStopCommand(cmd="record_stop")


def prediction_message(
    onset_s: float,
    onset_index: int,
    marker: str,
    true_concept: str | None,
    topk: list[tuple[str, float]],
    latency_ms: float,
    epoch_latency_ms: float,
    top1_correct: bool | None,
    top5_correct: bool | None,
    last_arrival_s: float,
    *optional: Mapping[str, Any] | None,
) -> PredictionMessage:
    """One ``"prediction"`` message; ``optional`` mappings add ``sample_index`` / the ``acc_*`` fields."""
    msg = PredictionMessage(
        type="prediction",
        onset_s=float(onset_s),
        onset_index=int(onset_index),
        marker=str(marker),
        true_concept=true_concept,
        topk=list(topk),
        latency_ms=float(latency_ms),
        epoch_latency_ms=float(epoch_latency_ms),
        top1_correct=top1_correct,
        top5_correct=top5_correct,
        last_arrival_s=float(last_arrival_s),
    )
    for extra in optional:
        msg.update(extra or {})  # type: ignore[typeddict-item]
    return msg
