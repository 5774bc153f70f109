"""Vision backbones from timm (e.g. DINOv2, SigLIP towers) as target banks, offline.

``timm`` is optional (``pip install 'hmavd[timm]'`` or ``pip install timm``) and imported only here. The
model is built by name with ``pretrained=False`` and ``num_classes=0`` (the pooled pre-logits features, or
an intermediate block through :mod:`hmavd.features.banks`), then the user's weights file is loaded
(``--weights``: safetensors or a plain state dict read with ``weights_only=True``); nothing is downloaded.
Preprocessing is timm's eval transform for the model (``resolve_data_config`` + ``create_transform``).
A timm backbone has no text tower: text features come from another cache (``text_from=CACHE``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..devices import resolve_device
from ..errors import UserError
from .clip import ClipEncoder, _offline, sha256_file

log = logging.getLogger(__name__)

__all__ = ["load_timm"]


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UserError(
            "backend: 'timm' needs the timm package, which is not installed; pip install timm "
            "(or the project's [timm] extra), or use backend=open_clip"
        ) from None
    return timm


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise UserError(
            f"--weights: {path} is not a readable state dict ({type(err).__name__}); pass a .safetensors "
            "or torch state-dict file"
        ) from None
    return sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd


class _TimmTower:
    """Gives a timm model the two methods :class:`ClipEncoder` uses (``visual``, ``encode_image``)."""

    def __init__(self, model: Any):
        self.visual = model

    def encode_image(self, pixels: Any) -> Any:
        return self.visual(pixels)  # (B, D) pooled pre-logits

    def encode_text(self, tokens: Any) -> Any:
        raise UserError("text: a timm backbone has no text tower; pass text_from=/path/to/a/feature/cache")

    def eval(self) -> _TimmTower:
        self.visual.eval()
        return self


def load_timm(
    model_name: str, weights: str | Path | None, device: str = "auto", model_kwargs: Mapping[str, Any] | None = None
) -> ClipEncoder:
    """Build timm ``model_name`` offline and load ``weights``; returns an image-only :class:`ClipEncoder`."""
    import torch

    timm = _import_timm()
    if weights is None:
        raise UserError(
            f"--weights: timm model {model_name!r} needs a local weights file (nothing is downloaded); pass "
            "--weights /path/to/model.safetensors"
        )
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"--weights: {path} does not exist; pass the path of the downloaded timm weights file")
    if model_name not in timm.list_models():
        raise UserError(f"model: {model_name!r} is not a timm architecture; pick one of timm.list_models()")
    dev = str(resolve_device(device))
    with _offline():
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **dict(model_kwargs or {}))
    missing, _unexpected = model.load_state_dict(_read_state_dict(path), strict=False)
    if missing:
        raise UserError(
            f"--weights: {path} does not fit timm {model_name!r} ({len(missing)} tensors missing, e.g. "
            f"{missing[0]}); pass the weights of this architecture (and its timm_kwargs)"
        )
    model.to(dev).eval()
    data_cfg = timm.data.resolve_data_config({}, model=model)
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size:  # a ViT built with another img_size (timm_kwargs) takes that size, not its pretrained config's
        data_cfg["input_size"] = (3, *tuple(img_size))
    preprocess = timm.data.create_transform(**data_cfg)
    with torch.no_grad():
        size = data_cfg["input_size"]
        dim = int(model(torch.zeros(1, *size, device=dev)).shape[-1])
    info = {
        "backend": "timm",
        "model": model_name,
        "model_kwargs": dict(model_kwargs or {}),
        "pretrained": None,
        "weights_file": str(path.resolve()),
        "weights_sha256": sha256_file(path),
        "preprocessing": repr(preprocess),
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "dim": dim,
    }
    log.info("loaded timm %s from %s on %s, D=%d", model_name, path, dev, dim)
    return ClipEncoder(model=_TimmTower(model), preprocess=preprocess, tokenizer=None, device=dev, info=info)
