"""Concept folders of the simulated subject: generated names, or a user's ThingsEEG2 metadata.

The project ships no concept lists. The simulator names its concepts ``concept_0001`` … ``concept_1854``
(as many as THINGS has), holds out every 9th one as a test concept (200 test, 1654 training concepts, the
ThingsEEG2 split sizes) and numbers both sets as ThingsEEG2 numbers its folders (:func:`number_folders`).
With ``hmavd-simulate concepts_from=<image_metadata.npy>`` the names come from the user's metadata instead
(:func:`hmavd.data.thingseeg2.load_image_metadata`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from .thingseeg2 import concept_name

__all__ = [
    "N_CONCEPTS",
    "N_TRAIN_CONCEPTS",
    "N_TEST_CONCEPTS",
    "number_folders",
    "generated_concept_names",
    "train_concepts",
    "test_concepts",
    "test_image_file",
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
