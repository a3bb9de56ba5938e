"""Headers of the CICIDS2017 CSV layouts: format detection and the first look at a file (readable,
not compressed or binary, header, line count). Split out of :mod:`fedids.data.loader`."""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedids.data.columns import decode
from fedids.data.formats import (
    ENGELEN2021_COLUMNS,
    ENGELEN2021_IGNORED,
    ENGELEN2021_META,
    ENGELEN2021_SOURCES,
    FORMAT_ENGELEN2021,
    FORMAT_MACHINELEARNINGCVE,
    FORMAT_TRAFFICLABELLING,
    MACHINELEARNINGCVE_COLUMNS,
    TRAFFICLABELLING_COLUMNS,
    TRAFFICLABELLING_META,
)
from fedids.data.schema import FEATURES, LABEL
from fedids.errors import InputError

LABEL_SOURCE = "Label"
_SNIFF_BYTES = 64 * 1024


def normalise_header(columns: Sequence[str]) -> list[str]:
    """Strip the originals' leading spaces and name repeats like pandas (``X``, ``X.1``, ...)."""
    seen: dict[str, int] = {}
    out = []
    for raw in columns:
        name = str(raw).strip().lstrip("\ufeff").strip()
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        else:
            seen[name] = 0
        out.append(name)
    return out


def sources(fmt: str, has_label: bool = True) -> dict[str, str]:
    """Canonical target (feature, metadata or ``label``) -> file column it is read from."""
    if fmt == FORMAT_ENGELEN2021:
        src = dict(ENGELEN2021_SOURCES)
        src.update({meta: col for col, meta in ENGELEN2021_META.items()})
    else:
        src = {f: f for f in FEATURES}
        if fmt == FORMAT_TRAFFICLABELLING:
            src.update({meta: col for col, meta in TRAFFICLABELLING_META.items()})
    if has_label:
        src[LABEL] = LABEL_SOURCE
    return src


_REQUIRED: dict[str, tuple[str, ...]] = {  # in file order
    FORMAT_MACHINELEARNINGCVE: MACHINELEARNINGCVE_COLUMNS,
    FORMAT_TRAFFICLABELLING: TRAFFICLABELLING_COLUMNS,
    FORMAT_ENGELEN2021: tuple(c for c in ENGELEN2021_COLUMNS if c not in ENGELEN2021_IGNORED),
}
_KNOWN = frozenset(c for cols in _REQUIRED.values() for c in cols) | frozenset(ENGELEN2021_IGNORED)


def detect_format(columns: Sequence[str]) -> str:
    """Recognise a CICIDS2017 CSV layout from its header.

    Parameters
    ----------
    columns : sequence of str
        Header names as in the file; leading/trailing spaces are ignored and a repeated name is
        read as ``name.1`` (the originals' second ``Fwd Header Length``).

    Returns
    -------
    str
        ``"machinelearningcve"``, ``"trafficlabelling"`` or ``"engelen2021"``. Extra columns are
        allowed (and ignored by the loader).

    Raises
    ------
    InputError
        When no layout has all its required columns; the message names the missing columns and,
        for each, the closest column of the file (``difflib``) when one looks like a misspelling.
    """
    names = normalise_header(columns)
    present = set(names)
    # Fewest missing columns wins; on a tie the larger layout (trafficlabelling has every
    # machinelearningcve column).
    fmt, missing = min(
        ((f, [c for c in req if c not in present]) for f, req in _REQUIRED.items()),
        key=lambda fm: (len(fm[1]), -len(_REQUIRED[fm[0]])),
    )
    if not missing:
        return fmt
    if len(missing) > len(_REQUIRED[fmt]) // 2:
        shown = ", ".join(repr(c) for c in names[:4]) or "nothing"
        raise InputError(
            f"not a CICIDS2017 flow CSV: header starts with {shown} ({len(names)} columns); "
            "expected the MachineLearningCVE, TrafficLabelling or Engelen 2021 columns"
        )
    unknown = [c for c in names if c not in _KNOWN]
    parts = []
    for col in missing:
        close = difflib.get_close_matches(col, unknown, n=1, cutoff=0.6)
        parts.append(f"{col!r} (file has {close[0]!r}: misspelt?)" if close else repr(col))
    shown = ", ".join(parts[:6]) + (f" and {len(parts) - 6} more" if len(parts) > 6 else "")
    raise InputError(f"missing {len(parts)} required column(s) of the {fmt} format: {shown}")


# --------------------------------------------------------------------------------------------------
# File inspection (I/O edge)


@dataclass
class FileInfo:
    path: Path
    header: list[str]  # normalised names
    fmt: str
    raw_header: bytes  # the header line as in the file
    has_label: bool
    n_lines: int  # newline count + 1: an upper bound on the data rows + header


def inspect_file(path: Path, label_mode: str = "required") -> FileInfo:
    """Check that ``path`` is a readable, non-empty CSV text file and read its header (without a
    ``Label`` column only when ``label_mode`` is ``"optional"``)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a CSV file")
    try:
        with path.open("rb") as fh:
            sample = fh.read(_SNIFF_BYTES)
            n_lines = sample.count(b"\n") + 1
            # Counting lines up front sizes the feature buffer once (no 2x peak from concatenating
            # chunks at the end) and costs one sequential read, ~1 s per GB.
            for block in iter(lambda: fh.read(8 << 20), b""):
                n_lines += block.count(b"\n")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not sample:
        raise InputError(f"{path}: empty file (0 bytes)")
    if sample[:2] == b"\x1f\x8b" or sample[:4] == b"PK\x03\x04":
        kind = "gzip" if sample[:2] == b"\x1f\x8b" else "zip"
        raise InputError(f"{path}: {kind}-compressed, not a CSV text file; decompress it first")
    if b"\x00" in sample.split(b"\n", 1)[0] or sample.count(b"\x00") > len(sample) // 100:
        # a NUL in the header or in bulk: a binary file; a few NULs in rows are bad cells, counted per row
        raise InputError(f"{path}: binary data (NUL bytes), not a CSV text file")
    if not sample.strip():
        raise InputError(f"{path}: empty file (whitespace only)")
    end = sample.find(b"\n")
    if end < 0 and len(sample) == _SNIFF_BYTES:
        raise InputError(f"{path}: no line break in the first {_SNIFF_BYTES // 1024} KiB; not a CSV file")
    header_bytes = sample if end < 0 else sample[:end]
    rest = b"" if end < 0 else sample[end + 1 :]
    header_text = decode(header_bytes.rstrip(b"\r"))
    try:
        header = next(csv.reader(io.StringIO(header_text)), [])
    except csv.Error as exc:
        raise InputError(f"{path}: unreadable CSV header: {exc}") from None
    has_label = LABEL_SOURCE in normalise_header(header)
    try:
        fmt = detect_format(header if has_label or label_mode == "required" else [*header, LABEL_SOURCE])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    if not rest.strip() and len(sample) < _SNIFF_BYTES:
        raise InputError(f"{path}: header only, 0 data rows")
    return FileInfo(
        path=path,
        header=normalise_header(header),
        fmt=fmt,
        n_lines=n_lines,
        raw_header=header_bytes.rstrip(b"\r"),
        has_label=has_label,
    )
