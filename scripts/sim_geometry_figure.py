"""Generated vs real feature geometry of the simulated subject: statistics and a figure.

Draws the default generated geometry (``hmavd.sim_features``, 200 test concepts) and, when given, reads
real test-image features and their concept centres (e.g. the CLIP ViT-L/14 files of NICE-EEG a user has),
prints the summary figures of both side by side and writes a PNG: the pairwise-cosine histogram of the
test images and their eigen-spectrum (log-log). Nothing real is copied anywhere; only the figure and the
printed summary are produced::

    .venv/bin/python scripts/sim_geometry_figure.py \\
        --real-images /data/clip_vitl14_test_images.npy \\
        --real-centers /data/clip_vitl14_test_centers.npy --out docs/img/sim_geometry.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hmavd.sim_features import GeometryParams, eigen_spectrum, generate_concepts, geometry_statistics
from hmavd.sim_inputs import load_reference_features

LABELS = {
    "pairwise_cosine_mean": "pairwise cosine, mean",
    "pairwise_cosine_std": "pairwise cosine, std",
    "center_cosine_mean": "image-centre cosine, mean",
    "center_cosine_std": "image-centre cosine, std",
    "center_pairwise_cosine_mean": "centre-centre cosine, mean",
    "center_top1": "centre -> image 200-way top-1",
    "spectrum_top10": "variance share of top 10 PCs",
    "spectrum_slope": "log-log spectrum slope (PCs 1-150)",
    "participation_ratio": "participation ratio",
}


def _figure(sets: dict[str, np.ndarray], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    bins = np.linspace(0.1, 1.0, 61)
    for (name, img), colour in zip(sets.items(), ("tab:blue", "tab:orange")):
        img = img / np.linalg.norm(img, axis=1, keepdims=True)
        cos = (img @ img.T)[np.triu_indices(len(img), 1)]  # distinct pairs
        ax1.hist(cos, bins=bins, density=True, histtype="step", lw=1.8, color=colour, label=name)
        lam = eigen_spectrum(img)[: len(img) - 1]
        ax2.loglog(np.arange(1, len(lam) + 1), lam, color=colour, lw=1.8, label=name)
    ax1.set(xlabel="cosine between two test images", ylabel="density", title="pairwise cosine (200 test images)")
    ax2.set(xlabel="principal component", ylabel="variance share", title="eigen-spectrum (200 test images)")
    for ax in (ax1, ax2):
        ax.legend(frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real-images", help="real test-image features .npy (N, D) or (N, 1, D), or a feature cache")
    p.add_argument("--real-centers", help="their concept centres .npy (N, D)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("docs/img/sim_geometry.png"))
    args = p.parse_args(argv)
    ((_, img, ctr),) = generate_concepts(np.random.default_rng(args.seed), [200], [1], GeometryParams())
    stats = {"generated": geometry_statistics(img, ctr)}
    sets = {"generated": img}
    if args.real_images:
        ref = load_reference_features(args.real_images, args.real_centers)
        stats["real"] = geometry_statistics(ref.test_image, ref.test_center)
        sets["real"] = ref.test_image
    names = list(stats)
    sys.stdout.write("| figure | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n")
    for key, label in LABELS.items():
        cells = [f"{stats[n][key]:.3f}" if key in stats[n] else "" for n in names]
        sys.stdout.write(f"| {label} | " + " | ".join(cells) + " |\n")
    _figure(sets, args.out)
    sys.stdout.write(f"figure: {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
