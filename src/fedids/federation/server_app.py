"""The Flower ServerApp: the federated aggregation layer and central server of the paper's architecture.

Thin: it reads the settings (:class:`~fedids.federation.config.FederationConfig`, from Python in the
simulation or from the Flower run config in a deployment) and runs the round loop of
:mod:`fedids.federation.rounds`, which is the same in every privacy mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedids.federation.config import FederationConfig
from fedids.federation.plain import sample_clients
from fedids.federation.rounds import Opener, run_federation
from fedids.federation.state import (
    CHECKPOINT_DIR,
    GLOBAL_DIR,
    STATE_FILE,
    SUMMARY_KEYS,
    FederationState,
    RoundRecord,
    load_checkpoint,
    load_state,
)
from fedids.model.artifacts import Detector

__all__ = [
    "FederationConfig",
    "FederationState",
    "RoundRecord",
    "make_server_app",
    "run_federation",
    "app",
    "load_state",
    "load_checkpoint",
    "sample_clients",
    "CHECKPOINT_DIR",
    "GLOBAL_DIR",
    "STATE_FILE",
    "SUMMARY_KEYS",
]


def make_server_app(
    config: FederationConfig,
    out_dir: str | Path,
    *,
    expected_clients: int,
    evaluate: Callable[[Detector], dict],
    resume: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
    result: list | None = None,
    opener: Opener | None = None,
    sites_of: Mapping[str, int] | None = None,
) -> ServerApp:
    """A ServerApp running :func:`run_federation` with settings given in Python (simulation);
    ``sites_of``: client key -> site of a three-tier run."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        state = run_federation(
            grid,
            config,
            out_dir,
            expected_clients=expected_clients,
            evaluate=evaluate,
            resume=resume,
            on_round=on_round,
            opener=opener,
            sites_of=sites_of,
        )
        if result is not None:
            result.append(state)

    return app


def _deployment_main(grid: Grid, context: Context) -> None:
    """Deployment engine entry point: settings come from the Flower run config (``flwr run``)."""
    from fedids.data.loader import load_flows
    from fedids.task import evaluate_rows, prepare

    run_config = dict(context.run_config)
    config = FederationConfig.from_run_config(run_config)
    if config.tiered:  # three tiers: the SuperNodes are site aggregators (fedids.federation.site_app)
        from fedids.federation.site_app import check_central_config

        check_central_config(config)
    test_frame = load_flows([str(run_config["test-data"])]).frame
    data = prepare(
        test_frame, window=config.window, test_fraction=0.5, split=str(run_config.get("split", "time"))
    )
    rows = np.arange(len(data.labels))  # the whole file is the server's held-out test set

    def evaluate(detector: Detector) -> dict:
        return evaluate_rows(detector, data, rows)

    run_federation(
        grid,
        config,
        str(run_config.get("out-dir", "fedids-run")),
        expected_clients=config.min_clients,
        evaluate=evaluate,
        relayed=config.tiered,
    )


app = ServerApp()
app.main()(_deployment_main)
