"""Shared pieces of the paper's analyses: the ``hmavd-analyze`` config, CSV/figure writing, and the
"train one model with these overrides and score it" glue every training-based analysis uses.

A *scorer* is any callable ``scorer(run_name, overrides) -> {"top1": float, "top5": float}`` (fractions
in 0…1). :class:`TrainEvalScorer` is the real one: it resolves a :class:`hmavd.train.TrainConfig` from
a packaged config plus overrides, trains it with :func:`hmavd.train.train` (validation-loss checkpoint
selection, never the test set) and evaluates the best checkpoint zero-shot on the test set with
:func:`hmavd.evaluate.evaluate_checkpoint`. The analyses only see the callable, so their tables and
figures are tested with the real trainer at a tiny scale.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ValidatedConfig, parse_overrides
from ..errors import UserError
from ..io import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "AnalyzeConfig",
    "Scorer",
    "TrainEvalScorer",
    "write_csv",
    "read_csv",
    "new_figure",
    "save_figure",
    "ms",
]

Scorer = Callable[[str, Mapping[str, Any]], dict[str, float]]

REGION_NAMES = ("occipital", "temporal", "parietal", "central", "frontal")


@dataclass(frozen=True)
class AnalyzeConfig(ValidatedConfig):
    """Config of ``hmavd-analyze`` (all subcommands; each reads the fields it needs).

    Training-based analyses (time-windows, regions, sweep, gradients without ``--runs``) train one
    model per condition from ``train_config`` + ``train_overrides`` + the condition's overrides.
    """

    # common
    train_config: str = "hmavd-63"  #: packaged training config (or YAML path) every run starts from
    train_overrides: tuple[str, ...] = ()  #: ``key=value`` for every run, e.g. ``("epochs=20", "data_dir=DIR")``
    out_dir: str = "runs/analysis"  #: figures, CSV tables and the trained runs go below this folder
    template: str = "image"  #: zero-shot template kind reported: image | text | fused
    image_source: str = "test-images"  #: image templates: test-images | centers
    # time windows (Fig. 7A)
    window_kinds: tuple[str, ...] = ("forward", "backward", "sliding")
    window_step_s: float = 0.1  #: growth/shrink step of forward/backward windows and sliding stride
    sliding_width_s: float = 0.1  #: width of the sliding windows
    window_tmin_s: float | None = None  #: analysed span start (default: first sample of the data)
    window_tmax_s: float | None = None  #: analysed span end (default: end of the data)
    # regions (Fig. 7B)
    regions: tuple[str, ...] = REGION_NAMES
    # sweep (Tables 4-5)
    sweep_name: str = "gamma"
    sweep_label: str = "Ratio γ"  #: header of the paper-layout table's first column
    sweep_grid: tuple[str, ...] = (
        "mcdb_gamma=0.1",
        "mcdb_gamma=0.3",
        "mcdb_gamma=0.5",
        "mcdb_gamma=0.7",
        "mcdb_gamma=0.9",
    )  #: one entry per column: ``key=value`` pairs joined by ``;``
    sweep_labels: tuple[str, ...] = ()  #: column labels (default: the values of each entry joined by ``/``)
    #: the paper's values for reference, ``"LABEL=TOP1/TOP5"`` in % (e.g. ``"0.7=15.8/44.2"``); entries
    #: whose label has one get it drawn and tabulated
    sweep_paper: tuple[str, ...] = ()
    # gradients (Fig. 8)
    gradient_configs: tuple[str, ...] = ("use_mcdb=false", "use_mcdb=true")  #: the two runs trained when no --runs
    gradient_labels: tuple[str, ...] = ("without MCDB", "with MCDB")
    # topomaps (Fig. 6)
    topo_configs: tuple[str, ...] = ("nice", "hmavd-63")  #: training configs compared when no --runs (Fig. 6)
    topo_window_s: float = 0.1  #: width of each topomap's time window
    montage: str = "standard_1005"  #: MNE standard montage giving 10-10 positions
    subject: int | None = None  #: test subject for topomaps (default: the run's first subject)
    max_test_epochs: int = 0  #: 0 = all test images

    def validate(self) -> None:
        bad = [k for k in self.window_kinds if k not in ("forward", "backward", "sliding")]
        if bad:
            raise UserError(f"window_kinds: {bad} not in forward/backward/sliding; pick from those")
        for name in ("window_step_s", "sliding_width_s", "topo_window_s"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name}: {getattr(self, name)} must be > 0 seconds (e.g. 0.1)")
        if self.template not in ("image", "text", "fused"):
            raise UserError(f"template: {self.template!r} is not image, text or fused; pick one")
        if self.sweep_labels and len(self.sweep_labels) != len(self.sweep_grid):
            raise UserError(
                f"sweep_labels: {len(self.sweep_labels)} labels for {len(self.sweep_grid)} sweep_grid entries; "
                "give one per entry or sweep_labels=[] (labels from the values)"
            )
        self.paper_reference()
        if len(self.gradient_labels) != len(self.gradient_configs):
            raise UserError(
                f"gradient_labels: {len(self.gradient_labels)} labels for {len(self.gradient_configs)} "
                "gradient_configs entries; give one label per entry"
            )

    def paper_reference(self) -> dict[str, tuple[float, float]]:
        """``sweep_paper`` parsed: ``{label: (top1 %, top5 %)}``."""
        out = {}
        for item in self.sweep_paper:
            label, sep, values = str(item).rpartition("=")
            try:
                top1, top5 = (float(v) for v in values.split("/"))
            except ValueError:
                sep = ""
            if not sep or not label:
                raise UserError(f"sweep_paper: {item!r} is not LABEL=TOP1/TOP5 (e.g. 0.7=15.8/44.2); fix or drop it")
            out[label.strip()] = (top1, top5)
        return out

    def base_overrides(self) -> dict[str, Any]:
        """``train_overrides`` parsed into a dict (YAML scalars)."""
        return parse_overrides(self.train_overrides)


def ms(t_s: float) -> str:
    """Seconds → an integer millisecond label (``0.1`` → ``"100"``)."""
    return f"{round(t_s * 1000):d}"


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV atomically; floats with 6 significant digits."""
    columns = list(columns) if columns is not None else list(rows[0]) if rows else []
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return Path(path)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def new_figure(width_in: float, height_in: float) -> Any:
    """A matplotlib ``Figure`` not bound to any GUI backend (safe headless, in threads)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


class TrainEvalScorer:
    """Train one model per condition and return its zero-shot test accuracy.

    Parameters
    ----------
    cfg : AnalyzeConfig
        ``train_config``, ``train_overrides``, ``template``, ``image_source`` and ``out_dir`` are used.
    runs_subdir : str
        Folder under ``cfg.out_dir`` for this analysis's runs (e.g. ``"time-windows/runs"``).
    """

    def __init__(self, cfg: AnalyzeConfig, runs_subdir: str) -> None:
        self.cfg = cfg
        self.runs_dir = Path(cfg.out_dir) / runs_subdir
        self.run_dirs: dict[str, Path] = {}

    def train(self, run_name: str, overrides: Mapping[str, Any], config: str | None = None) -> Path:
        """Train one run (``config``: another packaged training config than ``train_config``); its folder."""
        from ..config import load_config
        from ..train import TrainConfig, train

        ov = {**self.cfg.base_overrides(), **dict(overrides), "out_dir": str(self.runs_dir), "run_name": run_name}
        tcfg = load_config(TrainConfig, config or self.cfg.train_config, ov)
        state = existing_run_state(Path(tcfg.out_dir) / run_name, tcfg)
        if state == "done":
            log.info("reusing the finished run %s", Path(tcfg.out_dir) / run_name)
            run_dir = Path(tcfg.out_dir) / run_name
        else:
            log.info("%s %s with %s", "resuming" if state == "partial" else "training", run_name, dict(overrides))
            run_dir = Path(train(tcfg, resume=state == "partial", progress=False))
        self.run_dirs[run_name] = run_dir
        return run_dir

    def __call__(self, run_name: str, overrides: Mapping[str, Any]) -> dict[str, float]:
        run_dir = self.train(run_name, overrides)
        return score_run(run_dir, self.cfg.template, self.cfg.image_source)


def existing_run_state(run_dir: Path, tcfg: Any) -> str:
    """``"new"``, ``"partial"`` (interrupted: resume it) or ``"done"`` (reuse it) for an analysis run folder.

    An analysis re-run with the same settings picks up where it stopped instead of retraining; a
    folder trained with other settings is a :class:`UserError` (the results would mix).
    """
    import yaml

    from ..config import config_from_dict, config_to_dict

    cfg_path, last = run_dir / "config.yaml", run_dir / "last.safetensors"
    if not (cfg_path.is_file() and last.is_file()):
        return "new"
    saved = yaml.safe_load(cfg_path.read_text()) or {}
    saved.pop("_config_class", None)
    try:
        saved = config_to_dict(config_from_dict(type(tcfg), saved, str(cfg_path)))
    except UserError:
        saved = {}
    mine = config_to_dict(tcfg)
    diff = sorted(k for k in mine if k != "device" and saved.get(k) != mine[k])
    if diff:
        raise UserError(
            f"--out: {run_dir} holds a run trained with other {diff[:4]}; use another --out or delete that folder"
        )
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    epochs = [int(r["epoch"]) for r in map(_json_line, lines) if r and r.get("type") == "epoch"]
    return "done" if epochs and max(epochs) >= tcfg.epochs and (run_dir / "best.safetensors").is_file() else "partial"


def _json_line(line: str) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def score_run(run_dir: str | Path, template: str = "image", image_source: str = "test-images") -> dict[str, float]:
    """Zero-shot full-way top-1/top-5 (fractions) of a trained run's best checkpoint on its test set."""
    from ..evaluate import evaluate_checkpoint
    from ..templates import template_label

    res = evaluate_checkpoint(run_dir, templates=(template,), image_source=image_source, ways=())
    metrics = res["results"][template_label(template, image_source)]
    return {"top1": float(metrics["top1"]), "top5": float(metrics["top5"])}
