"""The live engine decodes with a recipe-trained checkpoint from the gallery stored in it (no feature cache).

``hmavd-train --config ubp`` (the EEGProject encoder on the 17 occipito-parietal channels, a trainable
temperature) on a planted dataset, the run's feature cache deleted, then a recording replayed through
:class:`bci.engine.LiveEngine`: every epoch is predicted, from the stored gallery, exactly as the offline
epochs of ``hmavd-prepare``'s code decode with that gallery.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
from bci_testkit import PRESET, SFREQ_IN, make_recording, offline_epochs

from bci.decoder import Decoder
from bci.engine import LiveEngine
from bci.live_config import LiveConfig
from bci.replay import RecordingSource, load_replay
from hmavd.channels import VISUAL17
from hmavd.cli.train import main as train_main
from hmavd.datasets import write_planted_dataset
from hmavd.preprocessing.transforms import preprocessed_times


def test_live_engine_decodes_a_ubp_checkpoint_from_its_stored_gallery(tmp_path):
    preset = dataclasses.replace(PRESET, channels=tuple(VISUAL17))
    times = preprocessed_times(preset, SFREQ_IN)
    data = write_planted_dataset(
        tmp_path / "data",
        n_train_concepts=10,
        images_per_concept=3,
        n_test_concepts=8,
        n_times=len(times),
        sfreq=preset.sfreq,
        dim=16,
        ch_names=VISUAL17,
    )
    out = tmp_path / "runs"
    argv = ["--config", "ubp", "--data", str(data), "--subject", "1", "--no-progress", "--no-eval"]
    assert train_main([*argv, "epochs=1", "batch_size=8", "device=cpu", f"out_dir={out}"]) == 0
    run = out / "ubp_sub-01_seed0"
    shutil.rmtree(data / "features")  # the live machine has the checkpoint only

    path, _, events = make_recording(tmp_path / "rec_raw.fif", duration_s=6.0, ch_names=VISUAL17)
    cfg = LiveConfig(checkpoint=str(run), whitening="none", device="cpu", replay=str(path), poll_interval_s=0.0)
    src = RecordingSource(load_replay(cfg.replay), chunk_s=0.13, poll_interval_s=None)
    eng = LiveEngine(cfg, source=src, markers=src.markers, preset=preset)
    msgs = [eng.connect()]
    assert eng.info["template_source"] == "gallery" and eng.session.templates.gallery
    assert eng.session.templates.features_path == ""
    while not src.finished:
        eng.acquire()
        msgs += eng.get_data()
    eng.acquire()
    msgs += eng.get_data()
    eng.disconnect()

    preds = [m for m in msgs if m["type"] == "prediction"]
    assert len(preds) == len(events)
    offline, _ = offline_epochs(path, preset=preset)
    reference, _ = Decoder.from_checkpoint(str(run / "best.safetensors"), "", device="cpu", k=cfg.top_k)
    expected = reference.decode(offline)
    assert [[c for c, _ in p["topk"]] for p in preds] == [list(r.concepts) for r in expected]
    np.testing.assert_allclose([p["topk"][0][1] for p in preds], [r.scores[0] for r in expected], atol=1e-4)
    assert len(msgs[0]["concepts"]) == 8  # the gallery's test concepts
