"""Training of HMAVD and its NICE baseline (paper §3, §4.2): ``hmavd-train``.

One call of :func:`train` is one run: one subject (``protocol="intra"``) or one held-out subject
trained on the others (``protocol="loso"``), one seed. The whole training set lives on the device as
tensors and is batched by a seeded index permutation (no DataLoader). Each step:

1. forward EEG + image (+ text) features through :class:`~hmavd.models.hmavd_model.HMAVD`;
2. loss terms of Eq. 2-4 (+ Eq. 7) from :func:`~hmavd.losses.hmavd_loss`, backward of ``total``;
3. MCDB (Eq. 10-15): ρ and κ per modality from the batch, κ scales each modality's own gradients
   (``mcdb_apply="gradient"``, Eq. 14; Adam cancels a constant κ there, see docs/model.md);
4. per-modality gradient norms (Figure 8 data), after κ;
5. SPR (Eq. 16-20) — Adam with decaying Gaussian gradient noise — or plain Adam when ``use_spr`` is off;
   with ``mcdb_apply="update"`` κ scales each modality's parameter update after this step instead.

After every epoch the validation loss (``n_val`` held-out training images, seeded) selects
``best.safetensors``: by default (``select_on="eeg_img"``) the mean of the two EEG-image CE terms,
which is NICE's whole validation loss and so the same criterion for every table row; ``"total"``
selects on the full loss, whose EEG-free terms (image-text cosine, adapter consistency) fall within an
epoch or two and can pick a checkpoint whose EEG encoder has barely trained. ``last.safetensors`` holds
model + optimiser + RNG states for ``--resume``. Both carry the model's gallery (the test templates after
the trained image side, :mod:`hmavd.templates`), so they decode without the feature cache. The test set
is never touched here. The run-folder helpers (data loading, resume, checkpoint writing) are in
:mod:`hmavd.run_folder`.

Run folder ``<out_dir>/<run_name>/``: ``config.yaml`` (resolved), ``metrics.jsonl`` (``{"type": "step",
...}`` per step with every loss term, ``rho/*``, ``kappa/*``, ``grad_norm/*``, ``sigma``; ``{"type":
"epoch", ...}`` per epoch with train and validation losses), ``best.safetensors``, ``last.safetensors``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import ValidatedConfig
from .devices import resolve_device
from .errors import UserError
from .optim import apply_schedule

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "train", "run_dir_of", "build_model", "make_optimizer", "TrainStep"]


@dataclass(frozen=True)
class TrainConfig(ValidatedConfig):
    """Resolved ``hmavd-train`` config (paper defaults; one YAML per table row in ``configs/``).

    ``spr_sigma_max`` (σ_max of Eq. 17) and ``fusion_beta`` (β of Eq. 8) are not given by the paper;
    ``spr_noise_power`` is Eq. 17's decay power (the paper reuses the letter β for it).
    """

    name: str = "hmavd-63"  # method label in result tables
    data_dir: str = ""
    subject: int = 1  # intra: train+test subject; loso: held-out test subject
    subjects: tuple[str, ...] = ("all",)  # loso: the training pool ("all" or numbers), minus ``subject``
    protocol: str = "intra"  # "intra" | "loso"
    channels: str = "all"  # "all", "visual17", "all63" or comma-separated names
    exclude_channels: tuple[str, ...] = ()  # region names (hmavd.channels.REGIONS) or channel names
    tmin_s: float | None = None
    tmax_s: float | None = None
    features: str = ""  # cache folder; "" = the only cache under <data_dir>/features/
    average_train_reps: bool = True
    n_val: int = 740
    # model
    encoder: str = "tsconv"
    proj_dim: int = 0  # 0 = the feature dimension
    image_projection: bool = True  # False = identity image side, as NICE's code (the nice* configs set it)
    sa_variant: str = "fixed"  # tsconv_sa: "fixed" block | "published" (NICE-SA as released)
    use_text: bool = True
    use_adapters: bool = True
    img_reduction: int = 8
    txt_reduction: int = 16
    adapter_alpha: float = 0.7
    fusion_beta: float = 0.5
    consistency_weight: float = 1.0
    temperature: str = "fixed"  # "fixed" (τ) | "learnable" (logit scale initialised ln(1/τ))
    tau: float = 0.07
    # MCDB / SPR
    use_mcdb: bool = True
    mcdb_mode: str = "matched"  # "matched" (Peng et al. 2022; docs/model.md) | "literal" (Eq. 11 as printed: κ ≡ 1)
    mcdb_gamma: float = 0.7
    mcdb_apply: str = "gradient"  # "gradient" (Eq. 14, before Adam) | "update" (κ on the update after Adam)
    use_spr: bool = True
    spr_sigma_max: float = 1e-3
    spr_noise_power: float = 1.0
    # optimisation
    epochs: int = 200
    batch_size: int = 1000
    # checkpoint selection: "eeg_img" = mean of the EEG-image CE terms (NICE's validation loss, the same
    # criterion for every table row); "total" = the whole loss (its EEG-free terms, e.g. the image-text
    # cosine, fall fastest and would pick an epoch whose EEG encoder has barely trained)
    select_on: str = "eeg_img"

    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.0
    # recipe knobs (hmavd/optim.py, docs/recipes.md); the defaults keep Adam / constant lr / fp32 / NICE heads
    optimizer: str = "adam"  # "adam" | "adamw" (decoupled weight decay)
    lr_schedule: str = "constant"  # "constant" | "cosine" (with warmup_steps, floored at min_lr_ratio)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    precision: str = "fp32"  # "fp32" | "bf16" (autocast on CUDA)
    eeg_projection: bool = True  # False: the encoder output is the EEG embedding (MLP recipes)
    normalize_eeg: bool = True  # False: the loss sees unnormalised EEG embeddings (visual-blur, NeuroBridge)
    init: str = "nice"  # "nice" (NICE's weights_init_normal) | "default" (PyTorch's)
    image_head: str = ""  # "" | "linear" | "mlp_adapter" | "blur_levels" | "sum_fusion" (models/image_heads.py)
    eeg_head: str = ""  # "" | "linear": Linear(encoder -> proj_dim) on the encoder's bank-sized output (NeuroBridge)
    image_levels: int = 0  # blur_levels: levels stored side by side in the bank (variant_mode=concat); 0/1 = one
    image_bank_dims: tuple[int, ...] = ()  # sum_fusion: sizes of the banks concatenated in the cache
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    out_dir: str = "runs"
    run_name: str = ""  # "" = <name>_sub-XX_seedN[_loso]
    finetune: str = ""  # start from this checkpoint / run folder (hmavd/finetune.py); "" = from scratch
    finetune_layers: str = "all"  # what trains when fine-tuning: all | eeg | eeg_projection

    def validate(self) -> None:
        """Check the fields; runs on construction (``ValidatedConfig``), so a config built in Python or by
        ``dataclasses.replace`` is refused like one from YAML. No file access: :meth:`check_paths` reads files."""
        from types import SimpleNamespace

        from .finetune import validate_finetune

        validate_finetune(SimpleNamespace(finetune="", finetune_layers=self.finetune_layers))  # the path: check_paths
        choices = {
            "protocol": ("intra", "loso"),
            "temperature": ("fixed", "learnable"),
            "mcdb_mode": ("matched", "literal"),
            "mcdb_apply": ("gradient", "update"),
            "sa_variant": ("fixed", "published"),
            "select_on": tuple(SELECTION_TERMS),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise UserError(f"{key}: {getattr(self, key)!r} is not one of {allowed}; pick one")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < (2 if key == "batch_size" else 1):
                raise UserError(f"{key}: {getattr(self, key)} is too small; give a positive value (batch_size >= 2)")
        if self.use_adapters and not self.use_text and self.name.startswith("ablation"):
            log.debug("adapters without text: only the image adapter is used")
        if not self.device.startswith(("auto", "cpu", "cuda", "mps")):
            raise UserError(f"device: {self.device!r} is not auto, cpu, cuda[:N] or mps")
        from .optim import validate_optim

        validate_optim(self)

    def check_paths(self) -> None:
        """The checks that read the filesystem (the ``finetune`` checkpoint), run when training starts."""
        from .finetune import validate_finetune

        validate_finetune(self)


#: Loss terms averaged into the checkpoint-selection validation loss, per ``TrainConfig.select_on``.
SELECTION_TERMS: dict[str, tuple[str, ...]] = {"eeg_img": ("ce_eeg_img", "ce_img_eeg"), "total": ("total",)}


def selection_loss(val_terms: dict[str, float], select_on: str) -> float:
    """The validation loss a checkpoint is selected on: the mean of ``SELECTION_TERMS[select_on]``."""
    return float(np.mean([val_terms[k] for k in SELECTION_TERMS[select_on]]))


def run_dir_of(cfg: TrainConfig) -> Path:
    """``<out_dir>/<run_name>`` with the default run name filled in."""
    name = cfg.run_name or f"{cfg.name}_sub-{cfg.subject:02d}_seed{cfg.seed}" + (
        "_loso" if cfg.protocol == "loso" else ""
    )
    return Path(cfg.out_dir) / name


def build_model(
    cfg: TrainConfig, n_chans: int, n_times: int, feature_dim: int, text_dim: int | None = None
) -> torch.nn.Module:
    """The :class:`HMAVD` of a config (Base = NICE when text and adapters are off).

    ``text_dim``: size of the text features when it differs from the image bank's (intermediate layers,
    level banks); ``None`` = ``feature_dim``.
    """
    from .models.hmavd_model import HMAVD, ModelConfig
    from .models.image_heads import default_proj_dim, head_kwargs  # [recipes]

    proj_dim = default_proj_dim(cfg.proj_dim, feature_dim, cfg.image_head, cfg.image_levels)
    mc = ModelConfig(
        encoder=cfg.encoder,
        n_chans=n_chans,
        n_times=n_times,
        feature_dim=feature_dim,
        proj_dim=proj_dim,
        image_projection=cfg.image_projection,
        sa_variant=cfg.sa_variant,
        use_text=cfg.use_text,
        use_adapters=cfg.use_adapters,
        img_reduction=cfg.img_reduction,
        txt_reduction=cfg.txt_reduction,
        adapter_alpha=cfg.adapter_alpha,
        fusion_beta=cfg.fusion_beta,
        temperature=cfg.temperature,
        tau=cfg.tau,
        text_dim=text_dim if text_dim != feature_dim else None,
        eeg_projection=cfg.eeg_projection,
        normalize_eeg=cfg.normalize_eeg,
        init=cfg.init,
        # [recipes] an encoder whose output is the embedding produces proj_dim (behind a linear head: bank) features
        encoder_kwargs=() if cfg.eeg_projection else (("out_features", feature_dim if cfg.eeg_head else proj_dim),),
        eeg_head=cfg.eeg_head,
        image_head=cfg.image_head,
        image_head_kwargs=head_kwargs(cfg.image_head, cfg.image_levels, cfg.image_bank_dims),
    )
    return HMAVD(mc)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module, total_steps: int) -> torch.optim.Optimizer:
    """SPRAdam (Eq. 16-20) when ``use_spr``, else ``torch.optim.Adam`` with the same settings."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.use_spr:
        from .spr import SPRAdam

        return SPRAdam(
            params,
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            weight_decay=cfg.weight_decay,
            sigma_max=cfg.spr_sigma_max,
            noise_power=cfg.spr_noise_power,
            total_steps=total_steps,
            seed=cfg.seed,
        )
    from .optim import build_optimizer  # [recipes] "adam" is torch.optim.Adam exactly as before

    return build_optimizer(params, cfg.optimizer, cfg.lr, (cfg.beta1, cfg.beta2), cfg.weight_decay)


class TrainStep:
    """One optimisation step (forward, loss, backward, MCDB, gradient norms, optimiser step).

    Shared by :func:`train` and ``benchmarks/bench_step_time.py``. Returns detached tensors /
    floats (no host synchronisation for the loss terms).
    """

    def __init__(
        self, cfg: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, dist_ctx: Any = None
    ):
        from .losses import hmavd_loss
        from .mcdb import MCDB, grad_norms

        self.cfg, self.model, self.optimizer = cfg, model, optimizer
        # [distributed] DDP-wrapped module for the training forward (``model`` itself when single-process)
        self.dist = dist_ctx
        self.forward_model = dist_ctx.wrap_model(model) if dist_ctx is not None else model
        self._loss, self._grad_norms = hmavd_loss, grad_norms
        tau = None if cfg.temperature == "learnable" else cfg.tau  # None: MCDB follows the learnable τ
        self.mcdb = MCDB(gamma=cfg.mcdb_gamma, tau=tau, mode=cfg.mcdb_mode) if cfg.use_mcdb and cfg.use_text else None

    def loss_terms(
        self,
        eeg: torch.Tensor,
        img: torch.Tensor,
        txt: torch.Tensor | None,
        training: bool = False,
        logits_out: dict | None = None,
    ) -> tuple[dict, dict]:
        model = self.forward_model if training else self.model  # [distributed] DDP forward when training
        from .optim import autocast  # [recipes] bf16 on CUDA when precision=bf16, else a no-op

        with autocast(eeg.device, self.cfg.precision):
            out = model(eeg, img, txt if self.cfg.use_text else None)  # dict of (B, D) features
        if training and self.dist is not None:
            out = self.dist.gather_outputs(out)  # [distributed] contrastive negatives from the global batch
        terms = self._loss(
            out, use_text=self.cfg.use_text, consistency_weight=self.cfg.consistency_weight, logits_out=logits_out
        )
        return out, terms

    def __call__(self, eeg: torch.Tensor, img: torch.Tensor, txt: torch.Tensor | None) -> dict[str, Any]:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits: dict[str, torch.Tensor] = {}  # the loss's (B, B) logits, reused by MCDB's Eq. 10
        out, terms = self.loss_terms(eeg, img, txt, training=True, logits_out=logits)  # eeg (B, C, T), img/txt (B, D)
        terms["total"].backward()
        logs: dict[str, Any] = {k: v.detach() for k, v in terms.items()}
        stats: dict[str, float] = {}
        if self.mcdb is not None:
            stats = self.mcdb.compute(out, logits)
            if self.cfg.mcdb_apply == "gradient":
                self.mcdb.apply(self.model, stats)  # Eq. 14: κ on the gradients, before Adam
            logs.update(stats)
        logs.update(self._grad_norms(self.model))
        if self.cfg.grad_clip > 0:  # [recipes] global norm clipping after κ, before the step
            from .optim import clip_gradients

            logs["grad_norm/preclip"] = clip_gradients(self.model.parameters(), self.cfg.grad_clip)
        current_sigma = getattr(self.optimizer, "current_sigma", None)
        if current_sigma is not None:
            logs["sigma"] = current_sigma()  # σ_t of Eq. 17 used by this step
        if self.cfg.mcdb_apply == "update" and stats:
            self._step_with_scaled_update(stats)
        else:
            self.optimizer.step()
        return logs

    def _step_with_scaled_update(self, stats: dict[str, float]) -> None:
        """Optimiser step, then each damped modality's update scaled by its κ (Eq. 15 after Adam)."""
        from .mcdb import scale_update

        groups = self.model.modality_parameters()
        scaled = {m: stats[f"kappa/{m}"] for m in groups if stats.get(f"kappa/{m}", 1.0) != 1.0}
        before = {m: [p.detach().clone() for p in groups[m]] for m in scaled}
        self.optimizer.step()
        for m, k in scaled.items():
            scale_update(groups[m], before[m], k)


@torch.no_grad()
def validation_loss(step: TrainStep, eeg: torch.Tensor, img: torch.Tensor, txt: torch.Tensor, batch_size: int) -> dict:
    """Mean validation loss terms over batches of ``batch_size`` (weighted by batch size)."""
    step.model.eval()
    sums: dict[str, float] = {}
    n = len(eeg)
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:  # fold a one-sample tail into the previous batch
        del bounds[-2]
    for a, b in zip(bounds[:-1], bounds[1:]):
        _, terms = step.loss_terms(eeg[a:b], img[a:b], txt[a:b])
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v) * (b - a)
    total_n = n
    return {k: v / max(total_n, 1) for k, v in sums.items()}


def _batches(n: int, batch_size: int, perm: torch.Tensor, min_size: int = 2) -> list[torch.Tensor]:
    """Index batches of a permutation; a trailing batch smaller than ``min_size`` is dropped.

    ``min_size`` is 2 (a contrastive batch needs a negative), or the number of ranks under DDP so that
    every rank's shard holds at least one sample.
    """
    return [perm[i : i + batch_size] for i in range(0, n, batch_size) if min(batch_size, n - i) >= min_size]


def _epoch_steps(
    step_fn: TrainStep,
    cfg: TrainConfig,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    perm: torch.Tensor,
    min_batch: int,
    dctx: Any,
    global_step: int,
    total_steps: int,
) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """The optimisation steps of one epoch over the permutation ``perm``: ``([(step, logs)], global step)``."""
    eeg, img, txt = batch  # (N, C, T), (N, D), (N, D_text)
    step_logs = []
    for idx in _batches(len(eeg), cfg.batch_size, perm, min_batch):
        idx = dctx.shard(idx)  # [distributed] this rank's contiguous part of the global batch
        apply_schedule(step_fn.optimizer, cfg, global_step, total_steps)  # [recipes] no-op if constant
        logs = step_fn(eeg[idx], img[idx], txt[idx])
        global_step += 1
        step_logs.append((global_step, logs))
    return step_logs, global_step


def _resident(data: Any, device: torch.device) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """The training and validation (EEG, image, text) arrays as tensors on the device, moved once."""

    def move(*arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
        return tuple(torch.as_tensor(x).to(device) for x in arrays)

    train_set = move(data.eeg, data.image_features, data.text_features)
    return train_set, move(data.val_eeg, data.val_image_features, data.val_text_features)


def _epoch_records(
    cfg: TrainConfig,
    epoch: int,
    global_step: int,
    step_logs: list[tuple[int, dict[str, Any]]],
    val: dict[str, float],
    best_val: float,
    t0: float,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The metrics lines of one epoch: one per step, then the epoch's (its ``val_loss`` selects the checkpoint;
    the training loss stands in without validation images; ``best``: it improved on ``best_val``)."""
    from .run_folder import to_jsonable

    records = [{"type": "step", "epoch": epoch, "step": s, **to_jsonable(lg)} for s, lg in step_logs]
    train_loss = float(np.mean([r["total"] for r in records]))
    val_loss = selection_loss(val, cfg.select_on) if val else train_loss
    rec = {
        "type": "epoch",
        "epoch": epoch,
        "step": global_step,
        "train_loss": train_loss,
        "val_loss": val_loss,
        **{f"val/{k}": v for k, v in val.items()},
        "best": val_loss < best_val,
        "time_s": time.perf_counter() - t0,
    }
    return records, rec


def train(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    dist_ctx: Any = None,
) -> Path:
    """Train one run; return its folder.

    Parameters
    ----------
    cfg : TrainConfig
    resume : bool
        Continue from ``<run dir>/last.safetensors`` (same config) instead of refusing an existing run.
    progress : bool
        Show a tqdm bar over epochs.
    on_epoch_end : callable, optional
        ``f(epoch, epoch_record)`` after the epoch's checkpoints are written (tests use it to
        simulate an interruption).
    dist_ctx : hmavd.distributed.DistContext, optional
        [distributed] default: :func:`hmavd.distributed.setup` (DDP under ``torchrun``, else one process).
    """
    from .distributed import setup as dist_setup  # [distributed]
    from .run_folder import RunWriter, load_data, resume_state

    cfg.check_paths()
    run_dir = run_dir_of(cfg)
    if (run_dir / "last.safetensors").exists() and not resume:
        raise UserError(f"run_name: {run_dir} already holds a run; pass --resume {run_dir} or another run_name=...")
    dctx = dist_ctx if dist_ctx is not None else dist_setup(cfg.device)  # [distributed]
    device = dctx.device if dctx.is_distributed or dist_ctx is not None else resolve_device(cfg.device)
    data = load_data(cfg)
    from .models.image_heads import check_bank_levels  # [recipes] blur_levels needs the bank's level count

    check_bank_levels(cfg.image_head, cfg.image_levels, data.cache.provenance, str(data.cache.path))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, *data.eeg.shape[1:], data.image_features.shape[1], data.text_features.shape[1])
    model = model.to(device)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    batch, val_batch = _resident(data, device)  # (N, C, T), (N, D), (N, D_text) each
    n = len(batch[0])
    min_batch = max(2, dctx.world_size)  # [distributed] every rank needs a sample of every batch
    steps_per_epoch = len(_batches(n, cfg.batch_size, torch.arange(n), min_batch))
    if steps_per_epoch == 0:
        raise UserError(f"batch_size: {n} training samples make no batch of >= 2; use more data")
    writer = RunWriter(cfg, data, run_dir, dctx.is_main)  # [distributed] only rank 0 writes files
    resuming = resume and writer.last_path.exists()
    if cfg.finetune:  # start from a trained model; only finetune_layers train (a resume reloads last.safetensors)
        from .finetune import apply_finetune

        apply_finetune(model, cfg, load=not resuming)
    optimizer = make_optimizer(cfg, model, cfg.epochs * steps_per_epoch)
    step_fn = TrainStep(cfg, model, optimizer, dctx if dctx.is_distributed else None)  # [distributed]
    start_epoch, global_step, best_val = 0, 0, math.inf
    if resuming:
        start_epoch, global_step, best_val = resume_state(cfg, writer.last_path, model, optimizer, gen, device)
    writer.start(start_epoch if resuming else None)
    log.info("training %s on %s: %d train / %d val samples", run_dir.name, device, n, len(val_batch[0]))
    show = progress and dctx.is_main  # [distributed]
    bar = tqdm(total=cfg.epochs, initial=start_epoch, desc=run_dir.name, disable=not show, unit="epoch")
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        # [distributed] every rank draws the same permutation; shard each batch here
        perm = torch.randperm(n, generator=gen).to(device)
        step_logs, global_step = _epoch_steps(
            step_fn, cfg, batch, perm, min_batch, dctx, global_step, cfg.epochs * steps_per_epoch
        )
        val = validation_loss(step_fn, *val_batch, cfg.batch_size) if len(val_batch[0]) >= 2 else {}
        records, rec = _epoch_records(cfg, epoch, global_step, step_logs, val, best_val, t0)
        best_val = min(best_val, rec["val_loss"])
        state = {"optimizer": optimizer.state_dict(), "global_step": global_step, "best_val": best_val}
        writer.end_epoch(model, epoch, rec["val_loss"], rec["best"], [*records, rec], state, gen, device)
        bar.update(1)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val=f"{rec['val_loss']:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, rec)
    bar.close()
    return run_dir
