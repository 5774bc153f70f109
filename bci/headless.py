"""``hmavd-live --headless``: the live pipeline without a window.

``gui/cli.py`` owns the ``hmavd-live`` entry point and hands ``--headless`` command lines to
:func:`headless_main` (no Qt is imported on this path), which resolves the :class:`LiveConfig` like the
other commands (``--config``, the flags, ``key=value`` overrides: :func:`hmavd.config.load_command_config`);
:func:`run_headless` runs the session.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hmavd.config import add_config_arguments, config_yaml, load_command_config, save_config
from hmavd.errors import UserError, setup_logging
from hmavd.io import atomic_write_json

from .engine import LiveEngine
from .live_config import LiveConfig
from .messages import EngineMessage
from .quality import quality_changes, quality_summary
from .recorder import XDF_NAME

log = logging.getLogger(__name__)

__all__ = ["headless_main", "run_headless"]

#: LiveConfig field -> the help of its command-line flag (``--eeg-stream`` …)
_FLAGS = {
    "eeg_stream": "name of the EEG LSL stream (empty: first stream of type EEG)",
    "marker_stream": "name of the marker LSL stream (empty: first stream of type Markers)",
    "checkpoint": "checkpoint (.safetensors or run folder) written by hmavd-train",
    "features": "feature cache folder for the templates (default: the one the checkpoint was trained with)",
    "whitening": "mvnn.npz of the prepared subject (default: the training subject's; 'none' = no MVNN)",
    "templates": "template kind: image, text or fused",
    "image_source": "image templates: test-images or centers",
    "device": "auto, cpu or cuda",
    "record_dir": "folder for session recordings",
    "replay": "decode this recording (or session folder) in process instead of LSL streams; see replay_speed=",
}


def _parser() -> argparse.ArgumentParser:
    """The live-session flags (``--eeg-stream`` …), ``--duration``, ``--out-dir`` and the config arguments."""
    p = argparse.ArgumentParser(prog="hmavd-live --headless", description="The live pipeline without a window.")
    p.add_argument("--headless", action="store_true", help="run without a window")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    for name, help_ in _FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=help_)
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--out-dir", default=None, help="headless output folder (recording + predictions.csv)")
    add_config_arguments(p, default="live")
    return p


def run_headless(
    cfg: LiveConfig,
    duration_s: float | None = None,
    out_dir: str | Path | None = None,
    engine: LiveEngine | None = None,
    on_message: Callable[[EngineMessage], None] | None = None,
) -> dict[str, Any]:
    """Connect, decode live, log predictions and running accuracy, record the session.

    Parameters
    ----------
    cfg : LiveConfig
    duration_s : float, optional
        Stop after this many seconds (``None``: until Ctrl-C, or the end of a ``cfg.replay``).
    out_dir : path, optional
        Folder for the session recording (``session.xdf`` and ``predictions.csv``; with
        ``record_format=folder`` ``eeg.f32``, ``markers.csv``, ``predictions.csv``, ``meta.json``), the
        resolved config and ``summary.json`` (default: a new folder under ``cfg.record_dir`` or
        ``recordings/``).
    engine : LiveEngine, optional
        A prepared engine (tests).
    on_message : callable, optional
        Called with every message.

    Returns
    -------
    dict
        The last status message plus ``n_predictions``, ``out_dir`` and ``errors``.
    """
    out = Path(out_dir) if out_dir else Path(cfg.record_dir or "recordings") / time.strftime("live-%Y%m%d-%H%M%S")
    if (out / "meta.json").exists() or (out / XDF_NAME).exists():
        raise UserError(f"--out-dir: {out} already holds a recording; choose a new folder")
    engine = engine or LiveEngine(cfg)
    engine.connect()
    errors: list[str] = []
    quality: list[dict] = []  # the last quality message logged
    t_end = None if duration_s is None else time.monotonic() + duration_s
    try:
        engine.record_start(str(out), from_start=True)
        save_config(cfg, out / "live_config.yaml")
        while (t_end is None or time.monotonic() < t_end) and not engine.finished:
            engine.acquire(cfg.poll_interval_s)
            for msg in engine.get_data():
                _log_message(msg, errors, quality)
                if on_message is not None:
                    on_message(msg)
    except KeyboardInterrupt:
        log.info("interrupted; stopping")
    finally:
        status = engine.status()
        engine.disconnect()
        _save_session_estimates(engine, out)
    summary = {
        **status,
        "n_predictions": engine.n_predictions,
        "out_dir": str(out),
        "errors": errors,
        "quality": quality_summary(quality[-1]) if quality else None,
    }
    summary.pop("type", None)
    atomic_write_json(out / "summary.json", summary)
    keys = ("n_predictions", "running_top1", "running_top5", "latency_p99_ms", "rejected")
    log.info("summary: %s", json.dumps({k: summary[k] for k in keys}))
    return summary


def _save_session_estimates(engine: LiveEngine, out: Path) -> None:
    """Beside the recording: the session's own MVNN estimate and the accuracy against repetitions averaged."""
    if engine.online_mvnn is not None:
        engine.online_mvnn.save(out / "mvnn_online.npz")
    if engine.accumulator is not None:
        from .accumulate import curve_csv

        rows = engine.accumulator.rows()
        (out / "accumulation.csv").write_text(curve_csv(rows))
        atomic_write_json(out / "accumulation.json", {"mode": engine.accumulator.mode, "curve": rows})


_STATUS_LOG_EVERY_S = 5.0
_last_status_log = [0.0]


def _log_message(msg: EngineMessage, errors: list[str], quality: list[dict] | None = None) -> None:
    kind = msg["type"]
    if kind == "quality":
        if quality is not None and quality_changes(quality[-1] if quality else None, msg):
            (log.warning if msg.get("bad") else log.info)("signal quality: %s", quality_summary(msg))
            quality[:] = [msg]
        return
    if kind == "status":
        now = time.monotonic()
        if now - _last_status_log[0] < _STATUS_LOG_EVERY_S:
            return
        _last_status_log[0] = now
    if kind == "prediction":
        top = ", ".join(f"{c} {s:.2f}" for c, s in msg["topk"][:5])
        mark = "" if msg["top1_correct"] is None else (" ✓" if msg["top1_correct"] else " ✗")
        log.info("%8.3f s %s → %s (%.1f ms)%s", msg["onset_s"], msg["marker"], top, msg["latency_ms"], mark)
    elif kind == "status" and msg["running_top1"] is not None:
        top1, top5, n, p99 = msg["running_top1"], msg["running_top5"], msg["n_epochs"], msg["latency_p99_ms"]
        log.info("running top-1 %.3f top-5 %.3f over %d epochs; latency p99 %.1f ms", top1, top5, n, p99)
    elif kind == "error":
        errors.append(msg["message"])
        log.error("%s", msg["message"])


def headless_main(argv: Sequence[str]) -> int:
    """``hmavd-live --headless …``: parse, run :func:`run_headless`, print one summary line; the exit status.

    0 on success, 1 when the session only produced errors (no prediction); a bad argument raises
    :class:`UserError` (exit status 2 under :func:`hmavd.errors.run_command`).
    """
    args = _parser().parse_intermixed_args(list(argv))
    setup_logging(args.verbose)
    cfg = load_command_config(LiveConfig, args, _FLAGS)
    if args.print_config:
        print(config_yaml(cfg), end="")  # the command's output
        return 0
    summary = run_headless(cfg, duration_s=args.duration, out_dir=args.out_dir)
    top1, top5 = summary.get("running_top1"), summary.get("running_top5")
    acc = "" if top1 is None else f", running top-1 {100 * top1:.1f} % / top-5 {100 * top5:.1f} %"
    print(f"{summary['n_predictions']} predictions{acc}; recording and predictions.csv in {summary['out_dir']}")
    for err in summary.get("errors") or []:
        print(f"error: {err}")
    return 1 if summary.get("errors") and not summary["n_predictions"] else 0
