"""Stochastic Perturbation Regularisation (SPR, Eq. 16-20): Adam on a noisy, κ-scaled gradient.

At optimiser step t (0-based; t = number of steps already taken) every gradient g — already multiplied
by its modality's κ (Eq. 14, :meth:`hmavd.mcdb.MCDB.apply`) — becomes ``g̃ = g + h``,
``h ~ N(0, σ_t² I)``, with (Eq. 17)::

    σ_t = σ_max · (1 − t / T) ** p          (t clamped to [0, T]; p is ``noise_power``, the paper's β)

and g̃ feeds Adam's moments (Eq. 18-19) and the bias-corrected update (Eq. 20). With σ = 0 the update
is bit-for-bit ``torch.optim.Adam(foreach=False)`` on a CPU (the same operations in the same order, one
``torch._foreach_*`` call each over all parameters); weight decay, when non-zero, is added to the
gradient before the noise, like Adam's L2 form.

The paper writes Eq. 20 without Adam's bias correction; we keep the bias correction (as every Adam
implementation does, and as the paper's "integrated into Adam" implies) — with β1 = 0.5 the
difference vanishes after a few steps anyway.

:func:`spr_adam_step` is the pure update on lists of tensors; :class:`SPRAdam` is the thin
``torch.optim.Optimizer`` around it that keeps the global step and the noise generator, both included in
``state_dict()`` so a resumed run continues in lock-step with an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["noise_std", "spr_adam_step", "SPRAdam"]


def noise_std(step: int, total_steps: int, sigma_max: float, power: float) -> float:
    """Eq. 17: ``σ_t = σ_max (1 − t/T)^p`` with t clamped to [0, T] (σ = 0 from t = T on)."""
    if sigma_max == 0.0:
        return 0.0
    total_steps = max(int(total_steps), 1)
    frac = 1.0 - min(max(step, 0), total_steps) / total_steps
    return float(sigma_max) * frac**power if frac > 0 else 0.0


def spr_adam_step(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    sigma: float,
    generator: torch.Generator | None,
) -> None:
    """One SPR-Adam update of every parameter, in place (Eq. 16, 18-20).

    Parameters
    ----------
    params, grads, exp_avgs, exp_avg_sqs : list of Tensor
        Parameters, their (κ-scaled) gradients, first and second moments; updated in place.
    steps : list of Tensor
        Per-parameter step counters (0-d float tensors), incremented in place.
    lr, beta1, beta2, eps, weight_decay : float
        Adam hyper-parameters.
    sigma : float
        Noise standard deviation σ_t for this step (0 disables noise and draws no random numbers).
    generator : torch.Generator or None
        Source of the noise (on the parameters' device); ``None`` uses torch's global generator.
    """
    if not params:
        return
    # One multi-tensor call per operation (``torch._foreach_*``): on a CPU each runs the same per-tensor
    # kernel as the loop of ``torch.optim.Adam(foreach=False)`` (bit-for-bit), without a Python round per
    # parameter; on CUDA they are the fused multi-tensor kernels.
    torch._foreach_add_(steps, 1)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if sigma > 0:
        noises = [torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype) for g in grads]
        grads = torch._foreach_add(grads, noises, alpha=sigma)  # κ·∇L + h, Eq. 16
        del noises
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # Eq. 18
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)  # Eq. 19
    step_values = [s.item() for s in steps]  # CPU counters: no device sync
    step_sizes = [-lr / (1 - beta1**step) for step in step_values]  # -lr / bias correction 1
    bias_correction2_sqrts = [(1 - beta2**step) ** 0.5 for step in step_values]
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, bias_correction2_sqrts)
    torch._foreach_add_(denoms, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)  # Eq. 20


class SPRAdam(torch.optim.Optimizer):
    """Adam with SPR's decaying Gaussian gradient noise (paper defaults: lr 2e-4, betas (0.5, 0.999)).

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr, betas, eps, weight_decay :
        Adam hyper-parameters.
    sigma_max : float
        Initial noise std σ_max (not given by the paper; 0 = plain Adam).
    noise_power : float
        Decay exponent p of Eq. 17 (the paper's β there, unrelated to the fusion β of Eq. 8).
    total_steps : int
        T of Eq. 17: the number of optimiser steps of the whole run (epochs × batches per epoch).
    seed : int
        Seed of the optimiser's own noise generator.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        sigma_max: float = 0.0,
        noise_power: float = 1.0,
        total_steps: int = 1,
        seed: int = 0,
    ):
        if lr < 0 or eps < 0 or weight_decay < 0 or sigma_max < 0:
            raise ValueError("lr, eps, weight_decay and sigma_max must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            sigma_max=sigma_max,
            noise_power=noise_power,
            total_steps=int(total_steps),
        )
        super().__init__(params, defaults)
        self.seed = int(seed)
        self.global_step = 0
        self._generator: torch.Generator | None = None
        self._pending_generator_state: Tensor | None = None

    def _get_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            if self._pending_generator_state is not None:
                gen.set_state(self._pending_generator_state)
                self._pending_generator_state = None
            self._generator = gen
        return self._generator

    def current_sigma(self, group: dict[str, Any] | None = None) -> float:
        """σ_t of the next step for a parameter group (default: the first)."""
        g = group if group is not None else self.param_groups[0]
        return noise_std(self.global_step, g["total_steps"], g["sigma_max"], g["noise_power"])

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D401 - torch signature
        """Perform one SPR-Adam step; returns the closure's loss when given one."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SPRAdam does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            sigma = self.current_sigma(group)
            beta1, beta2 = group["betas"]
            spr_adam_step(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                sigma=sigma,
                generator=self._get_generator(params[0].device) if sigma > 0 else None,
            )
        self.global_step += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        """Torch's optimiser state plus ``"spr"``: global step, seed and the noise generator state."""
        sd = super().state_dict()
        if self._generator is not None:
            gen_state = self._generator.get_state()
        elif self._pending_generator_state is not None:
            gen_state = self._pending_generator_state.clone()
        else:
            gen = torch.Generator()
            gen.manual_seed(self.seed)
            gen_state = gen.get_state()
        sd["spr"] = {"global_step": self.global_step, "seed": self.seed, "generator_state": gen_state}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (including the noise generator and global step)."""
        state_dict = dict(state_dict)
        spr = state_dict.pop("spr", None)
        super().load_state_dict(state_dict)
        if spr is not None:
            self.global_step = int(spr["global_step"])
            self.seed = int(spr["seed"])
            self._generator = None
            self._pending_generator_state = torch.as_tensor(spr["generator_state"], dtype=torch.uint8).cpu()
