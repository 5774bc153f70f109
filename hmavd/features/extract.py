"""Resumable extraction of a feature cache's tensors (image banks, variants, text, centers).

Each chunk of embeddings is written to ``<cache>.partial/`` as a safetensors file listed in
``manifest.json``; a killed run started again with the same settings reuses those chunks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import atomic_path, atomic_write_json
from .clip import DEFAULT_TEMPLATE, ClipEncoder, concept_prompts, l2_normalize
from .images import ImageList

log = logging.getLogger(__name__)

__all__ = ["PartialStore", "extract_features"]


class PartialStore:
    """Chunks of an unfinished extraction: ``<folder>/<name>.safetensors`` + ``manifest.json``.

    The manifest records a fingerprint of everything that determines the numbers (model, weights,
    preprocessing, prompts, image lists, chunk size); a store with another fingerprint is discarded.
    """

    def __init__(self, folder: str | Path, fingerprint: dict[str, Any]):
        self.folder = Path(folder)
        self.digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
        self.manifest_path = self.folder / "manifest.json"
        self.chunks: dict[str, int] = {}
        if self.manifest_path.exists():
            try:
                man = json.loads(self.manifest_path.read_text())
            except (OSError, ValueError):
                man = {}
            if man.get("fingerprint") == self.digest:
                self.chunks = {k: int(v) for k, v in man.get("chunks", {}).items() if (self.folder / k).is_file()}
                log.info("resuming from %s: %d chunks already done", self.folder, len(self.chunks))
            else:
                log.warning("%s was made with other settings; starting over", self.folder)
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_manifest()

    def _write_manifest(self) -> None:
        atomic_write_json(self.manifest_path, {"fingerprint": self.digest, "chunks": self.chunks})

    def _file(self, name: str) -> str:
        return f"{name}.safetensors"

    def has(self, name: str) -> bool:
        return self._file(name) in self.chunks

    def load(self, name: str) -> np.ndarray:
        from safetensors.numpy import load_file

        return load_file(str(self.folder / self._file(name)))["features"]

    def save(self, name: str, features: np.ndarray) -> None:
        """Write one chunk (N, D) atomically, then record it in the manifest."""
        from safetensors.numpy import save_file

        with atomic_path(self.folder / self._file(name)) as tmp:
            save_file({"features": np.ascontiguousarray(features, dtype=np.float32)}, str(tmp))
        self.chunks[self._file(name)] = int(len(features))
        self._write_manifest()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _image_chunks(
    store: PartialStore,
    encoder: ClipEncoder,
    key: str,
    paths: Sequence[Path],
    chunk_size: int,
    batch_size: int,
    num_workers: int,
    bar: Any,
    variant: Any = None,
) -> np.ndarray:
    parts = []
    for c, start in enumerate(range(0, len(paths), chunk_size)):
        name = f"{key}_{c:06d}"
        chunk = paths[start : start + chunk_size]
        if store.has(name):
            parts.append(store.load(name))
            continue
        feats = []
        for batch in encoder.iter_image_batches(chunk, batch_size, num_workers, variant, start):
            feats.append(batch)
            bar.update(len(batch))
        arr = np.concatenate(feats, axis=0)  # (n_chunk, D)
        store.save(name, arr)
        parts.append(arr)
    return np.concatenate(parts, axis=0)


def _split_banks(
    store: PartialStore,
    encoder: ClipEncoder,
    split: str,
    paths: Sequence[Path],
    variants: Sequence[Any],
    opts: tuple,
    mode: str = "mean",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(default bank, {variant name: bank}) of one split.

    The default is the L2-normalised mean over the variants (``mode="mean"``), or the variants side by side,
    (N, V·D) level-major (``mode="concat"``, for the ``blur_levels`` / ``sum_fusion`` image heads).
    """
    if not variants:
        return _image_chunks(store, encoder, f"{split}_image", paths, *opts), {}
    per = {
        v.name: _image_chunks(store, encoder, f"{split}_image_{v.name.replace(':', '-')}", paths, *opts, variant=v)
        for v in variants
    }  # name -> (N, D)
    if mode == "concat":
        return np.concatenate(list(per.values()), axis=1), per  # (N, V·D)
    return l2_normalize(np.mean(np.stack(list(per.values())), axis=0)), per


def _fingerprint(
    encoder: ClipEncoder,
    train: ImageList,
    test: ImageList,
    parsed: Sequence[Any],
    variant_mode: str,
    prompt_template: str,
    chunk_size: int,
    center_paths: Sequence[Path],
) -> dict[str, Any]:
    """Everything that determines the extracted numbers (a :class:`PartialStore` with another one is discarded)."""
    return {
        **{k: encoder.info.get(k) for k in ("model", "pretrained", "weights_sha256", "preprocessing", "quick_gelu")},
        "model_config": encoder.info.get("model_config"),
        "layer": encoder.layer,
        "pool": encoder.pool,
        "pre_resize": encoder.pre_resize,
        "variants": [v.name for v in parsed],
        "variant_mode": variant_mode,
        "template": prompt_template,
        "chunk_size": chunk_size,
        "train": list(train.ids),
        "test": list(test.ids),
        "centers": [str(p) for p in center_paths],
    }


def _image_features(
    store: PartialStore,
    encoder: ClipEncoder,
    train: ImageList,
    test: ImageList,
    centers: Sequence[Sequence[Path]] | None,
    parsed: Sequence[Any],
    loader: tuple[int, int, int],
    variant_mode: str,
    store_variants: bool,
    progress: bool,
) -> dict[str, np.ndarray]:
    """The image banks of both splits (and their variants, ``store_variants``) and the test concept centres.

    ``loader`` is (chunk_size, batch_size, num_workers); the rest as in :func:`extract_features`.
    """
    from tqdm import tqdm

    from .cache import variant_tensor

    center_paths = [p for group in centers for p in group] if centers is not None else []
    concat = variant_mode == "concat" and bool(parsed)
    total = (len(train) + len(test)) * max(1, len(parsed)) + len(center_paths) * (len(parsed) if concat else 1)
    done = sum(n for k, n in store.chunks.items() if "_image" in k)
    arrays: dict[str, np.ndarray] = {}
    with tqdm(total=total, initial=done, unit="img", desc="image features", disable=not progress) as bar:
        opts = (*loader, bar)
        for split, images in (("train", train), ("test", test)):
            arrays[f"{split}_image_features"], per = _split_banks(
                store, encoder, split, images.paths, parsed, opts, variant_mode
            )
            for name, bank in per.items() if store_variants else ():
                arrays[variant_tensor(name, f"{split}_image_features")] = bank
        if centers is not None:
            flat = _split_banks(store, encoder, "center", center_paths, parsed if concat else [], opts, "concat")[0]
            bounds = np.cumsum([0] + [len(g) for g in centers])
            arrays["test_center_features"] = np.stack(
                [flat[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]
            ).astype(np.float32)  # (n_test_concepts, D) or (n_test_concepts, V·D)
    return arrays


def extract_features(
    encoder: ClipEncoder,
    train: ImageList,
    test: ImageList,
    partial_dir: str | Path,
    prompt_template: str = DEFAULT_TEMPLATE,
    centers: Sequence[Sequence[Path]] | None = None,
    chunk_size: int = 1024,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    variants: Sequence[str] = (),
    store_variants: bool = False,
    variant_mode: str = "mean",
    text_arrays: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Compute the cache tensors, resuming from (and filling) ``partial_dir``.

    Parameters
    ----------
    variants : sequence of str
        Image transforms (:func:`hmavd.features.banks.parse_variant`); empty = the images as they are.
        With variants the image banks are the L2-normalised mean over variants.
    store_variants : bool
        Also return each variant's banks as ``variant/<name>/{train,test}_image_features``.
    variant_mode : {"mean", "concat"}
        How the variants make the default banks: their normalised mean (N, D), or side by side (N, V·D),
        each block normalised (centres then concatenated the same way, from the transformed images).
    text_arrays : dict, optional
        ``train_text_features`` / ``test_text_features`` taken as they are (``text_from``: another cache, e.g.
        for a timm backbone without a text tower) instead of encoding the prompts.

    Returns
    -------
    dict
        ``train_image_features`` (n_train, D), ``test_image_features`` (n_test, D),
        ``train_text_features`` (n_train_concepts, D_text), ``test_text_features`` (n_test_concepts, D_text),
        all L2-normalised; plus ``test_center_features`` (n_test_concepts, D) when ``centers`` (the
        image files of each test concept, in ``test.concepts`` order) is given: the mean of those
        images' normalised features (not re-normalised; untransformed images).
    """
    from .banks import parse_variants

    if chunk_size < 1 or batch_size < 1:
        raise UserError(f"chunk_size/batch_size: {chunk_size}/{batch_size} must be >= 1")
    if variant_mode not in ("mean", "concat"):
        raise UserError(f"variant_mode: {variant_mode!r} is not 'mean' or 'concat'")
    parsed = parse_variants(variants)
    train_prompts = concept_prompts(train.concepts, prompt_template)
    test_prompts = concept_prompts(test.concepts, prompt_template)
    center_paths = [p for group in centers for p in group] if centers is not None else []
    fingerprint = _fingerprint(encoder, train, test, parsed, variant_mode, prompt_template, chunk_size, center_paths)
    store = PartialStore(partial_dir, fingerprint)
    loader = (chunk_size, batch_size, num_workers)
    arrays = _image_features(
        store, encoder, train, test, centers, parsed, loader, variant_mode, store_variants, progress
    )
    if text_arrays is not None:
        return {**arrays, **{k: text_arrays[k] for k in ("train_text_features", "test_text_features")}}
    for key, prompts in (("train_text", train_prompts), ("test_text", test_prompts)):
        if not store.has(key):
            store.save(key, encoder.encode_texts(prompts, batch_size=max(batch_size, 64)))
        arrays[f"{key}_features"] = store.load(key)
    return arrays
