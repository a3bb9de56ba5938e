"""The experiment's data and training runs: the flows it evaluates on, the baselines, and one federated run
per privacy mode (each through :func:`fedids.pipelines.federate.run_federation`, the same pipeline as
``fedids federate``)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedids.console import err, progress_bar
from fedids.evaluation.report import round_epsilon
from fedids.pipelines.experiment.config import (
    SUMMARY_KEYS,
    ExperimentConfig,
    dp_against,
    dp_unit,
    federation_config,
)
from fedids.pipelines.experiment.config import privacy_unsupported_reason as _unsupported
from fedids.pipelines.experiment.results import alarms, alarms_at_threshold, summary_metrics

if TYPE_CHECKING:
    import pandas as pd

    from fedids.federation.config import FederationConfig
    from fedids.federation.server_app import RoundRecord
    from fedids.model.artifacts import Detector
    from fedids.task import PreparedData


def load_frame(cfg: ExperimentConfig) -> tuple[pd.DataFrame, dict]:
    """The user's CSV files, or the synthetic IoT default (``cfg.synth`` overrides its settings)."""
    if cfg.data:
        from fedids.pipelines.data import load_data

        return load_data([Path(p) for p in cfg.data]).frame, {"data": list(cfg.data), "synth": None}
    from fedids.data.synth import SynthConfig, generate_flows

    synth = SynthConfig(**{"seed": cfg.seed, **cfg.synth})
    return generate_flows(synth), {"data": "synthetic", "synth": dataclasses.asdict(synth)}


def training_config(cfg: ExperimentConfig) -> FederationConfig:
    """The plaintext federation settings the baselines train with (rounds x local epochs passes)."""
    return federation_config(cfg, "none", Path("unused"))


def baseline_entries(
    prepared: PreparedData, parts: list[np.ndarray], cfg: ExperimentConfig
) -> tuple[dict[str, dict], float]:
    """The ``centralized`` entry (pooled rows of the participating clients only: the withheld share
    never trains) and the ``local (mean)`` / ``local (worst)`` entries; also the local baselines' CPU
    seconds (the energy section's estimate of training cost)."""
    from fedids.pipelines.federate import run_local_baseline, train_centralized_baseline

    config = training_config(cfg)
    entries: dict[str, dict] = {}
    with progress_bar("centralized baseline", None):
        t0 = time.perf_counter()
        _, central = train_centralized_baseline(prepared, config, rows=np.sort(np.concatenate(parts)))
        entries["centralized"] = {
            "status": "ok",
            "kind": "baseline",
            **summary_metrics(central),
            **alarms(central),
            "seconds": time.perf_counter() - t0,
        }
    with progress_bar("local-only baselines", len(parts)) as advance:
        t0, c0 = time.perf_counter(), time.process_time()
        local = run_local_baseline(prepared, parts, config, progress=advance)
        local_cpu_s = time.process_time() - c0
        agg = local.aggregate()
        for key in ("mean", "worst"):
            entries[f"local ({key})"] = {
                "status": "ok",
                "kind": "baseline",
                **{k: agg[key][k] for k in SUMMARY_KEYS},
                "seconds": time.perf_counter() - t0,
            }
    return entries, local_cpu_s


def run_federated(
    prepared: PreparedData,
    parts: list[np.ndarray],
    cfg: ExperimentConfig,
    mode: str,
    run_dir: Path,
    label: str,
) -> tuple[dict, Detector | None]:
    """One federated run; returns its mode entry and the final global detector (or None)."""
    from fedids.pipelines.federate import run_federation

    reason = _unsupported(mode)
    if reason:
        return {"status": f"not run: {reason}"}, None
    config = federation_config(cfg, mode, run_dir / "keys")
    with progress_bar(f"federated {label}", config.rounds) as advance:

        def on_round(rec: RoundRecord) -> None:
            spent = round_epsilon(dataclasses.asdict(rec))
            eps = f", epsilon {spent:.2f}" if spent is not None else ""
            err.print(
                f"  {label} round {rec.round:>3}: test macro-F1 {rec.test['macro_f1']:.4f}, "
                f"MCC {rec.test['mcc']:.4f}{eps}, {rec.seconds:.1f} s"
            )
            advance(1)

        run = run_federation(prepared, parts, config, run_dir, on_round=on_round, fresh_keys=True)
    state = run.state
    if not state.history:
        return {"status": f"not run: no round completed ({state.stopped or 'unknown'})"}, None
    detector = run.load_detector()
    extra = {}
    if detector is not None:
        from fedids.task import evaluate_rows

        extra = alarms(evaluate_rows(detector, prepared, prepared.test_rows))
        extra |= alarms_at_threshold(detector, prepared)
    entry = {
        "status": "ok",
        "kind": "federated",
        "privacy": mode,
        **summary_metrics(run.final),
        **extra,
        "rounds": state.completed_round,
        "seconds": run.seconds,
        # client-level DP: the calibration's releases follow the last round and are in the final epsilon
        "epsilon": round_epsilon(state.calibration if "epsilon" in state.calibration else state.history[-1]),
        "dp_unit": dp_unit(mode),
        "dp_against": dp_against(mode),
        "stopped": state.stopped,
        "history": state.history,
        "run_dir": str(run_dir),
    }
    return entry, detector
