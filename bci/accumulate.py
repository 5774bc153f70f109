"""Evidence over repetitions: a running per-image average and the live accuracy-vs-repetitions curve.

ThingsEEG2's test paradigm shows each test image 80 times, and every published number decodes the
average of those 80 epochs. Live, an image's k-th repetition can be decoded together with its first
k − 1: :class:`RepetitionAccumulator` keeps, per image (a template concept), the running sum of its
whitened epochs and of their L2-normalised embeddings, and after each repetition

- the **accumulated top-k** of that image (the configured average, ``accumulate=epochs|embeddings``), and
- the **curve**: for every k, the fraction of images whose average over their first k repetitions
  ranks the true concept first / within the top 5 — both averages, so they can be compared.

With online MVNN (:mod:`bci.online_mvnn`) an image's early repetitions were whitened with a young
estimate (or, during warm-up, the stale training matrix). Passing ``raw`` (the unwhitened epochs) and
``whitening`` (the matrix in use now) to :meth:`RepetitionAccumulator.add` keeps the sum of the *raw*
epochs instead and whitens each image's average with the current matrix before encoding it: whitening
is linear, so with one fixed matrix the two are identical, and with a matrix that improves as the
session goes on the accumulated evidence is re-whitened with the best estimate so far (the
``embeddings`` average cannot be re-whitened without re-encoding every repetition; it keeps the
embeddings of the epochs as whitened when they arrived). docs/new-session.md has the measurement.

It scores exactly as :func:`hmavd.eval_reps.reps_curve` does offline (float64 normalisation, the tie
rule of :func:`hmavd.evaluate.topk_accuracy`), so on the same epochs in the same order the live curve
at k equals ``hmavd-eval --reps k`` (tested). Only images that have a template are accumulated (memory:
one (C, T) float64 sum each).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hmavd.preprocessing.transforms import apply_whitening

log = logging.getLogger(__name__)

__all__ = ["RepetitionAccumulator", "curve_csv", "validate_accumulate", "ACCUMULATE_MODES"]

ACCUMULATE_MODES = ("epochs", "embeddings", "off")
#: the two averages every session reports (``hmavd.eval_reps.AVERAGES``; not imported here: building a
#: LiveConfig validates ``accumulate`` and must not load torch)
AVERAGES = ("epochs", "embeddings")


def validate_accumulate(cfg) -> None:
    """Check ``accumulate`` of a :class:`~bci.engine.LiveConfig`."""
    from hmavd.errors import UserError

    if cfg.accumulate not in ACCUMULATE_MODES:
        raise UserError(
            f"accumulate: {cfg.accumulate!r} is not one of epochs, embeddings, off (average the repetitions of "
            "an image as whitened epochs before the encoder, or as embeddings after it)"
        )


def _normalise(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)


class RepetitionAccumulator:
    """Running per-image averages of a live session.

    Parameters
    ----------
    encode : callable
        ``(B, C, T) float32 -> (B, D)`` EEG embeddings (the decoder's encoder).
    templates : ndarray, shape (K, D)
    concepts : sequence of str
        ``K`` concept names, the template rows.
    mode : {"epochs", "embeddings"}
        Which average the accumulated top-k reports.
    top_k : int
    """

    def __init__(
        self,
        encode: Callable[[np.ndarray], np.ndarray],
        templates: np.ndarray,
        concepts: Sequence[str],
        mode: str = "epochs",
        top_k: int = 5,
    ) -> None:
        self.encode = encode
        self.templates = _normalise(templates)  # (K, D)
        self.concepts = list(concepts)
        self.index = {c: i for i, c in enumerate(self.concepts)}
        self.mode, self.top_k = mode, top_k
        self.sum_epochs: dict[str, np.ndarray] = {}  # concept -> (C, T) float64, whitened (or raw: ``add(raw=)``)
        self.sum_emb: dict[str, np.ndarray] = {}  # concept -> (D,) float64
        self.count: dict[str, int] = {}
        # curve[average][k] = [n_images, n_top1, n_top5]
        self.curve: dict[str, dict[int, list[int]]] = {a: {} for a in AVERAGES}

    def _score(self, feats: np.ndarray, concept: str, k: int, average: str) -> list[tuple[str, float]]:
        """Score one averaged embedding (D,), count it in the curve at ``k``; returns its top-k."""
        from hmavd.evaluate import topk_accuracy  # the toolkit's one rank rule (loads torch: not at import)

        s = _normalise(feats) @ self.templates.T  # (K,)
        label = np.asarray([self.index[concept]])
        row = self.curve[average].setdefault(k, [0, 0, 0])
        row[0] += 1
        row[1] += int(topk_accuracy(s[None], label, 1) == 1.0)
        row[2] += int(topk_accuracy(s[None], label, 5) == 1.0)
        top = np.argsort(-s, kind="stable")[: self.top_k]
        return [(self.concepts[i], float(s[i])) for i in top]

    def add(
        self,
        concepts: Sequence[str | None],
        epochs: np.ndarray,
        feats: np.ndarray | None = None,
        raw: np.ndarray | None = None,
        whitening: np.ndarray | None = None,
    ) -> list[dict | None]:
        """Fold one poll's epochs in; returns per epoch the accumulated result (``None``: no template).

        Parameters
        ----------
        concepts : sequence of str or None
            True concept of each epoch (its marker's image), ``None`` when unknown.
        epochs : ndarray, shape (B, C, T)
            Whitened epochs (the model's input).
        feats : ndarray, shape (B, D), optional
            Their embeddings (computed here when ``None``).
        raw : ndarray, shape (B, C, T), optional
            The same epochs before whitening. Given, the ``epochs`` average sums these and whitens each
            image's mean with ``whitening`` (re-whitening with the current estimate); pass it on every
            call of a session or on none.
        whitening : ndarray, shape (C, C), optional
            The whitening matrix in use now (``None``: none); only with ``raw``.

        Returns
        -------
        list of dict or None
            ``{"acc_n", "acc_topk", "acc_top1_correct", "acc_top5_correct"}``.
        """
        x = np.asarray(epochs)
        keep = [i for i, c in enumerate(concepts) if c is not None and c in self.index]
        if not keep:
            return [None] * len(concepts)
        summed = x if raw is None else np.asarray(raw)  # (B, C, T) what the epochs average sums
        means, ks = [], []
        for i in keep:  # in marker order: the same image twice in one poll counts twice
            c = concepts[i]
            self.sum_epochs[c] = self.sum_epochs.get(c, 0.0) + summed[i].astype(np.float64)
            k = self.count[c] = self.count.get(c, 0) + 1
            ks.append(k)
            means.append(self.sum_epochs[c] / k)  # (C, T)
        if raw is not None and whitening is not None:  # the raw means, whitened with the current matrix
            means = list(apply_whitening(np.stack(means), whitening))  # (b, C, T)
        b = len(keep)
        if feats is None:  # single epochs and averages in one forward pass
            enc = self.encode(np.concatenate([x[keep], np.stack(means)]).astype(np.float32))  # (2b, D)
            single, enc = enc[:b], enc[b:]
        else:
            single, enc = np.asarray(feats)[keep], self.encode(np.stack(means).astype(np.float32))  # (b, D) each
        out: list[dict | None] = [None] * len(concepts)
        for j, i in enumerate(keep):
            c, k = concepts[i], ks[j]
            self.sum_emb[c] = self.sum_emb.get(c, 0.0) + _normalise(single[j])  # (D,)
            top_ep = self._score(enc[j], c, k, "epochs")
            top_em = self._score(self.sum_emb[c] / k, c, k, "embeddings")
            top = top_ep if self.mode == "epochs" else top_em
            names = [t for t, _ in top]
            out[i] = {
                "acc_n": k,
                "acc_topk": top,
                "acc_top1_correct": names[0] == c,
                "acc_top5_correct": c in names[:5],
            }
        return out

    def rows(self) -> list[dict[str, Any]]:
        """The curve: ``{"k", "average", "n_images", "top1", "top5"}`` per k and average (fractions)."""
        out = []
        for avg in AVERAGES:
            for k in sorted(self.curve[avg]):
                n, t1, t5 = self.curve[avg][k]
                out.append({"k": k, "average": avg, "n_images": n, "top1": t1 / n, "top5": t5 / n})
        return out

    def report(self, ks: Sequence[int] = (1, 2, 5, 10, 20, 40, 80)) -> dict[str, Any]:
        """Compact status: images seen, the most repetitions, and the curve of ``mode`` at ``ks``."""
        rows = {r["k"]: r for r in self.rows() if r["average"] == self.mode}
        return {
            "mode": self.mode,
            "n_images": len(self.count),
            "max_reps": max(self.count.values(), default=0),
            "curve": [
                {"k": k, "top1": rows[k]["top1"], "top5": rows[k]["top5"], "n_images": rows[k]["n_images"]}
                for k in ks
                if k in rows
            ],
        }


def curve_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The curve rows as CSV text (``k,average,n_images,top1,top5``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["k", "average", "n_images", "top1", "top5"])
    for r in rows:
        w.writerow([r["k"], r["average"], r["n_images"], f"{r['top1']:.6f}", f"{r['top5']:.6f}"])
    return buf.getvalue()
