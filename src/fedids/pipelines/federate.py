"""Baselines plus a federated run: the one implementation behind ``fedids federate``, every federated run of
``fedids experiment paper`` (:mod:`fedids.pipelines.experiment`) and so ``fedids demo``.

* :func:`run_federation`: one federation in Flower's simulation engine over prepared data and client
  partitions, with the HE key set the mode needs; returns a :class:`FederatedRun` (history, final test
  metrics after head calibration, the global model's directory).
* :func:`train_centralized_baseline` and :func:`run_local_baseline`: the paper's baselines, trained for
  the same ``rounds x local_epochs`` passes as the federation (:func:`baseline_train_config`).
* :class:`FederateRequest`, :func:`prepare_federate` and :func:`run_federate`: what ``fedids federate``
  does: load and partition the data, run the chosen modes, keep ``results.json`` up to date.

Every training setting comes from one :class:`~fedids.federation.config.FederationConfig`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedids.console import err, progress_bar
from fedids.errors import InputError
from fedids.federation.config import FederationConfig
from fedids.pipelines.data import load_data, load_frame
from fedids.pipelines.files import write_json

if TYPE_CHECKING:
    import pandas as pd

    from fedids.federation.attacks import Attack
    from fedids.federation.baselines import LocalResult
    from fedids.federation.server_app import RoundRecord
    from fedids.federation.state import FederationState
    from fedids.model.artifacts import Detector
    from fedids.model.train import TrainConfig
    from fedids.task import PreparedData

MODES = ("federated", "centralized", "local")
RUN_FILE, RESULTS_FILE = "run.json", "results.json"
SUMMARY_KEYS = ("accuracy", "macro_f1", "weighted_f1", "mcc")
OnRound = Callable[["RoundRecord"], None]


# --------------------------------------------------------------------------------------------------
# HE keys


def he_public_context(privacy: str, keys_dir: Path) -> str:
    """``FederationConfig.he_public_context`` for ``privacy`` with the key set in ``keys_dir`` ("" when the
    mode has no HE). The keys themselves are created by :func:`run_federation` when missing."""
    if "he" not in privacy.split("+"):
        return ""
    from fedids.privacy.keys import PUBLIC_CONTEXT_FILE

    return str(keys_dir / PUBLIC_CONTEXT_FILE)


def he_keys_dir(config: FederationConfig) -> Path | None:
    """The key set directory ``config.he_public_context`` lies in (None when the mode has no HE)."""
    if "he" not in config.privacy.split("+"):
        return None
    from fedids.privacy.keys import PUBLIC_CONTEXT_FILE

    public, layout = Path(config.he_public_context), Path(PUBLIC_CONTEXT_FILE).parts
    if public.parts[-len(layout) :] != layout:
        raise ValueError(f"he-public-context {public}: not the {PUBLIC_CONTEXT_FILE} of a key set")
    return public.parents[len(layout) - 1]


def ensure_he_keys(config: FederationConfig, *, fresh: bool = False) -> str | None:
    """The clients' secret key file for an HE ``config`` (None without HE): the key set that holds
    ``config.he_public_context``, created when missing (``fresh``: always, replacing any)."""
    directory = he_keys_dir(config)
    if directory is None:
        return None
    from fedids.privacy.keys import PUBLIC_CONTEXT_FILE, SECRET_CONTEXT_FILE, init_keys

    if fresh:
        init_keys(directory, config.privacy, force=True)
    elif not (directory / PUBLIC_CONTEXT_FILE).exists():
        init_keys(directory, config.privacy)
        err.print(f"[dim]created the HE key set in {directory}[/dim]")
    return str(directory / SECRET_CONTEXT_FILE)


# --------------------------------------------------------------------------------------------------
# One federation and the baselines


@dataclass
class FederatedRun:
    """A finished (or stopped) federation: the server's state, wall time, and where it wrote its files."""

    state: FederationState
    run_dir: Path
    seconds: float

    @property
    def final(self) -> dict:
        """Test metrics of the final global model: after head calibration when it ran, else the last
        round's (empty when no round completed)."""
        history = self.state.history
        return self.state.calibration.get("test") or (history[-1]["test"] if history else {})

    def load_detector(self) -> Detector | None:
        """The final global model (None when none was saved)."""
        from fedids.model.artifacts import load_detector

        path = self.run_dir / "global"
        return load_detector(path) if path.is_dir() else None


def run_federation(
    prepared: PreparedData,
    parts: list[np.ndarray],
    config: FederationConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    on_round: OnRound | None = None,
    fresh_keys: bool = False,
    attacks: dict[int, Attack] | None = None,
    sites: list[int] | None = None,
) -> FederatedRun:
    """Federated training over ``parts`` (row sets of ``prepared``) in Flower's simulation engine, writing
    checkpoints, the state and the global model under ``run_dir``. HE modes use (or create, see
    :func:`ensure_he_keys`) the key set of ``config.he_public_context``. ``attacks``: the malicious
    clients' poisoning, by index into the non-empty ``parts`` (:mod:`fedids.federation.attacks`);
    ``sites``: the site of each of ``parts`` in a three-tier run (:mod:`fedids.federation.sites`)."""
    from fedids.federation.simulation import run_simulated

    secret = ensure_he_keys(config, fresh=fresh_keys)
    start = time.perf_counter()
    state = run_simulated(
        prepared,
        parts,
        config,
        run_dir,
        resume=resume,
        on_round=on_round,
        he_secret_context=secret,
        attacks=attacks,
        sites=sites,
    )
    return FederatedRun(state=state, run_dir=Path(run_dir), seconds=time.perf_counter() - start)


def baseline_train_config(config: FederationConfig) -> TrainConfig:
    """The baselines' training: as many passes over each example as the federation (rounds x local
    epochs), with its batch size, learning rate and seed."""
    from fedids.model.train import TrainConfig

    return TrainConfig(
        epochs=config.rounds * config.local_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
    )


def train_centralized_baseline(
    prepared: PreparedData, config: FederationConfig, rows: np.ndarray | None = None
) -> tuple[Detector, dict]:
    """One model on the pooled training rows (``rows``: only these, e.g. the participating clients'),
    evaluated on the test rows; returns the detector and its metrics."""
    from fedids.task import PreparedData, evaluate_rows, train_centralized

    pooled = prepared
    if rows is not None:
        mask = np.ones(len(prepared.labels), dtype=bool)
        mask[rows] = False
        pooled = PreparedData(prepared.frame, prepared.features, prepared.windows, mask, prepared.labels)
    detector, _ = train_centralized(
        pooled, baseline_train_config(config), hidden=config.hidden, window=config.window
    )
    return detector, evaluate_rows(detector, prepared, prepared.test_rows)


def run_local_baseline(
    prepared: PreparedData,
    parts: list[np.ndarray],
    config: FederationConfig,
    progress: Callable[[float], None] | None = None,
) -> LocalResult:
    """Every client trains alone on its own rows (:func:`fedids.federation.baselines.run_local`)."""
    from fedids.federation.baselines import run_local

    return run_local(
        prepared,
        parts,
        baseline_train_config(config),
        hidden=config.hidden,
        window=config.window,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------------
# `fedids federate`


@dataclass(frozen=True)
class FederateRequest:
    """A ``fedids federate`` run: the federation's settings plus what only this command decides.

    ``data``: CSV files (none: the synthetic IoT default); ``test_data``: score on these files instead of
    a held-out ``test_fraction`` of ``data`` (``split``: ``time`` or ``label-time``); ``segment``:
    consecutive flows of a host kept together when partitioning; ``modes``: a subset of :data:`MODES`;
    ``malicious``: the fraction of clients that poison the federation with ``attack``
    (:meth:`fedids.federation.attacks.Attack.parse`), drawn from the seed.
    """

    config: FederationConfig
    out_dir: Path
    data: tuple[Path, ...] = ()
    test_data: tuple[Path, ...] = ()
    clients: int = 10
    partition: str = "dirichlet:0.5"
    modes: tuple[str, ...] = ("federated",)
    split: str = "time"
    test_fraction: float = 0.3
    segment: int = 100
    malicious: float = 0.0
    attack: str = "none"

    def __post_init__(self) -> None:
        from fedids.federation.attacks import Attack
        from fedids.federation.partition import PartitionSpec

        if self.clients < 1:
            raise ValueError("--clients must be >= 1")
        if self.segment < 1:
            raise ValueError("--segment must be >= 1")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise ValueError(f"modes {self.modes}: use a subset of {', '.join(MODES)}")
        PartitionSpec.parse(self.partition)  # a typo fails here, before data is loaded
        if not 0.0 <= self.malicious <= 1.0:
            raise ValueError(f"--malicious {self.malicious}: a fraction in [0, 1]")
        if self.config.sites > self.clients:
            raise ValueError(f"--sites {self.config.sites}: at most the {self.clients} clients")
        from fedids.federation.policy import MIN_SITE_SECAGG  # here: the CLI starts without Flower

        if self.config.site_secagg and self.clients // self.config.sites < MIN_SITE_SECAGG:
            raise ValueError(
                f"--site-privacy secagg: at least {MIN_SITE_SECAGG} devices per site for SecAgg, "
                f"{self.clients} clients in {self.config.sites} sites leave fewer"
            )
        if (self.malicious > 0) != Attack.parse(self.attack).active:
            raise ValueError("--malicious FRACTION > 0 and --attack go together (one without the other)")


@dataclass
class FederateData:
    """The prepared flows and the clients' row sets of a request; ``untrained``: classes with no training
    rows; ``partition_summary``: rows per label and client (and its site); ``sites``: each client's site
    in a three-tier run (None: flat)."""

    prepared: PreparedData
    parts: list[np.ndarray]
    untrained: list[str]
    partition_summary: pd.DataFrame
    sites: list[int] | None = None


def prepare_federate(request: FederateRequest) -> FederateData:
    """Load (or synthesise) the flows, split them and partition the training rows among the clients."""
    from fedids.federation.simulation import make_partitions, summarise_partitions
    from fedids.task import classes_without_training_rows, prepare, prepare_with_test

    config = request.config
    frame = load_frame(request.data, config.seed)
    if request.test_data:
        prepared = prepare_with_test(frame, load_data(request.test_data).frame, window=config.window)
    else:
        prepared = prepare(
            frame, window=config.window, test_fraction=request.test_fraction, split=request.split
        )
    parts = make_partitions(prepared, request.clients, request.partition, config.seed, request.segment)
    summary, sites = summarise_partitions(prepared.labels, parts), None
    if config.tiered:
        sites = client_sites(request, prepared, parts)
        summary.insert(1, "site", sites)
    return FederateData(
        prepared=prepared,
        parts=parts,
        untrained=classes_without_training_rows(prepared),
        partition_summary=summary,
        sites=sites,
    )


def client_sites(request: FederateRequest, prepared: PreparedData, parts: list[np.ndarray]) -> list[int]:
    """Each client's site: by gateway subnet with ``--partition host`` (clients of neighbouring subnets
    together), contiguously by client number otherwise (:func:`fedids.federation.sites.assign_sites`)."""
    from fedids.data.windows import host_keys
    from fedids.federation.sites import assign_sites, main_gateways

    gateways = None
    if request.partition.strip() == "host":
        gateways = main_gateways(host_keys(prepared.frame.iloc[rows]) for rows in parts)
    return assign_sites(len(parts), request.config.sites, gateways)


@dataclass
class FederateResult:
    """What :func:`run_federate` wrote to ``results.json`` and the federation it ran (None if not asked)."""

    results: dict[str, Any]
    results_path: Path
    federated: FederatedRun | None


def run_federate(
    request: FederateRequest, data: FederateData, *, resume: bool = False, on_round: OnRound | None = None
) -> FederateResult:
    """Run the request's modes over ``data``; ``results.json`` in ``out_dir`` is updated after each one
    (kept from an earlier run when resuming)."""
    config, prepared, parts = request.config, data.prepared, data.parts
    results_path = request.out_dir / RESULTS_FILE
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["test_rows"] = int(len(prepared.test_rows))
    if "centralized" in request.modes:
        with progress_bar("centralized baseline", None):
            _, metrics = train_centralized_baseline(prepared, config)
        results["centralized"] = {k: metrics[k] for k in SUMMARY_KEYS}
        write_json(results_path, results)
    if "local" in request.modes:
        with progress_bar("local-only baselines", sum(1 for p in parts if len(p))) as advance:
            local = run_local_baseline(prepared, parts, config, progress=advance)
        results["local"] = local.aggregate() | {"per_client": local.per_client}
        write_json(results_path, results)
    run = None
    if "federated" in request.modes:
        run = _federate(request, data, resume, on_round)
        results["federated"] = _federated_entry(request, run, data)
        results["federated_history"] = run.state.history
        write_json(results_path, results)
    return FederateResult(results=results, results_path=results_path, federated=run)


def _federate(
    request: FederateRequest, data: FederateData, resume: bool, on_round: OnRound | None
) -> FederatedRun:
    with progress_bar("federated rounds", request.config.rounds) as advance:

        def each_round(rec: RoundRecord) -> None:
            if on_round is not None:
                on_round(rec)
            advance(1)

        run = run_federation(
            data.prepared,
            data.parts,
            request.config,
            request.out_dir,
            resume=resume,
            on_round=each_round,
            attacks=malicious_attacks(request, data.parts),
            sites=data.sites,
        )
    if not run.state.history:
        raise InputError(f"federate: no round completed ({run.state.stopped or 'see the log'})")
    return run


def _federated_entry(request: FederateRequest, run: FederatedRun, data: FederateData) -> dict:
    config, state = request.config, run.state
    return (
        run.final
        | {
            "rounds": state.completed_round,
            "strategy": config.strategy,
            "partition": request.partition,
            "privacy": config.privacy,
            "epsilon": state.history[-1].get("epsilon"),
            "dpsgd_epsilon": state.history[-1].get("dpsgd_epsilon"),
            "selection": config.selection,
            "compression": config.compression,
            "energy_budget_j": config.energy_budget_j,
            "stopped": state.stopped,
            "calibration": state.calibration or None,
            "poisoning": poisoning_entry(request, run, data),
        }
        | ({"sites": sites_entry(request, run, data)} if data.sites is not None else {})
    )


def sites_entry(request: FederateRequest, run: FederatedRun, data: FederateData) -> dict:
    """The site tier of a three-tier run: K, the defence, each client's site, and the mean bytes and
    seconds per training round of each tier (LAN: device <-> site, WAN: site <-> central)."""
    records = [h["tiers"] for h in run.state.history if h.get("tiers")]
    screened = [r["screening"] for r in records if r.get("screening")]
    # client key -> training rounds its site left it out of
    left_out = Counter(key for s in screened for site in s["sites"] for key in site["left_out"])

    def mean(tier: str, key: str) -> float:
        return float(np.mean([r[tier][key] for r in records])) if records else float("nan")

    return {
        "k": request.config.sites,
        "robust": request.config.robust,
        "screening": {
            "rounds": len(screened),
            "left_out": dict(sorted(left_out.items())),
        },
        "site_of_client": list(data.sites or []),
        "per_round": {
            tier: {key: mean(tier, key) for key in ("bytes_down", "bytes_up", "seconds")}
            for tier in ("lan", "wan")
        }
        | {"site_seconds": float(np.mean([r["site_seconds"] for r in records])) if records else float("nan")},
    }


def malicious_attacks(request: FederateRequest, parts: list[np.ndarray]) -> dict[int, Attack]:
    """The malicious clients of ``request`` and their attack, by index into the non-empty ``parts`` (the
    simulation's ``partition-id``), drawn from the seed."""
    from fedids.federation.attacks import Attack, draw_malicious

    attack = Attack.parse(request.attack)
    if not attack.active:
        return {}
    n_clients = sum(1 for p in parts if len(p))
    return {i: attack for i in draw_malicious(n_clients, request.malicious, request.config.seed)}


def poisoning_entry(request: FederateRequest, run: FederatedRun, data: FederateData) -> dict:
    """The poisoning setting and its effect: malicious clients, and the backdoor success rate of the
    final global model (share of triggered test flows of the backdoor family scored BENIGN; also measured
    without a backdoor attack, as the trigger's base rate) beside the share of the same flows scored
    BENIGN without the trigger (``untriggered_benign``): what the model misses of the family anyway, so
    that the trigger's own effect is the difference."""
    from fedids.evaluation.backdoor import backdoor_success_rate
    from fedids.federation.attacks import TRIGGER, Attack

    attack = Attack.parse(request.attack)
    entry: dict[str, Any] = {
        "attack": str(attack),
        "malicious_fraction": request.malicious,
        "malicious_clients": sorted(malicious_attacks(request, data.parts)),
        "backdoor_family": attack.family,
        "backdoor_success": None,
        "backdoor_flows": 0,
        "untriggered_benign": None,
    }
    detector, prepared = run.load_detector(), data.prepared
    if detector is not None:
        rows = prepared.test_rows
        rate, flows = backdoor_success_rate(detector, prepared, rows, TRIGGER, attack.family)
        untriggered, _ = backdoor_success_rate(detector, prepared, rows, {}, attack.family)
        entry |= {"backdoor_success": rate if flows else None, "backdoor_flows": flows}
        entry["untriggered_benign"] = untriggered if flows else None
    return entry
