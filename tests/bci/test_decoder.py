"""Decoder: batched top-k template matching with a tiny random HMAVD model and a real checkpoint."""

import numpy as np
import torch
from bci_testkit import CH_NAMES, CONCEPTS, N_TIMES, tiny_checkpoint, tiny_model

from bci.decoder import Decoder
from hmavd.data.thingseeg2 import concept_name
from hmavd.features.cache import load_feature_cache
from hmavd.templates import build_templates


def test_batched_topk_matches_cosine_ranking():
    model = tiny_model()
    rng = np.random.default_rng(1)
    templates = rng.standard_normal((6, 16)).astype(np.float32)
    dec = Decoder.from_model(model, templates, CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu", k=5)
    x = rng.standard_normal((3, 4, N_TIMES)).astype(np.float32)
    out = dec.decode(x)
    with torch.no_grad():
        f = torch.nn.functional.normalize(model.encode_eeg(torch.as_tensor(x)), dim=1).numpy()
    t = templates / np.linalg.norm(templates, axis=1, keepdims=True)
    sim = f @ t.T  # (3, 6)
    for row, res in zip(sim, out):
        order = np.argsort(-row)[:5]
        assert res.concepts == tuple(CONCEPTS[j] for j in order)
        np.testing.assert_allclose(res.scores, row[order], rtol=1e-5, atol=1e-6)
    # one at a time gives the same answer as the batch
    assert [dec.decode(x[i : i + 1])[0].concepts for i in range(3)] == [r.concepts for r in out]


def test_from_checkpoint_uses_checkpoint_and_templates(tmp_path):
    ckpt, cache_dir, model = tiny_checkpoint(tmp_path)
    dec, info = Decoder.from_checkpoint(str(ckpt), str(cache_dir), "image", "test-images", device="cpu")
    assert dec.ch_names == tuple(CH_NAMES) and dec.n_chans == 4 and dec.n_times == N_TIMES
    assert dec.concepts == tuple(concept_name(c) for c in CONCEPTS)
    expected = build_templates(model, load_feature_cache(cache_dir), "image", "test-images").numpy()
    np.testing.assert_allclose(dec.templates.numpy(), expected, rtol=1e-5, atol=1e-6)
    x = np.random.default_rng(2).standard_normal((2, 4, N_TIMES)).astype(np.float32)
    with torch.no_grad():
        f = torch.nn.functional.normalize(model.encode_eeg(torch.as_tensor(x)), dim=1).numpy()
    best = np.argmax(f @ expected.T, axis=1)
    assert [r.concepts[0] for r in dec.decode(x)] == [dec.concepts[j] for j in best]


def test_stored_gallery_decodes_like_the_cache_and_needs_no_cache(tmp_path):
    """A tiny trained run with a trainable image head: the stored gallery and the cache give the same decoder;
    with the feature cache deleted, from_checkpoint still works from the gallery."""
    import dataclasses
    import shutil

    from hmavd.config import load_config
    from hmavd.datasets import write_planted_dataset
    from hmavd.train import TrainConfig, train

    data = write_planted_dataset(
        tmp_path / "data", n_train_concepts=10, images_per_concept=3, n_test_concepts=8, n_times=80, dim=16
    )
    base = dict(data_dir=str(data), out_dir=str(tmp_path / "runs"), epochs=1, batch_size=8, device="cpu")
    run = train(dataclasses.replace(load_config(TrainConfig, "nice"), image_head="mlp_adapter", **base), progress=False)
    cache_dir = data / "features" / "planted"
    from_cache, info_c = Decoder.from_checkpoint(str(run / "best.safetensors"), str(cache_dir), device="cpu")
    from_gallery, info_g = Decoder.from_checkpoint(str(run / "best.safetensors"), "", device="cpu")
    assert (info_g["template_source"], info_g["features_path"]) == ("gallery", "")
    assert (info_c["template_source"], info_c["features_path"]) == ("cache", str(cache_dir))
    np.testing.assert_allclose(from_gallery.templates.numpy(), from_cache.templates.numpy(), rtol=0, atol=1e-6)
    assert from_gallery.concepts == from_cache.concepts and len(from_gallery.concepts) == 8
    x = np.random.default_rng(3).standard_normal((5, from_gallery.n_chans, from_gallery.n_times)).astype(np.float32)
    assert [r.concepts for r in from_gallery.decode(x)] == [r.concepts for r in from_cache.decode(x)]
    shutil.rmtree(cache_dir)  # the live app on a machine without the bank
    alone, _ = Decoder.from_checkpoint(str(run), "", device="cpu")
    assert [r.concepts for r in alone.decode(x)] == [r.concepts for r in from_gallery.decode(x)]
