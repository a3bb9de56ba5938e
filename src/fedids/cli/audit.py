"""`fedids audit`: canary-based privacy audit of the training modes (see :mod:`fedids.evaluation.audit`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import typer
from rich.table import Table

from fedids.cli.common import DataOpt, app, load_data
from fedids.cli.outputs import check_outputs
from fedids.console import err, out
from fedids.errors import InputError


@app.command("audit")
def audit(
    data: list[Path] = DataOpt,
    epsilon: list[float] = typer.Option(
        [8.0],
        "--epsilon",
        "-e",
        help="DP-SGD target epsilon to audit (per flow window, at --delta); repeat for several. The model "
        "trained without DP is always audited too, as the control that must show leakage.",
    ),
    canaries: int = typer.Option(
        500, help="Canary windows, each included with probability 1/2 (2..100,000)."
    ),
    canary_scale: float = typer.Option(1.0, help="Standard deviation of canary features (scaled space)."),
    window: int = typer.Option(5, help="Flows per window (the flow and its host's predecessors), 1..128."),
    epochs: int = typer.Option(20, help="Training epochs of every audited (and shadow) model."),
    batch_size: int = typer.Option(64, help="Batch size (expected Poisson batch under DP-SGD)."),
    lr: float = typer.Option(3e-3, help="Adam learning rate."),
    hidden: int = typer.Option(32, help="GRU hidden units."),
    clip_norm: float = typer.Option(1.0, help="DP-SGD per-window gradient L2 clip norm."),
    shadows: int = typer.Option(4, help="Offline-LiRA shadow models per mode (0 = no LiRA, else >= 2)."),
    delta: float = typer.Option(1e-5, help="Delta of the accountant and of the audited claim."),
    confidence: float = typer.Option(0.95, help="Confidence of the epsilon lower bound."),
    seed: int = typer.Option(
        0, help="Seed of model initialisation and canary features (never of inclusion bits or DP noise)."
    ),
    out_path: Path | None = typer.Option(None, "--out", "-o", help="Also write the JSON report here."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report instead of a table."),
) -> None:
    """Privacy audit that can fail: train with secret canaries (no DP, and DP-SGD at each --epsilon),
    then report per mode the accountant's epsilon beside the one-run audited lower bound (Steinke, Nasr,
    Jagielski 2023) and the canary attacks' AUC (LiRA, Carlini et al. 2022)."""
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
    except ValueError as exc:
        raise InputError(f"audit: {exc}") from None
    if out_path is not None:
        check_outputs("audit", [("--out", out_path, "file")], inputs=data)
    frame = load_data(data).frame
    try:
        prepared = ev.prepare_audit_data(frame, window)
    except ValueError as exc:
        raise InputError(f"audit: {exc}") from None
    err.print(
        f"[dim]auditing {len(modes)} modes: {len(prepared.targets):,} flows, {canaries:,} canaries[/dim]"
    )

    results = [r.to_dict() for r in ev.run_audit(prepared, modes, config, on_mode=_announce)]
    report = {
        "data": [str(p) for p in data],
        "window": window,
        "config": vars(config) | {},
        "modes": results,
        "command": "fedids " + " ".join(sys.argv[1:]),
    }
    _write_report(report, out_path, as_json)


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
    table = Table(title="privacy audit: accountant epsilon vs audited lower bound")
    for col in ("mode", "eps", "audited >=", "right", "AUC", "LiRA", "TPR@1%"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for m in modes:
        eps = m["accountant_epsilon"]
        lira = m["lira"]
        one = m["one_run"]
        table.add_row(
            m["mode"],
            "inf" if eps is None else f"{eps:.2f}",
            f"{one['epsilon_lower_bound']:.2f}",
            f"{one['correct']}/{one['guesses']}",
            _fmt(m["auc"]),
            "-" if lira is None else _fmt(lira["auc"]),
            "-" if lira is None else _fmt(lira["tpr_at_fpr"].get("0.01", math.nan)),
        )
    out.print(table)
    err.print(
        "[dim]eps: the accountant's (inf = no DP); audited >=: one-run lower bound (right: correct guesses "
        "of those made); AUC: canary score; LiRA: offline LiRA AUC and TPR at 1% FPR[/dim]"
    )


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
