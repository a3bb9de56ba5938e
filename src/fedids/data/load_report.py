"""What happened to each input file of :func:`fedids.data.loader.load_flows`: the reasons a row is
dropped, the repairs made to kept rows, and the per-file :class:`LoadReport` that counts both."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
