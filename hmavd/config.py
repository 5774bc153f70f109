"""One frozen dataclass config per command, loaded from YAML and overridable from the command line.

Every command defines a ``@dataclass(frozen=True)`` whose fields are flat and typed with simple
types (``int``, ``float``, ``bool``, ``str``, ``Optional`` of those, or ``tuple`` of those). A
config is built from, in order of precedence:

1. the dataclass defaults,
2. a YAML file (a name from the packaged ``configs/`` folder such as ``"hmavd-63"``, or a path),
   which may name a ``base:`` config it extends,
3. ``key=value`` overrides from the command line (values parsed as YAML scalars/lists).

Unknown keys are rejected with a one-line :class:`~hmavd.errors.UserError` naming the key, the
source and the valid keys. The resolved config is saved beside every run and checkpoint with
:func:`save_config`.

A config class derives from :class:`ValidatedConfig`: its ``validate()`` checks the fields and runs on
construction (``__post_init__``), so a config built in Python, by :func:`dataclasses.replace` or from
YAML is refused the same way. ``validate()`` never reads files (the defaults always construct); checks
that need the filesystem run when the command runs. docs/contributing.md, "Adding a config field".
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserError

__all__ = [
    "CONFIG_DIR",
    "ValidatedConfig",
    "available_configs",
    "config_path",
    "load_config",
    "parse_overrides",
    "config_to_dict",
    "save_config",
    "config_from_dict",
    "add_config_arguments",
    "load_command_config",
    "config_yaml",
]

C = TypeVar("C")

#: Folder of the packaged YAML configs (also reachable as ``configs/`` at the repository root).
CONFIG_DIR = Path(str(importlib.resources.files("hmavd") / "configs"))


class ValidatedConfig:
    """Mixin of every command config: ``validate()`` runs when the (frozen) dataclass is built.

    Subclasses override :meth:`validate` (calling ``super().validate()`` when they extend another
    config) and raise a one-line :class:`~hmavd.errors.UserError` naming the field, the value and the
    fix. Keep it free of file access: it runs for the defaults and on every ``dataclasses.replace``.
    """

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the fields; raise :class:`~hmavd.errors.UserError` on the first bad one."""


def available_configs() -> list[str]:
    """Names of the packaged configs (file stems in ``configs/``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name_or_path: str | Path) -> Path:
    """Resolve a packaged config name or a YAML path to an existing file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = CONFIG_DIR / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    raise UserError(
        f"--config: {str(name_or_path)!r} is neither a YAML file nor a packaged config; "
        f"choose one of {available_configs()} or pass a path to a .yaml file"
    )


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise UserError(f"--config: {path} extends itself through 'base:'; remove the cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "parse error"
        raise UserError(f"--config: {path} is not valid YAML ({first}); fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"--config: {path} must hold a mapping of key: value, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        merged = _read_yaml(config_path(base), (*seen, path))
        merged.update(data)
        return merged
    return data


def parse_overrides(tokens: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` tokens; values are YAML scalars or lists (``lr=1e-3``, ``seeds=[0,1]``)."""
    out: dict[str, Any] = {}
    for tok in tokens:
        if "=" not in tok:
            raise UserError(f"override {tok!r} is not of the form key=value (e.g. epochs=5)")
        key, _, raw = tok.partition("=")
        key = key.strip().replace("-", "_")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() != "" else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(name: str, tp: Any, value: Any, source: str) -> Any:
    base, optional = _strip_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise UserError(f"{name}: None is not allowed (from {source}); give a {getattr(base, '__name__', base)}")
    origin = typing.get_origin(base)
    try:
        if origin in (tuple, list):
            args = typing.get_args(base)
            inner = args[0] if args else Any
            seq = value if isinstance(value, (list, tuple)) else [value]
            return tuple(_coerce(name, inner, v, source) for v in seq)
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            return str(value)
        if base is Any:
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    tname = getattr(base, "__name__", str(base))
    raise UserError(f"{name}: {value!r} (from {source}) is not a valid {tname}; give a {tname}")


def config_from_dict(cls: type[C], values: Mapping[str, Any], source: str = "dict") -> C:
    """Build ``cls`` from a mapping, rejecting unknown keys and coercing types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        k = key.replace("-", "_")
        if k not in fields:
            raise UserError(
                f"unknown config key {key!r} (from {source}); valid keys for {cls.__name__}: {sorted(fields)}"
            )
        kwargs[k] = _coerce(k, hints[k], value, source)
    obj = cls(**kwargs)  # a ValidatedConfig validates itself here
    validate = getattr(obj, "validate", None)
    if callable(validate) and not isinstance(obj, ValidatedConfig):
        validate()
    return obj


def load_config(
    cls: type[C],
    config: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> C:
    """Resolve a command's config: dataclass defaults <- YAML file <- overrides.

    Parameters
    ----------
    cls : type
        The command's frozen dataclass.
    config : str or Path or None
        A packaged config name, a YAML path, or ``None`` for the defaults.
    overrides : iterable of ``"key=value"`` or mapping
        Command-line overrides.
    """
    values: dict[str, Any] = {}
    if config is not None:
        path = config_path(config)
        file_values = _read_yaml(path)
        saved_class = file_values.pop("_config_class", cls.__name__)  # written by save_config
        if saved_class != cls.__name__:
            raise UserError(
                f"--config: {path} was saved from a {saved_class}, not a {cls.__name__}; pass a config of this command"
            )
        config_from_dict(cls, file_values, source=str(path))  # validate keys early, naming the file
        values.update(file_values)
    ov = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    if ov:
        config_from_dict(cls, {**values, **ov}, source="command line")
    values.update(ov)
    return config_from_dict(cls, values, source=str(config) if config else "defaults")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-safe dict of a config dataclass (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (``.yaml``) or JSON (``.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = {"_config_class": type(cfg).__name__, **config_to_dict(cfg)}
    if path.suffix == ".json":
        path.write_text(json.dumps(d, indent=2))
    else:
        path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def add_config_arguments(parser: Any, default: str | None = None) -> None:
    """Add ``--config``, ``--print-config`` and trailing ``key=value`` overrides to an argparse parser."""
    parser.add_argument(
        "--config",
        default=default,
        help=f"packaged config name or YAML path (default: {default}); see configs/",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=5")


def load_command_config(cls: type[C], args: Any, flags: Iterable[str] = ()) -> C:
    """A command's config from its parsed arguments (those of :func:`add_config_arguments`).

    ``--config``, then the named ``flags`` the user gave (argparse destinations spelled as the config's
    keys, ``None`` when absent), then the trailing ``key=value`` overrides, which win.
    """
    given = {k: getattr(args, k) for k in flags if getattr(args, k, None) is not None}
    return load_config(cls, args.config, {**given, **parse_overrides(args.overrides)})


def config_yaml(cfg: Any) -> str:
    """The resolved config as ``--print-config`` prints it: YAML, keys in field order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
