"""Recipe configs (ubp, neurobridge, visual-blur, brainhive-b32, hmavd-best): published settings, and one
tiny epoch of each on a planted dataset (intra-subject and LOSO), evaluated from its checkpoint."""

from __future__ import annotations

import json

import pytest

from hmavd.channels import VISUAL17
from hmavd.checkpoint import load_checkpoint
from hmavd.cli.train import main as train_main
from hmavd.config import available_configs, load_config
from hmavd.datasets import write_planted_dataset
from hmavd.evaluate import evaluate_checkpoint
from hmavd.train import TrainConfig

# config: (encoder, channels, optimizer, lr, weight decay, betas, batch, epochs, seed, tau, temperature)
PUBLISHED = {
    "ubp": ("eeg_project", "visual17", "adamw", 1e-4, 1e-4, (0.9, 0.999), 1024, 50, 0, 0.3667, "learnable"),
    "neurobridge": ("eeg_project", "visual17", "adamw", 1e-4, 1e-4, (0.9, 0.999), 1024, 50, 2025, 0.07, "fixed"),
    "visual-blur": ("blur_spatial_mlp", "all", "adamw", 1e-3, 0.01, (0.9, 0.999), 1024, 150, 0, 1.0, "fixed"),
    "brainhive-b32": ("brain_mlp", "visual17", "adamw", 5e-4, 0.05, (0.9, 0.995), 1024, 25, 2025, 0.07, "learnable"),
}


def test_recipe_configs_are_set_as_published():
    assert set(PUBLISHED) | {"hmavd-best"} <= set(available_configs())
    for name, want in PUBLISHED.items():
        c = load_config(TrainConfig, name)
        got = (c.encoder, c.channels, c.optimizer, c.lr, c.weight_decay, (c.beta1, c.beta2), c.batch_size,
               c.epochs, c.seed, c.tau, c.temperature)  # fmt: skip
        assert got == want, name
        assert c.name == name and not c.eeg_projection and c.init == "default"
        assert not (c.use_text or c.use_adapters or c.use_mcdb or c.use_spr)
    bh = load_config(TrainConfig, "brainhive-b32")
    assert (bh.lr_schedule, bh.warmup_steps, bh.grad_clip, bh.precision, bh.proj_dim) == (
        "cosine",
        10,
        1.0,
        "bf16",
        1024,
    )
    assert bh.normalize_eeg and not load_config(TrainConfig, "visual-blur").normalize_eeg
    heads = {n: (load_config(TrainConfig, n).image_head, load_config(TrainConfig, n).image_levels) for n in PUBLISHED}
    nb = load_config(TrainConfig, "neurobridge")
    assert (nb.eeg_head, nb.proj_dim, nb.normalize_eeg) == ("linear", 512, False)
    assert heads == {"ubp": ("", 0), "neurobridge": ("linear", 0), "visual-blur": ("blur_levels", 12),
                     "brainhive-b32": ("sum_fusion", 0)}  # fmt: skip
    best = load_config(TrainConfig, "hmavd-best")
    assert best.encoder == "blur_spatial_mlp" and best.use_text and best.use_adapters and best.use_mcdb
    assert not best.use_spr and best.optimizer == "adamw"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    chans = (*VISUAL17, "Cz", "Fz", "C3")
    return write_planted_dataset(tmp_path_factory.mktemp("recipes"), n_train_concepts=10, images_per_concept=3,
                                 n_test_concepts=8, n_subjects=2, n_times=40, dim=16, ch_names=chans)  # fmt: skip


@pytest.mark.parametrize("name", [*PUBLISHED, "hmavd-best"])
def test_each_recipe_trains_a_tiny_epoch(name, data_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["--config", name, "--data", str(data_dir), "--subject", "1", "--no-progress", "epochs=1",
            "batch_size=8", "device=cpu", f"out_dir={out}"]  # fmt: skip
    if load_config(TrainConfig, name).image_head == "blur_levels":
        assert train_main([*args, f"out_dir={tmp_path / 'bad'}"]) == 2  # 12 levels cannot split a 16-d bank
        assert "image_levels: 12 but" in capsys.readouterr().err  # the bank stores one level
        args.append("image_levels=1")  # the planted bank has one level
    assert train_main(args) == 0
    run = out / f"{name}_sub-01_seed{load_config(TrainConfig, name).seed}"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["type"] == "epoch" and lines[-1]["train_loss"] == lines[-1]["train_loss"]  # not NaN
    ev = evaluate_checkpoint(run / "last.safetensors", templates=("image",), ways=(2,))
    res = next(iter(ev["results"].values()))
    assert 0.0 <= res["top1"] <= 100.0 and res["n_templates"] == 8
    model, info = load_checkpoint(run / "last.safetensors")
    assert len(info["ch_names"]) == (20 if name in ("visual-blur", "hmavd-best") else 17)
    assert model.cfg.encoder == load_config(TrainConfig, name).encoder and not model.cfg.eeg_projection
    head = {"visual-blur": "BlurLevelHead", "hmavd-best": "BlurLevelHead", "brainhive-b32": "SumFusion",
            "neurobridge": "LinearHead"}  # fmt: skip
    assert type(model.image_projection).__name__ == head.get(name, "Identity")


def test_recipe_loso(data_dir, tmp_path):
    out = tmp_path / "runs"
    args = ["--config", "ubp", "--data", str(data_dir), "--subject", "2", "protocol=loso", "epochs=1",
            "batch_size=8", "device=cpu", f"out_dir={out}", "--no-progress"]  # fmt: skip
    assert train_main(args) == 0
    assert (out / "ubp_sub-02_seed0_loso" / "best.safetensors").exists()


def test_hmavd_best_on_a_level_bank_with_smaller_text():
    """3 levels of 8-d image features side by side (24-d rows) and 8-d text: shared space of one level."""
    import dataclasses

    import torch

    from hmavd.train import TrainStep, build_model, make_optimizer

    cfg = dataclasses.replace(load_config(TrainConfig, "hmavd-best"), image_levels=3, batch_size=4, txt_reduction=4)
    model = build_model(cfg, 5, 30, 24, text_dim=8)
    assert model.cfg.proj_dim == 8 and model.cfg.text_dim == 8 and model.encoder.out_features == 8
    step = TrainStep(cfg, model, make_optimizer(cfg, model, 10))
    logs = step(torch.randn(4, 5, 30), torch.randn(4, 24), torch.randn(4, 8))
    assert torch.isfinite(logs["total"]) and "kappa/text" in logs
    model.eval()
    templates = model.encode_templates(torch.randn(6, 24), torch.randn(6, 8), kind="fused")  # (K, D)
    assert templates.shape == (6, 8)


def test_neurobridge_linear_projectors_on_both_sides():
    """EEGProject into the bank's size, then Linear to 512 on the EEG side; Linear bank -> 512 on the image side."""
    import torch

    from hmavd.train import build_model

    model = build_model(load_config(TrainConfig, "neurobridge"), 17, 250, 1024).eval()
    assert model.encoder.out_features == 1024 and isinstance(model.eeg_projection, torch.nn.Linear)
    assert (model.eeg_projection.in_features, model.eeg_projection.out_features) == (1024, 512)
    assert (model.image_projection.in_features, model.image_projection.out_features) == (1024, 512)
    eeg, img = torch.randn(3, 17, 250), torch.randn(3, 1024)
    out = model(eeg, img)
    torch.testing.assert_close(out["eeg_features"], model.eeg_projection(model.encoder(eeg)))  # not normalised
    want = torch.nn.functional.normalize(model.image_projection.linear(img), dim=-1)
    torch.testing.assert_close(out["image_features"], want)
