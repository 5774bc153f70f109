"""Qt-free GUI state: scope buffer, offsets/scaling, running accuracy, status text, thumbnails, settings."""

import json

import numpy as np
import pytest

from bci.replay import unique_names
from gui.settings import LiveSettings, demo_paths, load_settings, save_settings
from gui.state import (
    HistoryEntry,
    PredictionHistory,
    RepetitionCurve,
    RunningAccuracy,
    ScopeBuffer,
    ThumbnailIndex,
    center_channels,
    chance_levels,
    channel_offsets,
    format_status,
    is_data_channel,
    robust_scale_uv,
    scale_for_display,
    stack_traces,
)
from gui.streams import StreamEntry, split_streams
from hmavd.errors import UserError


def test_scope_buffer_scrolls_and_keeps_the_newest_window():
    buf = ScopeBuffer(n_chans=2, sfreq=10.0, window_s=1.0)  # 10 columns
    assert buf.n_times == 10 and np.isnan(buf.data).all()
    buf.append(np.tile(np.arange(4, dtype=np.float32), (2, 1)), t0_s=0.0)
    np.testing.assert_array_equal(buf.data[0, -4:], [0, 1, 2, 3])
    assert np.isnan(buf.data[0, :-4]).all()
    assert buf.t_end_s == pytest.approx(0.4)
    np.testing.assert_allclose(buf.times()[-1], 0.3)
    buf.append(np.tile(np.arange(4, 12, dtype=np.float32), (2, 1)), t0_s=0.4)
    np.testing.assert_array_equal(buf.data[1], np.arange(2, 12))
    assert buf.t_end_s == pytest.approx(1.2)


def test_scope_buffer_gap_shows_as_nan_and_overlap_overwrites():
    buf = ScopeBuffer(n_chans=1, sfreq=10.0, window_s=1.0)
    buf.append(np.ones((1, 3)), t0_s=0.0)
    buf.append(2 * np.ones((1, 2)), t0_s=0.5)  # 2 samples missing (0.3, 0.4)
    np.testing.assert_array_equal(buf.data[0, -7:], [1, 1, 1, np.nan, np.nan, 2, 2])
    buf.append(3 * np.ones((1, 2)), t0_s=0.6)  # overlaps the last sample by one
    np.testing.assert_array_equal(buf.data[0, -4:], [np.nan, 2, 3, 3])
    assert buf.t_end_s == pytest.approx(0.8)
    buf.append(np.zeros((1, 1)), t0_s=100.0)  # far jump (stream restarted): start over
    assert np.isnan(buf.data[0, :-1]).all() and buf.data[0, -1] == 0
    with pytest.raises(ValueError, match=r"\(1, n\)"):
        buf.append(np.zeros((2, 3)), t0_s=0.0)


def test_scope_buffer_drops_markers_that_scrolled_out():
    buf = ScopeBuffer(n_chans=1, sfreq=10.0, window_s=1.0)
    v0 = buf.version
    buf.append(np.zeros((1, 5)), 0.0, markers=[(0.1, "a"), (0.3, "b")])
    assert buf.version > v0 and [m[1] for m in buf.markers] == ["a", "b"]
    buf.append(np.zeros((1, 10)), 0.5, markers=[(1.2, "c")])  # window now 0.5 .. 1.5
    assert [m[1] for m in buf.markers] == ["c"]


def test_offsets_and_scaling():
    np.testing.assert_array_equal(channel_offsets(3, 2.0), [4.0, 2.0, 0.0])
    y = scale_for_display(np.array([[50e-6, -25e-6]]), scale_uv=50.0)
    np.testing.assert_allclose(y, [[1.0, -0.5]], rtol=1e-6)
    np.testing.assert_allclose(scale_for_display(np.array([[10.0]]), 20.0, unit_v=1e-6), [[0.5]])
    with pytest.raises(ValueError):
        scale_for_display(np.zeros((1, 1)), 0.0)
    rng = np.random.default_rng(0)
    data = rng.normal(0, 10e-6, (4, 2000))
    assert robust_scale_uv(data) == pytest.approx(60.0, rel=0.1)
    assert robust_scale_uv(np.full((2, 3), np.nan)) is None


def test_display_helpers_center_stack_and_skip_counter_channels():
    data = np.array([[1.0, 3.0, np.nan], [np.nan, np.nan, np.nan]], np.float32)
    centered = center_channels(data)
    np.testing.assert_allclose(centered[0, :2], [-1.0, 1.0])
    assert np.isnan(centered[0, 2]) and np.isnan(centered[1]).all()
    y = np.array([[0.0, 1.0, np.nan, 2.0], [5.0, 5.0, 5.0, 5.0]], np.float32)
    values, connect = stack_traces(y, np.array([10.0, 0.0]))
    np.testing.assert_allclose(values, [10, 11, 10, 12, 5, 5, 5, 5])  # NaN -> baseline (not drawn)
    # no line into or out of the gap, none from channel 0's last point to channel 1's first
    np.testing.assert_array_equal(connect, [1, 0, 0, 0, 1, 1, 1, 0])
    assert [is_data_channel(c) for c in ("Oz", "sample_index", "STI 014", "stim", "Status", "Fp1")] == [
        True,
        False,
        False,
        False,
        False,
        True,
    ]


def test_running_accuracy_counts_only_known_truth():
    acc = RunningAccuracy()
    assert acc.top1 is None and "–" in acc.text()
    for t1, t5 in [(True, True), (False, True), (False, False), (None, None)]:
        acc.update(t1, t5)
    assert acc.n == 3 and acc.top1 == pytest.approx(1 / 3) and acc.top5 == pytest.approx(2 / 3)
    assert "top-1 33.3 %" in acc.text(200) and "chance 0.5 %" in acc.text(200)


def test_history_entry_from_message():
    e = HistoryEntry.from_message(
        {
            "onset_s": 1.5,
            "topk": [("dog", 0.9), ("cat", 0.5)],
            "true_concept": "cat",
            "top1_correct": False,
            "top5_correct": True,
            "latency_ms": 7.25,
        }
    )
    assert (e.predicted, e.score, e.mark()) == ("dog", 0.9, "~")
    assert HistoryEntry.from_message({"topk": []}).mark() == ""


def test_format_status_lists_everything():
    text = format_status(
        {
            "sfreq_measured": 999.7,
            "latency_p50_ms": 4.21,
            "latency_p99_ms": 11.0,
            "dropped_samples": 3,
            "n_epochs": 42,
            "rejected": {"nan": 2, "flat": 1},
            "recording": True,
        },
        nominal_sfreq=1000,
    )
    for part in (
        "999.7 Hz",
        "nominal 1000",
        "p50 4.2",
        "p99 11.0",
        "dropped 3",
        "epochs 42",
        "rejected 3 (nan 2, flat 1)",
        "REC",
    ):
        assert part in text, part
    assert "latency p50 – / p99 –" in format_status({"latency_p50_ms": None})
    assert "display 29 fps" in format_status({}, display_fps=29.4)


def test_thumbnail_index_understands_thingseeg2_layout(tmp_path):
    folder = tmp_path / "test_images" / "00001_aircraft_carrier"
    folder.mkdir(parents=True)
    (folder / "aircraft_carrier_06s.jpg").write_bytes(b"x")
    (tmp_path / "test_images" / "notes.txt").write_text("not an image")
    flat = tmp_path / "other"
    flat.mkdir()
    index = ThumbnailIndex(tmp_path)
    assert index.get("aircraft carrier") == folder / "aircraft_carrier_06s.jpg"
    assert index.get("zebra") is None
    assert len(ThumbnailIndex(tmp_path / "absent")) == 0 and len(ThumbnailIndex(None)) == 0
    assert len(ThumbnailIndex(tmp_path, concepts=["zebra"])) == 0


def test_settings_round_trip_and_bad_files(tmp_path, caplog):
    path = tmp_path / "cfg" / "live.json"
    assert load_settings(path) == LiveSettings()
    s = LiveSettings(eeg_stream="EEG-1", scope_scale_uv=20.0, scope_channels=["Oz", "O1"])
    assert save_settings(s, path) == path
    assert load_settings(path) == s
    path.write_text(json.dumps({"eeg_stream": 5, "replay_speed": 2, "unknown": 1}))
    loaded = load_settings(path)
    assert loaded.eeg_stream == "" and loaded.replay_speed == 2.0
    assert "ignoring unknown key(s) unknown" in caplog.text and "ignoring eeg_stream=5" in caplog.text
    path.write_text("{not json")
    assert load_settings(path) == LiveSettings()


def test_settings_default_path_from_env(tmp_path, monkeypatch):
    from gui.settings import default_settings_path

    monkeypatch.setenv("HMAVD_LIVE_SETTINGS", str(tmp_path / "x.json"))
    assert default_settings_path() == tmp_path / "x.json"
    monkeypatch.delenv("HMAVD_LIVE_SETTINGS")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_settings_path() == tmp_path / "hmavd" / "live.json"


def test_prediction_history_keeps_the_newest_rows_and_counts_all():
    hist = PredictionHistory(max_rows=2)
    hist.reset(n_concepts=200)
    for true, t1, t5 in [("dog", True, True), ("cat", False, True), ("cup", False, False), (None, None, None)]:
        hist.add({"topk": [("dog", 0.9)], "true_concept": true, "top1_correct": t1, "top5_correct": t5})
    assert [e.true_concept for e in hist.entries] == [None, "cup"]  # newest first, two kept
    assert hist.accuracy.n == 3 and hist.accuracy.n_top5 == 2  # every known-truth prediction counted
    assert "top-1 33.3 %" in hist.summary() and "chance 0.5 %" in hist.summary()
    hist.reset()
    assert not hist.entries and hist.accuracy.n == 0 and hist.n_concepts is None


def test_repetition_curve_from_the_accumulators_report():
    assert RepetitionCurve.from_report(None) is None and RepetitionCurve.from_report({"curve": []}) is None
    points = [{"k": 5, "top1": 0.25, "top5": 0.5, "n_images": 12}, {"k": 1, "top1": 0.05, "top5": 0.1, "n_images": 40}]
    report = {"mode": "epochs", "n_images": 40, "max_reps": 7, "curve": points}
    curve = RepetitionCurve.from_report(report)
    assert curve.k.tolist() == [1, 5] and curve.top1.tolist() == [0.05, 0.25]  # sorted by k
    assert curve.top5.tolist() == [0.1, 0.5] and curve.n_images.tolist() == [40, 12]
    assert (curve.mode, curve.images, curve.max_reps) == ("epochs", 40, 7)
    expected = "k=5: top-1 25.0 % / top-5 50.0 % over 12 images (epochs averaged); 40 images seen, up to 7 repetitions"
    assert curve.text() == expected
    assert chance_levels(200) == (0.005, 0.025) and chance_levels(3) == (1 / 3, 1.0) and chance_levels(None) is None


def test_demo_paths_reports_missing_then_finds_files(tmp_path):
    data, runs = tmp_path / "sim", tmp_path / "runs"
    demo = demo_paths(data, runs)
    assert not demo.ready and len(demo.missing) == 4
    assert demo.create_command == f"hmavd-demo --data {data} --out {runs}"  # not the default folders
    html, kind, tip = demo.notice()
    assert kind == "missing" and demo.create_command in html and tip.startswith("missing:\nrecording")
    assert demo_paths().create_command == "hmavd-demo"
    (data / "recordings").mkdir(parents=True)
    (data / "recordings" / "sub-01_test.fif").write_bytes(b"")
    (data / "preprocessed_eeg" / "sub-01").mkdir(parents=True)
    (data / "preprocessed_eeg" / "sub-01" / "mvnn.npz").write_bytes(b"")
    (data / "features" / "clip").mkdir(parents=True)
    (data / "features" / "clip" / "features.safetensors").write_bytes(b"")
    for run in ("nice", "hmavd"):
        (runs / run).mkdir(parents=True)
        (runs / run / "best.safetensors").write_bytes(b"")
    demo = demo_paths(data, runs)
    assert demo.ready, demo.missing
    assert demo.checkpoint == runs / "hmavd" / "best.safetensors"  # HMAVD before the NICE baseline
    assert demo.features == data / "features" / "clip"
    assert demo.notice()[1:] == ("ready", str(data / "recordings" / "sub-01_test.fif"))


def test_stream_entries_split_and_unique_names():
    eeg = StreamEntry("amp", "EEG", 64, 1000.0, "id1", "host")
    mk = StreamEntry("mk", "Markers", 1, 0.0)
    assert split_streams([mk, eeg]) == ([eeg], [mk])
    assert "64 ch @ 1000 Hz" in eeg.label() and "irregular" in mk.label()
    a, b = unique_names("hmavd-live"), unique_names("hmavd-live")
    assert a != b and a[0] != a[1] and a[0].startswith("hmavd-live-eeg-") and a[1].startswith("hmavd-live-markers-")


def test_format_status_shows_online_mvnn_and_the_accumulated_curve():
    base = {"sfreq_measured": 250.0, "n_epochs": 60, "rejected": {}}
    warm = {"source": "training", "n_epochs": 12, "warmup_epochs": 50, "frozen": False}
    assert "MVNN training (warm-up 12/50)" in format_status({**base, "mvnn": warm})
    on = {**warm, "source": "online", "n_epochs": 60, "frozen": True, "changed_at_epoch": 58}
    acc = {
        "curve": [
            {"k": 1, "top1": 0.05, "top5": 0.1, "n_images": 60},
            {"k": 5, "top1": 0.25, "top5": 0.5, "n_images": 12},
        ]
    }
    text = format_status({**base, "mvnn": on, "accumulated": acc})
    assert "MVNN online, 60 epochs (frozen), changed at epoch 58" in text
    assert "averaged k=5: top-1 25.0 % / top-5 50.0 %" in text
    assert "MVNN" not in format_status(base)


def test_engine_factory_refuses_unknown_keys_and_builds_known_ones():
    from gui.engine_link import default_engine_factory

    with pytest.raises(UserError, match="unknown key.*eeg_strem"):
        default_engine_factory({"eeg_strem": "typo"})
    engine = default_engine_factory({"eeg_stream": "x", "checkpoint": "c.safetensors", "top_k": 5})
    assert engine.cfg.eeg_stream == "x" and not engine.alive  # built, not started
