"""Scale-out training under ``torchrun`` (DDP): process-group set-up, sharding and feature gathering.

``hmavd-train`` runs unchanged as one process or under ``torchrun --nproc-per-node N``. The
contract (see ``docs/distributed.md``):

* :func:`setup` reads the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``MASTER_PORT``) and initialises the process group — NCCL on CUDA, gloo on CPU.
  Without those variables it returns a single-process context and every method is a no-op.
* Every rank draws the **same** seeded permutation; a global batch of ``batch_size`` indices is
  cut into ``world_size`` contiguous shards (:meth:`DistContext.shard`), one per rank.
* **Negatives are gathered across ranks** (always, in ``hmavd-train``): each rank encodes its
  shard, then :meth:`DistContext.gather_outputs` all-gathers the per-sample features *with
  gradient* in rank order, so every rank evaluates the contrastive loss on the whole global batch
  (the same ``B × B`` logits as one process). Every rank thus computes the same global loss ``L``;
  the gather's backward sums ``∂L/∂F`` over ranks (``world_size ×``) and keeps this rank's rows, DDP
  averages parameter gradients (``÷ world_size``), and the result is one process's gradient on the
  global batch. MCDB's ρ/κ (from the gathered features), the gradient norms (after DDP's
  all-reduce) and SPR's seeded noise are therefore the same on every rank and equal to one process's.
  ``setup(gather_negatives=False)`` gives each rank only its own shard as negatives (a smaller
  effective contrastive batch; cheaper, not equal to one process).
* BatchNorm: on CUDA :meth:`DistContext.wrap_model` converts BatchNorm to ``SyncBatchNorm`` so the
  statistics are those of the global batch; PyTorch's SyncBatchNorm does not run on CPU, so under
  gloo BatchNorm uses per-rank statistics (the usual DDP behaviour; losses then differ from one
  process by the BN-statistics effect only). Dropout masks differ from one process's (each rank
  draws its own for its shard), so with dropout on the match holds in distribution only.
* Only rank 0 writes files and logs at INFO (:func:`setup_rank_logging`); all ranks keep identical
  weights, so validation can run on every rank without communication.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "DistContext",
    "setup",
    "cleanup",
    "torchrun_env",
    "shard_bounds",
    "gather_with_grad",
    "fan_out",
    "local_context",
    "setup_rank_logging",
]

T = TypeVar("T")


def torchrun_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from the ``torchrun`` environment, or ``None`` when absent."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise UserError(
            f"RANK/WORLD_SIZE: {env.get('RANK')!r}/{env.get('WORLD_SIZE')!r} are not integers; "
            "launch with torchrun or unset them"
        ) from None
    if not 0 <= rank < world:
        raise UserError(f"RANK: {rank} is outside 0..WORLD_SIZE-1 ({world - 1}); launch with torchrun")
    return rank, world, local


def shard_bounds(n: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` of each rank's shard of ``n`` items (sizes differ by at most one).

    Same split as ``torch.tensor_split``: the first ``n % world_size`` ranks get one extra item.
    """
    base, extra = divmod(int(n), int(world_size))
    bounds, start = [], 0
    for r in range(world_size):
        stop = start + base + (1 if r < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class _GatherWithGrad(torch.autograd.Function):
    """All-gather rows of unequal counts; backward sums the gradient over ranks and keeps own rows."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: tuple[int, ...], rank: int, group: Any) -> Tensor:  # noqa: D102
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        n_max = max(sizes)
        x = x.contiguous()
        if x.shape[0] < n_max:  # gloo/NCCL all_gather need equal shapes: pad, then drop the padding
            pad = x.new_zeros((n_max - x.shape[0], *x.shape[1:]))
            x = torch.cat([x, pad], dim=0)
        bufs = [torch.empty_like(x) for _ in sizes]
        dist.all_gather(bufs, x, group=group)
        return torch.cat([b[:s] for b, s in zip(bufs, sizes)], dim=0)  # (sum(sizes), ...)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None


def gather_with_grad(x: Tensor, sizes: Sequence[int] | None = None, group: Any = None) -> Tensor:
    """All-gather ``x`` (local rows) from every rank in rank order, differentiably.

    Parameters
    ----------
    x : Tensor, shape (n_local, ...)
        This rank's rows.
    sizes : sequence of int, optional
        Rows held by each rank; when ``None`` they are all-gathered first (one small collective).

    Returns
    -------
    Tensor, shape (sum(sizes), ...)
        Rows of rank 0, then rank 1, …; gradients flow back to every rank's own rows (summed
        over the ranks' losses).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return x
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if sizes is None:
        n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
        ns = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(ns, n, group=group)
        sizes = [int(v.item()) for v in ns]
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != world or sizes[rank] != x.shape[0]:
        raise ValueError(f"sizes {sizes} do not match world size {world} / local rows {x.shape[0]}")
    return _GatherWithGrad.apply(x, sizes, rank, group)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes
    ----------
    rank, world_size, local_rank : int
        ``0, 1, 0`` in a plain single-process run.
    backend : str or None
        ``"nccl"``, ``"gloo"`` or ``None`` (not distributed).
    device : torch.device
        This rank's device (``cuda:<local_rank>`` under NCCL).
    gather_negatives : bool
        Whether the contrastive loss sees the whole global batch (see module docstring).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    gather_negatives: bool = True

    @property
    def is_distributed(self) -> bool:
        """True when a process group with more than one rank is active."""
        return self.backend is not None and self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0: the only rank that writes files, checkpoints and progress bars."""
        return self.rank == 0

    # --- model ---------------------------------------------------------------------------------
    def wrap_model(self, model: nn.Module, sync_batchnorm: bool = True, **ddp_kwargs: Any) -> nn.Module:
        """Wrap ``model`` in DDP (identity when not distributed).

        Keep a reference to the unwrapped model for ``modality_parameters()``, MCDB, checkpoints
        and evaluation; call the *wrapped* module's ``forward`` in the training step.
        On CUDA BatchNorm layers become ``SyncBatchNorm`` when ``sync_batchnorm``.
        """
        if not self.is_distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        if sync_batchnorm and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, **ddp_kwargs)

    # --- data ----------------------------------------------------------------------------------
    def shard(self, batch_idx: Tensor) -> Tensor:
        """This rank's contiguous slice of a global batch of indices (the whole batch when single)."""
        if not self.is_distributed:
            return batch_idx
        start, stop = shard_bounds(len(batch_idx), self.world_size)[self.rank]
        return batch_idx[start:stop]

    def shard_sizes(self, n_global: int) -> tuple[int, ...]:
        """Rows of a global batch of ``n_global`` held by each rank."""
        return tuple(b - a for a, b in shard_bounds(n_global, self.world_size))

    def gather_features(self, x: Tensor, n_global: int | None = None) -> Tensor:
        """All-gather per-sample features with gradient (identity when single or not gathering).

        Parameters
        ----------
        x : Tensor, shape (n_local, D)
        n_global : int, optional
            Size of the global batch this shard came from (saves one collective).
        """
        if not (self.is_distributed and self.gather_negatives):
            return x
        sizes = self.shard_sizes(n_global) if n_global is not None else None
        return gather_with_grad(x, sizes)

    def gather_outputs(self, out: Mapping[str, Any], n_global: int | None = None) -> dict[str, Any]:
        """Gather every per-sample tensor of a model output dict (``(n_local, ...)``); keep the rest.

        ``eeg_features``, ``image_features``, ``text_features``, ``text_adapted``, ``text_raw`` are
        gathered; scalars such as ``logit_scale`` are passed through.
        """
        if not (self.is_distributed and self.gather_negatives):
            return dict(out)
        n_local = None
        for key in ("eeg_features", "image_features"):
            if isinstance(out.get(key), Tensor):
                n_local = out[key].shape[0]
                break
        res: dict[str, Any] = {}
        for key, val in out.items():
            if isinstance(val, Tensor) and val.ndim >= 1 and n_local is not None and val.shape[0] == n_local:
                res[key] = self.gather_features(val, n_global)
            else:
                res[key] = val
        return res

    # --- small collectives ---------------------------------------------------------------------
    def barrier(self) -> None:
        """Wait for every rank (no-op when single)."""
        if self.is_distributed:
            dist.barrier()

    def all_reduce_mean(self, value: float) -> float:
        """Mean of a Python float over ranks (for logging)."""
        if not self.is_distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (e.g. a run directory chosen by rank 0)."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def setup(
    device: str = "auto",
    gather_negatives: bool = True,
    backend: str | None = None,
    timeout_s: float = 1800.0,
) -> DistContext:
    """Initialise the process group from the ``torchrun`` environment (single process otherwise).

    Parameters
    ----------
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``. Under NCCL each rank uses
        ``cuda:<LOCAL_RANK>``.
    gather_negatives : bool
        Contrastive negatives from the whole global batch (default) or the local shard only.
    backend : str, optional
        Force ``"gloo"`` or ``"nccl"``; default NCCL on CUDA, gloo on CPU.
    timeout_s : float
        Collective timeout in seconds.

    Returns
    -------
    DistContext
        Calling it twice in one process returns the context of the existing group.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: {device!r} but no CUDA device is visible; use device=cpu or device=auto")
    env = torchrun_env()
    if env is None or env[1] == 1:
        dev = torch.device(device if device not in ("auto",) else ("cuda" if use_cuda else "cpu"))
        return DistContext(device=dev, gather_negatives=gather_negatives)
    rank, world, local = env
    backend = backend or ("nccl" if use_cuda else "gloo")
    if backend not in ("nccl", "gloo"):
        raise UserError(f"backend: {backend!r} is not supported; use 'nccl' (CUDA) or 'gloo' (CPU)")
    if backend == "nccl":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    ctx = DistContext(rank, world, local, backend, dev, gather_negatives)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s)
        )
        atexit.register(cleanup)
        setup_rank_logging(ctx)  # ranks > 0 keep warnings and errors only
        log.info("DDP: %d ranks with %s, negatives %s", world, backend, "gathered" if gather_negatives else "local")
    return ctx


def cleanup() -> None:
    """Destroy the process group if one is active."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_context(device: str = "auto") -> DistContext:
    """A single-process context for a ``torchrun`` process that trains on its own (subject fan-out).

    No process group is created; on CUDA the process uses ``cuda:<LOCAL_RANK>`` so the processes of
    one node spread over its GPUs.
    """
    env = torchrun_env()
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and device in ("auto", "cuda") and env is not None:
        dev = torch.device("cuda", env[2] % max(1, torch.cuda.device_count()))
    else:
        dev = torch.device(("cuda" if use_cuda else "cpu") if device == "auto" else device)
    return DistContext(device=dev)  # rank 0 of its own one-process world: it writes its own runs


def fan_out(items: Sequence[T], environ: Mapping[str, str] | None = None) -> list[T]:
    """This process's share of independent jobs (e.g. subjects) under ``torchrun``: ``items[rank::world]``.

    Used by ``hmavd-train --subject all distributed=subjects``: each rank trains whole subjects on
    its own (no process group, no gradient exchange). Without ``torchrun`` all items are returned.
    """
    env = torchrun_env(environ)
    if env is None:
        return list(items)
    rank, world, _ = env
    return list(items)[rank::world]


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return self.rank == 0 or record.levelno >= logging.WARNING


def setup_rank_logging(ctx: DistContext) -> None:
    """Let only rank 0 log below WARNING; other ranks still report warnings and errors."""
    if not ctx.is_distributed:
        return
    root = logging.getLogger()
    for h in root.handlers:
        if not any(isinstance(f, _RankFilter) for f in h.filters):
            h.addFilter(_RankFilter(ctx.rank))
