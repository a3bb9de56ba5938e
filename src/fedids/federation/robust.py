"""Robust aggregation at a site, where the site sees its devices' update contributions in plaintext.

Pure numpy, no Flower. A site of a three-tier federation (:mod:`fedids.federation.sites`) receives the
update contributions of its own devices (:func:`fedids.federation.aggregation.update_contribution`:
``[a_i x_body | a_ic x_rows | a_i x_rows | a_i | a_ic | metrics]``). Each one holds the device's
*proposal* ``x_i`` (the global model plus its server-scaled update, :func:`~fedids.federation.aggregation.propose`),
its weight ``a_i`` and class shares ``a_ic``. :func:`robust_contribution` combines them into the site's
contribution **in the same weighted-sum form**, so the central tier adds site contributions exactly as
it adds device ones and needs to know nothing of the defence.

Defences (``--robust``, :meth:`RobustSpec.parse`):

* ``none``: the plain sum of the contributions (the three-tier run then ends on the flat run's model);
* ``normclip[:B]``: each device's update ``x_i - r`` bounded to L2 norm ``B`` (default: the median of the
  site's update norms, FLAME's adaptive bound, Nguyen et al., USENIX Security 2022), then the usual
  weighted sum;
* ``median``: norm bounding at the median norm, then the coordinate-wise weighted median of the proposals;
* ``trimmed:F``: norm bounding at the median norm, then the coordinate-wise weighted mean of what is
  left after trimming the fraction ``F`` of the weight from each end (``0 <= F < 0.5``);
* ``flame``: FLAME's filter (Nguyen et al., USENIX Security 2022, section 4): HDBSCAN (scikit-learn's) over
  the pairwise cosine distances of the updates ``x_i - r``, ``min_cluster_size`` a strict majority of the
  site's devices; the devices outside the majority cluster are left out, the others bounded to the median
  norm of all updates and summed with their weights. FLAME's third step, Gaussian noise on the aggregate,
  is not applied: it trades clean accuracy for backdoor removal, and fedids' DP (``--privacy dp``) is
  where noise with an accounted meaning is added.

The reference ``r`` is the proposal of a device that did not move (the global model after the server's
momentum step) where the site can read the global model (every mode but ``he``, whose global model is
sealed); otherwise the coordinate-wise median of the site's proposals. Medians and trimming give every
device one vote, whatever weight it reports: the body and the fallback head rows count each device once,
each class's head row counts once each device that reports flows of that class (the class-aware head:
the row of a class is decided by the devices that hold it); ties are split at the middle. The site's
contribution carries its devices' total weight and shares, so the central tier weighs sites as the flat
objective does.

Guarantees and limits (semi-honest site, malicious devices): a device can move its site's contribution
by at most the bound's share of its weight (``normclip``), and only within the range of its site's honest
proposals while the malicious devices are fewer than half of the site's devices (``median``) or than ``F``
of them (``trimmed``) for the body, and fewer than half of the holders of a class for that class's row;
under ``flame`` a device left out moves nothing and a kept one at most the bound's share of its weight.
A malicious device can still inflate its reported weight, which moves its site's weight at the central
tier (not its site's direction), and with two holders of a class it decides half of that class's row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from fedids.federation.aggregation import METRICS, UpdateLayout, pack

ROBUST_KINDS = ("none", "normclip", "median", "trimmed", "flame")


@dataclass(frozen=True)
class RobustSpec:
    """``kind`` (one of :data:`ROBUST_KINDS`) and ``value``: ``normclip``'s bound B (0: the median norm),
    ``trimmed``'s fraction F."""

    kind: str = "none"
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> RobustSpec:
        """``none``, ``normclip``, ``normclip:B`` (B > 0), ``median``, ``trimmed:F`` (0 <= F < 0.5) or
        ``flame``."""
        kind, _, arg = text.strip().partition(":")
        usage = "use none, normclip[:B], median, trimmed:F or flame"
        if kind in ("none", "median", "flame") and not arg:
            return cls(kind)
        if kind == "normclip" or (kind == "trimmed" and arg):
            try:
                value = float(arg) if arg else 0.0
            except ValueError:
                raise ValueError(f"robust {text!r}: {arg!r} is not a number ({usage})") from None
            if kind == "normclip" and arg and not (np.isfinite(value) and value > 0):
                raise ValueError(f"robust {text!r}: the bound B must be a finite number > 0")
            if kind == "trimmed" and not 0.0 <= value < 0.5:
                raise ValueError(f"robust {text!r}: the fraction F must be in [0, 0.5)")
            return cls(kind, value)
        raise ValueError(f"unknown robust aggregation {text!r}: {usage}")

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def __str__(self) -> str:
        if self.kind == "normclip" and self.value:
            return f"normclip:{self.value:g}"
        return f"trimmed:{self.value:g}" if self.kind == "trimmed" else self.kind


@dataclass
class Decoded:
    """Contributions taken apart: proposals ``x`` ``(n, body + head)`` (head as ``(C, H + 1)`` rows,
    raveled), weights ``a`` ``(n,)``, class shares ``shares`` ``(n, C)``, metrics ``(n, len(METRICS))``."""

    x: np.ndarray
    a: np.ndarray
    shares: np.ndarray
    metrics: np.ndarray


def decode(layout: UpdateLayout, vectors: list[np.ndarray]) -> Decoded:
    """The proposals, weights, shares and metrics of update contributions (each ``(layout.length,)``)."""
    v = np.asarray(vectors, np.float64).reshape(len(vectors), layout.length)
    body_n, head_n, c = layout.body_size, layout.head_size, layout.n_classes
    a = v[:, body_n + 2 * head_n]
    shares = v[:, body_n + 2 * head_n + 1 : body_n + 2 * head_n + 1 + c]
    safe = np.where(a > 0, a, 1.0)[:, None]
    by_client = v[:, body_n + head_n : body_n + 2 * head_n] / safe
    by_class = v[:, body_n : body_n + head_n].reshape(len(v), c, -1)
    # a device without weight a_i (none in practice): its rows from the class rows it holds
    by_class = by_class / np.where(shares > 0, shares, 1.0)[:, :, None]
    rows = np.where((a > 0)[:, None], by_client, by_class.reshape(len(v), -1))
    x = np.concatenate([v[:, :body_n] / safe, rows], axis=1)
    return Decoded(x, a, shares, v[:, -len(METRICS) :])


def encode(
    layout: UpdateLayout, x: np.ndarray, a: float, shares: np.ndarray, metrics: np.ndarray
) -> np.ndarray:
    """One contribution from a proposal ``x`` (decoded layout), its weight, class shares and metrics."""
    body_n, c = layout.body_size, layout.n_classes
    rows = x[body_n:].reshape(c, -1)
    return pack(a * x[:body_n], shares[:, None] * rows, a * rows, a, shares, metrics)


def _weights_like(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, np.float64)
    return np.broadcast_to(w[:, None] if w.ndim == 1 else w, values.shape)


def weighted_trimmed_mean(values: np.ndarray, weights: np.ndarray, fraction: float) -> np.ndarray:
    """Per column of ``values`` ``(n, d)``: the mean weighted by ``weights`` (``(n,)`` or ``(n, d)``) of the mass
    between ``fraction`` and ``1 - fraction`` of the total, in sorted order (``0 <= fraction < 0.5``).
    Zero where the total weight is zero."""
    order = np.argsort(values, axis=0, kind="stable")
    sorted_values = np.take_along_axis(values, order, axis=0)
    w = np.take_along_axis(_weights_like(weights, values), order, axis=0)
    total = w.sum(axis=0)
    upper = np.cumsum(w, axis=0)
    lower = upper - w
    lo, hi = fraction * total, (1.0 - fraction) * total
    kept = np.clip(np.minimum(upper, hi) - np.maximum(lower, lo), 0.0, None)
    mass = kept.sum(axis=0)
    return np.where(mass > 0, (kept * sorted_values).sum(axis=0) / np.where(mass > 0, mass, 1.0), 0.0)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per column of ``values`` ``(n, d)``: the weighted median (midpoint of the lower and upper one when
    the weight splits exactly in half; zero where the total weight is zero)."""
    order = np.argsort(values, axis=0, kind="stable")
    sorted_values = np.take_along_axis(values, order, axis=0)
    w = np.take_along_axis(_weights_like(weights, values), order, axis=0)
    cumulative, half = np.cumsum(w, axis=0), 0.5 * w.sum(axis=0)
    n = len(values)
    lower = np.minimum(np.argmax(cumulative >= half - 1e-12 * (half + 1), axis=0), n - 1)
    upper = np.minimum(np.argmax(cumulative > half + 1e-12 * (half + 1), axis=0), n - 1)
    cols = np.arange(values.shape[1])
    median = 0.5 * (sorted_values[lower, cols] + sorted_values[upper, cols])
    return np.where(w.sum(axis=0) > 0, median, 0.0)


@dataclass
class RobustRecord:
    """What a defence did at one site: devices, how many were norm-bounded, the bound (L2), the update
    norms and (``flame``) the positions, in the site's order, of the devices left out."""

    devices: int = 0
    clipped: int = 0
    bound: float | None = None
    norms: list[float] = field(default_factory=list)
    excluded: list[int] = field(default_factory=list)


def majority_cluster(updates: np.ndarray) -> np.ndarray:
    """FLAME's filter: a boolean mask over the rows of ``updates`` ``(n, d)``, True for the members of the
    cluster that HDBSCAN finds over their pairwise cosine distances with ``min_cluster_size`` a strict
    majority ``m = n // 2 + 1`` (``min_samples`` 1, a single cluster allowed), as in FLAME.

    Two clusters of ``m`` cannot both exist, so HDBSCAN's answer is always its single-cluster case: the
    rows of the tightest majority (the component of the single-linkage tree that still holds ``m`` rows at
    the smallest distance); rows that join it only at a larger distance are left out. So at least ``m``
    rows are kept, and where honest updates differ as much as each other (non-IID devices) about
    ``n - m`` honest devices are left out too: 1 of 3, 2 of 5 (measured in docs/evaluation.md). If HDBSCAN
    calls every row noise, every row is kept. Fewer than 3 rows: every row (a majority of two is both).
    A zero update has cosine distance 1 to every other."""
    n = len(updates)
    if n < 3:
        return np.ones(n, bool)
    from sklearn.cluster import HDBSCAN

    norms = np.linalg.norm(updates, axis=1)
    unit = updates / np.where(norms > 0, norms, 1.0)[:, None]
    distance = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    labels = HDBSCAN(
        metric="precomputed", min_cluster_size=n // 2 + 1, min_samples=1, allow_single_cluster=True, copy=True
    ).fit_predict(distance)
    clustered = labels[labels >= 0]
    if not len(clustered):
        return np.ones(n, bool)
    biggest = np.bincount(clustered).argmax()
    return labels == biggest


def _combine(layout: UpdateLayout, d: Decoded, spec: RobustSpec) -> np.ndarray:
    """The median or trimmed mean of norm-bounded proposals, in the weighted-sum form.

    One device, one vote: the statistic weighs every device of the site equally (the body and the
    fallback head rows), and every device that reports flows of a class equally for that class's row. The
    weights ``a_i`` and ``a_ic`` are the devices' own reports, so a median weighted by them gives a device
    that holds (or claims) most of its site's flows the whole site: measured on the real samples, 20%
    label flipping, seed 4, one flipper held 64% of its site's flows and inverted the global model
    (docs/evaluation.md). The site's contribution still carries the devices' total weight and shares, so
    the central tier weighs sites as the flat objective does."""
    body_n, c = layout.body_size, layout.n_classes
    weight, shares = float(d.a.sum()), d.shares.sum(axis=0)

    def stat(values: np.ndarray, w: np.ndarray) -> np.ndarray:
        if spec.kind == "median":
            return weighted_median(values, w)
        return weighted_trimmed_mean(values, w, spec.value)

    votes = np.ones(len(d.x))
    body = stat(d.x[:, :body_n], votes)
    rows = d.x[:, body_n:].reshape(len(d.x), c, -1)
    by_client = stat(rows.reshape(len(d.x), -1), votes).reshape(c, -1)
    holders = (d.shares > 0).astype(np.float64)
    by_class = np.stack([stat(rows[:, k], holders[:, k]) for k in range(c)]) if c else by_client
    return pack(
        weight * body, shares[:, None] * by_class, weight * by_client, weight, shares, d.metrics.sum(axis=0)
    )


def robust_contribution(
    layout: UpdateLayout, vectors: list[np.ndarray], spec: RobustSpec, reference: np.ndarray | None
) -> tuple[np.ndarray, RobustRecord]:
    """A site's contribution ``(layout.length,)`` from its devices' ``vectors`` under ``spec``.

    ``reference``: the proposal of a device that did not move, in the decoded layout (``(body + head,)``,
    :func:`reference_proposal`), or None for the weighted median of the proposals.
    """
    if not vectors:
        raise ValueError("a site without contributions has nothing to combine")
    if not spec.active:
        return np.sum(np.asarray(vectors, np.float64), axis=0), RobustRecord(len(vectors))
    d = decode(layout, vectors)
    center = reference if reference is not None else weighted_median(d.x, np.ones(len(d.x)))
    deviation = d.x - center
    norms = np.linalg.norm(deviation, axis=1)
    bound = spec.value if spec.kind == "normclip" and spec.value else float(np.median(norms))
    factor = np.minimum(1.0, bound / np.where(norms > 0, norms, 1.0))
    d.x = center + deviation * factor[:, None]
    record = RobustRecord(
        len(vectors), int(np.sum(norms > bound * (1 + 1e-9))), bound, norms.round(6).tolist()
    )
    if spec.kind in ("normclip", "flame"):
        kept = majority_cluster(deviation) if spec.kind == "flame" else np.ones(len(d.x), bool)
        record.excluded = np.flatnonzero(~kept).tolist()
        total = sum(
            encode(layout, d.x[i], float(d.a[i]), d.shares[i], d.metrics[i]) for i in np.flatnonzero(kept)
        )
        return np.asarray(total, np.float64), record
    return _combine(layout, d, spec), record


def update_defence(
    layout: UpdateLayout, spec: RobustSpec, reference: np.ndarray | None
) -> Callable[[list[np.ndarray]], tuple[np.ndarray, dict]] | None:
    """A site's defence of its devices' update contributions under ``spec`` (None: a plain sum)."""
    if not spec.active:
        return None

    def combine(vectors: list[np.ndarray]) -> tuple[np.ndarray, dict]:
        total, record = robust_contribution(layout, vectors, spec, reference)
        return total, asdict(record)

    return combine


def reference_proposal(layout: UpdateLayout, proposal: list[np.ndarray]) -> np.ndarray:
    """A proposal (model arrays) in the decoded layout ``[body | head rows]``."""
    from fedids.federation.aggregation import HEAD_ARRAYS, flatten, head_rows

    body = flatten(proposal[:-HEAD_ARRAYS]) if len(proposal) > HEAD_ARRAYS else np.zeros(0)
    out = np.concatenate([body, head_rows(proposal).ravel()])
    if out.shape != (layout.body_size + layout.head_size,):
        raise ValueError("the reference does not match the update layout")
    return out


__all__ = [
    "ROBUST_KINDS",
    "RobustSpec",
    "RobustRecord",
    "decode",
    "encode",
    "weighted_median",
    "weighted_trimmed_mean",
    "majority_cluster",
    "robust_contribution",
    "update_defence",
    "reference_proposal",
]
