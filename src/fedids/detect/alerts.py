"""Alerts as Suricata EVE JSON lines, so that SIEM pipelines that ingest Suricata ingest fedids.

One line per detected attack flow, in the layout of Suricata's ``alert`` events (Suricata user guide,
"Eve JSON Format"; checked against the 7.0 documentation)::

    {"timestamp": "2017-07-07T15:56:12.123456+0000", "flow_id": 1234567890123, "event_type": "alert",
     "src_ip": "172.16.0.1", "src_port": 45022, "dest_ip": "192.168.10.50", "dest_port": 80,
     "proto": "TCP",
     "alert": {"action": "allowed", "gid": 1, "signature_id": 1700123, "rev": 1,
               "signature": "FEDIDS ddos detected (DDoS)",
               "category": "Detection of a Denial of Service Attack", "severity": 2},
     "fedids": {"label": "DDoS", "family": "ddos", "score": 0.998, "probability": 0.997,
                "model": "model.onnx"}}

* ``timestamp``: the flow's start time. Flow timestamps in fedids are naive (as recorded); they are
  written as UTC (``+0000``), which is what the packet extractor produces; CICIDS2017's own CSV times
  are local (UTC-3) and are not shifted. Flows without a timestamp get the detection time.
* ``flow_id``: Suricata's is a 51-bit integer (``FlowGetId`` masks to 51 bits so that JSON readers keep
  it exact); fedids derives one from BLAKE2b of the flow's 5-tuple, start time and ``seq`` (its position
  in the source), masked the same way: the same flow record always gets the same id.
* ``action`` is always ``"allowed"``: fedids detects, it does not block.
* ``signature_id``: ``1,700,000 + 1,000 * family index + crc32(label) mod 1,000``, within the range
  1,000,000-1,999,999 that Suricata rule sets leave for local use; stable across models and runs.
  Alerts raised by a host-behaviour rule (:mod:`fedids.detect.behaviour`) add 100,000 and carry the
  rule's reason in ``signature`` and ``fedids.rule``.
* ``category`` and ``severity``: the classtype description and default priority of Suricata's
  ``classification.config`` that fits each family (1 high .. 3 low).
* ``fedids``: ``score`` is ``1 - P(BENIGN)``, ``probability`` the model's probability of ``label``,
  ``threshold`` the alert threshold on ``score`` in force (None: the top class decided).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from fedids.data.schema import FAMILIES, family_of
from fedids.detect.stream import BatchScores
from fedids.errors import InputError

SIGNATURE_BASE = 1_700_000
RULE_SIGNATURE_OFFSET = 100_000
GID = 1
REV = 1
FLOW_ID_MASK = 0x7FFFFFFFFFFFF  # 51 bits, as Suricata's FlowGetId

FAMILY_CLASSIFICATION: dict[str, tuple[str, int]] = {
    # family: (Suricata classtype description, its default priority in classification.config)
    "ddos": ("Detection of a Denial of Service Attack", 2),  # denial-of-service
    "dos": ("Detection of a Denial of Service Attack", 2),  # denial-of-service
    "portscan": ("Detection of a Network Scan", 3),  # network-scan
    "bruteforce": ("Attempted User Privilege Gain", 1),  # attempted-user
    "webattack": ("Web Application Attack", 1),  # web-application-attack
    "botnet": ("A Network Trojan was detected", 1),  # trojan-activity
    "infiltration": ("Targeted Malicious Activity was Detected", 1),  # targeted-activity
    "heartbleed": ("Attempted Information Leak", 2),  # attempted-recon
}
_UNKNOWN_CLASSIFICATION = ("Misc Attack", 2)  # misc-attack

PROTOCOL_NAMES: dict[int, str] = {1: "ICMP", 6: "TCP", 17: "UDP", 47: "GRE", 58: "IPv6-ICMP", 132: "SCTP"}
"""IANA protocol numbers -> the names Suricata writes in ``proto``; others are written as the number."""


def signature_id(label: str) -> int:
    """Stable Suricata-style signature id of an attack label (see the module docstring)."""
    family = _family(label)
    index = FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)
    return SIGNATURE_BASE + 1000 * index + zlib.crc32(label.lower().encode()) % 1000


def _family(label: str) -> str:
    try:
        return family_of(label)
    except ValueError:
        return "unknown"


def format_timestamp(value: Any) -> str:
    """EVE timestamp: ISO 8601 with microseconds and a ``+0000`` offset (naive input read as UTC)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        stamp = dt.datetime.now(dt.UTC)
    else:
        stamp = pd.Timestamp(value).to_pydatetime()
        stamp = stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def compute_flow_id(
    src_ip: Any, src_port: Any, dest_ip: Any, dest_port: Any, proto: Any, start: Any, seq: Any = None
) -> int:
    """51-bit flow id from the 5-tuple, start time and the record's ``seq`` in its source.

    ``seq`` separates flow records that share 5-tuple and start time, which CICIDS2017's minute-resolution
    timestamps make common (its own ``Flow ID`` repeats too).
    """
    key = f"{src_ip}|{src_port}|{dest_ip}|{dest_port}|{proto}|{start}|{seq}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & FLOW_ID_MASK


def _clean(value: Any) -> Any:
    """numpy scalars -> Python; missing -> None."""
    if value is None:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else (int(value) if float(value).is_integer() else float(value))
    if isinstance(value, str):
        return value
    return None if pd.isna(value) else value


def _timestamps(values: list[Any], column: pd.Series | None) -> list[str]:
    """EVE timestamps for a column, vectorised for the usual naive ``datetime64`` column."""
    if column is not None and pd.api.types.is_datetime64_dtype(column.dtype) and not column.isna().any():
        text = np.datetime_as_string(column.to_numpy().astype("datetime64[us]"), unit="us")
        return [t + "+0000" for t in text.tolist()]
    return [format_timestamp(v) for v in values]


def _rule(label: str) -> tuple[str, dict[str, Any]]:
    family = _family(label)
    category, severity = FAMILY_CLASSIFICATION.get(family, _UNKNOWN_CLASSIFICATION)
    return family, {
        "action": "allowed",
        "gid": GID,
        "signature_id": signature_id(label),
        "rev": REV,
        "signature": f"FEDIDS {family} detected ({label})",
        "category": category,
        "severity": severity,
    }


def build_alerts(frame: pd.DataFrame, scores: BatchScores) -> list[dict]:
    """EVE alert objects for the flows of ``frame`` that ``scores`` marks as attacks, in row order.

    ``frame`` is the canonical flow frame that was scored; its metadata columns (``src_ip``,
    ``src_port``, ``dst_ip``, ``dst_port``, ``protocol``, ``timestamp``) fill the 5-tuple where present
    (``dest_port`` falls back to the ``Destination Port`` feature).
    """
    rows = np.flatnonzero(scores.is_alert)
    if len(rows) == 0:
        return []
    sub = frame.iloc[rows]

    def column(name: str) -> list[Any]:
        return [_clean(v) for v in sub[name].tolist()] if name in sub.columns else [None] * len(rows)

    src_ip, src_port, dst_ip = column("src_ip"), column("src_port"), column("dst_ip")
    dst_port = column("dst_port") if "dst_port" in sub.columns else column("Destination Port")
    protocol, seqs = column("protocol"), column("seq")
    raw_stamps = sub["timestamp"].tolist() if "timestamp" in sub.columns else [None] * len(rows)
    stamps = _timestamps(raw_stamps, sub["timestamp"] if "timestamp" in sub.columns else None)
    rules: dict[str, tuple[str, dict[str, Any]]] = {}
    alerts = []
    for k, row in enumerate(rows):
        label = str(scores.labels[row])
        if label not in rules:
            rules[label] = _rule(label)
        family, alert = rules[label]
        proto_num = protocol[k]
        proto = PROTOCOL_NAMES.get(proto_num, str(proto_num)) if isinstance(proto_num, int) else None
        event: dict[str, Any] = {
            "timestamp": stamps[k],
            "flow_id": compute_flow_id(
                src_ip[k], src_port[k], dst_ip[k], dst_port[k], proto_num, raw_stamps[k], seqs[k]
            ),
            "event_type": "alert",
        }
        for key, value in (
            ("src_ip", src_ip[k]),
            ("src_port", src_port[k]),
            ("dest_ip", dst_ip[k]),
            ("dest_port", dst_port[k]),
            ("proto", proto),
        ):
            if value is not None:  # EVE omits what a flow does not have (no ports for ICMP)
                event[key] = value
        event["alert"] = dict(alert)
        event["fedids"] = {
            "label": label,
            "family": family,
            "score": round(float(scores.attack_score[row]), 6),
            "probability": round(float(scores.label_probability[row]), 6),
            "threshold": None if scores.threshold is None else round(float(scores.threshold), 6),
            "model": scores.model,
        }
        reason = scores.reasons[row] if scores.reasons is not None else None
        if reason is not None:  # a host-behaviour rule, not the model, raised this one
            event["alert"]["signature"] = f"FEDIDS {family} behaviour rule ({label}): {reason}"
            event["alert"]["signature_id"] += RULE_SIGNATURE_OFFSET
            event["fedids"]["rule"] = reason
        alerts.append(event)
    return alerts


def _ends_mid_line(path: Path) -> bool:
    """True when ``path`` is a non-empty file whose last byte is not a line break."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            if fh.tell() == 0:
                return False
            fh.seek(-1, 2)
            return fh.read(1) != b"\n"
    except OSError:
        return False


class AlertWriter:
    """Append alert lines to a file (or stdout for ``-``), flushed after every batch.

    The file is opened in append mode, so a restarted detector adds to what is there; every
    :meth:`write` ends with a flush, so an interrupted detector loses no alert it already reported. A file
    whose last line is partial (a writer killed mid-line) gets a line break first, so the first new alert
    is never glued onto it; ``warn`` is told.
    """

    def __init__(self, path: str | Path, warn: Callable[[str], None] | None = None) -> None:
        self.path = str(path)
        self.count = 0
        if self.path == "-":
            self._fh: IO[str] = sys.stdout
            self._close = False
        else:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
                if _ends_mid_line(Path(path)):
                    self._fh.write("\n")
                    self._fh.flush()
                    if warn is not None:
                        warn(f"{path}: its last line was partial; new alerts start on the next line")
            except OSError as exc:
                raise InputError(f"{path}: cannot open for appending alerts: {exc.strerror or exc}") from None
            self._close = True

    def write(self, alerts: Iterable[dict]) -> int:
        """Write one JSON line per alert and flush; returns the number written."""
        lines = [json.dumps(a, separators=(",", ":"), ensure_ascii=False) for a in alerts]
        if lines:
            self._fh.write("\n".join(lines) + "\n")
            self._fh.flush()
        self.count += len(lines)
        return len(lines)

    def close(self) -> None:
        if self._close:
            self._fh.close()

    def __enter__(self) -> AlertWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
