"""Packets to flows: turn a ``.pcap``/``.pcapng`` file or a live interface into CICIDS2017 flows.

Every step works on numpy arrays of all packets at once, and files and interfaces share it:

1. :mod:`.capture` reads the file (pcap or pcapng) into one buffer and walks the record headers;
   :mod:`.libpcap` collects live packets into the same :class:`~.capture.RawPackets`;
2. :mod:`.decode` decodes link layer (Ethernet with 802.1Q/QinQ tags, Linux cooked, raw IP,
   loopback), IPv4/IPv6 and TCP/UDP headers, with CICFlowMeter's length semantics;
3. :mod:`.flows` groups packets into bidirectional flows with CICFlowMeter's boundaries (120 s cut
   after the first packet, idle timeout, TCP FIN/RST termination) as netflower 1.1.0 drew them;
4. :func:`fedids.data.features.flow_features` computes the 78 features: the one definition the
   synthetic generator uses too. ``mode="cicids2017"`` (the default) reproduces the published
   CICIDS2017 CSVs' quirks (flag columns of the first packet in a permuted order, bulk features 0, ...;
   :data:`FEATURE_MAP`), ``mode="corrected"`` the documented definitions.

Entry points: :func:`extract_pcap` (file) and :func:`capture_interface` (live, needs ``CAP_NET_RAW``).
Both give canonical flow frames (:mod:`fedids.data.schema`) without ``label``/``family``: the detector
scores these flows, nobody has labelled them. Why not nfstream or cicflowmeter: ``docs/extractor.md``;
speed beside nfstream: ``benchmarks/bench_extractor.py``, ``docs/edge.md``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedids.data.features import (
    ACTIVITY_TIMEOUT_US,
    CICIDS2017_FLAG_COLUMNS,
    FEATURE_MAP,
    SEMANTICS,
    FeatureMapping,
    flow_features,
)
from fedids.detect.extractor.capture import SUPPORTED_LINKTYPES, RawPackets, open_capture
from fedids.detect.extractor.decode import decode
from fedids.detect.extractor.flows import FlowBatch, FlowTable
from fedids.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from fedids.detect.extractor.libpcap import PcapHandle

__all__ = [
    "ACTIVITY_TIMEOUT_S",
    "CICIDS2017_FLAG_COLUMNS",
    "DEFAULT_ACTIVE_TIMEOUT_S",
    "DEFAULT_IDLE_TIMEOUT_S",
    "FEATURE_MAP",
    "MODES",
    "ExtractResult",
    "FeatureMapping",
    "capture_interface",
    "extract_pcap",
]

log = logging.getLogger(__name__)

FeatureMode = Literal["cicids2017", "corrected"]
MODES: tuple[str, ...] = ("cicids2017", "corrected")

DEFAULT_ACTIVE_TIMEOUT_S = 120.0
"""CICFlowMeter's ``flowTimeout`` as used for CICIDS2017: a flow is cut 120 s after its *first* packet
(the dataset's largest ``Flow Duration`` is just under 120,000,000 us)."""

DEFAULT_IDLE_TIMEOUT_S = 120.0
"""CICFlowMeter has no idle timeout; a flow silent for 120 s is past the 120 s cap anyway, so an idle
timeout of 120 s changes no flow boundary and lets the flow table forget silent flows."""

ACTIVITY_TIMEOUT_S = ACTIVITY_TIMEOUT_US / 1e6
"""CICFlowMeter's ``activityTimeout`` (5 s), which separates active from idle periods; not a flow
timeout."""

US_PER_S = 1_000_000


class ExtractResult:
    """What :func:`extract_pcap` produced.

    Attributes
    ----------
    frame : canonical flow frame, one row per flow in the order the flows ended (the order a live
        detector sees them; flows still open at the end of the capture last, by start):
        ``flow_id, src_ip, src_port, dst_ip, dst_port, protocol, timestamp`` (first packet,
        ``datetime64[us]``, naive UTC), ``seq`` (0..flows-1), the 78 features as float64, and ``tool``
        where a flow carried a scanning tool's signature. Built (with pandas) on first access.
    features : the 78 features as a float64 array ``(flows, 78)``, same rows (no pandas needed).
    packets : packet records read from the file (all of them, also those skipped below).
    flows : number of flows.
    seconds : wall time of the extraction (reading, decoding, flows, features).
    warnings : one line per problem that did not stop the extraction (truncated file, malformed packets).
    skipped : packets that are in no flow, by reason: ``non_ip`` (ARP, LLDP, ...), ``not_tcp_udp``
        (ICMP, ...), ``fragment`` (IPv4/IPv6 fragments after the first), ``malformed`` (too short for
        their own headers), ``after_close`` (non-SYN TCP packets within 1 s after their connection
        ended by RST or FIN from both sides: leftovers of that connection, where CICFlowMeter-V3 made
        them into one- or two-packet flows of their own). CICFlowMeter, too, builds flows from TCP and
        UDP only.
    truncated : the file ended inside a packet record (or was damaged there); every complete packet
        before it was used.
    """

    def __init__(
        self,
        batches: list[tuple[FlowBatch, np.ndarray]],
        *,
        packets: int,
        seconds: float,
        warnings: list[str],
        skipped: dict[str, int],
        truncated: bool,
    ) -> None:
        self._batches = batches
        self._frame: pd.DataFrame | None = None
        self.packets, self.seconds, self.warnings = packets, seconds, warnings
        self.skipped, self.truncated = skipped, truncated
        self.flows = sum(len(b) for b, _ in batches)

    @property
    def features(self) -> np.ndarray:
        parts = [f for _, f in self._batches]
        return np.concatenate(parts) if parts else np.zeros((0, len(FEATURE_MAP)))

    @property
    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            from fedids.detect.extractor.frame import flow_frame

            self._frame = flow_frame(self._batches)
        return self._frame


def _check_args(active_timeout_s: float, idle_timeout_s: float, mode: str) -> None:
    for name, value in (("active_timeout_s", active_timeout_s), ("idle_timeout_s", idle_timeout_s)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _features(batch: FlowBatch | None, mode: str) -> list[tuple[FlowBatch, np.ndarray]]:
    if batch is None or len(batch) == 0:
        return []
    return [(batch, flow_features(batch.packets, batch.dport, SEMANTICS[mode]))]


def _table(active_timeout_s: float, idle_timeout_s: float) -> FlowTable:
    return FlowTable(idle_us=round(idle_timeout_s * US_PER_S), active_us=round(active_timeout_s * US_PER_S))


def extract_pcap(
    path: str | os.PathLike[str],
    *,
    active_timeout_s: float = DEFAULT_ACTIVE_TIMEOUT_S,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    mode: FeatureMode = "cicids2017",
) -> ExtractResult:
    """Extract bidirectional TCP/UDP flows with CICIDS2017 features from a pcap or pcapng file.

    Parameters
    ----------
    path : a ``.pcap`` or ``.pcapng`` file (Ethernet with or without VLAN tags, Linux cooked, raw IP or
        loopback link type; nanosecond files are read at microsecond precision, as CICFlowMeter did).
    active_timeout_s : a flow is cut this many seconds after its first packet and continues in a new
        flow (CICFlowMeter's ``flowTimeout``, 120 s for CICIDS2017).
    idle_timeout_s : a flow silent this long ends; the next packet starts a new flow (120 s: no effect
        beyond the 120 s cut, see :data:`DEFAULT_IDLE_TIMEOUT_S`). TCP flows also end on RST or on FIN
        from both sides. The 5 s active/idle threshold is fixed (:data:`ACTIVITY_TIMEOUT_S`).
    mode : ``"cicids2017"`` (features as in the CICIDS2017 CSVs) or ``"corrected"``; see
        :data:`FEATURE_MAP`.

    Returns
    -------
    ExtractResult
        ``frame`` holds one row per flow (canonical schema, no ``label``/``family``).

    Raises
    ------
    InputError
        The file is missing, unreadable, empty, not a pcap/pcapng capture, or of an unsupported link
        type. A file that ends inside a packet (or is damaged there) is *not* an error: the flows of
        every complete packet before it are returned, with ``truncated=True`` and a line in
        ``warnings``.
    """
    _check_args(active_timeout_s, idle_timeout_s, mode)
    path = Path(path)
    started = time.perf_counter()
    reader = open_capture(path)
    table = _table(active_timeout_s, idle_timeout_s)
    skips: Counter[str] = Counter()
    batches: list[tuple[FlowBatch, np.ndarray]] = []
    previous = None
    for raw in reader.chunks():
        _check_linktypes(path, raw)
        decoded = decode(raw, mode, skips)
        if previous is not None:  # not the last chunk: flows that ended before this chunk's start
            batches += _features(table.feed(previous, int(previous.ts.max())), mode)
        previous = decoded
    if previous is None:
        _check_linktypes(path, None, reader.linktypes)
    batches += _features(table.flush(previous), mode)
    if table.after_close:
        skips["after_close"] = table.after_close

    warnings: list[str] = []
    truncated = reader.error is not None
    if truncated:
        warnings.append(
            f"{path}: file damaged or truncated after {reader.packets} complete packets "
            f"({reader.error}); flows of those packets kept"
        )
    if skips.get("malformed"):
        warnings.append(
            f"{path}: {skips['malformed']} malformed packets (shorter than their own headers) skipped"
        )
    return ExtractResult(
        batches,
        packets=reader.packets,
        seconds=time.perf_counter() - started,
        warnings=warnings,
        skipped={k: v for k, v in sorted(skips.items()) if v},
        truncated=truncated,
    )


def _check_linktypes(path: Path, raw: RawPackets | None, linktypes: set[int] | None = None) -> None:
    found = set(np.unique(raw.linktype).tolist()) if raw is not None else (linktypes or set())
    bad = sorted(found - set(SUPPORTED_LINKTYPES))
    if bad:
        raise InputError(
            f"{path}: link type {bad[0]} is not supported "
            f"(supported: Ethernet, Linux cooked, raw IP, loopback)"
        )


def capture_interface(
    name: str,
    *,
    duration_s: float | None,
    packet_count: int | None,
    active_timeout_s: float = DEFAULT_ACTIVE_TIMEOUT_S,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    batch_interval_s: float = 1.0,
    mode: FeatureMode = "cicids2017",
    snaplen: int = 65535,
    promiscuous: bool = True,
) -> Iterator[pd.DataFrame]:
    """Capture live traffic on an interface and yield batches of finished flows as they end.

    Packets are read with libpcap (:mod:`.libpcap`) in the calling thread and, every
    ``batch_interval_s``, decoded and assembled by the same array code as :func:`extract_pcap`, with
    the wall clock as the flow table's clock.

    Parameters
    ----------
    name : interface name (``"eth0"``, ``"any"`` for all, ``"lo"``).
    duration_s : stop after this many seconds of wall time (``None``: no limit).
    packet_count : stop after this many packets (``None``: no limit). On either limit the flows still
        open are yielded as a last batch. With both ``None`` the capture runs until the consumer stops
        iterating (``close()`` on the iterator or leaving a ``for``), which drops the flows still open.
    active_timeout_s, idle_timeout_s, mode : as for :func:`extract_pcap`. A flow is yielded when it
        ends: at RST/FIN, after ``idle_timeout_s`` of silence, at the ``active_timeout_s`` cut, or when
        the capture stops. With the CICIDS2017 default of 120 s a scan's one-packet flows appear
        120 s late; a lower ``idle_timeout_s`` (e.g. 5) gives earlier alerts at the price of splitting
        flows that pause longer than that (CICIDS2017 has no such split).
    batch_interval_s : how often, in seconds, packets are turned into flows and a batch is yielded.
    snaplen, promiscuous : libpcap capture settings.

    Returns
    -------
    Iterator[pandas.DataFrame]
        Capture is running when this returns. Each item is a non-empty canonical flow frame (as
        :attr:`ExtractResult.frame`) of the flows that ended since the last one, ``seq`` continuing
        across batches. Kernel drops and malformed packets are logged as warnings at the end.

    Raises
    ------
    InputError
        No such interface, or no permission: live capture needs root, or ``CAP_NET_RAW`` (plus
        ``CAP_NET_ADMIN`` for promiscuous mode) on the Python binary, e.g.
        ``sudo setcap cap_net_raw,cap_net_admin=eip "$(readlink -f .venv/bin/python)"``.
    """
    from fedids.detect.extractor.libpcap import open_live

    _check_args(active_timeout_s, idle_timeout_s, mode)
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s must be > 0 or None, got {duration_s!r}")
    if packet_count is not None and packet_count < 1:
        raise ValueError(f"packet_count must be >= 1 or None, got {packet_count!r}")
    if not batch_interval_s > 0:
        raise ValueError(f"batch_interval_s must be > 0, got {batch_interval_s!r}")
    read_timeout_ms = max(10, min(1000, int(batch_interval_s * 1000 / 2)))
    # Opened here, not inside the generator, so that a missing interface or privilege is reported by
    # the call itself and capture has started when it returns.
    handle = open_live(name, snaplen=snaplen, promiscuous=promiscuous, read_timeout_ms=read_timeout_ms)
    if handle.linktype not in SUPPORTED_LINKTYPES:
        handle.close()
        raise InputError(f"{name}: link type {handle.linktype} is not supported")
    return _live_batches(
        handle,
        _table(active_timeout_s, idle_timeout_s),
        mode=mode,
        duration_s=duration_s,
        packet_count=packet_count,
        batch_interval_s=batch_interval_s,
    )


class _LiveBatcher:
    """Decodes collected frames and feeds the flow table; makes frames with continuing ``seq``."""

    def __init__(self, table: FlowTable, mode: str, linktype: int) -> None:
        self.table, self.mode, self.linktype = table, mode, linktype
        self.skips: Counter[str] = Counter()
        self.seq = 0

    def frame(self, frames: list, *, final: bool) -> pd.DataFrame | None:
        from fedids.detect.extractor.frame import flow_frame

        packets = (
            decode(RawPackets.from_frames(frames, self.linktype), self.mode, self.skips) if frames else None
        )
        batch = self.table.flush(packets) if final else self.table.feed(packets, time.time_ns() // 1000)
        done = _features(batch, self.mode)
        if not done:
            return None
        out = flow_frame(done, seq_start=self.seq)
        self.seq += len(out)
        return out


def _live_batches(
    handle: PcapHandle,
    table: FlowTable,
    *,
    mode: str,
    duration_s: float | None,
    packet_count: int | None,
    batch_interval_s: float,
) -> Iterator[pd.DataFrame]:
    name = handle.source
    try:
        batcher = _LiveBatcher(table, mode, handle.linktype)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_batch = time.monotonic() + batch_interval_s
        packets = 0
        frames: list[tuple[int, int, int, bytes]] = []
        while True:
            item = handle.next()
            if isinstance(item, tuple):
                packets += 1
                frames.append(item)
            elif item == -1:
                raise InputError(f"{name}: capture failed ({handle.error})")
            elif item == -2:
                break
            else:  # 0: nothing waiting; sleep until a packet, the next batch or the deadline
                now = time.monotonic()
                handle.wait(min(next_batch, deadline if deadline is not None else next_batch) - now)
            now = time.monotonic()
            if (packet_count is not None and packets >= packet_count) or (
                deadline is not None and now >= deadline
            ):
                break
            if now >= next_batch:
                next_batch = now + batch_interval_s
                out = batcher.frame(frames, final=False)
                frames = []
                if out is not None:
                    yield out
        out = batcher.frame(frames, final=True)
        if out is not None:
            yield out
        drops = handle.drops()
        if drops and any(drops):
            log.warning("%s: %d packets dropped by the kernel, %d by the interface", name, *drops)
        if batcher.skips.get("malformed"):
            log.warning("%s: %d malformed packets skipped", name, batcher.skips["malformed"])
    finally:
        handle.close()
