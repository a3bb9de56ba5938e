"""Federated training of many virtual IoT clients on one machine with Flower's simulation engine (Ray).

:func:`run_simulated` splits the training part of a flow frame into client partitions, writes each to its
own Parquet file (a virtual client reads only its file, as a real SuperNode reads only its local data),
and runs the fedids ServerApp and ClientApp in Flower's simulation runtime with ``num_cpus=1`` per
client. The server keeps the held-out test split for evaluation.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedids.data.schema import FAMILY, FEATURES, LABEL, SEQ
from fedids.data.windows import host_keys
from fedids.federation.attacks import Attack
from fedids.federation.client_app import make_client_app, partition_key, partition_path
from fedids.federation.partition import DEFAULT_SEGMENT, PartitionSpec, partition_rows, summarise_partitions
from fedids.federation.policy import PrivacyPolicy
from fedids.federation.server_app import FederationConfig, FederationState, RoundRecord, make_server_app
from fedids.model.artifacts import Detector
from fedids.task import PreparedData, evaluate_rows

# Flower must never try to install packages at run time; neither Flower nor Ray may phone home.
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

# Flower warnings addressed to fedids' developers, not its users: ``run_simulation`` is deprecated in
# favour of ``flwr run`` (which needs a Flower app project; fedids embeds the engine instead), and the
# strategies skip federated evaluation on purpose (the server evaluates on its held-out test split).
_DEVELOPER_WARNINGS = ("DEPRECATED FEATURE: The `run_simulation` function", "fraction_evaluate is set to 0.0")


class _DropDeveloperWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(marker in text for marker in _DEVELOPER_WARNINGS)


_PARTITION_COLUMNS = [*FEATURES, "src_ip", "timestamp", SEQ, LABEL, FAMILY]


@dataclass
class SimulationResult:
    state: FederationState
    parts: list[np.ndarray]  # rows of the prepared data held by each (non-empty) client
    summary: pd.DataFrame  # partition summary table


def make_partitions(
    data: PreparedData, n_clients: int, partition: str, seed: int, segment: int = DEFAULT_SEGMENT
) -> list[np.ndarray]:
    """Partition the training rows of ``data``; returns row indices into ``data`` per client."""
    train = data.train_rows
    spec = PartitionSpec.parse(partition)
    local = partition_rows(
        data.labels[train],
        host_keys(data.frame.iloc[train]),
        n_clients,
        spec,
        np.random.default_rng(seed),
        segment,
    )
    return [train[idx] for idx in local]


def write_partitions(data: PreparedData, parts: list[np.ndarray], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    columns = [c for c in _PARTITION_COLUMNS if c in data.frame.columns]
    for pid, rows in enumerate(parts):
        data.frame.iloc[rows][columns].to_parquet(partition_path(directory, pid), index=False)


def _opener(he_secret_context: str) -> Callable[..., np.ndarray]:
    """The operator's evaluator's way to open a sealed sum with the clients' HE key file."""
    from fedids.federation.private import open_sum
    from fedids.privacy.keys import load_secret_context

    secret = load_secret_context(he_secret_context)

    def opener(sealed, length: int) -> np.ndarray:  # noqa: ANN001 (a SealedSum)
        return open_sum(sealed, secret, length)

    return opener


def _sites_of(parts: list[np.ndarray], sites: list[int] | None) -> dict[str, int] | None:
    """Client key -> site of the non-empty ``parts`` (``sites``: one per part, empty ones included)."""
    if sites is None:
        return None
    if len(sites) != len(parts):
        raise ValueError(f"{len(sites)} sites given for {len(parts)} partitions")
    kept = [site for p, site in zip(parts, sites) if len(p)]
    return {partition_key(i): site for i, site in enumerate(kept)}


def _backend_config(ray_init_args: dict | None) -> dict:
    """Ray for the simulation: one CPU per virtual client (the stack notes' rule), quiet logs."""
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "logging_level": logging.ERROR,
            "log_to_driver": False,
            "include_dashboard": False,
            **(ray_init_args or {}),
        },
    }


def run_simulated(
    data: PreparedData,
    parts: list[np.ndarray],
    config: FederationConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
    ray_init_args: dict | None = None,
    he_secret_context: str | None = None,
    client_app=None,
    attacks: Mapping[int, Attack] | None = None,
    sites: list[int] | None = None,
) -> FederationState:
    """Run federated training over ``parts`` (non-empty row sets of ``data``) in Flower's simulation.

    ``he_secret_context``: the clients' HE key file for ``he`` modes. The virtual clients load it; so
    does the operator's evaluator that decrypts the global model for the server-side test (in a real
    deployment that evaluator runs on a machine of the clients' side, never inside the ServerApp).
    ``client_app`` replaces the standard ClientApp (tests use it to inject misbehaving clients).
    ``attacks``: the poisoning of the malicious clients, by index into the non-empty ``parts`` (each bound
    into that client's own app, :mod:`fedids.federation.attacks`).
    ``sites``: the site of each of ``parts`` (empty ones included) for a three-tier run
    (``config.sites >= 2``, :func:`fedids.federation.sites.assign_sites`; default: contiguous).
    """
    from flwr.simulation import run_simulation

    out_dir = Path(out_dir)
    sites_of = _sites_of(parts, sites)
    parts = [p for p in parts if len(p)]
    write_partitions(data, parts, out_dir / "partitions")
    test_rows = data.test_rows

    def evaluate(detector: Detector) -> dict:
        return evaluate_rows(detector, data, test_rows)

    opener = _opener(he_secret_context) if he_secret_context else None
    result: list[FederationState] = []
    server = make_server_app(
        config,
        out_dir,
        expected_clients=len(parts),
        evaluate=evaluate,
        resume=resume,
        on_round=on_round,
        result=result,
        opener=opener,
        sites_of=sites_of,
    )
    client = client_app or make_client_app(
        str(out_dir / "partitions"),
        he_secret_context,
        policy=PrivacyPolicy.from_config(config),
        attacks=attacks,
    )
    backend = _backend_config(ray_init_args)
    flwr_logger = logging.getLogger("flwr")
    previous_level = flwr_logger.level
    flwr_logger.setLevel(logging.WARNING)
    quiet = _DropDeveloperWarnings()
    flwr_logger.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_simulation(
                server_app=server, client_app=client, num_supernodes=len(parts), backend_config=backend
            )
    finally:
        flwr_logger.setLevel(previous_level)
        flwr_logger.removeFilter(quiet)
    if not result:
        raise RuntimeError("the federated run ended without a result (see the log above)")
    return result[0]


__all__ = ["SimulationResult", "make_partitions", "write_partitions", "run_simulated", "summarise_partitions"]
