"""Hyper-parameter sweeps (paper §4.7, Tables 4–5): MCDB's γ and the adapters' reduction ratios.

A sweep is a list of grid entries, each a set of training-config overrides written
``"key=value;key=value"`` (e.g. ``"txt_reduction=16;img_reduction=8"``). One model is trained per
entry; the results are written as a long CSV (one row per entry) and as a table in the paper's layout
(one column per entry, rows Top-1 and Top-5 in %). The packaged configs ``sweep-gamma`` (Table 4:
γ ∈ {0.1, 0.3, 0.5, 0.7, 0.9}) and ``sweep-reduction`` (Table 5: text/image r ∈ {4, 8, 16}²) hold the
paper's grids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import parse_overrides
from ..errors import UserError
from .common import Scorer, new_figure, save_figure, write_csv

log = logging.getLogger(__name__)

__all__ = [
    "parse_grid_entry",
    "entry_label",
    "run_sweep",
    "paper_table",
    "plot_sweep",
    "write_sweep",
    "COLUMNS",
]

COLUMNS = ("sweep", "label", "overrides", "top1", "top5", "paper_top1", "paper_top5")


def parse_grid_entry(entry: str) -> dict[str, Any]:
    """``"txt_reduction=16;img_reduction=8"`` → ``{"txt_reduction": 16, "img_reduction": 8}``."""
    parts = [p.strip() for p in str(entry).split(";") if p.strip()]
    if not parts:
        raise UserError(f"sweep_grid: entry {entry!r} is empty; write key=value[;key=value]")
    return parse_overrides(parts)


def entry_label(overrides: Mapping[str, Any]) -> str:
    """Default column label: the values joined by ``/`` (``{"txt_reduction": 16, "img_reduction": 8}`` → ``16/8``)."""
    return "/".join(str(v) for v in overrides.values())


def run_sweep(
    scorer: Scorer,
    grid: Sequence[str],
    labels: Sequence[str] = (),
    name: str = "sweep",
    progress: bool = True,
    paper: Mapping[str, tuple[float, float]] | None = None,
) -> list[dict[str, Any]]:
    """Train/score one model per grid entry; rows with :data:`COLUMNS` (accuracies as fractions).

    ``paper``: ``{label: (top-1 %, top-5 %)}`` from the paper (Tables 4-5), stored as fractions in
    ``paper_top1``/``paper_top5`` (empty for labels it does not have).
    """
    from tqdm.auto import tqdm

    entries = [parse_grid_entry(e) for e in grid]
    labels = list(labels) or [entry_label(e) for e in entries]
    if len(labels) != len(entries):
        raise UserError(f"sweep_labels: {len(labels)} labels for {len(entries)} grid entries; give one per entry")
    rows = []
    for entry, label, raw in tqdm(list(zip(entries, labels, grid)), desc=f"sweep {name}", disable=not progress):
        run_name = f"{name}_" + "_".join(f"{k}-{v}" for k, v in entry.items())
        res = scorer(run_name, entry)
        p1, p5 = (paper or {}).get(str(label), ("", ""))
        ref = {"paper_top1": p1 / 100 if p1 != "" else "", "paper_top5": p5 / 100 if p5 != "" else ""}
        rows.append({"sweep": name, "label": label, "overrides": raw, **res, **ref})
    return rows


def paper_table(rows: Sequence[Mapping[str, Any]], header: str = "Ratio") -> str:
    """Markdown table in the paper's layout: ``| header | v1 | v2 | … |`` then Top-1 and Top-5 rows (%)."""
    labels = [str(r["label"]) for r in rows]
    lines = [
        "| " + " | ".join([header, *labels]) + " |",
        "|" + "---|" * (len(labels) + 1),
    ]
    for metric, title in (("top1", "Top-1"), ("top5", "Top-5")):
        lines.append("| " + " | ".join([title, *(f"{100 * float(r[metric]):.1f}" for r in rows)]) + " |")
    for metric, title in (("paper_top1", "Paper Top-1"), ("paper_top5", "Paper Top-5")):
        if any(r.get(metric) not in (None, "") for r in rows):
            vals = [f"{100 * float(r[metric]):.1f}" if r.get(metric) not in (None, "") else "–" for r in rows]
            lines.append("| " + " | ".join([title, *vals]) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    header: str = "Ratio",
    title: str = "",
    chance: float | None = None,
) -> Path:
    """Top-1/top-5 (%) per grid entry, best top-1 entry marked; the paper's values as hollow markers.

    ``chance``: top-1 chance level as a fraction (1 / number of test images).
    """
    fig = new_figure(max(6.0, 0.6 * len(rows) + 3.0), 3.6)
    ax = fig.subplots()
    x = list(range(len(rows)))
    for i, (metric, style) in enumerate((("top1", "o-"), ("top5", "s--"))):
        y = [100 * float(r[metric]) for r in rows]
        ax.plot(x, y, style, color=f"C{i}", label=f"{metric.replace('top', 'top-')} (this run)")
        for xi, yi in zip(x, y):
            ax.annotate(f"{yi:.1f}", (xi, yi), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=6)
        paper = [
            (xi, 100 * float(r[f"paper_{metric}"]))
            for xi, r in zip(x, rows)
            if r.get(f"paper_{metric}") not in (None, "")
        ]
        if paper:
            ax.plot(
                *zip(*paper),
                style[0],
                mfc="none",
                color=f"C{i}",
                alpha=0.7,
                label=f"{metric.replace('top', 'top-')} (paper, 200-way)",
            )
    if chance is not None:
        for k, ls in ((1, ":"), (5, "-.")):
            level = 100 * min(1.0, k * chance)
            ax.axhline(level, color="grey", ls=ls, lw=0.8, label=f"chance top-{k} ({level:.3g} %)")
    best = max(range(len(rows)), key=lambda i: float(rows[i]["top1"]))
    ax.axvline(best, color="grey", lw=0.8, ls=":", label=f"best top-1 ({rows[best]['label']})")
    ax.set_xticks(x, [str(r["label"]) for r in rows])
    ax.get_xticklabels()[best].set_fontweight("bold")
    ax.set(xlabel=header, ylabel="zero-shot accuracy (%)")
    ax.set_ylim(0, min(105, ax.get_ylim()[1] + 5))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right center", fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)


def write_sweep(
    rows: Sequence[Mapping[str, Any]], out_dir: str | Path, name: str, header: str, **plot_kw: Any
) -> tuple[Path, ...]:
    """``sweep_<name>.csv``, ``sweep_<name>.md`` (paper layout) and ``sweep_<name>.png`` in ``out_dir``."""
    from ..io import atomic_path

    out_dir = Path(out_dir)
    csv_path = write_csv(out_dir / f"sweep_{name}.csv", rows, COLUMNS)
    md = out_dir / f"sweep_{name}.md"
    with atomic_path(md) as tmp:
        tmp.write_text(paper_table(rows, header))
    return csv_path, md, plot_sweep(rows, out_dir / f"sweep_{name}.png", header, **plot_kw)
