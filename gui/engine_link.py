"""How the window talks to the engine: the interface it needs and the default factory (no Qt)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["EngineLike", "EngineFactory", "default_engine_factory", "engine_alive"]


class EngineLike(Protocol):
    """What the window needs from :class:`bci.engine.EngineProcess`."""

    def start(self) -> None: ...
    def stop(self, timeout_s: float = 5.0) -> None: ...
    def send(self, cmd: dict) -> None: ...
    def poll(self, max_items: int = 1000) -> list[dict]: ...


EngineFactory = Callable[[Mapping[str, Any]], EngineLike]


def default_engine_factory(values: Mapping[str, Any]) -> EngineLike:
    """``EngineProcess(LiveConfig(**values))``, keeping only the fields ``LiveConfig`` defines."""
    from bci.engine import EngineProcess, LiveConfig

    names = {f.name for f in dataclasses.fields(LiveConfig)}
    return EngineProcess(LiveConfig(**{k: v for k, v in values.items() if k in names}))


def engine_alive(engine: Any) -> bool:
    """``engine.alive`` (property or method) or ``engine.is_alive()``; True when it cannot tell."""
    alive = getattr(engine, "alive", None)
    if alive is None:
        alive = getattr(engine, "is_alive", None)
    if callable(alive):
        alive = alive()
    return True if alive is None else bool(alive)
