"""Which torch device a command runs on: one rule for training, evaluation, features and benchmarks."""

from __future__ import annotations

import torch

from .errors import UserError

__all__ = ["resolve_device"]


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when a GPU is present, else CPU; ``"cuda…"`` without a GPU is a one-line UserError."""
    spec = str(spec).strip() or "auto"
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: {spec!r} asked for but no CUDA device is available; use device=auto or device=cpu")
    try:
        return torch.device(spec)
    except RuntimeError as err:
        raise UserError(f"device: {spec!r} is not a torch device; use auto, cpu or cuda[:N]") from err
