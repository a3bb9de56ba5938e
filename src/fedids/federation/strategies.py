"""Aggregation strategies selectable with ``--strategy``: Flower's own, configured for fedids.

The round loop (:mod:`fedids.federation.server_app`) only calls a strategy's ``aggregate_train``; client
sampling is done by fedids with a seeded generator so that runs and resumed runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, Message
from flwr.serverapp.strategy import FedAvg, FedAvgM, FedMedian, FedProx, FedTrimmedAvg, Krum

from fedids.federation import messages as m

# The strategy names and options live with the settings (fedids.federation.config, free of Flower).
from fedids.federation.config import (AVERAGING_STRATEGIES, CLIENT_WEIGHTINGS, HEAD_AGGREGATIONS,  # noqa: E402
                                      PRIVATE_STRATEGIES, STRATEGIES)

OBJECTIVE_WEIGHT = "objective-weight"  # metric the server adds to each reply under ``objective``


def make_strategy(name: str, *, proximal_mu: float = 0.01, server_lr: float = 1.0, server_momentum: float = 0.9,
                  trim_beta: float = 0.2, krum_malicious: int = 1, weighted_by_key: str = m.NUM_EXAMPLES):
    """Return the Flower strategy ``name`` (one of :data:`STRATEGIES`).

    FedProx only passes ``proximal-mu`` to clients; the fedids client adds the proximal term itself.
    Krum tolerates ``krum_malicious`` Byzantine clients; FedTrimmedAvg cuts ``trim_beta`` at each end.
    """
    common = dict(min_train_nodes=1, min_available_nodes=1, fraction_evaluate=0.0, weighted_by_key=weighted_by_key)
    if name == "fedavg":
        return FedAvg(**common)
    if name == "fedavgm":
        return FedAvgM(server_learning_rate=server_lr, server_momentum=server_momentum, **common)
    if name == "fedprox":
        return FedProx(proximal_mu=proximal_mu, **common)
    if name == "krum":
        return Krum(num_malicious_nodes=krum_malicious, **common)
    if name == "fedmedian":
        return FedMedian(**common)
    if name == "fedtrimmedavg":
        return FedTrimmedAvg(beta=trim_beta, **common)
    raise ValueError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")


def weight_key(client_weighting: str) -> str:
    """The reply metric an averaging strategy weighs by under ``client_weighting``."""
    return OBJECTIVE_WEIGHT if client_weighting == "objective" else m.NUM_EXAMPLES


def objective_weights(class_counts: Mapping[int, np.ndarray], class_weights: np.ndarray) -> dict[int, float]:
    """Each node's weight ``W_i = sum_c w_c k_ic``: its share of the class-weighted objective.

    Every client minimises the same class-weighted loss, normalised by its own total weight ``W_i``
    (:func:`fedids.model.train._loss`). The centralized objective over the pooled data is then
    ``sum_i W_i L_i / sum_i W_i``, so averaging updates by ``W_i``, not by example count ``n_i``, makes
    FedAvg's first step the centralized one. Under label skew it matters: a client holding 200 flows of a
    rare attack among 2,000 benign ones counts for several times its ``n_i``, because the global class
    weights say those flows matter. Computed by the server from the statistics round's class counts and
    the global class weights it sent, so a client cannot inflate its own weight.
    """
    weights = np.asarray(class_weights, dtype=np.float64)
    return {node: float(np.dot(np.asarray(k, dtype=np.float64), weights)) for node, k in class_counts.items()}


def add_objective_weights(replies: list[Message], weights: Mapping[int, float]) -> None:
    """Put each reply's node weight (:func:`objective_weights`) into its metrics, for the strategy."""
    for reply in replies:
        reply.content[m.METRICS][OBJECTIVE_WEIGHT] = float(weights[reply.metadata.src_node_id])


def reweight_head_rows(replies: list[Message], class_counts: Mapping[int, np.ndarray], head_arrays: int = 2,
                       weighted_by_key: str = m.NUM_EXAMPLES) -> None:
    """Make an example-weighted average aggregate each class's output row by that class's examples.

    FedAvg weighs client ``i`` by its ``num-examples`` ``n_i``, so the classifier row of a class that only a
    few clients hold is mostly the average of clients that never saw it (each of which pushed that logit
    down): a rare class held by one client (CICIDS2017's SQL injection: 21 flows in all) is washed out. Row
    ``c`` of the head should instead average clients by their count ``k_ic`` of class ``c``. Rescaling each
    client's row to ``r_ic * k_ic * N / (K_c * n_i)`` (``N = sum n_i``, ``K_c = sum k_ic`` over the replies)
    makes any ``n_i``-weighted mean, and so FedAvg, FedAvgM and FedProx unchanged, produce exactly
    ``sum_i k_ic r_ic / K_c``. A class no replying client holds keeps the plain average. The body of the
    network is untouched. Class counts come from the statistics round (already shared for the label
    vocabulary), so this reveals nothing new. Replies are modified in place; only for plaintext
    strategies that average (not Krum or the medians, whose robustness needs the rows as sent).

    ``class_counts`` maps a reply's source node to its per-class counts, in the head's row order;
    ``weighted_by_key`` is the metric the strategy weighs by.
    """
    if not replies:
        return
    n = np.array([float(r.content[m.METRICS][weighted_by_key]) for r in replies])
    k = np.stack([np.asarray(class_counts[r.metadata.src_node_id], dtype=np.float64) for r in replies])
    total_k = k.sum(axis=0)
    factor = np.where(total_k > 0, k * n.sum() / np.where(total_k > 0, total_k, 1.0) / n[:, None], 1.0)
    for reply, f in zip(replies, factor):
        record = reply.content[m.ARRAYS]
        names = list(record.keys())
        arrays = {name: record[name].numpy() for name in names}
        for name in names[-head_arrays:]:
            a = arrays[name]
            shape = (-1,) + (1,) * (a.ndim - 1)
            arrays[name] = (a * f.reshape(shape)).astype(a.dtype)
        reply.content[m.ARRAYS] = ArrayRecord({name: Array(arrays[name]) for name in names})
