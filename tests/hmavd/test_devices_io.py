"""The shared helpers: one device rule, one JSON encoder for numpy, paths and tensors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hmavd.devices import resolve_device
from hmavd.errors import UserError
from hmavd.io import json_default


def test_resolve_device_rules():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("") == resolve_device("auto")
    with pytest.raises(UserError, match="device: 'bogus'"):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_json_default_encodes_numpy_paths_and_tensors():
    obj = {"a": np.float32(0.5), "b": np.arange(3), "c": Path("/x/y"), "d": torch.tensor([[1.0, 2.0]])}
    back = json.loads(json.dumps(obj, default=json_default))
    assert back == {"a": 0.5, "b": [0, 1, 2], "c": "/x/y", "d": [[1.0, 2.0]]}
    with pytest.raises(TypeError, match="object"):
        json.dumps({"e": object()}, default=json_default)
