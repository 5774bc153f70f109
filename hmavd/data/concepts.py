"""Embedded THINGS / ThingsEEG2 concept lists and real CLIP ViT-L/14 test features.

See ``hmavd/resources/README.md`` for provenance and licences.
"""

from __future__ import annotations

import functools
import importlib.resources

import numpy as np

__all__ = ["train_concepts", "test_concepts", "clip_test_image_features", "clip_test_center_features"]


def _resource(name: str):
    return importlib.resources.files("hmavd") / "resources" / name


@functools.cache
def train_concepts() -> tuple[str, ...]:
    """The 1654 ThingsEEG2 training concept folders (``00001_aardvark`` …), sorted order."""
    return tuple(_resource("thingseeg2_train_concepts_1654.txt").read_text().split())


@functools.cache
def test_concepts() -> tuple[str, ...]:
    """The 200 ThingsEEG2 test concept folders (``00001_aircraft_carrier`` …)."""
    return tuple(_resource("thingseeg2_test_concepts_200.txt").read_text().split())


def clip_test_image_features() -> np.ndarray:
    """Real CLIP ViT-L/14 embeddings of the 200 test images: (200, 768) float32, L2-normalised."""
    with _resource("clip_vitl14_test_images_200x768.npy").open("rb") as fh:
        return np.load(fh, allow_pickle=False)


def clip_test_center_features() -> np.ndarray:
    """Real CLIP ViT-L/14 per-concept "center" features of the 200 test concepts: (200, 768) float32."""
    with _resource("clip_vitl14_test_centers_200x768.npy").open("rb") as fh:
        return np.load(fh, allow_pickle=False)
