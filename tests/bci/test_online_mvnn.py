"""Online MVNN: the running estimate equals hmavd-prepare's MVNN on the same epochs; warm-up, freeze, engine."""

from dataclasses import replace

import numpy as np
import pytest
from bci_testkit import CH_NAMES, CONCEPTS, N_TIMES, PRESET, SFREQ_IN, make_recording, offline_epochs, tiny_model

from bci.decoder import Decoder
from bci.engine import LiveConfig, LiveEngine
from bci.markers import InMemoryMarkers
from bci.online_mvnn import OnlineMVNN, epoch_covariances, relative_distance, running_mean_update
from bci.sources import InMemorySource
from hmavd.errors import UserError
from hmavd.preprocessing.transforms import apply_whitening, mvnn_covariance, whitening_matrix

T0 = 1000.0


def _epochs(n=23, c=5, t=40, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((c, c)) + 2 * np.eye(c)
    return np.einsum("ij,njt->nit", mix, rng.standard_normal((n, c, t))) * 1e-5  # (n, C, T) volts, correlated


def test_running_estimate_equals_offline_mvnn_after_every_batch():
    x = _epochs()
    est = OnlineMVNN(training=None, warmup_epochs=1)
    n = 0
    for b in (1, 4, 2, 7, 9):  # uneven batches, as polls deliver them
        est.add(x[n : n + b])
        n += b
        offline = mvnn_covariance(x[:n][:, None], "nice")  # (n_img = n, 1 rep, C, T): hmavd-prepare's estimator
        np.testing.assert_allclose(est.covariance, offline, rtol=1e-12, atol=0)
        np.testing.assert_allclose(est.whitening, whitening_matrix(offline), rtol=1e-10, atol=1e-10 * 1e5)
        assert est.n_epochs == n
    # with equal repetitions per image the offline per-image average is the same mean
    grouped = x[:22].reshape(11, 2, *x.shape[1:])  # (11 images, 2 reps, C, T)
    m, k = running_mean_update(None, 0, epoch_covariances(x[:22]))
    np.testing.assert_allclose(m, mvnn_covariance(grouped, "nice"), rtol=1e-12)
    assert k == 22


def test_warmup_uses_the_training_matrix_then_the_online_one():
    x = _epochs()
    w_train = np.eye(5) * 1e5  # stale: 3x the right scale
    est = OnlineMVNN(training=w_train, warmup_epochs=10)
    assert not est.add(x[:9])
    assert est.whitening is w_train and est.report()["source"] == "training"
    np.testing.assert_allclose(est.whiten(x[:2]), apply_whitening(x[:2], w_train).astype(np.float32))
    assert "warming up (9/10" in est.message()
    assert est.add(x[9:11])
    assert est.report()["source"] == "online" and est.changed_at_epoch == 11
    np.testing.assert_allclose(est.whitening, whitening_matrix(mvnn_covariance(x[:11, None])), rtol=1e-10)
    assert est.report()["distance_to_training"] == pytest.approx(relative_distance(est.whitening, w_train))
    # whitened epochs of this session have ~identity noise covariance; the stale matrix does not
    white = est.whiten(x).astype(np.float64)
    assert abs(np.mean(epoch_covariances(white), axis=0) - np.eye(5)).max() < 0.5
    assert abs(np.mean(epoch_covariances(apply_whitening(x, w_train)), axis=0) - np.eye(5)).max() > 1.0


def test_update_every_and_freeze():
    x = _epochs(n=30)
    est = OnlineMVNN(training=None, warmup_epochs=5, update_every=4)
    est.add(x[:5])
    assert est.n_at_online == 5
    est.add(x[5:8])
    assert est.n_at_online == 5 and est.n_epochs == 8  # covariance updated, W not yet
    est.add(x[8:9])
    assert est.n_at_online == 9
    fr = OnlineMVNN(training=None, warmup_epochs=5, freeze=12)
    fr.add(x[:10])
    fr.add(x[10:20])  # crosses the freeze: only 2 of these enter
    assert fr.frozen and fr.n_epochs == 12 and fr.n_at_online == 12
    np.testing.assert_allclose(fr.covariance, mvnn_covariance(x[:12, None]), rtol=1e-12)
    w = fr.whitening.copy()
    assert not fr.add(x[20:])
    np.testing.assert_array_equal(fr.whitening, w)
    assert "frozen" in fr.message()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"mvnn_warmup_epochs": 0}, "mvnn_warmup_epochs: 0"),
        ({"mvnn_freeze": -1}, "mvnn_freeze: -1"),
        ({"mvnn_freeze": 5, "mvnn_warmup_epochs": 10}, "mvnn_freeze: 5 is below"),
        ({"mvnn_update_every": 0}, "mvnn_update_every: 0"),
    ],
)
def test_bad_settings_are_one_line_errors(kw, match):
    with pytest.raises(UserError, match=match):
        LiveConfig(**kw).validate()


def test_engine_whitens_with_the_running_estimate(tmp_path):
    path, eeg, events = make_recording(tmp_path / "rec_raw.fif", duration_s=8.0)
    w_train = np.diag([1.0, 2.0, 0.5, 1.5]) * 1e5
    rng = np.random.default_rng(3)
    dec = Decoder.from_model(
        tiny_model(),
        rng.standard_normal((len(CONCEPTS), 16)).astype(np.float32),
        CONCEPTS,
        4,
        N_TIMES,
        CH_NAMES,
        device="cpu",
    )
    src = InMemorySource([*CH_NAMES, "sample_index"], SFREQ_IN, t_start_s=T0)
    marks = InMemoryMarkers()
    cfg = replace(LiveConfig(status_interval_s=0.0, scope_interval_s=0.0), mvnn_online=True, mvnn_warmup_epochs=8)
    eng = LiveEngine(cfg, source=src, markers=marks, decoder=dec, preset=PRESET, whitening=w_train)
    eng.epoch_log = []
    eng.connect()
    data = np.vstack([eeg, np.arange(eeg.shape[1])[None]])  # (5, N)
    for s, _, c in events:
        marks.push(T0 + s / SFREQ_IN, int(c))
    msgs = []
    for a in range(0, data.shape[1], 37):
        src.push(data[:, a : a + 37])
        eng.acquire()
        msgs += eng.get_data()
    raw, _ = offline_epochs(path)  # (n, C, T) preprocessed, not whitened
    online = np.stack([e.data for e in eng.epoch_log])
    n = len(online)
    assert n == len(events) > 8
    scale = np.abs(apply_whitening(raw, w_train)).max()
    # warm-up epochs: the training matrix
    np.testing.assert_allclose(online[:3], apply_whitening(raw[:3], w_train), atol=1e-4 * scale)
    # the last epoch: W of the offline MVNN over every epoch of the session
    w_all = whitening_matrix(mvnn_covariance(raw[:, None].astype(np.float64)))
    np.testing.assert_allclose(
        online[-1], apply_whitening(raw[-1], w_all), rtol=1e-3, atol=1e-3 * np.abs(online[-1]).max()
    )
    assert np.abs(online[-1] - apply_whitening(raw[-1], w_train)).max() > 0.1 * np.abs(online[-1]).max()
    status = [m for m in msgs if m["type"] == "status"][-1]
    assert status["mvnn"]["source"] == "online" and status["mvnn"]["n_epochs"] == n
    assert any(m.startswith("MVNN: online estimate") for m in status["messages"])
    preds = [m for m in msgs if m["type"] == "prediction"]
    assert [p["topk"][0][0] for p in preds[-3:]] == [r.concepts[0] for r in dec.decode(online[-3:])]
    # accumulated evidence: each image's unwhitened mean, whitened with the estimate in use at its last repetition
    last = preds[-1]
    code = int(events[-1, 2])
    w_now = whitening_matrix(mvnn_covariance(raw[:, None].astype(np.float64)))
    mean = apply_whitening(raw[events[:, 2] == code].mean(axis=0), w_now)[None].astype(np.float32)  # (1, C, T)
    assert last["acc_n"] == int((events[:, 2] == code).sum()) > 1
    want = dec.decode(mean)[0]
    assert [c for c, _ in last["acc_topk"]] == list(want.concepts)
    np.testing.assert_allclose([v for _, v in last["acc_topk"]], want.scores, atol=2e-6)  # stale: off by 2e-5
    eng.online_mvnn.save(tmp_path / "mvnn_online.npz")
    z = np.load(tmp_path / "mvnn_online.npz")
    assert int(z["n_epochs"]) == n and z["history"].shape[1] == 3
