"""resolve_session / resolve_stream on tiny dict inputs: what a checkpoint and the settings imply (no LSL, no model)."""

import dataclasses

import numpy as np
import pytest
from bci_testkit import CH_NAMES, N_TIMES, PRESET, SFREQ_IN

from bci.live_config import LiveConfig, live_config_from_values
from bci.session_plan import load_session_whitening, preset_for_checkpoint, resolve_session, resolve_stream
from bci.sources import StreamDescription
from hmavd.errors import UserError
from hmavd.preprocessing.presets import PRESETS
from hmavd.preprocessing.transforms import preprocessed_times


def _info(**kw):
    """A checkpoint's metadata as hmavd.checkpoint writes it (the parts the live session reads)."""
    times = preprocessed_times(PRESETS["nice"], 1000.0).tolist()
    return {
        "ch_names": list(CH_NAMES),
        "times": times,
        "sfreq": 250.0,
        "path": "runs/r/best.safetensors",
        "features_path": "data/features/f",
        **kw,
    }


def _subject_run(tmp_path, with_file=True):
    """A project whose checkpoint names one training subject; its mvnn.npz exists when ``with_file``."""
    root = tmp_path / "project"
    sub = root / "data" / "preprocessed_eeg" / "sub-03"
    sub.mkdir(parents=True)
    if with_file:
        w = np.stack([np.diag([1.0, 2.0, 3.0, 4.0]), np.diag([3.0, 2.0, 1.0, 2.0])])
        np.savez(sub / "mvnn.npz", whitening=w, ch_names=np.array(CH_NAMES))
    info = _info(
        path=str(root / "runs" / "r" / "best.safetensors"), train_config={"data_dir": "data"}, train_subjects=[3]
    )
    return info, sub / "mvnn.npz"


def test_preset_units_channels_and_time_axis_come_from_the_checkpoint():
    plan = resolve_session(LiveConfig(whitening="none"), _info())
    assert plan.preset.name == "nice" and plan.preset_reason == "time axis"
    assert plan.units == "V" and plan.model_ch_names == tuple(CH_NAMES)
    assert len(plan.model_times) == len(_info()["times"]) and plan.model_sfreq == 250.0
    assert plan.templates.features_path == "data/features/f" and plan.templates.kind == "image"
    assert not plan.templates.gallery and plan.checkpoint == "runs/r/best.safetensors"
    assert (plan.source, plan.markers) == ("lsl", "lsl")
    plan = resolve_session(LiveConfig(whitening="none"), _info(features_path="", template_source="gallery"))
    assert plan.templates.gallery and plan.templates.features_path == ""  # the checkpoint's stored gallery
    # a recorded preset and units win over the time axis; preset= wins over both; a handed preset over all
    plan = resolve_session(LiveConfig(whitening="none"), _info(preset="gifford", units="uV"))
    assert (plan.preset.name, plan.preset_reason, plan.units) == ("gifford", "recorded", "uV")
    plan = resolve_session(LiveConfig(whitening="none", preset="gifford"), _info())
    assert (plan.preset.name, plan.preset_reason) == ("gifford", "preset=")
    plan = resolve_session(LiveConfig(whitening="none", preset="gifford"), _info(), preset=PRESET)
    assert (plan.preset.name, plan.preset_reason) == ("tiny", "given")
    with pytest.raises(UserError, match="preset: 'nicer' is not one of"):
        resolve_session(LiveConfig(whitening="none", preset="nicer"), _info())


def test_preset_is_inferred_from_the_time_axis_else_nice():
    for name in ("nice", "gifford"):
        times = preprocessed_times(PRESETS[name], 1000.0).tolist()
        assert preset_for_checkpoint({"times": times, "sfreq": PRESETS[name].sfreq}).name == name
    assert preset_for_checkpoint({"times": [0.0, 0.01], "sfreq": 100.0}).name == "nice"
    assert resolve_session(LiveConfig(whitening="none"), {"times": [0.0], "sfreq": 9.0}).preset_reason == "default"


def test_whitening_source_and_its_reason(tmp_path):
    info, mvnn = _subject_run(tmp_path)
    plan = resolve_session(LiveConfig(), info)  # the training subject's file, found relative to the run
    assert (plan.whitening.kind, plan.whitening.path, plan.whitening.session) == ("file", str(mvnn), None)
    assert plan.whitening.reason == "the training subject's" and not plan.whitening.online
    np.testing.assert_allclose(load_session_whitening(plan, CH_NAMES), np.diag([2.0, 2.0, 2.0, 3.0]))  # mean
    plan = resolve_session(LiveConfig(whitening_session=1, mvnn_online=True), info)
    assert plan.whitening.session == 1 and plan.whitening.online
    np.testing.assert_allclose(load_session_whitening(plan, CH_NAMES), np.diag([3.0, 2.0, 1.0, 2.0]))
    plan = resolve_session(LiveConfig(whitening=str(mvnn)), _info())  # given explicitly
    assert (plan.whitening.kind, plan.whitening.reason) == ("file", "whitening=")
    for cfg, info_, kind in [(LiveConfig(whitening="none"), info, "none"), (LiveConfig(), _info(), "none")]:
        plan = resolve_session(cfg, info_)
        assert plan.whitening.kind == kind and plan.whitening.path == ""
        assert load_session_whitening(plan, CH_NAMES) is None
    plan = resolve_session(LiveConfig(), info, whitening_given=True)  # a matrix handed over: no file is read
    assert plan.whitening.kind == "given" and load_session_whitening(plan, CH_NAMES) is None


def test_missing_files_are_one_line_errors(tmp_path):
    info, _ = _subject_run(tmp_path, with_file=False)
    with pytest.raises(UserError, match="whitening: not set, and the training subject's .*was not found"):
        resolve_session(LiveConfig(), info)
    cases = [
        ({"whitening": str(tmp_path / "w.npz")}, "whitening: .*w.npz' does not exist"),
        ({"marker_map": str(tmp_path / "m.csv"), "whitening": "none"}, "marker_map: .*is not a file"),
        ({"replay": str(tmp_path / "r.fif"), "whitening": "none"}, "replay: .*does not exist"),
    ]
    for values, match in cases:
        with pytest.raises(UserError, match=match) as err:
            resolve_session(LiveConfig(**values), _info())
        assert "\n" not in str(err.value)


def test_sources_follow_the_settings(tmp_path):
    rec = tmp_path / "rec_raw.fif"
    rec.write_bytes(b"")
    assert resolve_session(LiveConfig(whitening="none", stride_s=0.5), _info()).markers == "stride"
    plan = resolve_session(LiveConfig(whitening="none", stride_s=0.5, marker_stream="mk"), _info())
    assert plan.markers == "lsl"
    plan = resolve_session(LiveConfig(whitening="none", replay=str(rec)), _info())
    assert (plan.source, plan.markers) == ("replay", "replay")


def _stream(sfreq=SFREQ_IN, names=(*CH_NAMES, "sample_index"), units=()):
    return StreamDescription("amp", tuple(names), sfreq, "float32", tuple(units))


def test_resolve_stream_checks_rate_channels_and_epoch_length():
    plan = resolve_session(LiveConfig(whitening="none"), {"ch_names": CH_NAMES}, preset=PRESET)
    cfg = LiveConfig()
    sp = resolve_stream(plan, _stream(), cfg, 4, N_TIMES)
    assert sp.picks == [0, 1, 2, 3] and sp.index_channel == 4 and sp.epoch_preset == PRESET
    assert sp.input.scale is None and sp.input.matrix is None
    sp = resolve_stream(plan, _stream(units=("uV",) * 4 + ("",)), cfg, 4, N_TIMES)  # µV stream, volt model
    np.testing.assert_allclose(sp.input.scale, 1e-6)
    with pytest.raises(UserError, match="50 Hz, below the model's 100 Hz"):
        resolve_stream(plan, _stream(sfreq=50.0), cfg, 4, N_TIMES)
    with pytest.raises(UserError, match="expected_sfreq is 250 Hz"):
        resolve_stream(plan, _stream(), LiveConfig(expected_sfreq=250.0), 4, N_TIMES)
    with pytest.raises(UserError, match="lacks"):
        resolve_stream(plan, _stream(names=("O1", "Oz", "Cz")), cfg, 4, N_TIMES)
    with pytest.raises(UserError, match="the model needs 7; use the rate/preset"):
        resolve_stream(plan, _stream(), cfg, 4, 7)


def test_live_config_validates_itself_and_the_factory_refuses_unknown_keys():
    for values, match in [
        ({"top_k": 0}, "top_k: 0"),
        ({"poll_interval_s": -1.0}, "poll_interval_s: -1.0"),
        ({"replay_speed": 0.0}, "replay_speed: 0.0"),
        ({"record_format": "edf"}, "record_format"),
        ({"accumulate": "mean"}, "accumulate"),
    ]:
        with pytest.raises(UserError, match=match):
            LiveConfig(**values)
        with pytest.raises(UserError, match=match):
            dataclasses.replace(LiveConfig(), **values)
    assert live_config_from_values({"top_k": 3}).top_k == 3
    with pytest.raises(UserError, match="live settings: unknown key.* poll_timeout_s"):
        live_config_from_values({"poll_timeout_s": 0.1})
