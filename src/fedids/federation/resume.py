"""Where a federated run starts: a fresh state or the last checkpoint of an interrupted run
(``fedids federate --resume``), with its privacy accountant and energy ledger restored."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from fedids.federation import adaptive, plain
from fedids.federation.config import FederationConfig
from fedids.federation.state import FederationState, GlobalModel, load_checkpoint, load_state
from fedids.model.train import get_weights
from fedids.task import new_model

if TYPE_CHECKING:
    from fedids.federation.rounds import Run

log = logging.getLogger("fedids.server")


def restore(run: Run, resume: bool) -> tuple[FederationState, dict[str, Any], Any, Any]:
    """The state a run starts from: fresh (a new model from the run's seed, an empty history, a new
    accountant and energy ledger), or with ``resume`` the last checkpoint in ``run.out_dir``, refused
    (ValueError) when it was started with other settings than ``run.config`` (``rounds`` may grow)."""
    config, out_dir = run.config, run.out_dir
    state = FederationState(config=asdict(config))
    state.setup = {"labels": run.labels, "digest": run.digest}
    accountant = plain.make_accountant(config, run.mode, run.keys)
    ledger = (
        None
        if run.summed
        else adaptive.EnergyLedger.create(
            run.profiles,
            run.train_rows_of,
            budget_j=config.energy_budget_j,
            hidden=config.hidden,
            window=config.window,
        )
    )
    models: dict[str, GlobalModel | None] = {
        "current": GlobalModel(get_weights(new_model(len(run.labels), config.hidden, config.seed))),
        "previous": None,
    }
    previous = load_state(out_dir) if resume else None
    if previous is not None and previous.completed_round > 0:
        saved = {k: v for k, v in {**asdict(FederationConfig()), **previous.config}.items() if k != "rounds"}
        if saved != {k: v for k, v in asdict(config).items() if k != "rounds"}:
            raise ValueError(f"{out_dir}: cannot resume, the run was started with different settings")
        state.completed_round, state.history = previous.completed_round, previous.history
        state.privacy, state.adaptive = previous.privacy, previous.adaptive
        loaded = load_checkpoint(out_dir, state.completed_round, state.privacy.get("sealed"))
        models = {"current": loaded["current"], "previous": loaded.get("previous")}
        if accountant is not None:
            accountant.load_state_dict(state.privacy["accountant"])
        if ledger is not None and state.adaptive:
            ledger.load_state_dict(state.adaptive)
        log.info("resuming after round %d", state.completed_round)
    return state, models, accountant, ledger
