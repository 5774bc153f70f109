"""Imports point one way: ``gui → bci → hmavd``; ``bci`` never imports Qt.

Every module of a package is imported in a fresh interpreter and the modules it pulled in are checked,
so a new module that breaks the layering fails here without anyone listing it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = r"""
import importlib, json, pkgutil, sys
pkg = importlib.import_module(sys.argv[1])
names = [pkg.__name__]
for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
    importlib.import_module(info.name)
    names.append(info.name)
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"modules": names, "loaded": loaded}))
"""

QT_ROOTS = {"PyQt6", "PyQt5", "PySide6", "PySide2", "pyqtgraph", "qtpy"}


def _imported_by(package: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, package], capture_output=True, text=True, timeout=240, check=False
    )
    assert out.returncode == 0, f"importing every module of {package} failed:\n{out.stderr[-2000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("hmavd", {"bci", "gui"} | QT_ROOTS), ("bci", {"gui"} | QT_ROOTS)],
)
def test_package_imports_point_one_way(package, forbidden):
    report = _imported_by(package)
    assert len(report["modules"]) > 3  # the walk really imported the package's modules
    leaked = forbidden & set(report["loaded"])
    assert not leaked, f"importing {package} pulled in {sorted(leaked)}"


def test_probe_detects_qt():
    """The check can fail: the gui package does load Qt."""
    report = _imported_by("gui")
    assert "PyQt6" in set(report["loaded"])
