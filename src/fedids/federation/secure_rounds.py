"""Server side of one private round (see :mod:`fedids.federation.private` for what each mode reveals).

Single-message modes (``dp``, ``he``, ``he+dp``) send each selected client one ``train`` message and
sum the contributions that arrive: in numpy (``dp``) or as CKKS ciphertexts with only the public
context (``he``). Secure-aggregation modes run the four SecAgg stages as four Flower message
exchanges (``train.secagg_keys``, ``train.secagg_shares``, ``train`` with the masked input,
``train.secagg_unmask``); a client that fails or goes silent after sending its keys is a dropout and
the round still completes while at least the Shamir threshold of clients remains.

Every upload is validated on arrival (length, dtype, finiteness for plaintext; ciphertext structure
for HE; the SecAgg state machine's own checks); a bad one is logged and dropped, never fatal. A round
that cannot complete safely (too many dropouts) raises :class:`~fedids.privacy.secagg.SecAggAbort`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedids.federation import messages as m
from fedids.federation.private import GLOBAL, SECAGG_CLIP_RANGE, PrivacyMode, SumResult
from fedids.privacy.dp import distributed_noise_std

log = logging.getLogger("fedids.server")

CONTRIBUTION = "contribution"   # ArrayRecord: {"value": float32 (d,)} or {"ct": uint8 (bytes,)}
SECAGG = "secagg"               # ConfigRecord: one SecAgg protocol message (flat int/bytes dict)
SECAGG_CONFIG = "secagg-config" # ConfigRecord: SecAggConfig.to_dict() plus "secagg-id"
STAGE_KEYS, STAGE_SHARES, STAGE_UNMASK = "train.secagg_keys", "train.secagg_shares", "train.secagg_unmask"


def contribution_weights(mode: PrivacyMode, nodes: list[int], node_keys: dict[int, str],
                         counts: dict[str, float]) -> dict[int, float]:
    """Per-node weight: by ``counts`` (examples, or objective weights), or equal under ``dp`` (bounded
    sensitivity needs equal weights)."""
    if mode.dp:
        return {n: 1.0 / len(nodes) for n in nodes}
    total = sum(counts[node_keys[n]] for n in nodes)
    return {n: counts[node_keys[n]] / total for n in nodes}


def _payload_bytes(content: RecordDict) -> int:
    size = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            size += sum(a.numpy().nbytes for a in record.values())
        elif isinstance(record, ConfigRecord):
            size += sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in record.values())
    return size


def _exchange(grid: Grid, contents: dict[int, RecordDict], message_type: str, timeout: float,
              result: SumResult) -> dict[int, Message]:
    """Send one message per node; return the error-free replies by node (errors count as dropouts)."""
    messages = [Message(c, message_type=message_type, dst_node_id=n) for n, c in contents.items()]
    result.bytes_down += sum(_payload_bytes(c) for c in contents.values())
    replies: dict[int, Message] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("%s: client %s dropped out: %s", message_type, node, reply.error.reason.splitlines()[0][:200])
            continue
        if node in replies or node not in contents:
            log.warning("%s: rejected duplicate or unsolicited reply from %s", message_type, node)
            result.rejected += 1
            continue
        result.bytes_up += _payload_bytes(reply.content)
        replies[node] = reply
    return replies


def run_private_round(grid: Grid, *, mode: PrivacyMode, nodes: list[int], weights: dict[int, float],
                      make_content: Callable[[int, dict], RecordDict], length: int, server_round: int,
                      clip_norm: float, noise_multiplier: float, he_public: bytes | None,
                      timeout: float) -> tuple[SumResult, list[Message]]:
    """Aggregate the selected clients' contributions privately; returns the sum and the train replies.

    ``make_content(node, extra_config)`` builds a node's training message (global model, preprocessing,
    config) with ``extra_config`` merged into its config record.
    """
    result = SumResult()
    start = time.perf_counter()
    if mode.secagg:
        sa = _run_secagg(grid, mode, nodes, weights, make_content, length, server_round, clip_norm,
                         noise_multiplier, he_public, timeout, result)
    else:
        noise_std = distributed_noise_std(noise_multiplier, clip_norm, len(nodes)) if mode.dp else 0.0
        contents = {n: make_content(n, {"privacy": mode.name, "weight": weights[n], "clip-norm": clip_norm,
                                        "noise-std": noise_std}) for n in nodes}
        replies = _exchange(grid, contents, m.TRAIN, timeout, result)
        sa = _sum_single_stage(mode, replies, length, he_public, result)
    result.server_seconds = time.perf_counter() - start
    return result, sa


def _sum_single_stage(mode: PrivacyMode, replies: dict[int, Message], length: int, he_public: bytes | None,
                      result: SumResult) -> list[Message]:
    accepted: list[Message] = []
    if mode.he:
        from fedids.privacy.he import EncryptedSum, InvalidCiphertextError

        total = EncryptedSum(he_public, length)  # refuses a context that holds a secret key
        for node, reply in replies.items():
            try:
                blob = reply.content[CONTRIBUTION]["ct"].numpy()
                if blob.dtype != np.uint8 or blob.ndim != 1:
                    raise InvalidCiphertextError("ciphertext must be a 1-D uint8 array")
                total.add(blob.tobytes())
            except (InvalidCiphertextError, KeyError, ValueError) as exc:
                log.warning("rejected encrypted update from %s: %s", node, exc)
                result.rejected += 1
                continue
            result.survivors.append(node)
            accepted.append(reply)
        if result.survivors:
            result.ciphertext = total.to_bytes()
        return accepted
    running = np.zeros(length, dtype=np.float64)
    for node, reply in replies.items():
        try:
            value = reply.content[CONTRIBUTION]["value"].numpy()
            if value.dtype != np.float32 or value.shape != (length,):
                raise ValueError(f"contribution has dtype {value.dtype} and shape {value.shape}")
            if not np.isfinite(value).all():
                raise ValueError("contribution contains NaN or Inf")
        except (KeyError, ValueError) as exc:
            log.warning("rejected update from %s: %s", node, exc)
            result.rejected += 1
            continue
        running += value
        result.survivors.append(node)
        accepted.append(reply)
    result.plaintext = running
    return accepted


def _run_secagg(grid, mode, nodes, weights, make_content, length, server_round, clip_norm, noise_multiplier,
                he_public, timeout, result: SumResult) -> list[Message]:
    from fedids.privacy.secagg import InvalidMessageError, SecAggConfig, SecAggServer, dequantize_sum

    ids = {n: i + 1 for i, n in enumerate(nodes)}
    config = SecAggConfig(n_clients=len(nodes), vector_length=length, round_id=server_round,
                          clip_range=SECAGG_CLIP_RANGE)
    if mode.he:
        from fedids.privacy.he_secagg import HESecAggServer

        server = HESecAggServer(config, he_public)
    else:
        server = SecAggServer(config)
    # Noise shares are sized for the threshold: the sum keeps sigma*C even if the most clients drop.
    noise_std = distributed_noise_std(noise_multiplier, clip_norm, config.t) if mode.dp else 0.0

    def cfg(node: int) -> ConfigRecord:
        return ConfigRecord({**config.to_dict(), "secagg-id": ids[node]})

    def feed(replies: dict[int, Message], receive) -> list[int]:
        ok = []
        for node, reply in replies.items():
            try:
                receive(dict(reply.content[SECAGG]))
                ok.append(node)
            except (InvalidMessageError, KeyError, TypeError) as exc:
                log.warning("secagg: rejected message from %s: %s", node, exc)
                result.rejected += 1
        return ok

    replies = _exchange(grid, {n: RecordDict({SECAGG_CONFIG: cfg(n)}) for n in nodes}, STAGE_KEYS, timeout, result)
    u1 = feed(replies, server.receive_advertisement)
    broadcast = server.public_keys_message()
    replies = _exchange(grid, {n: RecordDict({SECAGG_CONFIG: cfg(n), SECAGG: ConfigRecord(broadcast)}) for n in u1},
                        STAGE_SHARES, timeout, result)
    u2 = feed(replies, server.receive_shares)
    routed = server.forward_shares()
    contents = {}
    for n in u2:
        content = make_content(n, {"privacy": mode.name, "weight": weights[n], "clip-norm": clip_norm,
                                   "noise-std": noise_std})
        content[SECAGG_CONFIG] = cfg(n)
        content[SECAGG] = ConfigRecord(routed[ids[n]])
        contents[n] = content
    replies = _exchange(grid, contents, m.TRAIN, timeout, result)
    u3 = feed(replies, server.receive_masked_input)
    train_replies = [replies[n] for n in u3]
    request = server.unmask_request()
    replies = _exchange(grid, {n: RecordDict({SECAGG_CONFIG: cfg(n), SECAGG: ConfigRecord(request)}) for n in u3},
                        STAGE_UNMASK, timeout, result)
    feed(replies, server.receive_unmask_response)
    survivor_ids = set(server.survivors)
    result.survivors = [n for n in nodes if ids[n] in survivor_ids]
    if mode.he:
        result.ciphertext = server.encrypted_aggregate()
    else:
        result.plaintext = dequantize_sum(server.aggregate(), config)
    result.secagg_config = config.to_dict()  # type: ignore[attr-defined]
    return [r for r in train_replies if r.metadata.src_node_id in set(result.survivors)]
