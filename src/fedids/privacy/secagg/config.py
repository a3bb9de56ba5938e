"""Round parameters, constants and errors of secure aggregation, and the fixed-point quantisation of updates."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger("fedids.privacy.secagg")

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


class SecAggError(Exception):
    """Base class of secure-aggregation errors."""


class SecAggAbort(SecAggError):
    """The round cannot complete safely (too few clients, failed authentication, inconsistent
    shares or requests). Nothing is revealed; the caller abandons the round."""


class InvalidMessageError(SecAggError, ValueError):
    """One malformed, duplicate, late or unexpected message; the caller logs it and drops it, the
    round goes on without that client."""


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
            raise ValueError(
                f"threshold must be in ({self.n_clients / 2}, {self.n_clients}], got {self.threshold}"
            )
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
        return cls(
            n_clients=int(data["n_clients"]),
            vector_length=int(data["vector_length"]),
            round_id=int(data["round_id"]),
            clip_range=float(data["clip_range"]),
            threshold=int(data["threshold"]),
        )


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
        log.warning(
            "secagg: %d of %d values clipped to +/-%g before quantisation",
            outside,
            values.size,
            config.clip_range,
        )
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
        raise ValueError(
            f"expected uint32 of shape ({config.vector_length},), got {total.dtype} {total.shape}"
        )
    return total.view(np.int32).astype(np.float64) / config.scale
