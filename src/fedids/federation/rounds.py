"""The round loop of the central server, the same in every privacy mode.

:func:`run_federation` is ``start`` (wait for clients, sum their statistics, derive the setup), then per
round ``select -> send and securely sum -> server step -> evaluate -> checkpoint``, then head calibration
and publishing the final model (:mod:`fedids.federation.finish`). Each step is a small function below.

Every averaging strategy (FedAvg, FedAvgM, FedProx) runs through one pipeline
(:mod:`fedids.federation.aggregation`): each selected client's update becomes a weighted *proposal* in a
sum-able vector; a backend adds the vectors (numpy, BFV, SecAgg, BFV + SecAgg); the sum is the next global
model (distributed DP-SGD: the step on their sum). The plaintext mode's server builds the vectors from the
clients' models (so it can validate each one, decompress, keep the energy ledger); in the private modes
the clients build and seal them. Where the mode hides the sum (``he``), the server keeps the sealed sums
of the last two rounds and clients open them. Robust strategies (Krum, FedMedian, FedTrimmedAvg) need
each update: plaintext only (FederationConfig refuses them with a privacy mode)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedids.federation import aggregation as agg
from fedids.federation import bounds, plain, sites
from fedids.federation import messages as m
from fedids.federation.client import local_training_rows
from fedids.federation.compression import Compression
from fedids.federation.config import FederationConfig
from fedids.federation.private import REAL, PrivacyMode, SealedSum, SumResult
from fedids.federation.resume import restore
from fedids.federation.robust import RobustSpec, update_defence
from fedids.federation.secure_rounds import private_setup, secure_sum
from fedids.federation.setup import RunSetup, setup_from_counts
from fedids.federation.state import (
    GLOBAL_DIR,
    SUMMARY_KEYS,
    FederationState,
    GlobalModel,
    RoundRecord,
    save_checkpoint,
    write_state,
)
from fedids.federation.strategies import make_strategy
from fedids.model.artifacts import Detector, save_detector
from fedids.model.train import get_weights, set_weights
from fedids.privacy.dp import PrivacyBudgetExceeded, distributed_noise_std
from fedids.privacy.keys import load_public_context
from fedids.task import environment, new_model

log = logging.getLogger("fedids.server")
Opener = Callable[[SealedSum, int], np.ndarray]
"""The operator's evaluator for ``he`` modes: opens a sealed sum (it holds a *client* key, never the server)."""


@dataclass
class Run:
    """Everything a round needs that does not change between rounds."""

    grid: Grid
    config: FederationConfig
    mode: PrivacyMode
    out_dir: Path
    keys: dict[int, str]  # node id -> client key
    labels: list[str]  # the vocabulary (the server learns it in every mode)
    setup: RunSetup | None  # None where the server may not see the summed statistics
    digest: str
    layout: agg.UpdateLayout
    he_public: bytes | None
    opener: Opener | None
    evaluate: Callable[[Detector], dict]
    plain_counts: dict[int, np.ndarray] = field(default_factory=dict)  # plaintext mode: node -> class counts
    train_rows_of: dict[str, int] = field(default_factory=dict)  # plaintext mode: key -> rows it trains on
    profiles: dict[str, str] = field(default_factory=dict)
    sites: dict[int, int] = field(default_factory=dict)  # node -> site (three tiers; empty: flat)
    relayed: bool = False  # deployed sites: each node is a site aggregator answering with a partial sum

    @property
    def summed(self) -> bool:
        """Every exchange is a sum of vectors (private modes, and any run whose nodes are sites)."""
        return self.mode.private or self.relayed

    @property
    def per_node(self) -> int:
        """The most contributions one node's vector sums: a deployed site's devices, else 1."""
        return max(1, self.config.site_devices) if self.relayed else 1

    def detector(
        self, weights: list[np.ndarray], metadata: dict, prototypes: tuple | None = None
    ) -> Detector | None:
        """The run's detector for these weights; ``prototypes``: the final model's prototype head, weights
        and offsets (:func:`fedids.federation.calibration.moments_prototypes`)."""
        if self.setup is None:
            return None
        model = new_model(len(self.labels), self.config.hidden)
        set_weights(model, weights)
        if prototypes is not None:
            model.set_prototypes(*prototypes, gated=True)  # threshold: the linear head's score
        return Detector(model, self.setup.scaler, self.setup.vocabulary, self.config.window, metadata)


# ------------------------------------------------------------------------------------ start
def start(
    grid: Grid,
    config: FederationConfig,
    out_dir: Path,
    expected_clients: int,
    evaluate: Callable[[Detector], dict],
    opener: Opener | None,
    relayed: bool = False,
) -> Run:
    """Wait for the clients, sum their statistics and derive the run's setup (``relayed``: the clients are
    deployed site aggregators, :mod:`fedids.federation.site_app`, so every exchange is a sum)."""
    mode = PrivacyMode.parse(config.privacy)
    he_public = load_public_context(config.he_public_context) if mode.he else None
    nodes = plain.wait_for_nodes(grid, expected_clients, config.timeout_s)
    plain_counts, train_rows_of, profiles = {}, {}, {}
    if not (mode.private or relayed):
        keys, rows_of, stats, label_counts, labels_of, profiles = plain.collect_stats(
            grid, nodes, config.timeout_s
        )
        setup = setup_from_counts(stats, label_counts)
        plain_counts = {
            n: np.array([labels_of[k].get(lab, 0) for lab in setup.vocabulary.labels])
            for n, k in keys.items()
        }
        train_rows_of = local_training_rows(rows_of, labels_of)
        labels, digest = list(setup.vocabulary.labels), setup.digest()
    else:
        keys, setup, labels, digest = private_setup(grid, mode, nodes, config, he_public, opener)
    if setup is not None and setup.unknown_rows:
        log.warning(
            "%d rows carry a label outside the known label universe and are left out", setup.unknown_rows
        )
    shapes = tuple(tuple(w.shape) for w in get_weights(new_model(len(labels), config.hidden)))
    return Run(
        grid,
        config,
        mode,
        out_dir,
        keys,
        labels,
        setup,
        digest,
        agg.UpdateLayout(shapes),
        he_public,
        opener,
        evaluate,
        plain_counts,
        train_rows_of,
        profiles,
        relayed=relayed,
    )


# ------------------------------------------------------------------------------------ rounds
def select(run: Run, server_round: int, ledger, model_bytes: int) -> tuple[list[int], dict[int, int]]:
    """The round's clients (and, under the energy ledger, their local epochs)."""
    config = run.config
    if config.energy_managed:
        return plain.select_adaptive(ledger, run.keys, config, server_round, model_bytes)
    return plain.sample_clients(
        run.keys, config.fraction_train, config.min_clients, config.seed, server_round
    ), {}


def train_config(run: Run, server_round: int, chosen: list[int], accountant) -> dict:
    """What a training message configures (:class:`~fedids.federation.messages.TrainInstructions`)."""
    c, mode = run.config, run.mode
    server_lr, server_momentum = c.server_step
    clip_norm, noise_std = (c.update_bound if mode.sealed else 0.0), 0.0  # update bound (bounds.py); dp
    if mode.dp:
        # Under SecAgg the noise shares are sized for the threshold: the sum keeps sigma*C if most drop (a
        # sum with fewer survivors aborts). Otherwise (sites included: a site sees its devices' updates) the
        # reader sees each update: each carries all the noise.
        n = secagg_threshold(len(chosen)) if mode.secagg and not run.sites else 1
        clip_norm = c.clip_norm
        noise_std = distributed_noise_std(accountant.noise_multiplier, c.clip_norm, n)
    # Distributed DP-SGD: noise shares sized for the SecAgg threshold, like dp's above.
    shares = secagg_threshold(len(chosen)) if c.dpsgd_distributed else 0
    equal = mode.dp or c.dpsgd_distributed  # a sum whose noise is shared needs equal, fixed weights
    return m.TrainInstructions(
        labels=tuple(run.labels),
        window=c.window,
        hidden=c.hidden,
        privacy=mode.name,
        server_lr=server_lr,
        setup_digest=run.digest,
        server_round=server_round,
        rounds=c.rounds,
        local_epochs=c.dpsgd_local_epochs if c.dpsgd else c.local_epochs,
        batch_size=c.batch_size,
        lr=c.lr,
        seed=c.seed,
        # DP-SGD's per-window sensitivity bound holds only with the plain softmax (fedids.privacy.dpsgd).
        absent_logit_scale=1.0 if c.dpsgd else c.absent_logit_scale,
        proximal_mu=c.proximal_mu if c.strategy == "fedprox" else 0.0,
        server_momentum=server_momentum,
        # DP needs equal weights and whole-update averaging for its sensitivity bound.
        client_weighting="equal" if equal else c.client_weighting,
        head_aggregation="examples" if equal else c.head_aggregation,
        compression=c.compression,
        dpsgd_noise=c.dpsgd_noise_multiplier,
        dpsgd_target_epsilon=c.dpsgd_target_epsilon,
        dpsgd_clip=c.dpsgd_clip_norm,
        dpsgd_delta=c.target_delta,
        dpsgd_batch_size=c.dpsgd_batch,
        dpsgd_lr=c.dpsgd_distributed_lr if c.dpsgd_distributed else c.dpsgd_lr,
        dpsgd_noise_shares=shares,
        dpsgd_release_noise=c.dpsgd_calibration_noise if c.calibration == "ccvr" else 0.0,
        clip_norm=clip_norm,
        noise_std=noise_std,
    ).to_config()


def secagg_threshold(n: int) -> int:
    from fedids.privacy.secagg import SecAggConfig

    return SecAggConfig(n_clients=n, vector_length=1).t


def model_content(
    run: Run, models: dict[str, GlobalModel | None], config: dict, extra_sealed: dict | None = None
) -> RecordDict:
    """A message carrying the global model(s): plaintext arrays where the server holds them, else sealed
    (with, under ``he``, the sealed calibration sums of the final model and any ``extra_sealed``)."""
    content = RecordDict({m.CONFIG: ConfigRecord(config)})
    if run.setup is not None and not run.mode.he:
        prep, entries = m.setup_entries(run.setup)
        content[m.PREPROCESSING] = prep
        content[m.CONFIG] = ConfigRecord({**config, **entries})
    sealed = dict(extra_sealed or {})
    for name, plain_key in (("current", m.ARRAYS), ("previous", m.PREVIOUS)):
        model = models.get(name)
        if model is None:
            continue
        if model.sealed is not None:
            sealed[name] = model.sealed
        elif model.plain is not None:
            content[plain_key] = ArrayRecord(model.plain)
    current = models.get("current")
    if current is not None and current.calibration:
        sealed |= current.calibration
    return m.add_sealed(content, sealed)


@dataclass
class RoundOutcome:
    current: GlobalModel
    summary: dict  # metrics of the round (means), where the server may read them
    survivors: int
    rejected: int
    bytes_down: int
    bytes_up: int
    server_seconds: float
    participants: dict | None = None
    replies: list[Message] = field(default_factory=list)
    tiers: dict | None = None  # three tiers: bytes and seconds per tier (fedids.federation.sites.TierRecord)


def train_round(
    run: Run,
    server_round: int,
    chosen: list[int],
    epochs_of: dict[int, int],
    models: dict[str, GlobalModel | None],
    accountant,
    ledger,
    strategy,
) -> RoundOutcome:
    """Send the global model, have the chosen clients train, and sum what they return."""
    config = train_config(run, server_round, chosen, accountant)
    if not run.summed:
        return _plain_round(run, server_round, chosen, epochs_of, models, config, ledger, strategy)
    if run.sites:
        return _tiered_round(run, server_round, chosen, models, config)
    result, _ = secure_sum(
        run.grid,
        mode=run.mode,
        nodes=chosen,
        message_type=m.TRAIN,
        make_content=lambda n: model_content(run, models, config),
        length=run.layout.length,
        values=REAL,
        he_public=run.he_public,
        timeout=run.config.timeout_s,
        parties_per_node=run.per_node,
    )
    return _outcome(run, server_round, result, models, config)


def _tiered_round(run: Run, server_round: int, chosen: list[int], models, config: dict) -> RoundOutcome:
    """A private round through the sites (:func:`fedids.federation.sites.tiered_sum`)."""
    result, _, tiers = sites.tiered_sum(
        run.grid,
        mode=run.mode,
        site_of=run.sites,
        nodes=chosen,
        message_type=m.TRAIN,
        make_content=lambda n: model_content(run, models, config),
        length=run.layout.length,
        values=REAL,
        he_public=run.he_public,
        timeout=run.config.timeout_s,
        combine=_defence(run, models),
        check=bounds.site_check(run.layout, config, models),  # sealed runs: each device's vector in range
        device_secagg=run.config.site_secagg,
    )
    return _outcome(run, server_round, result, models, config, _tiers_by_key(run, tiers))


def _tiers_by_key(run: Run, record: sites.TierRecord) -> dict:
    """A round's tier record, the devices a site defence left out named by client key."""
    tiers = record.to_dict()
    name_devices(run, tiers["robust"])
    return tiers


def name_devices(run: Run, defences: list[dict]) -> list[dict]:
    """The sites' defence records with the devices they list (:data:`sites.DEVICE_LISTS` and ``nodes``:
    Flower node ids, which mean nothing outside the run) named by client key, in place."""
    for defence in defences:
        for key in (*sites.DEVICE_LISTS, "nodes"):
            if key in defence:
                defence[key] = [run.keys.get(n, str(n)) for n in defence[key]]
    return defences


def _outcome(
    run: Run, server_round: int, result, models, config: dict, tiers: dict | None = None
) -> RoundOutcome:
    """The server's step on a round's sum, with the round's counts (a round without a valid sum fails)."""
    if not result.ok:
        raise RuntimeError(f"round {server_round}: no valid client update")
    current, summary = server_step(run, result, models, config)
    counts = (
        len(result.survivors),
        result.rejected,
        result.bytes_down,
        result.bytes_up,
        result.server_seconds,
    )
    return RoundOutcome(current, summary, *counts, tiers=tiers)


def _defence(run: Run, models) -> sites.Combine | None:
    """The sites' defence of their devices' updates (None without ``--robust``), measuring each update from
    the global model after the server's momentum step where the site can read the global model (under
    ``he`` it cannot: the site measures from its devices' median)."""
    spec = RobustSpec.parse(run.config.robust)
    if not spec.active:
        return None
    current, previous, reference = models["current"], models.get("previous"), None
    if current.plain is not None and not run.mode.he:
        server_lr, server_momentum = run.config.server_step
        old = previous.plain if previous is not None else None
        reference = bounds.unmoved_reference(run.layout, current.plain, old, server_lr, server_momentum)
    return update_defence(run.layout, spec, reference)


def server_step(run: Run, result: SumResult, models, config: dict) -> tuple[GlobalModel, dict]:
    """The next global model from a sum: finalised here where the mode shows the sum, else kept sealed
    (and opened by the operator's evaluator, when there is one, for the server-side test only)."""
    total = result.plaintext
    if total is None and run.opener is not None and result.sealed is not None:
        total = run.opener(result.sealed, run.layout.length)
    bounds.check_round_sum(
        run.layout, total, config, models, len(result.survivors) * run.per_node, result.atol
    )
    aggregate = None
    if total is not None and run.config.dpsgd_distributed:  # one step on the pooled batch: the sum
        old = models["previous"].plain if models.get("previous") is not None else None
        step = (models["current"].plain, old, *run.config.server_step)
        aggregate = agg.finalize_pooled_step(run.layout, total, *step)
    elif total is not None:
        aggregate = agg.finalize_update(run.layout, total)
    summary = aggregate.mean_metrics() if aggregate is not None else {}
    plain_weights = aggregate.weights if aggregate is not None else None
    return GlobalModel(plain_weights, result.sealed), summary


def _plain_round(run, server_round, chosen, epochs_of, models, config, ledger, strategy) -> RoundOutcome:
    current = models["current"].plain
    compression = Compression.parse(run.config.compression)

    def make_content(node: int, extra: dict) -> RecordDict:
        return model_content(run, {"current": models["current"]}, {**config, **extra})

    waited = time.perf_counter()
    replies, rejected, up_of = plain.collect_plain(
        run.grid,
        chosen,
        make_content,
        run.keys,
        list(run.layout.shapes),
        run.config,
        server_round,
        epochs_of,
        compression,
        current,
    )
    waited = time.perf_counter() - waited
    replies.sort(key=lambda r: run.keys[r.metadata.src_node_id])
    model_bytes = sum(w.nbytes for w in current)
    participants = plain.charge(ledger, replies, run.keys, model_bytes, up_of)
    summary = {
        "train_loss": plain.weighted_mean(replies, m.TRAIN_LOSS),
        "local_val_macro_f1": _nanmean(
            [
                float(m.number(r.content[m.METRICS], m.LOCAL_F1))
                for r in replies
                if m.LOCAL_F1 in r.content[m.METRICS]
            ]
        ),
        "client_seconds": plain.mean_metric(replies, m.TRAIN_SECONDS),
        "dpsgd_epsilon": plain.max_metric(replies, m.DPSGD_EPSILON),
    }
    server_start, tiers = time.perf_counter(), None
    if run.sites:  # each site combines its own devices' contributions, the central server the sites'
        lan = sites.Tier(model_bytes * len(chosen), sum(up_of.values()), waited)
        vectors = plain.plain_vectors(run, replies, models, config)
        total, record = sites.plain_site_sum(
            run.layout,
            vectors,
            run.sites,
            combine=_defence(run, models),
            lan=lan,
            model_bytes=model_bytes,
        )
        new, tiers = agg.finalize_update(run.layout, total).weights, _tiers_by_key(run, record)
    elif run.config.averaging:
        new = agg.finalize_update(run.layout, plain.plain_sum(run, replies, models, config)).weights
    else:  # robust strategies need each update: Flower's own aggregation
        new_arrays, _ = strategy.aggregate_train(server_round, replies)
        new = [a.numpy() for a in new_arrays.values()]
    server_seconds = time.perf_counter() - server_start
    return RoundOutcome(
        GlobalModel(new),
        summary,
        len(replies),
        rejected,
        tiers["wan"]["bytes_down"] if tiers else model_bytes * len(chosen),
        tiers["wan"]["bytes_up"] if tiers else sum(up_of.values()),
        server_seconds,
        participants,
        replies,
        tiers,
    )


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


# ------------------------------------------------------------------------------- the loop
def run_federation(
    grid: Grid,
    config: FederationConfig,
    out_dir: str | Path,
    *,
    expected_clients: int,
    evaluate: Callable[[Detector], dict],
    resume: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
    opener: Opener | None = None,
    sites_of: Mapping[str, int] | None = None,
    relayed: bool = False,
) -> FederationState:
    """Run (or resume) a federated training; see the module docstring. Returns the final state.

    ``opener`` is the operator's evaluator for ``he`` modes: it holds a *client* key and opens the sealed
    sums for the server-side test and the saved model. The round loop and the sums never see a secret key.
    ``sites_of``: client key -> site for a three-tier run (``config.sites >= 2``; default: contiguous).
    ``relayed``: the nodes are deployed site aggregators that answer with their devices' partial sums.
    """
    from fedids.federation import finish, screening

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = start(grid, config, out_dir, expected_clients, evaluate, opener, relayed)
    run.sites = {} if relayed else sites.node_sites(run.keys, config.sites, sites_of)
    if run.mode.he and opener is None:
        log.warning(
            "no evaluator key: the encrypted global model is neither evaluated nor saved in plaintext"
        )
    state, models, accountant, ledger = restore(run, resume)
    strategy, screener = make_strategy(config.strategy, proximal_mu=config.proximal_mu), screening.Screener()
    for server_round in range(state.completed_round + 1, config.rounds + 1):
        if _stop_for_budget(run, state, accountant):
            break
        started = time.perf_counter()
        model_bytes = 4 * run.layout.model_size
        chosen, epochs_of = select(run, server_round, ledger, model_bytes)
        if not chosen:
            state.stopped = f"energy budget exhausted: no client can pay for round {server_round}"
            log.warning("%s", state.stopped)
            write_state(out_dir, state)
            break
        chosen, screened = screener.leave_out_disputed(run, server_round, models, chosen)  # --robust sites
        outcome = train_round(run, server_round, chosen, epochs_of, models, accountant, ledger, strategy)
        if screened is not None and outcome.tiers is not None:
            outcome.tiers["screening"] = screened
        if accountant is not None:
            accountant.step()
        models = {"current": outcome.current, "previous": models["current"]}
        record = _evaluate_round(run, server_round, outcome, accountant, time.perf_counter() - started)
        _checkpoint(run, state, server_round, models, record, accountant, ledger)
        if on_round:
            on_round(record)
    if config.calibration == "ccvr" and state.history:
        models["current"], state.calibration = finish.calibrate(run, models, accountant)
        if accountant is not None:  # client-level dp: the calibration releases are in the final epsilon
            state.calibration["epsilon"] = accountant.epsilon(config.target_delta)
        write_state(out_dir, state)
        finish.save_final(run, models["current"], state)
    finish.publish(run, models)
    return state


def _stop_for_budget(run: Run, state: FederationState, accountant) -> bool:
    if accountant is None or not run.config.target_epsilon:
        return False
    try:
        accountant.check_budget(run.config.target_epsilon, run.config.target_delta)
    except PrivacyBudgetExceeded as exc:
        log.warning("%s", exc)
        state.stopped = str(exc)
        write_state(run.out_dir, state)
        return True
    return False


def _evaluate_round(
    run: Run, server_round: int, outcome: RoundOutcome, accountant, seconds: float
) -> RoundRecord:
    metadata = {
        "mode": "federated",
        "environment": environment(),
        "config": asdict(run.config),
        "clients": len(run.keys),
        "round": server_round,
    }
    detector = run.detector(outcome.current.plain, metadata) if outcome.current.plain is not None else None
    test = run.evaluate(detector) if detector is not None else {k: float("nan") for k in SUMMARY_KEYS}
    s = outcome.summary
    return RoundRecord(
        round=server_round,
        clients=outcome.survivors,
        rejected=outcome.rejected,
        train_loss=float(s.get("train_loss", float("nan"))),
        local_val_macro_f1=float(s.get("local_val_macro_f1", float("nan"))),
        test={k: test[k] for k in SUMMARY_KEYS},
        seconds=seconds,
        bytes_down=int(outcome.bytes_down),
        bytes_up=int(outcome.bytes_up),
        privacy=run.mode.name,
        epsilon=accountant.epsilon(run.config.target_delta) if accountant is not None else None,
        client_seconds=s.get("client_seconds"),
        client_privacy_seconds=s.get("client_privacy_seconds"),
        dpsgd_epsilon=s.get("dpsgd_epsilon"),
        energy_j=sum(p["energy_j"] for p in outcome.participants.values())
        if outcome.participants is not None
        else None,
        participants=outcome.participants,
        server_seconds=outcome.server_seconds,
        tiers=outcome.tiers,
    )


def _checkpoint(
    run: Run, state: FederationState, server_round: int, models, record: RoundRecord, accountant, ledger
) -> None:
    """Checkpoint first, then the state that points at it, then the model the detector reloads."""
    sealed = save_checkpoint(run.out_dir, server_round, models)
    state.completed_round = server_round
    entry = asdict(record)
    if entry["tiers"] is None:  # a flat run records what it always has
        del entry["tiers"]
    state.history.append(entry)
    state.privacy = {"accountant": accountant.state_dict() if accountant else None, "sealed": sealed}
    state.adaptive = ledger.state_dict() if ledger is not None else {}
    write_state(run.out_dir, state)
    if models["current"].plain is not None and run.setup is not None:
        metadata = {
            "mode": "federated",
            "config": asdict(run.config),
            "round": server_round,
            "test_metrics": record.test,
        }
        detector = run.detector(models["current"].plain, metadata)
        if detector is not None:
            save_detector(run.out_dir / GLOBAL_DIR, detector)
