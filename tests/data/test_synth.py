"""Tests of the synthetic IoT traffic generator (fedids.data.synth)."""

from __future__ import annotations

import ipaddress
import time

import numpy as np
import pandas as pd
import pytest

from fedids.data import synth
from fedids.data.schema import FAMILIES, FEATURES, family_of
from fedids.data.synth import (
    ACK,
    ACTIVITY_TIMEOUT_US,
    CWR,
    ECE,
    FIN,
    FLOW_TIMEOUT_US,
    LABEL_FAMILIES,
    LABELS,
    PSH,
    RST,
    START,
    SYN,
    URG,
    PacketArrays,
    SynthConfig,
    compute_flow_features,
    generate_flows,
    write_synthetic_csv,
)

F = {name: i for i, name in enumerate(FEATURES)}
ATTACK_FAMILIES = ("ddos", "dos", "portscan", "botnet", "bruteforce")
SMALL = SynthConfig(devices=10, hours=0.5, seed=7, gateways=2)


@pytest.fixture(scope="module")
def default_frame() -> pd.DataFrame:
    return generate_flows(SynthConfig())


@pytest.fixture(scope="module")
def small_frame() -> pd.DataFrame:
    return generate_flows(SMALL)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"devices": 3}, "devices"),
        ({"devices": 50_001, "gateways": 250}, "devices"),
        ({"devices": 10.0}, "devices"),
        ({"devices": True}, "devices"),
        ({"hours": 0.1}, "hours"),
        ({"hours": float("nan")}, "hours"),
        ({"hours": "2"}, "hours"),
        ({"seed": -1}, "seed"),
        ({"gateways": 0}, "gateways"),
        ({"gateways": 41}, "gateways"),
        ({"difficulty": -0.5}, "difficulty"),
        ({"difficulty": float("inf")}, "difficulty"),
        ({"attack_fraction": 0.7}, "attack_fraction"),
        ({"devices": 400, "gateways": 2}, "180"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SynthConfig(**kwargs)


def test_labels_map_to_the_intended_families() -> None:
    assert set(LABEL_FAMILIES) == set(LABELS)
    for label, family in LABEL_FAMILIES.items():
        assert family_of(label) == family, label
    assert set(LABEL_FAMILIES.values()) == {"benign", *ATTACK_FAMILIES}


def test_config_accepts_bounds() -> None:
    SynthConfig(devices=4, hours=0.25, gateways=1, difficulty=0.0, attack_fraction=0.0)
    SynthConfig(devices=360, gateways=2, difficulty=5, attack_fraction=0.6, hours=168)


# ---------------------------------------------------------------------------------------------
# Feature computation against hand calculation
# ---------------------------------------------------------------------------------------------


def _packets(rows: list[list[tuple]]) -> PacketArrays:
    """Rows of (ts_us, size, fwd, flags, header, window), padded with junk that must be ignored."""
    width = max(len(r) for r in rows) + 2
    arr = {k: np.full((len(rows), width), 999.0) for k in ("ts", "size", "flags", "header", "window")}
    fwd = np.ones((len(rows), width), bool)
    valid = np.zeros((len(rows), width), bool)
    for i, row in enumerate(rows):
        for j, (ts, size, d, flags, header, window) in enumerate(row):
            arr["ts"][i, j], arr["size"][i, j], fwd[i, j] = ts, size, d
            arr["flags"][i, j], arr["header"][i, j], arr["window"][i, j] = flags, header, window
            valid[i, j] = True
    return PacketArrays(
        ts_us=arr["ts"],
        size=arr["size"],
        fwd=fwd,
        flags=arr["flags"].astype(np.uint8),
        header=arr["header"],
        window=arr["window"],
        valid=valid,
    )


TCP_FLOW = [  # handshake, one request/response, 6 s idle, teardown
    (0, 0, True, SYN, 40, 29200),
    (1_000, 0, False, SYN | ACK, 40, 65160),
    (1_200, 0, True, ACK, 32, 229),
    (1_500, 100, True, PSH | ACK, 32, 229),
    (21_500, 1460, False, ACK, 32, 501),
    (21_600, 540, False, PSH | ACK, 32, 501),
    (21_700, 0, True, ACK, 32, 229),
    (6_021_700, 0, True, FIN | ACK, 32, 229),
    (6_022_700, 0, False, FIN | ACK, 32, 501),
    (6_022_800, 0, True, ACK, 32, 229),
]
UDP_FLOW = [(0, 48, True, 0, 8, -1)]  # one unanswered datagram


def _expected_tcp() -> dict[str, float]:
    ts = np.array([p[0] for p in TCP_FLOW], float)
    size = np.array([p[1] for p in TCP_FLOW], float)
    fwd = np.array([p[2] for p in TCP_FLOW])
    flow_iat = np.diff(ts)
    f_iat, b_iat = np.diff(ts[fwd]), np.diff(ts[~fwd])
    dur = ts[-1] - ts[0]
    active = np.array([21_700.0, 1_100.0])  # [0, 21700] and [6021700, 6022800]
    return {
        "Flow Duration": dur,
        "Total Fwd Packets": 6,
        "Total Backward Packets": 4,
        "Total Length of Fwd Packets": 100,
        "Total Length of Bwd Packets": 2000,
        "Fwd Packet Length Max": 100,
        "Fwd Packet Length Min": 0,
        "Fwd Packet Length Mean": size[fwd].mean(),
        "Fwd Packet Length Std": size[fwd].std(ddof=1),
        "Bwd Packet Length Mean": 500,
        "Bwd Packet Length Std": size[~fwd].std(ddof=1),
        "Flow Bytes/s": 2100 / (dur / 1e6),
        "Flow Packets/s": 10 / (dur / 1e6),
        "Flow IAT Mean": flow_iat.mean(),
        "Flow IAT Std": flow_iat.std(ddof=1),
        "Flow IAT Max": 6_000_000,
        "Flow IAT Min": 100,
        "Fwd IAT Total": ts[fwd][-1],
        "Fwd IAT Mean": f_iat.mean(),
        "Fwd IAT Std": f_iat.std(ddof=1),
        "Fwd IAT Max": f_iat.max(),
        "Fwd IAT Min": f_iat.min(),
        "Bwd IAT Total": ts[~fwd][-1] - ts[~fwd][0],
        "Bwd IAT Mean": b_iat.mean(),
        "Bwd IAT Min": 100,
        "Bwd IAT Max": b_iat.max(),
        "Fwd PSH Flags": 1,
        "Bwd PSH Flags": 1,
        "Fwd URG Flags": 0,
        "Fwd Header Length": 40 + 32 * 5,
        "Bwd Header Length": 40 + 32 * 3,
        "Fwd Packets/s": 6 / (dur / 1e6),
        "Bwd Packets/s": 4 / (dur / 1e6),
        "Min Packet Length": 0,
        "Max Packet Length": 1460,
        "Packet Length Mean": 210,
        "Packet Length Variance": size.var(ddof=1),
        "FIN Flag Count": 2,
        "SYN Flag Count": 2,
        "RST Flag Count": 0,
        "PSH Flag Count": 2,
        "ACK Flag Count": 9,
        "URG Flag Count": 0,
        "CWE Flag Count": 0,
        "ECE Flag Count": 0,
        "Down/Up Ratio": 0,
        "Average Packet Size": 210,
        "Avg Fwd Segment Size": size[fwd].mean(),
        "Avg Bwd Segment Size": 500,
        "Fwd Header Length.1": 200,
        "Subflow Fwd Packets": 6,
        "Subflow Fwd Bytes": 100,
        "Subflow Bwd Packets": 4,
        "Subflow Bwd Bytes": 2000,
        "Init_Win_bytes_forward": 29200,
        "Init_Win_bytes_backward": 65160,
        "act_data_pkt_fwd": 1,
        "min_seg_size_forward": 32,
        "Active Mean": active.mean(),
        "Active Std": active.std(ddof=1),
        "Active Max": 21_700,
        "Active Min": 1_100,
        "Idle Mean": 6_000_000,
        "Idle Std": 0,
        "Idle Max": 6_000_000,
        "Idle Min": 6_000_000,
        "Destination Port": 443,
    }


def test_features_match_hand_calculation() -> None:
    out = compute_flow_features(_packets([TCP_FLOW, UDP_FLOW]), np.array([443, 53]))
    assert out.shape == (2, 78)
    for name, value in _expected_tcp().items():
        assert out[0, F[name]] == pytest.approx(value, rel=1e-12, abs=1e-9), name
    assert 6_000_000 > ACTIVITY_TIMEOUT_US
    udp = dict(zip(FEATURES, out[1]))
    assert udp["Flow Duration"] == 0 and udp["Total Fwd Packets"] == 1 and udp["Total Backward Packets"] == 0
    assert udp["Total Length of Fwd Packets"] == 48 and udp["Fwd Header Length"] == 8
    # zero duration: rates are 0 (CICIDS2017 would have Infinity), IAT and Active/Idle stats 0
    assert udp["Flow Bytes/s"] == 0 and udp["Flow Packets/s"] == 0 and udp["Flow IAT Mean"] == 0
    assert udp["Init_Win_bytes_forward"] == -1 and udp["Init_Win_bytes_backward"] == -1
    assert udp["Bwd Packet Length Max"] == 0 and udp["min_seg_size_forward"] == 8
    assert all(udp[c] == 0 for c in FEATURES if "Bulk" in c or c.startswith(("Active", "Idle")))


def test_ecn_urg_and_down_up_ratio_counted() -> None:
    flow = [
        (0, 0, True, FIN | PSH | URG, 20, 1024),
        (10, 0, False, RST | ACK, 20, 0),
        (20, 5, False, ECE | CWR | ACK, 20, 7),
        (30, 5, False, ACK, 20, 7),
    ]
    out = dict(zip(FEATURES, compute_flow_features(_packets([flow]), np.array([80]))[0]))
    assert out["URG Flag Count"] == 1 and out["Fwd URG Flags"] == 1 and out["Bwd URG Flags"] == 0
    assert out["ECE Flag Count"] == 1 and out["CWE Flag Count"] == 1 and out["RST Flag Count"] == 1
    assert out["Down/Up Ratio"] == 3 and out["Init_Win_bytes_backward"] == 0


# ---------------------------------------------------------------------------------------------
# Packet model
# ---------------------------------------------------------------------------------------------


def _plan(**cols: object) -> dict[str, np.ndarray]:
    base = {
        "t0": 0.0,
        "src": 0,
        "dst": 1,
        "sport": 40000,
        "dport": 80,
        "label": 0,
        "device": 0,
        "profile": synth._PROFILE["http_api"],
        "hs": synth.HS_FULL,
        "retries": 0,
        "flags0": 0,
        "rounds": 1,
        "td": synth.TD_FIN,
        "rtt_f": 2e3,
        "rtt_b": 3e4,
        "size_shift": 0.0,
        "gap_us": 1e6,
        "stack_f": synth._STACK["linux_iot"],
        "stack_b": synth._STACK["cloud_linux"],
    }
    base.update(cols)
    n = max(len(np.atleast_1d(v)) for v in base.values())
    return {k: np.broadcast_to(np.asarray(v), (n,)).astype(synth._PLAN_DTYPES[k]) for k, v in base.items()}


def _valid(p: PacketArrays, row: int, name: str) -> np.ndarray:
    return getattr(p, name)[row][p.valid[row]]


def test_tcp_connection_packets() -> None:
    p, counts = synth._simulate_packets(_plan(rounds=np.arange(1, 6)), np.random.default_rng(0))
    for row in range(5):
        flags, fwd = _valid(p, row, "flags"), _valid(p, row, "fwd")
        assert list(flags[:3]) == [SYN, SYN | ACK, ACK] and list(fwd[:3]) == [True, False, True]
        assert list(flags[-3:]) == [FIN | ACK, FIN | ACK, ACK]
        assert np.all(np.diff(_valid(p, row, "ts_us")) > 0) and _valid(p, row, "ts_us")[0] == 0
        hdr = _valid(p, row, "header")
        assert hdr[0] == 40 and hdr[1] == 40 and np.all(hdr[2:] == 32)  # both ends use timestamps
        # a request per round at least (3% of responses are lost), PSH on each burst's last segment
        data = _valid(p, row, "size") > 0
        assert (data & fwd).sum() >= row + 1
        assert ((flags & PSH) != 0).sum() >= row + 1 and not ((flags & PSH) != 0)[~data].any()
        assert _valid(p, row, "window")[0] == 29200 and _valid(p, row, "window")[1] == 65160
    assert np.all(counts == p.valid.sum(axis=1))


def test_failed_connections_and_udp() -> None:
    plan = _plan(
        hs=np.array([synth.HS_REFUSED, synth.HS_UNANSWERED, synth.HS_FULL]),
        retries=3,
        profile=np.array([synth._PROFILE["probe"], synth._PROFILE["probe"], synth._PROFILE["dns"]]),
    )
    p, counts = synth._simulate_packets(plan, np.random.default_rng(1))
    assert list(_valid(p, 0, "flags")) == [SYN, RST | ACK] and list(_valid(p, 0, "window")) == [29200, 0]
    assert list(_valid(p, 1, "flags")) == [SYN] * 4 and _valid(p, 1, "fwd").all()
    # Linux backs off 1, 2, 4 s between SYN retransmissions
    assert np.allclose(np.diff(_valid(p, 1, "ts_us")), [1e6, 2e6, 4e6], rtol=0.02)
    assert counts[2] in (1, 2)  # DNS: a query, maybe an answer; no handshake for UDP
    assert np.all(_valid(p, 2, "flags") == 0) and np.all(_valid(p, 2, "header") == 8)
    assert np.all(_valid(p, 2, "window") == -1)


def test_long_flows_are_cut_at_the_flow_timeout() -> None:
    plan = _plan(profile=synth._PROFILE["mqtt"], hs=synth.HS_NONE, td=synth.TD_NONE, rounds=40, gap_us=10e6)
    p, _ = synth._simulate_packets(plan, np.random.default_rng(2))
    ts = _valid(p, 0, "ts_us")
    assert ts[-1] <= FLOW_TIMEOUT_US and ts[-1] > 0.8 * FLOW_TIMEOUT_US
    assert _valid(p, 0, "fwd")[0]  # a continuation chunk starts with the source's data


# ---------------------------------------------------------------------------------------------
# Generated frames
# ---------------------------------------------------------------------------------------------


def test_deterministic_for_a_seed(small_frame: pd.DataFrame) -> None:
    again = generate_flows(SMALL)
    pd.testing.assert_frame_equal(small_frame, again)
    other = generate_flows(SynthConfig(devices=10, hours=0.5, seed=8, gateways=2))
    assert len(other) != len(small_frame) or not other["Flow Duration"].equals(small_frame["Flow Duration"])


def test_schema_and_dtypes(default_frame: pd.DataFrame) -> None:
    f = default_frame
    expected = [
        "flow_id",
        "src_ip",
        "src_port",
        "dst_ip",
        "dst_port",
        "protocol",
        "timestamp",
        *FEATURES,
        "seq",
        "label",
        "family",
        "device",
        "gateway",
    ]
    assert list(f.columns) == expected
    assert all(f[c].dtype == np.float32 for c in FEATURES)
    assert f["timestamp"].dtype == "datetime64[us]"
    assert f["timestamp"].is_monotonic_increasing
    assert f["timestamp"].min() >= START and f["timestamp"].max() < START + np.timedelta64(2 * 3600, "s")
    assert np.array_equal(f["seq"].to_numpy(), np.arange(len(f)))
    assert set(f["protocol"].unique()) == {6, 17}
    assert set(f["label"].unique()) <= set(LABELS)
    assert all(family_of(label) == fam for label, fam in set(zip(f["label"], f["family"])))
    assert set(f["family"].unique()) == {"benign", *ATTACK_FAMILIES} and set(f["family"]) <= set(FAMILIES)
    flow_id = (
        f["src_ip"]
        + "-"
        + f["dst_ip"]
        + "-"
        + f["src_port"].astype(str)
        + "-"
        + f["dst_port"].astype(str)
        + "-"
        + f["protocol"].astype(str)
    )
    assert (flow_id == f["flow_id"]).all()
    assert (f["Destination Port"] == f["dst_port"]).all()
    assert f["src_port"].between(1, 65535).all() and f["dst_port"].between(1, 65535).all()


def test_default_size_and_attack_share(default_frame: pd.DataFrame) -> None:
    assert 30_000 <= len(default_frame) <= 80_000
    share = (default_frame["family"] != "benign").mean()
    assert 0.15 <= share <= 0.25


def test_features_finite_and_consistent(default_frame: pd.DataFrame) -> None:
    x = default_frame[list(FEATURES)].to_numpy(np.float64)  # stored as float32: compare with rtol 1e-6
    c = {name: x[:, i] for i, name in enumerate(FEATURES)}
    assert np.isfinite(x).all()
    signed = {"Init_Win_bytes_forward", "Init_Win_bytes_backward"}
    assert (x[:, [F[n] for n in FEATURES if n not in signed]] >= 0).all()
    assert (c["Init_Win_bytes_forward"] >= -1).all() and (c["Init_Win_bytes_backward"] >= -1).all()
    n = c["Total Fwd Packets"] + c["Total Backward Packets"]
    nbytes = c["Total Length of Fwd Packets"] + c["Total Length of Bwd Packets"]
    assert (c["Total Fwd Packets"] >= 1).all()
    assert np.allclose(c["Flow Duration"], c["Flow IAT Mean"] * (n - 1), rtol=1e-6)
    assert (c["Flow Duration"] <= FLOW_TIMEOUT_US).all()
    assert (c["Fwd IAT Total"] <= c["Flow Duration"]).all() and (
        c["Bwd IAT Total"] <= c["Flow Duration"]
    ).all()
    assert (c["Flow IAT Max"] <= c["Flow Duration"]).all() and (c["Flow IAT Min"] <= c["Flow IAT Max"]).all()
    assert np.allclose(
        c["Total Length of Fwd Packets"], c["Fwd Packet Length Mean"] * c["Total Fwd Packets"], rtol=1e-6
    )
    assert np.allclose(nbytes, c["Average Packet Size"] * n, rtol=1e-6)
    assert np.allclose(nbytes, c["Packet Length Mean"] * n, rtol=1e-6)
    assert np.allclose(c["Packet Length Variance"], c["Packet Length Std"] ** 2, rtol=1e-5)
    assert (c["Max Packet Length"] >= c["Fwd Packet Length Max"]).all()
    pos = c["Flow Duration"] > 0
    assert np.allclose(c["Flow Bytes/s"][pos], nbytes[pos] / (c["Flow Duration"][pos] / 1e6), rtol=1e-5)
    assert (c["Flow Bytes/s"][~pos] == 0).all()
    assert np.array_equal(c["Subflow Fwd Bytes"], c["Total Length of Fwd Packets"])
    assert np.array_equal(c["Fwd Header Length.1"], c["Fwd Header Length"])
    assert (c["SYN Flag Count"] + c["FIN Flag Count"] <= n).all() and (c["ACK Flag Count"] <= n).all()
    assert (c["act_data_pkt_fwd"] <= c["Total Fwd Packets"]).all()
    assert (c["Idle Max"] == 0).all() or (c["Idle Min"][c["Idle Max"] > 0] > ACTIVITY_TIMEOUT_US).all()
    assert (c["Active Max"] <= c["Flow Duration"]).all()
    assert (x[:, [F[n] for n in FEATURES if "Bulk" in n]] == 0).all()

    udp = default_frame["protocol"].to_numpy() == 17
    assert (c["Fwd Header Length"][udp] == 8 * c["Total Fwd Packets"][udp]).all()
    assert (c["Init_Win_bytes_forward"][udp] == -1).all() and (c["SYN Flag Count"][udp] == 0).all()
    assert (c["Fwd Header Length"][~udp] >= 20 * c["Total Fwd Packets"][~udp]).all()
    assert set(np.unique(c["min_seg_size_forward"][~udp])) <= {20.0, 24.0, 32.0, 40.0, 44.0}
    assert (c["Init_Win_bytes_backward"][c["Total Backward Packets"] == 0] == -1).all()


def test_ports_protocols_and_addresses(default_frame: pd.DataFrame) -> None:
    f = default_frame
    proto_of_port = (
        f[f["family"] == "benign"].groupby("dst_port")["protocol"].agg(set)
    )  # scans probe any port
    for port in (53, 123, 5683, 5353, 1900, 32100):
        assert proto_of_port[port] == {17}, port
    for port in (443, 8883, 1883, 80, 554):
        assert proto_of_port[port] == {6}, port
    assert set(f.loc[f["label"] == "Bot", "protocol"]) == {6}  # telnet scans, logins, C2
    dns = f[(f["family"] == "benign") & (f["dst_port"] == 53)]  # devices resolve names themselves
    dev_ip = dns.groupby("device")["src_ip"].agg(lambda s: s.mode()[0])
    assert len(dev_ip) == 40 and dev_ip.is_unique
    assert (dns["src_ip"] == dns["device"].map(dev_ip)).all()
    gw = f.groupby("device")["gateway"].first()
    for device, ip in dev_ip.items():
        assert ip.split(".")[2] == str(gw[device]), device
        assert ip.split(".")[3] != "255"
    # every flow touches its device's address
    touch = (f["src_ip"] == f["device"].map(dev_ip)) | (f["dst_ip"] == f["device"].map(dev_ip))
    assert touch.all()
    external = pd.unique(pd.concat([f["src_ip"], f["dst_ip"]]))
    for ip in external:
        addr = ipaddress.ip_address(ip)
        assert addr.is_multicast or ip.startswith("192.168.") or addr.is_global, ip
    # attackers both outside and inside
    attack_src = f.loc[f["family"] != "benign", "src_ip"]
    assert attack_src.str.startswith("192.168.").any() and (~attack_src.str.startswith("192.168.")).any()


def test_every_family_on_both_sides_of_a_70_30_split(default_frame: pd.DataFrame) -> None:
    cut = int(0.7 * len(default_frame))
    for part in (default_frame.iloc[:cut], default_frame.iloc[cut:]):
        counts = part["family"].value_counts()
        for fam in ("benign", *ATTACK_FAMILIES):
            assert counts.get(fam, 0) >= 50, (fam, dict(counts))


def test_attacks_come_in_timed_episodes(default_frame: pd.DataFrame) -> None:
    f = default_frame
    minutes = (f["timestamp"] - START).dt.total_seconds().to_numpy() / 60
    for fam in ATTACK_FAMILIES:
        t = np.sort(minutes[(f["family"] == fam).to_numpy()])
        gaps = np.diff(t)
        assert (gaps > 5).sum() >= 1, fam  # at least two separate episodes
        episodes = np.split(t, np.flatnonzero(gaps > 5) + 1)
        assert sum(e[-1] - e[0] for e in episodes) < 0.5 * 120, fam  # attacks are not everywhere
        # interleaved with benign traffic
        lo, hi = episodes[0][0], episodes[0][-1]
        inside = (minutes >= lo) & (minutes <= hi)
        assert (f["family"][inside] == "benign").any()


def test_malware_spreads_to_several_devices(default_frame: pd.DataFrame) -> None:
    bot = default_frame[default_frame["label"] == "Bot"]
    infected = bot.loc[bot["src_ip"].str.startswith("192.168."), "src_ip"].unique()
    assert len(infected) >= 2
    first_seen = bot.groupby("src_ip")["timestamp"].min().loc[infected].sort_values()
    assert first_seen.iloc[-1] > first_seen.iloc[0]
    assert set(bot["dst_port"]) & {23, 2323}


def test_benign_only_and_linear_scaling() -> None:
    benign = generate_flows(SynthConfig(devices=8, hours=0.5, seed=3, attack_fraction=0.0))
    assert set(benign["family"]) == {"benign"}
    double = generate_flows(SynthConfig(devices=16, hours=0.5, seed=3, attack_fraction=0.0, gateways=2))
    assert 1.6 < len(double) / len(benign) < 2.4


def test_progress_reports_up_to_the_flow_count() -> None:
    seen: list[int] = []
    frame = generate_flows(SynthConfig(devices=6, hours=0.25, seed=2), progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == len(frame)


def test_csv_round_trip(tmp_path, small_frame: pd.DataFrame) -> None:
    path = write_synthetic_csv(SMALL, tmp_path / "synth.csv")
    assert path.exists()
    header = path.read_text().splitlines()[0].split(",")
    assert len(header) == 85 and "device" not in header
    loader = pytest.importorskip("fedids.data.loader")
    if not hasattr(loader, "load_flows"):
        pytest.skip("fedids.data.loader.load_flows not available")
    back = loader.load_flows([path], drop_duplicates=False).frame
    assert len(back) == len(small_frame)
    assert back["label"].tolist() == small_frame["label"].tolist()
    assert back["family"].tolist() == small_frame["family"].tolist()
    assert back["src_ip"].astype(str).tolist() == small_frame["src_ip"].tolist()
    assert (back["timestamp"].to_numpy() == small_frame["timestamp"].to_numpy()).all()
    np.testing.assert_array_equal(
        back[list(FEATURES)].to_numpy(np.float32), small_frame[list(FEATURES)].to_numpy(np.float32)
    )  # 9 digits keep float32


@pytest.mark.slow
def test_single_flow_random_forest_is_not_perfect(default_frame: pd.DataFrame) -> None:
    """A random forest on single flows must not separate the families perfectly (time-ordered split)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score

    x = default_frame[list(FEATURES)].to_numpy(np.float32)
    y = default_frame["family"].to_numpy()
    cut = int(0.7 * len(x))
    start = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=2).fit(x[:cut], y[:cut])
    macro = f1_score(y[cut:], rf.predict(x[cut:]), average="macro")
    assert 0.6 < macro < 0.99, macro
    assert time.perf_counter() - start < 300
