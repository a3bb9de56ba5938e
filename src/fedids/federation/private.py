"""Privacy modes and their secure-sum backends, as both apps use them (no Flower, no server state).

Every exchange of a federated run is a sum of per-client vectors (:mod:`fedids.federation.aggregation`).
A mode decides how a client *seals* its vector and what the server can read of the sum:

=============  ==========================================  ===========================================
mode           what the server receives from each client   what the server can read
=============  ==========================================  ===========================================
``none``       its vector in plaintext                     each vector and the sum
``dp``         its vector in plaintext, update noised      each noised vector and the sum
``secagg``     a masked uint32 vector (Bonawitz et al.)    only the sum
``he``         BFV ciphertexts of fixed-point vectors     nothing: clients decrypt the sum
``he+secagg``  BFV-encrypted masked vectors                nothing; a client colluding with the server
                                                           still learns no other client's vector
=============  ==========================================  ===========================================

Two kinds of vector travel: ``real`` values (weights, moments, metrics) and ``count`` values (histograms,
label counts, confusion matrices). Both sealed modes carry SecAgg's fixed-point code (integers modulo
``2**32``, step ``n * clip / 2**31``: 3.7e-8 for 10 clients of weights clipped to 8, exact for counts,
which use step 1, :func:`secagg_clip_range`): ``secagg`` masks it, ``he`` BFV-encrypts it, ``he+secagg``
does both. Why BFV and not CKKS for ``he``: an exact integer sum at 16 bytes per value (4x float32)
against CKKS's 28 bytes (7x) at 1e-6 error (measured in ``fedids.privacy.he``; ``benchmarks/bench_rounds.py``).

The ``he`` server keeps sums it cannot read as :class:`SealedSum` and forwards them; clients (and the
operator's evaluator, which holds a client key) open them with :func:`open_sum`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REAL, COUNT = "real", "count"
SECAGG_CLIP_RANGE = 8.0  # real vectors: model weights and shares of totals; |x| beyond this is an error


@dataclass(frozen=True)
class PrivacyMode:
    he: bool = False
    secagg: bool = False
    dp: bool = False

    @classmethod
    def parse(cls, text: str) -> PrivacyMode:
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
    def sealed(self) -> bool:
        """Vectors travel sealed (encrypted or masked): the server handles no client's vector in the clear."""
        return self.he or self.secagg

    @property
    def encrypted_global(self) -> bool:
        """The server never holds the sums, and so the global model, in plaintext."""
        return self.he


def secagg_clip_range(values: str, n_clients: int) -> float:
    """SecAgg clip range for a kind of vector: :data:`SECAGG_CLIP_RANGE` for ``real`` values; for
    ``count`` values the range that makes the quantisation step exactly 1 (counts below about
    ``2**31 / (1.5 n)`` per client)."""
    if values == REAL:
        return SECAGG_CLIP_RANGE
    return (2**31 - 1) / (1.5 * n_clients)


@dataclass(frozen=True)
class SealedSum:
    """A sum the ``he`` server holds but cannot read: ciphertext plus what a key holder needs to open it."""

    kind: str  # "bfv" (the only kind today; named so a later scheme can be told apart)
    ciphertext: bytes
    values: str = REAL  # REAL | COUNT
    secagg: dict = field(default_factory=dict)  # the round's SecAggConfig (to de-quantise a "bfv" sum)

    def meta(self) -> dict:
        return {"kind": self.kind, "values": self.values, "secagg": dict(self.secagg)}

    @classmethod
    def from_meta(cls, meta: dict, ciphertext: bytes) -> SealedSum:
        if meta.get("kind") != "bfv" or meta.get("values") not in (REAL, COUNT):
            raise ValueError(f"unknown sealed sum {meta.get('kind')!r}/{meta.get('values')!r}")
        return cls(str(meta["kind"]), ciphertext, str(meta["values"]), dict(meta.get("secagg") or {}))


def open_sum(sealed: SealedSum, secret_context: bytes, length: int) -> np.ndarray:
    """Decrypt a :class:`SealedSum` (clients, or the operator's evaluator: needs the clients' key).

    Returns the ``(length,)`` float64 sum; ``count`` sums are rounded to whole numbers.
    """
    if sealed.kind == "bfv":
        from fedids.privacy.he_secagg import decrypt_masked_sum
        from fedids.privacy.secagg import SecAggConfig, dequantize_sum

        total = dequantize_sum(
            decrypt_masked_sum(secret_context, sealed.ciphertext, length),
            SecAggConfig.from_dict(sealed.secagg),
        )
        return np.rint(total) if sealed.values == COUNT else total
    raise ValueError(f"unknown sealed sum kind {sealed.kind!r}")


@dataclass
class SumResult:
    """Outcome of one secure sum on the server: the plaintext sum where the mode shows it, else sealed."""

    plaintext: np.ndarray | None = None
    sealed: SealedSum | None = None
    survivors: list[int] = field(default_factory=list)  # node ids whose vector is in the sum
    rejected: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    server_seconds: float = 0.0
    atol: float = 0.0  # the fixed-point code's largest error per coordinate of the sum (sealed modes)

    @property
    def ok(self) -> bool:
        return bool(self.survivors) and (self.plaintext is not None or self.sealed is not None)
