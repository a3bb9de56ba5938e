"""The ``rare`` section: the rare-class protocol (:mod:`fedids.pipelines.rare`) on the experiment's flows.

Each attack class is cut to its earliest k training flows (k in :data:`RARE_K`, issue 17's acceptance
points); ``fedids train``'s path (its default prototype head) and a random forest train on the same kept
rows; every class is scored on the untouched test flows; mean of 3 seeds. The full tables, with more k
and data sets, are in docs/rare-classes.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedids.pipelines.experiment.config import ExperimentConfig
from fedids.pipelines.experiment.results import section

if TYPE_CHECKING:
    from fedids.task import PreparedData

RARE_K = (10, 20)
MODEL_NAMES = {"centralized": "fedids train", "random_forest": "random forest"}


def rare_section(prepared: PreparedData, cfg: ExperimentConfig) -> dict:
    """``{"status", "k", "seeds", "summary": {model: {k: {"macro_f1", "per_class_f1": {label: f1}}}}}``
    plus the command and seed; ``status`` says why when the protocol cannot run on these flows."""
    from fedids.pipelines.rare import RareConfig, run_protocol

    rare = RareConfig(k_values=RARE_K, models=tuple(MODEL_NAMES), window=cfg.window, hidden=cfg.hidden)
    try:
        result = run_protocol(prepared, rare)
    except ValueError as exc:  # e.g. a forest on flows of one class only
        return section(cfg, status=f"not run: {exc}")
    summary = {
        MODEL_NAMES[model]: {
            k: {
                "macro_f1": scores["macro_f1"],
                "per_class_f1": {label: pc["f1"] for label, pc in scores["per_class"].items()},
            }
            for k, scores in by_k.items()
        }
        for model, by_k in result["summary"].items()
    }
    return section(cfg, status="ok", k=list(RARE_K), seeds=len(rare.seeds), summary=summary)
