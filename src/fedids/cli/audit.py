"""`fedids audit`: canary-based privacy audit of the training modes, central (:mod:`fedids.evaluation.audit`)
or federated (``--federated``, :mod:`fedids.pipelines.audit`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from fedids.cli.common import DataOpt, app, load_data
from fedids.cli.outputs import check_outputs
from fedids.console import err, out
from fedids.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from fedids.evaluation.audit import AuditConfig, AuditMode
    from fedids.pipelines.audit import FederatedAuditConfig, FederatedMode


@app.command("audit")
def audit(
    data: list[Path] = DataOpt,
    epsilon: list[float] = typer.Option(
        [8.0],
        "--epsilon",
        "-e",
        help="Target epsilon of each DP mode (at --delta); repeat for several. The model trained without "
        "DP is always audited too, as the control that must show leakage.",
    ),
    federated: list[str] = typer.Option(
        [],
        "--federated",
        "-f",
        help="Audit federated training in this mode instead of central training (none, secagg, "
        "secagg+dp, he+dp, dpsgd, secagg+dpsgd, he+dpsgd, secagg+dpsgd-distributed, ...); repeat for several. Canaries join the "
        "clients' data; client-level dp and DP-SGD are calibrated to each --epsilon.",
    ),
    canaries: int = typer.Option(
        500, help="Canary windows, each included with probability 1/2 (2..100,000)."
    ),
    canary_scale: float = typer.Option(1.0, help="Standard deviation of canary features (scaled space)."),
    window: int = typer.Option(5, help="Flows per window (the flow and its host's predecessors), 1..128."),
    epochs: int = typer.Option(
        20, help="Training epochs of every audited (and shadow) model; with --federated, per round."
    ),
    batch_size: int = typer.Option(64, help="Batch size (expected Poisson batch under central DP-SGD)."),
    lr: float = typer.Option(3e-3, help="Adam learning rate."),
    hidden: int = typer.Option(32, help="GRU hidden units."),
    clip_norm: float = typer.Option(1.0, help="DP-SGD per-window gradient L2 clip norm."),
    shadows: int = typer.Option(4, help="Offline-LiRA shadow models per mode (0 = no LiRA, else >= 2)."),
    delta: float = typer.Option(1e-5, help="Delta of the accountant and of the audited claim."),
    confidence: float = typer.Option(0.95, help="Confidence of the epsilon lower bound."),
    seed: int = typer.Option(
        0, help="Seed of model initialisation and canary features (never of inclusion bits or DP noise)."
    ),
    clients: int = typer.Option(5, help="With --federated: clients (every one trains every round)."),
    rounds: int = typer.Option(5, help="With --federated: rounds."),
    partition: str = typer.Option("iid", help="With --federated: iid, host, dirichlet:A or shared:F."),
    run_dir: Path | None = typer.Option(
        None, help="With --federated: keep each run's files here (default: a temporary directory)."
    ),
    out_path: Path | None = typer.Option(None, "--out", "-o", help="Also write the JSON report here."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report instead of a table."),
) -> None:
    """Privacy audit that can fail: train with secret canaries (no DP, and each DP mode at each
    --epsilon), then report per mode the accountant's epsilon beside the one-run audited lower bound
    (Steinke, Nasr, Jagielski 2023) and the canary attacks' AUC (LiRA, Carlini et al. 2022)."""
    from fedids.evaluation import audit as ev

    if not 1 <= window <= 128:
        raise InputError(f"audit: --window must be in [1, 128], got {window}")
    try:
        config = ev.AuditConfig(
            canaries,
            canary_scale,
            epochs,
            batch_size,
            lr,
            hidden,
            clip_norm,
            shadows,
            delta,
            confidence,
            seed,
        )
        modes = [ev.AuditMode(ev.NO_DP)] + [ev.AuditMode(ev.DPSGD, e) for e in epsilon]
        plan = _federated_plan(config, federated, epsilon, clients, rounds, partition, window)
    except ValueError as exc:
        raise InputError(f"audit: {exc}") from None
    outputs = [("--out", out_path, "file"), ("--run-dir", run_dir if plan else None, "dir")]
    check_outputs("audit", outputs, inputs=data)
    frame = load_data(data).frame
    if plan is not None:
        report = _run_federated(frame, plan[0], plan[1], run_dir)
    else:
        report = _run_central(frame, window, config, modes)
    report = {"data": [str(p) for p in data], **report, "command": "fedids " + " ".join(sys.argv[1:])}
    _write_report(report, out_path, as_json)


def _run_central(frame: pd.DataFrame, window: int, config: AuditConfig, modes: list[AuditMode]) -> dict:
    """The central audit's report: each mode's result as it is done, the settings."""
    from fedids.evaluation import audit as ev

    try:
        prepared = ev.prepare_audit_data(frame, window)
    except ValueError as exc:
        raise InputError(f"audit: {exc}") from None
    err.print(
        f"[dim]auditing {len(modes)} modes: {len(prepared.targets):,} flows, {config.canaries:,} canaries[/dim]"
    )
    results = ev.run_audit(prepared, modes, config, on_mode=_announce)
    return {"window": window, "config": vars(config) | {}, "modes": [r.to_dict() for r in results]}


def _federated_plan(
    config: AuditConfig,
    texts: list[str],
    epsilon: list[float],
    clients: int,
    rounds: int,
    partition: str,
    window: int,
) -> tuple[FederatedAuditConfig, list[FederatedMode]] | None:
    """``(FederatedAuditConfig, modes)`` for --federated, None without it; ValueError on bad settings."""
    if not texts:
        return None
    from fedids.pipelines import audit as fa

    federated = fa.FederatedAuditConfig(
        config, clients=clients, partition=partition, rounds=rounds, window=window
    )
    return federated, fa.federated_modes(texts, epsilon)


def _run_federated(
    frame: pd.DataFrame, config: FederatedAuditConfig, modes: list[FederatedMode], run_dir: Path | None
) -> dict:
    """The federated audit's report: each mode's result as it is done, the settings."""
    import dataclasses

    from fedids.pipelines import audit as fa

    try:
        prepared = fa.prepare_federated_audit(frame, config)
    except ValueError as exc:
        raise InputError(f"audit: {exc}") from None
    err.print(
        f"[dim]auditing {len(modes)} federated modes: {len(prepared.train_rows):,} training flows, "
        f"{config.clients} clients, {config.rounds} rounds, {config.audit.canaries:,} canaries[/dim]"
    )
    results = fa.run_federated_audit(prepared, modes, config, run_dir, on_mode=_announce)
    return {
        "window": config.window,
        "federated": True,
        "config": dataclasses.asdict(config),
        "modes": [r.to_dict() for r in results],
    }


def _announce(result) -> None:  # noqa: ANN001 - fedids.evaluation.audit.ModeAudit
    err.print(
        f"[dim]{result.mode}: audited epsilon >= {result.one_run.epsilon_lower_bound:.2f}, AUC "
        f"{result.auc:.3f} ({result.train_seconds + result.shadow_seconds:.0f} s)[/dim]"
    )


def _write_report(report: dict, out_path: Path | None, as_json: bool) -> None:
    """The JSON file, the JSON or the table on stdout, and a warning if the control shows no leakage."""
    if out_path is not None:
        from fedids.cli.outputs import write_json

        write_json(out_path, report)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        _print_table(report["modes"])
    weak = report["modes"][0]
    if weak["one_run"]["epsilon_lower_bound"] <= 0.5 and not weak["auc"] >= 0.9:
        err.print(
            "[yellow]warning: the model trained without DP shows little leakage: the audit is too weak "
            "(more canaries or epochs, or a larger model)[/yellow]"
        )


def _print_table(modes: list[dict]) -> None:
    federated = any(m["extra"].get("federated") for m in modes)
    title = "federated privacy audit" if federated else "privacy audit"
    table = Table(title=f"{title}: accountant epsilon vs audited lower bound")
    columns = ["mode", "eps", "audited >=", "right", "AUC", "LiRA", "TPR@1%"]
    for col in columns + (["unit", "F1"] if federated else []):
        table.add_column(col, justify="left" if col in ("mode", "unit") else "right")
    for m in modes:
        eps = m["accountant_epsilon"]
        lira = m["lira"]
        one = m["one_run"]
        row = [
            m["mode"],
            "inf" if eps is None else f"{eps:.2f}",
            f"{one['epsilon_lower_bound']:.2f}",
            f"{one['correct']}/{one['guesses']}",
            _fmt(m["auc"]),
            "-" if lira is None else _fmt(lira["auc"]),
            "-" if lira is None else _fmt(lira["tpr_at_fpr"].get("0.01", math.nan)),
        ]
        if federated:
            row += [m["extra"].get("dp_unit") or "-", _fmt(m["extra"].get("macro_f1"))]
        table.add_row(*row)
    out.print(table)
    err.print(
        "[dim]eps: the accountant's (inf = no DP); audited >=: one-run lower bound (right: correct guesses "
        "of those made); AUC: canary score; LiRA: offline LiRA AUC and TPR at 1% FPR"
        + ("; unit: what eps protects; F1: the global model's test macro-F1" if federated else "")
        + "[/dim]"
    )
    for m in modes:
        if m["extra"].get("dp_against"):
            err.print(f"[dim]{m['mode']}: eps holds against {m['extra']['dp_against']}[/dim]")


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
