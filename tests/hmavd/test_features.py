"""hmavd-features extract: image discovery, open_clip features, resume, offline weights.

Uses a tiny randomly initialised open_clip model (registered from a JSON config, saved to a weights
file) and generated PNG images; nothing is downloaded.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from feature_testkit import spread_visual
from PIL import Image

from hmavd.cli.features import main
from hmavd.data.thingseeg2 import ImageMetadata, load_image_metadata, save_image_metadata
from hmavd.errors import UserError
from hmavd.features import clip as fclip
from hmavd.features import images as fim
from hmavd.features.cache import check_against_metadata, load_feature_cache

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_NAME = "hmavd-tiny-test"

TRAIN = {"00001_apple": ["img_2.png", "img_10.png"], "00002_big_dog": ["a.png", "B.png"], "00010_cat": ["c.png"]}
TEST = {"00001_car": ["car_1.png"], "00002_zebra_crossing": ["z.png"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model config path, weights path, encoder) of a tiny random open_clip model."""
    d = tmp_path_factory.mktemp("tiny")
    cfg = d / f"{TINY_NAME}.json"
    cfg.write_text(json.dumps(TINY))
    torch.manual_seed(0)
    enc = fclip.load_clip(TINY_NAME, model_config=cfg, random_init=True, device="cpu")
    spread_visual(enc.model)
    weights = d / "open_clip_pytorch_model.bin"
    torch.save(enc.model.state_dict(), weights)
    return cfg, weights, fclip.load_clip(TINY_NAME, model_config=cfg, weights=weights, device="cpu")


def _write_split(folder, spec, seed):
    rng = np.random.default_rng(seed)
    for concept, files in spec.items():
        (folder / concept).mkdir(parents=True)
        for f in files:
            pix = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
            Image.fromarray(pix).save(folder / concept / f)


@pytest.fixture
def image_set(tmp_path):
    root = tmp_path / "image_set"
    _write_split(root / "training_images", TRAIN, 1)
    _write_split(root / "test_images", TEST, 2)
    (root / "training_images" / "00001_apple" / "notes.txt").write_text("not an image")
    return root


def _tree_ids(spec):
    return [f"{c}/{f}" for c in sorted(spec) for f in sorted(spec[c])]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_prompts_and_normalisation():
    assert fclip.concept_prompts(["00002_aircraft_carrier", "00003_cat"]) == [
        "This picture is of a aircraft carrier.",
        "This picture is of a cat.",
    ]
    assert fclip.concept_prompts(["00001_ice_cream"], "a {concept}") == ["a ice cream"]
    with pytest.raises(UserError, match="prompt_template"):
        fclip.concept_prompts(["00001_cat"], "no placeholder")
    with pytest.raises(UserError, match="prompt_template"):
        fclip.concept_prompts(["00001_cat"], "{concept} {other}")
    x = fclip.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)


def test_scan_split_code_point_order(image_set):
    lst = fim.scan_split(image_set / "training_images")
    # code-point order: "img_10" < "img_2", "B" < "a"; the .txt file is ignored
    assert list(lst.ids) == _tree_ids(TRAIN)
    assert lst.ids[0] == "00001_apple/img_10.png" and lst.ids[2] == "00002_big_dog/B.png"
    assert lst.concepts == ("00001_apple", "00002_big_dog", "00010_cat")
    assert all(p.is_file() for p in lst.paths)
    meta = fim.tree_metadata(image_set)
    assert meta.test_concepts == ("00001_car", "00002_zebra_crossing")
    with pytest.raises(UserError, match="--images"):
        fim.scan_split(image_set / "missing")


def test_flat_folder_and_metadata_order(image_set, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("x.png", "y.png", "z.png"):
        Image.new("RGB", (8, 8)).save(flat / name)
    lst_file = tmp_path / "concepts.csv"
    lst_file.write_text("# file,concept\nz.png,dog\nx.png,cat\ny.png\tcat\n")
    lst = fim.scan_flat(flat, lst_file)
    assert list(lst.ids) == ["cat/x.png", "cat/y.png", "dog/z.png"]
    assert [p.name for p in lst.paths] == ["x.png", "y.png", "z.png"]
    lst_file.write_text("x.png,cat\nmissing.png,dog\n")
    with pytest.raises(UserError, match="missing.png"):
        fim.scan_flat(flat, lst_file)

    ids = list(reversed(_tree_ids(TRAIN)))
    meta = ImageMetadata(
        tuple(i.split("/")[0] for i in ids), tuple(i.split("/")[1] for i in ids), ("00001_car",), ("car_1.png",)
    )
    got = fim.image_list_from_metadata(image_set / "training_images", meta, "training")
    assert list(got.ids) == ids
    bad = ImageMetadata(("00001_apple",), ("nope.png",), (), ())
    with pytest.raises(UserError, match="1 of the 1 training images.*nope.png"):
        fim.image_list_from_metadata(image_set / "training_images", bad, "training")


def test_center_images_lookup(tmp_path):
    (tmp_path / "c" / "car").mkdir(parents=True)
    (tmp_path / "c" / "00002_zebra_crossing").mkdir(parents=True)
    for p in ("car/1.png", "car/0.png", "00002_zebra_crossing/a.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "c" / p)
    groups = fim.center_images(tmp_path / "c", ["00001_car", "00002_zebra_crossing"])
    assert [[p.name for p in g] for g in groups] == [["0.png", "1.png"], ["a.png"]]
    with pytest.raises(UserError, match="--centers: 1 of 3.*00003_wok"):
        fim.center_images(tmp_path / "c", ["00001_car", "00002_zebra_crossing", "00003_wok"])


def test_extract_cli_tree(image_set, tiny, tmp_path, capsys):
    cfg, weights, enc = tiny
    out = tmp_path / "features" / "tiny"
    common = ["--model", TINY_NAME, "--model-config", str(cfg), "--weights", str(weights), "--no-progress"]
    over = ["device=cpu", "num_workers=0", "batch_size=2", "chunk_size=3"]
    rc = main(
        [
            "extract",
            "--images",
            str(image_set),
            "--out",
            str(out),
            "--write-metadata",
            str(tmp_path / "image_metadata.npy"),
            "--centers",
            str(image_set / "test_images"),
            *common,
            *over,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert not (tmp_path / "features" / "tiny.partial").exists()
    cache = load_feature_cache(out)
    prov = cache.provenance
    assert prov["train_images"] == _tree_ids(TRAIN) and prov["test_images"] == _tree_ids(TEST)
    assert prov["train_concepts"] == sorted(TRAIN) and prov["test_concepts"] == sorted(TEST)
    tr, te = cache.image_features("training"), cache.image_features("test")
    assert tr.shape == (5, 16) and te.shape == (2, 16) and cache.dim == 16
    assert cache.text_features("training").shape == (3, 16) and cache.text_features("test").shape == (2, 16)
    for a in (tr, te, cache.text_features("training"), cache.text_features("test")):
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # rows are the features of the right images / prompts
    paths = [image_set / "training_images" / i for i in _tree_ids(TRAIN)]
    np.testing.assert_allclose(tr, enc.encode_images(paths), atol=1e-5)
    prompts = ["This picture is of a car.", "This picture is of a zebra crossing."]
    np.testing.assert_allclose(cache.text_features("test"), enc.encode_texts(prompts), atol=1e-5)
    # each test concept has one image in --centers, so its center is that image's feature
    np.testing.assert_allclose(cache.center_features(), te, atol=1e-5)
    assert prov["weights_sha256"] == fclip.sha256_file(weights) and prov["model"] == TINY_NAME
    assert prov["prompt_template"] == "This picture is of a {concept}."
    assert "Normalize" in prov["preprocessing"] and prov["open_clip_version"]
    assert prov["pretrained"] is None and prov["dim"] == 16 and prov["config"]["chunk_size"] == 3
    assert (out / "config.yaml").exists()
    meta = load_image_metadata(tmp_path / "image_metadata.npy")
    check_against_metadata(cache, meta)
    assert main(["check", str(out), "--metadata", str(tmp_path / "image_metadata.npy")]) == 0
    # an existing cache is not overwritten without --overwrite
    assert main(["extract", "--images", str(image_set), "--out", str(out), *common, *over]) == 2
    assert "--overwrite" in capsys.readouterr().err

    # metadata order wins over tree order: reversed training images -> reversed rows
    ids = list(reversed(_tree_ids(TRAIN)))
    rev = ImageMetadata(
        tuple(i.split("/")[0] for i in ids),
        tuple(i.split("/")[1] for i in ids),
        meta.test_img_concepts,
        meta.test_img_files,
    )
    save_image_metadata(tmp_path / "rev.npy", rev)
    out2 = tmp_path / "features" / "rev"
    rc = main(
        [
            "extract",
            "--images",
            str(image_set),
            "--metadata",
            str(tmp_path / "rev.npy"),
            "--out",
            str(out2),
            *common,
            *over,
        ]
    )
    assert rc == 0
    cache2 = load_feature_cache(out2)
    assert cache2.provenance["train_images"] == ids
    np.testing.assert_allclose(cache2.image_features("training"), tr[::-1], atol=1e-5)
    with pytest.raises(UserError, match="training image order"):
        check_against_metadata(cache2, meta)


def test_extract_cli_flat_folders(tiny, tmp_path, capsys):
    cfg, weights, enc = tiny
    for split, names in (("train", ["t1.png", "t2.png", "t3.png"]), ("test", ["s1.png", "s2.png"])):
        (tmp_path / split).mkdir()
        for i, n in enumerate(names):
            pix = np.random.default_rng(10 * i + len(split)).integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pix).save(tmp_path / split / n)  # distinct images: a uniform set is a collapsed bank
    (tmp_path / "train.csv").write_text("t1.png,dog\nt2.png,cat\nt3.png,dog\n")
    (tmp_path / "test.csv").write_text("s1.png,zebra\ns2.png,cow\n")
    rc = main(
        [
            "extract",
            "--train-images",
            str(tmp_path / "train"),
            "--train-concepts",
            str(tmp_path / "train.csv"),
            "--test-images",
            str(tmp_path / "test"),
            "--test-concepts",
            str(tmp_path / "test.csv"),
            "--write-metadata",
            str(tmp_path / "meta.json"),
            "--out",
            str(tmp_path / "c"),
            "--model",
            TINY_NAME,
            "--model-config",
            str(cfg),
            "--weights",
            str(weights),
            "--no-progress",
            "num_workers=0",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    cache = load_feature_cache(tmp_path / "c")
    assert cache.provenance["train_images"] == ["cat/t2.png", "dog/t1.png", "dog/t3.png"]
    assert cache.provenance["test_concepts"] == ["cow", "zebra"]
    np.testing.assert_allclose(
        cache.image_features("test"),
        enc.encode_images([tmp_path / "test" / "s2.png", tmp_path / "test" / "s1.png"]),
        atol=1e-5,
    )
    check_against_metadata(cache, load_image_metadata(tmp_path / "meta.json"))


def test_resume_after_kill(image_set, tiny, tmp_path):
    _, _, enc = tiny
    train = fim.scan_split(image_set / "training_images")
    test = fim.scan_split(image_set / "test_images")
    calls = []
    real = enc.encode_image_batch

    def counting(pixels, fail_at=None):
        calls.append(len(pixels))
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt("simulated kill")
        return real(pixels)

    partial = tmp_path / "cache.partial"
    kw = dict(chunk_size=2, batch_size=2, progress=False)
    enc.encode_image_batch = lambda p: counting(p, fail_at=3)
    try:
        with pytest.raises(KeyboardInterrupt):
            fclip.extract_features(enc, train, test, partial, **kw)
        manifest = json.loads((partial / "manifest.json").read_text())
        assert sorted(manifest["chunks"]) == ["train_image_000000.safetensors", "train_image_000001.safetensors"]
        calls.clear()
        enc.encode_image_batch = lambda p: counting(p)
        resumed = fclip.extract_features(enc, train, test, partial, **kw)
        # 5 train images in chunks of 2 -> 3 chunks; the first two are not recomputed
        assert calls == [1, 2]  # last train chunk (1 image), then the test chunk (2 images)
        calls.clear()
        full = fclip.extract_features(enc, train, test, tmp_path / "other.partial", **kw)
        assert sum(calls) == 7
        for k in full:
            np.testing.assert_allclose(resumed[k], full[k], atol=1e-6)
        # other settings (template) -> the partial results are discarded, everything recomputed
        calls.clear()
        fclip.extract_features(enc, train, test, partial, prompt_template="a {concept}", **kw)
        assert sum(calls) == 7
    finally:
        del enc.encode_image_batch


def test_missing_weights_one_line_error(tmp_path):
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    with pytest.raises(UserError, match=r"--pretrained: weights of ViT-B-32.*--weights /path/to/"):
        fclip.load_clip("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(empty), device="cpu")
    with pytest.raises(UserError, match=r"not on this machine.*ViT-B-32\.pt"):
        fclip.load_clip("ViT-B-32", "openai", cache_dir=str(empty), device="cpu")
    with pytest.raises(UserError, match="--weights: .*does not exist"):
        fclip.load_clip("ViT-B-32", None, weights=tmp_path / "nope.bin", device="cpu")
    with pytest.raises(UserError, match="not a tag of ViT-B-32"):
        fclip.load_clip("ViT-B-32", "no-such-tag", device="cpu")
    with pytest.raises(UserError, match="not an open_clip architecture"):
        fclip.load_clip("No-Such-Model", "openai", device="cpu")


def test_missing_weights_cli_exit_code(image_set, tmp_path, capsys):
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    rc = main(
        [
            "extract",
            "--images",
            str(image_set),
            "--out",
            str(tmp_path / "o"),
            "--model",
            "ViT-B-32",
            "--pretrained",
            "laion2b_s34b_b79k",
            "--cache-dir",
            str(empty),
            "num_workers=0",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hmavd-features: error: --pretrained") and "\n" not in err
    assert "--weights /path/to/open_clip_pytorch_model.bin" in err
    assert not (tmp_path / "o").exists()


def test_weights_that_do_not_fit_the_model(tiny, tmp_path):
    cfg, _, _ = tiny
    bad = tmp_path / "bad.bin"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="cannot load"):
        fclip.load_clip(TINY_NAME, None, weights=bad, model_config=cfg, device="cpu")


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_image_one_line_error(tiny, tmp_path, num_workers):
    _, _, enc = tiny
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    Image.new("RGB", (8, 8)).save(good)
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UserError) as info:
        enc.encode_images([good, bad], batch_size=2, num_workers=num_workers)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"images: {bad} is not a readable image")


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_weights_refused(tiny, tmp_path):
    cfg, _, _ = tiny
    ts = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(ts))
    with pytest.raises(UserError, match="TorchScript archive.*safetensors"):
        fclip.load_clip(TINY_NAME, None, weights=ts, model_config=cfg, device="cpu")


def test_find_cached_weights_url_cache(tmp_path):
    url_cfg = {"url": "https://example.org/x/ViT-Q.pt", "hf_hub": ""}
    assert fclip.find_cached_weights(url_cfg, str(tmp_path))[0] is None
    (tmp_path / "ViT-Q.pt").write_bytes(b"w")
    assert fclip.find_cached_weights(url_cfg, str(tmp_path))[0] == str(tmp_path / "ViT-Q.pt")


@pytest.mark.gpu
def test_extract_on_gpu_matches_cpu(image_set, tiny):
    cfg, weights, enc = tiny
    gpu = fclip.load_clip(TINY_NAME, model_config=cfg, weights=weights, device="cuda")
    paths = fim.scan_split(image_set / "test_images").paths
    np.testing.assert_allclose(gpu.encode_images(paths), enc.encode_images(paths), atol=1e-4)
