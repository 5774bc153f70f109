"""A small XDF 1.0 writer (the file format of LabRecorder), pure Python + numpy.

Layout of a file: the magic ``XDF:`` and a sequence of chunks, each
``[NumLengthBytes 1|4|8] [Length (uint, little endian)] [Tag uint16] [Content]`` where ``Length``
counts the tag and the content. Tags: 1 FileHeader (XML), 2 StreamHeader (stream id uint32 + XML),
3 Samples (stream id, a variable-length sample count, then per sample a timestamp flag byte 8 + a
float64 timestamp, or 0 for "previous + 1/srate", and the values: little-endian numbers, or for
string streams each value as a variable-length byte count + UTF-8 bytes), 4 ClockOffset (stream
id, collection time float64 on the stream's clock, offset float64 to add to reach the recorder's
clock), 5 Boundary (a fixed 16-byte UUID that lets a reader resynchronise in a damaged file),
6 StreamFooter (stream id + XML: first/last timestamp, sample count, the clock offsets).

:class:`XDFWriter` collects chunks in memory and writes them with one ``os.write`` per
:meth:`~XDFWriter.flush` (then ``fsync``; optionally in a writer thread), so a process killed at any
moment leaves a file that ends on a whole chunk, or at worst with one cut chunk, which ``pyxdf`` skips.
Footers are written by :meth:`~XDFWriter.close`.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["XDFWriter", "BOUNDARY_UUID", "CHANNEL_FORMATS", "varlen_uint", "chunk", "dict_to_xml"]

#: Content of every Boundary chunk (fixed by the format).
BOUNDARY_UUID = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")
#: XDF ``channel_format`` -> little-endian numpy dtype (``string`` has none).
CHANNEL_FORMATS = {"float32": "<f4", "double64": "<f8", "int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8"}
_NUMPY_TO_XDF = {np.dtype(v).newbyteorder("="): k for k, v in CHANNEL_FORMATS.items()}

TAG_FILE_HEADER, TAG_STREAM_HEADER, TAG_SAMPLES, TAG_CLOCK_OFFSET, TAG_BOUNDARY, TAG_STREAM_FOOTER = 1, 2, 3, 4, 5, 6


def varlen_uint(n: int) -> bytes:
    """``n`` as XDF's variable-length unsigned integer: a width byte (1, 4 or 8), then the value."""
    if n < 0:
        raise ValueError(f"varlen_uint: {n} is negative")
    if n <= 0xFF:
        return struct.pack("<BB", 1, n)
    if n <= 0xFFFFFFFF:
        return struct.pack("<BI", 4, n)
    return struct.pack("<BQ", 8, n)


def chunk(tag: int, content: bytes) -> bytes:
    """One chunk: length (of tag + content), tag, content."""
    return varlen_uint(len(content) + 2) + struct.pack("<H", tag) + content


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else str(value)


def _tag(name: str) -> str:
    tag = "".join(c if c.isalnum() or c in "_-." else "_" for c in str(name)) or "_"
    return tag if tag[0].isalpha() or tag[0] == "_" else "_" + tag


def _fill(parent: ET.Element, data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            child = ET.SubElement(parent, _tag(key))
            if isinstance(item, Mapping):
                _fill(child, item)
            else:
                child.text = _text(item)


def dict_to_xml(root: str, data: Mapping[str, Any]) -> bytes:
    """``<root>…</root>`` from a nested dict: a dict becomes child elements, a list repeats its key's element.

    ``{"channels": {"channel": [{"label": "Fz"}, {"label": "Cz"}]}}`` gives
    ``<channels><channel><label>Fz</label></channel><channel><label>Cz</label></channel></channels>``.
    """
    el = ET.Element(root)
    _fill(el, data)
    return b'<?xml version="1.0"?>' + ET.tostring(el, encoding="utf-8", xml_declaration=False)


@dataclass
class _Stream:
    sid: int
    fmt: str
    n_chans: int
    sfreq: float
    first_ts: float | None = None
    last_ts: float | None = None
    n_samples: int = 0
    offsets: list[tuple[float, float]] = field(default_factory=list)


class XDFWriter:
    """Writes an XDF file incrementally.

    Parameters
    ----------
    path : path
        File to create (an existing file is an error: recordings are never overwritten).
    header : dict, optional
        Extra fields of the FileHeader's ``<info>`` (nested dicts/lists as in :func:`dict_to_xml`).
    background : bool
        Do the ``write`` + ``fsync`` of each :meth:`flush` in a writer thread (a live engine's loop then
        never waits for the disk; ``fsync`` took ~5 ms here). An error there is raised by the next
        :meth:`flush` or :meth:`close`.
    """

    def __init__(self, path: str | Path, header: Mapping[str, Any] | None = None, background: bool = False) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._queue: queue.SimpleQueue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if background:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._write_loop, name=f"xdf-{self.path.name}", daemon=True)
            self._thread.start()
        self._pending = bytearray(b"XDF:")
        self._streams: dict[int, _Stream] = {}
        info = {"version": "1.0", "datetime": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(header or {})}
        self._pending += chunk(TAG_FILE_HEADER, dict_to_xml("info", info))
        self.closed = False
        self.flush()

    # -- streams ---------------------------------------------------------------------------------
    def add_stream(
        self,
        name: str,
        stype: str,
        n_chans: int,
        sfreq: float,
        channel_format: str,
        desc: Mapping | None = None,
        source_id: str = "",
        created_at: float = 0.0,
    ) -> int:
        """Write a StreamHeader; returns the new stream's id.

        Parameters
        ----------
        name, stype : str
            Stream name and type (``EEG``, ``Markers`` …).
        n_chans : int
        sfreq : float
            Nominal rate (Hz); 0 for irregular streams (markers).
        channel_format : str
            ``float32``, ``double64``, ``int8``/``16``/``32``/``64`` or ``string``.
        desc : dict, optional
            The ``<desc>`` element (e.g. ``{"channels": {"channel": [{"label", "unit", "type"}, …]}}``).
        """
        if channel_format != "string" and channel_format not in CHANNEL_FORMATS:
            raise ValueError(f"channel_format: {channel_format!r} is not one of {[*CHANNEL_FORMATS, 'string']}")
        sid = len(self._streams) + 1
        info = {
            "name": name,
            "type": stype,
            "channel_count": int(n_chans),
            "nominal_srate": float(sfreq),
            "channel_format": channel_format,
            "source_id": source_id,
            "version": "1.1",
            "created_at": float(created_at),
            "uid": str(uuid.uuid4()),
            "session_id": "default",
            "hostname": socket.gethostname(),
            "desc": dict(desc or {}),
        }
        self._pending += chunk(TAG_STREAM_HEADER, struct.pack("<I", sid) + dict_to_xml("info", info))
        self._streams[sid] = _Stream(sid, channel_format, int(n_chans), float(sfreq))
        return sid

    @staticmethod
    def channel_format_of(dtype: Any) -> str:
        """The XDF ``channel_format`` of a numpy dtype (float32 → ``float32``, float64 → ``double64`` …)."""
        dt = np.dtype(dtype).newbyteorder("=")
        if dt not in _NUMPY_TO_XDF:
            raise ValueError(f"dtype: {dt} has no XDF channel format; use float32/float64/int8/16/32/64")
        return _NUMPY_TO_XDF[dt]

    # -- samples ---------------------------------------------------------------------------------
    def write_samples(self, sid: int, values: Any, timestamps: Sequence[float] | np.ndarray) -> None:
        """Queue one Samples chunk.

        Parameters
        ----------
        sid : int
        values : ndarray (n, C) for numeric streams, or a sequence of n sequences of C str
        timestamps : array (n,)
            Seconds on the stream's clock; every sample gets its own (flag byte 8).
        """
        st = self._streams[sid]
        ts = np.asarray(timestamps, dtype="<f8").reshape(-1)
        n = len(ts)
        if n == 0:
            return
        if st.fmt == "string":
            body = bytearray()
            for row, t in zip(values, ts.tolist()):
                if len(row) != st.n_chans:
                    raise ValueError(f"write_samples: stream {sid} has {st.n_chans} channels, got {len(row)} values")
                body += struct.pack("<Bd", 8, t)
                for v in row:
                    b = str(v).encode("utf-8")
                    body += varlen_uint(len(b)) + b
        else:
            arr = np.asarray(values)
            if arr.shape != (n, st.n_chans):
                raise ValueError(f"write_samples: expected ({n}, {st.n_chans}) values, got {arr.shape}")
            rec = np.empty(n, dtype=[("flag", "u1"), ("t", "<f8"), ("v", CHANNEL_FORMATS[st.fmt], (st.n_chans,))])
            rec["flag"], rec["t"], rec["v"] = 8, ts, arr
            body = rec.tobytes()
        self._pending += chunk(TAG_SAMPLES, struct.pack("<I", sid) + varlen_uint(n) + bytes(body))
        st.first_ts = float(ts[0]) if st.first_ts is None else st.first_ts
        st.last_ts = float(ts[-1])
        st.n_samples += n

    def write_clock_offset(self, sid: int, collection_time: float, offset: float) -> None:
        """Queue a ClockOffset: at ``collection_time`` (stream clock, s) add ``offset`` s to reach the recorder's."""
        self._pending += chunk(TAG_CLOCK_OFFSET, struct.pack("<Idd", sid, float(collection_time), float(offset)))
        self._streams[sid].offsets.append((float(collection_time), float(offset)))

    def write_boundary(self) -> None:
        """Queue a Boundary chunk (a resynchronisation point for readers of damaged files)."""
        self._pending += chunk(TAG_BOUNDARY, BOUNDARY_UUID)

    def n_samples(self, sid: int) -> int:
        return self._streams[sid].n_samples

    # -- output ----------------------------------------------------------------------------------
    def flush(self, fsync: bool = True) -> None:
        """Write the queued chunks in one ``os.write`` (looping only on a short write), then ``fsync``."""
        if self._error is not None:
            raise OSError(f"writing {self.path} failed: {self._error}") from self._error
        data = bytes(self._pending)
        self._pending.clear()
        if self._queue is not None:
            if data:
                self._queue.put(data)
            return
        self._write(data, fsync)

    def _write(self, data: bytes, fsync: bool = True) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        if fsync:
            os.fsync(self._fd)

    def _write_loop(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(data)
                except OSError as err:  # disk full, …: reported by the next flush()
                    log.error("writing %s failed: %s", self.path, err)
                    self._error = err

    def close(self) -> None:
        """Write a StreamFooter per stream, flush and close (idempotent)."""
        if self.closed:
            return
        for st in self._streams.values():
            footer = {
                "first_timestamp": st.first_ts if st.first_ts is not None else 0.0,
                "last_timestamp": st.last_ts if st.last_ts is not None else 0.0,
                "sample_count": st.n_samples,
                "clock_offsets": {"offset": [{"time": t, "value": v} for t, v in st.offsets]},
            }
            self._pending += chunk(TAG_STREAM_FOOTER, struct.pack("<I", st.sid) + dict_to_xml("info", footer))
        self.closed = True
        try:
            self.flush()
        finally:
            if self._queue is not None and self._thread is not None:
                self._queue.put(None)
                self._thread.join()
            os.close(self._fd)
        if self._error is not None:
            raise OSError(f"writing {self.path} failed: {self._error}") from self._error
