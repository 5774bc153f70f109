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

COLUMNS = ("sweep", "label", "overrides", "top1", "top5")


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
) -> list[dict[str, Any]]:
    """Train/score one model per grid entry; rows with :data:`COLUMNS` (accuracies as fractions)."""
    from tqdm.auto import tqdm

    entries = [parse_grid_entry(e) for e in grid]
    labels = list(labels) or [entry_label(e) for e in entries]
    if len(labels) != len(entries):
        raise UserError(f"sweep_labels: {len(labels)} labels for {len(entries)} grid entries; give one per entry")
    rows = []
    for entry, label, raw in tqdm(list(zip(entries, labels, grid)), desc=f"sweep {name}", disable=not progress):
        run_name = f"{name}_" + "_".join(f"{k}-{v}" for k, v in entry.items())
        res = scorer(run_name, entry)
        rows.append({"sweep": name, "label": label, "overrides": raw, **res})
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
    return "\n".join(lines) + "\n"


def plot_sweep(rows: Sequence[Mapping[str, Any]], path: str | Path, header: str = "Ratio") -> Path:
    """Top-1/top-5 (%) per grid entry, best entry marked."""
    fig = new_figure(max(4.0, 0.6 * len(rows) + 2), 3.0)
    ax = fig.subplots()
    x = list(range(len(rows)))
    for metric, style in (("top1", "o-"), ("top5", "s--")):
        y = [100 * float(r[metric]) for r in rows]
        ax.plot(x, y, style, label=metric.replace("top", "top-"))
    best = max(range(len(rows)), key=lambda i: float(rows[i]["top1"]))
    ax.axvline(best, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, [str(r["label"]) for r in rows])
    ax.set(xlabel=header, ylabel="accuracy (%)")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_sweep(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, name: str, header: str) -> tuple[Path, ...]:
    """``sweep_<name>.csv``, ``sweep_<name>.md`` (paper layout) and ``sweep_<name>.png`` in ``out_dir``."""
    from ..io import atomic_path

    out_dir = Path(out_dir)
    csv_path = write_csv(out_dir / f"sweep_{name}.csv", rows, COLUMNS)
    md = out_dir / f"sweep_{name}.md"
    with atomic_path(md) as tmp:
        tmp.write_text(paper_table(rows, header))
    return csv_path, md, plot_sweep(rows, out_dir / f"sweep_{name}.png", header)
