"""Column parsing for the flow loader: pure functions over Arrow arrays (numbers, text, timestamps,
row hashes). Split out of :mod:`fedids.data.loader`, which reads files and keeps the books."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TIMESTAMP_MIN = np.datetime64("1970-01-01T00:00:00", "us")
TIMESTAMP_MAX = np.datetime64("2100-01-01T00:00:00", "us")
"""Flow timestamps outside [TIMESTAMP_MIN, TIMESTAMP_MAX) are counted as ``timestamp out of range``."""


def out_of_range(ts: np.ndarray) -> np.ndarray:
    """(n,) bool: parsed (not NaT) timestamps outside [TIMESTAMP_MIN, TIMESTAMP_MAX)."""
    return ~np.isnat(ts) & ((ts < TIMESTAMP_MIN) | (ts >= TIMESTAMP_MAX))


# Tried in order; the format that parsed the previous chunk is tried first.
TIMESTAMP_READ_FORMATS: tuple[str, ...] = (
    "%d/%m/%Y %H:%M",  # originals: 7/7/2017 3:56
    "%d/%m/%Y %H:%M:%S",  # originals, some files
    "%d/%m/%Y %H:%M:%S.%f",  # fedids.data.formats.TIMESTAMP_WRITE_FORMAT
    "%d/%m/%Y %I:%M:%S %p",  # CICFlowMeter's own output (Engelen WTMC 2021 code)
    "%d/%m/%Y %I:%M %p",
    "ISO8601",  # Engelen 2021 re-release: 2017-07-07 15:56:12.123456
)


def decode(raw: bytes) -> str:
    """UTF-8, else cp1252: the originals mix both (web-attack labels hold a raw 0x96 en dash)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def parse_numeric(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a text column as float64.

    Returns ``(values, missing, bad)``: values float64 of shape (n,) (NaN where missing or bad),
    a bool mask of empty cells and a bool mask of cells that are not numbers.
    """
    missing = col.is_null().to_numpy(zero_copy_only=False).copy()
    try:
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        return values, missing, np.zeros(len(missing), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Slow path, only for a column with garbage in this chunk: Arrow rejects the whole cast, so
    # find the offending cells one by one (float() accepts the same spellings, and bytes).
    values = np.full(len(missing), np.nan)
    bad = np.zeros(len(missing), dtype=bool)
    for i, cell in enumerate(pc.cast(col, pa.binary()).to_pylist()):
        if cell is None or not cell.strip():
            missing[i] = True
            continue
        try:
            values[i] = float(cell)
        except ValueError:
            bad[i] = True
    return values, missing, bad


def decode_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Binary column -> string column, UTF-8 with a per-value cp1252 fallback."""
    try:
        return pc.cast(col, pa.string())
    except pa.ArrowInvalid:
        enc = pc.dictionary_encode(col).combine_chunks()
        words = [None if w is None else decode(w) for w in enc.dictionary.to_pylist()]
        return pa.chunked_array([pc.take(pa.array(words, pa.string()), enc.indices)])


def hash_strings(values: pa.ChunkedArray) -> np.ndarray:
    """(n,) uint64 hashes of a string column without nulls.

    ASCII columns (IPs, flow ids) are padded to one width so that Arrow's data buffer reads as an
    (n, width/8) uint64 matrix whose columns pandas hashes vectorised; going through Python
    objects instead took 0.4 s per 200k flow ids. Other text falls back to the object path.
    """
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    n = len(arr)
    longest = pc.max(pc.binary_length(arr)).as_py() or 0
    width = max(8, -(-longest // 8) * 8)
    padded = pc.utf8_rpad(arr, width, "\0")  # pads code points: the byte check below catches non-ASCII
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * padded.offset)
    if n and offsets[0] == 0 and offsets[-1] == n * width and (np.diff(offsets) == width).all():
        matrix = np.frombuffer(padded.buffers()[2], dtype=np.uint64, count=n * width // 8).reshape(n, -1)
        h = np.zeros(n, dtype=np.uint64)
        for j in range(matrix.shape[1]):
            h = mix(h, pd.util.hash_array(matrix[:, j]))
        return h
    return pd.util.hash_array(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object))


def mix(acc: np.ndarray, column_hash: np.ndarray) -> np.ndarray:
    # Order-dependent combination of per-column hashes (pandas' own combiner is private API);
    # uint64 arithmetic wraps, which is what a hash wants.
    return acc * np.uint64(0x9E3779B97F4A7C15) + column_hash


def _strptime(text: pa.Array, fmt: str) -> pa.Array:
    return pc.strptime(text, format=fmt, unit="us", error_is_null=True)


def _strptime_fraction(text: pa.Array, fmt: str) -> pa.Array:
    """``fmt`` followed by an optional ``.<1-9 digits>`` fraction (Arrow's strptime has no ``%f``)."""
    parts = pc.extract_regex(text, r"^(?P<head>[^.]+)(?:\.(?P<frac>\d{1,9}))?$")
    head = _strptime(parts.field("head"), fmt)
    micros = pc.cast(pc.utf8_slice_codeunits(pc.utf8_rpad(parts.field("frac"), 6, "0"), 0, 6), pa.int64())
    return pc.cast(pc.add(pc.cast(head, pa.int64()), micros), pa.timestamp("us"))


# Arrow's strptime is C++ and as fast on a miss as on a hit; pandas' strptime raises per miss, which
# made trying several formats 30x slower.
_TIMESTAMP_PARSERS: dict[str, Callable[[pa.Array], pa.Array]] = {
    "%d/%m/%Y %H:%M": lambda t: _strptime(t, "%d/%m/%Y %H:%M"),
    "%d/%m/%Y %H:%M:%S": lambda t: _strptime(t, "%d/%m/%Y %H:%M:%S"),
    "%d/%m/%Y %H:%M:%S.%f": lambda t: _strptime_fraction(t, "%d/%m/%Y %H:%M:%S"),
    "%d/%m/%Y %I:%M:%S %p": lambda t: _strptime(t, "%d/%m/%Y %I:%M:%S %p"),
    "%d/%m/%Y %I:%M %p": lambda t: _strptime(t, "%d/%m/%Y %I:%M %p"),
    "ISO8601": lambda t: _iso8601(t),
}
assert set(_TIMESTAMP_PARSERS) == set(TIMESTAMP_READ_FORMATS)


def _iso8601(text: pa.Array) -> pa.Array:
    try:  # Arrow's own ISO parser, when every value is ISO 8601 without a zone
        return pc.cast(text, pa.timestamp("us"))
    except pa.ArrowInvalid:
        return _strptime_fraction(
            pc.replace_substring(text, "T", " ", max_replacements=1), "%Y-%m-%d %H:%M:%S"
        )


def parse_timestamps(col: pa.ChunkedArray, order: list[str]) -> np.ndarray:
    """Parse timestamp strings; returns datetime64[us] of shape (n,), NaT where unparseable.

    ``order`` lists :data:`TIMESTAMP_READ_FORMATS`; it is reordered in place so that the format
    that matched most rows is tried first on the next chunk. Rows no format matches get one last
    try with pandas' ISO 8601 parser (time zone offsets are converted to UTC and dropped).
    """
    text = pc.utf8_trim_whitespace(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    out = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[us]")
    todo = np.flatnonzero(text.is_valid().to_numpy(zero_copy_only=False))
    hits: dict[str, int] = {}
    for fmt in list(order):
        if not len(todo):
            break
        parsed = _TIMESTAMP_PARSERS[fmt](text.take(pa.array(todo)))
        values = parsed.to_numpy(zero_copy_only=False).astype("datetime64[us]")
        ok = ~np.isnat(values)
        hits[fmt] = int(ok.sum())
        out[todo[ok]] = values[ok]
        todo = todo[~ok]
    order.sort(key=lambda f: -hits.get(f, 0))
    if len(todo):
        rest = pd.to_datetime(
            pd.Series(text.take(pa.array(todo)).to_pylist(), dtype=object),
            format="ISO8601",
            errors="coerce",
            utc=True,
        )
        out[todo] = rest.dt.tz_convert(None).to_numpy(dtype="datetime64[us]")
    return out
