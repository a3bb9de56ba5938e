"""The setup of a federated run from the clients' summed statistics (shared by both apps, no Flower).

Before training, every client contributes a *statistics vector* (:func:`stats_vector`): its feature
histograms in signed-log space, its label counts over the public label universe
(:data:`~fedids.data.schema.KNOWN_LABELS`), the rows whose label is outside it, and its row count. The
vectors are securely summed like every other exchange; from the sum alone, :func:`setup_from_sum`
derives what the run needs: the federated scaler, the label vocabulary (the labels present), the class
weights of the training loss and the per-class totals that clients divide by for their aggregation
shares. Where the mode hides the sum from the server (``he``), each client derives the same setup from
the decrypted sum (deterministic: the same numbers on every client) and the server learns only the
vocabulary it needs to size the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fedids.data.preprocess import LOG_EDGES, FeatureStats, FlowScaler, LabelVocabulary, compute_feature_stats
from fedids.data.schema import FEATURES, KNOWN_LABELS, LABEL
from fedids.model.train import compute_class_weights

N_BINS = len(LOG_EDGES) - 1
STATS_LENGTH = len(FEATURES) * N_BINS + len(KNOWN_LABELS) + 2


def stats_vector(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One client's statistics as a count vector (float64, length :data:`STATS_LENGTH`):
    ``[histogram (78 x bins) | label counts over KNOWN_LABELS | rows outside it | rows]``."""
    hist = compute_feature_stats(np.asarray(features, np.float32)).hist
    index = {label: i for i, label in enumerate(KNOWN_LABELS)}
    codes = np.array([index.get(str(label), -1) for label in labels], dtype=np.int64)
    counts = np.bincount(codes[codes >= 0], minlength=len(KNOWN_LABELS))
    return np.concatenate([hist.ravel(), counts, [np.sum(codes < 0), len(codes)]]).astype(np.float64)


def frame_stats_vector(frame) -> np.ndarray:
    """:func:`stats_vector` of a flow frame."""
    return stats_vector(frame[list(FEATURES)].to_numpy(dtype=np.float32), frame[LABEL].astype(str).to_numpy())


@dataclass(frozen=True)
class RunSetup:
    """What a run derives from the summed statistics (identical on every party that holds the sum)."""

    scaler: FlowScaler
    vocabulary: LabelVocabulary
    class_totals: np.ndarray  # (C,) flows of each vocabulary class in the federation
    class_weights: np.ndarray  # (C,) float32 weights of the training loss
    rows: int
    unknown_rows: int  # rows whose label is outside KNOWN_LABELS (left out of training)

    def digest(self) -> str:
        """A fingerprint that lets the server check that clients derived the same setup."""
        h = hashlib.sha256()
        for a in (self.scaler.center, self.scaler.scale, self.class_totals, self.class_weights):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        h.update("\n".join(self.vocabulary.labels).encode())
        return h.hexdigest()[:32]


def setup_from_counts(stats: FeatureStats, label_counts: dict[str, int], unknown_rows: int = 0) -> RunSetup:
    """The setup from merged statistics and label counts (what the plaintext mode receives)."""
    vocabulary = LabelVocabulary.from_counts(label_counts)
    totals = np.array([label_counts.get(label, 0) for label in vocabulary.labels], dtype=np.int64)
    return RunSetup(
        FlowScaler.from_stats(stats),
        vocabulary,
        totals,
        compute_class_weights(totals),
        int(stats.count),
        int(unknown_rows),
    )


def setup_from_sum(total: np.ndarray) -> RunSetup:
    """The setup from the sum of :func:`stats_vector` vectors; raises ValueError on an implausible sum."""
    total = np.rint(np.asarray(total, np.float64)).astype(np.int64)
    if total.shape != (STATS_LENGTH,) or (total < 0).any():
        raise ValueError(f"statistics sum has shape {total.shape} or negative counts")
    n_hist = len(FEATURES) * N_BINS
    hist = total[:n_hist].reshape(len(FEATURES), N_BINS)
    counts = total[n_hist : n_hist + len(KNOWN_LABELS)]
    unknown, rows = int(total[-2]), int(total[-1])
    if rows < 1 or (hist.sum(axis=1) != rows).any() or counts.sum() + unknown != rows:
        raise ValueError("statistics sum does not add up: histograms, label counts and rows disagree")
    label_counts = {label: int(n) for label, n in zip(KNOWN_LABELS, counts) if n > 0}
    return setup_from_counts(FeatureStats(rows, hist), label_counts, unknown)


def own_class_counts(labels: np.ndarray, vocabulary: LabelVocabulary) -> np.ndarray:
    """``(C,)`` counts of this client's rows per vocabulary class."""
    codes = vocabulary.encode(np.asarray(labels).astype(str))
    return np.bincount(codes[codes >= 0], minlength=len(vocabulary.labels)).astype(np.int64)
