"""Channel names and electrode groups of the ThingsEEG2 montage (extended 10-10 system)."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import UserError

#: The 63 EEG channels of ThingsEEG2 in the order NICE's preprocessing picks them.
THINGS63: tuple[str, ...] = (
    "Fp1", "Fp2", "AF7", "AF3", "AFz", "AF4", "AF8", "F7", "F5", "F3", "F1", "F2", "F4", "F6", "F8",
    "FT9", "FT7", "FC5", "FC3", "FC1", "FCz", "FC2", "FC4", "FC6", "FT8", "FT10", "T7", "C5", "C3", "C1",
    "Cz", "C2", "C4", "C6", "T8", "TP9", "TP7", "CP5", "CP3", "CP1", "CPz", "CP2", "CP4", "CP6", "TP8",
    "TP10", "P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "PO7", "PO3", "POz", "PO4", "PO8",
    "O1", "Oz", "O2",
)  # fmt: skip

#: The 17 occipital/parietal channels of the official ThingsEEG2 release (HMAVD-17).
VISUAL17: tuple[str, ...] = (
    "P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8",
    "PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2",
)  # fmt: skip

#: Electrode groups used by the region ablation (paper Fig. 7B).
REGIONS: dict[str, tuple[str, ...]] = {
    "frontal": tuple(c for c in THINGS63 if c.startswith(("Fp", "AF", "F")) and not c.startswith(("FT", "FC"))),
    "temporal": tuple(c for c in THINGS63 if c.startswith(("FT", "T"))),
    "central": tuple(c for c in THINGS63 if c.startswith(("FC", "C")) and not c.startswith("CP")),
    "parietal": tuple(c for c in THINGS63 if c.startswith(("CP", "P")) and not c.startswith("PO")),
    "occipital": tuple(c for c in THINGS63 if c.startswith(("PO", "O"))),
}

CHANNEL_SETS: dict[str, tuple[str, ...]] = {"all63": THINGS63, "visual17": VISUAL17}


def resolve_channels(spec: str | Sequence[str], available: Sequence[str], where: str = "") -> list[str]:
    """Resolve a channel selection to an ordered list of names present in ``available``.

    Parameters
    ----------
    spec : str or sequence of str
        ``"all"`` (every available channel, in their order), a named set (``"all63"``,
        ``"visual17"``), a comma-separated string of names, or a list of names.
    available : sequence of str
        The channel names of the data.
    where : str
        What holds ``available`` (e.g. a file name), named in the error.

    Raises
    ------
    UserError
        When a requested name is not in ``available``, is requested twice, or nothing is requested.
    """
    of = f" in {where}" if where else ""
    if isinstance(spec, str):
        if spec == "all":
            return list(available)
        names = list(CHANNEL_SETS[spec]) if spec in CHANNEL_SETS else [s.strip() for s in spec.split(",") if s.strip()]
    else:
        names = list(spec)
    if not names:
        raise UserError(f"channels: {spec!r} names no channel; give names, a set {sorted(CHANNEL_SETS)} or 'all'")
    missing = [n for n in names if n not in available]
    if missing:
        raise UserError(
            f"channels: {missing[:5]} not in the data's {len(available)} channels{of} "
            f"(e.g. {list(available)[:5]}); pick names from the data or use 'all'"
        )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"channels: {dup[:5]} requested more than once; name each channel once")
    return names
