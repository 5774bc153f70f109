"""Real inputs of ``hmavd-simulate``, read only from paths the user gives (``features_from=``, ``concepts_from=``).

The project ships no real features or concept lists; by default the simulator generates both
(:mod:`hmavd.sim_features`, :mod:`hmavd.data.concepts`). These thin shells read a user's files into the
arrays the simulator takes, with one-line errors naming the argument, the value and the fix.

``features_from`` is either

- a feature cache folder written by ``hmavd-features`` (``features.safetensors`` + ``provenance.json``):
  its test image features, and its test centres when it has them; otherwise the concept geometry is fitted
  to per-concept means of its training image features; or
- a ``.npy`` file of test image features, shape (N, D) or (N, 1, D) (as NICE-EEG ships them), rows in
  sorted test-concept folder order, with ``centers_from=`` a ``.npy`` of the concepts' centre features (N, D).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .data.thingseeg2 import ImageMetadata, load_image_metadata
from .errors import UserError
from .sim_features import ReferenceFeatures

log = logging.getLogger(__name__)

__all__ = ["load_reference_features", "load_concepts_from"]

_FIX = "give a feature cache folder written by hmavd-features, or a test-image .npy with centers_from=<centres .npy>"


def _load_rows(path: Path, arg: str) -> np.ndarray:
    """A float (N, D) array from a ``.npy`` (an (N, 1, D) array is squeezed); never unpickles."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"{arg}: {path} is not a readable numeric .npy ({type(err).__name__}); {_FIX}") from None
    if x.ndim == 3 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 2 or x.shape[0] < 2 or not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)):
        raise UserError(
            f"{arg}: {path} holds a {x.dtype} array of shape {x.shape}; expected finite float rows (N, D) or (N, 1, D)"
        )
    return x.astype(np.float64)


def _from_training_images(cache, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-concept means of the cache's training images (M, D) and deviations from them (L, D)."""
    ids = list(cache.provenance.get("train_images", []))
    train = np.asarray(cache.image_features("training"), dtype=np.float64)
    if len(ids) != len(train) or len(train) < 2:
        raise UserError(f"features_from: {cache.path} has no test centres and no usable training images; {_FIX}")
    concepts = np.array([i.split("/", 1)[0] for i in ids])
    _, inverse, counts = np.unique(concepts, return_inverse=True, return_counts=True)
    if counts.max() < 2:
        raise UserError(
            f"features_from: {cache.path} has no test centres and one training image per concept; "
            "add centres (hmavd-features --centers) or give centers_from=<centres .npy>"
        )
    means = np.zeros((len(counts), train.shape[1]))
    np.add.at(means, inverse, train)
    means /= counts[:, None]  # (M, D)
    keep = counts[inverse] > 1
    return means[counts > 1], (train - means[inverse])[keep]


def load_reference_features(features_from: str | Path, centers_from: str | Path | None = None) -> ReferenceFeatures:
    """Read the real features of ``features_from`` (see the module docstring) into a :class:`ReferenceFeatures`."""
    from .features.cache import load_feature_cache

    path = Path(features_from).expanduser()
    if not path.exists():
        raise UserError(f"features_from: {path} does not exist; {_FIX}")
    cache = None
    if path.is_dir():
        cache = load_feature_cache(path)
        test = np.asarray(cache.image_features("test"), dtype=np.float64)
        centres = cache.center_features()
        centres = None if centres is None else np.asarray(centres, dtype=np.float64)
    elif path.suffix == ".npy":
        test, centres = _load_rows(path, "features_from"), None
    else:
        raise UserError(f"features_from: {path} is neither a folder nor a .npy file; {_FIX}")
    if centers_from:
        centres = _load_rows(Path(centers_from).expanduser(), "centers_from")
    if centres is not None and centres.shape != test.shape:
        raise UserError(
            f"centers_from: centres of shape {centres.shape} do not match the {test.shape} test features of "
            f"{path}; give one centre per test image, same order"
        )
    if centres is not None:
        protos, variation = centres, test - centres
    elif cache is not None:
        protos, variation = _from_training_images(cache, test)
    else:
        raise UserError(
            f"centers_from: missing for the .npy features_from={path}; name the test concepts' centres .npy"
        )
    log.info("real features from %s: %d test images, D=%d", path, len(test), test.shape[1])
    names = cache.provenance.get("test_concepts") if cache is not None else None
    return ReferenceFeatures(
        test_image=test,
        prototypes=protos,
        variation=variation,
        test_center=centres,
        source=str(path),
        test_concepts=tuple(names) if names else None,
    )


def load_concepts_from(path: str | Path) -> ImageMetadata:
    """A user's ThingsEEG2 ``image_metadata.npy`` (or its ``.npz``/``.json`` twin) for ``concepts_from=``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(
            f"concepts_from: {p} does not exist; name a ThingsEEG2 image_metadata.npy (or leave it empty for "
            "generated names)"
        )
    meta = load_image_metadata(p)
    if len(meta.test_concepts) != len(meta.test_img_concepts):
        raise UserError(f"concepts_from: {p} lists more than one test image per concept; use ThingsEEG2's metadata")
    return meta
