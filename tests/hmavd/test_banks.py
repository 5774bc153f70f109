"""Target banks: image variants, intermediate layers and their pooling, the collapse check.

Tiny randomly initialised open_clip models (a 2-block ViT and a ModifiedResNet, registered from JSON
configs) on generated images; nothing is downloaded.
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
from hmavd.errors import UserError
from hmavd.features import banks
from hmavd.features import clip as fclip
from hmavd.features.cache import load_feature_cache, save_feature_cache, variant_tensor
from hmavd.features.collapse import check_collapse, effective_rank, median_pair_cosine

TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
VIT = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": TEXT,
}
RN = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}, "text_cfg": TEXT}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _model(tmp_path, name, cfg, spread=True):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    torch.manual_seed(0)
    enc = fclip.load_clip(name, model_config=path, random_init=True, device="cpu")
    if spread:
        spread_visual(enc.model)
    weights = tmp_path / f"{name}.bin"
    torch.save(enc.model.state_dict(), weights)
    return path, weights, enc


def _structured(seed, size=(48, 40)):
    """A random low-frequency colour image (a set of these is not a collapsed bank)."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.BILINEAR)
    return Image.fromarray((0.5 * np.asarray(low) + 0.5 * rng.integers(0, 256, (1, 1, 3))).astype(np.uint8))


# ---------------------------------------------------------------- variants
def _blur_by_hand(img: np.ndarray, k: int) -> np.ndarray:
    """Separable Gaussian blur with OpenCV's sigma for kernel k and reflect padding, in float."""
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    x = np.arange(k) - (k - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    w /= w.sum()
    r = k // 2
    pad = np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="reflect")
    rows = sum(w[i] * pad[i : i + img.shape[0]] for i in range(k))  # (H, W + 2r, 3)
    return sum(w[i] * rows[:, i : i + img.shape[1]] for i in range(k))  # (H, W, 3)


def test_variant_parsing_and_names():
    assert banks.parse_variant("blur:9") == banks.Variant("blur", 9.0)
    assert [v.name for v in banks.parse_variants(["none", "blur:3", "lowres:32", "noise:0.1", "mosaic:8"])] == [
        "none",
        "blur:3",
        "lowres:32",
        "noise:0.1",
        "mosaic:8",
    ]
    assert banks.opencv_sigma(3) == pytest.approx(0.8) and banks.opencv_sigma(9) == pytest.approx(1.7)
    for bad, match in (("blur:4", "odd"), ("swirl:2", "not a variant"), ("noise:x", "number"), ("lowres:0", "pos")):
        with pytest.raises(UserError, match=match):
            banks.parse_variant(bad)
    with pytest.raises(UserError, match="given twice"):
        banks.parse_variants(["blur:3", "blur:3"])


def test_variants_against_hand_computations():
    rng = np.random.default_rng(0)
    pix = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    img = Image.fromarray(pix)
    for k in (3, 5):
        got = np.asarray(banks.apply_variant(img, banks.Variant("blur", k)), dtype=np.float64)
        assert np.abs(got - _blur_by_hand(pix, k)).max() <= 1.0  # uint8 rounding
    assert banks.apply_variant(img, banks.Variant("blur", 1)) is img
    # mosaic:2 = the mean of each 2 x 2 block, repeated
    mos = np.asarray(banks.apply_variant(img, banks.Variant("mosaic", 2)), dtype=np.float64)
    block = pix.reshape(6, 2, 5, 2, 3).astype(np.float64).mean(axis=(1, 3))  # (6, 5, 3)
    assert np.abs(mos - np.repeat(np.repeat(block, 2, 0), 2, 1)).max() <= 1.0
    # lowres keeps the size and removes detail; noise is seeded by the row index
    low = np.asarray(banks.apply_variant(img, banks.Variant("lowres", 2)), dtype=np.float64)
    assert low.shape == pix.shape and np.abs(np.diff(low, axis=1)).mean() < np.abs(np.diff(pix, axis=1)).mean() / 2
    grey = Image.fromarray(np.full((40, 40, 3), 128, np.uint8))
    n1 = np.asarray(banks.apply_variant(grey, banks.Variant("noise", 0.1), index=1), dtype=np.float64)
    n1b = np.asarray(banks.apply_variant(grey, banks.Variant("noise", 0.1), index=1), dtype=np.float64)
    n2 = np.asarray(banks.apply_variant(grey, banks.Variant("noise", 0.1), index=2), dtype=np.float64)
    np.testing.assert_array_equal(n1, n1b)
    assert not np.array_equal(n1, n2) and (n1 - 128).std() == pytest.approx(25.5, rel=0.1)


# ---------------------------------------------------------------- layers and pooling
def test_resolve_layer_and_pool():
    assert banks.resolve_layer("final", 12) is None and banks.resolve_layer(None, 12) is None
    assert banks.resolve_layer("-1", 12) == 11 and banks.resolve_layer(3, 12) == 3
    assert banks.resolve_layer("0.5", 12) == 5 and banks.resolve_layer("1.0", 12) == 11
    assert banks.resolve_layer("0.01", 4) == 0
    for bad in ("12", "-13", "1.5", "middle"):
        with pytest.raises(UserError, match="layer"):
            banks.resolve_layer(bad, 12)
    x = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)  # (B, L, W)
    torch.testing.assert_close(banks.pool_output(x, "cls"), x[:, 0])
    torch.testing.assert_close(banks.pool_output(x, "mean"), (x[:, 1] + x[:, 2]) / 2)
    m = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)  # (B, C, H, W)
    torch.testing.assert_close(banks.pool_output(m, "avg"), torch.tensor([[7.5]]))
    with pytest.raises(UserError, match="pool"):
        banks.pool_output(m, "cls")


def test_vit_intermediate_layer_by_hand(tmp_path):
    _, _, enc = _model(tmp_path, "hmavd-bank-vit", VIT)
    visual = enc.model.visual
    pixels = torch.stack([enc.preprocess(_structured(i)) for i in range(4)])  # (4, 3, 32, 32)
    with torch.no_grad():
        x = visual.conv1(pixels).flatten(2).transpose(1, 2)  # (4, 16, 32) patch tokens
        cls = visual.class_embedding.expand(4, 1, -1)
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding)  # (4, 17, 32)
        blocks = visual.transformer.resblocks
        h0 = blocks[0](x)  # (4, 17, 32)
    enc.set_layer("0", "cls")
    np.testing.assert_allclose(
        enc.encode_image_batch(pixels), torch.nn.functional.normalize(h0[:, 0]).numpy(), atol=1e-5
    )
    enc.set_layer("0.5", "mean")  # 2 blocks: relative depth 0.5 is block 0
    want = torch.nn.functional.normalize(h0[:, 1:].mean(1)).numpy()
    np.testing.assert_allclose(enc.encode_image_batch(pixels), want, atol=1e-5)
    assert enc.info["layer_index"] == 0 and enc.info["pool"] == "mean"
    enc.set_layer("final")
    final = enc.encode_image_batch(pixels)
    assert final.shape == (4, 16) and enc.layer is None
    with torch.no_grad():
        np.testing.assert_allclose(final, torch.nn.functional.normalize(enc.model.encode_image(pixels)), atol=1e-5)


def test_resnet_attnpool_input_by_hand(tmp_path):
    _, _, enc = _model(tmp_path, "hmavd-bank-rn", RN)
    visual = enc.model.visual
    pixels = torch.stack([enc.preprocess(_structured(i)) for i in range(4)])  # (4, 3, 32, 32)
    with torch.no_grad():
        fmap = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels)))))  # (4, C, h, w)
    enc.set_layer("-1", "auto")
    got = enc.encode_image_batch(pixels)
    assert got.shape == (4, fmap.shape[1])
    np.testing.assert_allclose(got, torch.nn.functional.normalize(fmap.mean((2, 3))).numpy(), atol=1e-5)
    with pytest.raises(UserError, match="pool"):
        enc.set_layer("-1", "cls")
        enc.encode_image_batch(pixels)


# ---------------------------------------------------------------- collapse
def test_collapse_statistics_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    # pair cosines 0, 1/sqrt2, 1/sqrt2 -> median 1/sqrt2
    assert median_pair_cosine(x) == pytest.approx(2**-0.5)
    assert effective_rank(np.eye(5)) == pytest.approx(5.0)
    assert effective_rank(np.ones((6, 4))) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    good = rng.standard_normal((50, 32))
    st = check_collapse(good, "bank")
    assert abs(st.median_cosine) < 0.2 and st.effective_rank > 20
    collapsed = np.ones((50, 32)) + 0.01 * good  # the published-cache failure: one shared direction
    with pytest.raises(UserError, match=r"bank: collapsed bank \(median cosine") as err:
        check_collapse(collapsed, "bank")
    assert "\n" not in str(err.value)
    flat = np.zeros((50, 32))
    flat[:, 0], flat[:, 1] = rng.standard_normal(50), 0.001  # spread (cosines ~ +-1) but rank ~1
    with pytest.raises(UserError, match="effective rank"):
        check_collapse(flat, "bank", max_median_cosine=1.0)


def _cache_arrays(rng, collapsed=False):
    img = rng.standard_normal((6, 8)).astype(np.float32)
    if collapsed:
        img = (1 + 0.001 * img).astype(np.float32)
    return {
        "train_image_features": img[:4],
        "test_image_features": img[4:],
        "train_text_features": rng.standard_normal((2, 5)).astype(np.float32),
        "test_text_features": rng.standard_normal((2, 5)).astype(np.float32),
    }


def test_cache_collapse_at_save_and_load(tmp_path, caplog):
    from safetensors.numpy import save_file

    prov = {"train_images": list("abcd"), "test_images": ["e", "f"], "train_concepts": ["x", "y"]}
    prov["test_concepts"] = ["z", "w"]
    rng = np.random.default_rng(0)
    path = save_feature_cache(tmp_path / "ok", _cache_arrays(rng), prov)
    cache = load_feature_cache(path)
    assert cache.dim == 8 and cache.text_dim == 5  # an intermediate layer: image and text sizes differ
    assert set(cache.provenance["collapse"]) == {"train_image_features", "test_image_features"}
    with pytest.raises(UserError, match="train_image_features: collapsed bank"):
        save_feature_cache(tmp_path / "bad", _cache_arrays(rng, collapsed=True), prov)
    assert not (tmp_path / "bad").exists()
    # a cache altered after it was written is refused at load
    save_file(_cache_arrays(rng, collapsed=True), str(path / "features.safetensors"))
    with pytest.raises(UserError, match="collapsed bank"):
        load_feature_cache(path)
    # built with collapse_check=false: written and loaded, with a warning
    off = save_feature_cache(tmp_path / "off", _cache_arrays(rng, collapsed=True), {**prov, "collapse_check": False})
    assert load_feature_cache(off).dim == 8 and "collapse_check=false" in caplog.text


# ---------------------------------------------------------------- extraction
def _image_set(root):
    for split, spec in (
        ("training_images", {"00001_a": 3, "00002_b": 3}),
        ("test_images", {"00001_c": 2, "00002_d": 2}),
    ):
        for c, n in spec.items():
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                _structured(hash((split, c, i)) % 1000).save(root / split / c / f"{i}.png")
    return root


def test_extract_variants_and_layer_cli(tmp_path, capsys):
    cfg, weights, enc = _model(tmp_path, "hmavd-bank-vit2", VIT)
    images = _image_set(tmp_path / "image_set")
    out = tmp_path / "bank"
    common = ["--model", "hmavd-bank-vit2", "--model-config", str(cfg), "--weights", str(weights), "--no-progress"]
    rc = main(
        ["extract", "--images", str(images), "--out", str(out), *common, "device=cpu", "num_workers=0"]
        + ["chunk_size=4", "variants=[none,blur:3,mosaic:4]", "store_variants=true", "layer=-1", "pool=mean"]
    )
    assert rc == 0, capsys.readouterr().err
    cache = load_feature_cache(out)
    assert cache.variants() == ["none", "blur:3", "mosaic:4"]
    assert cache.dim == 32 and cache.text_dim == 16  # trunk width vs text embedding
    prov = cache.provenance
    assert prov["layer"] == "-1" and prov["layer_index"] == 1 and prov["pool"] == "mean"
    assert prov["variants"] == ["none", "blur:3", "mosaic:4"] and prov["collapse_check"] is True
    assert variant_tensor("blur:3", "test_image_features") in prov["collapse"]
    paths = sorted((images / "training_images").rglob("*.png"))
    enc.set_layer("-1", "mean")
    per = {}
    for name in cache.variants():
        per[name] = enc.encode_images(paths, variant=banks.parse_variant(name))
        np.testing.assert_allclose(cache.variant_features(name, "training"), per[name], atol=1e-5)
    mean = np.mean(list(per.values()), axis=0)
    want = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(cache.image_features("training"), want, atol=1e-5)
    assert not np.allclose(per["none"], per["blur:3"], atol=1e-3)
    with pytest.raises(UserError, match="not stored"):
        cache.variant_features("noise:0.1", "training")


def test_extract_refuses_collapsed_tower(tmp_path, capsys, caplog):
    """open_clip's default init of a tiny tower maps all images to one direction: refused, one line."""
    cfg, weights, _ = _model(tmp_path, "hmavd-bank-flat", RN, spread=False)
    images = _image_set(tmp_path / "image_set")
    common = ["--model", "hmavd-bank-flat", "--model-config", str(cfg), "--weights", str(weights), "--no-progress"]
    args = ["extract", "--images", str(images), *common]

    def run(out, *over):
        return main([*args, "--out", str(tmp_path / out), "device=cpu", "num_workers=0", *over])

    assert run("a") == 2
    err = capsys.readouterr().err.strip()
    assert "collapsed bank (median cosine" in err and "collapse_check=false" in err and "\n" not in err
    assert run("b", "collapse_check=false") == 0
    assert load_feature_cache(tmp_path / "b").provenance["collapse_check"] is False
    assert run("c", "pool=middle") == 2
    assert "pool" in capsys.readouterr().err


def test_extract_concat_levels_for_heads(tmp_path, capsys):
    """variant_mode=concat: the levels side by side (N, V·D), centres likewise; text keeps its own size."""
    cfg, weights, enc = _model(tmp_path, "hmavd-bank-vit3", VIT)
    images = _image_set(tmp_path / "image_set")
    out = tmp_path / "bank"
    common = ["--model", "hmavd-bank-vit3", "--model-config", str(cfg), "--weights", str(weights), "--no-progress"]
    rc = main(
        ["extract", "--images", str(images), "--centers", str(images / "test_images"), "--out", str(out), *common]
        + ["device=cpu", "num_workers=0", "variants=[blur:1,blur:5]", "variant_mode=concat"]
    )
    assert rc == 0, capsys.readouterr().err
    cache = load_feature_cache(out)
    assert cache.dim == 32 and cache.text_dim == 16 and cache.provenance["variant_mode"] == "concat"
    levels = [banks.parse_variant(v) for v in ("blur:1", "blur:5")]
    for split, folder in (("training", "training_images"), ("test", "test_images")):
        paths = sorted((images / folder).rglob("*.png"))
        want = np.concatenate([enc.encode_images(paths, variant=v) for v in levels], axis=1)  # (N, 2·16)
        np.testing.assert_allclose(cache.image_features(split), want, atol=1e-5)
    paths = sorted((images / "test_images").rglob("*.png"))  # 2 concepts x 2 images, concept-major
    per = np.concatenate([enc.encode_images(paths, variant=v) for v in levels], axis=1)
    np.testing.assert_allclose(cache.center_features(), per.reshape(2, 2, 32).mean(1), atol=1e-5)
    assert main(["extract", "--images", str(images), "--out", str(tmp_path / "x"), *common, "variant_mode=stack"]) == 2


def test_timm_backbone_bank(tmp_path, capsys):
    """A tiny random timm ViT (weights saved to a file, loaded offline) as an image bank, text from another cache."""
    timm = pytest.importorskip("timm")
    kw = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **kw)
    spread_visual(type("M", (), {"visual": net})())
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    images = _image_set(tmp_path / "image_set")
    cfg, weights, _ = _model(tmp_path, "hmavd-bank-text", VIT)
    clip_args = ["--model", "hmavd-bank-text", "--model-config", str(cfg), "--weights", str(weights)]
    base = ["extract", "--images", str(images), "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "text"), *clip_args, "device=cpu", "num_workers=0"]) == 0
    timm_args = ["--model", "vit_tiny_patch16_224", "--weights", str(tmp_path / "vit.safetensors")]
    over = ["device=cpu", "num_workers=0", "backend=timm", f"text_from={tmp_path / 'text'}"]
    over.append("timm_kwargs=[img_size=32,patch_size=8,depth=2,embed_dim=32,num_heads=2]")
    assert main([*base, "--out", str(tmp_path / "timm"), *timm_args, *over]) == 0, capsys.readouterr().err
    cache = load_feature_cache(tmp_path / "timm")
    assert cache.dim == 32 and cache.provenance["backend"] == "timm" and cache.provenance["timm_version"]
    np.testing.assert_array_equal(
        cache.text_features("test"), load_feature_cache(tmp_path / "text").text_features("test")
    )
    net.eval()
    paths = sorted((images / "test_images").rglob("*.png"))
    from hmavd.features.timm_backend import load_timm

    enc = load_timm("vit_tiny_patch16_224", tmp_path / "vit.safetensors", "cpu", kw)
    with torch.no_grad():
        px = torch.stack([enc.preprocess(Image.open(p).convert("RGB")) for p in paths])  # (N, 3, 32, 32)
        want = torch.nn.functional.normalize(net(px), dim=-1).numpy()
    np.testing.assert_allclose(cache.image_features("test"), want, atol=1e-5)
    enc.set_layer("0", "mean")  # block 0, mean of the patch tokens (timm's prefix tokens excluded)
    with torch.no_grad():
        tokens = net.blocks[0](net.norm_pre(net._pos_embed(net.patch_embed(px))))  # (N, 1 + 16, 32)
    np.testing.assert_allclose(
        enc.encode_image_batch(px), torch.nn.functional.normalize(tokens[:, 1:].mean(1), dim=-1).numpy(), atol=1e-5
    )
    assert main([*base, "--out", str(tmp_path / "t2"), *timm_args, "device=cpu", "backend=timm"]) == 2
    assert "text_from" in capsys.readouterr().err


def test_pre_resize_then_variant(tmp_path, capsys):
    """pre_resize=S: each image resized to S x S (bicubic) before the blur, as the visual-blur script does."""
    cfg, weights, enc = _model(tmp_path, "hmavd-bank-vit4", VIT)
    images = _image_set(tmp_path / "image_set")
    common = ["--model", "hmavd-bank-vit4", "--model-config", str(cfg), "--weights", str(weights), "--no-progress"]
    over = ["device=cpu", "num_workers=0", "variants=[blur:5]", "pre_resize=24"]
    assert main(["extract", "--images", str(images), "--out", str(tmp_path / "b"), *common, *over]) == 0
    cache = load_feature_cache(tmp_path / "b")
    assert cache.provenance["pre_resize"] == 24
    paths = sorted((images / "test_images").rglob("*.png"))
    blur = banks.parse_variant("blur:5")
    px = torch.stack(
        [enc.preprocess(banks.apply_variant(Image.open(p).convert("RGB").resize((24, 24), Image.BICUBIC), blur))
         for p in paths]
    )  # fmt: skip
    np.testing.assert_allclose(cache.image_features("test"), enc.encode_image_batch(px), atol=1e-5)
    assert not np.allclose(cache.image_features("test"), enc.encode_images(paths, variant=blur), atol=1e-3)
