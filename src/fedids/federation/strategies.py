"""The robust strategies selectable with ``--strategy`` (plaintext mode only): Flower's own.

The averaging strategies (``fedavg``, ``fedavgm``, ``fedprox``) run through the secure-sum pipeline of
every mode (:mod:`fedids.federation.aggregation`); ``krum``, ``fedmedian`` and ``fedtrimmedavg`` need each
client's update and are handed the plaintext replies (:mod:`fedids.federation.rounds`). Client sampling
is done by fedids with a seeded generator so that runs and resumed runs are reproducible.
"""

from __future__ import annotations

from typing import TypedDict

from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum, Strategy

from fedids.federation import messages as m
from fedids.federation.config import STRATEGIES


class _CommonOptions(TypedDict):
    """The options every strategy here gets."""

    min_train_nodes: int
    min_available_nodes: int
    fraction_evaluate: float
    weighted_by_key: str


def make_strategy(name: str, *, trim_beta: float = 0.2, krum_malicious: int = 1, **_: object) -> Strategy:
    """Flower's strategy ``name`` for plaintext replies; the averaging ones fall back to FedAvg (unused:
    the pipeline aggregates them). Krum tolerates ``krum_malicious`` Byzantine clients; FedTrimmedAvg cuts
    ``trim_beta`` at each end."""
    common = _CommonOptions(
        min_train_nodes=1, min_available_nodes=1, fraction_evaluate=0.0, weighted_by_key=m.NUM_EXAMPLES
    )
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name == "krum":
        return Krum(num_malicious_nodes=krum_malicious, **common)
    if name == "fedmedian":
        return FedMedian(**common)
    if name == "fedtrimmedavg":
        return FedTrimmedAvg(beta=trim_beta, **common)
    return FedAvg(**common)
