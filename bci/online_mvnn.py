"""Online MVNN: the live session's own noise covariance, estimated as its epochs arrive.

Offline, ``hmavd-prepare`` whitens each session with ``W = Σ^(-1/2)`` of *that* session's noise
covariance ``Σ``: the standardised Ledoit–Wolf covariance of every epoch over its time samples,
averaged (:func:`hmavd.preprocessing.transforms.mvnn_covariance`, NICE's ``mvnn_dim="epochs"``). A
live session is a new session, so the training session's ``mvnn.npz`` is stale there. This module
keeps the running mean of the same per-epoch covariances: after ``n`` epochs it *is* the offline
average over those ``n`` epochs (equal up to float rounding), and ``W`` is computed from it with the
same :func:`~hmavd.preprocessing.transforms.whitening_matrix`.

Policy (``LiveConfig`` fields, docs/new-session.md):

- ``mvnn_online``: use it at all (off: the training matrix, as before).
- ``mvnn_warmup_epochs``: the training matrix (or none) until this many epochs are in.
- ``mvnn_freeze``: stop updating after this many epochs (0: keep updating all session).
- ``mvnn_update_every``: recompute ``W`` every this many epochs (``whitening_matrix`` of 63 channels
  takes ~10 ms on one thread; the covariance sum is updated with every epoch regardless).

An epoch is whitened with the estimate that already includes it (offline, an epoch's own session
matrix includes it too). Epochs enter unwhitened (preprocessed only) and leave whitened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from hmavd.errors import UserError
from hmavd.preprocessing.transforms import apply_whitening, shrunk_covariance_auto_batched, whitening_matrix

log = logging.getLogger(__name__)

__all__ = [
    "epoch_covariances",
    "running_mean_update",
    "relative_distance",
    "OnlineMVNN",
    "validate_mvnn",
]


def epoch_covariances(epochs: np.ndarray) -> np.ndarray:
    """Per-epoch noise covariance over time, as ``hmavd-prepare``'s NICE MVNN estimates it.

    Parameters
    ----------
    epochs : ndarray, shape (n_epochs, n_chans, n_times)
        Preprocessed (baselined, resampled, cropped), not whitened; model units (V).

    Returns
    -------
    ndarray, shape (n_epochs, n_chans, n_chans), float64
        Standardised Ledoit–Wolf covariance of each epoch's time samples (V²).
    """
    x = np.asarray(epochs, dtype=np.float64)
    if x.ndim != 3:
        raise UserError(f"mvnn: online epochs have shape {x.shape}; expected (n_epochs, n_chans, n_times)")
    return shrunk_covariance_auto_batched(np.swapaxes(x, 1, 2))  # (B, T, C) -> (B, C, C)


def running_mean_update(mean: np.ndarray | None, n: int, covs: np.ndarray) -> tuple[np.ndarray, int]:
    """Fold a batch of covariances into a running mean.

    Parameters
    ----------
    mean : ndarray, shape (C, C), or None
        Mean over the first ``n`` covariances (``None`` when ``n == 0``).
    n : int
        Number of covariances in ``mean``.
    covs : ndarray, shape (B, C, C)

    Returns
    -------
    (ndarray (C, C), int)
        The mean over all ``n + B`` and the new count.
    """
    covs = np.asarray(covs, dtype=np.float64)
    b = covs.shape[0]
    if b == 0:
        return mean, n
    batch = covs.mean(axis=0)  # (C, C)
    if mean is None or n == 0:
        return batch, b
    return mean + (batch - mean) * (b / (n + b)), n + b


def relative_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """``‖a − b‖_F / ‖b‖_F`` (NaN when either is missing); unitless."""
    if a is None or b is None:
        return float("nan")
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - b) / np.linalg.norm(b))


def validate_mvnn(cfg) -> None:
    """Check the ``mvnn_*`` fields of a :class:`~bci.engine.LiveConfig`; raise :class:`UserError`."""
    if cfg.mvnn_warmup_epochs < 1:
        raise UserError(
            f"mvnn_warmup_epochs: {cfg.mvnn_warmup_epochs} must be >= 1 (epochs before the online estimate "
            "replaces the training matrix; e.g. 50)"
        )
    if cfg.mvnn_freeze < 0:
        raise UserError(f"mvnn_freeze: {cfg.mvnn_freeze} must be >= 0 (0 = keep updating; N = freeze after N epochs)")
    if 0 < cfg.mvnn_freeze < cfg.mvnn_warmup_epochs:
        raise UserError(
            f"mvnn_freeze: {cfg.mvnn_freeze} is below mvnn_warmup_epochs={cfg.mvnn_warmup_epochs}: the online "
            "estimate would freeze before it is used; set mvnn_freeze >= mvnn_warmup_epochs or 0"
        )
    if cfg.mvnn_update_every < 1:
        raise UserError(f"mvnn_update_every: {cfg.mvnn_update_every} must be >= 1 (recompute W every N epochs)")


@dataclass
class OnlineMVNN:
    """Running MVNN estimate of one live session and the whitening it implies.

    Parameters
    ----------
    training : ndarray, shape (C, C), or None
        The training session's whitening matrix, used during warm-up (``None``: no whitening then).
    warmup_epochs : int
        Epochs needed before the online estimate is used.
    freeze : int
        Stop updating after this many epochs (0: never).
    update_every : int
        Recompute ``W`` every this many epochs.
    """

    training: np.ndarray | None
    warmup_epochs: int = 50
    freeze: int = 0
    update_every: int = 1
    n_epochs: int = 0
    covariance: np.ndarray | None = None  # (C, C) running mean, V²
    online: np.ndarray | None = None  # (C, C) W of the running mean when last recomputed
    n_at_online: int = 0  # epochs in ``online``
    changed_at_epoch: int = 0  # epoch count when the whitening in use last changed
    changed_at_s: float | None = None  # onset (s) of the epoch that made it change
    history: list[dict] = field(default_factory=list)  # one row per change of the whitening in use

    @classmethod
    def from_config(cls, cfg, training: np.ndarray | None) -> OnlineMVNN:
        return cls(training, cfg.mvnn_warmup_epochs, cfg.mvnn_freeze, cfg.mvnn_update_every)

    @property
    def frozen(self) -> bool:
        return 0 < self.freeze <= self.n_epochs

    @property
    def active(self) -> bool:
        """True once the online estimate is the whitening in use."""
        return self.online is not None and self.n_at_online >= self.warmup_epochs

    @property
    def whitening(self) -> np.ndarray | None:
        """The matrix in use: the online one after warm-up, else the training one (or None)."""
        return self.online if self.active else self.training

    def add(self, epochs: np.ndarray, onset_s: float | None = None) -> bool:
        """Fold unwhitened epochs ``(B, C, T)`` into the estimate; returns True if ``W`` in use changed."""
        if self.frozen or len(epochs) == 0:
            return False
        x = np.asarray(epochs)
        if self.freeze:
            x = x[: self.freeze - self.n_epochs]  # exactly ``freeze`` epochs in the estimate
        self.covariance, self.n_epochs = running_mean_update(self.covariance, self.n_epochs, epoch_covariances(x))
        due = self.n_epochs >= self.warmup_epochs and (
            self.n_epochs - self.n_at_online >= self.update_every or self.frozen or self.online is None
        )
        if not due:
            return False
        self.online, self.n_at_online = whitening_matrix(self.covariance), self.n_epochs
        self.changed_at_epoch, self.changed_at_s = self.n_epochs, onset_s
        self.history.append(
            {"n_epochs": self.n_epochs, "onset_s": onset_s, "distance_to_training": self.distance_to_training()}
        )
        if self.n_at_online == self.n_epochs and len(self.history) == 1:
            log.info(
                "online MVNN: warm-up done after %d epochs; whitening with the session's own estimate", self.n_epochs
            )
        if self.frozen:
            log.info("online MVNN: frozen after %d epochs", self.n_epochs)
        return True

    def whiten(self, epochs: np.ndarray) -> np.ndarray:
        """``(B, C, T)`` unwhitened -> whitened with the matrix in use, float32 (the model's input)."""
        w = self.whitening
        x = np.asarray(epochs, dtype=np.float64)  # (B, C, T)
        return (x if w is None else apply_whitening(x, w)).astype(np.float32)

    def distance_to_training(self) -> float:
        """Relative Frobenius distance of the online ``W`` from the training ``W`` (NaN before warm-up)."""
        return relative_distance(self.online, self.training)

    def report(self) -> dict:
        """What the status message and the session record carry (plain JSON types)."""
        return {
            "source": "online" if self.active else ("training" if self.training is not None else "none"),
            "n_epochs": self.n_epochs,
            "warmup_epochs": self.warmup_epochs,
            "frozen": self.frozen,
            "changed_at_epoch": self.changed_at_epoch,
            "changed_at_s": self.changed_at_s,
            "distance_to_training": self.distance_to_training(),
        }

    def message(self) -> str:
        """One line for the status messages."""
        r = self.report()
        if r["source"] != "online":
            return (
                f"MVNN: {r['source']} matrix, online estimate warming up ({self.n_epochs}/{self.warmup_epochs} epochs)"
            )
        state = "frozen" if self.frozen else "updating"
        return (
            f"MVNN: online estimate of this session, {self.n_epochs} epochs ({state}), last changed at epoch "
            f"{self.changed_at_epoch}, {r['distance_to_training']:.2f} from the training matrix"
        )

    def save(self, path) -> None:
        """Write ``mvnn_online.npz``: covariance (C, C), whitening (C, C), training (C, C), counts, history."""
        c = 0 if self.covariance is None else self.covariance.shape[0]
        empty = np.full((c, c), np.nan)
        hist = np.array(
            [
                [h["n_epochs"], np.nan if h["onset_s"] is None else h["onset_s"], h["distance_to_training"]]
                for h in self.history
            ],
            dtype=np.float64,
        ).reshape(-1, 3)
        np.savez(
            path,
            covariance=empty if self.covariance is None else self.covariance,
            whitening=empty if self.online is None else self.online,
            training=empty if self.training is None else self.training,
            n_epochs=self.n_epochs,
            n_at_whitening=self.n_at_online,
            warmup_epochs=self.warmup_epochs,
            freeze=self.freeze,
            history=hist,
        )
