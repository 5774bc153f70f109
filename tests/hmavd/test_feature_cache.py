"""The feature cache contract (save/load/check) and ``hmavd-features import`` of published files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hmavd.cli.features import main
from hmavd.data.thingseeg2 import ImageMetadata, save_image_metadata
from hmavd.errors import UserError
from hmavd.features import importer
from hmavd.features.cache import (
    check_against_metadata,
    image_ids,
    load_feature_cache,
    save_feature_cache,
)

D = 16
TINY = {
    "embed_dim": D,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _meta() -> ImageMetadata:
    # 3 training concepts x 2 images, 2 test concepts x 1 image
    train = [(c, f"{c[6:]}_{i}.jpg") for c in ("00001_apple", "00002_dog", "00003_ice_cream") for i in (1, 2)]
    test = [("00001_car", "car_1.jpg"), ("00002_wok", "wok_1.jpg")]
    return ImageMetadata(
        tuple(c for c, _ in train), tuple(f for _, f in train), tuple(c for c, _ in test), tuple(f for _, f in test)
    )


def _arrays(meta, rng, d=D):
    return {
        "train_image_features": rng.standard_normal((len(meta.train_img_files), d)).astype(np.float32),
        "test_image_features": rng.standard_normal((len(meta.test_img_files), d)).astype(np.float32),
        "train_text_features": rng.standard_normal((len(meta.train_concepts), d)).astype(np.float32),
        "test_text_features": rng.standard_normal((len(meta.test_concepts), d)).astype(np.float32),
    }


def _prov(meta):
    return {
        "model": "tiny",
        "train_images": image_ids(meta, "training"),
        "test_images": image_ids(meta, "test"),
        "train_concepts": list(meta.train_concepts),
        "test_concepts": list(meta.test_concepts),
    }


def test_roundtrip_and_mismatch_errors(tmp_path):
    meta = _meta()
    arrays = _arrays(meta, np.random.default_rng(0))
    path = save_feature_cache(tmp_path / "c", arrays, _prov(meta))
    cache = load_feature_cache(path)
    assert cache.dim == D and cache.provenance["dim"] == D and cache.center_features() is None
    np.testing.assert_array_equal(cache.image_features("training"), arrays["train_image_features"])
    check_against_metadata(cache, meta)

    # image order differs (two training images swapped)
    files = list(meta.train_img_files)
    files[0], files[1] = files[1], files[0]
    swapped = ImageMetadata(meta.train_img_concepts, tuple(files), meta.test_img_concepts, meta.test_img_files)
    with pytest.raises(UserError, match=r"training image order \(entry 0 is '00001_apple/apple_1.jpg' in the cache"):
        check_against_metadata(cache, swapped)
    # a different test image count
    fewer = ImageMetadata(meta.train_img_concepts, meta.train_img_files, ("00001_car",), ("car_1.jpg",))
    with pytest.raises(UserError, match=r"test image order \(2 entries vs 1\)"):
        check_against_metadata(cache, fewer)
    # same images, but the cache's concept list is in another order
    prov = _prov(meta)
    prov["train_concepts"] = list(reversed(prov["train_concepts"]))
    bad = load_feature_cache(save_feature_cache(tmp_path / "bad", arrays, prov))
    with pytest.raises(UserError, match="training concept list"):
        check_against_metadata(bad, meta)


def test_save_and_load_refuse_malformed(tmp_path):
    meta = _meta()
    arrays = _arrays(meta, np.random.default_rng(1))
    with pytest.raises(ValueError, match="train_images"):
        save_feature_cache(tmp_path / "x", arrays, {**_prov(meta), "train_images": ["a"]})
    with pytest.raises(ValueError, match="one dimension"):
        save_feature_cache(tmp_path / "x", {**arrays, "test_center_features": np.zeros((2, 3))}, _prov(meta))
    with pytest.raises(UserError, match="is not a feature cache"):
        load_feature_cache(tmp_path / "nothing")
    path = save_feature_cache(tmp_path / "v", arrays, _prov(meta))
    prov = json.loads((path / "provenance.json").read_text())
    (path / "provenance.json").write_text(json.dumps({**prov, "format_version": 99}))
    with pytest.raises(UserError, match="format_version 99"):
        load_feature_cache(path)


def test_feature_file_shapes(tmp_path):
    a = np.arange(12, dtype=np.float64).reshape(3, 1, 4)
    np.save(tmp_path / "a.npy", a)
    got = importer.load_feature_file(tmp_path / "a.npy", "--train")
    assert got.shape == (3, 4) and got.dtype == np.float32
    np.testing.assert_array_equal(got, a[:, 0])
    np.save(tmp_path / "bad.npy", np.zeros((3, 2, 4)))
    with pytest.raises(UserError, match=r"shape \(3, 2, 4\)"):
        importer.load_feature_file(tmp_path / "bad.npy", "--train")
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="pickled object array"):
        importer.load_feature_file(tmp_path / "obj.npy", "--train")
    np.save(tmp_path / "nan.npy", np.full((2, 4), np.nan))
    with pytest.raises(UserError, match="NaN"):
        importer.load_feature_file(tmp_path / "nan.npy", "--train")
    torch.save(
        {"train": torch.ones(3, 1, 4), "test": torch.zeros(2, 4), "center_clip": torch.ones(2, 4)}, tmp_path / "k.pt"
    )
    keyed = importer.load_keyed_features(tmp_path / "k.pt")
    assert {k: v.shape for k, v in keyed.items()} == {"training": (3, 4), "test": (2, 4), "center": (2, 4)}
    torch.save({"val": torch.ones(3, 4)}, tmp_path / "v.pt")
    with pytest.raises(UserError, match=r"lacks \['training', 'test'\]"):
        importer.load_keyed_features(tmp_path / "v.pt")


def test_import_nice_style_files(tmp_path, capsys):
    meta = _meta()
    save_image_metadata(tmp_path / "image_metadata.npy", meta)
    rng = np.random.default_rng(2)
    arrays = _arrays(meta, rng)
    np.save(tmp_path / "clip_feature_maps_training.npy", arrays["train_image_features"][:, None, :] * 3.0)
    np.save(tmp_path / "clip_feature_maps_test.npy", arrays["test_image_features"][:, None, :])
    np.save(tmp_path / "center_clip.npy", arrays["test_image_features"] * 2.0)
    np.save(tmp_path / "train_text.npy", arrays["train_text_features"])
    np.save(tmp_path / "test_text.npy", arrays["test_text_features"])
    args = [
        "import",
        "--metadata",
        str(tmp_path / "image_metadata.npy"),
        "--train",
        str(tmp_path / "clip_feature_maps_training.npy"),
        "--test",
        str(tmp_path / "clip_feature_maps_test.npy"),
        "--centers-file",
        str(tmp_path / "center_clip.npy"),
        "--train-text",
        str(tmp_path / "train_text.npy"),
        "--test-text",
        str(tmp_path / "test_text.npy"),
    ]
    assert main([*args, "--out", str(tmp_path / "nice")]) == 0, capsys.readouterr().err
    cache = load_feature_cache(tmp_path / "nice")
    tr = cache.image_features("training")
    assert tr.shape == (6, D) and cache.text_features("training").shape == (3, D)
    np.testing.assert_allclose(np.linalg.norm(tr, axis=1), 1.0, atol=1e-6)
    x = arrays["train_image_features"]
    np.testing.assert_allclose(tr, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(cache.center_features(), arrays["test_image_features"] * 2.0, atol=1e-6)
    check_against_metadata(cache, meta)
    prov = cache.provenance
    assert prov["source"] == "import" and prov["imported_files"]["train"]["sha256"]
    assert prov["train_images"] == image_ids(meta, "training")

    # row counts are validated against the metadata
    np.save(tmp_path / "short.npy", arrays["train_image_features"][:5, None, :])
    bad = [a if a != str(tmp_path / "clip_feature_maps_training.npy") else str(tmp_path / "short.npy") for a in args]
    assert main([*bad, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "training images features have 5 rows but the metadata has 6" in err and not (tmp_path / "bad").exists()
    # text features of another dimension
    np.save(tmp_path / "t8.npy", np.ones((3, 8)))
    bad = [a if a != str(tmp_path / "train_text.npy") else str(tmp_path / "t8.npy") for a in args]
    assert main([*bad, "--out", str(tmp_path / "bad")]) == 2
    assert "dimensions differ" in capsys.readouterr().err


def test_import_keyed_file_with_text_from_clip(tmp_path, capsys):
    meta = _meta()
    save_image_metadata(tmp_path / "image_metadata.npy", meta)
    arrays = _arrays(meta, np.random.default_rng(3))
    torch.save(
        {
            "train": torch.from_numpy(arrays["train_image_features"]),
            "test": torch.from_numpy(arrays["test_image_features"]),
        },
        tmp_path / "features.pt",
    )
    base = [
        "import",
        "--metadata",
        str(tmp_path / "image_metadata.npy"),
        "--tensor-file",
        str(tmp_path / "features.pt"),
    ]
    # no text files and no weights -> one-line error that says how to get them
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, "--out", str(tmp_path / "a"), "--cache-dir", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--train-text/--test-text" in err and "--weights" in err and "\n" not in err

    cfg = tmp_path / "hmavd-tiny-import.json"
    cfg.write_text(json.dumps(TINY))
    from hmavd.features.clip import concept_prompts, load_clip

    torch.manual_seed(0)
    enc = load_clip("hmavd-tiny-import", model_config=cfg, random_init=True, device="cpu")
    torch.save(enc.model.state_dict(), tmp_path / "w.bin")
    rc = main(
        [
            *base,
            "--out",
            str(tmp_path / "b"),
            "--model",
            "hmavd-tiny-import",
            "--model-config",
            str(cfg),
            "--weights",
            str(tmp_path / "w.bin"),
            "device=cpu",
            "prompt_template=a photo of {concept}",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    cache = load_feature_cache(tmp_path / "b")
    want = enc.encode_texts(concept_prompts(meta.train_concepts, "a photo of {concept}"))
    np.testing.assert_allclose(cache.text_features("training"), want, atol=1e-5)
    assert cache.provenance["prompt_template"] == "a photo of {concept}"
    assert cache.provenance["model"] == "hmavd-tiny-import"


def test_import_real_nice_test_features(tmp_path, capsys, shared_data):
    """The real NICE ViT-L/14 test features (200, 768), as NICE ships them (200, 1, 768); skipped without them."""
    import csv

    with open(shared_data / "thingseeg2_test_concepts_200.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    meta = ImageMetadata(
        ("00001_aardvark", "00002_abacus"),
        ("aardvark_01b.jpg", "abacus_01b.jpg"),
        tuple(r["raw_concept"] for r in rows),
        tuple(r["test_img_file"] for r in rows),
    )
    assert meta.test_concepts == tuple(r["raw_concept"] for r in rows)  # the file is in sorted folder order
    save_image_metadata(tmp_path / "image_metadata.npy", meta)
    test = np.load(shared_data / "nice_clip_vitl14_test_images_200x1x768.npy")[:, 0]  # (200, 768)
    np.save(tmp_path / "clip_feature_maps_test.npy", test[:, None, :])
    np.save(tmp_path / "clip_feature_maps_training.npy", test[:2, None, :])
    np.save(tmp_path / "center_clip.npy", np.load(shared_data / "nice_clip_vitl14_center_200x768.npy"))
    np.save(tmp_path / "train_text.npy", test[:2])
    np.save(tmp_path / "test_text.npy", test)
    rc = main(
        [
            "import",
            "--metadata",
            str(tmp_path / "image_metadata.npy"),
            "--train",
            str(tmp_path / "clip_feature_maps_training.npy"),
            "--test",
            str(tmp_path / "clip_feature_maps_test.npy"),
            "--centers-file",
            str(tmp_path / "center_clip.npy"),
            "--train-text",
            str(tmp_path / "train_text.npy"),
            "--test-text",
            str(tmp_path / "test_text.npy"),
            "--out",
            str(tmp_path / "nice"),
            "--model",
            "ViT-L-14",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    cache = load_feature_cache(tmp_path / "nice")
    assert cache.dim == 768 and cache.image_features("test").shape == (200, 768)
    np.testing.assert_allclose(cache.image_features("test"), test, atol=1e-5)  # already unit norm
    assert cache.provenance["test_images"][0] == "00001_aircraft_carrier/aircraft_carrier_06s.jpg"
    assert cache.describe().startswith("ViT-L-14 (openai)")
