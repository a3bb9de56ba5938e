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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from fedids.data.columns import (
    TIMESTAMP_READ_FORMATS,
    decode,
    decode_text,
    hash_strings,
    mix,
    out_of_range,
    parse_numeric,
    parse_timestamps,
)
from fedids.data.headers import FileInfo, detect_format, inspect_file, sources
from fedids.data.lines import LINE_MALFORMED, CleanLines
from fedids.data.schema import BENIGN_LABEL, FAMILY, FEATURES, LABEL, META, SEQ, family_of, normalise_label
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
LABEL_MODES: tuple[str, ...] = ("required", "optional")
"""``required``: training and evaluation (a row without a known label is dropped and counted);
``optional``: detection (labels are only kept for evaluation; unlabelled rows are kept with label "")."""
_MAX_UNKNOWN_WORDS = 20
"""What :func:`load_flows` does with Engelen's ``"<attack> - Attempted"`` labels."""

DROP_REASONS: tuple[str, ...] = (
    "malformed row",  # wrong number of fields, an unmatched quote
    "repeated header",  # the header line again (files concatenated with cat)
    "oversized line",  # a line over fedids.data.lines.MAX_LINE_BYTES
    "missing label",  # empty Label cell (e.g. the all-comma rows of the originals)
    "unknown label",  # a Label that is no CICIDS2017 class (labels="required" only)
    "non-numeric value",  # a feature, port or protocol cell that is not a number
    "missing value",  # an empty feature, port or protocol cell
    "non-finite value",  # Infinity/NaN (or beyond float32) in a feature other than the two rates
    "invalid port or protocol",  # not an integer in 0..65535 (protocol 0..255)
    "unparseable timestamp",
    "timestamp out of range",  # outside fedids.data.columns.TIMESTAMP_MIN..TIMESTAMP_MAX
    "attempted attack",  # only with attempted="drop"
    "duplicate",  # exact duplicate of an earlier row of the input
)
"""Reasons a row is dropped, in order of precedence: a row is counted under the first that applies."""

REPAIR_RATES = "non-finite rate set to 0"
REPAIR_INIT_WIN_FWD = "Init_Win_bytes_forward -1 sentinel kept"
REPAIR_INIT_WIN_BWD = "Init_Win_bytes_backward -1 sentinel kept"

_RATE_FEATURES = ("Flow Bytes/s", "Flow Packets/s")
_ATTEMPTED_SUFFIX = " - attempted"

_BLOCK_BYTES = 2 << 20  # pyarrow parse block; small blocks measured faster here than 16-64 MiB
_PORT_MAX = {"src_port": 65535, "dst_port": 65535, "protocol": 255}
_META_DTYPES = {"src_port": np.int32, "dst_port": np.int32, "protocol": np.int16}
_STRING_META = ("flow_id", "src_ip", "dst_ip")
_NUMERIC_META = ("src_port", "protocol")


@dataclass
class LoadReport:
    """What happened to one input file.

    Attributes
    ----------
    path : str
        The file as given.
    format : str
        ``"machinelearningcve"``, ``"trafficlabelling"`` or ``"engelen2021"``.
    rows_read : int
        Data rows in the file (header excluded, malformed rows included).
    rows_kept : int
        Rows that reached the frame; ``rows_read == rows_kept + sum(dropped.values())``.
    dropped : dict[str, int]
        Rows dropped per reason (every key of :data:`DROP_REASONS`, zeros included).
    repaired : dict[str, int]
        Counts over kept rows: cells of ``Flow Bytes/s``/``Flow Packets/s`` holding Infinity or NaN that
        were set to 0 (what pcap flow extractors write for zero-duration flows), and rows whose
        ``Init_Win_bytes_*`` is the ``-1`` sentinel (kept as is: it means "no window seen").
    label_counts, family_counts : dict[str, int]
        Kept rows per normalised label / family, largest first (unlabelled rows not included).
    unlabelled : int
        Kept rows without a known label (``labels="optional"`` only).
    unknown_labels : dict[str, int]
        Rows per Label word that is no CICIDS2017 class (the first 20 distinct words), kept unlabelled
        or dropped as ``unknown label`` depending on the mode.
    """

    path: str
    format: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    repaired: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((REPAIR_RATES, REPAIR_INIT_WIN_FWD, REPAIR_INIT_WIN_BWD), 0)
    )
    label_counts: dict[str, int] = field(default_factory=dict)
    family_counts: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0
    unknown_labels: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain-JSON form (all values str/int/dict)."""
        return asdict(self)


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


# --------------------------------------------------------------------------------------------------
# The loader


class _Labels:
    """Decodes, normalises and classifies label values; caches per distinct raw value."""

    def __init__(self, attempted: str) -> None:
        self.attempted = attempted
        self.cache: dict[bytes | None, tuple[str, str, str, str, bool] | None] = {}

    def classify(self, raw: bytes | None) -> tuple[str, str, str, str, bool] | None:
        """Return ``(raw_text, normalised, final_label, family, attempted)`` or None when missing."""
        if raw in self.cache:
            return self.cache[raw]
        result = None
        text = None if raw is None else decode(raw)
        if text is not None and text.strip():
            norm = normalise_label(text)
            is_attempted = norm.lower().endswith(_ATTEMPTED_SUFFIX)
            base = norm[: -len(_ATTEMPTED_SUFFIX)] if is_attempted else norm
            family_of(base)  # raises ValueError for an unknown class, whatever the mode
            if is_attempted and self.attempted == "benign":
                final = BENIGN_LABEL
            else:
                final = base
            result = (text, norm, final, family_of(final), is_attempted)
        self.cache[raw] = result
        return result


class _Dedup:
    """Exact-duplicate filter across chunks and files on 64-bit row hashes.

    Holds one sorted uint64 per kept row (22 MB for 2.8 M rows) instead of the rows themselves.
    Two different rows collide with probability about n^2 / 2^65 (2e-7 for 2.8 M rows).
    """

    def __init__(self) -> None:
        self.seen = np.empty(0, dtype=np.uint64)

    def new_mask(self, h: np.ndarray) -> np.ndarray:
        fresh = ~pd.Series(h).duplicated(keep="first").to_numpy()
        if len(self.seen):
            pos = np.minimum(np.searchsorted(self.seen, h), len(self.seen) - 1)
            fresh &= self.seen[pos] != h
        # Two sorted runs: numpy's stable sort (timsort/radix) merges them in about linear time.
        self.seen = np.sort(np.concatenate([self.seen, h[fresh]]), kind="stable")
        return fresh


@dataclass
class _Collected:
    """Kept rows of all files: features in one preallocated buffer, the rest as chunk lists."""

    features: np.ndarray  # (capacity, 78) float32; rows [0, n) are filled
    n: int = 0
    seq: list[np.ndarray] = field(default_factory=list)
    meta: dict[str, list] = field(default_factory=lambda: {m: [] for m in META})
    absent: set[str] = field(default_factory=set)  # metadata some input lacks: left out for all
    label_codes: list[np.ndarray] = field(default_factory=list)
    vocab: dict[tuple[str, str], int] = field(default_factory=dict)  # (label, family) -> code


@dataclass
class _Chunk:
    """Per-chunk working state: parsed values, row hashes and the drop masks."""

    n: int
    classes: list  # per distinct label value: _Labels.classify result, None when missing
    idx: np.ndarray  # (n,) int64 index into classes; -1 for an empty cell
    x32: np.ndarray | None = None  # (78, n) float32: feature-major, so each column is contiguous
    h: np.ndarray | None = None  # (n,) uint64 row hash, built column by column
    meta: dict[str, np.ndarray | pa.ChunkedArray] = field(default_factory=dict)  # numeric / text columns
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def features(self) -> np.ndarray:
        """:attr:`x32`, once parsed."""
        if self.x32 is None:
            raise RuntimeError("chunk features read before they were parsed")
        return self.x32

    @property
    def hashes(self) -> np.ndarray:
        """:attr:`h`, when duplicates are dropped."""
        if self.h is None:
            raise RuntimeError("row hashes read in a run that keeps duplicates")
        return self.h

    def flag(self, reason: str, mask: np.ndarray) -> None:
        self.masks[reason] = self.masks[reason] | mask if reason in self.masks else mask

    def mix(self, column_hash: np.ndarray) -> None:
        if self.h is not None:  # None when duplicates are kept: no hashing at all
            self.h = mix(self.h, column_hash)


class _FileReader:
    """Reads one file chunk by chunk into a :class:`_Collected`, filling its :class:`LoadReport`."""

    def __init__(
        self,
        info: FileInfo,
        *,
        labels: _Labels,
        dedup: _Dedup | None,
        attempted: str,
        chunk_rows: int,
        seq0: int,
        label_mode: str = "required",
    ) -> None:
        self.info = info
        self.label_mode = label_mode
        self.labels = labels
        self.dedup = dedup
        self.attempted = attempted
        self.chunk_rows = chunk_rows
        self.seq0 = seq0
        self.report = LoadReport(path=str(info.path), format=info.fmt)
        self.meta_present: dict[str, bool] | None = None  # decided on the first chunk
        self.ts_order = list(TIMESTAMP_READ_FORMATS)
        self.line_drops: Counter = Counter()  # reason -> lines removed before parsing
        self.parsed_rows = 0
        src = sources(info.fmt, info.has_label)
        col_of = {name: f"c{i}" for i, name in enumerate(info.header)}
        self.src = {target: col_of[name] for target, name in src.items()}
        self.text_cols = {
            self.src[m] for m in ("flow_id", "src_ip", "dst_ip", "timestamp", LABEL) if m in self.src
        }
        feature_cols = [self.src[f] for f in FEATURES]
        self.reused = {c for c in feature_cols if feature_cols.count(c) > 1}

    # -- reading -----------------------------------------------------------------------------------

    def _on_invalid_row(self, row: pacsv.InvalidRow) -> str:
        self.line_drops[LINE_MALFORMED] += 1
        return "skip"

    def chunks(self) -> Iterator[pa.Table]:
        """Yield the file as tables of ``chunk_rows`` rows (the last one shorter), all text columns."""
        cols = sorted(set(self.src.values()), key=lambda c: int(c[1:]))
        read = pacsv.ReadOptions(
            column_names=[f"c{i}" for i in range(len(self.info.header))], block_size=_BLOCK_BYTES
        )
        # Everything is read as text: Arrow's float parser would reject a whole block for one
        # garbage cell, and the labels need their own decoding (UTF-8 or cp1252).
        convert = pacsv.ConvertOptions(
            include_columns=cols,
            check_utf8=False,
            strings_can_be_null=True,
            null_values=[""],
            column_types={c: (pa.binary() if c in self.text_cols else pa.string()) for c in cols},
        )
        # Quoting off: CleanLines has removed or unquoted every line with a quote, so no row spans lines.
        parse = pacsv.ParseOptions(invalid_row_handler=self._on_invalid_row, quote_char=False)
        pending: list[pa.RecordBatch] = []
        have = 0
        try:
            stream = CleanLines(self.info.path, self.info.raw_header, len(self.info.header))
        except OSError as exc:
            raise InputError(f"{self.info.path}: cannot read: {exc.strerror or exc}") from None
        try:
            reader = pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
            for batch in reader:
                pending.append(batch)
                have += batch.num_rows
                while have >= self.chunk_rows:
                    table = pa.Table.from_batches(pending)
                    yield table.slice(0, self.chunk_rows)
                    rest = table.slice(self.chunk_rows)
                    pending, have = rest.to_batches(), rest.num_rows
        except (pa.ArrowException, OSError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{self.info.path}: malformed CSV: {msg}") from None
        finally:
            self.line_drops.update(stream.dropped)
            stream.close()
        if have:
            yield pa.Table.from_batches(pending)

    def read_all(self, out: _Collected, progress: Callable[[int], None] | None) -> LoadReport:
        """Read the whole file into ``out``; returns the finished report."""
        for table in self.chunks():
            self.process(table, out)
            if progress is not None:
                progress(table.num_rows)
        rep = self.report
        for reason, n in self.line_drops.items():
            rep.dropped[reason] += n
            rep.rows_read += n
        if rep.rows_read == 0:
            raise InputError(f"{self.info.path}: header only, 0 data rows")
        rep.label_counts = dict(sorted(rep.label_counts.items(), key=lambda kv: (-kv[1], kv[0])))
        rep.family_counts = dict(sorted(rep.family_counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return rep

    # -- one chunk ---------------------------------------------------------------------------------

    def process(self, table: pa.Table, out: _Collected) -> None:
        """Parse, check, deduplicate and collect one chunk; update the report."""
        chunk = self._labels(table)
        self._features(table, chunk)
        self._metadata(table, chunk)
        reason = self._reasons(chunk)
        seq = np.arange(self.parsed_rows, self.parsed_rows + chunk.n, dtype=np.int64) + self.seq0
        self.parsed_rows += chunk.n
        self._collect(chunk, reason, seq, out)

    def _labels(self, table: pa.Table) -> _Chunk:
        if LABEL not in self.src:  # a file without a Label column (labels="optional")
            return _Chunk(n=table.num_rows, classes=[], idx=np.full(table.num_rows, -1, dtype=np.int64))
        enc = pc.dictionary_encode(table.column(self.src[LABEL])).combine_chunks()
        # -1 (an empty cell) picks the trailing "missing" entry of the per-value tables.
        idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        classes: list = []
        unknown = np.zeros(len(enc.dictionary) + 1, dtype=bool)
        counts = np.bincount(idx[idx >= 0], minlength=len(enc.dictionary))
        for k, raw in enumerate(enc.dictionary.to_pylist()):
            try:
                classes.append(self.labels.classify(raw))
            except ValueError:
                classes.append(None)
                unknown[k] = True
                words = self.report.unknown_labels
                word = decode(raw)[:80]
                if word in words or len(words) < _MAX_UNKNOWN_WORDS:
                    words[word] = words.get(word, 0) + int(counts[k])
        chunk = _Chunk(n=table.num_rows, classes=classes, idx=idx)
        if self.label_mode == "required":
            chunk.flag(
                "missing label", ~np.array([c is not None for c in classes] + [False])[idx] & ~unknown[idx]
            )
            chunk.flag("unknown label", unknown[idx])
        return chunk

    def _features(self, table: pa.Table, chunk: _Chunk) -> None:
        n = chunk.n
        chunk.x32 = np.empty((len(FEATURES), n), dtype=np.float32)
        chunk.h = np.zeros(n, dtype=np.uint64) if self.dedup is not None else None
        bad, missing, nonfinite = (np.zeros(n, dtype=bool) for _ in range(3))
        # Only a column read twice (engelen2021's single Fwd Header Length) is kept parsed; the
        # others go out of scope at once, so a chunk never holds all 78 float64 columns.
        parsed: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for j, feat in enumerate(FEATURES):
            col = self.src[feat]
            if col in parsed:
                values, miss, junk = parsed[col]
            else:
                values, miss, junk = parse_numeric(table.column(col))
                if col in self.reused:
                    parsed[col] = (values, miss, junk)
            bad |= junk
            missing |= miss
            chunk.x32[j] = values
            if feat not in _RATE_FEATURES:
                nonfinite |= ~np.isfinite(chunk.x32[j])  # also catches overflow past float32
            if chunk.h is not None:
                chunk.mix(pd.util.hash_array(values + 0.0))  # + 0.0 folds -0.0 into 0.0
        chunk.flag("non-numeric value", bad)
        chunk.flag("missing value", missing)
        chunk.flag("non-finite value", nonfinite)

    def _metadata(self, table: pa.Table, chunk: _Chunk) -> None:
        n = chunk.n
        if self.meta_present is None:
            # A TrafficLabelling file written from a frame without metadata has those columns
            # empty: they count as absent. Decided on the first chunk, checked on the others.
            self.meta_present = {m: table.column(self.src[m]).null_count < n for m in META if m in self.src}
            self.meta_present["dst_port"] = True
        for m, present in self.meta_present.items():
            if not present and table.column(self.src[m]).null_count < n:
                name = self.info.header[int(self.src[m][1:])]
                raise InputError(
                    f"{self.info.path}: column {name!r} is empty in the first "
                    f"{self.chunk_rows} rows but not later; fill or empty it throughout"
                )
        ports = {"dst_port": chunk.features[FEATURES.index("Destination Port")].astype(np.float64)}
        for m in _NUMERIC_META:
            if self.meta_present.get(m):
                values, miss, junk = parse_numeric(table.column(self.src[m]))
                chunk.flag("non-numeric value", junk)
                chunk.flag("missing value", miss)
                if chunk.h is not None:
                    chunk.mix(pd.util.hash_array(values + 0.0))
                ports[m] = values
        for m, values in ports.items():
            ok = np.isfinite(values) & (values == np.floor(values)) & (values >= 0) & (values <= _PORT_MAX[m])
            chunk.flag("invalid port or protocol", ~ok)
            chunk.meta[m] = np.where(ok, values, 0).astype(_META_DTYPES[m])
        for m in _STRING_META:
            if self.meta_present.get(m):
                text = pc.fill_null(decode_text(table.column(self.src[m])), "")
                if chunk.h is not None:
                    chunk.mix(hash_strings(text))
                chunk.meta[m] = text
        if self.meta_present.get("timestamp"):
            ts = parse_timestamps(decode_text(table.column(self.src["timestamp"])), self.ts_order)
            chunk.flag("unparseable timestamp", np.isnat(ts))
            chunk.flag("timestamp out of range", out_of_range(ts))
            if chunk.h is not None:
                chunk.mix(pd.util.hash_array(ts.view(np.int64)))
            chunk.meta["timestamp"] = ts

    def _reasons(self, chunk: _Chunk) -> np.ndarray:
        """(n,) int8: 0 to keep the row, else 1 + the index of its reason in DROP_REASONS."""
        reason = np.zeros(chunk.n, dtype=np.int8)
        for k in range(len(DROP_REASONS) - 1, -1, -1):  # the first reason in the list wins
            mask = chunk.masks.get(DROP_REASONS[k])
            if mask is not None:
                reason[mask] = k + 1
        attempted = np.array([bool(c and c[4]) for c in chunk.classes] + [False])[chunk.idx]
        if self.attempted == "drop":
            reason[(reason == 0) & attempted] = DROP_REASONS.index("attempted attack") + 1
        if self.dedup is not None:
            # The label as read (before the attempted mapping), so the mode does not change dedup.
            words = np.array([c[1] if c else "" for c in chunk.classes] + [""], dtype=object)
            chunk.mix(pd.util.hash_array(words)[chunk.idx])
            live = np.flatnonzero(reason == 0)
            fresh = self.dedup.new_mask(pd.util.hash_array(chunk.hashes[live]))
            reason[live[~fresh]] = DROP_REASONS.index("duplicate") + 1
        return reason

    def _collect(self, chunk: _Chunk, reason: np.ndarray, seq: np.ndarray, out: _Collected) -> None:
        rep = self.report
        rep.rows_read += chunk.n
        counts = np.bincount(reason, minlength=len(DROP_REASONS) + 1)
        for k, name in enumerate(DROP_REASONS):
            rep.dropped[name] += int(counts[k + 1])
        keep = np.flatnonzero(reason == 0)
        k = len(keep)
        rep.rows_kept += k
        for m in META:
            if m not in chunk.meta:
                out.absent.add(m)
        if not k:
            return

        feats = chunk.features[:, keep]
        for rate in _RATE_FEATURES:
            j = FEATURES.index(rate)
            fix = ~np.isfinite(feats[j])
            rep.repaired[REPAIR_RATES] += int(fix.sum())
            feats[j, fix] = 0.0
        for key, feat in (
            (REPAIR_INIT_WIN_FWD, "Init_Win_bytes_forward"),
            (REPAIR_INIT_WIN_BWD, "Init_Win_bytes_backward"),
        ):
            rep.repaired[key] += int((feats[FEATURES.index(feat)] == -1).sum())
        out.features[out.n : out.n + k] = feats.T
        out.n += k
        out.seq.append(seq[keep])
        keep_arrow = pa.array(keep)
        for m, values in chunk.meta.items():
            if m not in out.absent:
                out.meta[m].append(
                    pc.take(values, keep_arrow) if isinstance(values, pa.ChunkedArray) else values[keep]
                )

        # Rows without a known label get the code of ("", ""): only kept with labels="optional".
        blank = out.vocab.setdefault(("", ""), len(out.vocab))
        codes = np.full(len(chunk.classes) + 1, blank, dtype=np.int32)
        for i, c in enumerate(chunk.classes):
            if c is not None:
                codes[i] = out.vocab.setdefault((c[2], c[3]), len(out.vocab))
        kept_codes = codes[chunk.idx[keep]]
        out.label_codes.append(kept_codes)
        names = {code: key for key, code in out.vocab.items()}
        for code, count in zip(*np.unique(kept_codes, return_counts=True)):
            label, family = names[int(code)]
            if not label:
                rep.unlabelled += int(count)
                continue
            rep.label_counts[label] = rep.label_counts.get(label, 0) + int(count)
            rep.family_counts[family] = rep.family_counts.get(family, 0) + int(count)


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
    if attempted not in ATTEMPTED_MODES:
        raise ValueError(f"attempted must be one of {ATTEMPTED_MODES}, not {attempted!r}")
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, not {chunk_rows}")
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, not {labels!r}")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise InputError("no input files given")
    infos = [inspect_file(Path(p), labels) for p in paths]  # all headers checked before the long read

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
            chunk_rows=int(chunk_rows),
            seq0=seq0,
            label_mode=labels,
        )
        rep = reader.read_all(out, progress)
        reports.append(rep)
        seq0 += reader.parsed_rows
    return LoadResult(frame=_assemble(out), reports=reports)


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
