"""Live decoding of a model trained on a channel subset of a recording whitened on all its channels."""

import dataclasses

import numpy as np
import pytest
from bci_testkit import CONCEPTS, PRESET, SFREQ_IN, make_recording, offline_epochs, tiny_model

from bci.decoder import Decoder
from bci.engine import LiveEngine
from bci.live_config import LiveConfig
from bci.markers import InMemoryMarkers
from bci.sources import InMemorySource
from hmavd.errors import UserError
from hmavd.preprocessing.mvnn import apply_whitening
from hmavd.preprocessing.prepare import save_mvnn
from hmavd.preprocessing.transforms import preprocessed_times

T0 = 1000.0
ALL = ["O1", "Oz", "O2", "Pz", "P3", "P4"]
SUBSET = ["Pz", "O1", "O2"]  # not in the file's order
ROWS = [ALL.index(c) for c in SUBSET]


def _whitening(n: int = len(ALL), seed: int = 1) -> np.ndarray:
    """A symmetric positive-definite (n, n) matrix with strong cross-channel terms, in 1/volts."""
    a = np.random.default_rng(seed).standard_normal((n, n))
    return (a @ a.T / n + np.eye(n)) * 1e5


def _save(tmp_path, w: np.ndarray) -> str:
    preset = dataclasses.replace(PRESET, channels=tuple(ALL))
    times = preprocessed_times(preset, SFREQ_IN)
    path = save_mvnn(tmp_path / "mvnn.npz", w[None], np.linalg.inv(w @ w)[None], [0], ALL, preset, SFREQ_IN, times)
    return str(path)


def _engine(tmp_path, stream_names, **cfg) -> tuple[LiveEngine, InMemorySource, InMemoryMarkers, Decoder]:
    templates = np.random.default_rng(3).standard_normal((len(CONCEPTS), 16)).astype(np.float32)
    n_times = len(preprocessed_times(PRESET, SFREQ_IN))
    model = tiny_model(n_chans=len(SUBSET), n_times=n_times, seed=2)
    dec = Decoder.from_model(model, templates, CONCEPTS, len(SUBSET), n_times, SUBSET, device="cpu")
    src = InMemorySource(list(stream_names), SFREQ_IN, t_start_s=T0)
    marks = InMemoryMarkers()
    config = LiveConfig(status_interval_s=0.0, scope_interval_s=0.0, **cfg)
    preset = dataclasses.replace(PRESET, channels=tuple(SUBSET))
    return LiveEngine(config, source=src, markers=marks, decoder=dec, preset=preset), src, marks, dec


def test_apply_whitening_rectangular_keeps_the_model_rows():
    x = np.random.default_rng(0).standard_normal((2, len(ALL), 7))  # (B, C, T)
    w = _whitening()
    np.testing.assert_allclose(apply_whitening(x, w[:, ROWS]), apply_whitening(x, w)[:, ROWS])
    with pytest.raises(UserError, match="does not fit"):
        apply_whitening(x, w[ROWS])  # (3, 6): the wrong side


def test_subset_model_decodes_like_offline(tmp_path):
    path, eeg, events = make_recording(tmp_path / "rec_raw.fif", duration_s=5.0, ch_names=ALL)
    w = _whitening()
    eng, src, marks, dec = _engine(tmp_path, [*ALL, "sample_index"], whitening=_save(tmp_path, w))
    eng.epoch_log = []
    msg = eng.connect()
    assert msg["model_ch_names"] == SUBSET and eng.plan.picks == list(range(len(ALL)))
    assert any("whitening file's 6 channels" in n for n in msg["notes"])
    data = np.vstack([eeg, np.arange(eeg.shape[1])[None]])  # (7, N)
    for s, _, c in events:
        marks.push(T0 + s / SFREQ_IN, int(c))
    preds = []
    for a in range(0, data.shape[1], 37):
        src.push(data[:, a : a + 37])
        eng.acquire()
        preds += [m for m in eng.get_data() if m["type"] == "prediction"]
    assert [p["sample_index"] for p in preds] == list(events[:, 0])
    off_all, _ = offline_epochs(path, w, preset=dataclasses.replace(PRESET, channels=tuple(ALL)))  # (n, 6, T)
    off = off_all[:, ROWS]  # what a model trained with channels=Pz,O1,O2 sees
    online = np.stack([e.data for e in eng.epoch_log])  # (n, 3, T)
    np.testing.assert_allclose(online, off, rtol=1e-4, atol=1e-4 * np.abs(off).max())
    # not the same as whitening the subset alone (the cross-channel terms matter)
    sub_only, _ = offline_epochs(
        path, w[np.ix_(ROWS, ROWS)], preset=dataclasses.replace(PRESET, channels=tuple(SUBSET))
    )
    assert np.abs(sub_only - off).max() > 0.1 * np.abs(off).max()
    expected = dec.decode(off)
    assert [p["topk"][0][0] for p in preds] == [r.concepts[0] for r in expected]


def test_stream_lacking_a_whitening_channel_is_refused(tmp_path):
    names = [c for c in ALL if c != "P3"]  # P3 is not the model's, but the whitening needs it
    eng, _, _, _ = _engine(tmp_path, [*names, "sample_index"], whitening=_save(tmp_path, _whitening()))
    with pytest.raises(UserError) as err:
        eng.connect()
    text = str(err.value)
    assert "\n" not in text and "'P3'" in text and "whitening file's" in text


def test_subset_model_with_online_mvnn_is_refused(tmp_path):
    eng, _, _, _ = _engine(tmp_path, [*ALL, "sample_index"], whitening=_save(tmp_path, _whitening()), mvnn_online=True)
    with pytest.raises(UserError, match="mvnn_online: the model reads 3 of the 6 channels"):
        eng.connect()
