"""Zero-shot templates: one per test concept, from a feature cache or from a checkpoint's stored gallery.

Evaluation (:mod:`hmavd.evaluate`, :mod:`hmavd.eval_reps`) and the live decoder (``bci.decoder``) take
their templates from here, so both score against the same rows.

* :func:`build_templates` encodes the cache's test features with the model's own template branch
  (image: ``test-images`` or per-concept ``centers``; ``text``; ``fused``), as the evaluation always did.
* :class:`Gallery` is what ``hmavd-train`` stores in every checkpoint: the template branches' outputs
  *before their final normalisation* for the test images, the centres (when the cache has them) and the
  text, computed by :func:`compute_gallery` from the training feature cache with the trained image-side head
  (the identity for NICE). :meth:`Gallery.templates` combines them exactly as
  :meth:`hmavd.models.hmavd_model.HMAVD.encode_templates` does, so a checkpoint decodes without its cache.

Row order is the cache's ``test_concepts`` (sorted concept folders); labels index these rows.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "TEMPLATE_KINDS",
    "IMAGE_SOURCES",
    "SCORINGS",
    "GALLERY_PREFIX",
    "concept_image_features",
    "template_label",
    "check_template_args",
    "build_templates",
    "combine_templates",
    "bank_fingerprint",
    "Gallery",
    "compute_gallery",
    "templates_from",
    "concepts_of",
    "image_labels_of",
]

TEMPLATE_KINDS = ("image", "text", "fused")
IMAGE_SOURCES = ("test-images", "centers")
#: ``cosine``: normalised EEG · normalised template; ``dot``: normalised EEG · raw template (NICE).
SCORINGS = ("cosine", "dot")
#: Checkpoint tensor names: ``gallery.image.test-images``, ``gallery.image.centers``, ``gallery.text``.
GALLERY_PREFIX = "gallery."


def concept_image_features(image_features: np.ndarray, image_labels: np.ndarray, n_concepts: int) -> np.ndarray:
    """Per-concept image feature: mean of the concept's images (the image itself when it has one).

    Returns (n_concepts, D).
    """
    image_features = np.asarray(image_features, dtype=np.float64)
    out = np.zeros((n_concepts, image_features.shape[1]))
    np.add.at(out, image_labels, image_features)
    counts = np.bincount(image_labels, minlength=n_concepts)
    if (counts == 0).any():
        raise UserError(f"features: {int((counts == 0).sum())} test concepts have no test image; check metadata")
    return (out / counts[:, None]).astype(np.float32)


def template_label(kind: str, image_source: str, scoring: str = "cosine") -> str:
    """``image[test-images]``, ``fused[centers]``, ``text``; ``scoring="dot"`` adds it: ``image[centers,dot]``."""
    parts = ([] if kind == "text" else [image_source]) + ([] if scoring == "cosine" else [scoring])
    return f"{kind}[{','.join(parts)}]" if parts else kind


def check_template_args(kind: str, image_source: str, scoring: str, use_text: bool = True) -> None:
    """One-line :class:`UserError` for an unknown kind / source / scoring, or text templates without text."""
    if kind not in TEMPLATE_KINDS:
        raise UserError(f"--templates: {kind!r} is not one of {TEMPLATE_KINDS}")
    if image_source not in IMAGE_SOURCES:
        raise UserError(f"--image-source: {image_source!r} is not one of {IMAGE_SOURCES}")
    if scoring not in SCORINGS:
        raise UserError(f"--scoring: {scoring!r} is not one of {SCORINGS}")
    if kind in ("text", "fused") and not use_text:
        raise UserError(f"--templates: {kind!r} needs a model trained with text (use_text=true); use image")


def _use_text(model: Any) -> bool:
    return bool(getattr(getattr(model, "cfg", None), "use_text", True))


def _image_inputs(cache: Any, image_source: str, image_labels: np.ndarray | None, n_concepts: int) -> np.ndarray:
    """(n_concepts, D) image-side inputs of one source: the concept's test image(s) or its centre feature."""
    if image_source == "centers":
        image = cache.center_features()
        if image is None:
            raise UserError(
                f"--image-source: centers, but the feature cache {cache.path} has no test_center_features; "
                "use --image-source test-images or rebuild the cache with centers"
            )
        return np.asarray(image, dtype=np.float32)
    labels = np.arange(n_concepts) if image_labels is None else np.asarray(image_labels)
    return concept_image_features(cache.image_features("test"), labels, n_concepts)


def _tensor(x: Any, device: str | torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)


def build_templates(
    model: Any,
    cache: Any,
    kind: str,
    image_source: str = "test-images",
    image_labels: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    scoring: str = "cosine",
) -> torch.Tensor:
    """Encode one template per test concept (rows in the cache's ``test_concepts`` order).

    Parameters
    ----------
    model : HMAVD
    cache : FeatureCache
    kind : {"image", "text", "fused"}
    image_source : {"test-images", "centers"}
    image_labels : array of int, shape (n_test_images,), optional
        Concept index of each test image (default: image i is concept i).
    scoring : {"cosine", "dot"}
        ``"cosine"``: L2-normalised templates; ``"dot"``: the template branch's output before its final
        normalisation (NICE scores raw centre features).

    Returns
    -------
    Tensor, shape (n_test_concepts, D), L2-normalised for ``"cosine"``.
    """
    check_template_args(kind, image_source, scoring, _use_text(model))
    text = np.asarray(cache.text_features("test"), dtype=np.float32)  # (K, D_text)
    image = _image_inputs(cache, image_source, image_labels, len(text)) if kind != "text" else None  # (K, D)
    with torch.no_grad():
        return model.encode_templates(
            image_features=None if image is None else _tensor(image, device),
            text_features=_tensor(text, device) if kind != "image" else None,
            kind=kind,
            normalize=scoring == "cosine",
        )


def combine_templates(
    image: torch.Tensor | None, text: torch.Tensor | None, kind: str, normalize: bool
) -> torch.Tensor:
    """Templates of ``kind`` from the branches' raw outputs, the rule of ``HMAVD.encode_templates``.

    Parameters
    ----------
    image, text : Tensor, shape (K, D), or None
        Image / text branch outputs before their final L2 normalisation.
    kind : {"image", "text", "fused"}
    normalize : bool
        ``True``: L2-normalised templates (``fused``: normalised mean of the normalised branches);
        ``False``: raw outputs (``fused``: their sum).
    """
    norm = (lambda x: F.normalize(x, dim=-1)) if normalize else (lambda x: x)  # noqa: E731
    if kind == "image":
        return norm(image)  # (K, D)
    if kind == "text":
        return norm(text)  # (K, D)
    fused = norm(image) + norm(text)  # (K, D)
    return F.normalize(fused, dim=-1) if normalize else fused


def bank_fingerprint(cache: Any) -> str:
    """sha256 (first 16 hex digits) of the cache's test tensors a gallery is computed from."""
    h = hashlib.sha256()
    for name in ("test_image_features", "test_center_features", "test_text_features"):
        a = cache.arrays.get(name)
        if a is not None:
            a = np.ascontiguousarray(a, dtype=np.float32)
            h.update(f"{name}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def concepts_of(cache: Any, n: int) -> tuple[str, ...]:
    """The ``n`` test concept folders of a cache (its provenance, else its test image ids, else numbers)."""
    prov = getattr(cache, "provenance", None) or {}
    folders = list(prov.get("test_concepts") or [])
    if len(folders) != n:
        images = list(prov.get("test_images") or [])
        folders = [s.split("/")[0] for s in images] if len(images) == n else [f"concept {i + 1}" for i in range(n)]
    return tuple(folders)


def image_labels_of(cache: Any) -> np.ndarray | None:
    """Concept row of each test image from the cache's provenance (``"<concept>/<file>"`` ids), or ``None``."""
    prov = getattr(cache, "provenance", None) or {}
    concepts, images = list(prov.get("test_concepts") or []), list(prov.get("test_images") or [])
    pos = {c: i for i, c in enumerate(concepts)}
    if not images or any(s.split("/")[0] not in pos for s in images):
        return None
    return np.array([pos[s.split("/")[0]] for s in images], dtype=np.int64)


@dataclass(frozen=True)
class Gallery:
    """A trained model's template-branch outputs for every test concept (stored in its checkpoint).

    Attributes
    ----------
    image : mapping of str to Tensor, shape (K, D)
        Image-branch output (adapter + image-side head, before the final normalisation) per source
        (``test-images``; ``centers`` when the training cache has them).
    text : Tensor, shape (K, D), or None
        Text-branch output before the final normalisation (models trained with text).
    concepts : tuple of str
        The K test concept folders, the row order.
    images : tuple of str
        The test image ids the ``test-images`` rows were averaged from.
    bank : mapping
        Provenance summary of the feature cache (``path``, ``model`` …) and its ``fingerprint``.
    """

    image: Mapping[str, torch.Tensor]
    text: torch.Tensor | None
    concepts: tuple[str, ...]
    images: tuple[str, ...] = ()
    bank: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rows = {len(t) for t in [*self.image.values(), *([self.text] if self.text is not None else [])]}
        if rows and rows != {len(self.concepts)}:
            raise UserError(f"gallery: {sorted(rows)} template rows for {len(self.concepts)} concepts; re-train")

    def templates(self, kind: str, image_source: str = "test-images", scoring: str = "cosine") -> torch.Tensor:
        """(K, D) templates as :func:`build_templates` gives them for the training cache."""
        check_template_args(kind, image_source, scoring, self.text is not None)
        image = None
        if kind != "text":
            if image_source not in self.image:
                raise UserError(
                    f"--image-source: {image_source!r} is not in the checkpoint's gallery (has {sorted(self.image)}); "
                    "use --image-source test-images or pass --features CACHE"
                )
            image = self.image[image_source]
        return combine_templates(image, self.text, kind, scoring == "cosine")

    def to(self, device: str | torch.device) -> Gallery:
        """The same gallery with its tensors on ``device``."""
        text = None if self.text is None else self.text.to(device)
        return Gallery({k: v.to(device) for k, v in self.image.items()}, text, self.concepts, self.images, self.bank)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Checkpoint tensors: ``gallery.image.<source>`` and ``gallery.text`` (CPU, float32)."""
        out = {f"{GALLERY_PREFIX}image.{k}": v.detach().float().cpu().contiguous() for k, v in self.image.items()}
        if self.text is not None:
            out[f"{GALLERY_PREFIX}text"] = self.text.detach().float().cpu().contiguous()
        return out

    def metadata(self) -> dict[str, Any]:
        """JSON for the checkpoint's ``gallery`` entry (names, sources, bank provenance)."""
        return {
            "concepts": list(self.concepts),
            "images": list(self.images),
            "image_sources": sorted(self.image),
            "text": self.text is not None,
            "normalized": False,
            "bank": dict(self.bank),
        }

    @classmethod
    def from_checkpoint(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Gallery:
        """Rebuild from a checkpoint's tensors and its ``gallery`` metadata entry."""
        image = {s: tensors[f"{GALLERY_PREFIX}image.{s}"] for s in meta.get("image_sources", [])}
        text = tensors.get(f"{GALLERY_PREFIX}text") if meta.get("text") else None
        images = tuple(meta.get("images") or ())
        return cls(image, text, tuple(meta.get("concepts") or ()), images, dict(meta.get("bank") or {}))


@torch.no_grad()
def compute_gallery(
    model: Any,
    cache: Any,
    image_labels: np.ndarray | None = None,
    bank: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> Gallery:
    """The gallery of ``model`` on ``cache``'s test features (the model is left in its training mode).

    Parameters
    ----------
    model : HMAVD
    cache : FeatureCache
        The training feature cache.
    image_labels : array of int, shape (n_test_images,), optional
        Concept index of each test image (default: from the cache's provenance, :func:`image_labels_of`;
        image i is concept i without one).
    bank : mapping, optional
        Provenance summary stored with the gallery; the cache's fingerprint is added.
    device : optional
        Where to encode (default: the model's device).
    """
    if device is None:
        device = next(iter(model.parameters())).device
    if image_labels is None:
        image_labels = image_labels_of(cache)
    was_training = model.training
    model.eval()
    try:
        text_in = np.asarray(cache.text_features("test"), dtype=np.float32)  # (K, D_text)
        n = len(text_in)
        sources = ["test-images"] + (["centers"] if cache.center_features() is not None else [])
        image = {}
        for s in sources:
            x = _tensor(_image_inputs(cache, s, image_labels, n), device)  # (K, D_img)
            image[s] = model.encode_templates(image_features=x, kind="image", normalize=False)  # (K, D)
        text = None
        if _use_text(model):
            text = model.encode_templates(text_features=_tensor(text_in, device), kind="text", normalize=False)
    finally:
        model.train(was_training)
    prov = getattr(cache, "provenance", None) or {}
    images = tuple(prov.get("test_images") or ())
    summary = {**dict(bank or {}), "fingerprint": bank_fingerprint(cache)}
    return Gallery(image, text, concepts_of(cache, n), images, summary)


def templates_from(
    source: Any,
    model: Any,
    kind: str,
    image_source: str = "test-images",
    image_labels: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    scoring: str = "cosine",
) -> torch.Tensor:
    """(K, D) templates from a stored :class:`Gallery` or, for a feature cache, :func:`build_templates`."""
    if isinstance(source, Gallery):
        return source.templates(kind, image_source, scoring).to(device)
    return build_templates(model, source, kind, image_source, image_labels, device, scoring)
