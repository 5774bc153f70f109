"""Optimisation knobs of the open recipes: AdamW, cosine schedule with warmup, clipping, bf16 autocast.

All are off by default, so the HMAVD / NICE configs train exactly as before (Adam, constant learning
rate, no clipping, fp32). :mod:`hmavd.train` calls these hooks:

* :func:`build_optimizer` — ``optimizer: adam`` (``torch.optim.Adam``, L2 weight decay added to the
  gradient) or ``adamw`` (``torch.optim.AdamW``, decoupled weight decay, as UBP, NeuroBridge, the
  visual-blur method and BrainHIVE train). SPR (``use_spr``) is Adam-based and needs ``optimizer: adam``.
* :func:`lr_factor` / :func:`apply_schedule` — ``lr_schedule: cosine`` with ``warmup_steps``: the factor of
  Hugging Face's ``get_cosine_schedule_with_warmup`` (BrainHIVE's trainer), ``step / warmup`` during
  warm-up, then ``0.5 · (1 + cos(π · progress))``, floored at ``min_lr_ratio``. It is a pure function of the
  global step, so ``--resume`` needs no scheduler state.
* :func:`clip_gradients` — ``grad_clip > 0``: the global L2 norm of all gradients clipped to it
  (``torch.nn.utils.clip_grad_norm_``, BrainHIVE's ``max_grad_norm: 1.0``), after MCDB's κ.
* :func:`autocast` — ``precision: bf16``: the forward pass and loss under ``torch.autocast(bfloat16)`` on
  CUDA (parameters, optimiser state and gradients stay fp32); on a CPU it falls back to fp32 with a log line.

Temperature (``temperature: fixed | learnable``, ``tau``; ``tau: 1.0`` is the visual-blur method's
unit logit scale) and which side is L2-normalised before the loss (``normalize_eeg``) are model settings
(:class:`hmavd.models.hmavd_model.ModelConfig`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from .errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "OPTIMIZERS",
    "LR_SCHEDULES",
    "PRECISIONS",
    "validate_optim",
    "build_optimizer",
    "lr_factor",
    "apply_schedule",
    "clip_gradients",
    "autocast",
]

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("fp32", "bf16")


def validate_optim(cfg: Any) -> None:
    """One-line errors for bad optimisation knobs of a :class:`~hmavd.train.TrainConfig`."""
    for key, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("precision", PRECISIONS)):
        if getattr(cfg, key) not in allowed:
            raise UserError(f"{key}: {getattr(cfg, key)!r} is not one of {allowed}; pick one")
    if cfg.optimizer == "adamw" and cfg.use_spr:
        raise UserError("optimizer: 'adamw' with use_spr=true; SPR is Adam with gradient noise: set optimizer=adam")
    if cfg.warmup_steps < 0 or cfg.grad_clip < 0 or not 0.0 <= cfg.min_lr_ratio <= 1.0:
        raise UserError(
            f"warmup_steps/grad_clip/min_lr_ratio: {cfg.warmup_steps}/{cfg.grad_clip}/{cfg.min_lr_ratio}; "
            "give warmup_steps >= 0, grad_clip >= 0 (0 = off) and min_lr_ratio in [0, 1]"
        )


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str = "adam",
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (``"adam"``) or ``torch.optim.AdamW`` (``"adamw"``) with these settings."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise UserError(f"optimizer: {name!r} is not one of {OPTIMIZERS}; pick one")


def lr_factor(
    step: int, total_steps: int, schedule: str = "constant", warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based) of ``total_steps``.

    ``"constant"``: 1. ``"cosine"``: ``step / warmup_steps`` for ``step < warmup_steps``, then
    ``r + (1 − r) · 0.5 · (1 + cos(π · (step − warmup) / (total − warmup)))`` with ``r = min_lr_ratio``.
    """
    if schedule == "constant":
        return 1.0
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cos = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return min_lr_ratio + (1.0 - min_lr_ratio) * cos


def apply_schedule(optimizer: torch.optim.Optimizer, cfg: Any, step: int, total_steps: int) -> None:
    """Set every parameter group's ``lr`` to ``cfg.lr · lr_factor(step, …)``; nothing for a constant schedule."""
    if cfg.lr_schedule == "constant":
        return
    lr = cfg.lr * lr_factor(step, total_steps, cfg.lr_schedule, cfg.warmup_steps, cfg.min_lr_ratio)
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor | None:
    """Clip the global gradient norm to ``max_norm`` (> 0); returns the norm before clipping (None when off)."""
    if max_norm <= 0:
        return None
    return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str = "fp32") -> Iterator[None]:
    """bf16 autocast on CUDA for ``precision="bf16"``; a no-op otherwise (fp32, or bf16 asked for on a CPU)."""
    dev = torch.device(device)
    if precision == "bf16" and dev.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
        return
    if precision == "bf16" and not getattr(autocast, "_warned", False):
        log.info("precision: bf16 autocast applies on CUDA only; training in fp32 on %s", dev)
        autocast._warned = True  # type: ignore[attr-defined]
    yield
