"""Checkpoints: safetensors tensors + JSON metadata in one file; nothing is ever unpickled.

A checkpoint file (``best.safetensors``, ``last.safetensors``) holds

* ``model/<name>`` — the model's ``state_dict`` tensors;
* ``state/<path>`` — optional training state (optimiser, RNG states …): any nest of dicts/lists of
  tensors and JSON scalars, flattened; the tensors go into the file and the structure into metadata;
* ``gallery.image.<source>``, ``gallery.text`` — optional stored gallery (:class:`hmavd.templates.Gallery`):
  the trained template branches' outputs for every test concept, so evaluation and the live decoder
  need no feature cache;
* the safetensors metadata entry ``"hmavd"``: JSON with ``model_config``, ``train_config`` (resolved),
  ``ch_names``, ``times``, ``sfreq``, ``features`` (cache provenance summary), ``code_version``,
  ``gallery`` (its names and bank provenance) and anything passed as ``extra`` (epoch, val_loss …).
  The keys are typed in :class:`hmavd.checkpoint_meta.CheckpointInfo`.

:func:`load_checkpoint` rebuilds the :class:`~hmavd.models.hmavd_model.HMAVD` from ``model_config``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint_meta import CheckpointInfo
from .config import config_to_dict
from .errors import UserError
from .io import atomic_path, json_default

log = logging.getLogger(__name__)

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "code_version",
    "flatten_state",
    "unflatten_state",
]

METADATA_KEY = "hmavd"
FORMAT_VERSION = 1


@functools.cache
def code_version() -> str:
    """Package version, plus the git commit (``+g<sha>``, ``.dirty``) when run from a checkout."""
    from . import __version__

    version = __version__
    try:
        repo = Path(__file__).resolve().parent.parent
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if sha.returncode == 0 and sha.stdout.strip():
            version += f"+g{sha.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested dict/list into ``tensors`` (key ``prefix/path``) and return the
    JSON-able skeleton with ``{"__tensor__": key}`` placeholders."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        return {"__dict__": [[_key(k), flatten_state(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [flatten_state(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def _key(k: Any) -> Any:
    if isinstance(k, (bool, int, float, str)) or k is None:
        return k
    raise TypeError(f"checkpoint state keys must be scalars, got {type(k).__name__}")


def unflatten_state(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            return [unflatten_state(v, tensors) for v in skeleton["__list__"]]
    return skeleton


def _config_dict(cfg: Any) -> dict[str, Any] | None:
    if cfg is None:
        return None
    if dataclasses.is_dataclass(cfg):
        return config_to_dict(cfg)
    return dict(cfg)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    cfg: Any = None,
    extra: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    gallery: Any = None,
) -> Path:
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : path
        ``*.safetensors`` file.
    model : HMAVD
        Its ``cfg`` (a ``ModelConfig``) is stored as ``model_config``.
    cfg : dataclass or mapping, optional
        The resolved training config.
    extra : mapping, optional
        JSON-able metadata (``ch_names``, ``times``, ``sfreq``, ``features``, ``epoch``, ``val_loss`` …).
    state : mapping, optional
        Training state for resuming (``optimizer``, ``rng`` …): nested dicts/lists of tensors and scalars.
    gallery : hmavd.templates.Gallery, optional
        The model's templates for the test concepts (:func:`hmavd.templates.compute_gallery`).
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        tensors[f"model/{name}"] = t.detach().to("cpu").contiguous()
    state_skeleton = flatten_state(dict(state), "state", tensors) if state else None
    if gallery is not None:
        tensors.update(gallery.tensors())
    model_cfg = getattr(model, "cfg", None)
    meta = {
        "format_version": FORMAT_VERSION,
        "code_version": code_version(),
        "model_config": _config_dict(model_cfg),
        "train_config": _config_dict(cfg),
        **dict(extra or {}),
        "gallery": gallery.metadata() if gallery is not None else None,
        "state": state_skeleton,
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta, default=json_default)})
    return path


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """Raw read: (tensors, metadata) with the training ``state`` unflattened into the metadata and the stored
    gallery, when there is one, as a :class:`hmavd.templates.Gallery` under ``gallery`` (else ``None``)."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.exists():
        raise UserError(f"checkpoint: {path} does not exist; pass a run folder or a .safetensors checkpoint")
    device = str(map_location)
    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            meta_raw = (fh.metadata() or {}).get(METADATA_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no items()
    except Exception as err:  # noqa: BLE001
        raise UserError(f"checkpoint: {path} is not a readable safetensors file ({type(err).__name__})") from None
    if meta_raw is None:
        raise UserError(f"checkpoint: {path} has no '{METADATA_KEY}' metadata; it was not written by hmavd-train")
    meta = json.loads(meta_raw)
    meta["state"] = unflatten_state(meta.get("state"), tensors) if meta.get("state") else None
    if meta.get("gallery"):
        from .templates import Gallery

        meta["gallery"] = Gallery.from_checkpoint(tensors, meta["gallery"])
    else:
        meta["gallery"] = None
    meta["path"] = str(path)
    return tensors, meta


def model_config_from_dict(d: Mapping[str, Any]) -> Any:
    """Rebuild a ``ModelConfig`` from its stored dict (lists back to tuples, unknown keys refused)."""
    from .models.hmavd_model import ModelConfig

    names = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise UserError(f"checkpoint: model_config keys {unknown} are unknown to this version; upgrade hmavd")

    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return ModelConfig(**{k: tup(v) for k, v in d.items()})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointInfo]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : path
        A ``.safetensors`` checkpoint, or a run folder (its ``best.safetensors``).
    map_location : str or device

    Returns
    -------
    model : HMAVD
        In eval mode on ``map_location``.
    info : CheckpointInfo
        The metadata (``train_config``, ``model_config``, ``ch_names``, ``times``, ``sfreq``,
        ``features``, ``code_version``, ``epoch`` …), ``gallery`` (a ``Gallery`` or None) and ``state``
        (training state or None).
    """
    from .models.hmavd_model import HMAVD

    tensors, meta = read_checkpoint(path, map_location)
    if not meta.get("model_config"):
        raise UserError(f"checkpoint: {path} lacks model_config; it was not written by hmavd-train")
    model = HMAVD(model_config_from_dict(meta["model_config"]))
    sd = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise UserError(
            f"checkpoint: {path} does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "use the hmavd version that wrote it"
        )
    model.to(map_location).eval()
    return model, meta
