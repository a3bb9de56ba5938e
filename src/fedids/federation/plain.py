"""The plaintext mode's side of a round, and what every mode shares before the first round.

Plaintext replies carry each client's model and metrics: the server validates each on arrival, can run a
robust Flower strategy on them, rebuild compressed updates, and charge the energy ledger
(:mod:`fedids.federation.adaptive`). Averaging strategies then hand the replies to the same secure-sum
pipeline as the private modes (:func:`fedids.federation.rounds.train_round`).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedids.data.preprocess import LOG_EDGES, FeatureStats
from fedids.data.schema import FEATURES
from fedids.federation import adaptive
from fedids.federation import aggregation as agg
from fedids.federation import messages as m
from fedids.federation.client import derive_seed
from fedids.federation.compression import COMPRESSED, Compression, rebuild_weights
from fedids.federation.config import FederationConfig
from fedids.federation.policy import PrivacyPolicy
from fedids.federation.private import PrivacyMode
from fedids.privacy.dp import PrivacyAccountant

log = logging.getLogger("fedids.server")


def wait_for_nodes(grid: Grid, n: int, timeout_s: float) -> list[int]:
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
    messages = [
        Message(RecordDict({m.CONFIG: ConfigRecord({})}), message_type=m.QUERY_STATS, dst_node_id=n)
        for n in nodes
    ]
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
        claim = m.config_record(reply.content, m.INFO).get(m.DEVICE_PROFILE)
        reported[key] = str(claim) if claim else None
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


def sample_clients(
    keys: dict[int, str], fraction: float, minimum: int, seed: int, server_round: int
) -> list[int]:
    """Nodes for one round: a seeded sample over client keys (not node ids, which change between runs)."""
    ordered = sorted(keys, key=keys.__getitem__)
    k = min(len(ordered), max(minimum, math.ceil(fraction * len(ordered))))
    rng = np.random.default_rng(derive_seed(seed, "sample", server_round))
    return [ordered[i] for i in sorted(rng.choice(len(ordered), size=k, replace=False))]


def make_accountant(
    config: FederationConfig, mode: PrivacyMode, keys: dict[int, str]
) -> PrivacyAccountant | None:
    if not mode.dp:
        return None
    # Clients are selected by a seeded draw the server controls, not by Poisson sampling with randomness
    # it neither chooses nor learns: a client cannot rely on not being picked, so no amplification is
    # claimed (sample rate 1). Sigma is the one every client's policy requires (fedids.federation.policy:
    # fixed, or calibrated for the planned rounds and the head calibration's releases).
    sample_rate = 1.0
    sigma = PrivacyPolicy.from_config(config).client_noise_multiplier()
    if not config.noise_multiplier:
        log.info(
            "noise multiplier %.4f calibrated for epsilon %.3g over %d rounds",
            sigma,
            config.target_epsilon,
            config.rounds,
        )
    return PrivacyAccountant(sigma, sample_rate)


def _metrics(reply: Message) -> MetricRecord:
    return m.metric_record(reply.content, m.METRICS)


def weighted_mean(replies: list[Message], key: str) -> float:
    """Example-weighted mean of ``key`` over the replies that report it (NaN if none does)."""
    pairs = [
        (float(m.number(_metrics(r), key)), int(m.number(_metrics(r), m.NUM_EXAMPLES)))
        for r in replies
        if key in _metrics(r)
    ]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else float("nan")


def max_metric(replies: list[Message], key: str) -> float | None:
    values = [float(m.number(_metrics(r), key)) for r in replies if key in _metrics(r)]
    return max(values) if values else None


def mean_metric(replies: list[Message], key: str) -> float | None:
    values = [float(m.number(_metrics(r), key)) for r in replies if key in _metrics(r)]
    return float(np.mean(values)) if values else None


def select_adaptive(
    ledger: adaptive.EnergyLedger,
    keys: dict[int, str],
    config: FederationConfig,
    server_round: int,
    model_bytes: int,
) -> tuple[list[int], dict[int, int]]:
    """Clients and their local epochs for one round under the energy ledger (see fedids.federation.adaptive).

    Uploads not yet reported are estimated at the full model size, the most a client sends.
    """
    k = min(len(keys), max(config.min_clients, math.ceil(config.fraction_train * len(keys))))
    least = 1 if config.max_local_epochs else config.local_epochs
    chosen = adaptive.select_clients(
        ledger,
        keys,
        k=k,
        rule=config.selection,
        epochs=least,
        seed=config.seed,
        server_round=server_round,
        bytes_down=model_bytes,
        full_up=model_bytes,
    )
    if not config.max_local_epochs:
        return chosen, {}
    rounds_left = config.rounds - server_round + 1
    return chosen, {
        n: ledger.epochs_for(keys[n], rounds_left, config.max_local_epochs, model_bytes, model_bytes)
        for n in chosen
    }


def charge(
    ledger: adaptive.EnergyLedger,
    replies: list[Message],
    keys: dict[int, str],
    model_bytes: int,
    up_of: dict[int, int],
) -> dict:
    """Charge every accepted reply to the ledger; returns the round's ``participants`` record."""
    out = {}
    for reply in replies:
        node, metrics = reply.metadata.src_node_id, _metrics(reply)
        key = keys[node]
        epochs = int(m.optional_number(metrics, m.LOCAL_EPOCHS, 1))
        examples = int(m.optional_number(metrics, m.TRAIN_EXAMPLES, ledger.accounts[key].examples))
        joules = ledger.charge(
            key, epochs=epochs, examples=examples, bytes_down=model_bytes, bytes_up=up_of[node]
        )
        out[key] = {"epochs": epochs, "examples": examples, "bytes_up": int(up_of[node]), "energy_j": joules}
    return out


def check_work(metrics) -> None:
    """The work a client reports (charged to its energy account) must be plausible: whole numbers,
    examples >= 0 and epochs >= 1 (a negative figure would refund energy)."""
    examples, epochs = metrics.get(m.TRAIN_EXAMPLES, 0), metrics.get(m.LOCAL_EPOCHS, 1)
    if not isinstance(examples, int) or not isinstance(epochs, int) or examples < 0 or epochs < 1:
        raise ValueError(f"implausible work reported: {examples!r} examples, {epochs!r} epochs")


def collect_plain(
    grid: Grid,
    chosen: list[int],
    make_content,
    keys: dict[int, str],
    shapes,
    config,
    server_round,
    epochs_of: dict[int, int],
    compression: Compression,
    global_weights: list[np.ndarray],
):
    """Send the training messages and validate the replies: returns (accepted, rejected count, node ->
    bytes uploaded). A compressed update is rebuilt into full weights (``global + update``) first, so
    the same checks and every strategy apply to it."""
    messages = [
        Message(
            make_content(n, {"local-epochs": epochs_of[n]} if n in epochs_of else {}),
            message_type=m.TRAIN,
            dst_node_id=n,
        )
        for n in chosen
    ]
    replies, rejected, seen, up_of = [], 0, set(), {}
    for reply in grid.send_and_receive(messages, timeout=config.timeout_s):
        node = reply.metadata.src_node_id
        try:
            if reply.has_error():
                raise ValueError(f"client error: {m.error_reason(reply)}")
            if node in seen or node not in keys:
                raise ValueError("duplicate or unknown sender")
            if compression.active:
                if COMPRESSED not in reply.content:
                    raise ValueError("reply lacks the compressed update")
                weights, up = rebuild_weights(reply.content[COMPRESSED], compression, global_weights)
                del reply.content[COMPRESSED]  # Flower's strategies expect exactly one ArrayRecord
                reply.content[m.ARRAYS] = ArrayRecord(weights)
            else:
                up = (
                    m.record_bytes(m.array_record(reply.content, m.ARRAYS))
                    if m.ARRAYS in reply.content
                    else 0
                )
            m.check_train_reply(reply.content, shapes)
            metrics = _metrics(reply)
            check_work(metrics)
            if node in epochs_of and int(m.optional_number(metrics, m.LOCAL_EPOCHS, -1)) != epochs_of[node]:
                raise ValueError(f"trained {metrics.get(m.LOCAL_EPOCHS)!r} epochs, asked {epochs_of[node]}")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "round %d: rejected update from client %s: %s", server_round, keys.get(node, node), exc
            )
            rejected += 1
            continue
        seen.add(node)
        replies.append(reply)
        up_of[node] = up
    if not replies:
        raise RuntimeError(f"round {server_round}: no valid client update")
    return replies, rejected, up_of


def plain_sum(run, replies: list[Message], models, config: dict) -> np.ndarray:
    """The sum of the vectors the private clients would seal, built by the server from plaintext replies."""
    total = np.zeros(run.layout.length)
    for vector in plain_vectors(run, replies, models, config).values():
        total += vector
    return total


def plain_vectors(run, replies: list[Message], models, config: dict) -> dict[int, np.ndarray]:
    """Node -> the vector the private client would seal, built from its plaintext reply (the instructions
    and the server momentum are the round's, read once); in reply order."""
    ins = m.TrainInstructions.from_config(config)
    if run.setup is None:
        raise RuntimeError("a plaintext round needs the run's setup")
    current, previous = models["current"].plain, models.get("previous")
    momentum = agg.momentum_between(previous.plain if previous else None, current, ins.server_lr)
    vectors = {}
    for reply in replies:
        local = [a.numpy() for a in m.array_record(reply.content, m.ARRAYS).values()]
        proposal = agg.propose(
            current, momentum, local, server_lr=ins.server_lr, server_momentum=ins.server_momentum
        )
        weight, shares = agg.client_shares(
            run.plain_counts[reply.metadata.src_node_id],
            run.setup.class_totals,
            run.setup.class_weights,
            weighting=ins.client_weighting,
            class_head=ins.head_aggregation == "class",
        )
        vectors[reply.metadata.src_node_id] = agg.update_contribution(
            run.layout, proposal, weight, shares, {}
        )
    return vectors
