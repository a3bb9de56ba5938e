"""The Flower ClientApp: what one IoT gateway runs. Thin: routes each message to :mod:`fedids.federation.client`.

Where the data comes from, in order:
* node config ``data-path`` (deployment: the SuperNode's own CICIDS2017-format CSV or Parquet file);
* ``partitions_dir/partition-<id>.parquet`` (simulation; ``id`` = the virtual node's ``partition-id``).

If the node config has ``model-dir``, the client writes every global model it receives there (atomically),
for the long-running detector to reload: detection never runs inside the ClientApp.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedids.federation import messages as m
from fedids.federation.attacks import Attack, poison_frame
from fedids.federation.client import (
    LOCAL_VAL_FRACTION,
    derive_seed,
    handle_features,
    handle_final_model,
    handle_secagg_stage,
    handle_setup,
    handle_stats,
    handle_train,
    handle_validate,
    prepare_local,
)
from fedids.federation.policy import PrivacyPolicy, policy_mod

__all__ = [
    "make_client_app",
    "app",
    "partition_path",
    "load_local_frame",
    "client_key",
    "partition_key",
    "LOCAL_VAL_FRACTION",
    "derive_seed",
    "handle_features",
    "handle_final_model",
    "handle_secagg_stage",
    "handle_setup",
    "handle_stats",
    "handle_train",
    "handle_validate",
    "prepare_local",
]


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
    return partition_key(int(cfg["partition-id"]))


def partition_key(partition_id: int) -> str:
    """The client key of a simulated node (its ``partition-id``)."""
    return f"partition-{partition_id:04d}"


def make_client_app(
    partitions_dir: str | None = None,
    he_secret_context: str | None = None,
    mods: list | None = None,
    policy: PrivacyPolicy | None = None,
    attacks: Mapping[int, Attack] | None = None,
) -> ClientApp:
    """Build the ClientApp.

    ``partitions_dir``: where simulated clients find their partition files. ``he_secret_context``: the
    clients' HE key file (``fedids keys init``); a SuperNode sets node config ``he-secret-context`` instead.
    ``mods``: Flower mods wrapped around every handler (tests record what a client sends with one).
    ``policy``: the run's published privacy configuration, checked before every handler
    (:mod:`fedids.federation.policy`); a SuperNode sets node config ``privacy-policy`` to its file instead.
    ``attacks``: simulation, the poisoning of the malicious virtual nodes by ``partition-id``; a SuperNode
    sets node config ``attack`` instead (:mod:`fedids.federation.attacks`). It comes from the node's own
    configuration only, never from a server message.
    """

    def attack(context: Context) -> Attack | None:
        cfg = context.node_config
        if "attack" in cfg:
            return Attack.parse(str(cfg["attack"]))
        return (attacks or {}).get(int(cfg["partition-id"])) if "partition-id" in cfg else None

    # The policy check comes first: a message it refuses reaches no handler (and no recording mod).
    app = ClientApp(mods=[policy_mod(policy), _absence_mod(attack), *(mods or [])])

    def local_frame(context: Context) -> pd.DataFrame:
        cfg = context.node_config
        if "data-path" in cfg:
            frame = load_local_frame(str(cfg["data-path"]))
        else:
            base = partitions_dir or context.run_config.get("partitions-dir")
            if base is None:
                raise RuntimeError("node config has no data-path and the run has no partitions-dir")
            frame = load_local_frame(partition_path(str(base), int(cfg["partition-id"])))
        poisoning = attack(context)
        return frame if poisoning is None else poison_frame(frame, poisoning)

    def secret(context: Context) -> bytes | None:
        path = context.node_config.get("he-secret-context", he_secret_context)
        if not path:
            return None
        from fedids.privacy.keys import load_secret_context

        return load_secret_context(str(path))

    _register_queries(app, local_frame, secret)
    _register_training(app, local_frame, secret, attack)
    return app


def _absence_mod(attack):  # noqa: ANN001, ANN202 (the closure above; a Flower mod)
    """A node whose attack is ``absent`` answers every message with an error, as an offline device: the
    server counts it as a dropout (:mod:`fedids.federation.attacks`)."""

    def mod(msg: Message, context: Context, call_next):  # noqa: ANN001, ANN202 (Flower's mod signature)
        poisoning = attack(context)
        if poisoning is not None and poisoning.kind == "absent":
            raise RuntimeError("this device is absent from the run (--attack absent)")
        return call_next(msg, context)

    return mod


def _register_queries(app: ClientApp, local_frame, secret) -> None:  # noqa: ANN001 (closures above)
    """The queries: statistics, setup, final model, calibration moments and check."""

    @app.query("stats")
    def stats(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        # A SuperNode may declare its hardware (node config device-profile) for energy-aware selection.
        profile = context.node_config.get(m.DEVICE_PROFILE)
        return handle_stats(
            msg,
            local_frame(context),
            client_key(context),
            str(profile) if profile else None,
            context,
            secret(context),
        )

    @app.query("setup")
    def setup(msg: Message, context: Context) -> Message:
        return handle_setup(msg, context, secret(context))

    @app.query("global")
    def final_model(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        model_dir = context.node_config.get("model-dir")
        if model_dir:
            handle_final_model(msg, str(model_dir), context, secret(context))
        return Message(RecordDict(), reply_to=msg)

    @app.query("features")
    def features(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return handle_features(msg, local_frame(context), context, secret(context))

    @app.query("validate")
    def validate(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return handle_validate(msg, local_frame(context), context, secret(context))


def _register_training(app: ClientApp, local_frame, secret, attack) -> None:  # noqa: ANN001 (closures above)
    """Training and the SecAgg stages around it."""

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # one core per virtual client (num_cpus=1)
        model_dir = context.node_config.get("model-dir")
        return handle_train(
            msg,
            local_frame(context),
            client_key(context),
            str(model_dir) if model_dir else None,
            context=context,
            secret_context=secret(context),
            attack=attack(context),
        )

    @app.train("secagg_keys")
    def secagg_keys(msg: Message, context: Context) -> Message:
        return handle_secagg_stage(msg, context, "keys", secret(context))

    @app.train("secagg_shares")
    def secagg_shares(msg: Message, context: Context) -> Message:
        return handle_secagg_stage(msg, context, "shares", secret(context))

    @app.train("secagg_unmask")
    def secagg_unmask(msg: Message, context: Context) -> Message:
        return handle_secagg_stage(msg, context, "unmask", secret(context))


# Entry point for the deployment engine (`flwr run` against a SuperLink): data comes from node config.
app = make_client_app()
