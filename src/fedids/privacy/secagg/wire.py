"""The wire format of secure-aggregation messages: flat ``dict[str, int | bytes]`` with the keys below,
nested data packed into bytes with a fixed big-endian layout (no pickle), and strict readers."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from fedids.privacy.secagg.config import InvalidMessageError, SecAggConfig

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
        out[client] = data[offset : offset + length]
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
        raise InvalidMessageError(f"message for round {message.get(ROUND)}, this is round {config.round_id}")


def message_size(message: Mapping[str, int | bytes]) -> int:
    """Bytes a message carries: byte fields by length, ints as 8 bytes (keys not counted)."""
    return sum(len(v) if isinstance(v, (bytes, bytearray)) else 8 for v in message.values())
