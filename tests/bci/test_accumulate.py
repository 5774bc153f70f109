"""Evidence over repetitions: the live accumulation equals offline k-repetition averaging on the same epochs."""

import csv
import json

import numpy as np
import pytest
from bci_testkit import CH_NAMES, CONCEPTS, N_TIMES, PRESET, make_recording, tiny_model

from bci.accumulate import RepetitionAccumulator, curve_csv
from bci.decoder import Decoder
from bci.engine import LiveConfig, LiveEngine
from bci.headless import run_headless
from bci.replay import RecordingSource, load_replay
from hmavd.errors import UserError
from hmavd.eval_reps import first_k_mean, reps_curve


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
    cfg = LiveConfig(replay=str(path), poll_timeout_s=0.0)
    src = RecordingSource(load_replay(cfg.replay), chunk_s=0.13, poll_interval=None)
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
