"""`fedids federate`: federated training in Flower's simulation engine, with the paper's baselines."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from fedids.cli.common import app, load_data, write_json
from fedids.console import err, out, progress_bar
from fedids.errors import InputError
from fedids.federation.config import config_defaults

_D = config_defaults()  # every default below comes from FederationConfig (tests/test_config_drift.py)

MODES = ("federated", "centralized", "local")
RUN_FILE, RESULTS_FILE = "run.json", "results.json"


def _parse_modes(text: str) -> list[str]:
    modes = list(MODES) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InputError(f"--mode {text!r}: use all or a comma-separated subset of {', '.join(MODES)}")
    return modes


def load_frame(data: list[Path] | None, seed: int):
    """The user's CSV files, or the embedded synthetic IoT default when none are given."""
    if data:
        return load_data(data).frame
    from fedids.data.synth import SynthConfig, generate_flows

    err.print("[dim]no --data given: using the synthetic IoT default (fedids data synth)[/dim]")
    return generate_flows(SynthConfig(seed=seed))


@app.command("federate")
def federate(
    data: list[Path] | None = typer.Option(
        None, "--data", "-d", help="CSV file(s); default: synthetic IoT traffic."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory (model, checkpoints, results)."
    ),
    clients: int = typer.Option(10, help="Number of simulated IoT clients."),
    partition: str = typer.Option("dirichlet:0.5", help="iid | dirichlet:ALPHA | shared:FRACTION | host"),
    rounds: int = typer.Option(_D.rounds, help="Federated rounds."),
    mode: str = typer.Option("federated", help="federated, centralized, local, a comma list, or all."),
    strategy: str = typer.Option(
        _D.strategy,
        help="fedavgm (FedAvg + server momentum) | fedavg | fedprox | krum | fedmedian | fedtrimmedavg",
    ),
    server_momentum: float = typer.Option(
        _D.server_momentum, help="FedAvgM: momentum of the server's step (0 = FedAvg)."
    ),
    server_lr: float = typer.Option(
        _D.server_lr, help="FedAvgM: server learning rate applied to the averaged update."
    ),
    fraction: float = typer.Option(_D.fraction_train, help="Fraction of clients sampled per round."),
    local_epochs: int = typer.Option(_D.local_epochs, help="Local epochs per round."),
    lr: float = typer.Option(_D.lr, help="Client learning rate (Adam)."),
    batch_size: int = typer.Option(
        _D.batch_size, help="Client batch size (also the centralized and local baselines')."
    ),
    proximal_mu: float = typer.Option(
        _D.proximal_mu, help="FedProx proximal term (with --strategy fedprox)."
    ),
    hidden: int = typer.Option(_D.hidden, help="GRU hidden units."),
    window: int = typer.Option(_D.window, help="Flows per window."),
    split: str = typer.Option("time", help="time | label-time (see `fedids train --help`)."),
    test_fraction: float = typer.Option(0.3, help="Share of flows held out by the server for testing."),
    segment: int = typer.Option(100, help="Consecutive flows of a host kept together when partitioning."),
    seed: int = typer.Option(_D.seed, help="Random seed (partitions, sampling, initialisation, training)."),
    privacy: str = typer.Option(
        _D.privacy, help="none, he, secagg, dp or a +-joined mix (he+dp, secagg+dp, he+secagg+dp)."
    ),
    keys: Path | None = typer.Option(
        None, help="HE key set from `fedids keys init` (default: created in OUT/keys)."
    ),
    target_epsilon: float = typer.Option(
        _D.target_epsilon, help="dp: calibrate noise for this epsilon and stop before exceeding it."
    ),
    noise_multiplier: float = typer.Option(
        _D.noise_multiplier, help="dp: noise std / clip norm; 0 = calibrate it from --target-epsilon."
    ),
    clip_norm: float = typer.Option(_D.clip_norm, help="dp: L2 bound of each client's update."),
    dpsgd_noise: float = typer.Option(
        _D.dpsgd_noise_multiplier, help="> 0: clients train with Opacus DP-SGD at this noise multiplier."
    ),
    dpsgd_epsilon: float = typer.Option(
        _D.dpsgd_target_epsilon,
        help="> 0: clients train with Opacus DP-SGD, each calibrating its noise "
        "so that all rounds spend at most this epsilon per flow window "
        "(sample-level DP; delta 1e-5).",
    ),
    dpsgd_batch_size: int = typer.Option(
        _D.dpsgd_batch_size, help="DP-SGD expected batch size (larger: less noise per example)."
    ),
    dpsgd_lr: float = typer.Option(_D.dpsgd_lr, help="DP-SGD client learning rate (Adam)."),
    selection: str = typer.Option(
        _D.selection,
        help="random | energy: prefer clients with energy budget left on "
        "efficient hardware (plaintext only; see docs/evaluation.md).",
    ),
    energy_budget: float = typer.Option(
        _D.energy_budget_j,
        help="Joules each device may spend on the whole training; a client "
        "that cannot pay for a round is not selected. 0 = unlimited.",
    ),
    max_local_epochs: int = typer.Option(
        _D.max_local_epochs,
        help="> 0: adaptive local epochs, 1 up to this, fitted to each "
        "client's per-round share of --energy-budget.",
    ),
    compression: str = typer.Option(
        _D.compression, help="Client update compression: none | int8 | topk:FRACTION (plaintext only)."
    ),
    head_aggregation: str = typer.Option(
        _D.head_aggregation,
        help="class: average each output row by the clients' examples "
        "of that class (keeps rare classes; every mode but dp) | examples: plain FedAvg.",
    ),
    calibration: str = typer.Option(
        _D.calibration,
        help="ccvr: after the last round, refit the classifier head on "
        "the clients' summed per-class feature statistics, then check it (every mode but dp) | none.",
    ),
    client_weighting: str = typer.Option(
        _D.client_weighting,
        help="objective: weigh each client's update by its share of "
        "the class-weighted loss (every mode but dp) | "
        "examples: by its flows (FedAvg).",
    ),
    test_data: list[Path] | None = typer.Option(
        None,
        "--test-data",
        help="Score every round and the final "
        "model on these CSV files instead of a held-out split of --data.",
    ),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this directory."),
) -> None:
    """Train the GRU detector with federated learning on simulated clients (Flower + Ray)."""
    if resume is not None:
        run_file = resume / RUN_FILE
        if not run_file.exists():
            raise InputError(f"{resume}: nothing to resume ({RUN_FILE} missing)")
        args = json.loads(run_file.read_text())
        args["data"] = [Path(p) for p in args["data"]] if args["data"] else None
        args["test_data"] = [Path(p) for p in args.get("test_data") or []] or None
        args["out_dir"] = resume
        _run(**args, resuming=True)
        return
    if out_dir is None:
        raise InputError("federate: --out DIR is required (or --resume DIR)")
    args = dict(
        data=[str(p) for p in data] if data else None,
        out_dir=str(out_dir),
        clients=clients,
        partition=partition,
        rounds=rounds,
        mode=mode,
        strategy=strategy,
        server_momentum=server_momentum,
        server_lr=server_lr,
        fraction=fraction,
        local_epochs=local_epochs,
        lr=lr,
        batch_size=batch_size,
        proximal_mu=proximal_mu,
        hidden=hidden,
        window=window,
        split=split,
        test_fraction=test_fraction,
        segment=segment,
        seed=seed,
        privacy=privacy,
        keys=str(keys) if keys else None,
        target_epsilon=target_epsilon,
        noise_multiplier=noise_multiplier,
        clip_norm=clip_norm,
        dpsgd_noise=dpsgd_noise,
        dpsgd_epsilon=dpsgd_epsilon,
        dpsgd_batch_size=dpsgd_batch_size,
        dpsgd_lr=dpsgd_lr,
        selection=selection,
        energy_budget=energy_budget,
        max_local_epochs=max_local_epochs,
        compression=compression,
        head_aggregation=head_aggregation,
        client_weighting=client_weighting,
        calibration=calibration,
        test_data=[str(p) for p in test_data] if test_data else None,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RUN_FILE, args)
    args["data"] = data
    args["test_data"] = test_data
    args["out_dir"] = out_dir
    _run(**args, resuming=False)


def _run(
    *,
    data,
    out_dir: Path,
    clients,
    partition,
    rounds,
    mode,
    strategy,
    fraction,
    local_epochs,
    lr,
    batch_size,
    proximal_mu,
    hidden,
    window,
    split,
    test_fraction,
    segment,
    seed,
    resuming: bool,
    privacy: str = _D.privacy,
    keys: str | None = None,
    target_epsilon: float = _D.target_epsilon,
    noise_multiplier: float = _D.noise_multiplier,
    clip_norm: float = _D.clip_norm,
    dpsgd_noise: float = _D.dpsgd_noise_multiplier,
    dpsgd_epsilon: float = _D.dpsgd_target_epsilon,
    dpsgd_batch_size: int = _D.dpsgd_batch_size,
    dpsgd_lr: float = _D.dpsgd_lr,
    selection: str = _D.selection,
    energy_budget: float = _D.energy_budget_j,
    max_local_epochs: int = _D.max_local_epochs,
    compression: str = _D.compression,
    head_aggregation: str = _D.head_aggregation,
    server_momentum: float = _D.server_momentum,
    server_lr: float = _D.server_lr,
    client_weighting: str = _D.client_weighting,
    calibration: str = _D.calibration,
    test_data: list[Path] | None = None,
) -> None:
    from fedids.federation.baselines import run_centralized, run_local
    from fedids.federation.config import FederationConfig
    from fedids.federation.partition import PartitionSpec
    from fedids.federation.simulation import make_partitions, run_simulated, summarise_partitions
    from fedids.model.train import TrainConfig
    from fedids.task import classes_without_training_rows, prepare, prepare_with_test

    modes = _parse_modes(mode)
    secret_path, public_path = _key_paths(privacy, keys, out_dir)
    try:
        config = FederationConfig(
            rounds=rounds,
            fraction_train=fraction,
            min_clients=1,
            strategy=strategy,
            server_momentum=server_momentum,
            server_lr=server_lr,
            proximal_mu=proximal_mu,
            local_epochs=local_epochs,
            batch_size=batch_size,
            lr=lr,
            hidden=hidden,
            window=window,
            seed=seed,
            privacy=privacy,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
            target_epsilon=target_epsilon,
            he_public_context=public_path or "",
            dpsgd_noise_multiplier=dpsgd_noise,
            dpsgd_target_epsilon=dpsgd_epsilon,
            dpsgd_batch_size=dpsgd_batch_size,
            dpsgd_lr=dpsgd_lr,
            selection=selection,
            energy_budget_j=energy_budget,
            max_local_epochs=max_local_epochs,
            compression=compression,
            head_aggregation=head_aggregation,
            client_weighting=client_weighting,
            calibration=calibration,
        )
        if clients < 1:
            raise ValueError("--clients must be >= 1")
        if segment < 1:
            raise ValueError("--segment must be >= 1")
        PartitionSpec.parse(partition)  # a typo fails here, before data is loaded
        frame = load_frame(data, seed)
        if test_data:
            prepared = prepare_with_test(frame, load_data(test_data).frame, window=window)
        else:
            prepared = prepare(frame, window=window, test_fraction=test_fraction, split=split)
        parts = make_partitions(prepared, clients, partition, seed, segment)
    except ValueError as exc:
        raise InputError(f"federate: {exc}") from None
    untrained = classes_without_training_rows(prepared)
    if untrained:
        err.print(
            f"[yellow]warning:[/yellow] no training flows of {', '.join(untrained)}: the model cannot learn "
            f"{'this class' if len(untrained) == 1 else 'these classes'} (try --split label-time or --test-data)"
        )
    _print_partitions(summarise_partitions(prepared.labels, parts), out_dir / "partitions.csv")
    if sum(1 for p in parts if len(p)) < clients:
        err.print(
            f"[yellow]warning:[/yellow] {sum(1 for p in parts if not len(p))} client(s) got no data and are left out"
        )
    results_path = out_dir / RESULTS_FILE
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["test_rows"] = int(len(prepared.test_rows))
    baseline_cfg = TrainConfig(epochs=rounds * local_epochs, batch_size=batch_size, lr=lr, seed=seed)

    if "centralized" in modes:
        with progress_bar("centralized baseline", None):
            _, metrics = run_centralized(prepared, baseline_cfg, hidden=hidden, window=window)
        results["centralized"] = {k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "mcc")}
        write_json(results_path, results)
    if "local" in modes:
        with progress_bar("local-only baselines", sum(1 for p in parts if len(p))) as advance:
            local = run_local(prepared, parts, baseline_cfg, hidden=hidden, window=window, progress=advance)
        results["local"] = local.aggregate() | {"per_client": local.per_client}
        write_json(results_path, results)
    if "federated" in modes:
        with progress_bar("federated rounds", rounds) as advance:

            def on_round(rec) -> None:
                eps = f", epsilon {rec.epsilon:.3f}" if rec.epsilon is not None else ""
                if rec.energy_j is not None:
                    eps += f", {rec.energy_j:.2f} J (modelled)"
                if rec.dpsgd_epsilon is not None:
                    eps += f", DP-SGD epsilon so far {rec.dpsgd_epsilon:.2f} (per flow window)"
                err.print(
                    f"round {rec.round:>3}: clients {rec.clients} (rejected {rec.rejected}){eps}, "
                    f"train loss {rec.train_loss:.4f}, local val F1 {rec.local_val_macro_f1:.4f}, "
                    f"test macro-F1 {rec.test['macro_f1']:.4f}, MCC {rec.test['mcc']:.4f}, "
                    f"{rec.seconds:.1f} s"
                )
                advance(1)

            state = run_simulated(
                prepared,
                parts,
                config,
                out_dir,
                resume=resuming,
                on_round=on_round,
                he_secret_context=secret_path,
            )
        if state.stopped:
            err.print(f"[yellow]{state.stopped}[/yellow]")
        if not state.history:
            raise InputError(f"federate: no round completed ({state.stopped or 'see the log'})")
        final = state.history[-1]["test"]
        if state.calibration.get("before"):
            before, after = state.calibration["before"]["macro_f1"], state.calibration["test"]["macro_f1"]
            check = state.calibration.get("validation") or {}
            verdict = ("kept" if state.calibration.get("kept") else "discarded") if check else "unchecked"
            err.print(
                f"head calibration (CCVR, {state.calibration['clients']} clients): {verdict} "
                f"({check.get('reason', 'no check')}); server test macro-F1 {before:.4f} -> {after:.4f}"
            )
            final = state.calibration["test"]
        results["federated"] = final | {
            "rounds": state.completed_round,
            "strategy": strategy,
            "partition": partition,
            "privacy": privacy,
            "epsilon": state.history[-1].get("epsilon"),
            "dpsgd_epsilon": state.history[-1].get("dpsgd_epsilon"),
            "selection": selection,
            "compression": compression,
            "energy_budget_j": energy_budget,
            "stopped": state.stopped,
            "calibration": state.calibration or None,
        }
        results["federated_history"] = state.history
        write_json(results_path, results)
    _print_comparison(results)
    err.print(
        f"results in {results_path}"
        + (f", global model in {out_dir / 'global'}" if "federated" in modes else "")
    )


def _key_paths(privacy: str, keys: str | None, out_dir: Path) -> tuple[str | None, str | None]:
    """HE key files for ``privacy``: the given key set, or a new one in OUT/keys (simulation only)."""
    if "he" not in privacy.split("+"):
        return None, None
    from fedids.privacy.keys import PUBLIC_CONTEXT_FILE, SECRET_CONTEXT_FILE, init_keys

    directory = Path(keys) if keys else out_dir / "keys"
    if not (directory / PUBLIC_CONTEXT_FILE).exists():
        init_keys(directory, privacy)
        err.print(f"[dim]created the HE key set in {directory}[/dim]")
    return str(directory / SECRET_CONTEXT_FILE), str(directory / PUBLIC_CONTEXT_FILE)


PARTITION_COLUMNS_SHOWN = 10


def _print_partitions(summary, path: Path) -> None:
    """Labels down, clients across (a label name is wider than a count), as many of the first
    ``PARTITION_COLUMNS_SHOWN`` clients as the terminal fits uncut; the whole table goes to ``path`` (CSV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(path, index=False)
    label_width = max(len("client"), *(len(str(c)) for c in summary.columns)) + 3
    count_width = len(f"{int(summary['rows'].max()):,}") + 3  # digits, padding and a border
    fits = max(1, (err.width - label_width - 1) // count_width)
    shown = summary.head(min(PARTITION_COLUMNS_SHOWN, fits))
    table = Table(title="partitions (rows per label and client)")
    table.add_column("client", justify="left", no_wrap=True)
    for client in shown["client"]:
        table.add_column(str(int(client)), justify="right", no_wrap=True)
    for col in summary.columns.drop("client"):
        table.add_row(str(col), *(f"{int(v):,}" for v in shown[col]))
    err.print(table)
    if len(summary) > len(shown):
        rows, classes = summary["rows"], summary["classes"]
        err.print(
            f"{len(summary) - len(shown):,} more clients; over all {len(summary):,}: rows "
            f"min/median/max {rows.min():,}/{int(rows.median()):,}/{rows.max():,}, classes "
            f"{classes.min()}/{int(classes.median())}/{classes.max()}"
        )
    err.print(f"[dim]partition table: {path}[/dim]")


def _print_comparison(results: dict) -> None:
    table = Table(title=f"held-out test split ({results.get('test_rows', 0):,} flows)")
    for col in ("mode", "accuracy", "macro-F1", "weighted-F1", "MCC"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    rows = [
        ("federated", results.get("federated")),
        ("centralized", results.get("centralized")),
        ("local (mean)", results.get("local", {}).get("mean")),
        ("local (worst)", results.get("local", {}).get("worst")),
    ]
    for name, m in rows:
        if m:
            table.add_row(name, *(f"{m[k]:.4f}" for k in ("accuracy", "macro_f1", "weighted_f1", "mcc")))
    out.print(table)
