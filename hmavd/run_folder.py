"""The run folder of ``hmavd-train``: data loading, the metrics log, RNG state, resume, checkpoint writing.

:func:`hmavd.train.train` drives the epochs; this module holds what surrounds them. Every checkpoint
(``best.safetensors``, ``last.safetensors``) carries the model's **gallery**
(:func:`hmavd.templates.compute_gallery`: the test-image, centre and text templates after the trained
image-side head, from the training feature cache) and the typed metadata of
:class:`hmavd.checkpoint_meta.CheckpointInfo`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from .checkpoint_meta import CheckpointInfo, training_info
from .config import config_from_dict, config_to_dict, save_config
from .errors import UserError

log = logging.getLogger(__name__)

__all__ = ["load_data", "RunWriter", "resume_state", "rng_state", "set_rng_state", "to_jsonable", "truncate_metrics"]


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The torch, permutation and (on CUDA) device RNG states, for ``last.safetensors``."""
    state = {"torch": torch.get_rng_state(), "perm": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator, device: torch.device) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    gen.set_state(state["perm"].to(torch.uint8))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8), device)


def to_jsonable(logs: dict[str, Any]) -> dict[str, float]:
    """Step logs (tensors or floats) as floats."""
    return {k: (float(v) if not isinstance(v, torch.Tensor) else float(v.item())) for k, v in logs.items()}


def truncate_metrics(path: Path, last_epoch: int) -> None:
    """Keep the metrics lines of completed epochs ``<= last_epoch`` (after an interruption)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("epoch", 0) <= last_epoch:
                keep.append(line)
        except json.JSONDecodeError:
            break
    path.write_text("".join(x + "\n" for x in keep))


def load_data(cfg: Any) -> Any:
    """The :class:`~hmavd.datasets.TrainingSet` of a ``TrainConfig`` (intra: its subject; loso: the pool)."""
    from .datasets import load_training_set, parse_subjects

    if not cfg.data_dir:
        raise UserError("data_dir: empty; pass --data DIR (a ThingsEEG2 root or hmavd-simulate output)")
    if not Path(cfg.data_dir).is_dir():
        raise UserError(f"data_dir: {cfg.data_dir} is not a folder; pass --data DIR (ThingsEEG2 root)")
    if cfg.protocol == "loso":
        pool = [s for s in parse_subjects(list(cfg.subjects), cfg.data_dir) if s != cfg.subject]
        if not pool:
            raise UserError(f"subjects: no training subject left after holding out {cfg.subject}; add subjects")
        parse_subjects(cfg.subject, cfg.data_dir)  # the held-out subject must exist
    else:
        pool = parse_subjects(cfg.subject, cfg.data_dir)
    return load_training_set(
        cfg.data_dir,
        pool,
        channels=cfg.channels,
        exclude_channels=cfg.exclude_channels,
        tmin_s=cfg.tmin_s,
        tmax_s=cfg.tmax_s,
        features=cfg.features,
        average_train_reps=cfg.average_train_reps,
        n_val=cfg.n_val,
        seed=cfg.seed,
    )


class RunWriter:
    """Writes one run's folder: config, metrics log and checkpoints, each with its typed metadata and gallery.

    Parameters
    ----------
    cfg : TrainConfig
    data : TrainingSet
        Its ``cache`` is the feature cache the gallery is computed from.
    run_dir : Path
    main : bool
        [distributed] only the main process writes; elsewhere every method is a no-op.
    """

    def __init__(self, cfg: Any, data: Any, run_dir: Path, main: bool = True) -> None:
        from .datasets import cache_summary

        self.cfg, self.cache, self.run_dir, self.main = cfg, data.cache, Path(run_dir), main
        self.last_path, self.best_path = self.run_dir / "last.safetensors", self.run_dir / "best.safetensors"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.summary = cache_summary(data.cache)
        self.info: CheckpointInfo = training_info(
            data_dir=str(Path(cfg.data_dir).resolve()),  # absolute, for the live engine's MVNN/feature defaults
            ch_names=list(data.ch_names),
            times=list(data.times),
            sfreq=data.sfreq,
            features=self.summary,
            train_subjects=list(data.subjects),
            n_train=len(data.eeg),
            n_val=len(data.val_eeg),
            units="V",  # hmavd-prepare writes volts; the live engine converts streams to these units
        )

    def start(self, resumed_epoch: int | None = None) -> None:
        """A fresh folder (empty metrics log), or the metrics of a run resumed after ``resumed_epoch``."""
        if not self.main:
            return
        if resumed_epoch is not None:
            truncate_metrics(self.metrics_path, resumed_epoch)
            log.info("resuming %s after epoch %d", self.run_dir, resumed_epoch)
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.metrics_path.write_text("")
        save_config(self.cfg, self.run_dir / "config.yaml")

    def gallery(self, model: torch.nn.Module) -> Any:
        """The model's :class:`~hmavd.templates.Gallery` on the training cache (eval mode, no gradients)."""
        from .templates import compute_gallery

        return compute_gallery(model, self.cache, bank=self.summary)

    def save(
        self,
        path: Path,
        model: torch.nn.Module,
        epoch: int,
        val_loss: float,
        gallery: Any,
        state: dict[str, Any] | None = None,
    ) -> Path:
        """``best.safetensors`` (validation-selected) or ``last.safetensors`` (with ``state``) of ``epoch``."""
        from .checkpoint import save_checkpoint

        selection = "last" if path.stem == "last" else "val-selected"
        extra = {**self.info, "epoch": epoch, "val_loss": val_loss, "selection": selection}
        return save_checkpoint(path, model, self.cfg, extra, state=state, gallery=gallery)

    def end_epoch(
        self,
        model: torch.nn.Module,
        epoch: int,
        val_loss: float,
        improved: bool,
        records: list[dict[str, Any]],
        state: dict[str, Any],
        gen: torch.Generator,
        device: torch.device,
    ) -> None:
        """After an epoch: ``best.safetensors`` when ``improved``, the metrics lines, ``last.safetensors``
        (with ``state`` and the RNG states); one gallery for both checkpoints."""
        if not self.main:
            return
        gallery = self.gallery(model)
        if improved:
            self.save(self.best_path, model, epoch, val_loss, gallery)
        with self.metrics_path.open("a") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in records))
        self.save(self.last_path, model, epoch, val_loss, gallery, state={**state, "rng": rng_state(gen, device)})


def resume_state(
    cfg: Any,
    last_path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    device: torch.device,
) -> tuple[int, int, float]:
    """Load ``last.safetensors`` into model, optimiser and RNGs; return (epoch, global step, best val loss).

    Refuses a run trained with another config (anything but ``device``).
    """
    from .checkpoint import read_checkpoint

    tensors, meta = read_checkpoint(last_path, "cpu")
    saved = config_to_dict(config_from_dict(type(cfg), meta["train_config"], str(last_path)))
    mine = config_to_dict(cfg)
    diff = [k for k in mine if k != "device" and saved.get(k) != mine[k]]
    if diff:
        raise UserError(f"--resume: {last_path.parent} was trained with other {diff}; resume without overrides")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    st = meta["state"]
    optimizer.load_state_dict(st["optimizer"])
    set_rng_state(st["rng"], gen, device)
    return int(meta["epoch"]), int(st["global_step"]), float(st["best_val"])
