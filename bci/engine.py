"""The live engine: source → markers → online epochs → decoder → messages (no Qt).

:class:`LiveEngine` runs in the caller's thread (plus the source's acquisition thread);
:class:`bci.engine_process.EngineProcess` runs it in a separate ``spawn`` process and exchanges these
plain-dict messages through queues, so a GUI in the parent never slows acquisition down (docs/gui.md,
"Design").

Messages (picklable dicts; numpy arrays allowed)::

    {"type": "connected", "ch_names", "sfreq", "n_chans", "concepts", "model_ch_names", "stream", "notes"}
    {"type": "scope", "data": (C, n) float32 at ~scope_sfreq, "t0_s", "sfreq", "markers": [(t_s, label)]}
    {"type": "prediction", "onset_s", "onset_index", "marker", "true_concept", "topk": [(concept, score)],
     "latency_ms", "epoch_latency_ms", "top1_correct", "top5_correct", "last_arrival_s", ["sample_index"],
     ["acc_n", "acc_topk", "acc_top1_correct", "acc_top5_correct"]}
    {"type": "status", "sfreq_measured", "latency_p50_ms", "latency_p99_ms", "dropped_samples", "n_epochs",
     "rejected": {reason: count}, "running_top1", "running_top5", "recording", "unknown_markers", "messages",
     "mvnn", "accumulated"}
    {"type": "error", "message"}          {"type": "stopped"}

Scope and marker times ``t_s`` are seconds since the stream's first received sample; ``latency_ms`` /
``epoch_latency_ms`` run from the arrival of the epoch's last sample to the prediction / the
preprocessed epoch; ``sample_index`` (the stream's ``sample_index`` channel at the onset) only when
the stream has that channel; ``acc_*`` (the image's accumulated top-k over its repetitions,
:mod:`bci.accumulate`) unless ``accumulate=off`` and the image has a template; ``mvnn``
(:meth:`bci.online_mvnn.OnlineMVNN.report`, ``None`` without ``mvnn_online``) and ``accumulated``
(:meth:`bci.accumulate.RepetitionAccumulator.report`).
Commands (:meth:`bci.engine_process.EngineProcess.send`): ``{"cmd": "stop"}``, ``{"cmd": "record_start", "path": str}``
(``path`` empty: a new folder under ``record_dir``), ``{"cmd": "record_stop"}``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hmavd.errors import UserError
from hmavd.preprocessing.presets import PRESETS, PreprocessPreset, get_preset
from hmavd.preprocessing.transforms import epoch_window_samples, preprocess_epoch, preprocessed_times

from .decoder import Decoder, checkpoint_whitening
from .epocher import OnlineEpocher, RejectConfig, load_whitening
from .markers import InMemoryMarkers, LSLMarkerSource, Marker, build_marker_map, take_markers
from .montage import match_montage
from .quality import quality_message
from .recorder import SessionRecorder, open_recorder
from .sources import EEGSource, LSLSource
from .stream_setup import AmplitudeCheck, model_time_axis, plan_input

log = logging.getLogger(__name__)

__all__ = ["LiveConfig", "LiveEngine", "match_channels", "preset_for_checkpoint"]


@dataclass(frozen=True)
class LiveConfig:
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
    ``replay`` (a recording or session folder) replaces both LSL streams by an in-process replay of
    that file at ``replay_speed`` × real time (:class:`bci.replay.RecordingSource`).
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
    poll_timeout_s: float = 0.05
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
        if self.scope_sfreq <= 0:
            raise UserError(f"scope_sfreq: {self.scope_sfreq} must be > 0 (e.g. 100)")
        if self.top_k < 1:
            raise UserError(f"top_k: {self.top_k} must be >= 1 (e.g. 5)")
        if self.stride_s < 0:
            raise UserError(f"stride_s: {self.stride_s} must be >= 0 (0 = one epoch per marker)")
        if self.replay_speed <= 0:
            raise UserError(f"replay_speed: {self.replay_speed} must be > 0 (1 = real time, 10 = ten times faster)")
        if self.compute_threads < 0:
            raise UserError(f"compute_threads: {self.compute_threads} must be >= 0 (0 = the libraries' defaults)")
        from .online_config import validate_online

        validate_online(self)
        from .online_mvnn import validate_mvnn

        validate_mvnn(self)
        from .accumulate import validate_accumulate

        validate_accumulate(self)
        if self.record_format not in ("xdf", "folder"):
            raise UserError(f"record_format: {self.record_format!r} is not a format; use xdf (default) or folder")


def match_channels(stream_names: tuple[str, ...], model_names: tuple[str, ...], stream: str) -> list[int]:
    """Indices of the model's channels in the stream (see :func:`bci.montage.match_montage`)."""
    return list(match_montage(stream_names, model_names, stream).picks)


def limit_compute_threads(n: int) -> None:
    """Cap torch's intra-op threads and numpy's BLAS threads of this process at ``n``."""
    import torch

    torch.set_num_threads(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)


def preset_for_checkpoint(info: dict) -> PreprocessPreset:
    """The preprocessing preset a checkpoint was trained with.

    Its recorded ``preset`` name when present; else the packaged preset whose output rate and time
    axis equal the checkpoint's ``sfreq`` and ``times`` (NICE: 250 Hz, 0 … 0.996 s; Gifford:
    100 Hz, −0.2 … 0.79 s); else ``nice`` (logged).
    """
    if info.get("preset"):
        return get_preset(str(info["preset"]))
    times = np.asarray(info.get("times") or [], dtype=np.float64)
    sfreq = float(info.get("sfreq") or 0.0)
    for preset in PRESETS.values():
        ref = preprocessed_times(preset, 4 * preset.sfreq)
        if sfreq == preset.sfreq and len(ref) == len(times) and np.allclose(ref, times, atol=0.5 / preset.sfreq):
            return preset
    log.warning("the checkpoint's time axis (%d samples at %g Hz) matches no packaged preset; using 'nice' "
                "(set preset=<name> if it was prepared otherwise)", len(times), sfreq)  # fmt: skip
    return get_preset("nice")


class LiveEngine:
    """One live session in the calling thread; messages collect in an outbox (:meth:`get_data`).

    Parameters
    ----------
    cfg : LiveConfig
    source, markers, decoder : optional
        Injected components (tests); built from ``cfg`` when ``None``.
    preset : PreprocessPreset, optional
    whitening : ndarray (C, C), optional
        Overrides ``cfg.whitening``.
    """

    def __init__(
        self, cfg: LiveConfig, source: EEGSource | None = None, markers: Any = None, decoder: Decoder | None = None,
        preset: PreprocessPreset | None = None, whitening: np.ndarray | None = None, now=time.monotonic,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.source, self.markers, self.decoder = source, markers, decoder
        self.preset, self.whitening, self.now = preset, whitening, now
        self.info: dict = {}
        self.outbox: deque[dict] = deque()
        self.epocher: OnlineEpocher | None = None
        self.marker_map = None  # bci.markers.MarkerMap
        self.recorder: SessionRecorder | None = None
        self._rec_next = 0
        self.latencies_ms: deque[float] = deque(maxlen=1000)
        self.n_predictions = 0
        self.hits = Counter()
        self._scope_next = 0
        self._scope_markers: list[tuple[float, str]] = []
        self._t_scope = self._t_status = 0.0
        self._next_stride = None
        self.connected = False
        self.epoch_log: list | None = None  # set to a list to keep every decoded Epoch (tests)
        self.whitening_path = ""  # the mvnn.npz used ("" when injected or none)
        self.plan = self.amplitude = None  # bci.stream_setup.InputPlan / AmplitudeCheck, set at connect
        self.model_units = "V"
        self.epoch_preset = None  # the preset with its crop on the model's time axis at the stream rate
        self.t_session_s = float("-inf")  # markers stamped before this were sent before the session
        self.stale_markers = 0
        self.online_mvnn = None  # bci.online_mvnn.OnlineMVNN when cfg.mvnn_online
        self.accumulator = None  # bci.accumulate.RepetitionAccumulator unless cfg.accumulate == "off"

    # -- connect ---------------------------------------------------------------------------------
    def connect(self) -> dict:
        """Load the model, open the streams and check them against the model; returns the connected message."""
        cfg = self.cfg
        if self.decoder is None:
            if not cfg.checkpoint:
                raise UserError("checkpoint: not set; give the run folder or .safetensors written by hmavd-train")
            self.decoder, self.info = Decoder.from_checkpoint(
                cfg.checkpoint, cfg.features, cfg.templates, cfg.image_source, cfg.device, cfg.top_k
            )
        if cfg.compute_threads > 0:
            limit_compute_threads(cfg.compute_threads)
        if self.preset is None:
            self.preset = get_preset(cfg.preset) if cfg.preset else preset_for_checkpoint(self.info)
        need_whitening = self.whitening is None
        if need_whitening and self.decoder.ch_names:  # before the streams: bad files fail fast
            self.whitening, need_whitening = self._load_whitening(list(self.decoder.ch_names)), False
        if self.decoder.n_chans and self.decoder.n_times:  # warm up: the first call is slow (allocations, kernels)
            self.decoder.decode(np.zeros((1, self.decoder.n_chans, self.decoder.n_times), dtype=np.float32))
        if self.source is None and cfg.replay:
            from .replay import RecordingSource, load_replay

            self.source = RecordingSource(load_replay(cfg.replay), speed=cfg.replay_speed,
                                          poll_interval=cfg.poll_timeout_s, buffer_s=cfg.buffer_s)  # fmt: skip
            self.markers = self.markers or self.source.markers
        if self.source is None:
            self.source = LSLSource(cfg.eeg_stream, resolve_timeout_s=cfg.resolve_timeout_s,
                                    poll_interval=cfg.poll_timeout_s, buffer_s=cfg.buffer_s)  # fmt: skip
        desc = self.source.connect()
        try:
            picks = self._check_stream(desc)
            if need_whitening:
                self.whitening = self._load_whitening([desc.ch_names[i] for i in picks])
            self.amplitude = AmplitudeCheck(self.plan, self.whitening, self.model_units, cfg.amplitude_check)
            if self.markers is None:
                self.markers = (
                    InMemoryMarkers() if cfg.stride_s > 0 and not cfg.marker_stream
                    else LSLMarkerSource(cfg.marker_stream, cfg.resolve_timeout_s)
                )  # fmt: skip
            self.markers.connect()
        except BaseException:
            self.source.disconnect()
            raise
        self.marker_map = build_marker_map(cfg, self.decoder)
        reject = RejectConfig(cfg.flat_ptp, cfg.clip_abs, cfg.clip_run)
        index_ch = desc.ch_names.index("sample_index") if "sample_index" in desc.ch_names else None
        linear = self.plan.scale is not None or self.plan.matrix is not None
        if cfg.mvnn_online:  # epochs leave the epocher unwhitened; _decode whitens them with the running estimate
            from .online_mvnn import OnlineMVNN

            self.online_mvnn = OnlineMVNN.from_config(cfg, self.whitening)
        if cfg.accumulate != "off":
            from .accumulate import RepetitionAccumulator

            dec = self.decoder
            self.accumulator = RepetitionAccumulator(lambda x: dec.features(x).cpu().numpy(),
                                                     dec.templates.cpu().numpy(), dec.concepts, cfg.accumulate,
                                                     cfg.top_k)  # fmt: skip
        self.epocher = OnlineEpocher(self.source, self.epoch_preset or self.preset, picks,
                                     None if self.online_mvnn else self.whitening,
                                     cfg.marker_timeout_s, reject, now=self.now, index_channel=index_ch,
                                     input_map=self.plan.apply if linear else None)  # fmt: skip
        self.t_session_s = max(self.source.t_connected_s, getattr(self.markers, "t_connected_s", float("-inf")))
        self.connected = True
        msg = {
            "type": "connected", "ch_names": list(desc.ch_names), "sfreq": desc.sfreq, "n_chans": desc.n_chans,
            "concepts": list(self.decoder.concepts), "model_ch_names": list(self.decoder.ch_names or
            [desc.ch_names[i] for i in picks]), "stream": desc.name, "notes": list(self.plan.notes),
        }  # fmt: skip
        self.outbox.append(msg)
        if cfg.auto_record and cfg.record_dir:
            self.record_start("")
        return msg

    def _load_whitening(self, ch_names: list[str]) -> np.ndarray | None:
        """The MVNN matrix: ``cfg.whitening``, else the training subject's ``mvnn.npz`` (``none``: no whitening)."""
        cfg = self.cfg
        path = cfg.whitening
        self.whitening_path = path
        if path.lower() == "none":
            return None
        if not path:
            recorded, found = checkpoint_whitening(self.info)
            if not recorded:
                log.warning("no whitening given and the checkpoint names no training subject: epochs are not "
                            "MVNN-whitened (pass whitening=<mvnn.npz>, or whitening=none to silence this)")  # fmt: skip
                return None
            if found is None:
                raise UserError(
                    f"whitening: not set, and the training subject's {recorded!r} was not found; pass "
                    "--whitening <prepared subject>/mvnn.npz (or whitening=none for a model trained without MVNN)"
                )
            path = self.whitening_path = str(found)
            log.info("whitening from the training subject's %s", path)
        sess = None if cfg.whitening_session < 0 else cfg.whitening_session
        return load_whitening(path, len(ch_names), sess, ch_names=ch_names)

    def _check_stream(self, desc) -> list[int]:
        dec, preset, cfg = self.decoder, self.preset, self.cfg
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
        self.model_units = str(self.info.get("units") or "V")  # checkpoints without a record: volts
        self.plan = plan_input(desc, dec.ch_names, self.model_units, cfg.stream_units, cfg.interpolate_missing)
        picks = self.plan.picks
        n_model = len(dec.ch_names) if dec.ch_names else len(picks)
        if dec.n_chans and n_model != dec.n_chans:
            raise UserError(
                f"eeg_stream: {desc.name!r} has {desc.n_chans} channels, the model needs {dec.n_chans}; "
                "stream the channels the model was trained on"
            )
        _, n_in = epoch_window_samples(preset.tmin_s, preset.tmax_s, desc.sfreq)
        n_out = preprocess_epoch(np.zeros((1, n_in)), desc.sfreq, preset).shape[-1]
        self.epoch_preset = preset
        if dec.n_times and n_out != dec.n_times:
            self.epoch_preset = model_time_axis(preset, desc.sfreq, self.info, dec.n_times, self.plan.notes)
        if self.epoch_preset is None:
            raise UserError(
                f"eeg_stream: {desc.name!r} at {desc.sfreq:g} Hz gives {n_out} samples per epoch after preset "
                f"{preset.name!r}, the model needs {dec.n_times}; use the rate/preset the model was trained with"
            )
        return picks

    # -- running ---------------------------------------------------------------------------------
    def acquire(self, timeout_s: float | None = None) -> int:
        """Wait up to ``timeout_s`` for data, then epoch, decode, record; returns the number of predictions."""
        src = self.source
        if src.poll_interval is None:
            src.acquire()
        elif timeout_s:
            src.wait_for_data(self._seen, timeout_s)
        if src.error is not None:
            raise RuntimeError(f"acquisition failed: {src.error}")
        self._seen = src.n_written
        new = self._take_markers()
        if self.cfg.stride_s > 0:
            new += self._stride_markers()
        self.epocher.add_markers(new)
        epochs = self.epocher.poll() if self._amplitude_ok() else []
        n = self._decode(epochs) if epochs else 0
        self._record()
        t = self.now()
        if t - self._t_scope >= self.cfg.scope_interval_s:
            self._t_scope = t
            self._scope()
        if t - self._t_status >= self.cfg.status_interval_s:
            self._t_status = t
            self.outbox.append(self.status())
        if 0 < self.cfg.quality_interval_s <= t - self._t_quality:  # after decoding: never delays an epoch
            self._t_quality = t
            self.outbox.extend(m for m in [quality_message(self.source, self.cfg.stream_units)] if m is not None)
        return n

    _seen = 0

    def _amplitude_ok(self) -> bool:
        """The unlabelled-units check (bci.stream_setup.AmplitudeCheck); its warning goes to the banner once."""
        amp = self.amplitude
        was_done = amp.done
        ok = amp.update(self.source, self.source.description.name)
        if amp.done and not was_done and amp.message:  # amplitude_check=warn: loud, but decoding goes on
            self.outbox.append({"type": "error", "message": f"warning: {amp.message}"})
        return ok

    _t_quality = float("-inf")

    @property
    def finished(self) -> bool:
        """An in-process replay has delivered everything and no marker still waits for data."""
        return bool(getattr(self.source, "finished", False)) and self.epocher is not None and not self.epocher.pending

    def _take_markers(self) -> list[Marker]:
        return take_markers(self, self.markers.pull())

    def _stride_markers(self) -> list[Marker]:
        clock, sfreq = self.source.clock, self.source.description.sfreq
        step = max(1, int(round(self.cfg.stride_s * sfreq)))
        if self._next_stride is None:
            self._next_stride = -self.epocher.first_offset
        out = []
        while self._next_stride < self.source.n_written:
            i = self._next_stride
            out.append(Marker(clock.time_of(i), "stride", f"{i / sfreq:.2f} s", None))
            self._next_stride += step
        return out

    def _decode(self, epochs) -> int:
        if self.online_mvnn is not None:  # update the session's MVNN estimate, then whiten with it
            raw = np.stack([e.data for e in epochs])  # (B, C, T) preprocessed, not whitened
            self.online_mvnn.add(raw, epochs[-1].onset_s - self._t_first())
            for e, x in zip(epochs, self.online_mvnn.whiten(raw)):
                e.data = x
        results = self.decoder.decode(np.stack([e.data for e in epochs]))  # (B, C, T) -> B results
        done = time.perf_counter()
        if self.epoch_log is not None:
            self.epoch_log.extend(epochs)
        acc = [None] * len(epochs)  # after `done`: the single-trial latency does not include it
        if self.accumulator is not None:
            acc = self.accumulator.add([e.marker.concept for e in epochs], np.stack([e.data for e in epochs]))
        for ep, res, acc_res in zip(epochs, results, acc):
            lat = (done - ep.last_arrival_s) * 1e3
            self.latencies_ms.append(lat)
            true = ep.marker.concept
            top1 = top5 = None
            if true is not None and true in self.decoder.concepts:
                top1, top5 = res.concepts[0] == true, true in res.concepts[:5]
                self.hits["n"] += 1
                self.hits["top1"] += top1
                self.hits["top5"] += top5
            msg = {
                "type": "prediction", "onset_s": ep.onset_s - self._t_first(), "onset_index": ep.onset_index,
                "marker": ep.marker.label, "true_concept": true, "topk": res.topk(), "latency_ms": lat,
                "epoch_latency_ms": (ep.ready_s - ep.last_arrival_s) * 1e3, "top1_correct": top1,
                "top5_correct": top5, "last_arrival_s": ep.last_arrival_s, **ep.extra, **(acc_res or {}),
            }  # fmt: skip
            self.outbox.append(msg)
            if self.recorder is not None:
                self.recorder.write_prediction(msg, ep.onset_s)
        self.n_predictions += len(results)
        return len(results)

    def _t_first(self) -> float:
        segs = self.source.clock.segments
        return segs[0].time_of(0) if segs else 0.0

    def _scope(self) -> None:
        src = self.source
        sfreq = src.description.sfreq
        q = max(1, int(round(sfreq / self.cfg.scope_sfreq)))
        stop = src.n_written
        start = max(self._scope_next, stop - int(2 * sfreq), src.buffer.first_available)
        start = -(-start // q) * q  # align to the decimation grid
        if stop <= start:
            return
        data = src.get_data(start, stop)[:, ::q].astype(np.float32)  # (C, n)
        self._scope_next = start + data.shape[1] * q
        t_first = self._t_first()
        marks = [(t - t_first, label) for t, label in self._scope_markers]
        self._scope_markers = []
        self.outbox.append({"type": "scope", "data": data, "t0_s": start / sfreq, "sfreq": sfreq / q,
                            "markers": marks})  # fmt: skip

    def status(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else None
        n = self.hits["n"]
        rejected = dict(self.epocher.rejected) if self.epocher else {}
        return {
            "type": "status", "sfreq_measured": self.source.clock.measured_sfreq() if self.source.clock else 0.0,
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat is not None else float("nan"),
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat is not None else float("nan"),
            "dropped_samples": int(self.source.clock.gap_samples_estimate) if self.source.clock else 0,
            "n_epochs": self.n_predictions, "rejected": rejected,
            "running_top1": self.hits["top1"] / n if n else None, "running_top5": self.hits["top5"] / n if n else None,
            "recording": self.recorder is not None,
            "unknown_markers": int(sum(self.marker_map.unknown.values())) if self.marker_map else 0,
            "messages": self.messages(),
            "mvnn": self.online_mvnn.report() if self.online_mvnn is not None else None,
            "accumulated": self.accumulator.report() if self.accumulator is not None else None,
        }  # fmt: skip

    def messages(self) -> list[str]:
        """Connect-time notes (units, montage, interpolation) and the amplitude check's warning, if any."""
        out = list(self.plan.notes) if self.plan is not None else []
        if self.amplitude is not None and self.amplitude.message:
            out.insert(0, self.amplitude.message)
        if self.online_mvnn is not None:
            out.append(self.online_mvnn.message())
        return out

    # -- recording -------------------------------------------------------------------------------
    def record_start(self, path: str = "", from_start: bool = False) -> str:
        """Start recording into ``path`` (empty: a timestamped folder under ``record_dir``).

        The recording begins with the next sample received, or with ``from_start`` at the oldest
        sample still buffered (every sample since connect, unless the buffer wrapped).
        """
        if self.recorder is not None:
            self.record_stop()
        if not path:
            path = str(Path(self.cfg.record_dir or "recordings") / time.strftime("session-%Y%m%d-%H%M%S"))
        desc = self.source.description
        self._rec_next = self.source.buffer.first_available if from_start else self.source.n_written
        meta = {"stream": desc.name, "checkpoint": self.cfg.checkpoint, "features": self.info.get("features_path", ""),
                "whitening": self.whitening_path, "preset": self.preset.name if self.preset else "",
                "ch_units": list(desc.ch_units), "stream_units": self.cfg.stream_units,
                "marker_offset_s": self.cfg.marker_offset_s, "mvnn_online": self.cfg.mvnn_online,
                "mvnn_warmup_epochs": self.cfg.mvnn_warmup_epochs, "mvnn_freeze": self.cfg.mvnn_freeze}  # fmt: skip
        self.recorder = open_recorder(self.cfg, path, self.source, self._rec_next, meta, self.markers)
        log.info("recording to %s", path)
        return path

    def record_stop(self) -> None:
        if self.recorder is not None:
            self._record()
            self.recorder.maybe_flush(self.source.clock)
            self.recorder.close()
            self.recorder = None

    def _record(self) -> None:
        rec = self.recorder
        if rec is None:
            return
        stop = self.source.n_written
        first = max(self._rec_next, self.source.buffer.first_available)
        if stop > first:
            rec.write_eeg(self.source.get_data(first, stop), first)
            self._rec_next = stop
        rec.maybe_flush(self.source.clock)

    def handle(self, cmd: dict) -> bool:
        """Apply a command; returns False for ``stop``."""
        kind = cmd.get("cmd")
        if kind == "stop":
            return False
        if kind == "record_start":
            self.record_start(str(cmd.get("path") or ""))
        elif kind == "record_stop":
            self.record_stop()
        else:
            self.outbox.append({"type": "error", "message": f"unknown command {kind!r}"})
        return True

    def get_data(self, max_items: int = 1000) -> list[dict]:
        """Drain up to ``max_items`` messages from the outbox."""
        out = []
        while self.outbox and len(out) < max_items:
            out.append(self.outbox.popleft())
        return out

    def disconnect(self) -> None:
        self.record_stop()
        for part in (self.markers, self.source):
            if part is not None:
                try:
                    part.disconnect()
                except Exception:  # noqa: BLE001
                    log.exception("disconnect failed")
        self.connected = False
