"""Cryptographic primitives of secure aggregation: HKDF-derived seeds, the ChaCha20 PRG, X25519 key
agreement, and Shamir sharing over GF(2**521 - 1) (see the package docstring for why not pycryptodome's)."""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedids.privacy.secagg.config import _PROTOCOL, SECRET_BYTES, SHAMIR_PRIME, SecAggAbort, SecAggConfig


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
        return [
            full * self._inverse(at - x) % SHAMIR_PRIME * d % SHAMIR_PRIME
            for x, d in zip(self.xs, self._den_inv)
        ]


def lagrange_coefficients(xs: Sequence[int], at: int = 0) -> list[int]:
    """Coefficients ``l_i`` with ``P(at) = sum(l_i * P(xs[i]))`` for any polynomial P of degree
    below ``len(xs)``, modulo the Shamir prime. ``xs`` must be distinct."""
    return LagrangeInterpolator(xs).coefficients(at)


def shamir_combine(points: Sequence[tuple[int, int]], secret_len: int = SECRET_BYTES) -> bytes:
    """Reconstruct a secret from ``(x, share)`` points (exactly the threshold is enough)."""
    xs = [x for x, _ in points]
    value = sum(coef * y for coef, (_, y) in zip(lagrange_coefficients(xs), points)) % SHAMIR_PRIME
    if value >= 1 << (8 * secret_len):
        raise SecAggAbort("reconstructed secret is out of range: inconsistent shares")
    return value.to_bytes(secret_len, "big")


def _share_ad(round_id: int, sender: int, recipient: int) -> bytes:
    return _PROTOCOL + struct.pack(">QQQ", round_id, sender, recipient)


def _mask_seed(shared: bytes, config: SecAggConfig, u: int, v: int) -> bytes:
    return _kdf(shared, b"pairwise-mask", config.round_id, min(u, v), max(u, v), config.vector_length)


def _self_seed(b: bytes, config: SecAggConfig, u: int) -> bytes:
    return _kdf(b, b"self-mask", config.round_id, u, config.vector_length)


def _share_key(shared: bytes, config: SecAggConfig, u: int, v: int) -> bytes:
    return _kdf(shared, b"share-encryption", config.round_id, min(u, v), max(u, v))
