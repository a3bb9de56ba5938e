"""Private aggregation for the round loop: ``--privacy`` modes built from the fedids.privacy primitives.

Every private mode aggregates the same thing: each selected client's *contribution*
``weight_i * (w_global + update_i)``, where ``update_i`` is the local model change (clipped to L2 norm C
and given its share of Gaussian noise under ``dp``) and the weights of the selected clients sum to 1
(``n_i / sum n`` by examples; ``1 / n`` under ``dp``, which needs equal weights for its sensitivity bound).
The sum of contributions is the new global model, divided by the total weight of the clients that
completed the round (dropouts shrink it). What differs is who can read what:

=============  ===================================  ======================================
mode           what the server receives             what the server can read
=============  ===================================  ======================================
``dp``         contributions in plaintext           each noised contribution, the model
``he``         CKKS ciphertexts (one key, clients)  nothing: the global model stays
                                                    encrypted; clients decrypt it
``secagg``     masked uint32 vectors (Bonawitz)     only the sum (= the global model)
``he+secagg``  BFV-encrypted masked vectors         nothing; a client colluding with the
                                                    server still learns no other update
=============  ===================================  ======================================

With ``he`` the server keeps the encrypted global model and sends it to clients, who decrypt it with
the clients' key; the server side (this module's server functions) is only ever given the public context.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from fedids.privacy.dp import clip_update

log = logging.getLogger("fedids.server")

SECAGG_CLIP_RANGE = 8.0  # contributions are model weights; |w| beyond this range is an error, not clipped


@dataclass(frozen=True)
class PrivacyMode:
    he: bool = False
    secagg: bool = False
    dp: bool = False

    @classmethod
    def parse(cls, text: str) -> "PrivacyMode":
        from fedids.privacy.keys import parse_privacy_mode

        parts = parse_privacy_mode(text)
        return cls(he="he" in parts, secagg="secagg" in parts, dp="dp" in parts)

    @property
    def name(self) -> str:
        parts = [p for p, on in (("he", self.he), ("secagg", self.secagg), ("dp", self.dp)) if on]
        return "+".join(parts) or "none"

    @property
    def private(self) -> bool:
        return self.he or self.secagg or self.dp

    @property
    def encrypted_global(self) -> bool:
        """The server never holds the global model in plaintext."""
        return self.he


def flatten(weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(w, dtype=np.float32).ravel() for w in weights])


def unflatten(vector: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    sizes = [int(np.prod(s)) for s in shapes]
    if vector.shape != (sum(sizes),):
        raise ValueError(f"flat model has {vector.size} values, expected {sum(sizes)}")
    parts = np.split(np.asarray(vector, dtype=np.float32), np.cumsum(sizes)[:-1])
    return [p.reshape(s) for p, s in zip(parts, shapes)]


def compute_contribution(global_flat: np.ndarray, local_flat: np.ndarray, weight: float, *,
                         clip_norm: float | None, noise_std: float, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """``weight * (global + update)`` with the update clipped and noised when ``clip_norm`` is set.

    Returns the float32 contribution and whether clipping changed the update.
    """
    update = np.asarray(local_flat, dtype=np.float64) - global_flat
    clipped = False
    if clip_norm is not None:
        update, clipped = clip_update(update.astype(np.float32), clip_norm)
        update = update.astype(np.float64)
        if noise_std > 0:
            update = update + rng.normal(0.0, noise_std, size=update.shape)
    return (weight * (global_flat + update)).astype(np.float32), clipped


@dataclass
class SumResult:
    """Outcome of one private aggregation on the server."""

    plaintext: np.ndarray | None = None     # the sum, when the mode lets the server see it
    ciphertext: bytes | None = None         # the encrypted sum (he, he+secagg)
    survivors: list[int] = field(default_factory=list)  # node ids whose contribution is in the sum
    rejected: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    server_seconds: float = 0.0
    secagg_config: dict = field(default_factory=dict)  # SecAggConfig of the round (decodes a "bfv" sum)


# ---------------------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class KeyPaths:
    """Where the key files of an ``he`` mode live (made by ``fedids keys init``)."""

    client_secret: str | None = None   # clients only
    server_public: str | None = None   # server only


# ---------------------------------------------------------------------- global model transport
GLOBAL = "global"                 # ArrayRecord {"ct": uint8} with the encrypted global model
GLOBAL_KIND = "global-kind"       # "ckks" | "bfv"
GLOBAL_WEIGHT = "global-weight"   # total weight of the contributions in the encrypted sum
GLOBAL_SECAGG = "global-secagg."  # prefix: SecAggConfig of the round that made a "bfv" global


@dataclass
class EncryptedGlobal:
    """The global model as the server holds it in ``he`` modes: ciphertext plus how to decode it."""

    kind: str
    ciphertext: bytes
    weight: float
    secagg: dict = field(default_factory=dict)

    def config_entries(self) -> dict:
        return {GLOBAL_KIND: self.kind, GLOBAL_WEIGHT: float(self.weight),
                **{GLOBAL_SECAGG + k: v for k, v in self.secagg.items()}}

    def to_meta(self) -> dict:
        return {"kind": self.kind, "weight": self.weight, "secagg": self.secagg}


def decrypt_global(kind: str, ciphertext: bytes, weight: float, secagg: dict, secret_context: bytes,
                   length: int) -> np.ndarray:
    """Decrypt an encrypted global model (clients, or the operator's evaluator; needs the clients' key)."""
    if weight <= 0:
        raise ValueError("encrypted global model has no contributions")
    if kind == "ckks":
        from fedids.privacy.he import decrypt_sum

        return (decrypt_sum(secret_context, ciphertext, length) / weight).astype(np.float32)
    if kind == "bfv":
        from fedids.privacy.he_secagg import decrypt_masked_sum
        from fedids.privacy.secagg import SecAggConfig, dequantize_sum

        total = decrypt_masked_sum(secret_context, ciphertext, length)
        return (dequantize_sum(total, SecAggConfig.from_dict(secagg)) / weight).astype(np.float32)
    raise ValueError(f"unknown encrypted global kind {kind!r}")


def secagg_config_from(config) -> dict:
    return {k[len(GLOBAL_SECAGG):]: config[k] for k in config if k.startswith(GLOBAL_SECAGG)}
