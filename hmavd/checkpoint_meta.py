"""What a checkpoint says about itself: the typed form of its metadata.

:func:`hmavd.checkpoint.load_checkpoint` and :func:`~hmavd.checkpoint.read_checkpoint` return a
:class:`CheckpointInfo`; ``hmavd-train`` writes one (:func:`training_info`), the evaluation and the
live decoder read it. They are ``TypedDict`` s, so they stay plain JSON-able dicts at run time (old
checkpoints lacking a key still load; read optional keys with ``.get``).
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["FeatureSummary", "GalleryMeta", "CheckpointInfo", "training_info"]


class FeatureSummary(TypedDict, total=False):
    """Short provenance of the feature cache a model was trained with (``hmavd.datasets.cache_summary``)."""

    path: str  # absolute cache folder at training time
    model: str
    pretrained: str
    weights_file: str
    prompt: str
    simulated: bool
    dim: int
    format_version: int
    n_train_images: int
    n_test_images: int


class GalleryMeta(TypedDict, total=False):
    """The ``gallery`` entry of a checkpoint's metadata (its tensors: ``gallery.image.<source>``, ``gallery.text``)."""

    concepts: list[str]  # test concept folders, the template row order
    images: list[str]  # test image ids ("<concept>/<file>")
    image_sources: list[str]  # "test-images", and "centers" when the cache had them
    text: bool  # a text-branch tensor is stored
    normalized: bool  # False: branch outputs before the final L2 normalisation
    bank: dict[str, Any]  # FeatureSummary of the training cache + "fingerprint" of its test tensors


class CheckpointInfo(TypedDict, total=False):
    """Metadata of a ``hmavd-train`` checkpoint, as :func:`hmavd.checkpoint.load_checkpoint` returns it."""

    format_version: int
    code_version: str
    model_config: dict[str, Any]  # ModelConfig fields
    train_config: dict[str, Any] | None  # the resolved TrainConfig
    data_dir: str  # absolute dataset root at training time
    ch_names: list[str]  # model input channels, in order
    times: list[float]  # model input sample times, seconds
    sfreq: float  # Hz
    units: str  # EEG units of the training data ("V")
    preset: str  # preprocessing preset name, when recorded
    features: FeatureSummary
    train_subjects: list[int]
    n_train: int
    n_val: int
    epoch: int
    val_loss: float
    selection: str  # "val-selected" (best.safetensors) | "last" (last.safetensors)
    gallery: Any  # read: a hmavd.templates.Gallery (tensors attached) or None; on disk: GalleryMeta
    state: dict[str, Any] | None  # training state (optimiser, RNG) of last.safetensors
    path: str  # the file read
    features_path: str  # set by bci.decoder: the cache the templates came from ("" = stored gallery)
    template_source: str  # set by bci.decoder: "gallery" | "cache"


def training_info(
    data_dir: str,
    ch_names: list[str],
    times: list[float],
    sfreq: float,
    features: FeatureSummary,
    train_subjects: list[int],
    n_train: int,
    n_val: int,
    units: str = "V",
) -> CheckpointInfo:
    """The metadata ``hmavd-train`` writes with every checkpoint of a run (epoch and gallery added per save)."""
    return CheckpointInfo(
        data_dir=data_dir,
        ch_names=list(ch_names),
        times=[float(t) for t in times],
        sfreq=float(sfreq),
        units=units,
        features=features,
        train_subjects=[int(s) for s in train_subjects],
        n_train=int(n_train),
        n_val=int(n_val),
    )
