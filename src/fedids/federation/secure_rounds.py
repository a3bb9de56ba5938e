"""Server side of one secure sum: every exchange of a run goes through :func:`secure_sum`.

Single-message modes (``none``, ``dp``, ``he``) send each client one message of the exchange's type
(``train``, ``query.stats``, ``query.features``, ``query.validate``) and add the vectors that arrive:
in numpy, or as BFV ciphertexts of fixed-point vectors with only the public context (``he``). Secure-aggregation modes
(``secagg``, ``he+secagg``) wrap that message in the four SecAgg stages (``train.secagg_keys``,
``train.secagg_shares``, the exchange's own message with the masked vector, ``train.secagg_unmask``); a
client that fails or goes silent after sending its keys is a dropout and the sum still completes while
at least the Shamir threshold of clients remains.

Every upload is validated on arrival (length, dtype, finiteness for plaintext; ciphertext structure
for HE; the SecAgg state machine's own checks); a bad one is logged and dropped, never fatal. A sum
that cannot complete safely (too many dropouts) raises :class:`~fedids.privacy.secagg.SecAggAbort`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.app.typing import ConfigRecordValues
from flwr.serverapp import Grid

from fedids.federation import messages as m
from fedids.federation.private import COUNT, REAL, PrivacyMode, SealedSum, SumResult, secagg_clip_range
from fedids.federation.setup import STATS_LENGTH, setup_from_sum

if TYPE_CHECKING:
    from fedids.privacy.he_secagg import HESecAggServer
    from fedids.privacy.secagg import SecAggConfig

log = logging.getLogger("fedids.server")
_SUM_IDS = itertools.count(1)


def payload_bytes(content: RecordDict) -> int:
    size = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            size += m.record_bytes(record)
        elif isinstance(record, ConfigRecord):
            size += sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in record.values())
    return size


def exchange(
    grid: Grid, contents: dict[int, RecordDict], message_type: str, timeout: float, result: SumResult
) -> dict[int, Message]:
    """Send one message per node; return the error-free replies by node (errors count as dropouts).
    The time spent waiting for the clients is taken off the server's own seconds."""
    messages = [Message(c, message_type=message_type, dst_node_id=n) for n, c in contents.items()]
    result.bytes_down += sum(payload_bytes(c) for c in contents.values())
    replies: dict[int, Message] = {}
    waited = time.perf_counter()
    answers = grid.send_and_receive(messages, timeout=timeout)
    result.server_seconds -= time.perf_counter() - waited
    for reply in answers:
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("%s: client %s dropped out: %s", message_type, node, m.error_reason(reply))
            continue
        if node in replies or node not in contents:
            log.warning("%s: rejected duplicate or unsolicited reply from %s", message_type, node)
            result.rejected += 1
            continue
        result.bytes_up += payload_bytes(reply.content)
        replies[node] = reply
    return replies


def secure_sum(
    grid: Grid,
    *,
    mode: PrivacyMode,
    nodes: list[int],
    message_type: str,
    make_content: Callable[[int], RecordDict],
    length: int,
    values: str,
    he_public: bytes | None,
    timeout: float,
    sum_id: int | None = None,
    check: Callable[[int, np.ndarray], None] | None = None,
    parties_per_node: int = 1,
) -> tuple[SumResult, list[Message]]:
    """Sum the vectors the ``nodes`` return for ``message_type``; returns the sum and the accepted replies.

    ``make_content(node)`` builds a node's message; this function adds the sum's description
    (:data:`~fedids.federation.messages.SUM`: vector kind, length and, under SecAgg, its configuration).
    ``check(node, vector)`` raises ValueError to refuse a vector the server sees in the clear (``none``,
    ``dp``): plausibility checks that the sealed modes cannot make. ``parties_per_node``: the most
    contributions one node's vector sums (a deployed site's devices; the fixed-point code's range).
    """
    result = SumResult()
    start = time.perf_counter()
    sum_id = next(_SUM_IDS) if sum_id is None else sum_id
    if mode.secagg:
        accepted = run_secagg(
            grid,
            mode,
            nodes,
            message_type,
            make_content,
            length,
            values,
            sum_id,
            he_public,
            timeout,
            result,
            parties_per_node,
        )
    else:
        spec: dict[str, ConfigRecordValues] = {"values": values, "length": length, "privacy": mode.name}
        quantisation = he_quantisation(nodes, length, values, sum_id, parties_per_node) if mode.he else None
        if quantisation is not None:
            spec |= {f"quant.{k}": v for k, v in quantisation.to_dict().items()}
        contents = {}
        for n in nodes:
            contents[n] = make_content(n)
            contents[n][m.SUM] = ConfigRecord(spec)
        replies = exchange(grid, contents, message_type, timeout, result)
        accepted = _sum_single_stage(mode, replies, length, values, he_public, result, check, quantisation)
    result.server_seconds += time.perf_counter() - start  # the exchanges' waiting already taken off
    return result, accepted


def he_quantisation(nodes: list[int], length: int, values: str, sum_id: int, per_node: int) -> SecAggConfig:
    """How ``he`` clients quantise their vectors before BFV encryption: SecAgg's fixed-point code (step
    ``n * clip / 2**31``, exact integer sums modulo ``2**32``) without the masks."""
    from fedids.privacy.secagg import SecAggConfig

    n = max(len(nodes), 2)
    return SecAggConfig(
        n_clients=n, vector_length=length, round_id=sum_id, clip_range=node_clip_range(values, n, per_node)
    )


def node_clip_range(values: str, n_nodes: int, per_node: int) -> float:
    """The fixed-point clip range of a sum over ``n_nodes`` vectors that each sum up to ``per_node``
    contributions (a site's partial sum: its devices; 1 for a device): ``per_node`` times one
    contribution's range for real values, so the step is the flat run's for balanced sites; counts as
    :func:`~fedids.federation.private.secagg_clip_range` has them."""
    return secagg_clip_range(values, n_nodes) if values == COUNT else secagg_clip_range(REAL, 1) * per_node


def _sum_single_stage(
    mode: PrivacyMode,
    replies: dict[int, Message],
    length: int,
    values: str,
    he_public: bytes | None,
    result: SumResult,
    check: Callable[[int, np.ndarray], None] | None = None,
    quantisation: SecAggConfig | None = None,
) -> list[Message]:
    accepted: list[Message] = []
    if mode.he:
        from fedids.privacy.he import InvalidCiphertextError
        from fedids.privacy.he_secagg import EncryptedMaskedSum

        if he_public is None or quantisation is None:
            raise ValueError("he sums need the clients' public context and a quantisation")
        total = EncryptedMaskedSum(he_public, length)  # refuses a context that holds a secret key
        for node in sorted(replies):
            try:
                blob = m.array_record(replies[node].content, m.CONTRIBUTION)["ct"].numpy()
                if blob.dtype != np.uint8 or blob.ndim != 1:
                    raise InvalidCiphertextError("ciphertext must be a 1-D uint8 array")
                total.add(blob.tobytes())
            except (InvalidCiphertextError, KeyError, ValueError) as exc:
                log.warning("rejected encrypted vector from %s: %s", node, exc)
                result.rejected += 1
                continue
            result.survivors.append(node)
            accepted.append(replies[node])
        if result.survivors:
            result.sealed = SealedSum("bfv", total.to_bytes(), values, quantisation.to_dict())
            result.atol = quantisation.n_clients * quantisation.quantization_error_bound
        return accepted
    running = np.zeros(length, dtype=np.float64)
    for node in sorted(replies):  # node order fixed, so the float sum is reproducible
        try:
            value = m.array_record(replies[node].content, m.CONTRIBUTION)["value"].numpy()
            check_plain_vector(node, value, length, check)
        except (KeyError, ValueError) as exc:
            log.warning("rejected vector from %s: %s", node, exc)
            result.rejected += 1
            continue
        running += value
        result.survivors.append(node)
        accepted.append(replies[node])
    result.plaintext = running
    return accepted


def check_plain_vector(
    node: int, value: np.ndarray, length: int, check: Callable[[int, np.ndarray], None] | None
) -> None:
    """A plaintext contribution as every summer accepts it (the flat server, a site): float64 or float32
    (a site's partial sum, sent like a device's float32 model) ``(length,)``, finite, then ``check`` (the
    caller's plausibility checks); ValueError with the reason otherwise."""
    if value.dtype not in (np.float64, np.float32) or value.shape != (length,):
        raise ValueError(
            f"vector has dtype {value.dtype} and shape {value.shape}, expected float64 or float32 ({length},)"
        )
    if not np.isfinite(value).all():
        raise ValueError("vector contains NaN or Inf")
    if check is not None:
        check(node, value)


def run_secagg(
    grid: Grid,
    mode: PrivacyMode,
    nodes: list[int],
    message_type: str,
    make_content: Callable[[int], RecordDict],
    length: int,
    values: str,
    sum_id: int,
    he_public: bytes | None,
    timeout: float,
    result: SumResult,
    parties_per_node: int = 1,
) -> list[Message]:
    from fedids.privacy.secagg import InvalidMessageError, SecAggConfig, SecAggServer, dequantize_sum

    ids = {n: i + 1 for i, n in enumerate(nodes)}
    config = SecAggConfig(
        n_clients=len(nodes),
        vector_length=length,
        round_id=sum_id,
        clip_range=node_clip_range(values, len(nodes), parties_per_node),
    )
    he_server = _he_secagg_server(config, he_public) if mode.he else None
    server = he_server if he_server is not None else SecAggServer(config)

    def cfg(node: int) -> ConfigRecord:
        return ConfigRecord({**config.to_dict(), "secagg-id": ids[node]})

    def feed(replies: dict[int, Message], receive: Callable[[dict], object]) -> list[int]:
        return _accepted(replies, receive, result, InvalidMessageError)

    replies = exchange(
        grid, {n: RecordDict({m.SECAGG_CONFIG: cfg(n)}) for n in nodes}, m.SECAGG_KEYS, timeout, result
    )
    u1 = feed(replies, server.receive_advertisement)
    broadcast = server.public_keys_message()
    replies = exchange(
        grid,
        {n: RecordDict({m.SECAGG_CONFIG: cfg(n), m.SECAGG: m.config_from(broadcast)}) for n in u1},
        m.SECAGG_SHARES,
        timeout,
        result,
    )
    u2 = feed(replies, server.receive_shares)
    routed = server.forward_shares()
    contents = {}
    for n in u2:
        content = make_content(n)
        content[m.SECAGG_CONFIG] = cfg(n)
        content[m.SECAGG] = m.config_from(routed[ids[n]])
        content[m.SUM] = ConfigRecord({"values": values, "length": length, "privacy": mode.name})
        contents[n] = content
    replies = exchange(grid, contents, message_type, timeout, result)
    u3 = feed(replies, server.receive_masked_input)
    stage3 = {n: replies[n] for n in u3}
    request = server.unmask_request()
    replies = exchange(
        grid,
        {n: RecordDict({m.SECAGG_CONFIG: cfg(n), m.SECAGG: m.config_from(request)}) for n in u3},
        m.SECAGG_UNMASK,
        timeout,
        result,
    )
    feed(replies, server.receive_unmask_response)
    survivor_ids = set(server.survivors)
    result.atol = config.n_clients * config.quantization_error_bound
    result.survivors = [n for n in nodes if ids[n] in survivor_ids]
    if he_server is not None:
        result.sealed = SealedSum("bfv", he_server.encrypted_aggregate(), values, config.to_dict())
    else:
        result.plaintext = dequantize_sum(server.aggregate(), config)
        if values == "count":
            result.plaintext = np.rint(result.plaintext)
    return [stage3[n] for n in result.survivors if n in stage3]


def _accepted(
    replies: dict[int, Message],
    receive: Callable[[dict], object],
    result: SumResult,
    invalid: type[Exception],
) -> list[int]:
    """The nodes whose SecAgg message ``receive`` accepted; each rejected one is logged and counted."""
    ok = []
    for node, reply in replies.items():
        try:
            receive(dict(reply.content[m.SECAGG]))
            ok.append(node)
        except (invalid, KeyError, TypeError) as exc:
            log.warning("secagg: rejected message from %s: %s", node, exc)
            result.rejected += 1
    return ok


def _he_secagg_server(config: SecAggConfig, he_public: bytes | None) -> HESecAggServer:
    """SecAgg's server that also adds the clients' BFV ciphertexts (``he+secagg``)."""
    from fedids.privacy.he_secagg import HESecAggServer

    if he_public is None:
        raise ValueError("he+secagg needs the clients' public context")
    return HESecAggServer(config, he_public)


# ------------------------------------------------------------------------------ the setup round
def private_setup(grid, mode, nodes, config, he_public, opener):
    """The statistics of every client, securely summed; ``he``: clients open the sum and derive the setup."""
    result, replies = secure_sum(
        grid,
        mode=mode,
        nodes=nodes,
        message_type=m.QUERY_STATS,
        make_content=lambda n: RecordDict({m.CONFIG: ConfigRecord({})}),
        length=STATS_LENGTH,
        values=COUNT,
        he_public=he_public,
        timeout=config.timeout_s,
    )
    if not result.ok:
        raise RuntimeError("no client returned usable statistics")
    keys = client_keys(replies)
    if result.plaintext is not None:
        setup = setup_from_sum(result.plaintext)
        return keys, setup, list(setup.vocabulary.labels), setup.digest()
    content = m.add_sealed(RecordDict({m.CONFIG: ConfigRecord({})}), {"stats": result.sealed})
    answers = exchange(grid, {n: content for n in keys}, m.QUERY_SETUP, config.timeout_s, SumResult())
    agreed = [(list(r.content[m.INFO]["labels"]), str(r.content[m.INFO]["digest"])) for r in answers.values()]
    if not agreed or any(a != agreed[0] for a in agreed):
        raise RuntimeError("clients derived different setups from the same statistics sum")
    labels, digest = agreed[0]
    setup = setup_from_sum(opener(result.sealed, STATS_LENGTH)) if opener else None
    keys = {n: k for n, k in keys.items() if n in answers}
    return keys, setup, labels, digest


def client_keys(replies: list[Message]) -> dict[int, str]:
    keys: dict[int, str] = {}
    for reply in replies:
        key = str(reply.content[m.INFO]["client-key"])
        if key in keys.values():
            log.warning("rejected client %s: duplicate client key %s", reply.metadata.src_node_id, key)
            continue
        keys[reply.metadata.src_node_id] = key
    return keys
