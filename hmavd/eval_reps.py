"""Accuracy against the number of repetitions averaged (``hmavd-eval --reps 1,2,5,10,20,80``).

Published ThingsEEG2 numbers average each test image's EEG over its 80 repetitions before encoding.
A live session sees the repetitions one at a time; ``bci.accumulate`` keeps the running average per
image and this module gives the offline reference: for every ``k``, each image's **first** ``k``
repetitions (chronological: session, then repetition, when the split records it) averaged, encoded
and scored against the templates. ``average="epochs"`` averages the whitened EEG before the encoder
(the published protocol); ``average="embeddings"`` encodes every repetition and averages the
L2-normalised embeddings. Images with fewer than ``k`` repetitions are left out of row ``k``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .errors import UserError
from .evaluate import topk_accuracy

log = logging.getLogger(__name__)

__all__ = [
    "AVERAGES",
    "parse_reps",
    "first_k_mean",
    "chronological_order",
    "reps_curve",
    "evaluate_checkpoint_reps",
    "reps_csv",
]

AVERAGES = ("epochs", "embeddings")


def parse_reps(text: str, n_reps: int | None = None) -> list[int]:
    """``"1,2,5,80"`` -> ``[1, 2, 5, 80]``; each >= 1 (and <= ``n_reps`` when given: larger ones are dropped)."""
    try:
        ks = sorted({int(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        raise UserError(f"--reps: {text!r} is not a comma-separated list of integers (e.g. 1,2,5,10,20,80)") from None
    if not ks or ks[0] < 1:
        raise UserError(f"--reps: {text!r} must list repetition counts >= 1 (e.g. 1,2,5,10,20,80)")
    if n_reps is not None:
        dropped = [k for k in ks if k > n_reps]
        if dropped:
            log.warning("--reps: %s exceed the %d repetitions per image; dropped", dropped, n_reps)
        ks = [k for k in ks if k <= n_reps]
    return ks


def chronological_order(provenance: np.ndarray | None, n_reps: int) -> np.ndarray:
    """Per-image repetition order by (session, repetition): (n_img, R) indices; identity without provenance."""
    if provenance is None:
        return np.arange(n_reps)[None]  # (1, R) broadcast over images
    p = np.asarray(provenance)  # (n_img, R, 2)
    return np.lexsort((p[..., 1], p[..., 0]), axis=-1)  # (n_img, R)


def first_k_mean(x: np.ndarray, k: int, order: np.ndarray | None = None) -> np.ndarray:
    """Mean of each image's first ``k`` repetitions.

    Parameters
    ----------
    x : ndarray, shape (n_img, R, ...)
        Epochs (..., = C, T) or embeddings (..., = D) per image and repetition.
    k : int
        1 <= k <= R.
    order : ndarray, shape (n_img, R) or (1, R), optional
        Repetition order (:func:`chronological_order`); array order when ``None``.

    Returns
    -------
    ndarray, shape (n_img, ...), float64
    """
    x = np.asarray(x)
    if not 1 <= k <= x.shape[1]:
        raise UserError(f"reps: k={k} is outside 1…{x.shape[1]} repetitions per image")
    if order is not None:
        idx = np.broadcast_to(order, x.shape[:2])[:, :k]  # (n_img, k)
        sel = np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)  # (n_img, k, ...)
    else:
        sel = x[:, :k]
    return sel.mean(axis=1, dtype=np.float64)


def _normalise(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)


def reps_curve(
    encode: Callable[[np.ndarray], np.ndarray],
    eeg: np.ndarray,
    labels: np.ndarray,
    templates: np.ndarray,
    ks: Sequence[int],
    average: str = "epochs",
    order: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Top-1/top-5 of k-repetition averages, one row per ``k``.

    Parameters
    ----------
    encode : callable
        ``(B, C, T) float32 -> (B, D)`` EEG embeddings.
    eeg : ndarray, shape (n_img, R, C, T)
        Whitened test epochs per image and repetition.
    labels : ndarray, shape (n_img,)
        Template row of each image.
    templates : ndarray, shape (K, D)
    ks : sequence of int
    average : {"epochs", "embeddings"}
    order : ndarray, optional
        Repetition order (:func:`chronological_order`).

    Returns
    -------
    list of dict
        ``{"k", "top1", "top5", "n_images", "average"}`` (accuracies as fractions).
    """
    if average not in AVERAGES:
        raise UserError(f"average: {average!r} is not one of {AVERAGES}")
    eeg = np.asarray(eeg)
    n_img, n_rep = eeg.shape[:2]
    tmpl = _normalise(templates)  # (K, D)
    emb = None
    if average == "embeddings":
        flat = eeg.reshape(n_img * n_rep, *eeg.shape[2:]).astype(np.float32)  # (N·R, C, T)
        emb = _normalise(encode(flat)).reshape(n_img, n_rep, -1)  # (n_img, R, D)
    rows = []
    for k in ks:
        if average == "epochs":
            feats = _normalise(encode(first_k_mean(eeg, k, order).astype(np.float32)))  # (n_img, D)
        else:
            feats = first_k_mean(emb, k, order)  # (n_img, D)
        scores = feats @ tmpl.T  # (n_img, K)
        top1, top5 = topk_accuracy(scores, labels, 1), topk_accuracy(scores, labels, 5)
        rows.append({"k": int(k), "top1": top1, "top5": top5, "n_images": int(n_img), "average": average})
    return rows


def evaluate_checkpoint_reps(
    path: str,
    ks: str | Sequence[int],
    data_dir: str | None = None,
    subject: int | None = None,
    kind: str = "image",
    image_source: str = "test-images",
    device: str = "cpu",
    averages: Sequence[str] = AVERAGES,
    features: str | None = None,
) -> list[dict[str, Any]]:
    """:func:`reps_curve` of a checkpoint on its subject's per-repetition test split (both averages).

    Templates: the checkpoint's stored gallery, or the feature cache ``features`` (the evaluation's rule,
    :func:`hmavd.evaluate.checkpoint_template_source`).
    """
    import torch

    from .checkpoint import load_checkpoint
    from .data.thingseeg2 import load_split, split_file, subject_dir
    from .datasets import _prepare_split, load_image_metadata, metadata_path
    from .evaluate import checkpoint_template_source, encode_eeg_batched
    from .templates import templates_from

    model, info = load_checkpoint(path, map_location=device)
    model.eval()
    tc = info.get("train_config") or {}
    data_dir = data_dir if data_dir is not None else tc.get("data_dir")
    subject = int(subject if subject is not None else tc.get("subject", 1))
    if not data_dir:
        raise UserError(f"data_dir: the checkpoint {path} names no data_dir; pass --data DIR")
    meta = load_image_metadata(metadata_path(data_dir))
    folder = subject_dir(Path(data_dir) / "preprocessed_eeg", subject)
    split = load_split(split_file(folder, "test"), expected_conditions=len(meta.test_img_files))
    split = _prepare_split(split, info["ch_names"], tc.get("tmin_s"), tc.get("tmax_s"))
    labels = meta.concept_index("test")
    source = checkpoint_template_source(info, SimpleNamespace(concepts=meta.test_concepts), data_dir, features, path)
    tmpl = templates_from(source, model, kind, image_source, labels, device).detach().float().cpu().numpy()  # (K, D)

    def encode(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return encode_eeg_batched(model, x, device).float().cpu().numpy()  # (B, D)

    k_list = parse_reps(ks, split.n_reps) if isinstance(ks, str) else [k for k in ks if k <= split.n_reps]
    order = chronological_order(split.provenance, split.n_reps)
    rows = []
    for avg in averages:
        rows += reps_curve(encode, split.eeg, labels, tmpl, k_list, avg, order)
    for r in rows:
        r.update(subject=subject, templates=kind)
    return rows


def reps_csv(evals: Sequence[dict[str, Any]]) -> str:
    """``run,selection,subject,templates,average,k,n_images,top1,top5`` (accuracies in %) of every
    evaluation's ``reps`` (``selection``: ``val-selected`` or ``last``, the checkpoint's epoch)."""
    lines = ["run,selection,subject,templates,average,k,n_images,top1,top5"]
    for ev in evals:
        run = f"{ev.get('run', '')},{ev.get('selection', '')}"
        for r in ev.get("reps") or []:
            acc = f"{100 * r['top1']:.2f},{100 * r['top5']:.2f}"
            lines.append(f"{run},{r['subject']},{r['templates']},{r['average']},{r['k']},{r['n_images']},{acc}")
    return "\n".join(lines) + "\n"
