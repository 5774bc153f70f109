"""The feature cache: frozen CLIP image/text embeddings with their provenance.

Training and evaluation read image and text features only through this cache. A cache is a folder::

    <cache>/features.safetensors   # tensors, no pickles
    <cache>/provenance.json        # model, weights, prompt, preprocessing, dim, image list and order

Tensors (float32, ``D`` = embedding dimension):

======================== ====================== ==========================================
name                     shape                  rows follow
======================== ====================== ==========================================
``train_image_features`` (n_train_images, D)    ``provenance["train_images"]`` (metadata order)
``test_image_features``  (n_test_images, D)     ``provenance["test_images"]``
``train_text_features``  (n_train_concepts, D)  ``provenance["train_concepts"]`` (sorted folders)
``test_text_features``   (n_test_concepts, D)   ``provenance["test_concepts"]``
``test_center_features`` (n_test_concepts, D)   optional: mean feature of *other* images of a concept
======================== ====================== ==========================================

Optional per-variant image tensors (transformed images, see :mod:`hmavd.features.banks`) are named
``variant/<name>/train_image_features`` and ``variant/<name>/test_image_features``. Image tensors share one
dimension ``D``; text tensors share one (``D_text``, which differs from ``D`` for an intermediate layer).

Every image tensor passes the collapse check (:mod:`hmavd.features.collapse`) when the cache is written and
again when it is loaded; the statistics are kept in ``provenance["collapse"]``.

Image ids are ``"<concept folder>/<file name>"``, e.g. ``"00001_aardvark/aardvark_01b.jpg"``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.thingseeg2 import ImageMetadata
from ..errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "TENSOR_NAMES",
    "FeatureCache",
    "image_ids",
    "save_feature_cache",
    "load_feature_cache",
    "check_against_metadata",
    "variant_tensor",
]

FORMAT_VERSION = 1
TENSOR_FILE = "features.safetensors"
PROVENANCE_FILE = "provenance.json"
TENSOR_NAMES = (
    "train_image_features",
    "test_image_features",
    "train_text_features",
    "test_text_features",
    "test_center_features",
)
REQUIRED = TENSOR_NAMES[:4]
VARIANT_PREFIX = "variant/"
IMAGE_SPLIT_TENSORS = ("train_image_features", "test_image_features")


def variant_tensor(variant: str, tensor: str) -> str:
    """Name of a variant's image tensor: ``variant/<variant>/<tensor>``."""
    return f"{VARIANT_PREFIX}{variant}/{tensor}"


def _is_variant_tensor(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 3 and parts[0] + "/" == VARIANT_PREFIX and parts[2] in IMAGE_SPLIT_TENSORS and bool(parts[1])


def _is_image_tensor(name: str) -> bool:
    return "image" in name.rsplit("/", 1)[-1] or name == "test_center_features"


def image_ids(meta: ImageMetadata, split: str) -> list[str]:
    """``"<concept>/<file>"`` ids of a split's images, in metadata order."""
    if split == "training":
        return [f"{c}/{f}" for c, f in zip(meta.train_img_concepts, meta.train_img_files)]
    return [f"{c}/{f}" for c, f in zip(meta.test_img_concepts, meta.test_img_files)]


@dataclass(frozen=True)
class FeatureCache:
    """A loaded feature cache."""

    path: Path
    arrays: Mapping[str, np.ndarray]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.arrays["test_image_features"].shape[1])

    def image_features(self, split: str) -> np.ndarray:
        """(n_images, D) image features of ``split`` ("training" or "test")."""
        return self.arrays["train_image_features" if split == "training" else "test_image_features"]

    def text_features(self, split: str) -> np.ndarray:
        """(n_concepts, D) text features of ``split``'s concepts."""
        return self.arrays["train_text_features" if split == "training" else "test_text_features"]

    def center_features(self) -> np.ndarray | None:
        """(n_test_concepts, D) per-concept center features, when the cache has them."""
        return self.arrays.get("test_center_features")

    @property
    def text_dim(self) -> int:
        return int(self.arrays["test_text_features"].shape[1])

    def variants(self) -> list[str]:
        """Names of the stored per-variant image banks, in provenance order."""
        names = {k.split("/")[1] for k in self.arrays if _is_variant_tensor(k)}
        order = [v for v in self.provenance.get("variants", []) if v in names]
        return order + sorted(names - set(order))

    def variant_features(self, variant: str, split: str) -> np.ndarray:
        """(n_images, D) image features of one stored variant of ``split``."""
        key = variant_tensor(variant, "train_image_features" if split == "training" else "test_image_features")
        if key not in self.arrays:
            raise UserError(f"variant: {variant!r} is not stored in {self.path} (has {self.variants()}); re-extract")
        return self.arrays[key]

    def describe(self) -> str:
        p = self.provenance
        weights = p.get("pretrained") or p.get("weights_file") or "unknown weights"
        return f"{p.get('model', '?')} ({weights}), D={self.dim}"


def save_feature_cache(path: str | Path, arrays: Mapping[str, np.ndarray], provenance: Mapping[str, Any]) -> Path:
    """Write a complete cache folder atomically (a temporary folder renamed into place).

    ``provenance`` must list ``train_images``, ``test_images``, ``train_concepts`` and
    ``test_concepts`` matching the tensor rows; ``format_version`` and ``dim`` are added.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"feature cache needs tensors {missing}")
    unknown = [k for k in arrays if k not in TENSOR_NAMES and not _is_variant_tensor(k)]
    if unknown:
        raise ValueError(f"unknown feature tensors {unknown}; allowed {TENSOR_NAMES} and variant/<name>/<image tensor>")
    prov = dict(provenance)
    for key, tensor in (
        ("train_images", "train_image_features"),
        ("test_images", "test_image_features"),
        ("train_concepts", "train_text_features"),
        ("test_concepts", "test_text_features"),
    ):
        if key not in prov or len(prov[key]) != len(arrays[tensor]):
            raise ValueError(f"provenance[{key!r}] must list one entry per row of {tensor}")
    dims = {np.asarray(a).shape[1] for k, a in arrays.items() if _is_image_tensor(k)}
    text_dims = {np.asarray(a).shape[1] for k, a in arrays.items() if not _is_image_tensor(k)}
    if len(dims) != 1 or len(text_dims) != 1:
        raise ValueError(f"image tensors must share one dimension, text one: {sorted(dims)}, {sorted(text_dims)}")
    if prov.get("collapse_check", True):
        prov["collapse"] = _collapse_report(path, arrays, prov)
    prov["format_version"] = FORMAT_VERSION
    prov["dim"] = int(dims.pop())
    prov["text_dim"] = int(text_dims.pop())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}, str(tmp / TENSOR_FILE))
        (tmp / PROVENANCE_FILE).write_text(json.dumps(prov, indent=1))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def _collapse_report(path: Path, arrays: Mapping[str, np.ndarray], prov: Mapping[str, Any]) -> dict[str, Any]:
    """Collapse statistics of every image tensor; a collapsed one raises a one-line UserError."""
    from .collapse import MAX_MEDIAN_COSINE, MIN_EFFECTIVE_RANK, check_collapse

    th = dict(prov.get("collapse_thresholds") or {})
    max_cos = float(th.get("max_median_cosine", MAX_MEDIAN_COSINE))
    min_rank = float(th.get("min_effective_rank", MIN_EFFECTIVE_RANK))
    report = {}
    for name in sorted(arrays):
        if _is_image_tensor(name):
            st = check_collapse(arrays[name], f"features: {path} {name}", max_cos, min_rank)
            report[name] = st.as_dict()
    return report


def load_feature_cache(path: str | Path) -> FeatureCache:
    """Load a cache folder; one-line errors for missing, malformed or collapsed caches.

    A cache built with ``collapse_check=false`` (its provenance says so) is loaded with a warning.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    tf, pf = path / TENSOR_FILE, path / PROVENANCE_FILE
    if not tf.exists() or not pf.exists():
        raise UserError(
            f"features: {path} is not a feature cache (needs {TENSOR_FILE} and {PROVENANCE_FILE}); "
            "build one with hmavd-features or hmavd-simulate, or import published features with "
            "hmavd-features import"
        )
    try:
        prov = json.loads(pf.read_text())
        arrays = load_file(str(tf))
    except Exception as err:  # noqa: BLE001
        raise UserError(f"features: {path} is unreadable ({type(err).__name__}: {err}); rebuild it") from None
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise UserError(f"features: {tf} lacks tensors {missing}; rebuild the cache")
    if prov.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"features: {pf} has format_version {prov.get('format_version')!r}, this version reads "
            f"{FORMAT_VERSION}; rebuild the cache"
        )
    if prov.get("collapse_check", True):
        _collapse_report(path, arrays, prov)
    else:
        log.warning("features: %s was built with collapse_check=false; its banks are not checked", path)
    return FeatureCache(path=path, arrays=arrays, provenance=prov)


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    if len(a) != len(b):
        return f"{len(a)} entries vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"entry {i} is {x!r} in the cache but {y!r} in the EEG data"
    return "identical"


def check_against_metadata(cache: FeatureCache, meta: ImageMetadata) -> None:
    """Refuse a cache whose image order or concept list does not match the EEG data's metadata."""
    p = cache.provenance
    checks = (
        ("train_images", image_ids(meta, "training"), "training image order"),
        ("test_images", image_ids(meta, "test"), "test image order"),
        ("train_concepts", list(meta.train_concepts), "training concept list"),
        ("test_concepts", list(meta.test_concepts), "test concept list"),
    )
    for key, expected, what in checks:
        have = list(p.get(key, []))
        if have != expected:
            raise UserError(
                f"features: {cache.path} does not match the EEG data's {what} "
                f"({_first_difference(have, expected)}); rebuild the cache from the same image_metadata"
            )
