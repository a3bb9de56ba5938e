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

Modules
-------
:mod:`~fedids.privacy.secagg.config` (:class:`SecAggConfig`, errors, quantisation),
:mod:`~fedids.privacy.secagg.crypto` (Shamir sharing, key agreement, seeds, PRG),
:mod:`~fedids.privacy.secagg.wire` (message keys and codecs), :mod:`~fedids.privacy.secagg.client`,
:mod:`~fedids.privacy.secagg.server` and :mod:`~fedids.privacy.secagg.simulation`.
"""

from fedids.privacy.secagg.client import SecAggClient
from fedids.privacy.secagg.config import (
    DEFAULT_DROPOUT_TOLERANCE,
    MODULUS,
    MODULUS_BITS,
    SECRET_BYTES,
    SHAMIR_PRIME,
    SHARE_BYTES,
    SHARE_CIPHERTEXT_BYTES,
    InvalidMessageError,
    SecAggAbort,
    SecAggConfig,
    SecAggError,
    dequantize_sum,
    quantize,
)
from fedids.privacy.secagg.crypto import (
    LagrangeInterpolator,
    lagrange_coefficients,
    prg_uint32,
    shamir_combine,
    shamir_split,
)
from fedids.privacy.secagg.server import SecAggServer
from fedids.privacy.secagg.simulation import STAGES, RoundTrace, simulate_round
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
    message_size,
    pack_ids,
    pack_records,
    unpack_ids,
    unpack_records,
)

__all__ = [
    # config and quantisation
    "MODULUS_BITS",
    "MODULUS",
    "DEFAULT_DROPOUT_TOLERANCE",
    "SHAMIR_PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "SHARE_CIPHERTEXT_BYTES",
    "SecAggError",
    "SecAggAbort",
    "InvalidMessageError",
    "SecAggConfig",
    "quantize",
    "dequantize_sum",
    # primitives
    "prg_uint32",
    "shamir_split",
    "LagrangeInterpolator",
    "lagrange_coefficients",
    "shamir_combine",
    # wire
    "ROUND",
    "CLIENT_ID",
    "C_PK",
    "S_PK",
    "PUBLIC_KEYS",
    "SHARES",
    "MASKED",
    "SURVIVORS",
    "DROPPED",
    "B_SHARES",
    "S_SHARES",
    "Message",
    "pack_records",
    "unpack_records",
    "pack_ids",
    "unpack_ids",
    "message_size",
    # the round
    "SecAggClient",
    "SecAggServer",
    "STAGES",
    "RoundTrace",
    "simulate_round",
]
