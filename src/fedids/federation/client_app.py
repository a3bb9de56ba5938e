"""The Flower ClientApp: what one IoT gateway runs. Turns messages into :mod:`fedids.task` calls.

Raw flows never leave this process: the client answers a ``query.stats`` message with a feature
histogram and label counts (for the federated scaler and vocabulary) and ``train`` messages with model
weights and a few metrics.

Where the data comes from, in order:
* node config ``data-path`` (deployment: the SuperNode's own CICIDS2017-format CSV or Parquet file);
* ``partitions_dir/partition-<id>.parquet`` (simulation; ``id`` = the virtual node's ``partition-id``).

If the node config has ``model-dir``, the client writes every global model it receives there (atomically),
for the long-running detector to reload: detection never runs inside the ClientApp.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedids.data.preprocess import compute_feature_stats
from fedids.federation import messages as m
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


def handle_stats(msg: Message, frame: pd.DataFrame, key: str) -> Message:
    from fedids.data.schema import FEATURES, LABEL

    stats = compute_feature_stats(frame[list(FEATURES)].to_numpy(dtype=np.float32))
    return m.stats_reply(msg, key, stats, compute_label_counts(frame[LABEL].to_numpy()))


def handle_train(msg: Message, frame: pd.DataFrame, key: str, model_dir: str | None = None) -> Message:
    """Evaluate the incoming global model on the local validation split, then train on the local rest."""
    config = msg.content[m.CONFIG]
    labels = list(config["labels"])
    window = int(config["window"])
    hidden = int(config["hidden"])
    server_round = int(config["server-round"])
    scaler = m.decode_preprocessing(msg.content[m.PREPROCESSING])
    data: PreparedData = prepare(frame, window=window, test_fraction=LOCAL_VAL_FRACTION)
    model = new_model(len(labels), hidden)
    global_weights = [a.numpy() for a in msg.content[m.ARRAYS].values()]
    set_weights(model, global_weights)
    from fedids.data.preprocess import LabelVocabulary

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
    result = train_rows(model, data, scaler.transform(data.features), detector.vocabulary, rows, train_cfg,
                        global_params=anchors, class_weights=weights)
    metrics = MetricRecord({
        m.NUM_EXAMPLES: int(result.examples), m.TRAIN_LOSS: float(result.losses[-1]),
        m.LOCAL_F1: float(local_f1), m.TRAIN_SECONDS: float(result.seconds),
    })
    content = RecordDict({m.ARRAYS: ArrayRecord(get_weights(model)), m.METRICS: metrics})
    return Message(content, reply_to=msg)


def make_client_app(partitions_dir: str | None = None) -> ClientApp:
    """Build the ClientApp; ``partitions_dir`` is where simulated clients find their partition files."""
    app = ClientApp()

    def local_frame(context: Context) -> pd.DataFrame:
        cfg = context.node_config
        if "data-path" in cfg:
            return load_local_frame(str(cfg["data-path"]))
        base = partitions_dir or context.run_config.get("partitions-dir")
        if base is None:
            raise RuntimeError("node config has no data-path and the run has no partitions-dir")
        return load_local_frame(partition_path(str(base), int(cfg["partition-id"])))

    @app.query("stats")
    def stats(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return handle_stats(msg, local_frame(context), client_key(context))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # one core per virtual client (num_cpus=1)
        model_dir = context.node_config.get("model-dir")
        return handle_train(msg, local_frame(context), client_key(context), str(model_dir) if model_dir else None)

    return app


# Entry point for the deployment engine (`flwr run` against a SuperLink): data comes from node config.
app = make_client_app()
