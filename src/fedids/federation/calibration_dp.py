"""Head calibration under differential privacy: the calibration sums as Gaussian releases.

In a DP run every statistic that leaves a client must be covered by the run's guarantee, the head
calibration's sums included (:mod:`fedids.federation.calibration`). Each client adds Gaussian noise to its
vectors before sealing them, with the noise source of :mod:`fedids.privacy.secure_random`:

* **Moments**, per class: the count, the sum and the sum of squares of the GRU's last hidden state. Its
  coordinates lie in (-1, 1) (``tanh``), so one window changes the vector by at most ``sqrt(1 + 2H)`` in
  L2 (:func:`moments_sensitivity`). The head is refitted on a *diagonal* covariance per class: the full
  outer products have sensitivity ``H`` and would need ``H`` times the noise on ``H**2`` coordinates.
* **The check** (confusion counts of the old and the refitted head on the window's split): one window
  changes two counts by one: sensitivity ``sqrt(2)``. The score histograms that choose the alert threshold
  are not released: under this noise they cannot place a threshold at a false-alarm rate of 1e-3.
* **Windows**: the moments are taken over the client's *head windows* (:func:`fedids.task.head_windows`),
  one per training flow as DP-SGD's windows are; a flow sits in at most ``window`` of them either way.
* **Unit**: ``window`` (DP-SGD's per-window privacy) releases the sums as they are; ``client`` (client-level
  ``dp``) divides each client's vectors by its number of windows first, so that a whole client changes the
  sum by at most the same bounds.

Noise per contributor: ``sigma * sensitivity / sqrt(shares)`` with ``shares`` the SecAgg threshold under
``secagg`` (a sum with fewer survivors aborts, it never goes out with less noise), otherwise 1: where the
reader sees each contribution, each carries the full noise (local DP). Accounting: the run budgets two
Gaussian releases at ``sigma`` before training starts (:func:`fedids.privacy.dp.calibrate_noise_multiplier`
and :func:`fedids.privacy.dpsgd.calibrate_noise` take them), so the final epsilon holds them.

Rounding counts, dropping negative counts and ignoring classes with too few noisy windows to estimate are
post-processing: they cost no privacy. The refitted head is then kept only if the noisy check says it
scores better, as in the plaintext modes, and by more than the check's noise could make it seem
(:func:`fedids.federation.calibration.decide`, from :func:`check_noise_std`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedids.federation.calibration import (
    CalibrationMoments,
    ClassMoments,
    check_size,
    class_moments,
    class_scale,
    moments_from_vector,
    moments_length,
    split_check_vector,
    validation_from_vector,
    validation_length,
)
from fedids.privacy.dp import add_gaussian_noise, distributed_noise_std

UNITS = ("window", "client")
RELEASES = 2  # the moments sum and the check's confusion sum
CHECK_SENSITIVITY = math.sqrt(2.0)  # a window: one cell of each head's confusion matrix of its split
CLIENT_SCALE = 1e6  # client unit: summed window shares are scaled up to counts before rounding
MIN_NOISY_COUNT = 3.0  # a class joins the refit only with this many noise stds of windows


@dataclass(frozen=True)
class CalibrationPrivacy:
    """How a DP run releases its calibration sums: the DP unit, the noise multiplier and the number of noise
    shares the released sum is guaranteed to hold."""

    unit: str
    noise_multiplier: float
    shares: int

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"calibration DP unit must be one of {UNITS}, got {self.unit!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0) or self.shares < 1:
            raise ValueError("calibration DP needs a positive noise multiplier and at least one share")

    def contributor_std(self, sensitivity: float) -> float:
        """Noise std one client adds to a vector of this ``sensitivity``."""
        return distributed_noise_std(self.noise_multiplier, sensitivity, self.shares)


def moments_sensitivity(hidden: int) -> float:
    """L2 bound of one window's (or, per-window normalised, one client's) moments contribution: count 1,
    sum ``sqrt(H)`` and squares ``sqrt(H)`` for hidden coordinates in (-1, 1)."""
    return math.sqrt(1.0 + 2.0 * hidden)


def private_block_length(n_classes: int, hidden: int) -> int:
    return n_classes * (1 + 2 * hidden)


def private_moments_length(n_classes: int, hidden: int) -> int:
    """Two blocks, real windows then head windows (:mod:`fedids.federation.calibration`)."""
    return 2 * private_block_length(n_classes, hidden)


def pair_sensitivity(hidden: int) -> float:
    """L2 bound of one window's contribution to both blocks: a training flow has one real window and
    one head window, so the vector moves by at most ``sqrt(2)`` times :func:`moments_sensitivity`."""
    return math.sqrt(2.0) * moments_sensitivity(hidden)


def moments_contribution(features: np.ndarray, targets: np.ndarray, n_classes: int, unit: str) -> np.ndarray:
    """One client's moments before noise, ``[count (C,), sum (C, H), squares (C, H)]``; under the ``client``
    unit divided by its number of windows. ``features (n, H)`` must lie in [-1, 1], the bound
    :func:`moments_sensitivity` holds for."""
    if features.size and np.abs(features).max() > 1.0:
        raise ValueError("hidden features outside [-1, 1]: the moments' sensitivity bound does not hold")
    moments = class_moments(features, targets, n_classes)
    squares = np.diagonal(moments.outer, axis1=1, axis2=2)
    vector = np.concatenate([moments.count, moments.sum.ravel(), squares.ravel()])
    return vector / max(1, int((targets >= 0).sum())) if unit == "client" else vector


def private_moments_vector(
    features: np.ndarray,
    targets: np.ndarray,
    totals: np.ndarray,
    dp: CalibrationPrivacy,
    head_features: np.ndarray | None = None,
) -> np.ndarray:
    """A client's noised moments for the sum: :func:`moments_contribution` of its real windows'
    ``features`` and of its head windows' ``head_features`` (None: the same; same rows, same ``targets``),
    plus Gaussian noise for :func:`pair_sensitivity`, each class divided by ``totals`` like the plaintext
    moments vector."""
    n_classes, hidden = len(totals), features.shape[1]
    head_features = features if head_features is None else head_features
    if head_features.shape != features.shape:
        raise ValueError("head windows' features must match the real windows' row for row")
    vector = np.concatenate(
        [moments_contribution(f, targets, n_classes, dp.unit) for f in (features, head_features)]
    )
    vector = add_gaussian_noise(vector, dp.contributor_std(pair_sensitivity(hidden)))
    scale = 1.0 / class_scale(totals, n_classes)
    return np.concatenate([_scaled_block(block, scale, hidden) for block in np.split(vector, 2)])


def _block_parts(block: np.ndarray, n_classes: int, hidden: int) -> tuple[np.ndarray, ...]:
    """A block ``[count (C,), sum (C, H), squares (C, H)]`` of a private moments vector, as three arrays."""
    sums, squares = (p.reshape(n_classes, hidden) for p in np.split(block[n_classes:], 2))
    return block[:n_classes], sums, squares


def _scaled_block(block: np.ndarray, scale: np.ndarray, hidden: int) -> np.ndarray:
    """``block`` with each class's count, sum and squares multiplied by ``scale`` ``(C,)``."""
    count, sums, squares = _block_parts(block, len(scale), hidden)
    return np.concatenate(
        [count * scale, (sums * scale[:, None]).ravel(), (squares * scale[:, None]).ravel()]
    )


def moments_from_private_sum(
    total: np.ndarray, hidden: int, totals: np.ndarray, dp: CalibrationPrivacy
) -> CalibrationMoments:
    """Per-class Gaussians (diagonal covariance) from a noised moments sum, both blocks
    (:class:`~fedids.federation.calibration.CalibrationMoments`), each read by :func:`_private_block`.

    Classes whose noisy count is below :data:`MIN_NOISY_COUNT` times the sum's least noise std
    (``sigma * sensitivity``, what every released sum holds) get count 0, so the refit leaves their head
    rows as they are; the server and the clients (under ``he``) read the same sum the same way. Under the
    ``client`` unit the summed window shares are rescaled to the federation's total of flows (``totals``)
    before rounding."""
    n_classes = len(totals)
    total = np.asarray(total, np.float64)
    if total.shape != (private_moments_length(n_classes, hidden),) or not np.isfinite(total).all():
        raise ValueError(f"private moments sum has {total.size} values or non-finite ones")
    return CalibrationMoments(*(_private_block(b, hidden, totals, dp) for b in np.split(total, 2)))


def _private_block(
    total: np.ndarray, hidden: int, totals: np.ndarray, dp: CalibrationPrivacy
) -> ClassMoments:
    n_classes = len(totals)
    scale = class_scale(totals, n_classes)
    count, sums, squares = _block_parts(_scaled_block(total, scale, hidden), n_classes, hidden)
    noise = dp.noise_multiplier * pair_sensitivity(hidden)
    threshold = MIN_NOISY_COUNT * noise  # in the count's units: windows, or summed window shares
    usable = count >= (max(2.0, threshold) if dp.unit == "window" else threshold)
    if dp.unit == "client" and count[usable].sum() > 0:
        factor = float(scale.sum() / count[usable].sum())
        count, sums, squares = count * factor, sums * factor, squares * factor
    moments = ClassMoments.zeros(n_classes, hidden)
    for c in np.flatnonzero(usable):
        n = float(np.rint(count[c]))
        mean = np.clip(sums[c] / count[c], -1.0, 1.0)
        variance = np.clip(squares[c] / count[c] - mean * mean, 1e-5, 1.0)
        moments.count[c], moments.sum[c] = n, mean * n
        moments.outer[c] = n * (np.diag(variance) + np.outer(mean, mean))
    return moments


def private_check_vector(
    counts: np.ndarray, windows: int, n_classes: int, dp: CalibrationPrivacy
) -> np.ndarray:
    """A client's noised check counts (:func:`fedids.federation.calibration.confusion_vector`) over its
    ``windows`` scored windows: the confusion counts with Gaussian noise, the score histograms left at zero
    (a constant costs no privacy; under noise they could not place an alert threshold at a false-alarm
    rate of 1e-3, so DP runs keep the default decision rule)."""
    size = check_size(n_classes)
    vector = np.zeros(len(counts))
    confusion = np.asarray(counts, np.float64)[:size]
    if dp.unit == "client":
        confusion = confusion * (CLIENT_SCALE / max(1, windows))
    sensitivity = CHECK_SENSITIVITY * (CLIENT_SCALE if dp.unit == "client" else 1.0)
    vector[:size] = add_gaussian_noise(confusion, dp.contributor_std(sensitivity))
    return vector


def check_noise_std(dp: CalibrationPrivacy | None) -> float:
    """The noise std per cell that every noised check sum carries at least (0 without DP): each of ``n``
    contributors adds ``sigma * sensitivity / sqrt(shares)`` and ``n >= shares``. The lower bound, not the
    sum's actual noise, so that the server and every ``he`` client (which do not know ``n``) decide alike."""
    if dp is None:
        return 0.0
    return dp.noise_multiplier * CHECK_SENSITIVITY * (CLIENT_SCALE if dp.unit == "client" else 1.0)


def check_from_private_sum(total: np.ndarray, n_classes: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(confusions, histograms)`` of a noised check sum. Counts are rounded but negative ones are kept: the
    sums of a row or column that macro-F1 reads stay unbiased (clipping every cell at 0 would add half a
    noise std to each empty cell). Histograms are zero (:func:`private_check_vector`)."""
    total = np.asarray(total, np.float64)
    if total.shape != (validation_length(n_classes),) or not np.isfinite(total).all():
        raise ValueError("private check sum has the wrong size or non-finite values")
    confusions, histograms = split_check_vector(np.rint(total), 2, n_classes)
    return confusions, np.zeros(histograms.shape, dtype=np.int64)


# ------------------------------------------- one reading of each sum, for the server and the clients
def moments_sum_length(n_classes: int, hidden: int, dp: CalibrationPrivacy | None) -> int:
    """Length of the moments sum: full outer products without DP, diagonal ones with it."""
    return moments_length(n_classes, hidden) if dp is None else private_moments_length(n_classes, hidden)


def read_moments(
    total: np.ndarray, n_classes: int, hidden: int, totals: np.ndarray, dp: CalibrationPrivacy | None
) -> CalibrationMoments:
    """The class moments of a summed moments vector, noised (``dp``) or not."""
    if dp is None:
        return moments_from_vector(total, n_classes, hidden, totals)
    return moments_from_private_sum(total, hidden, totals, dp)


def read_check(
    total: np.ndarray, n_classes: int, dp: CalibrationPrivacy | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(confusions, histograms)`` of a summed check vector, noised (``dp``) or not."""
    return (
        validation_from_vector(total, 2, n_classes)
        if dp is None
        else check_from_private_sum(total, n_classes)
    )


__all__ = [
    "RELEASES",
    "CalibrationPrivacy",
    "check_from_private_sum",
    "check_noise_std",
    "moments_contribution",
    "moments_from_private_sum",
    "moments_sensitivity",
    "private_check_vector",
    "pair_sensitivity",
    "private_moments_length",
    "private_moments_vector",
    "moments_sum_length",
    "read_check",
    "read_moments",
]
