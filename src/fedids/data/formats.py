"""Column layouts of the public CICIDS2017 CSV formats, and a writer for the TrafficLabelling one.

* ``machinelearningcve``: 79 columns, ``Destination Port`` + 77 features + ``Label``.
* ``trafficlabelling``: 85 columns, flow metadata (``Flow ID``, IPs, ports, ``Protocol``,
  ``Timestamp``) + the same features + ``Label``.
* ``engelen2021``: the corrected re-release (Engelen et al., WTMC 2021 / CNS 2022), 91 columns with
  other spellings (:data:`ENGELEN2021_COLUMNS`); :data:`ENGELEN2021_SOURCES` maps each canonical
  feature onto its column there.

The original files repeat ``Fwd Header Length``; pandas and the canonical schema call the second
copy ``Fwd Header Length.1``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from fedids.data.schema import FEATURES, LABEL

_TL_META = {
    "Flow ID": "flow_id",
    "Source IP": "src_ip",
    "Source Port": "src_port",
    "Destination IP": "dst_ip",
    "Protocol": "protocol",
    "Timestamp": "timestamp",
}

MACHINELEARNINGCVE_COLUMNS: tuple[str, ...] = (*FEATURES, "Label")
TRAFFICLABELLING_COLUMNS: tuple[str, ...] = (
    "Flow ID",
    "Source IP",
    "Source Port",
    "Destination IP",
    *FEATURES[:1],
    "Protocol",
    "Timestamp",
    *FEATURES[1:],
    "Label",
)
assert len(MACHINELEARNINGCVE_COLUMNS) == 79 and len(TRAFFICLABELLING_COLUMNS) == 85

FORMAT_MACHINELEARNINGCVE = "machinelearningcve"
FORMAT_TRAFFICLABELLING = "trafficlabelling"
FORMAT_ENGELEN2021 = "engelen2021"
FORMATS: tuple[str, ...] = (FORMAT_MACHINELEARNINGCVE, FORMAT_TRAFFICLABELLING, FORMAT_ENGELEN2021)

TRAFFICLABELLING_META: dict[str, str] = dict(_TL_META)
"""TrafficLabelling metadata header -> canonical metadata column (``Destination Port`` is a feature
and also gives ``dst_port``)."""

# Header of the corrected CICIDS2017 CSVs (Engelen, Rimmer, Joosen: "Troubleshooting an intrusion
# detection dataset: the CICIDS2017 case study", WTMC 2021; re-released with the CNS 2022 paper),
# written by their fixed CICFlowMeter and labelling notebook (GintsEngelen/CNS2022_Code,
# Labelling/CICIDS2017_labelling_fixed_CICFlowMeter.ipynb: `df.to_csv` with an `id` index and an
# added `Attempted Category` column). Column list as published in ScubaInstructor/fuh
# @ 0848498376873b5c9c6db7cdfe10ab7ae95fcb6c, nids-daten/train/README.md (91 columns), identical to
# the CSE-CIC-IDS2018 re-release header used by other public loaders.
ENGELEN2021_COLUMNS: tuple[str, ...] = (
    "id",
    "Flow ID",
    "Src IP",
    "Src Port",
    "Dst IP",
    "Dst Port",
    "Protocol",
    "Timestamp",
    "Flow Duration",
    "Total Fwd Packet",
    "Total Bwd packets",
    "Total Length of Fwd Packet",
    "Total Length of Bwd Packet",
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
    "Fwd RST Flags",
    "Bwd RST Flags",
    "Fwd Header Length",
    "Bwd Header Length",
    "Fwd Packets/s",
    "Bwd Packets/s",
    "Packet Length Min",
    "Packet Length Max",
    "Packet Length Mean",
    "Packet Length Std",
    "Packet Length Variance",
    "FIN Flag Count",
    "SYN Flag Count",
    "RST Flag Count",
    "PSH Flag Count",
    "ACK Flag Count",
    "URG Flag Count",
    "CWR Flag Count",
    "ECE Flag Count",
    "Down/Up Ratio",
    "Average Packet Size",
    "Fwd Segment Size Avg",
    "Bwd Segment Size Avg",
    "Fwd Bytes/Bulk Avg",
    "Fwd Packet/Bulk Avg",
    "Fwd Bulk Rate Avg",
    "Bwd Bytes/Bulk Avg",
    "Bwd Packet/Bulk Avg",
    "Bwd Bulk Rate Avg",
    "Subflow Fwd Packets",
    "Subflow Fwd Bytes",
    "Subflow Bwd Packets",
    "Subflow Bwd Bytes",
    "FWD Init Win Bytes",
    "Bwd Init Win Bytes",
    "Fwd Act Data Pkts",
    "Fwd Seg Size Min",
    "Active Mean",
    "Active Std",
    "Active Max",
    "Active Min",
    "Idle Mean",
    "Idle Std",
    "Idle Max",
    "Idle Min",
    "ICMP Code",
    "ICMP Type",
    "Total TCP Flow Time",
    "Label",
    "Attempted Category",
)
assert len(ENGELEN2021_COLUMNS) == 91

_ENGELEN_RENAMED = {
    "Destination Port": "Dst Port",
    "Total Fwd Packets": "Total Fwd Packet",
    "Total Backward Packets": "Total Bwd packets",
    "Total Length of Fwd Packets": "Total Length of Fwd Packet",
    "Total Length of Bwd Packets": "Total Length of Bwd Packet",
    "Min Packet Length": "Packet Length Min",
    "Max Packet Length": "Packet Length Max",
    "CWE Flag Count": "CWR Flag Count",
    "Avg Fwd Segment Size": "Fwd Segment Size Avg",
    "Avg Bwd Segment Size": "Bwd Segment Size Avg",
    # The originals repeat Fwd Header Length; the re-release has it once.
    "Fwd Header Length.1": "Fwd Header Length",
    "Fwd Avg Bytes/Bulk": "Fwd Bytes/Bulk Avg",
    "Fwd Avg Packets/Bulk": "Fwd Packet/Bulk Avg",
    "Fwd Avg Bulk Rate": "Fwd Bulk Rate Avg",
    "Bwd Avg Bytes/Bulk": "Bwd Bytes/Bulk Avg",
    "Bwd Avg Packets/Bulk": "Bwd Packet/Bulk Avg",
    "Bwd Avg Bulk Rate": "Bwd Bulk Rate Avg",
    "Init_Win_bytes_forward": "FWD Init Win Bytes",
    "Init_Win_bytes_backward": "Bwd Init Win Bytes",
    "act_data_pkt_fwd": "Fwd Act Data Pkts",
    "min_seg_size_forward": "Fwd Seg Size Min",
}
ENGELEN2021_SOURCES: dict[str, str] = {f: _ENGELEN_RENAMED.get(f, f) for f in FEATURES}
"""Canonical feature -> the engelen2021 column it is read from."""
assert set(ENGELEN2021_SOURCES.values()) <= set(ENGELEN2021_COLUMNS)

ENGELEN2021_META: dict[str, str] = {
    "Flow ID": "flow_id",
    "Src IP": "src_ip",
    "Src Port": "src_port",
    "Dst IP": "dst_ip",
    "Protocol": "protocol",
    "Timestamp": "timestamp",
}
ENGELEN2021_IGNORED: tuple[str, ...] = (
    "id",
    "Fwd RST Flags",
    "Bwd RST Flags",
    "ICMP Code",
    "ICMP Type",
    "Total TCP Flow Time",
    "Attempted Category",
)
"""engelen2021 columns without a canonical counterpart; the loader skips them."""

TIMESTAMP_WRITE_FORMAT = "%d/%m/%Y %H:%M:%S.%f"
"""Day-first like the originals, but with seconds and microseconds: the originals' minute
resolution loses the order of flows, which time windows need."""


def _header_names() -> list[str]:
    # The originals spell the duplicated column twice as "Fwd Header Length".
    return ["Fwd Header Length" if c == "Fwd Header Length.1" else c for c in TRAFFICLABELLING_COLUMNS]


def write_trafficlabelling_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a canonical flow frame as a CICIDS2017 TrafficLabelling CSV (85 columns).

    Metadata columns missing from ``frame`` are written empty; features are written with up to
    9 significant digits. The file is written to a temporary name and renamed, so an
    interrupted write never leaves a truncated file behind.
    """
    path = Path(path)
    out = pd.DataFrame(index=frame.index)
    for col in TRAFFICLABELLING_COLUMNS:
        if col == "Label":
            out[col] = frame[LABEL].astype(str)
        elif col in _TL_META:
            meta = _TL_META[col]
            if meta == "timestamp" and meta in frame:
                out[col] = pd.to_datetime(frame[meta]).dt.strftime(TIMESTAMP_WRITE_FORMAT)
            else:
                out[col] = frame[meta] if meta in frame else ""
        else:
            values = frame[col].to_numpy(dtype=np.float64)
            out[col] = values
    out.columns = _header_names()
    tmp = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(tmp, index=False, float_format="%.9g", quoting=csv.QUOTE_MINIMAL)
    tmp.replace(path)
    return path
