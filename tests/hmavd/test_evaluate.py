"""Zero-shot metrics on hand-made score matrices, n-way seeding, templates and result tables."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hmavd.errors import UserError
from hmavd.evaluate import (
    aggregate,
    build_templates,
    concept_image_features,
    n_way_accuracy,
    results_csv,
    table_markdown,
    template_label,
    topk_accuracy,
    zero_shot,
)

# 3 trials x 4 templates; true labels 0, 1, 2
SCORES = np.array(
    [
        [0.9, 0.1, 0.2, 0.3],  # label 0 ranked 1st
        [0.5, 0.4, 0.1, 0.0],  # label 1 ranked 2nd
        [0.3, 0.2, 0.1, 0.4],  # label 2 ranked 4th (last)
    ]
)
LABELS = np.array([0, 1, 2])


def test_topk_on_hand_made_matrix():
    assert topk_accuracy(SCORES, LABELS, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(SCORES, LABELS, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(SCORES, LABELS, 3) == pytest.approx(2 / 3)
    assert topk_accuracy(SCORES, LABELS, 4) == pytest.approx(1.0)
    assert topk_accuracy(torch.tensor(SCORES), torch.tensor(LABELS), 1) == pytest.approx(1 / 3)


def test_ties_count_against_the_true_label():
    flat = np.zeros((2, 5))
    assert topk_accuracy(flat, np.array([0, 3]), 1) == 0.0
    assert topk_accuracy(flat, np.array([0, 3]), 5) == 1.0


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        topk_accuracy(SCORES, np.array([0, 1]), 1)
    with pytest.raises(ValueError):
        topk_accuracy(SCORES, np.array([0, 1, 4]), 1)
    with pytest.raises(ValueError):
        n_way_accuracy(SCORES, LABELS, n_way=5)


def test_n_way_full_equals_topk_and_exact_expectations():
    assert n_way_accuracy(SCORES, LABELS, 4, k=1) == topk_accuracy(SCORES, LABELS, 1)
    # 2-way: trial 0 always wins; trial 1 loses only when the one better class (0) is drawn: p = 1/3;
    # trial 2 always loses (every other class scores higher).
    acc = n_way_accuracy(SCORES, LABELS, 2, k=1, seed=0, n_draws=3000)
    assert acc == pytest.approx((1 + 2 / 3 + 0) / 3, abs=0.02)
    # 3-way top-2: trial 1 misses only if... it is never outranked by 2 of the drawn ones (only 1 better)
    assert n_way_accuracy(SCORES, LABELS, 3, k=2, seed=1, n_draws=200) == pytest.approx(2 / 3)


def test_n_way_is_seeded_and_near_chance_for_random_scores():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((200, 200))
    y = np.arange(200)
    a = n_way_accuracy(s, y, 10, seed=3, n_draws=20)
    assert a == n_way_accuracy(s, y, 10, seed=3, n_draws=20)
    assert a != n_way_accuracy(s, y, 10, seed=4, n_draws=20)
    assert a == pytest.approx(0.1, abs=0.03)
    assert n_way_accuracy(s, y, 2, seed=0, n_draws=20) == pytest.approx(0.5, abs=0.05)
    perfect = np.eye(200)
    assert n_way_accuracy(perfect, y, 50, seed=0, n_draws=5) == 1.0


def test_zero_shot_keys():
    s = np.eye(6) + 0.01
    out = zero_shot(s, np.arange(6), ways=(2, 4, 6, 200), n_draws=5)
    assert out["top1"] == 1.0 and out["top5"] == 1.0 and out["n_templates"] == 6
    assert "2way_top1" in out and "4way_top1" in out and "6way_top1" not in out and "200way_top1" not in out


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


def _ev(method, subject, seed, t1, t5):
    return {"method": method, "protocol": "intra", "subject": subject, "seed": seed,
            "results": {"image[test-images]": {"top1": t1, "top5": t5}}}  # fmt: skip


def test_aggregate_mean_std_and_tables():
    evals = [_ev("hmavd-63", 1, 0, 0.10, 0.40), _ev("hmavd-63", 1, 1, 0.20, 0.50),
             _ev("hmavd-63", 2, 0, 0.30, 0.60), _ev("hmavd-63", 2, 1, 0.40, 0.70)]  # fmt: skip
    rows = aggregate(evals)
    sub1 = next(r for r in rows if r["subject"] == 1)
    assert sub1["mean_top1"] == pytest.approx(15.0) and sub1["std_top1"] == pytest.approx(5.0)
    avg = next(r for r in rows if r["subject"] == "Avg")
    assert avg["mean_top1"] == pytest.approx(25.0) and avg["mean_top5"] == pytest.approx(55.0)
    assert avg["std_top1"] == pytest.approx(5.0)  # per-seed averages 20 and 30
    md = table_markdown(rows)
    assert "| hmavd-63 | image[test-images] | 15.0±5.0/45.0±5.0 | 35.0±5.0/65.0±5.0 | 25.0±5.0/55.0±5.0 |" in md
    assert "Sub1" in md and "Avg." in md
    csv_text = results_csv(evals)
    assert csv_text.splitlines()[0].startswith("method,protocol,subject,seed,templates,run,top1,top5")
    assert len(csv_text.strip().splitlines()) == 5
    single = table_markdown(aggregate([_ev("nice", 3, 0, 0.123, 0.456)]))
    assert "| nice | image[test-images] | 12.3/45.6 | 12.3/45.6 |" in single


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
