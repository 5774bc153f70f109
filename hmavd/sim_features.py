"""Feature geometry of the simulated subject: generated (parametric, seeded) or fitted to real features.

Pure functions of arrays and a seeded ``numpy.random.Generator``. The parametric model and its few numbers
are documented in ``docs/simulated-subject.md`` ("Feature geometry"). In short, in ``D`` = 768 dimensions:

- every feature shares a common direction ``m`` (CLIP features are crowded: mean pairwise cosine ≈ 0.54);
- concept prototypes ``p_c = a·m + b·g_c``, with ``g_c`` a mix of a superordinate-category part and a
  concept part, both Gaussian with a power-law eigen-spectrum ``λ_i ∝ i^-decay`` in a random orthonormal
  basis, cut off after ``spectrum_rank`` directions;
- an image is ``normalize(p_c + w·s_i·h_i)``, ``h_i`` drawn from the same spectrum and ``s_i`` a per-image
  log-normal spread (some images are atypical of their concept);
- a concept "centre" is the (unnormalised) mean of ``center_images`` other images of the concept.

``a``, ``b``, ``w`` are solved from the two target figures ``pairwise_cosine`` (mean cosine of two
images of different concepts) and ``center_cosine`` (mean cosine of an image with its own concept's
centre), then calibrated on a sample so the generated features hit them.

With real features (``hmavd-simulate features_from=...``), the test images and centres are the real rows
and training prototypes / images are drawn from low-rank Gaussians fitted to them
(:func:`fit_low_rank_gaussian`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "FEATURE_DIM",
    "GeometryParams",
    "ReferenceFeatures",
    "FeatureGeometry",
    "SimulatedFeatures",
    "l2_normalize",
    "power_law_spectrum",
    "solve_variances",
    "generate_concepts",
    "fit_low_rank_gaussian",
    "sample_low_rank_gaussian",
    "simulate_features",
    "geometry_statistics",
    "eigen_spectrum",
]

#: Feature dimension of the generated geometry (that of CLIP ViT-L/14).
FEATURE_DIM = 768


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / ||x||`` along ``axis`` (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


# --------------------------------------------------------------------------- generated geometry


@dataclass(frozen=True)
class GeometryParams:
    """The few numbers of the generated feature geometry (docs/simulated-subject.md).

    Attributes
    ----------
    dim : int
        Feature dimension ``D``.
    pairwise_cosine : float
        Target mean cosine between images of different concepts (real CLIP ViT-L/14 test images: 0.54).
    center_cosine : float
        Target mean cosine of an image with its own concept's centre (real: 0.89).
    spectrum_decay : float
        Exponent of the power-law eigen-spectrum ``λ_i ∝ i^-decay`` of every Gaussian part.
    spectrum_rank : int
        Number of non-zero eigenvalues (the spectrum is cut off after it; at most ``dim``).
    n_categories : int
        Superordinate categories the concepts are grouped into (animals, tools, food, ...).
    category_share : float
        Share of the between-concept variance that a concept shares with its category, in [0, 1).
    image_spread : float
        Standard deviation of the log of each image's within-concept scale (0: all images equally typical).
    center_images : int
        Images averaged into a concept centre.
    """

    dim: int = FEATURE_DIM
    pairwise_cosine: float = 0.54
    center_cosine: float = 0.89
    spectrum_decay: float = 0.6
    spectrum_rank: int = 320
    n_categories: int = 20
    category_share: float = 0.55
    image_spread: float = 0.3
    center_images: int = 12


def power_law_spectrum(dim: int, decay: float, rank: int | None = None) -> np.ndarray:
    """Eigenvalues ``i^-decay`` for i = 1..rank, 0 beyond, scaled to sum 1: (dim,) float64."""
    lam = np.arange(1, dim + 1, dtype=np.float64) ** -float(decay)
    lam[max(1, min(rank or dim, dim)) :] = 0.0
    return lam / lam.sum()


def solve_variances(pairwise_cosine: float, center_cosine: float, center_images: int) -> tuple[float, float, float]:
    """Common, between-concept and within-concept variances ``(a², b², w²)``, summing to 1.

    High-dimensional approximation: two images of different concepts have cosine ``a²``; an image and
    the mean of ``n`` other images of its concept have cosine ``s / sqrt(s + w²/n)`` with ``s = a² + b²``,
    solved for ``s`` given ``center_cosine``.
    """
    q = center_cosine**2
    s = (q * (1 - 1 / center_images) + np.sqrt((q * (1 - 1 / center_images)) ** 2 + 4 * q / center_images)) / 2
    s = float(np.clip(s, pairwise_cosine + 1e-3, 1 - 1e-3))
    return float(pairwise_cosine), s - float(pairwise_cosine), 1.0 - s


@dataclass(frozen=True)
class _Generator:
    """Fixed random parts of one generated geometry (drawn once per seed)."""

    common: np.ndarray  # (D,) unit common direction
    basis: np.ndarray  # (D, D) orthonormal columns
    sqrt_lam: np.ndarray  # (D,) square roots of the spectrum
    categories: np.ndarray  # (n_categories, D) category parts
    params: GeometryParams

    def gaussian(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` rows of the power-law Gaussian, unit expected squared norm: (n, D)."""
        return (rng.standard_normal((n, len(self.sqrt_lam))) * self.sqrt_lam) @ self.basis.T

    def concepts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Unit-variance concept parts ``g_c``: (n, D)."""
        gam = self.params.category_share
        cat = self.categories[rng.integers(len(self.categories), size=n)]  # (n, D)
        return np.sqrt(gam) * cat + np.sqrt(1 - gam) * self.gaussian(rng, n)

    def images(self, rng: np.random.Generator, protos: np.ndarray, w: float, variation: float = 1.0) -> np.ndarray:
        """One unit-norm image per prototype row: (n, D)."""
        sd = self.params.image_spread
        scale = np.exp(sd * rng.standard_normal((len(protos), 1)) - sd**2)  # (n, 1), E[scale²] = 1
        return l2_normalize(protos + variation * w * scale * self.gaussian(rng, len(protos)))


def _draw_generator(rng: np.random.Generator, params: GeometryParams) -> _Generator:
    d = params.dim
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))  # (D, D) random rotation
    common = l2_normalize(rng.standard_normal(d))
    sqrt_lam = np.sqrt(power_law_spectrum(d, params.spectrum_decay, params.spectrum_rank))
    cats = (rng.standard_normal((max(params.n_categories, 1), d)) * sqrt_lam) @ basis.T  # (n_cat, D)
    return _Generator(common=common, basis=basis, sqrt_lam=sqrt_lam, categories=cats, params=params)


def _sample(
    gen: _Generator,
    rng: np.random.Generator,
    n: int,
    var: tuple[float, float, float],
    n_img: int,
    variation: float = 1.0,
):
    """Prototypes (n, D), ``n_img`` images per concept (n·n_img, D) and centres (n, D)."""
    a2, b2, w2 = var
    protos = np.sqrt(a2) * gen.common + np.sqrt(b2) * gen.concepts(rng, n)  # (n, D)
    images = gen.images(rng, np.repeat(protos, n_img, axis=0), np.sqrt(w2), variation)  # (n·n_img, D)
    k = gen.params.center_images
    centres = gen.images(rng, np.repeat(protos, k, axis=0), np.sqrt(w2)).reshape(n, k, -1).mean(axis=1)
    return protos, images, centres


def _calibrated_variances(gen: _Generator, rng: np.random.Generator, n: int = 300, steps: int = 4):
    """``(a², b², w²)`` adjusted on a sample until its two statistics match the targets (±0.005)."""
    p = gen.params
    rho, cc = p.pairwise_cosine, p.center_cosine
    for _ in range(steps):
        var = solve_variances(rho, cc, p.center_images)
        _, img, ctr = _sample(gen, rng, n, var, 1)
        st = geometry_statistics(img, ctr)
        rho = float(np.clip(rho + p.pairwise_cosine - st["pairwise_cosine_mean"], 0.0, 0.98))
        cc = float(np.clip(cc + p.center_cosine - st["center_cosine_mean"], rho + 0.01, 0.999))
    return solve_variances(rho, cc, p.center_images)


def generate_concepts(
    rng: np.random.Generator,
    n_concepts: list[int],
    n_images: list[int],
    params: GeometryParams,
    variation: float = 1.0,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Draw several concept sets from one generated geometry.

    Parameters
    ----------
    n_concepts, n_images : list of int
        For each set, its number of concepts and of images per concept.
    variation : float
        Multiplies the within-concept variation of the images (not of the centres).

    Returns
    -------
    list of (prototypes (n, D), images (n·n_img, D) unit norm, concept-major, centres (n, D) unnormalised)
    """
    gen = _draw_generator(rng, params)
    var = _calibrated_variances(gen, rng)
    log.debug("generated geometry variances common/between/within: %.3f/%.3f/%.3f", *var)
    return [_sample(gen, rng, n, var, k, variation) for n, k in zip(n_concepts, n_images)]


# --------------------------------------------------------------------------- fitted geometry


@dataclass(frozen=True)
class FeatureGeometry:
    """A Gaussian with mean + low-rank covariance + isotropic rest, fitted to feature rows.

    Attributes
    ----------
    mean : ndarray, shape (D,)
    basis : ndarray, shape (r, D)
        Orthonormal principal directions.
    scales : ndarray, shape (r,)
        Standard deviation along each direction.
    resid_std : float
        Per-dimension standard deviation of the rest.
    """

    mean: np.ndarray
    basis: np.ndarray
    scales: np.ndarray
    resid_std: float


def fit_low_rank_gaussian(x: np.ndarray, rank: int, center: bool = True) -> FeatureGeometry:
    """Fit :class:`FeatureGeometry` to rows ``x`` (N, D): top-``rank`` PCs plus an isotropic rest."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    mean = x.mean(axis=0) if center else np.zeros(d)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)  # s: (min(N, D),)
    rank = int(min(rank, len(s) - 1))
    var = s**2 / max(n - 1, 1)
    resid = float(np.sqrt(var[rank:].sum() / max(d - rank, 1)))
    return FeatureGeometry(mean=mean, basis=vt[:rank], scales=np.sqrt(var[:rank]), resid_std=resid)


def sample_low_rank_gaussian(rng: np.random.Generator, geom: FeatureGeometry, n: int) -> np.ndarray:
    """Draw ``n`` rows from a :class:`FeatureGeometry`: (n, D) float64."""
    r, d = geom.basis.shape
    coef = rng.standard_normal((n, r)) * geom.scales  # (n, r)
    return geom.mean + coef @ geom.basis + geom.resid_std * rng.standard_normal((n, d))


@dataclass(frozen=True)
class ReferenceFeatures:
    """Real features a user points at (``features_from=``), rows in sorted test-concept order.

    Attributes
    ----------
    test_image : ndarray, shape (N, D)
        One image feature per test concept.
    prototypes : ndarray, shape (M, D)
        Concept-level features the training prototypes are fitted to (the test centres, or per-concept
        means of real training images).
    variation : ndarray, shape (L, D)
        Within-concept deviations (image − its concept's centre or mean) the image variation is fitted to.
    test_center : ndarray or None, shape (N, D)
        Real test centres, when the source has them.
    source : str
        Where they came from (for the provenance).
    test_concepts : tuple of str or None
        The concept folder of each test row, when the source names them (a feature cache does).
    """

    test_image: np.ndarray
    prototypes: np.ndarray
    variation: np.ndarray
    test_center: np.ndarray | None
    source: str
    test_concepts: tuple[str, ...] | None = None


# --------------------------------------------------------------------------- both


@dataclass(frozen=True)
class SimulatedFeatures:
    """Image/text features of the simulated stimuli (float64, L2-normalised rows except centers)."""

    train_image: np.ndarray  # (n_train_images, D)
    test_image: np.ndarray  # (n_test_images, D)
    train_text: np.ndarray  # (n_train_concepts, D)
    test_text: np.ndarray  # (n_test_concepts, D)
    test_center: np.ndarray | None  # (n_test_concepts, D) not normalised; None if a real source has none
    train_prototypes: np.ndarray  # (n_train_concepts, D)


def _text(rng: np.random.Generator, protos: np.ndarray, gap: np.ndarray, text_noise: float, modality_gap: float):
    """``normalize(normalize(p) + text_noise·e + modality_gap·g)``, ``e`` of expected norm 1: (n, D)."""
    noise = rng.standard_normal(protos.shape) / np.sqrt(protos.shape[1])  # (n, D)
    return l2_normalize(l2_normalize(protos) + text_noise * noise + modality_gap * gap)


def simulate_features(
    rng: np.random.Generator,
    n_train_concepts: int,
    n_images_per_concept: int,
    n_test_concepts: int,
    prototype_rank: int = 64,
    image_variation: float = 1.0,
    text_noise: float = 0.5,
    modality_gap: float = 0.5,
    *,
    reference: ReferenceFeatures | None = None,
    geometry: GeometryParams | None = None,
) -> SimulatedFeatures:
    """Image and text features of the simulated stimuli (see the module docstring).

    Parameters
    ----------
    prototype_rank : int
        Rank of the Gaussians fitted to ``reference`` (unused by the generated geometry).
    image_variation : float
        Multiplies the within-concept variation of the training images.
    reference : ReferenceFeatures, optional
        Real features: the test images (and centres) are its rows, training features are fitted to it.
        None (default): everything from the generated geometry ``geometry`` (default :class:`GeometryParams`).
    """
    d = reference.test_image.shape[1] if reference is not None else (geometry or GeometryParams()).dim
    if reference is None:
        (tr_p, tr_img, _), (te_p, te_img, te_ctr) = generate_concepts(
            rng,
            [n_train_concepts, n_test_concepts],
            [n_images_per_concept, 1],
            geometry or GeometryParams(),
            image_variation,
        )
        te_text_src = te_p
    else:
        proto_geom = fit_low_rank_gaussian(reference.prototypes, prototype_rank)
        var_geom = fit_low_rank_gaussian(reference.variation, prototype_rank, center=False)
        tr_p = sample_low_rank_gaussian(rng, proto_geom, n_train_concepts)  # (Ntc, D)
        var = sample_low_rank_gaussian(rng, var_geom, n_train_concepts * n_images_per_concept)  # (Nti, D)
        tr_img = l2_normalize(np.repeat(tr_p, n_images_per_concept, axis=0) + image_variation * var)
        te_img = l2_normalize(reference.test_image[:n_test_concepts])
        te_ctr = None if reference.test_center is None else reference.test_center[:n_test_concepts].copy()
        te_text_src = te_ctr if te_ctr is not None else te_img
    gap = l2_normalize(rng.standard_normal(d))  # (D,) shared modality-gap direction
    return SimulatedFeatures(
        train_image=tr_img,
        test_image=te_img,
        train_text=_text(rng, tr_p, gap, text_noise, modality_gap),
        test_text=_text(rng, te_text_src, gap, text_noise, modality_gap),
        test_center=te_ctr,
        train_prototypes=tr_p,
    )


# --------------------------------------------------------------------------- statistics


def eigen_spectrum(x: np.ndarray) -> np.ndarray:
    """Eigenvalues of the sample covariance of rows ``x`` (N, D), descending, as fractions of their sum."""
    x = np.asarray(x, dtype=np.float64)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)  # (min(N, D),)
    v = s**2
    return v / v.sum()


def geometry_statistics(images: np.ndarray, centres: np.ndarray | None = None) -> dict[str, float]:
    """Summary figures of a feature geometry (the ones docs/simulated-subject.md compares).

    Parameters
    ----------
    images : ndarray, shape (N, D)
        One image per concept.
    centres : ndarray, shape (N, D), optional
        Each concept's centre (same row order).

    Returns
    -------
    dict
        ``pairwise_cosine_mean`` / ``_std`` (different images), ``participation_ratio`` and
        ``spectrum_top10`` (variance share of the 10 largest eigenvalues), ``spectrum_slope``
        (log-log slope of eigenvalues 1..min(150, N-1)); with centres: ``center_cosine_mean`` / ``_std``,
        ``center_pairwise_cosine_mean`` and ``center_top1`` (centre → image 200-way nearest-neighbour accuracy).
    """
    img = l2_normalize(images)
    n = len(img)
    off = ~np.eye(n, dtype=bool)
    cos = img @ img.T  # (N, N)
    lam = eigen_spectrum(img)[: n - 1]
    k = min(150, n - 1)
    slope = float(np.polyfit(np.log(np.arange(1, k + 1)), np.log(lam[:k]), 1)[0])
    out = {
        "pairwise_cosine_mean": float(cos[off].mean()),
        "pairwise_cosine_std": float(cos[off].std()),
        "participation_ratio": float(lam.sum() ** 2 / np.sum(lam**2)),
        "spectrum_top10": float(lam[:10].sum()),
        "spectrum_slope": slope,
    }
    if centres is not None:
        ctr = l2_normalize(centres)
        match = np.sum(img * ctr, axis=1)  # (N,)
        out["center_cosine_mean"] = float(match.mean())
        out["center_cosine_std"] = float(match.std())
        out["center_pairwise_cosine_mean"] = float((ctr @ ctr.T)[off].mean())
        out["center_top1"] = float(np.mean(np.argmax(ctr @ img.T, axis=1) == np.arange(n)))
    return out
