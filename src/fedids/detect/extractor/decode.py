"""Decoding packets as arrays: link layer, IPv4/IPv6, TCP/UDP headers of every packet at once.

Each layer's header is one gather of fixed-size records from the capture buffer at per-packet
offsets, after which every header field is a column; a packet's layers are peeled with boolean masks. The rules are those of the per-packet decoder this replaces (dpkt):

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

TCP payloads that are HTTP requests (they begin with a method) are also searched for scanning tools'
User-Agent signatures (:mod:`fedids.detect.signatures`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields

import numpy as np

from fedids.detect.extractor.capture import (
    DLT_EN10MB,
    DLT_IPV4,
    DLT_IPV6,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_RAW,
    DLT_RAW_BSD,
    RawPackets,
)
from fedids.detect.extractor.capture import rows as _rows
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


def _be16(m: np.ndarray, col: int) -> np.ndarray:
    """Big-endian 16-bit integer at column ``col`` of a row matrix, as int64."""
    if m.flags.c_contiguous and m.shape[1] % 2 == 0 and col % 2 == 0:
        return m.view(">u2")[:, col // 2].astype(np.int64)
    return (m[:, col].astype(np.int64) << 8) | m[:, col + 1]


def _be(m: np.ndarray, col: int, width: int) -> np.ndarray:
    """Big-endian unsigned integer of ``width`` (4 or 8) bytes at column ``col``, as uint64."""
    if m.flags.c_contiguous and m.shape[1] % width == 0 and col % width == 0:
        return m.view(f">u{width}")[:, col // width].astype(np.uint64)
    return np.ascontiguousarray(m[:, col : col + width]).view(f">u{width}").ravel().astype(np.uint64)


def _u16_at(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    return _be16(_rows(data, at, 2), 0)


def _ethernet(data: np.ndarray, off: np.ndarray, cap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IP header offset and whether there is one, for Ethernet frames (any number of VLAN tags)."""
    head = _rows(data, off, 24)
    p = off + 12
    et = _be16(head, 12)
    for k in range(_MAX_VLAN_TAGS):
        tagged = np.isin(et, _VLAN_TAGS)
        if not tagged.any():
            break
        p = np.where(tagged, p + 4, p)
        readable = p + 2 - off <= cap
        nxt = _be16(head, 16 + 4 * k) if k < 2 else _u16_at(data, p)
        et = np.where(tagged, np.where(readable, nxt, 0), et)
    return p + 2, (et == _ETH_IPV4) | (et == _ETH_IPV6)


def _link_layer(raw: RawPackets) -> tuple[np.ndarray, np.ndarray]:
    """``(offset of the IP header, packet has an IPv4/IPv6 header there)`` per packet."""
    data, off, cap, link = raw.data, raw.off, raw.caplen, raw.linktype
    l3 = off.copy()
    ok = np.zeros(len(off), dtype=bool)
    eth = (link == DLT_EN10MB) & (cap >= 14)
    if eth.all():
        return _ethernet(data, off, cap)
    if eth.any():
        i = np.flatnonzero(eth)
        l3[i], ok[i] = _ethernet(data, off[i], cap[i])
    for types, skip in (((DLT_RAW, DLT_RAW_BSD, DLT_IPV4, DLT_IPV6), 0), ((DLT_NULL, DLT_LOOP), 4)):
        i = np.flatnonzero(np.isin(link, types) & (cap > skip))
        l3[i] = off[i] + skip
        ok[i] = np.isin(data[l3[i]] >> 4, (4, 6))
    for dlt, at, start in ((DLT_LINUX_SLL, 14, 16), (DLT_LINUX_SLL2, 0, 20)):
        i = np.flatnonzero((link == dlt) & (cap >= at + 2))
        l3[i] = off[i] + start
        ok[i] = np.isin(_u16_at(data, off[i] + at), (_ETH_IPV4, _ETH_IPV6))
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
    ip_hdr: np.ndarray  # IP header bytes (IPv6: 40 + extension headers)
    seg: np.ndarray  # offset of the transport header
    seg_end: np.ndarray  # end of the transport segment's captured bytes (within the IP length)
    declared: np.ndarray  # transport bytes the IP header declares, -1 when it declares none


def _ipv4(raw: RawPackets, idx: np.ndarray, l3: np.ndarray, skips: Counter) -> _Net:
    end = raw.off[idx] + raw.caplen[idx]
    h = _rows(raw.data, l3, 20)
    ihl = (h[:, 0] & 0x0F).astype(np.int64) * 4
    ok = (end - l3 >= 20) & (ihl >= 20)
    skips["malformed"] += int((~ok).sum())
    frag = ok & ((_be16(h, 6) & 0x1FFF) != 0)
    skips["fragment"] += int(frag.sum())
    k = np.flatnonzero(ok & ~frag)
    if len(k) < len(idx):
        idx, l3, end, ihl, h = idx[k], l3[k], end[k], ihl[k], h[k]
    total = _be16(h, 2)
    seg_end = np.where(total > 0, np.minimum(l3 + total, end), end)
    zeros = np.zeros(len(idx), dtype=np.uint64)
    return _Net(
        idx,
        np.zeros(len(idx), dtype=bool),
        zeros,
        _be(h, 12, 4),
        zeros,
        _be(h, 16, 4),
        h[:, 9].astype(np.int64),
        ihl,
        l3 + ihl,
        seg_end,
        np.where(total > 0, total - ihl, -1),
    )


def _ipv6(raw: RawPackets, idx: np.ndarray, l3: np.ndarray, skips: Counter) -> _Net:
    data = raw.data
    end = raw.off[idx] + raw.caplen[idx]
    ok = end - l3 >= 40
    skips["malformed"] += int((~ok).sum())
    idx, l3, end = idx[ok], l3[ok], end[ok]
    h = _rows(data, l3, 40)
    plen = _be16(h, 4)
    seg_end = np.where(plen > 0, np.minimum(l3 + 40 + plen, end), end)
    nxt = h[:, 6].astype(np.int64)
    q = l3 + 40
    bad = np.zeros(len(idx), dtype=bool)
    frag = np.zeros(len(idx), dtype=bool)
    for _ in range(_MAX_IP6_EXT):
        ext = np.isin(nxt, _IP6_EXT) & ~bad
        if not ext.any():
            break
        is_frag = ext & (nxt == 44)
        short = ext & (q + np.where(is_frag, 8, 2) > seg_end)
        bad |= short
        ext &= ~short
        qs = np.where(ext, q, 0)
        hlen = data[qs + 1].astype(np.int64)
        length = np.select([nxt == 44, nxt == 51], [8, (hlen + 2) * 4], (hlen + 1) * 8)
        frag |= is_frag & ~short & ((_u16_at(data, qs + 2) >> 3) != 0)
        nxt = np.where(ext, data[qs].astype(np.int64), nxt)
        q = np.where(ext, q + length, q)
    bad |= np.isin(nxt, _IP6_EXT)  # more extension headers than anyone sends
    skips["malformed"] += int(bad.sum())
    frag &= ~bad
    skips["fragment"] += int(frag.sum())
    keep = ~bad & ~frag
    idx, l3, seg_end, q, nxt, plen, h = (a[keep] for a in (idx, l3, seg_end, q, nxt, plen, h))
    ext_len = q - l3 - 40
    return _Net(
        idx,
        np.ones(len(idx), dtype=bool),
        _be(h, 8, 8),
        _be(h, 16, 8),
        _be(h, 24, 8),
        _be(h, 32, 8),
        nxt,
        40 + ext_len,
        q,
        seg_end,
        np.where(plen > 0, plen - ext_len, -1),
    )


def _transport(raw: RawPackets, net: _Net, mode: str, skips: Counter) -> Packets:
    avail = net.seg_end - net.seg
    tcp = net.proto == TCP
    udp = net.proto == UDP
    skips["not_tcp_udp"] += int((~tcp & ~udp).sum())
    t = _rows(raw.data, net.seg, 16)
    doff = (t[:, 12] >> 4).astype(np.int64) * 4
    header = np.where(tcp, doff, 8)
    ok = (tcp & (avail >= 20) & (doff >= 20)) | (udp & (avail >= 8))
    skips["malformed"] += int(((tcp | udp) & ~ok).sum())
    k = np.flatnonzero(ok)
    if len(k) < len(ok):
        t, avail, header, tcp = t[k], avail[k], header[k], tcp[k]
        net = _Net(*(getattr(net, f.name)[k] for f in fields(_Net)))
    idx = net.idx
    if mode == "cicids2017":  # every byte on the wire after the transport header
        size = raw.wirelen[idx] - (net.seg - raw.off[idx]) - header
    else:
        size = np.where(net.declared >= 0, net.declared - header, avail - header)
    flags = np.where(tcp, t[:, 13], 0).astype(np.uint8)
    window = np.where(tcp, _be16(t, 14), -1)
    return Packets(
        raw.ts_us[idx],
        net.v6,
        net.src_hi,
        net.src_lo,
        net.dst_hi,
        net.dst_lo,
        _be16(t, 0),
        _be16(t, 2),
        net.proto,
        np.maximum(size, 0),
        header,
        flags,
        window,
        _tools(raw.data, tcp, net.seg + header, net.seg_end),
        np.zeros(len(idx), dtype=np.int8),
        np.full(len(idx), -1, dtype=np.int8),
    )


_MIN_SIGNATURE = min(len(p) for p, _ in SCANNER_SIGNATURES)


def _tools(data: np.ndarray, tcp: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Tool code of each packet whose TCP payload ``data[start:end]`` is an HTTP request carrying a
    scanner's signature (-1 for the others). The signatures are User-Agent strings, so only payloads
    that begin like a request line (an upper-case method such as ``GET``, ``PROPFIND`` or nmap's
    random ``XFOC`` probe) are searched."""
    code = np.full(len(tcp), -1, dtype=np.int8)
    cand = np.flatnonzero(tcp & (end - start >= _MIN_SIGNATURE + 4))
    if len(cand) == 0:
        return code
    head = _rows(data, start[cand], 4)
    upper = (head >= ord("A")) & (head <= ord("Z"))
    cand = cand[upper[:, :3].all(axis=1) & (upper[:, 3] | (head[:, 3] == ord(" ")))]
    for i, a, b in zip(cand.tolist(), start[cand].tolist(), end[cand].tolist()):
        payload = data[a:b].tobytes()
        for c, (pattern, _) in enumerate(SCANNER_SIGNATURES):
            if pattern in payload:
                code[i] = c
                break
    return code


def decode(raw: RawPackets, mode: str, skips: Counter) -> Packets:
    """The TCP/UDP packets of ``raw`` (in capture order); the others are counted in ``skips``."""
    l3, ok = _link_layer(raw)
    skips["non_ip"] += int((~ok).sum())
    idx = np.flatnonzero(ok)
    l3 = l3[idx]
    inside = l3 < raw.off[idx] + raw.caplen[idx]
    skips["malformed"] += int((~inside).sum())
    idx, l3 = idx[inside], l3[inside]
    four = (raw.data[l3] >> 4) == 4
    if four.all():
        nets = [_ipv4(raw, idx, l3, skips)]
    else:
        nets = [_ipv4(raw, idx[four], l3[four], skips), _ipv6(raw, idx[~four], l3[~four], skips)]
    nets = [n for n in nets if len(n.idx)] or nets[:1]
    net = nets[0]
    if len(nets) > 1:
        net = _Net(*(np.concatenate([getattr(n, f.name) for n in nets]) for f in fields(_Net)))
        order = np.argsort(net.idx, kind="stable")  # back to capture order
        net = _Net(*(getattr(net, f.name)[order] for f in fields(_Net)))
    return _transport(raw, net, mode, skips)
