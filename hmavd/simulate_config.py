"""``SimulateConfig``: the config of ``hmavd-simulate`` and its validation (one-line errors, nothing written).

Re-exported by :mod:`hmavd.simulate_io`; the keys are documented in docs/simulated-subject.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .channels import CHANNEL_SETS
from .config import ValidatedConfig
from .data.thingseeg2 import ImageMetadata
from .errors import UserError
from .preprocessing.presets import PRESETS
from .sim_features import GeometryParams, ReferenceFeatures
from .sim_inputs import load_concepts_from, load_reference_features
from .simulate import electrode_positions, make_image_metadata, select_concepts

__all__ = ["SimulateConfig", "PAPER_SIZES"]

#: The size keys ``scale=paper`` sets: ThingsEEG2's 16540 x 4 training and 200 x 80 test trials.
PAPER_SIZES: dict[str, int] = {
    "n_train_concepts": 1654,
    "n_train_images_per_concept": 10,
    "n_test_concepts": 200,
    "n_sessions": 4,
    "train_reps_per_session": 1,
    "test_reps_per_session": 20,
}


#: Integer keys that must be >= 1.
_AT_LEAST_ONE = (
    "n_subjects",
    "n_train_images_per_concept",
    "n_sessions",
    "train_reps_per_session",
    "test_reps_per_session",
    "n_sources",
    "sequence_length",
    "prototype_rank",
    "geometry_n_categories",
    "geometry_center_images",
    "geometry_spectrum_rank",
)


@dataclass(frozen=True)
class SimulateConfig(ValidatedConfig):
    """Config of ``hmavd-simulate`` (``configs/simulate.yaml``, ``simulate-paper.yaml``).

    Sizes: ``n_train_concepts`` x ``n_train_images_per_concept`` training images shown
    ``train_reps_per_session`` times in each of ``n_sessions`` sessions; ``n_test_concepts`` test
    images shown ``test_reps_per_session`` times per session. ``scale="paper"`` sets these six keys
    to :data:`PAPER_SIZES`. Forward model: see :mod:`hmavd.simulate` and docs/simulated-subject.md.
    ``new_session=true``: add a new session (own noise, ``new_session_change`` × the documented change;
    :mod:`hmavd.sim_sessions`, docs/new-session.md) to the dataset already at ``--out``.
    """

    seed: int = 0
    n_subjects: int = 1
    scale: str = "default"
    n_train_concepts: int = 200
    n_train_images_per_concept: int = 4
    n_test_concepts: int = 200
    n_sessions: int = 2
    train_reps_per_session: int = 1
    test_reps_per_session: int = 4
    channels: str = "all63"
    preset: str = "nice"
    n_sources: int = 32
    snr: float = 0.05
    signal_tmin_s: float = 0.1
    signal_tmax_s: float = 0.6
    common_erp_ratio: float = 1.0
    noise_uv: float = 10.0
    noise_ar: float = 0.95
    noise_length_m: float = 0.1
    noise_white_fraction: float = 0.2
    prototype_rank: int = 64
    image_variation: float = 1.0
    text_noise: float = 0.5
    modality_gap: float = 0.5
    catch_fraction: float = 0.05
    sequence_length: int = 20
    sequence_gap_s: float = 0.75
    geometry_pairwise_cosine: float = 0.54
    geometry_center_cosine: float = 0.89
    geometry_spectrum_decay: float = 0.6
    geometry_spectrum_rank: int = 320
    geometry_n_categories: int = 20
    geometry_category_share: float = 0.55
    geometry_image_spread: float = 0.3
    geometry_center_images: int = 12
    features_from: str = ""
    centers_from: str = ""
    concepts_from: str = ""
    feature_name: str = "clip-vitl14-sim"
    write_raw: bool = True
    write_replay: bool = True
    progress: bool = True
    new_session: bool = False
    new_session_change: float = 1.0

    def __post_init__(self) -> None:
        self.validate_fields()  # construction reads no file: the defaults and replace() always work

    def validate(self) -> None:
        """The whole check before writing: :meth:`validate_fields`, then :meth:`check_inputs`."""
        self.validate_fields()
        self.check_inputs()

    def validate_fields(self) -> None:
        """Check the fields; reads no file (``features_from`` / ``concepts_from``: :meth:`check_inputs`)."""
        if self.scale not in ("default", "paper"):
            raise UserError(f"scale: {self.scale!r} is not 'default' or 'paper'; pick one")
        if self.preset not in PRESETS:
            raise UserError(f"preset: {self.preset!r} is not one of {sorted(PRESETS)}; pick one")
        for key in _AT_LEAST_ONE:
            if getattr(self, key) < 1:
                raise UserError(f"{key}: {getattr(self, key)} must be >= 1")
        if not self.snr > 0:
            raise UserError(f"snr: {self.snr} must be > 0 (signal/noise power ratio, e.g. 0.05)")
        if self.new_session_change < 0:
            raise UserError(
                f"new_session_change: {self.new_session_change} must be >= 0 (0 = the training sessions' noise, "
                "1 = the documented change of hmavd.sim_sessions.SessionChange)"
            )
        if not 0 <= self.signal_tmin_s < self.signal_tmax_s <= 0.9:
            raise UserError(
                f"signal window: [{self.signal_tmin_s}, {self.signal_tmax_s}] s must satisfy "
                "0 <= signal_tmin_s < signal_tmax_s <= 0.9"
            )
        if not 0 <= self.catch_fraction < 1:
            raise UserError(f"catch_fraction: {self.catch_fraction} must be in [0, 1)")
        if not 0 <= self.noise_ar < 1:
            raise UserError(f"noise_ar: {self.noise_ar} must be in [0, 1)")
        if self.noise_uv <= 0:
            raise UserError(f"noise_uv: {self.noise_uv} must be > 0 (µV)")
        self._validate_geometry()
        self._validate_channels()
        sizes = self._sizes()
        if not self.concepts_from:  # generated names; a user's list is checked by check_inputs
            select_concepts(sizes["n_train_concepts"], sizes["n_test_concepts"], None)

    def check_inputs(self) -> None:
        """Read ``features_from`` / ``concepts_from`` and check them against the sizes (before writing)."""
        sizes = self._sizes()
        source = self.concept_source()
        train_folders, _ = select_concepts(sizes["n_train_concepts"], sizes["n_test_concepts"], source)
        if source is not None:
            make_image_metadata(train_folders, sizes["n_train_images_per_concept"], (), source)  # enough file names
        ref = self.reference()
        if ref is not None and source is not None and ref.test_concepts is not None:
            if ref.test_concepts != source.test_concepts:
                raise UserError(
                    f"concepts_from: {self.concepts_from} lists other test concepts than features_from="
                    f"{self.features_from} (its rows would be misnamed); give the metadata the cache was built from"
                )
        if ref is not None and len(ref.test_image) < sizes["n_test_concepts"]:
            raise UserError(
                f"n_test_concepts: {sizes['n_test_concepts']} but features_from={self.features_from} has "
                f"{len(ref.test_image)} test images; lower it to {len(ref.test_image)}"
            )

    def _sizes(self) -> dict[str, int]:
        """The six size keys after ``scale`` (without building another config)."""
        return dict(PAPER_SIZES) if self.scale == "paper" else {k: getattr(self, k) for k in PAPER_SIZES}

    def _validate_channels(self) -> None:
        names = self.channel_names()
        electrode_positions(names)  # every name must be a 10-05 electrode
        preset = PRESETS[self.preset]
        try:
            preset.select_channels(list(names))
        except UserError as err:
            raise UserError(
                f"channels: {self.channels!r} does not fit preset={self.preset} ({err}); record all63 for "
                "preset=nice, or use preset=gifford (needs O*/P* channels)"
            ) from None
        reps = self._sizes()
        if preset.mvnn_mode == "gifford" and min(reps["train_reps_per_session"], reps["test_reps_per_session"]) < 2:
            raise UserError(
                f"train_reps_per_session/test_reps_per_session: {reps['train_reps_per_session']}/"
                f"{reps['test_reps_per_session']} are too few for preset=gifford (its covariance is over "
                "repetitions); set both >= 2"
            )

    def _validate_geometry(self) -> None:
        if not 0 <= self.geometry_pairwise_cosine < self.geometry_center_cosine < 1:
            raise UserError(
                f"geometry_pairwise_cosine/geometry_center_cosine: {self.geometry_pairwise_cosine}/"
                f"{self.geometry_center_cosine} must satisfy 0 <= pairwise < center < 1 (CLIP ViT-L/14: 0.54/0.89)"
            )
        if not 0 < self.geometry_spectrum_decay <= 3:
            raise UserError(f"geometry_spectrum_decay: {self.geometry_spectrum_decay} must be in (0, 3], e.g. 0.8")
        if self.geometry_spectrum_rank > GeometryParams().dim:
            raise UserError(
                f"geometry_spectrum_rank: {self.geometry_spectrum_rank} exceeds the feature dimension "
                f"{GeometryParams().dim}; use at most {GeometryParams().dim}"
            )
        if not 0 <= self.geometry_category_share < 1:
            raise UserError(f"geometry_category_share: {self.geometry_category_share} must be in [0, 1), e.g. 0.4")
        if not 0 <= self.geometry_image_spread <= 2:
            raise UserError(f"geometry_image_spread: {self.geometry_image_spread} must be in [0, 2], e.g. 0.3")
        if self.centers_from and not self.features_from:
            raise UserError(f"centers_from: {self.centers_from!r} needs features_from=<test features>; set both")

    def geometry(self) -> GeometryParams:
        """The generated feature geometry's parameters (``geometry_*`` keys)."""
        return GeometryParams(
            pairwise_cosine=self.geometry_pairwise_cosine,
            center_cosine=self.geometry_center_cosine,
            spectrum_decay=self.geometry_spectrum_decay,
            spectrum_rank=self.geometry_spectrum_rank,
            n_categories=self.geometry_n_categories,
            category_share=self.geometry_category_share,
            image_spread=self.geometry_image_spread,
            center_images=self.geometry_center_images,
        )

    def reference(self) -> ReferenceFeatures | None:
        """The user's real features (``features_from=``) or None for the generated geometry."""
        return load_reference_features(self.features_from, self.centers_from) if self.features_from else None

    def concept_source(self) -> ImageMetadata | None:
        """The user's metadata (``concepts_from=``) or None for generated concept names."""
        return load_concepts_from(self.concepts_from) if self.concepts_from else None

    def resolved(self) -> SimulateConfig:
        """The config with ``scale="paper"`` expanded into the size keys."""
        return replace(self, **PAPER_SIZES) if self.scale == "paper" else self

    def channel_names(self) -> tuple[str, ...]:
        """The recorded EEG channels (a named set or comma-separated names)."""
        if self.channels in CHANNEL_SETS:
            return CHANNEL_SETS[self.channels]
        names = tuple(c.strip() for c in self.channels.split(",") if c.strip())
        if len(names) < 2:
            raise UserError(f"channels: {self.channels!r} names fewer than 2 channels; use all63, visual17 or names")
        return names
