"""The live engine: source → markers → online epochs → decoder → messages (no Qt).

:class:`LiveEngine` runs in the caller's thread (plus the source's acquisition thread);
:class:`bci.engine_process.EngineProcess` runs it in a separate ``spawn`` process and passes its messages
and commands (:mod:`bci.messages`) through queues, so a GUI in the parent never slows acquisition down
(docs/gui.md, "Design").

At :meth:`LiveEngine.connect` the checkpoint and the settings are resolved once into a
:class:`bci.session_plan.SessionPlan` (preset, units, channels, whitening, templates) and the opened
stream into a :class:`bci.session_plan.StreamPlan`; the engine only reads them afterwards. Running
statistics live in :class:`bci.engine_stats.RunningStats`, the recording in
:class:`bci.recording_drain.RecordingDrain`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from hmavd.errors import UserError
from hmavd.preprocessing.presets import PreprocessPreset

from .decoder import Decoder
from .engine_stats import RunningStats, score_prediction, status_message
from .epocher import OnlineEpocher, RejectConfig
from .live_config import LiveConfig
from .markers import InMemoryMarkers, LSLMarkerSource, Marker, build_marker_map, take_markers
from .messages import (
    Command,
    ConnectedMessage,
    EngineMessage,
    StatusMessage,
    error_message,
    prediction_message,
)
from .quality import quality_message
from .recorder import open_recorder
from .recording_drain import RecordingDrain
from .scope_feed import ScopeFeed
from .session_plan import (
    SessionPlan,
    SessionWhitening,
    StreamPlan,
    load_session_whitening,
    resolve_session,
    resolve_stream,
    resolve_whitening,
)
from .sources import EEGSource, LSLSource
from .stream_setup import AmplitudeCheck

log = logging.getLogger(__name__)

__all__ = ["LiveEngine"]


def limit_compute_threads(n: int) -> None:
    """Cap torch's intra-op threads and numpy's BLAS threads of this process at ``n``."""
    import torch

    torch.set_num_threads(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)


class LiveEngine:
    """One live session in the calling thread; messages collect in an outbox (:meth:`get_data`).

    Parameters
    ----------
    cfg : LiveConfig
    source, markers, decoder : optional
        Injected components (tests); built from ``cfg`` when ``None``.
    preset : PreprocessPreset, optional
        Overrides ``cfg.preset`` and the checkpoint's.
    whitening : ndarray (C, C), optional
        Overrides ``cfg.whitening``.
    now : callable
        Clock (s) of the timers and the epocher's marker timeout.
    """

    def __init__(
        self,
        cfg: LiveConfig,
        source: EEGSource | None = None,
        markers: Any = None,
        decoder: Decoder | None = None,
        preset: PreprocessPreset | None = None,
        whitening: np.ndarray | None = None,
        now=time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.source, self.markers, self.decoder = source, markers, decoder
        self.now = now
        self._given_preset, self._given_whitening = preset, whitening
        self.preset, self.whitening = preset, whitening
        self.info: dict = {}
        self.outbox: deque[EngineMessage] = deque()
        self.epoch_log: list | None = None  # set to a list to keep every decoded Epoch (tests)
        self._reset()

    def _reset(self) -> None:
        """Forget everything a connection set up (the injected components and the loaded decoder stay)."""
        self.session: SessionPlan | None = None
        self.stream: StreamPlan | None = None
        self.plan = None  # bci.stream_setup.InputPlan of the stream (self.stream.input)
        self.amplitude: AmplitudeCheck | None = None
        self.epoch_preset: PreprocessPreset | None = None  # the preset on the model's time axis at the stream rate
        self.epocher: OnlineEpocher | None = None
        self.marker_map = None  # bci.markers.MarkerMap
        self.recorder: RecordingDrain | None = None
        self.stats = RunningStats()
        self.online_mvnn = None  # bci.online_mvnn.OnlineMVNN when cfg.mvnn_online
        self.session_whitening: SessionWhitening | None = None  # the mvnn.npz read at connect, its channels
        self.accumulator = None  # bci.accumulate.RepetitionAccumulator unless cfg.accumulate == "off"
        self.t_session_s = float("-inf")  # markers stamped before this were sent before the session
        self.stale_markers = 0
        self.connected = False
        self.scope = ScopeFeed(self.cfg.scope_sfreq)
        self._seen = 0
        self._t_scope = self._t_status = 0.0
        self._t_quality = float("-inf")
        self._next_stride: int | None = None

    @property
    def n_predictions(self) -> int:
        return self.stats.n_predictions

    @property
    def model_units(self) -> str:
        return self.session.units if self.session is not None else "V"

    @property
    def whitening_path(self) -> str:
        """The ``mvnn.npz`` used ("" when a matrix was handed over or there is none)."""
        return self.session.whitening.path if self.session is not None else ""

    # -- connect ---------------------------------------------------------------------------------
    def connect(self) -> ConnectedMessage:
        """Load the model, resolve the session, open the streams and check them; returns the connected message."""
        self._reset()
        cfg = self.cfg
        self._load_decoder()
        dec = self.decoder
        self.session = plan = resolve_session(
            cfg, self.info, dec.ch_names, self._given_preset, self._given_whitening is not None
        )
        self.preset = plan.preset
        if self._given_whitening is None and dec.ch_names:  # before the streams: bad files fail fast
            self.session_whitening = resolve_whitening(plan, dec.ch_names, cfg.mvnn_online)
            self.whitening = None if self.session_whitening is None else self.session_whitening.matrix
        if dec.n_chans and dec.n_times:  # warm up: the first call is slow (allocations, kernels)
            dec.decode(np.zeros((1, dec.n_chans, dec.n_times), dtype=np.float32))
        self._open_source()
        desc = self.source.connect()
        try:
            self.stream = resolve_stream(plan, desc, cfg, dec.n_chans, dec.n_times, self.session_whitening)
            self.plan, self.epoch_preset = self.stream.input, self.stream.epoch_preset
            if self._given_whitening is None and not dec.ch_names:
                self.whitening = load_session_whitening(plan, [desc.ch_names[i] for i in self.stream.picks])
            self.amplitude = AmplitudeCheck(self.plan, self.whitening, plan.units, cfg.amplitude_check)
            if self.markers is None:
                self.markers = (
                    InMemoryMarkers()
                    if plan.markers == "stride"
                    else LSLMarkerSource(cfg.marker_stream, cfg.resolve_timeout_s)
                )
            self.markers.connect()
        except BaseException:
            self.source.disconnect()
            raise
        self._build_pipeline()
        self.connected = True
        picks = self.stream.picks
        msg = ConnectedMessage(
            type="connected",
            ch_names=list(desc.ch_names),
            sfreq=desc.sfreq,
            n_chans=desc.n_chans,
            concepts=list(dec.concepts),
            model_ch_names=list(dec.ch_names or [desc.ch_names[i] for i in picks]),
            stream=desc.name,
            notes=list(self.plan.notes),
        )
        self.outbox.append(msg)
        if cfg.auto_record and cfg.record_dir:
            self.record_start("")
        return msg

    def _load_decoder(self) -> None:
        cfg = self.cfg
        if self.decoder is None:
            if not cfg.checkpoint:
                raise UserError("checkpoint: not set; give the run folder or .safetensors written by hmavd-train")
            self.decoder, self.info = Decoder.from_checkpoint(
                cfg.checkpoint, cfg.features, cfg.templates, cfg.image_source, cfg.device, cfg.top_k
            )
        if cfg.compute_threads > 0:
            limit_compute_threads(cfg.compute_threads)

    def _open_source(self) -> None:
        cfg = self.cfg
        if self.source is None and self.session.source == "replay":
            from .replay import RecordingSource, load_replay

            self.source = RecordingSource(
                load_replay(cfg.replay),
                replay_speed=cfg.replay_speed,
                poll_interval_s=cfg.poll_interval_s,
                buffer_s=cfg.buffer_s,
            )
            self.markers = self.markers or self.source.markers
        if self.source is None:
            self.source = LSLSource(
                cfg.eeg_stream,
                resolve_timeout_s=cfg.resolve_timeout_s,
                poll_interval_s=cfg.poll_interval_s,
                buffer_s=cfg.buffer_s,
            )

    def _build_pipeline(self) -> None:
        """Marker map, online MVNN, accumulator and epocher of a connected stream."""
        cfg, dec, inp = self.cfg, self.decoder, self.plan
        self.marker_map = build_marker_map(cfg, dec)
        if cfg.mvnn_online:  # epochs leave the epocher unwhitened; _decode whitens them with the running estimate
            from .online_mvnn import OnlineMVNN

            self.online_mvnn = OnlineMVNN.from_config(cfg, self.whitening)
        if cfg.accumulate != "off":
            from .accumulate import RepetitionAccumulator

            self.accumulator = RepetitionAccumulator(
                lambda x: dec.features(x).cpu().numpy(),
                dec.templates.cpu().numpy(),
                dec.concepts,
                cfg.accumulate,
                cfg.top_k,
            )
        linear = inp.scale is not None or inp.matrix is not None
        self.epocher = OnlineEpocher(
            self.source,
            self.epoch_preset,
            self.stream.picks,
            None if self.online_mvnn else self._epoch_whitening(),
            cfg.marker_timeout_s,
            RejectConfig(cfg.flat_ptp, cfg.clip_abs, cfg.clip_run),
            now=self.now,
            index_channel=self.stream.index_channel,
            input_map=inp.apply if linear else None,
        )
        self.t_session_s = max(self.source.t_connected_s, getattr(self.markers, "t_connected_s", float("-inf")))

    def _epoch_whitening(self) -> np.ndarray | None:
        """What the epocher whitens with: ``W[:, model rows]`` for a file over more channels than the model's."""
        sw = self.session_whitening
        return sw.epoch_matrix if sw is not None and sw.rows else self.whitening

    # -- running ---------------------------------------------------------------------------------
    def acquire(self, timeout_s: float | None = None) -> int:
        """Wait up to ``timeout_s`` for data, then epoch, decode, record; returns the number of predictions."""
        src = self.source
        if src.poll_interval_s is None:
            src.acquire()
        elif timeout_s:
            src.wait_for_data(self._seen, timeout_s)
        if src.error is not None:
            raise RuntimeError(f"acquisition failed: {src.error}")
        self._seen = src.n_written
        new, n_stale = take_markers(
            self.markers.pull(), self.marker_map, self.cfg.marker_offset_s, self.t_session_s, self.recorder, self.scope
        )
        self.stale_markers += n_stale
        if self.cfg.stride_s > 0:
            new += self._stride_markers()
        self.epocher.add_markers(new)
        epochs = self.epocher.poll() if self._amplitude_ok() else []
        n = self._decode(epochs) if epochs else 0
        if self.recorder is not None:
            self.recorder.drain()
        self._periodic_messages()
        return n

    def _periodic_messages(self) -> None:
        """Scope, status and quality messages when their intervals have passed (after decoding)."""
        cfg, t = self.cfg, self.now()
        if t - self._t_scope >= cfg.scope_interval_s:
            self._t_scope = t
            self.outbox.extend(m for m in [self.scope.message(self.source, self._t_first())] if m is not None)
        if t - self._t_status >= cfg.status_interval_s:
            self._t_status = t
            self.outbox.append(self.status())
        if 0 < cfg.quality_interval_s <= t - self._t_quality:  # after decoding: never delays an epoch
            self._t_quality = t
            self.outbox.extend(m for m in [quality_message(self.source, cfg.stream_units)] if m is not None)

    def _amplitude_ok(self) -> bool:
        """The unlabelled-units check (bci.stream_setup.AmplitudeCheck); its warning goes to the banner once."""
        amp = self.amplitude
        was_done = amp.done
        ok = amp.update(self.source, self.source.description.name)
        if amp.done and not was_done and amp.message:  # amplitude_check=warn: loud, but decoding goes on
            self.outbox.append(error_message(f"warning: {amp.message}"))
        return ok

    @property
    def finished(self) -> bool:
        """An in-process replay has delivered everything and no marker still waits for data."""
        return bool(getattr(self.source, "finished", False)) and self.epocher is not None and not self.epocher.pending

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
        t_first = self._t_first()
        raw = None
        if self.online_mvnn is not None:  # update the session's MVNN estimate, then whiten with it
            raw = np.stack([e.data for e in epochs])  # (B, C, T) preprocessed, not whitened
            self.online_mvnn.add(raw, epochs[-1].onset_s - t_first)
            for e, x in zip(epochs, self.online_mvnn.whiten(raw)):
                e.data = x
        results = self.decoder.decode(np.stack([e.data for e in epochs]))  # (B, C, T) -> B results
        done = time.perf_counter()
        if self.epoch_log is not None:
            self.epoch_log.extend(epochs)
        acc = [None] * len(epochs)  # after `done`: the single-trial latency does not include it
        if self.accumulator is not None:
            # with online MVNN each image's evidence is the mean of its unwhitened epochs, whitened with the
            # session's current estimate: repetitions seen during warm-up stop counting with the stale matrix
            rewhiten = {} if raw is None else {"raw": raw, "whitening": self.online_mvnn.whitening}
            concepts = [e.marker.concept for e in epochs]
            acc = self.accumulator.add(concepts, np.stack([e.data for e in epochs]), **rewhiten)
        for ep, res, acc_res in zip(epochs, results, acc):
            lat = (done - ep.last_arrival_s) * 1e3
            true = ep.marker.concept
            top1, top5 = score_prediction(true, res.concepts, self.decoder.concepts)
            self.stats.add(lat, top1, top5)
            msg = prediction_message(
                ep.onset_s - t_first,
                ep.onset_index,
                ep.marker.label,
                true,
                res.topk(),
                lat,
                (ep.ready_s - ep.last_arrival_s) * 1e3,
                top1,
                top5,
                ep.last_arrival_s,
                ep.extra,
                acc_res,
            )
            self.outbox.append(msg)
            if self.recorder is not None:
                self.recorder.write_prediction(msg, ep.onset_s)
        return len(results)

    def _t_first(self) -> float:
        segs = self.source.clock.segments
        return segs[0].time_of(0) if segs else 0.0

    def status(self) -> StatusMessage:
        """The ``"status"`` message now (:func:`bci.engine_stats.status_message`)."""
        return status_message(
            self.stats,
            clock=self.source.clock if self.source is not None else None,
            rejected=self.epocher.rejected if self.epocher else None,
            recording=self.recorder is not None,
            unknown_markers=sum(self.marker_map.unknown.values()) if self.marker_map else 0,
            messages=self.messages(),
            mvnn=self.online_mvnn.report() if self.online_mvnn is not None else None,
            accumulated=self.accumulator.report() if self.accumulator is not None else None,
        )

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
        first = self.source.buffer.first_available if from_start else self.source.n_written
        rec = open_recorder(self.cfg, path, self.source, first, self._recording_meta(), self.markers)
        self.recorder = RecordingDrain(rec, self.source, first)
        log.info("recording to %s", path)
        return path

    def _recording_meta(self) -> dict[str, Any]:
        """What the session record says about the model and the settings."""
        cfg, plan, desc = self.cfg, self.session, self.source.description
        whitening = self.whitening_path or (plan.whitening.kind if plan and plan.whitening.kind == "none" else "")
        return {
            "stream": desc.name,
            "checkpoint": cfg.checkpoint,
            "features": plan.templates.features_path if plan else "",
            "whitening": whitening,
            "preset": self.preset.name if self.preset else "",
            "ch_units": list(desc.ch_units),
            "stream_units": cfg.stream_units,
            "marker_offset_s": cfg.marker_offset_s,
            "mvnn_online": cfg.mvnn_online,
            "mvnn_warmup_epochs": cfg.mvnn_warmup_epochs,
            "mvnn_freeze": cfg.mvnn_freeze,
        }

    def record_stop(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    def handle(self, cmd: Command | dict) -> bool:
        """Apply a command (:mod:`bci.messages`); returns False for ``stop``."""
        kind = cmd.get("cmd")
        if kind == "stop":
            return False
        if kind == "record_start":
            self.record_start(str(cmd.get("path") or ""))
        elif kind == "record_stop":
            self.record_stop()
        else:
            self.outbox.append(error_message(f"unknown command {kind!r}"))
        return True

    def get_data(self, max_items: int = 1000) -> list[EngineMessage]:
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
