"""Stimulus markers: sources (LSL marker stream, in-memory) and the code → concept mapping.

A marker is ``(t_s, code)``: its time on the consumer clock (LSL ``local_clock`` seconds, after the
marker stream's own clock-offset correction, so it is comparable with the EEG sample times) and the
code as a string (LSL string or integer streams; ``"17"``, ``"Stimulus/S 17"`` …).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hmavd.errors import UserError

from .sources import ClockOffset, close_inlet, resolve_stream

log = logging.getLogger(__name__)

__all__ = ["Marker", "MarkerMap", "InMemoryMarkers", "LSLMarkerSource"]

_TRAILING_INT = re.compile(r"(\d+)\s*$")


@dataclass(frozen=True)
class Marker:
    """A stimulus marker: consumer-clock time (s), raw code, and what it maps to."""

    t_s: float
    code: str
    label: str  # shown to the user (image id / concept / code)
    concept: str | None  # true concept when the code identifies one


class MarkerMap:
    """Maps marker codes to image/concept ids.

    Parameters
    ----------
    concepts : sequence of str
        Concept names; an integer code ``n`` (the trailing number of the code, as ThingsEEG2's test
        image numbers 1…200) maps to ``concepts[n - 1]`` when ``mapping`` is not given.
    mapping : mapping of str to str, optional
        Explicit ``code -> concept`` table (takes precedence).
    ignore : sequence of str
        Codes silently dropped (catch trials, ``99999``).
    """

    def __init__(
        self,
        concepts: Sequence[str] = (),
        mapping: Mapping[str, str] | None = None,
        ignore: Sequence[str] = ("99999",),
    ) -> None:
        self.concepts = tuple(concepts)
        self.mapping = dict(mapping or {})
        self.ignore = {str(c) for c in ignore}
        self.unknown: Counter[str] = Counter()
        self.n_ignored = 0

    def lookup(self, code: str) -> tuple[str, str | None] | None:
        """``(label, concept)`` for a known code, ``None`` for an ignored or unknown one (counted)."""
        code = str(code).strip()
        m = _TRAILING_INT.search(code)
        num = m.group(1).lstrip("0") or "0" if m else None
        if code in self.ignore or (num is not None and num in self.ignore):
            self.n_ignored += 1
            return None
        if code in self.mapping:
            return code, self.mapping[code]
        if num is not None and num in self.mapping:
            return code, self.mapping[num]
        if num is not None and self.concepts and 1 <= int(num) <= len(self.concepts):
            return code, self.concepts[int(num) - 1]
        if self.unknown[code] == 0:
            log.warning("unknown marker code %r (not in the mapping of %d concepts); skipped", code,
                        len(self.mapping) or len(self.concepts))  # fmt: skip
        self.unknown[code] += 1
        return None


class InMemoryMarkers:
    """Markers pushed by hand (tests): ``push(t_s, code)`` then :meth:`pull`."""

    def __init__(self) -> None:
        self._items: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def connect(self) -> None:
        pass

    def push(self, t_s: float, code: str | int) -> None:
        with self._lock:
            self._items.append((float(t_s), str(code)))

    def pull(self) -> list[tuple[float, str]]:
        with self._lock:
            out, self._items = self._items, []
        return out

    def disconnect(self) -> None:
        pass


class LSLMarkerSource:
    """An LSL marker stream (string or integer codes, irregular rate), pulled without blocking.

    Parameters
    ----------
    name : str
        Stream name ("" = first stream of type ``Markers``).
    resolve_timeout_s : float
        How long to look for it at connect.
    """

    def __init__(self, name: str, resolve_timeout_s: float = 5.0, clock_refresh_s: float = 5.0) -> None:
        self.name = name
        self.resolve_timeout_s = resolve_timeout_s
        self.clock_refresh_s = clock_refresh_s
        self._inlet = None
        self._offset: ClockOffset | None = None

    def connect(self) -> None:
        import pylsl

        info = resolve_stream(self.name, "Markers", self.resolve_timeout_s, "marker_stream")
        if info.channel_count() < 1:
            raise UserError(f"marker_stream: {info.name()!r} has no channel; stream one code per marker")
        self._inlet = pylsl.StreamInlet(info, max_buflen=360, recover=True, processing_flags=0)
        self._offset = ClockOffset(self._inlet, refresh_s=self.clock_refresh_s)
        self._offset.start()
        self._inlet.open_stream(timeout=self.resolve_timeout_s)

    def pull(self) -> list[tuple[float, str]]:
        """All markers received since the last call, as ``(t_s, code)`` on the consumer clock."""
        import pylsl

        try:
            samples, ts = self._inlet.pull_chunk(timeout=0.0, max_samples=1024, as_numpy=False)
        except pylsl.LostError:
            return []
        if not ts:
            return []
        off = self._offset.offset_s
        out = []
        for s, t in zip(samples, ts):
            v = s[0]
            if isinstance(v, (float, np.floating)) and float(v).is_integer():
                v = int(v)
            out.append((float(t) + off, str(v)))
        return out

    def disconnect(self) -> None:
        close_inlet(self._inlet, self._offset)
        self._inlet = self._offset = None
