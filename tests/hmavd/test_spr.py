"""SPR (Eq. 16-20): noise schedule, noise before the moments, Adam equivalence, resumable state."""

import copy
import io

import pytest
import torch

from hmavd.spr import SPRAdam, noise_std, spr_adam_step


def test_noise_schedule_endpoints_and_shape():
    assert noise_std(0, 100, 0.5, 2.0) == 0.5
    assert noise_std(100, 100, 0.5, 2.0) == 0.0
    assert noise_std(150, 100, 0.5, 2.0) == 0.0
    assert noise_std(50, 100, 0.5, 2.0) == pytest.approx(0.5 * 0.25)
    assert noise_std(25, 100, 0.5, 1.0) == pytest.approx(0.375)
    values = [noise_std(t, 10, 1.0, 1.5) for t in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert noise_std(3, 10, 0.0, 1.0) == 0.0


def test_noise_enters_before_the_moments():
    g = torch.tensor([0.5, -1.0, 2.0])
    p, m, v, step = torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.tensor(0.0)
    gen = torch.Generator().manual_seed(3)
    spr_adam_step(
        [p],
        [g.clone()],
        [m],
        [v],
        [step],
        lr=0.1,
        beta1=0.5,
        beta2=0.9,
        eps=1e-8,
        weight_decay=0.0,
        sigma=0.2,
        generator=gen,
    )
    noisy = g + 0.2 * torch.randn(3, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(m, 0.5 * noisy) and torch.allclose(v, 0.1 * noisy**2)
    # first Adam step moves each coordinate by lr against the sign of the noisy gradient
    assert torch.allclose(p, -0.1 * torch.sign(noisy), atol=1e-6)
    assert float(step) == 1.0


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 5, generator=g), torch.randn(8, 2, generator=g)) for _ in range(n)]


def train(net, opt, data):
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_noise_off_equals_torch_adam_exactly(weight_decay):
    net_a, net_b = tiny_net(), tiny_net()
    ref = torch.optim.Adam(
        net_a.parameters(), lr=2e-3, betas=(0.5, 0.999), eps=1e-8, weight_decay=weight_decay, foreach=False
    )
    spr = SPRAdam(
        net_b.parameters(),
        lr=2e-3,
        betas=(0.5, 0.999),
        eps=1e-8,
        weight_decay=weight_decay,
        sigma_max=0.0,
        total_steps=20,
    )
    for x, y in batches(20):
        for net, opt in ((net_a, ref), (net_b, spr)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
        for pa, pb in zip(net_a.parameters(), net_b.parameters()):
            assert torch.equal(pa, pb)


def test_decreases_a_quadratic_with_noise():
    torch.manual_seed(0)
    target = torch.randn(10)
    x = torch.nn.Parameter(torch.zeros(10))
    opt = SPRAdam([x], lr=0.05, sigma_max=0.5, noise_power=1.0, total_steps=300, seed=1)
    first = float(((x.detach() - target) ** 2).sum())
    for _ in range(300):
        opt.zero_grad()
        ((x - target) ** 2).sum().backward()
        opt.step()
    assert float(((x.detach() - target) ** 2).sum()) < 1e-3 * first
    assert opt.global_step == 300 and opt.current_sigma() == 0.0


def test_noise_changes_the_trajectory_and_is_seeded():
    results = []
    for seed in (0, 0, 1):
        net = tiny_net()
        opt = SPRAdam(net.parameters(), lr=1e-2, sigma_max=0.1, total_steps=10, seed=seed)
        train(net, opt, batches(5))
        results.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(results[0], results[1])
    assert not torch.allclose(results[0], results[2])


def test_state_dict_round_trip_continues_in_lock_step():
    data = batches(12)
    kw = dict(lr=1e-2, sigma_max=0.05, noise_power=2.0, total_steps=12, seed=7)
    net_a = tiny_net()
    opt_a = SPRAdam(net_a.parameters(), **kw)
    train(net_a, opt_a, data)

    net_b = tiny_net()
    opt_b = SPRAdam(net_b.parameters(), **kw)
    train(net_b, opt_b, data[:5])
    buf = io.BytesIO()
    torch.save({"model": net_b.state_dict(), "opt": opt_b.state_dict()}, buf)
    train(net_b, opt_b, [(torch.randn(8, 5), torch.randn(8, 2))])  # diverge the original afterwards
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    net_c = tiny_net(seed=99)
    net_c.load_state_dict(saved["model"])
    opt_c = SPRAdam(net_c.parameters(), **{**kw, "seed": 123})
    opt_c.load_state_dict(saved["opt"])
    assert opt_c.global_step == 5
    train(net_c, opt_c, data[5:])
    for pa, pc in zip(net_a.parameters(), net_c.parameters()):
        assert torch.equal(pa, pc)


def test_fresh_state_dict_is_loadable():
    net = tiny_net()
    opt = SPRAdam(net.parameters(), sigma_max=0.1, total_steps=4, seed=2)
    sd = copy.deepcopy(opt.state_dict())
    assert sd["spr"]["global_step"] == 0
    other = SPRAdam(tiny_net().parameters(), sigma_max=0.1, total_steps=4, seed=5)
    other.load_state_dict(sd)
    assert other.seed == 2


@pytest.mark.gpu
def test_spr_on_cuda_resumes_in_lock_step():
    kw = dict(lr=1e-2, sigma_max=0.05, total_steps=6, seed=3)
    data = [(x.cuda(), y.cuda()) for x, y in batches(6)]
    net_a = tiny_net().cuda()
    opt_a = SPRAdam(net_a.parameters(), **kw)
    train(net_a, opt_a, data)
    net_b = tiny_net().cuda()
    opt_b = SPRAdam(net_b.parameters(), **kw)
    train(net_b, opt_b, data[:3])
    saved = copy.deepcopy((net_b.state_dict(), opt_b.state_dict()))
    net_c = tiny_net(seed=5).cuda()
    net_c.load_state_dict(saved[0])
    opt_c = SPRAdam(net_c.parameters(), **kw)
    opt_c.load_state_dict(saved[1])
    train(net_c, opt_c, data[3:])
    for pa, pc in zip(net_a.parameters(), net_c.parameters()):
        assert torch.equal(pa, pc)


def _per_parameter_loop(
    params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay, sigma, generator
):
    """The former one-parameter-at-a-time SPR-Adam update (the reference of the multi-tensor one)."""
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step_t += 1
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if sigma > 0:
            noise = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
            grad = grad.add(noise, alpha=sigma)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


@pytest.mark.parametrize(("sigma", "weight_decay"), [(0.0, 0.0), (0.05, 0.0), (0.05, 0.01)])
def test_multi_tensor_step_equals_the_per_parameter_loop(sigma, weight_decay):
    """``spr_adam_step``'s ``torch._foreach_*`` update is bit-for-bit the per-parameter loop, noise included
    (same draws in the same order), with per-parameter step counts that differ."""
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 3, 2), (1,)]
    states = []
    for _ in range(2):
        g.manual_seed(0)
        params = [torch.randn(s, generator=g) for s in shapes]
        states.append(
            (
                params,
                [torch.zeros(s) for s in shapes],
                [torch.zeros(s) for s in shapes],
                [torch.tensor(float(i)) for i in range(len(shapes))],
            )
        )
    gens = [torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)]
    hyper = dict(lr=1e-2, beta1=0.5, beta2=0.999, eps=1e-8, weight_decay=weight_decay, sigma=sigma)
    for t in range(4):
        grads = [torch.randn(s, generator=torch.Generator().manual_seed(100 + t)) for s in shapes]
        for fn, (params, m, v, steps), gen in zip((spr_adam_step, _per_parameter_loop), states, gens):
            fn(params, [x.clone() for x in grads], m, v, steps, generator=gen, **hyper)
        for a, b in zip(states[0], states[1]):
            assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(states[0][0][0], torch.randn(shapes[0], generator=torch.Generator().manual_seed(0)))
