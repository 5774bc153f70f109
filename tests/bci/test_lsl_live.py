"""Integration on real LSL streams (loopback, unique names): replay -> live decode == offline."""

import time
import uuid

import numpy as np
import pytest
from bci_testkit import (
    PRESET,
    SFREQ_IN,
    cli_flags,
    headless_argv,
    make_recording,
    offline_epochs,
    tiny_checkpoint,
    tiny_decoder,
)

from bci.engine import LiveEngine
from bci.engine_process import EngineProcess
from bci.live_config import LiveConfig
from bci.markers import LSLMarkerSource
from bci.recording_io import read_session
from bci.replay import LSLPlayer, load_replay
from bci.sources import LSLSource
from hmavd.errors import UserError

pytestmark = pytest.mark.lsl


def names():
    tag = uuid.uuid4().hex[:8]
    return f"test-eeg-{tag}", f"test-markers-{tag}"


def make_engine(eeg_stream, marker_stream, whitening=None, **cfg):
    dec = tiny_decoder()
    src = LSLSource(eeg_stream, resolve_timeout_s=3.0, poll_interval_s=0.02)
    marks = LSLMarkerSource(marker_stream, resolve_timeout_s=3.0)
    eng = LiveEngine(LiveConfig(**cfg), source=src, markers=marks, decoder=dec, preset=PRESET, whitening=whitening)
    eng.epoch_log = []
    return eng


def run_until(eng, cond, timeout_s):
    msgs = []
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end and not cond(msgs):
        eng.acquire(0.05)
        msgs += eng.get_data()
    return msgs


def test_replay_decoded_live_equals_offline(tmp_path):
    nan_at, nan_len = 1500, 30  # a chunk of NaNs (0.15 s) on one channel
    path, eeg, events = make_recording(tmp_path / "rec_raw.fif", duration_s=12.0, extra_codes={1130: 77})
    rec = load_replay(str(path), sample_index=False)
    data = rec.data.copy()
    data[0, nan_at : nan_at + nan_len] = np.nan
    rec = type(rec)(data, rec.ch_names, rec.ch_types, rec.sfreq, rec.events)
    w = np.diag([1.0, 2.0, 0.5, 1.5]) * 1e5
    eeg_stream, marker_stream = names()
    player = LSLPlayer(rec, eeg_stream, marker_stream, replay_speed=4.0)
    eng = make_engine(eeg_stream, marker_stream, whitening=w)
    eng.connect()
    assert "sample_index" in eng.source.description.ch_names  # the recording's own misc channel
    player.start()
    n_expect = len(events)
    msgs = run_until(eng, lambda m: player.done.is_set() and not eng.epocher.pending, timeout_s=15.0)
    eng.disconnect()
    player.close()
    preds = [m for m in msgs if m["type"] == "prediction"]
    # epochs whose window holds the NaN sample are rejected; the unknown image (77) is skipped
    hit_nan = {int(s) for s in events[:, 0] if s - 20 < nan_at + nan_len and nan_at <= s + 100}
    assert len(hit_nan) == 4
    good = [int(s) for s in events[:, 0] if int(s) not in hit_nan]
    assert [p["sample_index"] for p in preds] == good  # none missed, none duplicated, exact alignment
    assert eng.epocher.rejected == {"nan": len(hit_nan)} and eng.marker_map.unknown == {"77": 1}
    assert len(good) + len(hit_nan) == n_expect
    off, off_events = offline_epochs(path, w)
    keep = np.isin(off_events[:, 0], good)
    online = np.stack([e.data for e in eng.epoch_log])
    np.testing.assert_allclose(online, off[keep], rtol=1e-4, atol=1e-4 * np.abs(off).max())
    offline_pred = eng.decoder.decode(off[keep])
    np.testing.assert_allclose(
        [[s for _, s in p["topk"]] for p in preds], [r.scores for r in offline_pred], rtol=1e-4, atol=1e-5
    )
    assert [[c for c, _ in p["topk"]] for p in preds] == [list(r.concepts) for r in offline_pred]
    lat = [p["latency_ms"] for p in preds]
    assert 0 < np.median(lat) < 200
    assert eng.source.clock.gap_samples_estimate == 0 and len(eng.source.clock.segments) == 1


def test_source_stops_and_comes_back(tmp_path):
    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=12.0)
    rec = load_replay(str(path))
    eeg_stream, marker_stream = names()
    p1 = LSLPlayer(rec, eeg_stream, marker_stream, replay_speed=2.0, start_sample=0, stop_sample=700)
    eng = make_engine(eeg_stream, marker_stream, marker_timeout_s=3.0)
    eng.connect()
    p1.start()
    p1.done.wait(10)
    time.sleep(0.2)
    run_until(eng, lambda m: False, 0.3)
    p1.close()  # the source goes away …
    msgs = run_until(eng, lambda m: False, 0.5)
    # … and comes back
    p2 = LSLPlayer(rec, eeg_stream, marker_stream, replay_speed=2.0, start_sample=900, stop_sample=2400)
    p2.start()
    msgs += run_until(eng, lambda m: p2.done.is_set() and not eng.epocher.pending, timeout_s=15.0)
    eng.disconnect()
    p2.close()
    preds = [e.extra["sample_index"] for e in eng.epoch_log]
    after = [i for i in preds if i >= 900]
    assert after, "no epoch after the source came back (inlet recover)"
    assert set(preds) <= set(events[:, 0].tolist())  # every epoch exactly on its own marker's sample
    assert len(preds) == len(set(preds))
    assert len(eng.source.clock.segments) >= 2 and eng.source.clock.gap_samples_estimate > 0
    # epochs after the gap are the offline ones
    off, off_events = offline_epochs(path)
    by_sample = dict(zip(off_events[:, 0].tolist(), off))
    for e in eng.epoch_log:
        np.testing.assert_allclose(e.data, by_sample[e.extra["sample_index"]], rtol=1e-4, atol=1e-9)
    # epochs cut across the outage are rejected, never stitched from the samples after it
    assert not any(700 - 100 < i < 900 + 20 for i in preds)


def test_connect_errors_on_wrong_stream(tmp_path):
    import pylsl

    with pytest.raises(UserError, match="no LSL stream with name"):
        LSLSource(f"absent-{uuid.uuid4().hex[:8]}", resolve_timeout_s=0.3).connect()
    eeg_stream, marker_stream = names()
    info = pylsl.StreamInfo(eeg_stream, "EEG", 3, SFREQ_IN, pylsl.cf_float32, eeg_stream)
    chans = info.desc().append_child("channels")
    for n in ("O1", "Oz", "Cz"):
        chans.append_child("channel").append_child_value("label", n)
    outlet = pylsl.StreamOutlet(info)
    eng = make_engine(eeg_stream, marker_stream)
    with pytest.raises(UserError, match="lacks 2 of the model's 4"):
        eng.connect()
    del outlet
    info = pylsl.StreamInfo(eeg_stream + "-slow", "EEG", 4, 50.0, pylsl.cf_float32, eeg_stream + "-slow")
    outlet = pylsl.StreamOutlet(info)
    eng = make_engine(eeg_stream + "-slow", marker_stream)
    with pytest.raises(UserError, match="50 Hz, below the model"):
        eng.connect()
    del outlet


def test_engine_process_end_to_end(tmp_path):
    """The GUI's API: a spawned engine process on a real checkpoint (NICE preset) and real LSL streams."""
    from hmavd.channels import THINGS63
    from hmavd.preprocessing.presets import PRESETS

    ckpt, cache, _ = tiny_checkpoint(tmp_path, ch_names=THINGS63, preset=PRESETS["nice"], sfreq_in=250.0)
    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=6.0, ch_names=THINGS63, sfreq=250.0)
    eeg_stream, marker_stream = names()
    player = LSLPlayer(load_replay(str(path)), eeg_stream, marker_stream, replay_speed=2.0, loop=True)
    cfg = LiveConfig(
        eeg_stream=eeg_stream,
        marker_stream=marker_stream,
        checkpoint=str(ckpt),
        features=str(cache),
        device="cpu",
        resolve_timeout_s=5.0,
        status_interval_s=0.2,
    )
    proc = EngineProcess(cfg)
    proc.start()
    msgs: list[dict] = []

    def wait(cond, timeout_s):
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end and not cond():
            msgs.extend(proc.poll())
            time.sleep(0.05)

    try:
        wait(lambda: any(m["type"] in ("connected", "error") for m in msgs), 40)
        assert msgs[0]["type"] == "connected", msgs
        assert msgs[0]["n_chans"] == 64 and msgs[0]["sfreq"] == 250.0 and len(msgs[0]["concepts"]) == 6
        player.start()
        proc.send({"cmd": "record_start", "path": str(tmp_path / "session")})
        wait(lambda: sum(m["type"] == "prediction" for m in msgs) >= 5, 20)
        proc.send({"cmd": "record_stop"})
        proc.send({"cmd": "bogus"})
        wait(lambda: any(m["type"] == "error" for m in msgs), 5)
    finally:
        proc.stop()
        player.close()
    msgs.extend(proc.poll())
    preds = [m for m in msgs if m["type"] == "prediction"]
    assert len(preds) >= 5 and all(len(p["topk"]) == 5 and p["true_concept"] for p in preds)
    assert all(p["sample_index"] in set(events[:, 0].tolist()) for p in preds)
    status = [m for m in msgs if m["type"] == "status"]
    assert status and status[-1]["n_epochs"] >= 5 and status[-1]["running_top1"] is not None
    assert any(m["type"] == "scope" and m["data"].shape[0] == 64 for m in msgs)
    assert [m["message"] for m in msgs if m["type"] == "error"] == ["unknown command 'bogus'"]
    assert msgs[-1]["type"] == "stopped"
    data, _, rec_events = read_session(tmp_path / "session")  # an XDF session (bci.recording_io reads it)
    assert data.shape[0] == 64 and data.shape[1] > 0 and rec_events


def test_replay_command_to_headless_command_over_lsl(tmp_path, capsys):
    """`hmavd-replay` (a child process) streams a recording; `hmavd-live --headless` decodes it."""
    import csv
    import subprocess
    import sys

    from gui.cli import main as live_main
    from hmavd.channels import THINGS63
    from hmavd.preprocessing.presets import PRESETS

    ckpt, cache, _ = tiny_checkpoint(tmp_path, ch_names=THINGS63, preset=PRESETS["nice"], sfreq_in=250.0)
    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=5.0, ch_names=THINGS63, sfreq=250.0)
    eeg_stream, marker_stream = names()
    code = "import sys; from bci.cli_replay import main; sys.exit(main())"
    replay_args = cli_flags(eeg_stream=eeg_stream, marker_stream=marker_stream, replay_speed=2, wait_consumers_s=30)
    player = subprocess.Popen(
        [sys.executable, "-c", code, str(path), *replay_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        flags = {"eeg_stream": eeg_stream, "marker_stream": marker_stream, "duration": 8}
        rc = live_main(headless_argv(ckpt, cache, tmp_path / "out", "resolve_timeout_s=20", "whitening=none", **flags))
        out, err = player.communicate(timeout=30)
    finally:
        player.kill()
    assert rc == 0 and player.returncode == 0, err
    assert f"streamed 1250 samples and {len(events)} markers" in out
    printed = capsys.readouterr().out
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # the first epoch may precede the consumer's first sample; every other one is decoded exactly once
    got = [int(r["sample_index"]) for r in rows]
    assert got == events[len(events) - len(got) :, 0].tolist() and len(got) >= len(events) - 1
    top1 = np.mean([r["top1_correct"] == "1" for r in rows])
    assert f"{len(rows)} predictions, running top-1 {100 * top1:.1f} %" in printed
    data, meta, _ = read_session(tmp_path / "out")
    assert meta["ch_names"][-1] == "sample_index" and data.shape[0] == 64
    np.testing.assert_array_equal(np.diff(data[-1]), 1.0)  # no sample lost in the recording
