"""End to end: a new simulated session replayed live; online MVNN's accumulated predictions beat stale whitening."""

import numpy as np
import torch

from bci.decoder import Decoder
from bci.engine import LiveConfig, LiveEngine
from bci.replay import RecordingSource, load_replay
from hmavd.config import load_config
from hmavd.data.thingseeg2 import load_split
from hmavd.features.cache import load_feature_cache
from hmavd.preprocessing.prepare import load_mvnn
from hmavd.preprocessing.presets import get_preset
from hmavd.sim_sessions import write_new_session
from hmavd.simulate_io import SimulateConfig, simulate_dataset

SIM = {
    "n_train_concepts": 60,
    "n_train_images_per_concept": 4,
    "n_test_concepts": 40,
    "n_sessions": 2,
    "train_reps_per_session": 1,
    "test_reps_per_session": 8,
    "n_sources": 8,
    "snr": 0.5,
    "progress": False,
    "write_raw": False,
}


class RidgeModel(torch.nn.Module):
    """A linear EEG -> feature map (kernel ridge on the training sessions) with the model's ``encode_eeg``."""

    def __init__(self, eeg: np.ndarray, feats: np.ndarray) -> None:
        super().__init__()
        x = eeg.reshape(len(eeg), -1).astype(np.float64)  # (N, C*T)
        self.mx = torch.as_tensor(x.mean(axis=0), dtype=torch.float32)
        x = x - x.mean(axis=0)
        k = x @ x.T
        coef = np.linalg.solve(k + np.trace(k) / len(k) * np.eye(len(k)), feats - feats.mean(axis=0))
        self.b = torch.as_tensor(x.T @ coef, dtype=torch.float32)  # (C*T, D)

    def encode_eeg(self, x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(len(x), -1) - self.mx) @ self.b  # (B, D)


def _accumulated(out, dec, w, online: bool) -> float:
    path = out / "new_session" / "recordings" / "sub-01_test.fif"
    src = RecordingSource(load_replay(str(path)), chunk_s=0.25, poll_interval_s=None)
    cfg = LiveConfig(mvnn_online=online, mvnn_warmup_epochs=20, accumulate="epochs")
    eng = LiveEngine(cfg, source=src, markers=src.markers, decoder=dec, preset=get_preset("nice"), whitening=w)
    eng.connect()
    while not eng.finished:
        eng.acquire()
    rows = [r for r in eng.accumulator.rows() if r["average"] == "epochs"]
    assert rows[-1]["k"] == SIM["test_reps_per_session"] and rows[-1]["n_images"] == SIM["n_test_concepts"]
    return rows[-1]["top5"], rows[-1]["top1"], eng


def test_online_mvnn_beats_stale_whitening_on_a_new_session(tmp_path):
    out = tmp_path / "sim"
    cfg = load_config(SimulateConfig, None, SIM)
    simulate_dataset(cfg, out)
    write_new_session(cfg.resolved(), out, scale=3.0)  # a large change, so 20 images can show it
    sub = out / "preprocessed_eeg" / "sub-01"
    mv = load_mvnn(sub / "mvnn.npz")
    cache = load_feature_cache(next((out / "features").iterdir()))
    tr = load_split(sub / "preprocessed_eeg_training.npy")
    model = RidgeModel(tr.average_repetitions(), np.asarray(cache.image_features("training"), dtype=np.float64))
    test_feats = np.asarray(cache.image_features("test"), dtype=np.float64)
    templates = (test_feats - np.asarray(cache.image_features("training")).mean(axis=0)).astype(np.float32)
    concepts = [f"{i + 1:05d}_c" for i in range(len(templates))]
    dec = Decoder.from_model(model, templates, concepts, len(mv["ch_names"]), tr.n_times, list(mv["ch_names"]), "cpu")
    w_stale = np.mean(mv["whitening"], axis=0)
    stale5, stale1, _ = _accumulated(out, dec, w_stale, online=False)
    online5, online1, eng = _accumulated(out, dec, w_stale, online=True)
    assert eng.online_mvnn.active and eng.online_mvnn.n_epochs == SIM["n_test_concepts"] * SIM["test_reps_per_session"]
    # measured: stale 12.5 / 40.0 %, online 17.5 / 52.5 % (top-1 / top-5 of 40 images, 8 repetitions averaged)
    assert online5 >= stale5 + 0.1 and online1 >= stale1, (stale1, stale5, online1, online5)
