"""Templates (hmavd/templates.py): sources, scorings, and the gallery stored in every checkpoint."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hmavd.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from hmavd.config import load_config
from hmavd.datasets import write_planted_dataset
from hmavd.errors import UserError
from hmavd.evaluate import evaluate_checkpoint, zero_shot
from hmavd.features.cache import load_feature_cache
from hmavd.templates import (
    IMAGE_SOURCES,
    SCORINGS,
    TEMPLATE_KINDS,
    Gallery,
    bank_fingerprint,
    build_templates,
    combine_templates,
    compute_gallery,
    concept_image_features,
    image_labels_of,
    template_label,
)
from hmavd.train import TrainConfig, train


def test_concept_image_features_means_per_concept():
    f = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    out = concept_image_features(f, np.array([1, 1, 0]), 2)
    np.testing.assert_allclose(out, [[0.0, 5.0], [2.0, 1.0]])
    with pytest.raises(UserError):
        concept_image_features(f, np.array([0, 0, 0]), 2)


class _Cache:
    path = "cache"

    def __init__(self, centers=None):
        self._centers = centers

    def text_features(self, split):
        return np.eye(3, 4, dtype=np.float32)

    def image_features(self, split):
        return np.eye(3, 4, k=1, dtype=np.float32)

    def center_features(self):
        return self._centers


def _tiny_model(use_text=True):
    from hmavd.models.hmavd_model import HMAVD, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(n_chans=4, n_times=100, feature_dim=4, proj_dim=4, img_reduction=2, txt_reduction=2,
                      use_text=use_text, use_adapters=use_text)  # fmt: skip
    return HMAVD(cfg).eval()


def test_build_templates_sources_and_errors():
    m = _tiny_model()
    t = torch.as_tensor
    img = build_templates(m, _Cache(), "image", "test-images", image_labels=np.array([2, 0, 1]))
    expected = m.encode_templates(image_features=t(np.eye(3, 4, k=1, dtype=np.float32)[[1, 2, 0]]), kind="image")
    torch.testing.assert_close(img, expected)  # rows in concept order
    txt = build_templates(m, _Cache(), "text")
    torch.testing.assert_close(txt, m.encode_templates(text_features=t(np.eye(3, 4, dtype=np.float32)), kind="text"))
    centers = np.arange(12, dtype=np.float32).reshape(3, 4)
    fused = build_templates(m, _Cache(centers), "fused", "centers")
    torch.testing.assert_close(fused, m.encode_templates(t(centers), t(np.eye(3, 4, dtype=np.float32)), "fused"))
    assert fused.shape == (3, 4) and torch.allclose(fused.norm(dim=1), torch.ones(3))
    with pytest.raises(UserError, match="centers"):
        build_templates(m, _Cache(None), "fused", "centers")
    with pytest.raises(UserError, match="templates"):
        build_templates(m, _Cache(), "mixed")
    with pytest.raises(UserError, match="use_text"):
        build_templates(_tiny_model(use_text=False), _Cache(), "text")


class _RealCenters:
    """Feature cache stand-in holding NICE's real CLIP ViT-L/14 centre features."""

    path = "shared"

    def __init__(self, centers):
        self._centers = centers

    def text_features(self, split):
        return np.zeros_like(self._centers)

    def center_features(self):
        return self._centers


def _nice_identity_model(dim):
    from hmavd.models.hmavd_model import HMAVD, ModelConfig

    cfg = ModelConfig(n_chans=4, n_times=100, feature_dim=dim, proj_dim=dim, use_text=False, use_adapters=False,
                      image_projection=False)  # fmt: skip
    return HMAVD(cfg).eval()


def test_dot_scoring_uses_raw_templates_and_is_labelled():
    m = _nice_identity_model(4)
    centers = np.array([[3.0, 0, 0, 0], [0, 0.5, 0, 0], [1, 1, 0, 0]], dtype=np.float32)
    raw = build_templates(m, _Cache(centers), "image", "centers", scoring="dot")
    assert torch.equal(raw, torch.as_tensor(centers))  # NICE's image side is the identity: the raw features
    cos = build_templates(m, _Cache(centers), "image", "centers")
    assert torch.allclose(cos.norm(dim=1), torch.ones(3))
    # a query along (1, 1): cosine picks centre 2, the dot product the long centre 0
    q = F.normalize(torch.tensor([[1.0, 0.9, 0, 0]]), dim=-1)
    assert int((q @ cos.T).argmax()) == 2 and int((q @ raw.T).argmax()) == 0
    assert template_label("image", "centers", "dot") == "image[centers,dot]"
    assert template_label("text", "centers", "dot") == "text[dot]"
    assert template_label("image", "centers") == "image[centers]" and template_label("text", "centers") == "text"
    with pytest.raises(UserError, match="scoring"):
        build_templates(m, _Cache(centers), "image", "centers", scoring="euclid")


def test_nice_centre_scoring_on_real_clip_features(shared_data):
    """Test images as queries against NICE's centres: NICE's dot product with the raw (unnormalised) centres
    gives 95.0 / 99.0 (200-way top-1 / top-5), cosine 98.0 / 100.0 (the centres' norms, 0.84-0.93, tilt
    the dot product); the model path reproduces both scorings."""
    centers = np.load(shared_data / "nice_clip_vitl14_center_200x768.npy").astype(np.float32)  # (200, 768)
    queries = np.load(shared_data / "nice_clip_vitl14_test_images_200x1x768.npy")[:, 0].astype(np.float32)
    queries = torch.as_tensor(queries / np.linalg.norm(queries, axis=1, keepdims=True))  # (200, 768)
    m = _nice_identity_model(768)
    labels = np.arange(200)
    res = {}
    for scoring in ("dot", "cosine"):
        tmpl = build_templates(m, _RealCenters(centers), "image", "centers", scoring=scoring)  # (200, 768)
        res[scoring] = zero_shot(queries @ tmpl.T, labels, ways=())
    assert (100 * res["dot"]["top1"], 100 * res["dot"]["top5"]) == pytest.approx((95.0, 99.0))
    assert (100 * res["cosine"]["top1"], 100 * res["cosine"]["top5"]) == pytest.approx((98.0, 100.0))


# ------------------------------------------------------------------------------------- the gallery


class _FullCache(_Cache):
    """Two test images of concept 1, one of concept 0, centres, and provenance naming them."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.arrays = {
            "test_image_features": rng.standard_normal((3, 4)).astype(np.float32),
            "test_text_features": rng.standard_normal((2, 4)).astype(np.float32),
            "test_center_features": rng.standard_normal((2, 4)).astype(np.float32),
        }
        self.provenance = {"test_concepts": ["00001_a", "00002_b"], "test_images": ["00002_b/1.jpg", "00001_a/2.jpg",
                           "00002_b/3.jpg"]}  # fmt: skip

    def text_features(self, split):
        return self.arrays["test_text_features"]

    def image_features(self, split):
        return self.arrays["test_image_features"]

    def center_features(self):
        return self.arrays["test_center_features"]


def test_gallery_gives_every_template_build_templates_gives():
    from hmavd.models.hmavd_model import HMAVD, ModelConfig

    torch.manual_seed(0)
    m = HMAVD(ModelConfig(n_chans=4, n_times=100, feature_dim=4, proj_dim=4, img_reduction=2, txt_reduction=2,
                          image_head="mlp_adapter", image_head_kwargs=(("hidden", 8),)))  # fmt: skip
    m.train()  # compute_gallery encodes in eval mode (no dropout) and restores the mode
    cache = _FullCache()
    labels = image_labels_of(cache)
    assert labels.tolist() == [1, 0, 1]
    g = compute_gallery(m, cache)
    assert m.training and g.concepts == ("00001_a", "00002_b") and g.bank["fingerprint"] == bank_fingerprint(cache)
    m.eval()
    for kind in TEMPLATE_KINDS:
        for source in IMAGE_SOURCES:
            for scoring in SCORINGS:
                want = build_templates(m, cache, kind, source, labels, scoring=scoring)
                torch.testing.assert_close(g.templates(kind, source, scoring), want, rtol=0, atol=1e-6)
    # the trained head's output is stored, not the bank: concept 1 = mean of images 0 and 2, through the head
    x = torch.as_tensor(cache.arrays["test_image_features"])
    head_in = m.image_adapter(torch.stack([x[1], (x[0] + x[2]) / 2]))
    torch.testing.assert_close(g.image["test-images"], m.image_projection(head_in), rtol=0, atol=1e-6)
    assert not torch.allclose(g.image["test-images"], torch.stack([x[1], (x[0] + x[2]) / 2]), atol=1e-2)


def test_combine_templates_rule():
    img, txt = torch.tensor([[3.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 1.0], [0.0, 5.0]])
    torch.testing.assert_close(combine_templates(img, txt, "fused", False), img + txt)
    fused = combine_templates(img, txt, "fused", True)
    torch.testing.assert_close(fused, F.normalize(torch.tensor([[1.0, 1.0], [0.0, 2.0]]), dim=-1))
    torch.testing.assert_close(combine_templates(img, None, "image", True), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_gallery_errors_name_the_argument():
    g = Gallery({"test-images": torch.ones(2, 3)}, None, ("a", "b"))
    with pytest.raises(UserError, match="--image-source: 'centers' is not in the checkpoint's gallery"):
        g.templates("image", "centers")
    with pytest.raises(UserError, match="use_text"):
        g.templates("text")
    with pytest.raises(UserError, match="gallery: \\[2\\] template rows for 3 concepts"):
        Gallery({"test-images": torch.ones(2, 3)}, None, ("a", "b", "c"))


def test_gallery_round_trips_through_the_checkpoint(tmp_path):
    from hmavd.models.hmavd_model import HMAVD, ModelConfig

    torch.manual_seed(0)
    m = HMAVD(ModelConfig(n_chans=4, n_times=100, feature_dim=4, proj_dim=4, img_reduction=2, txt_reduction=2))
    g = compute_gallery(m, _FullCache(), bank={"path": "/x", "model": "random"})
    path = save_checkpoint(tmp_path / "best.safetensors", m, None, {"epoch": 1}, gallery=g)
    tensors, info = read_checkpoint(path)
    assert {k for k in tensors if k.startswith("gallery.")} == {
        "gallery.image.test-images", "gallery.image.centers", "gallery.text"}  # fmt: skip
    back = info["gallery"]
    assert back.concepts == g.concepts and back.images == g.images and back.bank == g.bank
    for kind in TEMPLATE_KINDS:
        torch.testing.assert_close(back.templates(kind, "centers"), g.templates(kind, "centers"), rtol=0, atol=0)
    save_checkpoint(tmp_path / "old.safetensors", m, None, {"epoch": 1})  # a checkpoint without a gallery
    assert load_checkpoint(tmp_path / "old.safetensors")[1]["gallery"] is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny NICE run with a trainable image head (mlp_adapter) on a planted dataset."""
    root = tmp_path_factory.mktemp("gallery")
    data = write_planted_dataset(root / "data", n_train_concepts=10, images_per_concept=3, n_test_concepts=8,
                                 n_times=80, dim=16)  # fmt: skip
    base = dict(data_dir=str(data), out_dir=str(root / "runs"), epochs=2, batch_size=8, device="cpu")
    cfg = dataclasses.replace(load_config(TrainConfig, "nice"), image_head="mlp_adapter", init="default", **base)
    return train(cfg, progress=False), data


def test_trained_checkpoints_store_the_heads_gallery_and_evaluate_alike_without_the_cache(trained):
    run, data = trained
    cache_dir = data / "features" / "planted"
    cache = load_feature_cache(cache_dir)
    for name in ("best", "last"):
        model, info = load_checkpoint(run / f"{name}.safetensors")
        g = info["gallery"]
        assert g.bank["fingerprint"] == bank_fingerprint(cache) and g.bank["path"] == str(cache_dir.resolve())
        assert g.concepts == tuple(cache.provenance["test_concepts"]) and len(g.images) == 8
        raw = torch.as_tensor(cache.image_features("test"))  # (8, 16) the bank
        torch.testing.assert_close(g.image["test-images"], model.image_projection(raw), rtol=0, atol=1e-6)
        assert info["selection"] == ("last" if name == "last" else "val-selected")
        stored = evaluate_checkpoint(run / f"{name}.safetensors", templates=("image",), ways=(2,))
        built = evaluate_checkpoint(run / f"{name}.safetensors", templates=("image",), ways=(2,),
                                    features=str(cache_dir))  # fmt: skip
        assert stored["templates_from"] == "gallery" and built["templates_from"].startswith("cache")
        assert stored["results"] == built["results"] and stored["selection"] == info["selection"]


def test_gallery_of_another_test_set_is_refused(trained, tmp_path):
    run, _ = trained
    other = write_planted_dataset(tmp_path / "other", n_train_concepts=10, images_per_concept=3, n_test_concepts=6,
                                  n_times=80, dim=16)  # fmt: skip
    with pytest.raises(UserError, match="--data: the test concepts of .* differ from the gallery"):
        evaluate_checkpoint(run, data_dir=str(other), templates=("image",), ways=())
    res = evaluate_checkpoint(run, data_dir=str(other), templates=("image",), ways=(),
                              features=str(other / "features" / "planted"))  # fmt: skip
    assert res["results"]["image[test-images]"]["n_templates"] == 6
