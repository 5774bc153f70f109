"""Tests of the simulated subject: forward model, dataset layout, oracle, round trip through hmavd-prepare."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hmavd.channels import THINGS63, VISUAL17
from hmavd.config import load_config
from hmavd.data.thingseeg2 import load_image_metadata, load_subject
from hmavd.errors import UserError
from hmavd.features.cache import check_against_metadata, load_feature_cache
from hmavd.preprocessing.presets import PRESETS
from hmavd.preprocessing.transforms import epoch_window_samples, preprocess_epoch, preprocessed_times
from hmavd.simulate import (
    CATCH_ID,
    SFREQ_RAW,
    ar1_noise,
    cut_epochs,
    fit_templates,
    make_image_metadata,
    make_source_model,
    noise_mixing,
    oracle_scores,
    render_signal,
    ridge_decoder_scores,
    rsvp_schedule,
    select_concepts,
    simulate_features,
    temporal_waveforms,
    topk_accuracy,
)
from hmavd.simulate_io import INCOMPLETE_MARKER, PAPER_SIZES, SimulateConfig, simulate_dataset

TINY = {
    "n_train_concepts": 10,
    "n_train_images_per_concept": 2,
    "n_test_concepts": 12,
    "n_sessions": 2,
    "train_reps_per_session": 1,
    "test_reps_per_session": 2,
    "n_sources": 8,
    "progress": False,
}


def tiny_config(**kw) -> SimulateConfig:
    return load_config(SimulateConfig, None, {**TINY, **kw})


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    summary = simulate_dataset(tiny_config(), out)
    return out, summary


# --------------------------------------------------------------------------- pure forward model


def test_waveforms_vanish_outside_window_and_have_unit_rms():
    rng = np.random.default_rng(0)
    w = temporal_waveforms(rng, 5, 0.1, 0.6)  # (K, L)
    assert w.shape == (5, 501)
    np.testing.assert_allclose(w[:, [0, -1]], 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sqrt(np.mean(w**2, axis=1)), 1.0)


def test_isolated_response_sits_in_signal_window():
    rng = np.random.default_rng(1)
    model = make_source_model(rng, THINGS63, 6, 0.15, 0.45, VISUAL17)
    preset = PRESETS["nice"]
    off, n = epoch_window_samples(preset.tmin_s, preset.tmax_s, SFREQ_RAW)
    onset = np.array([500])
    x = render_signal(2000, onset, rng.standard_normal((1, 6)), model, 1.0, 0.0)  # (C, n)
    ep = preprocess_epoch(cut_epochs(x, onset, off, n), SFREQ_RAW, preset)[0]  # (C, T)
    t = preprocessed_times(preset, SFREQ_RAW)
    inside = (t >= 0.15) & (t <= 0.45)
    e_in = np.mean(ep[:, inside] ** 2)
    e_out = np.mean(ep[:, ~inside] ** 2)
    assert e_in > 1e3 * e_out


def test_spatial_patterns_favour_occipito_parietal_channels():
    model = make_source_model(np.random.default_rng(2), THINGS63, 20, 0.1, 0.6, VISUAL17)
    power = np.sum(model.patterns**2, axis=1)  # (C,)
    vis = [THINGS63.index(c) for c in VISUAL17]
    front = [i for i, c in enumerate(THINGS63) if c.startswith(("Fp", "AF", "F"))]
    assert power[vis].mean() > 5 * power[front].mean()


def test_ar1_noise_has_requested_std_autocorrelation_and_spatial_correlation():
    rng = np.random.default_rng(3)
    mix = noise_mixing(THINGS63, 0.1, 0.2)
    np.testing.assert_allclose(np.sum(mix**2, axis=1), 1.0)
    x = ar1_noise(rng, mix, 60_000, 0.9, 2e-6, chunk=7_000)  # chunk boundaries must not break the process
    np.testing.assert_allclose(x.std(axis=1).mean(), 2e-6, rtol=0.05)
    lag1 = np.mean([np.corrcoef(r[:-1], r[1:])[0, 1] for r in x[:5]])
    assert abs(lag1 - 0.9) < 0.02
    c = np.corrcoef(x)
    oz, o1, fp1 = THINGS63.index("Oz"), THINGS63.index("O1"), THINGS63.index("Fp1")
    np.testing.assert_allclose(c, mix @ mix.T, atol=0.08)
    assert c[oz, o1] > 0.5 > 0.2 > c[oz, fp1]


def test_rsvp_schedule_soa_catch_trials_and_counts():
    rng = np.random.default_rng(4)
    codes = np.repeat(np.arange(1, 31), 2)
    onsets, ev, n = rsvp_schedule(rng, codes, 0.1, 10, 0.5)
    assert np.all(np.diff(onsets) >= 200) and set(np.diff(onsets)) == {200, 700}
    assert np.sum(ev == CATCH_ID) == 6
    np.testing.assert_array_equal(np.sort(ev[ev != CATCH_ID]), codes)
    assert onsets[0] >= 1000 and n - onsets[-1] >= 1200


def test_features_have_clip_geometry_and_text_tracks_concepts():
    rng = np.random.default_rng(5)
    f = simulate_features(rng, 30, 3, 20)
    for a in (f.train_image, f.test_image, f.train_text, f.test_text):
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    assert f.train_image.shape == (90, 768) and f.test_center.shape == (20, 768)
    cos = f.train_image @ f.train_image.T
    same = np.kron(np.eye(30), np.ones((3, 3))).astype(bool) & ~np.eye(90, dtype=bool)
    assert cos[same].mean() > cos[~same & ~np.eye(90, dtype=bool)].mean() + 0.1
    assert 0.45 < cos[~same & ~np.eye(90, dtype=bool)].mean() < 0.65  # crowded, like real CLIP (0.54)
    # each concept's text is closest to its own prototype
    proto = f.train_prototypes / np.linalg.norm(f.train_prototypes, axis=1, keepdims=True)
    assert np.mean(np.argmax(f.train_text @ proto.T, axis=1) == np.arange(30)) > 0.9
    again = simulate_features(np.random.default_rng(5), 30, 3, 20)
    np.testing.assert_array_equal(again.test_image, f.test_image)  # seeded


def test_concepts_and_metadata_use_generated_thingseeg2_style_names():
    tr, te = select_concepts(3, 200)
    assert tr == ("00001_concept_0001", "00002_concept_0002", "00003_concept_0003")
    assert te[0] == "00001_concept_0009" and te[-1] == "00200_concept_1800" and len(te) == 200
    meta = make_image_metadata(tr, 2, te[:2])
    assert meta.train_img_files[:2] == ("concept_0001_01b.jpg", "concept_0001_02b.jpg")
    assert meta.test_img_files == ("concept_0009_01s.jpg", "concept_0018_01s.jpg")
    assert meta.train_concepts == tr and meta.test_concepts == te[:2]  # sorted order == numbering
    with pytest.raises(UserError, match="n_test_concepts"):
        select_concepts(3, 201)
    with pytest.raises(UserError, match="n_train_concepts"):
        select_concepts(1655, 2)


def test_oracle_scores_find_noiseless_latents_and_topk():
    rng = np.random.default_rng(6)
    g = rng.standard_normal((4, 3, 10))  # (K, C, T)
    z = rng.standard_normal((7, 4))
    y = np.einsum("kct,nk->nct", g, z)
    assert topk_accuracy(oracle_scores(y, g, z)) == {"top1": 1.0, "top5": 1.0}
    scores = np.array([[0.1, 0.9], [0.2, 0.8]])
    assert topk_accuracy(scores, ks=(1, 2)) == {"top1": 0.5, "top2": 1.0}


def test_fit_templates_recovers_responses_up_to_noise():
    rng = np.random.default_rng(7)
    g = rng.standard_normal((3, 4, 6))  # (K, C, T)
    z = rng.standard_normal((400, 3)) + 2.0  # non-zero mean: centring must remove it
    common = rng.standard_normal((4, 6))  # image-independent response: drops out
    y = np.einsum("kct,nk->nct", g, z) + common + 0.01 * rng.standard_normal((400, 4, 6))
    np.testing.assert_allclose(fit_templates(y, z, ridge=0.0), g, atol=0.01)


def test_ridge_decoder_equals_primal_ridge():
    rng = np.random.default_rng(8)
    x, xt = rng.standard_normal((30, 2, 5)), rng.standard_normal((6, 2, 5))  # N=30 > C*T=10: primal is well posed
    w_true = rng.standard_normal((10, 4))
    y = x.reshape(30, -1) @ w_true + 0.1 * rng.standard_normal((30, 4))
    yt = xt.reshape(6, -1) @ w_true
    scores = ridge_decoder_scores(x, y, xt, yt, alpha=0.5)
    xf = x.reshape(30, -1)
    xc, yc = xf - xf.mean(0), y - y.mean(0)
    lam = 0.5 * np.trace(xc @ xc.T) / 30
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(10), xc.T @ yc)  # primal ridge
    pred = (xt.reshape(6, -1) - xf.mean(0)) @ w
    a = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    b = (yt - y.mean(0)) / np.linalg.norm(yt - y.mean(0), axis=1, keepdims=True)
    np.testing.assert_allclose(scores, a @ b.T, rtol=1e-8, atol=1e-10)
    assert topk_accuracy(scores)["top1"] == 1.0


def test_oracle_reads_the_eeg_not_the_answer():
    """Shuffling which EEG row belongs to which image sends the oracle to chance: it decodes the data."""
    rng = np.random.default_rng(9)
    g = rng.standard_normal((4, 3, 10))
    z = rng.standard_normal((50, 4))
    y = np.einsum("kct,nk->nct", g, z) + 0.3 * rng.standard_normal((50, 3, 10))
    assert topk_accuracy(oracle_scores(y, g, z))["top1"] > 0.8
    assert topk_accuracy(oracle_scores(y[rng.permutation(50)], g, z))["top1"] < 0.2


# --------------------------------------------------------------------------- the written dataset


def test_layout_loads_with_the_project_readers(sim):
    out, summary = sim
    meta = load_image_metadata(out / "image_set" / "image_metadata.npy")
    assert len(meta.train_img_files) == 20 and len(meta.test_img_files) == 12
    train, test = load_subject(out / "preprocessed_eeg", 1, meta)
    assert train.eeg.shape == (20, 2, 63, 250) and test.eeg.shape == (12, 4, 63, 250)
    assert train.eeg.dtype == np.float32 and train.ch_names == THINGS63
    np.testing.assert_allclose(test.times[[0, -1]], [0.0, 0.996])
    assert test.provenance.shape == (12, 4, 2)
    np.testing.assert_array_equal(test.provenance[0], [[1, 0], [1, 1], [2, 0], [2, 1]])
    cache = load_feature_cache(out / "features" / "clip-vitl14-sim")
    check_against_metadata(cache, meta)
    assert cache.provenance["simulated"] is True and cache.dim == 768
    assert cache.center_features().shape == (12, 768)
    with np.load(out / "preprocessed_eeg" / "sub-01" / "mvnn.npz") as z:
        assert z["whitening"].shape == (2, 63, 63)
    js = json.loads((out / "simulation.json").read_text())
    assert js["simulated"] and js["config"]["n_sources"] == 8 and 0 <= js["oracle"]["top1"] <= 1
    for key in ("oracle", "oracle_fitted", "ridge"):  # the three reference decoders, per subject and mean
        assert set(js[key]) == {"top1", "top5"} and js[key] == summary["subjects"][0][key]
        assert 0 <= js[key]["top1"] <= js[key]["top5"] <= 1
    assert not (out / INCOMPLETE_MARKER).exists()
    # MVNN: whitened training noise is about white across channels
    c = np.cov(train.eeg[:, 0].transpose(1, 0, 2).reshape(63, -1))
    assert np.abs(np.diag(c) - 1).mean() < 0.3


def test_same_seed_same_data_other_seed_differs(sim, tmp_path):
    out, _ = sim
    again = simulate_dataset(tiny_config(write_raw=False, write_replay=False), tmp_path / "a")
    a = load_subject(out / "preprocessed_eeg", 1)
    b = load_subject(tmp_path / "a" / "preprocessed_eeg", 1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.eeg, y.eeg)
    assert again["oracle"] == json.loads((out / "simulation.json").read_text())["oracle"]
    other = simulate_dataset(tiny_config(seed=1, write_raw=False, write_replay=False), tmp_path / "b")
    c = load_subject(tmp_path / "b" / "preprocessed_eeg", 1)
    assert not np.allclose(a[1].eeg, c[1].eeg)
    assert other["config"]["seed"] == 1


def test_oracle_drops_with_snr_and_image_specific_signal_is_in_the_window(tmp_path):
    kw = {"write_raw": False, "write_replay": False, "n_test_concepts": 40, "test_reps_per_session": 5}
    hi = simulate_dataset(tiny_config(snr=2.0, **kw), tmp_path / "hi")["oracle"]["top1"]
    lo = simulate_dataset(tiny_config(snr=2e-5, **kw), tmp_path / "lo")["oracle"]["top1"]
    assert hi >= 0.9 and lo < 0.3
    _, test = load_subject(tmp_path / "hi" / "preprocessed_eeg", 1)
    # split-half reliability of the image-by-channel pattern at each time point: only the image's own
    # response repeats across presentations; neighbours' responses (RSVP overlap) are shuffled per sequence
    halves = [test.eeg[:, k::2].mean(axis=1) for k in (0, 1)]  # 2 x (N, C, T)
    a, b = (h - h.mean(axis=0) for h in halves)
    r = (a * b).sum(axis=(0, 1)) / np.sqrt((a * a).sum(axis=(0, 1)) * (b * b).sum(axis=(0, 1)))  # (T,)
    inside = (test.times >= 0.1) & (test.times <= 0.6)
    late = test.times > 0.8
    assert r[inside].mean() > 0.1 and abs(r[late].mean()) < 0.03


def test_replay_fif_has_monotone_sample_index_and_test_events(sim):
    import mne

    from hmavd.preprocessing.raw_io import read_recording

    out, _ = sim
    raw = mne.io.read_raw_fif(out / "recordings" / "sub-01_test.fif", preload=True, verbose="error")
    idx = raw.get_data(picks=["sample_index"])[0]
    np.testing.assert_array_equal(idx, np.arange(raw.n_times))
    events = mne.find_events(raw, stim_channel="stim", verbose="error")
    _, ref = read_recording(out / "raw_eeg" / "sub-01" / "ses-01" / "raw_eeg_test.npy")
    np.testing.assert_array_equal(events[:, [0, 2]], ref[:, [0, 2]])
    assert np.sum(events[:, 2] != CATCH_ID) == 12 * 2
    np.testing.assert_allclose(
        raw.get_data(picks=["Oz"])[0],
        mne.io.read_raw_fif(out / "recordings" / "sub-01_test.fif", verbose="error").get_data(picks=["Oz"])[0],
    )


def test_round_trip_raw_recording_through_prepare_reproduces_dataset(sim, tmp_path):
    from hmavd.config import config_from_dict
    from hmavd.preprocessing.prepare import PrepareConfig, load_mvnn, prepare_subject

    out, summary = sim
    overrides = dict(o.split("=") for o in summary["prepare_overrides"])
    cfg = config_from_dict(
        PrepareConfig,
        {**overrides, "raw_dir": str(out / "raw_eeg"), "out_dir": str(tmp_path), "subject": 1, "progress": False},
    )
    prepare_subject(cfg)
    sim_train, sim_test = load_subject(out / "preprocessed_eeg", 1)
    prep_train, prep_test = load_subject(tmp_path, 1)
    for a, b in ((sim_train, prep_train), (sim_test, prep_test)):
        assert a.eeg.shape == b.eeg.shape and a.ch_names == b.ch_names
        np.testing.assert_allclose(b.eeg, a.eeg, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b.times, a.times)
        np.testing.assert_array_equal(b.provenance, a.provenance)
    w_sim = load_mvnn(out / "preprocessed_eeg" / "sub-01" / "mvnn.npz")["whitening"]
    w_prep = load_mvnn(tmp_path / "sub-01" / "mvnn.npz")["whitening"]
    np.testing.assert_allclose(w_prep, w_sim, rtol=1e-6)


# --------------------------------------------------------------------------- config and command


def test_paper_scale_and_bad_config_values():
    cfg = load_config(SimulateConfig, "simulate-paper").resolved()
    assert {k: getattr(cfg, k) for k in PAPER_SIZES} == PAPER_SIZES
    assert load_config(SimulateConfig, None, ["scale=paper"]).resolved().n_train_concepts == 1654
    assert load_config(SimulateConfig, "simulate") == SimulateConfig()
    for bad, key in (
        ("snr=0", "snr"),
        ("scale=huge", "scale"),
        ("signal_tmax_s=2", "signal window"),
        ("channels=Fp1,XX9", "channels"),
        ("preset=foo", "preset"),
    ):
        with pytest.raises(UserError, match=key):
            load_config(SimulateConfig, None, [bad])


def test_cli_writes_summary_and_refuses_foreign_folder(tmp_path, capsys):
    from hmavd.cli.simulate import main

    args = [f"{k}={v}" for k, v in TINY.items()] + ["write_raw=false", "write_replay=false", "n_test_concepts=5"]
    out = tmp_path / "d"
    assert main(["--out", str(out), *args]) == 0
    text = capsys.readouterr().out
    assert "SIMULATED" in text and "5-way test top-1" in text and (out / "simulate_config.yaml").exists()
    assert "oracle ceiling (knows the forward model)" in text and "ridge EEG -> image features" in text
    assert main(["--out", str(out), *args]) == 0  # same config: fine to rewrite
    assert main(["--out", str(out), *args, "seed=3"]) == 2
    assert "--force" in capsys.readouterr().err
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("keep me")
    assert main(["--out", str(tmp_path / "e"), *args]) == 2
    assert (tmp_path / "e" / "notes.txt").read_text() == "keep me"
    assert main([*args]) == 2  # no --out
    assert main(["--out", str(tmp_path / "f"), "bogus_key=1"]) == 2


def test_bad_values_are_refused_before_anything_is_written(tmp_path):
    for kw, needle in (
        ({"preset": "gifford"}, "train_reps_per_session"),  # gifford's covariance needs >= 2 repetitions
        ({"channels": "visual17"}, "preset=nice"),  # nice needs the 63 channels
        ({"n_test_concepts": 500}, "n_test_concepts"),
        ({"n_train_concepts": 2000}, "n_train_concepts"),
    ):
        with pytest.raises(UserError, match=needle):
            simulate_dataset(tiny_config(**kw), tmp_path / "out")
        with pytest.raises(UserError, match=needle):  # built in Python, never validated by load_config
            simulate_dataset(SimulateConfig(**{**TINY, **kw}), tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_interrupted_or_earlier_simulation_is_replaced_without_stale_sessions(tmp_path):
    out = tmp_path / "d"
    kw = {"write_replay": False, "n_test_concepts": 4, "n_train_concepts": 3}
    simulate_dataset(tiny_config(n_sessions=3, **kw), out)
    assert (out / "raw_eeg" / "sub-01" / "ses-03").is_dir()
    (out / "simulation.json").unlink()
    (out / INCOMPLETE_MARKER).write_text("{}")  # as a crash would leave it
    simulate_dataset(tiny_config(n_sessions=2, **kw), out)  # no --force needed for an interrupted run
    assert not (out / "raw_eeg" / "sub-01" / "ses-03").exists()  # hmavd-prepare would otherwise pick it up
    assert sorted(p.name for p in (out / "raw_eeg" / "sub-01").iterdir()) == ["ses-01", "ses-02"]
    assert not (out / INCOMPLETE_MARKER).exists() and (out / "simulation.json").exists()


def test_gifford_round_trip_through_prepare(tmp_path):
    from hmavd.config import config_from_dict
    from hmavd.preprocessing.prepare import PrepareConfig, prepare_subject

    kw = {"preset": "gifford", "train_reps_per_session": 2, "n_sessions": 1, "write_replay": False}
    summary = simulate_dataset(tiny_config(**kw), tmp_path / "sim")
    overrides = dict(o.split("=") for o in summary["prepare_overrides"])
    cfg = config_from_dict(
        PrepareConfig,
        {
            **overrides,
            "raw_dir": str(tmp_path / "sim" / "raw_eeg"),
            "out_dir": str(tmp_path / "prep"),
            "progress": False,
        },
    )
    prepare_subject(cfg)
    a = load_subject(tmp_path / "sim" / "preprocessed_eeg", 1)
    b = load_subject(tmp_path / "prep", 1)
    for x, y in zip(a, b):
        assert x.eeg.shape[2:] == (17, 100) and x.ch_names == y.ch_names
        np.testing.assert_allclose(y.eeg, x.eeg, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(y.provenance, x.provenance)


def test_reference_topk_counts_ties_against_the_true_column_like_the_evaluation():
    from hmavd.evaluate import topk_accuracy as eval_topk

    tied = np.zeros((4, 4))  # every template ties with the true one
    assert topk_accuracy(tied, ks=(1, 4)) == {"top1": 0.0, "top4": 1.0}
    rng = np.random.default_rng(3)
    scores = np.round(rng.standard_normal((30, 30)), 1)  # many ties
    for k in (1, 5):
        assert topk_accuracy(scores, ks=(k,))[f"top{k}"] == eval_topk(scores, np.arange(30), k)
