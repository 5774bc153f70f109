"""Topographic maps of what the EEG encoder attends to, per 100 ms window (paper Fig. 6).

The paper shows, per 100 ms window, the scalp distribution of the raw input ("Input") and of the
data "processed by" NICE and HMAVD, without saying how the latter is computed. We make it concrete:

* **input ERP** — the test EEG (each image's repetitions averaged) averaged over images: (C, T);
* **saliency** of a trained model — gradient × input of the zero-shot matching score
  ``s_n = <encode_eeg(x_n), template(y_n)>`` (the cosine between an epoch's EEG features and the
  image template of its own concept), ``|∂s_n/∂x_n ⊙ x_n|`` averaged over test epochs: (C, T). It is
  large where the encoder's decision depends on the signal actually present.

Both are averaged over consecutive windows (default 100 ms) and drawn with
:func:`mne.viz.plot_topomap` on 10-10 positions of MNE's ``standard_1005`` montage (the ThingsEEG2
channel names, including FT9/FT10/TP9/TP10, are all in it). One figure row per map (input, then one
per run, e.g. NICE and HMAVD), one column per window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .common import ms, new_figure, save_figure, write_csv

log = logging.getLogger(__name__)

__all__ = [
    "gradient_x_input",
    "window_average",
    "montage_info",
    "run_maps",
    "topomap_rows",
    "plot_topomaps",
    "write_topomaps",
    "COLUMNS",
]

COLUMNS = ("map", "window_start_ms", "window_end_ms", "channel", "value")


def gradient_x_input(
    encode: Callable[[Tensor], Tensor], eeg: Tensor, targets: Tensor, batch_size: int = 200
) -> np.ndarray:
    """Mean absolute gradient × input saliency of a matching score.

    Parameters
    ----------
    encode : callable
        ``encode(eeg (B, C, T)) -> (B, D)`` features (e.g. ``model.encode_eeg`` in eval mode).
    eeg : Tensor, shape (N, C, T)
    targets : Tensor, shape (N, D)
        The template each epoch should match; the score is ``sum_d encode(x)_d * targets_d``.

    Returns
    -------
    ndarray, shape (C, T)
        ``mean_n |∂s_n/∂x_n ⊙ x_n|`` (float64).
    """
    if eeg.ndim != 3 or targets.shape[0] != eeg.shape[0]:
        raise ValueError(f"eeg (N, C, T) and targets (N, D) must match: {tuple(eeg.shape)} vs {tuple(targets.shape)}")
    total = torch.zeros(eeg.shape[1:], dtype=torch.float64)
    for a in range(0, eeg.shape[0], batch_size):
        x = eeg[a : a + batch_size].detach().clone().requires_grad_(True)  # (b, C, T)
        score = (encode(x) * targets[a : a + batch_size]).sum()  # sum_n s_n: per-epoch grads stay separate
        (grad,) = torch.autograd.grad(score, x)
        total += (grad * x).abs().sum(0).detach().double().cpu()  # (C, T)
    return (total / eeg.shape[0]).numpy()


def window_average(
    values: np.ndarray, times: np.ndarray, width_s: float = 0.1, t0_s: float | None = None
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Average ``values`` (..., T) over consecutive windows ``[t0 + k·w, t0 + (k+1)·w)``.

    Windows start at ``t0_s`` (default: the first window boundary at or after ``times[0]`` on the
    ``width_s`` grid, e.g. 0.0 for data starting at 0 s, -0.2 for data from -0.2 s) and a window is
    kept only when it is covered by the data (at least half its nominal samples present).

    Returns
    -------
    means : ndarray, shape (..., W)
    windows : list of (start_s, end_s)
    """
    times = np.asarray(times, dtype=np.float64)
    if values.shape[-1] != len(times):
        raise ValueError(f"values have {values.shape[-1]} samples for {len(times)} times")
    dt = float(np.median(np.diff(times))) if len(times) > 1 else width_s
    eps = 1e-9
    start = np.ceil(times[0] / width_s - eps) * width_s if t0_s is None else t0_s
    means, wins = [], []
    a = start
    while a < times[-1] + dt - eps:
        b = a + width_s
        mask = (times >= a - eps) & (times < b - eps)
        if mask.sum() >= max(1, int(0.5 * width_s / dt)):
            means.append(values[..., mask].mean(-1))
            wins.append((round(float(a), 6), round(float(b), 6)))
        a = b
    if not wins:
        raise UserError(f"topo_window_s: {width_s} s is longer than the data ({times[0]:.3f}…{times[-1]:.3f} s)")
    return np.stack(means, axis=-1), wins


def montage_info(ch_names: Sequence[str], sfreq: float = 250.0, montage: str = "standard_1005") -> Any:
    """An ``mne.Info`` of EEG channels with positions from a standard montage."""
    import mne

    # MNE 1.13 renamed "standard_1005" to "colin27_1005" (identical positions); use the new name when offered
    renamed = {"standard_1005": "colin27_1005", "standard_1020": "colin27_1020"}
    name = renamed.get(montage, montage)
    if name not in mne.channels.get_builtin_montages():
        name = montage
    try:
        mont = mne.channels.make_standard_montage(name)
    except ValueError:
        raise UserError(f"montage: {montage!r} is not an MNE standard montage; use standard_1005") from None
    missing = [c for c in ch_names if c not in mont.ch_names]
    if missing:
        raise UserError(f"montage: channels {missing[:5]} are not in {montage!r}; choose a montage that has them")
    info = mne.create_info(list(ch_names), float(sfreq), "eeg")
    info.set_montage(mont)
    return info


def run_maps(run: str | Path, subject: int | None = None, max_epochs: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Saliency and input ERP of one trained run on its test subject.

    Returns dict with ``saliency`` (C, T), ``erp`` (C, T), ``ch_names``, ``times``, ``sfreq``,
    ``label`` (the run's method name), ``n_epochs`` (test images used) and ``subject``.
    """
    from ..checkpoint import load_checkpoint
    from ..datasets import load_test_set, resolve_feature_cache
    from ..templates import build_templates
    from ..features.cache import load_feature_cache

    model, info = load_checkpoint(run, map_location=device)
    tc = info.get("train_config") or {}
    data_dir = tc.get("data_dir")
    if not data_dir:
        raise UserError(f"--runs: the checkpoint of {run} names no data_dir; it cannot find its test data")
    subject = int(subject if subject is not None else tc.get("subject", 1))
    test = load_test_set(
        data_dir, subject, info["ch_names"], tc.get("tmin_s"), tc.get("tmax_s"), np.asarray(info["times"])
    )
    feat = (info.get("features") or {}).get("path") or tc.get("features", "")
    cache = load_feature_cache(resolve_feature_cache(data_dir, feat if Path(str(feat)).is_dir() else ""))
    tmpl = build_templates(model, cache, "image", "test-images", test.labels, device)  # (K, D)
    eeg, labels = test.eeg, test.labels
    if max_epochs and len(eeg) > max_epochs:
        eeg, labels = eeg[:max_epochs], labels[:max_epochs]
    x = torch.as_tensor(eeg, device=device)  # (N, C, T)
    model.eval()
    sal = gradient_x_input(model.encode_eeg, x, tmpl[torch.as_tensor(labels, device=device)].detach())
    return {
        "saliency": sal,
        "erp": eeg.mean(0, dtype=np.float64),  # (C, T)
        "ch_names": tuple(info["ch_names"]),
        "times": np.asarray(info["times"], dtype=np.float64),
        "sfreq": float(info.get("sfreq") or 250.0),
        "label": str(tc.get("name", Path(run).name)),
        "n_epochs": len(eeg),
        "subject": subject,
    }


def topomap_rows(
    maps: Mapping[str, np.ndarray], ch_names: Sequence[str], windows: Sequence[tuple[float, float]]
) -> list[dict[str, Any]]:
    """Long-format rows (:data:`COLUMNS`) of windowed maps ``{name: (C, W)}``."""
    rows = []
    for name, m in maps.items():
        for w, (a, b) in enumerate(windows):
            for c, ch in enumerate(ch_names):
                rows.append(
                    {
                        "map": name,
                        "window_start_ms": ms(a),
                        "window_end_ms": ms(b),
                        "channel": ch,
                        "value": float(m[c, w]),
                    }
                )
    return rows


def plot_topomaps(
    maps: Mapping[str, np.ndarray],
    ch_names: Sequence[str],
    windows: Sequence[tuple[float, float]],
    path: str | Path,
    sfreq: float = 250.0,
    montage: str = "standard_1005",
    context: str = "",
    units: Mapping[str, str] | None = None,
) -> Path:
    """Grid of topomaps: one row per map ``{name: (C, W)}``, one column per window, a colour bar per row.

    Signed maps (any negative value, e.g. the ERP) use a symmetric blue-red scale ±max; non-negative
    maps (saliency) run from the row's minimum to its maximum, so the spatial contrast stays visible
    on top of a common floor. ``units`` maps a row name to its colour-bar label.
    """
    import mne

    info = montage_info(ch_names, sfreq, montage)
    n_rows, n_cols = len(maps), len(windows)
    fig = new_figure(1.2 * n_cols + 1.6, 1.3 * n_rows + 0.8)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, (name, m) in enumerate(maps.items()):
        signed = bool((m < 0).any())
        hi = float(np.abs(m).max()) or 1.0
        lo = float(m.min())
        vlim, cmap = ((-hi, hi), "RdBu_r") if signed else ((lo, hi if hi > lo else lo + 1.0), "Reds")
        im = None
        for j, (a, b) in enumerate(windows):
            ax = axes[i, j]
            im, _ = mne.viz.plot_topomap(
                m[:, j], info, axes=ax, show=False, cmap=cmap, vlim=vlim, contours=0, sensors=False
            )
            if i == 0:
                ax.set_title(f"{ms(a)}–{ms(b)} ms", fontsize=7)
        axes[i, 0].text(
            -0.3, 0.5, name, transform=axes[i, 0].transAxes, rotation=90, va="center", ha="center", fontsize=7
        )
        cb = fig.colorbar(im, ax=list(axes[i]), shrink=0.8, pad=0.01, aspect=12)
        cb.ax.tick_params(labelsize=6)
        cb.set_label((units or {}).get(name, ""), fontsize=6)
    title = f"Scalp maps per {ms(windows[0][1] - windows[0][0])} ms window (Fig. 6)"
    fig.suptitle(title + (f"\n{context}" if context else ""), fontsize=9)
    return save_figure(fig, path)


def write_topomaps(
    maps: Mapping[str, np.ndarray],
    ch_names: Sequence[str],
    windows: Sequence[tuple[float, float]],
    out_dir: str | Path,
    sfreq: float = 250.0,
    montage: str = "standard_1005",
    **plot_kw: Any,
) -> tuple[Path, Path]:
    """``topomaps.csv`` (long format) and ``topomaps.png`` in ``out_dir`` (``plot_kw``: :func:`plot_topomaps`)."""
    out_dir = Path(out_dir)
    csv_path = write_csv(out_dir / "topomaps.csv", topomap_rows(maps, ch_names, windows), COLUMNS)
    png = plot_topomaps(maps, ch_names, windows, out_dir / "topomaps.png", sfreq, montage, **plot_kw)
    return csv_path, png
