"""Optimisation and loss knobs of the recipes (hmavd/optim.py and their hooks in train / the model)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hmavd.config import load_config
from hmavd.errors import UserError
from hmavd.models.hmavd_model import HMAVD, ModelConfig
from hmavd.optim import apply_schedule, autocast, build_optimizer, clip_gradients, lr_factor
from hmavd.train import TrainConfig, TrainStep, build_model, make_optimizer


def test_cosine_schedule_with_warmup_by_hand():
    f = [lr_factor(s, 110, "cosine", warmup_steps=10) for s in (0, 5, 10, 60, 110)]
    assert f == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    assert lr_factor(35, 110, "cosine", 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_factor(110, 110, "cosine", 10, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(37, 110) == 1.0  # constant
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    cfg = dataclasses.replace(TrainConfig(), lr=2.0, lr_schedule="cosine", warmup_steps=4)
    apply_schedule(opt, cfg, 2, 100)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    apply_schedule(opt, TrainConfig(), 2, 100)  # constant: untouched
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)


def test_adamw_is_decoupled_and_adam_is_unchanged():
    p = torch.nn.Parameter(torch.tensor([2.0]))
    opt = build_optimizer([p], "adamw", lr=0.1, betas=(0.9, 0.999), weight_decay=0.5)
    p.grad = torch.zeros(1)
    opt.step()  # zero gradient: only the decoupled decay p <- p (1 - lr wd)
    assert p.item() == pytest.approx(2.0 * (1 - 0.1 * 0.5))
    cfg = load_config(TrainConfig, "nice")
    model = build_model(cfg, 4, 80, 16)
    adam = make_optimizer(cfg, model, 10)
    assert type(adam) is torch.optim.Adam
    assert adam.defaults["betas"] == (0.5, 0.999) and adam.defaults["lr"] == 2e-4 and adam.defaults["weight_decay"] == 0
    assert type(make_optimizer(dataclasses.replace(cfg, optimizer="adamw"), model, 10)) is torch.optim.AdamW
    with pytest.raises(UserError, match="optimizer"):
        load_config(TrainConfig, "hmavd-63", ["optimizer=adamw"])  # SPR needs Adam
    for bad in ("optimizer=sgd", "lr_schedule=step", "precision=fp16", "grad_clip=-1", "min_lr_ratio=2"):
        with pytest.raises(UserError):
            load_config(TrainConfig, "nice", [bad])


def test_clip_gradients_by_hand():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])
    assert float(clip_gradients([a, b], 1.0)) == pytest.approx(5.0)
    assert (a.grad.item(), b.grad.item()) == pytest.approx((0.6, 0.8), rel=1e-5)
    assert clip_gradients([a, b], 0.0) is None


def test_autocast_is_bf16_on_cuda_only():
    x = torch.randn(4, 4)
    with autocast("cpu", "bf16"):
        assert (x @ x).dtype == torch.float32
    if torch.cuda.is_available():
        with autocast("cuda", "bf16"):
            assert (x.cuda() @ x.cuda()).dtype == torch.bfloat16


def test_train_step_clips_and_model_side_options():
    cfg = dataclasses.replace(
        load_config(TrainConfig, "nice"), grad_clip=1e-3, encoder="eeg_project", eeg_projection=False, init="default"
    )
    model = build_model(cfg, 4, 20, 8)
    assert isinstance(model.eeg_projection, torch.nn.Identity) and model.encoder.out_features == 8
    step = TrainStep(cfg, model, make_optimizer(cfg, model, 10))
    eeg, img = torch.randn(6, 4, 20), torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    logs = step(eeg, img, None)
    assert float(logs["grad_norm/preclip"]) > 1e-3
    total = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None))
    assert float(total) == pytest.approx(1e-3, rel=1e-3)  # clipped before the step
    model.eval()
    out = model(eeg, img)
    assert torch.allclose(out["eeg_features"].norm(dim=-1), torch.ones(6), atol=1e-5)
    raw = HMAVD(dataclasses.replace(model.cfg, normalize_eeg=False))
    raw.load_state_dict(model.state_dict())
    raw.eval()
    unnorm = raw(eeg, img)["eeg_features"]  # (B, D): the encoder output itself
    torch.testing.assert_close(unnorm, model.encoder(eeg))
    torch.testing.assert_close(torch.nn.functional.normalize(unnorm, dim=-1), out["eeg_features"])
    with pytest.raises(UserError, match="eeg_projection"):
        HMAVD(ModelConfig(encoder="eeg_project", n_chans=4, n_times=20, feature_dim=8, proj_dim=8, use_text=False,
                          use_adapters=False, eeg_projection=False))  # fmt: skip
