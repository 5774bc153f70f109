"""LiveEngine on in-memory sources (manual acquire): predictions, status, scope, recording round trip."""

import numpy as np
import pytest
from bci_testkit import (
    CH_NAMES,
    CONCEPTS,
    PRESET,
    SFREQ_IN,
    make_recording,
    manual_engine,
    offline_epochs,
    tiny_model,
)

from bci.engine import LiveEngine
from bci.live_config import LiveConfig
from bci.markers import InMemoryMarkers
from bci.recording_io import read_session, recording_to_fif
from bci.sources import InMemorySource
from hmavd.errors import UserError
from hmavd.preprocessing.raw_io import read_recording

T0 = 1000.0


def make_engine(ch_names=(*CH_NAMES, "sample_index"), sfreq=SFREQ_IN, whitening=None, **cfg):
    src = InMemorySource(list(ch_names), sfreq, t_start_s=T0)
    marks = InMemoryMarkers()
    return manual_engine(src, marks, whitening=whitening, **cfg), src, marks


def test_engine_decodes_like_offline_and_records(tmp_path):
    path, eeg, events = make_recording(tmp_path / "rec_raw.fif", duration_s=6.0, extra_codes={150: 77})
    w = np.diag([1.0, 2.0, 0.5, 1.5]) * 1e5
    eng, src, marks = make_engine(whitening=w)
    eng.epoch_log = []
    eng.connect()
    eng.record_start(str(tmp_path / "session"))
    data = np.vstack([eeg, np.arange(eeg.shape[1])[None]])  # (5, N)
    for s, _, c in events:
        marks.push(T0 + s / SFREQ_IN, int(c))
    marks.push(T0 + 150 / SFREQ_IN, 77)  # an image the templates do not know
    msgs = []
    for a in range(0, data.shape[1], 37):
        src.push(data[:, a : a + 37])
        eng.acquire()
        msgs += eng.get_data()
    eng.record_stop()
    preds = [m for m in msgs if m["type"] == "prediction"]
    assert [p["sample_index"] for p in preds] == list(events[:, 0])  # none missed or duplicated
    off, off_events = offline_epochs(path, w)
    off = off[off_events[:, 2] != 77]  # the unknown image gets no epoch online
    online = np.stack([e.data for e in eng.epoch_log])
    np.testing.assert_allclose(online, off, rtol=1e-4, atol=1e-4 * np.abs(off).max())
    expected = eng.decoder.decode(off)
    assert [p["topk"][0][0] for p in preds] == [r.concepts[0] for r in expected]
    assert all(p["true_concept"] == CONCEPTS[c - 1] for p, c in zip(preds, events[:, 2]))
    status = [m for m in msgs if m["type"] == "status"][-1]
    assert status["n_epochs"] == len(events) and status["unknown_markers"] == 1
    n = len(preds)
    assert status["running_top1"] == pytest.approx(sum(p["top1_correct"] for p in preds) / n)
    scope = [m for m in msgs if m["type"] == "scope"]
    assert scope and scope[-1]["data"].shape[0] == 5 and scope[-1]["data"].dtype == np.float32
    assert msgs[0]["type"] == "connected" and msgs[0]["model_ch_names"] == CH_NAMES
    # the recording replays: same samples, same events (unknown 77 kept as a marker)
    rec, meta, rec_events = read_session(tmp_path / "session")
    np.testing.assert_allclose(rec, data.astype(np.float32))
    assert sorted(rec_events) == [(int(s), str(c)) for s, c in sorted([*zip(events[:, 0], events[:, 2]), (150, 77)])]
    fif = recording_to_fif(tmp_path / "session", tmp_path / "session_raw.fif")
    raw, ev = read_recording(fif)
    assert sorted(ev[:, 0].tolist()) == sorted([*events[:, 0].tolist(), 150])
    assert (tmp_path / "session" / "predictions.csv").read_text().count("\n") == n + 1


def test_connect_rejects_wrong_channels_and_rate():
    eng, _, _ = make_engine(ch_names=["O1", "Oz", "Cz"])
    with pytest.raises(UserError, match="eeg_stream: .*lacks"):
        eng.connect()
    eng, _, _ = make_engine(sfreq=50.0)
    with pytest.raises(UserError, match="50 Hz, below the model"):
        eng.connect()
    eng, _, _ = make_engine(sfreq=300.0)  # 300 Hz yields the same length: accepted unless pinned
    eng.connect()
    eng, _, _ = make_engine(sfreq=300.0, expected_sfreq=200.0)
    with pytest.raises(UserError, match="expected_sfreq"):
        eng.connect()


def test_stride_mode_cuts_epochs_without_markers():
    eng, src, _ = make_engine(stride_s=0.2)
    eng.connect()
    src.push(np.random.default_rng(0).standard_normal((5, 400)) * 1e-5)
    eng.acquire()
    preds = [m for m in eng.get_data() if m["type"] == "prediction"]
    # onsets every 40 samples from sample 20 while the window (−20 … +100) fits in 400 samples
    assert [p["onset_index"] for p in preds] == list(range(20, 300, 40))
    assert all(p["true_concept"] is None and p["top1_correct"] is None for p in preds)


def test_unnamed_stream_channels_must_match_the_model_count():
    eng, _, _ = make_engine(ch_names=[f"Ch{i + 1}" for i in range(4)])
    eng.connect()  # four unnamed channels for a four-channel model: taken in stream order
    assert eng.epocher.picks.tolist() == [0, 1, 2, 3]
    eng, _, _ = make_engine(ch_names=[f"Ch{i + 1}" for i in range(5)])
    with pytest.raises(UserError, match="5 unnamed channels, the model needs 4"):
        eng.connect()


def test_preset_is_inferred_from_the_checkpoint_time_axis():
    from bci.session_plan import preset_for_checkpoint
    from hmavd.preprocessing.presets import PRESETS
    from hmavd.preprocessing.transforms import preprocessed_times

    for name in ("nice", "gifford"):
        times = preprocessed_times(PRESETS[name], 1000.0).tolist()
        assert preset_for_checkpoint({"times": times, "sfreq": PRESETS[name].sfreq}).name == name
    assert preset_for_checkpoint({"preset": "gifford", "times": [], "sfreq": 0}).name == "gifford"
    assert preset_for_checkpoint({"times": [0.0, 0.01], "sfreq": 100.0}).name == "nice"  # unknown: the default


def test_whitening_and_features_default_to_the_training_data(tmp_path, monkeypatch):
    """A checkpoint names its feature cache and subject: the engine finds both relative to the run."""
    from bci_testkit import tiny_cache

    from bci.epocher import load_whitening
    from hmavd.checkpoint import save_checkpoint
    from hmavd.preprocessing.transforms import preprocessed_times

    root = tmp_path / "project"
    sub = root / "data" / "preprocessed_eeg" / "sub-03"
    sub.mkdir(parents=True)
    w = np.stack([np.diag([1.0, 2.0, 3.0, 4.0]), np.diag([3.0, 2.0, 1.0, 0.0])])
    np.savez(sub / "mvnn.npz", whitening=w, ch_names=np.array(CH_NAMES))
    cache = tiny_cache(root / "data" / "features" / "f")
    run = root / "runs" / "r"
    run.mkdir(parents=True)
    times = preprocessed_times(PRESET, SFREQ_IN)
    save_checkpoint(
        run / "best.safetensors",
        tiny_model(),
        {"data_dir": "data", "protocol": "intra"},
        extra={
            "ch_names": CH_NAMES,
            "times": times.tolist(),
            "sfreq": PRESET.sfreq,
            "features": {"path": "data/features/f"},
            "train_subjects": [3],
        },
    )
    monkeypatch.chdir(tmp_path)  # the recorded paths are relative to `project`, not to here
    src = InMemorySource([*CH_NAMES, "sample_index"], SFREQ_IN)
    eng = LiveEngine(
        LiveConfig(checkpoint=str(run / "best.safetensors"), device="cpu"),
        source=src,
        markers=InMemoryMarkers(),
        preset=PRESET,
    )
    eng.connect()
    np.testing.assert_allclose(eng.whitening, np.diag([2.0, 2.0, 2.0, 2.0]))  # mean of the sessions
    assert eng.decoder.concepts[0] == "thing1" and eng.info["features_path"] == str(cache)
    assert eng.whitening_path == str(sub / "mvnn.npz")
    # whitening=none switches it off; a missing file is a one-line error naming the fix
    eng = LiveEngine(
        LiveConfig(checkpoint=str(run / "best.safetensors"), device="cpu", whitening="none"),
        source=InMemorySource(CH_NAMES, SFREQ_IN),
        markers=InMemoryMarkers(),
        preset=PRESET,
    )
    eng.connect()
    assert eng.whitening is None
    (sub / "mvnn.npz").unlink()
    eng = LiveEngine(
        LiveConfig(checkpoint=str(run / "best.safetensors"), device="cpu"),
        source=InMemorySource(CH_NAMES, SFREQ_IN),
        markers=InMemoryMarkers(),
        preset=PRESET,
    )
    with pytest.raises(UserError, match="whitening: not set, and the training subject's"):
        eng.connect()
    # a whitening computed for other channels (or another order) is refused
    np.savez(tmp_path / "other.npz", whitening=w, ch_names=np.array(["O1", "O2", "Oz", "Pz"]))
    with pytest.raises(UserError, match="position 1: 'O2' vs the model's 'Oz'"):
        load_whitening(str(tmp_path / "other.npz"), 4, ch_names=CH_NAMES)


def test_packaged_live_and_replay_configs_are_the_defaults(capsys):
    """configs/live.yaml and configs/replay.yaml document the defaults; they must not drift from them."""
    import yaml

    from bci.cli_replay import ReplayConfig
    from bci.cli_replay import main as replay_main
    from gui.cli import main as live_main
    from hmavd.config import load_config

    assert load_config(LiveConfig, "live") == LiveConfig()
    assert load_config(ReplayConfig, "replay") == ReplayConfig()
    assert live_main(["--headless", "--print-config", "top_k=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["top_k"] == 3 and printed["clip_run"] == 20
    assert replay_main(["rec.fif", "--print-config", "replay_speed=2"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["replay_speed"] == 2.0


def test_running_stats_and_status_message_count_only_scored_epochs():
    from bci.engine_stats import RunningStats, score_prediction, status_message

    concepts = ("a", "b", "c", "d", "e", "f")
    assert score_prediction("b", ("b", "a"), concepts) == (True, True)
    assert score_prediction("f", ("a", "b", "c", "d", "e", "f"), concepts) == (False, False)  # 6th: outside top-5
    assert score_prediction("e", ("a", "b", "c", "d", "e"), concepts) == (False, True)
    assert score_prediction("zebra", ("a",), concepts) == (None, None)  # no template: not scored
    stats = RunningStats(n_latencies=3)
    empty = status_message(stats)
    assert np.isnan(empty["latency_p50_ms"]) and empty["running_top1"] is None and empty["n_epochs"] == 0
    for lat, hit in [(100.0, (True, True)), (1.0, (False, True)), (2.0, (None, None)), (3.0, (False, False))]:
        stats.add(lat, *hit)
    msg = status_message(stats, rejected={"flat": 2}, recording=True, unknown_markers=1, messages=["m"])
    assert msg["n_epochs"] == 4 and msg["latency_p50_ms"] == 2.0  # the newest 3 latencies: 1, 2, 3
    assert msg["running_top1"] == pytest.approx(1 / 3) and msg["running_top5"] == pytest.approx(2 / 3)
    assert msg["rejected"] == {"flat": 2} and msg["recording"] and msg["messages"] == ["m"]


def test_recording_drain_writes_each_sample_once_from_the_chosen_start(tmp_path):
    from bci.recorder import SessionRecorder
    from bci.recording_drain import RecordingDrain

    src = InMemorySource(["a", "b"], 100.0)
    src.connect()
    data = np.arange(2 * 250, dtype=np.float32).reshape(2, 250)
    src.push(data[:, :100])
    src.acquire()
    rec = SessionRecorder(tmp_path / "s", ["a", "b"], 100.0, first_index=40)
    drain = RecordingDrain(rec, src, 40)
    assert drain.drain() == 60 and drain.drain() == 0
    src.push(data[:, 100:])
    src.acquire()
    drain.close()
    out, meta, _ = read_session(tmp_path / "s")
    np.testing.assert_array_equal(out, data[:, 40:])


def test_recording_drain_behind_the_buffer_records_a_gap_instead_of_failing(tmp_path, caplog):
    """Samples that left the ring buffer before the recorder got to them (a fast replay on a busy CPU) are a
    counted, logged gap; an overwrite racing the read is retried."""
    from bci.recorder import SessionRecorder
    from bci.recording_drain import RecordingDrain

    src = InMemorySource(["a"], 100.0, buffer_s=1.0)  # the buffer holds 1024 samples at least
    src.connect()
    data = np.arange(3000, dtype=np.float32)[None]
    src.push(data[:, :100])
    src.acquire()
    rec = SessionRecorder(tmp_path / "s", ["a"], 100.0, first_index=0)
    drain = RecordingDrain(rec, src, 0)
    assert drain.drain() == 100
    src.push(data[:, 100:])  # 2900 more: the oldest 1876 of them are gone before the next drain
    src.acquire()
    held = src.n_written - src.buffer.first_available
    real_get = src.get_data
    calls = []

    def racing_get(start, stop):  # the first read loses the race with the acquisition thread
        calls.append(start)
        if len(calls) == 1:
            raise IndexError("overwritten")
        return real_get(start, stop)

    src.get_data = racing_get
    with caplog.at_level("WARNING", logger="bci.recording_drain"):
        assert drain.drain() == held
    assert len(calls) == 2 and drain.lost_samples == 3000 - 100 - held
    assert "left the 1 s buffer" in caplog.text
    drain.close()
    out, _, _ = read_session(tmp_path / "s")
    assert out.shape[1] == 100 + held


def test_scope_feed_decimates_on_a_fixed_grid_and_sends_markers_once():
    from bci.scope_feed import ScopeFeed

    src = InMemorySource(["a"], 200.0, t_start_s=10.0)
    src.connect()
    src.push(np.arange(101, dtype=np.float32)[None])
    src.acquire()
    feed = ScopeFeed(scope_sfreq=50.0)  # every 4th sample
    feed.add_marker(10.5, "x")
    msg = feed.message(src, t_first_s=10.0)
    assert msg["sfreq"] == 50.0 and msg["data"][0].tolist() == list(range(0, 101, 4)) and msg["markers"] == [(0.5, "x")]
    src.push(np.arange(101, 110, dtype=np.float32)[None])
    src.acquire()
    msg = feed.message(src, t_first_s=10.0)
    assert msg["data"][0].tolist() == [104.0, 108.0] and msg["t0_s"] == 104 / 200.0 and msg["markers"] == []
    assert feed.message(src, 10.0) is None  # nothing new on the grid


def test_reconnect_starts_from_a_clean_state():
    eng, src, marks = make_engine()
    eng.connect()
    marks.push(T0 + 0.5, 1)
    src.push(np.random.default_rng(0).standard_normal((5, 400)) * 1e-5)
    eng.acquire()
    assert eng.n_predictions == 1 and eng.status()["n_epochs"] == 1
    eng.disconnect()
    eng.connect()  # the same injected source and decoder, fresh counters, epocher and scope
    assert eng.n_predictions == 0 and eng.status()["n_epochs"] == 0 and eng.scope.markers == []
    assert eng.epocher.pending == [] and eng.connected


def test_engine_factory_refuses_unknown_keys():
    from bci.engine_process import EngineProcess

    with pytest.raises(UserError, match="unknown key.*poll_timeout_s"):
        EngineProcess.from_values({"poll_timeout_s": 0.1})
    with pytest.raises(UserError, match="top_k: 0"):
        EngineProcess.from_values({"top_k": 0})
    assert EngineProcess.from_values({"top_k": 3}).cfg.top_k == 3
