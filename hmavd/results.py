"""Published figures of the configs that name a method, shown beside ours in results tables.

Each entry says where the number comes from and which epoch it reports: ``last`` (the final epoch),
``test-selected`` (the epoch of the best *test* score or loss, which flatters) or ``not stated``. Ours are
always the last epoch (``last.safetensors``) and the validation-selected one (``best.safetensors``).
All are 200-way zero-shot top-1 / top-5 in % on ThingsEEG2, test EEG averaged over its 80 repetitions,
mean over the 10 subjects (docs/recipes.md, "Published numbers").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Published", "PUBLISHED", "PUBLISHED_WAYS", "published_for", "format_published"]

#: every published figure here is 200-way (ThingsEEG2's 200 test concepts)
PUBLISHED_WAYS = 200


@dataclass(frozen=True)
class Published:
    """One published figure: mean top-1 / top-5 (%, ``None`` when not reported) and its provenance."""

    method: str
    protocol: str  # "intra" | "loso"
    top1: float | None
    top5: float | None
    epoch: str  # "last" | "test-selected" | "not stated"
    source: str


#: config name (``TrainConfig.name``) -> its published figures, one per protocol.
PUBLISHED: dict[str, tuple[Published, ...]] = {
    "nice": (Published("NICE", "intra", 13.8, None, "not stated", "HMAVD paper, Table 2"),),
    "hmavd-63": (Published("HMAVD-63", "intra", 15.8, 44.2, "not stated", "HMAVD paper, Table 2"),),
    "ubp": (Published("UBP", "intra", 50.9, 79.7, "last", "Wu et al., CVPR 2025; main.py tests ckpt_path='last'"),),
    "neurobridge": (
        Published(
            "NeuroBridge", "intra", 63.2, 89.9, "test-selected", "AAAI 2026; train.py keeps the lowest test loss"
        ),
    ),
    "visual-blur": (
        Published("visual blur", "intra", 80.0, 96.9, "last", "AAAI 2026; committed logs, epoch 150 of 150"),
        Published("visual blur", "loso", 20.0, 48.0, "last", "AAAI 2026; committed logs, epoch 50 of 50"),
    ),
    "brainhive-b32": (
        Published(
            "BrainHIVE B32",
            "intra",
            48.8,
            81.0,
            "not stated",
            "HUI-HUI-lab/brainhive-retrieval-reproduction (the paper's 73.7/94.1 fuses three banks)",
        ),
    ),
}


def published_for(name: str, protocol: str = "intra") -> Published | None:
    """The published figure of config ``name`` under ``protocol``; ``None`` when there is none."""
    for p in PUBLISHED.get(name, ()):
        if p.protocol == protocol:
            return p
    return None


def format_published(p: Published | None) -> str:
    """``50.9/79.7 (last)``, ``13.8/– (not stated)``, or ``–`` without a figure."""
    if p is None:
        return "–"
    cells = [f"{v:.1f}" if v is not None else "–" for v in (p.top1, p.top5)]
    return f"{'/'.join(cells)} ({p.epoch})"
