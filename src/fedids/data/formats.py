"""Column layouts of the public CICIDS2017 CSV formats, and a writer for the TrafficLabelling one.

* ``machinelearningcve``: 79 columns, ``Destination Port`` + 77 features + ``Label``.
* ``trafficlabelling``: 85 columns, flow metadata (``Flow ID``, IPs, ports, ``Protocol``,
  ``Timestamp``) + the same features + ``Label``.
* ``engelen2021``: the corrected re-release (Engelen et al., WTMC 2021), about 91 columns with other
  spellings; its header map lives in :mod:`fedids.data.loader`.

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
    "Flow ID", "Source IP", "Source Port", "Destination IP", *FEATURES[:1], "Protocol",
    "Timestamp", *FEATURES[1:], "Label",
)
assert len(MACHINELEARNINGCVE_COLUMNS) == 79 and len(TRAFFICLABELLING_COLUMNS) == 85

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
