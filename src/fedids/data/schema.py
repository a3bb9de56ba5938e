"""Canonical flow schema shared by every part of fedids.

A *flow frame* is a ``pandas.DataFrame`` with

* the 78 CICIDS2017 flow features of the paper's Appendix A (:data:`FEATURES`), as ``float32``,
  named exactly as there (``"Flow Duration"``, ``"Init_Win_bytes_forward"``, ...). Units follow
  CICIDS2017/CICFlowMeter: durations and inter-arrival times in **microseconds**, lengths in bytes,
  rates per second;
* flow metadata when the source has it (:data:`META`): ``flow_id``, ``src_ip``, ``src_port``,
  ``dst_ip``, ``dst_port``, ``protocol`` and ``timestamp`` (``datetime64[us]``, naive, as recorded);
  ``seq`` is always present: the row's position in its source, a tie-breaker for time ordering
  (CICIDS2017's original timestamps have minute resolution);
* ``label``: the normalised original label (``"BENIGN"``, ``"DDoS"``, ``"Web Attack - XSS"``, ...)
  and ``family``: one of :data:`FAMILIES`.
"""

from __future__ import annotations

import re

FEATURES: tuple[str, ...] = (
    "Destination Port",
    "Flow Duration",
    "Total Fwd Packets",
    "Total Backward Packets",
    "Total Length of Fwd Packets",
    "Total Length of Bwd Packets",
    "Fwd Packet Length Max",
    "Fwd Packet Length Min",
    "Fwd Packet Length Mean",
    "Fwd Packet Length Std",
    "Bwd Packet Length Max",
    "Bwd Packet Length Min",
    "Bwd Packet Length Mean",
    "Bwd Packet Length Std",
    "Flow Bytes/s",
    "Flow Packets/s",
    "Flow IAT Mean",
    "Flow IAT Std",
    "Flow IAT Max",
    "Flow IAT Min",
    "Fwd IAT Total",
    "Fwd IAT Mean",
    "Fwd IAT Std",
    "Fwd IAT Max",
    "Fwd IAT Min",
    "Bwd IAT Total",
    "Bwd IAT Mean",
    "Bwd IAT Std",
    "Bwd IAT Max",
    "Bwd IAT Min",
    "Fwd PSH Flags",
    "Bwd PSH Flags",
    "Fwd URG Flags",
    "Bwd URG Flags",
    "Fwd Header Length",
    "Bwd Header Length",
    "Fwd Packets/s",
    "Bwd Packets/s",
    "Min Packet Length",
    "Max Packet Length",
    "Packet Length Mean",
    "Packet Length Std",
    "Packet Length Variance",
    "FIN Flag Count",
    "SYN Flag Count",
    "RST Flag Count",
    "PSH Flag Count",
    "ACK Flag Count",
    "URG Flag Count",
    "CWE Flag Count",
    "ECE Flag Count",
    "Down/Up Ratio",
    "Average Packet Size",
    "Avg Fwd Segment Size",
    "Avg Bwd Segment Size",
    "Fwd Header Length.1",
    "Fwd Avg Bytes/Bulk",
    "Fwd Avg Packets/Bulk",
    "Fwd Avg Bulk Rate",
    "Bwd Avg Bytes/Bulk",
    "Bwd Avg Packets/Bulk",
    "Bwd Avg Bulk Rate",
    "Subflow Fwd Packets",
    "Subflow Fwd Bytes",
    "Subflow Bwd Packets",
    "Subflow Bwd Bytes",
    "Init_Win_bytes_forward",
    "Init_Win_bytes_backward",
    "act_data_pkt_fwd",
    "min_seg_size_forward",
    "Active Mean",
    "Active Std",
    "Active Max",
    "Active Min",
    "Idle Mean",
    "Idle Std",
    "Idle Max",
    "Idle Min",
)
assert len(FEATURES) == 78

META: tuple[str, ...] = (
    "flow_id",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "protocol",
    "timestamp",
)
SEQ = "seq"
LABEL = "label"
FAMILY = "family"

FAMILIES: tuple[str, ...] = (
    "benign",
    "ddos",
    "dos",
    "portscan",
    "bruteforce",
    "webattack",
    "botnet",
    "infiltration",
    "heartbleed",
)
"""Attack families. ``botnet`` is the paper's "malware propagation"; ``bruteforce`` its
"unauthorized access"."""

BENIGN_LABEL = "BENIGN"

KNOWN_LABELS: tuple[str, ...] = (
    BENIGN_LABEL,
    "Bot",
    "Botnet",
    "DDoS",
    "DoS GoldenEye",
    "DoS Hulk",
    "DoS SYN Flood",
    "DoS Slowhttptest",
    "DoS slowloris",
    "DoS Slowloris",
    "FTP-Patator",
    "HTTP Brute Force",
    "Heartbleed",
    "Infiltration",
    "Infiltration - Portscan",
    "PortScan",
    "Portscan",
    "SSH-Patator",
    "Telnet Brute Force",
    "Web Attack - Brute Force",
    "Web Attack - Sql Injection",
    "Web Attack - SQL Injection",
    "Web Attack - XSS",
)
"""The public label universe of the private modes: CICIDS2017's labels (original and Engelen et al.'s
re-release spellings, normalised) and the synthetic generator's. Under ``he``/``secagg`` the label counts
are securely summed over this fixed list, so the server learns no client's label names; rows with a
label outside it are counted (in aggregate) and left out of training."""

# Ordered: first match wins. Patterns see the label lower-cased with dashes normalised.
_FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"^benign$|^normal$", "benign"),
    (r"ddos|loit", "ddos"),
    (r"heartbleed", "heartbleed"),
    (r"^dos\b|\bdos\b|slowloris|slowhttptest|hulk|goldeneye", "dos"),
    (r"infiltration", "infiltration"),
    (r"port ?scan", "portscan"),
    (r"web attack|xss|sql|injection", "webattack"),  # before bruteforce: "Web Attack - Brute Force"
    (r"ftp|ssh|patator|brute ?force|brute-force|bruteforce|telnet", "bruteforce"),
    (r"bot|c2|worm|malware|mirai", "botnet"),
)


def normalise_label(raw: str) -> str:
    """Return a label with CICIDS2017's dash variants and stray whitespace normalised.

    The web-attack en dash appears as a raw cp1252 byte (decoded as U+FFFD or U+0096), as U+2013 or
    as an ASCII hyphen; all become ``" - "``. ``"Benign"``/``"benign"`` become ``"BENIGN"``.

    >>> normalise_label("Web Attack \\x96 Sql Injection")
    'Web Attack - Sql Injection'
    """
    text = str(raw).strip()
    # Non-ASCII dashes anywhere; an ASCII hyphen only between spaces ("FTP-Patator" keeps its hyphen).
    text = re.sub(r"\s*[\u0096\u2013\u2014\ufffd\x96]+\s*", " - ", text)
    text = re.sub(r"\s+-+\s+", " - ", text)
    text = re.sub(r"\s+", " ", text)
    if text.lower() == "benign":
        return BENIGN_LABEL
    return text


def family_of(label: str) -> str:
    """Map a (normalised) label to one of :data:`FAMILIES`.

    Raises ``ValueError`` for a label no pattern recognises, so unknown classes are never
    silently counted as benign.
    """
    text = normalise_label(label).lower()
    for pattern, family in _FAMILY_PATTERNS:
        if re.search(pattern, text):
            return family
    raise ValueError(f"unknown label {label!r}: not one of the CICIDS2017 families")
