"""The Flower ServerApp: the federated aggregation layer and central server of the paper's architecture.

One federated run, as :func:`run_federation` executes it:

1. wait for the clients, ask each for its feature histogram and label counts (``query.stats``) and merge
   them into the global scaler and label vocabulary: no raw flow leaves a client;
2. each round, sample clients with a generator seeded by (seed, round), send them the global model,
   validate every reply on arrival (shapes, dtype, finiteness, duplicates; a bad reply is logged and
   dropped, never crashes the round), aggregate with the chosen Flower strategy's ``aggregate_train``
   (replies sorted by client key, so floating-point sums are reproducible), evaluate the new global model
   on the server's held-out test split, and checkpoint model and state to the run directory;
3. ``resume=True`` continues after the last completed round with results identical to an uninterrupted
   run with the same seed.

In the plaintext mode the server also keeps an energy ledger (:mod:`fedids.federation.adaptive`): each
round's modelled client energy goes to the history (``energy_j``, ``participants``), and with
``selection=energy``, an ``energy_budget_j`` or ``max_local_epochs`` it drives which clients train and for
how many epochs. With ``compression`` clients upload compressed updates
(:mod:`fedids.federation.compression`), rebuilt and validated before aggregation.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedids.data.preprocess import LOG_EDGES, FeatureStats, LabelVocabulary
from fedids.data.schema import FEATURES
from fedids.federation import adaptive
from fedids.federation import messages as m
from fedids.federation.client_app import LOCAL_VAL_FRACTION, derive_seed
from fedids.federation.compression import COMPRESSED, Compression, rebuild_weights
from fedids.federation.private import EncryptedGlobal, PrivacyMode, unflatten
from fedids.federation.private import GLOBAL
from fedids.federation.secure_rounds import contribution_weights, run_private_round
from fedids.federation.strategies import (AVERAGING_STRATEGIES, CLIENT_WEIGHTINGS, HEAD_AGGREGATIONS,
                                          PRIVATE_STRATEGIES, STRATEGIES, add_objective_weights, make_strategy,
                                          objective_weights, reweight_head_rows, weight_key)
from fedids.privacy.dp import PrivacyAccountant, PrivacyBudgetExceeded, calibrate_noise_multiplier
from fedids.privacy.keys import load_public_context
from fedids.model.artifacts import Detector, save_detector
from fedids.model.train import compute_class_weights, get_weights, set_weights
from fedids.task import environment, new_model, preprocessing_from_stats

log = logging.getLogger("fedids.server")
SUMMARY_KEYS = ("accuracy", "macro_f1", "weighted_f1", "mcc")
STATE_FILE = "state.json"
GLOBAL_DIR = "global"
CHECKPOINT_DIR = "checkpoints"  # round-NNNN.npz: global weights and server optimiser state, for --resume


@dataclass(frozen=True)
class FederationConfig:
    """Settings of one federated run (kebab-case keys in Flower run config; see :meth:`from_run_config`)."""

    rounds: int = 10
    fraction_train: float = 1.0
    min_clients: int = 2
    strategy: str = "fedavgm"
    proximal_mu: float = 0.01
    server_lr: float = 1.0          # fedavgm: step applied to the averaged update
    server_momentum: float = 0.5    # fedavgm: momentum of that step (0.9 oscillated under label skew)
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
    noise_multiplier: float = 0.0  # dp: > 0 fixed; 0 = calibrated from target_epsilon for the planned rounds
    target_epsilon: float = 0.0    # dp: the budget; training stops with a message before exceeding it
    target_delta: float = 1e-5
    he_public_context: str = ""   # server copy of the HE key set (public only), for he modes
    dpsgd_noise_multiplier: float = 0.0  # > 0: clients train with Opacus DP-SGD (sample-level DP)
    dpsgd_target_epsilon: float = 0.0    # > 0: clients train with DP-SGD, each calibrating its noise so that
                                         # all planned rounds spend at most this epsilon per flow window
    dpsgd_clip_norm: float = 1.0         # per-example gradient bound for DP-SGD
    # DP-SGD's own step and batch: noise is added to each batch's gradient sum, so a larger batch has a
    # better signal-to-noise ratio, and the clipped, noised steps need a larger learning rate. Measured on
    # the synthetic default (10 clients, 5 rounds, epsilon 8): batch 64 / lr 3e-3 0.59 macro-F1, 64 / 1e-2
    # 0.64, 256 / 1e-2 0.71 (plaintext, same rounds: 0.72 before head calibration).
    dpsgd_batch_size: int = 256
    dpsgd_lr: float = 1e-2
    calibration: str = "ccvr"            # ccvr: refit the head on clients' feature moments after training
                                         # (plaintext only; fedids.federation.calibration) | none
    client_weighting: str = "objective"  # objective: share of the class-weighted loss | examples (FedAvg)
                                         # (he/secagg too; under dp every client weighs the same)
    head_aggregation: str = "class"      # class: each output row averaged by its class's examples | examples;
                                         # plaintext only: private modes see a sum and weigh whole updates
    # Adaptive strategies (plaintext only; fedids.federation.adaptive and .compression). The defaults
    # change nothing: uniform sampling, no budget, fixed local epochs, full float32 uploads.
    selection: str = "random"      # random | energy (prefer clients with budget left and efficient hardware)
    energy_budget_j: float = 0.0   # joules per device for the whole training; 0 = unlimited
    max_local_epochs: int = 0      # > 0: adaptive local epochs in [1, this], fitted to the budget share
    compression: str = "none"      # none | int8 | topk:FRACTION (the update a client uploads)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        if not 0.0 < self.fraction_train <= 1.0:
            raise ValueError("fraction-train must be in (0, 1]")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.min_clients < 1 or self.local_epochs < 1 or self.window < 1:
            raise ValueError("min-clients, local-epochs and window must be >= 1")
        mode = PrivacyMode.parse(self.privacy)  # raises on an unknown mode
        if mode.dp and (self.clip_norm <= 0 or self.noise_multiplier < 0 or self.target_epsilon < 0):
            raise ValueError("dp needs clip-norm > 0, noise-multiplier >= 0 and target-epsilon >= 0")
        if mode.dp and self.noise_multiplier == 0 and self.target_epsilon == 0:
            raise ValueError("dp needs a noise multiplier or a target epsilon to calibrate it")
        if self.dpsgd_noise_multiplier < 0 or self.dpsgd_target_epsilon < 0 or self.dpsgd_clip_norm <= 0:
            raise ValueError("dpsgd needs noise >= 0, target epsilon >= 0 and clip norm > 0")
        if self.dpsgd_batch_size < 1 or not self.dpsgd_lr > 0:
            raise ValueError("dpsgd needs batch size >= 1 and lr > 0")
        if self.dpsgd_noise_multiplier and self.dpsgd_target_epsilon:
            raise ValueError("give DP-SGD a noise multiplier or a target epsilon, not both")
        if self.dpsgd and self.max_local_epochs:
            # The clients' accounts assume every round runs the same number of DP-SGD steps.
            raise ValueError("DP-SGD and adaptive local epochs do not combine")
        if mode.he and not self.he_public_context:
            raise ValueError(f"privacy {self.privacy} needs he-public-context (see `fedids keys init`)")
        if self.head_aggregation not in HEAD_AGGREGATIONS:
            raise ValueError(f"unknown head-aggregation {self.head_aggregation!r}: choose one of "
                             f"{', '.join(HEAD_AGGREGATIONS)}")
        if self.client_weighting not in CLIENT_WEIGHTINGS:
            raise ValueError(f"unknown client-weighting {self.client_weighting!r}: choose one of "
                             f"{', '.join(CLIENT_WEIGHTINGS)}")
        if self.calibration not in ("ccvr", "none"):
            raise ValueError(f"unknown calibration {self.calibration!r}: choose ccvr or none")
        if self.selection not in adaptive.SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}: choose one of {', '.join(adaptive.SELECTIONS)}")
        if self.energy_budget_j < 0 or self.max_local_epochs < 0:
            raise ValueError("energy-budget-j and max-local-epochs must be >= 0")
        if self.max_local_epochs and not self.energy_budget_j:
            raise ValueError("max-local-epochs (adaptive local epochs) needs an energy-budget-j to fit them to")
        compression = Compression.parse(self.compression)  # raises on an unknown codec
        if mode.private and (self.energy_managed or compression.active):
            # The private modes' guarantees assume what they were built for: DP's accounting a uniform
            # client sample, HE/SecAgg a full, dense update.
            raise ValueError(f"selection, energy budget, adaptive epochs and compression are for the plaintext "
                             f"mode only, not privacy {self.privacy}")

    @property
    def dpsgd(self) -> bool:
        """Whether clients train with sample-level DP-SGD."""
        return self.dpsgd_noise_multiplier > 0 or self.dpsgd_target_epsilon > 0

    @property
    def energy_managed(self) -> bool:
        """Whether the energy ledger drives selection or epochs (not only records energy)."""
        return self.selection != "random" or self.energy_budget_j > 0 or self.max_local_epochs > 0

    @classmethod
    def from_run_config(cls, run_config: dict) -> "FederationConfig":
        """Build from Flower run config (kebab-case); unknown keys are rejected."""
        fields = {f.replace("_", "-"): f for f in cls.__dataclass_fields__}
        known = set(fields) | {"test-data", "out-dir", "split"}
        unknown = set(run_config) - known
        if unknown:
            raise ValueError(f"unknown run config keys: {', '.join(sorted(unknown))}")
        return cls(**{fields[k]: v for k, v in run_config.items() if k in fields})


@dataclass
class RoundRecord:
    round: int
    clients: int
    rejected: int
    train_loss: float
    local_val_macro_f1: float
    test: dict
    seconds: float
    bytes_down: int
    bytes_up: int
    privacy: str = "none"
    epsilon: float | None = None
    client_seconds: float | None = None          # mean CPU seconds of local training per client
    client_privacy_seconds: float | None = None  # mean CPU seconds of clipping/noise/encryption/masking
    dpsgd_epsilon: float | None = None  # sample-level DP-SGD epsilon so far, largest over clients
                                        # (each round's local training is one mechanism; rounds compose)
    energy_j: float | None = None       # modelled joules of this round's clients, each on its own device
                                        # profile (fedids.federation.adaptive); plaintext mode only
    participants: dict | None = None    # client key -> epochs, examples, bytes_up, energy_j (plaintext)


@dataclass
class FederationState:
    config: dict
    completed_round: int = 0
    history: list[dict] = field(default_factory=list)
    privacy: dict = field(default_factory=dict)   # accountant state, encrypted global model metadata
    stopped: str | None = None                    # why training ended early (privacy or energy budget)
    adaptive: dict = field(default_factory=dict)  # the energy ledger (fedids.federation.adaptive)
    calibration: dict = field(default_factory=dict)  # head calibration after the last round: test before/after


def _wait_for_nodes(grid: Grid, n: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while len(nodes := sorted(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {n} clients connected within {timeout_s:.0f} s")
        time.sleep(0.2)
    return nodes


def collect_stats(grid: Grid, nodes: list[int], timeout_s: float):
    """Ask every node for its statistics.

    Returns node->client-key, client-key->rows, merged stats, label counts over all clients,
    client-key->label counts and client-key->device profile (reported, or assigned from the key).
    """
    messages = [Message(RecordDict({m.CONFIG: ConfigRecord({})}), message_type=m.QUERY_STATS, dst_node_id=n)
                for n in nodes]
    keys: dict[int, str] = {}
    rows_of: dict[str, int] = {}
    merged: FeatureStats | None = None
    labels: dict[str, int] = {}
    labels_of: dict[str, dict[str, int]] = {}
    reported: dict[str, str | None] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("client %s failed to send statistics: %s", node, reply.error.reason)
            continue
        try:
            key, stats, client_labels = m.decode_stats_reply(reply.content, len(FEATURES), len(LOG_EDGES) - 1)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("rejected statistics from client %s: %s", node, exc)
            continue
        if key in keys.values():
            log.warning("rejected statistics from client %s: duplicate client key %s", node, key)
            continue
        keys[node] = key
        rows_of[key] = stats.count
        merged = stats if merged is None else merged.merge(stats)
        labels_of[key] = dict(client_labels)
        reported[key] = reply.content[m.INFO].get(m.DEVICE_PROFILE)
        for label, n in client_labels.items():
            labels[label] = labels.get(label, 0) + n
    if merged is None:
        raise RuntimeError("no client returned usable statistics")
    assigned = adaptive.assign_profiles(reported)
    profiles: dict[str, str] = {}
    for key, claim in reported.items():
        profiles[key], ignored = adaptive.resolve_profile(claim, assigned[key])
        if ignored:
            log.warning("client %s: %s; assuming %s", key, ignored, profiles[key])
    return keys, rows_of, merged, labels, labels_of, profiles


def sample_clients(keys: dict[int, str], fraction: float, minimum: int, seed: int, server_round: int) -> list[int]:
    """Nodes for one round: a seeded sample over client keys (not node ids, which change between runs)."""
    ordered = sorted(keys, key=keys.__getitem__)
    k = min(len(ordered), max(minimum, math.ceil(fraction * len(ordered))))
    rng = np.random.default_rng(derive_seed(seed, "sample", server_round))
    return [ordered[i] for i in sorted(rng.choice(len(ordered), size=k, replace=False))]


def _write_state(out_dir: Path, state: FederationState) -> None:
    tmp = out_dir / (STATE_FILE + ".part")
    tmp.write_text(json.dumps(asdict(state), indent=1, default=float))
    os.replace(tmp, out_dir / STATE_FILE)


def _save_checkpoint(out_dir: Path, server_round: int, weights: list[np.ndarray],
                     momentum: list[np.ndarray] | None, ciphertext: bytes | None = None) -> None:
    directory = out_dir / CHECKPOINT_DIR
    directory.mkdir(exist_ok=True)
    arrays = {f"w{i}": w for i, w in enumerate(weights)} | {f"m{i}": v for i, v in enumerate(momentum or [])}
    if ciphertext is not None:
        arrays["ct"] = np.frombuffer(ciphertext, dtype=np.uint8)
    tmp = directory / f"tmp-round-{server_round:04d}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, directory / f"round-{server_round:04d}.npz")
    for old in sorted(directory.glob("round-*.npz"))[:-2]:  # keep the last two
        old.unlink()


# Fields whose default changed since runs were saved without them: the value those runs used.
_LEGACY_DEFAULTS = {"server_momentum": 0.9, "client_weighting": "examples", "calibration": "none"}


def _previous_config(previous: FederationState) -> dict:
    """The saved settings, with fields added since that run at the values it ran with."""
    return {**asdict(FederationConfig()), **_LEGACY_DEFAULTS, **previous.config}


def _load_checkpoint(out_dir: Path, server_round: int) -> tuple[list[np.ndarray], list[np.ndarray], bytes | None]:
    path = out_dir / CHECKPOINT_DIR / f"round-{server_round:04d}.npz"
    with np.load(path, allow_pickle=False) as saved:
        weights = [saved[f"w{i}"] for i in range(sum(k.startswith("w") for k in saved.files))]
        momentum = [saved[f"m{i}"] for i in range(sum(k.startswith("m") for k in saved.files))]
        ciphertext = saved["ct"].tobytes() if "ct" in saved.files else None
    return weights, momentum, ciphertext


def load_state(out_dir: Path) -> FederationState | None:
    path = Path(out_dir) / STATE_FILE
    if not path.exists():
        return None
    return FederationState(**json.loads(path.read_text()))


def run_federation(grid: Grid, config: FederationConfig, out_dir: str | Path, *, expected_clients: int,
                   evaluate: Callable[[Detector], dict], resume: bool = False,
                   on_round: Callable[[RoundRecord], None] | None = None,
                   decrypt: Callable[[EncryptedGlobal, int], np.ndarray] | None = None) -> FederationState:
    """Run (or resume) a federated training; see the module docstring. Returns the final state.

    ``decrypt`` is the operator's evaluator for ``he`` modes: it holds a *client* key and turns the
    encrypted global model into weights for the server-side test and the saved model. The round loop and
    the aggregation never see a secret key: they are given only the public context.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = PrivacyMode.parse(config.privacy)
    if mode.private and config.strategy not in PRIVATE_STRATEGIES:
        raise ValueError(f"strategy {config.strategy} needs individual plaintext updates; with --privacy "
                         f"{mode.name} use one of {', '.join(PRIVATE_STRATEGIES)}")
    he_public = load_public_context(config.he_public_context) if mode.he else None
    if mode.he and decrypt is None:
        log.warning("no evaluator key: the encrypted global model is neither evaluated nor saved in plaintext")
    nodes = _wait_for_nodes(grid, expected_clients, config.timeout_s)
    keys, counts, stats, label_counts, labels_of, profiles = collect_stats(grid, nodes, config.timeout_s)
    scaler, vocab = preprocessing_from_stats(stats, label_counts)
    model = new_model(len(vocab), config.hidden, config.seed)
    shapes = [tuple(w.shape) for w in get_weights(model)]
    length = sum(int(np.prod(s)) for s in shapes)
    state = FederationState(config=asdict(config))
    accountant = _make_accountant(config, mode, keys)
    encrypted: EncryptedGlobal | None = None
    if resume and (previous := load_state(out_dir)) is not None and previous.completed_round > 0:
        if {k: v for k, v in _previous_config(previous).items() if k != "rounds"} != {k: v for k, v in asdict(config).items() if k != "rounds"}:
            raise ValueError(f"{out_dir}: cannot resume, the run was started with different settings")
        state = FederationState(config=asdict(config), completed_round=previous.completed_round,
                                history=previous.history, privacy=previous.privacy, adaptive=previous.adaptive)
    strategy = make_strategy(config.strategy, proximal_mu=config.proximal_mu, server_lr=config.server_lr,
                             server_momentum=config.server_momentum,
                             weighted_by_key=weight_key(config.client_weighting))
    compression = Compression.parse(config.compression)
    ledger = None if mode.private else adaptive.EnergyLedger.create(
        profiles, counts, budget_j=config.energy_budget_j, hidden=config.hidden, window=config.window,
        train_fraction=1.0 - LOCAL_VAL_FRACTION)
    if ledger is not None and state.adaptive:
        ledger.load_state_dict(state.adaptive)
    if state.completed_round:
        weights, momentum, ciphertext = _load_checkpoint(out_dir, state.completed_round)
        set_weights(model, weights)
        if momentum:
            strategy.momentum_vector = momentum
        if ciphertext is not None:
            meta = state.privacy["encrypted_global"]
            encrypted = EncryptedGlobal(meta["kind"], ciphertext, meta["weight"], meta["secagg"])
        if accountant is not None:
            accountant.load_state_dict(state.privacy["accountant"])
        log.info("resuming after round %d", state.completed_round)
    prep_record = m.encode_preprocessing(scaler)
    class_weights = compute_class_weights(np.array([label_counts.get(lab, 0) for lab in vocab.labels])).tolist()
    class_counts = {node: np.array([labels_of[key].get(lab, 0) for lab in vocab.labels]) for node, key in keys.items()}
    objective_of = objective_weights(class_counts, class_weights) if config.client_weighting == "objective" else {}
    metadata = {"mode": "federated", "environment": environment(), "config": asdict(config),
                "clients": len(keys)}

    for server_round in range(state.completed_round + 1, config.rounds + 1):
        if accountant is not None and config.target_epsilon:
            try:
                accountant.check_budget(config.target_epsilon, config.target_delta)
            except PrivacyBudgetExceeded as exc:
                log.warning("%s", exc)
                state.stopped = str(exc)
                _write_state(out_dir, state)
                break
        start = time.perf_counter()
        global_weights = get_weights(model)
        arrays = ArrayRecord(global_weights) if encrypted is None else None
        train_config = {
            "server-round": server_round, "labels": m.encode_vocabulary(vocab), "window": config.window,
            "hidden": config.hidden, "local-epochs": config.local_epochs, "batch-size": config.batch_size,
            "lr": config.lr, "seed": config.seed, "class-weights": class_weights,
            "absent-logit-scale": config.absent_logit_scale,
            "proximal-mu": config.proximal_mu if config.strategy == "fedprox" else 0.0,
            "dpsgd-noise": config.dpsgd_noise_multiplier, "dpsgd-clip": config.dpsgd_clip_norm,
            "dpsgd-delta": config.target_delta, "dpsgd-target-epsilon": config.dpsgd_target_epsilon,
            "dpsgd-batch-size": config.dpsgd_batch_size, "dpsgd-lr": config.dpsgd_lr,
            "rounds": config.rounds, "compression": config.compression,
        }
        epochs_of: dict[int, int] = {}
        if config.energy_managed:
            chosen, epochs_of = _select_adaptive(ledger, keys, config, server_round,
                                                 sum(w.nbytes for w in global_weights))
            if not chosen:
                state.stopped = f"energy budget exhausted: no client can pay for round {server_round}"
                log.warning("%s", state.stopped)
                _write_state(out_dir, state)
                break
        else:
            chosen = sample_clients(keys, config.fraction_train, config.min_clients, config.seed, server_round)

        def make_content(node: int, extra: dict) -> RecordDict:
            cfg = ConfigRecord({**train_config, **extra, **(encrypted.config_entries() if encrypted else {})})
            content = RecordDict({m.CONFIG: cfg, m.PREPROCESSING: prep_record})
            if encrypted is None:
                content[m.ARRAYS] = arrays
            else:
                content[GLOBAL] = ArrayRecord({"ct": Array(np.frombuffer(encrypted.ciphertext, dtype=np.uint8))})
            return content

        participants: dict | None = None
        if mode.private:
            weights_of = contribution_weights(mode, chosen, keys,
                                              {keys[n]: w for n, w in objective_of.items()} if objective_of else counts)
            summed, replies = run_private_round(
                grid, mode=mode, nodes=chosen, weights=weights_of, make_content=make_content, length=length,
                server_round=server_round, clip_norm=config.clip_norm,
                noise_multiplier=accountant.noise_multiplier if accountant else 0.0,
                he_public=he_public, timeout=config.timeout_s)
            total_weight = sum(weights_of[n] for n in summed.survivors)
            if not summed.survivors:
                raise RuntimeError(f"round {server_round}: no valid client update")
            if summed.plaintext is not None:
                set_weights(model, unflatten((summed.plaintext / total_weight).astype(np.float32), shapes))
            else:
                encrypted = EncryptedGlobal("bfv" if mode.secagg else "ckks", summed.ciphertext, total_weight,
                                            summed.secagg_config)
                if decrypt is not None:
                    set_weights(model, unflatten(decrypt(encrypted, length), shapes))
            rejected, bytes_down, bytes_up = summed.rejected, summed.bytes_down, summed.bytes_up
            if accountant is not None:
                accountant.step()
            agg_loss = _weighted_mean(replies, m.TRAIN_LOSS)
        else:
            replies, rejected, up_of = _collect_plain(grid, chosen, make_content, keys, shapes, config, server_round,
                                                      epochs_of, compression, global_weights)
            replies.sort(key=lambda r: keys[r.metadata.src_node_id])
            if config.client_weighting == "objective":
                add_objective_weights(replies, objective_of)
            if config.head_aggregation == "class" and config.strategy in AVERAGING_STRATEGIES:
                reweight_head_rows(replies, class_counts, weighted_by_key=weight_key(config.client_weighting))
            if hasattr(strategy, "current_arrays"):  # server-optimiser strategies (FedAvgM) need the old model
                strategy.current_arrays = arrays
            new_arrays, agg_metrics = strategy.aggregate_train(server_round, replies)
            set_weights(model, [a.numpy() for a in new_arrays.values()])
            weights_bytes = sum(a.nbytes for a in global_weights)
            bytes_down, bytes_up = weights_bytes * len(chosen), sum(up_of.values())
            participants = _charge(ledger, replies, keys, weights_bytes, up_of)
            agg_loss = float(agg_metrics[m.TRAIN_LOSS]) if agg_metrics and m.TRAIN_LOSS in agg_metrics else float("nan")
        detector = Detector(model, scaler, vocab, config.window, metadata | {"round": server_round})
        evaluable = encrypted is None or decrypt is not None
        test = evaluate(detector) if evaluable else {k: float("nan") for k in SUMMARY_KEYS}
        local_f1 = [float(r.content[m.METRICS][m.LOCAL_F1]) for r in replies]
        record = RoundRecord(
            round=server_round, clients=len(replies), rejected=rejected, train_loss=agg_loss,
            local_val_macro_f1=float(np.nanmean(local_f1)) if not all(map(math.isnan, local_f1)) else float("nan"),
            test={k: test[k] for k in SUMMARY_KEYS}, seconds=time.perf_counter() - start,
            bytes_down=int(bytes_down), bytes_up=int(bytes_up), privacy=mode.name,
            epsilon=accountant.epsilon(config.target_delta) if accountant is not None else None,
            client_seconds=_mean_metric(replies, m.TRAIN_SECONDS),
            client_privacy_seconds=_mean_metric(replies, "privacy-seconds"),
            dpsgd_epsilon=_max_metric(replies, "dpsgd-epsilon"),
            energy_j=sum(p["energy_j"] for p in participants.values()) if participants is not None else None,
            participants=participants,
        )
        detector.metadata["test_metrics"] = record.test
        # Checkpoint first, then the state that points at it, then the model the detector reloads.
        _save_checkpoint(out_dir, server_round, get_weights(model), getattr(strategy, "momentum_vector", None),
                         encrypted.ciphertext if encrypted else None)
        state.completed_round = server_round
        state.history.append(asdict(record))
        state.privacy = {"accountant": accountant.state_dict() if accountant else None,
                         "encrypted_global": encrypted.to_meta() if encrypted else None}
        state.adaptive = ledger.state_dict() if ledger is not None else {}
        _write_state(out_dir, state)
        if evaluable:
            save_detector(out_dir / GLOBAL_DIR, detector)
        if on_round:
            on_round(record)
    # The head refit reads clients' feature moments, which no DP mechanism here covers.
    if config.calibration == "ccvr" and not mode.private and not config.dpsgd and state.history:
        state.calibration = _calibrate(grid, keys, class_counts, model, prep_record, vocab, config, evaluate)
        _write_state(out_dir, state)
        save_detector(out_dir / GLOBAL_DIR, Detector(model, scaler, vocab, config.window,
                                                     metadata | {"round": state.completed_round, "calibrated": True,
                                                                 "test_metrics": state.calibration["test"]}))
    _publish_final_model(grid, sorted(keys), model, encrypted, prep_record, vocab, config)
    return state


def _calibrate(grid: Grid, keys: dict[int, str], class_counts: dict[int, np.ndarray], model,
               prep_record: ArrayRecord, vocab: LabelVocabulary, config: FederationConfig,
               evaluate: Callable[[Detector], dict]) -> dict:
    """CCVR head calibration (:mod:`fedids.federation.calibration`): ask every client for its per-class
    feature moments under the final model, merge the valid replies in client-key order, refit the head,
    then keep the refitted head only if the clients' merged validation macro-F1 does not drop.
    A reply counting more windows of a class than the client reported flows of it is refused."""
    import torch

    from fedids.federation.calibration import ClassMoments, calibrate_head

    scaler = m.decode_preprocessing(prep_record)
    before = evaluate(Detector(model, scaler, vocab, config.window, {}))
    content = _final_model_content(model, prep_record, vocab, config)
    received: dict[str, ClassMoments] = {}

    def accept(node: int, reply_content: RecordDict) -> None:
        moments = m.decode_moments_reply(reply_content, len(vocab), config.hidden)
        if (moments.count > class_counts[node]).any():
            raise ValueError("more windows of a class than the client reported flows of it")
        received[keys[node]] = moments

    rejected, bytes_up = _query_clients(grid, keys, content, m.QUERY_FEATURES, config, accept, "moments", m.MOMENTS)
    total = ClassMoments.zeros(len(vocab), config.hidden)
    for key in sorted(received):
        total = total + received[key]
    old_head = [p.detach().clone() for p in model.head.parameters()]
    classes = calibrate_head(model.head, total, seed=derive_seed(config.seed, "ccvr")) if received else 0
    check = _validate_heads(grid, keys, class_counts, model, old_head, prep_record, vocab, config) if received else {}
    if check and not check["kept"]:
        with torch.no_grad():
            for param, value in zip(model.head.parameters(), old_head):
                param.copy_(value)
    after = evaluate(Detector(model, scaler, vocab, config.window, {}))
    return {"method": "ccvr", "clients": len(received), "rejected": rejected, "classes": int(classes),
            "bytes_up": int(bytes_up + check.get("bytes_up", 0)), "validation": check,
            "kept": bool(check.get("kept", False)), "before": {k: before[k] for k in SUMMARY_KEYS},
            "test": {k: after[k] for k in SUMMARY_KEYS}}


def _final_model_content(model, prep_record: ArrayRecord, vocab: LabelVocabulary,
                         config: FederationConfig) -> RecordDict:
    return RecordDict({m.ARRAYS: ArrayRecord(get_weights(model)), m.PREPROCESSING: prep_record,
                       m.CONFIG: ConfigRecord({"labels": m.encode_vocabulary(vocab), "window": config.window,
                                               "hidden": config.hidden})})


def _query_clients(grid: Grid, keys: dict[int, str], content: RecordDict, message_type: str,
                   config: FederationConfig, accept: Callable[[int, RecordDict], None], what: str,
                   record_key: str) -> tuple[int, int]:
    """Send ``content`` to every client as ``message_type`` and hand each valid reply to ``accept``
    (which raises ValueError to refuse it). Returns ``(rejected, bytes received)``; refusals are logged."""
    messages = [Message(content, message_type=message_type, dst_node_id=n) for n in sorted(keys)]
    seen: set[int] = set()
    rejected, bytes_up = 0, 0
    for reply in grid.send_and_receive(messages, timeout=config.timeout_s):
        node = reply.metadata.src_node_id
        try:
            if reply.has_error():
                raise ValueError(f"client error: {reply.error.reason.splitlines()[0][:200]}")
            if node not in keys or node in seen:
                raise ValueError("duplicate or unknown sender")
            accept(node, reply.content)
            seen.add(node)
            bytes_up += _record_bytes(reply.content[record_key])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("calibration: rejected %s from client %s: %s", what, keys.get(node), exc)
            rejected += 1
    return rejected, bytes_up


def _validate_heads(grid: Grid, keys: dict[int, str], class_counts: dict[int, np.ndarray], model, old_head,
                    prep_record: ArrayRecord, vocab: LabelVocabulary, config: FederationConfig) -> dict:
    """Clients score the uncalibrated (0) and calibrated (1) heads on their validation and training
    windows; see :func:`fedids.federation.calibration.keep_calibrated` for the decision."""
    from fedids.federation.calibration import keep_calibrated, macro_f1_from_confusion

    heads = [tuple(p.numpy() for p in old_head), tuple(p.detach().numpy() for p in model.head.parameters())]
    content = _final_model_content(model, prep_record, vocab, config)
    content[m.HEADS] = m.encode_heads(heads)
    merged = {split: np.zeros((2, len(vocab), len(vocab)), dtype=np.int64) for split in m.CHECK_SPLITS}
    clients = 0

    def accept(node: int, reply_content: RecordDict) -> None:
        nonlocal clients
        confusions = m.decode_confusion_reply(reply_content, len(heads), len(vocab))
        windows = sum(c[0].sum(axis=1) for c in confusions.values())
        if (windows > class_counts[node]).any():
            raise ValueError("more windows of a class than the client reported flows of it")
        for split, c in confusions.items():
            merged[split] += c
        clients += 1

    rejected, bytes_up = _query_clients(grid, keys, content, m.QUERY_VALIDATE, config, accept,
                                        "validation", m.CONFUSION)
    scores = {split: [macro_f1_from_confusion(c) for c in merged[split]] for split in m.CHECK_SPLITS}
    kept, reason = keep_calibrated(scores) if clients else (False, "no client could check it")
    log.info("calibration: calibrated head %s (%s)", "kept" if kept else "discarded", reason)
    return {"clients": clients, "rejected": rejected, "bytes_up": int(bytes_up), "kept": bool(kept), "reason": reason,
            **{f"{split}_windows": int(merged[split][0].sum()) for split in m.CHECK_SPLITS},
            **{f"{split}_macro_f1_{w}": scores[split][i] for split in m.CHECK_SPLITS
               for i, w in enumerate(("before", "after"))}}


def _publish_final_model(grid: Grid, nodes: list[int], model, encrypted: EncryptedGlobal | None,
                         prep_record: ArrayRecord, vocab: LabelVocabulary, config: FederationConfig) -> None:
    """Send the final global model to every client (``query.global``), so a node's detector gets the last
    round's model and not the one before it. Failures are logged: training itself is already complete."""
    cfg = {"labels": m.encode_vocabulary(vocab), "window": config.window, "hidden": config.hidden}
    content = RecordDict({m.PREPROCESSING: prep_record})
    if encrypted is None:
        content[m.ARRAYS] = ArrayRecord(get_weights(model))
    else:
        cfg |= encrypted.config_entries()
        content[GLOBAL] = ArrayRecord({"ct": Array(np.frombuffer(encrypted.ciphertext, dtype=np.uint8))})
    content[m.CONFIG] = ConfigRecord(cfg)
    messages = [Message(content, message_type=m.QUERY_GLOBAL, dst_node_id=n) for n in nodes]
    for reply in grid.send_and_receive(messages, timeout=config.timeout_s):
        if reply.has_error():
            log.warning("client %s did not store the final model: %s", reply.metadata.src_node_id,
                        reply.error.reason.splitlines()[0][:200])


def _make_accountant(config: FederationConfig, mode: PrivacyMode, keys: dict[int, str]) -> PrivacyAccountant | None:
    if not mode.dp:
        return None
    per_round = min(len(keys), max(config.min_clients, math.ceil(config.fraction_train * len(keys))))
    sample_rate = per_round / len(keys)
    sigma = config.noise_multiplier
    if not sigma:
        sigma = calibrate_noise_multiplier(config.target_epsilon, config.target_delta, sample_rate, config.rounds)
        log.info("noise multiplier %.4f calibrated for epsilon %.3g over %d rounds", sigma, config.target_epsilon,
                 config.rounds)
    return PrivacyAccountant(sigma, sample_rate)


def _weighted_mean(replies: list[Message], key: str) -> float:
    pairs = [(float(r.content[m.METRICS][key]), int(r.content[m.METRICS][m.NUM_EXAMPLES])) for r in replies]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else float("nan")


def _max_metric(replies: list[Message], key: str) -> float | None:
    values = [float(r.content[m.METRICS][key]) for r in replies if key in r.content[m.METRICS]]
    return max(values) if values else None


def _mean_metric(replies: list[Message], key: str) -> float | None:
    values = [float(r.content[m.METRICS][key]) for r in replies if key in r.content[m.METRICS]]
    return float(np.mean(values)) if values else None


def _select_adaptive(ledger: adaptive.EnergyLedger, keys: dict[int, str], config: FederationConfig,
                     server_round: int, model_bytes: int) -> tuple[list[int], dict[int, int]]:
    """Clients and their local epochs for one round under the energy ledger (see fedids.federation.adaptive).

    Uploads not yet reported are estimated at the full model size, the most a client sends.
    """
    k = min(len(keys), max(config.min_clients, math.ceil(config.fraction_train * len(keys))))
    least = 1 if config.max_local_epochs else config.local_epochs
    chosen = adaptive.select_clients(ledger, keys, k=k, rule=config.selection, epochs=least, seed=config.seed,
                                     server_round=server_round, bytes_down=model_bytes, full_up=model_bytes)
    if not config.max_local_epochs:
        return chosen, {}
    rounds_left = config.rounds - server_round + 1
    return chosen, {n: ledger.epochs_for(keys[n], rounds_left, config.max_local_epochs, model_bytes, model_bytes)
                    for n in chosen}


def _charge(ledger: adaptive.EnergyLedger, replies: list[Message], keys: dict[int, str], model_bytes: int,
            up_of: dict[int, int]) -> dict:
    """Charge every accepted reply to the ledger; returns the round's ``participants`` record."""
    out = {}
    for reply in replies:
        node, metrics = reply.metadata.src_node_id, reply.content[m.METRICS]
        key = keys[node]
        epochs = int(metrics.get(m.LOCAL_EPOCHS, 1))
        examples = int(metrics.get(m.TRAIN_EXAMPLES, ledger.accounts[key].examples))
        joules = ledger.charge(key, epochs=epochs, examples=examples, bytes_down=model_bytes, bytes_up=up_of[node])
        out[key] = {"epochs": epochs, "examples": examples, "bytes_up": int(up_of[node]), "energy_j": joules}
    return out


def _check_work(metrics) -> None:
    """The work a client reports (charged to its energy account) must be plausible: whole numbers,
    examples >= 0 and epochs >= 1 (a negative figure would refund energy)."""
    examples, epochs = metrics.get(m.TRAIN_EXAMPLES, 0), metrics.get(m.LOCAL_EPOCHS, 1)
    if not isinstance(examples, int) or not isinstance(epochs, int) or examples < 0 or epochs < 1:
        raise ValueError(f"implausible work reported: {examples!r} examples, {epochs!r} epochs")


def _record_bytes(record: ArrayRecord) -> int:
    """Array bytes of a record, from its metadata (no decoding)."""
    return int(sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in record.values()))


def _collect_plain(grid: Grid, chosen: list[int], make_content, keys: dict[int, str], shapes, config, server_round,
                   epochs_of: dict[int, int], compression: Compression, global_weights: list[np.ndarray]):
    """Send the training messages and validate the replies: returns (accepted, rejected count, node ->
    bytes uploaded). A compressed update is rebuilt into full weights (``global + update``) first, so
    the same checks and every strategy apply to it."""
    messages = [Message(make_content(n, {"local-epochs": epochs_of[n]} if n in epochs_of else {}),
                        message_type=m.TRAIN, dst_node_id=n) for n in chosen]
    replies, rejected, seen, up_of = [], 0, set(), {}
    for reply in grid.send_and_receive(messages, timeout=config.timeout_s):
        node = reply.metadata.src_node_id
        try:
            if reply.has_error():
                raise ValueError(f"client error: {reply.error.reason.splitlines()[0][:200]}")
            if node in seen or node not in keys:
                raise ValueError("duplicate or unknown sender")
            if compression.active:
                if COMPRESSED not in reply.content:
                    raise ValueError("reply lacks the compressed update")
                weights, up = rebuild_weights(reply.content[COMPRESSED], compression, global_weights)
                del reply.content[COMPRESSED]  # Flower's strategies expect exactly one ArrayRecord
                reply.content[m.ARRAYS] = ArrayRecord(weights)
            else:
                up = _record_bytes(reply.content[m.ARRAYS]) if m.ARRAYS in reply.content else 0
            m.check_train_reply(reply.content, shapes)
            _check_work(reply.content[m.METRICS])
            if node in epochs_of and int(reply.content[m.METRICS].get(m.LOCAL_EPOCHS, -1)) != epochs_of[node]:
                raise ValueError(f"trained {reply.content[m.METRICS].get(m.LOCAL_EPOCHS)!r} epochs, asked {epochs_of[node]}")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("round %d: rejected update from client %s: %s", server_round, keys.get(node, node), exc)
            rejected += 1
            continue
        seen.add(node)
        replies.append(reply)
        up_of[node] = up
    if not replies:
        raise RuntimeError(f"round {server_round}: no valid client update")
    return replies, rejected, up_of


def make_server_app(config: FederationConfig, out_dir: str | Path, *, expected_clients: int,
                    evaluate: Callable[[Detector], dict], resume: bool = False,
                    on_round: Callable[[RoundRecord], None] | None = None,
                    result: list | None = None, decrypt=None) -> ServerApp:
    """A ServerApp running :func:`run_federation` with settings given in Python (simulation)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        state = run_federation(grid, config, out_dir, expected_clients=expected_clients, evaluate=evaluate,
                               resume=resume, on_round=on_round, decrypt=decrypt)
        if result is not None:
            result.append(state)

    return app


def _deployment_main(grid: Grid, context: Context) -> None:
    """Deployment engine entry point: settings come from the Flower run config (``flwr run``)."""
    from fedids.data.loader import load_flows
    from fedids.task import evaluate_rows, prepare

    run_config = dict(context.run_config)
    config = FederationConfig.from_run_config(run_config)
    test_frame = load_flows([str(run_config["test-data"])]).frame
    data = prepare(test_frame, window=config.window, test_fraction=0.5, split=str(run_config.get("split", "time")))
    rows = np.arange(len(data.labels))  # the whole file is the server's held-out test set

    def evaluate(detector: Detector) -> dict:
        return evaluate_rows(detector, data, rows)

    run_federation(grid, config, str(run_config.get("out-dir", "fedids-run")),
                   expected_clients=config.min_clients, evaluate=evaluate)


app = ServerApp()
app.main()(_deployment_main)
