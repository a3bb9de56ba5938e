"""The client's side of a secure-aggregation round (:class:`SecAggClient`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fedids.privacy.secagg.config import (
    _MAX_ID,
    _NONCE_BYTES,
    SECRET_BYTES,
    SHAMIR_PRIME,
    SHARE_BYTES,
    SHARE_CIPHERTEXT_BYTES,
    SecAggAbort,
    SecAggConfig,
    SecAggError,
    quantize,
)
from fedids.privacy.secagg.crypto import (
    _agree,
    _mask_seed,
    _self_seed,
    _share_ad,
    _share_key,
    prg_uint32,
    shamir_split,
)
from fedids.privacy.secagg.wire import (
    B_SHARES,
    C_PK,
    CLIENT_ID,
    DROPPED,
    MASKED,
    PUBLIC_KEYS,
    ROUND,
    S_PK,
    S_SHARES,
    SHARES,
    SURVIVORS,
    Message,
    _check_round,
    _get_bytes,
    pack_ids,
    pack_records,
    unpack_ids,
    unpack_records,
)


class SecAggClient:
    """One client's side of a round. Call the four stage methods in order.

    Parameters
    ----------
    config : SecAggConfig
        The round's configuration, as sent by the server.
    client_id : int
        This client's id (0 <= id < 2**64), unique in the round; the transport authenticates it.

    Notes
    -----
    Key pairs and seeds come from the OS CSPRNG, fresh for every instance: use one instance per
    round. ``repr`` never shows key material.
    """

    def __init__(self, config: SecAggConfig, client_id: int) -> None:
        if not 0 <= client_id <= _MAX_ID:
            raise ValueError(f"client_id must be in [0, 2**64), got {client_id}")
        self.config = config
        self.client_id = int(client_id)
        self._c_sk = X25519PrivateKey.generate()
        self._s_sk = X25519PrivateKey.generate()
        self._c_pk = self._c_sk.public_key().public_bytes_raw()
        self._s_pk = self._s_sk.public_key().public_bytes_raw()
        self._b: bytes | None = None
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._held: dict[int, tuple[int, int]] = {}  # owner -> (share of b_owner, share of s_owner)
        self._u2: frozenset[int] = frozenset()
        self._stage = 1

    def __repr__(self) -> str:
        return f"SecAggClient(client_id={self.client_id}, round={self.config.round_id}, stage={self._stage})"

    def state_dict(self) -> dict[str, int | float | bytes]:
        """This client's state between stages, as flat ``int``/``float``/``bytes`` values.

        A transport whose client process does not live across stages (a Flower ClientApp is called
        once per message) keeps this in the node's private state and restores it with
        :meth:`from_state_dict`. It holds the round's secret keys and seeds: it must never leave the
        client (Flower's node state stays on the SuperNode).
        """
        held = pack_records(
            (v, a.to_bytes(SHARE_BYTES, "big") + b.to_bytes(SHARE_BYTES, "big"))
            for v, (a, b) in sorted(self._held.items())
        )
        keys = pack_records((v, c + s) for v, (c, s) in sorted(self._keys.items()))
        return {
            **{f"config.{k}": v for k, v in self.config.to_dict().items()},
            "client_id": self.client_id,
            "stage": self._stage,
            "c_sk": self._c_sk.private_bytes_raw(),
            "s_sk": self._s_sk.private_bytes_raw(),
            "b": self._b or b"",
            "keys": keys,
            "held": held,
            "u2": pack_ids(sorted(self._u2)),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild a client saved with :meth:`state_dict` (same class: HE subclasses override init)."""
        config = SecAggConfig.from_dict(
            {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("config.")}
        )
        client = cls.__new__(cls)
        client.config = config
        client.client_id = int(state["client_id"])
        client._c_sk = X25519PrivateKey.from_private_bytes(bytes(state["c_sk"]))
        client._s_sk = X25519PrivateKey.from_private_bytes(bytes(state["s_sk"]))
        client._c_pk = client._c_sk.public_key().public_bytes_raw()
        client._s_pk = client._s_sk.public_key().public_bytes_raw()
        client._b = bytes(state["b"]) or None
        client._keys = {
            v: (d[:32], d[32:]) for v, d in unpack_records(bytes(state["keys"]), "keys", 64).items()
        }
        client._held = {
            v: (int.from_bytes(d[:SHARE_BYTES], "big"), int.from_bytes(d[SHARE_BYTES:], "big"))
            for v, d in unpack_records(bytes(state["held"]), "held", 2 * SHARE_BYTES).items()
        }
        client._u2 = frozenset(unpack_ids(bytes(state["u2"]), "u2"))
        client._stage = int(state["stage"])
        return client

    def _enter(self, stage: int) -> None:
        if self._stage != stage:
            raise SecAggError(f"client {self.client_id}: stage {stage} called at stage {self._stage}")
        self._stage = stage + 1

    # stage 1
    def advertise_keys(self) -> Message:
        """Stage 1: this client's two public keys."""
        self._enter(1)
        return {ROUND: self.config.round_id, CLIENT_ID: self.client_id, C_PK: self._c_pk, S_PK: self._s_pk}

    # stage 2
    def share_keys(self, public_keys: Mapping[str, object]) -> Message:
        """Stage 2: from the server's broadcast of U1's keys, encrypted Shamir shares for each peer.

        Raises
        ------
        SecAggAbort
            Fewer than t clients, this client's keys missing or altered, or repeated keys.
        """
        self._enter(2)
        _check_round(public_keys, self.config)
        records = unpack_records(_get_bytes(public_keys, PUBLIC_KEYS), PUBLIC_KEYS, 64)
        keys = {v: (data[:32], data[32:]) for v, data in records.items()}
        if keys.get(self.client_id) != (self._c_pk, self._s_pk):
            raise SecAggAbort("the key broadcast does not carry this client's keys unaltered")
        if not self.config.t <= len(keys) <= self.config.n_clients:
            raise SecAggAbort(
                f"{len(keys)} clients advertised keys; need {self.config.t} to {self.config.n_clients}"
            )
        all_keys = [k for pair in keys.values() for k in pair]
        if len(set(all_keys)) != len(all_keys):
            raise SecAggAbort("repeated public keys in the broadcast")
        self._keys = keys
        u1 = sorted(keys)
        self._b = os.urandom(SECRET_BYTES)
        b_shares = shamir_split(self._b, self.config.t, len(u1))
        s_shares = shamir_split(self._s_sk.private_bytes_raw(), self.config.t, len(u1))
        out = []
        for index, v in enumerate(u1):
            if v == self.client_id:
                self._held[v] = (b_shares[index], s_shares[index])
                continue
            key = _share_key(_agree(self._c_sk, keys[v][0]), self.config, self.client_id, v)
            nonce = os.urandom(_NONCE_BYTES)
            plaintext = b_shares[index].to_bytes(SHARE_BYTES, "big") + s_shares[index].to_bytes(
                SHARE_BYTES, "big"
            )
            sealed = ChaCha20Poly1305(key).encrypt(
                nonce, plaintext, _share_ad(self.config.round_id, self.client_id, v)
            )
            out.append((v, nonce + sealed))
        return {ROUND: self.config.round_id, CLIENT_ID: self.client_id, SHARES: pack_records(out)}

    # stage 3
    def masked_vector(self, shares: Mapping[str, object], vector: np.ndarray) -> np.ndarray:
        """Stage 3 core: decrypt the shares routed to this client, return the masked update.

        Parameters
        ----------
        shares : dict
            The server's message for this client: ciphertexts from every other client in U2.
        vector : numpy.ndarray
            Shape ``(d,)``, float: the update (already weighted, clipped and noised as wanted).

        Returns
        -------
        numpy.ndarray
            Shape ``(d,)``, uint32: quantised update plus all masks, modulo ``2**32``.

        Raises
        ------
        SecAggAbort
            A share fails authentication or is malformed, or fewer than t clients remain.
        """
        self._enter(3)
        _check_round(shares, self.config)
        records = unpack_records(_get_bytes(shares, SHARES), SHARES)
        senders = set(records)
        if self.client_id in senders or not senders <= set(self._keys):
            raise SecAggAbort("shares from clients that did not advertise keys")
        if len(senders) + 1 < self.config.t:
            raise SecAggAbort(f"{len(senders) + 1} clients shared keys; need {self.config.t}")
        for v, blob in records.items():
            if len(blob) != SHARE_CIPHERTEXT_BYTES:
                raise SecAggAbort(f"share ciphertext from client {v} has the wrong size")
            key = _share_key(_agree(self._c_sk, self._keys[v][0]), self.config, self.client_id, v)
            try:
                plaintext = ChaCha20Poly1305(key).decrypt(
                    blob[:_NONCE_BYTES],
                    blob[_NONCE_BYTES:],
                    _share_ad(self.config.round_id, v, self.client_id),
                )
            except InvalidTag:
                raise SecAggAbort(f"share ciphertext from client {v} failed authentication") from None
            b_share = int.from_bytes(plaintext[:SHARE_BYTES], "big")
            s_share = int.from_bytes(plaintext[SHARE_BYTES:], "big")
            if b_share >= SHAMIR_PRIME or s_share >= SHAMIR_PRIME:
                raise SecAggAbort(f"share from client {v} is out of range")
            self._held[v] = (b_share, s_share)
        self._u2 = frozenset(senders | {self.client_id})
        assert self._b is not None
        d = self.config.vector_length
        y = quantize(vector, self.config)
        y += prg_uint32(_self_seed(self._b, self.config, self.client_id), d)
        for v in sorted(senders):
            mask = prg_uint32(
                _mask_seed(_agree(self._s_sk, self._keys[v][1]), self.config, self.client_id, v), d
            )
            if self.client_id < v:
                y += mask
            else:
                y -= mask  # uint32 arithmetic wraps modulo 2**32, as the protocol wants
        return y

    def _encode_input(self, masked: np.ndarray) -> bytes:
        """Hook: the bytes that carry the masked vector (plain little-endian uint32 here)."""
        return masked.astype("<u4").tobytes()

    def masked_input(self, shares: Mapping[str, object], vector: np.ndarray) -> Message:
        """Stage 3: the masked-input message (see :meth:`masked_vector`)."""
        payload = self._encode_input(self.masked_vector(shares, vector))
        return {ROUND: self.config.round_id, CLIENT_ID: self.client_id, MASKED: payload}

    # stage 4
    def unmask(self, request: Mapping[str, object]) -> Message:
        """Stage 4: reveal shares of ``b_v`` for survivors and of ``s_v`` for dropped clients.

        Raises
        ------
        SecAggAbort
            The request is inconsistent with this client's view of U2, lists a client as both
            survivor and dropped, lists this client as dropped, or has fewer than t survivors.
        """
        self._enter(4)
        _check_round(request, self.config)
        survivors = set(unpack_ids(_get_bytes(request, SURVIVORS), SURVIVORS))
        dropped = set(unpack_ids(_get_bytes(request, DROPPED), DROPPED))
        if survivors & dropped:
            raise SecAggAbort("unmask request lists clients as both survivor and dropped")
        if survivors | dropped != self._u2:
            raise SecAggAbort("unmask request does not match the clients that shared keys")
        if self.client_id not in survivors:
            raise SecAggAbort("unmask request lists this client as dropped")
        if len(survivors) < self.config.t:
            raise SecAggAbort(f"{len(survivors)} survivors; need {self.config.t}")
        b_out = [(v, self._held[v][0].to_bytes(SHARE_BYTES, "big")) for v in sorted(survivors)]
        s_out = [(v, self._held[v][1].to_bytes(SHARE_BYTES, "big")) for v in sorted(dropped)]
        # This round's secrets are spent; drop them (best effort in Python).
        self._held.clear()
        self._b = None
        return {
            ROUND: self.config.round_id,
            CLIENT_ID: self.client_id,
            B_SHARES: pack_records(b_out),
            S_SHARES: pack_records(s_out),
        }
