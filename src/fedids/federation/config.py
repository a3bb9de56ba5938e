"""Settings of a federated run: the one place where every option and its default lives (no Flower import,
so the command line can read the defaults without loading the federation stack).

The CLI (``fedids federate``), the experiment's modes and the deployment run config
(``deploy/flower-app/pyproject.toml``'s ``[tool.flwr.app.config]``) are derived from :class:`FederationConfig`; a
test fails when one of them drifts from it.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("fedavg", "fedavgm", "fedprox", "krum", "fedmedian", "fedtrimmedavg")
# Under --privacy the server only ever sees a sum: the averaging strategies, whose server step (momentum
# included) clients apply before their vectors are summed (fedids.federation.aggregation). The robust
# strategies need each update in plaintext.
PRIVATE_STRATEGIES = ("fedavg", "fedavgm", "fedprox")
# Strategies that take an example-weighted mean of the updates: class-aware head rows apply to them.
AVERAGING_STRATEGIES = ("fedavg", "fedavgm", "fedprox")
HEAD_AGGREGATIONS = ("class", "examples")
"""How the classifier head's rows are averaged under an averaging strategy: ``class`` (each class's row by
that class's examples, see :mod:`fedids.federation.aggregation`) or ``examples`` (plain FedAvg weighting)."""
CLIENT_WEIGHTINGS = ("examples", "objective")
"""What an averaging strategy weighs client updates by: ``examples`` (FedAvg's ``num-examples``) or
``objective`` (each client's share of the class-weighted training loss,
:func:`fedids.federation.aggregation.client_shares`)."""

RUN_ONLY_KEYS = ("test-data", "out-dir", "split")
"""Deployment run-config keys that are not federation settings (the server's data and output)."""

# DP-SGD's expected batch where dpsgd_batch_size is 0 (the default), by where its noise is added: local
# (each client's own batch, all of the noise; synthetic default: see dpsgd_lr's note) or distributed (the
# federation's pooled Poisson batch of one step a round). Distributed DP-SGD was measured at 176 steps of
# 1,024 on the real samples (docs/privacy.md, "176 steps of 1,024"): 88 steps of 2,048, the same 20
# passes over the data, left the rarest class undertrained.
DPSGD_BATCH_SIZE = {"local": 256, "distributed": 1024}
DISTRIBUTED_DPSGD_ROUNDS = 176

DISTRIBUTED_DPSGD_NEEDS = (
    "dpsgd-distributed needs DP-SGD (--dpsgd-epsilon or --dpsgd-noise) under --privacy secagg, without "
    "sites: only a SecAgg sum carries every client's share of the noise"
)


def distributed_dpsgd_runs(privacy: str, dpsgd: bool = True, sites: int = 0) -> bool:
    """Whether distributed DP-SGD can run under privacy mode ``privacy`` (the one rule, read by the
    config's validation, the experiment and the audit): DP-SGD under plain ``secagg``, flat. Only a SecAgg
    sum over every client carries every client's share of the noise; not with ``he`` (``he+secagg``'s
    clients' check of the sums they open does not know its equal-weight steps yet) nor with client-level
    ``dp`` (two DP mechanisms). Raises on an unknown mode."""
    from fedids.federation.private import PrivacyMode

    mode = PrivacyMode.parse(privacy)
    return dpsgd and mode.secagg and not (mode.he or mode.dp) and sites < 2


SITE_PRIVACY = ("plain", "secagg")
"""How devices send their vectors to their site (three tiers): ``plain`` (the site sees each one, inside
its trust domain; robust aggregation needs it) or ``secagg`` (SecAgg among the site's devices)."""


@dataclass(frozen=True)
class FederationConfig:
    """Settings of one federated run (kebab-case keys in Flower run config; see :meth:`from_run_config`)."""

    rounds: int = 10
    fraction_train: float = 1.0
    min_clients: int = 2
    strategy: str = "fedavgm"
    proximal_mu: float = 0.01
    server_lr: float = 1.0  # fedavgm: step applied to the averaged update
    server_momentum: float = 0.5  # fedavgm: momentum of that step (0.9 oscillated under label skew)
    local_epochs: int = 1
    batch_size: int = 64
    lr: float = 3e-3
    absent_logit_scale: float = 0.5
    hidden: int = 64
    window: int = 10
    seed: int = 0
    timeout_s: float = 3600.0
    privacy: str = "none"
    clip_norm: float = 1.0
    # he / secagg (flat or across sites): every client cuts its local update (local model minus the global
    # one) to this L2 norm before sealing it, and whoever opens a sum checks that it is in the range such
    # updates produce (fedids.federation.bounds; dp modes use clip-norm instead). Honest updates, 10 clients,
    # 5 rounds: at most 7.2 (synthetic default) and 5.4 (real samples), dirichlet:0.5.
    update_bound: float = 20.0
    noise_multiplier: float = 0.0  # dp: > 0 fixed; 0 = calibrated from target_epsilon for the planned rounds
    target_epsilon: float = 0.0  # dp: the budget; training stops with a message before exceeding it
    target_delta: float = 1e-5
    he_public_context: str = ""  # server copy of the HE key set (public only), for he modes
    dpsgd_noise_multiplier: float = 0.0  # > 0: clients train with DP-SGD (sample-level DP)
    dpsgd_target_epsilon: float = 0.0  # > 0: clients train with DP-SGD, each calibrating its noise so that
    # all planned rounds spend at most this epsilon per flow window
    dpsgd_clip_norm: float = 1.0  # per-example gradient bound for DP-SGD
    # DP-SGD's own step and batch: noise is added to each batch's gradient sum, so a larger batch has a
    # better signal-to-noise ratio, and the clipped, noised steps need a larger learning rate. Measured on
    # the synthetic default (10 clients, 5 rounds, epsilon 8): batch 64 / lr 3e-3 0.59 macro-F1, 64 / 1e-2
    # 0.64, 256 / 1e-2 0.71 (plaintext, same rounds: 0.72 before head calibration).
    dpsgd_batch_size: int = 0  # 0: DPSGD_BATCH_SIZE of the mode (see dpsgd_batch)
    dpsgd_lr: float = 1e-2
    # Local epochs per round under DP-SGD (the noise is calibrated for all of them). Synthetic default, 10
    # clients, dirichlet:0.5, 10 rounds, epsilon 8, three runs each (DP noise differs per run): 1 epoch
    # 0.792 / 0.766 / 0.765 macro-F1, 3 epochs 0.852 / 0.816 / 0.791; 5 epochs 0.786 (one run).
    dpsgd_local_epochs: int = 3
    # Distributed DP-SGD (fedids.privacy.dpsgd, "Distributed noise"): under SecAgg each round is *one*
    # DP-SGD step on the federation's pooled Poisson batch (expected size dpsgd_batch_size over all
    # clients' rows); each client adds sigma / sqrt(t) of the noise and the SecAgg sum carries sigma, so the
    # federation trains like centralized DP-SGD instead of ten clients each adding all of it. Its step is
    # SGD through the server step (fedavgm): dpsgd_distributed_lr times the sum of the clients' noised
    # gradient sums over the expected batch, the pooled mean gradient whatever the number of clients
    # (aggregation.finalize_pooled_step; until session 15 the clients' mean: lr 60 with 10 clients). Real
    # samples, pooled centrally, epsilon 8, 88 steps of batch 2048, momentum 0.5: lr 6 and 10 0.941, 15 0.898.
    dpsgd_distributed: bool = False
    dpsgd_distributed_lr: float = 6.0
    calibration: str = "ccvr"  # ccvr: refit the head on clients' summed feature moments after
    # training, then check it (fedids.federation.calibration) | none
    # The final model's prototype head (fedids.model.gru), as `fedids train --prototypes on`: class means
    # under a shared covariance, read from the same summed moments (so only with ccvr; no new message, no
    # new release). Gated: it says which attack, never whether (the threshold is the linear head's).
    prototypes: str = "on"  # on | off
    dpsgd_calibration_noise: float = 3.0  # DP-SGD runs: noise multiplier of the two calibration releases
    # (fedids.federation.calibration_dp); each client budgets them in its epsilon. Client-level dp uses
    # the rounds' noise multiplier.
    client_weighting: str = "objective"  # objective: share of the class-weighted loss | examples (FedAvg)
    # (every mode but dp, where every client weighs the same)
    head_aggregation: str = "class"  # class: each output row averaged by its class's examples | examples
    # (every mode but dp, whose sensitivity bound needs equal weights)
    # Adaptive strategies (plaintext only; fedids.federation.adaptive and .compression). The defaults
    # change nothing: uniform sampling, no budget, fixed local epochs, full float32 uploads.
    selection: str = "random"  # random | energy (prefer clients with budget left and efficient hardware)
    energy_budget_j: float = 0.0  # joules per device for the whole training; 0 = unlimited
    max_local_epochs: int = 0  # > 0: adaptive local epochs in [1, this], fitted to the budget share
    compression: str = "none"  # none | int8 | topk:FRACTION (the update a client uploads)
    # Three-tier federation (fedids.federation.sites): K >= 2 groups the clients into K site aggregators
    # (0 or 1: flat, every client talks to the central server); --privacy then seals site -> central.
    sites: int = 0
    # Deployed three tiers only: the most devices one site aggregates (`fedids deploy init --sites` passes
    # it with the run). The central server's fixed-point code and its check of an opened sum count a site's
    # partial sum as that many contributions (the simulation knows its sites and ignores it).
    site_devices: int = 0
    # Robust aggregation at the site tier: none | normclip[:B] | median | trimmed:F | flame (federation.robust)
    robust: str = "none"
    # Under --robust: from this round on, before every round each site checks its devices' labels against
    # the global model and leaves out of the round the devices it disputes (federation.screening); 0: never.
    # Off by default since session 19: measured, it costs more than it saves (docs/evaluation.md).
    screening: int = 0
    # How screening reads a device's labels: head (the global model's head) | peers (the class means of
    # the site's other devices) | benign (distance to the site's benign mean); federation.robust_moments
    screening_check: str = "head"
    # device -> site: plain (the site sees each device's vector, inside its trust domain; robust
    # aggregation needs it) | secagg (SecAgg among each site's devices: the site learns only their sum)
    site_privacy: str = "plain"

    def __post_init__(self) -> None:
        # Imported here: the command line reads the defaults at startup without loading numpy.
        from fedids.federation import adaptive
        from fedids.federation.compression import Compression
        from fedids.federation.private import PrivacyMode

        self._check_numbers()
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        if not 0.0 < self.fraction_train <= 1.0:
            raise ValueError("fraction-train must be in (0, 1]")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.min_clients < 1 or self.local_epochs < 1 or self.window < 1:
            raise ValueError("min-clients, local-epochs and window must be >= 1")
        mode = PrivacyMode.parse(self.privacy)  # raises on an unknown mode
        if mode.private and self.strategy not in PRIVATE_STRATEGIES:
            raise ValueError(
                f"strategy {self.strategy} needs each client's update in plaintext; with privacy "
                f"{mode.name} use one of {', '.join(PRIVATE_STRATEGIES)}"
            )
        if mode.dp and (self.clip_norm <= 0 or self.noise_multiplier < 0 or self.target_epsilon < 0):
            raise ValueError("dp needs clip-norm > 0, noise-multiplier >= 0 and target-epsilon >= 0")
        if mode.dp and self.noise_multiplier == 0 and self.target_epsilon == 0:
            raise ValueError("dp needs a noise multiplier or a target epsilon to calibrate it")
        if self.dpsgd_noise_multiplier < 0 or self.dpsgd_target_epsilon < 0 or self.dpsgd_clip_norm <= 0:
            raise ValueError("dpsgd needs noise >= 0, target epsilon >= 0 and clip norm > 0")
        if self.dpsgd_batch_size < 0 or not self.dpsgd_lr > 0 or self.dpsgd_local_epochs < 1:
            raise ValueError(
                "dpsgd needs batch size >= 1 (0: the mode's default), lr > 0 and local epochs >= 1"
            )
        if self.dpsgd_noise_multiplier and self.dpsgd_target_epsilon:
            raise ValueError("give DP-SGD a noise multiplier or a target epsilon, not both")
        if self.dpsgd_distributed and not distributed_dpsgd_runs(self.privacy, self.dpsgd, self.sites):
            raise ValueError(DISTRIBUTED_DPSGD_NEEDS)
        if self.dpsgd and self.max_local_epochs:
            # The clients' accounts assume every round runs the same number of DP-SGD steps.
            raise ValueError("DP-SGD and adaptive local epochs do not combine")
        if mode.he and not self.he_public_context:
            raise ValueError(f"privacy {self.privacy} needs he-public-context (see `fedids keys init`)")
        if self.head_aggregation not in HEAD_AGGREGATIONS:
            raise ValueError(
                f"unknown head-aggregation {self.head_aggregation!r}: choose one of "
                f"{', '.join(HEAD_AGGREGATIONS)}"
            )
        if self.client_weighting not in CLIENT_WEIGHTINGS:
            raise ValueError(
                f"unknown client-weighting {self.client_weighting!r}: choose one of "
                f"{', '.join(CLIENT_WEIGHTINGS)}"
            )
        if self.calibration not in ("ccvr", "none"):
            raise ValueError(f"unknown calibration {self.calibration!r}: choose ccvr or none")
        if self.prototypes not in ("on", "off"):
            raise ValueError(f"prototypes {self.prototypes!r}: choose on or off")
        if self.selection not in adaptive.SELECTIONS:
            raise ValueError(
                f"unknown selection {self.selection!r}: choose one of {', '.join(adaptive.SELECTIONS)}"
            )
        if self.energy_budget_j < 0 or self.max_local_epochs < 0:
            raise ValueError("energy-budget-j and max-local-epochs must be >= 0")
        if self.max_local_epochs and not self.energy_budget_j:
            raise ValueError(
                "max-local-epochs (adaptive local epochs) needs an energy-budget-j to fit them to"
            )
        self._check_sites()
        compression = Compression.parse(self.compression)  # raises on an unknown codec
        if mode.private and (self.energy_managed or compression.active):
            # The private modes' guarantees assume what they were built for: DP's accounting a uniform
            # client sample, HE/SecAgg a full, dense update.
            raise ValueError(
                f"selection, energy budget, adaptive epochs and compression are for the plaintext "
                f"mode only, not privacy {self.privacy}"
            )

    def _check_sites(self) -> None:
        from fedids.federation.robust import RobustSpec
        from fedids.federation.robust_moments import SCREENING_CHECKS

        if self.sites < 0:
            raise ValueError(f"sites must be >= 0 (0 or 1: no site tier), got {self.sites}")
        if self.site_devices < 0:
            raise ValueError(f"site-devices must be >= 0, got {self.site_devices}")
        if self.screening < 0:
            raise ValueError("screening must be a round >= 1, or 0 for none")
        if self.screening_check not in SCREENING_CHECKS:
            raise ValueError(
                f"screening-check must be one of {', '.join(SCREENING_CHECKS)}, got {self.screening_check!r}"
            )
        if RobustSpec.parse(self.robust).active and not self.tiered:
            raise ValueError(f"robust {self.robust} runs at the site tier: give sites K >= 2")
        if self.site_privacy not in SITE_PRIVACY:
            raise ValueError(
                f"site-privacy must be one of {', '.join(SITE_PRIVACY)}, got {self.site_privacy!r}"
            )
        if self.site_secagg:
            from fedids.federation.private import PrivacyMode

            if not self.tiered:
                raise ValueError("site-privacy secagg is the device -> site tier: give sites K >= 2")
            if not PrivacyMode.parse(self.privacy).sealed:
                raise ValueError(
                    f"site-privacy secagg with privacy {self.privacy}: the sites would send their sums to "
                    "the central server in the clear; use he, secagg or he+secagg (with or without dp)"
                )
            if self.fraction_train < 1.0:
                raise ValueError(
                    "site-privacy secagg: every device trains each round (fraction 1), so that "
                    "no site's SecAgg round falls below 3 devices"
                )
            if RobustSpec.parse(self.robust).active:
                raise ValueError(
                    "robust aggregation needs each device's update at its site: not with site-privacy secagg"
                )
        if self.tiered and not self.averaging:
            raise ValueError(
                f"strategy {self.strategy} needs each update at the central server; with sites use one of "
                f"{', '.join(PRIVATE_STRATEGIES)} (and --robust at the sites)"
            )

    @property
    def tiered(self) -> bool:
        """Whether the clients are grouped into site aggregators (three tiers)."""
        return self.sites >= 2

    @property
    def site_secagg(self) -> bool:
        """Whether each site's devices send it their vectors under SecAgg (``site_privacy`` secagg)."""
        return self.site_privacy == "secagg"

    def _check_numbers(self) -> None:
        """Finite numbers in their ranges: a typo fails here with the setting's name, before any work."""
        import dataclasses
        import math

        from fedids.model.checks import MAX_HIDDEN, MAX_WINDOW

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name.replace('_', '-')} must be a finite number, got {value}")
        positive = (
            "server_lr",
            "lr",
            "timeout_s",
            "clip_norm",
            "update_bound",
            "dpsgd_clip_norm",
            "dpsgd_lr",
            "dpsgd_distributed_lr",
            "dpsgd_calibration_noise",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.server_momentum < 1.0:
            raise ValueError(f"server-momentum must be in [0, 1), got {self.server_momentum}")
        if not 0.0 < self.target_delta < 1.0:
            raise ValueError(f"target-delta must be in (0, 1), got {self.target_delta}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.proximal_mu < 0 or self.absent_logit_scale < 0:
            raise ValueError("proximal-mu and absent-logit-scale must be >= 0")
        if self.batch_size < 1 or not 1 <= self.hidden <= MAX_HIDDEN or self.window > MAX_WINDOW:
            raise ValueError(
                f"batch-size must be >= 1, hidden in 1..{MAX_HIDDEN}, window at most {MAX_WINDOW}"
            )

    @property
    def server_step(self) -> tuple[float, float]:
        """``(server learning rate, server momentum)`` of the server step (FedAvg and FedProx: ``(1, 0)``)."""
        return (self.server_lr, self.server_momentum) if self.strategy == "fedavgm" else (1.0, 0.0)

    @property
    def averaging(self) -> bool:
        """Whether the strategy is a weighted mean (the secure-sum pipeline), not a robust statistic."""
        return self.strategy in PRIVATE_STRATEGIES

    @property
    def dpsgd(self) -> bool:
        """Whether clients train with sample-level DP-SGD."""
        return self.dpsgd_noise_multiplier > 0 or self.dpsgd_target_epsilon > 0

    @property
    def dpsgd_batch(self) -> int:
        """DP-SGD's expected batch: ``dpsgd_batch_size``, or where that is 0 the measured default of the
        mode (:data:`DPSGD_BATCH_SIZE`)."""
        mode = "distributed" if self.dpsgd_distributed else "local"
        return self.dpsgd_batch_size or DPSGD_BATCH_SIZE[mode]

    @property
    def energy_managed(self) -> bool:
        """Whether the energy ledger drives selection or epochs (not only records energy)."""
        return self.selection != "random" or self.energy_budget_j > 0 or self.max_local_epochs > 0

    @classmethod
    def from_run_config(cls, run_config: dict) -> FederationConfig:
        """Build from Flower run config (kebab-case); unknown keys are rejected."""
        fields = {f.replace("_", "-"): f for f in cls.__dataclass_fields__}
        known = set(fields) | set(RUN_ONLY_KEYS)
        unknown = set(run_config) - known
        if unknown:
            raise ValueError(f"unknown run config keys: {', '.join(sorted(unknown))}")
        return cls(**{fields[k]: v for k, v in run_config.items() if k in fields})


def config_defaults():
    """Every field's default, read without constructing (and validating) a config: what the command line
    shows at startup, before numpy is loaded."""
    import dataclasses
    from types import SimpleNamespace

    return SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(FederationConfig)})
