"""A SecAgg party on a Flower node: the stages of :mod:`fedids.privacy.secagg` run by whoever holds a
vector to sum, with the protocol's state kept in the node's state (``Context.state``) between messages.

Two kinds of node are parties: every device in a ``secagg`` run (:mod:`fedids.federation.client`), and
in a deployed three-tier run with ``secagg`` across sites the site aggregator's uplink SuperNode
(:mod:`fedids.federation.site_app`), whose vector is its devices' partial sum. This module imports
neither torch nor pandas, so the uplink, which starts a process for every message, stays light.

Guarantees are SecAgg's (:mod:`fedids.privacy.secagg`): the server learns only the sum of at least ``t``
parties' vectors; the state saved here holds this party's own keys and masks, never another's vector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Context, Message, RecordDict

from fedids.federation import messages as m
from fedids.federation.private import PrivacyMode

if TYPE_CHECKING:
    from fedids.privacy.secagg import SecAggClient

SECAGG_STATE = "fedids-secagg"


def masked_input(
    msg: Message, vector: np.ndarray, context: Context | None, secret_context: bytes | None, mode: PrivacyMode
) -> RecordDict:
    """Stage 3: this party's ``vector`` masked (and BFV-encrypted under ``he+secagg``) for the sum
    ``msg`` asks for, with the keys of the stages before it."""
    if context is None:
        raise RuntimeError("secure aggregation message without a node state to keep its keys")
    client = _restore(context, secret_context, mode)
    out = client.masked_input(m.config_record(msg.content, m.SECAGG), np.asarray(vector, np.float64))
    _save(context, client)
    return RecordDict({m.SECAGG: m.config_from(out)})


def handle_secagg_stage(msg: Message, context: Context, stage: str, secret_context: bytes | None) -> Message:
    """SecAgg stages 1, 2 and 4 (stage 3 is the exchange's own message); state kept in the node's state."""
    from fedids.privacy.secagg import SecAggClient, SecAggConfig

    cfg = dict(m.config_record(msg.content, m.SECAGG_CONFIG))
    client_id = int(m.number(cfg, "secagg-id"))
    del cfg["secagg-id"]
    if stage == "keys":
        client = SecAggClient(SecAggConfig.from_dict(cfg), client_id)
        out = client.advertise_keys()
    else:
        client = _restore(context, secret_context, PrivacyMode(he=False, secagg=True))
        if client.client_id != client_id:
            raise RuntimeError("secure aggregation state belongs to another client id")
        out = (
            client.share_keys(m.config_record(msg.content, m.SECAGG))
            if stage == "shares"
            else client.unmask(m.config_record(msg.content, m.SECAGG))
        )
    if stage == "unmask":
        del context.state[SECAGG_STATE]
    else:
        _save(context, client)
    return Message(RecordDict({m.SECAGG: m.config_from(out)}), reply_to=msg)


def _restore(context: Context, secret_context: bytes | None, mode: PrivacyMode) -> SecAggClient:
    from fedids.privacy.secagg import SecAggClient

    if SECAGG_STATE not in context.state:
        raise RuntimeError("secure aggregation message without a prior key stage on this node")
    state = dict(m.config_record(context.state, SECAGG_STATE))
    if mode.he:
        from fedids.privacy.he_secagg import HESecAggClient

        if secret_context is None:
            raise RuntimeError("this run is encrypted and this client has no HE key (he-secret-context)")
        client = HESecAggClient.from_state_dict(state)
        client._secret_context = secret_context  # noqa: SLF001 (the key file is not part of the state)
        return client
    return SecAggClient.from_state_dict(state)


def _save(context: Context, client: SecAggClient) -> None:
    context.state[SECAGG_STATE] = m.config_from(client.state_dict())
