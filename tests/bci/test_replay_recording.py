"""In-process replay source, session recordings (crash safety, replay, re-prepare) and command errors."""

import csv
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from bci_testkit import (
    CH_NAMES,
    CONCEPTS,
    N_TIMES,
    PRESET,
    SFREQ_IN,
    headless_argv,
    make_recording,
    offline_epochs,
    tiny_checkpoint,
    tiny_model,
)

from bci.cli_replay import main as replay_main
from bci.decoder import Decoder
from bci.engine import LiveEngine
from bci.headless import run_headless
from bci.live_config import LiveConfig
from bci.recording_io import read_session, session_channel_type
from bci.replay import LSLPlayer, RecordingSource, ReplayData, load_replay
from hmavd.errors import UserError


def tiny_decoder():
    templates = np.random.default_rng(3).standard_normal((len(CONCEPTS), 16)).astype(np.float32)
    return Decoder.from_model(tiny_model(), templates, CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu")


def test_recording_source_manual_mode_equals_offline(tmp_path):
    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=6.0, extra_codes={330: 99999})
    src = RecordingSource(load_replay(str(path)), chunk_s=0.13, poll_interval_s=None)
    eng = LiveEngine(LiveConfig(), source=src, markers=src.markers, decoder=tiny_decoder(), preset=PRESET)
    eng.epoch_log = []
    eng.connect()
    assert not src.finished and src.n_written == 0  # manual: nothing moves until acquire()
    n_acquire = 0
    while not eng.finished:
        eng.acquire()
        n_acquire += 1
    assert n_acquire == -(-src.rec.data.shape[1] // src.chunk)  # one chunk per acquire
    off, off_events = offline_epochs(path)
    assert [e.extra["sample_index"] for e in eng.epoch_log] == off_events[:, 0].tolist()
    np.testing.assert_allclose(np.stack([e.data for e in eng.epoch_log]), off, rtol=1e-4, atol=1e-4 * np.abs(off).max())
    assert eng.marker_map.n_ignored == 1 and eng.n_predictions == len(events)


def test_headless_replay_writes_csv_recording_that_replays_and_reprepares(tmp_path):
    """hmavd-live --headless replay=<file>: predictions CSV, running accuracy, a session that
    hmavd-replay streams again and converts to FIF for hmavd-prepare, with the same epochs."""
    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=6.0)
    dec = tiny_decoder()
    cfg = LiveConfig(replay=str(path), replay_speed=20.0, poll_interval_s=0.01)
    src = RecordingSource(load_replay(cfg.replay), replay_speed=cfg.replay_speed, poll_interval_s=0.01)
    eng = LiveEngine(cfg, source=src, markers=src.markers, decoder=dec, preset=PRESET)
    summary = run_headless(cfg, duration_s=30.0, out_dir=tmp_path / "out", engine=eng)
    assert summary["n_predictions"] == len(events) and summary["rejected"] == {}
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["sample_index"]) for r in rows] == events[:, 0].tolist()
    assert all(len(r["topk"].split("|")) == 5 and float(r["latency_ms"]) >= float(r["epoch_latency_ms"]) for r in rows)
    assert summary["running_top1"] == pytest.approx(np.mean([r["top1_correct"] == "1" for r in rows]))
    assert summary["running_top5"] == pytest.approx(np.mean([r["top5_correct"] == "1" for r in rows]))
    # the session is an XDF file: EEG, markers (every code) and predictions, with the session's settings
    import pyxdf

    streams, _ = pyxdf.load_xdf(str(tmp_path / "out" / "session.xdf"))
    by_type = {s["info"]["type"][0]: s for s in streams}
    assert set(by_type) == {"EEG", "Markers", "Predictions"} and all("footer" in s for s in streams)
    assert [int(r[-1]) for r in by_type["Predictions"]["time_series"]] == events[:, 0].tolist()
    assert [int(v[0]) for v in by_type["Markers"]["time_series"]] == events[:, 2].tolist()
    settings = by_type["EEG"]["info"]["desc"][0]["hmavd_session"][0]["settings"][0]
    assert float(settings["replay_speed"][0]) == 20.0 and settings["record_format"][0] == "xdf"
    # the session replays (same samples, markers at their samples) and converts to FIF
    rec = load_replay(str(tmp_path / "out"))
    np.testing.assert_allclose(rec.data[:4], src.rec.data[:4], rtol=1e-6, atol=1e-12)
    assert [s for s, _ in rec.events] == events[:, 0].tolist()
    assert replay_main([str(tmp_path / "out"), "--to-fif", str(tmp_path / "again_raw.fif")]) == 0
    again, again_events = offline_epochs(tmp_path / "again_raw.fif")
    first, first_events = offline_epochs(path)
    assert again_events[:, [0, 2]].tolist() == first_events[:, [0, 2]].tolist()
    np.testing.assert_allclose(again, first, rtol=1e-4, atol=1e-4 * np.abs(first).max())


def test_recording_survives_a_crash(tmp_path):
    """A process killed mid-session leaves a readable recording missing at most ~1 s."""
    script = textwrap.dedent(f"""
        import os, time, numpy as np
        from bci.recorder import SessionRecorder
        from bci.ringbuffer import SampleClock
        rec = SessionRecorder({str(tmp_path / "s")!r}, ["a", "b"], 100.0, flush_s=0.2)
        clock = SampleClock(100.0)
        for k in range(30):  # 3 s of data in 0.1 s chunks, a marker each chunk
            x = np.full((2, 10), k, dtype=np.float32)
            clock.add(10 * k, 1000.0 + (10 * k + np.arange(10)) / 100.0)
            rec.write_eeg(x)
            rec.write_marker(1000.0 + 10 * k / 100.0, str(k + 1))
            rec.maybe_flush(clock)
            time.sleep(0.1)
        os._exit(1)  # no close(), no flush: a crash
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    data, meta, events = read_session(tmp_path / "s")
    assert data.shape[0] == 2 and 300 - 30 <= data.shape[1] <= 300  # at most 0.3 s (flush_s + a chunk) lost
    np.testing.assert_array_equal(data[0, ::10], np.arange(data.shape[1] // 10))
    assert len(events) >= 27 and events[:3] == [(0, "1"), (10, "2"), (20, "3")]


def test_replay_command_errors_are_one_line(tmp_path, capsys):
    path, _, _ = make_recording(tmp_path / "rec_raw.fif", duration_s=3.0)
    (tmp_path / "bad.fif").write_bytes(b"not a fif")
    cases = [
        ([str(tmp_path / "missing.fif")], "does not exist"),
        ([str(tmp_path / "bad.fif")], "could not be read"),
        ([str(path), "--replay-speed", "0"], "replay_speed: 0.0 must be > 0"),
        ([str(path), "--start-s", "10"], "start_s/stop_s: 10"),
        ([str(path), "--to-fif", str(tmp_path / "x.fif")], "--to-fif: .* is not a session folder"),
    ]
    for argv, msg in cases:
        assert replay_main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("hmavd-replay: error: "), err
        assert __import__("re").search(msg, err[0]), err


def test_global_index_and_push_log_need_lsl(tmp_path):
    data = np.zeros((2, 50))
    rec = ReplayData(data, ("a", "b"), ("eeg", "eeg"), SFREQ_IN, ())
    with pytest.raises(UserError, match="global_index: the recording has no sample_index"):
        LSLPlayer(rec, "x", "", global_index=True)
    with pytest.raises(UserError, match="replay_speed"):
        RecordingSource(rec, replay_speed=0)
    with pytest.raises(UserError, match="replay_speed: -1 must be > 0"):
        LSLPlayer(rec, "x", "", replay_speed=-1)


def test_recorded_channel_types_for_replay_and_fif():
    names = ["Fp1", "SAMPLE_INDEX", "sample", "Stim", "trigger"]
    assert [session_channel_type(n) for n in names] == ["eeg", "misc", "misc", "stim", "eeg"]


@pytest.mark.parametrize("fmt", ["npy", "fif", "vhdr", "edf"])
def test_every_format_replays_to_the_same_epochs(tmp_path, fmt):
    """ThingsEEG2 raw, FIF, BrainVision and EDF recordings of one session give the same online epochs."""
    import mne

    from hmavd.preprocessing.raw_io import write_thingseeg2_raw
    from hmavd.preprocessing.transforms import preprocess_epoch

    rng = np.random.default_rng(5)
    data = rng.standard_normal((4, 1400)) * 1e-5  # volts
    events = np.array([[s, 0, 1 + k % len(CONCEPTS)] for k, s in enumerate(range(100, 1200, 40))])
    path = tmp_path / f"rec.{fmt}"
    if fmt == "npy":
        path = write_thingseeg2_raw(tmp_path / "raw_eeg_test.npy", data, CH_NAMES, SFREQ_IN, events)
    elif fmt == "fif":
        stim = np.zeros((1, 1400))
        stim[0, events[:, 0]] = events[:, 2]
        info = mne.create_info([*CH_NAMES, "stim"], SFREQ_IN, ["eeg"] * 4 + ["stim"])
        raw = mne.io.RawArray(np.vstack([data, stim]), info, verbose="error")
        path = tmp_path / "rec_raw.fif"
        raw.save(path, verbose="error")
    elif fmt == "vhdr":
        import pybv

        pybv.write_brainvision(
            data=data,
            sfreq=SFREQ_IN,
            ch_names=CH_NAMES,
            fname_base="rec",
            folder_out=str(tmp_path),
            events=events[:, [0, 2]],
            unit="µV",
        )
    else:
        raw = mne.io.RawArray(data, mne.create_info(CH_NAMES, SFREQ_IN, "eeg"), verbose="error")
        raw.set_annotations(mne.Annotations(events[:, 0] / SFREQ_IN, 0.0, [str(c) for c in events[:, 2]]))
        mne.export.export_raw(path, raw, verbose="error")
    rec = load_replay(str(path), sample_index=True)
    assert rec.ch_names == (*CH_NAMES, "sample_index") and rec.sfreq == SFREQ_IN
    assert [[s, int(c)] for s, c in rec.events] == events[:, [0, 2]].tolist()
    src = RecordingSource(rec, poll_interval_s=None)
    eng = LiveEngine(LiveConfig(), source=src, markers=src.markers, decoder=tiny_decoder(), preset=PRESET)
    eng.epoch_log = []
    eng.connect()
    while not eng.finished:
        eng.acquire()
    assert [e.extra["sample_index"] for e in eng.epoch_log] == events[:, 0].tolist()
    expected = preprocess_epoch(np.stack([data[:, s - 20 : s + 101] for s in events[:, 0]]), SFREQ_IN, PRESET)
    tol = 1e-3 if fmt == "edf" else 1e-5  # EDF stores 16-bit samples
    np.testing.assert_allclose(np.stack([e.data for e in eng.epoch_log]), expected, atol=tol * np.abs(expected).max())


def _record_xdf(recording, out, chunk_s=0.05):
    """Record ``recording`` as a live session would (source chunks → XDFSessionRecorder); returns the file."""
    from bci.recorder import open_recorder

    src = RecordingSource(load_replay(str(recording)), chunk_s=chunk_s, poll_interval_s=None)
    src.connect()
    rec = open_recorder(LiveConfig(), out, src, 0, {"stream": "test"}, src.markers)
    done = 0
    while not src.finished:
        src.acquire()
        rec.write_eeg(src.get_data(done, src.n_written), done)
        done = src.n_written
        for t_s, code in src.markers.pull():
            rec.write_marker(t_s, code)
        rec.maybe_flush()
    rec.close()
    return out / "session.xdf"


def test_recorded_xdf_prepares_and_replays_like_the_original(tmp_path):
    """hmavd-prepare on recorded XDF sessions == on the original ThingsEEG2 raw files; hmavd-replay reads them."""
    from hmavd.channels import THINGS63
    from hmavd.cli.prepare import main as prepare_main
    from hmavd.data.thingseeg2 import load_split
    from hmavd.preprocessing.raw_io import write_thingseeg2_raw

    rng = np.random.default_rng(4)
    sfreq, step = 500.0, 150
    for part, n_img, shows in (("training", 4, 3), ("test", 3, 4)):
        codes = rng.permutation(np.concatenate([np.repeat(np.arange(1, n_img + 1), shows), [99999, 99999]]))
        onsets = 250 + step * np.arange(len(codes))
        n = onsets[-1] + 700
        data = rng.standard_normal((63, n)) * 5e-6 + np.cumsum(rng.standard_normal((63, n)), axis=1) * 2e-7
        for s0, c in zip(onsets, codes):
            data[:, s0 + 50 : s0 + 150] += np.sin(np.arange(63) * (c % 7 + 1))[:, None] * 3e-6
        events = np.column_stack([onsets, np.zeros_like(onsets), codes])
        npy = write_thingseeg2_raw(
            tmp_path / "npy" / "sub-01" / "ses-01" / f"raw_eeg_{part}.npy", data, list(THINGS63), sfreq, events
        )
        xdf = _record_xdf(npy, tmp_path / "rec" / part)
        target = tmp_path / "xdf" / "sub-01" / "ses-01" / f"raw_eeg_{part}.xdf"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(xdf.read_bytes())
        a, b = load_replay(str(npy)), load_replay(str(target))  # hmavd-replay's reader
        assert b.ch_names == a.ch_names and b.sfreq == a.sfreq and b.events == a.events
        np.testing.assert_allclose(b.data, a.data, rtol=1e-6, atol=1e-12)
    common = ["--config", "prepare-nice", "max_reps_training=2", "max_reps_test=3", "progress=false"]
    for name in ("npy", "xdf"):
        assert prepare_main([*common, f"raw_dir={tmp_path / name}", f"out_dir={tmp_path / ('prep-' + name)}"]) == 0
    for part in ("training", "test"):
        ref = load_split(tmp_path / "prep-npy" / "sub-01" / f"preprocessed_eeg_{part}.npy")
        got = load_split(tmp_path / "prep-xdf" / "sub-01" / f"preprocessed_eeg_{part}.npy")
        assert got.ch_names == ref.ch_names and got.eeg.shape == ref.eeg.shape
        np.testing.assert_allclose(got.eeg, ref.eeg, rtol=1e-3, atol=1e-3 * np.abs(ref.eeg).max())


def test_headless_session_killed_with_sigkill_keeps_all_but_the_last_second(tmp_path):
    """`hmavd-live --headless --replay` killed with SIGKILL: session.xdf holds every sample up to ≤ 1 s before
    the newest one the engine had provably received (the data of the last epoch it logged)."""
    import re
    import threading

    import pyxdf

    from hmavd.channels import THINGS63
    from hmavd.preprocessing.presets import PRESETS

    ckpt, cache, _ = tiny_checkpoint(tmp_path, ch_names=THINGS63, preset=PRESETS["nice"], sfreq_in=250.0)
    path, _, _ = make_recording(tmp_path / "rec_raw.fif", duration_s=40.0, ch_names=THINGS63, sfreq=250.0)
    code = "import sys; from gui.cli import main; sys.exit(main())"
    argv = headless_argv(ckpt, cache, tmp_path / "out", "whitening=none", "replay_speed=1", replay=path)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    guard = threading.Timer(120.0, proc.kill)
    guard.start()
    onset = None
    try:
        for line in proc.stdout:  # prediction lines: "  3.100 s <marker> → …"
            m = re.search(r"INFO bci\.headless:\s+([0-9.]+) s \S+ → ", line)
            if m and float(m.group(1)) >= 3.0:
                onset = float(m.group(1))
                break
    finally:
        guard.cancel()
        proc.kill()  # SIGKILL: no footer, no last flush
        proc.wait(10)
    assert onset is not None, "no prediction was logged"
    streams, _ = pyxdf.load_xdf(str(tmp_path / "out" / "session.xdf"))
    eeg = next(s for s in streams if s["info"]["type"][0] == "EEG")
    assert "footer" not in eeg
    recorded_s = len(eeg["time_stamps"]) / 250.0
    received_s = onset + PRESETS["nice"].tmax_s  # that epoch's last sample had arrived before its line was logged
    print(f"headless kill -9: received >= {received_s:.2f} s, recorded {recorded_s:.2f} s")
    assert received_s - recorded_s <= 1.0, (received_s, recorded_s)
    np.testing.assert_array_equal(np.diff(eeg["time_series"][:, -1]), 1.0)  # sample_index: nothing lost inside


def test_record_format_folder_keeps_the_older_layout_and_bad_formats_are_refused(tmp_path):
    from hmavd.config import load_config

    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=4.0)
    cfg = LiveConfig(replay=str(path), record_format="folder")
    src = RecordingSource(load_replay(cfg.replay), chunk_s=0.1, poll_interval_s=None)
    eng = LiveEngine(cfg, source=src, markers=src.markers, decoder=tiny_decoder(), preset=PRESET)
    run_headless(cfg, duration_s=30.0, out_dir=tmp_path / "out", engine=eng)
    assert (tmp_path / "out" / "eeg.f32").exists() and not (tmp_path / "out" / "session.xdf").exists()
    data, meta, rec_events = read_session(tmp_path / "out")
    assert [s for s, _ in rec_events] == events[:, 0].tolist() and data.shape == (5, src.rec.data.shape[1])
    with pytest.raises(UserError, match="record_format: 'edf' is not a format; use xdf"):
        load_config(LiveConfig, None, {"record_format": "edf"})
