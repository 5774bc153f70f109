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
non-default scoring (``image[centers,dot]``, ``text[dot]``). Templates come from the checkpoint's stored
gallery (:class:`hmavd.templates.Gallery`, no feature cache needed) unless a cache is passed, and from the
cache for checkpoints written before galleries were stored.

Reporting: every run is evaluated at its validation-selected epoch (``best.safetensors``) and its last
epoch (``last.safetensors``); nothing is ever selected on the test set. :func:`aggregate` averages the
runs of one config that differ only by seed (mean ± std), and :func:`table_markdown` shows the published
figure (:mod:`hmavd.results`) beside ours when the config names a published method.

Ties: a label counts as within top-k only if fewer than k *other* templates score >= its score.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint_meta import CheckpointInfo
from .errors import UserError
from .templates import TEMPLATE_KINDS, Gallery, template_label, templates_from

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WAYS",
    "topk_accuracy",
    "n_way_accuracy",
    "zero_shot",
    "encode_eeg_batched",
    "SELECTIONS",
    "selection_of",
    "config_key",
    "evaluate_model",
    "evaluate_checkpoint",
    "aggregate",
    "table_markdown",
    "results_csv",
]

DEFAULT_WAYS = (2, 4, 10, 50, 100, 200)
#: checkpoint file stem -> the epoch it holds, as results tables name it
SELECTIONS = {"best": "val-selected", "last": "last"}
#: TrainConfig keys that do not make two runs different configs (the seed is averaged over, the subject
#: is a column; the rest only say where and how a run was written)
RUN_KEYS = ("seed", "subject", "run_name", "out_dir", "device")


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

    ``cache``: a :class:`~hmavd.features.cache.FeatureCache` or a stored :class:`~hmavd.templates.Gallery`.
    Kinds needing text are skipped (with a log line) for models trained without text. ``scoring``: see
    :func:`~hmavd.templates.build_templates` (the EEG embedding is L2-normalised either way).
    """
    model.eval()
    eeg_features = encode_eeg_batched(model, test.eeg, device)  # (N, D)
    out: dict[str, dict[str, float]] = {}
    use_text = getattr(getattr(model, "cfg", None), "use_text", True)
    for kind in templates:
        if kind in ("text", "fused") and not use_text:
            log.info("skipping %s templates: the model was trained without text", kind)
            continue
        tmpl = templates_from(cache, model, kind, image_source, test.labels, device, scoring)  # (K, D)
        scores = (eeg_features @ tmpl.T).cpu()  # (N, K) cosine, or dot with raw templates
        out[template_label(kind, image_source, scoring)] = zero_shot(
            scores, test.labels, ways=ways, seed=seed, n_draws=n_draws
        )
    return out


def selection_of(info: CheckpointInfo) -> str:
    """``val-selected`` (best.safetensors), ``last`` (last.safetensors), or the file's stem."""
    if info.get("selection"):
        return str(info["selection"])
    stem = Path(str(info.get("path") or "")).stem
    return SELECTIONS.get(stem, stem or "checkpoint")


def config_key(train_config: Mapping[str, Any] | None) -> str:
    """Short hash of a training config without :data:`RUN_KEYS`: equal for runs that differ only by seed."""
    kept = {k: v for k, v in (train_config or {}).items() if k not in RUN_KEYS}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:6]


def checkpoint_template_source(
    info: CheckpointInfo, test: Any, data_dir: str | Path, features: str | None, path: str | Path
) -> Gallery | Any:
    """The stored gallery (``features`` None and the checkpoint has one), else the feature cache.

    The cache is ``features`` when given, else the one the checkpoint was trained with (its recorded
    path, then the training config's ``features`` under ``data_dir``).
    """
    from .datasets import resolve_feature_cache
    from .features.cache import load_feature_cache

    gallery = info.get("gallery")
    if features is None and gallery is not None:
        if tuple(gallery.concepts) != tuple(test.concepts):
            raise UserError(
                f"--data: the test concepts of {data_dir} ({len(test.concepts)}) differ from the gallery stored in "
                f"{path} ({len(gallery.concepts)}); pass --features CACHE to build templates from that cache"
            )
        log.info("%s: templates from the checkpoint's stored gallery (no feature cache read)", path)
        return gallery
    tc = info.get("train_config") or {}
    feat = features if features is not None else (info.get("features") or {}).get("path") or tc.get("features", "")
    if feat and not Path(feat).is_dir():
        feat = tc.get("features", "")
    cache = load_feature_cache(resolve_feature_cache(data_dir, feat or ""))
    log.info("%s: templates from the feature cache %s", path, cache.path)
    return cache


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
    """Evaluate a checkpoint (or run folder: its ``best.safetensors``) on a subject's test set.

    ``data_dir``/``subject`` default to the training config stored in the checkpoint (for a
    leave-one-subject-out run, ``subject`` is the held-out subject). Templates come from the stored
    gallery unless ``features`` names a cache (see :func:`checkpoint_template_source`). Returns a
    JSON-able dict with ``run``, ``checkpoint``, ``selection`` (``val-selected`` / ``last``), ``method``
    (config name), ``config_key``, ``subject``, ``seed``, ``protocol``, ``epoch``, ``val_loss``,
    ``templates_from`` and ``results`` ({template label: metrics}).
    """
    from .checkpoint import load_checkpoint
    from .datasets import load_test_set

    model, info = load_checkpoint(path, map_location=device)
    tc = info.get("train_config") or {}
    data_dir = data_dir if data_dir is not None else tc.get("data_dir")
    subject = int(subject if subject is not None else tc.get("subject", 1))
    if not data_dir:
        raise UserError(f"data_dir: the checkpoint {path} names no data_dir; pass --data DIR")
    test = load_test_set(
        data_dir, subject, info["ch_names"], tc.get("tmin_s"), tc.get("tmax_s"), np.asarray(info["times"])
    )
    source = checkpoint_template_source(info, test, data_dir, features, path)
    results = evaluate_model(model, test, source, templates, image_source, ways, seed, n_draws, device, scoring)
    p = Path(path)
    return {
        "run": str(p if p.is_dir() else p.parent),
        "checkpoint": info.get("path"),
        "selection": selection_of(info),
        "method": tc.get("name", "model"),
        "config_key": config_key(tc),
        "subject": subject,
        "seed": tc.get("seed"),
        "protocol": tc.get("protocol", "intra"),
        "epoch": info.get("epoch"),
        "val_loss": info.get("val_loss"),
        "n_test": len(test.labels),
        "templates_from": "gallery" if isinstance(source, Gallery) else f"cache {source.path}",
        "results": results,
    }


# ----------------------------------------------------------------------------------- tables


def _method_labels(evals: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """(method, config_key) -> table label: the method name, plus ``[key]`` when one name has several configs."""
    keys: dict[str, set[str]] = defaultdict(set)
    for ev in evals:
        keys[ev.get("method", "model")].add(ev.get("config_key", ""))
    return {(m, k): (m if len(ks) == 1 else f"{m} [{k}]") for m, ks in keys.items() for k in ks}


def _spread_row(base: dict[str, Any], subs: list[tuple[int, dict]], metrics: Sequence[str]) -> dict[str, Any]:
    """The ``Avg`` row of one line: mean of the per-subject means, std over seeds (or subjects)."""
    row = {**base, "subject": "Avg"}
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
    return row


def aggregate(evals: Iterable[Mapping[str, Any]], metrics: Sequence[str] = ("top1", "top5")) -> list[dict[str, Any]]:
    """Group evaluations by (method, protocol, templates, selection, subject): mean and std over seeds.

    Runs are one config when their training configs differ only by seed (:func:`config_key`); a method
    name with several configs gets one line each (``name [key]``). Returns one row per group with
    ``mean_<metric>``, ``std_<metric>`` (population std, 0 for one seed, in %), ``n_seeds``,
    ``selection`` and ``published`` (the method's published figure, :mod:`hmavd.results`; only beside
    200-way evaluations, ``not 200-way`` otherwise), plus an
    ``Avg`` row per line averaging the per-subject means (its std is the spread of the per-seed
    averages when every subject has the same seeds, else the std over the subjects' means).
    """
    from .results import PUBLISHED_WAYS, format_published, published_for

    evals = list(evals)
    labels = _method_labels(evals)
    groups: dict[tuple, dict[Any, dict[str, float]]] = defaultdict(dict)
    for ev in evals:
        method = labels[(ev.get("method", "model"), ev.get("config_key", ""))]
        published = format_published(published_for(ev.get("method", "model"), ev.get("protocol", "intra")))
        for label, res in ev["results"].items():
            if published != "–" and res.get("n_templates", PUBLISHED_WAYS) != PUBLISHED_WAYS:
                published = f"not {PUBLISHED_WAYS}-way"  # the published figures are 200-way ThingsEEG2 numbers
            line = (method, ev.get("protocol", "intra"), label, ev.get("selection", "val-selected"), published)
            groups[(*line, int(ev["subject"]))][ev.get("seed")] = {m: 100.0 * res[m] for m in metrics if m in res}
    rows: list[dict[str, Any]] = []
    by_line: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)
    order = {"val-selected": "0", "last": "1"}
    for key, seeds in sorted(groups.items(), key=lambda kv: (*map(str, kv[0][:3]), order.get(kv[0][3], kv[0][3]))):
        *line, subject = key
        base = dict(zip(("method", "protocol", "templates", "selection", "published"), line))
        row: dict[str, Any] = {**base, "subject": subject, "n_seeds": len(seeds)}
        for m in metrics:
            vals = [v[m] for v in seeds.values() if m in v]
            row[f"mean_{m}"] = float(np.mean(vals)) if vals else math.nan
            row[f"std_{m}"] = float(np.std(vals)) if vals else math.nan
        rows.append(row)
        by_line[tuple(line)].append((subject, seeds))
    for line, subs in by_line.items():
        base = dict(zip(("method", "protocol", "templates", "selection", "published"), line))
        rows.append(_spread_row(base, subs, metrics))
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
    """Table 2 layout: one line per (method, epoch, templates), columns Sub1 … SubN, Avg and Published;
    cells ``top1/top5`` in % (``mean±std`` over seeds when there are several)."""
    subjects = sorted({r["subject"] for r in rows if r["subject"] != "Avg"})
    lines_by: dict[tuple, dict[Any, str]] = defaultdict(dict)
    for r in rows:
        key = (r["method"], r["protocol"], r.get("selection", "val-selected"), r["templates"], r.get("published", "–"))
        lines_by[key][r["subject"]] = _cell(r, metrics)
    head = ["Method", "Epoch", "Templates"] + [f"Sub{s}" for s in subjects] + ["Avg.", "Published"]
    out = io.StringIO()
    out.write("| " + " | ".join(head) + " |\n")
    out.write("|" + "---|" * len(head) + "\n")
    for (method, proto, selection, label, published), cells in lines_by.items():
        name = method if proto == "intra" else f"{method} ({proto})"
        vals = [cells.get(s, "–") for s in subjects] + [cells.get("Avg", "–")]
        out.write("| " + " | ".join([name, selection, label, *vals, published]) + " |\n")
    out.write(f"\nTop-{'/'.join(m[3:] for m in metrics)} accuracy in %, zero-shot; test EEG averaged over ")
    out.write("repetitions; mean±std over seeds. Epoch: val-selected = lowest validation loss (best.safetensors), ")
    out.write("last = final epoch (last.safetensors); nothing is selected on the test set. Published: the authors' ")
    out.write("200-way ThingsEEG2 mean over subjects, with the epoch it reports (test-selected figures flatter; ")
    out.write("hmavd/results.py); beside a simulated subject it only marks the target.\n")
    return out.getvalue()


def results_csv(evals: Iterable[Mapping[str, Any]]) -> str:
    """Long-format CSV: one line per (run, epoch, template) with every metric (fractions, not %)."""
    evals = list(evals)
    metric_names: list[str] = []
    for ev in evals:
        for res in ev["results"].values():
            for m in res:
                if m not in metric_names:
                    metric_names.append(m)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "protocol", "subject", "seed", "selection", "epoch", "templates", "run", *metric_names])
    for ev in evals:
        for label, res in ev["results"].items():
            run = [ev.get("method"), ev.get("protocol"), ev["subject"], ev.get("seed"), ev.get("selection")]
            w.writerow([*run, ev.get("epoch"), label, ev.get("run")] + [res.get(m, "") for m in metric_names])
    return buf.getvalue()
