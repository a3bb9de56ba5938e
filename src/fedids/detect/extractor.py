"""Packets to flows: turn a ``.pcap``/``.pcapng`` file or a live interface into a canonical flow frame.

The flow table is `netflower <https://pypi.org/project/netflower/>`_ 1.1.0 (bidirectional
CICFlowMeter-style flows with O(1) per-packet statistics); packets are read with the system libpcap
(the library tcpdump and Wireshark use), which also reads pcapng and reports a truncated file instead of
returning a short last record. Why netflower and not nfstream or cicflowmeter: ``docs/extractor.md``.

What this module adds on top of netflower, and why:

* **Units.** netflower reports durations, inter-arrival times and active/idle periods in seconds;
  CICIDS2017 uses **microseconds**. :data:`FEATURE_MAP` lists all 78 features with their netflower
  source column and the conversion; ``Flow Duration`` is exact (integer microseconds, like
  CICFlowMeter's ``long`` timestamps).
* **Packet lengths.** CICFlowMeter's "packet length" is the transport *payload* (bytes after the
  TCP/UDP header), and its header lengths are the TCP/UDP header only; netflower's own parser passes the
  IP total length. Our decoder feeds netflower CICFlowMeter's quantities. It also decodes 802.1Q/802.1ad
  VLAN tags, Linux cooked captures (``tcpdump -i any``), raw-IP and loopback link types, and IPv6.
* **CICIDS2017 compatibility** (``mode="cicids2017"``, the default): the published CICIDS2017 CSVs were
  written by CICFlowMeter-V3, whose output differs from its documented definitions in ways a model
  trained on those CSVs has learned. The differences are checked against the real CICIDS2017 rows in
  ``../shared/data/cicids2017/`` (one is inferred) and listed per feature in :data:`FEATURE_MAP` (flag
  columns hold the *first packet's* flags in a permuted order; bulk features are always 0; ...).
  ``mode="corrected"`` gives the definitions without those quirks, for models trained on flows from this
  extractor.

Entry points: :func:`extract_pcap` (file) and :func:`capture_interface` (live, needs ``CAP_NET_RAW``).
Both return canonical flow frames (:mod:`fedids.data.schema`) without ``label``/``family``: the detector
scores these flows, nobody has labelled them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import os
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from fedids.data.schema import FEATURES, META, SEQ
from fedids.detect.signatures import TOOL, conversation_key, match_scanner
from fedids.errors import FedidsError, InputError

log = logging.getLogger(__name__)

FeatureMode = Literal["cicids2017", "corrected"]
MODES: tuple[str, ...] = ("cicids2017", "corrected")

DEFAULT_ACTIVE_TIMEOUT_S = 120.0
"""CICFlowMeter's ``flowTimeout`` as used for CICIDS2017: a flow is cut 120 s after its *first* packet
(the dataset's largest ``Flow Duration`` is just under 120,000,000 us). netflower calls this the
duration cap (``active_timeout``)."""

DEFAULT_IDLE_TIMEOUT_S = 120.0
"""CICFlowMeter has no idle timeout; a flow silent for 120 s is past the 120 s cap anyway, so an idle
timeout of 120 s changes no flow boundary and lets the flow table forget silent flows."""

ACTIVITY_TIMEOUT_S = 5.0
"""CICFlowMeter's ``activityTimeout`` (5 s): a gap longer than this ends an *active* period and counts
as *idle* time (``Active *``/``Idle *`` features). It is not a flow timeout. Fixed in netflower 1.1.0
(``netflower._constants.ACTIVE_TIMEOUT``); :func:`extract_pcap` checks that it is still 5 s."""

US_PER_S = 1_000_000

# TCP flag bits (RFC 793 / RFC 3168).
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

CICIDS2017_FLAG_COLUMNS: dict[str, int] = {
    "FIN Flag Count": RST,
    "SYN Flag Count": PSH,
    "RST Flag Count": ECE,
    "PSH Flag Count": SYN,
    "ACK Flag Count": ACK,
    "URG Flag Count": FIN,
    "CWE Flag Count": URG,
    "ECE Flag Count": CWR,
}
"""Which TCP flag each CICIDS2017 flag column really holds (``mode="cicids2017"``).

CICFlowMeter-V3 kept its flag counters in a Java ``HashMap`` keyed ``"FIN", "SYN", "RST", "PSH", "ACK",
"URG", "CWR", "ECE"`` and wrote them in the map's iteration order (RST, PSH, ECE, SYN, ACK, FIN, URG, CWR)
under headers in the order FIN, SYN, RST, PSH, ACK, URG, CWE, ECE; and it counted only the first packet
of a flow. In the 11,998 reference rows every flag column is 0 or 1, ``SYN Flag Count`` equals
``Fwd PSH Flags`` (itself first-packet-only) in every row, and the one ECN-setup SYN (SYN+ECE+CWR) shows
up as ``PSH``, ``RST`` and ``ECE Flag Count``; tests/test_extractor.py re-derives the order."""


@dataclass(frozen=True)
class FeatureMapping:
    """How one CICIDS2017 feature is computed from netflower's flow record.

    ``source`` is netflower's column (``None``: derived here), multiplied by ``scale`` (``1e6`` turns
    seconds into microseconds) and rounded when ``integer`` (CICFlowMeter stores times as integer
    microseconds, so totals, maxima and minima of times are whole numbers). ``cicids2017`` says what
    ``mode="cicids2017"`` does instead, empty when both modes agree.
    """

    feature: str
    source: str | None
    unit: str
    scale: float = 1.0
    integer: bool = False
    cicids2017: str = ""


_S = float(US_PER_S)
_FIRST_ONLY = "flag of the first packet only (0/1), as CICFlowMeter-V3 counted it"
_ZERO = "0 (0 in all reference rows)"
_MEAN_N1 = "over n+1 values: CICFlowMeter-V3 adds the first packet's length twice"

FEATURE_MAP: tuple[FeatureMapping, ...] = (
    FeatureMapping("Destination Port", "dst_port", "port"),
    FeatureMapping("Flow Duration", None, "us", integer=True),  # exact: last - first packet, integer us
    FeatureMapping("Total Fwd Packets", "tot_fwd_pkts", "packets"),
    FeatureMapping("Total Backward Packets", "tot_bwd_pkts", "packets"),
    FeatureMapping("Total Length of Fwd Packets", "totlen_fwd_pkts", "bytes"),
    FeatureMapping("Total Length of Bwd Packets", "totlen_bwd_pkts", "bytes"),
    FeatureMapping("Fwd Packet Length Max", "fwd_pkt_len_max", "bytes"),
    FeatureMapping("Fwd Packet Length Min", "fwd_pkt_len_min", "bytes"),
    FeatureMapping("Fwd Packet Length Mean", "fwd_pkt_len_mean", "bytes"),
    FeatureMapping("Fwd Packet Length Std", "fwd_pkt_len_std", "bytes"),
    FeatureMapping("Bwd Packet Length Max", "bwd_pkt_len_max", "bytes"),
    FeatureMapping("Bwd Packet Length Min", "bwd_pkt_len_min", "bytes"),
    FeatureMapping("Bwd Packet Length Mean", "bwd_pkt_len_mean", "bytes"),
    FeatureMapping("Bwd Packet Length Std", "bwd_pkt_len_std", "bytes"),
    FeatureMapping("Flow Bytes/s", None, "bytes/s"),  # payload bytes / (Flow Duration / 1e6); 0 if 0 us
    FeatureMapping("Flow Packets/s", None, "packets/s"),
    FeatureMapping("Flow IAT Mean", "flow_iat_mean", "us", _S),
    FeatureMapping("Flow IAT Std", "flow_iat_std", "us", _S),
    FeatureMapping("Flow IAT Max", "flow_iat_max", "us", _S, integer=True),
    FeatureMapping("Flow IAT Min", "flow_iat_min", "us", _S, integer=True),
    FeatureMapping("Fwd IAT Total", "fwd_iat_tot", "us", _S, integer=True),
    FeatureMapping("Fwd IAT Mean", "fwd_iat_mean", "us", _S),
    FeatureMapping("Fwd IAT Std", "fwd_iat_std", "us", _S),
    FeatureMapping("Fwd IAT Max", "fwd_iat_max", "us", _S, integer=True),
    FeatureMapping("Fwd IAT Min", "fwd_iat_min", "us", _S, integer=True),
    FeatureMapping("Bwd IAT Total", "bwd_iat_tot", "us", _S, integer=True),
    FeatureMapping("Bwd IAT Mean", "bwd_iat_mean", "us", _S),
    FeatureMapping("Bwd IAT Std", "bwd_iat_std", "us", _S),
    FeatureMapping("Bwd IAT Max", "bwd_iat_max", "us", _S, integer=True),
    FeatureMapping("Bwd IAT Min", "bwd_iat_min", "us", _S, integer=True),
    FeatureMapping("Fwd PSH Flags", "fwd_psh_flags", "packets", cicids2017="PSH " + _FIRST_ONLY),
    FeatureMapping("Bwd PSH Flags", "bwd_psh_flags", "packets",
                   cicids2017="0: V3 counted it only for a backward first packet (0 in all reference rows)"),
    FeatureMapping("Fwd URG Flags", "fwd_urg_flags", "packets", cicids2017="URG " + _FIRST_ONLY),
    FeatureMapping("Bwd URG Flags", "bwd_urg_flags", "packets",
                   cicids2017="0: as Bwd PSH Flags (0 in all reference rows)"),
    FeatureMapping("Fwd Header Length", "fwd_header_len", "bytes"),  # sum of TCP/UDP header bytes
    FeatureMapping("Bwd Header Length", "bwd_header_len", "bytes"),
    FeatureMapping("Fwd Packets/s", None, "packets/s"),
    FeatureMapping("Bwd Packets/s", None, "packets/s"),
    FeatureMapping("Min Packet Length", "pkt_len_min", "bytes"),
    FeatureMapping("Max Packet Length", "pkt_len_max", "bytes"),
    FeatureMapping("Packet Length Mean", "pkt_len_mean", "bytes", cicids2017=_MEAN_N1),
    FeatureMapping("Packet Length Std", "pkt_len_std", "bytes", cicids2017=_MEAN_N1),
    FeatureMapping("Packet Length Variance", "pkt_len_var", "bytes^2", cicids2017=_MEAN_N1),
    FeatureMapping("FIN Flag Count", "fin_flag_cnt", "packets", cicids2017="RST " + _FIRST_ONLY),
    FeatureMapping("SYN Flag Count", "syn_flag_cnt", "packets", cicids2017="PSH " + _FIRST_ONLY),
    FeatureMapping("RST Flag Count", "rst_flag_cnt", "packets", cicids2017="ECE " + _FIRST_ONLY),
    FeatureMapping("PSH Flag Count", "psh_flag_cnt", "packets", cicids2017="SYN " + _FIRST_ONLY),
    FeatureMapping("ACK Flag Count", "ack_flag_cnt", "packets", cicids2017="ACK " + _FIRST_ONLY),
    FeatureMapping("URG Flag Count", "urg_flag_cnt", "packets", cicids2017="FIN " + _FIRST_ONLY),
    FeatureMapping("CWE Flag Count", "cwr_flag_count", "packets", cicids2017="URG " + _FIRST_ONLY),
    FeatureMapping("ECE Flag Count", "ece_flag_cnt", "packets", cicids2017="CWR " + _FIRST_ONLY),
    FeatureMapping("Down/Up Ratio", "down_up_ratio", "ratio",
                   cicids2017="floor(bwd/fwd packets): V3 used integer division"),
    FeatureMapping("Average Packet Size", "pkt_size_avg", "bytes",
                   cicids2017="(sum of lengths + first packet's length) / packets"),
    FeatureMapping("Avg Fwd Segment Size", "fwd_seg_size_avg", "bytes"),
    FeatureMapping("Avg Bwd Segment Size", "bwd_seg_size_avg", "bytes"),
    FeatureMapping("Fwd Header Length.1", "fwd_header_len", "bytes"),  # CICIDS2017's duplicate column
    FeatureMapping("Fwd Avg Bytes/Bulk", "fwd_byts_b_avg", "bytes", cicids2017=_ZERO),
    FeatureMapping("Fwd Avg Packets/Bulk", "fwd_pkts_b_avg", "packets", cicids2017=_ZERO),
    FeatureMapping("Fwd Avg Bulk Rate", "fwd_blk_rate_avg", "bytes/s", cicids2017=_ZERO),
    FeatureMapping("Bwd Avg Bytes/Bulk", "bwd_byts_b_avg", "bytes", cicids2017=_ZERO),
    FeatureMapping("Bwd Avg Packets/Bulk", "bwd_pkts_b_avg", "packets", cicids2017=_ZERO),
    FeatureMapping("Bwd Avg Bulk Rate", "bwd_blk_rate_avg", "bytes/s", cicids2017=_ZERO),
    FeatureMapping("Subflow Fwd Packets", "subflow_fwd_pkts", "packets",
                   cicids2017="= Total Fwd Packets (equal in all reference rows)"),
    FeatureMapping("Subflow Fwd Bytes", "subflow_fwd_byts", "bytes",
                   cicids2017="= Total Length of Fwd Packets (equal in all reference rows)"),
    FeatureMapping("Subflow Bwd Packets", "subflow_bwd_pkts", "packets",
                   cicids2017="= Total Backward Packets (equal in all reference rows)"),
    FeatureMapping("Subflow Bwd Bytes", "subflow_bwd_byts", "bytes",
                   cicids2017="= Total Length of Bwd Packets (equal in all reference rows)"),
    FeatureMapping("Init_Win_bytes_forward", "init_fwd_win_byts", "bytes"),  # -1: none (UDP)
    FeatureMapping("Init_Win_bytes_backward", "init_bwd_win_byts", "bytes",
                   cicids2017="window of the LAST backward packet (V3 overwrote it per packet); -1: none"),
    FeatureMapping("act_data_pkt_fwd", "fwd_act_data_pkts", "packets",
                   cicids2017="the first packet is not counted (V3 counted in addPacket only)"),
    FeatureMapping("min_seg_size_forward", "fwd_seg_size_min", "bytes"),  # smallest fwd TCP/UDP header
    FeatureMapping("Active Mean", "active_mean", "us", _S),
    FeatureMapping("Active Std", "active_std", "us", _S),
    FeatureMapping("Active Max", "active_max", "us", _S, integer=True),
    FeatureMapping("Active Min", "active_min", "us", _S, integer=True),
    FeatureMapping("Idle Mean", "idle_mean", "us", _S),
    FeatureMapping("Idle Std", "idle_std", "us", _S),
    FeatureMapping("Idle Max", "idle_max", "us", _S, integer=True),
    FeatureMapping("Idle Min", "idle_min", "us", _S, integer=True),
)
assert tuple(m.feature for m in FEATURE_MAP) == FEATURES


@dataclass
class ExtractResult:
    """What :func:`extract_pcap` produced.

    Attributes
    ----------
    frame : canonical flow frame, one row per flow in export order (the order a live detector would
        see them): ``flow_id, src_ip, src_port, dst_ip, dst_port, protocol, timestamp`` (first packet,
        ``datetime64[us]``, naive UTC), ``seq`` (0..flows-1) and the 78 :data:`FEATURES` as float64.
    packets : packet records read from the file (all of them, also those skipped below).
    flows : ``len(frame)``.
    seconds : wall time of the extraction, reading the file included.
    warnings : one line per problem that did not stop the extraction (truncated file, malformed packets).
    skipped : packets that are in no flow, by reason: ``non_ip`` (ARP, LLDP, ...), ``not_tcp_udp``
        (ICMP, ...), ``fragment`` (IPv4/IPv6 fragments after the first), ``malformed`` (too short for
        their own headers), ``after_close`` (non-SYN TCP packets within 1 s after their connection
        ended by RST or FIN from both sides: netflower treats them as leftovers of that connection,
        where CICFlowMeter-V3 made them into one- or two-packet flows of their own). CICFlowMeter, too,
        builds flows from TCP and UDP only.
    truncated : the file ended inside a packet record; every complete packet before it was used.
    """

    frame: pd.DataFrame
    packets: int | None
    flows: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    truncated: bool = False


# --------------------------------------------------------------------------------------------------
# Pure part: netflower records -> canonical flow frame
# --------------------------------------------------------------------------------------------------

_RAW_EXTRA = ("start_us", "end_us", "first_flags", "first_len", "first_backward", "last_bwd_win")
"""Per-flow values this module records beside netflower's 82 columns (see :func:`_flow_record`)."""
_RAW_META = ("src_ip", "dst_ip", "src_port", "dst_port", "protocol", "pkt_len_mean", "pkt_len_var")


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

    duration_us = (raw["end_us"].to_numpy(dtype=np.int64) - raw["start_us"].to_numpy(dtype=np.int64))
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

    for column in ("Fwd Avg Bytes/Bulk", "Fwd Avg Packets/Bulk", "Fwd Avg Bulk Rate",
                   "Bwd Avg Bytes/Bulk", "Bwd Avg Packets/Bulk", "Bwd Avg Bulk Rate"):
        out[column] = np.zeros(len(raw))
    out["Subflow Fwd Packets"] = out["Total Fwd Packets"]
    out["Subflow Fwd Bytes"] = out["Total Length of Fwd Packets"]
    out["Subflow Bwd Packets"] = out["Total Backward Packets"]
    out["Subflow Bwd Bytes"] = out["Total Length of Bwd Packets"]
    out["Init_Win_bytes_backward"] = raw["last_bwd_win"].to_numpy(dtype=np.float64)
    first_is_data = ((first_len >= 1) & ~first_backward).astype(np.float64)
    out["act_data_pkt_fwd"] = out["act_data_pkt_fwd"] - first_is_data


def build_flow_frame(
    records: list[dict[str, Any]], *, mode: FeatureMode = "cicids2017", seq_start: int = 0
) -> pd.DataFrame:
    """Canonical flow frame from finished-flow records (netflower's dict plus :data:`_RAW_EXTRA`).

    Returns the columns :data:`fedids.data.schema.META`, ``seq`` (``seq_start`` upward, in the order of
    ``records``) and the 78 features (float64). An empty ``records`` gives an empty frame with the
    same columns.
    """
    columns = [*META, SEQ, *FEATURES]
    if not records:
        empty = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in columns})
        empty["timestamp"] = pd.Series(dtype="datetime64[us]")
        for c in ("src_port", "dst_port", "protocol", SEQ):
            empty[c] = pd.Series(dtype=np.int64)
        for c in ("flow_id", "src_ip", "dst_ip"):
            empty[c] = pd.Series(dtype=object)
        return empty[columns]
    # Column by column: DataFrame.from_records on tens of thousands of 90-key dicts costs more than
    # the flow table itself.
    needed = {m.source for m in FEATURE_MAP if m.source} | set(_RAW_EXTRA) | set(_RAW_META)
    raw = pd.DataFrame({key: [r[key] for r in records] for key in sorted(needed)})
    features = compute_features(raw, mode=mode)
    meta = pd.DataFrame(index=raw.index)
    meta["flow_id"] = [f"{r['src_ip']}-{r['dst_ip']}-{r['src_port']}-{r['dst_port']}-{r['protocol']}"
                       for r in records]
    meta["src_ip"] = raw["src_ip"].astype(str)
    meta["src_port"] = raw["src_port"].astype(np.int64)
    meta["dst_ip"] = raw["dst_ip"].astype(str)
    meta["dst_port"] = raw["dst_port"].astype(np.int64)
    meta["protocol"] = raw["protocol"].astype(np.int64)
    meta["timestamp"] = raw["start_us"].to_numpy(dtype=np.int64).astype("datetime64[us]")
    meta[SEQ] = np.arange(seq_start, seq_start + len(raw), dtype=np.int64)
    if any(r.get("tool") for r in records):  # a scanning tool's payload signature (detect.signatures)
        meta[TOOL] = [r.get("tool") for r in records]
        columns.append(TOOL)
    return pd.concat([meta, features], axis=1)[columns].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# libpcap (ctypes): netflower binds only live capture; we also need offline reading with error reports
# --------------------------------------------------------------------------------------------------

class _PcapHeader(ctypes.Structure):
    # struct pcap_pkthdr on Linux/glibc (64-bit): struct timeval {long, long}, caplen, len.
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
                ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class _PcapStat(ctypes.Structure):
    _fields_ = [("ps_recv", ctypes.c_uint), ("ps_drop", ctypes.c_uint), ("ps_ifdrop", ctypes.c_uint)]


_PCAP_ERRBUF_SIZE = 256
_PCAP_TSTAMP_PRECISION_MICRO = 0
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
        "pcap_open_offline_with_tstamp_precision": (p, [c_char_p, ctypes.c_uint, c_char_p]),
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


class _PcapHandle:
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
            return h.tv_sec, h.tv_usec, h.len, ctypes.string_at(self._data.value, h.caplen)
        if rc == -1:
            self.error = (self._lib.pcap_geterr(self._handle) or b"").decode(errors="replace")
        return rc

    def set_nonblocking(self) -> None:
        """Make :meth:`next` return 0 at once when no packet is waiting, and remember the descriptor that
        :meth:`wait` polls. Why: libpcap's read timeout is not a wall-clock bound (on Linux the timer may
        not start before the first packet), so a blocking read on a quiet interface never returns."""
        errbuf = ctypes.create_string_buffer(_PCAP_ERRBUF_SIZE)
        if self._lib.pcap_setnonblock(self._handle, 1, errbuf) != 0:
            raise InputError(f"{self.source}: cannot read without blocking "
                             f"({errbuf.value.decode(errors='replace')})")
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


def _open_offline(path: Path) -> _PcapHandle:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not a pcap/pcapng capture")
    lib = _libpcap()
    errbuf = ctypes.create_string_buffer(_PCAP_ERRBUF_SIZE)
    handle = lib.pcap_open_offline_with_tstamp_precision(
        os.fsencode(path), _PCAP_TSTAMP_PRECISION_MICRO, errbuf)
    if not handle:
        reason = errbuf.value.decode(errors="replace") or "cannot be opened"
        raise InputError(f"{path}: not a readable pcap/pcapng capture ({reason})")
    return _PcapHandle(lib, handle, str(path))


def _open_live(name: str, *, snaplen: int, promiscuous: bool, read_timeout_ms: int) -> _PcapHandle:
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
            raise InputError(f"{name}: permission denied: live capture needs root or CAP_NET_RAW "
                             f"(and CAP_NET_ADMIN for promiscuous mode) ({detail or status})")
        if rc == _PCAP_ERROR_NO_SUCH_DEVICE:
            raise InputError(f"{name}: no such network interface ({detail or status})")
        raise InputError(f"{name}: cannot capture ({detail or status})")
    if rc > 0:
        log.warning("%s: %s", name, (lib.pcap_statustostr(rc) or b"").decode(errors="replace"))
    live = _PcapHandle(lib, handle, name)
    try:
        live.set_nonblocking()
    except InputError:
        live.close()
        raise
    return live


# --------------------------------------------------------------------------------------------------
# Packet decoding: link layer by hand (we need the IP header's offset), IP/TCP/UDP with dpkt
# --------------------------------------------------------------------------------------------------

_DLT_NULL, _DLT_EN10MB, _DLT_RAW, _DLT_RAW_BSD, _DLT_LOOP = 0, 1, 12, 14, 108
_DLT_LINUX_SLL, _DLT_IPV4, _DLT_IPV6, _DLT_LINUX_SLL2 = 113, 228, 229, 276
_SUPPORTED_LINKTYPES = {
    _DLT_NULL: "BSD loopback", _DLT_EN10MB: "Ethernet", _DLT_RAW: "raw IP", _DLT_RAW_BSD: "raw IP",
    _DLT_LOOP: "OpenBSD loopback", _DLT_LINUX_SLL: "Linux cooked", _DLT_IPV4: "raw IPv4",
    _DLT_IPV6: "raw IPv6", _DLT_LINUX_SLL2: "Linux cooked v2",
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
        if (tool_hits is not None and isinstance(seg, tcp_cls) and seg.data
                and (tool := match_scanner(bytes(seg.data)))):
            tool_hits[conversation_key(ip.p, src, seg.sport, dst, seg.dport)] = tool
        return (src, dst, seg.sport, seg.dport, ip.p, payload, hdr, payload, flags, window)

    return decode


# --------------------------------------------------------------------------------------------------
# Flow table: netflower's FlowSession with two hooks overridden
# --------------------------------------------------------------------------------------------------

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
        raise FedidsError(f"netflower cannot be imported ({exc}); install libpcap0.8 and "
                          "fedids[edge] (make venv)") from exc
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

        def add_packet(self, direction: int, pkt_len: int, header_len: int, payload_len: int,
                       timestamp: float, flags: int = 0, window: int = -1) -> None:
            if self.first_flags < 0:
                self.first_flags = flags
                self.first_len = pkt_len
                self.first_backward = direction != FORWARD
            if direction != FORWARD and window >= 0:
                self.last_bwd_win = window
            Flow.add_packet(self, direction, pkt_len, header_len, payload_len, timestamp, flags, window)

    class _FlowTable(FlowSession):
        """Collects finished flows as records instead of writing CSV rows."""

        def __init__(self, *, idle_timeout_s: float, active_timeout_s: float, base_s: int,
                     tool_hits: dict | None = None) -> None:
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
                record["tool"] = self.tool_hits.pop(conversation_key(
                    flow.protocol, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port), None)
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


def _check_args(active_timeout_s: float, idle_timeout_s: float, mode: str) -> None:
    for name, value in (("active_timeout_s", active_timeout_s), ("idle_timeout_s", idle_timeout_s)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


_GC_FRACTION = 0.1
"""Expired flows are swept out of the table each time packet time advances by this fraction of the
shorter timeout. Features do not depend on it (every packet checks its own flow's timeouts); it bounds
memory, and sweeping less often than netflower's every-1,000-packets default matters when tens of
thousands of flows are open at once (a SYN flood): each sweep scans the whole table."""


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
        type. A file that ends inside a packet is *not* an error: the flows of every complete packet
        are returned, with ``truncated=True`` and a line in ``warnings``.
    FedidsError
        libpcap or netflower is missing.
    """
    _check_args(active_timeout_s, idle_timeout_s, mode)
    path = Path(path)
    started = time.perf_counter()
    flow_table_cls, _ = _netflower()
    handle = _open_offline(path)
    try:
        if handle.linktype not in _SUPPORTED_LINKTYPES:
            raise InputError(f"{path}: link type {handle.linktype} is not supported "
                             f"(supported: Ethernet, Linux cooked, raw IP, loopback)")
        tool_hits: dict = {}
        decode = _make_decoder(handle.linktype, mode, tool_hits)
        table = None
        skips: Counter[str] = Counter()
        packets = 0
        last_ts = 0.0
        gc_every_s = _GC_FRACTION * min(idle_timeout_s, active_timeout_s)
        next_gc = math.inf
        status = 0
        while True:
            item = handle.next()
            if isinstance(item, int):
                status = item
                if status == 0:  # cannot happen offline; keep reading rather than spin forever
                    continue
                break
            packets += 1
            sec, usec, wire_len, buf = item
            if table is None:
                table = flow_table_cls(idle_timeout_s=idle_timeout_s, active_timeout_s=active_timeout_s,
                                       base_s=sec - _CLOCK_MARGIN_S, tool_hits=tool_hits)
                process = table.process
                next_gc = _CLOCK_MARGIN_S + gc_every_s  # first packet is at ~_CLOCK_MARGIN_S
            decoded = decode(wire_len, buf)
            if isinstance(decoded, str):
                skips[decoded] += 1
                continue
            last_ts = _relative_seconds(sec, usec, table.base_s)
            process(last_ts, *decoded)
            if last_ts >= next_gc:
                table.gc(last_ts)
                next_gc = last_ts + gc_every_s
        records: list[dict[str, Any]] = []
        if table is not None:
            table.flush_all()
            records = table.take_finished()
    finally:
        handle.close()
    fed = packets - sum(skips.values())
    in_flows = sum(r["tot_fwd_pkts"] + r["tot_bwd_pkts"] for r in records)
    if fed > in_flows:
        skips["after_close"] = fed - in_flows

    warnings: list[str] = []
    truncated = status == -1
    if truncated:
        warnings.append(f"{path}: file damaged or truncated after {packets} complete packets "
                        f"({handle.error}); flows of those packets kept")
    if skips.get("malformed"):
        warnings.append(f"{path}: {skips['malformed']} malformed packets (shorter than their "
                        "own headers) skipped")
    frame = build_flow_frame(records, mode=mode)
    return ExtractResult(
        frame=frame, packets=packets, flows=len(frame), seconds=time.perf_counter() - started,
        warnings=warnings, skipped=dict(sorted(skips.items())), truncated=truncated,
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

    Uses libpcap directly (``pcap_create``/``pcap_next_ex`` in immediate, non-blocking mode, waiting in
    ``select`` at most until the next batch or the deadline, so a quiet interface still stops on time)
    in the calling thread, with the same decoder and flow table as
    :func:`extract_pcap`. Not netflower 1.1.0's own ``capture_live``: it expires flows only every 1,000
    packets (on a quiet link a finished scan flow would wait until ``stop()``), calls back from a
    pcap_loop thread, and uses netflower's own parser (IP total length as packet length, no cooked or
    raw-IP link types, no IPv6).

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
    batch_interval_s : how often, in seconds, expired flows are collected and a batch is yielded.
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
    _check_args(active_timeout_s, idle_timeout_s, mode)
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s must be > 0 or None, got {duration_s!r}")
    if packet_count is not None and packet_count < 1:
        raise ValueError(f"packet_count must be >= 1 or None, got {packet_count!r}")
    if not batch_interval_s > 0:
        raise ValueError(f"batch_interval_s must be > 0, got {batch_interval_s!r}")
    flow_table_cls, _ = _netflower()
    read_timeout_ms = max(10, min(1000, int(batch_interval_s * 1000 / 2)))
    # Opened here, not inside the generator, so that a missing interface or privilege is reported by
    # the call itself and capture has started when it returns.
    handle = _open_live(name, snaplen=snaplen, promiscuous=promiscuous, read_timeout_ms=read_timeout_ms)
    if handle.linktype not in _SUPPORTED_LINKTYPES:
        handle.close()
        raise InputError(f"{name}: link type {handle.linktype} is not supported")
    table = flow_table_cls(idle_timeout_s=idle_timeout_s, active_timeout_s=active_timeout_s,
                           base_s=int(time.time()) - _CLOCK_MARGIN_S)
    return _live_batches(handle, table, mode=mode, duration_s=duration_s, packet_count=packet_count,
                         batch_interval_s=batch_interval_s)


def _live_batches(handle: _PcapHandle, table: Any, *, mode: FeatureMode, duration_s: float | None,
                  packet_count: int | None, batch_interval_s: float) -> Iterator[pd.DataFrame]:
    name = handle.source
    try:
        decode = _make_decoder(handle.linktype, mode, table.tool_hits)
        skips: Counter[str] = Counter()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_batch = time.monotonic() + batch_interval_s
        packets = 0
        seq = 0
        while True:
            item = handle.next()
            if isinstance(item, tuple):
                packets += 1
                sec, usec, wire_len, buf = item
                decoded = decode(wire_len, buf)
                if isinstance(decoded, str):
                    skips[decoded] += 1
                else:
                    table.process(_relative_seconds(sec, usec, table.base_s), *decoded)
            elif item == -1:
                raise InputError(f"{name}: capture failed ({handle.error})")
            elif item == -2:
                break
            else:  # 0: nothing waiting; sleep until a packet, the next batch or the deadline
                now = time.monotonic()
                handle.wait(min(next_batch, deadline if deadline is not None else next_batch) - now)
            now = time.monotonic()
            if (packet_count is not None and packets >= packet_count) or (
                    deadline is not None and now >= deadline):
                break
            if now >= next_batch:
                next_batch = now + batch_interval_s
                # Packet timestamps are wall-clock time, so silence is measured on the same clock.
                table.gc(time.time() - table.base_s)
                records = table.take_finished()
                if records:
                    batch = build_flow_frame(records, mode=mode, seq_start=seq)
                    seq += len(batch)
                    yield batch
        table.flush_all()
        records = table.take_finished()
        if records:
            yield build_flow_frame(records, mode=mode, seq_start=seq)
        drops = handle.drops()
        if drops and any(drops):
            log.warning("%s: %d packets dropped by the kernel, %d by the interface", name, *drops)
        if skips.get("malformed"):
            log.warning("%s: %d malformed packets skipped", name, skips["malformed"])
    finally:
        handle.close()
