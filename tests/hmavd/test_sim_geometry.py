"""The simulator's feature geometry: generated (parametric, seeded) and ``features_from=`` real files.

Generated-geometry tests always run; the comparison with real CLIP ViT-L/14 features reads
``../shared/data`` through the ``shared_data`` fixture and is skipped without it.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from hmavd.errors import UserError
from hmavd.features.cache import load_feature_cache
from hmavd.sim_features import (
    GeometryParams,
    eigen_spectrum,
    generate_concepts,
    geometry_statistics,
    power_law_spectrum,
    simulate_features,
    solve_variances,
)
from hmavd.sim_inputs import load_reference_features
from hmavd.simulate_io import SimulateConfig, simulate_dataset

TINY = dict(n_train_concepts=6, n_train_images_per_concept=2, n_test_concepts=8, n_sessions=1,
            test_reps_per_session=2, n_sources=4, write_raw=False, write_replay=False, progress=False)  # fmt: skip


def _generated(seed=0, n=200, **kw):
    ((_, img, ctr),) = generate_concepts(np.random.default_rng(seed), [n], [1], GeometryParams(**kw))
    return img, ctr


def test_solve_variances_partition_unit_variance_and_order():
    a2, b2, w2 = solve_variances(0.54, 0.89, 12)
    assert a2 + b2 + w2 == pytest.approx(1.0) and a2 == pytest.approx(0.54)
    assert b2 > 0 and w2 > 0
    s = a2 + b2  # the high-dimensional centre cosine it was solved from
    assert s / np.sqrt(s + w2 / 12) == pytest.approx(0.89, abs=1e-9)
    _, b_hi, w_hi = solve_variances(0.54, 0.95, 12)
    assert w_hi < w2 and b_hi > b2  # tighter concepts: less within-concept variation


def test_power_law_spectrum_sums_to_one_and_decays():
    lam = power_law_spectrum(768, 0.8)
    assert lam.shape == (768,) and lam.sum() == pytest.approx(1.0)
    assert np.all(np.diff(lam) < 0) and lam[0] / lam[9] == pytest.approx(10**0.8)
    cut = power_law_spectrum(768, 0.6, rank=320)
    assert cut.sum() == pytest.approx(1.0) and np.all(cut[320:] == 0) and np.all(np.diff(cut[:320]) < 0)
    assert cut[0] / cut[9] == pytest.approx(10**0.6)


def test_generated_geometry_hits_its_target_figures():
    img, ctr = _generated()
    st = geometry_statistics(img, ctr)
    assert img.shape == (200, 768) and ctr.shape == (200, 768)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0)
    assert st["pairwise_cosine_mean"] == pytest.approx(0.54, abs=0.02)
    assert st["center_cosine_mean"] == pytest.approx(0.89, abs=0.02)
    assert 0.8 < np.linalg.norm(ctr, axis=1).mean() < 0.97  # centres: means of unit vectors
    assert -1.2 < st["spectrum_slope"] < -0.5 and st["spectrum_top10"] > 0.15  # decaying, not flat
    # other targets move the statistics where they say
    lo = geometry_statistics(*_generated(pairwise_cosine=0.3, center_cosine=0.8))
    assert lo["pairwise_cosine_mean"] == pytest.approx(0.3, abs=0.03)
    assert lo["center_cosine_mean"] == pytest.approx(0.8, abs=0.03)
    flat = geometry_statistics(*_generated(spectrum_decay=0.2, spectrum_rank=768))
    steep = geometry_statistics(*_generated(spectrum_decay=1.2))
    assert flat["participation_ratio"] > 1.3 * st["participation_ratio"] > 1.3 * steep["participation_ratio"]


def test_generated_geometry_is_seeded():
    a, _ = _generated(seed=3, n=20)
    b, _ = _generated(seed=3, n=20)
    c, _ = _generated(seed=4, n=20)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_concepts_vary_less_within_than_between_and_categories_cluster():
    ((protos, img, _),) = generate_concepts(np.random.default_rng(1), [40], [5], GeometryParams())
    cos = img @ img.T  # (200, 200), concept-major
    same = np.kron(np.eye(40), np.ones((5, 5))).astype(bool) & ~np.eye(200, dtype=bool)
    other = ~np.kron(np.eye(40), np.ones((5, 5))).astype(bool)
    assert cos[same].mean() > cos[other].mean() + 0.2
    no_cat = GeometryParams(category_share=0.0)
    ((_, img0, _),) = generate_concepts(np.random.default_rng(1), [200], [1], no_cat)
    with_cat = geometry_statistics(_generated(seed=1)[0])["pairwise_cosine_std"]
    assert with_cat > geometry_statistics(img0)["pairwise_cosine_std"]  # categories spread the pairs


def test_eigen_spectrum_of_rank_two_rows():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 2)) * [3.0, 1.0] @ np.linalg.qr(rng.standard_normal((6, 2)))[0].T  # (50, 6)
    lam = eigen_spectrum(x)
    assert lam.sum() == pytest.approx(1.0) and lam[2:].max() < 1e-12 and 0.8 < lam[0] < 0.97


# --------------------------------------------------------------------------- features_from=


def test_features_from_a_simulated_cache_and_from_npy_files(tmp_path):
    first = tmp_path / "first"
    simulate_dataset(SimulateConfig(**TINY), first)
    cache = load_feature_cache(first / "features" / "clip-vitl14-sim")
    ref = load_reference_features(cache.path)
    np.testing.assert_allclose(ref.test_image, cache.image_features("test"))
    out = tmp_path / "second"
    s = simulate_dataset(SimulateConfig(**{**TINY, "n_test_concepts": 5}, features_from=str(cache.path)), out)
    second = load_feature_cache(out / "features" / "clip-vitl14-sim")
    np.testing.assert_allclose(second.image_features("test"), cache.image_features("test")[:5], atol=1e-6)
    assert s["feature_geometry"].startswith("features_from=") and "real" in second.provenance["model"]
    # the same rows as .npy files, (N, 1, D) as NICE-EEG ships them
    np.save(tmp_path / "img.npy", cache.image_features("test")[:, None, :])
    np.save(tmp_path / "ctr.npy", cache.center_features())
    ref2 = load_reference_features(tmp_path / "img.npy", tmp_path / "ctr.npy")
    np.testing.assert_allclose(ref2.test_image, ref.test_image)
    f = simulate_features(np.random.default_rng(0), 4, 2, 5, reference=ref2)
    np.testing.assert_allclose(f.test_center, cache.center_features()[:5], rtol=1e-6)
    assert f.train_image.shape == (8, cache.dim)


def test_features_from_cache_without_centres_fits_training_images(tmp_path):
    from hmavd.features.cache import save_feature_cache

    simulate_dataset(SimulateConfig(**TINY), tmp_path / "a")
    cache = load_feature_cache(tmp_path / "a" / "features" / "clip-vitl14-sim")
    arrays = {k: v for k, v in cache.arrays.items() if k != "test_center_features"}
    prov = {k: v for k, v in cache.provenance.items() if k not in ("format_version", "dim")}
    save_feature_cache(tmp_path / "nocentres", arrays, prov)
    ref = load_reference_features(tmp_path / "nocentres")
    assert ref.test_center is None and ref.prototypes.shape == (6, 768) and ref.variation.shape == (12, 768)
    s = simulate_dataset(SimulateConfig(**TINY, features_from=str(tmp_path / "nocentres")), tmp_path / "b")
    assert load_feature_cache(tmp_path / "b" / "features" / "clip-vitl14-sim").center_features() is None
    assert s["test_feature_statistics"]["pairwise_cosine_mean"] > 0


@pytest.mark.parametrize(
    ("make", "args", "needle"),
    [
        (None, ["features_from={d}/missing"], "features_from: .*missing does not exist"),
        ("txt", ["features_from={d}/f.txt"], "neither a folder nor a .npy"),
        ("img", ["features_from={d}/img.npy"], "centers_from: missing"),
        ("img", ["features_from={d}/img.npy", "centers_from={d}/bad.npy"], "do not match"),
        ("img", ["features_from={d}/img.npy", "centers_from={d}/ctr.npy", "n_test_concepts=9"], "lower it to 4"),
        ("obj", ["features_from={d}/obj.npy", "centers_from={d}/ctr.npy"], "not a readable numeric .npy"),
        (None, ["centers_from={d}/ctr.npy"], "needs features_from"),
        (None, ["geometry_pairwise_cosine=0.95"], "geometry_pairwise_cosine"),
        (None, ["geometry_spectrum_decay=0"], "geometry_spectrum_decay"),
        (None, ["geometry_spectrum_rank=1000"], "geometry_spectrum_rank: 1000 exceeds"),
    ],
)
def test_bad_feature_sources_are_one_line_exit_2(tmp_path, capsys, make, args, needle):
    from hmavd.cli.simulate import main

    rng = np.random.default_rng(0)
    np.save(tmp_path / "img.npy", rng.standard_normal((4, 1, 16)))
    np.save(tmp_path / "ctr.npy", rng.standard_normal((4, 16)))
    np.save(tmp_path / "bad.npy", rng.standard_normal((3, 16)))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "f.txt").write_text("x")
    rc = main(["--out", str(tmp_path / "o"), *(a.format(d=tmp_path) for a in args)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert re.search(needle, err), err
    assert not (tmp_path / "o").exists()


def test_reference_loader_refuses_non_float_rows(tmp_path):
    np.save(tmp_path / "int.npy", np.ones((4, 8), dtype=np.int64))
    with pytest.raises(UserError, match="expected finite float rows"):
        load_reference_features(tmp_path / "int.npy", tmp_path / "int.npy")


# --------------------------------------------------------------------------- real CLIP geometry (../shared/data)


def _real(shared_data):
    img = np.load(shared_data / "nice_clip_vitl14_test_images_200x1x768.npy")[:, 0].astype(np.float64)
    ctr = np.load(shared_data / "nice_clip_vitl14_center_200x768.npy").astype(np.float64)
    return img, ctr


def test_generated_geometry_is_close_to_real_clip(shared_data):
    real = geometry_statistics(*_real(shared_data))
    gen = geometry_statistics(*_generated())
    assert real["pairwise_cosine_mean"] == pytest.approx(0.54, abs=0.01)  # the published figures
    assert real["center_cosine_mean"] == pytest.approx(0.89, abs=0.01)
    for key, tol in (("pairwise_cosine_mean", 0.02), ("center_cosine_mean", 0.02), ("spectrum_slope", 0.15),
                     ("spectrum_top10", 0.06), ("pairwise_cosine_std", 0.025), ("center_top1", 0.08)):  # fmt: skip
        assert gen[key] == pytest.approx(real[key], abs=tol), key
    assert gen["participation_ratio"] == pytest.approx(real["participation_ratio"], rel=0.25)


def test_features_from_the_shared_reference_files(shared_data, tmp_path):
    img, ctr = _real(shared_data)
    cfg = SimulateConfig(**TINY, features_from=str(shared_data / "nice_clip_vitl14_test_images_200x1x768.npy"),
                         centers_from=str(shared_data / "nice_clip_vitl14_center_200x768.npy"))  # fmt: skip
    s = simulate_dataset(cfg, tmp_path / "sim")
    cache = load_feature_cache(tmp_path / "sim" / "features" / "clip-vitl14-sim")
    np.testing.assert_allclose(cache.image_features("test"), img[:8], atol=1e-6)
    np.testing.assert_allclose(cache.center_features(), ctr[:8], atol=1e-6)
    js = json.loads((tmp_path / "sim" / "simulation.json").read_text())
    assert js["feature_geometry"] == s["feature_geometry"] and "nice_clip" in js["feature_geometry"]


def test_latent_projection_is_normalised_on_its_reference():
    from hmavd.simulate import latent_projection, latent_sources

    img, _ = _generated(n=50)
    proj, mean, scale = latent_projection(np.random.default_rng(0), 6, 768, reference=img)
    z = latent_sources(img, proj, mean, scale)  # (50, 6)
    np.testing.assert_allclose(z.std(axis=0), 1.0)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-10)
    proj2, mean2, scale2 = latent_projection(np.random.default_rng(0), 6, 768)  # default: generated reference
    np.testing.assert_array_equal(proj2, proj)
    assert not np.allclose(mean2, mean) and scale2.shape == (6,) and np.all(scale2 > 0)


def test_features_from_a_cache_must_match_concepts_from(tmp_path):
    from hmavd.data.thingseeg2 import ImageMetadata, save_image_metadata

    simulate_dataset(SimulateConfig(**TINY), tmp_path / "a")
    cache = str(tmp_path / "a" / "features" / "clip-vitl14-sim")
    own = str(tmp_path / "a" / "image_set" / "image_metadata.npy")  # the metadata the cache was built from
    s = simulate_dataset(SimulateConfig(**TINY, features_from=cache, concepts_from=own), tmp_path / "b")
    assert s["n_test_images"] == 8
    other = ImageMetadata(("00001_x",) * 2, ("x_01b.jpg", "x_02b.jpg"), tuple(f"{i:05d}_y{i}" for i in range(1, 9)),
                          tuple(f"y{i}_01s.jpg" for i in range(1, 9)))  # fmt: skip
    save_image_metadata(tmp_path / "other.npy", other)
    cfg = SimulateConfig(
        **{**TINY, "n_train_concepts": 1}, features_from=cache, concepts_from=str(tmp_path / "other.npy")
    )
    with pytest.raises(UserError, match="concepts_from: .* lists other test concepts than features_from"):
        simulate_dataset(cfg, tmp_path / "c")
    assert not (tmp_path / "c").exists()
