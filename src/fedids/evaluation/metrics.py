"""Per-flow classification metrics: the figures `fedids evaluate` prints and the report uses.

All functions take label strings (``(n_flows,)`` arrays) so that class vocabularies of different models
compare directly. Families come from :func:`fedids.data.schema.family_of`.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
)

from fedids.data.schema import family_of

METRIC_KEYS = ("accuracy", "macro_f1", "weighted_f1", "mcc", "per_class", "per_family", "confusion")


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, lab in enumerate(labels)
    }


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, macro/weighted F1, MCC, per-class and per-family P/R/F1/support, confusion matrix.

    Parameters
    ----------
    y_true, y_pred : arrays of label strings, shape ``(n_flows,)``.

    Returns
    -------
    dict with exactly the keys of :data:`METRIC_KEYS`. ``macro_f1`` averages over the labels present
    in ``y_true``; ``confusion`` is ``{"labels": [...], "matrix": [[...]]}`` with rows = true label,
    columns = predicted label. Per-family figures are one-vs-rest on the family of each label.
    """
    y_true = np.array([str(v) for v in y_true], dtype=object)
    y_pred = np.array([str(v) for v in y_pred], dtype=object)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError("y_true and y_pred must be non-empty 1-D arrays of the same length")
    present = sorted(set(y_true))
    labels = sorted(set(y_true) | set(y_pred))
    fam_true = np.array([family_of(v) for v in y_true])
    fam_pred = np.array([family_of(v) for v in y_pred])
    families = sorted(set(fam_true) | set(fam_pred))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "per_class": _per_class(y_true, y_pred, labels),
        "per_family": {
            fam: {**v, "accuracy": float(np.mean((fam_true == fam) == (fam_pred == fam)))}
            for fam, v in _per_class(fam_true, fam_pred, families).items()
        },
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }
