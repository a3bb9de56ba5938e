"""Privacy randomness nobody can reproduce: Gaussian noise from a ChaCha20 keystream keyed by the OS.

DP noise must not come from a seed anyone else knows: a server that knows the seed re-runs the client's
training on two neighbouring datasets, subtracts the noise and learns the data (epsilon is infinite
against it). Opacus' ``secure_mode`` needs ``torchcsprng``, whose last release predates torch 2.x (stack
notes), so fedids draws its DP noise itself.

Guarantees
----------
* Every :class:`SecureGaussian` is keyed with 32 fresh bytes from ``os.urandom`` and a random nonce; the
  key never leaves the object (no state_dict, no logging). Two instances, or two runs with the same run
  seed, draw independent noise.
* Uniforms are 53-bit fractions of the ChaCha20 keystream (``cryptography``); normals come from the
  Box-Muller transform in float64.
* Not covered: floating-point side channels of Gaussian sampling (Mironov 2012); the ``secure_mode``
  mitigation of Opacus is not reproduced.

Hand-written because no maintained package offers a CSPRNG-backed Gaussian for numpy/torch here: it is a
keystream, a bit mask and Box-Muller.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_TWO_PI = 2.0 * np.pi


class SecureGaussian:
    """A source of uniform and Gaussian variates from a ChaCha20 keystream keyed by ``os.urandom``."""

    def __init__(self) -> None:
        cipher = Cipher(algorithms.ChaCha20(os.urandom(32), os.urandom(16)), mode=None)
        self._stream = cipher.encryptor()

    def __repr__(self) -> str:  # never show key material
        return "SecureGaussian(<ChaCha20 keyed from os.urandom>)"

    def uniform(self, n: int) -> np.ndarray:
        """``n`` float64 values uniform in (0, 1] (53 random bits each)."""
        raw = np.frombuffer(self._stream.update(bytes(8 * int(n))), dtype=np.uint64)
        return ((raw >> np.uint64(11)).astype(np.float64) + 1.0) * (1.0 / 2.0**53)

    def normal(self, shape: int | tuple[int, ...], std: float = 1.0) -> np.ndarray:
        """Independent ``N(0, std**2)`` variates of ``shape``, float64 (Box-Muller)."""
        size = int(np.prod(shape))
        half = (size + 1) // 2
        u1, u2 = self.uniform(half), self.uniform(half)
        radius = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([radius * np.cos(_TWO_PI * u2), radius * np.sin(_TWO_PI * u2)])[:size]
        return (z * float(std)).reshape(shape)
