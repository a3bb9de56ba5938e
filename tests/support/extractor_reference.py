"""The packets-to-flows extractor as it was before the array rewrite: dpkt decoding, netflower 1.1.0's
per-packet flow table (with the first-packet/last-window hooks CICIDS2017 mode needs) and the
mapping of netflower's records to the 78 features. Kept in the tests only, as the reference that
``tests/detect/test_extractor.py`` compares the array extractor with (same flows, same features)."""

from __future__ import annotations

import functools
import socket
import struct
from typing import Any

import dpkt
import numpy as np
import pandas as pd

from fedids.data.features import CICIDS2017_FLAG_COLUMNS, FEATURE_MAP, PSH, URG
from fedids.data.schema import FEATURES
from fedids.detect.signatures import conversation_key, match_scanner
from fedids.errors import FedidsError

FeatureMode = str
MODES = ("cicids2017", "corrected")
ACTIVITY_TIMEOUT_S = 5.0
US_PER_S = 1_000_000
_S = 1e6
_CLOCK_MARGIN_S = 3600


def compute_features(raw: pd.DataFrame, *, mode: FeatureMode = "cicids2017") -> pd.DataFrame:
    """Map netflower flow records to the 78 CICIDS2017 features.

    Parameters
    ----------
    raw : one row per flow with netflower 1.1.0's 82 snake_case columns (times in **seconds**) plus
        ``start_us``/``end_us`` (int, first/last packet time in microseconds since the epoch),
        ``first_flags`` (TCP flag byte of the flow's first packet, 0 for UDP), ``first_len`` (its payload
        bytes), ``first_backward`` (bool: the first packet went dst -> src, possible only in a flow that
        continues one cut at the 120 s cap) and ``last_bwd_win`` (TCP window of the last backward packet,
        -1 if none).
    mode : ``"cicids2017"`` reproduces the published CICIDS2017 CSVs (see :data:`FEATURE_MAP`),
        ``"corrected"`` the documented definitions.

    Returns
    -------
    DataFrame of shape ``(len(raw), 78)``, columns :data:`FEATURES`, float64, all finite; times in
    microseconds, lengths in bytes, rates per second. Same index as ``raw``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    out: dict[str, np.ndarray] = {}
    for m in FEATURE_MAP:
        if m.source is None:
            continue
        values = raw[m.source].to_numpy(dtype=np.float64) * m.scale
        out[m.feature] = np.round(values) if m.integer else values

    duration_us = raw["end_us"].to_numpy(dtype=np.int64) - raw["start_us"].to_numpy(dtype=np.int64)
    out["Flow Duration"] = duration_us.astype(np.float64)
    fwd = out["Total Fwd Packets"]
    bwd = out["Total Backward Packets"]
    seconds = duration_us / _S
    positive = seconds > 0
    # CICFlowMeter divides by a zero duration and writes Infinity/NaN (CICIDS2017 has both); a detector
    # needs finite inputs, and 0 is what netflower and cicflowmeter (Python) write.
    safe = np.where(positive, seconds, 1.0)
    nbytes = out["Total Length of Fwd Packets"] + out["Total Length of Bwd Packets"]
    out["Flow Bytes/s"] = np.where(positive, nbytes / safe, 0.0)
    out["Flow Packets/s"] = np.where(positive, (fwd + bwd) / safe, 0.0)
    out["Fwd Packets/s"] = np.where(positive, fwd / safe, 0.0)
    out["Bwd Packets/s"] = np.where(positive, bwd / safe, 0.0)

    if mode == "cicids2017":
        _apply_cicids2017_quirks(raw, out)

    frame = pd.DataFrame({f: out[f] for f in FEATURES}, index=raw.index)
    return frame.astype(np.float64)


def _apply_cicids2017_quirks(raw: pd.DataFrame, out: dict[str, np.ndarray]) -> None:
    """Overwrite ``out`` where CICFlowMeter-V3's output (the CICIDS2017 CSVs) differs; see FEATURE_MAP."""
    first_flags = raw["first_flags"].to_numpy(dtype=np.int64)
    first_backward = raw["first_backward"].to_numpy(dtype=bool)
    first_len = raw["first_len"].to_numpy(dtype=np.float64)

    def first_has(bit: int) -> np.ndarray:
        return ((first_flags & bit) != 0).astype(np.float64)

    for column, bit in CICIDS2017_FLAG_COLUMNS.items():
        out[column] = first_has(bit)
    forward_first = (~first_backward).astype(np.float64)
    out["Fwd PSH Flags"] = first_has(PSH) * forward_first
    out["Fwd URG Flags"] = first_has(URG) * forward_first
    out["Bwd PSH Flags"] = first_has(PSH) * (1.0 - forward_first)
    out["Bwd URG Flags"] = first_has(URG) * (1.0 - forward_first)

    fwd = out["Total Fwd Packets"]
    bwd = out["Total Backward Packets"]
    out["Down/Up Ratio"] = np.where(fwd > 0, np.floor(bwd / np.where(fwd > 0, fwd, 1.0)), 0.0)

    # Packet length statistics over n + 1 values (first packet twice): one more Welford step.
    n = fwd + bwd
    mean = raw["pkt_len_mean"].to_numpy(dtype=np.float64)
    m2 = raw["pkt_len_var"].to_numpy(dtype=np.float64) * np.maximum(n - 1.0, 0.0)
    mean_n1 = mean + (first_len - mean) / (n + 1.0)
    m2_n1 = m2 + (first_len - mean) * (first_len - mean_n1)
    var_n1 = m2_n1 / np.maximum(n, 1.0)
    out["Packet Length Mean"] = mean_n1
    out["Packet Length Variance"] = var_n1
    out["Packet Length Std"] = np.sqrt(np.maximum(var_n1, 0.0))
    total = out["Total Length of Fwd Packets"] + out["Total Length of Bwd Packets"]
    out["Average Packet Size"] = np.where(n > 0, (total + first_len) / np.maximum(n, 1.0), 0.0)

    for column in (
        "Fwd Avg Bytes/Bulk",
        "Fwd Avg Packets/Bulk",
        "Fwd Avg Bulk Rate",
        "Bwd Avg Bytes/Bulk",
        "Bwd Avg Packets/Bulk",
        "Bwd Avg Bulk Rate",
    ):
        out[column] = np.zeros(len(raw))
    out["Subflow Fwd Packets"] = out["Total Fwd Packets"]
    out["Subflow Fwd Bytes"] = out["Total Length of Fwd Packets"]
    out["Subflow Bwd Packets"] = out["Total Backward Packets"]
    out["Subflow Bwd Bytes"] = out["Total Length of Bwd Packets"]
    out["Init_Win_bytes_backward"] = raw["last_bwd_win"].to_numpy(dtype=np.float64)
    first_is_data = ((first_len >= 1) & ~first_backward).astype(np.float64)
    out["act_data_pkt_fwd"] = out["act_data_pkt_fwd"] - first_is_data


_DLT_NULL, _DLT_EN10MB, _DLT_RAW, _DLT_RAW_BSD, _DLT_LOOP = 0, 1, 12, 14, 108
_DLT_LINUX_SLL, _DLT_IPV4, _DLT_IPV6, _DLT_LINUX_SLL2 = 113, 228, 229, 276
_SUPPORTED_LINKTYPES = {
    _DLT_NULL: "BSD loopback",
    _DLT_EN10MB: "Ethernet",
    _DLT_RAW: "raw IP",
    _DLT_RAW_BSD: "raw IP",
    _DLT_LOOP: "OpenBSD loopback",
    _DLT_LINUX_SLL: "Linux cooked",
    _DLT_IPV4: "raw IPv4",
    _DLT_IPV6: "raw IPv6",
    _DLT_LINUX_SLL2: "Linux cooked v2",
}
_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_ETH_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad (QinQ), legacy QinQ
_UNPACK_U16 = struct.Struct("!H").unpack_from


def _l3_offset(linktype: int, buf: bytes) -> int:
    """Offset of the IP header in a frame, or -1 when the frame carries no IPv4/IPv6 packet.

    Hand-written rather than ``dpkt.ethernet.Ethernet``: dpkt decodes VLAN tags too but does not tell
    where the IP header starts, and CICFlowMeter's payload length (bytes after the transport header,
    Ethernet padding included) needs that offset.
    """
    try:
        if linktype == _DLT_EN10MB:
            off = 12
            ethertype = _UNPACK_U16(buf, off)[0]
            while ethertype in _ETH_VLAN_TAGS:
                off += 4
                ethertype = _UNPACK_U16(buf, off)[0]
            return off + 2 if ethertype in (_ETH_IPV4, _ETH_IPV6) else -1
        if linktype in (_DLT_RAW, _DLT_RAW_BSD, _DLT_IPV4, _DLT_IPV6):
            off = 0
        elif linktype in (_DLT_NULL, _DLT_LOOP):
            off = 4
        elif linktype == _DLT_LINUX_SLL:
            return 16 if _UNPACK_U16(buf, 14)[0] in (_ETH_IPV4, _ETH_IPV6) else -1
        elif linktype == _DLT_LINUX_SLL2:
            return 20 if _UNPACK_U16(buf, 0)[0] in (_ETH_IPV4, _ETH_IPV6) else -1
        else:
            return -1
        return off if len(buf) > off and buf[off] >> 4 in (4, 6) else -1
    except struct.error:
        return -1


def _make_decoder(linktype: int, mode: FeatureMode, tool_hits: dict | None = None):
    """A function ``(wire_len, frame) -> packet tuple | reason string`` for one capture.

    The tuple is what netflower's ``FlowSession.process`` takes after the timestamp:
    ``(src_ip, dst_ip, src_port, dst_port, protocol, length, header_length, payload, flags, window)``,
    with ``length == payload`` = transport payload bytes (CICFlowMeter's packet length).
    TCP payloads carrying a scanning tool's signature (:mod:`fedids.detect.signatures`) are noted in
    ``tool_hits`` under their :func:`~fedids.detect.signatures.conversation_key`.
    """
    import dpkt

    tcp_cls, udp_cls = dpkt.tcp.TCP, dpkt.udp.UDP
    ip4_cls, ip6_cls = dpkt.ip.IP, dpkt.ip6.IP6
    ntoa, ntop, af6 = socket.inet_ntoa, socket.inet_ntop, socket.AF_INET6
    with_padding = mode == "cicids2017"

    def decode(wire_len: int, buf: bytes):
        off = _l3_offset(linktype, buf)
        if off < 0:
            return "non_ip"
        try:
            if buf[off] >> 4 == 4:
                ip = ip4_cls(buf[off:])
                if ip.offset:
                    return "fragment"
                ip_hdr = ip.hl << 2
                declared = ip.len - ip_hdr if ip.len else None
                src, dst = ntoa(ip.src), ntoa(ip.dst)
            else:
                ip = ip6_cls(buf[off:])
                ext = sum(h.length for h in ip.all_extension_headers)
                if 44 in ip.extension_hdrs and ip.extension_hdrs[44].frag_off:
                    return "fragment"
                ip_hdr = 40 + ext
                declared = ip.plen - ext if ip.plen else None
                src, dst = ntop(af6, ip.src), ntop(af6, ip.dst)
        except (dpkt.UnpackError, IndexError, ValueError):
            return "malformed"
        seg = ip.data
        if isinstance(seg, tcp_cls):
            hdr, flags, window = seg.off << 2, seg.flags, seg.win
        elif isinstance(seg, udp_cls):
            hdr, flags, window = 8, 0, -1
        elif ip.p in (6, 17):
            return "malformed"  # dpkt leaves the bytes raw when the TCP/UDP header is cut short
        else:
            return "not_tcp_udp"
        if with_padding:
            # What jnetpcap (CICFlowMeter) called the payload: every byte of the frame after the
            # transport header, so Ethernet padding of short frames counts (CICIDS2017's RST replies
            # to a port scan show 6 bytes).
            payload = wire_len - off - ip_hdr - hdr
        elif declared is not None:
            payload = declared - hdr
        else:  # TSO capture with IP length 0: the captured bytes are all there is
            payload = len(seg.data)
        payload = max(payload, 0)
        if (
            tool_hits is not None
            and isinstance(seg, tcp_cls)
            and seg.data
            and (tool := match_scanner(bytes(seg.data)))
        ):
            tool_hits[conversation_key(ip.p, src, seg.sport, dst, seg.dport)] = tool
        return (src, dst, seg.sport, seg.dport, ip.p, payload, hdr, payload, flags, window)

    return decode


@functools.cache
def _netflower() -> tuple[type, type]:
    """``(FlowTable class, netflower Flow class)``, built on first use so that importing this module
    works without libpcap (netflower imports its libpcap binding at import time)."""
    try:
        from netflower import __version__ as version
        from netflower._constants import ACTIVE_TIMEOUT, FORWARD
        from netflower._flow import Flow
        from netflower._session import FlowSession
    except ImportError as exc:
        raise FedidsError(
            f"netflower cannot be imported ({exc}); install libpcap0.8 and fedids[edge] (make venv)"
        ) from exc
    if version != "1.1.0" or ACTIVE_TIMEOUT != ACTIVITY_TIMEOUT_S:
        # Private hooks below are those of netflower 1.1.0 (pinned in pyproject.toml).
        raise FedidsError(f"netflower {version} found, fedids needs exactly 1.1.0")

    class _CicFlow(Flow):
        """netflower's Flow plus what CICIDS2017 compatibility needs (first packet, last bwd window)."""

        __slots__ = ("first_flags", "first_len", "first_backward", "last_bwd_win")

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.first_flags = -1
            self.first_len = 0
            self.first_backward = False
            self.last_bwd_win = -1

        def add_packet(
            self,
            direction: int,
            pkt_len: int,
            header_len: int,
            payload_len: int,
            timestamp: float,
            flags: int = 0,
            window: int = -1,
        ) -> None:
            if self.first_flags < 0:
                self.first_flags = flags
                self.first_len = pkt_len
                self.first_backward = direction != FORWARD
            if direction != FORWARD and window >= 0:
                self.last_bwd_win = window
            Flow.add_packet(self, direction, pkt_len, header_len, payload_len, timestamp, flags, window)

    class _FlowTable(FlowSession):
        """Collects finished flows as records instead of writing CSV rows."""

        def __init__(
            self,
            *,
            idle_timeout_s: float,
            active_timeout_s: float,
            base_s: int,
            tool_hits: dict | None = None,
        ) -> None:
            super().__init__(writer=None, flow_timeout=idle_timeout_s, active_timeout=active_timeout_s)
            self.finished: list[dict[str, Any]] = []
            self.base_s = base_s
            self.tool_hits = tool_hits if tool_hits is not None else {}

        def _new_flow(self, key: tuple, timestamp: float) -> Flow:
            protocol, src_ip, dst_ip, src_port, dst_port = key
            flow = _CicFlow(src_ip, dst_ip, src_port, dst_port, protocol, timestamp)
            self._flows[key] = flow
            return flow

        def _flush_flow(self, key: tuple, flow: Flow) -> None:
            record = _flow_record(flow, self.base_s)
            if self.tool_hits:
                record["tool"] = self.tool_hits.pop(
                    conversation_key(flow.protocol, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port),
                    None,
                )
            self.finished.append(record)
            self._flows.pop(key, None)

        def take_finished(self) -> list[dict[str, Any]]:
            done, self.finished = self.finished, []
            return done

    return _FlowTable, Flow


_CLOCK_MARGIN_S = 3600


def _relative_seconds(sec: int, usec: int, base_s: int) -> float:
    """Packet time as netflower sees it: seconds since ``base_s``.

    Epoch seconds as float64 carry up to 0.12 us of rounding error per timestamp, which shows in
    netflower's means and standard deviations of inter-arrival times; seconds since a nearby base
    (``base_s`` = first packet - 1 h, so values stay positive: netflower treats 0.0 as "unset") are
    exact to about 1e-12 s.
    """
    return (sec - base_s) + usec / US_PER_S


def _flow_record(flow: Any, base_s: int) -> dict[str, Any]:
    record = flow.to_dict()
    record["start_us"] = base_s * US_PER_S + round(flow.start_time * US_PER_S)
    record["end_us"] = base_s * US_PER_S + round(flow.latest_time * US_PER_S)
    record["first_flags"] = max(flow.first_flags, 0)
    record["first_len"] = flow.first_len
    record["first_backward"] = flow.first_backward
    record["last_bwd_win"] = flow.last_bwd_win
    return record


def reference_flows(
    path, *, mode: str = "cicids2017", active_timeout_s: float = 120.0, idle_timeout_s: float = 120.0
) -> pd.DataFrame:
    """Flows of a microsecond pcap as the old extractor made them: 5-tuple, ``start_us`` and the 78
    features (no ordering guarantee)."""
    flow_table_cls, _ = _netflower()
    with open(path, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        linktype = reader.datalink()
        records = [(int(round(ts * 1e6)), buf, len(buf)) for ts, buf in reader]
    decode = _make_decoder(linktype, mode, {})
    table = None
    for us, buf, _ in records:
        sec, usec = divmod(us, US_PER_S)
        if table is None:
            table = flow_table_cls(
                idle_timeout_s=idle_timeout_s, active_timeout_s=active_timeout_s, base_s=sec - _CLOCK_MARGIN_S
            )
        decoded = decode(len(buf), buf)
        if isinstance(decoded, str):
            continue
        table.process(_relative_seconds(sec, usec, table.base_s), *decoded)
    table.flush_all()
    raw = pd.DataFrame(table.take_finished())
    features = compute_features(raw, mode=mode)
    meta = raw[["src_ip", "src_port", "dst_ip", "dst_port", "protocol", "start_us"]]
    return pd.concat([meta.reset_index(drop=True), features.reset_index(drop=True)], axis=1)
