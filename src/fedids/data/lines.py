"""Line-level cleaning in front of Arrow's CSV parser, so that one bad line never costs another row.

Arrow's parser has three failure modes that lose or refuse a whole file: an unmatched ``"`` opens a quoted
field that swallows every following line (one row with a huge cell, the rest of the file gone), and a
line longer than the parse block aborts the read ("straddles two block boundaries"), and a CR inside a
line ends a row there (one line, two bad rows). And a repeated
header line (``cat a.csv b.csv``) reads as a row of garbage. :class:`CleanLines` is a read-only binary
stream over the file that removes such lines before Arrow sees them and counts each under a reason
(:data:`LINE_REASONS`); the loader parses with quoting off, so a line can never span two.

A line with the wrong number of fields is a malformed row here too (Arrow's own handler for invalid rows
fails on bytes that are not UTF-8). Lines that hold a ``"`` are rare in flow files (CICIDS2017 never quotes); each is parsed with Python's
``csv`` module: a well-formed quoted line is re-emitted unquoted (when no field needs quoting), anything
else (an unmatched quote, a quoted comma) is a malformed row. Everything else passes through untouched,
block by block, with vectorised checks (newline positions with numpy), so the common case costs one
``numpy`` scan per 8 MiB.
"""

from __future__ import annotations

import csv
import io
from collections import Counter

import numpy as np

MAX_LINE_BYTES = 1 << 16
"""Longest data line accepted (64 KiB; a CICIDS2017 row is under 2 KiB): longer lines are counted as
``oversized line`` and skipped, whatever their content."""

LINE_MALFORMED, LINE_HEADER, LINE_OVERSIZED = "malformed row", "repeated header", "oversized line"
LINE_REASONS: tuple[str, ...] = (LINE_MALFORMED, LINE_HEADER, LINE_OVERSIZED)

_READ_BYTES = 8 << 20
_NL, _CR, _QUOTE, _COMMA = 10, 13, 34, 44


class CleanLines(io.RawIOBase):
    """A binary stream of the data lines of ``path`` (header line skipped) without bad lines.

    Parameters
    ----------
    path : the CSV file.
    header : the header line as in the file (without its line break); identical lines later in the
        file are counted as ``repeated header``.
    n_fields : fields per row, to check re-emitted quoted lines.

    Attributes
    ----------
    dropped : Counter of reason -> lines removed.
    """

    def __init__(self, path, header: bytes, n_fields: int) -> None:  # noqa: ANN001 - str or Path
        super().__init__()
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._header = header.rstrip(b"\r")
        self._n_fields = n_fields
        self._carry = b""  # start of a line whose end is in a later block
        self._skipping = False  # inside an oversized line: drop bytes up to the next newline
        self._out = memoryview(b"")
        self._eof = False
        self.dropped: Counter = Counter()
        self._fh.readline()  # the header

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - writable buffer
        while not len(self._out) and not self._eof:
            self._out = memoryview(self._next_block())
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()

    def _next_block(self) -> bytes:
        raw = self._fh.read(_READ_BYTES)
        if not raw:
            self._eof = True
            tail, self._carry = self._carry, b""
            if self._skipping:
                self._skipping = False
                return b""
            return self.clean(tail + b"\n") if tail.strip() else b""
        if self._skipping:
            end = raw.find(b"\n")
            if end < 0:
                return b""
            self._skipping = False
            raw = raw[end + 1 :]
        data = self._carry + raw
        cut = data.rfind(b"\n") + 1
        self._carry = data[cut:]
        if len(self._carry) > MAX_LINE_BYTES:
            self.dropped[LINE_OVERSIZED] += 1
            self._carry, self._skipping = b"", True
        return self.clean(data[:cut])

    def clean(self, block: bytes) -> bytes:
        """``block`` (whole lines, each ending with a newline) without its bad lines; quoted lines
        rewritten unquoted."""
        if not block:
            return block
        arr = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(arr == _NL)
        starts = np.concatenate([[0], ends[:-1] + 1])
        bad: dict[int, bytes | None] = {}  # line index -> replacement (None: drop)
        for i in np.flatnonzero(ends - starts > MAX_LINE_BYTES):
            bad[int(i)] = None
            self.dropped[LINE_OVERSIZED] += 1
        # A CR inside a line would make Arrow see two rows: the line is malformed (a CR before the LF is fine).
        cr = np.flatnonzero(arr == _CR)
        for i in np.unique(np.searchsorted(ends, cr[arr[np.minimum(cr + 1, len(arr) - 1)] != _NL])):
            if int(i) not in bad:
                bad[int(i)] = None
                self.dropped[LINE_MALFORMED] += 1
        quotes = np.flatnonzero(arr == _QUOTE)
        for i in np.unique(np.searchsorted(ends, quotes)):
            if int(i) not in bad:
                bad[int(i)] = self._unquote(block[starts[i] : ends[i]])
        # Wrong field count (quoting is off, so commas count fields): counted here, because Arrow's handler
        # for invalid rows fails on rows that are not UTF-8.
        commas = np.bincount(np.searchsorted(ends, np.flatnonzero(arr == _COMMA)), minlength=len(ends))
        length = ends - starts - (arr[np.maximum(ends - 1, 0)] == _CR)
        for i in np.flatnonzero((commas != self._n_fields - 1) & (length > 0)):
            if int(i) not in bad:
                bad[int(i)] = None
                self.dropped[LINE_MALFORMED] += 1
        pos = block.find(self._header)
        while pos >= 0:
            row = int(np.searchsorted(ends, pos))
            if starts[row] == pos and block[pos : ends[row]].rstrip(b"\r") == self._header and row not in bad:
                bad[row] = None
                self.dropped[LINE_HEADER] += 1
            pos = block.find(self._header, pos + 1)
        if not bad:
            return block
        parts, prev = [], 0
        for row, fixed in sorted(bad.items()):
            parts.append(block[prev : starts[row]])
            if fixed is not None:
                parts.append(fixed + b"\n")
            prev = int(ends[row]) + 1
        parts.append(block[prev:])
        return b"".join(parts)

    def _unquote(self, line: bytes) -> bytes | None:
        text = line.rstrip(b"\r").decode("latin-1")  # byte-preserving
        try:
            rows = list(csv.reader([text], strict=True))
        except csv.Error:
            rows = []
        if (
            len(rows) != 1
            or len(rows[0]) != self._n_fields
            or any(("," in f or '"' in f or "\n" in f) for f in rows[0])
        ):
            self.dropped[LINE_MALFORMED] += 1
            return None
        return ",".join(rows[0]).encode("latin-1")
