"""Signal quality: the pure flags on tiny generated signals, the engine's message, the headless log."""

import logging

import numpy as np
import pytest
from bci_testkit import CH_NAMES, CONCEPTS, N_TIMES, PRESET, tiny_model

from bci.decoder import Decoder
from bci.engine import LiveEngine
from bci.headless import run_headless
from bci.live_config import LiveConfig
from bci.quality import (
    QualityConfig,
    assess,
    channel_rms,
    flat_channels,
    line_noise_ratio,
    quality_changes,
    quality_summary,
    railed_channels,
)
from bci.replay import RecordingSource, ReplayData

SFREQ = 250.0


def _clean(rng, n, sfreq=SFREQ, rms=10e-6):
    """Broadband noise plus a 10 Hz rhythm, ~``rms`` volts."""
    t = np.arange(n) / sfreq
    return rng.standard_normal(n) * rms + 0.5 * rms * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6))


def _channels(n=500, line_freq=50.0, seed=0):
    """Rows: clean, clean + 1 mV offset, flat, railed (clipped at ±12 µV), line noise, noisy (0.5 mV)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SFREQ
    clean2 = _clean(rng, n) + 1e-3  # an amplifier's DC offset is not a fault
    railed = np.clip(_clean(rng, n, rms=15e-6), -12e-6, 12e-6)
    line = _clean(rng, n) + 40e-6 * np.sin(2 * np.pi * line_freq * t)
    noisy = rng.standard_normal(n) * 5e-4
    return np.stack([_clean(rng, n), clean2, np.full(n, 3e-4), railed, line, noisy])


def test_each_flag_on_its_channel_and_clean_channels_pass():
    x = _channels()
    np.testing.assert_allclose(channel_rms(x[:2]), [np.std(x[0]), np.std(x[1])], rtol=1e-12)
    assert flat_channels(x).tolist() == [False, False, True, False, False, False]
    assert railed_channels(x).tolist() == [False, False, False, True, False, False]
    ratio = line_noise_ratio(x, SFREQ, 50.0)
    assert ratio[4] > 0.5 and ratio[[0, 1, 3, 5]].max() < 0.1 and ratio[2] == 0.0  # a flat channel has no power
    q = assess(x, SFREQ, ["a", "b", "flat", "railed", "line", "noisy"])
    assert q["bad"] == {"flat": ["flat"], "railed": ["railed"], "line": ["line"], "noisy": ["noisy"]}
    assert q["line_freq"] == 50.0 and len(q["rms_v"]) == 6


def test_line_frequency_is_found_and_thresholds_apply():
    q = assess(_channels(line_freq=60.0), SFREQ, list("abcdef"))
    assert q["line_freq"] == 60.0 and q["bad"]["e"] == ["line"]
    q50 = assess(_channels(line_freq=60.0), SFREQ, list("abcdef"), QualityConfig(line_freq=50.0))
    assert "e" not in q50["bad"]  # 60 Hz noise is not 50 Hz noise
    assert assess(_channels(), SFREQ, list("abcdef"), QualityConfig(noisy_rms_v=1e-3))["bad"].get("f") is None
    # an absolute rail level catches a channel pinned at the input range (flat at +0.3 mV)
    assert railed_channels(_channels(), abs_max=2e-4).tolist()[2] is True
    # the line band above Nyquist (a 100 Hz stream) gives 0, not an error
    assert line_noise_ratio(np.ones((1, 200)), 100.0, 50.0).tolist() == [0.0]


def test_summary_and_changes():
    q = assess(_channels(), SFREQ, ["Fz", "Cz", "Pz", "Oz", "O1", "O2"])
    text = quality_summary(q)
    assert text.startswith("6 ch: 2 ok") and "flat: Pz" in text and "railed: Oz" in text
    assert "line 50 Hz: O1" in text and "noisy: O2" in text and "median RMS" in text
    assert quality_changes(None, q) and not quality_changes(q, dict(q))
    assert quality_changes(q, {**q, "bad": {"Pz": ["flat"]}})


def _decoder():
    templates = np.random.default_rng(3).standard_normal((len(CONCEPTS), 16)).astype(np.float32)
    return Decoder.from_model(tiny_model(), templates, CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu")


def _replay(flat_from_s=None, sfreq=200.0, duration_s=6.0):
    """4 model channels (O2 with 50 Hz line noise) + sample_index, markers every 0.5 s."""
    rng = np.random.default_rng(2)
    n = int(duration_s * sfreq)
    data = np.stack([_clean(rng, n, sfreq) for _ in CH_NAMES])
    data[2] += 40e-6 * np.sin(2 * np.pi * 50 * np.arange(n) / sfreq)
    if flat_from_s is not None:
        data[3, int(flat_from_s * sfreq) :] = 0.0
    data = np.vstack([data, np.arange(n)[None]])
    events = tuple((int(s), str(1 + k % len(CONCEPTS))) for k, s in enumerate(range(100, n - 150, 100)))
    return ReplayData(data, (*CH_NAMES, "sample_index"), ("eeg",) * 4 + ("misc",), sfreq, events)


def test_engine_sends_quality_messages():
    src = RecordingSource(_replay(), chunk_s=0.1, poll_interval_s=None)
    cfg = LiveConfig(quality_interval_s=1e-9)
    eng = LiveEngine(cfg, source=src, markers=src.markers, decoder=_decoder(), preset=PRESET)
    eng.connect()
    msgs = []
    while not eng.finished:
        eng.acquire()
        msgs += [m for m in eng.get_data() if m["type"] == "quality"]
    assert msgs and all(m["ch_names"] == list(CH_NAMES) for m in msgs)  # sample_index left out
    assert all(m["bad"] == {"O2": ["line"]} for m in msgs) and all(m["line_freq"] == 50.0 for m in msgs)
    assert msgs[0]["window_s"] >= 0.5 and msgs[-1]["window_s"] == pytest.approx(2.0)
    assert eng.n_predictions > 0  # quality messages do not get in the way of decoding


def test_headless_logs_quality_at_start_and_on_change(tmp_path, caplog):
    src = RecordingSource(_replay(flat_from_s=3.0), chunk_s=0.1, poll_interval_s=None)
    cfg = LiveConfig(quality_interval_s=1e-9)
    eng = LiveEngine(cfg, source=src, markers=src.markers, decoder=_decoder(), preset=PRESET)
    with caplog.at_level(logging.INFO, logger="bci.headless"):
        summary = run_headless(cfg, duration_s=60.0, out_dir=tmp_path / "out", engine=eng)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("signal quality:")]
    assert len(lines) == 2, lines  # once at start, once when Pz went flat; not once a second
    assert "line 50 Hz: O2" in lines[0] and "flat" not in lines[0]
    assert "flat: Pz" in lines[1] and "line 50 Hz: O2" in lines[1]
    assert "flat: Pz" in summary["quality"]
