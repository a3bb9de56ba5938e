"""Reading capture files into packet arrays: pcap (micro- and nanosecond, either byte order) and pcapng.

The file is read in large chunks into one buffer; a short Python loop walks the record headers (one
``unpack_from`` per packet: the only per-packet Python work of the extractor) and everything after it
works on numpy arrays of offsets, lengths and timestamps (:class:`RawPackets`).

A file that ends inside a record, or whose next record header is impossible (a captured length over
the snapshot limit, a pcapng block of a bad length), is *damaged*: every complete packet before that
point is returned and :attr:`CaptureReader.error` says what was wrong (libpcap's behaviour).
Nanosecond timestamps are read at microsecond precision (truncated), as CICFlowMeter did.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedids.errors import InputError

CHUNK_BYTES = 256 << 20
"""Capture files are turned into packet arrays this many bytes at a time (the file itself is mapped
into memory, not copied), so memory stays bounded for any file size."""

_POPULATE_MAX = 2 << 30
"""Files up to this size are mapped with ``MAP_POPULATE`` (the kernel maps every page at once)."""

MAX_CAPLEN = 262144
"""libpcap's largest snapshot length for the link types read here: a record claiming more is damage."""

# Link types (pcap/pcapng LINKTYPE_* values) -> the DLT_* values the decoder works with.
DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_RAW_BSD, DLT_LOOP = 0, 1, 12, 14, 108
DLT_LINUX_SLL, DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL2 = 113, 228, 229, 276
SUPPORTED_LINKTYPES = {
    DLT_NULL: "BSD loopback",
    DLT_EN10MB: "Ethernet",
    DLT_RAW: "raw IP",
    DLT_RAW_BSD: "raw IP",
    DLT_LOOP: "OpenBSD loopback",
    DLT_LINUX_SLL: "Linux cooked",
    DLT_IPV4: "raw IPv4",
    DLT_IPV6: "raw IPv6",
    DLT_LINUX_SLL2: "Linux cooked v2",
}
_LINKTYPE_TO_DLT = {101: DLT_RAW}

_PCAP_MAGIC = {0xA1B2C3D4: False, 0xA1B23C4D: True}  # magic as read little-endian -> nanoseconds?
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D


@dataclass
class RawPackets:
    """Packets as arrays over one byte buffer.

    ``data`` is the buffer (``uint8``, read-only for a mapped file). Packet ``i`` is
    ``data[off[i]: off[i] + caplen[i]]``, ``wirelen[i]`` bytes long on the wire, captured at
    ``ts_us[i]`` (microseconds since the epoch) on an interface of link type ``linktype[i]``.
    """

    data: np.ndarray
    off: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_us: np.ndarray
    linktype: np.ndarray

    def __len__(self) -> int:
        return len(self.off)

    @classmethod
    def from_frames(cls, frames: list[tuple[int, int, int, bytes]], linktype: int) -> RawPackets:
        """From ``(sec, usec, wire_len, frame)`` tuples (live capture)."""
        lengths = np.fromiter((len(f[3]) for f in frames), dtype=np.int64, count=len(frames))
        buf = np.frombuffer(b"".join(f[3] for f in frames), dtype=np.uint8)
        sec = np.fromiter((f[0] for f in frames), dtype=np.int64, count=len(frames))
        usec = np.fromiter((f[1] for f in frames), dtype=np.int64, count=len(frames))
        wire = np.fromiter((f[2] for f in frames), dtype=np.int64, count=len(frames))
        return cls(
            buf,
            np.cumsum(lengths) - lengths,
            lengths,
            wire,
            sec * 1_000_000 + usec,
            np.full(len(frames), linktype, dtype=np.int64),
        )


def rows(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes from each offset in ``at``, as a ``(len(at), width)`` uint8 matrix: one
    gather of fixed-size records (reads past the end of ``data`` give zeros)."""
    at = np.asarray(at, dtype=np.int64)
    n = len(data)
    if n >= width:
        records = np.ndarray(shape=(n - width + 1,), dtype=f"V{width}", buffer=data, strides=(1,))
        out = records[np.clip(at, 0, n - width)].view(np.uint8).reshape(-1, width)
    else:
        out = np.zeros((len(at), width), dtype=np.uint8)
    tail = np.flatnonzero(at > n - width)
    if len(tail):  # near the end: read from a zero-padded copy of the last bytes
        padded = np.zeros(2 * width, dtype=np.uint8)
        keep = min(width, n)
        padded[width - keep : width] = data[n - keep :]
        k = np.clip(at[tail] - (n - width), 0, width)
        out[tail] = np.lib.stride_tricks.sliding_window_view(padded, width)[k]
    return out


def open_capture(path: Path) -> CaptureReader:
    """Check ``path`` and read its file header. Raises InputError for anything but a pcap/pcapng file."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not a pcap/pcapng capture")
    with path.open("rb") as fh:
        head = fh.read(24)
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] == _PCAPNG_SHB:
        return PcapngReader(path)
    if len(head) >= 24:
        for fmt, big in (("<I", False), (">I", True)):
            magic = struct.unpack_from(fmt, head)[0]
            if magic in _PCAP_MAGIC:
                return PcapReader(path, head, big, _PCAP_MAGIC[magic])
    reason = "file too short" if len(head) < 24 else "unknown file format"
    raise InputError(f"{path}: not a readable pcap/pcapng capture ({reason})")


class CaptureReader:
    """Iterates over a capture file as :class:`RawPackets` chunks; ``error`` is set when the file
    turned out damaged or truncated (the packets before the damage have been returned)."""

    linktypes: set[int]

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None
        self.packets = 0

    def chunks(self) -> Iterator[RawPackets]:
        raise NotImplementedError

    def _map(self) -> mmap.mmap:
        """The whole file as a read-only memory map (no copy). The record walks read it with ``struct``,
        the packet arrays are a uint8 view of it (``np.frombuffer``)."""
        size = self.path.stat().st_size
        flags = mmap.MAP_SHARED
        if size <= _POPULATE_MAX and hasattr(mmap, "MAP_POPULATE"):
            flags |= mmap.MAP_POPULATE
        with self.path.open("rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
        return mapped


class PcapReader(CaptureReader):
    """Classic libpcap files."""

    def __init__(self, path: Path, head: bytes, big_endian: bool, nanoseconds: bool) -> None:
        super().__init__(path)
        order = ">" if big_endian else "<"
        snaplen, network = struct.unpack_from(order + "II", head, 16)
        linktype = network & 0x03FFFFFF
        self.linktype = _LINKTYPE_TO_DLT.get(linktype, linktype)
        self.linktypes = {self.linktype}
        self.big_endian, self.nanoseconds = big_endian, nanoseconds
        self.limit = max(snaplen, MAX_CAPLEN)

    def chunks(self) -> Iterator[RawPackets]:
        mapped = self._map()
        data = np.frombuffer(mapped, dtype=np.uint8)
        n, o = len(data), 24
        while True:
            offs, o = self._walk(mapped, o, min(n, o + CHUNK_BYTES))
            if offs:
                yield self._arrays(data, np.asarray(offs, dtype=np.int64))
            if o >= n or not offs:
                break
        if o + 16 <= n:
            caplen = struct.unpack_from(">I" if self.big_endian else "<I", mapped, o + 8)[0]
            if caplen > self.limit:
                self.error = (
                    f"invalid packet capture length {caplen}, bigger than the snapshot length {self.limit}"
                )
        if o < n and self.error is None:
            self.error = f"truncated dump file; {n - o} bytes of an incomplete record at the end"

    def _walk(self, buf: mmap.mmap, o: int, stop: int) -> tuple[list[int], int]:
        """Offsets of the complete records from ``o`` that start before ``stop``, and where the walk
        stopped.

        The per-packet loop of the extractor: the captured length at ``o + 8`` is read through four
        ``uint32`` views of the buffer (one per alignment), the cheapest read Python has."""
        mv = memoryview(buf)
        words = [mv[k : k + 4 * ((len(buf) - k) // 4)].cast("I") for k in range(4)]
        swap = self.big_endian != (sys.byteorder == "big")  # file order differs from the machine's
        offs: list[int] = []
        append, limit, used = offs.append, self.limit, len(buf)
        stop = min(stop, used - 15)
        if swap:
            unpack = struct.Struct(">I" if self.big_endian else "<I").unpack_from
            while o < stop:
                caplen = unpack(buf, o + 8)[0]
                if caplen > limit or o + 16 + caplen > used:
                    break
                append(o)
                o += 16 + caplen
            return offs, o
        w = words
        try:  # the hot loop: no checks inside; damaged or cut records are found after it
            while o < stop:
                append(o)
                o += 16 + w[o & 3][(o >> 2) + 2]
        except IndexError:
            pass
        if offs:
            starts = np.asarray(offs, dtype=np.int64)
            caplen = np.diff(np.append(starts, o)) - 16
            bad = np.flatnonzero((caplen > limit) | (starts + 16 + caplen > used))
            if len(bad):
                o = int(starts[bad[0]])
                del offs[bad[0] :]
        return offs, o

    def _arrays(self, buf: np.ndarray, offs: np.ndarray) -> RawPackets:
        head = rows(buf, offs, 16).view(">u4" if self.big_endian else "<u4")
        frac = head[:, 1].astype(np.int64)
        if self.nanoseconds:
            frac //= 1000
        self.packets += len(offs)
        return RawPackets(
            buf,
            offs + 16,
            head[:, 2].astype(np.int64),
            head[:, 3].astype(np.int64),
            head[:, 0].astype(np.int64) * 1_000_000 + frac,
            np.full(len(offs), self.linktype, dtype=np.int64),
        )


class PcapngReader(CaptureReader):
    """pcapng files: section headers in either byte order, interfaces with their own link type and
    timestamp resolution (``if_tsresol``, ``if_tsoffset``), enhanced, simple and obsolete packet
    blocks; other blocks are skipped."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.linktypes = set()
        self._big = False
        # every interface of every section: (dlt, snaplen, units per second, offset s)
        self._ifaces: list[tuple[int, int, int, int]] = []
        self._section = 0  # index in _ifaces of the current section's interface 0

    def chunks(self) -> Iterator[RawPackets]:
        mapped = self._map()
        data = np.frombuffer(mapped, dtype=np.uint8)
        n, o = len(data), 0
        while True:
            found: list[tuple[int, int, int, int, int]] = []
            o = self._walk(mapped, o, min(n, o + CHUNK_BYTES), found)
            if found:
                yield self._arrays(data, found)
            if o >= n or self.error or not found:
                break
        if o < n and self.error is None:
            self.error = f"truncated pcapng file; {n - o} bytes of an incomplete block at the end"

    def _walk(self, buf: mmap.mmap, o: int, stop: int, found: list) -> int:
        """Walk the complete blocks from ``o`` that start before ``stop`` (packets into ``found``);
        returns where the walk stopped."""
        used = len(buf)
        while o + 12 <= used and o < stop:
            btype = struct.unpack_from("<I", buf, o)[0]
            if btype == _PCAPNG_SHB:
                bom = struct.unpack_from("<I", buf, o + 8)[0]
                if bom not in (_PCAPNG_BOM, 0x4D3C2B1A):
                    self.error = "bad byte-order magic in a section header block"
                    return o
                self._big = bom != _PCAPNG_BOM
                self._section = len(self._ifaces)
            order = ">" if self._big else "<"
            btype, length = struct.unpack_from(order + "II", buf, o)
            if length < 12 or length % 4:
                self.error = f"block of invalid length {length}"
                return o
            if o + length > used:
                return o
            self._block(buf, o, btype, length, order, found)
            if self.error:
                return o
            o += length
        return o

    def _block(self, buf: mmap.mmap, o: int, btype: int, length: int, order: str, rows: list) -> None:
        if length < {1: 20, 2: 32, 3: 16, 6: 32}.get(btype, 12):
            self.error = f"block of type {btype} too short ({length} bytes)"
            return
        if btype == 1:  # interface description
            linktype, _, snaplen = struct.unpack_from(order + "HHI", buf, o + 8)
            per_s, offset_s = self._options(buf, o + 16, o + length - 4, order)
            dlt = _LINKTYPE_TO_DLT.get(linktype, linktype)
            self._ifaces.append((dlt, snaplen, per_s, offset_s))
            self.linktypes.add(dlt)
            return
        if btype not in (2, 3, 6):
            return
        if btype == 3:  # simple packet: no interface id, no timestamp
            iface, hi, lo, wire = 0, 0, 0, struct.unpack_from(order + "I", buf, o + 8)[0]
            data = o + 12
            caplen = min(wire, length - 16)
            if self._section < len(self._ifaces):
                caplen = min(caplen, self._ifaces[self._section][1] or caplen)
        else:
            if btype == 2:
                iface = struct.unpack_from(order + "H", buf, o + 8)[0]
            else:
                iface = struct.unpack_from(order + "I", buf, o + 8)[0]
            hi, lo, caplen, wire = struct.unpack_from(order + "IIII", buf, o + 12)
            data = o + 28
        iface += self._section
        if iface >= len(self._ifaces) or caplen > length - (data - o) or caplen > MAX_CAPLEN:
            self.error = "packet block with an unknown interface or an impossible length"
            return
        rows.append((data, caplen, wire, iface, (hi << 32) | lo))

    @staticmethod
    def _options(buf: mmap.mmap, o: int, end: int, order: str) -> tuple[int, int]:
        """``(timestamp units per second, offset in seconds)`` from an interface block's options."""
        per_s, offset_s = 1_000_000, 0
        while o + 4 <= end:
            code, size = struct.unpack_from(order + "HH", buf, o)
            if code == 0:
                break
            if code == 9 and size >= 1:  # if_tsresol
                r = int(buf[o + 4])
                per_s = 2 ** (r & 0x7F) if r & 0x80 else 10**r
            elif code == 14 and size >= 8:  # if_tsoffset
                offset_s = struct.unpack_from(order + "q", buf, o + 4)[0]
            o += 4 + ((size + 3) & ~3)
        return per_s, offset_s

    def _arrays(self, buf: np.ndarray, rows: list) -> RawPackets:
        data, caplen, wire, iface, units = (np.asarray(c) for c in zip(*rows))
        ts = np.empty(len(rows), dtype=np.int64)
        dlt = np.empty(len(rows), dtype=np.int64)
        for k, (link, _, per_s, offset_s) in enumerate(self._ifaces):
            m = iface == k
            if not m.any():
                continue
            u = units[m].astype(np.uint64)
            if per_s >= 1_000_000 and per_s % 1_000_000 == 0:
                us = (u // np.uint64(per_s // 1_000_000)).astype(np.int64)
            else:  # coarser or binary resolutions: exact in Python integers
                us = np.array([int(x) * 1_000_000 // per_s for x in u.tolist()], dtype=np.int64)
            ts[m] = us + offset_s * 1_000_000
            dlt[m] = link
        self.packets += len(rows)
        return RawPackets(buf, data.astype(np.int64), caplen.astype(np.int64), wire.astype(np.int64), ts, dlt)
