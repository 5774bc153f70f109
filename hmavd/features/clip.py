"""open_clip image and text embeddings, loaded offline, extracted in resumable chunks.

Nothing here downloads: a pretrained tag is resolved to a file already in the open_clip
(``~/.cache/clip``) or Hugging Face cache, or the user passes the weights file; otherwise a one-line
:class:`~hmavd.errors.UserError` says where to put it. ``HF_HUB_OFFLINE=1`` is set while loading.

Extraction (:func:`hmavd.features.extract.extract_features`, re-exported here) writes each chunk of
embeddings to ``<cache>.partial/`` as a safetensors file listed in ``manifest.json``; a killed run started
again with the same settings reuses those chunks and computes only the rest. Intermediate layers and image
variants: :mod:`hmavd.features.banks`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.thingseeg2 import concept_name
from ..devices import resolve_device
from ..errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TEMPLATE",
    "ClipEncoder",
    "l2_normalize",
    "concept_prompts",
    "sha256_file",
    "find_cached_weights",
    "load_clip",
]

DEFAULT_TEMPLATE = "This picture is of a {concept}."
_HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by their L2 norm: (N, D) -> (N, D) float32."""
    x = np.asarray(x, dtype=np.float64)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)).astype(np.float32)


def concept_prompts(concepts: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One prompt per concept folder: ``template`` with ``{concept}`` = the folder's concept name.

    ``"00002_aircraft_carrier"`` with the default template gives ``"This picture is of a aircraft carrier."``.
    """
    if "{concept}" not in template:
        raise UserError(f"prompt_template: {template!r} lacks '{{concept}}'; e.g. {DEFAULT_TEMPLATE!r}")
    try:
        return [template.format(concept=concept_name(c)) for c in concepts]
    except (KeyError, IndexError, ValueError) as err:
        raise UserError(
            f"prompt_template: {template!r} is not a valid template ({err}); use only the field {{concept}}"
        ) from None


def sha256_file(path: str | Path, block_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_bytes), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def find_cached_weights(tag_cfg: dict[str, Any], cache_dir: str | None = None) -> tuple[str | None, list[str]]:
    """Locate a pretrained tag's weights in the local caches without any network access.

    Returns
    -------
    path : str or None
        The cached weights file, or ``None``.
    looked : list of str
        Where it looked (for the error message).
    """
    looked: list[str] = []
    if tag_cfg.get("file"):
        looked.append(str(tag_cfg["file"]))
        if os.path.isfile(tag_cfg["file"]):
            return str(tag_cfg["file"]), looked
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, fname = (hub[:-1], "") if hub.endswith("/") else os.path.split(hub)
        names = [fname] if fname else list(_HF_WEIGHTS)
        if fname.endswith((".bin", ".pth")):
            names.insert(0, fname[:-4] + ".safetensors")
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub is an open_clip dependency
            try_to_load_from_cache = None
        for name in names:
            looked.append(f"Hugging Face cache {repo}/{name}")
            if try_to_load_from_cache is not None:
                hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return hit, looked
    url = tag_cfg.get("url", "")
    if url:
        p = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        looked.append(str(p))
        if p.is_file():
            return str(p), looked
    return None, looked


def _is_torchscript(path: str | Path) -> bool:
    """Whether a weights file is a TorchScript zip archive (it holds code, not just tensors)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


@dataclass
class ClipEncoder:
    """A loaded open_clip model with its eval transform and tokenizer.

    ``info`` holds the provenance: model, pretrained, weights_file, weights_sha256, quick_gelu,
    preprocessing (the transform's repr), open_clip_version, dim. ``layer``/``pool`` select an
    intermediate vision block instead of the final embedding (:meth:`set_layer`, :mod:`hmavd.features.banks`).
    """

    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[Sequence[str]], Any]
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)
    layer: int | None = None  # block index; None = the final image embedding
    pool: str = "auto"
    pre_resize: int = 0  # > 0: every image is first resized to S x S (bicubic), before any variant

    def set_layer(self, layer: str | int | None = "final", pool: str = "auto") -> None:
        """Take image features from block ``layer`` (index, relative depth or "final"), pooled by ``pool``."""
        from .banks import POOLS, resolve_layer, vision_blocks

        if pool not in POOLS:
            raise UserError(f"pool: {pool!r} is not one of {POOLS}")
        idx = resolve_layer(layer, len(vision_blocks(self.model.visual))) if str(layer) != "final" else None
        self.layer, self.pool = idx, pool
        self.info.update(layer=str(layer), layer_index=idx, pool=pool if idx is not None else "final projection")

    def _tap_features(self, pixels: Any) -> Any:
        from .banks import LayerTap, pool_output, vision_blocks

        visual = self.model.visual
        trunk = getattr(visual, "transformer", None)
        batch_first = bool(getattr(trunk, "batch_first", True))
        with LayerTap(vision_blocks(visual)[self.layer], batch_first) as tap:
            visual(pixels)
        return pool_output(tap.output, self.pool, int(getattr(visual, "num_prefix_tokens", 1)))  # (B, W)

    def encode_image_batch(self, pixels: Any) -> np.ndarray:
        """(B, 3, H, W) preprocessed pixels -> (B, D) L2-normalised float32 image features."""
        import torch

        with torch.no_grad():
            pixels = pixels.to(self.device)  # (B, 3, H, W)
            feats = self.model.encode_image(pixels) if self.layer is None else self._tap_features(pixels)  # (B, D)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy()

    def encode_text_batch(self, prompts: Sequence[str]) -> np.ndarray:
        """B prompts -> (B, D) L2-normalised float32 text features."""
        import torch

        tokens = self.tokenizer(list(prompts)).to(self.device)  # (B, L)
        with torch.no_grad():
            feats = self.model.encode_text(tokens)  # (B, D)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy()

    def encode_texts(self, prompts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(K, D) L2-normalised text features of ``prompts``."""
        out = [self.encode_text_batch(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
        return np.concatenate(out, axis=0)

    def iter_image_batches(
        self, paths: Sequence[Path], batch_size: int = 64, num_workers: int = 0, variant: Any = None, start: int = 0
    ) -> Iterator[np.ndarray]:
        """Yield (b, D) L2-normalised features of consecutive batches of image files.

        ``variant`` (a :class:`~hmavd.features.banks.Variant`) transforms each image first; ``start`` is the
        row index of ``paths[0]`` in its split (seeds the noise variant).
        """
        import torch

        loader = torch.utils.data.DataLoader(
            _ImageFiles(paths, self.preprocess, variant, start, self.pre_resize),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=self.device.startswith("cuda"),
        )
        try:
            for pixels in loader:  # (b, 3, H, W)
                yield self.encode_image_batch(pixels)
        except UserError as err:  # from a worker the message carries its traceback: keep the last line
            last = str(err).strip().splitlines()[-1]
            raise UserError(last.split("UserError: ", 1)[-1]) from None

    def encode_images(
        self, paths: Sequence[Path], batch_size: int = 64, num_workers: int = 0, variant: Any = None
    ) -> np.ndarray:
        """(N, D) L2-normalised image features of ``paths`` (no chunking, no progress)."""
        return np.concatenate(list(self.iter_image_batches(paths, batch_size, num_workers, variant)), axis=0)


class _ImageFiles:
    """A map-style dataset of image files -> (optionally transformed) preprocessed (3, H, W) tensors."""

    def __init__(
        self,
        paths: Sequence[Path],
        preprocess: Callable[[Any], Any],
        variant: Any = None,
        start: int = 0,
        pre_resize: int = 0,
    ):
        self.paths = list(paths)
        self.preprocess = preprocess
        self.variant, self.start, self.pre_resize = variant, start, pre_resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as im:
                rgb = im.convert("RGB")
        except OSError as err:
            raise UserError(f"images: {self.paths[i]} is not a readable image ({err}); replace or remove it") from None
        if self.pre_resize:  # as the visual-blur / UBP scripts: resize to 224 x 224 first, then blur
            rgb = rgb.resize((self.pre_resize, self.pre_resize), Image.BICUBIC)
        if self.variant is not None:
            from .banks import apply_variant

            rgb = apply_variant(rgb, self.variant, self.start + i)
        return self.preprocess(rgb)


def _check_model_name(open_clip: Any, name: str, model_config: str | None) -> None:
    if name.startswith(("hf-hub:", "local-dir:")):
        return
    if name.replace("/", "-") not in open_clip.list_models():
        hint = f" (after registering {model_config})" if model_config else ""
        raise UserError(
            f"model: {name!r} is not an open_clip architecture{hint}; use one of open_clip.list_models() "
            "such as 'ViT-L-14', or register a JSON config with --model-config"
        )


def _tag_config(
    open_clip: Any, model_name: str, arch: str, pretrained: str | None, weights: str | Path | None
) -> tuple[dict[str, Any], str | None]:
    """The pretrained tag's open_clip config ({} without one) and the tag kept (None: only the weights file)."""
    tag_cfg: dict[str, Any] = {}
    if pretrained and not model_name.startswith(("hf-hub:", "local-dir:")):
        tag_cfg = dict(open_clip.get_pretrained_cfg(arch, pretrained))
        if not tag_cfg and weights is None:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise UserError(
                f"pretrained: {pretrained!r} is not a tag of {arch} (tags: {tags or 'none'}); "
                "pick one or pass the weights file with --weights"
            )
    if weights is not None and pretrained and not tag_cfg:
        log.info("pretrained %r is not a tag of %s; using only the weights file %s", pretrained, arch, weights)
        pretrained = None
    return tag_cfg, pretrained


def _checkpoint_file(
    model_name: str,
    arch: str,
    pretrained: str | None,
    weights: str | Path | None,
    tag_cfg: dict[str, Any],
    cache_dir: str | None,
    random_init: bool,
) -> str | None:
    """The local weights file to load (None: random init or an hf-hub/local-dir model); one-line refusals."""
    ckpt: str | None = None
    if weights is not None:
        if not Path(weights).is_file():
            raise UserError(
                f"--weights: {weights} does not exist; pass the path of the downloaded open_clip weights file "
                "(e.g. /path/to/open_clip_pytorch_model.bin)"
            )
        ckpt = str(weights)
    elif tag_cfg:
        ckpt, looked = find_cached_weights(tag_cfg, cache_dir)
        if ckpt is None:
            source = tag_cfg.get("url") or f"https://huggingface.co/{tag_cfg.get('hf_hub', '').rstrip('/')}"
            raise UserError(
                f"--pretrained: weights of {arch} {pretrained!r} are not on this machine (looked in: "
                f"{'; '.join(looked)}) and nothing is downloaded; fetch {source} elsewhere and pass "
                "--weights /path/to/open_clip_pytorch_model.bin, or put it in that open_clip/Hugging Face "
                "cache dir (--cache-dir)"
            )
    elif not random_init and not model_name.startswith(("hf-hub:", "local-dir:")):
        raise UserError(
            f"--weights: no weights for {arch}; pass --weights /path/to/open_clip_pytorch_model.bin or "
            "--pretrained TAG whose weights are in the local open_clip/Hugging Face cache"
        )
    if ckpt is not None and _is_torchscript(ckpt):
        raise UserError(
            f"--weights: {ckpt} is a TorchScript archive (OpenAI's .pt), which is not opened because loading it "
            "can run code; use the plain state-dict weights instead (for OpenAI models: open_clip_model.safetensors "
            "from https://huggingface.co/timm/<model>.openai) and pass --weights /path/to/that file"
        )
    return ckpt


def _create_offline(
    open_clip: Any,
    model_name: str,
    ckpt: str | None,
    pretrained: str | None,
    dev: str,
    quick_gelu: bool,
    tag_cfg: dict[str, Any],
    cache_dir: str | None,
) -> tuple[Any, Any, Any]:
    """The model, its preprocessing and tokenizer, created with downloads off (one-line error on failure)."""
    try:
        with _offline():
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=ckpt if not model_name.startswith(("hf-hub:", "local-dir:")) else None,
                device=dev,
                force_quick_gelu=quick_gelu,
                image_mean=tag_cfg.get("mean"),
                image_std=tag_cfg.get("std"),
                image_interpolation=tag_cfg.get("interpolation"),
                image_resize_mode=tag_cfg.get("resize_mode"),
                pretrained_text=False,
                cache_dir=cache_dir,
            )
            tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise UserError(
            f"model: cannot load {model_name!r} with weights {ckpt or pretrained or 'none'} offline ({first}); "
            "check that --weights belongs to --model (and quick_gelu), or put the files in the local cache"
        ) from None
    return model, preprocess, tokenizer


def load_clip(
    model_name: str,
    pretrained: str | None = None,
    weights: str | Path | None = None,
    model_config: str | Path | None = None,
    device: str = "auto",
    cache_dir: str | None = None,
    quick_gelu: bool | None = None,
    random_init: bool = False,
) -> ClipEncoder:
    """Load an open_clip model offline.

    Parameters
    ----------
    model_name : str
        open_clip architecture (``"ViT-L-14"``), or ``"local-dir:/path"`` / a cached ``"hf-hub:org/repo"``.
    pretrained : str, optional
        A pretrained tag (``"openai"``); its weights must already be in the local cache unless
        ``weights`` is given. The tag also supplies the preprocessing and QuickGELU setting.
    weights : path, optional
        A local weights file (``open_clip_pytorch_model.bin``, ``.safetensors``, OpenAI ``.pt``).
    model_config : path, optional
        A JSON model config registered with ``open_clip.add_model_config`` (its stem is the model name).
    device : str
        ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"`` …
    cache_dir : str, optional
        open_clip / Hugging Face cache folder to look in (default: their standard locations).
    quick_gelu : bool, optional
        Force QuickGELU; ``None`` takes it from the pretrained tag (OpenAI weights need it).
    random_init : bool
        Allow random weights when neither ``pretrained`` nor ``weights`` is given (tests only).
    """
    import open_clip
    import torch

    dev = str(resolve_device(device))
    if model_config is not None:
        mc = Path(model_config)
        if not mc.is_file() or mc.suffix != ".json":
            raise UserError(f"model_config: {mc} is not a JSON file; give an open_clip model config .json")
        open_clip.add_model_config(mc)
    _check_model_name(open_clip, model_name, str(model_config) if model_config else None)
    arch = model_name.replace("/", "-")
    tag_cfg, pretrained = _tag_config(open_clip, model_name, arch, pretrained, weights)
    ckpt = _checkpoint_file(model_name, arch, pretrained, weights, tag_cfg, cache_dir, random_init)
    qg = bool(tag_cfg.get("quick_gelu", False)) if quick_gelu is None else bool(quick_gelu)
    model, preprocess, tokenizer = _create_offline(open_clip, model_name, ckpt, pretrained, dev, qg, tag_cfg, cache_dir)
    model.eval()
    with torch.no_grad():
        dim = int(model.encode_text(tokenizer(["a"]).to(dev)).shape[-1])
    info = {
        "model": model_name,
        "pretrained": pretrained,
        "weights_file": str(Path(ckpt).resolve()) if ckpt else None,
        "weights_sha256": sha256_file(ckpt) if ckpt else None,
        "model_config": json.loads(Path(model_config).read_text()) if model_config else None,
        "quick_gelu": qg,
        "preprocessing": repr(preprocess),
        "open_clip_version": open_clip.__version__,
        "torch_version": torch.__version__,
        "dim": dim,
    }
    log.info("loaded %s (%s) on %s, D=%d", model_name, ckpt or pretrained or "random init", dev, dim)
    return ClipEncoder(model=model, preprocess=preprocess, tokenizer=tokenizer, device=dev, info=info)


def __getattr__(name: str) -> Any:
    """``PartialStore`` and ``extract_features`` live in :mod:`hmavd.features.extract` (re-exported here)."""
    if name in ("PartialStore", "extract_features"):
        from . import extract

        return getattr(extract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
