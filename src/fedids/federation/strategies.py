"""Aggregation strategies selectable with ``--strategy``: Flower's own, configured for fedids.

The round loop (:mod:`fedids.federation.server_app`) only calls a strategy's ``aggregate_train``; client
sampling is done by fedids with a seeded generator so that runs and resumed runs are reproducible.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg, FedAvgM, FedMedian, FedProx, FedTrimmedAvg, Krum

STRATEGIES = ("fedavg", "fedavgm", "fedprox", "krum", "fedmedian", "fedtrimmedavg")
# Under --privacy the server only ever sees a sum of contributions: plain (FedProx-)averaging. The
# robust strategies need each update in plaintext and server momentum needs the plaintext model.
PRIVATE_STRATEGIES = ("fedavg", "fedavgm", "fedprox")


def make_strategy(name: str, *, proximal_mu: float = 0.01, server_lr: float = 1.0, server_momentum: float = 0.9, trim_beta: float = 0.2, krum_malicious: int = 1):
    """Return the Flower strategy ``name`` (one of :data:`STRATEGIES`).

    FedProx only passes ``proximal-mu`` to clients; the fedids client adds the proximal term itself.
    Krum tolerates ``krum_malicious`` Byzantine clients; FedTrimmedAvg cuts ``trim_beta`` at each end.
    """
    common = dict(min_train_nodes=1, min_available_nodes=1, fraction_evaluate=0.0)
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
