"""One aggregation pipeline for every privacy mode: sum-able contributions and the server step on a sum.

Every client reply that the server combines — the model update, the statistics of the setup round, the
feature moments and confusion matrices of head calibration, the training metrics — is a flat vector
that the server only ever *adds up*. A secure-sum backend per mode does the adding (numpy for ``none``
and ``dp``; BFV for ``he``; SecAgg masks for ``secagg``; BFV-encrypted masks for ``he+secagg``); the
server never needs an individual vector. This module is the shared, Flower-free part: how a client
lays out its vector (:func:`update_contribution`) and how a sum becomes the next global model
(:func:`finalize_update`). The ServerApp runs it where the mode shows it the sum, the clients run it
after decrypting where the mode does not (``he``): both call the same functions on the same numbers,
so all of them end with the same global model.

The server step on a sum
------------------------
FedAvgM with objective client weights and class-aware head rows is *affine* in the client updates, so
each client can apply it to its own update before weighting: with global model ``w``, server momentum
``m``, server learning rate ``lr`` and momentum factor ``mu``, client ``i`` proposes

    ``x_i = w - lr * (mu * m - delta_i)``        (``delta_i`` = its local model minus ``w``)

and the weighted mean of the proposals is exactly Flower's FedAvgM step on the weighted mean update.
The vector carries the weights themselves as extra coordinates, so the mean is ``sum / sum of weights``
however many clients dropped out, and the momentum of the next round follows from the last two global
models (``m_t = (w_{t-1} - w_t) / lr``): nobody has to store or re-encrypt server state, and the
``he`` server only holds the ciphertexts of the last two sums.

Vector layout of a model update (length :attr:`UpdateLayout.length`)::

    [ a_i * x_body | a_ic * x_head_row_c (C rows) | a_i * x_head (C rows) | a_i | a_ic (C) | metrics ]

``a_i`` is the client's share of the class-weighted objective (``W_i / W``, see
:func:`fedids.federation.strategies.objective_weights`) or of the examples; ``a_ic = k_ic / K_c`` its
share of class ``c``. Each head row is averaged by ``a_ic`` (a rare class held by one client keeps that
client's row), falling back to ``a_i`` for a class that no contributing client holds (share below
:data:`MIN_CLASS_SHARE`, far above the fixed-point step). Weights are shares of federation totals so
every coordinate of a sum stays below 1 times the largest parameter (the fixed-point clip range of the sealed modes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEAD_ARRAYS = 2  # the classifier head is the model's last two arrays: weight (C, H) and bias (C,)
MIN_CLASS_SHARE = 1e-4
"""A class whose contributing holders have less than this share of its flows is averaged like the body."""
METRICS = (
    "clients",
    "examples",
    "loss",
    "local_f1",
    "local_f1_clients",
    "train_ks",
    "privacy_ks",
    "dpsgd_epsilon",
)
"""Training metrics summed with every update: a count of contributions, the example share ``n_i / N``,
the example-weighted loss, local validation macro-F1 (sum and how many clients had a validation slice),
seconds of training and of privacy work (in thousands), and the DP-SGD epsilon spent (summed)."""


def flatten(weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])


def unflatten(vector: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    sizes = [int(np.prod(s)) for s in shapes]
    if vector.shape != (sum(sizes),):
        raise ValueError(f"flat model has {vector.size} values, expected {sum(sizes)}")
    parts = np.split(np.asarray(vector, dtype=np.float32), np.cumsum(sizes)[:-1])
    return [p.reshape(s) for p, s in zip(parts, shapes)]


@dataclass(frozen=True)
class UpdateLayout:
    """Where each part of a model-update contribution lives; ``shapes`` are the model's arrays."""

    shapes: tuple[tuple[int, ...], ...]

    @property
    def n_classes(self) -> int:
        return self.shapes[-1][0]

    @property
    def body_size(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes[:-HEAD_ARRAYS])

    @property
    def head_size(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes[-HEAD_ARRAYS:])

    @property
    def model_size(self) -> int:
        return self.body_size + self.head_size

    @property
    def length(self) -> int:
        return self.body_size + 2 * self.head_size + 1 + self.n_classes + len(METRICS)


def head_rows(weights: list[np.ndarray]) -> np.ndarray:
    """The head as ``(C, H + 1)`` rows (weight row, then bias), float64."""
    weight, bias = weights[-HEAD_ARRAYS:]
    return np.concatenate([np.asarray(weight, np.float64), np.asarray(bias, np.float64)[:, None]], axis=1)


def propose(
    global_weights: list[np.ndarray],
    momentum: list[np.ndarray] | None,
    local_weights: list[np.ndarray],
    *,
    server_lr: float,
    server_momentum: float,
) -> list[np.ndarray]:
    """A client's proposal ``x = w - lr * (mu * m - (local - w))`` (float64); see the module docstring."""
    out = []
    for i, (w, local) in enumerate(zip(global_weights, local_weights)):
        w = np.asarray(w, np.float64)
        step = np.asarray(local, np.float64) - w
        if momentum is not None and server_momentum:
            step = step - server_momentum * np.asarray(momentum[i], np.float64)
        out.append(w + server_lr * step)
    return out


def unmoved_proposal(
    current: list[np.ndarray], previous: list[np.ndarray] | None, server_lr: float, server_momentum: float
) -> list[np.ndarray]:
    """The proposal of a client that did not move (``w - lr mu m``, float64), from the last two global
    models: the point every client's update is measured from, and distributed DP-SGD steps from."""
    momentum = momentum_between(previous, current, server_lr)
    return propose(current, momentum, current, server_lr=server_lr, server_momentum=server_momentum)


def momentum_between(
    previous: list[np.ndarray] | None, current: list[np.ndarray], server_lr: float
) -> list[np.ndarray] | None:
    """The server momentum after the step ``previous -> current`` (None before the first step)."""
    if previous is None:
        return None
    return [
        (np.asarray(p, np.float64) - np.asarray(c, np.float64)) / server_lr for p, c in zip(previous, current)
    ]


def update_contribution(
    layout: UpdateLayout,
    proposal: list[np.ndarray],
    weight: float,
    class_shares: np.ndarray,
    metrics: dict[str, float],
) -> np.ndarray:
    """The flat vector one client adds to the sum (float64, length ``layout.length``).

    ``weight`` is ``a_i``; ``class_shares`` the ``(C,)`` shares ``a_ic`` (all zero: the head is averaged
    like the body); ``metrics`` maps names of :data:`METRICS` to values (missing ones are 0).
    """
    shares = np.asarray(class_shares, np.float64)
    if shares.shape != (layout.n_classes,):
        raise ValueError(f"class shares have shape {shares.shape}, expected ({layout.n_classes},)")
    body = flatten(proposal[:-HEAD_ARRAYS]) if len(proposal) > HEAD_ARRAYS else np.zeros(0)
    rows = head_rows(proposal)
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}")
    return pack(
        weight * body,
        shares[:, None] * rows,
        weight * rows,
        weight,
        shares,
        [metrics.get(k, 0.0) for k in METRICS],
    )


def pack(
    body: np.ndarray,
    class_rows: np.ndarray,
    client_rows: np.ndarray,
    weight: float,
    shares: np.ndarray,
    metrics,
) -> np.ndarray:  # noqa: ANN001 - metrics: a sequence of len(METRICS) numbers
    """The one layout of a contribution (:class:`UpdateLayout`): the weighted body, the head rows weighted by
    class share ``(C, H+1)``, the head rows weighted by the client weight ``(C, H+1)``, the weight, the class
    shares and the metrics, as one float64 vector. Every writer of a contribution (a client, a site's
    defence) goes through here."""
    return np.concatenate(
        [body, np.ravel(class_rows), np.ravel(client_rows), [weight], shares, np.asarray(metrics, np.float64)]
    ).astype(np.float64, copy=False)


@dataclass
class Aggregate:
    """The outcome of a summed round: the new global model and the summed training metrics."""

    weights: list[np.ndarray]
    metrics: dict[str, float]

    def mean_metrics(self) -> dict[str, float | None]:
        """Per-round means: example-weighted loss, mean local macro-F1, mean seconds, mean DP-SGD epsilon."""
        m, clients = self.metrics, max(self.metrics["clients"], 1e-12)
        return {
            "train_loss": m["loss"] / m["examples"] if m["examples"] > 0 else float("nan"),
            "local_val_macro_f1": (
                m["local_f1"] / m["local_f1_clients"] if m["local_f1_clients"] >= 0.5 else float("nan")
            ),
            "client_seconds": 1e3 * m["train_ks"] / clients,
            "client_privacy_seconds": 1e3 * m["privacy_ks"] / clients,
            "dpsgd_epsilon": m["dpsgd_epsilon"] / clients if m["dpsgd_epsilon"] > 0 else None,
            "clients": int(round(m["clients"])),
        }


def finalize_update(layout: UpdateLayout, total: np.ndarray) -> Aggregate:
    """Turn the sum of :func:`update_contribution` vectors into the next global model (float32 arrays)."""
    flat, _, metrics = _mean_model(layout, total)
    return Aggregate(unflatten(flat, list(layout.shapes)), metrics)


def finalize_pooled_step(
    layout: UpdateLayout,
    total: np.ndarray,
    current: list[np.ndarray],
    previous: list[np.ndarray] | None,
    server_lr: float,
    server_momentum: float,
) -> Aggregate:
    """Distributed DP-SGD's next global model: the server step on the *sum* of the clients' updates, not
    their mean. Every client weighs 1, so the sum's weight coordinate is the number of contributions
    ``n``. With ``r`` the proposal of a client that did not move (global models ``current`` and
    ``previous``), each proposal is ``r + lr * delta_i`` and their mean ``r + lr * mean(delta)``; the model
    ``r + n * (mean - r) = r + lr * sum(delta)`` is one step of centralized DP-SGD on the pooled Poisson
    batch whatever the number of clients (the mean would shrink the step as ``1 / n``).

    Post-processing of the noised sum: the privacy guarantee is the noise's and needs no trust in ``n``
    (a wrong count only mis-scales the step, as any server step could). Computed in float64 from the sum,
    so float32 rounding of the mean is not multiplied by ``n``."""
    mean, parties, metrics = _mean_model(layout, total)
    unmoved = flatten(unmoved_proposal(current, previous, server_lr, server_momentum))
    return Aggregate(unflatten(unmoved + parties * (mean - unmoved), list(layout.shapes)), metrics)


def _mean_model(layout: UpdateLayout, total: np.ndarray) -> tuple[np.ndarray, float, dict[str, float]]:
    """The weighted mean model of a sum as one float64 vector, the sum's weight and its metrics."""
    total = np.asarray(total, np.float64)
    if total.shape != (layout.length,):
        raise ValueError(f"sum has {total.size} values, expected {layout.length}")
    c, body_n, head_n = layout.n_classes, layout.body_size, layout.head_size
    by_class = total[body_n : body_n + head_n].reshape(c, -1)
    by_client = total[body_n + head_n : body_n + 2 * head_n].reshape(c, -1)
    weight = total[body_n + 2 * head_n]
    shares = total[body_n + 2 * head_n + 1 : body_n + 2 * head_n + 1 + c]
    metrics = dict(zip(METRICS, total[-len(METRICS) :].tolist()))
    if not weight > 0:
        raise ValueError("the sum holds no contribution")
    held = shares >= MIN_CLASS_SHARE
    rows = np.where(held[:, None], by_class / np.where(held, shares, 1.0)[:, None], by_client / weight)
    weight_shape, bias_shape = layout.shapes[-HEAD_ARRAYS:]
    assert rows[:, :-1].shape == tuple(weight_shape) and rows[:, -1].shape == tuple(bias_shape)
    return (
        np.concatenate([total[:body_n] / weight, rows[:, :-1].ravel(), rows[:, -1]]),
        float(weight),
        metrics,
    )


def client_shares(
    own_counts: np.ndarray,
    total_counts: np.ndarray,
    class_weights: np.ndarray,
    *,
    weighting: str,
    class_head: bool,
) -> tuple[float, np.ndarray]:
    """``(a_i, a_ic)`` for a client holding ``own_counts`` ``(C,)`` flows per class of a federation
    holding ``total_counts``: ``weighting`` ``objective`` (share of the class-weighted loss),
    ``examples`` (share of the rows) or ``equal`` (``1``; DP needs equal weights for its sensitivity).

    Why ``objective``: every client minimises the same class-weighted loss, normalised by its own total
    weight ``W_i = sum_c w_c k_ic`` (:func:`fedids.model.train._loss`); the centralized objective over the
    pooled data is ``sum_i W_i L_i / sum_i W_i``, so averaging updates by ``W_i``, not by example count
    ``n_i``, makes FedAvg's first step the centralized one. Under label skew it matters: a client holding
    200 flows of a rare attack among 2,000 benign ones counts for several times its ``n_i``.

    Why class shares ``a_ic = k_ic / K_c`` for the head: weighing client ``i`` by ``n_i`` makes the row of a
    class that few clients hold mostly the average of clients that never saw it (each of which pushed that
    logit down): a rare class held by one client (CICIDS2017's SQL injection: 21 flows in all) is washed
    out. Averaging row ``c`` by the clients' counts of class ``c`` keeps it.
    """
    own, total = np.asarray(own_counts, np.float64), np.asarray(total_counts, np.float64)
    if weighting == "objective":
        w = np.asarray(class_weights, np.float64)
        weight = float(own @ w) / max(float(total @ w), 1e-12)
    elif weighting == "examples":
        weight = float(own.sum() / max(total.sum(), 1.0))
    elif weighting == "equal":
        weight = 1.0
    else:
        raise ValueError(f"unknown weighting {weighting!r}")
    shares = (
        np.where(total > 0, own / np.where(total > 0, total, 1.0), 0.0) if class_head else np.zeros_like(own)
    )
    return weight, shares
