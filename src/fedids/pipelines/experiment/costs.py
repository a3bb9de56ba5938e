"""Sections about cost: energy and communication from the federated histories, and the scalability
benchmark's figures."""

from __future__ import annotations

import json
from pathlib import Path

from fedids.devices import BYTES_PER_MB, DEVICE_PROFILES, RADIO_PROFILES, DeviceProfile, RadioProfile
from fedids.evaluation.energy import profiles_table, summarise_history
from fedids.pipelines.experiment.config import TARGET_FRACTION, ExperimentConfig
from fedids.pipelines.experiment.results import section


def energy_sections(
    entries: dict,
    cfg: ExperimentConfig,
    local_cpu_s: float | None,
    client_rows: list[int],
    radio: str = "wifi",
) -> tuple[dict, dict]:
    """``energy_j`` and ``communication_mb`` from the federated histories and the baselines.

    Rounds whose records lack ``client_seconds`` get an estimate from the local baseline's measured CPU
    time per training row and epoch (flagged in ``cpu_seconds_source``).
    """
    feds = {m: e for m, e in entries.items() if e.get("kind") == "federated" and e.get("status") == "ok"}
    r = RADIO_PROFILES[radio]
    devices = [d for d in DEVICE_PROFILES.values() if d.cpu_load_w is not None]
    if not feds:
        reason = "not run: no federated mode completed"
        return section(cfg, status=reason), section(cfg, status=reason)
    reference = "none" if "none" in feds else max(feds, key=lambda m: feds[m]["macro_f1"])
    target = TARGET_FRACTION * feds[reference]["macro_f1"]
    per_row_epoch = (
        local_cpu_s / (sum(client_rows) * cfg.rounds * cfg.local_epochs)
        if local_cpu_s and sum(client_rows)
        else None
    )
    modes_out, sources, comm = _mode_energy(feds, cfg, per_row_epoch, client_rows, devices, r, target)
    from fedids.data.schema import FEATURES

    raw_bytes = int(sum(client_rows)) * len(FEATURES) * 4
    baselines: dict[str, dict] = {
        "centralized": {
            "what": f"radio energy of uploading the clients' raw flow features once over {radio}",
            **{d.name: r.joules(raw_bytes, 0) for d in devices},
        },
    }
    if local_cpu_s is not None:
        baselines["local"] = {
            "what": "CPU energy of local-only training on every client (measured CPU time)",
            **{d.name: d.cpu_joules(local_cpu_s) for d in devices},
        }
    energy_section = section(
        cfg,
        status="ok",
        radio=radio,
        target_macro_f1=target,
        target_rule=f"{TARGET_FRACTION:g} x the final macro-F1 of federated mode {reference}",
        cpu_seconds_source=sources,
        cpu_seconds_note=(
            "measured: the clients' own timing of local training plus "
            "clipping/noise/encryption/masking, per round; estimated: the "
            "local baseline's CPU time per training row and epoch times the "
            "clients' training rows (privacy work not included)"
        ),
        modes=modes_out,
        baselines=baselines,
        profiles=profiles_table(),
    )
    comm_section = section(
        cfg,
        status="ok",
        modes=comm,
        baselines={
            "centralized": {
                "total_mb": raw_bytes / BYTES_PER_MB,
                "what": "raw features of every training flow uploaded once (float32, one value per feature)",
            },
            "local": {"total_mb": 0.0, "what": "nothing leaves the device"},
        },
    )
    return energy_section, comm_section


def _mode_energy(
    feds: dict[str, dict],
    cfg: ExperimentConfig,
    per_row_epoch: float | None,
    client_rows: list[int],
    devices: list[DeviceProfile],
    r: RadioProfile,
    target: float,
) -> tuple[dict, dict, dict]:
    """Per federated mode: the energy summary on every device, where its CPU seconds come from, and its
    communication figures."""
    from fedids.federation.client_app import LOCAL_VAL_FRACTION

    modes_out: dict[str, dict] = {}
    sources: dict[str, str] = {}
    comm: dict[str, dict] = {}
    for mode, e in feds.items():
        history = e["history"]
        measured = all(h.get("client_seconds") is not None for h in history)
        if not measured and per_row_epoch is not None:
            est = (
                per_row_epoch
                * (1.0 - LOCAL_VAL_FRACTION)
                * cfg.local_epochs
                * sum(client_rows)
                / len(client_rows)
            )
            history = [{**h, "client_seconds": est, "client_privacy_seconds": None} for h in history]
            sources[mode] = "estimated"
        else:
            sources[mode] = "measured" if measured else "not recorded"
        modes_out[mode] = {}
        for d in devices:
            s = summarise_history(history, d, r, target)
            modes_out[mode][d.name] = s
        ref = summarise_history(e["history"], devices[0], r, target)
        comm[mode] = {
            "per_round_mb": [x["mb"] for x in ref["per_round"]],
            "total_mb": ref["total_mb"],
            "per_client_round_mb": ref["mean_per_client_round_mb"],
            "rounds_to_target": ref["rounds_to_target"],
            "to_target_mb": ref["to_target_mb"],
        }
    return modes_out, sources, comm


def load_scalability(path: Path | None) -> dict:
    """The scalability benchmark's JSON, or a "not run" entry."""
    if path is None or not Path(path).exists():
        return {
            "status": f"not run: {path} not found (run python benchmarks/bench_scalability.py)",
            "command": "python benchmarks/bench_scalability.py",
        }
    data = json.loads(Path(path).read_text())
    return {"status": "ok", "source": str(path), **data}
