"""Frames/s of the ``hmavd-live`` window (scope + predictions) while decoding a live stream, offscreen.

Target (SPEC §6): ≥ 30 frames/s while decoding 64 channels at 1000 Hz. The window replays a
recording over LSL (``hmavd-replay`` subprocess), the engine decodes it in its own process, and the
window polls and draws at ≤ 30 fps. Prints frames/s, the frame-interval p50/p99, predictions/s
received, the engine's latency p50/p99, and the GUI process's CPU use::

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=15.0, help="seconds measured after the first prediction")
    p.add_argument("--data-dir", default="hmavd_data/sim")
    p.add_argument("--runs-dir", default="runs/demo")
    p.add_argument("--recording", default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--features", default=None)
    p.add_argument("--whitening", default=None)
    p.add_argument("--fps", type=float, default=30.0, help="the window's frame cap")
    p.add_argument("--timeout", type=float, default=90.0, help="max seconds to wait for the first prediction")
    args = p.parse_args(argv)

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
        print("bench_gui_fps: the simulated subject is missing; run `hmavd-demo` first", file=sys.stderr)
        return 2
    settings = Path(tempfile.mkdtemp(prefix="hmavd-bench-")) / "live.json"
    win = create_window(settings, overrides, fps=args.fps, auto_discover=False)
    win.show()
    try:
        if not win.start_replay(recording):
            print(f"bench_gui_fps: {win.banner.text}", file=sys.stderr)
            return 1
        t_end = time.monotonic() + args.timeout
        while win.n_predictions == 0 and time.monotonic() < t_end:
            app.processEvents()
            time.sleep(0.005)
            if win.engine is None:
                print(f"bench_gui_fps: engine stopped: {win.banner.messages[:1]}", file=sys.stderr)
                return 1
        if win.n_predictions == 0:
            print("bench_gui_fps: no prediction arrived", file=sys.stderr)
            return 1
        n_chans = len(win.connected_info.get("ch_names", []))
        sfreq = float(win.connected_info.get("sfreq", 0.0))
        f0, p0, c0, t0 = win.n_frames, win.n_predictions, time.process_time(), time.monotonic()
        win.draw_times_s.clear()
        stamps: list[float] = []
        while time.monotonic() - t0 < args.duration:
            app.processEvents()
            time.sleep(0.002)
            stamps.extend(win.draw_times_s)
            win.draw_times_s.clear()
        wall = time.monotonic() - t0
        frames, preds = win.n_frames - f0, win.n_predictions - p0
        cpu = (time.process_time() - c0) / wall
        dt = np.diff(stamps) * 1e3 if len(stamps) > 1 else np.array([np.nan])
        status = win.status.last
        print(f"stream: {n_chans} ch @ {sfreq:g} Hz, {wall:.1f} s measured")
        print(f"frames/s: {frames / wall:.1f}  (cap {args.fps:g}; target >= 30)")
        print(f"frame interval: p50 {np.percentile(dt, 50):.1f} ms  p99 {np.percentile(dt, 99):.1f} ms")
        print(f"predictions/s received: {preds / wall:.2f}")
        print(
            f"engine latency (last sample -> prediction): p50 {status.get('latency_p50_ms', float('nan')):.1f} ms"
            f"  p99 {status.get('latency_p99_ms', float('nan')):.1f} ms; dropped {status.get('dropped_samples')}"
        )
        print(f"GUI process CPU: {100 * cpu:.0f} % of one core")
        if win.banner.messages:
            print(f"errors shown: {win.banner.messages[:3]}")
        return 0
    finally:
        win.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
