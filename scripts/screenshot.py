"""Render a PNG of the running ``hmavd-live`` window for the README (offscreen, no display needed).

Replays the simulated subject's test session (``hmavd-demo`` creates it), waits until the window shows
``--predictions`` live predictions and a filled scope and (up to ``--timeout``) one whose true concept
is in the top-5, so the highlight shows, then saves ``widget.grab()`` as a 256-colour PNG::

    QT_QPA_PLATFORM=offscreen python scripts/screenshot.py            # -> docs/img/hmavd-live.png
    python scripts/screenshot.py --recording R.fif --checkpoint C --features F --whitening W --out x.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/img/hmavd-live.png", help="PNG to write")
    p.add_argument("--data-dir", default="hmavd_data/sim", help="simulated subject (hmavd-demo)")
    p.add_argument("--runs-dir", default="runs/demo", help="demo runs (hmavd-demo)")
    p.add_argument("--recording", default=None, help="recording to replay (default: the demo's)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--features", default=None)
    p.add_argument("--whitening", default=None)
    p.add_argument("--predictions", type=int, default=12, help="wait for this many predictions")
    p.add_argument("--timeout", type=float, default=90.0, help="give up after this many seconds")
    p.add_argument("--size", default="1400x860", help="window size WxH")
    args = p.parse_args(argv)

    from gui.app import create_window, get_app
    from gui.settings import demo_paths

    app = get_app()
    demo = demo_paths(args.data_dir, args.runs_dir)
    recording = args.recording or str(demo.recording)
    overrides = {
        "data_dir": args.data_dir,
        "runs_dir": args.runs_dir,
        "checkpoint": args.checkpoint or (str(demo.checkpoint) if demo.checkpoint else ""),
        "features": args.features or (str(demo.features) if demo.features else ""),
        "whitening": args.whitening or (str(demo.whitening) if demo.whitening else ""),
    }
    missing = [k for k in ("checkpoint", "features") if not overrides[k]]
    if missing or not Path(recording).exists():
        print(f"screenshot: missing {missing or recording}; run `hmavd-demo` first", file=sys.stderr)
        return 2
    settings = Path(tempfile.mkdtemp(prefix="hmavd-shot-")) / "live.json"  # leave the user's settings alone
    win = create_window(settings, overrides, auto_discover=False)
    w, h = (int(v) for v in args.size.lower().split("x"))
    win.resize(w, h)
    win.show()
    try:
        if not win.start_replay(recording):
            print(f"screenshot: {win.banner.text}", file=sys.stderr)
            return 1
        t_end = time.monotonic() + args.timeout
        while time.monotonic() < t_end and win.n_predictions < args.predictions:
            app.processEvents()
            time.sleep(0.01)
            if win.engine is None and win.banner.messages:
                print(f"screenshot: {win.banner.messages[0]}", file=sys.stderr)
                return 1
        if win.n_predictions < args.predictions:
            print(f"screenshot: only {win.n_predictions} predictions after {args.timeout:g} s", file=sys.stderr)
            return 1
        while time.monotonic() < t_end and not win.topk.highlighted():  # a hit, to show the highlight
            app.processEvents()
            time.sleep(0.01)
        win.timer.stop()  # freeze this frame: the next prediction would replace the highlighted one
        for _ in range(10):  # let the last frame and the status line draw
            app.processEvents()
            time.sleep(0.04)
        win.banner.dismiss()
        app.processEvents()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not _save_png(win.grab(), out):
            print(f"screenshot: could not write {out}", file=sys.stderr)
            return 1
        print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB, {win.n_predictions} predictions shown)")
        return 0
    finally:
        win.shutdown()


def _save_png(pixmap, out: Path) -> bool:
    """Save as a 256-colour palette PNG (a UI screenshot stays crisp at a third of the size)."""
    import io

    from PIL import Image
    from PyQt6 import QtCore

    buf = QtCore.QBuffer()
    buf.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
    if not pixmap.save(buf, "PNG"):
        return False
    img = Image.open(io.BytesIO(bytes(buf.data()))).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
