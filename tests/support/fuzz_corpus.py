"""The fuzz corpus: hypothesis strategies and hand-made bad inputs, generated at test time (nothing binary is
committed). Shared by tests/test_fuzz_inputs.py (in-process, many cases) and tests/cli/test_fuzz_cli.py
(real `fedids` processes, a few dozen representative cases).

Every generator starts from the real CICIDS2017 samples in ../shared/data, so a mutated file is a real file
with one realistic fault, not noise a header check rejects at once.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

from hypothesis import strategies as st

from support import paths

SHARED = paths.SHARED_DATA
DATA, PCAPS = paths.CICIDS, paths.PCAPS
SQLI = DATA / "trafficlabelling-mondirkb" / "baseline_sqli.csv"
PORTSCAN = DATA / "trafficlabelling-mondirkb" / "baseline_portscan.csv"
BENIGN_TL = DATA / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv"
MLCVE = DATA / "machinelearningcve-paris-svg" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv"
NMAP = PCAPS / "esnet_nmap_80_all.pcap"


def csv_lines(path: Path, rows: int | None = None) -> tuple[bytes, list[bytes]]:
    """Header line and data lines (without line breaks) of a real CSV."""
    head, _, rest = path.read_bytes().partition(b"\n")
    lines = rest.splitlines()
    return head.rstrip(b"\r"), lines[:rows] if rows else lines


def rows_in(data: bytes) -> int:
    """Data rows a CSV holds as a person would count them: non-empty lines after the first (a line
    break may be CRLF)."""
    lines = data.split(b"\n")[1:]
    return sum(1 for line in lines if (line[:-1] if line.endswith(b"\r") else line))


def set_cell(header: bytes, line: bytes, column: str, value: bytes) -> bytes:
    names = [c.strip() for c in header.decode().split(",")]
    cells = line.split(b",")
    cells[names.index(column)] = value
    return b",".join(cells)


# ---- hand-made CSV faults ----------------------------------------------------------------------------


def unlabelled_csv(path: Path = BENIGN_TL) -> bytes:
    """A CICIDS2017 CSV whose Label cells are empty: what a user's own flow meter writes."""
    head, lines = csv_lines(path)
    return b"\n".join([head, *(line[: line.rfind(b",") + 1] for line in lines)]) + b"\n"


def csv_without_label_column(path: Path = BENIGN_TL) -> bytes:
    head, lines = csv_lines(path)
    return b"\n".join([head[: head.rfind(b",")], *(line[: line.rfind(b",")] for line in lines)]) + b"\n"


def csv_with_every_row_fault(path: Path = PORTSCAN, rows: int = 300) -> bytes:
    """One file, many bad rows: an unmatched quote, a repeated header, a 2 MB cell, an unknown label, NUL and
    CR bytes, a short row, a bare-CR line, an out-of-range timestamp, a huge number; CRLF line ends."""
    head, lines = csv_lines(path, rows)
    lines = list(lines)
    lines[10] = lines[10].replace(b",PortScan", b',"PortScan')
    lines[20] = set_cell(head, lines[20], "Label", b"Ransomware")
    lines[30] = lines[30][:40] + b"\x00\x00" + lines[30][40:]
    lines[40] = lines[40][:60] + b"\r" + lines[40][60:]
    lines[50] = b"1,2,3"
    lines[60] = set_cell(head, lines[60], "Timestamp", b"1/1/9999 3:56")
    lines[70] = set_cell(head, lines[70], "Flow Duration", b"9" * 5000)
    lines[80] = set_cell(head, lines[80], "Flow Duration", b"9" * (2 << 20))
    body = [*lines[:100], head, *lines[100:200], head, *lines[200:]]
    return b"\r\n".join([head, *body]) + b"\r\n"


def compressed(data: bytes) -> bytes:
    return gzip.compress(data)


# ---- stdin -------------------------------------------------------------------------------------------


def json_flow(values: dict | None = None) -> dict:
    """One JSON flow: a real PortScan row's 78 features, plus overrides."""
    from fedids.data.loader import load_flows
    from fedids.data.schema import FEATURES

    row = load_flows([PORTSCAN], drop_duplicates=False).frame.iloc[0]
    flow = {f: float(row[f]) for f in FEATURES}
    flow.update(
        src_ip="10.0.0.1", dst_ip="10.0.0.2", src_port=1234, protocol=6, timestamp="2017-07-07T15:56:00"
    )
    flow.update(values or {})
    return flow


def bad_json_lines() -> list[bytes]:
    """Lines that once killed a running detector (issue 15), and more."""
    good = json_flow()
    big = json.dumps(good).replace('"Flow Duration": ', '"Flow Duration": ' + "9" * 400 + ', "x": ', 1)
    huge = json.dumps(good).replace('"Flow Duration": ', '"Flow Duration": ' + "9" * 5000 + ', "x": ', 1)
    return [
        big.encode(),
        huge.encode(),
        json.dumps(json_flow({"timestamp": 1e20})).encode(),
        json.dumps(json_flow({"timestamp": -1e12})).encode(),
        json.dumps(json_flow({"timestamp": "9999-12-31T23:59:59-05:00"})).encode(),
        json.dumps(json_flow({"timestamp": "0001-01-01T00:00:00+05:00"})).encode(),
        json.dumps(json_flow({"src_port": 10**30, "protocol": -1})).encode(),
        json.dumps(json_flow({"Flow Duration": "NaN", "Flow Bytes/s": "Infinity"})).encode(),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a": 1}\x00\x00',
        b"\r\r\r",
        b"\xff\xfe garbage \x96",
        b"null",
        b"[]",
        b"{}",
        b'"text"',
        b"x" * (200 << 10),
    ]


def first_line_faults() -> dict[str, bytes]:
    """Streams whose first line is what issue 15 listed: NUL or CR bytes, gzip data, a line over 128 KiB;
    and a first line that starts like JSON but is not (a gzip header's bytes once did, by its time stamp)."""
    head, lines = csv_lines(SQLI)
    tail = b"\n".join([head, *lines]) + b"\n"
    return {
        "nul": b"\x00\x00\x00\n" + tail,
        "cr": b"\r\r\r\n\r" + head + b"\r\r\n" + b"\n".join(lines) + b"\n",
        "gzip": gzip.compress(tail, mtime=0) + b"\n" + tail,
        "brace": b"{\x02\xff not json\n" + tail,
        "long": b"y" * (130 << 10) + b"\n" + tail,
    }


# ---- captures ----------------------------------------------------------------------------------------


def pcap_to_pcapng(data: bytes) -> bytes:
    """The packets of a classic little-endian pcap as pcapng (SHB, IDB, one EPB per packet)."""
    magic, _, _, _, _, snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4, "little-endian microsecond pcap expected"

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = [
        block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
        block(1, struct.pack("<HHI", linktype, 0, snaplen)),
    ]
    pos = 24
    while pos + 16 <= len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[pos : pos + 16])
        stamp = sec * 1_000_000 + usec
        out.append(
            block(
                6,
                struct.pack("<IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, incl, orig)
                + data[pos + 16 : pos + 16 + incl],
            )
        )
        pos += 16 + incl
    return b"".join(out)


def corrupt(data: bytes, seed: int, flips: int = 40) -> bytes:
    """``data`` with ``flips`` bytes overwritten at pseudo-random places past the file header."""
    import random

    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(flips):
        out[rng.randrange(24, len(out))] = rng.randrange(256)
    return bytes(out)


# ---- hypothesis strategies ---------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.sampled_from([0, -1, -3, 10**6, 2**63, float("nan")]),
)

LINE_FAULTS = st.sampled_from(
    [
        b'"',
        b'""',
        b",",
        b"\x00",
        b"\r",
        b"\xff\x96",
        b"Infinity",
        b"-1",
        b"9" * 400,
        b"1e309",
        b"",
        b"Web Attack \x96 XSS",
        b"Ransomware",
        b"2017-07-07 15:56:00",
        b"7/7/2017 3:56 PM",
        b"\n",
    ]
)


@st.composite
def mutated_csv(draw, path: Path = SQLI) -> bytes:
    """A real CSV with a few faults: bytes inserted, lines duplicated (the header among them), the file cut
    at any offset."""
    head, lines = csv_lines(path)
    lines = list(lines)
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(LINE_FAULTS) + lines[i][at:]
        elif kind == 1:
            lines.insert(i, head)
        elif kind == 2:
            lines.insert(i, draw(st.binary(max_size=200)).replace(b"\n", b""))
        else:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
    data = b"\n".join([head, *lines]) + b"\n"
    cut = draw(st.one_of(st.just(len(data)), st.integers(len(head) + 1, len(data))))
    return data[:cut]


STDIN_LINES = st.lists(
    st.one_of(
        st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
        st.text(max_size=200).map(lambda s: s.replace("\n", "").encode()),
        LINE_FAULTS.map(lambda b: b.replace(b"\n", b"")),
    ),
    max_size=12,
)
