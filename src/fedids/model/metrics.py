"""Per-flow classification metrics: the figures `fedids evaluate` prints and the report uses.

All functions take label strings (``(n_flows,)`` arrays) so that class vocabularies of different models
compare directly. Families come from :func:`fedids.data.schema.family_of`.
"""

from __future__ import annotations

import functools

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
)

from fedids.data.schema import BENIGN_LABEL, family_of
from fedids.model.checks import DEFAULT_MAX_FALSE_ALARM_RATE

METRIC_KEYS = (
    "accuracy",
    "macro_f1",
    "weighted_f1",
    "mcc",
    "false_alarms",
    "per_class",
    "per_family",
    "confusion",
)


def false_alarms(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """What a SOC sees of a detector: false alerts per 1,000 benign flows and the share of attack flows
    alerted at all (any attack label counts; which one is the per-class figures' business).

    Returns ``{"benign_flows", "false_alerts", "per_1000", "attack_flows", "attack_alerts",
    "attack_recall"}``; rates are None when there is no flow to divide by.
    """
    benign = np.asarray(y_true) == BENIGN_LABEL
    alert = np.asarray(y_pred) != BENIGN_LABEL
    n_benign, n_attack = int(benign.sum()), int((~benign).sum())
    fa, hit = int((benign & alert).sum()), int((~benign & alert).sum())
    return {
        "benign_flows": n_benign,
        "false_alerts": fa,
        "per_1000": 1000.0 * fa / n_benign if n_benign else None,
        "attack_flows": n_attack,
        "attack_alerts": hit,
        "attack_recall": hit / n_attack if n_attack else None,
    }


RATE_GRID: tuple[float, ...] = (0.0, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
"""False-alarm rates for which a model stores its validation threshold (``--max-false-alarm-rate``)."""


def threshold_rule(
    attack_score: np.ndarray,
    is_benign: np.ndarray,
    max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE,
) -> dict:
    """:func:`choose_threshold` at ``max_false_alarm_rate`` (the default rule), plus ``table``: the
    threshold and validation recall at every rate of :data:`RATE_GRID`, so that a detector can meet
    another budget without the validation data (:func:`threshold_for_rate`)."""
    rule = choose_threshold(attack_score, is_benign, max_false_alarm_rate)
    rule["table"] = [
        {
            k: v
            for k, v in choose_threshold(attack_score, is_benign, r).items()
            if k in ("max_false_alarm_rate", "threshold", "validation_attack_recall")
        }
        for r in RATE_GRID
    ]
    return rule


def choose_threshold(
    attack_score: np.ndarray,
    is_benign: np.ndarray,
    max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE,
) -> dict:
    """The lowest alert threshold on ``attack_score`` (``1 - P(BENIGN)``) whose false-alarm rate on these
    (validation) flows stays at or below ``max_false_alarm_rate``.

    A flow alerts when its score is ``>= threshold``. With ``n`` benign flows, at most
    ``floor(rate * n)`` of them may score at or above the threshold, so it sits just above the next
    benign score down. Returns ``{"threshold", "max_false_alarm_rate", "validation_benign",
    "validation_false_alerts", "validation_attack_recall"}`` (recall None without attack flows).
    """
    if not 0.0 <= max_false_alarm_rate <= 1.0:
        raise ValueError(f"max_false_alarm_rate must be in [0, 1], got {max_false_alarm_rate}")
    score = np.asarray(attack_score, dtype=np.float64)
    benign = np.asarray(is_benign, dtype=bool)
    ranked = np.sort(score[benign])[::-1]
    allowed = int(np.floor(max_false_alarm_rate * len(ranked) + 1e-9))
    if allowed >= len(ranked):
        threshold = 0.0
    else:
        threshold = float(min(1.0, np.nextafter(ranked[allowed], np.inf)))
    attacks = score[~benign]
    return {
        "threshold": threshold,
        "max_false_alarm_rate": float(max_false_alarm_rate),
        "validation_benign": int(len(ranked)),
        "validation_false_alerts": int((ranked >= threshold).sum()),
        "validation_attack_recall": float((attacks >= threshold).mean()) if len(attacks) else None,
    }


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
        "false_alarms": false_alarms(y_true, y_pred),
        "per_class": _per_class(y_true, y_pred, labels),
        "per_family": {
            fam: {**v, "accuracy": float(np.mean((fam_true == fam) == (fam_pred == fam)))}
            for fam, v in _per_class(fam_true, fam_pred, families).items()
        },
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


SCORE_LOGIT_SPAN = 8
SCORE_BINS = 4096
"""Bins of the attack-score histograms that federated clients sum (:func:`threshold_rule_from_histograms`).

The bins are uniform in the score's log-odds over ``[-SCORE_LOGIT_SPAN, SCORE_LOGIT_SPAN]`` decades
(scores from 1e-8 to 1 - 1e-8), not in the score: a detector's alert thresholds for a 0.1% false-alarm
budget commonly sit at 0.999 or more, where a trained model puts its confident benign look-alikes, and bins
of 1/4096 in the score put every such flow in the last bin, so that no threshold below 1 met the budget
and the federated model's default rule alerted on almost nothing. A bin spans about 1.1e-5 of score near
0.001 and 0.999, 2.3e-3 near 0.5, and 1.1e-8 near 1 - 1e-6."""


@functools.cache
def score_edges() -> np.ndarray:
    """The ``SCORE_BINS`` lower edges of the histogram bins: ``edges[0] = 0`` and ``edges[k]`` the score
    whose log-odds is ``ln(10) * SCORE_LOGIT_SPAN * (2k / SCORE_BINS - 1)``; bin ``k`` holds
    ``[edges[k], edges[k + 1])``, the last bin up to 1. Computed once; the array is read-only."""
    logit = (
        np.log(10.0) * SCORE_LOGIT_SPAN * (2.0 * np.arange(SCORE_BINS, dtype=np.float64) / SCORE_BINS - 1.0)
    )
    edges = 1.0 / (1.0 + np.exp(-logit))
    edges[0] = 0.0
    edges.setflags(write=False)
    return edges


def score_histogram(attack_score: np.ndarray) -> np.ndarray:
    """``(SCORE_BINS,)`` int64 counts of ``attack_score`` in [0, 1] over the bins of :func:`score_edges`
    (a score at an edge counts in the bin that starts there, so ``score >= edges[j]`` is exactly bins
    ``j`` and above)."""
    score = np.clip(np.asarray(attack_score, np.float64), 0.0, 1.0)
    bins = np.searchsorted(score_edges(), score, side="right") - 1
    return np.bincount(bins, minlength=SCORE_BINS).astype(np.int64)


def choose_threshold_from_histograms(
    benign: np.ndarray, attack: np.ndarray, max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE
) -> dict:
    """:func:`choose_threshold` from summed score histograms (federated clients share counts, not scores):
    the lowest bin edge (:func:`score_edges`) with at most ``floor(rate * n_benign)`` benign flows at or
    above it, i.e. the first edge at or above the exact rule's threshold. Same keys as
    :func:`choose_threshold`."""
    if not 0.0 <= max_false_alarm_rate <= 1.0:
        raise ValueError(f"max_false_alarm_rate must be in [0, 1], got {max_false_alarm_rate}")
    benign, attack = np.asarray(benign, np.int64), np.asarray(attack, np.int64)
    above_b = np.cumsum(benign[::-1])[::-1]  # benign flows with score >= edge j
    above_a = np.cumsum(attack[::-1])[::-1]
    n_benign, n_attack = int(benign.sum()), int(attack.sum())
    allowed = int(np.floor(max_false_alarm_rate * n_benign + 1e-9))
    ok = np.flatnonzero(above_b <= allowed)
    j = int(ok[0]) if len(ok) else SCORE_BINS  # SCORE_BINS: no edge allows it, alert on nothing below 1
    threshold = float(score_edges()[j]) if j < SCORE_BINS else 1.0
    false_alerts = int(above_b[j]) if j < SCORE_BINS else 0
    recall = (float(above_a[j]) / n_attack if j < SCORE_BINS else 0.0) if n_attack else None
    return {
        "threshold": float(threshold),
        "max_false_alarm_rate": float(max_false_alarm_rate),
        "validation_benign": n_benign,
        "validation_false_alerts": false_alerts,
        "validation_attack_recall": recall,
    }


def threshold_rule_from_histograms(
    benign: np.ndarray, attack: np.ndarray, max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE
) -> dict:
    """:func:`threshold_rule` (the default rule plus the table over :data:`RATE_GRID`) from histograms."""
    rule = choose_threshold_from_histograms(benign, attack, max_false_alarm_rate)
    rule["table"] = [
        {
            k: v
            for k, v in choose_threshold_from_histograms(benign, attack, r).items()
            if k in ("max_false_alarm_rate", "threshold", "validation_attack_recall")
        }
        for r in RATE_GRID
    ]
    return rule
