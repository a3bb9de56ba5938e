"""Streaming loader for the public CICIDS2017 CSV formats into the canonical flow frame.

Three layouts are recognised from the header (:func:`detect_format`):

* ``machinelearningcve``: 79 columns (features + ``Label``), no flow metadata;
* ``trafficlabelling``: 85 columns, with ``Flow ID``, IPs, ports, ``Protocol`` and ``Timestamp``;
* ``engelen2021``: the corrected re-release by Engelen et al. (91 columns, other spellings).

Files are read in chunks with :func:`pyarrow.csv.open_csv`, so peak memory is the resulting frame
(features as ``float32``: 2.8 M rows x 78 x 4 B = 0.87 GB) plus one chunk's working set (about
0.4 GB at 200,000 rows), not the whole text at once: a 1 M-row TrafficLabelling file peaked at
0.9 GiB resident for a 0.43 GiB frame, against 1.9 GiB for ``pandas.read_csv``
(``benchmarks/bench_loader.py``). Every quirk of the originals that
``shared/data/README.md`` lists is handled and counted in a :class:`LoadReport` per file.

Timestamps are kept as recorded, naive, with microsecond resolution. The originals write
``7/7/2017 3:56``: day first, minute resolution and a 12-hour clock without AM/PM (``3:56`` may be
15:56 local time, UTC-3). They are *not* shifted to a 24-hour clock here because the ambiguity cannot
be resolved from the row; ``seq`` keeps the file order as tie-breaker. The Engelen re-release writes
ISO timestamps with microseconds on its own clock (UTC), so do not compare times across formats.

This module is the entry point; the work is split by what each part is: :mod:`fedids.data.headers`
(format detection, header checks), :mod:`fedids.data.lines` (line-level cleaning before parsing),
:mod:`fedids.data.reader` (streaming one file in chunks and collecting its rows),
:mod:`fedids.data.cleaning` (labels, duplicates, per-chunk drop masks), :mod:`fedids.data.columns`
(cell parsing and hashing) and :mod:`fedids.data.load_report` (drop reasons, repairs, the per-file report).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fedids.data.cleaning import _Dedup, _Labels
from fedids.data.headers import FileInfo, detect_format, inspect_file
from fedids.data.load_report import DROP_REASONS, LoadReport
from fedids.data.reader import _META_DTYPES, _STRING_META, _Collected, _FileReader
from fedids.data.schema import FAMILY, FEATURES, LABEL, META, SEQ
from fedids.errors import InputError

__all__ = [
    "LoadReport",
    "LoadResult",
    "detect_format",
    "load_flows",
    "ATTEMPTED_MODES",
    "DROP_REASONS",
    "LABEL_MODES",
]

ATTEMPTED_MODES: tuple[str, ...] = ("benign", "attack", "drop")
"""What :func:`load_flows` does with Engelen's ``"<attack> - Attempted"`` labels."""
LABEL_MODES: tuple[str, ...] = ("required", "optional")
"""``required``: training and evaluation (a row without a known label is dropped and counted);
``optional``: detection (labels are only kept for evaluation; unlabelled rows are kept with label "")."""


@dataclass
class LoadResult:
    """The canonical flow frame of all inputs, and one :class:`LoadReport` per input file.

    ``frame`` columns, in order: the metadata columns that *every* input has (schema order:
    ``flow_id`` str, ``src_ip`` str, ``src_port`` int32, ``dst_ip`` str, ``dst_port`` int32,
    ``protocol`` int16, ``timestamp`` datetime64[us]); ``seq`` int64, the row's 0-based position
    among the well-formed data rows of all inputs in the order given (gaps where rows were
    dropped); the 78 :data:`FEATURES` as float32 (units as in CICIDS2017: microseconds, bytes,
    per second); ``label`` str (normalised, after the ``attempted`` mapping); ``family`` str (one
    of :data:`fedids.data.schema.FAMILIES`). Rows stay in input order; the index is a RangeIndex.
    """

    frame: pd.DataFrame
    reports: list[LoadReport]


def load_flows(
    paths: Sequence[str | Path],
    *,
    attempted: str = "benign",
    drop_duplicates: bool = True,
    chunk_rows: int = 200_000,
    progress: Callable[[int], None] | None = None,
    labels: str = "required",
) -> LoadResult:
    """Read CICIDS2017 CSV files (any of the three formats) into one canonical flow frame.

    Parameters
    ----------
    paths : sequence of str or Path
        Input CSV files, concatenated in this order; ``seq`` numbers rows across all of them.
    attempted : {"benign", "attack", "drop"}
        Engelen et al.'s ``"<attack> - Attempted"`` labels (attack flows that carried no payload):
        ``"benign"`` relabels them ``BENIGN`` (the authors' own choice, the default), ``"attack"``
        keeps ``<attack>``, ``"drop"`` drops the rows (reason ``"attempted attack"``).
    drop_duplicates : bool
        Drop rows identical to an earlier row of the whole input (all canonical columns and the label
        as read, compared through 64-bit row hashes). Counted as ``"duplicate"``.
    chunk_rows : int
        Rows parsed per chunk; memory per chunk is roughly 1 KB per row.
    progress : callable, optional
        Called with the number of rows of each processed chunk (kept or not).
    labels : {"required", "optional"}
        ``"required"`` (training, evaluation): a row without a known label is dropped (``missing label``,
        ``unknown label``). ``"optional"`` (detection): such rows are kept with label and family ``""``,
        and a file may lack the ``Label`` column; labels present are kept for evaluation.

    Returns
    -------
    LoadResult
        ``frame`` (see :class:`LoadResult` for columns and dtypes; ``len(frame)`` rows) and one
        :class:`LoadReport` per path.

    Raises
    ------
    InputError
        ``"<file>: <problem>"`` for a missing, empty, header-only, binary or compressed file, a
        header that matches no format (names the missing/misspelt columns), or a file that yields no
        row at all. A bad *row* (unmatched quote, repeated header line, oversized line, unknown
        label...) never refuses a file: it is counted under its reason in the report.
    ValueError
        For an invalid ``attempted`` or ``chunk_rows``.

    Notes
    -----
    Per row, in :data:`DROP_REASONS` order: missing label; non-numeric or empty feature/port/protocol
    cell; Infinity/NaN outside the two rate features; non-integer port; unparseable timestamp;
    attempted (mode ``"drop"``); duplicate. Rows with Infinity/NaN in ``Flow Bytes/s`` or
    ``Flow Packets/s`` are kept with 0 there; ``Init_Win_bytes_*`` of ``-1`` are kept as is. Both are
    counted in ``repaired``. Metadata columns appear only when every input file has them.
    """
    _check_arguments(attempted, chunk_rows, labels)
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise InputError("no input files given")
    infos = [inspect_file(Path(p), labels) for p in paths]  # all headers checked before the long read
    out, reports = _read_files(
        infos,
        attempted=attempted,
        drop_duplicates=drop_duplicates,
        chunk_rows=int(chunk_rows),
        progress=progress,
        label_mode=labels,
    )
    return LoadResult(frame=_assemble(out), reports=reports)


def _check_arguments(attempted: str, chunk_rows: int, labels: str) -> None:
    """ValueError for an invalid ``attempted``, ``chunk_rows`` or ``labels`` (in that order)."""
    if attempted not in ATTEMPTED_MODES:
        raise ValueError(f"attempted must be one of {ATTEMPTED_MODES}, not {attempted!r}")
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, not {chunk_rows}")
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, not {labels!r}")


def _read_files(
    infos: list[FileInfo],
    *,
    attempted: str,
    drop_duplicates: bool,
    chunk_rows: int,
    progress: Callable[[int], None] | None,
    label_mode: str,
) -> tuple[_Collected, list[LoadReport]]:
    """Read every file, in order, into one :class:`_Collected` (sized for all their lines); ``seq`` and the
    duplicate filter continue across files. Returns it with one report per file."""
    capacity = sum(i.n_lines for i in infos)
    out = _Collected(features=np.empty((capacity, len(FEATURES)), dtype=np.float32))
    classifier = _Labels(attempted)
    dedup = _Dedup() if drop_duplicates else None
    reports = []
    seq0 = 0
    for info in infos:
        reader = _FileReader(
            info,
            labels=classifier,
            dedup=dedup,
            attempted=attempted,
            chunk_rows=chunk_rows,
            seq0=seq0,
            label_mode=label_mode,
        )
        rep = reader.read_all(out, progress)
        reports.append(rep)
        seq0 += reader.parsed_rows
    return out, reports


def _assemble(out: _Collected) -> pd.DataFrame:
    """Build the frame around the feature buffer without copying it."""
    n = out.n
    # A view of the preallocated buffer; its never-written tail is never paged in.
    frame = pd.DataFrame(out.features[:n], columns=list(FEATURES), copy=False)
    pos = 0
    for m in META:
        if m in out.absent:
            continue
        parts = out.meta[m]
        values: pd.Series | np.ndarray
        if m in _STRING_META:
            # Flatten: pa.chunked_array() of ChunkedArrays would go through Python objects.
            chunks = [c for part in parts for c in part.chunks]
            values = pa.chunked_array(chunks, type=pa.string()).to_pandas()
        elif m == "timestamp":
            values = np.concatenate(parts) if parts else np.empty(0, dtype="datetime64[us]")
        else:
            values = np.concatenate(parts) if parts else np.empty(0, dtype=_META_DTYPES[m])
        frame.insert(pos, m, values)
        pos += 1
    frame.insert(pos, SEQ, np.concatenate(out.seq) if out.seq else np.empty(0, dtype=np.int64))
    codes = np.concatenate(out.label_codes) if out.label_codes else np.empty(0, dtype=np.int32)
    by_code = sorted(out.vocab.items(), key=lambda kv: kv[1])
    for name, k in ((LABEL, 0), (FAMILY, 1)):
        words = pa.array([key[k] for key, _ in by_code], pa.string())
        frame[name] = pc.take(words, pa.array(codes)).to_pandas() if n else pd.Series([], dtype="str")
    return frame
