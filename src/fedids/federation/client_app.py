"""The Flower ClientApp: what one IoT gateway runs. Turns messages into :mod:`fedids.task` calls.

Raw flows never leave this process: the client answers a ``query.stats`` message with a feature
histogram and label counts (for the federated scaler and vocabulary), ``train`` messages with model
weights and a few metrics, and, for the head calibration after the last round, ``query.features`` with
per-class feature moments and ``query.validate`` with confusion matrices of candidate heads.

Where the data comes from, in order:
* node config ``data-path`` (deployment: the SuperNode's own CICIDS2017-format CSV or Parquet file);
* ``partitions_dir/partition-<id>.parquet`` (simulation; ``id`` = the virtual node's ``partition-id``).

If the node config has ``model-dir``, the client writes every global model it receives there (atomically),
for the long-running detector to reload: detection never runs inside the ClientApp.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedids.data.preprocess import LabelVocabulary, compute_feature_stats
from fedids.federation import messages as m
from fedids.federation.compression import COMPRESSED, Compression, compress_reply
from fedids.federation.private import (GLOBAL, GLOBAL_KIND, GLOBAL_WEIGHT, PrivacyMode, compute_contribution,
                                       decrypt_global, flatten, secagg_config_from, unflatten)
from fedids.federation.secure_rounds import CONTRIBUTION, SECAGG, SECAGG_CONFIG
from fedids.model.artifacts import Detector, save_detector
from fedids.model.train import TrainConfig, get_weights, set_weights
from fedids.task import PreparedData, compute_label_counts, evaluate_rows, new_model, prepare, train_rows

LOCAL_VAL_FRACTION = 0.2


def partition_path(partitions_dir: str | Path, partition_id: int) -> Path:
    return Path(partitions_dir) / f"partition-{int(partition_id):04d}.parquet"


def load_local_frame(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    from fedids.data.loader import load_flows

    return load_flows([path]).frame


def client_key(context: Context) -> str:
    cfg = context.node_config
    if "client-key" in cfg:
        return str(cfg["client-key"])
    if "data-path" in cfg:
        return Path(str(cfg["data-path"])).stem
    return f"partition-{int(cfg['partition-id']):04d}"


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _config_value(config, key, default):
    return config[key] if key in config else default


def handle_stats(msg: Message, frame: pd.DataFrame, key: str, device_profile: str | None = None) -> Message:
    from fedids.data.schema import FEATURES, LABEL

    stats = compute_feature_stats(frame[list(FEATURES)].to_numpy(dtype=np.float32))
    return m.stats_reply(msg, key, stats, compute_label_counts(frame[LABEL].to_numpy()), device_profile)


def _global_weights(msg: Message, shapes_of: Callable[[], list[tuple[int, ...]]],
                    secret_context: bytes | None) -> list[np.ndarray]:
    """The global model from a training message: plaintext arrays, or an encrypted model to decrypt."""
    if m.ARRAYS in msg.content:
        return [a.numpy() for a in msg.content[m.ARRAYS].values()]
    if secret_context is None:
        raise RuntimeError("the global model is encrypted and this client has no HE key (he-secret-context)")
    config = msg.content[m.CONFIG]
    shapes = shapes_of()
    flat = decrypt_global(str(config[GLOBAL_KIND]), msg.content[GLOBAL]["ct"].numpy().tobytes(),
                          float(config[GLOBAL_WEIGHT]), secagg_config_from(config), secret_context,
                          sum(int(np.prod(s)) for s in shapes))
    return unflatten(flat, shapes)


def handle_train(msg: Message, frame: pd.DataFrame, key: str, model_dir: str | None = None,
                 context: Context | None = None, secret_context: bytes | None = None) -> Message:
    """Evaluate the incoming global model on the local validation split, then train on the local rest.

    In a private mode the reply carries this client's *contribution* (see
    :mod:`fedids.federation.private`) instead of its weights: encrypted, masked, or noised. With
    ``compression`` (plaintext only) it carries the compressed update (:mod:`fedids.federation.compression`;
    the top-k residual is kept in ``context.state``).
    """
    config = msg.content[m.CONFIG]
    labels = list(config["labels"])
    window = int(config["window"])
    hidden = int(config["hidden"])
    server_round = int(config["server-round"])
    scaler = m.decode_preprocessing(msg.content[m.PREPROCESSING])
    data: PreparedData = prepare(frame, window=window, test_fraction=LOCAL_VAL_FRACTION)
    model = new_model(len(labels), hidden)
    global_weights = _global_weights(msg, lambda: [tuple(w.shape) for w in get_weights(model)], secret_context)
    set_weights(model, global_weights)
    detector = Detector(model, scaler, LabelVocabulary(labels), window, {"round": server_round})
    if model_dir:
        save_detector(model_dir, detector)
    local_f1 = evaluate_rows(detector, data, data.test_rows)["macro_f1"] if len(data.test_rows) else float("nan")
    train_cfg = TrainConfig(
        epochs=int(config["local-epochs"]), batch_size=int(config["batch-size"]), lr=float(config["lr"]),
        proximal_mu=float(_config_value(config, "proximal-mu", 0.0)),
        absent_logit_scale=float(_config_value(config, "absent-logit-scale", 1.0)),
        seed=derive_seed(config["seed"], server_round, key),
    )
    torch.manual_seed(train_cfg.seed)
    rows = data.train_rows if len(data.train_rows) else np.arange(len(data.labels))
    anchors = [p.detach().clone() for p in model.parameters()] if train_cfg.proximal_mu > 0 else None
    weights = np.asarray(config["class-weights"], dtype=np.float32) if "class-weights" in config else None
    dpsgd_noise = float(_config_value(config, "dpsgd-noise", 0.0))
    dpsgd_target = float(_config_value(config, "dpsgd-target-epsilon", 0.0))
    dpsgd_epsilon = None
    if dpsgd_noise > 0 or dpsgd_target > 0:
        # Sample-level DP-SGD (Opacus): the epsilon covers one flow window of this client's rows, over
        # the rounds so far (every round runs the same steps; fedids.privacy.dpsgd says why that composes).
        from fedids.privacy import dpsgd

        delta = float(config["dpsgd-delta"])
        train_cfg = dataclasses.replace(
            train_cfg, batch_size=int(_config_value(config, "dpsgd-batch-size", train_cfg.batch_size)),
            lr=float(_config_value(config, "dpsgd-lr", train_cfg.lr)))
        targets = detector.vocabulary.encode(data.labels[rows])
        n_rows = max(int(np.sum(targets >= 0)), 1)             # the rows fit_dpsgd trains on
        rate = dpsgd.sample_rate(n_rows, train_cfg.batch_size)
        steps = train_cfg.epochs * dpsgd.steps_per_epoch(n_rows, train_cfg.batch_size)
        if dpsgd_target > 0:
            dpsgd_noise = dpsgd.calibrate_noise(dpsgd_target, delta, rate, int(config["rounds"]) * steps)
        dp = dpsgd.fit_dpsgd(model, scaler.transform(data.features), data.windows[rows],
                             targets, train_cfg, noise_multiplier=dpsgd_noise,
                             max_grad_norm=float(config["dpsgd-clip"]), target_delta=delta, class_weights=weights)
        result = dp.result
        dpsgd_epsilon = dpsgd.epsilon_spent(dpsgd_noise, rate, server_round * steps, delta)
    else:
        result = train_rows(model, data, scaler.transform(data.features), detector.vocabulary, rows, train_cfg,
                            global_params=anchors, class_weights=weights)
    # Weight = rows held (the count the stats round reported), so plaintext FedAvg and the private
    # modes (whose weights the server derives from that count) average identically.
    metrics = MetricRecord({
        m.NUM_EXAMPLES: int(len(data.labels)), m.TRAIN_LOSS: float(result.losses[-1]),
        m.LOCAL_F1: float(local_f1), m.TRAIN_SECONDS: float(result.seconds),
        m.TRAIN_EXAMPLES: int(result.examples), m.LOCAL_EPOCHS: int(train_cfg.epochs),
    })
    if dpsgd_epsilon is not None:
        metrics["dpsgd-epsilon"] = float(dpsgd_epsilon)
    privacy = str(_config_value(config, "privacy", "none"))
    compression = Compression.parse(str(_config_value(config, "compression", "none")))
    if compression.active and privacy != "none":
        raise ValueError(f"compression {compression.kind} is for the plaintext mode, not privacy {privacy}")
    if privacy == "none" and compression.active:
        update = compress_reply(global_weights, get_weights(model), compression, context)
        return Message(RecordDict({COMPRESSED: update, m.METRICS: metrics}), reply_to=msg)
    if privacy == "none":
        content = RecordDict({m.ARRAYS: ArrayRecord(get_weights(model)), m.METRICS: metrics})
        return Message(content, reply_to=msg)
    mode = PrivacyMode.parse(privacy)
    start = time.process_time()
    # DP noise comes from the OS, never from the run seed the server knows.
    contribution, clipped = compute_contribution(
        flatten(global_weights), flatten(get_weights(model)), float(config["weight"]),
        clip_norm=float(config["clip-norm"]) if mode.dp else None, noise_std=float(config["noise-std"]),
        rng=np.random.default_rng())
    content = RecordDict({m.METRICS: metrics})
    if mode.secagg:
        client = _restore_secagg(context, secret_context, mode)
        content[SECAGG] = ConfigRecord(client.masked_input(dict(msg.content[SECAGG]), contribution))
        _save_secagg(context, client)
    elif mode.he:
        from fedids.privacy.he import encrypt_update

        blob = encrypt_update(secret_context, contribution)
        content[CONTRIBUTION] = ArrayRecord({"ct": Array(np.frombuffer(blob, dtype=np.uint8))})
    else:
        content[CONTRIBUTION] = ArrayRecord({"value": Array(contribution)})
    metrics["privacy-seconds"] = float(time.process_time() - start)
    metrics["clipped"] = int(clipped)
    return Message(content, reply_to=msg)


def handle_final_model(msg: Message, model_dir: str, secret_context: bytes | None) -> None:
    """Write the final global model (plaintext or decrypted here) to ``model_dir`` for the detector."""
    config = msg.content[m.CONFIG]
    labels = list(config["labels"])
    model = new_model(len(labels), int(config["hidden"]))
    set_weights(model, _global_weights(msg, lambda: [tuple(w.shape) for w in get_weights(model)], secret_context))
    scaler = m.decode_preprocessing(msg.content[m.PREPROCESSING])
    save_detector(model_dir, Detector(model, scaler, LabelVocabulary(labels), int(config["window"]), {"final": True}))


def _local_features(msg: Message, frame: pd.DataFrame) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int, int]:
    """The sent model's GRU features and class indices of this client's windows per split ("train": the
    rows :func:`handle_train` trains on; "validation": the local validation rows), the number of classes
    and the hidden width."""
    from fedids.federation.calibration import hidden_features

    config = msg.content[m.CONFIG]
    labels = list(config["labels"])
    hidden = int(config["hidden"])
    data = prepare(frame, window=int(config["window"]), test_fraction=LOCAL_VAL_FRACTION)
    model = new_model(len(labels), hidden)
    set_weights(model, [a.numpy() for a in msg.content[m.ARRAYS].values()])
    scaled = m.decode_preprocessing(msg.content[m.PREPROCESSING]).transform(data.features)
    vocab = LabelVocabulary(labels)
    splits = {"train": data.train_rows if len(data.train_rows) else np.arange(len(data.labels)),
              "validation": data.test_rows}
    return ({name: (hidden_features(model, scaled, data.windows[rows]), vocab.encode(data.labels[rows]))
             for name, rows in splits.items()}, len(labels), hidden)


def handle_features(msg: Message, frame: pd.DataFrame) -> Message:
    """Per-class moments of the final global model's features over the local training windows (the same
    rows :func:`handle_train` trains on), for the server's head calibration (:mod:`.calibration`)."""
    from fedids.federation.calibration import class_moments

    splits, n_classes, _ = _local_features(msg, frame)
    return m.moments_reply(msg, class_moments(*splits["train"], n_classes))


def handle_validate(msg: Message, frame: pd.DataFrame) -> Message:
    """Confusion matrices of the candidate heads (``heads``) on the final model's features of the local
    validation and training windows (:data:`~fedids.federation.messages.CHECK_SPLITS`), for the server's
    keep-or-discard decision on a calibrated head."""
    from fedids.federation.calibration import head_confusions

    splits, n_classes, hidden = _local_features(msg, frame)
    heads = m.decode_heads(msg.content[m.HEADS], n_classes, hidden)
    return m.confusion_reply(msg, {name: head_confusions(*splits[name], heads, n_classes) for name in m.CHECK_SPLITS})


_SECAGG_STATE = "fedids-secagg"


def _restore_secagg(context: Context | None, secret_context: bytes | None, mode: PrivacyMode):
    from fedids.privacy.secagg import SecAggClient

    if context is None or _SECAGG_STATE not in context.state:
        raise RuntimeError("secure aggregation message without a prior key stage on this node")
    state = dict(context.state[_SECAGG_STATE])
    if mode.he:
        from fedids.privacy.he_secagg import HESecAggClient

        client = HESecAggClient.from_state_dict(state)
        client._secret_context = secret_context  # noqa: SLF001 (the key file is not part of the state)
        return client
    return SecAggClient.from_state_dict(state)


def _save_secagg(context: Context, client) -> None:
    context.state[_SECAGG_STATE] = ConfigRecord(client.state_dict())


def handle_secagg_stage(msg: Message, context: Context, stage: str, secret_context: bytes | None) -> Message:
    """SecAgg stages 1, 2 and 4 (stage 3 is the training message): state kept in the node's own state."""
    from fedids.privacy.secagg import SecAggClient, SecAggConfig

    cfg = dict(msg.content[SECAGG_CONFIG])
    client_id = int(cfg.pop("secagg-id"))
    if stage == "keys":
        config = SecAggConfig.from_dict(cfg)
        client = SecAggClient(config, client_id)
        out = client.advertise_keys()
    else:
        client = _restore_secagg(context, secret_context, PrivacyMode(he=False, secagg=True))
        if client.client_id != client_id:
            raise RuntimeError("secure aggregation state belongs to another client id")
        out = client.share_keys(dict(msg.content[SECAGG])) if stage == "shares" else client.unmask(dict(msg.content[SECAGG]))
    if stage == "unmask":
        del context.state[_SECAGG_STATE]
    else:
        _save_secagg(context, client)
    return Message(RecordDict({SECAGG: ConfigRecord(out)}), reply_to=msg)


def make_client_app(partitions_dir: str | None = None, he_secret_context: str | None = None) -> ClientApp:
    """Build the ClientApp.

    ``partitions_dir``: where simulated clients find their partition files. ``he_secret_context``: the
    clients' HE key file (``fedids keys init``); a SuperNode sets node config ``he-secret-context`` instead.
    """
    app = ClientApp()

    def local_frame(context: Context) -> pd.DataFrame:
        cfg = context.node_config
        if "data-path" in cfg:
            return load_local_frame(str(cfg["data-path"]))
        base = partitions_dir or context.run_config.get("partitions-dir")
        if base is None:
            raise RuntimeError("node config has no data-path and the run has no partitions-dir")
        return load_local_frame(partition_path(str(base), int(cfg["partition-id"])))

    def secret(context: Context) -> bytes | None:
        path = context.node_config.get("he-secret-context", he_secret_context)
        if not path:
            return None
        from fedids.privacy.keys import load_secret_context

        return load_secret_context(str(path))

    @app.query("stats")
    def stats(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        # A SuperNode may declare its hardware (node config device-profile) for energy-aware selection.
        profile = context.node_config.get(m.DEVICE_PROFILE)
        return handle_stats(msg, local_frame(context), client_key(context), str(profile) if profile else None)

    @app.query("global")
    def final_model(msg: Message, context: Context) -> Message:
        model_dir = context.node_config.get("model-dir")
        if model_dir:
            handle_final_model(msg, str(model_dir), secret(context))
        return Message(RecordDict(), reply_to=msg)

    @app.query("features")
    def features(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return handle_features(msg, local_frame(context))

    @app.query("validate")
    def validate(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return handle_validate(msg, local_frame(context))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # one core per virtual client (num_cpus=1)
        model_dir = context.node_config.get("model-dir")
        return handle_train(msg, local_frame(context), client_key(context), str(model_dir) if model_dir else None,
                            context=context, secret_context=secret(context))

    @app.train("secagg_keys")
    def secagg_keys(msg: Message, context: Context) -> Message:
        return handle_secagg_stage(msg, context, "keys", secret(context))

    @app.train("secagg_shares")
    def secagg_shares(msg: Message, context: Context) -> Message:
        return handle_secagg_stage(msg, context, "shares", secret(context))

    @app.train("secagg_unmask")
    def secagg_unmask(msg: Message, context: Context) -> Message:
        return handle_secagg_stage(msg, context, "unmask", secret(context))

    return app


# Entry point for the deployment engine (`flwr run` against a SuperLink): data comes from node config.
app = make_client_app()
