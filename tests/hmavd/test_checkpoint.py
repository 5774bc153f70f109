"""Checkpoint round trip: safetensors + JSON metadata, optimiser state, no pickles."""

import json

import pytest
import torch

from hmavd.checkpoint import flatten_state, load_checkpoint, read_checkpoint, save_checkpoint, unflatten_state
from hmavd.errors import UserError
from hmavd.models.hmavd_model import HMAVD, ModelConfig
from hmavd.spr import SPRAdam
from hmavd.train import TrainConfig


def _model(**kw):
    torch.manual_seed(0)
    return HMAVD(ModelConfig(n_chans=5, n_times=100, feature_dim=16, proj_dim=8, **kw))


def test_round_trip_encode_eeg_equal(tmp_path):
    model = _model(encoder="tsconv", temperature="learnable")
    cfg = TrainConfig(data_dir="somewhere", name="hmavd-63", seed=3)
    extra = {"ch_names": ["O1", "Oz", "O2", "Pz", "Cz"], "times": [0.0, 0.004], "sfreq": 250.0, "epoch": 7}
    path = save_checkpoint(tmp_path / "best.safetensors", model, cfg, extra)
    loaded, info = load_checkpoint(tmp_path)  # a run folder resolves to best.safetensors
    assert not loaded.training
    x = torch.randn(4, 5, 100)
    model.eval()
    torch.testing.assert_close(loaded.encode_eeg(x), model.encode_eeg(x), rtol=0, atol=0)
    assert info["train_config"]["seed"] == 3 and info["train_config"]["name"] == "hmavd-63"
    assert info["model_config"]["temperature"] == "learnable" and loaded.cfg == model.cfg
    assert info["ch_names"] == extra["ch_names"] and info["epoch"] == 7 and info["code_version"]
    # the file is plain safetensors: header JSON + raw tensors, loadable without pickle
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert "hmavd" in header["__metadata__"]


def test_optimizer_and_rng_state_round_trip_steps_in_lock_step(tmp_path):
    model = _model()
    opt = SPRAdam(model.parameters(), lr=1e-3, sigma_max=1e-2, total_steps=10, seed=1)
    x, f = torch.randn(6, 5, 100), torch.randn(6, 16)

    def step(m, o):
        o.zero_grad()
        out = m(x, f, f)
        (out["eeg_features"] @ out["image_features"].T).sum().backward()
        o.step()

    torch.manual_seed(1)
    step(model, opt)
    state = {"optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}, "global_step": 1}
    save_checkpoint(tmp_path / "last.safetensors", model, None, {"epoch": 1}, state=state)
    twin, info = load_checkpoint(tmp_path / "last.safetensors")
    twin.train()
    opt2 = SPRAdam(twin.parameters(), lr=1e-3, sigma_max=1e-2, total_steps=10, seed=1)
    opt2.load_state_dict(info["state"]["optimizer"])
    assert info["state"]["global_step"] == 1
    torch.set_rng_state(info["state"]["rng"]["torch"])
    rng_after = torch.get_rng_state()
    step(twin, opt2)
    torch.set_rng_state(rng_after)
    step(model, opt)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_flatten_state_round_trip_types():
    obj = {"a": torch.arange(3), 0: [1.5, None, "x", {"b": torch.ones(2, 2)}], "betas": (0.5, 0.999)}
    tensors = {}
    skel = flatten_state(obj, "s", tensors)
    json.dumps(skel)
    back = unflatten_state(json.loads(json.dumps(skel)), tensors)
    assert set(back) == {"a", 0, "betas"} and back[0][:3] == [1.5, None, "x"]
    torch.testing.assert_close(back[0][3]["b"], torch.ones(2, 2))
    with pytest.raises(TypeError):
        flatten_state({"f": object()}, "s", {})


def test_bad_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 20)
    with pytest.raises(UserError, match="not a readable"):
        read_checkpoint(junk)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(UserError, match="metadata"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_trained_checkpoint_metadata_is_the_typed_info(tmp_path):
    """Every key hmavd-train writes is declared in CheckpointInfo, and the training keys are all there."""
    import dataclasses
    import typing

    from hmavd.checkpoint_meta import CheckpointInfo, GalleryMeta
    from hmavd.config import load_config
    from hmavd.datasets import write_planted_dataset
    from hmavd.templates import Gallery
    from hmavd.train import train

    data = write_planted_dataset(tmp_path / "data", n_train_concepts=10, images_per_concept=3, n_test_concepts=6,
                                 n_times=80, dim=16)  # fmt: skip
    base = dict(data_dir=str(data), out_dir=str(tmp_path / "runs"), epochs=1, batch_size=8, device="cpu")
    run = train(dataclasses.replace(load_config(TrainConfig, "nice"), **base), progress=False)
    declared = set(typing.get_type_hints(CheckpointInfo))
    for name in ("best", "last"):
        _, info = load_checkpoint(run / f"{name}.safetensors")
        assert set(info) <= declared, set(info) - declared
        assert {"data_dir", "ch_names", "times", "sfreq", "units", "features", "train_subjects", "epoch",
                "val_loss", "selection", "gallery", "train_config", "model_config", "path"} <= set(info)  # fmt: skip
        assert isinstance(info["gallery"], Gallery) and info["sfreq"] == 250.0 and info["units"] == "V"
        raw = json.loads(_raw_metadata(run / f"{name}.safetensors"))
        assert set(raw["gallery"]) <= set(typing.get_type_hints(GalleryMeta))


def _raw_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()["hmavd"]
