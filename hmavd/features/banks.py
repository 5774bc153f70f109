"""Target banks: which layer of the vision tower, how it is pooled, and which image transforms.

The recipes that decode best align EEG with more than the final CLIP projection of the plain image:
UBP and the visual-blur method use blurred images, NeuroBridge augmented ones, others intermediate vision
layers. This module holds the small pieces :func:`hmavd.features.extract.extract_features` combines.

**Image variants** (``variants=["blur:9", "lowres:32", ...]``), applied to the decoded RGB image before the
model's own preprocessing (resize, crop, normalise):

================ ========================================================================================
``none``         the image as is
``blur:K``       Gaussian blur with a K × K kernel (K odd) and OpenCV's sigma for K:
                 ``0.3 · ((K − 1) / 2 − 1) + 0.8`` (what ``cv2.GaussianBlur(img, (K, K), 0)`` uses, as the
                 visual-blur and UBP preprocessing scripts call it); ``blur:1`` is the identity
``lowres:R``     shorter side down to R pixels (bilinear), then back up to the original size (bilinear)
``noise:S``      additive Gaussian noise of standard deviation S (in units of the 0–255 range / 255),
                 clipped to [0, 255]; seeded by the image's row index, so a rerun gives the same pixels
``mosaic:B``     B × B pixel blocks (box-average down, nearest-neighbour up)
================ ========================================================================================

**Layers** (``layer=``): ``"final"`` is the model's image embedding (``encode_image``: final projection).
Otherwise the output of one block of the vision trunk, chosen by index (``"3"``, ``"-2"``: Python indexing
over the blocks) or by relative depth (``"0.5"``: block ``ceil(0.5 · n_blocks) − 1``). Blocks are the
transformer residual blocks of a ViT (``visual.transformer.resblocks``) and the four stages of a
ModifiedResNet (``visual.layer1..layer4``; ``-1`` = layer4, the input of RN50's attention pool).

**Pooling** (``pool=``) of an intermediate output: ``"cls"`` (class token, ViT), ``"mean"`` (mean of the
patch tokens, class token excluded), ``"avg"`` (global average over the spatial map, ResNet), ``"auto"``
(``cls`` for token sequences, ``avg`` for maps). The raw residual stream is taken: no ``ln_post`` and no
projection, so an intermediate bank has the trunk's width, not the text tower's dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError

__all__ = [
    "VARIANT_KINDS",
    "POOLS",
    "Variant",
    "parse_variant",
    "parse_variants",
    "opencv_sigma",
    "apply_variant",
    "resolve_layer",
    "vision_blocks",
    "pool_output",
    "LayerTap",
]

VARIANT_KINDS = ("none", "blur", "lowres", "noise", "mosaic")
POOLS = ("auto", "cls", "mean", "avg")


@dataclass(frozen=True)
class Variant:
    """One image transform: ``kind`` in :data:`VARIANT_KINDS` and its parameter."""

    kind: str
    value: float = 0.0

    @property
    def name(self) -> str:
        if self.kind == "none":
            return "none"
        v = int(self.value) if self.kind != "noise" else self.value
        return f"{self.kind}:{v}"


def parse_variant(spec: str) -> Variant:
    """``"blur:9"`` -> ``Variant("blur", 9)``; one-line errors naming the bad spec."""
    spec = str(spec).strip()
    kind, _, arg = spec.partition(":")
    if kind not in VARIANT_KINDS:
        raise UserError(f"variants: {spec!r} is not a variant; use none, blur:K, lowres:R, noise:S or mosaic:B")
    if kind == "none":
        return Variant("none")
    try:
        value = float(arg)
    except ValueError:
        raise UserError(f"variants: {spec!r} needs a number after ':' (e.g. blur:9, noise:0.1)") from None
    if kind == "blur" and (value < 1 or value != int(value) or int(value) % 2 == 0):
        raise UserError(f"variants: {spec!r}: a blur kernel is an odd integer >= 1, e.g. blur:9")
    if kind in ("lowres", "mosaic") and (value < 1 or value != int(value)):
        raise UserError(f"variants: {spec!r}: {kind} takes a positive integer number of pixels")
    if kind == "noise" and not value >= 0:
        raise UserError(f"variants: {spec!r}: the noise level must be >= 0")
    return Variant(kind, value)


def parse_variants(specs: Sequence[str]) -> list[Variant]:
    """Parse a list of variant specs; duplicates are refused."""
    out = [parse_variant(s) for s in specs]
    names = [v.name for v in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"variants: {dup} given twice; list each variant once")
    return out


def opencv_sigma(kernel: int) -> float:
    """The Gaussian sigma OpenCV derives from a kernel size when sigma is 0."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def apply_variant(image: Any, variant: Variant, index: int = 0) -> Any:
    """Transform one RGB PIL image; returns a PIL image of the same size.

    ``index`` seeds the noise of ``noise:S`` (the image's row in its split).
    """
    from PIL import Image

    k, v = variant.kind, variant.value
    if k == "none" or (k == "blur" and int(v) == 1) or (k == "noise" and v == 0):
        return image
    w, h = image.size
    if k == "blur":
        import torchvision.transforms.functional as TF

        return TF.gaussian_blur(image, [int(v), int(v)], [opencv_sigma(int(v))] * 2)
    if k == "lowres":
        scale = float(v) / min(w, h)
        small = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        return small.resize((w, h), Image.BILINEAR)
    if k == "mosaic":
        b = int(v)
        small = image.resize((max(1, math.ceil(w / b)), max(1, math.ceil(h / b))), Image.BOX)
        return small.resize((small.width * b, small.height * b), Image.NEAREST).crop((0, 0, w, h))
    pix = np.asarray(image, dtype=np.float64)  # (H, W, 3)
    noise = np.random.default_rng(int(index)).standard_normal(pix.shape) * (255.0 * v)
    return Image.fromarray(np.clip(np.rint(pix + noise), 0, 255).astype(np.uint8))


def resolve_layer(spec: str | int | float | None, n_blocks: int) -> int | None:
    """Block index of a layer spec, or ``None`` for the final embedding.

    ``"final"``/``None`` -> None; an integer (string or int) indexes the blocks Python-style; a number with a
    decimal point in (0, 1] is a relative depth, block ``ceil(depth · n_blocks) − 1``.
    """
    if spec is None or str(spec).strip().lower() == "final":
        return None
    text = str(spec).strip()
    try:
        if "." in text:
            depth = float(text)
            if not 0.0 < depth <= 1.0:
                raise ValueError
            return max(0, math.ceil(depth * n_blocks) - 1)
        idx = int(text)
    except ValueError:
        raise UserError(
            f"layer: {spec!r} is not 'final', a block index (e.g. -2) or a relative depth in (0, 1] (e.g. 0.5)"
        ) from None
    if not -n_blocks <= idx < n_blocks:
        raise UserError(
            f"layer: {idx} is out of range for a trunk of {n_blocks} blocks; use -{n_blocks}..{n_blocks - 1}"
        )
    return idx % n_blocks


def vision_blocks(visual: Any) -> list[Any]:
    """The blocks of a vision trunk an intermediate layer is taken from (see module docstring)."""
    trunk = getattr(visual, "transformer", None)
    if trunk is not None and hasattr(trunk, "resblocks"):
        return list(trunk.resblocks)
    if all(hasattr(visual, f"layer{i}") for i in range(1, 5)):
        return [getattr(visual, f"layer{i}") for i in range(1, 5)]
    for name in ("blocks", "stages"):  # timm ViTs / ConvNeXts
        if hasattr(visual, name):
            return list(getattr(visual, name))
    raise UserError(f"layer: the vision tower {type(visual).__name__} has no known block list; use layer=final")


def pool_output(x: Any, pool: str = "auto", n_prefix: int = 1) -> Any:
    """Pool one block output to (B, W).

    Parameters
    ----------
    x : Tensor
        Tokens (B, L, W) (batch first) or a feature map (B, C, H, W).
    pool : {"auto", "cls", "mean", "avg"}
    n_prefix : int
        Number of class/register tokens in front of the patch tokens (1 for open_clip ViTs).
    """
    if pool not in POOLS:
        raise UserError(f"pool: {pool!r} is not one of {POOLS}")
    if x.ndim == 4:
        if pool not in ("auto", "avg"):
            raise UserError(f"pool: {pool!r} does not apply to a convolutional map; use pool=avg")
        return x.mean(dim=(2, 3))  # (B, C)
    if x.ndim != 3:
        raise UserError(f"layer: block output of shape {tuple(x.shape)} is neither tokens nor a map; use layer=final")
    if pool in ("auto", "cls"):
        return x[:, 0]  # (B, W)
    if pool == "mean":
        return x[:, n_prefix:].mean(dim=1)  # (B, W)
    raise UserError("pool: 'avg' applies to convolutional maps; use pool=cls or pool=mean for a ViT")


class LayerTap:
    """Context manager that records the output of one module during a forward pass.

    ``batch_first=False`` transposes a (L, B, W) token output to (B, L, W).
    """

    def __init__(self, module: Any, batch_first: bool = True):
        self.module, self.batch_first = module, batch_first
        self.output: Any = None
        self._handle: Any = None

    def _hook(self, _module: Any, _inputs: Any, output: Any) -> None:
        out = output[0] if isinstance(output, tuple) else output
        self.output = out if self.batch_first or out.ndim != 3 else out.transpose(0, 1)

    def __enter__(self) -> LayerTap:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()
