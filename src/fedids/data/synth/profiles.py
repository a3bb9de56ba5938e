"""TCP stacks, behaviour profiles and handshake/teardown templates: what draws packet sizes and timings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedids.data.synth.config import ACK, FIN, RST, SYN


@dataclass(frozen=True)
class _Stack:
    syn_opt: int  # option bytes on SYN / SYN-ACK (header = 20 + syn_opt)
    ts: bool  # TCP timestamps (+12 bytes on every later segment when both ends have it)
    win_syn: int  # window field on SYN / SYN-ACK; -1 = random per packet (raw-socket tools)
    win_est: float  # median window field on later segments (after window scaling); -1 = random
    mss: int
    rto_us: float  # initial retransmission timeout of SYNs
    cpu_us: float  # median think time between protocol steps (TLS crypto on a microcontroller)
    ecn: bool = False
    sport: tuple[int, int] = (32768, 60999)  # ephemeral port range


_STACK_LIST: tuple[tuple[str, _Stack], ...] = (
    ("linux_iot", _Stack(20, True, 29200, 229, 1460, 1e6, 8e3)),
    ("linux_iot_new", _Stack(20, True, 64240, 502, 1460, 1e6, 5e3)),
    ("lwip", _Stack(4, False, 5744, 5744, 1436, 3e6, 1.2e5, sport=(49152, 65535))),
    ("rtos_small", _Stack(4, False, 2920, 2920, 1460, 3e6, 2.5e5, sport=(49152, 65535))),
    ("android", _Stack(20, True, 65535, 1369, 1460, 1e6, 1.5e3)),
    ("ios", _Stack(24, True, 65535, 2048, 1460, 1e6, 1e3, ecn=True, sport=(49152, 65535))),
    ("windows", _Stack(12, False, 64240, 1026, 1460, 3e6, 1e3, sport=(49152, 65535))),
    ("cloud_linux", _Stack(20, True, 65160, 501, 1460, 1e6, 2e2, ecn=True)),
    ("cloud_lb", _Stack(12, False, 26847, 107, 1460, 1e6, 2e2)),
    ("kali", _Stack(20, True, 64240, 502, 1460, 1e6, 3e2)),
    ("nmap", _Stack(4, False, 1024, 1024, 1460, 1e6, 1e2)),
    ("hping", _Stack(0, False, 512, 512, 1460, 1e6, 1e2)),
    ("mirai", _Stack(0, False, -1, -1, 1460, 1e6, 1e2)),
    ("mirai_syn", _Stack(20, True, -1, -1, 1460, 1e6, 1e2)),
)
_STACK = {name: i for i, (name, _) in enumerate(_STACK_LIST)}
_ST = {
    field: np.array([getattr(s, field) for _, s in _STACK_LIST])
    for field in ("syn_opt", "ts", "win_syn", "win_est", "mss", "rto_us", "cpu_us", "ecn")
}
_ST_SPORT = np.array([s.sport for _, s in _STACK_LIST])

# A "head" round: (request median bytes, log-sigma, response median bytes, log-sigma, server time us).
# 0 bytes = no such packets. Heads are the protocol's opening exchanges (TLS handshake, banners);
# they only occur in flows that contain the TCP handshake.
_TLS_HEAD = ((250, 0.25, 3300, 0.35, 2e4), (130, 0.15, 240, 0.5, 1.5e4))


@dataclass(frozen=True)
class _Profile:
    proto: int
    req: tuple[float, float, float, float]  # request bytes per round: median, log-sigma, min, max
    resp: tuple[float, float, float, float]  # response bytes per round
    p_resp: float = 1.0  # chance that a round gets a response
    gap: tuple[float, float] = (1e6, 1.0)  # think time between rounds: median us, log-sigma
    svc: tuple[float, float] = (5e3, 0.8)  # server time before a response: median us, log-sigma
    close: tuple[float, float] = (5e3, 1.5)  # delay before the teardown: median us, log-sigma
    intra: tuple[float, float] = (80.0, 80.0)  # spacing of back-to-back segments, fwd / bwd, us
    flow_sig: float = 0.3  # per-flow log-offset of sizes
    acks: bool = True  # the responder acknowledges TCP data
    head: tuple[tuple[float, float, float, float, float], ...] = ()


_PROFILE_LIST: tuple[tuple[str, _Profile], ...] = (
    # ---- benign ----
    (
        "dns",
        _Profile(17, (38, 0.15, 17, 120), (110, 0.55, 30, 900), 0.97, (1.5e6, 0.8), (9e2, 1.4), flow_sig=0.1),
    ),
    ("ntp", _Profile(17, (48, 0, 48, 48), (48, 0, 48, 48), 0.98, (2e6, 0.3), (3e2, 0.5), flow_sig=0)),
    (
        "mqtt",
        _Profile(
            6,
            (60, 0.7, 2, 600),
            (4, 0, 2, 4),
            0.6,
            (3e7, 0.15),
            (2e3, 0.6),
            (5e5, 1.0),
            flow_sig=0.35,
            head=((45, 0.4, 4, 0, 4e3),),
        ),
    ),
    (
        "mqtts",
        _Profile(
            6,
            (90, 0.6, 31, 800),
            (33, 0.1, 31, 60),
            0.6,
            (3e7, 0.15),
            (3e3, 0.6),
            (5e5, 1.0),
            flow_sig=0.35,
            head=(*_TLS_HEAD, (75, 0.3, 33, 0.1, 4e3)),
        ),
    ),
    ("coap", _Profile(17, (45, 0.5, 10, 400), (12, 0.6, 4, 200), 0.85, (3e7, 0.2), (2e3, 0.8))),
    (
        "https_api",
        _Profile(
            6,
            (450, 0.8, 60, 20000),
            (700, 1.1, 40, 60000),
            0.97,
            (8e5, 1.2),
            (2.5e4, 0.9),
            (3e5, 2.0),
            (120, 60),
            0.4,
            head=_TLS_HEAD,
        ),
    ),
    (
        "http_api",
        _Profile(6, (260, 0.4, 80, 2000), (420, 0.9, 40, 20000), 0.97, (1e6, 1.0), (1.5e4, 0.8), (2e4, 1.5)),
    ),
    (
        "fw_download",
        _Profile(
            6, (300, 0.2, 150, 800), (1.2e6, 0.6, 2e5, 3e6), 1.0, (1e6, 0.5), (3e4, 0.6), (2e3, 1.0), (80, 25)
        ),
    ),
    (
        "video_upload",
        _Profile(
            6,
            (6e4, 0.5, 5e3, 4e5),
            (60, 0.3, 31, 300),
            0.5,
            (1e6, 0.25),
            (2e4, 0.5),
            (2e5, 1.0),
            (250, 60),
            0.3,
            head=_TLS_HEAD,
        ),
    ),
    (
        "rtsp_live",
        _Profile(
            6,
            (90, 0.5, 40, 400),
            (5e4, 0.5, 2e3, 2e5),
            0.98,
            (1e6, 0.2),
            (3e3, 0.5),
            (1e4, 1.0),
            (80, 120),
            0.3,
            head=((160, 0.2, 450, 0.3, 5e3), (180, 0.2, 250, 0.3, 4e3), (170, 0.2, 230, 0.3, 4e3)),
        ),
    ),
    ("p2p_hello", _Profile(17, (24, 0.3, 4, 120), (20, 0.3, 4, 120), 0.9, (1.5e7, 0.2), (1e3, 0.5))),
    ("p2p_punch", _Profile(17, (24, 0.4, 4, 120), (24, 0.4, 4, 120), 0.15, (3e5, 0.8), (1e3, 0.5))),
    ("ssdp", _Profile(17, (150, 0.3, 90, 400), (0, 0, 0, 0), 0.0, (1e5, 0.5))),
    ("mdns", _Profile(17, (80, 0.8, 12, 1200), (0, 0, 0, 0), 0.0, (2e7, 1.0))),
    ("wsd", _Profile(17, (620, 0.2, 300, 1000), (0, 0, 0, 0), 0.0, (1e5, 0.5))),
    ("bcast", _Profile(17, (180, 0.1, 150, 220), (0, 0, 0, 0), 0.0, (5e6, 0.05))),
    ("probe", _Profile(6, (1, 0, 1, 1), (1, 0, 1, 1), 1.0)),
    (
        "probe_http",
        _Profile(6, (120, 0.3, 40, 400), (400, 0.8, 40, 4000), 0.9, (1e5, 0.5), (3e3, 0.8), (2e3, 1.0)),
    ),
    (
        "hub_poll_http",
        _Profile(6, (110, 0.3, 60, 400), (180, 0.6, 20, 3000), 0.98, (5e5, 0.5), (8e3, 1.0), (2e3, 1.0)),
    ),
    ("hub_poll_udp", _Profile(17, (40, 0.4, 10, 200), (120, 0.5, 10, 800), 0.9, (5e5, 0.5), (3e3, 0.8))),
    (
        "lan_tcp",
        _Profile(6, (80, 0.5, 20, 600), (90, 0.6, 10, 1000), 0.95, (2e6, 1.2), (5e3, 1.0), (5e3, 2.0)),
    ),
    (
        "keepalive_tcp",
        _Profile(
            6,
            (30, 0.4, 1, 200),
            (30, 0.4, 1, 200),
            0.9,
            (4e7, 0.15),
            (3e3, 0.8),
            (5e5, 1.0),
            head=((60, 0.3, 40, 0.3, 5e3),),
        ),
    ),
    (
        "audio_stream",
        _Profile(
            6,
            (60, 0.5, 31, 400),
            (4e4, 0.4, 4e3, 2e5),
            0.97,
            (5e6, 0.4),
            (1.5e4, 0.5),
            (5e5, 1.0),
            (80, 40),
            0.3,
            head=_TLS_HEAD,
        ),
    ),
    (
        "ssh_admin",
        _Profile(
            6,
            (60, 0.9, 36, 2000),
            (100, 1.0, 36, 8000),
            0.95,
            (8e5, 1.5),
            (3e3, 1.0),
            (5e5, 1.5),
            head=(
                (24, 0.2, 30, 0.4, 2e3),
                (1300, 0.15, 800, 0.35, 3e3),
                (48, 0.5, 1000, 0.3, 2e4),
                (70, 0.2, 60, 0.3, 3e3),
                (110, 0.25, 40, 0.3, 3e4),
            ),
        ),
    ),
    (
        "web_ui",
        _Profile(
            6,
            (420, 0.5, 150, 3000),
            (2500, 1.2, 100, 2e5),
            0.97,
            (1.5e6, 1.3),
            (2e4, 1.0),
            (3e6, 1.5),
            head=((380, 0.2, 3000, 0.6, 2e4), (520, 0.15, 900, 0.5, 4e4)),
        ),
    ),
    (
        "ftp_upload",
        _Profile(
            6,
            (20, 0.4, 5, 200),
            (40, 0.5, 10, 300),
            0.98,
            (1e5, 0.8),
            (5e3, 0.8),
            (1e4, 1.0),
            head=((0, 0, 40, 0.4, 3e3), (16, 0.3, 34, 0.2, 2e3), (16, 0.3, 22, 0.1, 2e4)),
        ),
    ),
    # ---- attacks ----
    ("flood_udp", _Profile(17, (512, 0, 512, 512), (0, 0, 0, 0), 0.0, (4e2, 0.6), flow_sig=0)),
    ("flood_udp_rand", _Profile(17, (300, 1.0, 16, 1400), (0, 0, 0, 0), 0.0, (3e3, 1.5), flow_sig=0.3)),
    ("flood_ack", _Profile(6, (512, 0, 512, 512), (0, 0, 0, 0), 0.0, (4e2, 0.6), acks=False, flow_sig=0)),
    (
        "flood_http",
        _Profile(
            6,
            (120, 0.15, 60, 300),
            (600, 1.0, 40, 2e4),
            0.7,
            (2e4, 1.0),
            (8e4, 1.0),
            (1e3, 1.0),
            flow_sig=0.1,
        ),
    ),
    (
        "hulk",
        _Profile(6, (380, 0.35, 150, 900), (350, 1.0, 40, 5e3), 0.75, (5e3, 1.0), (4e4, 1.2), (3e3, 1.5)),
    ),
    (
        "slowloris",
        _Profile(
            6,
            (12, 0.5, 3, 40),
            (0, 0, 0, 0),
            0.0,
            (1.2e7, 0.25),
            close=(2e7, 0.5),
            head=((230, 0.15, 0, 0, 0),),
        ),
    ),
    (
        "slowpost",
        _Profile(
            6, (4, 0.8, 1, 20), (0, 0, 0, 0), 0.0, (1e7, 0.3), close=(2e7, 0.5), head=((350, 0.2, 0, 0, 0),)
        ),
    ),
    (
        "scan_version",
        _Profile(6, (20, 1.2, 1, 300), (120, 1.0, 10, 2000), 0.6, (5e5, 1.0), (5e3, 1.0), (5e3, 1.0)),
    ),
    (
        "telnet_login",
        _Profile(
            6,
            (9, 0.3, 1, 40),
            (30, 0.4, 8, 200),
            0.95,
            (3e5, 1.0),
            (1.2e6, 0.6),
            (2e3, 1.0),
            head=((0, 0, 30, 0.5, 2e3), (8, 0.3, 10, 0.2, 3e3), (9, 0.3, 30, 0.3, 2e6)),
        ),
    ),
    (
        "bot_c2",
        _Profile(
            6,
            (2, 0.3, 1, 40),
            (2, 0.3, 1, 40),
            0.9,
            (6e7, 0.1),
            (2e3, 0.8),
            (5e5, 1.0),
            flow_sig=0.2,
            head=((20, 0.5, 2, 0.3, 3e3),),
        ),
    ),
    (
        "bot_download",
        _Profile(
            6, (110, 0.2, 60, 300), (8e4, 0.4, 3e4, 2e5), 1.0, (1e5, 0.5), (3e4, 0.6), (2e3, 1.0), (80, 40)
        ),
    ),
    (
        "ssh_brute",
        _Profile(
            6,
            (110, 0.25, 80, 300),
            (60, 0.3, 30, 200),
            1.0,
            (3e4, 1.0),
            (2e6, 0.4),
            (5e3, 1.0),
            head=(
                (24, 0.2, 30, 0.4, 2e3),
                (1300, 0.15, 800, 0.35, 3e3),
                (48, 0.5, 1000, 0.3, 2e4),
                (70, 0.2, 60, 0.3, 3e3),
            ),
        ),
    ),
    (
        "ftp_brute",
        _Profile(
            6,
            (16, 0.3, 8, 60),
            (28, 0.3, 20, 80),
            1.0,
            (2e4, 1.0),
            (1.5e6, 0.8),
            (5e3, 1.0),
            head=((0, 0, 40, 0.4, 3e3), (16, 0.3, 34, 0.2, 2e3), (16, 0.3, 22, 0.1, 2.5e6)),
        ),
    ),
    (
        "http_brute",
        _Profile(6, (520, 0.15, 300, 1000), (900, 0.5, 200, 4000), 1.0, (2e4, 1.0), (3e4, 0.8), (5e3, 1.0)),
    ),
)
_PROFILE = {name: i for i, (name, _) in enumerate(_PROFILE_LIST)}
_MAX_HEAD = max(len(p.head) for _, p in _PROFILE_LIST)


def _profile_tables() -> dict[str, np.ndarray]:
    profiles = [p for _, p in _PROFILE_LIST]
    t: dict[str, np.ndarray] = {
        "proto": np.array([p.proto for p in profiles], np.int8),
        "p_resp": np.array([p.p_resp for p in profiles]),
        "flow_sig": np.array([p.flow_sig for p in profiles]),
        "acks": np.array([p.acks for p in profiles]),
        "head_len": np.array([len(p.head) for p in profiles], np.int32),
    }
    for name in ("req", "resp"):
        arr = np.array([getattr(p, name) for p in profiles], dtype=float)
        t[name + "_med"], t[name + "_sig"], t[name + "_lo"], t[name + "_hi"] = arr.T
    for name in ("gap", "svc", "close", "intra"):
        arr = np.array([getattr(p, name) for p in profiles], dtype=float)
        t[name + "_a"], t[name + "_b"] = arr.T
    head = np.zeros((len(profiles), max(_MAX_HEAD, 1), 5))
    for i, p in enumerate(profiles):
        if p.head:
            head[i, : len(p.head)] = p.head
    t["head"] = head
    gap_default = np.array([p.gap[0] for p in profiles])
    t["gap_default"] = gap_default
    return t


_PT = _profile_tables()

# Handshake templates: (direction fwd?, flags, timing kind). Kinds: 0 first packet, 1 responder RTT,
# 2 initiator RTT, 3 initiator retransmission backoff, 4 responder retransmission backoff, 5 close delay.
HS_NONE, HS_FULL, HS_REFUSED, HS_UNANSWERED, HS_HALF_OPEN, HS_SYNACK_RETRY = range(6)
TD_NONE, TD_FIN, TD_FIN_SERVER, TD_RST_FWD, TD_RST_BWD = range(5)
_MAX_RETRIES = 6
_HS_TEMPLATES = {
    HS_NONE: [],
    HS_FULL: [(1, SYN, 0), (0, SYN | ACK, 1), (1, ACK, 2)],
    HS_REFUSED: [(1, SYN, 0), (0, RST | ACK, 1)],
    HS_UNANSWERED: [(1, SYN, 0)] + [(1, SYN, 3)] * _MAX_RETRIES,
    HS_HALF_OPEN: [(1, SYN, 0), (0, SYN | ACK, 1), (1, RST, 2)],
    HS_SYNACK_RETRY: [(1, SYN, 0), (0, SYN | ACK, 1)] + [(0, SYN | ACK, 4)] * _MAX_RETRIES,
}
_HS_BASE_LEN = np.array([0, 3, 2, 1, 3, 2])
_TD_TEMPLATES = {
    TD_NONE: [],
    TD_FIN: [(1, FIN | ACK, 5), (0, FIN | ACK, 1), (1, ACK, 2)],
    TD_FIN_SERVER: [(0, FIN | ACK, 5), (1, FIN | ACK, 2), (0, ACK, 1)],
    TD_RST_FWD: [(1, RST | ACK, 5)],
    TD_RST_BWD: [(0, RST | ACK, 5)],
}


def _template_arrays(templates: dict[int, list[tuple[int, int, int]]]) -> tuple[np.ndarray, ...]:
    width = max(len(v) for v in templates.values())
    dirs = np.zeros((len(templates), width), bool)
    flags = np.zeros((len(templates), width), np.uint8)
    kinds = np.zeros((len(templates), width), np.int8)
    lens = np.zeros(len(templates), np.int64)
    for code, rows in templates.items():
        lens[code] = len(rows)
        for k, (d, f, kd) in enumerate(rows):
            dirs[code, k], flags[code, k], kinds[code, k] = d, f, kd
    return dirs, flags, kinds, lens


_HS_DIR, _HS_FLAGS, _HS_KIND, _ = _template_arrays(_HS_TEMPLATES)
_TD_DIR, _TD_FLAGS, _TD_KIND, _TD_LEN = _template_arrays(_TD_TEMPLATES)
