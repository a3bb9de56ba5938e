"""Packets to bidirectional flows, on arrays: CICFlowMeter's flow boundaries without a per-packet loop.

Packets are grouped into *conversations* (same unordered 5-tuple; one stable sort on a 64-bit hash of
the 5-tuple, checked for collisions) and, inside a conversation, in time order. A conversation is cut
into flows by the rules of CICFlowMeter as netflower 1.1.0 implements them (the extractor's
semantics before this module):

* a packet more than ``idle`` after the previous one of its conversation starts a new flow, whose
  source is that packet's sender;
* a packet more than ``active`` after its flow's first packet starts a new flow with the *same*
  source and destination (the 120 s cut of CICIDS2017: a continuing connection keeps its direction);
* a TCP packet with RST, or with FIN once both sides have sent a FIN, ends its flow (it is the flow's
  last packet); after that, TCP packets of the conversation within ``linger`` (1 s) that are not a
  bare SYN are leftovers of the closed connection and belong to no flow (counted as ``after_close``).

Each of these is a "first index at or after i where ..." question, answered for every packet at once
with reversed running minima (and a vectorised binary search for the time-based ones), so the flows
of all conversations are found together, one flow per conversation per step.

The same :class:`FlowTable` serves files and live capture: :meth:`FlowTable.feed` takes packets as
they come and returns the flows that have ended by ``now`` (closed, or silent for ``idle``, or past
``active``); the packets of flows still open, and one *ghost* packet per conversation whose recent end
still matters (a close whose leftovers may follow, a 120-s cut that the next packet continues), are
carried to the next call. :meth:`FlowTable.flush` ends everything (end of file or capture).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedids.data.features import ACK, FIN, RST, SYN, FlowPackets
from fedids.detect.extractor.decode import Packets

LINGER_US = 1_000_000
"""Leftover packets of a closed TCP connection are ignored this long after the close (netflower's
``TCP_CLOSE_LINGER``); CICFlowMeter-V3 made them into flows of their own."""

_OPEN, _IDLE, _CAP, _CLOSED = 0, 1, 2, 3
_GHOST_CLOSE, _GHOST_CAP = 1, 2
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@dataclass
class FlowBatch:
    """Finished flows in the order they ended: their packets and who talked to whom.

    ``packets`` holds every flow's packets (:class:`~fedids.data.features.FlowPackets`); per flow:
    source and destination address halves and ports (the source is the sender of the flow's first
    packet, or of the flow a 120-s cut continues), ``v6``, ``proto``, ``start_us`` (first packet,
    microseconds since the epoch) and ``tool`` (a :data:`~fedids.detect.extractor.decode.TOOLS` code,
    -1 for none).
    """

    packets: FlowPackets
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    v6: np.ndarray
    proto: np.ndarray
    start_us: np.ndarray
    tool: np.ndarray

    def __len__(self) -> int:
        return len(self.start_us)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(31))
    x = x * _M1
    x = x ^ (x >> np.uint64(29))
    return x * _M2


class _Sorted:
    """Packets in conversation order, with the per-packet "next index where ..." arrays."""

    def __init__(self, p: Packets) -> None:
        a_is_src = (p.src_hi < p.dst_hi) | (
            (p.src_hi == p.dst_hi) & ((p.src_lo < p.dst_lo) | ((p.src_lo == p.dst_lo) & (p.sport <= p.dport)))
        )
        words = [
            np.where(a_is_src, p.src_hi, p.dst_hi),
            np.where(a_is_src, p.src_lo, p.dst_lo),
            np.where(a_is_src, p.dst_hi, p.src_hi),
            np.where(a_is_src, p.dst_lo, p.src_lo),
            (
                (p.proto.astype(np.uint64) << np.uint64(33))
                | (p.v6.astype(np.uint64) << np.uint64(32))
                | (np.where(a_is_src, p.sport, p.dport).astype(np.uint64) << np.uint64(16))
                | np.where(a_is_src, p.dport, p.sport).astype(np.uint64)
            ),
        ]
        h = np.zeros(len(p), dtype=np.uint64)
        for w in words:
            h = _mix(h ^ w)
        monotonic = len(p) < 2 or bool((p.ts[1:] >= p.ts[:-1]).all())
        order = np.argsort(h, kind="stable") if monotonic else np.lexsort((p.ts, h))
        hs = h[order]
        first = np.ones(len(p), dtype=bool)
        first[1:] = hs[1:] != hs[:-1]
        if any(((w[order][1:] != w[order][:-1]) & ~first[1:]).any() for w in words):
            order = np.lexsort((p.ts, *words[::-1]))  # a hash collision: exact sort
            first[1:] = False
            for w in words:
                ws = w[order]
                first[1:] |= ws[1:] != ws[:-1]
        self.order = order
        self.n = n = len(p)
        self.ts = p.ts[order]
        self.from_a = a_is_src[order]
        self.ghost = p.ghost[order]
        orient = p.orient[order]
        self.start_orient = np.where(orient >= 0, orient.astype(bool), self.from_a)
        flags = p.flags[order]
        self.first = first
        conv = np.cumsum(first) - 1
        self.conv_end = np.append(np.flatnonzero(first)[1:], n)[conv]
        self.conv_end = np.append(self.conv_end, n)
        self.ts_pad = np.append(self.ts, np.iinfo(np.int64).max)
        fin = (flags & FIN) != 0
        self.next_rst = self._next(((flags & RST) != 0) | (self.ghost == _GHOST_CLOSE))
        self.next_fin_a = self._next(fin & self.from_a)
        self.next_fin_b = self._next(fin & ~self.from_a)
        self.next_syn = self._next(((flags & SYN) != 0) & ((flags & ACK) == 0))

    def _next(self, mask: np.ndarray) -> np.ndarray:
        """``out[i]``: first index ``j >= i`` with ``mask[j]``, ``n`` if none (``len(out) == n + 1``)."""
        pos = np.where(mask, np.arange(self.n), self.n)
        return np.append(np.minimum.accumulate(pos[::-1])[::-1], self.n)

    def boundaries(self, idle_us: int) -> np.ndarray:
        """``out[i]``: first ``j > i`` that starts a conversation or follows an idle gap."""
        cut = self.first.copy()
        cut[1:] |= (self.ts[1:] - self.ts[:-1]) > idle_us
        nxt = self._next(cut)
        return np.append(nxt[1:], self.n)

    def first_after(self, lo: np.ndarray, hi: np.ndarray, target: np.ndarray) -> np.ndarray:
        """First index in ``[lo, hi)`` whose time exceeds ``target`` (``hi`` if none); times are
        non-decreasing inside a conversation."""
        lo, hi = lo.copy(), hi.copy()
        while True:
            live = lo < hi
            if not live.any():
                return lo
            mid = (lo + hi) >> 1
            below = live & (self.ts_pad[mid] <= target)
            lo = np.where(below, mid + 1, lo)
            hi = np.where(live & ~below, mid, hi)


@dataclass
class _Flows:
    """Flows found in a :class:`_Sorted`: first and one-past-last packet, source side, how each
    ended, the closing packet, and whether it is its conversation's last."""

    start: np.ndarray
    end: np.ndarray
    src_a: np.ndarray
    kind: np.ndarray
    close: np.ndarray
    last: np.ndarray


def _segment(s: _Sorted, idle_us: int, active_us: int, linger_us: int) -> _Flows:
    boundary = s.boundaries(idle_us)
    cur = np.flatnonzero(s.first)
    src_a = s.start_orient[cur]
    parts: list[tuple[np.ndarray, ...]] = []
    while len(cur):
        stop = boundary[cur]
        cap = stop.copy()
        long = s.ts[stop - 1] - s.ts[cur] > active_us
        if long.any():
            cap[long] = s.first_after(cur[long] + 1, stop[long], s.ts[cur[long]] + active_us)
        ghost_cap = s.ghost[cur] == _GHOST_CAP
        cap[ghost_cap] = np.minimum(cap[ghost_cap], cur[ghost_cap] + 1)
        close = np.minimum(s.next_rst[cur], np.maximum(s.next_fin_a[cur], s.next_fin_b[cur]))
        limit = np.minimum(stop, cap)
        closed = close < limit
        capped = ~closed & (cap < stop)
        end = np.where(closed, close + 1, limit)
        kind = np.select([closed, capped, stop < s.conv_end[cur]], [_CLOSED, _CAP, _IDLE], _OPEN)
        nxt = end.copy()
        if closed.any():
            c = close[closed]
            after = s.first_after(c + 1, s.conv_end[c], s.ts[c] + linger_us)
            nxt[closed] = np.minimum(s.next_syn[c + 1], after)
        alive = nxt < s.conv_end[cur]
        parts.append((cur, end, src_a, kind, close, ~alive))
        nxt_a = np.where(capped, src_a, s.start_orient[np.minimum(nxt, s.n - 1)])
        cur, src_a = nxt[alive], nxt_a[alive]
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return _Flows(empty, empty, empty.astype(bool), empty, empty, empty.astype(bool))
    cols = [np.concatenate(c) for c in zip(*parts)]
    return _Flows(*cols)


def _ranges(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``concatenate([arange(a, b) for a, b in zip(start, end)])``."""
    lengths = end - start
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(start - offsets, lengths) + np.arange(total)


class FlowTable:
    """Flows from packets fed in time order (see the module docstring).

    Parameters
    ----------
    idle_us, active_us : the idle and active (duration) timeouts in microseconds.
    linger_us : how long leftovers of a closed TCP connection are ignored.
    """

    def __init__(self, idle_us: int, active_us: int, linger_us: int = LINGER_US) -> None:
        self.idle_us, self.active_us, self.linger_us = int(idle_us), int(active_us), int(linger_us)
        self.pending: Packets | None = None
        self.after_close = 0

    def feed(self, packets: Packets | None, now_us: int) -> FlowBatch | None:
        """Add ``packets``; return the flows that have ended by ``now_us`` (None if none)."""
        return self._run(Packets.concat([self.pending, packets]), now_us, final=False)

    def flush(self, packets: Packets | None = None) -> FlowBatch | None:
        """Add ``packets`` (if any) and end every flow."""
        data = Packets.concat([self.pending, packets])
        self.pending = None
        if data is None or len(data) == 0:
            return None
        return self._run(data, int(data.ts.max()), final=True)

    def _run(self, p: Packets | None, now_us: int, final: bool) -> FlowBatch | None:
        if p is None or len(p) == 0:
            self.pending = None
            return None
        s = _Sorted(p)
        f = _segment(s, self.idle_us, self.active_us, self.linger_us)
        real = s.ghost[f.start] == 0
        latest = s.ts[f.end - 1]
        idle_out = now_us - latest > self.idle_us
        cap_out = now_us - s.ts[f.start] > self.active_us
        open_ = f.kind == _OPEN
        done = ~open_ | final | idle_out | cap_out
        in_flows = int((f.end - f.start)[real].sum())
        self.after_close += int((s.ghost == 0).sum()) - in_flows
        if not final:
            self._carry(p, s, f, open_ & ~done & real, latest, idle_out, cap_out, now_us)
        emit = done & real
        if not emit.any():
            return None
        return self._batch(p, s, f, emit, latest, now_us)

    def _carry(
        self,
        p: Packets,
        s: _Sorted,
        f: _Flows,
        keep_open: np.ndarray,
        latest: np.ndarray,
        idle_out: np.ndarray,
        cap_out: np.ndarray,
        now_us: int,
    ) -> None:
        """Keep the packets of open flows and ghosts of recent ends for the next call."""
        rows = _ranges(f.start[keep_open], f.end[keep_open])
        lengths = (f.end - f.start)[keep_open]
        orient = np.full(len(rows), -1, dtype=np.int8)
        orient[np.cumsum(lengths) - lengths] = f.src_a[keep_open]  # a carried flow keeps its source
        close_ghost = f.last & (f.kind == _CLOSED) & (now_us - s.ts_pad[f.close] <= self.linger_us)
        ghost = s.ghost[f.start]
        cap_ghost = (f.kind == _OPEN) & ~idle_out & ((ghost == _GHOST_CAP) | ((ghost == 0) & cap_out))
        ghost_rows = np.concatenate([f.close[close_ghost], f.end[cap_ghost] - 1])
        carried = p.take(s.order[np.concatenate([rows, ghost_rows])])
        carried.orient = np.concatenate(
            [orient, np.full(close_ghost.sum(), -1, dtype=np.int8), f.src_a[cap_ghost].astype(np.int8)]
        )
        carried.ghost = np.concatenate(
            [
                np.zeros(len(rows), dtype=np.int8),
                np.full(close_ghost.sum(), _GHOST_CLOSE, dtype=np.int8),
                np.full(cap_ghost.sum(), _GHOST_CAP, dtype=np.int8),
            ]
        )
        n_ghost = len(ghost_rows)
        if n_ghost:
            carried.flags[len(rows) :] = 0
            carried.tool[len(rows) :] = -1
        by_time = np.argsort(carried.ts, kind="stable")
        self.pending = carried.take(by_time) if len(carried) else None

    def _batch(
        self, p: Packets, s: _Sorted, f: _Flows, emit: np.ndarray, latest: np.ndarray, now_us: int
    ) -> FlowBatch:
        """The flows ``emit`` in the order they ended (flows still open at the end last, by start)."""
        start, end, src_a = f.start[emit], f.end[emit], f.src_a[emit]
        ended = np.where(
            f.kind[emit] == _CLOSED,
            s.ts_pad[f.close[emit]],
            np.minimum(latest[emit] + self.idle_us, s.ts[start] + self.active_us),
        )
        ended = np.where(ended > now_us, np.iinfo(np.int64).max, ended)
        order = np.lexsort((start, s.ts[start], ended))
        start, end, src_a = start[order], end[order], src_a[order]
        rows = _ranges(start, end)
        lengths = end - start
        flow_of = np.repeat(np.arange(len(start)), lengths)
        orig = s.order[rows]
        fwd = s.from_a[rows] == src_a[flow_of]
        packets = FlowPackets(
            starts=np.cumsum(lengths) - lengths,
            ts_us=p.ts[orig].astype(np.float64),
            size=p.size[orig].astype(np.float64),
            fwd=fwd,
            flags=p.flags[orig],
            header=p.header[orig].astype(np.float64),
            window=p.window[orig].astype(np.float64),
        )
        first = s.order[start]
        same = s.from_a[start] == src_a  # the first packet went source -> destination
        tool = np.full(len(start), -1, dtype=np.int8)
        hit = np.flatnonzero(p.tool[orig] >= 0)
        if len(hit):
            flows_hit, at = np.unique(flow_of[hit], return_index=True)
            tool[flows_hit] = p.tool[orig[hit[at]]]

        def pick(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.where(same, a[first], b[first])

        return FlowBatch(
            packets,
            pick(p.src_hi, p.dst_hi),
            pick(p.src_lo, p.dst_lo),
            pick(p.dst_hi, p.src_hi),
            pick(p.dst_lo, p.src_lo),
            pick(p.sport, p.dport),
            pick(p.dport, p.sport),
            p.v6[first],
            p.proto[first],
            s.ts[start],
            tool,
        )
