"""Time-window analysis (paper §4.5, Fig. 7A): which part of the epoch carries the visual information.

Three families of windows over the analysed span ``[t0, t1)`` (seconds after stimulus onset), one
model trained per window (``tmin_s``/``tmax_s`` overrides crop the training *and* test EEG):

* **incremental forward** ``[t0, t0 + k·step)``, k = 1…n — the window grows from the onset;
* **decremental backward** ``[t0 + k·step, t1)``, k = 0…n−1 — the window shrinks from the start;
* **sliding** ``[t0 + k·stride, t0 + k·stride + width)`` — fixed-width segments.

The paper finds 0–100 ms barely above chance, a peak around 500 ms (100–600 ms most informative)
and late windows near chance.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .common import Scorer, ms, new_figure, save_figure, write_csv

log = logging.getLogger(__name__)

__all__ = [
    "Window",
    "window_specs",
    "run_time_windows",
    "best_window",
    "informative_span",
    "plot_time_windows",
    "COLUMNS",
]

COLUMNS = ("kind", "tmin_s", "tmax_s", "top1", "top5")
KINDS = ("forward", "backward", "sliding")


@dataclass(frozen=True)
class Window:
    """One analysed window: ``kind`` in forward/backward/sliding, ``[tmin_s, tmax_s)`` in seconds."""

    kind: str
    tmin_s: float
    tmax_s: float

    @property
    def name(self) -> str:
        """Run name such as ``sliding_100-200ms``."""
        return f"{self.kind}_{ms(self.tmin_s)}-{ms(self.tmax_s)}ms"


def window_specs(
    t0_s: float,
    t1_s: float,
    step_s: float = 0.1,
    width_s: float = 0.1,
    kinds: Sequence[str] = KINDS,
) -> list[Window]:
    """The windows of the three families over ``[t0_s, t1_s)``.

    Parameters
    ----------
    t0_s, t1_s : float
        Analysed span in seconds (e.g. 0.0 and 1.0).
    step_s : float
        Growth step (forward), shrink step (backward) and stride (sliding).
    width_s : float
        Width of the sliding windows.
    kinds : sequence of str
        Which families, in output order.

    Returns
    -------
    list of Window
        Boundaries rounded to 1 µs; windows never extend past ``t1_s``.
    """
    if not t1_s > t0_s:
        raise UserError(f"window span: [{t0_s}, {t1_s}) s is empty; give window_tmax_s > window_tmin_s")
    if step_s <= 0 or width_s <= 0:
        raise UserError(f"window_step_s/sliding_width_s: {step_s}/{width_s} must be > 0 seconds")
    eps = 1e-9
    n = int(np.floor((t1_s - t0_s) / step_s + eps))
    if n < 1:
        raise UserError(f"window_step_s: {step_s} s is longer than the span [{t0_s}, {t1_s}) s; use a shorter step")
    r = lambda x: round(float(x), 6)  # noqa: E731
    out: list[Window] = []
    for kind in kinds:
        if kind == "forward":
            ends = [t0_s + k * step_s for k in range(1, n + 1)]
            if ends[-1] < t1_s - eps:
                ends.append(t1_s)
            out += [Window(kind, r(t0_s), r(e)) for e in ends]
        elif kind == "backward":
            out += [Window(kind, r(t0_s + k * step_s), r(t1_s)) for k in range(n) if t0_s + k * step_s < t1_s - eps]
        elif kind == "sliding":
            k = 0
            while t0_s + k * step_s + width_s <= t1_s + eps:
                out.append(Window(kind, r(t0_s + k * step_s), r(t0_s + k * step_s + width_s)))
                k += 1
            if k == 0:
                raise UserError(f"sliding_width_s: {width_s} s is wider than the span [{t0_s}, {t1_s}) s")
        else:
            raise UserError(f"window_kinds: {kind!r} is not one of {KINDS}")
    return out


def run_time_windows(scorer: Scorer, windows: Sequence[Window], progress: bool = True) -> list[dict[str, Any]]:
    """Train and score one model per distinct window; rows with :data:`COLUMNS` (one per window)."""
    from tqdm.auto import tqdm

    rows = []
    done: dict[tuple[float, float], dict[str, float]] = {}  # forward's last = backward's first window
    for w in tqdm(windows, desc="time windows", disable=not progress):
        key = (w.tmin_s, w.tmax_s)
        if key not in done:
            done[key] = scorer(w.name, {"tmin_s": w.tmin_s, "tmax_s": w.tmax_s})
        res = done[key]
        rows.append({"kind": w.kind, "tmin_s": w.tmin_s, "tmax_s": w.tmax_s, **res})
        log.info("%s: top1 %.3f top5 %.3f", w.name, res["top1"], res["top5"])
    return rows


def best_window(rows: Sequence[dict[str, Any]], kind: str = "sliding", metric: str = "top5") -> dict[str, Any]:
    """The row of family ``kind`` with the highest ``metric`` (ties: the earlier window)."""
    cands = [r for r in rows if r["kind"] == kind]
    if not cands:
        raise ValueError(f"no {kind} windows in the results")
    return max(cands, key=lambda r: (float(r[metric]), -float(r["tmin_s"])))


#: Fig. 7A reference read from the paper's text (§4.5): mean of 10 subjects, 200-way top-1.
PAPER_NOTE = "paper (Fig. 7A, 200-way): 0-100 ms top-1 1.3 %, peak near 500 ms, 100-600 ms most informative"


def informative_span(
    rows: Sequence[dict[str, Any]],
    chance: float | None,
    kind: str = "sliding",
    metric: str = "top5",
    factor: float = 2.0,
) -> tuple[float, float] | None:
    """``(first start, last end)`` in seconds of the ``kind`` windows whose ``metric`` beats ``factor`` × chance.

    ``chance`` is the top-1 chance level (1 / n_test); top-k chance is ``k`` times it. ``None`` when
    no window beats it or the chance level is unknown.
    """
    if chance is None:
        return None
    k = int(metric.removeprefix("top"))
    level = factor * min(1.0, k * chance)
    hits = [r for r in rows if r["kind"] == kind and float(r[metric]) > level]
    if not hits:
        return None
    return min(float(r["tmin_s"]) for r in hits), max(float(r["tmax_s"]) for r in hits)


def plot_time_windows(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    chance: float | None = None,
    signal_window_s: tuple[float, float] | None = None,
    context: str = "",
) -> Path:
    """Fig. 7A: top-1/top-5 (%) per family vs. window end (forward), start (backward), centre (sliding).

    Parameters
    ----------
    chance : float, optional
        Top-1 chance level as a fraction (1 / number of test images); drawn for top-1 and top-5.
    signal_window_s : (float, float), optional
        Shaded span in seconds (the simulator's signal window, from ``simulation.json``).
    context : str
        Subtitle such as ``"sub-01, 50-way zero-shot, image templates"``.
    """
    kinds = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    fig = new_figure(4.0 * len(kinds), 3.6)
    axes = fig.subplots(1, len(kinds), squeeze=False, sharey=True)[0]
    xlab = {"forward": "window end (ms)", "backward": "window start (ms)", "sliding": "window centre (ms)"}
    title = {
        "forward": "incremental forward [0, end)",
        "backward": "decremental backward [start, end of epoch)",
        "sliding": "sliding windows",
    }
    for ax, kind in zip(axes, kinds):
        rs = [r for r in rows if r["kind"] == kind]
        x = [
            1000
            * (
                r["tmax_s"]
                if kind == "forward"
                else r["tmin_s"]
                if kind == "backward"
                else 0.5 * (r["tmin_s"] + r["tmax_s"])
            )
            for r in rs
        ]
        for metric, style in (("top1", "o-"), ("top5", "s--")):
            ax.plot(x, [100 * float(r[metric]) for r in rs], style, label=metric.replace("top", "top-"))
        if chance is not None:
            for k, ls in ((1, ":"), (5, "-.")):
                level = 100 * min(1.0, k * chance)
                ax.axhline(level, color="grey", ls=ls, lw=0.9, label=f"chance top-{k} ({level:.3g} %)")
        if signal_window_s is not None:
            a, b = (1000 * v for v in signal_window_s)
            ax.axvspan(a, b, color="C2", alpha=0.12, label=f"simulated signal {a:.0f}-{b:.0f} ms")
        ax.set_title(title[kind], fontsize=9)
        ax.set_xlabel(xlab[kind])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("zero-shot accuracy (%)")
    axes[0].set_ylim(0, 102)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7, frameon=False)
    fig.suptitle("Time-window analysis (Fig. 7A)" + (f": {context}" if context else ""), fontsize=10)
    fig.supxlabel(PAPER_NOTE, fontsize=7, color="grey")
    return save_figure(fig, path)


def write_time_windows(rows: Sequence[dict[str, Any]], out_dir: str | Path, **plot_kw: Any) -> tuple[Path, Path]:
    """``time_windows.csv`` and ``time_windows.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    csv_path = write_csv(out_dir / "time_windows.csv", rows, COLUMNS)
    png = plot_time_windows(rows, out_dir / "time_windows.png", **plot_kw)
    return csv_path, png
