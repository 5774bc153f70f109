"""Imports point one way: ``gui → bci → hmavd``; ``bci`` never imports Qt; ``hmavd`` streams nothing.

Every module of a package is imported in a fresh interpreter and the modules it pulled in are checked,
so a new module that breaks the layering fails here without anyone listing it. The walk is checked
against the ``.py`` files on disk, so a module the walk skipped cannot pass unseen.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import importlib, json, pkgutil, sys
names = []
for target in sys.argv[1:]:
    mod = importlib.import_module(target)
    names.append(mod.__name__)
    if target.count(".") == 0 and hasattr(mod, "__path__"):
        for info in pkgutil.walk_packages(mod.__path__, prefix=mod.__name__ + "."):
            importlib.import_module(info.name)
            names.append(info.name)
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"modules": names, "loaded": loaded}))
"""

QT_ROOTS = {"PyQt6", "PyQt5", "PySide6", "PySide2", "pyqtgraph", "qtpy"}
#: Optional extras: importing a package never needs them (hmavd[present] is PsychoPy, loaded by the window only).
OPTIONAL_ROOTS = {"psychopy", "pyglet"}

#: The ``gui`` modules that hold no widget: pure helpers, settings, stream discovery and the session object.
QT_FREE_GUI = ("gui.state", "gui.settings", "gui.streams", "gui.session", "gui.view", "gui.engine_link")


def _imported_by(*targets: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *targets], capture_output=True, text=True, timeout=240, check=False, cwd=ROOT
    )
    assert out.returncode == 0, f"importing {targets} failed:\n{out.stderr[-2000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _modules_on_disk(package: str) -> set[str]:
    out = set()
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("hmavd", {"bci", "gui", "pylsl"} | QT_ROOTS | OPTIONAL_ROOTS),  # offline: no live streams, no window
        ("bci", {"gui"} | QT_ROOTS | OPTIONAL_ROOTS),  # real time without Qt
    ],
)
def test_package_imports_point_one_way(package, forbidden):
    report = _imported_by(package)
    assert set(report["modules"]) == _modules_on_disk(package)  # every module of the package was imported
    leaked = forbidden & set(report["loaded"])
    assert not leaked, f"importing every module of {package} pulled in {sorted(leaked)}"


@pytest.mark.parametrize("module", QT_FREE_GUI)
def test_gui_helpers_import_no_qt(module):
    leaked = QT_ROOTS & set(_imported_by(module)["loaded"])
    assert not leaked, f"importing {module} pulled in {sorted(leaked)}; keep widgets out of it"


def test_probe_detects_qt():
    """The check can fail: the gui package does load Qt."""
    report = _imported_by("gui")
    assert "PyQt6" in set(report["loaded"])
    assert set(report["modules"]) == _modules_on_disk("gui")


_BUILD_LIVE_CONFIG = r"""
import json, sys
from bci.live_config import LiveConfig
LiveConfig(eeg_stream="eeg", checkpoint="model.safetensors")
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_building_a_live_config_imports_no_torch():
    """The window and ``--print-config`` build a LiveConfig without paying for torch (the engine loads it)."""
    out = subprocess.run(
        [sys.executable, "-c", _BUILD_LIVE_CONFIG], capture_output=True, text=True, timeout=240, check=True, cwd=ROOT
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "bci" in loaded  # the probe ran
    assert "torch" not in loaded
