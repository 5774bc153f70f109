"""Import pre-extracted CLIP features published by reference implementations into the cache.

NICE-EEG publishes, in ThingsEEG2 metadata order::

    clip_feature_maps_training.npy   (16540, 1, 768)
    clip_feature_maps_test.npy       (200, 1, 768)
    center_clip.npy                  (200, 768)

Others publish one torch file keyed by split (``{"train": (N, D), "test": (M, D)}``), read with
``torch.load(weights_only=True)``. Rows are checked against ``image_metadata`` (the row order *is*
the metadata order); text features come from a file or are computed with open_clip by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..data.thingseeg2 import ImageMetadata
from ..errors import UserError
from .cache import image_ids
from .clip import l2_normalize, sha256_file

log = logging.getLogger(__name__)

__all__ = ["SPLIT_KEYS", "as_feature_matrix", "load_feature_file", "load_keyed_features", "build_import"]

#: Accepted key names of a tensor file keyed by split.
SPLIT_KEYS = {
    "training": ("training", "train", "train_image_features", "train_images"),
    "test": ("test", "test_image_features", "test_images"),
    "center": ("center", "centers", "center_clip", "test_center_features"),
    "train_text": ("train_text", "train_text_features", "text_train"),
    "test_text": ("test_text", "test_text_features", "text_test"),
}


def as_feature_matrix(arr: Any, what: str) -> np.ndarray:
    """(N, D) or (N, 1, D) numbers -> (N, D) float32; anything else is a one-line error."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[1] == 1:
        a = a[:, 0, :]
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or a.shape[0] == 0:
        raise UserError(f"{what}: has shape {a.shape} ({a.dtype}); expected (N, D) or (N, 1, D) numbers")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise UserError(f"{what}: contains NaN or inf values; re-export the features")
    return a


def _to_numpy(obj: Any) -> Any:
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            return obj.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return obj


def _read_any(path: Path, what: str) -> Any:
    """Read a ``.npy`` array, ``.npz``/``.safetensors`` mapping or torch file (weights_only)."""
    if not path.is_file():
        raise UserError(f"{what}: {path} does not exist; give the path of the published feature file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return load_file(str(path))
        if suffix in (".pt", ".pth", ".bin"):
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, Mapping):
                return {str(k): _to_numpy(v) for k, v in obj.items()}
            return _to_numpy(obj)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise UserError(
                f"{what}: {path} is a pickled object array, which is not opened; re-save it with "
                "np.save(path, features.astype('float32'))"
            ) from None
        raise UserError(f"{what}: {path} is unreadable ({err}); re-export it") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"{what}: {path} is unreadable ({type(err).__name__}: {err}); re-export it") from None
    raise UserError(f"{what}: {path} has suffix {suffix!r}; use .npy, .npz, .safetensors or a torch .pt file")


def load_feature_file(path: str | Path, what: str) -> np.ndarray:
    """One (N, D) / (N, 1, D) feature file -> (N, D) float32."""
    obj = _read_any(Path(path), what)
    if isinstance(obj, Mapping):
        if len(obj) != 1:
            raise UserError(
                f"{what}: {path} holds several tensors {sorted(obj)}; pass it with --tensor-file to pick by split"
            )
        obj = next(iter(obj.values()))
    return as_feature_matrix(obj, f"{what} {path}")


def load_keyed_features(path: str | Path, what: str = "--tensor-file") -> dict[str, np.ndarray]:
    """A file keyed by split -> ``{"training", "test", ["center", "train_text", "test_text"]}`` (N, D) arrays."""
    obj = _read_any(Path(path), what)
    if not isinstance(obj, Mapping):
        raise UserError(f"{what}: {path} holds a single tensor; expected a mapping with keys 'train' and 'test'")
    out: dict[str, np.ndarray] = {}
    for name, aliases in SPLIT_KEYS.items():
        hit = [k for k in obj if k.lower() in aliases]
        if len(hit) > 1:
            raise UserError(f"{what}: {path} has several keys for {name}: {hit}; keep one")
        if hit:
            out[name] = as_feature_matrix(obj[hit[0]], f"{what} {path}[{hit[0]!r}]")
    missing = [k for k in ("training", "test") if k not in out]
    if missing:
        raise UserError(
            f"{what}: {path} lacks {missing} (has keys {sorted(obj)}); expected keys like 'train' and 'test'"
        )
    return out


def build_import(
    meta: ImageMetadata,
    train_images: np.ndarray,
    test_images: np.ndarray,
    train_text: np.ndarray,
    test_text: np.ndarray,
    centers: np.ndarray | None = None,
    normalize: bool = True,
    provenance: Mapping[str, Any] | None = None,
    sources: Mapping[str, str | Path] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Check imported features against the metadata and assemble cache tensors and provenance.

    Parameters
    ----------
    meta : ImageMetadata
        Gives the row order: training/test images in metadata order, concepts sorted.
    train_images, test_images : ndarray, shape (n_images, D)
    train_text, test_text : ndarray, shape (n_concepts, D)
    centers : ndarray, shape (n_test_concepts, D), optional
    normalize : bool
        L2-normalise image and text rows (centers are kept as published).
    provenance : mapping, optional
        Extra provenance (model, pretrained, prompt_template, …).
    sources : mapping of name -> path, optional
        Imported files; their paths and sha256 are recorded.
    """
    expect = {
        "training images": (train_images, len(meta.train_img_files), "image_metadata's training images"),
        "test images": (test_images, len(meta.test_img_files), "image_metadata's test images"),
        "training text": (train_text, len(meta.train_concepts), "training concepts"),
        "test text": (test_text, len(meta.test_concepts), "test concepts"),
    }
    if centers is not None:
        expect["test centers"] = (centers, len(meta.test_concepts), "test concepts")
    for name, (arr, n, what) in expect.items():
        if arr.shape[0] != n:
            raise UserError(
                f"import: the {name} features have {arr.shape[0]} rows but the metadata has {n} {what}; "
                "use the feature file and image_metadata of the same dataset (rows must follow metadata order)"
            )
    dims = {name: arr.shape[1] for name, (arr, _, _) in expect.items()}
    if len(set(dims.values())) != 1:
        raise UserError(
            f"import: feature dimensions differ {dims}; text features must come from the same CLIP model "
            "as the image features (e.g. ViT-L-14 for NICE's 768-d files)"
        )
    norm = l2_normalize if normalize else (lambda a: np.asarray(a, dtype=np.float32))
    arrays = {
        "train_image_features": norm(train_images),
        "test_image_features": norm(test_images),
        "train_text_features": norm(train_text),
        "test_text_features": norm(test_text),
    }
    if centers is not None:
        arrays["test_center_features"] = np.asarray(centers, dtype=np.float32)
    prov: dict[str, Any] = {
        "source": "import",
        "normalised": bool(normalize),
        **dict(provenance or {}),
        "imported_files": {
            k: {"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for k, p in (sources or {}).items()
        },
        "train_images": image_ids(meta, "training"),
        "test_images": image_ids(meta, "test"),
        "train_concepts": list(meta.train_concepts),
        "test_concepts": list(meta.test_concepts),
    }
    log.info("import: %d train / %d test images, D=%d", len(train_images), len(test_images), train_images.shape[1])
    return arrays, prov
