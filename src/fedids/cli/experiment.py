"""`fedids experiment paper`: the paper's evaluation grid, written to results.json and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedids.cli.common import app
from fedids.console import err, out
from fedids.errors import InputError

if TYPE_CHECKING:
    from fedids.pipelines.experiment import ExperimentConfig

experiment_app = typer.Typer(
    no_args_is_help=True, help="Reproduce the paper's evaluation and write a report."
)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("paper")
def paper(
    data: list[Path] | None = typer.Option(
        None, "--data", "-d", help="CSV file(s); default: the synthetic IoT traffic."
    ),
    out_dir: Path = typer.Option(
        ..., "--out", "-o", help="Directory for results.json, report.html and the runs."
    ),
    rounds: int | None = typer.Option(None, help="Federated rounds (default 10; 3 with --quick)."),
    clients: int | None = typer.Option(
        None,
        help="Participating clients (default 10; 4 with --quick); one "
        "more is withheld as the membership-inference non-members.",
    ),
    partition: str = typer.Option("dirichlet:0.5", help="iid | dirichlet:ALPHA | shared:FRACTION | host"),
    local_epochs: int = typer.Option(
        1, help="Local epochs per round (baselines train rounds x local epochs)."
    ),
    target_epsilon: float = typer.Option(
        8.0,
        help="Epsilon (delta 1e-5) of the DP modes: client-level for he+dp "
        "and he+secagg+dp, per flow window for he+dpsgd.",
    ),
    split: str = typer.Option("time", help="time | label-time (see `fedids train --help`)."),
    seed: int = typer.Option(0, help="Seed of data synthesis, partitions, sampling, training and attacks."),
    quick: bool = typer.Option(
        False, "--quick", help="Small synthetic data, few rounds and clients: minutes."
    ),
    scalability: Path | None = typer.Option(
        None, help="Scalability JSON to include (default: benchmarks/results/scalability.json)."
    ),
    modes: str | None = typer.Option(
        None,
        help="Federated privacy modes to run, a comma list (default: none, "
        "he, he+dp, he+dpsgd, he+secagg+dp, secagg+dpsgd-distributed).",
    ),
    distributed_rounds: int | None = typer.Option(
        None,
        help="Rounds (one DP-SGD step each) of secagg+dpsgd-distributed (default 176; 10 with --quick).",
    ),
    audit: list[Path] | None = typer.Option(
        None,
        "--audit",
        help="A `fedids audit --federated MODE --out FILE` report: its audited epsilon lower bounds go "
        "into the report's privacy table (repeat for several).",
    ),
    adaptive: bool = typer.Option(
        True,
        "--adaptive/--no-adaptive",
        help="Compare plain FedAvg with energy-aware selection + adaptive epochs and "
        "int8 / top-k update compression (four more federated runs).",
    ),
) -> None:
    """Run baselines, federated privacy modes, shared:0.5, compression, energy, adaptive strategies,
    membership inference."""
    options = dict(locals())  # every option by name (before anything else is bound)
    from fedids.pipelines.experiment import REPORT_FILE, run_experiment, summary_lines

    try:
        cfg = _experiment_config(**options)
    except ValueError as exc:
        raise InputError(f"experiment paper: {exc}") from None
    if not data:
        err.print("[dim]no --data given: using the synthetic IoT default[/dim]")
    results = run_experiment(cfg)
    for line in summary_lines(results):
        out.print(line, highlight=False)
    out.print(f"report: {out_dir / REPORT_FILE}", highlight=False)


def _experiment_config(
    *,
    data: list[Path] | None,
    out_dir: Path,
    rounds: int | None,
    clients: int | None,
    partition: str,
    local_epochs: int,
    target_epsilon: float,
    split: str,
    seed: int,
    quick: bool,
    scalability: Path | None,
    modes: str | None,
    distributed_rounds: int | None,
    audit: list[Path] | None,
    adaptive: bool,
) -> ExperimentConfig:
    """The experiment the options describe (``--quick`` scales the defaults down); ValueError on a bad
    option, before anything runs."""
    from fedids.federation.partition import PartitionSpec
    from fedids.pipelines.experiment import (
        DEFAULT_SCALABILITY,
        ExperimentConfig,
        make_command,
        quick_synth,
    )
    from fedids.pipelines.experiment.privacy_table import load_audit

    chosen = _chosen_modes(modes)
    rounds = rounds if rounds is not None else (3 if quick else 10)
    clients = clients if clients is not None else (4 if quick else 10)
    if distributed_rounds is None:
        distributed_rounds = 10 if quick else ExperimentConfig.distributed_rounds
    for path in audit or ():  # read now: a bad report must not cost the whole run
        load_audit(path)
    command = make_command(
        {
            "data": data,
            "out": out_dir,
            "rounds": rounds,
            "clients": clients,
            "partition": partition,
            "local_epochs": local_epochs,
            "split": split,
            "seed": seed,
            "target_epsilon": target_epsilon,
            "quick": quick,
            "adaptive": adaptive,
            "modes": ",".join(chosen),
            "distributed_rounds": distributed_rounds,
            "audit": audit,
        }
    )
    config = ExperimentConfig(
        out_dir=out_dir,
        data=tuple(str(p) for p in data or ()),
        rounds=rounds,
        clients=clients,
        partition=partition,
        local_epochs=local_epochs,
        split=split,
        seed=seed,
        quick=quick,
        target_epsilon=target_epsilon,
        command=command,
        modes=chosen,
        distributed_rounds=distributed_rounds,
        distributed_batch_size=256 if quick else ExperimentConfig.distributed_batch_size,
        audits=tuple(str(p) for p in audit or ()),
        shadows=2 if quick else 4,
        mia_max_per_class=300 if quick else 5000,
        latency_calls=300 if quick else 1000,
        scalability_path=scalability if scalability is not None else DEFAULT_SCALABILITY,
        synth=quick_synth(seed) if quick and not data else {},
        adaptive=adaptive,
    )
    PartitionSpec.parse(partition)
    return config


def _chosen_modes(modes: str | None) -> tuple[str, ...]:
    """The privacy modes of ``--modes`` (default: all), each one this installation can run."""
    from fedids.pipelines.experiment import DEFAULT_MODES, privacy_unsupported_reason

    chosen = DEFAULT_MODES if modes is None else tuple(m.strip() for m in modes.split(",") if m.strip())
    if not chosen:
        raise ValueError("--modes is empty")
    for mode in chosen:
        reason = privacy_unsupported_reason(mode)
        if reason:
            raise ValueError(f"--modes: {reason}")
    return chosen
