"""Decoder: EEG epochs → top-k concepts by cosine similarity with pre-encoded templates.

Built around a small protocol so it can be tested without a trained checkpoint: an ``encode``
function ``(B, C, T) tensor -> (B, D) tensor``, a ``(K, D)`` template matrix and ``K`` concept
names. :meth:`Decoder.from_checkpoint` wires in ``hmavd.checkpoint.load_checkpoint`` and the templates of
``hmavd.templates``: the checkpoint's stored gallery (no feature cache needed), or templates built from a
feature cache (checkpoints without a gallery, or when a cache is passed explicitly).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hmavd.checkpoint_meta import CheckpointInfo
from hmavd.devices import resolve_device
from hmavd.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["Decoder", "DecodeResult", "top_k", "training_path", "checkpoint_whitening"]


def training_path(recorded: str, checkpoint: str | Path) -> Path | None:
    """Find a path recorded at training time (often relative to the training folder).

    Tried as given (absolute or relative to the working directory), then relative to each of the
    checkpoint's parent folders (``runs/demo/hmavd/best.safetensors`` → ``runs/demo/hmavd``,
    ``runs/demo``, ``runs``, the project folder). ``None`` when not found.
    """
    if not recorded:
        return None
    rec = Path(recorded)
    if rec.exists():
        return rec
    if rec.is_absolute():
        return None
    for folder in list(Path(checkpoint).resolve().parents)[:5]:
        if (folder / rec).exists():
            return folder / rec
    return None


def checkpoint_whitening(info: CheckpointInfo) -> tuple[str, Path | None]:
    """``(recorded, found)`` MVNN file of the data a checkpoint was trained on.

    ``recorded`` is ``<data_dir>/preprocessed_eeg/sub-XX/mvnn.npz`` from the checkpoint's
    ``train_config`` ("" when it has none, e.g. a checkpoint saved without a training config or
    not trained on one subject's own data); ``found`` its location (see :func:`training_path`) or ``None``.
    """
    tc = info.get("train_config") or {}
    subjects = [s for s in (info.get("train_subjects") or []) if isinstance(s, int)]
    if not tc.get("data_dir") or len(subjects) != 1 or tc.get("protocol", "intra") != "intra":
        return "", None
    sub = Path("preprocessed_eeg") / f"sub-{subjects[0]:02d}" / "mvnn.npz"
    recorded = str(Path(tc["data_dir"]) / sub)
    absolute = Path(info["data_dir"]) / sub if info.get("data_dir") else None  # recorded since the absolute path
    if absolute is not None and absolute.exists():
        return recorded, absolute
    return recorded, training_path(recorded, info.get("path") or ".")


def top_k(eeg_features: torch.Tensor, templates: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k: ``eeg_features`` (B, D), ``templates`` (K, D), both L2-normalised.

    Returns ``(indices (B, k) int64, scores (B, k) float32)``, best first.
    """
    sim = eeg_features @ templates.T  # (B, K)
    scores, idx = torch.topk(sim, k=min(k, templates.shape[0]), dim=1)
    return idx.cpu().numpy(), scores.float().cpu().numpy()


@dataclass(frozen=True)
class DecodeResult:
    """Top-k of one epoch: concept names and cosine scores, best first."""

    concepts: tuple[str, ...]
    scores: tuple[float, ...]

    def topk(self) -> list[tuple[str, float]]:
        return list(zip(self.concepts, self.scores))


class Decoder:
    """Batched template-matching decoder.

    Parameters
    ----------
    encode : callable
        ``(B, C, T) float32 tensor on device -> (B, D)`` EEG features (normalised here).
    templates : ndarray, shape (K, D)
        Template features (normalised here).
    concepts : sequence of str
        ``K`` names.
    n_chans, n_times : int
        The model's input shape (checked by the engine at connect).
    ch_names : sequence of str
        The model's channels, in input order.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``.
    k : int
        Number of concepts returned.
    """

    def __init__(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        templates: np.ndarray,
        concepts: Sequence[str],
        n_chans: int,
        n_times: int,
        ch_names: Sequence[str] = (),
        device: str = "auto",
        k: int = 5,
    ) -> None:
        if len(concepts) != len(templates):
            raise ValueError(f"{len(concepts)} concept names for {len(templates)} templates")
        self.device = resolve_device(device)
        self.encode = encode
        t = torch.as_tensor(np.asarray(templates, dtype=np.float32), device=self.device)
        self.templates = torch.nn.functional.normalize(t, dim=1)  # (K, D)
        self.concepts = tuple(concepts)
        self.n_chans, self.n_times = int(n_chans), int(n_times)
        self.ch_names = tuple(ch_names)
        self.k = int(k)

    @torch.inference_mode()
    def features(self, epochs: np.ndarray) -> torch.Tensor:
        """``epochs`` (B, C, T) → normalised EEG features (B, D) on the device."""
        x = torch.as_tensor(np.ascontiguousarray(epochs, dtype=np.float32), device=self.device)  # (B, C, T)
        return torch.nn.functional.normalize(self.encode(x).float(), dim=1)  # (B, D)

    def decode(self, epochs: np.ndarray) -> list[DecodeResult]:
        """Top-k concepts of each epoch of ``epochs`` (B, C, T), in one batch."""
        if len(epochs) == 0:
            return []
        with torch.inference_mode():
            idx, scores = top_k(self.features(epochs), self.templates, self.k)
        return [
            DecodeResult(tuple(self.concepts[j] for j in row), tuple(float(s) for s in srow))
            for row, srow in zip(idx, scores)
        ]

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        templates: np.ndarray,
        concepts: Sequence[str],
        n_chans: int,
        n_times: int,
        ch_names: Sequence[str] = (),
        device: str = "auto",
        k: int = 5,
    ) -> Decoder:
        """Wrap a model with ``encode_eeg`` (e.g. an ``HMAVD``) moved to ``device`` in eval mode."""
        dev = resolve_device(device)
        model = model.to(dev).eval()
        return cls(model.encode_eeg, templates, concepts, n_chans, n_times, ch_names, str(dev), k)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str,
        features: str = "",
        kind: str = "image",
        image_source: str = "test-images",
        device: str = "auto",
        k: int = 5,
    ) -> tuple[Decoder, CheckpointInfo]:
        """Load ``hmavd-train``'s checkpoint with its test templates pre-encoded.

        ``features`` empty: the checkpoint's stored gallery when it has one (no feature cache is read),
        else the cache it was trained with (its recorded path, see :func:`training_path`). ``features``
        given: templates built from that cache. Returns the decoder and the checkpoint's info
        (``ch_names``, ``times``, ``sfreq``, ``train_config``, ``path``, …) with ``template_source``
        (``"gallery"`` or ``"cache"``) and ``features_path`` (the cache used, ``""`` for the gallery).
        """
        from hmavd.checkpoint import load_checkpoint
        from hmavd.templates import templates_from

        dev = resolve_device(device)
        model, info = load_checkpoint(checkpoint, map_location=dev)
        gallery = info.get("gallery")
        if not features and gallery is not None:
            n = len(gallery.concepts)
            log.info("templates from the checkpoint's stored gallery (%d concepts; no feature cache read)", n)
            source, folders = gallery, list(gallery.concepts)
            info["features_path"], info["template_source"] = "", "gallery"
        else:
            source = _feature_cache(features, info, checkpoint)
            info["features_path"], info["template_source"] = str(source.path), "cache"
            folders = None
        templates = templates_from(source, model, kind, image_source, device=dev).detach().float().cpu().numpy()
        concepts = _concept_names(source, len(templates)) if folders is None else _names(folders)
        ch_names = tuple(info.get("ch_names") or ())
        times = info.get("times") or []
        dec = cls.from_model(model, templates, concepts, len(ch_names), len(times), ch_names, str(dev), k)
        return dec, info


def _feature_cache(features: str, info: CheckpointInfo, checkpoint: str):
    """The feature cache ``features``, or the checkpoint's recorded one (one-line error when it is gone)."""
    from hmavd.features.cache import load_feature_cache

    if not features:
        recorded = str((info.get("features") or {}).get("path") or "")
        found = training_path(recorded, info.get("path") or checkpoint)
        if found is None:
            raise UserError(
                f"features: not set, and the checkpoint's feature cache {recorded or '(not recorded)'!r} "
                "was not found; pass the feature cache folder (e.g. --features hmavd_data/sim/features/<name>)"
            )
        features = str(found)
        log.info("templates from the checkpoint's feature cache %s", features)
    return load_feature_cache(features)


def _names(folders: Sequence[str]) -> list[str]:
    from hmavd.data.thingseeg2 import concept_name

    return [concept_name(f) for f in folders]


def _concept_names(cache, n: int) -> list[str]:
    """Readable names of the ``n`` test concepts of a cache (``00001_aircraft_carrier`` → ``aircraft carrier``)."""
    from hmavd.templates import concepts_of

    return _names(concepts_of(cache, n))
