"""Region ablation (paper §4.5, Fig. 7B): accuracy drop when one electrode group is removed.

One model is trained with all channels and one per region of :data:`hmavd.channels.REGIONS`
(occipital, temporal, parietal, central, frontal) with that group removed through the training
config's ``exclude_channels`` (applied to training and test EEG alike). The drop is
``accuracy(all channels) − accuracy(region removed)`` in percentage points; the paper reports
occipital −4.6, parietal/central ≈ −2, temporal −1 and frontal +0.25.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..channels import REGIONS
from ..errors import UserError
from .common import Scorer, new_figure, save_figure, write_csv

log = logging.getLogger(__name__)

__all__ = ["region_conditions", "run_regions", "accuracy_drops", "plot_regions", "write_regions", "COLUMNS"]

COLUMNS = ("condition", "removed", "n_removed", "top1", "top5", "drop_top1", "drop_top5")


def region_conditions(regions: Sequence[str], available: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``[{"condition": "all", "removed": ""}, {"condition": "-occipital", "removed": "occipital"}, …]``.

    ``n_removed`` counts the region's channels present in ``available`` (all of the region when None).
    """
    out: list[dict[str, Any]] = [{"condition": "all", "removed": "", "n_removed": 0}]
    for reg in regions:
        key = reg.lower()
        if key not in REGIONS:
            raise UserError(f"regions: {reg!r} is not one of {sorted(REGIONS)}; pick from those")
        chans = REGIONS[key]
        n = len(chans) if available is None else sum(c in available for c in chans)
        if n == 0:
            raise UserError(f"regions: {key!r} has no channel among the {len(available or ())} trained on; drop it")
        out.append({"condition": f"-{key}", "removed": key, "n_removed": n})
    return out


def accuracy_drops(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``drop_top1``/``drop_top5`` = all − removed, in percentage points (0 for the "all" row)."""
    ref = next((r for r in rows if r["condition"] == "all"), None)
    if ref is None:
        raise ValueError("region results need the 'all' channels row")
    out = []
    for r in rows:
        out.append(
            {
                **r,
                "drop_top1": 100 * (float(ref["top1"]) - float(r["top1"])),
                "drop_top5": 100 * (float(ref["top5"]) - float(r["top5"])),
            }
        )
    return out


def run_regions(
    scorer: Scorer, regions: Sequence[str], available: Sequence[str] | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """Train/score the all-channel model and one per removed region; rows with :data:`COLUMNS`.

    ``available``: the channels the models are trained on (for ``n_removed`` and to refuse a region
    with none of them before any training starts).
    """
    from tqdm.auto import tqdm

    rows = []
    for cond in tqdm(region_conditions(regions, available), desc="regions", disable=not progress):
        ov = {"exclude_channels": [cond["removed"]] if cond["removed"] else []}
        res = scorer(f"regions_{cond['condition'].lstrip('-') or 'all'}", ov)
        rows.append({**cond, **res})
    return accuracy_drops(rows)


#: Fig. 7B as read from the paper's text (§4.5): top-1 change (percentage points) when a region is removed.
PAPER_TOP1_CHANGE_PP = {"occipital": -4.6, "temporal": -1.0, "parietal": -2.0, "central": -2.0, "frontal": 0.25}


def plot_regions(
    rows: Sequence[dict[str, Any]], path: str | Path, context: str = "", n_test: int | None = None
) -> Path:
    """Fig. 7B: bar chart of the top-1/top-5 change (percentage points) per removed region.

    The paper's top-1 changes (:data:`PAPER_TOP1_CHANGE_PP`, 200-way, 10 subjects) are drawn as black
    diamonds for reference; ``n_test`` (test images) gives the accuracy step of one image.
    """
    rs = [r for r in rows if r["condition"] != "all"]
    ref = next(r for r in rows if r["condition"] == "all")
    fig = new_figure(6.4, 3.8)
    ax = fig.subplots()
    x = list(range(len(rs)))
    w = 0.38
    ax.bar([i - w / 2 for i in x], [-float(r["drop_top1"]) for r in rs], w, label="top-1 change")
    ax.bar([i + w / 2 for i in x], [-float(r["drop_top5"]) for r in rs], w, label="top-5 change")
    paper = [
        (i - w / 2, PAPER_TOP1_CHANGE_PP[r["removed"]]) for i, r in zip(x, rs) if r["removed"] in PAPER_TOP1_CHANGE_PP
    ]
    if paper:
        ax.plot(*zip(*paper), "kD", ms=5, label="paper top-1 change (200-way)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [f"{r['removed']}\n({r['n_removed']} ch)" for r in rs])
    ax.set_xlabel("electrode group removed (training and test)")
    ax.set_ylabel("accuracy change vs. all channels (pp)")
    ax.grid(axis="y", alpha=0.3)
    base = f"all channels: top-1 {100 * float(ref['top1']):.1f} %, top-5 {100 * float(ref['top5']):.1f} %"
    if n_test:
        base += f"; one test image = {100 / n_test:.2g} pp"
    ax.set_title(base, fontsize=8)
    fig.suptitle("Region ablation (Fig. 7B)" + (f"\n{context}" if context else ""), fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_regions(rows: Sequence[dict[str, Any]], out_dir: str | Path, **plot_kw: Any) -> tuple[Path, Path]:
    """``regions.csv`` and ``regions.png`` in ``out_dir`` (``plot_kw``: see :func:`plot_regions`)."""
    out_dir = Path(out_dir)
    return write_csv(out_dir / "regions.csv", rows, COLUMNS), plot_regions(rows, out_dir / "regions.png", **plot_kw)
