"""The window with a real engine process on a replayed LSL stream (real pylsl on loopback, offscreen Qt).

A small FIF recording (4 occipital/parietal channels + stim at 200 Hz, a marker every 200 ms) is
replayed by ``hmavd-replay`` in a child process under unique stream names; a tiny randomly
initialised HMAVD checkpoint decodes it with the ``gifford`` preset. The window must show
predictions, scroll the scope with marker ticks, and survive the replay stopping.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gui.main_window import MainWindow
from gui.settings import LiveSettings

pytestmark = [pytest.mark.lsl]

CH_NAMES = ["O1", "Oz", "O2", "Pz"]
CONCEPTS = [f"{i + 1:05d}_thing{i + 1}" for i in range(6)]
SFREQ = 200.0


def _recording(path, duration_s=30.0, seed=0):
    import mne

    rng = np.random.default_rng(seed)
    n = int(duration_s * SFREQ)
    eeg = rng.normal(0.0, 10e-6, (len(CH_NAMES), n))  # volts
    stim = np.zeros((1, n))
    onsets = np.arange(int(0.5 * SFREQ), n - int(1.0 * SFREQ), int(0.2 * SFREQ))
    stim[0, onsets] = 1 + np.arange(len(onsets)) % len(CONCEPTS)
    info = mne.create_info(CH_NAMES + ["STI"], SFREQ, ["eeg"] * len(CH_NAMES) + ["stim"])
    mne.io.RawArray(np.concatenate([eeg, stim]), info, verbose="error").save(path, verbose="error")
    return path


def _checkpoint(tmp_path):
    from hmavd.checkpoint import save_checkpoint
    from hmavd.features.cache import save_feature_cache
    from hmavd.models.hmavd_model import HMAVD, ModelConfig
    from hmavd.preprocessing.presets import PRESETS
    from hmavd.preprocessing.transforms import preprocessed_times

    times = preprocessed_times(PRESETS["gifford"], SFREQ)
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="tsconv", n_chans=len(CH_NAMES), n_times=len(times), feature_dim=16, proj_dim=16,
                      img_reduction=2, txt_reduction=2)  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "best.safetensors", HMAVD(cfg).eval(),
                           extra={"ch_names": CH_NAMES, "times": times.tolist(), "sfreq": 100.0,
                                  "preset": "gifford"})  # fmt: skip
    rng = np.random.default_rng(1)
    k = len(CONCEPTS)
    arrays = {
        "train_image_features": rng.standard_normal((4, 16)).astype(np.float32),
        "test_image_features": rng.standard_normal((k, 16)).astype(np.float32),
        "train_text_features": rng.standard_normal((2, 16)).astype(np.float32),
        "test_text_features": rng.standard_normal((k, 16)).astype(np.float32),
    }
    prov = {"model": "random", "train_images": [f"a/{i}.jpg" for i in range(4)],
            "test_images": [f"{c}/{c}.jpg" for c in CONCEPTS], "train_concepts": ["x", "y"],
            "test_concepts": CONCEPTS}  # fmt: skip
    return ckpt, save_feature_cache(tmp_path / "features", arrays, prov)


def test_window_decodes_a_replayed_stream_and_survives_it_stopping(qtbot, tmp_path):
    ckpt, features = _checkpoint(tmp_path)
    rec = _recording(tmp_path / "rec_raw.fif")
    settings = LiveSettings(checkpoint=str(ckpt), features=str(features), replay_speed=2.0,
                            data_dir=str(tmp_path / "nosim"), runs_dir=str(tmp_path / "noruns"),
                            record_dir=str(tmp_path / "recordings"))  # fmt: skip
    win = MainWindow(settings, settings_path=tmp_path / "s.json", auto_discover=False)
    qtbot.addWidget(win)
    win.show()
    try:
        assert win.start_replay(rec), win.banner.messages
        qtbot.waitUntil(lambda: win.n_predictions >= 5 or win.engine is None or win.replay is None,
                        timeout=60_000)  # fmt: skip
        assert win.n_predictions >= 5, win.banner.messages
        assert win.connected_info["ch_names"][:4] == CH_NAMES
        names = win.topk.names()
        assert names[0] != "–" and set(names) <= {f"thing{i + 1}" for i in range(6)}
        assert win.topk.highlighted() or "not in top-5" in win.topk.truth.text()  # markers carry the truth
        assert win.history.accuracy.n >= 5
        assert win.scope.n_draws >= 3 and win.scope.visible_markers()
        x, y = win.scope.curves[0].getData()
        assert np.isfinite(y).sum() > 10
        qtbot.waitUntil(lambda: "latency p50" in win.status.text(), timeout=5000)
        # the stream stops: the window keeps running, shows no crash, and can disconnect cleanly
        win.stop_replay()
        n_before = win.n_predictions
        qtbot.wait(1500)
        assert win.isVisible() and win.n_predictions <= n_before + 10
        win.disconnect_engine()
        assert win.engine is None and win.connect_button.isEnabled()
    finally:
        win.shutdown()
