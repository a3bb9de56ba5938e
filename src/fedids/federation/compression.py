"""Update compression for the plaintext federation: what a client uploads instead of its full weights.

With ``compression`` other than ``none`` a client sends its *update* ``delta = new weights - global
weights`` compressed, under the reply key :data:`COMPRESSED`; the server rebuilds ``global + delta``
(:func:`decode`) before aggregating, so every strategy works unchanged. Two codecs:

``int8``
    per-tensor symmetric quantisation: ``scale = max|delta| / 127``, ``q = round(delta / scale)`` as int8.
    Payload: one int8 array of all parameters and one float32 scale per tensor, about 4x smaller than
    float32. Error bound: ``|delta - q * scale| <= scale / 2`` per value.
``topk:FRACTION``
    top-k sparsification with error feedback: the client adds the residual it kept from its earlier
    rounds to ``delta``, sends the ``k = ceil(FRACTION * parameters)`` entries of largest magnitude
    (their flat indices, uint16 when the model has at most 65,536 parameters, else uint32, and float32
    values), and keeps the rest as its new residual (Seide et al. 2014; Stich et al., NeurIPS 2018), so
    no part of an update is lost, only delayed. The residual lives in the client's node state (Flower
    ``Context.state``, as the SecAgg client state does) and is lost when the client process restarts
    (a resumed run starts from zero residuals).

Upload bytes are counted from the arrays actually sent (:func:`payload_bytes`). Compression is for the
plaintext mode only: HE ciphertexts and SecAgg masks are not sparse or quantisable this way, and the DP
noise calibration assumes the full clipped update; the server rejects the combination
(``FederationConfig``). Every compressed reply is validated on arrival (:func:`decode` raises
``ValueError`` with the reason: dtype, shape, count, index range, duplicates, NaN or Inf).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

COMPRESSED = "compressed-update"  # reply key of the compressed payload (an ArrayRecord)
RESIDUAL_STATE = "fedids-topk-residual"  # Context.state key of a client's top-k residual
KINDS = ("none", "int8", "topk")


@dataclass(frozen=True)
class Compression:
    """A parsed ``compression`` setting: ``none``, ``int8`` or ``topk:FRACTION`` (0 < FRACTION < 1)."""

    kind: str = "none"
    fraction: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Compression:
        name, _, arg = str(text).partition(":")
        if name in ("none", "int8") and not arg:
            return cls(name)
        if name == "topk":
            try:
                fraction = float(arg)
            except ValueError:
                fraction = math.nan
            if not 0.0 < fraction < 1.0:
                raise ValueError(f"compression {text!r}: topk needs a fraction in (0, 1), e.g. topk:0.1")
            return cls("topk", fraction)
        raise ValueError(f"unknown compression {text!r}: use none, int8 or topk:FRACTION")

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def k(self, length: int) -> int:
        """Entries a top-k update keeps out of ``length``."""
        return max(1, min(length, math.ceil(self.fraction * length)))


def _index_dtype(length: int) -> np.dtype:
    return np.dtype(np.uint16) if length <= 1 << 16 else np.dtype(np.uint32)


def encode(
    delta: Sequence[np.ndarray], spec: Compression, residual: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Compress an update given as one array per tensor.

    Returns the payload (name -> array, what goes on the wire) and the new top-k residual (flat
    float32; None for int8). ``residual`` (top-k only) is the one kept from the client's last round;
    a residual of the wrong length (another model) is ignored.
    """
    flat = np.concatenate([np.asarray(d, dtype=np.float32).ravel() for d in delta])
    if spec.kind == "int8":
        sizes = [int(np.asarray(d).size) for d in delta]
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        scales = np.array([np.abs(p).max() / 127.0 if p.size else 0.0 for p in parts], dtype=np.float32)
        q = [np.clip(np.rint(p / s), -127, 127) if s > 0 else np.zeros_like(p) for p, s in zip(parts, scales)]
        return {"q": np.concatenate(q).astype(np.int8), "scale": scales}, None
    if spec.kind == "topk":
        if residual is not None and residual.shape == flat.shape:
            flat = flat + residual
        k = spec.k(flat.size)
        # argpartition then a sort of the k winners: O(n), and indices in increasing order on the wire.
        index = np.sort(np.argpartition(-np.abs(flat), k - 1)[:k])
        value = flat[index].astype(np.float32)
        new_residual = flat.copy()
        new_residual[index] = 0.0
        return {"index": index.astype(_index_dtype(flat.size)), "value": value}, new_residual
    raise ValueError(f"compression {spec.kind!r} has no encoder")


def decode(
    payload: Mapping[str, np.ndarray], spec: Compression, shapes: Sequence[tuple[int, ...]]
) -> list[np.ndarray]:
    """The float32 update (one array per ``shapes`` entry) from a payload; ``ValueError`` when malformed."""
    sizes = [int(np.prod(s)) for s in shapes]
    length = sum(sizes)
    if spec.kind == "int8":
        if set(payload) != {"q", "scale"}:
            raise ValueError(f"int8 payload has arrays {sorted(payload)}, expected q and scale")
        q, scale = payload["q"], payload["scale"]
        if q.dtype != np.int8 or q.shape != (length,):
            raise ValueError(f"int8 payload q: dtype {q.dtype}, shape {q.shape}, expected int8 ({length},)")
        if scale.dtype != np.float32 or scale.shape != (len(shapes),):
            raise ValueError(f"int8 payload scale: dtype {scale.dtype}, shape {scale.shape}")
        if not np.isfinite(scale).all() or (scale < 0).any():
            raise ValueError("int8 payload scale is negative, NaN or Inf")
        flat = q.astype(np.float32) * np.repeat(scale, sizes)
    elif spec.kind == "topk":
        if set(payload) != {"index", "value"}:
            raise ValueError(f"topk payload has arrays {sorted(payload)}, expected index and value")
        index, value = payload["index"], payload["value"]
        k = spec.k(length)
        if index.dtype != _index_dtype(length) or index.shape != (k,):
            raise ValueError(
                f"topk payload index: dtype {index.dtype}, shape {index.shape}, expected "
                f"{_index_dtype(length)} ({k},)"
            )
        if value.dtype != np.float32 or value.shape != (k,):
            raise ValueError(f"topk payload value: dtype {value.dtype}, shape {value.shape}")
        if (index >= length).any() or np.unique(index).size != k:
            raise ValueError("topk payload indices out of range or repeated")
        if not np.isfinite(value).all():
            raise ValueError("topk payload values contain NaN or Inf")
        flat = np.zeros(length, dtype=np.float32)
        flat[index.astype(np.int64)] = value
    else:
        raise ValueError(f"compression {spec.kind!r} has no decoder")
    return [p.reshape(s) for p, s in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes)]


def payload_bytes(payload: Mapping[str, np.ndarray]) -> int:
    """Bytes of the arrays sent (the same count the uncompressed mode reports for its weights)."""
    return int(sum(np.asarray(a).nbytes for a in payload.values()))


# ---- Flower glue: the client's reply and residual, the server's reconstruction


def compress_reply(
    global_weights: Sequence[np.ndarray], new_weights: Sequence[np.ndarray], spec: Compression, context=None
):
    """The ArrayRecord a client sends for ``new_weights``; the top-k residual is read from and written
    to ``context.state`` (no error feedback without a context)."""
    from flwr.app import Array, ArrayRecord

    residual = None
    if spec.kind == "topk" and context is not None and RESIDUAL_STATE in context.state:
        residual = context.state[RESIDUAL_STATE]["residual"].numpy()
    delta = [
        np.asarray(n, dtype=np.float32) - np.asarray(g, dtype=np.float32)
        for g, n in zip(global_weights, new_weights)
    ]
    payload, residual = encode(delta, spec, residual)
    if residual is not None and context is not None:
        context.state[RESIDUAL_STATE] = ArrayRecord({"residual": Array(residual)})
    return ArrayRecord({name: Array(a) for name, a in payload.items()})


def rebuild_weights(
    record, spec: Compression, global_weights: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], int]:
    """Server side: ``global + decoded update`` as float32 arrays, and the payload's bytes."""
    payload = {name: record[name].numpy() for name in record.keys()}
    delta = decode(payload, spec, [tuple(g.shape) for g in global_weights])
    weights = [
        (np.asarray(g, dtype=np.float32) + d).astype(np.float32) for g, d in zip(global_weights, delta)
    ]
    return weights, payload_bytes(payload)
