"""Stream units: labels parsed and converted to the model's units; unlabelled streams checked by amplitude."""

import time
import uuid

import numpy as np
import pytest
from bci_testkit import CH_NAMES, cli_flags, headless_argv, make_recording, tiny_checkpoint

from bci.engine import LiveEngine
from bci.live_config import LiveConfig
from bci.replay import LSLPlayer, load_replay
from bci.sources import InMemorySource, StreamDescription
from bci.stream_setup import AmplitudeCheck, plan_input
from bci.units import amplitude_verdict, channel_scales, expected_std, unit_to_volts
from hmavd.channels import THINGS63
from hmavd.errors import UserError
from hmavd.preprocessing.presets import PRESETS


@pytest.mark.parametrize(
    "label, volts",
    [
        ("microvolts", 1e-6),
        ("µV", 1e-6),
        ("uV", 1e-6),
        ("UV", 1e-6),
        ("μV", 1e-6),
        ("millivolts", 1e-3),
        ("mV", 1e-3),
        ("MV", 1e-3),
        ("volts", 1.0),
        ("V", 1.0),
        ("nanovolts", 1e-9),
        ("nV", 1e-9),
        ("", None),
    ],
)
def test_unit_labels(label, volts):
    assert unit_to_volts(label) == volts


def test_unknown_unit_is_one_line_error():
    with pytest.raises(UserError, match="stream_units: unit 'furlongs'.*use one of V, mV, uV"):
        unit_to_volts("furlongs")


def test_channel_scales_labels_setting_and_unlabelled():
    s, known = channel_scales(["microvolts", "mV", "V", ""], [0, 1, 2], "V")
    assert known and np.allclose(s, [1e-6, 1e-3, 1.0])
    s, known = channel_scales(["microvolts", ""], [0, 1], "V")
    assert not known and np.allclose(s, [1e-6, 1.0])
    s, known = channel_scales(["", ""], [0, 1], "V", stream_units="uV")  # the setting wins
    assert known and np.allclose(s, 1e-6)
    s, _ = channel_scales(["V"], [0], "uV")  # a model trained in µV gets µV
    assert np.allclose(s, 1e6)
    with pytest.raises(UserError, match="eeg_stream: 'amp' labels channel 0 in 'degC'"):
        channel_scales(["degC"], [0], "V", stream="amp")


def test_amplitude_verdict_catches_orders_of_magnitude():
    rng = np.random.default_rng(0)
    volts = rng.standard_normal((4, 500)) * 2e-5
    exp, where = expected_std(None, "V")
    assert 1e-6 < exp < 1e-4 and where == "typical scalp EEG"
    assert amplitude_verdict(volts, exp, where, "s") is None
    msg = amplitude_verdict(volts * 1e6, exp, where, "s")  # µV sent as if volts
    assert "stream_units=uV" in msg and msg.startswith("eeg_stream: 's' has no channel units")
    assert "stream_units=mV" in amplitude_verdict(volts * 1e3, exp, where, "s")
    # from the training data's MVNN whitening: W = C^-1/2 with C = diag(std^2)
    w = np.diag(1 / np.array([1e-5, 2e-5, 3e-5, 4e-5]))
    exp, where = expected_std(w, "V")
    assert exp == pytest.approx(2.5e-5) and "training data" in where


def test_amplitude_check_refuses_or_warns():
    desc = StreamDescription("amp", tuple(CH_NAMES), 200.0)
    plan = plan_input(desc, CH_NAMES, "V")
    assert not plan.units_known
    rng = np.random.default_rng(1)
    for mode in ("refuse", "warn"):
        src = InMemorySource(CH_NAMES, 200.0)
        src.connect()
        check = AmplitudeCheck(plan, None, "V", mode=mode, seconds=1.0)
        src.push(rng.standard_normal((4, 150)) * 20.0)  # µV, unlabelled
        src.acquire()
        assert check.update(src, "amp") is False  # not enough data yet: decoding waits
        src.push(rng.standard_normal((4, 100)) * 20.0)
        src.acquire()
        if mode == "refuse":
            with pytest.raises(UserError, match="set stream_units=uV"):
                check.update(src, "amp")
        else:
            assert check.update(src, "amp") is True and "stream_units=uV" in check.message


def _names():
    tag = uuid.uuid4().hex[:8]
    return f"test-units-eeg-{tag}", f"test-units-mk-{tag}"


def _decode_over_lsl(rec, ckpt, cache, units, label_units=True, **cfg):
    eeg, mk = _names()
    player = LSLPlayer(rec, eeg, mk, replay_speed=4.0, units=units, label_units=label_units)
    eng = LiveEngine(
        LiveConfig(
            eeg_stream=eeg,
            marker_stream=mk,
            checkpoint=str(ckpt),
            features=str(cache),
            device="cpu",
            whitening="none",
            resolve_timeout_s=5.0,
            **cfg,
        )
    )
    eng.connect()
    player.start()
    preds = []
    try:
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end and not (player.done.is_set() and not eng.epocher.pending):
            eng.acquire(0.05)
            preds += [m for m in eng.get_data() if m["type"] == "prediction"]
    finally:
        eng.disconnect()
        player.close()
    return preds, eng


@pytest.mark.lsl
def test_same_predictions_in_volts_microvolts_millivolts(tmp_path):
    """The recording streamed in V, µV and mV (labelled) decodes as the in-process replay of the file."""
    ckpt, cache, _ = tiny_checkpoint(tmp_path, ch_names=THINGS63, preset=PRESETS["nice"], sfreq_in=250.0)
    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=8.0, ch_names=THINGS63, sfreq=250.0)
    # = hmavd-live --headless --replay
    ref = LiveEngine(
        LiveConfig(
            checkpoint=str(ckpt),
            features=str(cache),
            device="cpu",
            whitening="none",
            replay=str(path),
            replay_speed=50.0,
        )
    )
    ref.connect()
    ref_preds = []
    t_end = time.monotonic() + 20
    while time.monotonic() < t_end and not ref.finished:
        ref.acquire(0.05)
        ref_preds += [m for m in ref.get_data() if m["type"] == "prediction"]
    ref.disconnect()
    assert len(ref_preds) == len(events)
    by_index = {p["sample_index"]: p for p in ref_preds}
    rec = load_replay(str(path))
    for units in ("V", "uV", "mV"):
        preds, eng = _decode_over_lsl(rec, ckpt, cache, units)
        assert len(preds) >= len(events) - 1, units  # the first marker may precede the first sample
        for p in preds:
            r = by_index[p["sample_index"]]
            assert [c for c, _ in p["topk"]] == [c for c, _ in r["topk"]], units
            np.testing.assert_allclose([s for _, s in p["topk"]], [s for _, s in r["topk"]], atol=1e-4)
        if units != "V":
            assert any("converted" in n for n in eng.status()["messages"])


@pytest.mark.lsl
def test_unlabelled_microvolt_stream_is_caught(tmp_path):
    ckpt, cache, _ = tiny_checkpoint(tmp_path, ch_names=THINGS63, preset=PRESETS["nice"], sfreq_in=250.0)
    path, _, _ = make_recording(tmp_path / "rec_raw.fif", duration_s=6.0, ch_names=THINGS63, sfreq=250.0)
    rec = load_replay(str(path))
    with pytest.raises(UserError, match="no channel units .*set stream_units=uV"):
        _decode_over_lsl(rec, ckpt, cache, "uV", label_units=False)
    preds, _ = _decode_over_lsl(rec, ckpt, cache, "uV", label_units=False, stream_units="uV")  # the fix works
    assert len(preds) >= 15


def test_model_units_from_checkpoint_and_prepared_data(tmp_path):
    """A checkpoint's recorded units drive the conversion; old checkpoints without them mean volts."""
    from bci_testkit import CONCEPTS, N_TIMES, PRESET, tiny_model

    from bci.decoder import Decoder

    def engine(info):
        dec = Decoder.from_model(
            tiny_model(), np.zeros((len(CONCEPTS), 16), np.float32), CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu"
        )
        src = InMemorySource(CH_NAMES, 200.0, ch_units=["microvolts"] * 4)
        eng = LiveEngine(LiveConfig(stride_s=1.0), source=src, decoder=dec, preset=PRESET, whitening=None)
        eng.info = info
        eng.connect()
        return eng

    assert np.allclose(engine({}).plan.scale, 1e-6)  # no record: volts
    assert engine({"units": "uV"}).plan.scale is None  # µV model, µV stream: nothing to convert
    assert np.allclose(engine({"units": "mV"}).plan.scale, 1e-3)


def test_warn_mode_reaches_the_banner_and_decodes():
    from bci_testkit import CONCEPTS, N_TIMES, PRESET, tiny_model

    from bci.decoder import Decoder
    from bci.markers import InMemoryMarkers

    dec = Decoder.from_model(
        tiny_model(), np.zeros((len(CONCEPTS), 16), np.float32), CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu"
    )
    src, marks = InMemorySource(CH_NAMES, 200.0), InMemoryMarkers()
    eng = LiveEngine(
        LiveConfig(amplitude_check="warn", status_interval_s=0.0),
        source=src,
        markers=marks,
        decoder=dec,
        preset=PRESET,
        whitening=None,
    )
    eng.connect()
    marks.push(0.5, 1)
    msgs = []
    rng = np.random.default_rng(0)
    for _ in range(6):
        src.push(rng.standard_normal((4, 100)) * 20.0)  # µV, unlabelled
        eng.acquire()
        msgs += eng.get_data()
    errors = [m["message"] for m in msgs if m["type"] == "error"]
    assert len(errors) == 1 and errors[0].startswith("warning: eeg_stream:") and "stream_units=uV" in errors[0]
    assert sum(m["type"] == "prediction" for m in msgs) == 1  # decoded anyway, after the check
    assert "stream_units=uV" in eng.status()["messages"][0]


@pytest.mark.lsl
def test_replay_command_unlabelled_microvolts_refused_by_headless(tmp_path, capsys):
    """`hmavd-replay --units uV --no-unit-label` → `hmavd-live --headless`: one line, exit status 2."""
    import subprocess
    import sys

    from gui.cli import main as live_main

    ckpt, cache, _ = tiny_checkpoint(tmp_path, ch_names=THINGS63, preset=PRESETS["nice"], sfreq_in=250.0)
    path, _, _ = make_recording(tmp_path / "rec_raw.fif", duration_s=5.0, ch_names=THINGS63, sfreq=250.0)
    eeg, mk = _names()
    code = "import sys; from bci.cli_replay import main; sys.exit(main())"
    replay_args = [str(path), *cli_flags(eeg_stream=eeg, marker_stream=mk, replay_speed=2, wait_consumers_s=30)]
    replay_args += ["--units", "uV", "--no-unit-label"]
    player = subprocess.Popen(
        [sys.executable, "-c", code, *replay_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        flags = {"eeg_stream": eeg, "marker_stream": mk, "duration": 8}
        rc = live_main(headless_argv(ckpt, cache, tmp_path / "out", "resolve_timeout_s=20", "whitening=none", **flags))
        out, _ = player.communicate(timeout=30)
    finally:
        player.kill()
    err = capsys.readouterr().err
    assert rc == 2 and "uV, unlabelled" in out
    line = next(x for x in err.splitlines() if "has no channel units" in x)
    assert line.startswith("hmavd-live: error: eeg_stream:") and "set stream_units=uV" in line


@pytest.mark.parametrize("record_format", ["xdf", "folder"])
@pytest.mark.parametrize("labelled", [True, False])
def test_session_of_a_microvolt_stream_replays_in_volts(tmp_path, labelled, record_format):
    """Recorded as received (µV); hmavd-replay of the session streams volts again (labels or stream_units)."""
    from bci_testkit import CONCEPTS, N_TIMES, PRESET, tiny_model

    from bci.decoder import Decoder
    from bci.markers import InMemoryMarkers

    dec = Decoder.from_model(
        tiny_model(), np.zeros((len(CONCEPTS), 16), np.float32), CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu"
    )
    src = InMemorySource(CH_NAMES, 200.0, ch_units=["microvolts" if labelled else ""] * 4)  # as LSL delivers
    cfg = LiveConfig(stream_units="" if labelled else "uV", status_interval_s=0.0, record_format=record_format)
    eng = LiveEngine(cfg, source=src, markers=InMemoryMarkers(), decoder=dec, preset=PRESET, whitening=None)
    eng.connect()
    eng.record_start(str(tmp_path / "session"))
    volts = np.random.default_rng(0).standard_normal((4, 600)) * 1e-5
    for a in range(0, 600, 50):
        src.push(volts[:, a : a + 50] * 1e6)
        eng.acquire()
    eng.record_stop()
    eng.disconnect()
    rec = load_replay(str(tmp_path / "session"))
    np.testing.assert_allclose(rec.data[:4], volts, rtol=1e-6, atol=1e-12)
