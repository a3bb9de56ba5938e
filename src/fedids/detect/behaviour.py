"""Host-behaviour rules beside the flow model: floods and scans whose evidence is spread over many flows.

The GRU scores a flow with the recent flows of its *source* host. Two attacks escape that view:

* a **spoofed SYN flood** sends one SYN from each of thousands of forged sources, so every source's window
  holds one payload-less flow, and CICIDS2017 (the training data) has no SYN flood at all: its DoS/DDoS
  classes are HTTP floods. A model trained on it scores such flows benign (measured: all 37,669 flows of
  ``../shared/data/pcaps/stopddos_pkt.TCP.synflood.spoofed.pcap``);
* a **scan** from a host the model has not learnt to recognise is still, by definition, one source
  probing many destinations.

So, as Snort's ``detection_filter`` and Zeek's scan policy do, this module counts over sliding time
windows what a single flow cannot show:

* flood: payload-less TCP flows (no payload either way beyond Ethernet padding, at most ``probe_max_packets`` forward packets:
  SYNs left half-open or refused) to one destination ``(ip, port)``. When ``flood_min_flows`` of them fall
  within ``flood_window_s``, each further one is labelled ``DDoS`` (family ``ddos``) if they come from
  at least ``flood_min_sources`` distinct sources, else ``DoS Syn Flood`` (family ``dos``);
* scan: one source sending payload-less flows to ``scan_min_targets`` distinct ``(ip, port)`` targets
  within ``scan_window_s`` -> ``PortScan`` for each further probe.

A third source of evidence is exact: a flow whose payload carried a scanning tool's signature (column
``tool``, filled by the packet extractor from :mod:`fedids.detect.signatures`) is a ``PortScan``, and
this one does override the model's verdict (a tool naming itself is stronger evidence than a guess from
flow statistics: the model calls nmap's HTTP script probes a DDoS).

The two rate rules only relabel flows the model called benign: a model verdict is never overridden by a
count. Every relabelled
flow carries the rule and its counts (``reasons``), which the alert's signature shows, so an analyst can
tell a model alert from a rule alert. The first ``min - 1`` flows of a flood or scan are not flagged (the
rule needs them as evidence), as with ``detection_filter``.

Time is the flows' own ``timestamp`` (capture time for pcaps and live capture; CICIDS2017 CSVs have
minute resolution, which only makes windows coarser); flows without one use the wall clock. State is
bounded in time and in count: keys idle for longer than their window are swept every :data:`_SWEEP_EVERY`
flows; at most ``max_keys`` keys per rule are kept (the least recently seen dropped first); a key keeps at
most ``max_events_per_key`` events (its newest: 4x the rule's threshold by default, so a flood of a million
probes with one timestamp holds 800 entries, not a million) and a rule at most ``max_events`` events over all
its keys (least recently seen keys dropped first). A saturated count is reported as "at least N": the rule
fired, which is all a count has to show.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from fedids.data.schema import BENIGN_LABEL
from fedids.detect.signatures import TOOL
from fedids.detect.stream import BatchScores

DDOS_LABEL, DOS_LABEL, SCAN_LABEL = "DDoS", "DoS Syn Flood", "PortScan"
_TCP = 6
_PADDING_BYTES = 6  # Ethernet padding of a minimum-size frame carrying a bare TCP header
_SWEEP_EVERY = 4096


@dataclass(frozen=True)
class BehaviourRules:
    """Thresholds of the two rules (see the module docstring). Defaults: a flood is 200 payload-less flows
    to one service within 10 s (20/s), from 20 or more sources for DDoS; a scan is 25 distinct targets
    probed within 60 s (Zeek's default is 15 ports in 5 minutes; ours is stricter on count, looser on
    time)."""

    flood_window_s: float = 10.0
    flood_min_flows: int = 200
    flood_min_sources: int = 20
    scan_window_s: float = 60.0
    scan_min_targets: int = 25
    probe_max_packets: int = 3
    max_keys: int = 65_536
    max_events: int = 262_144

    def __post_init__(self) -> None:
        if min(self.flood_window_s, self.scan_window_s) <= 0:
            raise ValueError("rule windows must be > 0 seconds")
        if (
            min(
                self.flood_min_flows,
                self.flood_min_sources,
                self.scan_min_targets,
                self.probe_max_packets,
                self.max_keys,
                self.max_events,
            )
            < 1
        ):
            raise ValueError("rule thresholds must be >= 1")

    @property
    def flood_events_per_key(self) -> int:
        return 4 * max(self.flood_min_flows, self.flood_min_sources)

    @property
    def scan_events_per_key(self) -> int:
        return 4 * self.scan_min_targets


class _SlidingCounts:
    """Per key: the events of the last ``window_s`` seconds (at most ``per_key``, the newest) and how many
    distinct values they hold; at most ``max_keys`` keys and ``max_events`` events in all."""

    def __init__(
        self, window_s: float, max_keys: int, per_key: int = 1 << 30, max_events: int = 1 << 30
    ) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self.per_key = per_key
        self.max_events = max(max_events, per_key)
        self.events = 0
        self._events: OrderedDict[Hashable, tuple[deque, Counter]] = OrderedDict()

    def add(self, key: Hashable, t: float, value: Hashable) -> tuple[int, int]:
        """Record ``value`` for ``key`` at time ``t``; returns ``(events, distinct values)`` in the window
        (events saturate at ``per_key``)."""
        entry = self._events.get(key)
        if entry is None:
            if len(self._events) >= self.max_keys:
                self._drop_oldest_key()
            entry = self._events[key] = (deque(), Counter())
        else:
            self._events.move_to_end(key)
        events, values = entry
        events.append((t, value))
        values[value] += 1
        self.events += 1
        while events and (t - events[0][0] > self.window_s or len(events) > self.per_key):
            self._pop(events, values)
        while self.events > self.max_events and len(self._events) > 1:
            self._drop_oldest_key()
        return len(events), len(values)

    def _pop(self, events: deque, values: Counter) -> None:
        _, old = events.popleft()
        self.events -= 1
        values[old] -= 1
        if not values[old]:
            del values[old]

    def _drop_oldest_key(self) -> None:
        _, (events, _) = self._events.popitem(last=False)
        self.events -= len(events)

    def sweep(self, now: float) -> None:
        """Forget keys whose newest event left the window."""
        stale = [k for k, (events, _) in self._events.items() if now - events[-1][0] > self.window_s]
        for key in stale:
            self.events -= len(self._events.pop(key)[0])

    def __len__(self) -> int:
        return len(self._events)


def _seconds(frame: pd.DataFrame) -> np.ndarray:
    """Flow times in seconds; the wall clock where a flow has none."""
    now = time.time()
    if "timestamp" not in frame.columns:
        return np.full(len(frame), now)
    stamps = pd.to_datetime(frame["timestamp"], errors="coerce")
    seconds = stamps.to_numpy(dtype="datetime64[us]").astype(np.int64) / 1e6
    return np.where(stamps.isna().to_numpy(), now, seconds)


def _column(frame: pd.DataFrame, *names: str) -> np.ndarray | None:
    for name in names:
        if name in frame.columns:
            return frame[name].to_numpy()
    return None


class BehaviourDetector:
    """Apply :class:`BehaviourRules` to a stream of flow batches; keeps the sliding-window state."""

    def __init__(self, rules: BehaviourRules | None = None) -> None:
        self.rules = rules or BehaviourRules()
        r = self.rules
        self._flood = _SlidingCounts(r.flood_window_s, r.max_keys, r.flood_events_per_key, r.max_events)
        self._scan = _SlidingCounts(r.scan_window_s, r.max_keys, r.scan_events_per_key, r.max_events)
        self._since_sweep = 0
        self.relabelled: Counter[str] = Counter()  # flows relabelled, by rule label

    def observe(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the rules over ``frame`` (canonical flow frame, arrival order).

        Returns ``(labels, reasons, signature)``: object arrays ``(n,)`` with the rule's label and a
        one-line reason for flows a rule flags (``None`` elsewhere), and a bool array that is True where
        the evidence is a tool signature. Flows without the metadata a rule needs (addresses, protocol)
        are never flagged by the rate rules.
        """
        n = len(frame)
        labels = np.full(n, None, dtype=object)
        reasons = np.full(n, None, dtype=object)
        signature = np.zeros(n, dtype=bool)
        if TOOL in frame.columns:
            tools = frame[TOOL].to_numpy(dtype=object)
            signature = np.array([isinstance(t, str) and bool(t) for t in tools], dtype=bool)
            for i in np.flatnonzero(signature):
                labels[i] = SCAN_LABEL
                reasons[i] = f"payload carries the {tools[i]} scanner signature"
        src, dst = _column(frame, "src_ip"), _column(frame, "dst_ip")
        port = _column(frame, "dst_port", "Destination Port")
        proto = _column(frame, "protocol")
        if n == 0 or src is None or dst is None or port is None or proto is None:
            return labels, reasons, signature
        fwd_packets = frame["Total Fwd Packets"].to_numpy(dtype=np.float64)
        packets = fwd_packets + frame["Total Backward Packets"].to_numpy(dtype=np.float64)
        payload = frame["Total Length of Fwd Packets"].to_numpy(dtype=np.float64) + frame[
            "Total Length of Bwd Packets"
        ].to_numpy(dtype=np.float64)
        proto_num = pd.to_numeric(pd.Series(proto), errors="coerce").to_numpy()
        # "Payload-less" allows CICFlowMeter's count of Ethernet padding: a bare 54-byte TCP segment is
        # padded to the 60-byte minimum frame, 6 bytes of "payload" (see docs/extractor.md).
        probe = (
            (proto_num == _TCP)
            & (payload <= _PADDING_BYTES * packets)
            & (fwd_packets <= self.rules.probe_max_packets)
            & ~signature
        )
        t = _seconds(frame)
        r = self.rules
        for i in np.flatnonzero(probe):
            target = (dst[i], port[i])
            flows, sources = self._flood.add(target, t[i], src[i])
            if flows >= r.flood_min_flows:
                label = DDOS_LABEL if sources >= r.flood_min_sources else DOS_LABEL
                labels[i] = label
                most = "at least " if flows >= r.flood_events_per_key else ""
                reasons[i] = (
                    f"{most}{flows} payload-less TCP flows to {dst[i]}:{port[i]} from {most}{sources} "
                    f"sources in {r.flood_window_s:g} s"
                )
                continue
            probes, targets = self._scan.add(src[i], t[i], target)
            if targets >= r.scan_min_targets:
                labels[i] = SCAN_LABEL
                reasons[i] = f"{src[i]} probed {targets} targets in {r.scan_window_s:g} s"
        self._since_sweep += n
        if self._since_sweep >= _SWEEP_EVERY:
            self._since_sweep = 0
            newest = float(t.max())
            self._flood.sweep(newest)
            self._scan.sweep(newest)
        return labels, reasons, signature

    def state_sizes(self) -> dict[str, int]:
        """Keys and events held by each rule (bounded by :class:`BehaviourRules`)."""
        return {
            "flood_keys": len(self._flood),
            "flood_events": self._flood.events,
            "scan_keys": len(self._scan),
            "scan_events": self._scan.events,
        }

    def apply(self, frame: pd.DataFrame, scores: BatchScores) -> BatchScores:
        """``scores`` with tool-signature flows, and flows the model called benign that a rate rule
        flags, turned into alerts."""
        labels, reasons, signature = self.observe(frame)
        flagged = np.array([x is not None for x in labels], dtype=bool) & (
            (scores.labels == BENIGN_LABEL) | signature
        )
        if not flagged.any():
            return scores
        new_labels = scores.labels.copy()
        new_labels[flagged] = labels[flagged]
        kept = np.full(len(labels), None, dtype=object)
        kept[flagged] = reasons[flagged]
        # label_probability stays "the model's probability of the label": 0 for a class it does not know
        probability = scores.label_probability.copy()
        for row in np.flatnonzero(flagged):
            label = labels[row]
            probability[row] = (
                scores.proba[row, scores.classes.index(label)] if label in scores.classes else 0.0
            )
        self.relabelled.update(labels[flagged].tolist())
        return replace(
            scores,
            labels=new_labels,
            is_alert=scores.is_alert | flagged,
            label_probability=probability,
            reasons=kept,
        )
