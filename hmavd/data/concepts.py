"""Concept folders of the simulated subject: generated names, or a user's ThingsEEG2 metadata.

The project ships no concept lists. The simulator names its concepts ``concept_0001`` … ``concept_1854``
(as many as THINGS has), holds out every 9th one as a test concept (200 test, 1654 training concepts, the
ThingsEEG2 split sizes) and numbers both sets as ThingsEEG2 numbers its folders (:func:`number_folders`).
With ``hmavd-simulate concepts_from=<image_metadata.npy>`` the names come from the user's metadata instead
(:func:`hmavd.data.thingseeg2.load_image_metadata`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from ..errors import UserError
from .thingseeg2 import ImageMetadata, concept_name

__all__ = [
    "N_CONCEPTS",
    "N_TRAIN_CONCEPTS",
    "N_TEST_CONCEPTS",
    "number_folders",
    "generated_concept_names",
    "train_concepts",
    "test_concepts",
    "test_image_file",
    "select_concepts",
    "test_image_files",
    "make_image_metadata",
]

#: Concepts in THINGS; ThingsEEG2 splits them into 1654 training and 200 test concepts.
N_CONCEPTS = 1854
N_TRAIN_CONCEPTS = 1654
N_TEST_CONCEPTS = 200
_TEST_EVERY = 9  # concept_0009, concept_0018, ... are test concepts: 200 of the 1854


def number_folders(names: Iterable[str]) -> tuple[str, ...]:
    """ThingsEEG2 folder names: ``names`` in plain code-point order, numbered ``00001_`` … (5 digits).

    ThingsEEG2 numbers its training folders in Python's default string order (``sorted``), not in the
    THINGS table's order nor case-insensitively: ``camera1`` < ``camera_lens`` and ``hot-air_balloon`` <
    ``hot_tub`` < ``hotdog`` (``'-'`` < ``'1'`` < ``'_'`` < letters). Duplicates are refused.
    """
    ordered = sorted(names)
    if len(set(ordered)) != len(ordered):
        raise ValueError("concept names must be unique")
    return tuple(f"{i:05d}_{n}" for i, n in enumerate(ordered, start=1))


def generated_concept_names(n: int = N_CONCEPTS) -> tuple[str, ...]:
    """``concept_0001`` … ``concept_<n>`` (zero-padded, so code-point order is numeric order)."""
    return tuple(f"concept_{i:04d}" for i in range(1, n + 1))


@functools.cache
def _split() -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = generated_concept_names()
    test = [c for i, c in enumerate(names, start=1) if i % _TEST_EVERY == 0][:N_TEST_CONCEPTS]
    held = set(test)
    return number_folders(c for c in names if c not in held), number_folders(test)


def train_concepts() -> tuple[str, ...]:
    """The 1654 generated training concept folders (``00001_concept_0001`` …), ThingsEEG2 numbering."""
    return _split()[0]


def test_concepts() -> tuple[str, ...]:
    """The 200 generated test concept folders (``00001_concept_0009`` …), disjoint from the training ones."""
    return _split()[1]


def test_image_file(folder: str) -> str:
    """ThingsEEG2-style test image file name of a concept folder: ``00001_concept_0009`` → ``concept_0009_01s.jpg``."""
    return f"{concept_name(folder).replace(' ', '_')}_01s.jpg"


# --------------------------------------------------------------------------- the simulator's selection


def select_concepts(
    n_train: int, n_test: int, source: ImageMetadata | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The first ``n_train`` training and first ``n_test`` test concept folders.

    Generated names (:mod:`hmavd.data.concepts`), or those of ``source``, a user's ThingsEEG2 metadata
    (``concepts_from=``), in its plain sorted folder order.
    """
    tr, te = (train_concepts(), test_concepts()) if source is None else (source.train_concepts, source.test_concepts)
    fix = "lower it" if source is None else "lower it or give a metadata file with more concepts"
    if not 1 <= n_train <= len(tr):
        raise UserError(f"n_train_concepts: {n_train} must be in 1..{len(tr)}; {fix}")
    if not 2 <= n_test <= len(te):
        raise UserError(f"n_test_concepts: {n_test} must be in 2..{len(te)}; {fix}")
    return tr[:n_train], te[:n_test]


def test_image_files(source: ImageMetadata | None = None) -> dict[str, str]:
    """Test image file name of each test concept folder: generated (``concept_0009_01s.jpg``) or ``source``'s."""
    if source is not None:
        return dict(zip(source.test_img_concepts, source.test_img_files))
    return {f: test_image_file(f) for f in test_concepts()}


def _train_files(folder: str, n: int, source: ImageMetadata | None) -> list[str]:
    if source is None:
        stem = concept_name(folder).replace(" ", "_")
        return [f"{stem}_{j + 1:02d}b.jpg" for j in range(n)]
    have = [f for c, f in zip(source.train_img_concepts, source.train_img_files) if c == folder]
    if len(have) < n:
        raise UserError(
            f"n_train_images_per_concept: {n} but the metadata lists {len(have)} training images of {folder}; "
            f"lower it to {len(have)}"
        )
    return have[:n]


def make_image_metadata(
    train_folders: Sequence[str],
    n_images_per_concept: int,
    test_folders: Sequence[str],
    source: ImageMetadata | None = None,
) -> ImageMetadata:
    """ThingsEEG2-style metadata: ``n`` training images per concept, one test image each.

    File names are generated (``concept_0001_01b.jpg`` …, test ``concept_0009_01s.jpg``) or, with
    ``source`` (a user's metadata), its own file names: the first ``n`` training images of each concept.
    """
    tr_c, tr_f = [], []
    for folder in train_folders:
        tr_c.extend([folder] * n_images_per_concept)
        tr_f.extend(_train_files(folder, n_images_per_concept, source))
    files = test_image_files(source)
    return ImageMetadata(
        train_img_concepts=tuple(tr_c),
        train_img_files=tuple(tr_f),
        test_img_concepts=tuple(test_folders),
        test_img_files=tuple(files[f] for f in test_folders),
    )
