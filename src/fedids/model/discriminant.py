"""The prototype head's weights from class moments: linear discriminant analysis with shrunk covariances.

Each class is a Gaussian over the GRU's embedding with its own mean and one covariance shared by all
classes; with equal class priors a window's class posterior is the softmax of the linear scores
``x @ inv(S) @ mu_c - mu_c @ inv(S) @ mu_c / 2`` (the Mahalanobis distance to each class mean, less the
term common to every class). Why this read-out: a class seen in ten windows gets a usable mean long
before the linear head learns its row, and the shared covariance weighs the directions of the embedding
by how much classes vary along them (cosine similarity to the class means, the head before session 24,
weighs every direction alike). Measured (docs/rare-classes.md, session 24): macro-F1 0.688 / 0.973 at
k = 10 / 20 training flows per attack on the real samples against 0.570 / 0.878 with the cosine head on
the same model. Equal priors, because a prior proportional to the class's count would
outvote the ten-window class the head exists for.

What it needs is exactly the per-class count, sum and sum of outer products of the embedding: the moments
that CCVR head calibration already sums across clients (:mod:`fedids.federation.calibration`; securely
in the private modes, noised under DP), so the federated head costs no new message and no new disclosure.
Every class covariance is shrunk toward a scaled identity by the Oracle Approximating Shrinkage estimate
(Chen, Wiesel, Eldar & Hero, IEEE TSP 2010), whose intensity is a closed form of the covariance itself;
the pooled covariance is the unweighted mean of the class covariances. Hand-written in NumPy because
scikit-learn's estimators (``LinearDiscriminantAnalysis``, ``OAS``) need the samples, which a federated
server never has; on samples the two agree (``tests/model/test_prototypes.py``).
"""

from __future__ import annotations

import numpy as np

ABSENT_OFFSET = -1e4
"""Score offset of a class without windows: its softmax weight underflows to 0."""


def has_mean(offsets):  # noqa: ANN001, ANN201 - numpy array or torch tensor, the same type back
    """Which classes of a head's ``offsets (C,)`` count as having a mean: those above half of
    :data:`ABSENT_OFFSET`. The one rule for every reader of a head (the model, its saved file, the
    federated message, the server that builds it). A class whose noised moments put its own offset that
    low (DP calibration) reads as absent too."""
    return offsets > ABSENT_OFFSET / 2


def oas_shrink(cov: np.ndarray, n: float) -> np.ndarray:
    """``cov`` (an empirical covariance of ``n`` samples, divided by ``n``) shrunk toward
    ``trace(cov) / p * I`` with the OAS intensity, as scikit-learn's ``oas`` computes it."""
    p = cov.shape[0]
    mu = np.trace(cov) / p
    alpha = np.mean(cov**2)
    den = (n + 1) * (alpha - mu**2 / p)
    shrinkage = 1.0 if den <= 0 else min((alpha + mu**2) / den, 1.0)
    return (1.0 - shrinkage) * cov + shrinkage * mu * np.eye(p)


def gaussian_discriminant(
    count: np.ndarray, sums: np.ndarray, outer: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head's ``weights (C, H)``, ``offsets (C,)`` and ``present (C,)`` from per-class window
    ``count (C,)``, embedding ``sums (C, H)`` and ``outer (C, H, H)`` sums of outer products.

    A class is present with at least one window (a count below 0.5 reads as none: DP-noised counts).
    Its score for an embedding ``x`` is ``weights[c] @ x + offsets[c]``; an absent class has weights 0
    and offset :data:`ABSENT_OFFSET`. Noised or rounded moments (DP, a secure sum's fixed point) are
    read through the nearest positive semi-definite covariance, so the result moves continuously with
    them. Raises ValueError if no class is present or the moments are not finite."""
    count = np.asarray(count, np.float64)
    sums, outer = np.asarray(sums, np.float64), np.asarray(outer, np.float64)
    if not (np.isfinite(count).all() and np.isfinite(sums).all() and np.isfinite(outer).all()):
        raise ValueError("class moments must be finite")
    present = count >= 0.5
    if not present.any():
        raise ValueError("no class has a window")
    n_classes, hidden = sums.shape
    means = np.zeros((n_classes, hidden))
    covs = []
    for c in np.flatnonzero(present):
        means[c] = sums[c] / count[c]
        cov = outer[c] / count[c] - np.outer(means[c], means[c])
        values, vectors = np.linalg.eigh((cov + cov.T) / 2)
        covs.append(oas_shrink((vectors * np.maximum(values, 0.0)) @ vectors.T, count[c]))
    pooled = np.mean(covs, axis=0)
    # A floor relative to the pooled scale: one-window classes alone give a zero covariance.
    pooled += (1e-6 * np.trace(pooled) / hidden + 1e-12) * np.eye(hidden)
    weights = np.linalg.solve(pooled, means.T).T
    offsets = np.where(present, -0.5 * np.sum(weights * means, axis=1), ABSENT_OFFSET)
    return np.where(present[:, None], weights, 0.0), offsets, present


__all__ = ["ABSENT_OFFSET", "gaussian_discriminant", "has_mean", "oas_shrink"]
