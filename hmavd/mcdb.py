"""Modality Consistency Dynamic Balance (MCDB, Eq. 10-15).

Per batch, with L2-normalised shared-space features ``F^(eeg)`` and ``F^(m)`` (B, D):

* Eq. 10: ``S^(eeg,m) = softmax_rows(F^(eeg) F^(m)ᵀ / τ)`` (B, B).
* Contribution score of modality m (``mode="matched"``, the project's reading; docs/model.md, "MCDB"):
  the softmax mass on the matched pairs, ``c^(m) = Σ_i S^(eeg,m)_ii`` — the on-the-fly gradient
  modulation score of Peng et al. 2022 (ref. [20]).
  ``mode="literal"`` is Eq. 11 as printed: ``s^(eeg,m) = Σ_j S_{:,j}``, ``c^(m) = ‖s^(eeg,m)‖₁``. Each row
  of a row-softmax sums to 1, so the literal score is always B, ρ ≡ B/(B+ε) ≤ 1 and κ ≡ 1: read literally,
  MCDB is a no-op (``tests/hmavd/test_mcdb.py`` shows it).
* Eq. 12: ``ρ^(m) = c^(m) / (Σ_{n≠m} c^(n) + ε)`` over the non-EEG modalities present.
* Eq. 13: ``κ^(m) = 1 − tanh(γ (ρ^(m) − 1))`` if ρ^(m) > 1, else 1; floored at :data:`KAPPA_MIN`
  (float32 ``tanh`` rounds to exactly 1 once γ(ρ − 1) exceeds about 9, which would zero the modality's
  gradient, or with ``apply="update"`` freeze it).
* Eq. 14-15: the gradients of modality m's *own* parameters (θ^(m), see
  :meth:`hmavd.models.HMAVD.modality_parameters`) are multiplied by κ^(m) after ``backward()``
  (:meth:`MCDB.apply`). Eq. 15 (``θ ← θ − η κ ∇L``) restates that update for plain gradient descent with
  Eq. 14's κ-scaled gradient; we read it as one κ, not κ². Under Adam a constant κ on the gradient
  cancels (Adam divides the first moment by the root of the second; see docs/model.md, "MCDB under
  Adam"), so :func:`scale_update` offers κ on the parameter update after the optimiser step instead
  (``TrainConfig.mcdb_apply="update"``), which is Eq. 15 with Adam's step in place of η∇L.
* τ of Eq. 10: the model's temperature; with a learnable temperature MCDB follows it (``tau=None``:
  τ = 1 / the batch's ``logit_scale``).

EEG is the anchor every score is measured against, so ρ^(eeg) is undefined and **κ^(eeg) = 1** (EEG
gradients are never scaled). With fewer than two non-EEG modalities (Base = NICE) there is nothing to
balance: ρ = 1 and κ = 1.

Training step order: ``loss.backward()`` → ``stats = mcdb.compute(out, logits)`` (``logits``: the loss's
(B, B) EEG-modality logits, so Eq. 10 needs no second matrix product) → ``mcdb.apply(model, stats)`` →
``grad_norms(model)`` (logged, κ-scaled: Figure 8's data) → ``optimizer.step()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "MODALITY_KEYS",
    "KAPPA_MIN",
    "APPLY_MODES",
    "contribution_scores",
    "imbalance_rates",
    "kappa",
    "scale_update",
    "MCDB",
    "grad_norms",
]

#: Modality name -> key of its features in the model output.
MODALITY_KEYS = {"eeg": "eeg_features", "img": "image_features", "text": "text_features"}

#: Lower bound of κ (Eq. 13 approaches 0 for large ρ; float32 reaches exactly 0).
KAPPA_MIN = 1e-3

#: Where κ acts: ``"gradient"`` (Eq. 14, before the optimiser) or ``"update"`` (after the optimiser step).
APPLY_MODES = ("gradient", "update")


def contribution_scores(
    eeg_features: Tensor,
    modality_features: Mapping[str, Tensor],
    tau: float,
    mode: str = "matched",
    logits: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Contribution score of each modality to the EEG features (Eq. 10-11).

    Parameters
    ----------
    eeg_features : Tensor
        (B, D) L2-normalised EEG features.
    modality_features : mapping of str to Tensor
        ``{"img": (B, D), "text": (B, D)}`` L2-normalised; row i matches EEG row i.
    tau : float
        Softmax temperature τ of Eq. 10.
    mode : {"matched", "literal"}
        ``"matched"``: trace of S (softmax mass on matched pairs); ``"literal"``: ℓ1 norm of Eq. 11's
        column sum (always B).
    logits : mapping of str to Tensor, optional
        Precomputed (B, B) ``F^(eeg) F^(m)ᵀ / τ`` of some modalities (the loss's logits, see
        :meth:`MCDB.compute`); those modalities skip the matrix product.

    Returns
    -------
    dict of str to Tensor
        Scalar score per modality.
    """
    if mode not in ("matched", "literal"):
        raise ValueError(f"mode must be 'matched' or 'literal', got {mode!r}")
    scores = {}
    given = logits if logits is not None else {}
    for name, feats in modality_features.items():
        z = given[name] if name in given else eeg_features @ feats.t() / tau  # (B, B)
        sim = z.softmax(dim=-1)  # (B, B), Eq. 10
        if mode == "matched":
            scores[name] = sim.diagonal().sum()
        else:
            scores[name] = sim.sum(dim=1).abs().sum()  # ||sum_j S[:, j]||_1, Eq. 11
    return scores


def imbalance_rates(scores: Mapping[str, Tensor], eps: float = 1e-8) -> dict[str, Tensor]:
    """Eq. 12: ``ρ^(m) = c^(m) / (Σ_{n≠m} c^(n) + ε)``; ρ = 1 for a lone modality (nothing to balance)."""
    if len(scores) < 2:
        return {name: torch.ones_like(torch.as_tensor(s, dtype=torch.float32)) for name, s in scores.items()}
    total = sum(scores.values())
    return {name: s / (total - s + eps) for name, s in scores.items()}


def kappa(rho: Tensor, gamma: float, floor: float = KAPPA_MIN) -> Tensor:
    """Eq. 13: ``max(1 − tanh(γ (ρ − 1)), floor)`` where ρ > 1, else 1 (elementwise, same shape as ρ)."""
    rho = torch.as_tensor(rho, dtype=torch.float32)
    damped = (1.0 - torch.tanh(gamma * (rho - 1.0))).clamp(min=floor)
    return torch.where(rho > 1, damped, torch.ones_like(rho))


@torch.no_grad()
def scale_update(params: Sequence[Tensor], before: Sequence[Tensor], k: float) -> None:
    """Scale the last update of ``params`` by κ, in place: ``θ ← θ_before + κ (θ − θ_before)``.

    Parameters
    ----------
    params : sequence of Tensor
        Parameters just updated by the optimiser.
    before : sequence of Tensor
        Their values before the step (same shapes).
    k : float
        κ of their modality.
    """
    for p, b in zip(params, before):
        p.copy_(b + k * (p - b))


class MCDB:
    """Gradient balancing between the image and text modalities.

    Parameters
    ----------
    gamma : float
        Sensitivity γ of Eq. 13 (Table 4's best: 0.7).
    tau : float or None
        Temperature of Eq. 10; ``None`` follows the model's (learnable) temperature: τ = 1 / the
        ``logit_scale`` of the batch's model output.
    mode : {"matched", "literal"}
        Contribution score (see module docstring).
    eps : float
        ε of Eq. 12.
    modalities : sequence of str
        Non-EEG modalities to balance (names of :data:`MODALITY_KEYS`).
    """

    def __init__(
        self,
        gamma: float = 0.7,
        tau: float | None = 0.07,
        mode: str = "matched",
        eps: float = 1e-8,
        modalities: Sequence[str] = ("img", "text"),
    ):
        if mode not in ("matched", "literal"):
            raise ValueError(f"mode must be 'matched' or 'literal', got {mode!r}")
        self.gamma, self.tau, self.mode, self.eps = gamma, tau, mode, eps
        self.modalities = tuple(modalities)

    @torch.no_grad()
    def compute(self, out: Mapping[str, Tensor], logits: Mapping[str, Tensor] | None = None) -> dict[str, float]:
        """ρ and κ for one batch (no gradient).

        Parameters
        ----------
        out : mapping
            Model output with ``eeg_features`` and the features of the balanced modalities (a modality
            whose features are absent, e.g. text in Base, is skipped); ``logit_scale`` when ``tau`` is None
            or ``logits`` are given.
        logits : mapping, optional
            The loss's (B, B) logits ``logit_scale · F^(eeg) F^(m)ᵀ`` by modality
            (:func:`hmavd.losses.hmavd_loss`'s ``logits_out``): Eq. 10 reuses them, rescaled to this τ
            (by ``1 / (τ · logit_scale)``; none with ``tau=None``), instead of a second matrix product.

        Returns
        -------
        dict of str to float
            ``score/<m>``, ``rho/<m>``, ``kappa/<m>`` per present modality and ``kappa/eeg`` = 1.
        """
        feats = {m: out[MODALITY_KEYS[m]].detach() for m in self.modalities if MODALITY_KEYS[m] in out}
        eeg = out["eeg_features"].detach()
        tau = self.tau if self.tau is not None else float(1.0 / out["logit_scale"].detach())
        pre = {m: z.detach() for m, z in (logits or {}).items() if m in feats}
        if pre and self.tau is not None:  # the loss's logits are at 1/logit_scale: bring them to this τ
            factor = 1.0 / (self.tau * out["logit_scale"].detach())
            pre = {m: z * factor for m, z in pre.items()}  # (B, B) each
        scores = contribution_scores(eeg, feats, tau, self.mode, pre)
        rhos = imbalance_rates(scores, self.eps)
        names = list(scores)
        stats: dict[str, float] = {"kappa/eeg": 1.0}
        if not names:
            return stats
        rho = torch.stack([rhos[m] for m in names])  # (M,)
        table = torch.stack([torch.stack([scores[m] for m in names]), rho, kappa(rho, self.gamma)])
        values = table.tolist()  # one device sync for the whole table
        for j, m in enumerate(names):
            stats[f"score/{m}"] = values[0][j]
            stats[f"rho/{m}"] = values[1][j]
            stats[f"kappa/{m}"] = values[2][j]
        return stats

    @staticmethod
    @torch.no_grad()
    def apply(model: nn.Module, kappas: Mapping[str, float]) -> None:
        """Scale the ``.grad`` of each modality's own parameters by its κ (Eq. 14-15).

        Parameters
        ----------
        model : HMAVD
            Anything with ``modality_parameters() -> {name: [params]}``.
        kappas : mapping
            ``{"kappa/img": k, ...}`` as returned by :meth:`compute`, or ``{"img": k, ...}``; modalities
            without an entry (EEG) keep κ = 1.
        """
        groups = model.modality_parameters()
        for name, params in groups.items():
            k = kappas.get(f"kappa/{name}", kappas.get(name, 1.0))
            k = float(k)
            if k == 1.0:
                continue
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, k)


@torch.no_grad()
def grad_norms(model: nn.Module) -> dict[str, float]:
    """ℓ2 norm of the current gradients of each modality's parameters (Figure 8's data).

    Returns ``{"grad_norm/eeg": ..., "grad_norm/img": ..., "grad_norm/text": ...}`` (0.0 for a modality
    without parameters or gradients).
    """
    groups = model.modality_parameters()
    sq = []
    for params in groups.values():
        grads = [p.grad.detach() for p in params if p.grad is not None]
        sq.append(torch.stack(torch._foreach_norm(grads)).pow(2).sum() if grads else None)  # one call per group
    present = [v for v in sq if v is not None]
    values = iter(torch.stack(present).sqrt().tolist() if present else [])  # one device sync
    return {f"grad_norm/{name}": (next(values) if v is not None else 0.0) for name, v in zip(groups, sq)}
