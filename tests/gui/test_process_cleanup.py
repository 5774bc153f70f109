"""``hmavd-live`` as a user runs it leaves no replay or engine process behind (real processes, offscreen).

1. ``hmavd-live --replay REC`` (a real child replay and engine) is stopped with SIGTERM once the
   engine has connected: it exits 0 and every process it started is gone.
2. A window process killed with SIGKILL (no clean-up at all) still takes its replay child with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from live_kit import child_pids, make_checkpoint, make_recording, process_gone

pytestmark = [pytest.mark.lsl, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


def _env(tmp_path):
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HMAVD_LIVE_SETTINGS": str(tmp_path / "s.json")}


def _kill_parent_and_expect_child_gone(args: list[str], tmp_path, what: str) -> None:
    """Run ``args`` (a parent that prints its child's pid), SIGKILL it, and wait for the child to exit."""
    parent = subprocess.Popen(args, stdout=subprocess.PIPE, env=_env(tmp_path))
    try:
        child_pid = int(parent.stdout.readline())
        assert not process_gone(child_pid)
        parent.kill()  # no clean-up code runs in the parent
        parent.wait(timeout=30)
        _wait(lambda: process_gone(child_pid), 30, f"the orphaned {what} to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_hmavd_live_stopped_by_sigterm_leaves_no_process(tmp_path):
    ckpt, features = make_checkpoint(tmp_path)
    rec = make_recording(tmp_path / "rec_raw.fif")
    log = tmp_path / "live.log"
    cmd = [
        sys.executable,
        "-m",
        "gui.cli",
        "--replay",
        str(rec),
        "--checkpoint",
        str(ckpt),
        "--features",
        str(features),
        "--data-dir",
        str(tmp_path / "nosim"),
        "--runs-dir",
        str(tmp_path / "noruns"),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    try:
        # the engine logs "connected to <stream>" once it decodes the replay
        _wait(lambda: b"connected to hmavd-live-eeg" in log.read_bytes() or proc.poll() is not None, 120, "connect")
        assert proc.poll() is None, log.read_text()
        children = child_pids(proc.pid)
        assert len(children) >= 2, children  # the replay and the engine
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        _wait(lambda: all(process_gone(p) for p in children), 20, f"children {children} to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_replay_child_dies_with_a_killed_window_process(tmp_path):
    rec = make_recording(tmp_path / "rec_raw.fif", duration_s=10.0)
    code = (
        "import sys, time; from gui.streams import ReplayProcess; "
        "r = ReplayProcess(sys.argv[1], 'cleanup-eeg-x', 'cleanup-mk-x', loop=True); r.start(); "
        "print(r._proc.pid, flush=True); time.sleep(600)"
    )
    _kill_parent_and_expect_child_gone([sys.executable, "-c", code, str(rec)], tmp_path, "replay")


def test_engine_process_stops_when_its_parent_is_killed(tmp_path):
    """The decoding process of a window killed with SIGKILL stops too (it checks its parent)."""
    ckpt, features = make_checkpoint(tmp_path)
    rec = make_recording(tmp_path / "rec_raw.fif", duration_s=60.0)
    code = (
        "import sys, time; from bci.live_config import LiveConfig; from bci.engine_process import EngineProcess; "
        "p = EngineProcess(LiveConfig(checkpoint=sys.argv[1], features=sys.argv[2], replay=sys.argv[3], "
        "device='cpu', whitening='none')); p.start(); "
        "t = time.monotonic()\n"
        "while not any(m['type'] == 'connected' for m in p.poll()) and time.monotonic() - t < 120: time.sleep(0.05)\n"
        "print(p._proc.pid, flush=True); time.sleep(600)"
    )
    args = [sys.executable, "-c", code, str(ckpt), str(features), str(rec)]
    _kill_parent_and_expect_child_gone(args, tmp_path, "engine")
