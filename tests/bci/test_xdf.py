"""The XDF writer and the XDF session recorder, read back with pyxdf (and a kill -9 mid-recording)."""

import os
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import pyxdf

from bci.recorder import XDFSessionRecorder
from bci.recording_io import read_session
from bci.ringbuffer import SampleClock
from bci.xdf import BOUNDARY_UUID, XDFWriter, chunk, varlen_uint


def test_varlen_uint_and_chunk_layout():
    assert varlen_uint(7) == b"\x01\x07"
    assert varlen_uint(300) == b"\x04" + struct.pack("<I", 300)
    assert varlen_uint(2**33) == b"\x08" + struct.pack("<Q", 2**33)
    c = chunk(5, BOUNDARY_UUID)
    assert c[:2] == b"\x01\x12" and struct.unpack("<H", c[2:4])[0] == 5 and c[4:] == BOUNDARY_UUID  # 18 = 2 + 16
    with pytest.raises(ValueError, match="negative"):
        varlen_uint(-1)


def test_round_trip_with_pyxdf(tmp_path):
    """Numeric + string streams: values, timestamps, channel labels/units, clock offsets, footer."""
    rng = np.random.default_rng(0)
    path = tmp_path / "x.xdf"
    w = XDFWriter(path, header={"hmavd_session": {"subject": "s01"}})
    chans = [{"label": c, "unit": "microvolts", "type": "EEG"} for c in ("Fz", "Cz", "Pz")]
    eeg = w.add_stream("amp", "EEG", 3, 250.0, "float32", desc={"channels": {"channel": chans}}, source_id="amp1")
    mk = w.add_stream("mk", "Markers", 1, 0.0, "string")
    ints = w.add_stream("counter", "misc", 2, 250.0, "int16")
    data = rng.standard_normal((500, 3)).astype(np.float32) * 20
    ts = 100.0 + np.arange(500) / 250.0
    w.write_clock_offset(eeg, 99.9, 0.25)
    for a in range(0, 500, 64):  # chunks of various sizes, one > 255 samples would need a 4-byte count
        w.write_samples(eeg, data[a : a + 64], ts[a : a + 64])
    w.write_samples(ints, np.arange(600, dtype=np.int16).reshape(300, 2), ts[:300])  # 300 samples: 4-byte count
    codes = ["17", "S 18", "stim/ü", "x" * 300]  # a 300-byte string needs a 4-byte length
    w.write_samples(mk, [[c] for c in codes], [100.1, 100.5, 101.0, 101.5])
    w.write_boundary()
    w.write_clock_offset(eeg, 101.9, 0.25)
    w.write_clock_offset(mk, 101.9, 0.0)
    w.close()
    w.close()  # idempotent
    assert path.read_bytes()[:4] == b"XDF:"
    streams, header = pyxdf.load_xdf(str(path), dejitter_timestamps=False, synchronize_clocks=False)
    assert header["info"]["version"][0] == "1.0" and header["info"]["hmavd_session"][0]["subject"][0] == "s01"
    by = {s["info"]["name"][0]: s for s in streams}
    e = by["amp"]
    np.testing.assert_array_equal(e["time_series"], data)
    np.testing.assert_array_equal(e["time_stamps"], ts)
    labels = [c["label"][0] for c in e["info"]["desc"][0]["channels"][0]["channel"]]
    units = [c["unit"][0] for c in e["info"]["desc"][0]["channels"][0]["channel"]]
    assert labels == ["Fz", "Cz", "Pz"] and units == ["microvolts"] * 3
    assert e["info"]["source_id"][0] == "amp1" and float(e["info"]["nominal_srate"][0]) == 250.0
    np.testing.assert_array_equal(e["clock_times"], [99.9, 101.9])
    np.testing.assert_array_equal(e["clock_values"], [0.25, 0.25])
    foot = e["footer"]["info"]
    assert int(foot["sample_count"][0]) == 500 and float(foot["first_timestamp"][0]) == ts[0]
    assert float(foot["last_timestamp"][0]) == ts[-1]
    assert len(foot["clock_offsets"][0]["offset"]) == 2
    assert [v[0] for v in by["mk"]["time_series"]] == codes
    np.testing.assert_array_equal(by["mk"]["time_stamps"], [100.1, 100.5, 101.0, 101.5])
    np.testing.assert_array_equal(by["counter"]["time_series"], np.arange(600).reshape(300, 2))
    assert by["counter"]["time_series"].dtype == np.int16
    # with clock synchronisation the offsets are added, as for a LabRecorder file
    synced, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    e2 = next(s for s in synced if s["info"]["name"][0] == "amp")
    np.testing.assert_allclose(e2["time_stamps"], ts + 0.25, atol=1e-9)


def test_writer_refuses_bad_input(tmp_path):
    w = XDFWriter(tmp_path / "a.xdf")
    with pytest.raises(ValueError, match="channel_format"):
        w.add_stream("x", "EEG", 2, 100.0, "float16")
    sid = w.add_stream("x", "EEG", 2, 100.0, "float32")
    with pytest.raises(ValueError, match=r"expected \(3, 2\)"):
        w.write_samples(sid, np.zeros((3, 4)), [0.0, 0.1, 0.2])
    w.close()
    with pytest.raises(FileExistsError):  # a recording is never overwritten
        XDFWriter(tmp_path / "a.xdf")


def _clock(sfreq, t0, n, gap_after=None, gap_s=0.0):
    clock = SampleClock(sfreq)
    ts = t0 + np.arange(n) / sfreq
    if gap_after is not None:
        ts[gap_after:] += gap_s
    clock.add(0, ts)
    return clock, ts


def test_session_recorder_round_trip_with_offsets_gap_and_predictions(tmp_path):
    """EEG on its own clock + offsets, a 3 s outage, markers at their samples, predictions; read_session."""
    sfreq, n = 100.0, 900
    clock, ts = _clock(sfreq, 50.0, n, gap_after=400, gap_s=3.0)
    rng = np.random.default_rng(1)
    data = rng.standard_normal((3, n)).astype(np.float32)
    rec = XDFSessionRecorder(
        tmp_path / "s",
        ["Fz", "Cz", "sample_index"],
        sfreq,
        clock,
        eeg_offset=lambda: 0.5,
        marker_offset=lambda: -0.2,
        extra_meta={"checkpoint": "runs/x", "settings": {"top_k": 5}},
    )
    for a in range(0, n, 70):
        rec.write_eeg(data[:, a : a + 70], a)
    marks = [30, 390, 450, 880]
    for k in marks:
        rec.write_marker(float(ts[k]), f"S {k}")
    rec.write_prediction(
        {
            "onset_index": 30,
            "onset_s": 0.3,
            "marker": "S 30",
            "topk": [("cat", 0.5), ("dog", 0.2)],
            "latency_ms": 7.5,
            "epoch_latency_ms": 2.0,
            "top1_correct": True,
        },
        t_s=float(ts[30]),
    )
    rec.close()
    streams, _ = pyxdf.load_xdf(str(tmp_path / "s" / "session.xdf"), dejitter_timestamps=False)
    eeg = next(s for s in streams if s["info"]["type"][0] == "EEG")
    np.testing.assert_allclose(eeg["time_stamps"], ts, atol=1e-6)  # 50 s + 0.5 offset - 0.5 written back
    assert len(eeg["clock_times"]) >= 2 and set(eeg["clock_values"]) == {0.5}
    chans = eeg["info"]["desc"][0]["channels"][0]["channel"]
    assert [c["type"][0] for c in chans] == ["EEG", "EEG", "misc"] and chans[0]["unit"][0] == "volts"
    session = eeg["info"]["desc"][0]["hmavd_session"][0]
    assert session["checkpoint"][0] == "runs/x" and session["settings"][0]["top_k"][0] == "5"
    got, meta, events = read_session(tmp_path / "s")
    np.testing.assert_array_equal(got, data)
    assert events == [(k, f"S {k}") for k in marks] and meta["sfreq"] == sfreq
    assert meta["ch_names"] == ["Fz", "Cz", "sample_index"]
    assert meta["predictions"][0]["topk"] == "cat|dog" and meta["predictions"][0]["top1_correct"] == "1"
    pred = next(s for s in streams if s["info"]["type"][0] == "Predictions")
    np.testing.assert_allclose(pred["time_stamps"], [ts[30]], atol=1e-9)
    assert int(eeg["footer"]["info"]["sample_count"][0]) == n


def test_kill_minus_nine_loses_at_most_a_second(tmp_path):
    """A recording process killed with SIGKILL mid-session: pyxdf reads all but the last ≤ 1 s."""
    out = tmp_path / "k"
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from bci.recorder import XDFSessionRecorder
        from bci.ringbuffer import SampleClock
        clock = SampleClock(250.0)
        rec = XDFSessionRecorder({str(out)!r}, ["a", "b"], 250.0, clock)
        k = 0
        while True:  # 0.04 s chunks in real time, value = sample number, a marker every 0.2 s
            x = np.tile(np.arange(10 * k, 10 * k + 10, dtype=np.float32), (2, 1))
            clock.add(10 * k, 1000.0 + (10 * k + np.arange(10)) / 250.0)
            rec.write_eeg(x, 10 * k)
            if k % 5 == 0:
                rec.write_marker(1000.0 + 10 * k / 250.0, str(k))
            rec.maybe_flush(clock)
            print(10 * k + 10, flush=True)
            k += 1
            time.sleep(0.04)
    """)
    import threading

    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    guard = threading.Timer(120.0, proc.kill)  # a stuck child ends the loop below instead of hanging the test
    guard.start()
    written = 0
    try:
        for line in proc.stdout:
            written = int(line)
            if written >= 250 * 3:  # ~3 s recorded
                break
    finally:
        guard.cancel()
        proc.kill()  # SIGKILL: no close(), no footer, no flush
        proc.wait(10)
    assert written >= 750, "the recording process did not get going"
    streams, _ = pyxdf.load_xdf(str(out / "session.xdf"))
    eeg = next(s for s in streams if s["info"]["type"][0] == "EEG")
    got = eeg["time_series"][:, 0]
    assert "footer" not in eeg
    lost_s = (written - len(got)) / 250.0
    print(f"kill -9: {written} samples written, {len(got)} read back, {lost_s:.2f} s lost")
    assert 0 <= lost_s <= 1.0, lost_s
    np.testing.assert_array_equal(got, np.arange(len(got)))  # every sample that was read is intact, in order
    data, _, events = read_session(out)
    assert data.shape[1] == len(got) and events[0] == (0, "0") and len(events) >= len(got) // 50 - 1


@pytest.mark.lsl
def test_live_lsl_session_recorded_as_xdf_aligns_markers_exactly(tmp_path):
    """Real LSL streams → LiveEngine recording: in the XDF every marker sits on its own sample."""
    import time
    import uuid

    from bci_testkit import CH_NAMES, CONCEPTS, N_TIMES, PRESET, make_recording, tiny_model

    from bci.decoder import Decoder
    from bci.engine import LiveEngine
    from bci.live_config import LiveConfig
    from bci.markers import LSLMarkerSource
    from bci.replay import LSLPlayer, load_replay
    from bci.sources import LSLSource

    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=6.0)
    tag = uuid.uuid4().hex[:8]
    eeg_stream, marker_stream = f"test-eeg-{tag}", f"test-markers-{tag}"
    player = LSLPlayer(load_replay(str(path)), eeg_stream, marker_stream, replay_speed=4.0)
    templates = np.random.default_rng(3).standard_normal((6, 16)).astype(np.float32)
    dec = Decoder.from_model(tiny_model(), templates, CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu")
    src = LSLSource(eeg_stream, resolve_timeout_s=3.0, poll_interval_s=0.02)
    marks = LSLMarkerSource(marker_stream, resolve_timeout_s=3.0)
    eng = LiveEngine(LiveConfig(stream_units="V"), source=src, markers=marks, decoder=dec, preset=PRESET)
    eng.connect()
    eng.record_start(str(tmp_path / "s"))
    player.start()
    n_pred, t_end = 0, time.monotonic() + 15.0
    while time.monotonic() < t_end and not (player.done.is_set() and not eng.epocher.pending):
        eng.acquire(0.05)
        n_pred += sum(m["type"] == "prediction" for m in eng.get_data())
    eng.disconnect()  # stops the recording: footers
    player.close()
    streams, _ = pyxdf.load_xdf(str(tmp_path / "s" / "session.xdf"))
    by = {s["info"]["type"][0]: s for s in streams}
    eeg, mk, pr = by["EEG"], by["Markers"], by["Predictions"]
    idx = eeg["time_series"][:, -1]  # the recording's sample_index channel
    np.testing.assert_array_equal(np.diff(idx), 1.0)  # no sample lost or repeated
    assert all(len(s["clock_times"]) >= 2 and "footer" in s for s in (eeg, mk, pr))
    assert eeg["info"]["name"][0] == eeg_stream and mk["info"]["name"][0] == marker_stream
    # every marker's synchronised time lands on the sample it was sent with (0 samples misaligned)
    nearest = np.abs(eeg["time_stamps"][None, :] - mk["time_stamps"][:, None]).argmin(axis=1)
    sent = dict(zip(events[:, 0].tolist(), events[:, 2].tolist()))
    got = [(int(idx[k]), int(v[0])) for k, v in zip(nearest, mk["time_series"]) if int(idx[k]) in sent]
    assert got == [(s, sent[s]) for s in sorted(sent) if idx[0] <= s <= idx[-1]] and len(got) >= len(sent) - 1
    assert len(pr["time_series"]) == n_pred > 0


def test_microvolt_session_reads_back_in_volts(tmp_path):
    """A µV stream is recorded as received (labelled microvolts); read_session and hmavd-prepare's reader give volts."""
    from hmavd.preprocessing.raw_io import read_recording

    clock, ts = _clock(200.0, 10.0, 600)
    data = np.random.default_rng(2).standard_normal((2, 600)).astype(np.float32) * 10  # µV
    rec = XDFSessionRecorder(tmp_path / "u", ["Oz", "Pz"], 200.0, clock, ch_units=["microvolts", "µV"])
    rec.write_eeg(data, 0)
    rec.write_marker(float(ts[100]), "7")
    rec.close()
    streams, _ = pyxdf.load_xdf(str(tmp_path / "u" / "session.xdf"))
    eeg = next(s for s in streams if s["info"]["type"][0] == "EEG")
    np.testing.assert_array_equal(eeg["time_series"].T, data)  # stored as received
    volts, meta, events = read_session(tmp_path / "u")
    np.testing.assert_allclose(volts, data * 1e-6, rtol=1e-6)
    assert meta["ch_units"] == ["volts", "volts"] and events == [(100, "7")]
    raw, ev = read_recording(tmp_path / "u" / "session.xdf")
    np.testing.assert_allclose(raw.get_data(picks=["Oz", "Pz"]), data * 1e-6, rtol=1e-6)
    assert ev[:, [0, 2]].tolist() == [[100, 7]]


def test_background_writer_writes_the_same_file_and_reports_disk_errors(tmp_path):
    files = {}
    for bg in (False, True):
        w = XDFWriter(tmp_path / f"{bg}.xdf", background=bg)
        sid = w.add_stream("x", "EEG", 2, 100.0, "float32")
        for k in range(5):
            w.write_samples(sid, np.full((10, 2), k, np.float32), 10 * k + np.arange(10) / 100.0)
            w.flush()
        w.close()
        files[bg] = pyxdf.load_xdf(str(tmp_path / f"{bg}.xdf"), dejitter_timestamps=False)[0][0]
    np.testing.assert_array_equal(files[True]["time_series"], files[False]["time_series"])
    np.testing.assert_array_equal(files[True]["time_stamps"], files[False]["time_stamps"])
    w = XDFWriter(tmp_path / "broken.xdf", background=True)
    sid = w.add_stream("x", "EEG", 1, 100.0, "float32")
    w.flush()
    deadline = time.monotonic() + 10  # let the thread write what is queued (the file header) first
    while (not w._queue.empty() or os.path.getsize(tmp_path / "broken.xdf") == 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    good_fd = w._fd  # the disk goes away under the writer thread (as a full or failing disk would):
    w._fd = os.open(tmp_path / "broken.xdf", os.O_RDONLY)  # writes fail from now on
    w.write_samples(sid, np.zeros((3, 1), np.float32), [0.0, 0.01, 0.02])
    w.flush()  # queued: the engine's loop does not wait
    deadline = time.monotonic() + 10
    while w._error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(OSError, match="writing .*broken.xdf failed"):
        w.flush()  # ... but the failure is not silent
    with pytest.raises(OSError, match="failed"):
        w.close()
    assert not w._thread.is_alive()
    os.close(good_fd)
