"""Zero-shot evaluation (paper §4.2, Table 2): metrics, templates, checkpoints, result tables.

Protocol (docs/training.md, "Zero-shot evaluation"): test EEG is averaged over its repetitions and
encoded; every test concept gets a template (image, text or fused, encoded by the model's own template
branch); scores are cosine similarities (``scoring="cosine"``) or, as NICE's reference evaluation scores,
the dot product of the normalised EEG embedding with the *unnormalised* template (``scoring="dot"``:
for the NICE rows, whose image side is the identity, the raw CLIP centre features); accuracy is
200-way top-1/top-5 plus seeded 2/4/10/50/100-way. Image templates come
from the **test-images** (the feature of the concept's test image, mean when a concept has several)
or the per-concept **centers** (mean feature of other images of the concept, NICE's reference); the
source is part of every result label (``image[test-images]``, ``fused[centers]``, ``text``), and so is a
non-default scoring (``image[centers,dot]``, ``text[dot]``).
Checkpoints are selected on validation loss during training, never here.

Ties: a label counts as within top-k only if fewer than k *other* templates score >= its score.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "TEMPLATE_KINDS",
    "IMAGE_SOURCES",
    "SCORINGS",
    "DEFAULT_WAYS",
    "topk_accuracy",
    "n_way_accuracy",
    "zero_shot",
    "concept_image_features",
    "build_templates",
    "template_label",
    "evaluate_model",
    "evaluate_checkpoint",
    "aggregate",
    "table_markdown",
    "results_csv",
]

TEMPLATE_KINDS = ("image", "text", "fused")
IMAGE_SOURCES = ("test-images", "centers")
#: ``cosine``: normalised EEG · normalised template; ``dot``: normalised EEG · raw template (NICE).
SCORINGS = ("cosine", "dot")
DEFAULT_WAYS = (2, 4, 10, 50, 100, 200)


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def _ranks(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Number of other (allowed) templates scoring >= the true one, per row: (N,) int."""
    true = scores[np.arange(len(labels)), labels][:, None]  # (N, 1)
    ge = scores >= true
    ge[np.arange(len(labels)), labels] = False
    if mask is not None:
        ge &= mask
    return ge.sum(axis=1)


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (N, K) and labels (N,), got {scores.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must index the {scores.shape[1]} templates")


def topk_accuracy(scores: Any, labels: Any, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores.

    Parameters
    ----------
    scores : array, shape (N, K)
        Similarity of each test trial to each template.
    labels : array of int, shape (N,)
        Template index of the correct class.
    k : int
    """
    s, y = _as_numpy(scores), np.asarray(labels, dtype=np.int64)
    _check(s, y)
    return float(np.mean(_ranks(s, y) < k)) if len(y) else float("nan")


def n_way_accuracy(scores: Any, labels: Any, n_way: int, k: int = 1, seed: int = 0, n_draws: int = 100) -> float:
    """Seeded n-way top-k accuracy: each row competes with ``n_way - 1`` random distractor classes.

    For every draw and row, ``n_way - 1`` distractors are sampled without replacement from the other
    templates (a ``numpy.random.default_rng(seed)`` stream); the accuracy is the mean over rows and
    draws. ``n_way`` = number of templates is the exact full-way accuracy (no sampling).
    """
    s, y = _as_numpy(scores), np.asarray(labels, dtype=np.int64)
    _check(s, y)
    n, kk = s.shape
    if not 2 <= n_way <= kk:
        raise ValueError(f"n_way must be in [2, {kk}], got {n_way}")
    if n_way == kk:
        return topk_accuracy(s, y, k)
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    hits = 0.0
    for _ in range(n_draws):
        key = rng.random((n, kk))  # (N, K) random priorities
        key[rows, y] = -1.0  # the true class is always drawn
        chosen = np.argpartition(key, n_way - 1, axis=1)[:, :n_way]  # (N, n_way)
        mask = np.zeros((n, kk), dtype=bool)
        mask[rows[:, None], chosen] = True
        hits += float(np.mean(_ranks(s, y, mask) < k))
    return hits / n_draws


def zero_shot(
    scores: Any,
    labels: Any,
    ks: Sequence[int] = (1, 5),
    ways: Sequence[int] = DEFAULT_WAYS,
    seed: int = 0,
    n_draws: int = 100,
) -> dict[str, float]:
    """Full-way top-k (``top1``, ``top5``) and n-way top-1 (``2way_top1`` …) for ways below K."""
    s = _as_numpy(scores)
    out = {f"top{k}": topk_accuracy(s, labels, k) for k in ks}
    for w in ways:
        if 2 <= w < s.shape[1]:
            out[f"{w}way_top1"] = n_way_accuracy(s, labels, w, 1, seed, n_draws)
    out["n_templates"] = int(s.shape[1])
    return out


def concept_image_features(image_features: np.ndarray, image_labels: np.ndarray, n_concepts: int) -> np.ndarray:
    """Per-concept image feature: mean of the concept's images (the image itself when it has one).

    Returns (n_concepts, D).
    """
    image_features = np.asarray(image_features, dtype=np.float64)
    out = np.zeros((n_concepts, image_features.shape[1]))
    np.add.at(out, image_labels, image_features)
    counts = np.bincount(image_labels, minlength=n_concepts)
    if (counts == 0).any():
        raise UserError(f"features: {int((counts == 0).sum())} test concepts have no test image; check metadata")
    return (out / counts[:, None]).astype(np.float32)


def template_label(kind: str, image_source: str, scoring: str = "cosine") -> str:
    """``image[test-images]``, ``fused[centers]``, ``text``; ``scoring="dot"`` adds it: ``image[centers,dot]``."""
    parts = ([] if kind == "text" else [image_source]) + ([] if scoring == "cosine" else [scoring])
    return f"{kind}[{','.join(parts)}]" if parts else kind


def build_templates(
    model: Any,
    cache: Any,
    kind: str,
    image_source: str = "test-images",
    image_labels: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    scoring: str = "cosine",
) -> torch.Tensor:
    """Encode one template per test concept (rows in the cache's ``test_concepts`` order).

    Parameters
    ----------
    model : HMAVD
    cache : FeatureCache
    kind : {"image", "text", "fused"}
    image_source : {"test-images", "centers"}
    image_labels : array of int, shape (n_test_images,), optional
        Concept index of each test image (default: image i is concept i).
    scoring : {"cosine", "dot"}
        ``"cosine"``: L2-normalised templates; ``"dot"``: the template branch's output before its final
        normalisation (NICE scores raw centre features).

    Returns
    -------
    Tensor, shape (n_test_concepts, D), L2-normalised for ``"cosine"``.
    """
    if kind not in TEMPLATE_KINDS:
        raise UserError(f"--templates: {kind!r} is not one of {TEMPLATE_KINDS}")
    if image_source not in IMAGE_SOURCES:
        raise UserError(f"--image-source: {image_source!r} is not one of {IMAGE_SOURCES}")
    if scoring not in SCORINGS:
        raise UserError(f"--scoring: {scoring!r} is not one of {SCORINGS}")
    text = np.asarray(cache.text_features("test"), dtype=np.float32)  # (K, D)
    n_concepts = len(text)
    image = None
    if kind in ("image", "fused"):
        if image_source == "centers":
            image = cache.center_features()
            if image is None:
                raise UserError(
                    f"--image-source: centers, but the feature cache {cache.path} has no test_center_features; "
                    "use --image-source test-images or rebuild the cache with centers"
                )
        else:
            labels = np.arange(n_concepts) if image_labels is None else np.asarray(image_labels)
            image = concept_image_features(cache.image_features("test"), labels, n_concepts)
    if kind in ("text", "fused") and not getattr(getattr(model, "cfg", None), "use_text", True):
        raise UserError(f"--templates: {kind!r} needs a model trained with text (use_text=true); use image")

    def t(x: Any) -> torch.Tensor | None:
        return None if x is None else torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)

    with torch.no_grad():
        return model.encode_templates(
            image_features=t(image),
            text_features=t(text) if kind != "image" else None,
            kind=kind,
            normalize=scoring == "cosine",
        )


@torch.no_grad()
def encode_eeg_batched(model: Any, eeg: np.ndarray, device: str | torch.device, batch_size: int = 400) -> torch.Tensor:
    """Encode (N, C, T) EEG in batches (the paper's test batch is 400): (N, D)."""
    outs = []
    for i in range(0, len(eeg), batch_size):
        x = torch.as_tensor(eeg[i : i + batch_size], device=device)  # (b, C, T)
        outs.append(model.encode_eeg(x))
    return torch.cat(outs)


def evaluate_model(
    model: Any,
    test: Any,
    cache: Any,
    templates: Sequence[str] = TEMPLATE_KINDS,
    image_source: str = "test-images",
    ways: Sequence[int] = DEFAULT_WAYS,
    seed: int = 0,
    n_draws: int = 100,
    device: str | torch.device = "cpu",
    scoring: str = "cosine",
) -> dict[str, dict[str, float]]:
    """Zero-shot metrics of ``model`` on a :class:`~hmavd.datasets.TestSet`, one entry per template kind.

    Kinds needing text are skipped (with a log line) for models trained without text. ``scoring``: see
    :func:`build_templates` (the EEG embedding is L2-normalised either way).
    """
    model.eval()
    eeg_features = encode_eeg_batched(model, test.eeg, device)  # (N, D)
    out: dict[str, dict[str, float]] = {}
    use_text = getattr(getattr(model, "cfg", None), "use_text", True)
    for kind in templates:
        if kind in ("text", "fused") and not use_text:
            log.info("skipping %s templates: the model was trained without text", kind)
            continue
        tmpl = build_templates(model, cache, kind, image_source, test.labels, device, scoring)  # (K, D)
        scores = (eeg_features @ tmpl.T).cpu()  # (N, K) cosine, or dot with raw templates
        out[template_label(kind, image_source, scoring)] = zero_shot(
            scores, test.labels, ways=ways, seed=seed, n_draws=n_draws
        )
    return out


def evaluate_checkpoint(
    path: str | Path,
    data_dir: str | Path | None = None,
    subject: int | None = None,
    templates: Sequence[str] = TEMPLATE_KINDS,
    image_source: str = "test-images",
    ways: Sequence[int] = DEFAULT_WAYS,
    seed: int = 0,
    n_draws: int = 100,
    device: str = "cpu",
    features: str | None = None,
    scoring: str = "cosine",
) -> dict[str, Any]:
    """Evaluate a checkpoint (or run folder) on a subject's test set.

    ``data_dir``/``subject``/``features`` default to the training config stored in the checkpoint
    (for a leave-one-subject-out run, ``subject`` is the held-out subject). Returns a JSON-able dict
    with ``run``, ``method`` (config name), ``subject``, ``seed``, ``protocol``, ``epoch``,
    ``val_loss`` and ``results`` ({template label: metrics}).
    """
    from .checkpoint import load_checkpoint
    from .datasets import load_test_set, resolve_feature_cache
    from .features.cache import load_feature_cache

    model, info = load_checkpoint(path, map_location=device)
    tc = info.get("train_config") or {}
    data_dir = data_dir if data_dir is not None else tc.get("data_dir")
    subject = int(subject if subject is not None else tc.get("subject", 1))
    if not data_dir:
        raise UserError(f"data_dir: the checkpoint {path} names no data_dir; pass --data DIR")
    feat = features if features is not None else info.get("features", {}).get("path") or tc.get("features", "")
    if feat and not Path(feat).is_dir():
        feat = tc.get("features", "")
    cache = load_feature_cache(resolve_feature_cache(data_dir, feat or ""))
    test = load_test_set(
        data_dir, subject, info["ch_names"], tc.get("tmin_s"), tc.get("tmax_s"), np.asarray(info["times"])
    )
    results = evaluate_model(model, test, cache, templates, image_source, ways, seed, n_draws, device, scoring)
    p = Path(path)
    return {
        "run": str(p if p.is_dir() else p.parent),
        "checkpoint": info.get("path"),
        "method": tc.get("name", "model"),
        "subject": subject,
        "seed": tc.get("seed"),
        "protocol": tc.get("protocol", "intra"),
        "epoch": info.get("epoch"),
        "val_loss": info.get("val_loss"),
        "n_test": len(test.labels),
        "results": results,
    }


# ----------------------------------------------------------------------------------- tables


def aggregate(evals: Iterable[Mapping[str, Any]], metrics: Sequence[str] = ("top1", "top5")) -> list[dict[str, Any]]:
    """Group evaluations by (method, protocol, template, subject): mean and std over seeds.

    Returns one row per group with ``mean_<metric>``, ``std_<metric>`` (population std, 0 for one
    seed, in %) and ``n_seeds``, plus an ``Avg`` row per (method, protocol, template) averaging the
    per-subject means (its std is the spread of the per-seed averages when every subject has the
    same seeds, else the std over the subjects' means).
    """
    groups: dict[tuple, dict[Any, dict[str, float]]] = defaultdict(dict)
    for ev in evals:
        for label, res in ev["results"].items():
            key = (ev.get("method", "model"), ev.get("protocol", "intra"), label, int(ev["subject"]))
            groups[key][ev.get("seed")] = {m: 100.0 * res[m] for m in metrics if m in res}
    rows: list[dict[str, Any]] = []
    by_method: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)
    for (method, proto, label, subject), seeds in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        row: dict[str, Any] = {"method": method, "protocol": proto, "templates": label, "subject": subject}
        row["n_seeds"] = len(seeds)
        for m in metrics:
            vals = [v[m] for v in seeds.values() if m in v]
            row[f"mean_{m}"] = float(np.mean(vals)) if vals else math.nan
            row[f"std_{m}"] = float(np.std(vals)) if vals else math.nan
        rows.append(row)
        by_method[(method, proto, label)].append((subject, seeds))
    for (method, proto, label), subs in by_method.items():
        row = {"method": method, "protocol": proto, "templates": label, "subject": "Avg"}
        seed_sets = {frozenset(s) for _, s in subs}
        same_seeds = len(seed_sets) == 1
        row["n_seeds"] = min(len(s) for _, s in subs)
        for m in metrics:
            subject_means = [np.mean([v[m] for v in s.values()]) for _, s in subs]
            row[f"mean_{m}"] = float(np.mean(subject_means))
            if same_seeds:  # spread of the per-seed averages over subjects (the NICE paper's mean ± std)
                spread = [np.mean([s[sd][m] for _, s in subs]) for sd in next(iter(seed_sets))]
            else:
                spread = subject_means
            row[f"std_{m}"] = float(np.std(spread))
        rows.append(row)
    return rows


def _cell(row: Mapping[str, Any], metrics: Sequence[str]) -> str:
    parts = []
    for m in metrics:
        v = f"{row[f'mean_{m}']:.1f}"
        if row.get("n_seeds", 1) > 1:
            v += f"±{row[f'std_{m}']:.1f}"
        parts.append(v)
    return "/".join(parts)


def table_markdown(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("top1", "top5")) -> str:
    """Table 2 layout: one line per (method, templates), columns Sub1 … SubN and Avg, cells
    ``top1/top5`` in % (``mean±std`` over seeds when there are several)."""
    subjects = sorted({r["subject"] for r in rows if r["subject"] != "Avg"})
    lines_by: dict[tuple, dict[Any, str]] = defaultdict(dict)
    for r in rows:
        lines_by[(r["method"], r["protocol"], r["templates"])][r["subject"]] = _cell(r, metrics)
    head = ["Method", "Templates"] + [f"Sub{s}" for s in subjects] + ["Avg."]
    out = io.StringIO()
    out.write("| " + " | ".join(head) + " |\n")
    out.write("|" + "---|" * len(head) + "\n")
    for (method, proto, label), cells in lines_by.items():
        name = method if proto == "intra" else f"{method} ({proto})"
        vals = [cells.get(s, "–") for s in subjects] + [cells.get("Avg", "–")]
        out.write("| " + " | ".join([name, label, *vals]) + " |\n")
    out.write(f"\nTop-{'/'.join(m[3:] for m in metrics)} accuracy in %, zero-shot; test EEG averaged over ")
    out.write("repetitions; checkpoints selected on validation loss.\n")
    return out.getvalue()


def results_csv(evals: Iterable[Mapping[str, Any]]) -> str:
    """Long-format CSV: one line per (run, template) with every metric (fractions, not %)."""
    evals = list(evals)
    metric_names: list[str] = []
    for ev in evals:
        for res in ev["results"].values():
            for m in res:
                if m not in metric_names:
                    metric_names.append(m)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "protocol", "subject", "seed", "templates", "run", *metric_names])
    for ev in evals:
        for label, res in ev["results"].items():
            w.writerow(
                [ev.get("method"), ev.get("protocol"), ev["subject"], ev.get("seed"), label, ev.get("run")]
                + [res.get(m, "") for m in metric_names]
            )
    return buf.getvalue()
