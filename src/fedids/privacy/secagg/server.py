"""The server's side of a secure-aggregation round (:class:`SecAggServer`)."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedids.privacy.secagg.config import (
    _MAX_ID,
    SECRET_BYTES,
    SHAMIR_PRIME,
    SHARE_BYTES,
    SHARE_CIPHERTEXT_BYTES,
    InvalidMessageError,
    SecAggAbort,
    SecAggConfig,
    SecAggError,
)
from fedids.privacy.secagg.crypto import LagrangeInterpolator, _agree, _mask_seed, _self_seed, prg_uint32
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
    _get_int,
    pack_ids,
    pack_records,
    unpack_records,
)


class SecAggServer:
    """The server's side of a round: collects messages, routes shares, removes masks.

    Each ``receive_*`` method accepts one client's message or raises
    :class:`InvalidMessageError` (the caller logs and drops it); each stage-closing method
    (:meth:`public_keys_message`, :meth:`forward_shares`, :meth:`unmask_request`,
    :meth:`aggregate`) raises :class:`SecAggAbort` when fewer than t clients remain.
    Masked inputs are added on arrival and dropped (memory: one running sum).
    """

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._u1: list[int] = []
        self._x: dict[int, int] = {}
        self._routed: dict[int, dict[int, bytes]] = {}  # recipient -> sender -> ciphertext
        self._share_senders: set[int] = set()
        self._u2: list[int] = []
        self._u3: list[int] = []
        self._sum = np.zeros(config.vector_length, dtype=np.uint32)
        self._responses: dict[int, tuple[dict[int, bytes], dict[int, bytes]]] = {}
        self._stage = 1
        self.reconstructed_b: set[int] = set()
        """Clients whose self-mask seed was reconstructed (survivors only)."""
        self.reconstructed_s: set[int] = set()
        """Clients whose masking private key was reconstructed (dropped clients only)."""

    @property
    def survivors(self) -> tuple[int, ...]:
        """U3: clients whose masked input is in the sum (the mean divides by their count)."""
        return tuple(self._u3)

    @property
    def dropped(self) -> tuple[int, ...]:
        """Clients that shared keys but sent no masked input (U2 \\ U3)."""
        return tuple(sorted(set(self._u2) - set(self._u3)))

    def _sender(
        self, message: Mapping[str, object], stage: int, allowed: Collection[int], seen: Collection[int]
    ) -> int:
        if self._stage != stage:
            raise InvalidMessageError(f"stage {stage} message arrived at stage {self._stage}")
        _check_round(message, self.config)
        sender = _get_int(message, CLIENT_ID)
        if sender not in allowed:
            raise InvalidMessageError(f"client {sender} is not expected at stage {stage}")
        if sender in seen:
            raise InvalidMessageError(f"duplicate stage-{stage} message from client {sender}")
        return sender

    def _close(self, stage: int, remaining: int, what: str) -> None:
        if self._stage != stage:
            raise SecAggError(f"stage {stage} closed at stage {self._stage}")
        if remaining < self.config.t:
            self._stage = 0  # aborted: nothing further is accepted
            raise SecAggAbort(
                f"only {remaining} clients {what}; the threshold is {self.config.t} "
                f"(at most {self.config.n_clients - self.config.t} of "
                f"{self.config.n_clients} may drop)"
            )
        self._stage = stage + 1

    # stage 1
    def receive_advertisement(self, message: Mapping[str, object]) -> None:
        """Stage 1: one client's public keys."""
        sender = self._sender(message, 1, range(_MAX_ID + 1), self._keys)
        if len(self._keys) >= self.config.n_clients:
            raise InvalidMessageError(f"more than {self.config.n_clients} clients advertised keys")
        c_pk, s_pk = _get_bytes(message, C_PK), _get_bytes(message, S_PK)
        if len(c_pk) != 32 or len(s_pk) != 32:
            raise InvalidMessageError(f"client {sender}: public keys must be 32 bytes")
        self._keys[sender] = (c_pk, s_pk)

    def public_keys_message(self) -> Message:
        """Close stage 1: the broadcast of U1's public keys (the same message for every client)."""
        self._close(1, len(self._keys), "advertised keys")
        self._u1 = sorted(self._keys)
        self._x = {v: i + 1 for i, v in enumerate(self._u1)}
        records = pack_records((v, self._keys[v][0] + self._keys[v][1]) for v in self._u1)
        return {ROUND: self.config.round_id, PUBLIC_KEYS: records}

    # stage 2
    def receive_shares(self, message: Mapping[str, object]) -> None:
        """Stage 2: one client's encrypted shares, one per other client of U1."""
        sender = self._sender(message, 2, self._x, self._share_senders)
        records = unpack_records(_get_bytes(message, SHARES), SHARES, SHARE_CIPHERTEXT_BYTES)
        if set(records) != set(self._u1) - {sender}:
            raise InvalidMessageError(f"client {sender}: shares must address every other client of U1")
        for recipient, blob in records.items():
            self._routed.setdefault(recipient, {})[sender] = blob
        self._share_senders.add(sender)

    def forward_shares(self) -> dict[int, Message]:
        """Close stage 2: for each client of U2, the ciphertexts addressed to it by U2."""
        u2 = sorted(self._share_senders)
        self._close(2, len(u2), "shared keys")
        self._u2 = u2
        out: dict[int, Message] = {
            v: {
                ROUND: self.config.round_id,
                SHARES: pack_records((u, self._routed[v][u]) for u in u2 if u != v),
            }
            for v in u2
        }
        self._routed.clear()
        return out

    # stage 3
    def _accept_input(self, payload: bytes) -> None:
        """Hook: validate and add one masked upload (plain uint32 here)."""
        if len(payload) != 4 * self.config.vector_length:
            raise InvalidMessageError(
                f"masked input of {len(payload)} bytes, expected {4 * self.config.vector_length}"
            )
        self._sum += np.frombuffer(payload, dtype="<u4").astype(np.uint32)

    def receive_masked_input(self, message: Mapping[str, object]) -> None:
        """Stage 3: one client's masked update, added to the running sum."""
        sender = self._sender(message, 3, self._u2, self._u3)
        self._accept_input(_get_bytes(message, MASKED))
        self._u3.append(sender)

    def unmask_request(self) -> Message:
        """Close stage 3: survivors (U3) and dropped clients (U2 \\ U3), the same for everyone."""
        self._close(3, len(self._u3), "sent masked input")
        self._u3.sort()
        return {ROUND: self.config.round_id, SURVIVORS: pack_ids(self._u3), DROPPED: pack_ids(self.dropped)}

    # stage 4
    def receive_unmask_response(self, message: Mapping[str, object]) -> None:
        """Stage 4: one survivor's shares of ``b_v`` (v in U3) and ``s_v`` (v dropped)."""
        sender = self._sender(message, 4, self._u3, self._responses)
        b = unpack_records(_get_bytes(message, B_SHARES), B_SHARES, SHARE_BYTES)
        s = unpack_records(_get_bytes(message, S_SHARES), S_SHARES, SHARE_BYTES)
        if set(b) != set(self._u3) or set(s) != set(self.dropped):
            raise InvalidMessageError(f"client {sender}: unmask response does not match the request")
        if any(int.from_bytes(v, "big") >= SHAMIR_PRIME for v in [*b.values(), *s.values()]):
            raise InvalidMessageError(f"client {sender}: share out of range")
        self._responses[sender] = (b, s)

    def _reconstruct(self) -> tuple[dict[int, bytes], dict[int, bytes]]:
        p = SHAMIR_PRIME
        responders = sorted(self._responses)
        base, extra = responders[: self.config.t], responders[self.config.t :]
        interpolator = LagrangeInterpolator([self._x[r] for r in base])
        at_zero = interpolator.coefficients(0)
        checks = [(r, interpolator.coefficients(self._x[r])) for r in extra]
        owners = [(u, 0) for u in self._u3] + [(v, 1) for v in self.dropped]
        shares = {
            (owner, which): {r: int.from_bytes(self._responses[r][which][owner], "big") for r in responders}
            for owner, which in owners
        }

        def consistent(ys: Mapping[int, int]) -> bool:
            base_ys = [ys[r] for r in base]
            return all(
                sum(c * y for c, y in zip(coefficients, base_ys)) % p == ys[r] for r, coefficients in checks
            )

        # Every share beyond the t used must lie on the same polynomial, or the round aborts
        # instead of silently corrupting the sum. One check on a random linear combination of all
        # secrets' shares covers them all (a mismatch survives it with probability 1/p); only on
        # failure are the secrets checked one by one, to name the culprit.
        weights = {key: secrets.randbelow(p) for key in shares}
        combined = {r: sum(weights[key] * ys[r] for key, ys in shares.items()) % p for r in responders}
        if not consistent(combined):
            for (owner, _), ys in shares.items():
                if not consistent(ys):
                    raise SecAggAbort(f"inconsistent Shamir shares for client {owner}")
            raise SecAggAbort("inconsistent Shamir shares")
        out: tuple[dict[int, bytes], dict[int, bytes]] = ({}, {})
        for (owner, which), ys in shares.items():
            value = sum(c * ys[r] for c, r in zip(at_zero, base)) % p
            if value >= 1 << (8 * SECRET_BYTES):
                raise SecAggAbort(f"reconstructed secret of client {owner} is out of range")
            out[which][owner] = value.to_bytes(SECRET_BYTES, "big")
        return out

    def mask_correction(self) -> np.ndarray:
        """Close stage 4: the vector that removes all remaining masks from the sum of U3's inputs.

        Returns
        -------
        numpy.ndarray
            Shape ``(d,)``, uint32: minus the self masks of U3 and minus the pairwise masks that
            U3 shares with dropped clients, modulo ``2**32``.

        Raises
        ------
        SecAggAbort
            Fewer than t responses, inconsistent shares, or a reconstructed key that does not
            match the dropped client's advertised public key.
        """
        self._close(4, len(self._responses), "answered the unmask request")
        b, s = self._reconstruct()
        self._responses.clear()
        d = self.config.vector_length
        correction = np.zeros(d, dtype=np.uint32)
        for u, seed in b.items():
            correction -= prg_uint32(_self_seed(seed, self.config, u), d)
        self.reconstructed_b = set(b)
        for v, raw in s.items():
            private = X25519PrivateKey.from_private_bytes(raw)
            if private.public_key().public_bytes_raw() != self._keys[v][1]:
                raise SecAggAbort(f"reconstructed key of client {v} does not match its public key")
            for u in self._u3:
                mask = prg_uint32(_mask_seed(_agree(private, self._keys[u][1]), self.config, u, v), d)
                # Client u added +mask if u < v, -mask if u > v; undo it.
                if u < v:
                    correction -= mask
                else:
                    correction += mask
        self.reconstructed_s = set(s)
        return correction

    def aggregate(self) -> np.ndarray:
        """Close stage 4 and return the sum of U3's quantised updates.

        Returns
        -------
        numpy.ndarray
            Shape ``(d,)``, uint32 modulo ``2**32``; :func:`dequantize_sum` turns it into floats.
        """
        return self._sum + self.mask_correction()
