"""The adaptive learning strategies (section ``adaptive``): plain FedAvg against energy-aware selection
with adaptive local epochs under a per-device energy budget, and int8 and top-k update compression, on
the same partition and seed, compared on joules and MB to the same target macro-F1."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedids.console import err, progress_bar
from fedids.devices import DEVICE_PROFILES, RADIO_PROFILES, DeviceProfile, RadioProfile
from fedids.evaluation.energy import summarise_history
from fedids.federation.config import FederationConfig
from fedids.pipelines.experiment.config import TARGET_FRACTION, ExperimentConfig
from fedids.pipelines.experiment.results import section

if TYPE_CHECKING:
    from fedids.task import PreparedData

# Every run samples this fraction of the
# clients per round, so that energy-aware selection has a choice to make, and aggregates with plain FedAvg.
ADAPTIVE_FRACTION = 0.5
ADAPTIVE_MAX_EPOCHS = 3
ADAPTIVE_TOPK = "topk:0.1"
ADAPTIVE_RUNS: dict[str, str] = {
    "fedavg": "plain FedAvg: random selection, fixed local epochs, float32 updates",
    "energy": "energy-aware selection and adaptive local epochs under a per-device energy budget",
    "int8": "int8 update compression (per-tensor symmetric quantisation)",
    "topk": "top-k update compression with error feedback",
}


def adaptive_budget_j(
    prepared: PreparedData, parts: list[np.ndarray], cfg: ExperimentConfig
) -> tuple[float, dict]:
    """The per-device energy budget of the ``energy`` run, and the fleet (client key -> device profile).

    Budget: what the median client spends, in the ledger's own model, under random sampling at one
    local epoch over the whole training (``ADAPTIVE_FRACTION x rounds`` rounds). Clients on expensive
    hardware or with much data therefore cannot keep up with random participation, cheap ones can
    afford more: the budget binds without starving the fleet.
    """
    from fedids.federation import adaptive
    from fedids.federation.client_app import LOCAL_VAL_FRACTION
    from fedids.model.train import get_weights
    from fedids.task import new_model

    classes = len(set(prepared.labels[np.concatenate(parts)]))
    model_bytes = sum(w.nbytes for w in get_weights(new_model(classes, cfg.hidden)))
    per_example = adaptive.cpu_seconds_per_example_epoch(cfg.hidden, cfg.window)
    # The keys simulated clients report (client_app.client_key): partition-NNNN, by position in parts.
    fleet = adaptive.assign_profiles(f"partition-{i:04d}" for i in range(len(parts)))
    costs = [
        adaptive.estimate_round_j(
            DEVICE_PROFILES[fleet[key]],
            int(round(len(p) * (1 - LOCAL_VAL_FRACTION))),
            1,
            model_bytes,
            model_bytes,
            per_example,
        )
        for key, p in zip((f"partition-{i:04d}" for i in range(len(parts))), parts)
    ]
    return ADAPTIVE_FRACTION * cfg.rounds * float(np.median(costs)), fleet


def adaptive_settings(budget_j: float) -> dict[str, dict]:
    """FederationConfig settings of each run of the comparison (beside the common ones)."""
    return {
        "fedavg": {},
        "energy": {
            "selection": "energy",
            "energy_budget_j": budget_j,
            "max_local_epochs": ADAPTIVE_MAX_EPOCHS,
        },
        "int8": {"compression": "int8"},
        "topk": {"compression": ADAPTIVE_TOPK},
    }


def adaptive_section(
    prepared: PreparedData, parts: list[np.ndarray], cfg: ExperimentConfig, run_root: Path
) -> dict:
    """Run the four federations of :data:`ADAPTIVE_RUNS` (Flower simulation) and summarise them."""
    from fedids.pipelines.federate import run_federation

    budget, fleet = adaptive_budget_j(prepared, parts, cfg)
    settings = adaptive_settings(budget)
    runs: dict[str, dict] = {}
    for name, extra in settings.items():
        config = FederationConfig(
            rounds=cfg.rounds,
            fraction_train=ADAPTIVE_FRACTION,
            min_clients=1,
            strategy="fedavg",
            local_epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            hidden=cfg.hidden,
            window=cfg.window,
            seed=cfg.seed,
            **extra,
        )
        try:
            with progress_bar(f"adaptive {name}", cfg.rounds) as advance:

                def on_round(rec, name=name) -> None:
                    err.print(
                        f"  {name} round {rec.round:>3}: test macro-F1 {rec.test['macro_f1']:.4f}, "
                        f"{rec.clients} clients, {rec.energy_j:.2f} J, {rec.bytes_up:,} B up"
                    )
                    advance(1)

                run = run_federation(
                    prepared, parts, config, run_root / f"adaptive-{name}", on_round=on_round
                )
            runs[name] = {
                "status": "ok" if run.state.history else "not run: no round completed",
                "history": run.state.history,
                "stopped": run.state.stopped,
                "seconds": run.seconds,
            }
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            reason = str(exc).splitlines()[0][:300] if str(exc) else ""
            runs[name] = {"status": f"failed: {type(exc).__name__}: {reason}"}
    return summarise_adaptive(runs, settings, cfg, budget_j=budget, fleet=fleet)


def summarise_adaptive(
    runs: dict[str, dict],
    settings: dict[str, dict],
    cfg: ExperimentConfig,
    *,
    budget_j: float,
    fleet: dict[str, str],
    radio: str = "wifi",
) -> dict:
    """The ``adaptive`` section from the runs' histories (``runs[name]``: status, history, stopped, seconds).

    Target: :data:`TARGET_FRACTION` x the best test macro-F1 plain FedAvg reached, the same for every run.
    Joules are the ledger's modelled energy (each client on its own device profile, every round's
    ``energy_j``), MB the measured traffic both ways (:func:`fedids.evaluation.energy.summarise_history`);
    both summed over all clients up to the first round at the target (n/a when a run never reaches it).
    ``j_vs_fedavg`` / ``mb_vs_fedavg``: the same divided by plain FedAvg's.
    """
    from fedids.federation import adaptive

    base = runs.get("fedavg", {})
    if base.get("status") != "ok":
        return section(
            cfg, status=f"not run: plain FedAvg did not complete ({base.get('status', 'missing')})"
        )
    target = TARGET_FRACTION * max(h["test"]["macro_f1"] for h in base["history"])
    device, link = DEVICE_PROFILES[adaptive.FLEET_PROFILES[0]], RADIO_PROFILES[radio]
    out: dict[str, dict] = {}
    for name, run in runs.items():
        if run.get("status") != "ok":
            out[name] = {"status": run.get("status", "not run"), "what": ADAPTIVE_RUNS.get(name, name)}
            continue
        out[name] = _run_entry(name, run, settings.get(name, {}), device, link, target)
    ref = out["fedavg"]
    for entry in out.values():
        if entry["status"] == "ok":
            for key, ratio in (("to_target_j", "j_vs_fedavg"), ("to_target_mb", "mb_vs_fedavg")):
                entry[ratio] = entry[key] / ref[key] if entry[key] is not None and ref[key] else None
    counts = {p: sum(1 for v in fleet.values() if v == p) for p in adaptive.FLEET_PROFILES}
    return section(
        cfg,
        status="ok",
        fraction_train=ADAPTIVE_FRACTION,
        clients=len(fleet),
        strategy="fedavg",
        radio=radio,
        target_macro_f1=target,
        target_rule=f"{TARGET_FRACTION:g} x the best test macro-F1 of plain FedAvg (run fedavg)",
        energy_budget_j=budget_j,
        budget_rule=(
            f"the median client's modelled energy for {ADAPTIVE_FRACTION:g} x {cfg.rounds} "
            "one-epoch rounds (its expected spend under random sampling)"
        ),
        max_local_epochs=ADAPTIVE_MAX_EPOCHS,
        energy_model=(
            "joules = device CPU energy of examples x epochs x the reference CPU cost per "
            "example-epoch (fedids.federation.adaptive), plus Wi-Fi radio energy of the bytes "
            "each client sent and received; each client on its own device profile"
        ),
        fleet=counts,
        runs=out,
    )


def _run_entry(
    name: str, run: dict, extra: dict, device: DeviceProfile, link: RadioProfile, target: float
) -> dict:
    """One completed run of the comparison: its settings, quality, and joules and MB to the target."""
    history = run["history"]
    mb = summarise_history(history, device, link, target)  # the device does not enter MB
    k = mb["rounds_to_target"]
    joules = [h.get("energy_j") for h in history]
    have_j = all(j is not None for j in joules)
    epochs = [p["epochs"] for h in history for p in (h.get("participants") or {}).values()]
    return {
        "status": "ok",
        "what": ADAPTIVE_RUNS.get(name, name),
        "selection": extra.get("selection", "random"),
        "compression": extra.get("compression", "none"),
        "rounds": len(history),
        "stopped": run.get("stopped"),
        "seconds": run.get("seconds"),
        "final_macro_f1": history[-1]["test"]["macro_f1"],
        "best_macro_f1": max(h["test"]["macro_f1"] for h in history),
        "rounds_to_target": k,
        "to_target_j": (
            float(sum(h["energy_j"] for h in history if h["round"] <= k))
            if k is not None and have_j
            else None
        ),
        "to_target_mb": mb["to_target_mb"],
        "total_j": float(sum(joules)) if have_j else None,
        "total_mb": mb["total_mb"],
        "mean_clients": float(np.mean([h["clients"] for h in history])),
        "mean_local_epochs": float(np.mean(epochs)) if epochs else None,
        "upload_bytes_per_client_round": float(np.mean([h["bytes_up"] / h["clients"] for h in history])),
        "history": history,
    }
