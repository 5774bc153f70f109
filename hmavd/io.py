"""Small IO helpers: atomic writes and safe readers shared by every command."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_path", "atomic_write_json", "save_npy_atomic", "json_default"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash mid-write leaves no half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as pretty JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=json_default))
    return Path(path)


def save_npy_atomic(path: str | Path, arr: Any, allow_object: bool = False) -> Path:
    """``np.save`` to ``path`` atomically (``allow_object`` for ThingsEEG2's pickled dict format)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=allow_object)
    return Path(path)


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars/arrays, paths and torch tensors (as lists)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if type(o).__module__.startswith("torch") and hasattr(o, "tolist"):  # a tensor, without importing torch
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
