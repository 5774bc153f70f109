"""How the window talks to the engine: the interface it needs and the default factory (no Qt)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bci.messages import Command, EngineMessage

__all__ = ["EngineLike", "EngineFactory", "default_engine_factory", "engine_alive"]


class EngineLike(Protocol):
    """What the window needs from :class:`bci.engine_process.EngineProcess`."""

    def start(self) -> None: ...
    def stop(self, timeout_s: float = 5.0) -> None: ...
    def send(self, cmd: Command) -> None: ...
    def poll(self, max_items: int = 1000) -> list[EngineMessage]: ...


EngineFactory = Callable[[Mapping[str, Any]], EngineLike]


def default_engine_factory(values: Mapping[str, Any]) -> EngineLike:
    """:meth:`bci.engine_process.EngineProcess.from_values`: a key ``LiveConfig`` does not define is refused
    in one line, as is a bad value."""
    from bci.engine_process import EngineProcess

    return EngineProcess.from_values(values)


def engine_alive(engine: Any) -> bool:
    """``engine.alive`` (property or method) or ``engine.is_alive()``; True when it cannot tell."""
    alive = getattr(engine, "alive", None)
    if alive is None:
        alive = getattr(engine, "is_alive", None)
    if callable(alive):
        alive = alive()
    return True if alive is None else bool(alive)
