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
from pathlib import Path
from typing import Any

import numpy as np

from hmavd.errors import UserError

from .sources import ClockOffset, close_inlet, resolve_stream

log = logging.getLogger(__name__)

__all__ = [
    "Marker",
    "MarkerInfo",
    "MarkerMap",
    "marker_number",
    "load_marker_map",
    "build_marker_map",
    "take_markers",
    "InMemoryMarkers",
    "LSLMarkerSource",
]

_TRAILING_INT = re.compile(r"(\d+)(?:\.0+)?\s*$")


@dataclass(frozen=True)
class Marker:
    """A stimulus marker: consumer-clock time (s), raw code, and what it maps to."""

    t_s: float
    code: str
    label: str  # shown to the user (image id / concept / code)
    concept: str | None  # true concept when the code identifies one


def marker_number(code: str | int | float) -> int | None:
    """The integer a marker code carries: ``17``, ``17.0``, ``"17"``, ``"S 17"``, ``"stim/17"``,
    ``"image_00017"``, ``"Stimulus/S 17"`` → 17; ``None`` when it ends in no number."""
    if isinstance(code, (int, np.integer)):
        return int(code)
    if isinstance(code, (float, np.floating)):
        return int(code) if float(code).is_integer() else None
    m = _TRAILING_INT.search(str(code).strip())
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class MarkerInfo:
    """What a code means: ``kind`` is ``"image"`` (decoded), ``"catch"`` or ``"unknown"`` (never decoded)."""

    kind: str
    label: str  # shown in the scope and the recording: the code, "catch" or "unknown <code>"
    concept: str | None  # the true concept when the code names one the templates know


def _concept_of_target(target: str, concepts: Sequence[str]) -> str | None:
    """A mapping file's target (a concept name or an image file) as one of ``concepts`` (None: none)."""
    if target in concepts:
        return target
    path = Path(target)
    for part in (path.parent.name, path.stem, path.name):
        if part in concepts:
            return part
    stem = path.stem.lower()
    for c in concepts:  # ThingsEEG2: concept "00001_aircraft_carrier", image "aircraft_carrier_06s.jpg"
        name = c.split("_", 1)[1].lower() if "_" in c and c.split("_", 1)[0].isdigit() else c.lower()
        if stem == name or stem.startswith(name + "_"):
            return c
    return None


class MarkerMap:
    """Maps marker codes to image/concept ids.

    Parameters
    ----------
    concepts : sequence of str
        Concept names; an integer code ``n`` (the number a code carries, see :func:`marker_number`, as
        ThingsEEG2's test image numbers 1…200) maps to ``concepts[n - 1]`` when ``mapping`` has no entry.
    mapping : mapping of str to str, optional
        Explicit ``code -> concept or image file`` table (takes precedence; keys are matched as given
        and by their number). A target that is none of ``concepts`` is decoded without a true concept.
    ignore : sequence of str
        Catch-trial codes (``99999``): never decoded, shown as ``catch``.
    """

    def __init__(
        self,
        concepts: Sequence[str] = (),
        mapping: Mapping[str, str] | None = None,
        ignore: Sequence[str] = ("99999",),
    ) -> None:
        self.concepts = tuple(concepts)
        self.mapping = {str(k).strip(): str(v) for k, v in (mapping or {}).items()}
        self._by_number = {marker_number(k): v for k, v in self.mapping.items() if marker_number(k) is not None}
        self.ignore = {str(c).strip() for c in ignore}
        self._ignore_numbers = {marker_number(c) for c in self.ignore} - {None}
        self.unknown: Counter[str] = Counter()
        self.n_ignored = 0

    def classify(self, code: str | int | float) -> MarkerInfo:
        """What ``code`` means (counts catch and unknown codes; an unknown one is logged once)."""
        text = str(code).strip()
        num = marker_number(code)
        if text in self.ignore or (num is not None and num in self._ignore_numbers):
            self.n_ignored += 1
            return MarkerInfo("catch", "catch", None)
        target = self.mapping.get(text)
        if target is None and num is not None:
            target = self._by_number.get(num)
        if target is not None:  # a target that names no template concept is shown by its name
            concept = _concept_of_target(target, self.concepts)
            return MarkerInfo("image", text if concept else Path(target).stem, concept)
        if num is not None and not self.mapping and self.concepts and 1 <= num <= len(self.concepts):
            return MarkerInfo("image", text, self.concepts[num - 1])
        if self.unknown[text] == 0:
            log.warning(
                "unknown marker code %r (not in the mapping of %d codes/concepts); not decoded",
                text,
                len(self.mapping) or len(self.concepts),
            )
        self.unknown[text] += 1
        return MarkerInfo("unknown", f"unknown {text}", None)

    def lookup(self, code: str) -> tuple[str, str | None] | None:
        """``(label, concept)`` for a decoded code, ``None`` for a catch or unknown one (counted)."""
        info = self.classify(code)
        return (info.label, info.concept) if info.kind == "image" else None


def load_marker_map(path: str) -> dict[str, str]:
    """A ``code -> image file or concept`` table from ``.json``, ``.yaml``/``.yml`` or ``.csv``/``.tsv``.

    CSV/TSV: two columns per row (``code,target``; a header row ``code,...`` is skipped; ``#`` comments).
    One-line :class:`UserError` naming ``marker_map`` when the file cannot be read or holds no entry.
    """
    p = Path(path)
    fix = "give a .json/.yaml mapping {code: image file or concept} or a two-column .csv/.tsv"
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"marker_map: cannot read {path!r} ({type(err).__name__}); {fix}") from None
    suffix = p.suffix.lower()
    try:
        if suffix in (".json", ".yaml", ".yml"):
            import yaml

            table = yaml.safe_load(text)  # JSON is YAML
            if not isinstance(table, dict):
                raise ValueError("not a mapping")
            out = {str(k).strip(): str(v).strip() for k, v in table.items()}
        elif suffix in (".csv", ".tsv", ".txt"):
            out = {}
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                cells = [c.strip() for c in re.split(r"\t|,", line)] if line else []
                if len(cells) < 2 or (not out and cells[0].lower() in ("code", "marker", "event")):
                    continue
                out[cells[0]] = cells[1]
        else:
            raise ValueError(f"unknown extension {suffix!r}")
    except (ValueError, ImportError, Exception) as err:  # noqa: BLE001 - yaml errors of any kind
        raise UserError(f"marker_map: {path!r} is not a readable mapping ({err}); {fix}") from None
    if not out:
        raise UserError(f"marker_map: {path!r} holds no code; {fix}")
    return out


def build_marker_map(cfg, decoder) -> MarkerMap:
    """The session's :class:`MarkerMap` from a live config (``marker_map`` file, ``ignore_codes``)."""
    mapping = load_marker_map(cfg.marker_map) if cfg.marker_map else None
    mm = MarkerMap(decoder.concepts, mapping=mapping, ignore=cfg.ignore_codes)
    if mapping:
        known = sum(_concept_of_target(v, decoder.concepts) is not None for v in mapping.values())
        log.info("marker map %s: %d codes, %d of them name a template concept", cfg.marker_map, len(mapping), known)
    return mm


#: A marker stamped more than this before the session started (both inlets open) is stale; a live one is
#: stamped at most a transport delay before it arrives.
STALE_MARGIN_S = 0.5


def take_markers(
    items: Sequence[tuple[float, str]],
    marker_map: MarkerMap,
    offset_s: float = 0.0,
    t_session_s: float = float("-inf"),
    recorder: Any = None,
    scope: Any = None,
) -> tuple[list[Marker], int]:
    """Apply ``offset_s``, classify, record and scope every pulled marker.

    Parameters
    ----------
    items : sequence of (t_s, code)
        Pulled markers (consumer clock).
    marker_map : MarkerMap
    offset_s : float
        ``marker_offset_s``: display delay added to every marker.
    t_session_s : float
        When the session started (both inlets open). Image markers stamped more than
        :data:`STALE_MARGIN_S` before it (queued or replayed by the sender from before) are recorded
        but not decoded as live ones.
    recorder : optional
        Gets ``write_marker(t_s, code, label, concept)`` for every marker.
    scope : optional
        Gets ``add_marker(t_s, label)`` for every marker.

    Returns
    -------
    (markers, n_stale)
        The decodable markers, and how many image markers were stale.
    """
    out, n_stale = [], 0
    for t_raw, code in items:
        t_s = float(t_raw) + float(offset_s)
        info = marker_map.classify(code)
        if recorder is not None:
            recorder.write_marker(t_s, code, info.label, info.concept)
        if scope is not None:
            scope.add_marker(t_s, info.concept or info.label)
        if info.kind != "image":
            continue
        if float(t_raw) < t_session_s - STALE_MARGIN_S:
            n_stale += 1
            log.info(
                "marker %r stamped %.3f s before the session started: not decoded", code, t_session_s - float(t_raw)
            )
            continue
        out.append(Marker(t_s, str(code), info.label, info.concept))
    return out, n_stale


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
    """An LSL marker stream, pulled without blocking.

    String, integer or float codes (``17.0`` → ``"17"``); of a multi-channel marker stream the first
    channel is the code. Irregular or regular rate.

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
        self.t_connected_s = float("-inf")

    def connect(self) -> None:
        import pylsl

        info = resolve_stream(self.name, "Markers", self.resolve_timeout_s, "marker_stream")
        if info.channel_count() < 1:
            raise UserError(f"marker_stream: {info.name()!r} has no channel; stream one code per marker")
        self._inlet = pylsl.StreamInlet(info, max_buflen=360, recover=True, processing_flags=0)
        self._offset = ClockOffset(self._inlet, refresh_s=self.clock_refresh_s)
        self._offset.start()
        self._inlet.open_stream(timeout=self.resolve_timeout_s)
        self.t_connected_s = pylsl.local_clock()

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
