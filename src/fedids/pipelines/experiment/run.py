"""The experiment as a list of sections: each ``run(context) -> dict`` adds its keys to ``results.json``,
which is rewritten after every section (an interrupted run keeps what it finished); ``report.html`` is
rendered from the file at the end (:mod:`fedids.evaluation.report`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedids.console import err, progress_bar
from fedids.evaluation import energy as en
from fedids.evaluation.report import PAPER_REFERENCE, write_report
from fedids.pipelines.experiment import adaptive, costs, membership, model_sections
from fedids.pipelines.experiment.config import REPORT_FILE, RESULTS_FILE, ExperimentConfig, dp_unit
from fedids.pipelines.experiment.federated import baseline_entries, load_frame, run_federated
from fedids.pipelines.experiment.privacy_table import privacy_section
from fedids.pipelines.experiment.rare_section import rare_section
from fedids.pipelines.experiment.results import load_global, make_meta, section, write_results

if TYPE_CHECKING:
    import pandas as pd

    from fedids.model.artifacts import Detector
    from fedids.task import PreparedData


@dataclass
class Context:
    """What the sections share: the settings, the data and its partition, and what earlier sections
    trained (``entries``: the ``modes`` section's entries; ``detectors``: each federated mode's model)."""

    cfg: ExperimentConfig
    out: Path
    prepared: PreparedData
    withheld: np.ndarray
    remaining: PreparedData
    parts: list[np.ndarray]
    results: dict[str, Any]
    entries: dict[str, dict] = field(default_factory=dict)
    detectors: dict[str, Detector | None] = field(default_factory=dict)
    local_cpu_s: float | None = None
    rapl: dict = field(default_factory=dict)

    def save(self) -> None:
        write_results(self.out / RESULTS_FILE, self.results)


@dataclass(frozen=True)
class Section:
    """One step of the experiment: ``run`` returns the results keys it measured."""

    name: str
    run: Callable[[Context], dict[str, Any]]


def baselines(ctx: Context) -> dict[str, Any]:
    """``modes``: the centralized and local-only baselines (federated entries are added next)."""
    ctx.entries, ctx.local_cpu_s = baseline_entries(ctx.prepared, ctx.parts, ctx.cfg)
    test_rows = int(len(ctx.prepared.test_rows))
    return {"modes": section(ctx.cfg, partition=ctx.cfg.partition, test_rows=test_rows, entries=ctx.entries)}


def federated_modes(ctx: Context) -> dict[str, Any]:
    """Every privacy mode of ``cfg.modes`` (added to ``modes``) and the ``shared:0.5`` run, metered with
    RAPL where readable."""
    from fedids.federation.simulation import make_partitions

    cfg, out = ctx.cfg, ctx.out
    rapl_reason = en.rapl_unavailable_reason()
    meter = en.RaplMeter() if rapl_reason is None else None
    if meter is not None:
        meter.__enter__()
    try:
        for mode in cfg.modes:
            _one_mode(ctx, mode)
        shared_parts = make_partitions(ctx.remaining, len(ctx.parts), "shared:0.5", cfg.seed)
        shared, _ = run_federated(
            ctx.prepared, shared_parts, cfg, "none", out / "runs" / "federated-shared-0.5", "shared:0.5"
        )
    finally:
        if meter is not None:
            meter.__exit__(None, None, None)
    what = "package energy of this machine during the privacy-mode and shared runs (all processes)"
    ctx.rapl = (
        {"status": "ok", "joules": meter.joules, "seconds": meter.seconds, "what": what}
        if meter is not None
        else {"status": f"unavailable: {rapl_reason}"}
    )
    return {"shared_0_5_avg_f1": _shared_section(ctx, shared)}


def _one_mode(ctx: Context, mode: str) -> None:
    try:
        entry, det = run_federated(
            ctx.prepared, ctx.parts, ctx.cfg, mode, ctx.out / "runs" / f"federated-{mode}", mode
        )
    except Exception as exc:  # noqa: BLE001 - one failed mode must not lose the rest of a long grid
        reason = str(exc).splitlines()[0][:300] if str(exc) else ""
        entry, det = {"status": f"failed: {type(exc).__name__}: {reason}"}, None
    ctx.entries[mode] = entry
    ctx.detectors[mode] = det
    if entry["status"] != "ok":
        err.print(f"[yellow]{mode}[/yellow]: {entry['status']}")
    ctx.save()


def _shared_section(ctx: Context, shared: dict) -> dict:
    """The paper's "50% shared classes" average F1, from the ``shared:0.5`` run's entry."""
    from fedids.task import evaluate_rows

    cfg, prepared = ctx.cfg, ctx.prepared
    if shared.get("status") != "ok":
        return section(cfg, status=shared["status"])
    det = load_global(shared)
    per_class = evaluate_rows(det, prepared, prepared.test_rows)["per_class"] if det else {}
    present = set(prepared.labels[prepared.test_rows])
    return section(
        cfg,
        status="ok",
        partition="shared:0.5",
        privacy="none",
        avg_f1=shared["macro_f1"],
        accuracy=shared["accuracy"],
        mcc=shared["mcc"],
        per_class_f1={k: v["f1"] for k, v in per_class.items() if k in present},
        history=shared["history"],
    )


def best_model(ctx: Context) -> dict[str, Any]:
    """Per family, sizes, latency and update bytes of the best federated model (highest test macro-F1)."""
    cfg, entries = ctx.cfg, ctx.entries
    ran = {
        m: e
        for m, e in entries.items()
        if e.get("kind") == "federated" and e["status"] == "ok" and ctx.detectors.get(m) is not None
    }
    keys = ("per_family", "model_size_bytes", "latency_ms", "update_bytes")
    if not ran:
        return {key: section(cfg, status="not run: no federated model completed") for key in keys}
    best = max(ran, key=lambda m: ran[m]["macro_f1"])
    det, name = ctx.detectors[best], f"federated ({best})"
    assert det is not None
    err.print(f"best federated model: {name}")
    per_family = model_sections.per_family_section(det, ctx.prepared, name, cfg)
    size, latency = model_sections.size_and_latency_sections(det, ctx.prepared, cfg, ctx.out / "export", name)
    update = model_sections.update_bytes_section(det, entries, cfg)
    return dict(zip(keys, (per_family, size, latency, update)))


def cost(ctx: Context) -> dict[str, Any]:
    """Energy and communication from the histories; the scalability benchmark's figures."""
    energy, comm = costs.energy_sections(ctx.entries, ctx.cfg, ctx.local_cpu_s, [len(p) for p in ctx.parts])
    energy["rapl"] = ctx.rapl
    scalability = costs.load_scalability(ctx.cfg.scalability_path)
    return {"energy_j": energy, "communication_mb": comm, "scalability": scalability}


def adaptive_strategies(ctx: Context) -> dict[str, Any]:
    if not ctx.cfg.adaptive:
        return {"adaptive": section(ctx.cfg, status="not run: switched off (--no-adaptive)")}
    return {"adaptive": adaptive.adaptive_section(ctx.prepared, ctx.parts, ctx.cfg, ctx.out / "runs")}


def membership_inference(ctx: Context) -> dict[str, Any]:
    """Membership inference against the model without DP and every DP mode."""
    targets: dict[str, tuple[Any, dict]] = {}
    if "none" in ctx.entries:
        targets["none"] = (ctx.detectors.get("none"), ctx.entries["none"])
    for m in (m for m in ctx.cfg.modes if dp_unit(m)):
        ran = ctx.entries.get(m, {}).get("status") == "ok" and ctx.detectors.get(m) is not None
        targets[m] = (ctx.detectors[m] if ran else None, ctx.entries.get(m, {"status": "not run"}))
    with progress_bar("membership inference", None):
        mia = membership.mia_section(ctx.prepared, ctx.parts, ctx.withheld, targets, ctx.cfg)
    return {"mia": mia}


def privacy_table(ctx: Context) -> dict[str, Any]:
    """``privacy``: each mode's epsilon, against whom, audited lower bound, quality (:mod:`.privacy_table`)."""
    return {"privacy": privacy_section(ctx.cfg, ctx.entries)}


def rare_classes(ctx: Context) -> dict[str, Any]:
    """``rare``: the rare-class protocol on this run's flows (:mod:`.rare_section`)."""
    with progress_bar("rare classes", None):
        return {"rare": rare_section(ctx.prepared, ctx.cfg)}


SECTIONS: tuple[Section, ...] = (
    Section("baselines", baselines),
    Section("federated modes", federated_modes),
    Section("best model", best_model),
    Section("cost", cost),
    Section("adaptive strategies", adaptive_strategies),
    Section("membership inference", membership_inference),
    Section("privacy table", privacy_table),
    Section("rare classes", rare_classes),
)
"""The experiment, in order (later sections read what earlier ones trained)."""


def start(cfg: ExperimentConfig, frame: pd.DataFrame | None = None) -> Context:
    """Load (or take) the flows, withhold the membership non-members, partition the rest; ``meta``."""
    from fedids.federation.simulation import make_partitions
    from fedids.task import prepare

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if frame is None:
        frame, source = load_frame(cfg)
    else:
        source = {"data": "frame given by the caller", "synth": None}
    prepared = prepare(frame, window=cfg.window, test_fraction=cfg.test_fraction, split=cfg.split)
    withheld, remaining = membership.split_withheld(prepared, cfg.clients, cfg.seed)
    parts = [p for p in make_partitions(remaining, cfg.clients, cfg.partition, cfg.seed) if len(p)]
    if not parts:
        raise ValueError(f"partition {cfg.partition}: no client received any data")
    results = {"meta": make_meta(cfg, prepared, parts, withheld, source), "paper": PAPER_REFERENCE}
    return Context(cfg, out, prepared, withheld, remaining, parts, results)


def run_experiment(cfg: ExperimentConfig, frame: pd.DataFrame | None = None) -> dict:
    """Run every section of :data:`SECTIONS`; writes ``results.json`` and ``report.html`` in
    ``cfg.out_dir`` and returns the results as written.

    ``frame`` (a canonical flow frame) replaces loading ``cfg.data`` / synthesising.
    """
    import torch

    # One thread per process: on a small shared machine torch's default thread pool oversubscribes the
    # cores (measured 30x slower training on 2 busy cores) and CPU seconds stop meaning single-core work.
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    ctx = start(cfg, frame)
    ctx.save()
    err.print(
        f"[bold]experiment[/bold]: {len(ctx.prepared.labels):,} flows, {len(ctx.parts)} clients "
        f"(+1 withheld for membership inference), {cfg.rounds} rounds, partition {cfg.partition}"
    )
    for step in SECTIONS:
        ctx.results |= step.run(ctx)
        ctx.save()
    ctx.results["meta"]["elapsed_s"] = time.perf_counter() - t_start
    ctx.save()
    clean = json.loads((ctx.out / RESULTS_FILE).read_text())
    write_report(clean, str(ctx.out / REPORT_FILE))
    return clean
