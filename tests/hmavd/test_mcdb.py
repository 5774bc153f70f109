"""MCDB (Eq. 10-15): scores, ρ, κ, the literal reading's no-op, and κ applied to one modality only."""

import math

import pytest
import torch
import torch.nn.functional as F

from hmavd.mcdb import KAPPA_MIN, MCDB, contribution_scores, grad_norms, imbalance_rates, kappa, scale_update
from hmavd.models import HMAVD, ModelConfig


def test_matched_score_and_rho_for_known_matrix():
    # one-hot features: sim/tau has ln(3) on matched pairs for img, 0 everywhere for text
    eeg = torch.eye(2)
    img = torch.eye(2) * math.log(3.0)
    text = torch.zeros(2, 2)
    scores = contribution_scores(eeg, {"img": img, "text": text}, tau=1.0)
    # img rows: softmax([ln3, 0]) = [3/4, 1/4] -> diagonal mass 2 * 3/4; text: uniform -> 2 * 1/2
    assert float(scores["img"]) == pytest.approx(1.5)
    assert float(scores["text"]) == pytest.approx(1.0)
    rho = imbalance_rates(scores, eps=0.0)
    assert float(rho["img"]) == pytest.approx(1.5)
    assert float(rho["text"]) == pytest.approx(2 / 3)
    k = {m: float(kappa(r, 0.7)) for m, r in rho.items()}
    assert k["img"] == pytest.approx(1 - math.tanh(0.7 * 0.5))
    assert k["text"] == 1.0


def test_rho_three_modalities_uses_sum_of_others():
    rho = imbalance_rates({"a": torch.tensor(2.0), "b": torch.tensor(1.0), "c": torch.tensor(3.0)}, eps=0.0)
    assert float(rho["a"]) == pytest.approx(0.5) and float(rho["c"]) == pytest.approx(1.0)
    assert float(imbalance_rates({"img": torch.tensor(7.0)})["img"]) == 1.0


def test_kappa_cases():
    rho = torch.tensor([0.2, 1.0, 1.5, 4.0])
    k = kappa(rho, 0.7)
    assert k[0] == 1.0 and k[1] == 1.0
    assert float(k[2]) == pytest.approx(1 - math.tanh(0.35))
    assert float(k[3]) == pytest.approx(1 - math.tanh(2.1))
    assert (k > 0).all() and (k <= 1).all()


def test_literal_reading_is_a_no_op():
    torch.manual_seed(0)
    mcdb = MCDB(gamma=0.7, mode="literal")
    for _ in range(20):
        b = int(torch.randint(2, 40, ()))
        out = {
            "eeg_features": F.normalize(torch.randn(b, 8), dim=-1),
            "image_features": F.normalize(torch.randn(b, 8) * 5, dim=-1),
            "text_features": F.normalize(torch.randn(b, 8), dim=-1),
        }
        stats = mcdb.compute(out)
        assert stats["score/img"] == pytest.approx(b, rel=1e-5) == stats["score/text"]
        assert stats["rho/img"] <= 1 and stats["rho/text"] <= 1
        assert stats["kappa/img"] == 1.0 and stats["kappa/text"] == 1.0
    # ...while the matched score does react to an imbalance
    eeg = F.normalize(torch.randn(16, 8), dim=-1)
    out = {"eeg_features": eeg, "image_features": eeg, "text_features": F.normalize(torch.randn(16, 8), dim=-1)}
    stats = MCDB(mode="matched").compute(out)
    assert stats["rho/img"] > 1 and stats["kappa/img"] < 1 and stats["kappa/text"] == 1.0


def small_model():
    cfg = ModelConfig(n_chans=4, n_times=80, feature_dim=16, proj_dim=8, txt_reduction=4, img_reduction=4)
    return HMAVD(cfg)


def test_apply_scales_only_that_modalitys_grads():
    torch.manual_seed(0)
    model = small_model()
    out = model(torch.randn(6, 4, 80), torch.randn(6, 16), torch.randn(6, 16))
    sum(v.pow(2).sum() for k, v in out.items() if k.endswith("features")).backward()
    groups = model.modality_parameters()
    before = {m: [p.grad.clone() for p in ps] for m, ps in groups.items()}
    norms_before = grad_norms(model)
    MCDB.apply(model, {"kappa/eeg": 1.0, "kappa/img": 0.25, "kappa/text": 1.0})
    for m, ps in groups.items():
        factor = 0.25 if m == "img" else 1.0
        for p, g in zip(ps, before[m]):
            assert torch.equal(p.grad, g * factor) if factor != 1 else torch.equal(p.grad, g)
    norms = grad_norms(model)
    assert norms["grad_norm/img"] == pytest.approx(0.25 * norms_before["grad_norm/img"], rel=1e-5)
    assert norms["grad_norm/eeg"] == norms_before["grad_norm/eeg"]
    MCDB.apply(model, {"text": 0.5})
    assert norms["grad_norm/text"] * 0.5 == pytest.approx(grad_norms(model)["grad_norm/text"], rel=1e-5)


def test_grad_norms_match_direct_and_base_skips_text():
    torch.manual_seed(0)
    model = small_model()
    out = model(torch.randn(6, 4, 80), torch.randn(6, 16), torch.randn(6, 16))
    out["eeg_features"].sum().backward()
    norms = grad_norms(model)
    direct = torch.cat([p.grad.flatten() for p in model.modality_parameters()["eeg"]]).norm()
    assert norms["grad_norm/eeg"] == pytest.approx(float(direct), rel=1e-5)
    assert norms["grad_norm/img"] == 0.0  # image branch got no gradient from an EEG-only loss
    base_out = {k: out[k] for k in ("eeg_features", "image_features")}
    stats = MCDB().compute(base_out)
    assert stats["kappa/img"] == 1.0 and "kappa/text" not in stats


@pytest.mark.gpu
def test_mcdb_on_cuda_matches_cpu():
    torch.manual_seed(0)
    out = {k: F.normalize(torch.randn(32, 8), dim=-1) for k in ("eeg_features", "image_features", "text_features")}
    cpu = MCDB().compute(out)
    gpu = MCDB().compute({k: v.cuda() for k, v in out.items()})
    assert cpu.keys() == gpu.keys()
    for k in cpu:
        assert gpu[k] == pytest.approx(cpu[k], rel=1e-4)


def test_kappa_is_floored_where_float32_tanh_reaches_one():
    rho = torch.tensor([1.5, 20.0, 1e4])
    raw = 1.0 - torch.tanh(0.7 * (rho - 1.0))
    assert raw[1] == 0.0 and raw[2] == 0.0  # Eq. 13 in float32 zeroes the modality
    k = kappa(rho, 0.7)
    assert float(k[0]) == pytest.approx(1 - math.tanh(0.35))
    assert k[1] == k[2] == torch.tensor(KAPPA_MIN)
    assert float(kappa(torch.tensor(20.0), 0.7, floor=0.25)) == 0.25


def test_scale_update_scales_the_step_by_kappa():
    before = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])]
    params = [torch.tensor([1.5, -3.0]), torch.tensor([[0.25]])]
    scale_update(params, before, 0.4)
    assert torch.allclose(params[0], torch.tensor([1.2, -2.4])) and torch.allclose(params[1], torch.tensor([[0.4]]))


def test_tau_follows_a_learnable_temperature():
    torch.manual_seed(0)
    out = {k: F.normalize(torch.randn(16, 8), dim=-1) for k in ("eeg_features", "image_features", "text_features")}
    out["image_features"] = F.normalize(out["eeg_features"] + 0.5 * out["image_features"], dim=-1)
    out["logit_scale"] = torch.tensor(1 / 0.3)
    follow, fixed = MCDB(tau=None).compute(out), MCDB(tau=0.3).compute(out)
    assert follow == pytest.approx(fixed)
    assert follow["score/img"] != pytest.approx(MCDB(tau=0.07).compute(out)["score/img"])


def _adam_updates(kappa_on_gradient, steps=50, kappa_on_update=1.0):
    """50 Adam steps (paper betas) on a fixed quadratic with κ on every gradient or on every update."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(64))
    target = torch.randn(64)
    opt = torch.optim.Adam([w], lr=2e-4, betas=(0.5, 0.999))
    start = w.detach().clone()
    for _ in range(steps):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        w.grad.mul_(kappa_on_gradient)
        before = [w.detach().clone()]
        opt.step()
        scale_update([w], before, kappa_on_update)
    return w.detach() - start


def test_adam_cancels_a_constant_kappa_on_the_gradient_but_not_on_the_update():
    """docs/model.md "MCDB under Adam": κ = 0.5 on every gradient changes 50 updates by ~1e-6 (relative,
    Adam's ε only); κ = 0.5 on every update halves each step (the 50-step displacement to within 1 %:
    the quadratic's gradient depends on where the shorter steps led)."""
    plain = _adam_updates(1.0)
    on_gradient = _adam_updates(0.5)
    on_update = _adam_updates(1.0, kappa_on_update=0.5)
    rel = float((on_gradient - plain).norm() / plain.norm())
    assert rel < 1e-4
    assert float((on_update - 0.5 * plain).norm() / (0.5 * plain).norm()) < 0.01


@pytest.mark.parametrize(("mcdb_tau", "log_scale"), [(0.07, math.log(1 / 0.07)), (None, math.log(1 / 0.2)), (0.3, 0.0)])
@pytest.mark.parametrize("mode", ["matched", "literal"])
def test_compute_from_the_loss_logits_equals_the_feature_products(mcdb_tau, log_scale, mode):
    """Eq. 10 from the loss's logits (rescaled to MCDB's τ) gives the scores of the features' own product."""
    from hmavd.losses import hmavd_loss

    torch.manual_seed(0)
    out = {k: F.normalize(torch.randn(16, 8), dim=-1) for k in ("eeg_features", "image_features", "text_features")}
    out["image_features"] = F.normalize(out["eeg_features"] + 0.5 * out["image_features"], dim=-1)
    out["logit_scale"] = torch.tensor(log_scale).exp()
    logits: dict[str, torch.Tensor] = {}
    hmavd_loss(out, use_text=True, logits_out=logits)
    assert set(logits) == {"img", "text"} and not logits["img"].requires_grad
    assert torch.allclose(logits["img"], out["logit_scale"] * out["eeg_features"] @ out["image_features"].t())
    mcdb = MCDB(tau=mcdb_tau, mode=mode)
    reused, direct = mcdb.compute(out, logits), mcdb.compute(out)
    assert reused.keys() == direct.keys()
    assert reused == pytest.approx(direct, rel=1e-5)
    if mode == "matched":
        assert reused["kappa/img"] < 1.0  # image features close to the EEG ones: a damped modality
        wrong = MCDB(tau=mcdb_tau, mode=mode).compute(out, {"img": logits["text"], "text": logits["img"]})
        assert wrong["score/img"] == pytest.approx(direct["score/text"], rel=1e-5)
