"""Settings of ``fedids experiment paper`` and the privacy modes it compares."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedids.federation.config import (
    DISTRIBUTED_DPSGD_NEEDS,
    DISTRIBUTED_DPSGD_ROUNDS,
    DPSGD_BATCH_SIZE,
    FederationConfig,
    distributed_dpsgd_runs,
)

_FEDERATION = FederationConfig()  # the experiment's training settings default to the federation's

DISTRIBUTED = "dpsgd-distributed"
DEFAULT_MODES: tuple[str, ...] = ("none", "he", "he+dp", "he+dpsgd", "he+secagg+dp", f"secagg+{DISTRIBUTED}")
DP_PARTS = {"dp": "client", "dpsgd": "flow window", DISTRIBUTED: "flow window"}
"""The DP components of a mode and what their epsilon protects: ``dp`` is client-level DP on the
aggregate (:mod:`fedids.privacy.dp`), ``dpsgd`` sample-level DP-SGD on every client
(:mod:`fedids.privacy.dpsgd`), ``dpsgd-distributed`` one DP-SGD step per round whose noise is shared out
over the SecAgg sum (``docs/privacy.md``); all are calibrated to ``target_epsilon``."""

SUMMARY_KEYS = ("accuracy", "macro_f1", "weighted_f1", "mcc")
RESULTS_FILE, REPORT_FILE = "results.json", "report.html"
DEFAULT_SCALABILITY = Path("benchmarks") / "results" / "scalability.json"
"""The scalability benchmark's output, relative to the working directory (a checkout of the repository:
``python benchmarks/bench_scalability.py`` writes it); the installed package ships no copy."""
TARGET_FRACTION = 0.9
"""Energy/communication target: this fraction of the final macro-F1 of plaintext federated training
(mode ``none``; the best mode when ``none`` did not run). A mode that never reaches it reports n/a:
the privacy modes' accuracy cost shows up as never reaching the quality plaintext FedAvg reaches."""


def split_mode(mode: str) -> tuple[str, bool]:
    """``"he+dpsgd"`` -> (``"he"``, True): the FederationConfig privacy mode and whether clients run DP-SGD
    (``"secagg+dpsgd-distributed"`` -> (``"secagg"``, True); :func:`is_distributed` tells the two apart)."""
    parts = [p for p in mode.split("+") if p not in ("dpsgd", DISTRIBUTED)]
    return "+".join(parts) or "none", len(parts) != len(mode.split("+"))


def is_distributed(mode: str) -> bool:
    """Whether ``mode`` runs distributed DP-SGD (one step a round, noise shared out over SecAgg)."""
    return DISTRIBUTED in mode.split("+")


def dp_unit(mode: str) -> str | None:
    """What the epsilon of ``mode`` protects (None: no DP)."""
    units = [DP_PARTS[p] for p in mode.split("+") if p in DP_PARTS]
    return " and ".join(units) or None


def dp_against(mode: str) -> str | None:
    """Against whom the epsilon of ``mode`` holds (docs/privacy.md; None: no DP). Every DP mode's noise is
    local or sized for the SecAgg threshold, so it holds against the server too."""
    if dp_unit(mode) is None:
        return None
    parts = mode.split("+")
    if DISTRIBUTED in parts:
        return "the server (c clients colluding with it leave sigma sqrt((t - c) / t)), other clients, model users"
    if "secagg" in parts and "dp" in parts and "he" not in parts:
        return "the server (unless it colludes with n - t + 1 clients), other clients, model users"
    return "the server, other clients, model users"


@dataclass(frozen=True)
class ExperimentConfig:
    """Settings of one ``fedids experiment paper`` run (see the CLI for their meaning)."""

    out_dir: Path
    data: tuple[str, ...] = ()
    rounds: int = _FEDERATION.rounds
    clients: int = 10
    partition: str = "dirichlet:0.5"
    local_epochs: int = _FEDERATION.local_epochs
    batch_size: int = _FEDERATION.batch_size
    lr: float = _FEDERATION.lr
    hidden: int = _FEDERATION.hidden
    window: int = _FEDERATION.window
    split: str = "time"
    test_fraction: float = 0.3
    seed: int = 0
    quick: bool = False
    modes: tuple[str, ...] = DEFAULT_MODES
    # distributed DP-SGD trains one step a round: its own rounds and expected batch (FederationConfig's)
    distributed_rounds: int = DISTRIBUTED_DPSGD_ROUNDS
    distributed_batch_size: int = DPSGD_BATCH_SIZE["distributed"]
    audits: tuple[str, ...] = ()  # `fedids audit --out` JSON files whose lower bounds the privacy table shows
    target_epsilon: float = 8.0
    shadows: int = 4
    mia_max_per_class: int = 5000
    latency_calls: int = 1000
    prune_amount: float = 0.5
    scalability_path: Path | None = DEFAULT_SCALABILITY
    command: str = ""
    synth: dict = field(default_factory=dict)
    adaptive: bool = True

    def __post_init__(self) -> None:
        if min(self.rounds, self.clients, self.local_epochs, self.distributed_rounds) < 1:
            raise ValueError("rounds, clients, local epochs and distributed rounds must be >= 1")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not self.target_epsilon > 0:
            raise ValueError("target epsilon must be > 0")


def quick_synth(seed: int) -> dict:
    """The small synthetic capture of ``--quick`` (about three thousand flows)."""
    return {"devices": 12, "hours": 0.5, "gateways": 2, "seed": seed}


def privacy_unsupported_reason(mode: str) -> str | None:
    """None when federated training can run privacy ``mode`` (``he+dpsgd``: a FederationConfig privacy
    mode, optionally with ``+dpsgd``), else why not."""
    if mode == "none":
        return None
    privacy, _ = split_mode(mode)
    try:
        from fedids.federation.private import PrivacyMode

        PrivacyMode.parse(privacy)
        if is_distributed(mode) and not distributed_dpsgd_runs(privacy):
            raise ValueError(DISTRIBUTED_DPSGD_NEEDS)
    except Exception as exc:  # noqa: BLE001 - any failure to parse means the mode is not available
        return f"privacy mode {mode} is not supported ({str(exc).splitlines()[0][:160]})"
    return None


def federation_config(cfg: ExperimentConfig, mode: str, keys_dir: Path) -> FederationConfig:
    """The FederationConfig of privacy ``mode`` in this experiment: every client each round, the
    experiment's training settings, DP modes (``dp`` and ``dpsgd``) calibrated to ``cfg.target_epsilon``
    over ``cfg.rounds`` (distributed DP-SGD: ``cfg.distributed_rounds`` steps); HE modes read the key set
    in ``keys_dir`` (created fresh by the run,
    :func:`fedids.pipelines.federate.run_federation`)."""
    from fedids.pipelines.federate import he_public_context

    kwargs: dict[str, Any] = dict(
        rounds=cfg.rounds,
        fraction_train=1.0,
        min_clients=1,
        local_epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        hidden=cfg.hidden,
        window=cfg.window,
        seed=cfg.seed,
    )
    privacy, dpsgd = split_mode(mode)
    if dpsgd:
        kwargs["dpsgd_target_epsilon"] = cfg.target_epsilon
    if is_distributed(mode):
        kwargs |= dict(
            rounds=cfg.distributed_rounds, dpsgd_distributed=True, dpsgd_batch_size=cfg.distributed_batch_size
        )
    if privacy != "none":
        kwargs["privacy"] = privacy
        if "dp" in privacy.split("+"):
            kwargs["target_epsilon"] = cfg.target_epsilon
        kwargs["he_public_context"] = he_public_context(privacy, keys_dir)
    return FederationConfig(**kwargs)


def make_command(cfg_args: dict[str, Any]) -> str:
    """The ``fedids experiment paper`` command line that reproduces a run (options in a fixed order)."""
    words = ["fedids", "experiment", "paper"]
    for p in cfg_args.get("data") or []:
        words += ["--data", str(p)]
    for key in (
        "out",
        "rounds",
        "clients",
        "partition",
        "local_epochs",
        "split",
        "seed",
        "target_epsilon",
        "distributed_rounds",
    ):
        if cfg_args.get(key) is not None:
            words += [f"--{key.replace('_', '-')}", str(cfg_args[key])]
    if cfg_args.get("modes") and cfg_args["modes"] != ",".join(DEFAULT_MODES):
        words += ["--modes", str(cfg_args["modes"])]
    for path in cfg_args.get("audit") or []:
        words += ["--audit", str(path)]
    if cfg_args.get("quick"):
        words.append("--quick")
    if cfg_args.get("adaptive") is False:
        words.append("--no-adaptive")
    return " ".join(shlex.quote(w) for w in words)
