"""The window remembers the amplifier settings and hands them to the engine's LiveConfig."""

from bci.live_config import LiveConfig
from gui.settings import LiveSettings, load_settings, save_settings


def test_amplifier_settings_round_trip_and_reach_live_config(tmp_path):
    s = LiveSettings(stream_units="uV", interpolate_missing=2, marker_offset_s=0.016, amplitude_check="warn")
    path = save_settings(s, tmp_path / "live.json")
    back = load_settings(path)
    assert back.amplifier_values() == {"stream_units": "uV", "amplitude_check": "warn", "interpolate_missing": 2,
                                       "marker_map": "", "marker_offset_s": 0.016}  # fmt: skip
    cfg = LiveConfig(**back.amplifier_values())
    cfg.validate()
    assert (cfg.stream_units, cfg.interpolate_missing, cfg.marker_offset_s) == ("uV", 2, 0.016)
