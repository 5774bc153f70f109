"""Per-modality gradient-norm trajectories with and without MCDB (paper §4.6, Fig. 8).

The data come from the training logs: every step line of a run's ``metrics.jsonl`` carries
``grad_norm/eeg``, ``grad_norm/img``, ``grad_norm/text`` (L2 norm of each modality's own parameter
gradients, after MCDB's κ scaling) and, with MCDB, ``rho/*`` and ``kappa/*``. The analysis averages
them per epoch for each run and plots one panel per run (the paper's "before"/"after modulation").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .common import new_figure, save_figure, write_csv

log = logging.getLogger(__name__)

__all__ = [
    "MODALITIES",
    "read_metrics",
    "metrics_path",
    "step_records",
    "epoch_means",
    "gradient_rows",
    "plot_gradients",
    "write_gradients",
    "COLUMNS",
]

MODALITIES = ("eeg", "img", "text")
VALUE_KEYS = tuple(f"grad_norm/{m}" for m in MODALITIES) + ("kappa/img", "kappa/text", "rho/img", "rho/text")
SD_KEYS = tuple(f"grad_norm/{m}" for m in MODALITIES)  #: keys whose per-epoch standard deviation is kept too
COLUMNS = ("run", "epoch", "n_steps", *VALUE_KEYS, *(f"{k}_sd" for k in SD_KEYS))


def metrics_path(run: str | Path) -> Path:
    """``metrics.jsonl`` of a run directory (or the file itself)."""
    p = Path(run)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        raise UserError(f"--runs: {run} has no metrics.jsonl; pass run directories written by hmavd-train")
    return p


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """All JSON lines of a run's ``metrics.jsonl`` (a torn last line from a killed run is skipped)."""
    path = metrics_path(run)
    out = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                log.warning("%s: ignoring a torn last line", path)
                continue
            raise UserError(f"--runs: {path} line {i + 1} is not JSON; the log is corrupt") from None
    return out


def step_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step lines (those carrying ``grad_norm/*``), in log order."""
    steps = [r for r in records if any(k.startswith("grad_norm/") for k in r)]
    if not steps:
        raise UserError("--runs: the metrics.jsonl has no grad_norm/* step lines; train with hmavd-train first")
    return steps


def epoch_means(
    steps: Sequence[dict[str, Any]], keys: Sequence[str] = VALUE_KEYS, sd_keys: Sequence[str] = SD_KEYS
) -> list[dict[str, Any]]:
    """Mean of each key per epoch (NaN where a key is absent), rows sorted by epoch.

    Parameters
    ----------
    steps : sequence of dict
        Step lines with an ``epoch`` field (integer, 0- or 1-based as logged).
    sd_keys : sequence of str
        Keys whose step-to-step standard deviation within the epoch is added as ``<key>_sd``
        (population SD; 0 for a one-step epoch): the paper reads gradient *stability* off Fig. 8.
    """
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    for r in steps:
        by_epoch.setdefault(int(r.get("epoch", 0)), []).append(r)
    rows = []
    for ep in sorted(by_epoch):
        rs = by_epoch[ep]
        row: dict[str, Any] = {"epoch": ep, "n_steps": len(rs)}
        for k in keys:
            vals = [float(r[k]) for r in rs if r.get(k) is not None]
            row[k] = float(np.mean(vals)) if vals else float("nan")
        for k in sd_keys:
            vals = [float(r[k]) for r in rs if r.get(k) is not None]
            row[f"{k}_sd"] = float(np.std(vals)) if vals else float("nan")
        rows.append(row)
    return rows


def gradient_rows(runs: Sequence[str | Path], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per-epoch mean gradient norms (and κ, ρ) of each run, labelled; rows with :data:`COLUMNS`."""
    if len(runs) != len(labels):
        raise UserError(f"--runs: {len(runs)} runs for {len(labels)} labels; give one label per run")
    rows = []
    for run, label in zip(runs, labels):
        for r in epoch_means(step_records(read_metrics(run))):
            rows.append({"run": label, **r})
    return rows


def plot_gradients(rows: Sequence[dict[str, Any]], path: str | Path, context: str = "") -> Path:
    """Fig. 8: per run, per-modality gradient norm vs. epoch (mean ± SD over the epoch's steps), and κ below.

    Top row: one panel per run, shared y axis. Bottom row: MCDB's κ per modality (Eq. 13, mean per
    epoch); runs trained without MCDB log no κ (it is 1 for every modality).
    """
    labels = list(dict.fromkeys(r["run"] for r in rows))
    fig = new_figure(4.2 * len(labels) + 1.2, 5.0)
    axes = fig.subplots(2, len(labels), squeeze=False, sharex="col", sharey="row", height_ratios=(2.2, 1))
    names = {"eeg": "EEG", "img": "image", "text": "text"}
    for j, label in enumerate(labels):
        ax, kax = axes[0, j], axes[1, j]
        rs = [r for r in rows if r["run"] == label]
        ep = np.array([r["epoch"] for r in rs])
        for i, m in enumerate(MODALITIES):
            y = np.array([float(r[f"grad_norm/{m}"]) for r in rs])
            if np.all(np.isnan(y)):
                continue
            ax.plot(ep, y, marker="." if len(ep) < 30 else None, color=f"C{i}", label=names[m])
            sd = np.array([float(r.get(f"grad_norm/{m}_sd", np.nan)) for r in rs])
            if not np.all(np.isnan(sd)):
                ax.fill_between(ep, y - sd, y + sd, color=f"C{i}", alpha=0.15, lw=0)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        has_kappa = False
        for i, m in enumerate(MODALITIES):
            k = np.array([float(r.get(f"kappa/{m}", np.nan)) for r in rs])
            if not np.all(np.isnan(k)):
                kax.plot(ep, k, color=f"C{i}", marker="." if len(ep) < 30 else None, label=f"κ {names[m]}")
                has_kappa = True
        if not has_kappa:
            kax.text(
                0.5,
                0.5,
                "no MCDB: κ = 1 for every modality",
                transform=kax.transAxes,
                ha="center",
                va="center",
                fontsize=8,
                color="grey",
            )
        kax.axhline(1.0, color="grey", lw=0.8, ls=":")
        kax.set_xlabel("epoch")
        kax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("gradient L2 norm\n(mean ± SD over steps)")
    axes[1, 0].set_ylabel("MCDB κ (Eq. 13)")
    handles, lab = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, lab, loc="outside right upper", fontsize=7, frameon=False)
    kh, kl = [], []
    for kax in axes[1]:
        kh, kl = kax.get_legend_handles_labels()
        if kh:
            break
    if kh:
        fig.legend(kh, kl, loc="outside right lower", fontsize=7, frameon=False)
    fig.suptitle(
        "Per-modality gradient norms after κ scaling (Fig. 8)" + (f"\n{context}" if context else ""), fontsize=9
    )
    return save_figure(fig, path)


def write_gradients(rows: Sequence[dict[str, Any]], out_dir: str | Path, context: str = "") -> tuple[Path, Path]:
    """``gradients.csv`` and ``gradients.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    csv_path = write_csv(out_dir / "gradients.csv", rows, COLUMNS)
    return csv_path, plot_gradients(rows, out_dir / "gradients.png", context)
