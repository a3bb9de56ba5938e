"""Tests of fedids.data.loader on the real CICIDS2017 files in ../shared/data and on small files
built from them. Expected values come from /work/shared/data/README.md and from an independent
pandas reading of the same files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedids.data.formats import write_trafficlabelling_csv
from fedids.data.loader import DROP_REASONS, LoadReport, detect_format, load_flows
from fedids.data.schema import FEATURES, META
from fedids.errors import InputError
from support import paths

DATA = paths.CICIDS
MLCVE = DATA / "machinelearningcve-paris-svg" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv"
MONDIRKB = {
    name: DATA / "trafficlabelling-mondirkb" / f"baseline_{name}.csv"
    for name in ("ddos", "portscan", "sqli", "xss")
}
NETSENTINEL = DATA / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv"
ALL_REAL = [MLCVE, *MONDIRKB.values(), NETSENTINEL]

RATES = ["Flow Bytes/s", "Flow Packets/s"]


def read_with_pandas(path: Path) -> pd.DataFrame:
    """Independent reference: pandas' C parser, correctly rounded floats, stripped headers."""
    df = pd.read_csv(path, encoding="latin-1", float_precision="round_trip", low_memory=False)
    df.columns = [c.strip() for c in df.columns]
    return df


def reference_features(df: pd.DataFrame) -> np.ndarray:
    x = df[list(FEATURES)].to_numpy(dtype=np.float64)
    for rate in RATES:
        j = FEATURES.index(rate)
        x[~np.isfinite(x[:, j]), j] = 0.0
    return x.astype(np.float32)


def dropped(rep: LoadReport) -> dict[str, int]:
    return {k: v for k, v in rep.dropped.items() if v}


# ---- real files ------------------------------------------------------------------------------------


def test_all_real_files_are_present():
    assert all(p.is_file() for p in ALL_REAL), "the shared CICIDS2017 sample files are missing"


def test_machinelearningcve_counts_match_readme_and_pandas():
    result = load_flows([MLCVE])
    rep = result.reports[0]
    assert rep.format == "machinelearningcve"
    assert rep.rows_read == 9998
    assert dropped(rep) == {"duplicate": 73}
    assert rep.rows_kept == 9925 == len(result.frame)
    # 13 Infinity + 1 NaN cells in 7 rows, none of which is a duplicate
    assert rep.repaired["non-finite rate set to 0"] == 14
    assert rep.label_counts == {"BENIGN": 9925}
    assert rep.family_counts == {"benign": 9925}

    ref = read_with_pandas(MLCVE)
    assert len(ref) == 9998 and int(ref.duplicated().sum()) == 73
    kept = ref[~ref.duplicated()]
    for side in ("forward", "backward"):
        column = f"Init_Win_bytes_{side}"
        assert rep.repaired[f"{column} -1 sentinel kept"] == int((kept[column] == -1).sum())

    frame = result.frame
    # MachineLearningCVE has no flow metadata: only dst_port
    assert [c for c in frame.columns if c in META] == ["dst_port"]
    assert frame["seq"].tolist() == np.flatnonzero(~ref.duplicated().to_numpy()).tolist()
    np.testing.assert_array_equal(frame[list(FEATURES)].to_numpy(), reference_features(kept))
    assert (frame[list(FEATURES)].dtypes == np.float32).all()
    assert frame["dst_port"].dtype == np.int32
    assert (frame["dst_port"].to_numpy() == kept["Destination Port"].to_numpy()).all()
    # file line 67 (data row 65) holds Infinity in both rates: now 0
    row = frame.loc[frame["seq"] == 65, RATES].to_numpy()
    assert row.tolist() == [[0.0, 0.0]]


def test_machinelearningcve_without_dedup_matches_readme_counts():
    rep = load_flows([MLCVE], drop_duplicates=False).reports[0]
    assert rep.rows_kept == 9998 and sum(rep.dropped.values()) == 0
    assert rep.repaired["Init_Win_bytes_forward -1 sentinel kept"] == 4634  # README figure
    assert rep.repaired["non-finite rate set to 0"] == 14


@pytest.mark.parametrize(
    "name,rows,label,family",
    [
        ("ddos", 1000, "DDoS", "ddos"),
        ("portscan", 1000, "PortScan", "portscan"),
        ("sqli", 21, "Web Attack - Sql Injection", "webattack"),
        ("xss", 652, "Web Attack - XSS", "webattack"),
    ],
)
def test_mondirkb_trafficlabelling_files(name, rows, label, family):
    path = MONDIRKB[name]
    result = load_flows([path])
    rep = result.reports[0]
    assert rep.format == "trafficlabelling"
    assert (rep.rows_read, rep.rows_kept) == (rows, rows)
    assert dropped(rep) == {}
    assert rep.label_counts == {label: rows} and rep.family_counts == {family: rows}
    frame = result.frame
    assert list(frame.columns[:8]) == [*META, "seq"]
    ref = read_with_pandas(path)
    np.testing.assert_array_equal(frame[list(FEATURES)].to_numpy(), reference_features(ref))
    assert frame["src_port"].tolist() == ref["Source Port"].astype(int).tolist()  # "36196.0" in sqli/xss
    assert frame["protocol"].tolist() == ref["Protocol"].astype(int).tolist()
    assert frame["flow_id"].tolist() == ref["Flow ID"].tolist()
    assert frame["src_ip"].tolist() == ref["Source IP"].tolist()
    dtypes = frame.dtypes
    assert (dtypes["src_port"], dtypes["dst_port"], dtypes["protocol"]) == (np.int32, np.int32, np.int16)
    assert frame["timestamp"].dtype == "datetime64[us]"
    # day-first, minute resolution, kept on the files' own 12-hour clock
    expected = pd.to_datetime(ref["Timestamp"], format="%d/%m/%Y %H:%M").to_numpy(dtype="datetime64[us]")
    np.testing.assert_array_equal(frame["timestamp"].to_numpy(), expected)


def test_mondirkb_first_timestamps_are_day_first():
    frame = load_flows([MONDIRKB["ddos"], MONDIRKB["sqli"]]).frame
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2017-07-07 03:56")
    assert frame["timestamp"].iloc[1000] == pd.Timestamp("2017-07-06 10:40")


def test_netsentinel_trafficlabelling_with_leading_spaces():
    result = load_flows([NETSENTINEL])
    rep = result.reports[0]
    assert rep.format == "trafficlabelling"
    assert (rep.rows_read, rep.rows_kept) == (299, 299)
    assert rep.label_counts == {"BENIGN": 299}
    assert rep.repaired["non-finite rate set to 0"] == 2  # one row, Infinity in both rates
    ref = read_with_pandas(NETSENTINEL)
    np.testing.assert_array_equal(result.frame[list(FEATURES)].to_numpy(), reference_features(ref))
    expected = int((ref["Init_Win_bytes_forward"] == -1).sum())
    assert rep.repaired["Init_Win_bytes_forward -1 sentinel kept"] == expected


def test_several_files_concatenate_with_continuing_seq():
    paths = [*MONDIRKB.values(), NETSENTINEL]
    calls: list[int] = []
    result = load_flows(paths, progress=calls.append)
    assert [r.rows_read for r in result.reports] == [1000, 1000, 21, 652, 299]
    assert [r.path for r in result.reports] == [str(p) for p in paths]
    assert result.frame["seq"].tolist() == list(range(2972))
    assert sum(calls) == 2972
    assert result.frame.index.equals(pd.RangeIndex(2972))
    counts = result.frame["label"].value_counts().to_dict()
    assert counts == {
        "DDoS": 1000,
        "PortScan": 1000,
        "Web Attack - XSS": 652,
        "BENIGN": 299,
        "Web Attack - Sql Injection": 21,
    }


def test_mixed_formats_keep_only_common_metadata():
    frame = load_flows([NETSENTINEL, MLCVE]).frame
    assert [c for c in frame.columns if c in META] == ["dst_port"]
    assert len(frame) == 299 + 9925


def test_same_file_twice_is_all_duplicates_the_second_time():
    result = load_flows([MONDIRKB["sqli"], MONDIRKB["sqli"]])
    assert [r.rows_kept for r in result.reports] == [21, 0]
    assert result.reports[1].dropped["duplicate"] == 21
    assert result.reports[1].label_counts == {}


def test_chunked_reading_gives_the_same_frame_and_reports():
    # 61 of the 73 MachineLearningCVE duplicates have their first copy in an earlier 100-row chunk
    paths = ALL_REAL
    whole = load_flows(paths)
    calls: list[int] = []
    chunked = load_flows(paths, chunk_rows=100, progress=calls.append)
    pd.testing.assert_frame_equal(whole.frame, chunked.frame)
    assert [r.to_dict() for r in whole.reports] == [r.to_dict() for r in chunked.reports]
    assert sum(calls) == sum(r.rows_read for r in whole.reports)
    assert max(calls) == 100 and len(calls) == sum(-(-r.rows_read // 100) for r in whole.reports)


def test_report_accounts_for_every_row_and_serialises():
    for rep in load_flows(ALL_REAL).reports:
        d = rep.to_dict()
        assert set(d["dropped"]) == set(DROP_REASONS)
        assert d["rows_read"] == d["rows_kept"] + sum(d["dropped"].values())
        assert sum(d["label_counts"].values()) == sum(d["family_counts"].values()) == d["rows_kept"]


# ---- files built from real rows ---------------------------------------------------------------------


def _lines(path: Path) -> tuple[bytes, list[bytes]]:
    lines = path.read_bytes().splitlines()
    return lines[0], lines[1:]


def test_three_dash_spellings_and_utf8_en_dash_give_one_label(tmp_path):
    header, rows = _lines(MONDIRKB["sqli"])
    assert b"Web Attack \xc2\x96 Sql Injection" in rows[0]  # U+0096 encoded as UTF-8 in the original
    variants = {
        "u0096": b"Web Attack \xc2\x96 Sql Injection",
        "cp1252": b"Web Attack \x96 Sql Injection",  # raw byte, not valid UTF-8
        "ascii": b"Web Attack - Sql Injection",
        "u2013": "Web Attack \u2013 Sql Injection".encode(),
    }
    paths = []
    for i, (name, label) in enumerate(variants.items()):
        path = tmp_path / f"{name}.csv"
        body = [r.replace(b"Web Attack \xc2\x96 Sql Injection", label) for r in rows[i * 5 : (i + 1) * 5]]
        path.write_bytes(b"\n".join([header, *body]) + b"\n")
        paths.append(path)
    result = load_flows(paths)
    assert [r.label_counts for r in result.reports] == [{"Web Attack - Sql Injection": 5}] * 4
    assert set(result.frame["label"]) == {"Web Attack - Sql Injection"}
    assert set(result.frame["family"]) == {"webattack"}


def test_quirks_are_dropped_or_repaired_with_reasons(tmp_path):
    header, rows = _lines(MONDIRKB["ddos"])
    names = [c.strip() for c in header.decode().split(",")]

    def edit(row: bytes, column: str, value: str) -> bytes:
        cells = row.decode().split(",")
        cells[names.index(column)] = value
        return ",".join(cells).encode()

    body = [
        edit(rows[0], "Flow Duration", "12x4"),  # non-numeric value
        edit(rows[1], "Label", ""),  # missing label
        b"," * (len(names) - 1),  # an all-empty row as in the originals
        edit(rows[2], "Flow IAT Mean", ""),  # missing value
        edit(rows[3], "Flow IAT Max", "Infinity"),  # non-finite outside the rates
        edit(rows[4], "Source Port", "70000"),  # invalid port
        edit(rows[5], "Timestamp", "31/31/2017 3:56"),  # unparseable timestamp
        edit(rows[6], "Timestamp", "7/7/2017 3:56:41"),  # seconds: fine
        edit(edit(rows[7], "Flow Bytes/s", "Infinity"), "Flow Packets/s", "NaN"),  # repaired
        edit(rows[8], "Init_Win_bytes_forward", "-1"),  # sentinel kept
        rows[9],
        rows[9],  # exact duplicate
        b"1,2,3",  # malformed: wrong number of fields
        rows[10],
    ]
    path = tmp_path / "quirks.csv"
    path.write_bytes(b"\r\n".join([header, *body]) + b"\r\n")
    result = load_flows([path])
    rep = result.reports[0]
    assert rep.rows_read == 14
    assert dropped(rep) == {
        "non-numeric value": 1,
        "missing label": 2,
        "missing value": 1,
        "non-finite value": 1,
        "invalid port or protocol": 1,
        "unparseable timestamp": 1,
        "duplicate": 1,
        "malformed row": 1,
    }
    assert rep.rows_kept == 5 == len(result.frame)
    assert rep.repaired["non-finite rate set to 0"] == 2
    assert rep.repaired["Init_Win_bytes_forward -1 sentinel kept"] == 1
    frame = result.frame
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2017-07-07 03:56:41")
    assert frame.loc[frame["seq"] == 8, RATES].to_numpy().tolist() == [[0.0, 0.0]]
    assert frame.loc[frame["seq"] == 9, "Init_Win_bytes_forward"].tolist() == [-1.0]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("7/7/2017 3:56", "2017-07-07 03:56:00"),  # originals: 12-hour clock, kept as is
        ("07/07/2017 15:56:41", "2017-07-07 15:56:41"),
        ("07/07/2017 15:56:41.000250", "2017-07-07 15:56:41.000250"),  # fedids writer
        ("07/07/2017 03:56:41 PM", "2017-07-07 15:56:41"),  # CICFlowMeter
        ("2017-07-07 15:56:41.123456", "2017-07-07 15:56:41.123456"),  # Engelen re-release
        ("2017-07-07T15:56:41", "2017-07-07 15:56:41"),
    ],
)
def test_timestamp_spellings(tmp_path, text, expected):
    header, rows = _lines(MONDIRKB["ddos"])
    cells = rows[0].decode().split(",")
    cells[6] = text
    path = tmp_path / "ts.csv"
    path.write_bytes(header + b"\n" + ",".join(cells).encode() + b"\n")
    frame = load_flows([path]).frame
    assert frame["timestamp"].tolist() == [pd.Timestamp(expected)]


def test_round_trip_through_trafficlabelling_writer(tmp_path):
    original = load_flows([*MONDIRKB.values(), NETSENTINEL]).frame
    path = write_trafficlabelling_csv(original, tmp_path / "round.csv")
    again = load_flows([path])
    assert again.reports[0].format == "trafficlabelling"
    assert dropped(again.reports[0]) == {}
    # the writer keeps 9 significant digits: enough to give back every float32 exactly
    pd.testing.assert_frame_equal(again.frame.drop(columns="seq"), original.drop(columns="seq"))


def test_round_trip_of_a_frame_without_metadata(tmp_path):
    original = load_flows([MLCVE]).frame
    path = write_trafficlabelling_csv(original, tmp_path / "nometa.csv")  # metadata written empty
    again = load_flows([path]).frame
    assert [c for c in again.columns if c in META] == ["dst_port"]
    pd.testing.assert_frame_equal(again.drop(columns="seq"), original.drop(columns="seq"))


# ---- Engelen et al. 2021 re-release -----------------------------------------------------------------

# Header of the corrected CICIDS2017 CSVs (https://intrusion-detection.distrinet-research.be/CNS2022/),
# as listed in ScubaInstructor/fuh @ 0848498376873b5c9c6db7cdfe10ab7ae95fcb6c, nids-daten/train/README.md
# and written by GintsEngelen/CNS2022_Code, Labelling/CICIDS2017_labelling_fixed_CICFlowMeter.ipynb
# (which also gives the labels used below). No real file of this format is stored here.
ENGELEN_HEADER = (
    "id,Flow ID,Src IP,Src Port,Dst IP,Dst Port,Protocol,Timestamp,Flow Duration,Total Fwd Packet,"
    "Total Bwd packets,Total Length of Fwd Packet,Total Length of Bwd Packet,Fwd Packet Length Max,"
    "Fwd Packet Length Min,Fwd Packet Length Mean,Fwd Packet Length Std,Bwd Packet Length Max,"
    "Bwd Packet Length Min,Bwd Packet Length Mean,Bwd Packet Length Std,Flow Bytes/s,Flow Packets/s,"
    "Flow IAT Mean,Flow IAT Std,Flow IAT Max,Flow IAT Min,Fwd IAT Total,Fwd IAT Mean,Fwd IAT Std,"
    "Fwd IAT Max,Fwd IAT Min,Bwd IAT Total,Bwd IAT Mean,Bwd IAT Std,Bwd IAT Max,Bwd IAT Min,"
    "Fwd PSH Flags,Bwd PSH Flags,Fwd URG Flags,Bwd URG Flags,Fwd RST Flags,Bwd RST Flags,"
    "Fwd Header Length,Bwd Header Length,Fwd Packets/s,Bwd Packets/s,Packet Length Min,Packet Length Max,"
    "Packet Length Mean,Packet Length Std,Packet Length Variance,FIN Flag Count,SYN Flag Count,"
    "RST Flag Count,PSH Flag Count,ACK Flag Count,URG Flag Count,CWR Flag Count,ECE Flag Count,"
    "Down/Up Ratio,Average Packet Size,Fwd Segment Size Avg,Bwd Segment Size Avg,Fwd Bytes/Bulk Avg,"
    "Fwd Packet/Bulk Avg,Fwd Bulk Rate Avg,Bwd Bytes/Bulk Avg,Bwd Packet/Bulk Avg,Bwd Bulk Rate Avg,"
    "Subflow Fwd Packets,Subflow Fwd Bytes,Subflow Bwd Packets,Subflow Bwd Bytes,FWD Init Win Bytes,"
    "Bwd Init Win Bytes,Fwd Act Data Pkts,Fwd Seg Size Min,Active Mean,Active Std,Active Max,Active Min,"
    "Idle Mean,Idle Std,Idle Max,Idle Min,ICMP Code,ICMP Type,Total TCP Flow Time,Label,Attempted Category"
).split(",")

# Original (TrafficLabelling) name of each Engelen column that exists there under another name,
# written out by hand from the two headers.
ENGELEN_FROM_ORIGINAL = {
    "Src IP": "Source IP",
    "Src Port": "Source Port",
    "Dst IP": "Destination IP",
    "Dst Port": "Destination Port",
    "Total Fwd Packet": "Total Fwd Packets",
    "Total Bwd packets": "Total Backward Packets",
    "Total Length of Fwd Packet": "Total Length of Fwd Packets",
    "Total Length of Bwd Packet": "Total Length of Bwd Packets",
    "Packet Length Min": "Min Packet Length",
    "Packet Length Max": "Max Packet Length",
    "CWR Flag Count": "CWE Flag Count",
    "Fwd Segment Size Avg": "Avg Fwd Segment Size",
    "Bwd Segment Size Avg": "Avg Bwd Segment Size",
    "Fwd Bytes/Bulk Avg": "Fwd Avg Bytes/Bulk",
    "Fwd Packet/Bulk Avg": "Fwd Avg Packets/Bulk",
    "Fwd Bulk Rate Avg": "Fwd Avg Bulk Rate",
    "Bwd Bytes/Bulk Avg": "Bwd Avg Bytes/Bulk",
    "Bwd Packet/Bulk Avg": "Bwd Avg Packets/Bulk",
    "Bwd Bulk Rate Avg": "Bwd Avg Bulk Rate",
    "FWD Init Win Bytes": "Init_Win_bytes_forward",
    "Bwd Init Win Bytes": "Init_Win_bytes_backward",
    "Fwd Act Data Pkts": "act_data_pkt_fwd",
    "Fwd Seg Size Min": "min_seg_size_forward",
}
ENGELEN_LABELS = [
    ("BENIGN", -1),
    ("Portscan", -1),
    ("DDoS", -1),
    ("DoS Hulk", -1),
    ("Botnet", -1),
    ("Infiltration - Portscan", -1),
    ("DoS Hulk - Attempted", 0),
    ("Botnet - Attempted", 1),
    ("Web Attack - XSS - Attempted", 0),
    ("Web Attack - SQL Injection", -1),
]


def write_engelen_fixture(path: Path) -> pd.DataFrame:
    """Ten real TrafficLabelling rows rewritten in the Engelen layout; returns the source rows."""
    src = read_with_pandas(MONDIRKB["portscan"]).iloc[: len(ENGELEN_LABELS)].reset_index(drop=True)
    out = pd.DataFrame(index=src.index)
    for col in ENGELEN_HEADER:
        original = ENGELEN_FROM_ORIGINAL.get(col, col)
        if col == "id":
            out[col] = np.arange(1, len(src) + 1)
        elif col == "Timestamp":
            out[col] = [f"2017-07-07 15:{i:02d}:12.{i * 111111:06d}" for i in range(len(src))]
        elif col == "Label":
            out[col] = [label for label, _ in ENGELEN_LABELS]
        elif col == "Attempted Category":
            out[col] = [cat for _, cat in ENGELEN_LABELS]
        elif col in ("Fwd RST Flags", "Bwd RST Flags", "Total TCP Flow Time"):
            out[col] = 0
        elif col in ("ICMP Code", "ICMP Type"):
            out[col] = -1
        else:
            out[col] = src[original]
    out.to_csv(path, index=False)
    return src


def test_engelen_header_is_detected():
    assert len(ENGELEN_HEADER) == 91
    assert detect_format(ENGELEN_HEADER) == "engelen2021"


@pytest.mark.parametrize("mode", ["benign", "attack", "drop"])
def test_engelen_fixture_maps_columns_and_attempted_labels(tmp_path, mode):
    path = tmp_path / "friday.csv"
    src = write_engelen_fixture(path)
    result = load_flows([path], attempted=mode)
    rep = result.reports[0]
    assert rep.format == "engelen2021"
    frame = result.frame
    attempted_rows = [6, 7, 8]
    kept = [i for i in range(10) if not (mode == "drop" and i in attempted_rows)]
    assert frame["seq"].tolist() == kept
    assert rep.dropped["attempted attack"] == (3 if mode == "drop" else 0)

    expected_x = reference_features(src)[kept]
    np.testing.assert_array_equal(frame[list(FEATURES)].to_numpy(), expected_x)
    np.testing.assert_array_equal(frame["Fwd Header Length.1"], frame["Fwd Header Length"])
    assert frame["src_ip"].tolist() == src["Source IP"].iloc[kept].tolist()
    assert frame["dst_port"].tolist() == src["Destination Port"].iloc[kept].tolist()
    assert frame["timestamp"].iloc[1] == pd.Timestamp("2017-07-07 15:01:12.111111")

    base = {
        "BENIGN": "benign",
        "Portscan": "portscan",
        "DDoS": "ddos",
        "DoS Hulk": "dos",
        "Botnet": "botnet",
        "Infiltration - Portscan": "infiltration",
        "Web Attack - SQL Injection": "webattack",
    }
    by_mode = {
        "benign": ["BENIGN", "BENIGN", "BENIGN"],
        "attack": ["DoS Hulk", "Botnet", "Web Attack - XSS"],
        "drop": [],
    }
    labels = [label for label, _ in ENGELEN_LABELS[:6]] + by_mode[mode] + ["Web Attack - SQL Injection"]
    assert frame["label"].tolist() == labels
    families = {**base, "Web Attack - XSS": "webattack"}
    assert frame["family"].tolist() == [families[label] for label in labels]


# ---- bad input ----------------------------------------------------------------------------------------


def _error(paths) -> str:
    with pytest.raises(InputError) as info:
        load_flows(paths)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_path(tmp_path):
    path = tmp_path / "nope.csv"
    msg = _error([MLCVE, path])
    assert msg.startswith(f"{path}: ") and "no such file" in msg


def test_directory(tmp_path):
    assert _error([tmp_path]).startswith(f"{tmp_path}: ")


def test_empty_and_whitespace_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert _error([empty]) == f"{empty}: empty file (0 bytes)"
    blank = tmp_path / "blank.csv"
    blank.write_bytes(b"\n \r\n")
    assert "empty file" in _error([blank])


def test_header_only_file(tmp_path):
    header, _ = _lines(MONDIRKB["ddos"])
    path = tmp_path / "header.csv"
    path.write_bytes(header + b"\n")
    assert _error([path]) == f"{path}: header only, 0 data rows"
    path.write_bytes(header + b"\n\n\n")
    assert "0 data rows" in _error([path])


def test_binary_and_compressed_files(tmp_path):
    binary = tmp_path / "model.csv"
    binary.write_bytes(bytes(range(256)) * 10)
    assert "not a CSV" in _error([binary])
    gz = tmp_path / "flows.csv.gz"
    gz.write_bytes(gzip.compress(MONDIRKB["sqli"].read_bytes()))
    msg = _error([gz])
    assert msg.startswith(f"{gz}: ") and "gzip" in msg


def test_misspelt_column_names_the_closest_match(tmp_path):
    text = MONDIRKB["sqli"].read_bytes().replace(b"Flow Duration", b"Flow Duratoin", 1)
    path = tmp_path / "typo.csv"
    path.write_bytes(text)
    msg = _error([path])
    assert msg.startswith(f"{path}: ")
    assert "'Flow Duration'" in msg and "'Flow Duratoin'" in msg and "trafficlabelling" in msg


def test_missing_label_column(tmp_path):
    df = read_with_pandas(MONDIRKB["sqli"]).drop(columns="Label")
    path = tmp_path / "nolabel.csv"
    df.to_csv(path, index=False)
    msg = _error([path])
    assert "'Label'" in msg


def test_unrelated_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    assert "not a CICIDS2017 flow CSV" in _error([path])


def test_unknown_label_is_a_counted_row_not_a_refused_file(tmp_path):
    text = MONDIRKB["ddos"].read_bytes()
    head, _, rest = text.partition(b"\n")
    lines = rest.splitlines()
    lines[5] = lines[5].replace(b",DDoS", b",Ransomware")
    path = tmp_path / "unknown.csv"
    path.write_bytes(b"\n".join([head, *lines]) + b"\n")
    rep = load_flows([path], drop_duplicates=False).reports[0]
    assert dropped(rep) == {"unknown label": 1} and rep.unknown_labels == {"Ransomware": 1}
    assert rep.rows_kept == 999
    # For detection, labels are optional: the row is scored, unlabelled.
    result = load_flows([path], drop_duplicates=False, labels="optional")
    assert result.reports[0].rows_kept == 1000 and result.reports[0].unlabelled == 1
    assert result.frame["label"].tolist().count("") == 1


def _ddos_lines() -> tuple[bytes, list[bytes]]:
    head, _, rest = MONDIRKB["ddos"].read_bytes().partition(b"\n")
    return head, rest.splitlines()


def test_an_unmatched_quote_is_one_bad_row_and_the_rest_is_kept(tmp_path):
    head, lines = _ddos_lines()
    lines[3] = lines[3].replace(b",DDoS", b',"DDoS')  # unmatched: would swallow the rest
    lines[7] = lines[7].replace(b",DDoS", b',"DDoS"')  # balanced: read unquoted
    lines[9] = lines[9].replace(b",DDoS", b',"DD,oS"')  # a quoted comma: malformed
    path = tmp_path / "quote.csv"
    path.write_bytes(b"\n".join([head, *lines]) + b"\n")
    result = load_flows([path], drop_duplicates=False)
    rep = result.reports[0]
    assert dropped(rep) == {"malformed row": 2} and rep.rows_read == 1000 and rep.rows_kept == 998
    assert set(result.frame["label"]) == {"DDoS"}


def test_repeated_header_and_oversized_cell_are_bad_rows(tmp_path):
    head, lines = _ddos_lines()
    huge = lines[2].replace(b",DDoS", b"," + b"9" * (10 << 20) + b",DDoS")  # one 10 MB cell
    body = [*lines[:500], head, huge, *lines[500:], head.replace(b"\n", b"") + b"\r"]
    path = tmp_path / "cat.csv"
    path.write_bytes(b"\n".join([head, *body]) + b"\n")
    rep = load_flows([path], drop_duplicates=False).reports[0]
    assert dropped(rep) == {"repeated header": 2, "oversized line": 1}
    assert rep.rows_kept == 1000 and rep.rows_read == 1003


def test_a_file_without_label_column_loads_unlabelled_for_detection(tmp_path):
    df = read_with_pandas(MONDIRKB["sqli"]).drop(columns="Label")
    path = tmp_path / "nolabel.csv"
    df.to_csv(path, index=False)
    result = load_flows([path], labels="optional")
    assert len(result.frame) == 21 and set(result.frame["label"]) == {""}
    assert result.reports[0].unlabelled == 21 and result.reports[0].label_counts == {}


def test_timestamps_out_of_range_are_counted(tmp_path):
    head, lines = _ddos_lines()
    names = [c.strip() for c in head.decode().split(",")]
    cells = lines[0].decode().split(",")
    cells[names.index("Timestamp")] = "1/1/9999 3:56"
    path = tmp_path / "ts.csv"
    path.write_bytes(b"\n".join([head, ",".join(cells).encode(), *lines[1:]]) + b"\n")
    rep = load_flows([path], drop_duplicates=False).reports[0]
    assert dropped(rep) == {"timestamp out of range": 1}


def test_detect_format_on_raw_headers():
    raw = MLCVE.read_bytes().split(b"\n", 1)[0].decode().rstrip("\r").split(",")
    assert raw[0] == " Destination Port" and raw.count(" Fwd Header Length") == 2
    assert detect_format(raw) == "machinelearningcve"
    tl = MONDIRKB["ddos"].read_bytes().split(b"\n", 1)[0].decode().split(",")
    assert detect_format(tl) == "trafficlabelling"
    with pytest.raises(InputError, match="Flow Duration"):
        detect_format([c for c in tl if c != "Flow Duration"])


def test_invalid_arguments():
    with pytest.raises(ValueError):
        load_flows([MONDIRKB["sqli"]], attempted="maybe")
    with pytest.raises(ValueError):
        load_flows([MONDIRKB["sqli"]], chunk_rows=0)
