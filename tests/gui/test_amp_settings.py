"""The window remembers the amplifier settings and hands them to the engine's LiveConfig."""

import dataclasses
import typing

from bci.live_config import LiveConfig
from gui.settings import AMPLIFIER_FIELDS, LiveSettings, load_settings, save_settings


def test_amplifier_settings_round_trip_and_reach_live_config(tmp_path):
    s = LiveSettings(stream_units="uV", interpolate_missing=2, marker_offset_s=0.016, amplitude_check="warn")
    path = save_settings(s, tmp_path / "live.json")
    back = load_settings(path)
    assert back.amplifier_values() == {
        "stream_units": "uV",
        "amplitude_check": "warn",
        "interpolate_missing": 2,
        "marker_map": "",
        "marker_offset_s": 0.016,
    }
    cfg = LiveConfig(**back.amplifier_values())
    assert (cfg.stream_units, cfg.interpolate_missing, cfg.marker_offset_s) == ("uV", 2, 0.016)


def test_settings_shared_with_live_config_have_its_defaults_and_types():
    """One source of truth: a remembered setting that is also a LiveConfig field starts at LiveConfig's default."""
    live = {f.name: f for f in dataclasses.fields(LiveConfig)}
    live_types = typing.get_type_hints(LiveConfig)
    settings_types = typing.get_type_hints(LiveSettings)
    shared = [f for f in dataclasses.fields(LiveSettings) if f.name in live]
    assert {"eeg_stream", "checkpoint", "record_dir", "replay_speed", *AMPLIFIER_FIELDS} <= {f.name for f in shared}
    for f in shared:
        assert f.default == live[f.name].default, f.name
        assert settings_types[f.name] == live_types[f.name], f.name
    assert set(AMPLIFIER_FIELDS) <= set(live)  # every amplifier key reaches LiveConfig
    defaults = LiveSettings()
    assert LiveConfig(**defaults.amplifier_values()) == LiveConfig()
