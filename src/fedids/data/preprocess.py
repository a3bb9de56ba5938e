"""Feature scaling and label vocabulary, fitted on training data only and mergeable across clients.

CICIDS2017 features are heavy-tailed (bytes/s up to 1e9, durations up to 1.2e8 us) and some are signed
(``-1`` sentinels in ``Init_Win_bytes_*``). Each feature goes through a signed ``log1p`` and then a
robust scaling ``(v - median) / IQR``. The median and IQR come from fixed-bin histograms in log space
(:class:`FeatureStats`): histograms add, so federated clients can send their histograms instead of
their rows and the server gets the same scaler as if it had pooled the data (up to the bin width,
0.05 in log space, i.e. about 5% in the original unit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedids.data.schema import BENIGN_LABEL, FEATURES

LOG_EDGES = np.linspace(-30.0, 30.0, 1201)  # covers |x| up to e^30 ~ 1e13
_CLIP = 10.0


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``, elementwise, as float64 (keeps -1 sentinels distinct from 0)."""
    values = np.asarray(values, dtype=np.float64)
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass
class FeatureStats:
    """Mergeable per-feature statistics: row count and histograms in signed-log space.

    ``hist`` has shape ``(n_features, len(LOG_EDGES) - 1)`` and dtype int64.
    """

    count: int
    hist: np.ndarray

    def merge(self, other: FeatureStats) -> FeatureStats:
        if self.hist.shape != other.hist.shape:
            raise ValueError(f"cannot merge stats of shapes {self.hist.shape} and {other.hist.shape}")
        return FeatureStats(self.count + other.count, self.hist + other.hist)


def compute_feature_stats(features: np.ndarray) -> FeatureStats:
    """Histogram every column of ``features`` (shape ``(n_rows, n_features)``) in signed-log space."""
    logs = np.clip(signed_log1p(features), LOG_EDGES[0], LOG_EDGES[-1] - 1e-9)
    n_bins = len(LOG_EDGES) - 1
    bins = np.floor((logs - LOG_EDGES[0]) / (LOG_EDGES[1] - LOG_EDGES[0])).astype(np.int64)
    offsets = np.arange(logs.shape[1], dtype=np.int64) * n_bins
    flat = np.bincount((bins + offsets).ravel(), minlength=logs.shape[1] * n_bins)
    return FeatureStats(int(logs.shape[0]), flat.reshape(logs.shape[1], n_bins))


def _quantile_from_hist(hist: np.ndarray, q: float) -> np.ndarray:
    cdf = np.cumsum(hist, axis=1)
    total = cdf[:, -1:]
    idx = np.argmax(cdf >= np.maximum(q * total, 1), axis=1)
    centres = (LOG_EDGES[:-1] + LOG_EDGES[1:]) / 2
    return centres[idx]


@dataclass
class FlowScaler:
    """``transform(x) = clip((signed_log1p(x) - center) / scale, -10, 10)``, per feature."""

    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_stats(cls, stats: FeatureStats) -> FlowScaler:
        if stats.count == 0:
            raise ValueError("cannot fit a scaler on zero rows")
        median = _quantile_from_hist(stats.hist, 0.5)
        iqr = _quantile_from_hist(stats.hist, 0.75) - _quantile_from_hist(stats.hist, 0.25)
        # A constant (or nearly) feature has IQR 0: scale by 1 so it stays finite and centred.
        scale = np.where(iqr > 1e-6, iqr, 1.0)
        return cls(center=median, scale=scale)

    @classmethod
    def fit(cls, features: np.ndarray) -> FlowScaler:
        return cls.from_stats(compute_feature_stats(features))

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Scale ``features`` (``(n_rows, n_features)``) to float32 of the same shape."""
        out = (signed_log1p(features) - self.center) / self.scale
        return np.clip(np.nan_to_num(out, nan=0.0), -_CLIP, _CLIP).astype(np.float32)

    def to_dict(self) -> dict:
        return {"center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> FlowScaler:
        center = np.asarray(data["center"], dtype=np.float64)
        scale = np.asarray(data["scale"], dtype=np.float64)
        if center.shape != (len(FEATURES),) or scale.shape != center.shape:
            raise ValueError(f"scaler must have {len(FEATURES)} centers and scales")
        return cls(center=center, scale=scale)


@dataclass
class LabelVocabulary:
    """Class index <-> label string; ``BENIGN`` is always class 0, the rest sorted."""

    labels: list[str] = field(default_factory=list)

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> LabelVocabulary:
        others = sorted(label for label, n in counts.items() if n > 0 and label != BENIGN_LABEL)
        return cls([BENIGN_LABEL, *others])

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Label strings to int64 class indices; a label not in the vocabulary becomes ``-1``."""
        lookup = {label: i for i, label in enumerate(self.labels)}
        return np.fromiter((lookup.get(str(v), -1) for v in labels), dtype=np.int64, count=len(labels))

    def decode(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.labels, dtype=object)[np.asarray(indices)]

    def __len__(self) -> int:
        return len(self.labels)
