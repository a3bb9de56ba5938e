"""`fedids federate`: federated training in Flower's simulation engine, with the paper's baselines.

This module parses the options into a :class:`~fedids.pipelines.federate.FederateRequest` (one
:class:`~fedids.federation.config.FederationConfig` plus the command's own settings) and prints; the run
itself is :func:`fedids.pipelines.federate.run_federate`. Every option that is a FederationConfig field
takes its default from there (tests/federation/test_config_drift.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedids.cli.common import app, write_json
from fedids.console import err, out
from fedids.errors import InputError
from fedids.federation.config import (
    DISTRIBUTED_DPSGD_ROUNDS,
    DPSGD_BATCH_SIZE,
    FederationConfig,
    config_defaults,
)
from fedids.pipelines.federate import MODES, RUN_FILE, FederateRequest, he_public_context

_D = config_defaults()

# Options whose FederationConfig field has another name; the options of CLI_ONLY are not config fields.
OPTION_FIELDS = {
    "fraction": "fraction_train",
    "dpsgd_noise": "dpsgd_noise_multiplier",
    "dpsgd_epsilon": "dpsgd_target_epsilon",
    "dpsgd_clip": "dpsgd_clip_norm",
    "energy_budget": "energy_budget_j",
}
CLI_ONLY = frozenset(
    ("data", "out_dir", "clients", "partition", "mode", "split", "test_fraction", "segment", "keys")
    + ("test_data", "resume", "malicious", "attack")
)


def _opt(help: str, *names: str) -> Any:
    return typer.Option(*names, help=help)


Data = Annotated[list[Path] | None, _opt("CSV file(s); default: synthetic IoT traffic.", "--data", "-d")]
OutDir = Annotated[Path | None, _opt("Run directory (model, checkpoints, results).", "--out", "-o")]
Clients = Annotated[int, _opt("Number of simulated IoT clients.")]
Partition = Annotated[str, _opt("iid | dirichlet:ALPHA | shared:FRACTION | host")]
Rounds = Annotated[int, _opt("Federated rounds.")]
Mode = Annotated[str, _opt("federated, centralized, local, a comma list, or all.")]
Strategy = Annotated[
    str, _opt("fedavgm (FedAvg + server momentum) | fedavg | fedprox | krum | fedmedian | fedtrimmedavg")
]
ServerMomentum = Annotated[float, _opt("FedAvgM: momentum of the server's step (0 = FedAvg).")]
ServerLr = Annotated[float, _opt("FedAvgM: server learning rate applied to the averaged update.")]
Fraction = Annotated[float, _opt("Fraction of clients sampled per round.")]
LocalEpochs = Annotated[int, _opt("Local epochs per round.")]
Lr = Annotated[float, _opt("Client learning rate (Adam).")]
BatchSize = Annotated[int, _opt("Client batch size (also the centralized and local baselines').")]
ProximalMu = Annotated[float, _opt("FedProx proximal term (with --strategy fedprox).")]
Hidden = Annotated[int, _opt("GRU hidden units.")]
Window = Annotated[int, _opt("Flows per window.")]
Split = Annotated[str, _opt("time | label-time (see `fedids train --help`).")]
TestFraction = Annotated[float, _opt("Share of flows held out by the server for testing.")]
Segment = Annotated[int, _opt("Consecutive flows of a host kept together when partitioning.")]
Seed = Annotated[int, _opt("Random seed (partitions, sampling, initialisation, training).")]
Privacy = Annotated[str, _opt("none, he, secagg, dp or a +-joined mix (he+dp, secagg+dp, he+secagg+dp).")]
Keys = Annotated[Path | None, _opt("HE key set from `fedids keys init` (default: created in OUT/keys).")]
TargetEpsilon = Annotated[float, _opt("dp: calibrate noise for this epsilon and stop before exceeding it.")]
NoiseMultiplier = Annotated[float, _opt("dp: noise std / clip norm; 0 = calibrate it from --target-epsilon.")]
ClipNorm = Annotated[float, _opt("dp: L2 bound of each client's update.")]
UpdateBound = Annotated[
    float,
    _opt("he/secagg: L2 bound of each client's update before sealing; sums out of its range are refused."),
]
DpsgdNoise = Annotated[float, _opt("> 0: clients train with DP-SGD at this noise multiplier.")]
DpsgdEpsilon = Annotated[
    float,
    _opt(
        "> 0: clients train with DP-SGD, each calibrating its noise so that all rounds spend at most "
        "this epsilon per flow window (sample-level DP; delta 1e-5)."
    ),
]
DpsgdBatchSize = Annotated[
    int,
    _opt(
        "DP-SGD expected batch size (larger: less noise per example); 0: the mode's measured default, "
        f"{DPSGD_BATCH_SIZE['local']} (a client's batch) or {DPSGD_BATCH_SIZE['distributed']} (the pooled "
        "batch of --dpsgd-distributed)."
    ),
]
DpsgdLr = Annotated[float, _opt("DP-SGD client learning rate (Adam).")]
DpsgdClip = Annotated[float, _opt("DP-SGD per-window gradient clip norm (the noise scales with it).")]
DpsgdLocalEpochs = Annotated[int, _opt("DP-SGD local epochs per round (the noise covers all of them).")]
DpsgdDistributed = Annotated[
    bool,
    _opt(
        "DP-SGD with the noise shared out over the SecAgg sum (needs --privacy secagg): each "
        "round is one step of centralized DP-SGD over all clients' rows, so it needs many rounds: "
        f"measured with --rounds {DISTRIBUTED_DPSGD_ROUNDS} (docs/privacy.md).",
        "--dpsgd-distributed/--dpsgd-local",
    ),
]
DpsgdDistributedLr = Annotated[
    float,
    _opt(
        "Distributed DP-SGD's learning rate on the pooled noised mean gradient (the step on the sum of "
        "the clients' updates, so it does not depend on the number of clients)."
    ),
]
Selection = Annotated[
    str,
    _opt(
        "random | energy: prefer clients with energy budget left on efficient hardware (plaintext only; "
        "see docs/evaluation.md)."
    ),
]
EnergyBudget = Annotated[
    float,
    _opt(
        "Joules each device may spend on the whole training; a client that cannot pay for a round is not "
        "selected. 0 = unlimited."
    ),
]
MaxLocalEpochs = Annotated[
    int,
    _opt(
        "> 0: adaptive local epochs, 1 up to this, fitted to each client's per-round share of --energy-budget."
    ),
]
Compression = Annotated[str, _opt("Client update compression: none | int8 | topk:FRACTION (plaintext only).")]
HeadAggregation = Annotated[
    str,
    _opt(
        "class: average each output row by the clients' examples of that class (keeps rare classes; every "
        "mode but dp) | examples: plain FedAvg."
    ),
]
Calibration = Annotated[
    str,
    _opt(
        "ccvr: after the last round, refit the classifier head on the clients' summed per-class feature "
        "statistics, then check it (every mode but dp) | none."
    ),
]
Prototypes = Annotated[
    str,
    _opt(
        "on (default): the final model adds the prototype head (each class's mean embedding, read from "
        "the calibration's summed moments; needs --calibration ccvr), which names attacks seen in a "
        "handful of flows; the alert score stays the linear head's. off: linear head only."
    ),
]
ClientWeighting = Annotated[
    str,
    _opt(
        "objective: weigh each client's update by its share of the class-weighted loss (every mode but dp) "
        "| examples: by its flows (FedAvg)."
    ),
]
TestData = Annotated[
    list[Path] | None,
    _opt(
        "Score every round and the final model on these CSV files instead of a held-out split of --data.",
        "--test-data",
    ),
]
Malicious = Annotated[
    float, _opt("Fraction of clients that poison the federation with --attack (drawn from --seed).")
]
AttackOption = Annotated[
    str,
    _opt(
        "none | label-flip | backdoor[:FAMILY] (trigger on FAMILY's flows, default ddos, labelled BENIGN) "
        "| scale:FACTOR (update multiplied) | noise (update replaced by noise of its norm) "
        "| absent (the devices answer nothing: the reference a defence that removes them can reach)."
    ),
]
Sites = Annotated[
    int,
    _opt(
        "K >= 2: three tiers, the clients (devices) grouped into K site aggregators (by gateway subnet "
        "with --partition host, contiguously otherwise); --privacy seals site -> central. 0 or 1: flat."
    ),
]
Robust = Annotated[
    str,
    _opt(
        "With --sites: robust aggregation at each site: none | normclip[:B] (bound each device's update "
        "to L2 norm B, default the median norm) | median | trimmed:F (each after norm bounding) | flame "
        "(FLAME's filter: devices outside the majority cluster of update directions left out, the rest "
        "norm-bounded and summed)."
    ),
]
Screening = Annotated[
    int,
    _opt(
        "With --robust: from this round on, before every round each site checks its devices' labels "
        "(against the global model's head by default; see --screening-check) and leaves the "
        "devices it disputes out of that round. 0: never (the default; docs/evaluation.md measures both)."
    ),
]
ScreeningCheck = Annotated[
    str,
    _opt(
        "How --screening reads a device's labels: head (the global model's head), peers (the class "
        "means of the other devices of its site) or benign (the distance of each class mean to its site's "
        "median benign mean); peers and benign need no trained head and can start at round 1."
    ),
]
SitePrivacy = Annotated[
    str,
    _opt(
        "With --sites, how devices send their vectors to their site: plain (the site sees each one, inside "
        "its trust domain; --robust needs it) | secagg (SecAgg among each site's devices, at least 3: the "
        "site learns only their sum; needs a sealed --privacy: he, secagg, he+secagg, and --fraction 1)."
    ),
]
Resume = Annotated[Path | None, _opt("Continue the run in this directory.", "--resume")]


@app.command("federate")
def federate(
    data: Data = None,
    out_dir: OutDir = None,
    clients: Clients = 10,
    partition: Partition = "dirichlet:0.5",
    rounds: Rounds = _D.rounds,
    mode: Mode = "federated",
    strategy: Strategy = _D.strategy,
    server_momentum: ServerMomentum = _D.server_momentum,
    server_lr: ServerLr = _D.server_lr,
    fraction: Fraction = _D.fraction_train,
    local_epochs: LocalEpochs = _D.local_epochs,
    lr: Lr = _D.lr,
    batch_size: BatchSize = _D.batch_size,
    proximal_mu: ProximalMu = _D.proximal_mu,
    hidden: Hidden = _D.hidden,
    window: Window = _D.window,
    split: Split = "time",
    test_fraction: TestFraction = 0.3,
    segment: Segment = 100,
    seed: Seed = _D.seed,
    privacy: Privacy = _D.privacy,
    keys: Keys = None,
    target_epsilon: TargetEpsilon = _D.target_epsilon,
    noise_multiplier: NoiseMultiplier = _D.noise_multiplier,
    clip_norm: ClipNorm = _D.clip_norm,
    update_bound: UpdateBound = _D.update_bound,
    dpsgd_noise: DpsgdNoise = _D.dpsgd_noise_multiplier,
    dpsgd_epsilon: DpsgdEpsilon = _D.dpsgd_target_epsilon,
    dpsgd_batch_size: DpsgdBatchSize = _D.dpsgd_batch_size,
    dpsgd_lr: DpsgdLr = _D.dpsgd_lr,
    dpsgd_clip: DpsgdClip = _D.dpsgd_clip_norm,
    dpsgd_local_epochs: DpsgdLocalEpochs = _D.dpsgd_local_epochs,
    dpsgd_distributed: DpsgdDistributed = _D.dpsgd_distributed,
    dpsgd_distributed_lr: DpsgdDistributedLr = _D.dpsgd_distributed_lr,
    selection: Selection = _D.selection,
    energy_budget: EnergyBudget = _D.energy_budget_j,
    max_local_epochs: MaxLocalEpochs = _D.max_local_epochs,
    compression: Compression = _D.compression,
    head_aggregation: HeadAggregation = _D.head_aggregation,
    calibration: Calibration = _D.calibration,
    prototypes: Prototypes = _D.prototypes,
    client_weighting: ClientWeighting = _D.client_weighting,
    test_data: TestData = None,
    malicious: Malicious = 0.0,
    attack: AttackOption = "none",
    sites: Sites = _D.sites,
    robust: Robust = _D.robust,
    screening: Screening = _D.screening,
    screening_check: ScreeningCheck = _D.screening_check,
    site_privacy: SitePrivacy = _D.site_privacy,
    resume: Resume = None,
) -> None:
    """Train the GRU detector with federated learning on simulated clients (Flower + Ray)."""
    if resume is not None:
        run_file = resume / RUN_FILE
        if not run_file.exists():
            raise InputError(f"{resume}: nothing to resume ({RUN_FILE} missing)")
        args = json.loads(run_file.read_text()) | {"out_dir": str(resume)}
        _run(args, resuming=True)
        return
    if out_dir is None:
        raise InputError("federate: --out DIR is required (or --resume DIR)")
    # run.json: every option by name (what --resume reads back), paths as strings.
    args = {k: v for k, v in locals().items() if k != "resume"}
    args |= {
        "data": [str(p) for p in data] if data else None,
        "out_dir": str(out_dir),
        "keys": str(keys) if keys else None,
        "test_data": [str(p) for p in test_data] if test_data else None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RUN_FILE, args)
    _run(args, resuming=False)


def _parse_modes(text: str) -> tuple[str, ...]:
    modes = list(MODES) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InputError(f"--mode {text!r}: use all or a comma-separated subset of {', '.join(MODES)}")
    return tuple(modes)


def federation_config(args: dict[str, Any]) -> FederationConfig:
    """The FederationConfig of the options in ``args`` (as written to ``run.json``); options left out take
    FederationConfig's defaults. Raises ValueError on a bad setting."""
    fields = {OPTION_FIELDS.get(name, name): value for name, value in args.items() if name not in CLI_ONLY}
    out_dir = Path(args["out_dir"])
    keys_dir = Path(args["keys"]) if args.get("keys") else out_dir / "keys"
    privacy = fields.get("privacy", _D.privacy)
    return FederationConfig(**fields, min_clients=1, he_public_context=he_public_context(privacy, keys_dir))


def _request(args: dict[str, Any]) -> FederateRequest:
    """The run ``args`` describe (``run.json``'s keys: the option names)."""
    defaults: dict[str, Any] = {"clients": 10, "partition": "dirichlet:0.5", "split": "time"}
    a = defaults | {"test_fraction": 0.3, "segment": 100, "malicious": 0.0, "attack": "none"} | args
    modes = _parse_modes(a.get("mode", "federated"))
    return FederateRequest(
        config=federation_config(args),
        out_dir=Path(a["out_dir"]),
        data=tuple(Path(p) for p in a.get("data") or ()),
        test_data=tuple(Path(p) for p in a.get("test_data") or ()),
        clients=a["clients"],
        partition=a["partition"],
        modes=modes,
        split=a["split"],
        test_fraction=a["test_fraction"],
        segment=a["segment"],
        malicious=a["malicious"],
        attack=a["attack"],
    )


def _run(args: dict[str, Any], *, resuming: bool) -> None:
    from fedids.pipelines.federate import prepare_federate, run_federate

    try:
        request = _request(args)
        data = prepare_federate(request)
    except ValueError as exc:
        raise InputError(f"federate: {exc}") from None
    if data.untrained:
        untrained = data.untrained
        err.print(
            f"[yellow]warning:[/yellow] no training flows of {', '.join(untrained)}: the model cannot learn "
            f"{'this class' if len(untrained) == 1 else 'these classes'} (try --split label-time or --test-data)"
        )
    _print_partitions(data.partition_summary, request.out_dir / "partitions.csv")
    empty = sum(1 for p in data.parts if not len(p))
    if len(data.parts) - empty < request.clients:
        err.print(f"[yellow]warning:[/yellow] {empty} client(s) got no data and are left out")
    config = request.config
    if config.robust != "none" and config.sites > 1 and request.clients // config.sites < 3:
        err.print(
            f"[yellow]warning:[/yellow] --robust {config.robust} with fewer than 3 devices in a site: "
            "a site's median cannot outvote one attacker there (docs/evaluation.md, five sites)"
        )
    if config.dpsgd_distributed and config.rounds < DISTRIBUTED_DPSGD_ROUNDS:
        err.print(
            f"[yellow]warning:[/yellow] --dpsgd-distributed takes one DP-SGD step a round: {config.rounds} "
            f"rounds may leave rare classes untrained (measured with --rounds {DISTRIBUTED_DPSGD_ROUNDS}, "
            "docs/privacy.md)"
        )
    result = run_federate(request, data, resume=resuming, on_round=_print_round)
    if result.federated is not None:
        _print_federated_end(result.federated.state)
    _print_comparison(result.results)
    _print_sites(result.results.get("federated") or {})
    err.print(
        f"results in {result.results_path}"
        + (f", global model in {request.out_dir / 'global'}" if "federated" in request.modes else "")
    )


def _print_round(rec: Any) -> None:
    eps = f", epsilon {rec.epsilon:.3f}" if rec.epsilon is not None else ""
    if rec.energy_j is not None:
        eps += f", {rec.energy_j:.2f} J (modelled)"
    if rec.dpsgd_epsilon is not None:
        eps += f", DP-SGD epsilon so far {rec.dpsgd_epsilon:.2f} (per flow window)"
    # DP runs send no loss or local F1 (DP does not cover them): NaN, not printed
    local = "".join(
        f"{name} {value:.4f}, "
        for name, value in (("train loss", rec.train_loss), ("local benign val F1", rec.local_val_macro_f1))
        if value == value
    )
    if rec.tiers:
        lan, wan = rec.tiers["lan"], rec.tiers["wan"]
        eps += (
            f", LAN up {lan['bytes_up'] / 1e6:.2f} MB ({lan['seconds']:.1f} s), "
            f"WAN up {wan['bytes_up'] / 1e6:.3f} MB ({wan['seconds']:.2f} s)"
        )
    err.print(
        f"round {rec.round:>3}: clients {rec.clients} (rejected {rec.rejected}){eps}, {local}"
        f"test macro-F1 {rec.test['macro_f1']:.4f}, MCC {rec.test['mcc']:.4f}, {rec.seconds:.1f} s"
    )


def _print_federated_end(state: Any) -> None:
    """Why training stopped early (if it did) and the head calibration's verdict."""
    if state.stopped:
        err.print(f"[yellow]{state.stopped}[/yellow]")
    if state.calibration.get("before"):
        before, after = state.calibration["before"]["macro_f1"], state.calibration["test"]["macro_f1"]
        check = state.calibration.get("validation") or {}
        verdict = ("kept" if state.calibration.get("kept") else "discarded") if check else "unchecked"
        err.print(
            f"head calibration (CCVR, {state.calibration['clients']} clients): {verdict} "
            f"({check.get('reason', 'no check')}); server test macro-F1 {before:.4f} -> {after:.4f}"
        )
    linear = state.calibration.get("test_linear_head")
    if linear:
        err.print(
            f"prototype head (discriminant of the summed moments): macro-F1 {linear['macro_f1']:.4f} with the "
            f"linear head alone, {state.calibration['test']['macro_f1']:.4f} with it (--prototypes off: linear)"
        )


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


def _print_sites(federated: dict) -> None:
    """A three-tier run's traffic per tier, mean per training round."""
    sites = federated.get("sites")
    if not sites:
        return
    per_round = sites["per_round"]
    lan, wan = per_round["lan"], per_round["wan"]
    err.print(
        f"sites: {sites['k']} (robust {sites['robust']}); per round, LAN (device <-> site): "
        f"{lan['bytes_down'] / 1e6:.2f} MB down, {lan['bytes_up'] / 1e6:.2f} MB up, {lan['seconds']:.1f} s; "
        f"WAN (site <-> central): {wan['bytes_down'] / 1e6:.3f} MB down, {wan['bytes_up'] / 1e6:.3f} MB up, "
        f"{wan['seconds']:.2f} s; sites' own work {per_round['site_seconds']:.3f} s"
    )
    screening = sites.get("screening") or {}
    if screening.get("rounds"):
        left_out = ", ".join(f"{key} ({n})" for key, n in screening["left_out"].items()) or "none"
        err.print(
            f"screening: the sites checked their devices' labels in {screening['rounds']} training round(s); "
            f"devices left out (rounds): {left_out}"
        )


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
    federated = results.get("federated") or {}
    poisoning = federated.get("poisoning") or {}
    if poisoning.get("attack", "none") != "none":
        rate, base = poisoning["backdoor_success"], poisoning.get("untriggered_benign")
        err.print(
            f"poisoning: {poisoning['attack']} by clients {poisoning['malicious_clients']}: clean macro-F1 "
            f"{federated['macro_f1']:.4f}, MCC {federated['mcc']:.4f}, backdoor success "
            f"{'n/a' if rate is None else f'{rate:.4f}'} ({poisoning['backdoor_flows']} triggered "
            f"{poisoning['backdoor_family']} test flows; "
            f"{'n/a' if base is None else f'{base:.4f}'} scored BENIGN without the trigger)"
        )
