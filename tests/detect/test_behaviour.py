"""Host-behaviour rules (fedids.detect.behaviour) on hand-built flow frames with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedids.data.schema import FEATURES
from fedids.detect.alerts import RULE_SIGNATURE_OFFSET, build_alerts, signature_id
from fedids.detect.behaviour import DDOS_LABEL, DOS_LABEL, SCAN_LABEL, BehaviourDetector, BehaviourRules
from fedids.detect.signatures import TOOL, conversation_key, match_scanner
from fedids.detect.stream import BatchScores, decide

CLASSES = ["BENIGN", "DDoS", "PortScan"]


def flows(src, dst, port, seconds, *, payload=0.0, fwd_packets=1.0, protocol=6) -> pd.DataFrame:
    """A canonical flow frame: one row per (src, dst, port, second) given as equal-length lists."""
    n = len(src)
    frame = pd.DataFrame(np.zeros((n, len(FEATURES)), dtype=np.float32), columns=list(FEATURES))
    frame["Total Fwd Packets"] = fwd_packets
    frame["Total Length of Fwd Packets"] = payload
    frame = frame.assign(
        src_ip=src,
        dst_ip=dst,
        dst_port=port,
        protocol=protocol,
        timestamp=pd.Timestamp("2024-01-01") + pd.to_timedelta(seconds, unit="s"),
        seq=np.arange(n),
    )
    return frame


def benign_scores(n: int) -> BatchScores:
    proba = np.tile(np.array([[0.9, 0.05, 0.05]], dtype=np.float32), (n, 1))
    labels, score, p = decide(proba, CLASSES, None)
    return BatchScores(
        labels=labels,
        is_alert=labels != "BENIGN",
        attack_score=score,
        label_probability=p,
        proba=proba,
        classes=CLASSES,
        model="m",
    )


RULES = BehaviourRules(
    flood_window_s=10, flood_min_flows=50, flood_min_sources=20, scan_window_s=60, scan_min_targets=10
)


def test_spoofed_syn_flood_is_ddos_from_the_threshold_on():
    n = 120
    frame = flows(
        [f"10.0.{i // 250}.{i % 250}" for i in range(n)],
        ["192.0.2.1"] * n,
        [80] * n,
        np.linspace(0, 5, n),
        payload=6.0,
    )  # 6 bytes: Ethernet padding, still payload-less
    labels, reasons, _ = BehaviourDetector(RULES).observe(frame)
    assert labels[:49].tolist() == [None] * 49  # the evidence
    assert labels[49:].tolist() == [DDOS_LABEL] * (n - 49)
    assert reasons[49] == "50 payload-less TCP flows to 192.0.2.1:80 from 50 sources in 10 s"


def test_single_source_flood_is_dos_and_slow_floods_are_not_flagged():
    n = 60
    fast = flows(["198.51.100.7"] * n, ["192.0.2.1"] * n, [443] * n, np.linspace(0, 2, n))
    labels, _, _ = BehaviourDetector(RULES).observe(fast)
    assert set(labels[49:]) == {DOS_LABEL}
    # 60 flows spread over 10 minutes never reach 50 within 10 s (and one port is no scan)
    slow = flows(["198.51.100.7"] * n, ["192.0.2.1"] * n, [443] * n, np.linspace(0, 600, n))
    assert set(BehaviourDetector(RULES).observe(slow)[0]) == {None}


def test_scan_counts_distinct_targets_of_one_source_in_the_window():
    ports = list(range(1, 31))
    frame = flows(["203.0.113.5"] * 30, ["192.0.2.9"] * 30, ports, np.arange(30.0))
    labels, reasons, _ = BehaviourDetector(RULES).observe(frame)
    assert labels[:9].tolist() == [None] * 9 and set(labels[9:]) == {SCAN_LABEL}
    assert reasons[9] == "203.0.113.5 probed 10 targets in 60 s"
    # the same 30 probes one every 10 s: at most 7 targets fall within 60 s
    spread = flows(["203.0.113.5"] * 30, ["192.0.2.9"] * 30, ports, np.arange(30.0) * 10)
    assert set(BehaviourDetector(RULES).observe(spread)[0]) == {None}


def test_flows_with_payload_udp_or_no_metadata_are_never_counted():
    n = 200
    many = [f"10.1.0.{i % 250}" for i in range(n)]
    http = flows(many, ["192.0.2.1"] * n, [80] * n, np.linspace(0, 1, n), payload=400.0, fwd_packets=5.0)
    udp = flows(many, ["192.0.2.1"] * n, [53] * n, np.linspace(0, 1, n), protocol=17)
    detector = BehaviourDetector(RULES)
    assert set(detector.observe(http)[0]) == {None} and set(detector.observe(udp)[0]) == {None}
    bare = http.drop(columns=["src_ip", "dst_ip", "dst_port", "protocol"])
    assert set(BehaviourDetector(RULES).observe(bare)[0]) == {None}


def test_state_carries_across_batches():
    n = 80
    frame = flows([f"10.2.0.{i}" for i in range(n)], ["192.0.2.1"] * n, [80] * n, np.linspace(0, 3, n))
    detector = BehaviourDetector(RULES)
    first, second = detector.observe(frame.iloc[:40])[0], detector.observe(frame.iloc[40:])[0]
    assert set(first) == {None} and second[:9].tolist() == [None] * 9 and set(second[9:]) == {DDOS_LABEL}


def test_apply_never_overrides_the_model_and_alerts_name_the_rule():
    n = 60
    frame = flows([f"10.3.0.{i}" for i in range(n)], ["192.0.2.1"] * n, [80] * n, np.linspace(0, 1, n))
    scores = benign_scores(n)
    labels = scores.labels.copy()
    labels[55] = "PortScan"  # the model's own verdict on one flow
    scores = BatchScores(
        labels=labels,
        is_alert=labels != "BENIGN",
        attack_score=scores.attack_score,
        label_probability=scores.label_probability,
        proba=scores.proba,
        classes=CLASSES,
        model="m",
    )
    merged = BehaviourDetector(RULES).apply(frame, scores)
    assert merged.labels[55] == "PortScan" and merged.reasons[55] is None
    assert merged.is_alert[49:].all() and not merged.is_alert[:49].any()
    assert merged.label_probability[50] == pytest.approx(0.05)  # the model's P(DDoS), not P(BENIGN)
    alerts = build_alerts(frame, merged)
    rule_alert = next(a for a in alerts if a["fedids"].get("rule"))
    assert rule_alert["alert"]["signature_id"] == signature_id(DDOS_LABEL) + RULE_SIGNATURE_OFFSET
    assert "behaviour rule" in rule_alert["alert"]["signature"]
    model_alert = next(a for a in alerts if a["fedids"]["label"] == "PortScan")
    assert "rule" not in model_alert["fedids"] and model_alert["alert"]["signature_id"] == signature_id(
        "PortScan"
    )


def test_a_tool_signature_outranks_the_model_and_rate_rules_do_not():
    frame = flows(
        ["203.0.113.7"] * 3, ["192.0.2.80"] * 3, [80] * 3, [0.0, 1.0, 2.0], payload=300.0, fwd_packets=5.0
    )
    frame[TOOL] = ["nmap", None, ""]
    proba = np.array([[0.1, 0.8, 0.1]] * 3, dtype=np.float32)  # the model says DDoS for all three
    labels, score, p = decide(proba, CLASSES, None)
    scores = BatchScores(
        labels=labels,
        is_alert=labels != "BENIGN",
        attack_score=score,
        label_probability=p,
        proba=proba,
        classes=CLASSES,
        model="m",
    )
    merged = BehaviourDetector(RULES).apply(frame, scores)
    assert merged.labels.tolist() == [SCAN_LABEL, "DDoS", "DDoS"]
    assert merged.reasons[0] == "payload carries the nmap scanner signature"
    assert merged.label_probability[0] == pytest.approx(0.1)


def test_key_cap_bounds_memory():
    rules = BehaviourRules(scan_min_targets=10, max_keys=100)
    n = 1000
    frame = flows(
        [f"10.4.{i // 250}.{i % 250}" for i in range(n)], ["192.0.2.1"] * n, list(range(n)), np.zeros(n)
    )
    detector = BehaviourDetector(rules)
    detector.observe(frame)
    assert len(detector._scan) <= 100 and len(detector._flood) <= 100


@pytest.mark.parametrize("bad", [dict(flood_window_s=0), dict(scan_min_targets=0), dict(max_keys=0)])
def test_rules_are_validated(bad):
    with pytest.raises(ValueError):
        BehaviourRules(**bad)


def test_scanner_signatures_and_direction_free_conversation_keys():
    ua = (
        b"GET / HTTP/1.1\r\nUser-Agent: Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org)\r\n"
    )
    assert match_scanner(ua) == "nmap"
    assert match_scanner(b"GET / HTTP/1.1\r\nUser-Agent: curl/8.0\r\n") is None
    assert conversation_key(6, "10.0.0.1", 4000, "10.0.0.2", 80) == conversation_key(
        6, "10.0.0.2", 80, "10.0.0.1", 4000
    )
    assert conversation_key(6, "10.0.0.1", 4000, "10.0.0.2", 80) != conversation_key(
        17, "10.0.0.1", 4000, "10.0.0.2", 80
    )
