"""Sessions that differ: the new simulated session's noise change, and hmavd-simulate new_session=true."""

import json

import numpy as np
import pytest

from hmavd.cli.simulate import main as simulate_main
from hmavd.config import load_config, save_config
from hmavd.errors import UserError
from hmavd.preprocessing.prepare import epoch_recording, load_mvnn
from hmavd.preprocessing.presets import get_preset
from hmavd.preprocessing.raw_io import read_recording
from hmavd.preprocessing.transforms import mvnn_covariance
from hmavd.sim_sessions import SessionChange, draw_session, line_noise
from hmavd.simulate_io import SimulateConfig, simulate_dataset

TINY = {
    "n_train_concepts": 10,
    "n_train_images_per_concept": 2,
    "n_test_concepts": 12,
    "n_sessions": 2,
    "train_reps_per_session": 1,
    "test_reps_per_session": 3,
    "n_sources": 8,
    "progress": False,
}


def test_line_noise_is_a_sinusoid_of_the_given_amplitude_and_frequency():
    amp, phase = np.array([1e-6, 4e-6]), np.array([0.0, 1.0])
    x = line_noise(1000, 1000.0, 50.0, amp, phase)  # (2, 1000): exactly 50 periods
    np.testing.assert_allclose(x.std(axis=1), amp / np.sqrt(2), rtol=1e-6)
    spec = np.abs(np.fft.rfft(x[1]))
    assert int(np.argmax(spec)) == 50  # 1 Hz bins


def test_scaled_change_interpolates_from_none_to_the_documented_one():
    ch = SessionChange()
    none = ch.scaled(0.0, 0.1, 0.2)
    assert (none.gain_sd, none.length_m, none.white_fraction, none.noisy_factor, none.line_uv) == (0, 0.1, 0.2, 1, 0)
    assert ch.scaled(1.0, 0.1, 0.2) == ch
    d0 = draw_session(np.random.default_rng(0), 63, none)
    np.testing.assert_array_equal(d0["gains"], 1.0)
    np.testing.assert_array_equal(d0["noise_factor"], 1.0)
    assert d0["line_amp_v"].max() == 0
    d1 = draw_session(np.random.default_rng(0), 63, ch)
    assert (
        sorted(np.flatnonzero(d1["noise_factor"] == 3.0)) == list(d1["noisy_channels"])
        and len(d1["noisy_channels"]) == 2
    )
    assert 0.1 < np.std(np.log(d1["gains"])) < 0.4 and 0 < d1["line_amp_v"].max() <= 5e-6
    with pytest.raises(UserError, match="new_session_change: -1"):
        ch.scaled(-1.0, 0.1, 0.2)


def test_new_session_is_written_and_the_training_whitening_is_stale_for_it(tmp_path, capsys):
    out = tmp_path / "sim"
    cfg = load_config(SimulateConfig, None, TINY)
    simulate_dataset(cfg, out)
    save_config(cfg, out / "simulate_config.yaml")  # as hmavd-simulate leaves it
    assert simulate_main(["--out", str(tmp_path / "none"), "new_session=true"]) == 2  # no dataset there
    assert "holds no simulated dataset" in capsys.readouterr().err
    assert simulate_main(["--out", str(out), "new_session=true"]) == 0  # the dataset's own sizes
    assert "SIMULATED new session" in capsys.readouterr().out
    info = json.loads((out / "new_session" / "session_change.json").read_text())
    assert info["change"]["noisy_factor"] == 3.0 and len(info["subjects"][0]["noisy_channels"]) == 2
    assert (out / "new_session" / "raw_eeg" / "sub-01" / "ses-01" / "raw_eeg_training.npy").exists()
    preset = get_preset("nice")

    def session_cov(path):
        raw, events = read_recording(path)
        events = events[events[:, 2] != preset.catch_id]
        assert len(events) == TINY["n_test_concepts"] * TINY["test_reps_per_session"]
        x, _, _, _ = epoch_recording(raw.load_data(), events, preset)  # (n, C, T)
        return mvnn_covariance(np.asarray(x, dtype=np.float64)[:, None])  # (C, C)

    new = session_cov(out / info["subjects"][0]["paths"]["replay"])
    old = session_cov(out / "recordings" / "sub-01_test.fif")  # a training session (ses-01)
    w_stale = load_mvnn(out / "preprocessed_eeg" / "sub-01" / "mvnn.npz")["whitening"][0]
    eye = np.eye(len(new))

    def off_white(cov):  # how far the stale matrix leaves the session from white noise
        return np.linalg.norm(w_stale @ cov @ w_stale - eye) / np.linalg.norm(eye)

    assert off_white(new) > 2 * off_white(old)
    ratio = np.sqrt(np.diag(new) / np.diag(old))
    names = load_mvnn(out / "preprocessed_eeg" / "sub-01" / "mvnn.npz")["ch_names"]
    noisy = [names.index(c) for c in info["subjects"][0]["noisy_channels"] if c in names]
    assert all(ratio[i] > 1.8 for i in noisy)  # 3x noise x a +-25 % gain
