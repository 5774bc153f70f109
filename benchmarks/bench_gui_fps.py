"""Frames/s of the ``hmavd-live`` window (scope + predictions) while decoding a live stream, offscreen.

Target (docs/gui.md): ≥ 30 frames/s while decoding 64 channels at 1000 Hz. The window replays a
recording over LSL (``hmavd-replay`` subprocess), the engine decodes it in its own process, and the
window polls and draws at ≤ 30 fps (``--fps 60`` raises the cap to show the headroom). Prints
frames/s, the frame-interval p50/p99, the GUI process's CPU time per frame, predictions/s received,
the engine's latency p50/p99, last sample → top-5 painted (when the engine's prediction messages
carry ``last_arrival_s``), and the CPU use of the GUI, engine and replay processes (% of one core,
from /proc)::

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui_fps.py              # the simulated subject
    python benchmarks/bench_gui_fps.py --duration 60 --recording R.fif --checkpoint C --features F ...

The simulated subject's recording has 63 EEG channels (+ stim/sample-index) at 1000 Hz; create it
and its model with ``hmavd-demo``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=30.0, help="seconds measured after the first prediction")
    p.add_argument("--data-dir", default="hmavd_data/sim")
    p.add_argument("--runs-dir", default="runs/demo")
    p.add_argument("--recording", default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--features", default=None)
    p.add_argument("--whitening", default=None)
    p.add_argument("--fps", type=float, default=30.0, help="the window's frame cap")
    p.add_argument("--timeout", type=float, default=90.0, help="max seconds to wait for the first prediction")
    return p


def _wait_first_prediction(app, win, timeout_s: float) -> str:
    """'' once a prediction arrived, else why not."""
    t_end = time.monotonic() + timeout_s
    while win.n_predictions == 0 and time.monotonic() < t_end:
        app.processEvents()
        time.sleep(0.005)
        if win.engine is None:
            return f"engine stopped: {win.banner.messages[:1]}"
    return "" if win.n_predictions else "no prediction arrived"


def _measure(app, win, duration_s: float) -> dict:
    """Run the event loop for ``duration_s`` and collect frame times, per-frame CPU and CPU of each process."""
    pids = _child_pids(win)
    f0, p0, c0, t0 = win.n_frames, win.n_predictions, time.process_time(), time.monotonic()
    k0 = {name: _cpu_s(pid) for name, pid in pids.items()}
    win.draw_times_s.clear()
    win.topk.draw_latencies_ms.clear()
    stamps: list[float] = []
    while time.monotonic() - t0 < duration_s:
        app.processEvents()
        time.sleep(0.002)
        stamps.extend(win.draw_times_s)
        win.draw_times_s.clear()
    wall = time.monotonic() - t0
    cpu = {"GUI": (time.process_time() - c0) / wall}
    for name, pid in pids.items():
        now = _cpu_s(pid)
        if k0[name] is not None and now is not None:
            cpu[name] = (now - k0[name]) / wall
    return {
        "wall": wall, "frames": win.n_frames - f0, "preds": win.n_predictions - p0, "cpu": cpu,
        "dt_ms": np.diff(stamps) * 1e3 if len(stamps) > 1 else np.array([np.nan]),
        "drawn_ms": np.asarray(win.topk.draw_latencies_ms),
    }  # fmt: skip


def _report(win, m: dict, fps_cap: float) -> None:
    info, status, wall = win.connected_info, win.status.last, m["wall"]
    pct = lambda a, q: float(np.percentile(a, q)) if np.size(a) else float("nan")  # noqa: E731
    print(f"stream: {len(info.get('ch_names', []))} ch @ {float(info.get('sfreq', 0.0)):g} Hz, {wall:.1f} s measured")
    print(f"frames/s: {m['frames'] / wall:.1f}  (cap {fps_cap:g}; target >= 30)")
    print(f"frame interval: p50 {pct(m['dt_ms'], 50):.1f} ms  p99 {pct(m['dt_ms'], 99):.1f} ms")
    if m["frames"]:  # polling, drawing and painting together
        print(f"GUI CPU per frame: {1e3 * m['cpu']['GUI'] * wall / m['frames']:.1f} ms (mean)")
    print(f"predictions/s received: {m['preds'] / wall:.2f}")
    print(
        f"engine latency (last sample -> prediction): p50 {status.get('latency_p50_ms', float('nan')):.1f} ms"
        f"  p99 {status.get('latency_p99_ms', float('nan')):.1f} ms; dropped {status.get('dropped_samples')}"
    )
    if m["drawn_ms"].size:
        print(
            f"last sample -> top-5 painted: p50 {pct(m['drawn_ms'], 50):.1f} ms  "
            f"p99 {pct(m['drawn_ms'], 99):.1f} ms  (target p99 <= 60)"
        )
    else:
        print("last sample -> top-5 painted: n/a (the engine's prediction messages carry no last_arrival_s)")
    print("CPU, % of one core: " + "  ".join(f"{k} {100 * v:.0f} %" for k, v in m["cpu"].items()))
    if win.banner.messages:
        print(f"errors shown: {win.banner.messages[:3]}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from gui.app import create_window, get_app
    from gui.settings import demo_paths

    app = get_app()
    demo = demo_paths(args.data_dir, args.runs_dir)
    recording = args.recording or str(demo.recording)
    overrides = {
        "checkpoint": args.checkpoint or (str(demo.checkpoint) if demo.checkpoint else ""),
        "features": args.features or (str(demo.features) if demo.features else ""),
        "whitening": args.whitening or (str(demo.whitening) if demo.whitening else ""),
    }
    if not overrides["checkpoint"] or not overrides["features"] or not Path(recording).exists():
        print(f"bench_gui_fps: the simulated subject is missing; run `{demo.create_command}` first", file=sys.stderr)
        return 2
    settings = Path(tempfile.mkdtemp(prefix="hmavd-bench-")) / "live.json"
    win = create_window(settings, overrides, fps=args.fps, auto_discover=False)
    win.show()
    try:
        if not win.start_replay(recording):
            print(f"bench_gui_fps: {win.banner.text}", file=sys.stderr)
            return 1
        why = _wait_first_prediction(app, win, args.timeout)
        if why:
            print(f"bench_gui_fps: {why}", file=sys.stderr)
            return 1
        _report(win, _measure(app, win, args.duration), args.fps)
        return 0
    finally:
        win.shutdown()


def _child_pids(win) -> dict[str, int]:
    """Process ids of the engine and the replay the window started (private attributes; best effort)."""
    out = {}
    proc = getattr(win.engine, "_proc", None)
    if getattr(proc, "pid", None):
        out["engine"] = int(proc.pid)
    rproc = getattr(win.replay, "_proc", None)
    if getattr(rproc, "pid", None):
        out["replay"] = int(rproc.pid)
    return out


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux /proc), None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
