"""One function per ``hmavd-analyze`` subcommand: train/score or read runs, write CSV + PNG.

Each runner is ``runner(cfg: AnalyzeConfig, out_dir: Path, runs=()) -> {"files": [...], "summary": str,
"rows": [...]}``; ``hmavd.cli.analyze`` is the thin shell around them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .common import AnalyzeConfig, Scorer, TrainEvalScorer

log = logging.getLogger(__name__)

__all__ = ["time_windows", "regions", "gradients", "sweep", "topomaps", "train_config", "signal_window", "data_times"]


def train_config(cfg: AnalyzeConfig, overrides: Mapping[str, Any] | None = None) -> Any:
    """The resolved :class:`hmavd.train.TrainConfig` every run of this analysis starts from."""
    from ..config import load_config
    from ..train import TrainConfig

    return load_config(TrainConfig, cfg.train_config, {**cfg.base_overrides(), **dict(overrides or {})})


def signal_window(data_dir: str | Path) -> tuple[float, float] | None:
    """The simulator's signal window ``(tmin_s, tmax_s)`` from ``<data_dir>/simulation.json``, if any."""
    path = Path(data_dir) / "simulation.json"
    if not path.is_file():
        return None
    try:
        sim = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for d in (sim, *(v for v in sim.values() if isinstance(v, dict))):
        if "signal_tmin_s" in d and "signal_tmax_s" in d:
            return float(d["signal_tmin_s"]), float(d["signal_tmax_s"])
    return None


def _test_split(tcfg: Any) -> Any:
    from ..data.thingseeg2 import load_split, split_file, subject_dir

    if not tcfg.data_dir:
        raise UserError("data_dir: empty; pass --data DIR (a ThingsEEG2 root or hmavd-simulate output)")
    folder = subject_dir(Path(tcfg.data_dir) / "preprocessed_eeg", tcfg.subject)
    return load_split(split_file(folder, "test"))


def data_times(tcfg: Any) -> np.ndarray:
    """Sample times (s) of the subject's preprocessed test EEG (read once from the file)."""
    return np.asarray(_test_split(tcfg).times)


def data_channels(tcfg: Any) -> list[str]:
    """The channels a run of ``tcfg`` trains on (``channels`` picked, ``exclude_channels`` dropped)."""
    from ..datasets import resolve_channel_names

    return resolve_channel_names(_test_split(tcfg).ch_names, tcfg.channels, tcfg.exclude_channels)


def context_line(cfg: AnalyzeConfig, tcfg: Any, n_test: int | None) -> str:
    """Figure subtitle: ``"hmavd-63 (tsconv), sub-01, 50-way zero-shot, image[test-images] templates, 20 epochs"``."""
    from ..templates import template_label

    ways = f"{n_test}-way zero-shot" if n_test else "zero-shot"
    subject = f"sub-{tcfg.subject:02d}" + (" held out (LOSO)" if tcfg.protocol == "loso" else "")
    templates = template_label(cfg.template, cfg.image_source)
    return f"{tcfg.name} ({tcfg.encoder}), {subject}, {ways}, {templates} templates, {tcfg.epochs} epochs"


def _check_min_samples(windows: Sequence[Any], times: np.ndarray, encoder: str) -> None:
    """NICE's TSConv needs >= 75 samples (conv 25 + pool 51); say so before training starts."""
    if not encoder.startswith("tsconv"):
        return
    from ..models.encoders import tsconv_out_features

    for w in windows:
        n = int(((times >= w.tmin_s - 1e-9) & (times < w.tmax_s - 1e-9)).sum())
        if tsconv_out_features(n) <= 0:
            raise UserError(
                f"window {w.name}: {n} samples are too few for encoder={encoder} (needs >= 75); "
                "use train_overrides=[encoder=resmlp] or wider windows (window_step_s/sliding_width_s)"
            )


def _n_test(tcfg: Any) -> int | None:
    try:
        from ..data.thingseeg2 import load_image_metadata
        from ..datasets import metadata_path

        return len(load_image_metadata(metadata_path(tcfg.data_dir)).test_concepts)
    except UserError:
        return None


def time_windows(
    cfg: AnalyzeConfig, out_dir: Path, runs: Sequence[str] = (), scorer: Scorer | None = None
) -> dict[str, Any]:
    """Fig. 7A: one model per forward/backward/sliding window."""
    from .time_windows import best_window, informative_span, run_time_windows, window_specs, write_time_windows

    tcfg = train_config(cfg)
    need_times = cfg.window_tmin_s is None or cfg.window_tmax_s is None or tcfg.encoder.startswith("tsconv")
    times = data_times(tcfg) if need_times else None
    t0 = cfg.window_tmin_s if cfg.window_tmin_s is not None else max(0.0, float(times[0]))
    dt = float(np.median(np.diff(times))) if times is not None and len(times) > 1 else 0.0
    t1 = cfg.window_tmax_s if cfg.window_tmax_s is not None else float(times[-1]) + dt
    windows = window_specs(t0, t1, cfg.window_step_s, cfg.sliding_width_s, cfg.window_kinds)
    if times is not None:
        _check_min_samples(windows, times, tcfg.encoder)
    scorer = scorer or TrainEvalScorer(cfg, f"{out_dir.name}/runs")
    rows = run_time_windows(scorer, windows)
    sig = signal_window(tcfg.data_dir)
    n_test = _n_test(tcfg)
    chance = 1 / n_test if n_test else None
    files = write_time_windows(
        rows, out_dir, chance=chance, signal_window_s=sig, context=context_line(cfg, tcfg, n_test)
    )
    kind = "sliding" if "sliding" in cfg.window_kinds else cfg.window_kinds[0]
    best = best_window(rows, kind)
    summary = (
        f"best {kind} window: {1000 * best['tmin_s']:.0f}-{1000 * best['tmax_s']:.0f} ms "
        f"(top-1 {100 * best['top1']:.1f}%, top-5 {100 * best['top5']:.1f}%)"
    )
    span = informative_span(rows, chance, kind)
    if span is not None:
        summary += f"; {kind} windows above 2x chance (top-5): {1000 * span[0]:.0f}-{1000 * span[1]:.0f} ms"
    if sig is not None:
        summary += f"; simulator signal window {1000 * sig[0]:.0f}-{1000 * sig[1]:.0f} ms"
    return {"files": list(files), "summary": summary, "rows": rows}


def regions(
    cfg: AnalyzeConfig, out_dir: Path, runs: Sequence[str] = (), scorer: Scorer | None = None
) -> dict[str, Any]:
    """Fig. 7B: all channels vs. each region removed."""
    from .regions import run_regions, write_regions

    tcfg = train_config(cfg)
    scorer = scorer or TrainEvalScorer(cfg, f"{out_dir.name}/runs")
    rows = run_regions(scorer, cfg.regions, data_channels(tcfg))
    n_test = _n_test(tcfg)
    files = write_regions(rows, out_dir, context=context_line(cfg, tcfg, n_test), n_test=n_test)
    worst = max((r for r in rows if r["condition"] != "all"), key=lambda r: r["drop_top5"])
    summary = (
        f"largest loss when removing {worst['removed']}: top-1 {-worst['drop_top1']:+.1f} pp, "
        f"top-5 {-worst['drop_top5']:+.1f} pp (vs. all channels)"
    )
    return {"files": list(files), "summary": summary, "rows": rows}


def sweep(cfg: AnalyzeConfig, out_dir: Path, runs: Sequence[str] = (), scorer: Scorer | None = None) -> dict[str, Any]:
    """Tables 4-5: one model per grid entry, long CSV + paper-layout markdown table."""
    from .sweeps import paper_table, parse_grid_entry, run_sweep, write_sweep

    tcfg = train_config(cfg)
    for raw in cfg.sweep_grid:  # every entry must resolve before the first run trains
        try:
            train_config(cfg, parse_grid_entry(raw))  # load_config validates
        except UserError as err:
            raise UserError(f"sweep_grid: entry {raw!r}: {err}") from None
    scorer = scorer or TrainEvalScorer(cfg, f"{out_dir.name}/runs")
    rows = run_sweep(scorer, cfg.sweep_grid, cfg.sweep_labels, cfg.sweep_name, paper=cfg.paper_reference())
    n_test = _n_test(tcfg)
    title = f"Sweep {cfg.sweep_name} ({cfg.sweep_label})\n{context_line(cfg, tcfg, n_test)}"
    chance = 1 / n_test if n_test else None
    files = write_sweep(rows, out_dir, cfg.sweep_name, cfg.sweep_label, title=title, chance=chance)
    return {"files": list(files), "summary": paper_table(rows, cfg.sweep_label), "rows": rows}


def gradients(cfg: AnalyzeConfig, out_dir: Path, runs: Sequence[str] = (), scorer: Any = None) -> dict[str, Any]:
    """Fig. 8: gradient-norm trajectories of existing runs, or of two runs trained now."""
    from .gradients import gradient_rows, write_gradients
    from .sweeps import parse_grid_entry

    if runs:
        run_dirs = [Path(r) for r in runs]
        labels = [_mcdb_label(r) for r in run_dirs]
    else:
        trainer = scorer or TrainEvalScorer(cfg, f"{out_dir.name}/runs")
        labels = list(cfg.gradient_labels)
        run_dirs = []
        for label, entry in zip(labels, cfg.gradient_configs):
            name = "grad_" + label.replace(" ", "-")
            run_dirs.append(trainer.train(name, parse_grid_entry(entry)))
    rows = gradient_rows(run_dirs, labels)
    files = write_gradients(rows, out_dir, _runs_context(run_dirs))
    lines = []
    for label in labels:
        last = [r for r in rows if r["run"] == label][-1]
        norms = ", ".join(f"{m} {last[f'grad_norm/{m}']:.3g}" for m in ("eeg", "img", "text"))
        lines.append(f"{label}: last-epoch gradient norms {norms}")
    return {"files": list(files), "summary": "\n".join(lines), "rows": rows}


def _mcdb_label(run_dir: Path) -> str:
    """``"<folder> (MCDB on|off)"`` from the run's ``config.yaml`` (the folder name alone without one)."""
    import yaml

    p = run_dir / "config.yaml"
    use = (yaml.safe_load(p.read_text()) or {}).get("use_mcdb") if p.is_file() else None
    return run_dir.name if use is None else f"{run_dir.name} (MCDB {'on' if use else 'off'})"


def _runs_context(run_dirs: Sequence[Path]) -> str:
    """``"hmavd-63, sub-01, 12 epochs"`` from the runs' ``config.yaml`` (what they share)."""
    import yaml

    parts: list[str] = []
    cfgs = []
    for r in run_dirs:
        p = Path(r) / "config.yaml"
        cfgs.append(yaml.safe_load(p.read_text()) or {} if p.is_file() else {})
    for key, fmt in (("name", "{}"), ("subject", "sub-{:02d}"), ("epochs", "{} epochs")):
        vals = {c.get(key) for c in cfgs}
        if len(vals) == 1 and None not in vals:
            parts.append(fmt.format(vals.pop()))
    return ", ".join(parts)


def topomaps(cfg: AnalyzeConfig, out_dir: Path, runs: Sequence[str] = (), scorer: Any = None) -> dict[str, Any]:
    """Fig. 6: input ERP and each run's saliency, averaged per ``topo_window_s`` window."""
    from .topomaps import run_maps, window_average, write_topomaps

    if not runs:
        trainer = scorer or TrainEvalScorer(cfg, f"{out_dir.name}/runs")
        configs = cfg.topo_configs or (cfg.train_config,)
        runs = [str(trainer.train(f"topomaps_{Path(c).stem}", {}, config=c)) for c in configs]
    results = [run_maps(r, cfg.subject, cfg.max_test_epochs) for r in runs]
    ref = results[0]
    for r in results[1:]:
        if r["ch_names"] != ref["ch_names"] or len(r["times"]) != len(ref["times"]):
            raise UserError("--runs: the runs use different channels or time windows; compare runs trained alike")
    names = [r["label"] for r in results]
    if len(set(names)) < len(names):  # same method twice (e.g. with/without MCDB): name rows by run folder
        names = [Path(r).name for r in runs]
    maps: dict[str, np.ndarray] = {}
    erp, windows = window_average(ref["erp"], ref["times"], cfg.topo_window_s)
    maps["input ERP"] = erp
    units = {"input ERP": "mean test EEG (data units)"}
    for r, name in zip(results, names):
        key = f"{name} saliency"
        maps[key] = window_average(r["saliency"], r["times"], cfg.topo_window_s)[0]
        units[key] = "|grad × input| (a.u.)"
    context = f"sub-{ref['subject']:02d}, {ref['n_epochs']} test images; {cfg.montage} positions"
    files = write_topomaps(
        maps, ref["ch_names"], windows, out_dir, ref["sfreq"], cfg.montage, context=context, units=units
    )
    peak = [int(np.argmax(m.sum(0))) for k, m in maps.items() if k.endswith("saliency")]
    summary = "; ".join(
        f"{k}: peak window {1000 * windows[p][0]:.0f}-{1000 * windows[p][1]:.0f} ms"
        for k, p in zip([k for k in maps if k.endswith("saliency")], peak)
    )
    return {"files": list(files), "summary": summary, "maps": maps, "windows": windows}
