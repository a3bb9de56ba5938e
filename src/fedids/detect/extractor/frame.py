"""Finished flows as canonical flow frames (:mod:`fedids.data.schema`): metadata, ``seq`` and the 78
features. pandas is imported here only, when a frame is asked for."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import numpy as np

from fedids.data.schema import FEATURES, META, SEQ
from fedids.detect.extractor.decode import TOOLS
from fedids.detect.extractor.flows import FlowBatch
from fedids.detect.signatures import TOOL

if TYPE_CHECKING:
    import pandas as pd


def _addresses(v6: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> list[str]:
    """Text form of each address (one conversion per distinct address)."""
    keys = np.stack([v6.astype(np.uint64), hi, lo], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    text = []
    for is6, h, low in unique.tolist():
        if is6:
            text.append(socket.inet_ntop(socket.AF_INET6, ((h << 64) | low).to_bytes(16, "big")))
        else:
            text.append(socket.inet_ntoa(low.to_bytes(4, "big")))
    return np.asarray(text, dtype=object)[inverse.reshape(-1)].tolist()


def empty_frame() -> pd.DataFrame:
    """A frame with no flow and the canonical columns."""
    import pandas as pd

    columns = [*META, SEQ, *FEATURES]
    empty = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in columns})
    empty["timestamp"] = pd.Series(dtype="datetime64[us]")
    for c in ("src_port", "dst_port", "protocol", SEQ):
        empty[c] = pd.Series(dtype=np.int64)
    for c in ("flow_id", "src_ip", "dst_ip"):
        empty[c] = pd.Series(dtype=object)
    return empty[columns]


def flow_frame(batches: list[tuple[FlowBatch, np.ndarray]], seq_start: int = 0) -> pd.DataFrame:
    """One frame from ``(flows, their 78 features)`` pairs, rows in order, ``seq`` from ``seq_start``.

    Columns: :data:`~fedids.data.schema.META`, ``seq``, the features (float64) and ``tool`` when some
    flow carried a scanning tool's signature (:mod:`fedids.detect.signatures`).
    """
    import pandas as pd

    batches = [(b, f) for b, f in batches if len(b)]
    if not batches:
        return empty_frame()

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b, _ in batches])

    v6 = cat("v6")
    src = _addresses(v6, cat("src_hi"), cat("src_lo"))
    dst = _addresses(v6, cat("dst_hi"), cat("dst_lo"))
    sport, dport, proto = cat("sport"), cat("dport"), cat("proto")
    n = len(src)
    columns: dict[str, object] = {
        "flow_id": [
            f"{a}-{b}-{c}-{d}-{e}"
            for a, b, c, d, e in zip(src, dst, sport.tolist(), dport.tolist(), proto.tolist())
        ],
        "src_ip": src,
        "src_port": sport.astype(np.int64),
        "dst_ip": dst,
        "dst_port": dport.astype(np.int64),
        "protocol": proto.astype(np.int64),
        "timestamp": cat("start_us").astype("datetime64[us]"),
        SEQ: np.arange(seq_start, seq_start + n, dtype=np.int64),
    }
    meta = pd.DataFrame(columns)
    features = pd.DataFrame(np.concatenate([f for _, f in batches]), columns=list(FEATURES))
    frame = pd.concat([meta, features], axis=1)
    tool = cat("tool")
    if (tool >= 0).any():
        names = np.asarray([None, *TOOLS], dtype=object)
        frame[TOOL] = names[tool.astype(np.int64) + 1]
    return frame
