"""What one IoT gateway does with each message: turns messages into :mod:`fedids.task` calls and vectors.

Raw flows never leave this process. In every mode the client answers with vectors for the secure sum
(:mod:`fedids.federation.aggregation`), sealed as its mode says (:func:`seal`); in the plaintext mode the
training reply also carries the local model itself, so the server can run robust strategies, compression
and the energy ledger. Nothing here imports the server side.

Where the mode hides sums from the server (``he``), the client opens them itself: the statistics sum
(:func:`handle_setup`, cached in the node's state), the last two global sums of training (the global
model and, from their difference, the server momentum), and the calibration sums (moments, confusion
matrices) that decide the final head.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np
import pandas as pd
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedids.data.preprocess import compute_feature_stats
from fedids.data.schema import BENIGN_LABEL
from fedids.data.windows import train_count
from fedids.federation import aggregation as agg
from fedids.federation import messages as m
from fedids.federation.attacks import Attack, attack_seed, poison_update
from fedids.federation.bounds import bound_client_proposal, check_opened_sum
from fedids.federation.compression import COMPRESSED, Compression, compress_reply
from fedids.federation.private import COUNT, REAL, PrivacyMode, open_sum
from fedids.federation.secagg_party import handle_secagg_stage, masked_input
from fedids.federation.setup import RunSetup, frame_stats_vector, own_class_counts, setup_from_sum
from fedids.model.artifacts import Detector, save_detector
from fedids.model.gru import GRUDetector
from fedids.model.train import TrainConfig, get_weights, set_weights
from fedids.task import (
    PreparedData,
    compute_label_counts,
    evaluate_rows,
    head_windows,
    new_model,
    prepare_client,
    train_rows,
)

LOCAL_VAL_FRACTION = 0.2
# The slice is the benign flows among each label's latest 20%, as `fedids train` holds out
# (fedids.task.prepare_client): it sets the alert threshold, a false-alarm budget only benign flows decide,
# and every attack flow trains. A plain time cut can put every flow of a rare class into validation; even a
# per-label cut took a fifth of a class a client sees in ten flows (issue 17, docs/rare-classes.md).
_SETUP_STATE = "fedids-setup"


def prepare_local(frame: pd.DataFrame, window: int) -> PreparedData:
    """This client's flows, time-ordered and windowed; ``test_rows`` its local validation slice
    (:func:`fedids.task.prepare_client`: the benign flows among each label's latest ``LOCAL_VAL_FRACTION``)."""
    return prepare_client(frame, window=window, validation_fraction=LOCAL_VAL_FRACTION)


def local_training_rows(rows: dict[str, int], labels: dict[str, dict[str, int]]) -> dict[str, int]:
    """How many rows each client (``rows``: its rows, ``labels``: its rows per label) trains on: all but the
    validation slice of :func:`prepare_local` (the latest ``LOCAL_VAL_FRACTION`` of its BENIGN rows)."""
    out = {}
    for key, n in rows.items():
        benign = labels[key].get(BENIGN_LABEL, 0)
        out[key] = n - (benign - train_count(benign, LOCAL_VAL_FRACTION))
    return out


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


# ------------------------------------------------------------------------------------ sealing
def seal(
    msg: Message, vector: np.ndarray, context: Context | None, secret_context: bytes | None
) -> RecordDict:
    """This client's vector for the sum ``msg`` asks for (:data:`~fedids.federation.messages.SUM`), sealed
    by the run's mode: in the clear, BFV-encrypted, SecAgg-masked, or masked and BFV-encrypted."""
    spec = m.config_record(msg.content, m.SUM)
    values, length = m.text(spec, "values"), int(m.number(spec, "length"))
    vector = np.asarray(vector, np.float64)
    if vector.shape != (length,) or values not in (REAL, COUNT):
        raise ValueError(f"vector of shape {vector.shape} for a {values} sum of length {length}")
    mode = PrivacyMode.parse(m.text(spec, "privacy"))
    if mode.secagg:
        return masked_input(msg, vector, context, secret_context, mode)
    if mode.he:  # fixed-point code of the sum's quantisation, BFV-encrypted (fedids.federation.private)
        from fedids.privacy.he_secagg import encrypt_masked
        from fedids.privacy.secagg import SecAggConfig, quantize

        quantisation = SecAggConfig.from_dict(
            {k[len("quant.") :]: spec[k] for k in spec if k.startswith("quant.")}
        )
        if quantisation.vector_length != length:
            raise ValueError("the sum's quantisation does not match its length")
        blob = encrypt_masked(_need(secret_context), quantize(vector, quantisation))
        return RecordDict({m.CONTRIBUTION: ArrayRecord({"ct": Array(np.frombuffer(blob, dtype=np.uint8))})})
    return RecordDict({m.CONTRIBUTION: ArrayRecord({"value": Array(vector)})})


def _need(secret_context: bytes | None) -> bytes:
    if secret_context is None:
        raise RuntimeError("this run is encrypted and this client has no HE key (he-secret-context)")
    return secret_context


# ------------------------------------------------------------------------------ setup round
def handle_stats(
    msg: Message,
    frame: pd.DataFrame,
    key: str,
    device_profile: str | None = None,
    context: Context | None = None,
    secret_context: bytes | None = None,
) -> Message:
    """The statistics of this client: a sealed count vector in a private mode (``msg`` asks for a sum),
    else the plaintext histogram, label counts and device profile."""
    if m.SUM in msg.content:  # the client key is an identifier (reproducible sampling), not data
        content = seal(msg, frame_stats_vector(frame), context, secret_context)
        content[m.INFO] = ConfigRecord({"client-key": key})
        return Message(content, reply_to=msg)
    from fedids.data.schema import FEATURES, LABEL

    stats = compute_feature_stats(frame[list(FEATURES)].to_numpy(dtype=np.float32))
    return m.stats_reply(msg, key, stats, compute_label_counts(frame[LABEL].to_numpy()), device_profile)


def handle_setup(msg: Message, context: Context, secret_context: bytes | None) -> Message:
    """``he``: open the sealed statistics sum, derive the run's setup, keep it in the node's state, and
    tell the server the vocabulary (to size the model) and the setup's digest (to check agreement)."""
    from fedids.federation.setup import STATS_LENGTH

    (stats,) = m.decode_sealed(msg.content, ("stats",)).values()
    setup = setup_from_sum(open_sum(stats, _need(secret_context), STATS_LENGTH))
    context.state[_SETUP_STATE] = m.encode_setup(setup)
    return Message(
        RecordDict(
            {
                m.INFO: ConfigRecord(
                    {
                        "labels": list(setup.vocabulary.labels),
                        "digest": setup.digest(),
                        "unknown-rows": setup.unknown_rows,
                    }
                )
            }
        ),
        reply_to=msg,
    )


def run_setup(msg: Message, context: Context | None) -> RunSetup:
    """The setup a message runs under: sent in the clear, or derived here from the sealed sum (``he``)."""
    if m.PREPROCESSING in msg.content:
        return m.decode_setup_message(msg.content)
    if context is None or _SETUP_STATE not in context.state:
        raise RuntimeError("encrypted run without a setup on this node (query.setup did not reach it)")
    setup = m.decode_setup(m.config_record(context.state, _SETUP_STATE))
    if m.ModelInstructions.from_config(m.config_record(msg.content, m.CONFIG)).setup_digest != setup.digest():
        raise RuntimeError("the server's setup digest does not match this node's setup")
    return setup


# --------------------------------------------------------------------------- global models
def global_models(
    msg: Message, n_classes: int, hidden: int, secret_context: bytes | None, server_lr: float
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """The global model a message carries and the server momentum (from the previous global model)."""
    shapes = [tuple(w.shape) for w in get_weights(new_model(n_classes, hidden))]
    layout = agg.UpdateLayout(tuple(shapes))
    sealed = m.decode_sealed(msg.content, ("current", "previous"))
    opened: dict[str, np.ndarray] = {}

    def resolve(name: str, plain_key: str) -> list[np.ndarray] | None:
        if name in sealed:
            opened[name] = open_sum(sealed[name], _need(secret_context), layout.length)
            return agg.finalize_update(layout, opened[name]).weights
        if plain_key in msg.content:
            arrays = [a.numpy() for a in m.array_record(msg.content, plain_key).values()]
            if [tuple(a.shape) for a in arrays] != shapes:
                raise ValueError("global model has the wrong shapes")
            return arrays
        return None

    current = resolve("current", m.ARRAYS)
    if current is None:
        raise ValueError("message carries no global model")
    previous = resolve("previous", m.PREVIOUS)
    if "current" in opened and previous is not None:  # he: check the sum before training on it (bounds.py)
        ins = m.ModelInstructions.from_config(m.config_record(msg.content, m.CONFIG))
        check_opened_sum(layout, opened["current"], previous, ins, sealed["current"].secagg)
    return current, agg.momentum_between(previous, current, server_lr)


# ---------------------------------------------------------------------------------- training
def _train_local(model, data: PreparedData, setup: RunSetup, ins: m.TrainInstructions, key: str):
    """Local training as the instructions say (plain, or DP-SGD); returns (result, DP-SGD epsilon or None)."""
    train_cfg = TrainConfig(
        epochs=ins.local_epochs,
        batch_size=ins.batch_size,
        lr=ins.lr,
        proximal_mu=ins.proximal_mu,
        absent_logit_scale=ins.absent_logit_scale,
        seed=derive_seed(ins.seed, ins.server_round, key),
    )
    torch.manual_seed(train_cfg.seed)
    rows = data.train_rows if len(data.train_rows) else np.arange(len(data.labels))
    weights = np.asarray(setup.class_weights, dtype=np.float32)
    scaled = setup.scaler.transform(data.features)
    if not ins.dpsgd:
        anchors = [p.detach().clone() for p in model.parameters()] if train_cfg.proximal_mu > 0 else None
        return train_rows(
            model,
            data,
            scaled,
            setup.vocabulary,
            rows,
            train_cfg,
            global_params=anchors,
            class_weights=weights,
        ), None
    # Sample-level DP-SGD (Opacus): the epsilon covers one flow window of this client's rows, over the
    # rounds so far (every round runs the same steps; fedids.privacy.dpsgd says why that composes).
    from fedids.privacy import dpsgd

    train_cfg = dataclasses.replace(train_cfg, batch_size=ins.dpsgd_batch_size, lr=ins.dpsgd_lr)
    targets = setup.vocabulary.encode(data.labels[rows])
    n_rows = max(int(np.sum(targets >= 0)), 1)
    rate = dpsgd.sample_rate(n_rows, train_cfg.batch_size)
    steps = train_cfg.epochs * dpsgd.steps_per_epoch(n_rows, train_cfg.batch_size)
    noise = ins.dpsgd_noise
    # The head calibration's two Gaussian releases of statistics of the same windows follow the last round
    # (fedids.federation.calibration_dp): budgeted from the start, counted in the last round's epsilon.
    from fedids.federation.calibration_dp import RELEASES

    releases = (ins.dpsgd_release_noise, RELEASES) if ins.dpsgd_release_noise > 0 else (0.0, 0)
    spent = releases if ins.server_round >= ins.rounds else (0.0, 0)
    if ins.dpsgd_noise_shares:
        return _distributed_dpsgd(model, data, setup, ins, train_cfg, scaled, weights, releases, spent)
    if ins.dpsgd_target_epsilon > 0:
        noise = dpsgd.calibrate_noise(
            ins.dpsgd_target_epsilon, ins.dpsgd_delta, rate, ins.rounds * steps, releases
        )
    dp = dpsgd.fit_dpsgd(
        model,
        scaled,
        data.windows[rows],
        targets,
        train_cfg,
        noise_multiplier=noise,
        max_grad_norm=ins.dpsgd_clip,
        target_delta=ins.dpsgd_delta,
        class_weights=weights,
    )
    return dp.result, dpsgd.epsilon_spent(noise, rate, ins.server_round * steps, ins.dpsgd_delta, spent)


def _distributed_dpsgd(model, data, setup, ins, train_cfg, scaled, weights, releases, spent):  # noqa: ANN001, ANN202
    """Distributed DP-SGD: this round is one step of the federation's account (fedids.privacy.dpsgd), over
    every local row: a class of a dozen windows cannot spare the fifth that local validation holds out (real
    samples, pooled: 0.872 macro-F1 with it, 0.931 without, 3 noise draws each). The validation windows
    still serve the head calibration's check, inside the same per-window budget."""
    from fedids.privacy import dpsgd

    rate = min(1.0, train_cfg.batch_size / max(setup.rows, 1))
    noise = ins.dpsgd_noise or dpsgd.calibrate_noise(
        ins.dpsgd_target_epsilon, ins.dpsgd_delta, rate, ins.rounds, releases
    )
    result = dpsgd.distributed_step(
        model,
        scaled,
        data.windows,
        setup.vocabulary.encode(data.labels),
        train_cfg,
        rate=rate,
        noise_multiplier=noise,
        shares=ins.dpsgd_noise_shares,
        max_grad_norm=ins.dpsgd_clip,
        class_weights=weights,
    )
    return result, dpsgd.epsilon_spent(noise, rate, ins.server_round, ins.dpsgd_delta, spent)


def handle_train(
    msg: Message,
    frame: pd.DataFrame,
    key: str,
    model_dir: str | None = None,
    context: Context | None = None,
    secret_context: bytes | None = None,
    attack: Attack | None = None,
) -> Message:
    """Evaluate the incoming global model on the local validation split, train on the local rest, and
    reply: the local model and metrics (plaintext mode), or a sealed update contribution. ``attack``: this
    node's own poisoning of its update (:mod:`fedids.federation.attacks`; never set by a message)."""
    ins = m.TrainInstructions.from_config(m.config_record(msg.content, m.CONFIG))
    setup = run_setup(msg, context)
    if list(ins.labels) != list(setup.vocabulary.labels):
        raise ValueError("the message's labels differ from the run's vocabulary")
    global_weights, momentum = global_models(msg, len(ins.labels), ins.hidden, secret_context, ins.server_lr)
    data = prepare_local(frame, ins.window)
    model = new_model(len(ins.labels), ins.hidden)
    set_weights(model, global_weights)
    detector = Detector(model, setup.scaler, setup.vocabulary, ins.window, {"round": ins.server_round})
    if model_dir:
        save_detector(model_dir, detector)
    local_f1 = (
        evaluate_rows(detector, data, data.test_rows)["macro_f1"] if len(data.test_rows) else float("nan")
    )
    result, dpsgd_epsilon = _train_local(model, data, setup, ins, key)
    if attack is not None:  # a malicious node's update, before it is sealed or sent
        seed = attack_seed(ins.seed, ins.server_round, key)
        set_weights(model, poison_update(global_weights, get_weights(model), attack, seed))
    mode = PrivacyMode.parse(ins.privacy)
    if not mode.private and m.SUM not in msg.content:  # a sum: private modes, and a site's devices
        return _plain_reply(msg, model, global_weights, data, result, local_f1, dpsgd_epsilon, ins, context)
    start = time.process_time()
    local = get_weights(model)
    if mode.dp:  # clip and noise the update before it becomes a proposal (fedids.privacy.dp)
        local = _noised_local(global_weights, local, ins)
    weight, shares = agg.client_shares(
        own_class_counts(data.labels, setup.vocabulary),
        setup.class_totals,
        setup.class_weights,
        weighting=ins.client_weighting,
        class_head=ins.head_aggregation == "class",
    )
    proposal = agg.propose(
        global_weights, momentum, local, server_lr=ins.server_lr, server_momentum=ins.server_momentum
    )
    if not ins.dpsgd_noise_shares:  # sealed modes: the bound (distributed DP-SGD: its clip and lr bound it,
        # and a cut would shrink this client's share of the noise that protects the others)
        proposal = bound_client_proposal(ins, global_weights, momentum, proposal)
    examples = len(data.labels) / max(setup.rows, 1)
    metrics = {
        "clients": 1.0,
        "examples": examples,
        "loss": examples * float(result.losses[-1]),
        "train_ks": result.seconds / 1e3,
        "dpsgd_epsilon": dpsgd_epsilon or 0.0,
    }
    if np.isfinite(local_f1):
        metrics |= {"local_f1": float(local_f1), "local_f1_clients": 1.0}
    layout = agg.UpdateLayout(tuple(tuple(w.shape) for w in local))
    metrics["privacy_ks"] = (time.process_time() - start) / 1e3
    if mode.dp or ins.dpsgd:
        # DP covers the update, not the loss, local F1, example share or timings of this client's data:
        # only the contribution count and DP-SGD's epsilon (the threat-model table lists it) go out.
        metrics = {"clients": 1.0, "dpsgd_epsilon": metrics["dpsgd_epsilon"]}
    vector = agg.update_contribution(layout, proposal, weight, shares, metrics)
    return Message(seal(msg, vector, context, secret_context), reply_to=msg)


def _noised_local(
    global_weights: list[np.ndarray], local: list[np.ndarray], ins: m.TrainInstructions
) -> list[np.ndarray]:
    from fedids.privacy.dp import add_gaussian_noise, clip_update

    shapes = [tuple(w.shape) for w in local]
    update = agg.flatten(local) - agg.flatten(global_weights)
    update, _ = clip_update(update.astype(np.float32), ins.clip_norm)
    # Noise from a ChaCha20 keystream keyed by the OS (the default), never from the run seed the server knows.
    update = add_gaussian_noise(update.astype(np.float64), ins.noise_std)
    return agg.unflatten(agg.flatten(global_weights) + update, shapes)


def _plain_reply(msg, model, global_weights, data, result, local_f1, dpsgd_epsilon, ins, context) -> Message:
    """The plaintext mode's reply: the local model (or its compressed update) and per-client metrics (with
    DP-SGD only those the weighting needs: the loss and local F1 of private data are not covered by it)."""
    metrics = MetricRecord({m.NUM_EXAMPLES: int(len(data.labels)), m.LOCAL_EPOCHS: ins.local_epochs})
    if dpsgd_epsilon is not None:
        metrics[m.DPSGD_EPSILON] = float(dpsgd_epsilon)
    else:
        metrics[m.TRAIN_LOSS] = float(result.losses[-1])
        metrics[m.LOCAL_F1] = float(local_f1)
        metrics[m.TRAIN_SECONDS] = float(result.seconds)
        metrics[m.TRAIN_EXAMPLES] = int(result.examples)
    compression = Compression.parse(ins.compression)
    if compression.active:
        update = compress_reply(global_weights, get_weights(model), compression, context)
        return Message(RecordDict({COMPRESSED: update, m.METRICS: metrics}), reply_to=msg)
    return Message(RecordDict({m.ARRAYS: ArrayRecord(get_weights(model)), m.METRICS: metrics}), reply_to=msg)


# -------------------------------------------------------------------------- calibration
def _final_model(msg: Message, setup: RunSetup, secret_context: bytes | None) -> GRUDetector:
    ins = m.ModelInstructions.from_config(m.config_record(msg.content, m.CONFIG))
    weights, _ = global_models(msg, len(setup.vocabulary.labels), ins.hidden, secret_context, ins.server_lr)
    model = new_model(len(setup.vocabulary.labels), ins.hidden)
    set_weights(model, weights)
    return model


def _local_features(
    msg: Message, frame: pd.DataFrame, setup: RunSetup, model: GRUDetector, names: tuple[str, ...]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The model's GRU features and class indices of this client's windows per split named in ``names``:
    "train", the windows :func:`handle_train` trains on (the moments' first block, CCVR's); "head", the
    same flows' head windows (:func:`fedids.task.head_windows`: the moments' second block, the prototype
    head's, as ``fedids train`` fits it); "validation", the local validation windows."""
    from fedids.federation.calibration import hidden_features

    data = prepare_local(
        frame, m.ModelInstructions.from_config(m.config_record(msg.content, m.CONFIG)).window
    )
    scaled = setup.scaler.transform(data.features)
    train = data.train_rows if len(data.train_rows) else np.arange(len(data.labels))
    splits = {
        "train": (train, data.windows[train]),
        "validation": (data.test_rows, data.windows[data.test_rows]),
    }
    if "head" in names:
        splits["head"] = (train, head_windows(data, train))
    return {
        name: (
            hidden_features(model, scaled, splits[name][1]),
            setup.vocabulary.encode(data.labels[splits[name][0]]),
        )
        for name in names
    }


def handle_features(
    msg: Message, frame: pd.DataFrame, context: Context | None = None, secret_context: bytes | None = None
) -> Message:
    """Per-class moments of the final global model's features over the local training windows and over the
    same flows' head windows (:func:`fedids.task.head_windows`), as one real vector for the sum
    (:func:`fedids.federation.calibration.moments_vector`)."""
    from fedids.federation.calibration import class_moments, moments_vector

    setup = run_setup(msg, context)
    model = _final_model(msg, setup, secret_context)
    splits = _local_features(msg, frame, setup, model, ("train", "head"))
    (features, targets), (head_features, _) = splits["train"], splits["head"]
    dp = m.ModelInstructions.from_config(m.config_record(msg.content, m.CONFIG)).calibration_privacy()
    if dp is not None:  # a Gaussian release of the moments (fedids.federation.calibration_dp)
        from fedids.federation.calibration_dp import private_moments_vector

        vector = private_moments_vector(features, targets, setup.class_totals, dp, head_features)
    else:
        n = len(setup.vocabulary.labels)
        vector = moments_vector(
            class_moments(features, targets, n), setup.class_totals, class_moments(head_features, targets, n)
        )
    return Message(seal(msg, vector, context, secret_context), reply_to=msg)


def handle_validate(
    msg: Message, frame: pd.DataFrame, context: Context | None = None, secret_context: bytes | None = None
) -> Message:
    """Confusion matrices of the candidate heads (sent, or refitted here from the sealed moments sum) on
    the final model's features of the local validation and training windows, as a count vector."""
    from fedids.federation.calibration import (
        candidate_heads,
        confusion_vector,
        head_confusions,
        score_histograms,
    )

    setup = run_setup(msg, context)
    model = _final_model(msg, setup, secret_context)
    heads = candidate_heads(msg, model, setup, secret_context)
    splits = _local_features(msg, frame, setup, model, m.CHECK_SPLITS)
    n = len(setup.vocabulary.labels)
    confusions = {name: head_confusions(*splits[name], heads, n) for name in m.CHECK_SPLITS}
    histograms = score_histograms(*splits["validation"], heads)  # the alert threshold's evidence
    vector = confusion_vector(confusions, histograms)
    dp = m.ModelInstructions.from_config(m.config_record(msg.content, m.CONFIG)).calibration_privacy()
    if dp is not None:  # a Gaussian release of the counts (fedids.federation.calibration_dp)
        from fedids.federation.calibration_dp import private_check_vector

        windows = sum(int((splits[name][1] >= 0).sum()) for name in m.CHECK_SPLITS)
        vector = private_check_vector(vector, windows, n, dp)
    return Message(seal(msg, vector, context, secret_context), reply_to=msg)


def final_detector(msg: Message, setup: RunSetup, secret_context: bytes | None) -> Detector:
    """The final global model a ``query.global`` message describes, with its calibrated head if kept."""
    from fedids.federation.calibration import apply_final_head, final_prototypes
    from fedids.model.checks import META_THRESHOLD

    model = _final_model(msg, setup, secret_context)
    _, rule = apply_final_head(msg, model, setup, secret_context)
    prototypes = final_prototypes(msg, model, setup, secret_context)
    if prototypes is not None:
        model.set_prototypes(*prototypes, gated=True)  # the threshold is the linear head's (fedids.model.gru)
    ins = m.ModelInstructions.from_config(m.config_record(msg.content, m.CONFIG))
    metadata: dict[str, object] = {"final": True}
    if rule is None and ins.alert_threshold >= 0:  # chosen by the server from the summed histograms
        rule = {
            "threshold": ins.alert_threshold,
            "max_false_alarm_rate": ins.alert_max_false_alarm_rate,
            "validation": "summed histograms of the clients' validation windows",
        }
    if rule is not None:
        metadata[META_THRESHOLD] = rule
    return Detector(model, setup.scaler, setup.vocabulary, ins.window, metadata)


def handle_final_model(
    msg: Message, model_dir: str, context: Context | None, secret_context: bytes | None
) -> None:
    """Write the final global model (plaintext or opened here) to ``model_dir`` for the detector."""
    save_detector(model_dir, final_detector(msg, run_setup(msg, context), secret_context))


__all__ = [
    "LOCAL_VAL_FRACTION",
    "prepare_local",
    "local_training_rows",
    "derive_seed",
    "seal",
    "handle_secagg_stage",
    "handle_stats",
    "handle_setup",
    "handle_train",
    "handle_features",
    "handle_validate",
    "handle_final_model",
    "final_detector",
    "run_setup",
    "global_models",
]
