"""Collapse check of a target bank: refuse embeddings that all point the same way.

A bank is *collapsed* when its rows have lost the differences between images: the random pairs are
almost parallel (a published B32 cache once had a median cosine of 0.994 between random images and cost
27 points of top-1), or all rows lie in one or two directions. Two numbers measure it:

* **median cosine** of all distinct pairs among (at most) 1024 random rows (L2-normalised, not centred);
* **effective rank** (Roy & Vetterli 2007) of the same row-normalised, uncentred rows:
  ``exp(H(p))`` with ``p = s / sum(s)`` its singular values; 1 for rows that share one direction,
  ``min(N, D)`` for an isotropic bank.

Defaults (:data:`MAX_MEDIAN_COSINE`, :data:`MIN_EFFECTIVE_RANK`): real CLIP ViT-L/14 image features of the
200 ThingsEEG2 test images have median cosine 0.54 and effective rank 148; the collapsed published cache had
0.994. Intermediate ViT layers are more anisotropic than the final projection, hence the permissive 0.98.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "MAX_MEDIAN_COSINE",
    "MIN_EFFECTIVE_RANK",
    "CollapseStats",
    "median_pair_cosine",
    "effective_rank",
    "collapse_stats",
    "check_collapse",
]

MAX_MEDIAN_COSINE = 0.98
MIN_EFFECTIVE_RANK = 2.0


@dataclass(frozen=True)
class CollapseStats:
    """Collapse statistics of one (N, D) bank."""

    n: int
    median_cosine: float
    effective_rank: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unit_sample(x: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """At most ``max_rows`` random rows of ``x`` (N, D), each L2-normalised, float32 (n, D)."""
    x = np.asarray(x)
    if len(x) > max_rows:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_rows, replace=False))]
    u = x.astype(np.float32)  # (n, D)
    return u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)


def _median_offdiag(gram: np.ndarray) -> float:
    i, j = np.triu_indices(len(gram), 1)
    return float(np.median(gram[i, j])) if len(i) else float("nan")


def _erank(gram: np.ndarray) -> float:
    s = np.sqrt(np.clip(np.linalg.eigvalsh(gram.astype(np.float64)), 0.0, None))  # singular values of the rows
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def median_pair_cosine(x: np.ndarray, max_rows: int = 1024, seed: int = 0) -> float:
    """Median cosine similarity over all distinct pairs of ``max_rows`` random rows of ``x`` (N, D).

    With N <= ``max_rows`` every pair of rows is used. Returns NaN for N < 2.
    """
    u = _unit_sample(x, max_rows, seed)  # (n, D)
    return _median_offdiag(u @ u.T)


def effective_rank(x: np.ndarray, max_rows: int = 1024, seed: int = 0) -> float:
    """Roy–Vetterli effective rank ``exp(-sum p log p)``, ``p`` = normalised singular values of the unit rows.

    At most ``max_rows`` random rows are used; the singular values come from the eigenvalues of their Gram
    matrix (n × n), much faster than the SVD of a wide 1024 × 12288 level bank.
    """
    u = _unit_sample(x, max_rows, seed)  # (n, D)
    return _erank(u @ u.T)


def collapse_stats(x: np.ndarray, seed: int = 0, max_rows: int = 1024) -> CollapseStats:
    """Median pair cosine and effective rank of a bank ``x`` (N, D), from one sample of rows."""
    u = _unit_sample(x, max_rows, seed)  # (n, D)
    gram = u @ u.T  # (n, n) cosines
    return CollapseStats(len(x), _median_offdiag(gram), _erank(gram))


def check_collapse(
    x: np.ndarray,
    what: str,
    max_median_cosine: float = MAX_MEDIAN_COSINE,
    min_effective_rank: float = MIN_EFFECTIVE_RANK,
) -> CollapseStats:
    """Refuse a collapsed bank with one line that says why; return its statistics otherwise.

    Parameters
    ----------
    x : ndarray
        (N, D) embeddings.
    what : str
        Names the bank in the error (e.g. ``"features: data/features/rn50 train_image_features"``).
    max_median_cosine, min_effective_rank : float
        Thresholds (module docstring). Banks of fewer than 3 rows are not judged.
    """
    st = collapse_stats(x)
    if st.n < 3:
        return st
    fix = (
        "re-extract it from the original model weights (hmavd-features extract), or, if this geometry is "
        "intended, pass collapse_check=false when building it"
    )
    if st.median_cosine > max_median_cosine:
        raise UserError(
            f"{what}: collapsed bank (median cosine of random pairs {st.median_cosine:.4f} > "
            f"{max_median_cosine}; effective rank {st.effective_rank:.1f}); {fix}"
        )
    if st.effective_rank < min_effective_rank:
        raise UserError(
            f"{what}: collapsed bank (effective rank {st.effective_rank:.2f} < {min_effective_rank}; "
            f"median cosine {st.median_cosine:.4f}); {fix}"
        )
    return st
