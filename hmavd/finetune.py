"""``hmavd-train --finetune CHECKPOINT``: start from a trained model, train only some of its layers.

The calibrate → fine-tune → decode workflow (docs/new-session.md): a model trained on other sessions
(or, leave-one-subject-out, on other subjects) is adapted on a short calibration block of the new
session. ``finetune_layers`` says what trains; everything else keeps the checkpoint's values exactly:

- ``all``: every parameter;
- ``eeg``: the EEG side only (``encoder.*`` and ``eeg_projection.*``); the image/text heads, adapters
  and the temperature stay as trained, so the templates do not move;
- ``eeg_projection``: only the EEG projection head (the smallest change).

Frozen batch-norm layers stay in eval mode (their running statistics are not updated either): a forward
pre-hook, and ``model.train()`` leaves them in eval mode, for kernels that read ``bn.training`` directly.

Resuming a fine-tune run (``--resume``) continues from its own ``last.safetensors``, not from the
start checkpoint again, and re-applies the same freezing, so it equals an uninterrupted run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .errors import UserError

log = logging.getLogger(__name__)

__all__ = ["FINETUNE_LAYERS", "trains", "validate_finetune", "apply_finetune"]

FINETUNE_LAYERS = {"all": ("",), "eeg": ("encoder.", "eeg_projection."), "eeg_projection": ("eeg_projection.",)}


def trains(name: str, layers: str) -> bool:
    """True if parameter ``name`` trains under ``finetune_layers=layers``."""
    return any(name.startswith(p) for p in FINETUNE_LAYERS[layers])


def validate_finetune(cfg) -> None:
    """Check ``finetune`` / ``finetune_layers`` of a :class:`~hmavd.train.TrainConfig`."""
    if cfg.finetune_layers not in FINETUNE_LAYERS:
        raise UserError(
            f"finetune_layers: {cfg.finetune_layers!r} is not one of {sorted(FINETUNE_LAYERS)} (what trains when "
            "fine-tuning; all = every layer)"
        )
    if cfg.finetune:
        p = Path(cfg.finetune)
        if not (p.is_file() or (p / "best.safetensors").is_file()):
            raise UserError(
                f"finetune: {cfg.finetune!r} is neither a checkpoint nor a run folder with best.safetensors; "
                "pass the hmavd-train run to start from"
            )


def apply_finetune(model: torch.nn.Module, cfg, load: bool = True) -> dict[str, int]:
    """Load ``cfg.finetune``'s weights into ``model`` (when ``load``) and freeze what does not train.

    Returns
    -------
    dict
        ``{"trainable": n, "frozen": n}`` parameter counts (scalars).
    """
    from .checkpoint import read_checkpoint

    if load:
        tensors, _ = read_checkpoint(cfg.finetune, "cpu")
        state = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(
                f"finetune: {cfg.finetune!r} does not fit this model ({first[:160]}); fine-tune with the config and "
                "channels the checkpoint was trained with"
            ) from None
    counts = {"trainable": 0, "frozen": 0}
    for name, p in model.named_parameters():
        p.requires_grad_(trains(name, cfg.finetune_layers))
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    frozen_bn = [
        m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not trains(name + ".", cfg.finetune_layers)
    ]
    for m in frozen_bn:  # frozen batch norms keep their running statistics too
        m.register_forward_pre_hook(_keep_eval)
    if frozen_bn:  # ... also where a fused kernel reads ``bn.training`` without calling the module
        model.train = _train_keeping_eval(model, frozen_bn)
    log.info(
        "fine-tuning from %s: %s trains (%d parameters, %d frozen)",
        cfg.finetune,
        cfg.finetune_layers,
        counts["trainable"],
        counts["frozen"],
    )
    return counts


def _keep_eval(module: torch.nn.Module, _inputs) -> None:
    """Forward pre-hook: a frozen batch norm normalises with, and never updates, its running statistics."""
    module.eval()


def _train_keeping_eval(model: torch.nn.Module, frozen: list[torch.nn.Module]):
    """``model.train(mode)`` that leaves the ``frozen`` modules in eval mode (``training`` stays False)."""
    base = type(model).train

    def train(mode: bool = True) -> torch.nn.Module:
        base(model, mode)
        for m in frozen:
            m.eval()
        return model

    return train
