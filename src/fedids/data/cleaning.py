"""The per-row checks of the loader: label classification (:class:`_Labels`), the exact-duplicate filter
(:class:`_Dedup`) and the working state of one chunk (:class:`_Chunk`: parsed values, row hash and one
drop mask per reason of :data:`~fedids.data.load_report.DROP_REASONS`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from fedids.data.columns import decode, mix
from fedids.data.schema import BENIGN_LABEL, family_of, normalise_label

_ATTEMPTED_SUFFIX = " - attempted"


class _Labels:
    """Decodes, normalises and classifies label values; caches per distinct raw value."""

    def __init__(self, attempted: str) -> None:
        self.attempted = attempted
        self.cache: dict[bytes | None, tuple[str, str, str, str, bool] | None] = {}

    def classify(self, raw: bytes | None) -> tuple[str, str, str, str, bool] | None:
        """Return ``(raw_text, normalised, final_label, family, attempted)`` or None when missing."""
        if raw in self.cache:
            return self.cache[raw]
        result = None
        text = None if raw is None else decode(raw)
        if text is not None and text.strip():
            norm = normalise_label(text)
            is_attempted = norm.lower().endswith(_ATTEMPTED_SUFFIX)
            base = norm[: -len(_ATTEMPTED_SUFFIX)] if is_attempted else norm
            family_of(base)  # raises ValueError for an unknown class, whatever the mode
            if is_attempted and self.attempted == "benign":
                final = BENIGN_LABEL
            else:
                final = base
            result = (text, norm, final, family_of(final), is_attempted)
        self.cache[raw] = result
        return result


class _Dedup:
    """Exact-duplicate filter across chunks and files on 64-bit row hashes.

    Holds one sorted uint64 per kept row (22 MB for 2.8 M rows) instead of the rows themselves.
    Two different rows collide with probability about n^2 / 2^65 (2e-7 for 2.8 M rows).
    """

    def __init__(self) -> None:
        self.seen = np.empty(0, dtype=np.uint64)

    def new_mask(self, h: np.ndarray) -> np.ndarray:
        fresh = ~pd.Series(h).duplicated(keep="first").to_numpy()
        if len(self.seen):
            pos = np.minimum(np.searchsorted(self.seen, h), len(self.seen) - 1)
            fresh &= self.seen[pos] != h
        # Two sorted runs: numpy's stable sort (timsort/radix) merges them in about linear time.
        self.seen = np.sort(np.concatenate([self.seen, h[fresh]]), kind="stable")
        return fresh


@dataclass
class _Chunk:
    """Per-chunk working state: parsed values, row hashes and the drop masks."""

    n: int
    classes: list  # per distinct label value: _Labels.classify result, None when missing
    idx: np.ndarray  # (n,) int64 index into classes; -1 for an empty cell
    x32: np.ndarray | None = None  # (78, n) float32: feature-major, so each column is contiguous
    h: np.ndarray | None = None  # (n,) uint64 row hash, built column by column
    meta: dict[str, np.ndarray | pa.ChunkedArray] = field(default_factory=dict)  # numeric / text columns
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def features(self) -> np.ndarray:
        """:attr:`x32`, once parsed."""
        if self.x32 is None:
            raise RuntimeError("chunk features read before they were parsed")
        return self.x32

    @property
    def hashes(self) -> np.ndarray:
        """:attr:`h`, when duplicates are dropped."""
        if self.h is None:
            raise RuntimeError("row hashes read in a run that keeps duplicates")
        return self.h

    def flag(self, reason: str, mask: np.ndarray) -> None:
        self.masks[reason] = self.masks[reason] | mask if reason in self.masks else mask

    def mix(self, column_hash: np.ndarray) -> None:
        if self.h is not None:  # None when duplicates are kept: no hashing at all
            self.h = mix(self.h, column_hash)
