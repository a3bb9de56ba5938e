"""Packets-to-flows extractor on the real captures in ../shared/data/pcaps/ and on hand-built packets.

Expected values come from independent references: the pcap records walked with ``struct``, packets
decoded with dpkt, sums and statistics computed with numpy, and hand calculation.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import defaultdict
from pathlib import Path

import dpkt
import numpy as np
import pandas as pd
import pytest

from fedids.data.schema import FEATURES, META, SEQ
from fedids.detect.extractor import (
    CICIDS2017_FLAG_COLUMNS,
    FEATURE_MAP,
    ExtractResult,
    capture_interface,
    extract_pcap,
)
from fedids.errors import InputError
from support import paths

DATA = paths.SHARED_DATA
PCAPS = DATA / "pcaps"
MASSCAN = PCAPS / "esnet_masscan_tcp_0_1000_20190821.pcap"
NMAP = PCAPS / "esnet_nmap_80_all.pcap"
SYNFLOOD = PCAPS / "stopddos_pkt.TCP.synflood.spoofed.pcap"
CICIDS = DATA / "cicids2017"

pytestmark = pytest.mark.skipif(not PCAPS.is_dir(), reason="shared real data not present")


# ------------------------------------------------------------------------------------------------
# Independent references
# ------------------------------------------------------------------------------------------------


def read_pcap_records(path: Path) -> tuple[int, list[tuple[int, int, int, bytes, int]]]:
    """``(linktype, [(sec, usec, wire_len, frame, end_offset), ...])`` of a little-endian microsecond
    pcap, walked with struct; stops at the first incomplete record."""
    blob = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", blob, 0)
    assert magic == 0xA1B2C3D4
    out, off = [], 24
    while off + 16 <= len(blob):
        sec, usec, caplen, wire = struct.unpack_from("<IIII", blob, off)
        if off + 16 + caplen > len(blob):
            break
        out.append((sec, usec, wire, blob[off + 16 : off + 16 + caplen], off + 16 + caplen))
        off += 16 + caplen
    return linktype, out


def write_pcap(
    path: Path, records: list[tuple[int, int, bytes]], linktype: int = 1, wire_lens: list[int] | None = None
) -> Path:
    """Write ``(sec, usec, frame)`` records as a little-endian microsecond pcap with struct."""
    parts = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for i, (sec, usec, frame) in enumerate(records):
        wire = len(frame) if wire_lens is None else wire_lens[i]
        parts.append(struct.pack("<IIII", sec, usec, len(frame), wire) + frame)
    path.write_bytes(b"".join(parts))
    return path


def tcp_packets_by_connection(path: Path) -> dict[frozenset, list[dict]]:
    """TCP packets of a capture decoded with dpkt, grouped by unordered 5-tuple, in file order."""
    _, records = read_pcap_records(path)
    groups: dict[frozenset, list[dict]] = defaultdict(list)
    for sec, usec, wire, frame, _ in records:
        eth = dpkt.ethernet.Ethernet(frame)
        ip = eth.data
        if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        tcp = ip.data
        l2 = 14 + 4 * len(getattr(eth, "vlan_tags", []))
        src = (socket.inet_ntoa(ip.src), tcp.sport)
        dst = (socket.inet_ntoa(ip.dst), tcp.dport)
        groups[frozenset((src, dst))].append(
            {
                "us": sec * 1_000_000 + usec,
                "src": src,
                "flags": tcp.flags,
                "win": tcp.win,
                "tcp_hdr": tcp.off * 4,
                "payload": ip.len - ip.hl * 4 - tcp.off * 4,
                "on_wire_after_hdr": wire - l2 - ip.hl * 4 - tcp.off * 4,
            }
        )
    return groups


@pytest.fixture(scope="module")
def masscan() -> ExtractResult:
    return extract_pcap(MASSCAN)


@pytest.fixture(scope="module")
def nmap() -> ExtractResult:
    return extract_pcap(NMAP)


@pytest.fixture(scope="module")
def nmap_corrected() -> ExtractResult:
    return extract_pcap(NMAP, mode="corrected")


@pytest.fixture(scope="module")
def synflood() -> ExtractResult:
    return extract_pcap(SYNFLOOD)


# ------------------------------------------------------------------------------------------------
# Schema and column map
# ------------------------------------------------------------------------------------------------


def test_feature_map_covers_the_78_schema_features_in_order_with_time_units_in_microseconds():
    assert [m.feature for m in FEATURE_MAP] == list(FEATURES)
    for m in FEATURE_MAP:
        if m.source is not None and ("iat" in m.source or m.source.startswith(("active", "idle"))):
            assert (m.unit, m.scale) == ("us", 1e6), m.feature


@pytest.mark.parametrize("which", ["masscan", "nmap", "synflood"])
def test_frames_follow_the_canonical_schema_and_all_features_are_finite(which, request):
    result: ExtractResult = request.getfixturevalue(which)
    frame = result.frame
    # plus "tool" where a flow carried a scanning tool's payload signature (nmap's NSE User-Agent)
    expected = [*META, SEQ, *FEATURES] + (["tool"] if which == "nmap" else [])
    assert list(frame.columns) == expected
    if which == "nmap":
        assert (frame.loc[frame["tool"].notna(), "tool"] == "nmap").sum() == 28
        assert frame.loc[frame["tool"].notna(), "dst_port"].eq(80).all()
    assert "label" not in frame and "family" not in frame
    assert frame["timestamp"].dtype == np.dtype("datetime64[us]")
    assert all(frame[f].dtype == np.float64 for f in FEATURES)
    assert np.isfinite(frame[list(FEATURES)].to_numpy()).all()
    assert frame[SEQ].tolist() == list(range(len(frame)))
    assert result.flows == len(frame) > 0
    assert result.truncated is False and result.warnings == []
    assert (frame["Destination Port"] == frame["dst_port"]).all()


# ------------------------------------------------------------------------------------------------
# The three real captures
# ------------------------------------------------------------------------------------------------


def test_masscan_vlan_tagged_capture_gives_one_flow_per_scanned_port(masscan):
    linktype, records = read_pcap_records(MASSCAN)
    assert linktype == 1
    # The capture really is 802.1Q tagged: the flows below exist only if tags are decoded.
    assert all(frame[12:14] == b"\x81\x00" for *_, frame, _ in records)
    assert masscan.packets == len(records) == 1005
    frame = masscan.frame
    assert 990 <= len(frame) <= 1010
    scanner = {socket.inet_ntoa(dpkt.ethernet.Ethernet(r[3]).data.src) for r in records}
    assert frame["src_ip"].unique().tolist() == sorted(scanner)  # one scanning host
    assert frame["dst_ip"].nunique() == 1
    assert frame["dst_port"].between(0, 1000).all()
    assert frame["dst_port"].nunique() == 1001  # every port 0..1000
    assert (frame["protocol"] == 6).all()
    assert (frame["Total Backward Packets"] == 0).all()
    # CICIDS2017 mode: the column "PSH Flag Count" holds the first packet's SYN bit.
    syn_first = frame["PSH Flag Count"] == 1
    assert syn_first.sum() >= 1000
    corrected = extract_pcap(MASSCAN, mode="corrected").frame
    assert (corrected["SYN Flag Count"] >= 1).sum() >= 1000


def test_nmap_capture_has_flows_with_both_directions(nmap):
    frame = nmap.frame
    both = frame[(frame["Total Fwd Packets"] > 0) & (frame["Total Backward Packets"] > 0)]
    assert len(both) >= len(frame) // 2 and len(both) > 10
    assert set(frame["dst_port"]) <= {80, 443}
    assert frame["src_ip"].nunique() == 1  # every connection opened by the scanning host
    assert (both["Init_Win_bytes_backward"] >= 0).all()
    assert (frame["Bwd Header Length"] >= 20 * frame["Total Backward Packets"]).all()


def test_synflood_capture_gives_flows_from_many_sources_to_one_port(synflood):
    frame = synflood.frame
    assert synflood.packets == 37_841
    assert frame["src_ip"].nunique() >= 37_000
    assert frame["dst_port"].nunique() == 1 and frame["dst_ip"].nunique() == 1
    assert (frame["Total Backward Packets"] == 0).all()
    assert (frame["PSH Flag Count"] == 1).mean() > 0.99  # first packet is a SYN


def test_every_tcp_udp_packet_is_in_a_flow_or_counted_as_skipped(nmap, masscan, synflood):
    for result in (nmap, masscan, synflood):
        in_flows = (result.frame["Total Fwd Packets"] + result.frame["Total Backward Packets"]).sum()
        assert in_flows + sum(result.skipped.values()) == result.packets
    assert nmap.skipped["not_tcp_udp"] == 6  # ICMP (traceroute/OS detection)


# ------------------------------------------------------------------------------------------------
# Units and lengths against dpkt
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [NMAP, MASSCAN], ids=["nmap", "masscan"])
def test_times_are_microseconds_and_lengths_match_dpkt(path):
    corrected = extract_pcap(path, mode="corrected").frame
    compat = extract_pcap(path).frame
    groups = tcp_packets_by_connection(path)
    start_us = corrected["timestamp"].astype("int64")
    for i, row in corrected.iterrows():
        group = groups[frozenset(((row.src_ip, row.src_port), (row.dst_ip, row.dst_port)))]
        # The flow's packets: the next n packets of its connection from its first one on.
        first = next(k for k, p in enumerate(group) if p["us"] == start_us[i])
        pkts = group[first : first + int(row["Total Fwd Packets"] + row["Total Backward Packets"])]
        times = np.array([p["us"] for p in pkts])
        fwd = [p for p in pkts if p["src"] == (row.src_ip, row.src_port)]
        bwd = [p for p in pkts if p["src"] != (row.src_ip, row.src_port)]
        assert row["Flow Duration"] == times[-1] - times[0]
        if len(times) > 1:
            assert row["Flow IAT Max"] == np.diff(times).max()
            assert row["Flow IAT Mean"] == pytest.approx(np.diff(times).mean(), abs=1e-3)
        if len(fwd) > 1:
            assert row["Fwd IAT Total"] == fwd[-1]["us"] - fwd[0]["us"]
        assert row["Total Length of Fwd Packets"] == sum(p["payload"] for p in fwd)
        assert row["Total Length of Bwd Packets"] == sum(p["payload"] for p in bwd)
        assert row["Fwd Header Length"] == sum(p["tcp_hdr"] for p in fwd)
        assert row["Bwd Header Length"] == sum(p["tcp_hdr"] for p in bwd)
        assert row["SYN Flag Count"] == sum(bool(p["flags"] & dpkt.tcp.TH_SYN) for p in pkts)
        assert row["ACK Flag Count"] == sum(bool(p["flags"] & dpkt.tcp.TH_ACK) for p in pkts)
        # CICIDS2017 mode counts every byte after the TCP header, Ethernet padding included.
        assert compat.loc[i, "Total Length of Fwd Packets"] == sum(p["on_wire_after_hdr"] for p in fwd)
        assert compat.loc[i, "Total Length of Bwd Packets"] == sum(p["on_wire_after_hdr"] for p in bwd)
        assert compat.loc[i, "Init_Win_bytes_backward"] == (bwd[-1]["win"] if bwd else -1)


def test_durations_are_microseconds_not_seconds(nmap):
    # A 6-second connection exists in this capture; in seconds it would read 6.07.
    longest = nmap.frame["Flow Duration"].max()
    assert 6_000_000 < longest < 7_400_000


# ------------------------------------------------------------------------------------------------
# Hand-built packets: every feature of a known flow
# ------------------------------------------------------------------------------------------------

T0 = 1_600_000_000
A, B = "10.0.0.1", "10.0.0.2"
MSS = b"\x02\x04\x05\xb4"


def eth_frame(ip: dpkt.ip.IP, *, vlan: bool, pad_to: int = 0) -> bytes:
    header = b"\x02" * 6 + b"\x04" * 6
    header += (b"\x81\x00\x00\x64" if vlan else b"") + b"\x08\x00"
    frame = header + bytes(ip)
    return frame + b"\x00" * max(0, pad_to - len(frame))


def tcp_ip(
    src: str, dst: str, sport: int, dport: int, flags: int, win: int, payload: bytes = b"", opts: bytes = b""
) -> dpkt.ip.IP:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, win=win, opts=opts, data=payload)
    tcp.off = (20 + len(opts)) // 4
    return dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, ttl=64, data=tcp)


@pytest.fixture(scope="module")
def handmade_pcap(tmp_path_factory) -> Path:
    S, SA, _A, PA, RA = (
        dpkt.tcp.TH_SYN,
        dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK,
        dpkt.tcp.TH_ACK,
        dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK,
        dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK,
    )
    udp = dpkt.udp.UDP(sport=5353, dport=53, data=b"q" * 20)
    udp_ip = dpkt.ip.IP(src=socket.inet_aton(A), dst=socket.inet_aton(B), p=17, data=udp)
    udp_back = dpkt.udp.UDP(sport=53, dport=5353, data=b"r" * 40)
    udp_back_ip = dpkt.ip.IP(src=socket.inet_aton(B), dst=socket.inet_aton(A), p=17, data=udp_back)
    icmp = dpkt.ip.IP(
        src=socket.inet_aton(A),
        dst=socket.inet_aton(B),
        p=1,
        data=dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=1, seq=1)),
    )
    arp = b"\xff" * 6 + b"\x04" * 6 + b"\x08\x06" + b"\x00" * 28
    cut_tcp = eth_frame(tcp_ip(A, B, 1, 2, S, 1), vlan=False)[: 14 + 20 + 8]  # TCP header cut short
    records = [
        (T0, 0, eth_frame(tcp_ip(A, B, 40000, 80, S, 29200, opts=MSS), vlan=True, pad_to=64)),
        (T0, 100, eth_frame(tcp_ip(B, A, 80, 40000, SA, 28960, opts=MSS), vlan=True, pad_to=64)),
        (T0, 250, eth_frame(tcp_ip(A, B, 40000, 80, PA, 229, b"x" * 10), vlan=True, pad_to=64)),
        (T0, 1000, eth_frame(udp_ip, vlan=False)),
        (T0, 1200, eth_frame(udp_back_ip, vlan=False)),
        (T0, 2000, arp),
        (T0, 3000, eth_frame(icmp, vlan=False)),
        (T0, 4000, cut_tcp),
        (T0 + 6, 250, eth_frame(tcp_ip(A, B, 40000, 80, PA, 229, b"y" * 5), vlan=True, pad_to=64)),
        (T0 + 6, 400, eth_frame(tcp_ip(B, A, 80, 40000, RA, 0), vlan=True, pad_to=64)),
    ]
    return write_pcap(tmp_path_factory.mktemp("hand") / "hand.pcap", records)


def sample_std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def test_handmade_flow_features_in_both_modes(handmade_pcap):
    result = extract_pcap(handmade_pcap, mode="corrected")
    compat = extract_pcap(handmade_pcap).frame
    assert result.packets == 10
    assert result.skipped == {"malformed": 1, "non_ip": 1, "not_tcp_udp": 1}
    assert len(result.warnings) == 1 and "1 malformed" in result.warnings[0]
    frame = result.frame
    assert len(frame) == len(compat) == 2
    tcp = frame[frame.protocol == 6].iloc[0]
    cic = compat[compat.protocol == 6].iloc[0]
    assert tcp.flow_id == "10.0.0.1-10.0.0.2-40000-80-6"
    assert tcp.timestamp == pd.Timestamp(T0, unit="s")

    flow_iats = [100, 150, 6_000_000, 150]
    fwd_iats = [250, 6_000_000]
    common = {
        "Destination Port": 80,
        "Flow Duration": 6_000_400,
        "Total Fwd Packets": 3,
        "Total Backward Packets": 2,
        "Flow IAT Mean": np.mean(flow_iats),
        "Flow IAT Std": sample_std(flow_iats),
        "Flow IAT Max": 6_000_000,
        "Flow IAT Min": 100,
        "Fwd IAT Total": sum(fwd_iats),
        "Fwd IAT Mean": np.mean(fwd_iats),
        "Fwd IAT Std": sample_std(fwd_iats),
        "Fwd IAT Max": 6_000_000,
        "Fwd IAT Min": 250,
        "Bwd IAT Total": 6_000_300,
        "Bwd IAT Mean": 6_000_300,
        "Bwd IAT Std": 0,
        "Bwd IAT Max": 6_000_300,
        "Bwd IAT Min": 6_000_300,
        "Fwd Header Length": 24 + 20 + 20,
        "Bwd Header Length": 24 + 20,
        "Fwd Header Length.1": 64,
        "Flow Packets/s": 5 / 6.0004,
        "Fwd Packets/s": 3 / 6.0004,
        "Bwd Packets/s": 2 / 6.0004,
        "Init_Win_bytes_forward": 29200,
        "min_seg_size_forward": 20,
        "act_data_pkt_fwd": 2,
        # One gap over the 5 s activity timeout: active 0..250 us, then idle 6 s.
        "Active Mean": 250,
        "Active Std": 0,
        "Active Max": 250,
        "Active Min": 250,
        "Idle Mean": 6_000_000,
        "Idle Std": 0,
        "Idle Max": 6_000_000,
        "Idle Min": 6_000_000,
    }
    lengths = [0, 0, 10, 5, 0]  # payload bytes in packet order
    corrected = {
        "Total Length of Fwd Packets": 15,
        "Total Length of Bwd Packets": 0,
        "Fwd Packet Length Max": 10,
        "Fwd Packet Length Min": 0,
        "Fwd Packet Length Mean": 5,
        "Fwd Packet Length Std": sample_std([0, 10, 5]),
        "Min Packet Length": 0,
        "Max Packet Length": 10,
        "Packet Length Mean": np.mean(lengths),
        "Packet Length Std": sample_std(lengths),
        "Packet Length Variance": np.var(lengths, ddof=1),
        "Average Packet Size": 3,
        "Flow Bytes/s": 15 / 6.0004,
        "FIN Flag Count": 0,
        "SYN Flag Count": 2,
        "RST Flag Count": 1,
        "PSH Flag Count": 2,
        "ACK Flag Count": 4,
        "URG Flag Count": 0,
        "CWE Flag Count": 0,
        "ECE Flag Count": 0,
        "Fwd PSH Flags": 2,
        "Bwd PSH Flags": 0,
        "Down/Up Ratio": 2 / 3,
        "Init_Win_bytes_backward": 28960,  # first backward packet
        # netflower's subflows: the 6 s gap splits the flow in two; integer division.
        "Subflow Fwd Packets": 1,
        "Subflow Fwd Bytes": 7,
        "Subflow Bwd Packets": 1,
        "Subflow Bwd Bytes": 0,
    }
    # Frames are padded to 64 bytes (VLAN-tagged): bytes after the TCP header on the wire.
    wire = [64 - 18 - 20 - 24, 64 - 18 - 20 - 24, 10, 64 - 18 - 20 - 20, 64 - 18 - 20 - 20]
    with_first_twice = [wire[0], *wire]
    cicids = {
        "Total Length of Fwd Packets": wire[0] + wire[2] + wire[3],
        "Total Length of Bwd Packets": wire[1] + wire[4],
        "Fwd Packet Length Max": max(wire[0], wire[2], wire[3]),
        "Packet Length Mean": np.mean(with_first_twice),
        "Packet Length Std": sample_std(with_first_twice),
        "Packet Length Variance": np.var(with_first_twice, ddof=1),
        "Average Packet Size": (sum(wire) + wire[0]) / 5,
        "Flow Bytes/s": sum(wire) / 6.0004,
        # first packet was a bare SYN: only the column that holds SYN is set
        **{c: float(c == "PSH Flag Count") for c in CICIDS2017_FLAG_COLUMNS},
        "Fwd PSH Flags": 0,
        "Bwd PSH Flags": 0,
        "Down/Up Ratio": 0,
        "Init_Win_bytes_backward": 0,  # last backward packet (the RST)
        "Subflow Fwd Packets": 3,
        "Subflow Fwd Bytes": wire[0] + wire[2] + wire[3],
        "Subflow Bwd Packets": 2,
        "Subflow Bwd Bytes": wire[1] + wire[4],
        "Fwd Avg Bytes/Bulk": 0,
        "Bwd Avg Bulk Rate": 0,
    }
    for name, value in {**common, **corrected}.items():
        assert tcp[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    for name, value in {**common, **cicids}.items():
        assert cic[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name

    udp = frame[frame.protocol == 17].iloc[0]
    assert (udp["Total Length of Fwd Packets"], udp["Total Length of Bwd Packets"]) == (20, 40)
    assert (udp["Fwd Header Length"], udp["Bwd Header Length"]) == (8, 8)
    assert udp["Init_Win_bytes_forward"] == udp["Init_Win_bytes_backward"] == -1
    assert udp["Flow Duration"] == 200


# ------------------------------------------------------------------------------------------------
# CICIDS2017 quirks, checked against the real CICIDS2017 rows
# ------------------------------------------------------------------------------------------------


def java_hashmap_order(keys: list[str]) -> list[str]:
    """Iteration order of a default ``java.util.HashMap`` (16 buckets) after inserting ``keys``."""

    def string_hash(s: str) -> int:
        h = 0
        for ch in s:
            h = (31 * h + ord(ch)) & 0xFFFFFFFF
        return h

    buckets: dict[int, list[str]] = defaultdict(list)
    for key in keys:
        h = string_hash(key)
        buckets[(h ^ (h >> 16)) & 15].append(key)
    return [k for b in sorted(buckets) for k in buckets[b]]


def test_cicids2017_flag_columns_follow_the_java_hashmap_order():
    inserted = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "CWR", "ECE"]
    written = java_hashmap_order(inserted)
    headers = [
        "FIN Flag Count",
        "SYN Flag Count",
        "RST Flag Count",
        "PSH Flag Count",
        "ACK Flag Count",
        "URG Flag Count",
        "CWE Flag Count",
        "ECE Flag Count",
    ]
    bits = {
        "FIN": 0x01,
        "SYN": 0x02,
        "RST": 0x04,
        "PSH": 0x08,
        "ACK": 0x10,
        "URG": 0x20,
        "ECE": 0x40,
        "CWR": 0x80,
    }
    assert CICIDS2017_FLAG_COLUMNS == {h: bits[f] for h, f in zip(headers, written)}


@pytest.fixture(scope="module")
def cicids_rows() -> pd.DataFrame:
    files = sorted((CICIDS / "trafficlabelling-mondirkb").glob("*.csv"))
    files += sorted((CICIDS / "machinelearningcve-paris-svg").glob("*.csv"))
    if not files:
        pytest.skip("CICIDS2017 reference rows not present")
    frames = [pd.read_csv(f, skipinitialspace=True, encoding="latin-1") for f in files]
    for f in frames:
        f.columns = [c.strip() for c in f.columns]
    return pd.concat(frames, ignore_index=True)


def test_cicids2017_rows_show_the_quirks_that_mode_cicids2017_reproduces(cicids_rows):
    d = cicids_rows
    flags = list(CICIDS2017_FLAG_COLUMNS)
    assert d[flags].isin([0, 1]).all().all()  # first packet only
    assert (d["SYN Flag Count"] == d["Fwd PSH Flags"]).all()  # the "SYN" column holds PSH
    assert (d["Bwd PSH Flags"] == 0).all() and (d["Bwd URG Flags"] == 0).all()
    bulk = [m.feature for m in FEATURE_MAP if "Bulk" in m.feature]
    assert len(bulk) == 6 and (d[bulk] == 0).all().all()
    assert (d["Subflow Fwd Packets"] == d["Total Fwd Packets"]).all()
    assert (d["Subflow Bwd Bytes"] == d["Total Length of Bwd Packets"]).all()
    fwd, bwd = d["Total Fwd Packets"], d["Total Backward Packets"]
    assert (d["Down/Up Ratio"] == np.floor(bwd / fwd)).all()
    n = fwd + bwd
    np.testing.assert_allclose(
        d["Average Packet Size"], d["Packet Length Mean"] * (n + 1) / n, rtol=1e-6, atol=1e-6
    )
    one_fwd = d[(fwd == 1) & (d["Total Length of Fwd Packets"] > 0)]
    assert len(one_fwd) > 100 and (one_fwd["act_data_pkt_fwd"] == 0).all()


# ------------------------------------------------------------------------------------------------
# Other link types and formats
# ------------------------------------------------------------------------------------------------


def test_pcapng_gives_the_same_flows_as_pcap(tmp_path, nmap):
    _, records = read_pcap_records(NMAP)
    path = tmp_path / "nmap.pcapng"
    with path.open("wb") as fh:
        writer = dpkt.pcapng.Writer(fh, snaplen=262144, linktype=1)
        for sec, usec, _, frame, _ in records:
            writer.writepkt(frame, ts=sec + usec / 1e6)
    frame = extract_pcap(path).frame
    pd.testing.assert_frame_equal(frame, nmap.frame)


def test_raw_ip_link_type_gives_the_same_flows_as_ethernet(tmp_path, nmap_corrected):
    _, records = read_pcap_records(NMAP)
    raw = []
    for sec, usec, _, frame, _ in records:
        ip = dpkt.ethernet.Ethernet(frame).data
        if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
            raw.append((sec, usec, bytes(ip)))
    path = write_pcap(tmp_path / "raw.pcap", raw, linktype=101)  # LINKTYPE_RAW
    frame = extract_pcap(path, mode="corrected").frame
    pd.testing.assert_frame_equal(frame, nmap_corrected.frame)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def test_truncated_pcap_keeps_every_complete_packet_and_reports_it(tmp_path):
    blob = NMAP.read_bytes()
    _, records = read_pcap_records(NMAP)
    cut = 60_001  # an odd offset inside a record
    complete = [r for r in records if r[4] <= cut]
    assert complete[-1][4] != cut
    truncated = tmp_path / "cut.pcap"
    truncated.write_bytes(blob[:cut])
    clean = tmp_path / "clean.pcap"
    clean.write_bytes(blob[: complete[-1][4]])

    result = extract_pcap(truncated)
    assert result.truncated is True
    assert result.packets == len(complete)
    assert len(result.warnings) == 1 and "truncated" in result.warnings[0]
    assert str(truncated) in result.warnings[0]
    reference = extract_pcap(clean)
    assert reference.truncated is False and reference.warnings == []
    pd.testing.assert_frame_equal(result.frame, reference.frame)
    assert 0 < result.flows <= extract_pcap(NMAP).flows


def test_pcap_cut_inside_a_record_header_is_also_reported(tmp_path):
    blob = NMAP.read_bytes()
    _, records = read_pcap_records(NMAP)
    cut = records[9][4] + 7  # 7 bytes into the 11th record's 16-byte header
    path = tmp_path / "cut_header.pcap"
    path.write_bytes(blob[:cut])
    result = extract_pcap(path)
    assert result.truncated and result.packets == 10


@pytest.mark.parametrize("content", [None, b"", b"Flow ID,Source IP\n1,2\n", b"\xd4\xc3\xb2"])
def test_unreadable_files_raise_input_error_naming_the_file(tmp_path, content):
    path = tmp_path / "capture.pcap"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=str(path)):
        extract_pcap(path)


def test_directory_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="not a regular file"):
        extract_pcap(tmp_path)


def test_unsupported_link_type_raises_input_error(tmp_path):
    path = write_pcap(tmp_path / "wifi.pcap", [(T0, 0, b"\x00" * 40)], linktype=105)  # 802.11
    with pytest.raises(InputError, match="link type"):
        extract_pcap(path)


@pytest.mark.parametrize(
    "kwargs", [{"mode": "cicflowmeter"}, {"active_timeout_s": 0}, {"idle_timeout_s": float("nan")}]
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        extract_pcap(NMAP, **kwargs)


def test_timeouts_split_a_long_connection(tmp_path):
    # The nmap capture's 6-second connection is cut by a 2-second flow timeout.
    default = extract_pcap(NMAP, mode="corrected").frame
    short = extract_pcap(NMAP, mode="corrected", active_timeout_s=2.0, idle_timeout_s=2.0).frame
    assert len(short) > len(default)
    assert short["Flow Duration"].max() <= 2_000_000 + 1_000_000  # cut at the first packet past 2 s


# ------------------------------------------------------------------------------------------------
# Live capture
# ------------------------------------------------------------------------------------------------


def test_live_capture_on_loopback_yields_the_udp_flow_it_saw():
    try:
        batches = capture_interface(
            "lo", duration_s=3.0, packet_count=None, mode="corrected", batch_interval_s=0.5
        )
    except InputError as exc:
        pytest.skip(f"no live capture here: {exc}")
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]

    def send() -> None:
        time.sleep(0.3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(5):
                s.sendto(b"z" * 33, ("127.0.0.1", port))
                time.sleep(0.02)

    sender = threading.Thread(target=send)
    sender.start()
    frames: list[pd.DataFrame] = []
    # The capture must end at its deadline even when no packet arrives after the last datagram (it used
    # to block in pcap_next_ex on a quiet interface): collect in a thread and give it a generous bound.
    collector = threading.Thread(target=lambda: frames.extend(batches), daemon=True)
    collector.start()
    collector.join(timeout=30.0)
    sender.join()
    receiver.close()
    assert not collector.is_alive(), "live capture did not stop at its deadline"
    frame = pd.concat(frames, ignore_index=True)
    assert frame[SEQ].tolist() == list(range(len(frame)))
    ours = frame[(frame.dst_port == port) & (frame.protocol == 17)]
    assert len(ours) == 1
    assert ours.iloc[0]["Total Fwd Packets"] == 5
    assert ours.iloc[0]["Total Length of Fwd Packets"] == 5 * 33


def test_live_capture_on_a_missing_interface_raises_input_error():
    with pytest.raises(InputError, match="no-such-if0"):
        capture_interface("no-such-if0", duration_s=1.0, packet_count=None)


def test_linux_cooked_capture_gives_the_same_flows_as_ethernet(tmp_path, nmap_corrected):
    _, records = read_pcap_records(NMAP)
    cooked = []
    for sec, usec, _, frame, _ in records:
        eth = dpkt.ethernet.Ethernet(frame)
        if isinstance(eth.data, dpkt.ip.IP):
            # struct sll_header: packet type, ARPHRD_ETHER, address length, address (8), protocol
            sll = struct.pack("!HHH8sH", 0, 1, 6, frame[6:12] + b"\0\0", 0x0800)
            cooked.append((sec, usec, sll + bytes(eth.data)))
    path = write_pcap(tmp_path / "cooked.pcap", cooked, linktype=113)  # LINKTYPE_LINUX_SLL
    frame = extract_pcap(path, mode="corrected").frame
    pd.testing.assert_frame_equal(frame, nmap_corrected.frame)


def test_ipv6_tcp_flow(tmp_path):
    a6, b6 = "2001:db8::1", "2001:db8::2"

    def ip6(src: str, dst: str, tcp: dpkt.tcp.TCP) -> dpkt.ip6.IP6:
        packet = dpkt.ip6.IP6(
            src=socket.inet_pton(socket.AF_INET6, src),
            dst=socket.inet_pton(socket.AF_INET6, dst),
            nxt=6,
            hlim=64,
            data=tcp,
        )
        packet.plen = len(bytes(tcp))
        return packet

    syn = dpkt.tcp.TCP(sport=50000, dport=443, flags=dpkt.tcp.TH_SYN, win=64800, off=5)
    data = dpkt.tcp.TCP(
        sport=443, dport=50000, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, win=500, off=5, data=b"d" * 100
    )
    eth6 = b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd"
    path = write_pcap(
        tmp_path / "v6.pcap",
        [(T0, 10, eth6 + bytes(ip6(a6, b6, syn))), (T0, 510, eth6 + bytes(ip6(b6, a6, data)))],
    )
    result = extract_pcap(path, mode="corrected")
    assert result.skipped == {} and result.flows == 1
    row = result.frame.iloc[0]
    assert (row.src_ip, row.dst_ip, row.src_port, row.dst_port) == (a6, b6, 50000, 443)
    assert row["Flow Duration"] == 500
    assert (row["Total Length of Fwd Packets"], row["Total Length of Bwd Packets"]) == (0, 100)
    assert (row["Fwd Header Length"], row["Bwd Header Length"]) == (20, 20)
    assert row["Init_Win_bytes_backward"] == 500


# ------------------------------------------------------------------------------------------------
# Same flows and features as the per-packet extractor this one replaced (tests/support/extractor_reference.py)
# ------------------------------------------------------------------------------------------------


def boundary_cases_pcap(path: Path) -> Path:
    """Packets that exercise every flow boundary: 120-s cuts continued from either side, idle
    splits, RST and FIN closes with leftovers and port reuse, bulks, idle periods, IPv6, VLAN."""
    S, SA, A_, PA, RA, FA = (
        dpkt.tcp.TH_SYN,
        dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK,
        dpkt.tcp.TH_ACK,
        dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK,
        dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK,
        dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK,
    )
    C, D = "10.0.0.3", "10.0.0.4"
    recs: list[tuple[int, bytes]] = []

    def udp(t_us, src, dst, sport, dport, n, vlan=False):
        u = dpkt.udp.UDP(sport=sport, dport=dport, data=b"u" * n)
        ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=17, data=u)
        recs.append((t_us, eth_frame(ip, vlan=vlan)))

    def tcp(t_us, src, dst, sport, dport, flags, payload=b"", vlan=True):
        recs.append(
            (t_us, eth_frame(tcp_ip(src, dst, sport, dport, flags, 1000, payload), vlan=vlan, pad_to=60))
        )

    for k in range(22):  # a 330-s UDP conversation, both sides talking: cut at 120 s twice
        udp(
            k * 15_000_000 + 7,
            A if k % 3 else B,
            B if k % 3 else A,
            5000 if k % 3 else 6000,
            6000 if k % 3 else 5000,
            10 + k,
        )
    udp(1_000, C, D, 7000, 53, 30)  # silent for 130 s, then the other side: a new flow from D
    udp(131_001_000, D, C, 53, 7000, 60)
    t = 2_000_000
    for flags, fwd, data in (
        (S, 1, b""),
        (SA, 0, b""),
        (A_, 1, b""),
        (PA, 1, b"q" * 40),
        (RA, 0, b""),
        (A_, 1, b""),
        (S, 1, b""),
        (SA, 0, b""),
        (PA, 1, b"x" * 100),
        *[(PA, 1, b"y" * 500)] * 6,
        (A_, 1, b""),
        (FA, 1, b""),
        (FA, 0, b""),
        (A_, 1, b""),
        (A_, 0, b"late"),
    ):
        t += 6_000_000 if data == b"late" else (400_000 if flags == A_ and fwd and not data else 9_000)
        if flags == PA and data == b"x" * 100:
            t += 7_000_000  # an idle period inside the flow
        tcp(t, A if fwd else B, B if fwd else A, 40000 if fwd else 443, 443 if fwd else 40000, flags, data)
    a6, b6 = (
        socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
        socket.inet_pton(socket.AF_INET6, "2001:db8::2"),
    )
    for k in range(4):
        seg = dpkt.tcp.TCP(
            sport=50000 if k % 2 == 0 else 443,
            dport=443 if k % 2 == 0 else 50000,
            flags=S if k == 0 else PA,
            win=900,
            off=5,
            data=b"z" * (k * 10),
        )
        ip6 = dpkt.ip6.IP6(
            src=a6 if k % 2 == 0 else b6, dst=b6 if k % 2 == 0 else a6, nxt=6, hlim=64, data=seg
        )
        ip6.plen = len(bytes(seg))
        recs.append((3_000_000 + k * 1000, b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + bytes(ip6)))
    recs.sort(key=lambda r: r[0])
    return write_pcap(path, [(T0 + us // 1_000_000, us % 1_000_000, frame) for us, frame in recs])


@pytest.fixture(scope="module")
def comparison_captures(tmp_path_factory) -> dict[str, Path]:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "bench_extractor", paths.REPO / "benchmarks" / "bench_extractor.py"
    )
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_extractor", bench)
    spec.loader.exec_module(bench)
    tmp = tmp_path_factory.mktemp("compare")
    synthetic = tmp / "synthetic.pcap"
    bench.write_capture(synthetic, flows=400, seed=3)
    _, records = read_pcap_records(SYNFLOOD)
    flood = write_pcap(tmp / "flood.pcap", [(s, u, f) for s, u, _, f, _ in records[:3000]])
    return {
        "masscan": MASSCAN,
        "nmap": NMAP,
        "synflood_3000": flood,
        "synthetic": synthetic,
        "boundaries": boundary_cases_pcap(tmp / "boundaries.pcap"),
    }


@pytest.mark.parametrize("mode", ["cicids2017", "corrected"])
@pytest.mark.parametrize("capture", ["masscan", "nmap", "synflood_3000", "synthetic", "boundaries"])
def test_array_extractor_matches_the_per_packet_reference(comparison_captures, capture, mode):
    from support.extractor_reference import reference_flows

    path = comparison_captures[capture]
    key = ["src_ip", "src_port", "dst_ip", "dst_port", "protocol", "start_us"]
    new = extract_pcap(path, mode=mode).frame
    new = new.assign(start_us=new["timestamp"].astype("int64"))
    ref = reference_flows(path, mode=mode)
    new = new.sort_values(key).reset_index(drop=True)
    ref = ref.sort_values(key).reset_index(drop=True)
    assert len(new) == len(ref) > 0
    pd.testing.assert_frame_equal(new[key].astype(str), ref[key].astype(str))
    np.testing.assert_allclose(
        new[list(FEATURES)].to_numpy(), ref[list(FEATURES)].to_numpy(dtype=float), rtol=1e-9, atol=1e-3
    )


@pytest.mark.parametrize("capture", ["nmap", "boundaries", "synthetic"])
def test_flows_fed_in_small_batches_equal_flows_of_the_whole_file(comparison_captures, capture):
    """Live capture feeds the flow table batch by batch (open flows, closes and 120-s cuts carried
    over); the flows must be those of the whole file at once."""
    from collections import Counter

    from fedids.data.features import CICIDS2017, flow_features
    from fedids.detect.extractor.capture import open_capture
    from fedids.detect.extractor.decode import decode
    from fedids.detect.extractor.flows import FlowTable

    path = comparison_captures[capture]
    raw = next(open_capture(path).chunks())
    packets = decode(raw, "cicids2017", Counter())
    table = FlowTable(idle_us=120_000_000, active_us=120_000_000)
    rows = []
    for lo in range(0, len(packets), 7):
        part = packets.take(np.arange(lo, min(lo + 7, len(packets))))
        for batch in (table.feed(part, int(part.ts.max())),):
            if batch is not None:
                rows.append(
                    np.column_stack(
                        [
                            batch.start_us,
                            batch.sport,
                            batch.dport,
                            flow_features(batch.packets, batch.dport, CICIDS2017),
                        ]
                    )
                )
    batch = table.flush()
    if batch is not None:
        rows.append(
            np.column_stack(
                [
                    batch.start_us,
                    batch.sport,
                    batch.dport,
                    flow_features(batch.packets, batch.dport, CICIDS2017),
                ]
            )
        )
    fed = np.concatenate(rows)
    whole = extract_pcap(path).frame
    expected = np.column_stack(
        [
            whole["timestamp"].astype("int64"),
            whole["src_port"],
            whole["dst_port"],
            whole[list(FEATURES)].to_numpy(),
        ]
    )
    fed = fed[np.lexsort(fed[:, :3].T[::-1])]
    expected = expected[np.lexsort(expected[:, :3].T[::-1])]
    np.testing.assert_allclose(fed, expected, rtol=1e-12, atol=1e-6)
    assert table.after_close == extract_pcap(path).skipped.get("after_close", 0)
