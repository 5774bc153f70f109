"""Settings of ``hmavd-live`` remembered between runs, and the simulated subject's default paths.

Plain Python (no Qt) so it is testable and usable by ``--headless``. Settings are a JSON file in the
user config directory (``$XDG_CONFIG_HOME/hmavd/live.json``, or ``~/.config/hmavd/live.json``); the
environment variable ``HMAVD_LIVE_SETTINGS`` or an explicit path overrides it (tests use a tmp path).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bci.live_config import LiveConfig
from hmavd.io import atomic_write_json

__all__ = [
    "LiveSettings",
    "AMPLIFIER_FIELDS",
    "DemoPaths",
    "default_settings_path",
    "load_settings",
    "save_settings",
    "demo_paths",
    "DEMO_DATA_DIR",
    "DEMO_RUNS_DIR",
]

log = logging.getLogger(__name__)

#: Where ``hmavd-demo`` writes the simulated subject and its trained model (relative to the cwd).
DEMO_DATA_DIR = "hmavd_data/sim"
DEMO_RUNS_DIR = "runs/demo"

#: The ``LiveConfig`` fields that describe the amplifier's stream (docs/realtime.md, "Connect your amplifier").
AMPLIFIER_FIELDS = ("stream_units", "amplitude_check", "interpolate_missing", "marker_map", "marker_offset_s")

_LIVE_FIELDS = {f.name: f for f in dataclasses.fields(LiveConfig)}


def _live_default(name: str) -> Any:
    """``LiveConfig``'s default of ``name``: the fields the window remembers start where the engine's do."""
    return _LIVE_FIELDS[name].default


@dataclass
class LiveSettings:
    """Everything the window remembers between runs (all JSON-safe).

    Empty strings mean "not chosen yet": the simulated subject's defaults are used. The fields that are
    also :class:`bci.live_config.LiveConfig` fields take its defaults (``record_dir`` empty: ``recordings``).
    """

    eeg_stream: str = _live_default("eeg_stream")
    marker_stream: str = _live_default("marker_stream")
    checkpoint: str = _live_default("checkpoint")
    features: str = _live_default("features")
    whitening: str = _live_default("whitening")
    templates: str = _live_default("templates")
    image_source: str = _live_default("image_source")
    image_dir: str = ""
    record_dir: str = _live_default("record_dir")
    last_recording: str = ""
    replay_speed: float = _live_default("replay_speed")
    data_dir: str = DEMO_DATA_DIR
    runs_dir: str = DEMO_RUNS_DIR
    scope_window_s: float = 5.0
    scope_scale_uv: float = 50.0
    scope_channels: list[str] = field(default_factory=list)  # empty = all
    # the amplifier's stream (AMPLIFIER_FIELDS)
    stream_units: str = _live_default("stream_units")  # V, mV, uV, nV; empty = the channels' unit labels
    amplitude_check: str = _live_default("amplitude_check")  # unlabelled stream vs training data: refuse/warn/off
    interpolate_missing: int = _live_default("interpolate_missing")  # missing model channels interpolated
    marker_map: str = _live_default("marker_map")  # code -> image file or concept (.json/.yaml/.csv)
    marker_offset_s: float = _live_default("marker_offset_s")  # display delay added to every marker (photodiode)
    geometry: str = ""  # hex of QMainWindow.saveGeometry()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LiveSettings:
        """Build from a dict; unknown keys and values of the wrong type (older files) are logged and skipped."""
        out = cls()
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            log.warning("settings: ignoring unknown key(s) %s (not LiveSettings fields)", ", ".join(unknown))
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            value, current = values[f.name], getattr(out, f.name)
            if isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(out, f.name, float(value))
            elif type(current) is int and type(value) is int:
                setattr(out, f.name, value)
            elif isinstance(current, list) and isinstance(value, list):
                setattr(out, f.name, [str(v) for v in value])
            elif isinstance(current, str) and isinstance(value, str):
                setattr(out, f.name, value)
            else:
                log.warning("settings: ignoring %s=%r (expected %s)", f.name, value, type(current).__name__)
        return out

    def amplifier_values(self) -> dict[str, Any]:
        """The ``LiveConfig`` fields that describe the amplifier's stream (:data:`AMPLIFIER_FIELDS`), as remembered."""
        return {k: getattr(self, k) for k in AMPLIFIER_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_settings_path() -> Path:
    """``$HMAVD_LIVE_SETTINGS``, else ``$XDG_CONFIG_HOME/hmavd/live.json`` (``~/.config`` by default)."""
    env = os.environ.get("HMAVD_LIVE_SETTINGS")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hmavd" / "live.json"


def load_settings(path: str | Path | None = None) -> LiveSettings:
    """Read the settings file; a missing or unreadable file gives the defaults (logged, never raised)."""
    path = Path(path) if path is not None else default_settings_path()
    if not path.exists():
        return LiveSettings()
    try:
        values = json.loads(path.read_text())
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        log.warning("settings file %s unreadable (%s); using defaults", path, err)
        return LiveSettings()
    return LiveSettings.from_dict(values)


def save_settings(settings: LiveSettings, path: str | Path | None = None) -> Path | None:
    """Write the settings atomically; returns the path, or ``None`` when it could not be written."""
    path = Path(path) if path is not None else default_settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, settings.to_dict())
    except OSError as err:
        log.warning("could not save settings to %s: %s", path, err)
        return None
    return path


@dataclass(frozen=True)
class DemoPaths:
    """The simulated subject's recording, model and normalisation files, and what is missing.

    Attributes
    ----------
    recording : Path
        ``<data>/recordings/sub-01_test.fif`` (replayed by "Start demo").
    checkpoint, features, whitening : Path or None
        Found files (``None`` when absent).
    missing : tuple of str
        Human-readable names of what is absent; empty when the demo can run.
    data_dir, runs_dir : Path
        Where they were looked for.
    """

    recording: Path
    checkpoint: Path | None
    features: Path | None
    whitening: Path | None
    missing: tuple[str, ...]
    data_dir: Path = Path(DEMO_DATA_DIR)
    runs_dir: Path = Path(DEMO_RUNS_DIR)

    @property
    def ready(self) -> bool:
        return not self.missing

    @property
    def create_command(self) -> str:
        """The command that creates the missing files (``hmavd-demo``, with ``--data``/``--out`` when the
        folders are not its defaults), to run in the folder the window was started from."""
        cmd = ["hmavd-demo"]
        if self.data_dir != Path(DEMO_DATA_DIR):
            cmd += ["--data", _quote(str(self.data_dir))]
        if self.runs_dir != Path(DEMO_RUNS_DIR):
            cmd += ["--out", _quote(str(self.runs_dir))]
        return " ".join(cmd)

    def notice(self) -> tuple[str, str, str]:
        """``(html, kind, tooltip)`` of the window's notice: how to start the demo, or how to create it."""
        if self.ready:
            return (
                "The simulated subject is ready: press <b>▶ Start demo</b> to replay its test session and "
                "decode it live with the demo model (or choose streams and a checkpoint, then Connect).",
                "ready",
                str(self.recording),
            )
        where = Path.cwd() if not self.data_dir.is_absolute() else self.data_dir.parent
        return (
            f"<b>No simulated subject here yet.</b> Create it and its demo model once with "
            f"<code>{self.create_command}</code> (run in {where}; a few minutes on a CPU), then press "
            "<b>▶ Start demo</b>. Or choose your own streams and checkpoint above.",
            "missing",
            "missing:\n" + "\n".join(self.missing),
        )


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


_CKPT_NAMES = ("best.safetensors", "checkpoint.safetensors", "best.pt", "model.safetensors", "last.safetensors")


def _find_checkpoint(runs_dir: Path) -> Path | None:
    """The best checkpoint of the newest HMAVD demo run under ``runs_dir`` (NICE baseline runs last)."""
    if not runs_dir.is_dir():
        return None
    found: list[Path] = []
    for name in _CKPT_NAMES:
        found.extend(runs_dir.rglob(name))
    if not found:
        found = [p for p in runs_dir.rglob("*.safetensors") if "optim" not in p.name]
    if not found:
        return None

    def rank(p: Path) -> tuple[int, int, float]:
        nice = int("nice" in str(p.relative_to(runs_dir)).lower())
        pref = _CKPT_NAMES.index(p.name) if p.name in _CKPT_NAMES else len(_CKPT_NAMES)
        return (nice, pref, -p.stat().st_mtime)

    return sorted(found, key=rank)[0]


def _find_features(data_dir: Path) -> Path | None:
    feats = data_dir / "features"
    if not feats.is_dir():
        return None
    dirs = sorted(p.parent for p in feats.rglob("features.safetensors"))
    return dirs[0] if dirs else None


def demo_paths(data_dir: str | Path = DEMO_DATA_DIR, runs_dir: str | Path = DEMO_RUNS_DIR) -> DemoPaths:
    """Locate the simulated subject's files written by ``hmavd-demo`` (no file is read or created)."""
    data_dir, runs_dir = Path(data_dir), Path(runs_dir)
    recording = data_dir / "recordings" / "sub-01_test.fif"
    checkpoint = _find_checkpoint(runs_dir)
    features = _find_features(data_dir)
    mvnn = data_dir / "preprocessed_eeg" / "sub-01" / "mvnn.npz"
    whitening = mvnn if mvnn.exists() else None
    missing = []
    if not recording.exists():
        missing.append(f"recording {recording}")
    if checkpoint is None:
        missing.append(f"trained model under {runs_dir}")
    if features is None:
        missing.append(f"feature cache under {data_dir / 'features'}")
    if whitening is None:
        missing.append(f"whitening {mvnn}")
    return DemoPaths(recording, checkpoint, features, whitening, tuple(missing), data_dir, runs_dir)
