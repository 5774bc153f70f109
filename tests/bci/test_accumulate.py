"""Evidence over repetitions: the live accumulation equals offline k-repetition averaging on the same epochs."""

import csv
import json

import numpy as np
import pytest
from bci_testkit import CH_NAMES, CONCEPTS, N_TIMES, PRESET, make_recording, offline_epochs, tiny_model

from bci.accumulate import RepetitionAccumulator, curve_csv
from bci.decoder import Decoder
from bci.engine import LiveConfig, LiveEngine
from bci.headless import run_headless
from bci.replay import RecordingSource, load_replay
from hmavd.errors import UserError
from hmavd.eval_reps import first_k_mean, reps_curve
from hmavd.preprocessing.transforms import apply_whitening


def _encoder(c=3, t=8, d=6, seed=0):
    w = np.random.default_rng(seed).standard_normal((c * t, d))
    return lambda x: np.tanh(np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ w)  # (B, D), nonlinear


def test_accumulator_equals_offline_k_averaging_on_shuffled_presentations():
    rng = np.random.default_rng(1)
    n_img, n_rep, k_cls = 5, 6, 7
    eeg = rng.standard_normal((n_img, n_rep, 3, 8)).astype(np.float32)  # (img, rep, C, T)
    labels = rng.permutation(k_cls)[:n_img]
    templates = rng.standard_normal((k_cls, 6))
    concepts = [f"c{i}" for i in range(k_cls)]
    encode = _encoder()
    # presentation order: every (image, rep) once, shuffled, but each image's reps in their own order
    seq = rng.permutation(np.repeat(np.arange(n_img), n_rep))
    seen = np.zeros(n_img, dtype=int)
    stream = []
    for i in seq:
        stream.append((i, seen[i]))
        seen[i] += 1
    stream.append((None, None))  # an epoch of an image without a template: ignored
    acc = RepetitionAccumulator(encode, templates, concepts, mode="epochs", top_k=3)
    pos = 0
    for b in (1, 3, 7, 2, 9, 11, 100):  # polls of uneven size; some hold one image twice
        chunk = stream[pos : pos + b]
        pos += b
        if not chunk:
            break
        x = np.stack([eeg[i, r] if i is not None else np.zeros((3, 8), np.float32) for i, r in chunk])
        names = [concepts[labels[i]] if i is not None else None for i, _ in chunk]
        out = acc.add(names, x)
        assert out[-1] is None if chunk[-1][0] is None else out[-1]["acc_n"] == chunk[-1][1] + 1
    for i in range(n_img):
        np.testing.assert_allclose(acc.sum_epochs[concepts[labels[i]]] / n_rep, first_k_mean(eeg, n_rep)[i])
    ks = list(range(1, n_rep + 1))
    live = {(r["average"], r["k"]): r for r in acc.rows()}
    for avg in ("epochs", "embeddings"):
        for r in reps_curve(encode, eeg, labels, templates, ks, avg):
            got = live[(avg, r["k"])]
            assert got["n_images"] == n_img
            assert (got["top1"], got["top5"]) == (r["top1"], r["top5"]), (avg, r["k"])
    assert "k,average,n_images,top1,top5" in curve_csv(acc.rows())


def _spd_whitening(rng, c=3):
    a = rng.standard_normal((c, c))
    vals, vecs = np.linalg.eigh(a @ a.T + c * np.eye(c))
    return (vecs / np.sqrt(vals)) @ vecs.T  # (C, C) symmetric, Σ^(-1/2)


def test_rewhitening_equals_whitened_average_with_a_fixed_matrix_and_uses_the_latest_one():
    rng = np.random.default_rng(7)
    n_img, n_rep, k_cls = 4, 5, 6
    raw = rng.standard_normal((n_img, n_rep, 3, 8))  # (img, rep, C, T) unwhitened
    templates = rng.standard_normal((k_cls, 6))
    concepts = [f"c{i}" for i in range(k_cls)]
    encode = _encoder()
    w = _spd_whitening(rng)
    plain = RepetitionAccumulator(encode, templates, concepts, top_k=k_cls)
    rewhite = RepetitionAccumulator(encode, templates, concepts, top_k=k_cls)
    for r in range(n_rep):
        names = concepts[:n_img]
        white = apply_whitening(raw[:, r], w).astype(np.float32)
        a = plain.add(names, white)
        b = rewhite.add(names, white, raw=raw[:, r], whitening=w)
        for x, y in zip(a, b):
            assert [c for c, _ in x["acc_topk"]] == [c for c, _ in y["acc_topk"]]
            np.testing.assert_allclose([v for _, v in x["acc_topk"]], [v for _, v in y["acc_topk"]], atol=1e-5)
    assert plain.rows() == rewhite.rows()
    # a matrix that changes: the k-th average is the raw mean of k repetitions whitened with the newest one
    acc = RepetitionAccumulator(encode, templates, concepts, top_k=k_cls)
    for r in range(n_rep):
        w_r = _spd_whitening(rng)
        out = acc.add(["c0"], apply_whitening(raw[:1, r], w_r).astype(np.float32), raw=raw[:1, r], whitening=w_r)
    expected = encode(apply_whitening(raw[0].mean(axis=0)[None], w_r).astype(np.float32))[0]
    s = expected / np.linalg.norm(expected) @ (templates / np.linalg.norm(templates, axis=1, keepdims=True)).T
    assert [c for c, _ in out[0]["acc_topk"]] == [concepts[i] for i in np.argsort(-s, kind="stable")]
    np.testing.assert_allclose(sorted((v for _, v in out[0]["acc_topk"]), reverse=True), np.sort(s)[::-1], atol=1e-5)
    np.testing.assert_allclose(acc.sum_epochs["c0"], raw[0].sum(axis=0))  # the raw epochs are what it sums


def test_averaging_recovers_signal_that_single_trials_miss():
    rng = np.random.default_rng(4)
    n_img, n_rep, d = 20, 16, 8
    proto = rng.standard_normal((n_img, 3, 8))
    eeg = proto[:, None] + 3.0 * rng.standard_normal((n_img, n_rep, 3, 8))  # SNR << 1 per trial
    w = rng.standard_normal((24, d))
    encode = lambda x: np.asarray(x).reshape(len(x), -1) @ w  # noqa: E731  linear encoder
    templates = encode(proto)  # the true images' embeddings
    rows = {r["k"]: r for r in reps_curve(encode, eeg, np.arange(n_img), templates, [1, 16])}
    assert rows[16]["top1"] > rows[1]["top1"] + 0.3


def test_bad_accumulate_setting_is_one_line():
    with pytest.raises(UserError, match="accumulate: 'mean' is not one of"):
        LiveConfig(accumulate="mean").validate()


def test_headless_replay_writes_the_curve_equal_to_offline_averaging(tmp_path):
    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=8.0)
    templates = np.random.default_rng(3).standard_normal((len(CONCEPTS), 16)).astype(np.float32)
    dec = Decoder.from_model(tiny_model(), templates, CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu")
    cfg = LiveConfig(replay=str(path), poll_interval_s=0.0)
    src = RecordingSource(load_replay(cfg.replay), chunk_s=0.13, poll_interval_s=None)
    eng = LiveEngine(cfg, source=src, markers=src.markers, decoder=dec, preset=PRESET)
    eng.epoch_log = []
    msgs = []
    summary = run_headless(cfg, duration_s=60.0, out_dir=tmp_path / "out", engine=eng, on_message=msgs.append)
    preds = [m for m in msgs if m["type"] == "prediction"]
    assert len(preds) == len(events)
    # first repetition: the accumulated top-k is the single-trial one; later ones count up
    first = next(p for p in preds if p["acc_n"] == 1)
    assert [c for c, _ in first["acc_topk"]] == [c for c, _ in first["topk"]]
    by_img = {}
    for p in preds:
        by_img.setdefault(p["true_concept"], []).append(p["acc_n"])
    assert all(v == list(range(1, len(v) + 1)) for v in by_img.values())
    # the written curve equals offline k-averaging of the same (live) epochs
    with open(tmp_path / "out" / "accumulation.csv", newline="") as fh:
        live = {(r["average"], int(r["k"])): r for r in csv.DictReader(fh)}
    n_min = min(len(v) for v in by_img.values())
    order = [CONCEPTS.index(e.marker.concept) for e in eng.epoch_log]
    grouped = np.stack(
        [np.stack([e.data for e, c in zip(eng.epoch_log, order) if c == i][:n_min]) for i in range(len(CONCEPTS))]
    )  # (img, rep, C, T) in time order
    enc = lambda x: dec.features(x).cpu().numpy()  # noqa: E731
    for avg in ("epochs", "embeddings"):
        for r in reps_curve(enc, grouped, np.arange(len(CONCEPTS)), templates, range(1, n_min + 1), avg):
            got = live[(avg, r["k"])]
            assert int(got["n_images"]) == len(CONCEPTS)
            assert float(got["top1"]) == pytest.approx(r["top1"], abs=1e-6)
            assert float(got["top5"]) == pytest.approx(r["top5"], abs=1e-6)
    assert json.loads((tmp_path / "out" / "accumulation.json").read_text())["mode"] == "epochs"
    assert summary["accumulated"]["n_images"] == len(CONCEPTS)


def test_live_curve_equals_offline_k_averaging_of_the_recording(tmp_path):
    """The same recording through the live engine and through hmavd-prepare's epoching: the same curve."""
    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=8.0, seed=5)
    w = _spd_whitening(np.random.default_rng(2), c=len(CH_NAMES)) * 1e5  # a fixed (training) matrix, 1/V
    templates = np.random.default_rng(4).standard_normal((len(CONCEPTS), 16)).astype(np.float32)
    dec = Decoder.from_model(tiny_model(), templates, CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu")
    cfg = LiveConfig(replay=str(path), poll_interval_s=0.0)
    src = RecordingSource(load_replay(cfg.replay), chunk_s=0.21, poll_interval_s=None)
    eng = LiveEngine(cfg, source=src, markers=src.markers, decoder=dec, preset=PRESET, whitening=w)
    run_headless(cfg, duration_s=60.0, out_dir=tmp_path / "out", engine=eng)
    with open(tmp_path / "out" / "accumulation.csv", newline="") as fh:
        live = {(r["average"], int(r["k"])): r for r in csv.DictReader(fh)}
    off, off_events = offline_epochs(path, w)  # (n, C, T) whitened, time order
    codes = off_events[:, 2]
    n_min = min(int((codes == c).sum()) for c in range(1, len(CONCEPTS) + 1))
    grouped = np.stack([off[codes == c][:n_min] for c in range(1, len(CONCEPTS) + 1)])  # (img, rep, C, T)
    enc = lambda x: dec.features(x).cpu().numpy()  # noqa: E731
    assert max(k for _, k in live) >= n_min > 3
    for avg in ("epochs", "embeddings"):
        for r in reps_curve(enc, grouped, np.arange(len(CONCEPTS)), templates, range(1, n_min + 1), avg):
            got = live[(avg, r["k"])]
            assert int(got["n_images"]) == len(CONCEPTS)
            assert (float(got["top1"]), float(got["top5"])) == pytest.approx((r["top1"], r["top5"]), abs=1e-6)


def test_the_live_averages_are_the_offline_ones():
    from bci import accumulate
    from hmavd import eval_reps

    assert accumulate.AVERAGES == eval_reps.AVERAGES
