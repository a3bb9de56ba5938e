"""Live capture with the system libpcap (ctypes), in the calling thread, into the same array code.

Packets are read with ``pcap_next_ex`` in immediate, non-blocking mode (waiting in ``select`` at most
until the next batch or the deadline, so a quiet interface still stops on time), collected for
``batch_interval_s`` and then decoded and assembled into flows by exactly the code that reads files
(:mod:`~fedids.detect.extractor.decode`, :class:`~fedids.detect.extractor.flows.FlowTable`); the flow
table's clock is the wall clock, so silent flows end on time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import select
from typing import Any

from fedids.errors import FedidsError, InputError

log = logging.getLogger(__name__)


class _PcapHeader(ctypes.Structure):
    # struct pcap_pkthdr on Linux/glibc (64-bit): struct timeval {long, long}, caplen, len.
    _fields_ = [
        ("tv_sec", ctypes.c_long),
        ("tv_usec", ctypes.c_long),
        ("caplen", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
    ]


class _PcapStat(ctypes.Structure):
    _fields_ = [("ps_recv", ctypes.c_uint), ("ps_drop", ctypes.c_uint), ("ps_ifdrop", ctypes.c_uint)]


_PCAP_ERRBUF_SIZE = 256
_PCAP_ERROR_NO_SUCH_DEVICE = -5
_PCAP_ERROR_PERM_DENIED = -8


@functools.cache
def _libpcap() -> ctypes.CDLL:
    """The system libpcap with the prototypes we call. Raises FedidsError when it is not installed."""
    names = ("libpcap.so.1", "libpcap.so.0.8", "libpcap.so", ctypes.util.find_library("pcap"))
    candidates = [n for n in names if n]
    lib = None
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        raise FedidsError("libpcap not found: install the Debian package libpcap0.8 (make system-deps)")
    p, c_char_p, c_int = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    protos: dict[str, tuple[Any, list[Any]]] = {
        "pcap_create": (p, [c_char_p, c_char_p]),
        "pcap_set_snaplen": (c_int, [p, c_int]),
        "pcap_set_promisc": (c_int, [p, c_int]),
        "pcap_set_timeout": (c_int, [p, c_int]),
        "pcap_set_immediate_mode": (c_int, [p, c_int]),
        "pcap_activate": (c_int, [p]),
        "pcap_next_ex": (c_int, [p, ctypes.POINTER(ctypes.POINTER(_PcapHeader)), ctypes.POINTER(p)]),
        "pcap_datalink": (c_int, [p]),
        "pcap_geterr": (c_char_p, [p]),
        "pcap_statustostr": (c_char_p, [c_int]),
        "pcap_stats": (c_int, [p, ctypes.POINTER(_PcapStat)]),
        "pcap_breakloop": (None, [p]),
        "pcap_setnonblock": (c_int, [p, c_int, c_char_p]),
        "pcap_get_selectable_fd": (c_int, [p]),
        "pcap_close": (None, [p]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


class PcapHandle:
    """An open libpcap handle yielding ``(ts_sec, ts_usec, wire_len, bytes)``; closes itself."""

    def __init__(self, lib: ctypes.CDLL, handle: int, source: str) -> None:
        self._lib = lib
        self._handle: int | None = handle
        self.source = source
        self.linktype = lib.pcap_datalink(handle)
        self.error: str | None = None
        self._fd = -1
        self._hdr = ctypes.POINTER(_PcapHeader)()
        self._data = ctypes.c_void_p()
        self._hdr_ref = ctypes.byref(self._hdr)
        self._data_ref = ctypes.byref(self._data)

    def next(self) -> tuple[int, int, int, bytes] | int:
        """One packet, or libpcap's status: 0 (live read timeout), -2 (end of file), -1 (error:
        :attr:`error` holds libpcap's message)."""
        rc = self._lib.pcap_next_ex(self._handle, self._hdr_ref, self._data_ref)
        if rc == 1:
            h = self._hdr.contents
            return h.tv_sec, h.tv_usec, h.len, ctypes.string_at(self._data, h.caplen)
        if rc == -1:
            self.error = (self._lib.pcap_geterr(self._handle) or b"").decode(errors="replace")
        return rc

    def set_nonblocking(self) -> None:
        """Make :meth:`next` return 0 at once when no packet is waiting, and remember the descriptor that
        :meth:`wait` polls. Why: libpcap's read timeout is not a wall-clock bound (on Linux the timer may
        not start before the first packet), so a blocking read on a quiet interface never returns."""
        errbuf = ctypes.create_string_buffer(_PCAP_ERRBUF_SIZE)
        if self._lib.pcap_setnonblock(self._handle, 1, errbuf) != 0:
            raise InputError(
                f"{self.source}: cannot read without blocking ({errbuf.value.decode(errors='replace')})"
            )
        self._fd = self._lib.pcap_get_selectable_fd(self._handle)
        if self._fd < 0:
            raise InputError(f"{self.source}: this capture has no pollable descriptor")

    def wait(self, timeout_s: float) -> None:
        """Block until a packet may be readable or ``timeout_s`` has passed (after :meth:`set_nonblocking`)."""
        select.select([self._fd], [], [], max(0.0, timeout_s))

    def drops(self) -> tuple[int, int] | None:
        """``(dropped by the kernel, dropped by the interface)`` for a live handle, else None."""
        stat = _PcapStat()
        if self._lib.pcap_stats(self._handle, ctypes.byref(stat)) != 0:
            return None
        return int(stat.ps_drop), int(stat.ps_ifdrop)

    def close(self) -> None:
        if self._handle is not None:
            self._lib.pcap_close(self._handle)
            self._handle = None

    def __del__(self) -> None:  # a live capture whose generator was never started
        self.close()


def open_live(name: str, *, snaplen: int, promiscuous: bool, read_timeout_ms: int) -> PcapHandle:
    lib = _libpcap()
    errbuf = ctypes.create_string_buffer(_PCAP_ERRBUF_SIZE)
    handle = lib.pcap_create(name.encode(), errbuf)
    if not handle:
        raise InputError(f"{name}: cannot open interface ({errbuf.value.decode(errors='replace')})")
    lib.pcap_set_snaplen(handle, snaplen)
    lib.pcap_set_promisc(handle, int(promiscuous))
    lib.pcap_set_timeout(handle, read_timeout_ms)
    # Deliver packets as they arrive instead of when a kernel buffer fills: flows end on time.
    lib.pcap_set_immediate_mode(handle, 1)
    rc = lib.pcap_activate(handle)
    if rc < 0:
        detail = (lib.pcap_geterr(handle) or b"").decode(errors="replace")
        status = (lib.pcap_statustostr(rc) or b"").decode(errors="replace")
        lib.pcap_close(handle)
        if rc == _PCAP_ERROR_PERM_DENIED:
            raise InputError(
                f"{name}: permission denied: live capture needs root or CAP_NET_RAW "
                f"(and CAP_NET_ADMIN for promiscuous mode) ({detail or status})"
            )
        if rc == _PCAP_ERROR_NO_SUCH_DEVICE:
            raise InputError(f"{name}: no such network interface ({detail or status})")
        raise InputError(f"{name}: cannot capture ({detail or status})")
    if rc > 0:
        log.warning("%s: %s", name, (lib.pcap_statustostr(rc) or b"").decode(errors="replace"))
    live = PcapHandle(lib, handle, name)
    try:
        live.set_nonblocking()
    except InputError:
        live.close()
        raise
    return live
