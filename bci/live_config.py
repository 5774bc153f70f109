"""The live session's settings: :class:`LiveConfig` (the window, ``hmavd-live --headless``, ``configs/live.yaml``).

It validates itself when built (YAML, ``key=value`` overrides, Python, :func:`dataclasses.replace`), with
one-line :class:`~hmavd.errors.UserError` messages naming the field, the value and the fix. Checks that
need the filesystem (the marker map, the whitening and feature files) run when the session is resolved
(:func:`bci.session_plan.resolve_session`), so the defaults always construct.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hmavd.config import ValidatedConfig
from hmavd.errors import UserError

__all__ = ["LiveConfig", "live_config_from_values"]


@dataclass(frozen=True)
class LiveConfig(ValidatedConfig):
    """Configuration of a live session (GUI and ``hmavd-live --headless``; YAML via ``--config``).

    ``stride_s > 0`` cuts an epoch every ``stride_s`` seconds without markers. ``preset`` empty:
    the preset whose output times match the checkpoint's (else ``nice``). ``features`` empty: the
    feature cache the checkpoint was trained with. ``whitening`` empty: the ``mvnn.npz`` of the
    subject the checkpoint was trained on (``none``: no whitening). ``whitening_session`` < 0: mean
    of the sessions' matrices. ``expected_sfreq`` 0: any rate ≥ the model's that yields its epoch
    length. ``compute_threads``: CPU threads of torch and of numpy's BLAS in this process (1 by
    default: one epoch at a time is fastest on one thread — a 64-channel TSConv forward took 2.6 ms
    vs 87 ms with torch's 2 threads on a busy 2-core CPU, and idle OpenBLAS workers spun at a third
    of a core — and the other cores stay free for acquisition; 0 = the libraries' defaults).
    ``poll_interval_s``: how long one engine step waits for new samples (and the sources' pull
    interval). ``replay`` (a recording or session folder) replaces both LSL streams by an in-process
    replay of that file at ``replay_speed`` × real time (:class:`bci.replay.RecordingSource`).
    Connecting an amplifier (docs/realtime.md, "Connect your amplifier"): ``stream_units`` (V, mV, uV,
    nV; empty = the channels' ``unit`` labels), ``amplitude_check`` (refuse/warn/off: an unlabelled
    stream's first seconds against the training data), ``interpolate_missing`` (up to N missing model
    channels by spherical splines), ``marker_map`` (a code → image/concept file), ``marker_offset_s``
    (display delay added to every marker, e.g. measured with a photodiode).
    A new session (docs/new-session.md): ``mvnn_online`` whitens with the session's own running MVNN
    estimate (:mod:`bci.online_mvnn`) once ``mvnn_warmup_epochs`` are in, frozen after ``mvnn_freeze``
    epochs (0 = never), ``W`` recomputed every ``mvnn_update_every`` epochs. ``accumulate``: each
    image's running average over its repetitions (``epochs`` before the encoder, ``embeddings`` after
    it, ``off``), its accumulated top-k in every prediction and the accuracy-vs-repetitions curve
    (:mod:`bci.accumulate`).
    """

    eeg_stream: str = ""
    marker_stream: str = ""
    checkpoint: str = ""
    features: str = ""
    whitening: str = ""
    templates: str = "image"
    image_source: str = "test-images"
    device: str = "auto"
    record_dir: str = ""
    scope_sfreq: float = 100.0
    resolve_timeout_s: float = 5.0
    preset: str = ""
    whitening_session: int = -1
    expected_sfreq: float = 0.0
    stride_s: float = 0.0
    top_k: int = 5
    marker_timeout_s: float = 5.0
    ignore_codes: tuple[str, ...] = ("99999",)
    flat_ptp: float = 0.0
    clip_abs: float = 0.0
    clip_run: int = 20
    buffer_s: float = 60.0
    poll_interval_s: float = 0.05
    scope_interval_s: float = 0.1
    status_interval_s: float = 0.5
    auto_record: bool = False
    compute_threads: int = 1
    replay: str = ""
    replay_speed: float = 1.0
    stream_units: str = ""
    amplitude_check: str = "refuse"
    interpolate_missing: int = 0
    marker_map: str = ""
    marker_offset_s: float = 0.0
    record_format: str = "xdf"
    quality_interval_s: float = 1.0
    mvnn_online: bool = False
    mvnn_warmup_epochs: int = 50
    mvnn_freeze: int = 0
    mvnn_update_every: int = 1
    accumulate: str = "epochs"

    def validate(self) -> None:
        """Check the fields (no file access); raise :class:`~hmavd.errors.UserError` on the first bad one."""
        _positive(self, "scope_sfreq", "e.g. 100")
        _positive(self, "replay_speed", "1 = real time, 10 = ten times faster")
        _positive(self, "buffer_s", "seconds of samples kept, e.g. 60")
        if self.top_k < 1:
            raise UserError(f"top_k: {self.top_k} must be >= 1 (e.g. 5)")
        for name, hint in (("stride_s", "0 = one epoch per marker"), ("poll_interval_s", "e.g. 0.05"),
                           ("compute_threads", "0 = the libraries' defaults"),
                           ("expected_sfreq", "0 = any rate that yields the model's epoch length")):  # fmt: skip
            if getattr(self, name) < 0:
                raise UserError(f"{name}: {getattr(self, name)} must be >= 0 ({hint})")
        if self.record_format not in ("xdf", "folder"):
            raise UserError(f"record_format: {self.record_format!r} is not a format; use xdf (default) or folder")
        from .accumulate import validate_accumulate
        from .online_config import validate_online
        from .online_mvnn import validate_mvnn

        validate_online(self)
        validate_mvnn(self)
        validate_accumulate(self)


def _positive(cfg: LiveConfig, name: str, hint: str) -> None:
    value = getattr(cfg, name)
    if not value > 0:
        raise UserError(f"{name}: {value} must be > 0 ({hint})")


def live_config_from_values(values: Mapping[str, Any], where: str = "live settings") -> LiveConfig:
    """``LiveConfig(**values)``; a key it does not define is refused in one line naming ``where``."""
    names = {f.name for f in dataclasses.fields(LiveConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)}; the keys are LiveConfig's fields (configs/live.yaml)"
        )
    return LiveConfig(**dict(values))
