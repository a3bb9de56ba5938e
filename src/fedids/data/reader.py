"""Reading one CICIDS2017 CSV file in chunks (:class:`_FileReader`) into the rows kept of all files
(:class:`_Collected`): streaming through :class:`~fedids.data.lines.CleanLines` and
:func:`pyarrow.csv.open_csv`, then per chunk parsing, checking (:mod:`fedids.data.cleaning`),
deduplicating and counting in the file's :class:`~fedids.data.load_report.LoadReport`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from fedids.data.cleaning import _Chunk, _Dedup, _Labels
from fedids.data.columns import (
    TIMESTAMP_READ_FORMATS,
    decode,
    decode_text,
    hash_strings,
    out_of_range,
    parse_numeric,
    parse_timestamps,
)
from fedids.data.headers import FileInfo, sources
from fedids.data.lines import LINE_MALFORMED, CleanLines
from fedids.data.load_report import (
    DROP_REASONS,
    REPAIR_INIT_WIN_BWD,
    REPAIR_INIT_WIN_FWD,
    REPAIR_RATES,
    LoadReport,
)
from fedids.data.schema import FEATURES, LABEL, META
from fedids.errors import InputError

_MAX_UNKNOWN_WORDS = 20  # distinct unknown Label words recorded per report
_RATE_FEATURES = ("Flow Bytes/s", "Flow Packets/s")
_BLOCK_BYTES = 2 << 20  # pyarrow parse block; small blocks measured faster here than 16-64 MiB
_PORT_MAX = {"src_port": 65535, "dst_port": 65535, "protocol": 255}
_META_DTYPES = {"src_port": np.int32, "dst_port": np.int32, "protocol": np.int16}
_STRING_META = ("flow_id", "src_ip", "dst_ip")
_NUMERIC_META = ("src_port", "protocol")


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
