"""Decoder: batched top-k template matching with a tiny random HMAVD model and a real checkpoint."""

import numpy as np
import torch
from bci_testkit import CH_NAMES, CONCEPTS, N_TIMES, tiny_checkpoint, tiny_model

from bci.decoder import Decoder
from hmavd.data.thingseeg2 import concept_name
from hmavd.evaluate import build_templates
from hmavd.features.cache import load_feature_cache


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
