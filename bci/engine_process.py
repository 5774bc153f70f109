"""The live engine in its own process: :class:`EngineProcess` (spawned child, command and message queues).

The child runs :class:`bci.engine.LiveEngine` and forwards its messages (:mod:`bci.messages`, plain
picklable dicts); it stops on ``{"cmd": "stop"}`` and by itself when its parent process dies, even by
SIGKILL, so a killed window never leaves an engine streaming on.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Mapping
from typing import Any

from hmavd.errors import UserError

from .engine import LiveEngine
from .live_config import LiveConfig, live_config_from_values
from .messages import Command, EngineMessage, error_message, stop_command, stopped_message

log = logging.getLogger(__name__)

__all__ = ["EngineProcess"]


def _engine_main(cfg: LiveConfig, cmd_q, out_q) -> None:
    from hmavd.errors import setup_logging

    setup_logging()
    parent = os.getppid()
    engine = LiveEngine(cfg)
    try:
        engine.connect()
        running = True
        while running:
            if os.getppid() != parent:  # the window's process died (even by SIGKILL): stop, do not stream on
                log.warning("parent process %d is gone; stopping the engine", parent)
                break
            while True:
                try:
                    cmd = cmd_q.get_nowait()
                except queue.Empty:
                    break
                try:
                    running = engine.handle(cmd) and running
                except UserError as err:
                    out_q.put(error_message(str(err)))
            for msg in engine.get_data():
                out_q.put(msg)
            if running:
                engine.acquire(cfg.poll_interval_s)
        engine.outbox.append(engine.status())  # the final counts, so the last status matches the predictions
        for msg in engine.get_data():
            out_q.put(msg)
    except UserError as err:
        out_q.put(error_message(str(err)))
    except Exception as err:  # noqa: BLE001 - reported to the GUI, never silent
        log.exception("engine failed")
        out_q.put(error_message(f"{type(err).__name__}: {err}"))
    finally:
        engine.disconnect()
        out_q.put(stopped_message())


class EngineProcess:
    """Runs :class:`LiveEngine` in a separate ``spawn`` process; non-blocking :meth:`poll`."""

    def __init__(self, cfg: LiveConfig) -> None:
        self.cfg = cfg
        self._ctx = mp.get_context("spawn")
        self._cmd = self._ctx.Queue()
        self._out = self._ctx.Queue()
        self._proc = None
        self._pending: list[EngineMessage] = []

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> EngineProcess:
        """An engine process for ``LiveConfig(**values)``; unknown keys and bad values are one-line errors."""
        return cls(live_config_from_values(values))

    def start(self) -> None:
        self._proc = self._ctx.Process(target=_engine_main, args=(self.cfg, self._cmd, self._out),
                                       name="hmavd-engine", daemon=True)  # fmt: skip
        self._proc.start()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def send(self, cmd: Command) -> None:
        """Queue a command for the child (:mod:`bci.messages`: stop, record_start, record_stop)."""
        self._cmd.put(dict(cmd))

    def _drain(self) -> None:
        """Move everything the child has sent so far into the pending list."""
        while True:
            try:
                self._pending.append(self._out.get_nowait())
            except queue.Empty:
                return

    def poll(self, max_items: int = 1000) -> list[EngineMessage]:
        """Up to ``max_items`` messages received since the last call (never blocks)."""
        self._drain()
        out, self._pending = self._pending[:max_items], self._pending[max_items:]
        return out

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._proc is None:
            return
        if self._proc.is_alive():
            self.send(stop_command())
            deadline = time.monotonic() + timeout_s
            while self._proc.is_alive() and time.monotonic() < deadline:
                self._drain()  # keep the child's queue flowing so it can exit
                self._proc.join(0.05)
        self._drain()
        if self._proc.is_alive():
            log.warning("engine process did not stop in %.1f s; terminating", timeout_s)
            self._proc.terminate()
            self._proc.join(1.0)
        self._proc = None
