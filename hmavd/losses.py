"""Contrastive and cosine losses of HMAVD (Eq. 2-4, 7), returned as named terms.

Total loss, exactly (``w`` = ``consistency_weight``)::

    with text:    total = (ce_eeg_img + ce_img_eeg + ce_eeg_text + ce_text_eeg + cos_img_text) / 5   (Eq. 2)
                          + w * adapter_consistency                      (Eq. 7, only when adapters are on)
    Base (NICE):  total = (ce_eeg_img + ce_img_eeg) / 2                  (NICE's loss)
                          + w * adapter_consistency                      (only when adapters are on)

``alignment`` is the first line alone (Eq. 2, or NICE's mean). Eq. 7 is read as the loss
``1 − cos(A_t(F), F)`` (the paper *maximises* the cosine, Eq. 7). The paper does not say how L_r enters
the total; adding it with weight 1 is our choice (``consistency_weight``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["clip_ce", "cosine_loss", "adapter_consistency", "hmavd_loss"]


def clip_ce(a: Tensor, b: Tensor, logit_scale: Tensor | float) -> tuple[Tensor, Tensor]:
    """Eq. 3 in both directions for a batch of matched pairs.

    Parameters
    ----------
    a, b : Tensor
        L2-normalised features (B, D); row i of ``a`` matches row i of ``b``.
    logit_scale : Tensor or float
        1/τ.

    Returns
    -------
    (Tensor, Tensor)
        Cross-entropy a→b (rows of ``a`` classify over ``b``) and b→a, targets ``arange(B)``.
    """
    return _clip_ce_and_logits(a, b, logit_scale)[:2]


def _clip_ce_and_logits(a: Tensor, b: Tensor, logit_scale: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`clip_ce`'s two terms and the (B, B) logits ``logit_scale · a bᵀ`` they were computed from."""
    logits = logit_scale * a @ b.t()  # (B, B)
    target = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits, target), F.cross_entropy(logits.t(), target), logits


def cosine_loss(x: Tensor, y: Tensor) -> Tensor:
    """Eq. 4: ``1 − mean_i cos(x_i, y_i)`` for (B, D) inputs (need not be normalised)."""
    return 1.0 - F.cosine_similarity(x, y, dim=-1).mean()


def adapter_consistency(adapted: Tensor, original: Tensor) -> Tensor:
    """Eq. 7 as a loss: ``1 − mean_i cos(A_t(F)_i, F_i)`` for (B, d) inputs."""
    return cosine_loss(adapted, original)


def hmavd_loss(
    out: dict[str, Tensor],
    use_text: bool,
    consistency_weight: float = 1.0,
    logits_out: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """All loss terms of one batch, by name, and their documented ``total``.

    Parameters
    ----------
    out : dict
        Output of :meth:`hmavd.models.HMAVD.forward`.
    use_text : bool
        Include the text terms (Eq. 2's five-term mean) or not (NICE's two-term mean).
    consistency_weight : float
        Weight of ``adapter_consistency`` (added only when ``out`` holds ``text_adapted``).
    logits_out : dict, optional
        Filled with the detached (B, B) logits ``logit_scale · F^(eeg) F^(m)ᵀ`` of the contrastive terms,
        keyed by modality (``"img"``, ``"text"``), so that MCDB's Eq. 10 reuses them
        (:meth:`hmavd.mcdb.MCDB.compute`) instead of multiplying the features again.

    Returns
    -------
    dict of Tensor
        ``ce_eeg_img``, ``ce_img_eeg``; with text ``ce_eeg_text``, ``ce_text_eeg``, ``cos_img_text``;
        with adapters ``adapter_consistency``; ``alignment`` and ``total`` (see module docstring).
    """
    scale = out["logit_scale"]
    eeg, img = out["eeg_features"], out["image_features"]
    terms: dict[str, Tensor] = {}
    logits: dict[str, Tensor] = {}
    terms["ce_eeg_img"], terms["ce_img_eeg"], logits["img"] = _clip_ce_and_logits(eeg, img, scale)
    if use_text:
        text = out["text_features"]
        terms["ce_eeg_text"], terms["ce_text_eeg"], logits["text"] = _clip_ce_and_logits(eeg, text, scale)
        terms["cos_img_text"] = cosine_loss(img, text)
    alignment = torch.stack(list(terms.values())).mean()
    total = alignment
    if use_text and "text_adapted" in out:
        terms["adapter_consistency"] = adapter_consistency(out["text_adapted"], out["text_raw"])
        total = total + consistency_weight * terms["adapter_consistency"]
    if logits_out is not None:
        logits_out.update({m: v.detach() for m, v in logits.items()})  # (B, B) each
    terms["alignment"] = alignment
    terms["total"] = total
    return terms
