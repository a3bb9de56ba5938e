"""Decoding packets as arrays: link layer, IPv4/IPv6, TCP/UDP headers of every packet at once.

Each header field is one gather from the capture buffer at per-packet offsets (``uint16``/``uint32``
views of the buffer at every byte offset, so a field is ``u16[offset]``); a packet's layers are
peeled with boolean masks. The rules are those of the per-packet decoder this replaces (dpkt):

* link layers: Ethernet with any number of 802.1Q/802.1ad/QinQ tags, Linux cooked (v1, v2), raw IP,
  BSD/OpenBSD loopback;
* IPv4 (options included) and IPv6 (hop-by-hop, routing, fragment, authentication and destination
  options extension headers); fragments after the first are skipped (``fragment``), as are packets too
  short for their own headers (``malformed``), frames without IP (``non_ip``) and IP packets that carry
  neither TCP nor UDP (``not_tcp_udp``);
* lengths with CICFlowMeter's meaning: the header length is the TCP/UDP header's; the packet length is
  the transport payload, in CICIDS2017 mode every byte of the frame after the transport header
  (Ethernet padding of short frames counts, as jnetpcap counted it: CICIDS2017's RST replies to a port
  scan show 6 bytes), in corrected mode the payload the IP length declares (the captured bytes when
  the IP length is 0, as with TCP segmentation offload).

TCP payloads are also searched for scanning tools' signatures (:mod:`fedids.detect.signatures`): one
substring search over the whole buffer per signature, hits mapped back to packets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields

import numpy as np

from fedids.detect.extractor.capture import (
    DLT_EN10MB, DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_LOOP, DLT_NULL, DLT_RAW,
    DLT_RAW_BSD, RawPackets,
)
from fedids.detect.signatures import SCANNER_SIGNATURES

TOOLS: tuple[str, ...] = tuple(tool for _, tool in SCANNER_SIGNATURES)
"""Tool names by the code :attr:`Packets.tool` holds (-1: none)."""

_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad (QinQ), legacy QinQ
_MAX_VLAN_TAGS = 8
_IP6_EXT = (0, 43, 44, 51, 60)  # hop-by-hop, routing, fragment, AH, destination options
_IP6_ESP = 50
_MAX_IP6_EXT = 8
TCP, UDP = 6, 17


@dataclass
class Packets:
    """TCP/UDP packets as parallel arrays (one element per packet).

    Addresses are 128-bit numbers in two ``uint64`` halves (IPv4: ``hi = 0``, ``lo`` = the address;
    ``v6`` tells them apart). ``size`` is the payload length, ``header`` the TCP/UDP header length,
    ``window`` the TCP window (-1 for UDP), ``tool`` a :data:`TOOLS` code or -1. ``ghost`` and
    ``orient`` are the flow table's bookkeeping (:mod:`fedids.detect.extractor.flows`): 0 and -1 for
    captured packets.
    """

    ts: np.ndarray
    v6: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    proto: np.ndarray
    size: np.ndarray
    header: np.ndarray
    flags: np.ndarray
    window: np.ndarray
    tool: np.ndarray
    ghost: np.ndarray
    orient: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: np.ndarray) -> Packets:
        return Packets(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def concat(parts: list[Packets | None]) -> Packets | None:
        parts = [p for p in parts if p is not None]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return Packets(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Packets)))


class _Views:
    """Big-endian integers at any byte offset of a buffer."""

    def __init__(self, raw: RawPackets) -> None:
        n = len(raw.buf)
        self.u8 = raw.data
        self.u16 = np.ndarray(shape=(n - 1,), dtype=">u2", buffer=raw.buf, strides=(1,))
        self.u32 = np.ndarray(shape=(n - 3,), dtype=">u4", buffer=raw.buf, strides=(1,))
        self.u64 = np.ndarray(shape=(n - 7,), dtype=">u8", buffer=raw.buf, strides=(1,))


def _link_layer(raw: RawPackets, v: _Views) -> tuple[np.ndarray, np.ndarray]:
    """``(offset of the IP header, packet has an IPv4/IPv6 header there)`` per packet."""
    off, cap, link = raw.off, raw.caplen, raw.linktype
    l3 = off.copy()
    ok = np.zeros(len(off), dtype=bool)
    eth = link == DLT_EN10MB
    if eth.any():
        i = np.flatnonzero(eth & (cap >= 14))
        p = off[i] + 12
        et = v.u16[p].astype(np.int64)
        tagged = np.isin(et, _VLAN_TAGS)
        for _ in range(_MAX_VLAN_TAGS):
            if not tagged.any():
                break
            p = np.where(tagged, p + 4, p)
            readable = p + 2 - off[i] <= cap[i]
            et = np.where(tagged, np.where(readable, v.u16[np.where(readable, p, 0)], 0), et)
            tagged = np.isin(et, _VLAN_TAGS)
        l3[i] = p + 2
        ok[i] = (et == _ETH_IPV4) | (et == _ETH_IPV6)
    for types, skip in (((DLT_RAW, DLT_RAW_BSD, DLT_IPV4, DLT_IPV6), 0), ((DLT_NULL, DLT_LOOP), 4)):
        i = np.flatnonzero(np.isin(link, types) & (cap > skip))
        l3[i] = off[i] + skip
        ok[i] = np.isin(v.u8[l3[i]] >> 4, (4, 6))
    for dlt, at, start in ((DLT_LINUX_SLL, 14, 16), (DLT_LINUX_SLL2, 0, 20)):
        i = np.flatnonzero((link == dlt) & (cap >= at + 2))
        l3[i] = off[i] + start
        ok[i] = np.isin(v.u16[off[i] + at], (_ETH_IPV4, _ETH_IPV6))
    return l3, ok


@dataclass
class _Net:
    """Network-layer results for the packets ``idx`` (indices into the raw packets)."""

    idx: np.ndarray
    v6: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    proto: np.ndarray
    ip_hdr: np.ndarray      # IP header bytes (IPv6: 40 + extension headers)
    seg: np.ndarray         # offset of the transport header
    seg_end: np.ndarray     # end of the transport segment's captured bytes (within the IP length)
    declared: np.ndarray    # transport bytes the IP header declares, -1 when it declares none


def _ipv4(raw: RawPackets, v: _Views, idx: np.ndarray, l3: np.ndarray, skips: Counter) -> _Net:
    end = raw.off[idx] + raw.caplen[idx]
    ok = end - l3 >= 20
    ihl = (v.u8[l3] & 0x0F).astype(np.int64) * 4
    ok &= ihl >= 20
    skips["malformed"] += int((~ok).sum())
    idx, l3, end, ihl = idx[ok], l3[ok], end[ok], ihl[ok]
    frag = (v.u16[l3 + 6] & 0x1FFF) != 0
    skips["fragment"] += int(frag.sum())
    idx, l3, end, ihl = idx[~frag], l3[~frag], end[~frag], ihl[~frag]
    total = v.u16[l3 + 2].astype(np.int64)
    seg_end = np.where(total > 0, np.minimum(l3 + total, end), end)
    zeros = np.zeros(len(idx), dtype=np.uint64)
    return _Net(idx, np.zeros(len(idx), dtype=bool), zeros, v.u32[l3 + 12].astype(np.uint64), zeros,
                v.u32[l3 + 16].astype(np.uint64), v.u8[l3 + 9].astype(np.int64), ihl, l3 + ihl,
                seg_end, np.where(total > 0, total - ihl, -1))


def _ipv6(raw: RawPackets, v: _Views, idx: np.ndarray, l3: np.ndarray, skips: Counter) -> _Net:
    end = raw.off[idx] + raw.caplen[idx]
    ok = end - l3 >= 40
    skips["malformed"] += int((~ok).sum())
    idx, l3, end = idx[ok], l3[ok], end[ok]
    plen = v.u16[l3 + 4].astype(np.int64)
    seg_end = np.where(plen > 0, np.minimum(l3 + 40 + plen, end), end)
    nxt = v.u8[l3 + 6].astype(np.int64)
    q = l3 + 40
    bad = np.zeros(len(idx), dtype=bool)
    frag = np.zeros(len(idx), dtype=bool)
    for _ in range(_MAX_IP6_EXT):
        ext = np.isin(nxt, _IP6_EXT) & ~bad
        if not ext.any():
            break
        is_frag = ext & (nxt == 44)
        need = np.where(is_frag, 8, 2)
        short = ext & (q + need > seg_end)
        bad |= short
        ext &= ~short
        qs = np.where(ext, q, 0)
        hlen = v.u8[qs + 1].astype(np.int64)
        length = np.select([nxt == 44, nxt == 51], [8, (hlen + 2) * 4], (hlen + 1) * 8)
        frag |= is_frag & ~short & ((v.u16[qs + 2] >> 3) != 0)
        nxt = np.where(ext, v.u8[qs].astype(np.int64), nxt)
        q = np.where(ext, q + length, q)
    bad |= np.isin(nxt, _IP6_EXT)  # more extension headers than anyone sends
    skips["malformed"] += int(bad.sum())
    frag &= ~bad
    skips["fragment"] += int(frag.sum())
    keep = ~bad & ~frag
    idx, l3, seg_end, q, nxt, plen = idx[keep], l3[keep], seg_end[keep], q[keep], nxt[keep], plen[keep]
    ext_len = q - l3 - 40
    hi = [v.u64[l3 + k].astype(np.uint64) for k in (8, 16, 24, 32)]
    return _Net(idx, np.ones(len(idx), dtype=bool), hi[0], hi[1], hi[2], hi[3], nxt, 40 + ext_len, q,
                seg_end, np.where(plen > 0, plen - ext_len, -1))


def _transport(raw: RawPackets, v: _Views, net: _Net, mode: str, skips: Counter) -> Packets:
    avail = net.seg_end - net.seg
    tcp = net.proto == TCP
    udp = net.proto == UDP
    skips["not_tcp_udp"] += int((~tcp & ~udp).sum())
    seg = np.where(tcp | udp, net.seg, 0)
    doff = (v.u8[seg + 12] >> 4).astype(np.int64) * 4
    header = np.where(tcp, doff, 8)
    ok = (tcp & (avail >= 20) & (doff >= 20)) | (udp & (avail >= 8))
    skips["malformed"] += int(((tcp | udp) & ~ok).sum())
    k = np.flatnonzero(ok)
    idx, seg, header, tcp = net.idx[k], seg[k], header[k], tcp[k]
    if mode == "cicids2017":
        size = raw.wirelen[idx] - (net.seg[k] - raw.off[idx]) - header  # minus link, IP, TCP/UDP
    else:
        declared = net.declared[k]
        size = np.where(declared >= 0, declared - header, avail[k] - header)
    flags = np.where(tcp, v.u8[seg + 13], 0).astype(np.uint8)
    window = np.where(tcp, v.u16[seg + 14].astype(np.int64), -1)
    tool = _tools(raw, idx[tcp], seg[tcp] + header[tcp], net.seg_end[k][tcp], len(raw), idx)
    return Packets(raw.ts_us[idx], net.v6[k], net.src_hi[k], net.src_lo[k], net.dst_hi[k],
                   net.dst_lo[k], v.u16[seg].astype(np.int64), v.u16[seg + 2].astype(np.int64),
                   net.proto[k], np.maximum(size, 0), header, flags, window, tool,
                   np.zeros(len(idx), dtype=np.int8), np.full(len(idx), -1, dtype=np.int8))


def _tools(raw: RawPackets, tcp_idx: np.ndarray, start: np.ndarray, end: np.ndarray, n: int,
           out_idx: np.ndarray) -> np.ndarray:
    """Tool code of each decoded packet whose TCP payload ``[start, end)`` holds a signature."""
    code = np.full(n, -1, dtype=np.int8)
    if len(tcp_idx) == 0:
        return code[out_idx]
    limit = int(raw.off[-1] + raw.caplen[-1])
    for c in range(len(SCANNER_SIGNATURES) - 1, -1, -1):  # the first signature listed wins
        pattern = SCANNER_SIGNATURES[c][0]
        hits, pos = [], raw.buf.find(pattern, 0, limit)
        while pos >= 0:
            hits.append(pos)
            pos = raw.buf.find(pattern, pos + 1, limit)
        if not hits:
            continue
        at = np.asarray(hits, dtype=np.int64)
        j = np.searchsorted(raw.off[tcp_idx], at, side="right") - 1
        inside = (j >= 0) & (at >= start[np.maximum(j, 0)]) & (at + len(pattern) <= end[np.maximum(j, 0)])
        code[tcp_idx[j[inside]]] = c
    return code[out_idx]


def decode(raw: RawPackets, mode: str, skips: Counter) -> Packets:
    """The TCP/UDP packets of ``raw`` (in capture order); the others are counted in ``skips``."""
    v = _Views(raw)
    l3, ok = _link_layer(raw, v)
    skips["non_ip"] += int((~ok).sum())
    idx = np.flatnonzero(ok)
    l3 = l3[idx]
    inside = l3 < raw.off[idx] + raw.caplen[idx]
    skips["malformed"] += int((~inside).sum())
    idx, l3 = idx[inside], l3[inside]
    four = (v.u8[l3] >> 4) == 4
    nets = [_ipv4(raw, v, idx[four], l3[four], skips), _ipv6(raw, v, idx[~four], l3[~four], skips)]
    nets = [n for n in nets if len(n.idx)] or nets[:1]
    net = nets[0]
    if len(nets) > 1:
        net = _Net(*(np.concatenate([getattr(n, f.name) for n in nets]) for f in fields(_Net)))
        order = np.argsort(net.idx, kind="stable")  # back to capture order
        net = _Net(*(getattr(net, f.name)[order] for f in fields(_Net)))
    return _transport(raw, v, net, mode, skips)
