"""Homomorphic-encryption aggregation of float32 updates with CKKS (TenSEAL 0.3.18).

Clients encrypt their flat update with a context that holds the secret key; the server holds a
*public* context (public encryption key only: no secret key, no relinearisation or Galois keys),
adds ciphertexts and returns the encrypted sum; clients decrypt it. Everything crosses the wire as
``bytes`` in one length-prefixed container (see :func:`pack_chunks`), never pickle.

Guarantees
----------
* The server object refuses any context that holds a secret key (:class:`EncryptedSum`); with the
  public context it can add but not decrypt. Who holds the client context can decrypt every upload
  and the aggregate: the key is shared by all clients out of band (``fedids keys init``), so this
  protects updates from the server, not from other clients (``he+secagg`` covers that).
* CKKS is approximate: a decrypted sum differs from the exact sum by the encryption noise
  (measured below), and the sum wraps to garbage when ``|sum|`` in any coordinate exceeds
  :data:`MAX_ABS_SUM`. No integrity: a malicious client can add any value to the sum.
* Security: 128-bit classical security per the HomomorphicEncryption.org standard (N=4096 allows
  at most 109 bits of coefficient modulus; SEAL enforces the table).

Parameter choice (measured on these machines, scale ``2**s``, 1,000 summed vectors of
uniform [-1, 1] values filling every slot; upload size relative to float32)
------------------------------------------------------------------------------------------------
=====  ==========  =====  =============  ========  ================
N      chain       s      max abs error  upload    note
=====  ==========  =====  =============  ========  ================
2048   [40, 14]    28     2.4e-4         6.0x      fails 1e-4 (max 54 bits at N=2048)
4096   [40, 60]    28     4.9e-4         6.0x      fails 1e-4
4096   [45, 60]    33     1.4e-5         6.7x      |sum| < 2**11
4096   [49, 60]    36     1.5e-6         7.05x     **chosen**: |sum| < 2**12
4096   [60, 49]    40     1.8e-7         8.0x      over the 8x budget
8192   [60, 60]    40     1.2e-7         8.0x      the usual additions-only setting
8192   [60,40,40,60] 40   1e-7           20.7x     TenSEAL's tutorial setting
=====  ==========  =====  =============  ========  ================

An additions-only CKKS needs one data prime (the first) plus the special prime TenSEAL insists on
(it generates key-switching keys at creation, which a one-prime chain cannot hold). A ciphertext is
two polynomials of N coefficients modulo the data prime; SEAL's zstd compression stores a b-bit
coefficient in about b/8 bytes, so a smaller data prime shrinks uploads, at the cost of precision
(error ~ 2**(17 - s) for 1,000 sums) and range (``|sum| < 2**(b - 1 - s)``). N=4096 with
``[49, 60]`` and scale ``2**36`` is the smallest ring that meets 1e-4 at 1,000 summed updates, with
60x margin, leaves ``|sum| < 4096`` and costs 28.2 bytes per value (7.05x float32); a 28,000-value
update needs 14 ciphertexts (the last one partly filled): 808 KB, 7.2x.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import tenseal as ts

POLY_MODULUS_DEGREE = 4096
COEFF_MOD_BIT_SIZES: tuple[int, ...] = (49, 60)
SCALE_BITS = 36
SLOTS = POLY_MODULUS_DEGREE // 2
MAX_ABS_SUM = 2.0 ** (COEFF_MOD_BIT_SIZES[0] - 1 - SCALE_BITS)
"""Largest ``|sum|`` per coordinate that decrypts correctly with the default parameters (4096)."""

_MAGIC = b"FDHE"
_VERSION = 1
SCHEME_CKKS = 1
SCHEME_BFV = 2
_HEADER = struct.Struct(">4sBBII")  # magic, version, scheme, vector length, number of chunks
_CHUNK_LEN = struct.Struct(">I")


class InvalidCiphertextError(ValueError):
    """An encrypted upload or aggregate that does not match the expected layout or parameters.

    The server rejects (and logs) the upload; the round goes on without it.
    """


@dataclass(frozen=True, repr=False)
class HEKeys:
    """Serialised TenSEAL contexts of one key set.

    Attributes
    ----------
    secret_context : bytes
        Context with the secret key (and public key), for clients only. Key material: keep it in a
        0600 file and never log it.
    public_context : bytes
        Context with the public encryption key only, for the server.
    scheme : str
        ``"ckks"`` (float aggregation, :mod:`fedids.privacy.he`) or ``"bfv"`` (integer
        aggregation, :mod:`fedids.privacy.he_secagg`).
    """

    secret_context: bytes
    public_context: bytes
    scheme: str = "ckks"

    def __repr__(self) -> str:  # the default repr would print the secret key
        return (
            f"HEKeys(scheme={self.scheme!r}, secret_context=<{len(self.secret_context)} bytes>, "
            f"public_context=<{len(self.public_context)} bytes>)"
        )


def split_context(context: ts.Context, scheme: str) -> HEKeys:
    """Serialise a freshly created context into a client (secret) and a server (public) copy."""
    # Relinearisation/Galois keys are only needed for multiplications/rotations: aggregation adds.
    secret = context.serialize(
        save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    public = context.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    check = ts.context_from(public)
    if check.has_secret_key() or not check.is_public():
        raise RuntimeError("TenSEAL serialised a secret key into the public context")
    return HEKeys(secret_context=secret, public_context=public, scheme=scheme)


def create_he_keys(
    poly_modulus_degree: int = POLY_MODULUS_DEGREE,
    coeff_mod_bit_sizes: tuple[int, ...] = COEFF_MOD_BIT_SIZES,
    scale_bits: int = SCALE_BITS,
) -> HEKeys:
    """Create a fresh CKKS key set for aggregation.

    Parameters
    ----------
    poly_modulus_degree : int
        Ring dimension N; a ciphertext holds N/2 values.
    coeff_mod_bit_sizes : tuple of int
        Coefficient modulus chain: one data prime, then the special prime. SEAL refuses chains
        that break 128-bit security for N.
    scale_bits : int
        CKKS scale ``2**scale_bits`` (precision); ``|sum|`` must stay below
        ``2**(coeff_mod_bit_sizes[0] - 1 - scale_bits)``.

    Returns
    -------
    HEKeys
        ``secret_context`` for clients, ``public_context`` for the server.
    """
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=poly_modulus_degree,
        coeff_mod_bit_sizes=list(coeff_mod_bit_sizes),
    )
    context.global_scale = 2.0**scale_bits
    return split_context(context, "ckks")


# ----------------------------------------------------------------------------------- container
def pack_chunks(scheme: int, length: int, chunks: list[bytes]) -> bytes:
    """Frame serialised ciphertexts as one blob.

    Layout (big-endian): ``b"FDHE"``, version (u8), scheme (u8: 1 CKKS, 2 BFV), vector length
    (u32, values), number of chunks (u32), then per chunk its byte length (u32) and bytes.
    """
    parts = [_HEADER.pack(_MAGIC, _VERSION, scheme, length, len(chunks))]
    for chunk in chunks:
        parts.append(_CHUNK_LEN.pack(len(chunk)))
        parts.append(chunk)
    return b"".join(parts)


def unpack_chunks(blob: bytes, scheme: int, length: int, slots: int) -> list[bytes]:
    """Parse a blob from :func:`pack_chunks`, checking it against the expected layout.

    Raises
    ------
    InvalidCiphertextError
        Wrong magic/version/scheme, a vector length other than ``length``, a chunk count other
        than ``ceil(length / slots)``, empty or truncated chunks, or trailing bytes.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise InvalidCiphertextError(f"expected bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise InvalidCiphertextError(f"blob of {len(blob)} bytes is shorter than its header")
    magic, version, got_scheme, got_length, n_chunks = _HEADER.unpack_from(blob, 0)
    if magic != _MAGIC or version != _VERSION:
        raise InvalidCiphertextError("not a fedids ciphertext blob (bad magic or version)")
    if got_scheme != scheme:
        raise InvalidCiphertextError(f"scheme {got_scheme}, expected {scheme}")
    if got_length != length:
        raise InvalidCiphertextError(f"vector length {got_length}, expected {length}")
    expected_chunks = math.ceil(length / slots)
    if n_chunks != expected_chunks:
        raise InvalidCiphertextError(f"{n_chunks} chunks, expected {expected_chunks}")
    chunks, offset = [], _HEADER.size
    for i in range(n_chunks):
        if offset + _CHUNK_LEN.size > len(blob):
            raise InvalidCiphertextError(f"truncated before chunk {i}")
        (size,) = _CHUNK_LEN.unpack_from(blob, offset)
        offset += _CHUNK_LEN.size
        if size == 0 or offset + size > len(blob):
            raise InvalidCiphertextError(f"chunk {i}: empty or truncated ({size} bytes declared)")
        chunks.append(blob[offset : offset + size])
        offset += size
    if offset != len(blob):
        raise InvalidCiphertextError(f"{len(blob) - offset} trailing bytes")
    return chunks


def chunk_sizes(length: int, slots: int) -> list[int]:
    """Number of values in each ciphertext when ``length`` values are cut into ``slots``-sized chunks."""
    return [min(slots, length - start) for start in range(0, length, slots)]


# --------------------------------------------------------------------------------- contexts
def parse_public_context(public_context: bytes) -> ts.Context:
    """Deserialise a server-side context and refuse one that can decrypt.

    Raises
    ------
    ValueError
        The bytes do not parse, or the context holds a secret key.
    """
    try:
        context = ts.context_from(bytes(public_context))
    except Exception as err:  # TenSEAL raises ValueError or RuntimeError on corrupt input
        raise ValueError(f"not a TenSEAL context (corrupt or truncated: {type(err).__name__})") from None
    # An explicit raise, not `assert`: the check must survive `python -O`.
    if context.has_secret_key() or not context.is_public():
        raise ValueError(
            "refusing a context that holds a secret key: the server must only hold the public context"
        )
    return context


def parse_secret_context(secret_context: bytes) -> ts.Context:
    """Deserialise a client-side context; it must hold the secret key."""
    try:
        context = ts.context_from(bytes(secret_context))
    except Exception as err:
        raise ValueError(f"not a TenSEAL context (corrupt or truncated: {type(err).__name__})") from None
    if not context.has_secret_key():
        raise ValueError("this context holds no secret key: it cannot decrypt")
    return context


def _seal(context: ts.Context):  # noqa: ANN202 (TenSEAL's SEALContext has no public type)
    return context.seal_context().data


def context_slots(context: ts.Context, scheme: int = SCHEME_CKKS) -> int:
    """Values per ciphertext: N/2 for CKKS, N for BFV batching."""
    degree = _seal(context).first_context_data().parms().poly_modulus_degree()
    return degree // 2 if scheme == SCHEME_CKKS else degree


def max_abs_sum(context: ts.Context) -> float:
    """Largest ``|sum|`` per coordinate a CKKS context decrypts correctly: ``2**(b - 1) / scale``
    for a b-bit data prime (beyond it the value wraps modulo the prime)."""
    bits = _seal(context).first_context_data().total_coeff_modulus_bit_count()
    return 2.0 ** (bits - 1) / context.global_scale


def data_parms_id(context: ts.Context) -> list[int]:
    """SEAL's id of the data level (where fresh ciphertexts live) of ``context``."""
    return list(_seal(context).first_parms_id())


def check_ciphertext(
    vector: ts.CKKSVector | ts.BFVVector,
    expected_size: int,
    parms_id: list[int],
    scale: float | None,
    index: int,
) -> None:
    """Check one deserialised chunk: value count, a fresh 2-polynomial ciphertext at the data level
    of this context, and (CKKS) the expected scale. Any mismatch would make addition fail half-way
    or corrupt the sum, so it is caught before the sum is touched."""
    if vector.size() != expected_size:
        raise InvalidCiphertextError(f"chunk {index}: {vector.size()} values, expected {expected_size}")
    for ct in vector.ciphertext():
        if ct.size() != 2 or list(ct.parms_id()) != parms_id:
            raise InvalidCiphertextError(f"chunk {index}: unexpected ciphertext shape or level")
        if scale is not None and ct.scale != scale:
            raise InvalidCiphertextError(f"chunk {index}: scale {ct.scale}, expected {scale}")


# -------------------------------------------------------------------------------- operations
def _as_update(vector: np.ndarray) -> np.ndarray:
    array = np.asarray(vector)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"expected a non-empty 1-D update, got shape {array.shape}")
    if array.dtype not in (np.float32, np.float64):
        raise ValueError(f"expected float32 or float64, got {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("update contains NaN or Inf")
    return array


def encrypt_update(secret_context: bytes, vector: np.ndarray) -> bytes:
    """Encrypt one client's flat update (client side).

    Parameters
    ----------
    secret_context : bytes
        The clients' context (:attr:`HEKeys.secret_context`).
    vector : numpy.ndarray
        Shape ``(d,)``, float32 or float64, finite. Values are pre-weighted by the caller; every
        coordinate of the eventual sum must stay below :data:`MAX_ABS_SUM` in absolute value.

    Returns
    -------
    bytes
        ``ceil(d / 2048)`` CKKS ciphertexts in one :func:`pack_chunks` blob: the bytes that leave
        the device (about 28.9 bytes per value).
    """
    array = _as_update(vector)
    context = parse_secret_context(secret_context)
    limit = max_abs_sum(context)
    if np.max(np.abs(array)) >= limit:
        raise ValueError(f"update values must stay below {limit} in absolute value")
    slots = context_slots(context)
    values = array.astype(np.float64)
    chunks = [
        ts.ckks_vector(context, values[start : start + slots].tolist()).serialize()
        for start in range(0, values.size, slots)
    ]
    return pack_chunks(SCHEME_CKKS, values.size, chunks)


_VECTOR_FROM = {SCHEME_CKKS: ("CKKS", ts.ckks_vector_from), SCHEME_BFV: ("BFV", ts.bfv_vector_from)}


def load_chunks(
    context: ts.Context, blob: bytes, scheme: int, length: int, scale: float | None = None
) -> list:
    """Parse and validate every ciphertext chunk of an upload or aggregate (layout, size, parameters,
    and for CKKS ``scale``); raises :class:`InvalidCiphertextError` on the first bad chunk."""
    name, vector_from = _VECTOR_FROM[scheme]
    slots = context_slots(context, scheme)
    sizes = chunk_sizes(length, slots)
    parms_id = data_parms_id(context)
    vectors = []
    for i, chunk in enumerate(unpack_chunks(blob, scheme, length, slots)):
        try:
            vector = vector_from(context, chunk)
        except Exception as err:
            raise InvalidCiphertextError(
                f"chunk {i}: not a {name} ciphertext for this context ({type(err).__name__})"
            ) from None
        check_ciphertext(vector, sizes[i], parms_id, scale, i)
        vectors.append(vector)
    return vectors


def decrypt_chunks(vectors: list, length: int, slots: int, dtype: type) -> np.ndarray:
    """Concatenate the decrypted chunks into one ``(length,)`` array."""
    out: np.ndarray = np.empty(length, dtype=dtype)
    for i, vector in enumerate(vectors):
        values = vector.decrypt()
        out[i * slots : i * slots + len(values)] = values
    return out


class CiphertextSum:
    """Server-side running sum of chunked ciphertext uploads, for either scheme.

    Each upload is parsed and fully validated (:func:`load_chunks`) before it touches the sum, so a
    rejected upload leaves the sum unchanged; uploads are dropped once added (memory stays at one sum).
    A context holding a secret key is refused (ValueError).
    """

    scheme: int = SCHEME_CKKS

    def __init__(self, public_context: bytes, length: int) -> None:
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        self._context = parse_public_context(public_context)
        self._length = int(length)
        self._slots = context_slots(self._context, self.scheme)
        self._sizes = chunk_sizes(self._length, self._slots)
        self._first: list | None = None
        self._sum: list | None = None
        self.count = 0

    def _load(self, blob: bytes) -> list:
        return load_chunks(self._context, blob, self.scheme, self._length)

    def _accumulate(self, vectors: list) -> None:
        # copy() costs ~5 ms per ciphertext: keep the first upload, start the sum with a + b,
        # then add in place.
        if self._first is None and self._sum is None:
            self._first = vectors
        elif self._sum is None:
            assert self._first is not None
            self._sum = [a + b for a, b in zip(self._first, vectors)]
            self._first = None
        else:
            for acc, vector in zip(self._sum, vectors):
                acc += vector

    def add(self, blob: bytes) -> None:
        """Add one upload.

        Raises
        ------
        InvalidCiphertextError
            The blob does not match the layout, length or parameters; the sum is unchanged.
        """
        self._accumulate(self._load(blob))
        self.count += 1

    def to_bytes(self) -> bytes:
        """The encrypted sum, in the upload format."""
        vectors = self._sum if self._sum is not None else self._first
        if vectors is None:
            raise ValueError("no upload has been added")
        return pack_chunks(self.scheme, self._length, [v.serialize() for v in vectors])


class EncryptedSum(CiphertextSum):
    """Server-side running sum of CKKS uploads from :func:`encrypt_update` (decrypt the result of
    :meth:`to_bytes` with :func:`decrypt_sum`).

    Parameters
    ----------
    public_context : bytes
        :attr:`HEKeys.public_context`. A context holding a secret key is refused (ValueError).
    length : int
        Number of values ``d`` in each update.
    """

    scheme = SCHEME_CKKS

    def __init__(self, public_context: bytes, length: int) -> None:
        super().__init__(public_context, length)
        self._scale = self._context.global_scale

    def _load(self, blob: bytes) -> list:
        return load_chunks(self._context, blob, self.scheme, self._length, self._scale)


def decrypt_sum(secret_context: bytes, blob: bytes, length: int) -> np.ndarray:
    """Decrypt an aggregate from :meth:`EncryptedSum.to_bytes` (client side).

    Returns
    -------
    numpy.ndarray
        Shape ``(length,)``, float64: the sum of the uploads, within the CKKS noise.
    """
    context = parse_secret_context(secret_context)
    return decrypt_chunks(
        load_chunks(context, blob, SCHEME_CKKS, length), length, context_slots(context), np.float64
    )
