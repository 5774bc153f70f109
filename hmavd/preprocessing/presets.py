"""The two labelled preprocessing presets that reproduce the public ThingsEEG2 pipelines (``docs/preprocessing.md``).

``nice``    NICE-EEG ``preprocessing/`` (the HMAVD paper's data): 63 channels in NICE's order,
            -0.2…1.0 s, 250 Hz, crop to 0…0.996 s (250 samples) before MVNN, covariance per
            (image, repetition) over time, from the training partition only.
``gifford`` ThingsEEG2 ``02_eeg_preprocessing/`` (the official release): the 17 O*/P* channels in
            raw order, -0.2…0.8 s, 100 Hz (100 samples, -0.2…0.79 s), no crop, covariance per
            (image, time point) over repetitions, mean of the test and training covariances.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..channels import THINGS63, resolve_channels
from ..errors import UserError
from .transforms import pick_channels_regexp

__all__ = ["PreprocessPreset", "PRESETS", "PREPROCESS_PRESETS", "get_preset", "REP_ORDER_SEED"]

#: Seed of the public code's repetition subset/permutation (``sklearn.utils.shuffle``).
REP_ORDER_SEED = 20200220


@dataclass(frozen=True)
class PreprocessPreset:
    """Every parameter of one raw -> preprocessed pipeline.

    Attributes
    ----------
    name : str
    channels : tuple of str or None
        Ordered pick by name (``None``: use ``channel_regexp``).
    channel_regexp : str or None
        Pick by regexp in the recording's order (``re.match``).
    tmin_s, tmax_s : float
        Epoch window around each onset (both included), seconds.
    baseline_tmin_s, baseline_tmax_s : float or None
        Baseline window (``None`` = epoch start), t = 0 included.
    sfreq : float
        Output rate in Hz (``Epochs.resample`` after epoching).
    crop_tmin_s, crop_tmax_s : float or None
        Crop after resampling (both ``None``: no crop).
    mvnn_mode : {"nice", "gifford"}
        Covariance per (image, repetition) over time, or per (image, time) over repetitions.
    mvnn_partitions : {"training", "both"}
        Covariance from the training partition only, or the mean of test and training.
    max_reps_training, max_reps_test : int
        Repetitions kept per image and session (seeded subset as in the public code).
    catch_id : int
        Event code of target/catch trials, dropped.
    """

    name: str
    channels: tuple[str, ...] | None
    channel_regexp: str | None
    tmin_s: float
    tmax_s: float
    baseline_tmin_s: float | None
    baseline_tmax_s: float | None
    sfreq: float
    crop_tmin_s: float | None
    crop_tmax_s: float | None
    mvnn_mode: str
    mvnn_partitions: str
    max_reps_training: int = 2
    max_reps_test: int = 20
    catch_id: int = 99999
    description: str = ""

    def select_channels(self, ch_names: list[str] | tuple[str, ...], where: str = "") -> list[str]:
        """The channel names this preset keeps from a recording's ``ch_names``, in output order.

        ``where`` (e.g. the recording's file name) is named in the error when a channel is missing.
        """
        if self.channels is not None:
            try:
                return resolve_channels(list(self.channels), list(ch_names), where=where)
            except UserError as err:
                raise UserError(f"{err} (preset {self.name!r} needs all {len(self.channels)} of them)") from None
        if self.channel_regexp is not None:
            return pick_channels_regexp(list(ch_names), self.channel_regexp, where=where)
        raise UserError(f"preset {self.name!r}: gives neither channels nor channel_regexp")


PRESETS: dict[str, PreprocessPreset] = {
    "nice": PreprocessPreset(
        name="nice",
        channels=THINGS63,
        channel_regexp=None,
        tmin_s=-0.2,
        tmax_s=1.0,
        baseline_tmin_s=None,
        baseline_tmax_s=0.0,
        sfreq=250.0,
        crop_tmin_s=0.0,
        crop_tmax_s=None,
        mvnn_mode="nice",
        mvnn_partitions="training",
        description="NICE-EEG preprocessing (HMAVD paper): 63 ch, 0-0.996 s, 250 Hz, 250 samples",
    ),
    "gifford": PreprocessPreset(
        name="gifford",
        channels=None,
        channel_regexp="^O *|^P *",
        tmin_s=-0.2,
        tmax_s=0.8,
        baseline_tmin_s=None,
        baseline_tmax_s=0.0,
        sfreq=100.0,
        crop_tmin_s=None,
        crop_tmax_s=None,
        mvnn_mode="gifford",
        mvnn_partitions="both",
        description="official ThingsEEG2 release: 17 O*/P* ch, -0.2-0.79 s, 100 Hz, 100 samples",
    ),
}

#: Alias used in docs/architecture.md.
PREPROCESS_PRESETS = PRESETS


def get_preset(name: str) -> PreprocessPreset:
    """The preset called ``name``; one-line error naming the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"preset: {name!r} is not one of {sorted(PRESETS)}; pick one of them") from None
