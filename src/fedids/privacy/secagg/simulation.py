"""One whole round in one process (:func:`simulate_round`): the reference order for a transport."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from fedids.privacy.secagg.client import SecAggClient
from fedids.privacy.secagg.server import SecAggServer
from fedids.privacy.secagg.wire import Message, message_size

STAGES = ("advertise", "share", "input", "unmask")


@dataclass
class RoundTrace:
    """What :func:`simulate_round` observed.

    Attributes
    ----------
    survivors : tuple of int
        U3, the clients whose update is in the aggregate.
    client_seconds : dict
        Client id -> wall time spent in its stage methods (seconds).
    server_seconds : float
        Time spent in the server's receive and stage-closing methods, up to the unmask responses
        (the caller times :meth:`SecAggServer.aggregate` itself).
    upload_bytes : dict
        Client id -> bytes it sent (:func:`message_size`).
    received : list of dict
        Every message the server received, when ``keep_messages`` was set.
    """

    survivors: tuple[int, ...]
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    upload_bytes: dict[int, int] = field(default_factory=dict)
    received: list[Message] = field(default_factory=list)


def simulate_round(
    server: SecAggServer,
    clients: Mapping[int, SecAggClient],
    vectors: Mapping[int, np.ndarray],
    dropouts: Mapping[str, Collection[int]] | None = None,
    keep_messages: bool = False,
) -> RoundTrace:
    """Run stages 1-4 in one process, the reference for a transport.

    Parameters
    ----------
    server, clients
        Fresh state machines sharing one config; ``clients`` maps id -> client.
    vectors : dict
        Client id -> update, shape ``(d,)``.
    dropouts : dict, optional
        Stage name (one of :data:`STAGES`) -> clients that go silent from that stage on
        (``"share"``: advertised keys, then vanished).
    keep_messages : bool
        Keep every message the server received in the trace (for inspection in tests).

    Returns
    -------
    RoundTrace
        Call ``server.aggregate()`` (or the HE variant's ``encrypted_aggregate()``) next.
    """
    dropouts = dropouts or {}
    unknown = set(dropouts) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; expected {STAGES}")
    gone: set[int] = set()
    trace = RoundTrace(survivors=())
    alive = dict(clients)

    def active(stage: str) -> list[int]:
        gone.update(dropouts.get(stage, ()))
        return [c for c in alive if c not in gone]

    def client_call(c: int, fn, *args):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        message = fn(*args)
        trace.client_seconds[c] = trace.client_seconds.get(c, 0.0) + time.perf_counter() - start
        trace.upload_bytes[c] = trace.upload_bytes.get(c, 0) + message_size(message)
        if keep_messages:
            trace.received.append(message)
        return message

    def server_call(fn, *args):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        result = fn(*args)
        trace.server_seconds += time.perf_counter() - start
        return result

    for c in active("advertise"):
        server_call(server.receive_advertisement, client_call(c, alive[c].advertise_keys))
    broadcast = server_call(server.public_keys_message)
    for c in active("share"):
        server_call(server.receive_shares, client_call(c, alive[c].share_keys, broadcast))
    routed = server_call(server.forward_shares)
    for c in active("input"):
        message = client_call(c, alive[c].masked_input, routed[c], vectors[c])
        server_call(server.receive_masked_input, message)
    request = server_call(server.unmask_request)
    for c in active("unmask"):
        server_call(server.receive_unmask_response, client_call(c, alive[c].unmask, request))
    trace.survivors = server.survivors
    return trace
