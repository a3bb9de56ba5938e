"""Where the detector's flows come from: CSV files, stdin, pcap files and live interfaces.

Every source yields canonical flow frames (:mod:`fedids.data.schema`), one per read batch, and counts
what it had to skip in ``bad`` (reason -> count), reporting each problem through a callback (the
command line prints them on stderr). A bad row, line or packet never stops a source, and never costs
another flow.

* **CSV file**: any CICIDS2017 format, read by :func:`fedids.data.loader.load_flows` (no duplicate
  removal: a detector scores every flow), ordered by time like ``fedids evaluate`` does, and handed on
  in batches. Rows the loader drops are counted under its reasons.
* **stdin** (``-``): processed as it arrives. Each read returns what the pipe holds (up to 64 KiB);
  the complete lines of that read are one batch. The first non-empty line decides the format: ``{``
  starts JSON lines (one object per flow: the 78 canonical feature names, plus optional ``flow_id``,
  ``src_ip``, ``src_port``, ``dst_ip``, ``dst_port``, ``protocol``, ``timestamp`` as ISO 8601 text or
  Unix seconds); anything else must be a CICIDS2017 CSV header (any of the loader's three formats;
  ``Label`` optional), and CSV rows follow. A line that does not parse is counted and skipped.
* **pcap/pcapng file** and **live interface**: :func:`fedids.detect.extractor.extract_pcap` and
  :func:`~fedids.detect.extractor.capture_interface`. A truncated capture yields the flows of its
  complete packets and is counted once (``truncated capture``); malformed packets are counted.

Value rules for stdin rows, as the loader's: an empty cell is ``missing value``, text that is not a
number ``non-numeric value``; Infinity/NaN in ``Flow Bytes/s`` or ``Flow Packets/s`` becomes 0 (what
CICFlowMeter writes for zero-duration flows), elsewhere it is ``non-finite value``; ports must be
integers in 0..65535 and protocol in 0..255.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from fedids.data.columns import TIMESTAMP_MAX, TIMESTAMP_MIN
from fedids.data.formats import (
    ENGELEN2021_META,
    ENGELEN2021_SOURCES,
    FORMAT_ENGELEN2021,
    FORMAT_TRAFFICLABELLING,
    TRAFFICLABELLING_META,
)
from fedids.data.lines import MAX_LINE_BYTES
from fedids.data.schema import FEATURES, META, SEQ
from fedids.data.windows import sort_by_time
from fedids.errors import InputError

DEFAULT_BATCH_ROWS = 4096
READ_BYTES = 1 << 16
MAX_INTEGER = 2**63 - 1
"""Largest integer accepted in a JSON flow (larger: ``number out of range``)."""
_EPOCH_MIN, _EPOCH_MAX = 0, int((TIMESTAMP_MAX - TIMESTAMP_MIN) / np.timedelta64(1, "s"))
_STAMP_MIN = dt.datetime(1970, 1, 1)
_STAMP_MAX = dt.datetime(2100, 1, 1)
PCAP_SUFFIXES = (".pcap", ".pcapng", ".cap")
_RATES = frozenset({"Flow Bytes/s", "Flow Packets/s"})
_INT_LIMITS = {"src_port": 65535, "dst_port": 65535, "protocol": 255}
# Same spellings as fedids.data.loader.TIMESTAMP_READ_FORMATS, for Python's strptime.
_TIMESTAMP_FORMATS = ("%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S.%f", "%d/%m/%Y %I:%M:%S %p")

Reporter = Callable[[str], None]


@dataclass
class SourceStats:
    """What a source read and skipped. ``bad`` maps a reason to the number of rows/lines/packets
    skipped for it; ``packets`` and ``extract_seconds`` are filled by pcap sources."""

    flows: int = 0
    bad: Counter = field(default_factory=Counter)
    packets: int = 0
    extract_seconds: float = 0.0


class FlowSource:
    """Base class: iterate :meth:`batches` for canonical flow frames; :attr:`stats` counts."""

    name = "source"

    def __init__(self, report: Reporter | None = None) -> None:
        self.stats = SourceStats()
        self._report = report or (lambda _msg: None)

    def batches(self) -> Iterator[pd.DataFrame]:
        raise NotImplementedError

    def _skip(self, reason: str, where: str, detail: str = "") -> None:
        self.stats.bad[reason] += 1
        self._report(f"{where}: {reason}{f' ({detail})' if detail else ''}; skipped")


def _chunks(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    for lo in range(0, len(frame), rows):
        yield frame.iloc[lo : lo + rows]


class CsvFileSource(FlowSource):
    """A CICIDS2017 CSV file, through the shared loader, in time order."""

    def __init__(
        self, path: str | Path, *, batch_rows: int = DEFAULT_BATCH_ROWS, report: Reporter | None = None
    ) -> None:
        super().__init__(report)
        self.path, self.name, self.batch_rows = Path(path), str(path), batch_rows

    def batches(self) -> Iterator[pd.DataFrame]:
        from fedids.data.loader import load_flows

        result = load_flows([self.path], drop_duplicates=False, labels="optional")
        for rep in result.reports:
            for reason, n in rep.dropped.items():
                if n:
                    self.stats.bad[reason] += n
                    self._report(f"{rep.path}: {n:,} rows skipped ({reason})")
        frame = sort_by_time(result.frame)
        self.stats.flows = len(frame)
        yield from _chunks(frame, self.batch_rows)


class PcapSource(FlowSource):
    """A pcap/pcapng capture, turned into flows by the extractor."""

    def __init__(
        self,
        path: str | Path,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        report: Reporter | None = None,
        **extract_options: Any,
    ) -> None:
        super().__init__(report)
        self.path, self.name, self.batch_rows = Path(path), str(path), batch_rows
        self.options = extract_options

    def batches(self) -> Iterator[pd.DataFrame]:
        from fedids.detect.extractor import extract_pcap

        result = extract_pcap(self.path, **self.options)
        self.stats.packets = int(result.packets or 0)
        self.stats.extract_seconds = float(result.seconds)
        self.stats.flows = int(result.flows)
        for line in result.warnings:
            self._report(line)
        if result.truncated:
            self.stats.bad["truncated capture"] += 1
        if result.skipped.get("malformed"):
            self.stats.bad["malformed packet"] += int(result.skipped["malformed"])
        yield from _chunks(result.frame, self.batch_rows)


class InterfaceSource(FlowSource):
    """Live capture on a network interface (needs CAP_NET_RAW), batches as flows end."""

    def __init__(self, interface: str, *, report: Reporter | None = None, **capture_options: Any) -> None:
        super().__init__(report)
        self.interface, self.name = interface, f"interface {interface}"
        self.options = {"duration_s": None, "packet_count": None, **capture_options}

    def batches(self) -> Iterator[pd.DataFrame]:
        from fedids.detect.extractor import capture_interface

        for frame in capture_interface(self.interface, **self.options):
            self.stats.flows += len(frame)
            yield frame


# --------------------------------------------------------------------------------------------------
# stdin: CSV or JSON lines


class _BadRow(Exception):
    """A line that cannot become a flow: ``reason`` (counted) and ``detail`` (reported, may be empty)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _normalise_header(fields: list[str]) -> list[str]:
    """Strip spaces and a BOM; a repeated name becomes ``name.1`` (the originals' second
    ``Fwd Header Length``), as the loader and pandas name it."""
    seen: Counter = Counter()
    out = []
    for raw in fields:
        name = raw.strip().lstrip("\ufeff").strip()
        out.append(f"{name}.{seen[name]}" if seen[name] else name)
        seen[name] += 1
    return out


def _number(text: Any, feature: str) -> float:
    if isinstance(text, bool) or text is None:
        raise _BadRow("missing value" if text is None else "non-numeric value", feature)
    if isinstance(text, int):
        if abs(text) > MAX_INTEGER:
            raise _BadRow("number out of range", f"{feature}: an integer of {len(str(abs(text)))} digits")
        value = float(text)
    elif isinstance(text, float):
        value = text
    else:
        text = str(text).strip()
        if not text:
            raise _BadRow("missing value", feature)
        try:
            value = float(text)
        except ValueError:
            raise _BadRow("non-numeric value", f"{feature} = {text[:40]!r}") from None
    if not math.isfinite(value):
        if feature in _RATES:
            return 0.0
        raise _BadRow("non-finite value", feature)
    return value


def _integer(text: Any, name: str) -> int:
    value = _number(text, name)
    if not value.is_integer() or not 0 <= value <= _INT_LIMITS[name]:
        raise _BadRow("invalid port or protocol", f"{name} = {value:g}")
    return int(value)


def _timestamp(value: Any) -> dt.datetime:
    """Naive datetime (UTC when the text has an offset), from the CICIDS2017 spellings, ISO 8601 or
    Unix seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _BadRow("unparseable timestamp")
        if not _EPOCH_MIN <= value < _EPOCH_MAX:
            raise _BadRow("timestamp out of range", f"{value:.6g} s")
        return dt.datetime.fromtimestamp(value, dt.UTC).replace(tzinfo=None)
    text = str(value).strip()
    if not text:
        raise _BadRow("missing value", "timestamp")
    for fmt in _TIMESTAMP_FORMATS:
        try:
            return _in_range(dt.datetime.strptime(text, fmt))
        except ValueError:
            continue
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if stamp.tzinfo:
            stamp = stamp.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # year 9999 plus an offset overflows astimezone
        raise _BadRow("unparseable timestamp", text[:40]) from None
    return _in_range(stamp)


def _in_range(stamp: dt.datetime) -> dt.datetime:
    if not _STAMP_MIN <= stamp < _STAMP_MAX:
        raise _BadRow("timestamp out of range", stamp.isoformat())
    return stamp


class LineParser:
    """Turns stdin lines into canonical flow rows (pure: no I/O). Feed lines with :meth:`parse`."""

    def __init__(self) -> None:
        self.mode: str | None = None  # "json" or "csv", fixed by the first usable line
        self.header: list[str] | None = None
        self._columns: dict[str, int] = {}
        self._meta_columns: dict[str, int] = {}
        self.seq = 0

    def parse(self, lines: list[tuple[int, str]]) -> tuple[pd.DataFrame | None, list[tuple[int, str, str]]]:
        """Parse ``(line_number, text)`` pairs; returns the frame of good rows (None if there are none)
        and ``(line_number, reason, detail)`` for each skipped line."""
        rows: list[tuple[list[float], dict[str, Any]]] = []
        bad: list[tuple[int, str, str]] = []
        for number, text in lines:
            if not text.strip():
                continue
            try:
                if self.mode is None:
                    first = self._start(text)
                    if first is not None:
                        rows.append(first)
                    continue
                rows.append(self._json(text) if self.mode == "json" else self._csv(text))
            except _BadRow as exc:
                bad.append((number, exc.reason, exc.detail))
        return (self._frame(rows) if rows else None), bad

    def _start(self, text: str) -> tuple[list[float], dict[str, Any]] | None:
        """Fix the mode from the first line; returns its row when it is already a JSON flow."""
        text = text.strip("\ufeff\r")
        if text.lstrip().startswith("{"):
            # JSON mode only once a line *is* a JSON flow: a garbage first line that happens to start with
            # "{" (a gzip header's bytes did) must not turn every CSV line after it into "not a JSON object"
            row = self._json(text)
            self.mode = "json"
            return row
        from fedids.data.loader import detect_format

        try:
            header = _normalise_header(next(csv.reader([text]), []))
            fmt = detect_format(header if "Label" in header else [*header, "Label"])
        except (InputError, csv.Error):
            raise _BadRow("neither a JSON flow nor a CICIDS2017 CSV header") from None
        sources = dict(ENGELEN2021_SOURCES) if fmt == FORMAT_ENGELEN2021 else {f: f for f in FEATURES}
        meta_map = (
            ENGELEN2021_META
            if fmt == FORMAT_ENGELEN2021
            else (TRAFFICLABELLING_META if fmt == FORMAT_TRAFFICLABELLING else {})
        )
        position = {name: i for i, name in enumerate(header)}
        self._columns = {feature: position[col] for feature, col in sources.items()}
        self._meta_columns = {meta: position[col] for col, meta in meta_map.items() if col in position}
        self.header = header
        self.mode = "csv"
        return None

    def _csv(self, text: str) -> tuple[list[float], dict[str, Any]]:
        assert self.header is not None
        try:
            cells = next(csv.reader([text]), [])
        except csv.Error:
            raise _BadRow("malformed row") from None
        if len(cells) != len(self.header):
            raise _BadRow("malformed row", f"{len(cells)} fields, header has {len(self.header)}")
        values = [_number(cells[i], f) for f, i in self._columns.items()]
        meta: dict[str, Any] = {}
        for name, i in self._meta_columns.items():
            meta[name] = self._meta_value(name, cells[i])
        meta.setdefault("dst_port", _integer(values[0], "dst_port"))  # Destination Port is a feature
        return values, meta

    def _json(self, text: str) -> tuple[list[float], dict[str, Any]]:
        try:
            obj = json.loads(text)
        except RecursionError:
            raise _BadRow("not a JSON object", "nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
            reason = "number out of range" if "digits" in str(exc) else "not a JSON object"
            raise _BadRow(reason) from None
        if not isinstance(obj, dict):
            raise _BadRow("not a JSON object")
        values = [_number(obj.get(f), f) for f in FEATURES]
        meta = {name: self._meta_value(name, obj[name]) for name in META if obj.get(name) is not None}
        return values, meta

    @staticmethod
    def _meta_value(name: str, value: Any) -> Any:
        if name in _INT_LIMITS:
            return _integer(value, name)
        if name == "timestamp":
            return _timestamp(value)
        return str(value).strip()

    def _frame(self, rows: list[tuple[list[float], dict[str, Any]]]) -> pd.DataFrame:
        frame = pd.DataFrame(np.asarray([r[0] for r in rows], dtype=np.float64), columns=list(FEATURES))
        names = [m for m in META if any(m in r[1] for r in rows)]
        for pos, name in enumerate(names):
            values = [r[1].get(name) for r in rows]
            if name == "timestamp":
                frame.insert(
                    pos, name, pd.to_datetime(pd.Series(values, dtype=object)).astype("datetime64[us]")
                )
            else:
                frame.insert(pos, name, values)
        frame.insert(len(names), SEQ, np.arange(self.seq, self.seq + len(rows), dtype=np.int64))
        self.seq += len(rows)
        return frame


class StdinSource(FlowSource):
    """CSV or JSON lines from a byte stream (stdin), in batches as they arrive.

    Parameters
    ----------
    stream : binary stream; ``read1`` is used where available so that a read returns what is there
        instead of waiting for a full buffer.
    """

    name = "stdin"

    def __init__(self, stream: BinaryIO, *, report: Reporter | None = None) -> None:
        super().__init__(report)
        self.stream = stream
        self.parser = LineParser()
        self._line_no = 0

    def _read(self) -> bytes:
        read1 = getattr(self.stream, "read1", None)
        if read1 is not None:
            return read1(READ_BYTES)
        return os.read(self.stream.fileno(), READ_BYTES)

    def batches(self) -> Iterator[pd.DataFrame]:
        pending = b""
        skipping = False  # inside a line longer than MAX_LINE_BYTES: drop bytes up to its newline
        while True:
            chunk = self._read()
            if chunk:
                if skipping:
                    end = chunk.find(b"\n")
                    if end < 0:
                        continue
                    skipping, chunk = False, chunk[end + 1 :]
                pending += chunk
                *complete, pending = pending.split(b"\n")
                if len(pending) > MAX_LINE_BYTES:
                    self._line_no += 1
                    self._skip(
                        "oversized line", f"stdin line {self._line_no}", f"over {MAX_LINE_BYTES:,} bytes"
                    )
                    pending, skipping = b"", True
            else:
                complete, pending = ([pending] if pending.strip() else []), b""
            frame = self._parse(self._number_lines(complete)) if complete else None
            if frame is not None:
                self.stats.flows += len(frame)
                yield frame
            if not chunk:
                return

    def _number_lines(self, raw_lines: list[bytes]) -> list[tuple[int, str]]:
        """Number and decode lines; oversized and binary lines are counted here and left out."""
        numbered = []
        for raw in raw_lines:
            self._line_no += 1
            where = f"stdin line {self._line_no}"
            if len(raw) > MAX_LINE_BYTES:
                self._skip("oversized line", where, f"over {MAX_LINE_BYTES:,} bytes")
            elif b"\0" in raw:
                self._skip("binary data", where, "NUL bytes")
            else:
                numbered.append((self._line_no, _decode(raw.rstrip(b"\r"))))
        return numbered

    def _parse(self, numbered: list[tuple[int, str]]) -> pd.DataFrame | None:
        frame, bad = self.parser.parse(numbered)
        for number, reason, detail in bad:
            self._skip(reason, f"stdin line {number}", detail)
        return frame


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def open_source(
    input_spec: str | None,
    interface: str | None = None,
    *,
    report: Reporter | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    stdin: BinaryIO | None = None,
    capture_options: dict[str, Any] | None = None,
) -> FlowSource:
    """Pick the source for ``--input`` (a CSV/pcap path or ``-``) or ``--interface``.

    Raises :class:`~fedids.errors.InputError` when neither or both are given, or the file is missing.
    """
    if (input_spec is None) == (interface is None):
        raise InputError("detect: give exactly one of --input SOURCE and --interface NAME")
    if interface is not None:
        return InterfaceSource(interface, report=report, **(capture_options or {}))
    assert input_spec is not None
    if input_spec == "-":
        import sys

        return StdinSource(stdin if stdin is not None else sys.stdin.buffer, report=report)
    path = Path(input_spec)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() in PCAP_SUFFIXES:
        return PcapSource(path, batch_rows=batch_rows, report=report)
    return CsvFileSource(path, batch_rows=batch_rows, report=report)
