"""EEG encoders, projection heads, adapters and the HMAVD model."""

from .adapters import Adapter, fuse
from .encoders import ENCODERS, build_encoder
from .heads import Projection
from .hmavd_model import HMAVD, ModelConfig, count_parameters

__all__ = [
    "Adapter",
    "ENCODERS",
    "HMAVD",
    "ModelConfig",
    "Projection",
    "build_encoder",
    "count_parameters",
    "fuse",
]
