"""Secure aggregation of quantised updates (Bonawitz et al., CCS 2017; the SecAgg+ message flow).

Transport-agnostic state machines for one round: :class:`SecAggClient` and :class:`SecAggServer`
exchange *messages*, flat ``dict[str, int | bytes]`` (keys declared once below; nested data packed
into bytes with a fixed layout; no pickle), which a transport (Flower's ``ConfigRecord``) moves
as they are. :func:`simulate_round` drives a whole round in one process and documents the order.

Stages
------
0. The server sends every selected client the same :class:`SecAggConfig` (``to_dict``).
1. **Advertise keys.** Each client u makes two X25519 key pairs: ``c_u`` (to encrypt shares) and
   ``s_u`` (to agree on pairwise masks) and sends both public keys. The server broadcasts all of
   them (set U1, at least ``threshold`` clients).
2. **Share keys.** u draws a 32-byte self-mask seed ``b_u``, Shamir-splits ``b_u`` and the raw
   ``s_u`` private key into ``|U1|`` shares (threshold t), and encrypts the shares meant for v with
   ChaCha20-Poly1305 under ``HKDF-SHA256(X25519(c_u, c_v))``; the associated data binds protocol,
   round, sender and recipient. The server only routes ciphertexts (set U2).
3. **Masked input.** u decrypts the shares it received (any tag failure aborts: fail closed),
   quantises its update to ``uint32`` (:func:`quantize`) and adds, modulo ``2**32``,
   ``PRG(b_u)`` and ``+PRG(s_uv)`` for every other v in U2 with ``u < v``, ``-PRG(s_uv)`` for
   ``u > v`` (``s_uv = HKDF(X25519(s_u, s_v))``; PRG = ChaCha20 keystream). Set U3.
4. **Unmasking.** Every survivor in U3 reveals its share of ``b_v`` for each v in U3 and of
   ``s_v`` for each v in U2 \\ U3, never both for one v. The server reconstructs them (t shares,
   checked against every extra share), strips the self masks and the pairwise masks of dropped
   clients, and obtains the sum of U3's quantised updates modulo ``2**32``.

Guarantees (semi-honest server, any set of fewer than t colluding clients)
--------------------------------------------------------------------------
* The server learns the sum of U3's quantised updates and nothing else about them: each masked
  upload is uniform modulo ``2**32``; ``s_u`` of a survivor and ``b_v`` of a dropped client are
  never reconstructed (clients refuse an unmask request that lists a client in both sets).
* The round completes when at most ``n_clients - threshold`` clients (30% by default) drop at any
  point after advertising keys; with more, it aborts with :class:`SecAggAbort` rather than reveal.
* Not covered: a server that lies about dropouts differently to different clients (the consistency
  round with signatures of the malicious-secure variant is not implemented), and integrity of
  inputs (a client may submit any value in range). Keys are fresh per round and bound to
  ``round_id``; ciphertexts and masks of one round are useless in another.

Quantisation
------------
Values are clipped to ``[-clip_range, clip_range]`` and rounded to the nearest integer multiple of
``1 / scale`` with ``scale = floor((2**31 - 1) / (n_clients * clip_range))``: the sum of up to
``n_clients`` values then fits in a signed 32-bit integer and decodes exactly. A de-quantised mean
differs from the mean of the clipped inputs by at most ``0.5 / scale`` per coordinate (2.3e-9 for
10 clients and ``clip_range = 1``; 2.3e-8 for 100).

Shamir sharing
--------------
Over the prime field GF(2**521 - 1) (secrets are 32 bytes), written here rather than taken from
pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir``: that one works in GF(2**128) in pure Python
and measured 0.27 s per split and 0.43 s per reconstruction of a 16-byte secret for 100 clients
(threshold 70) on these machines. A round needs at least one reconstruction per client, two
16-byte halves per 32-byte secret: about a minute of server time per 100-client round. Prime-field
Lagrange interpolation with coefficients shared across all secrets of a round takes milliseconds.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import struct
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

MODULUS_BITS = 32
MODULUS = 1 << MODULUS_BITS
DEFAULT_DROPOUT_TOLERANCE = 0.3
SHAMIR_PRIME = 2**521 - 1
SECRET_BYTES = 32
SHARE_BYTES = (SHAMIR_PRIME.bit_length() + 7) // 8  # 66
_PROTOCOL = b"fedids/secagg/v1"
_NONCE_BYTES = 12
_TAG_BYTES = 16
SHARE_CIPHERTEXT_BYTES = _NONCE_BYTES + 2 * SHARE_BYTES + _TAG_BYTES
_MAX_ID = 2**64 - 1

# Message keys: every message is a flat dict of these keys to int or bytes.
ROUND = "round"
CLIENT_ID = "client_id"
C_PK = "c_pk"
S_PK = "s_pk"
PUBLIC_KEYS = "public_keys"
SHARES = "shares"
MASKED = "masked"
SURVIVORS = "survivors"
DROPPED = "dropped"
B_SHARES = "b_shares"
S_SHARES = "s_shares"

Message = dict[str, int | bytes]


class SecAggError(Exception):
    """Base class of secure-aggregation errors."""


class SecAggAbort(SecAggError):
    """The round cannot complete safely (too few clients, failed authentication, inconsistent
    shares or requests). Nothing is revealed; the caller abandons the round."""


class InvalidMessageError(SecAggError, ValueError):
    """One malformed, duplicate, late or unexpected message; the caller logs it and drops it, the
    round goes on without that client."""


# ------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SecAggConfig:
    """Parameters every participant of one round must share.

    Parameters
    ----------
    n_clients : int
        Number of selected clients (at most this many advertise keys), >= 2.
    vector_length : int
        Values per update, ``d``.
    round_id : int
        Distinct per round (0 <= round_id < 2**64); binds keys, masks and ciphertexts to it.
    clip_range : float
        Each value is clipped to ``[-clip_range, clip_range]`` before quantisation.
    threshold : int or None
        Shamir threshold t: minimum number of clients that must remain at every stage, with
        ``n_clients / 2 < t <= n_clients``. Default ``n_clients - floor(0.3 * n_clients)``: up to
        30% may drop after advertising keys.
    """

    n_clients: int
    vector_length: int
    round_id: int = 0
    clip_range: float = 1.0
    threshold: int | None = None

    def __post_init__(self) -> None:
        if self.n_clients < 2:
            raise ValueError(f"secure aggregation needs at least 2 clients, got {self.n_clients}")
        if self.vector_length < 1:
            raise ValueError(f"vector_length must be positive, got {self.vector_length}")
        if not 0 <= self.round_id <= _MAX_ID:
            raise ValueError(f"round_id must be in [0, 2**64), got {self.round_id}")
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ValueError(f"clip_range must be positive and finite, got {self.clip_range}")
        if self.threshold is None:
            default = self.n_clients - math.floor(DEFAULT_DROPOUT_TOLERANCE * self.n_clients)
            object.__setattr__(self, "threshold", default)
        assert self.threshold is not None
        # t > n/2: otherwise a server could gather t shares of both b_u and s_u of one client.
        if not self.n_clients / 2 < self.threshold <= self.n_clients:
            raise ValueError(f"threshold must be in ({self.n_clients / 2}, {self.n_clients}], "
                             f"got {self.threshold}")
        if self.scale < 1:
            raise ValueError("clip_range * n_clients leaves no room for quantisation in 32 bits")

    @property
    def t(self) -> int:
        """The resolved Shamir threshold."""
        assert self.threshold is not None
        return self.threshold

    @property
    def scale(self) -> float:
        """Quantisation steps per unit: ``floor((2**31 - 1) / (n_clients * clip_range))``."""
        return float(math.floor((2**31 - 1) / (self.n_clients * self.clip_range)))

    @property
    def quantization_error_bound(self) -> float:
        """Max abs error of a de-quantised mean of clipped inputs, per coordinate: ``0.5 / scale``."""
        return 0.5 / self.scale

    def to_dict(self) -> dict[str, int | float]:
        """Plain dict for the transport (``threshold`` resolved)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SecAggConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ValueError."""
        known = {"n_clients", "vector_length", "round_id", "clip_range", "threshold"}
        if set(data) != known:
            raise ValueError(f"secagg config keys {sorted(data)} != {sorted(known)}")
        return cls(n_clients=int(data["n_clients"]), vector_length=int(data["vector_length"]),
                   round_id=int(data["round_id"]), clip_range=float(data["clip_range"]),
                   threshold=int(data["threshold"]))


# ------------------------------------------------------------------------------- quantisation
def quantize(vector: np.ndarray, config: SecAggConfig) -> np.ndarray:
    """Clip and quantise an update to integers modulo ``2**32``.

    Parameters
    ----------
    vector : numpy.ndarray
        Shape ``(config.vector_length,)``, float, finite.

    Returns
    -------
    numpy.ndarray
        Shape ``(d,)``, uint32: ``round(clip(x) * scale)`` in two's complement.
    """
    values = np.asarray(vector)
    if values.shape != (config.vector_length,):
        raise ValueError(f"expected shape ({config.vector_length},), got {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"expected a float vector, got {values.dtype}")
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("update contains NaN or Inf")
    outside = int(np.count_nonzero(np.abs(values) > config.clip_range))
    if outside:
        log.warning("secagg: %d of %d values clipped to +/-%g before quantisation",
                    outside, values.size, config.clip_range)
    clipped = np.clip(values, -config.clip_range, config.clip_range)
    # Two's complement modulo 2**32: negative values wrap to the top of the range.
    return (np.rint(clipped * config.scale).astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)


def dequantize_sum(total: np.ndarray, config: SecAggConfig) -> np.ndarray:
    """Turn an aggregate modulo ``2**32`` back into floats.

    Parameters
    ----------
    total : numpy.ndarray
        Shape ``(d,)``, uint32: the sum of at most ``config.n_clients`` quantised updates.

    Returns
    -------
    numpy.ndarray
        Shape ``(d,)``, float64: the sum of the clipped updates, within ``n * 0.5 / scale``.
        Divide by the number of survivors for the mean.
    """
    total = np.asarray(total)
    if total.dtype != np.uint32 or total.shape != (config.vector_length,):
        raise ValueError(f"expected uint32 of shape ({config.vector_length},), got "
                         f"{total.dtype} {total.shape}")
    return total.view(np.int32).astype(np.float64) / config.scale


# ------------------------------------------------------------------------------ primitives
def _kdf(secret: bytes, label: bytes, *context: int) -> bytes:
    info = _PROTOCOL + b"/" + label + b"".join(struct.pack(">Q", c) for c in context)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def prg_uint32(seed: bytes, length: int) -> np.ndarray:
    """Expand a 32-byte seed into ``length`` uint32 words: the ChaCha20 keystream (OpenSSL).

    A zero nonce is safe because every seed is derived for exactly one stream (round, pair and
    length are in the HKDF info).
    """
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(4 * length)), dtype="<u4").astype(np.uint32)


def _agree(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # low-order point: the shared secret would be all zeros
        raise SecAggAbort("X25519 key agreement failed (invalid public key)") from None


def shamir_split(secret: bytes, threshold: int, n_shares: int) -> list[int]:
    """Shamir shares of ``secret`` (at most 65 bytes) over GF(2**521 - 1).

    Returns the values ``P(1), ..., P(n_shares)`` of a random polynomial of degree
    ``threshold - 1`` with ``P(0) = secret``; share i belongs to evaluation point ``i + 1``.
    Coefficients come from the OS CSPRNG (``secrets``), not from a numpy generator.
    """
    if not 1 <= threshold <= n_shares:
        raise ValueError(f"need 1 <= threshold <= n_shares, got {threshold}, {n_shares}")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(SHAMIR_PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, n_shares + 1):
        y = 0
        for c in reversed(coefficients):
            y = (y * x + c) % SHAMIR_PRIME
        shares.append(y)
    return shares


class LagrangeInterpolator:
    """Lagrange interpolation modulo the Shamir prime from fixed, distinct points ``xs``.

    The denominators depend only on ``xs`` and are computed once, so evaluating at many points
    (zero, and every extra share to check) costs O(len(xs)) each. Inverses are cached per
    difference: with share indices ``1..n`` there are at most ``2n`` distinct ones.
    """

    def __init__(self, xs: Sequence[int]) -> None:
        if len(set(xs)) != len(xs):
            raise ValueError("duplicate evaluation points")
        self.xs = list(xs)
        self._inverses: dict[int, int] = {}
        self._den_inv = []
        for i, xi in enumerate(self.xs):
            value = 1
            for j, xj in enumerate(self.xs):
                if i != j:
                    value = value * self._inverse(xi - xj) % SHAMIR_PRIME
            self._den_inv.append(value)

    def _inverse(self, k: int) -> int:
        k %= SHAMIR_PRIME
        if k not in self._inverses:
            self._inverses[k] = pow(k, -1, SHAMIR_PRIME)
        return self._inverses[k]

    def coefficients(self, at: int = 0) -> list[int]:
        """``l_i`` with ``P(at) = sum(l_i * P(xs[i]))`` for every P of degree below ``len(xs)``."""
        if at in self.xs:
            return [int(x == at) for x in self.xs]
        full = 1
        for x in self.xs:
            full = full * (at - x) % SHAMIR_PRIME
        return [full * self._inverse(at - x) % SHAMIR_PRIME * d % SHAMIR_PRIME
                for x, d in zip(self.xs, self._den_inv)]


def lagrange_coefficients(xs: Sequence[int], at: int = 0) -> list[int]:
    """Coefficients ``l_i`` with ``P(at) = sum(l_i * P(xs[i]))`` for any polynomial P of degree
    below ``len(xs)``, modulo the Shamir prime. ``xs`` must be distinct."""
    return LagrangeInterpolator(xs).coefficients(at)


def shamir_combine(points: Sequence[tuple[int, int]], secret_len: int = SECRET_BYTES) -> bytes:
    """Reconstruct a secret from ``(x, share)`` points (exactly the threshold is enough)."""
    xs = [x for x, _ in points]
    value = sum(l * y for l, (_, y) in zip(lagrange_coefficients(xs), points)) % SHAMIR_PRIME
    if value >= 1 << (8 * secret_len):
        raise SecAggAbort("reconstructed secret is out of range: inconsistent shares")
    return value.to_bytes(secret_len, "big")


# --------------------------------------------------------------------------- wire helpers
_RECORD_HEAD = struct.Struct(">QI")
_ID = struct.Struct(">Q")


def pack_records(records: Iterable[tuple[int, bytes]]) -> bytes:
    """Pack ``(client_id, data)`` pairs: per record u64 id, u32 length, data (big-endian)."""
    return b"".join(_RECORD_HEAD.pack(i, len(d)) + d for i, d in records)


def unpack_records(data: bytes, name: str, size: int | None = None) -> dict[int, bytes]:
    """Inverse of :func:`pack_records`; rejects truncation, duplicates and wrong record sizes."""
    out: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if offset + _RECORD_HEAD.size > len(data):
            raise InvalidMessageError(f"{name}: truncated record header")
        client, length = _RECORD_HEAD.unpack_from(data, offset)
        offset += _RECORD_HEAD.size
        if offset + length > len(data):
            raise InvalidMessageError(f"{name}: truncated record for client {client}")
        if size is not None and length != size:
            raise InvalidMessageError(f"{name}: record of {length} bytes, expected {size}")
        if client in out:
            raise InvalidMessageError(f"{name}: duplicate record for client {client}")
        out[client] = data[offset:offset + length]
        offset += length
    return out


def pack_ids(ids: Iterable[int]) -> bytes:
    """Pack client ids as consecutive big-endian u64."""
    return b"".join(_ID.pack(i) for i in ids)


def unpack_ids(data: bytes, name: str) -> list[int]:
    """Inverse of :func:`pack_ids`; rejects ragged data and duplicates."""
    if len(data) % _ID.size:
        raise InvalidMessageError(f"{name}: {len(data)} bytes is not a list of u64 ids")
    ids = [i for (i,) in _ID.iter_unpack(data)]
    if len(set(ids)) != len(ids):
        raise InvalidMessageError(f"{name}: duplicate ids")
    return ids


def _field(message: Mapping[str, object], key: str) -> object:
    if not isinstance(message, Mapping):
        raise InvalidMessageError(f"expected a message dict, got {type(message).__name__}")
    return message.get(key)


def _get_int(message: Mapping[str, object], key: str) -> int:
    value = _field(message, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessageError(f"field {key!r}: missing or not an int")
    return value


def _get_bytes(message: Mapping[str, object], key: str) -> bytes:
    value = _field(message, key)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidMessageError(f"field {key!r}: missing or not bytes")
    return bytes(value)


def _check_round(message: Mapping[str, object], config: SecAggConfig) -> None:
    if _get_int(message, ROUND) != config.round_id:
        raise InvalidMessageError(f"message for round {message.get(ROUND)}, this is round "
                                  f"{config.round_id}")


def message_size(message: Mapping[str, int | bytes]) -> int:
    """Bytes a message carries: byte fields by length, ints as 8 bytes (keys not counted)."""
    return sum(len(v) if isinstance(v, (bytes, bytearray)) else 8 for v in message.values())


def _share_ad(round_id: int, sender: int, recipient: int) -> bytes:
    return _PROTOCOL + struct.pack(">QQQ", round_id, sender, recipient)


def _mask_seed(shared: bytes, config: SecAggConfig, u: int, v: int) -> bytes:
    return _kdf(shared, b"pairwise-mask", config.round_id, min(u, v), max(u, v), config.vector_length)


def _self_seed(b: bytes, config: SecAggConfig, u: int) -> bytes:
    return _kdf(b, b"self-mask", config.round_id, u, config.vector_length)


def _share_key(shared: bytes, config: SecAggConfig, u: int, v: int) -> bytes:
    return _kdf(shared, b"share-encryption", config.round_id, min(u, v), max(u, v))


# ----------------------------------------------------------------------------------- client
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
        held = pack_records((v, a.to_bytes(SHARE_BYTES, "big") + b.to_bytes(SHARE_BYTES, "big"))
                            for v, (a, b) in sorted(self._held.items()))
        keys = pack_records((v, c + s) for v, (c, s) in sorted(self._keys.items()))
        return {
            **{f"config.{k}": v for k, v in self.config.to_dict().items()},
            "client_id": self.client_id, "stage": self._stage,
            "c_sk": self._c_sk.private_bytes_raw(), "s_sk": self._s_sk.private_bytes_raw(),
            "b": self._b or b"", "keys": keys, "held": held, "u2": pack_ids(sorted(self._u2)),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "SecAggClient":
        """Rebuild a client saved with :meth:`state_dict` (same class: HE subclasses override init)."""
        config = SecAggConfig.from_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("config.")})
        client = cls.__new__(cls)
        client.config = config
        client.client_id = int(state["client_id"])
        client._c_sk = X25519PrivateKey.from_private_bytes(bytes(state["c_sk"]))
        client._s_sk = X25519PrivateKey.from_private_bytes(bytes(state["s_sk"]))
        client._c_pk = client._c_sk.public_key().public_bytes_raw()
        client._s_pk = client._s_sk.public_key().public_bytes_raw()
        client._b = bytes(state["b"]) or None
        client._keys = {v: (d[:32], d[32:]) for v, d in unpack_records(bytes(state["keys"]), "keys", 64).items()}
        client._held = {v: (int.from_bytes(d[:SHARE_BYTES], "big"), int.from_bytes(d[SHARE_BYTES:], "big"))
                        for v, d in unpack_records(bytes(state["held"]), "held", 2 * SHARE_BYTES).items()}
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
            raise SecAggAbort(f"{len(keys)} clients advertised keys; need {self.config.t} to "
                              f"{self.config.n_clients}")
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
            plaintext = (b_shares[index].to_bytes(SHARE_BYTES, "big")
                         + s_shares[index].to_bytes(SHARE_BYTES, "big"))
            sealed = ChaCha20Poly1305(key).encrypt(
                nonce, plaintext, _share_ad(self.config.round_id, self.client_id, v))
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
                    blob[:_NONCE_BYTES], blob[_NONCE_BYTES:],
                    _share_ad(self.config.round_id, v, self.client_id))
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
            mask = prg_uint32(_mask_seed(_agree(self._s_sk, self._keys[v][1]), self.config,
                                         self.client_id, v), d)
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
        return {ROUND: self.config.round_id, CLIENT_ID: self.client_id,
                B_SHARES: pack_records(b_out), S_SHARES: pack_records(s_out)}


# ----------------------------------------------------------------------------------- server
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

    def _sender(self, message: Mapping[str, object], stage: int, allowed: Collection[int],
                seen: Collection[int]) -> int:
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
            raise SecAggAbort(f"only {remaining} clients {what}; the threshold is {self.config.t} "
                              f"(at most {self.config.n_clients - self.config.t} of "
                              f"{self.config.n_clients} may drop)")
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
        out = {v: {ROUND: self.config.round_id,
                   SHARES: pack_records((u, self._routed[v][u]) for u in u2 if u != v)}
               for v in u2}
        self._routed.clear()
        return out

    # stage 3
    def _accept_input(self, payload: bytes) -> None:
        """Hook: validate and add one masked upload (plain uint32 here)."""
        if len(payload) != 4 * self.config.vector_length:
            raise InvalidMessageError(f"masked input of {len(payload)} bytes, expected "
                                      f"{4 * self.config.vector_length}")
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
        return {ROUND: self.config.round_id, SURVIVORS: pack_ids(self._u3),
                DROPPED: pack_ids(self.dropped)}

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
        base, extra = responders[: self.config.t], responders[self.config.t:]
        interpolator = LagrangeInterpolator([self._x[r] for r in base])
        at_zero = interpolator.coefficients(0)
        checks = [(r, interpolator.coefficients(self._x[r])) for r in extra]
        owners = [(u, 0) for u in self._u3] + [(v, 1) for v in self.dropped]
        shares = {(owner, which): {r: int.from_bytes(self._responses[r][which][owner], "big")
                                   for r in responders} for owner, which in owners}

        def consistent(ys: Mapping[int, int]) -> bool:
            base_ys = [ys[r] for r in base]
            return all(sum(c * y for c, y in zip(coefficients, base_ys)) % p == ys[r]
                       for r, coefficients in checks)

        # Every share beyond the t used must lie on the same polynomial, or the round aborts
        # instead of silently corrupting the sum. One check on a random linear combination of all
        # secrets' shares covers them all (a mismatch survives it with probability 1/p); only on
        # failure are the secrets checked one by one, to name the culprit.
        weights = {key: secrets.randbelow(p) for key in shares}
        combined = {r: sum(weights[key] * ys[r] for key, ys in shares.items()) % p
                    for r in responders}
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


# ------------------------------------------------------------------------------ simulation
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


def simulate_round(server: SecAggServer, clients: Mapping[int, SecAggClient],
                   vectors: Mapping[int, np.ndarray],
                   dropouts: Mapping[str, Collection[int]] | None = None,
                   keep_messages: bool = False) -> RoundTrace:
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
