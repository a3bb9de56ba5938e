"""Synthetic IoT traffic: CICIDS2017-style flow records computed from simulated packets.

The generator is the embedded default data set of fedids (demos, tests, benchmarks). It simulates an
IoT site of ``devices`` devices behind ``gateways`` gateways (subnet ``192.168.<g>.0/24`` each) for
``hours`` hours, with benign traffic and timed attack episodes, in three stages:

1. **Flow plan** (:func:`_plan_benign`, :func:`_schedule` and the attack planners): one row per flow with its start time,
   5-tuple, label, the device it belongs to and the *structure* of its packets (TCP handshake outcome,
   number of request/response rounds, teardown) plus the behaviour profile that draws its sizes and
   timings. Benign devices of seven kinds (camera, thermostat, smart plug, smart speaker, hub, door
   sensor, bulb) follow periodic telemetry (MQTT 1883/8883, CoAP 5683), DNS, NTP, firmware checks,
   cloud HTTPS, video/audio streaming, discovery (mDNS, SSDP, WS-Discovery, Tuya broadcasts) and local
   control, with a diurnal rhythm for human-driven events. Benign traffic includes attack look-alikes:
   refused and unanswered connections with SYN retries, DNS retries, discovery sweeps of LAN hosts,
   a hub polling many devices, P2P hole punching to random ports, persistent connections whose
   120-s flow chunks carry only keep-alives.
2. **Packets** (:func:`_simulate_flat`): per flow, packet directions, payload sizes (bytes),
   inter-arrival times (integer microseconds), TCP flags, header lengths and window fields, drawn from
   the profile with per-device and per-flow variability; padded ``(n_flows, max_packets)`` arrays.
3. **Features** (:func:`compute_flow_features`): all 78 CICIDS2017 features from those arrays with
   CICFlowMeter semantics, in one vectorised pass.

Attack episodes have start and end times, are interleaved with benign traffic, and appear on both
sides of a 70/30 time-ordered split (the first episode of each family ends before 70% of the benign
flows, the last starts after it): DDoS (infected devices flood an external target with SYN, UDP,
ACK or HTTP floods), DoS (external hosts run Hulk, slowloris, slow-POST or a spoofed SYN flood
against the web server of one or two devices), port scans (external or internal scanner; vertical
nmap-style scans, raw SYN or connect(), and masscan-style sweeps of well-known ports across hosts),
malware propagation (``Bot``: Mirai-like telnet scanning, login attempts, payload download, C2
beacons; the infection spreads during the episode and is cleaned at its end) and brute force
(SSH/FTP/telnet/HTTP logins).

``difficulty`` moves attack traffic towards benign behaviour (attack tools using the operating
system's TCP stack instead of tell-tale raw packets, sweeps instead of vertical scans, slower and
randomised pacing, exploit ports shared with benign services) and raises the amount of attack-like
benign noise. At 1.0 a single-flow random forest scores clearly below perfect (macro-F1 over
families about 0.9 on a time-ordered split) while host context (a host's recent flows) recovers
much of the rest; ``benchmarks/bench_synth.py`` measures both.

Example
-------
>>> from fedids.data.synth import SynthConfig, generate_flows
>>> frame = generate_flows(SynthConfig(devices=8, hours=0.5, seed=1))
>>> sorted(frame["family"].unique())  # doctest: +SKIP
['benign', 'botnet', 'bruteforce', 'ddos', 'dos', 'portscan']
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedids.data.features import SYNTHETIC, FlowPackets, flow_features
from fedids.data.formats import write_trafficlabelling_csv
from fedids.data.schema import BENIGN_LABEL, FAMILY, FEATURES, LABEL, SEQ, family_of, normalise_label

__all__ = [
    "SynthConfig",
    "PacketArrays",
    "generate_flows",
    "write_synthetic_csv",
    "compute_flow_features",
    "LABELS",
    "LABEL_FAMILIES",
    "START",
]

START = np.datetime64("2017-07-05T08:00:00", "us")
"""Wall-clock time of the first simulated microsecond (a Wednesday, like CICIDS2017's DoS day)."""

FLOW_TIMEOUT_US = 120e6
"""CICFlowMeter's flow timeout: a flow ends 120 s after its first packet (later packets of the same
5-tuple start a new flow, which is why persistent connections appear as 120-s chunks)."""

ACTIVITY_TIMEOUT_US = 5e6
"""CICFlowMeter's activity timeout: a gap longer than this ends an active period (Active/Idle)."""

# TCP flag bits as on the wire.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128

_RAW_LABELS = (
    BENIGN_LABEL, "DDoS", "DoS Hulk", "DoS slowloris", "DoS Slowhttptest", "DoS SYN Flood",
    "PortScan", "Bot", "SSH-Patator", "FTP-Patator", "Telnet Brute Force", "HTTP Brute Force",
)
LABELS: tuple[str, ...] = tuple(normalise_label(raw) for raw in _RAW_LABELS)
"""Every label the generator emits: CICIDS2017's names where CICIDS2017 has the class, normalised
like :func:`fedids.data.schema.normalise_label` does. The brute force on web logins is called
``"HTTP Brute Force"``: CICIDS2017's ``"Web Attack - Brute Force"`` belongs to the web-attack family."""
LABEL_FAMILIES: dict[str, str] = dict(zip(LABELS, (
    "benign", "ddos", "dos", "dos", "dos", "dos", "portscan", "botnet", "bruteforce", "bruteforce",
    "bruteforce", "bruteforce")))
"""The family :func:`fedids.data.schema.family_of` must give each label (checked by the tests)."""
_L = {raw: i for i, raw in enumerate(_RAW_LABELS)}

_UDP_MAX_PAYLOAD = 1472  # 1500-byte MTU minus IPv4 and UDP headers: larger datagrams are split
_MAX_ROUNDS = 20000


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthConfig:
    """Parameters of one synthetic capture.

    Attributes
    ----------
    devices : int
        IoT devices, 4 to 50,000 (at most 180 per gateway: addresses ``.10`` to ``.189``).
    hours : float
        Simulated time span in hours, 0.25 to 168. Flow count grows linearly with
        ``devices * hours`` (about 480 flows per device-hour, 30k-80k flows at the defaults).
    seed : int
        Seed of the only random generator; the same config gives an identical frame.
    gateways : int
        Gateways, 1 to 250; gateway ``g`` (1-based) serves ``192.168.<g>.0/24``.
    difficulty : float
        0 to 5. 0 = attacks use tell-tale tool packets and little benign noise resembles them;
        larger = attack traffic closer to benign behaviour and more attack-like benign noise.
    attack_fraction : float
        Approximate share of attack flows, 0 to 0.6 (CICIDS2017 has about 0.2). 0 = benign only.
    """

    devices: int = 40
    hours: float = 2.0
    seed: int = 0
    gateways: int = 4
    difficulty: float = 1.0
    attack_fraction: float = 0.2

    def __post_init__(self) -> None:
        def _int(name: str, lo: int, hi: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"SynthConfig.{name} must be an integer, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"SynthConfig.{name} must be in [{lo}, {hi}], got {value}")

        def _real(name: str, lo: float, hi: float) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"SynthConfig.{name} must be a finite number, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"SynthConfig.{name} must be in [{lo}, {hi}], got {value}")

        _int("devices", 4, 50_000)
        _int("gateways", 1, 250)
        _int("seed", 0, 2**63 - 1)
        _real("hours", 0.25, 168.0)
        _real("difficulty", 0.0, 5.0)
        _real("attack_fraction", 0.0, 0.6)
        if self.gateways > self.devices:
            raise ValueError(f"SynthConfig.gateways ({self.gateways}) must not exceed devices ({self.devices})")
        per_gateway = -(-self.devices // self.gateways)
        if per_gateway > 180:
            raise ValueError(
                f"SynthConfig: {self.devices} devices on {self.gateways} gateways is {per_gateway} per "
                "/24 subnet; at most 180 fit (use more gateways)")


# --------------------------------------------------------------------------------------------
# TCP stacks and behaviour profiles
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Stack:
    syn_opt: int       # option bytes on SYN / SYN-ACK (header = 20 + syn_opt)
    ts: bool           # TCP timestamps (+12 bytes on every later segment when both ends have it)
    win_syn: int       # window field on SYN / SYN-ACK; -1 = random per packet (raw-socket tools)
    win_est: float     # median window field on later segments (after window scaling); -1 = random
    mss: int
    rto_us: float      # initial retransmission timeout of SYNs
    cpu_us: float      # median think time between protocol steps (TLS crypto on a microcontroller)
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
_TLS_HEAD = ((250, .25, 3300, .35, 2e4), (130, .15, 240, .5, 1.5e4))


@dataclass(frozen=True)
class _Profile:
    proto: int
    req: tuple[float, float, float, float]     # request bytes per round: median, log-sigma, min, max
    resp: tuple[float, float, float, float]    # response bytes per round
    p_resp: float = 1.0                        # chance that a round gets a response
    gap: tuple[float, float] = (1e6, 1.0)      # think time between rounds: median us, log-sigma
    svc: tuple[float, float] = (5e3, 0.8)      # server time before a response: median us, log-sigma
    close: tuple[float, float] = (5e3, 1.5)    # delay before the teardown: median us, log-sigma
    intra: tuple[float, float] = (80.0, 80.0)  # spacing of back-to-back segments, fwd / bwd, us
    flow_sig: float = 0.3                      # per-flow log-offset of sizes
    acks: bool = True                          # the responder acknowledges TCP data
    head: tuple[tuple[float, float, float, float, float], ...] = ()


_PROFILE_LIST: tuple[tuple[str, _Profile], ...] = (
    # ---- benign ----
    ("dns", _Profile(17, (38, .15, 17, 120), (110, .55, 30, 900), .97, (1.5e6, .8), (9e2, 1.4),
                     flow_sig=.1)),
    ("ntp", _Profile(17, (48, 0, 48, 48), (48, 0, 48, 48), .98, (2e6, .3), (3e2, .5), flow_sig=0)),
    ("mqtt", _Profile(6, (60, .7, 2, 600), (4, 0, 2, 4), .6, (3e7, .15), (2e3, .6), (5e5, 1.0),
                      flow_sig=.35, head=((45, .4, 4, 0, 4e3),))),
    ("mqtts", _Profile(6, (90, .6, 31, 800), (33, .1, 31, 60), .6, (3e7, .15), (3e3, .6), (5e5, 1.0),
                       flow_sig=.35, head=(*_TLS_HEAD, (75, .3, 33, .1, 4e3)))),
    ("coap", _Profile(17, (45, .5, 10, 400), (12, .6, 4, 200), .85, (3e7, .2), (2e3, .8))),
    ("https_api", _Profile(6, (450, .8, 60, 20000), (700, 1.1, 40, 60000), .97, (8e5, 1.2), (2.5e4, .9),
                           (3e5, 2.0), (120, 60), .4, head=_TLS_HEAD)),
    ("http_api", _Profile(6, (260, .4, 80, 2000), (420, .9, 40, 20000), .97, (1e6, 1.0), (1.5e4, .8),
                          (2e4, 1.5))),
    ("fw_download", _Profile(6, (300, .2, 150, 800), (1.2e6, .6, 2e5, 3e6), 1.0, (1e6, .5), (3e4, .6),
                             (2e3, 1.0), (80, 25))),
    ("video_upload", _Profile(6, (6e4, .5, 5e3, 4e5), (60, .3, 31, 300), .5, (1e6, .25), (2e4, .5),
                              (2e5, 1.0), (250, 60), .3, head=_TLS_HEAD)),
    ("rtsp_live", _Profile(6, (90, .5, 40, 400), (5e4, .5, 2e3, 2e5), .98, (1e6, .2), (3e3, .5),
                           (1e4, 1.0), (80, 120), .3,
                           head=((160, .2, 450, .3, 5e3), (180, .2, 250, .3, 4e3), (170, .2, 230, .3, 4e3)))),
    ("p2p_hello", _Profile(17, (24, .3, 4, 120), (20, .3, 4, 120), .9, (1.5e7, .2), (1e3, .5))),
    ("p2p_punch", _Profile(17, (24, .4, 4, 120), (24, .4, 4, 120), .15, (3e5, .8), (1e3, .5))),
    ("ssdp", _Profile(17, (150, .3, 90, 400), (0, 0, 0, 0), 0.0, (1e5, .5))),
    ("mdns", _Profile(17, (80, .8, 12, 1200), (0, 0, 0, 0), 0.0, (2e7, 1.0))),
    ("wsd", _Profile(17, (620, .2, 300, 1000), (0, 0, 0, 0), 0.0, (1e5, .5))),
    ("bcast", _Profile(17, (180, .1, 150, 220), (0, 0, 0, 0), 0.0, (5e6, .05))),
    ("probe", _Profile(6, (1, 0, 1, 1), (1, 0, 1, 1), 1.0)),
    ("probe_http", _Profile(6, (120, .3, 40, 400), (400, .8, 40, 4000), .9, (1e5, .5), (3e3, .8),
                            (2e3, 1.0))),
    ("hub_poll_http", _Profile(6, (110, .3, 60, 400), (180, .6, 20, 3000), .98, (5e5, .5), (8e3, 1.0),
                               (2e3, 1.0))),
    ("hub_poll_udp", _Profile(17, (40, .4, 10, 200), (120, .5, 10, 800), .9, (5e5, .5), (3e3, .8))),
    ("lan_tcp", _Profile(6, (80, .5, 20, 600), (90, .6, 10, 1000), .95, (2e6, 1.2), (5e3, 1.0),
                         (5e3, 2.0))),
    ("keepalive_tcp", _Profile(6, (30, .4, 1, 200), (30, .4, 1, 200), .9, (4e7, .15), (3e3, .8),
                               (5e5, 1.0), head=((60, .3, 40, .3, 5e3),))),
    ("audio_stream", _Profile(6, (60, .5, 31, 400), (4e4, .4, 4e3, 2e5), .97, (5e6, .4), (1.5e4, .5),
                              (5e5, 1.0), (80, 40), .3, head=_TLS_HEAD)),
    ("ssh_admin", _Profile(6, (60, .9, 36, 2000), (100, 1.0, 36, 8000), .95, (8e5, 1.5), (3e3, 1.0),
                           (5e5, 1.5),
                           head=((24, .2, 30, .4, 2e3), (1300, .15, 800, .35, 3e3),
                                 (48, .5, 1000, .3, 2e4), (70, .2, 60, .3, 3e3), (110, .25, 40, .3, 3e4)))),
    ("web_ui", _Profile(6, (420, .5, 150, 3000), (2500, 1.2, 100, 2e5), .97, (1.5e6, 1.3), (2e4, 1.0),
                        (3e6, 1.5), head=((380, .2, 3000, .6, 2e4), (520, .15, 900, .5, 4e4)))),
    ("ftp_upload", _Profile(6, (20, .4, 5, 200), (40, .5, 10, 300), .98, (1e5, .8), (5e3, .8), (1e4, 1.0),
                            head=((0, 0, 40, .4, 3e3), (16, .3, 34, .2, 2e3), (16, .3, 22, .1, 2e4)))),
    # ---- attacks ----
    ("flood_udp", _Profile(17, (512, 0, 512, 512), (0, 0, 0, 0), 0.0, (4e2, .6), flow_sig=0)),
    ("flood_udp_rand", _Profile(17, (300, 1.0, 16, 1400), (0, 0, 0, 0), 0.0, (3e3, 1.5), flow_sig=.3)),
    ("flood_ack", _Profile(6, (512, 0, 512, 512), (0, 0, 0, 0), 0.0, (4e2, .6), acks=False, flow_sig=0)),
    ("flood_http", _Profile(6, (120, .15, 60, 300), (600, 1.0, 40, 2e4), .7, (2e4, 1.0), (8e4, 1.0),
                            (1e3, 1.0), flow_sig=.1)),
    ("hulk", _Profile(6, (380, .35, 150, 900), (350, 1.0, 40, 5e3), .75, (5e3, 1.0), (4e4, 1.2),
                      (3e3, 1.5))),
    ("slowloris", _Profile(6, (12, .5, 3, 40), (0, 0, 0, 0), 0.0, (1.2e7, .25), close=(2e7, .5),
                           head=((230, .15, 0, 0, 0),))),
    ("slowpost", _Profile(6, (4, .8, 1, 20), (0, 0, 0, 0), 0.0, (1e7, .3), close=(2e7, .5),
                          head=((350, .2, 0, 0, 0),))),
    ("scan_version", _Profile(6, (20, 1.2, 1, 300), (120, 1.0, 10, 2000), .6, (5e5, 1.0), (5e3, 1.0),
                              (5e3, 1.0))),
    ("telnet_login", _Profile(6, (9, .3, 1, 40), (30, .4, 8, 200), .95, (3e5, 1.0), (1.2e6, .6),
                              (2e3, 1.0),
                              head=((0, 0, 30, .5, 2e3), (8, .3, 10, .2, 3e3), (9, .3, 30, .3, 2e6)))),
    ("bot_c2", _Profile(6, (2, .3, 1, 40), (2, .3, 1, 40), .9, (6e7, .1), (2e3, .8), (5e5, 1.0),
                        flow_sig=.2, head=((20, .5, 2, .3, 3e3),))),
    ("bot_download", _Profile(6, (110, .2, 60, 300), (8e4, .4, 3e4, 2e5), 1.0, (1e5, .5), (3e4, .6),
                              (2e3, 1.0), (80, 40))),
    ("ssh_brute", _Profile(6, (110, .25, 80, 300), (60, .3, 30, 200), 1.0, (3e4, 1.0), (2e6, .4),
                           (5e3, 1.0),
                           head=((24, .2, 30, .4, 2e3), (1300, .15, 800, .35, 3e3),
                                 (48, .5, 1000, .3, 2e4), (70, .2, 60, .3, 3e3)))),
    ("ftp_brute", _Profile(6, (16, .3, 8, 60), (28, .3, 20, 80), 1.0, (2e4, 1.0), (1.5e6, .8), (5e3, 1.0),
                           head=((0, 0, 40, .4, 3e3), (16, .3, 34, .2, 2e3), (16, .3, 22, .1, 2.5e6)))),
    ("http_brute", _Profile(6, (520, .15, 300, 1000), (900, .5, 200, 4000), 1.0, (2e4, 1.0), (3e4, .8),
                            (5e3, 1.0))),
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
            head[i, :len(p.head)] = p.head
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


# --------------------------------------------------------------------------------------------
# Packets -> features
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PacketArrays:
    """Packets of ``n`` flows, padded to ``L`` packets; all arrays have shape ``(n, L)``.

    Valid packets form a prefix of each row (``valid``); padding values are ignored.

    Attributes
    ----------
    ts_us : float64, packet time in microseconds since the flow's first packet (non-decreasing).
    size : float64, payload bytes (CICFlowMeter's "packet length" is the transport payload).
    fwd : bool, True when the packet travels from the flow's source (its first packet's sender).
    flags : uint8, TCP flag bits (FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64, CWR 128); 0 for UDP.
    header : float64, transport header bytes (TCP: 20 + options; UDP: 8).
    window : float64, TCP window field; -1 for UDP.
    valid : bool, real packet (True) or padding (False).
    """

    ts_us: np.ndarray
    size: np.ndarray
    fwd: np.ndarray
    flags: np.ndarray
    header: np.ndarray
    window: np.ndarray
    valid: np.ndarray


def _flat_packets(ts: np.ndarray, size: np.ndarray, fwd: np.ndarray, flags: np.ndarray,
                  header: np.ndarray, window: np.ndarray, first: np.ndarray,
                  counts: np.ndarray) -> FlowPackets:
    """The first ``counts[i]`` packets from ``first[i]`` on of each flow, as :class:`FlowPackets`."""
    counts = np.asarray(counts, dtype=np.int64)
    idx = np.repeat(np.asarray(first, dtype=np.int64), counts) + _ragged_arange(counts)
    return FlowPackets(starts=np.cumsum(counts) - counts, ts_us=ts[idx], size=size[idx],
                       fwd=fwd[idx], flags=flags[idx], header=header[idx], window=window[idx])


def compute_flow_features(packets: PacketArrays, dst_port: np.ndarray) -> np.ndarray:
    """All 78 CICIDS2017 features of ``n`` flows from their packets, CICFlowMeter semantics.

    Parameters
    ----------
    packets : PacketArrays with arrays of shape ``(n, L)``; every row has at least one valid packet
        and its first packet is forward.
    dst_port : int array ``(n,)``, the flows' destination ports (feature ``Destination Port``).

    Returns
    -------
    float64 array ``(n, 78)``, columns in :data:`fedids.data.schema.FEATURES` order. Units: durations
    and IATs in microseconds, lengths in bytes, rates per second.

    Notes
    -----
    The definition is :func:`fedids.data.features.flow_features`, the one the packet extractor uses,
    with :data:`fedids.data.features.SYNTHETIC` semantics:

    * Standard deviations and the variance are sample statistics (``n - 1``), 0 below two values.
    * Rates (``Flow Bytes/s`` ...) are 0 for zero-duration flows, where CICIDS2017 has Infinity/NaN,
      so that every feature is finite (python CICFlowMeter ports also write 0).
    * ``Down/Up Ratio`` is ``floor(bwd / fwd)`` (CICFlowMeter divides integers).
    * Flag counts are the numbers of packets carrying the flag (CICIDS2017's released files have 0/1
      there because of a CICFlowMeter bug); ``CWE Flag Count`` counts CWR.
    * Active/Idle: a gap longer than :data:`ACTIVITY_TIMEOUT_US` ends an active period; idle values
      are those gaps, active values the positive lengths of the periods between them (the last one,
      up to the flow's last packet, included).
    * Bulk features are 0: CICFlowMeter's bulk detection left them 0 in every CICIDS2017 row, and
      models learn nothing from them.
    * Subflow features equal the totals (one subflow per flow, as in CICIDS2017).
    """
    valid = packets.valid
    counts = valid.sum(axis=1)
    width = valid.shape[1]
    flat = [np.asarray(a).reshape(-1) for a in (packets.ts_us, packets.size, packets.fwd,
                                                 packets.flags, packets.header, packets.window)]
    first = np.arange(len(counts), dtype=np.int64) * width
    p = _flat_packets(*flat, first=first, counts=counts)
    return flow_features(p, dst_port, SYNTHETIC)


# --------------------------------------------------------------------------------------------
# Packet simulation
# --------------------------------------------------------------------------------------------

def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(c) for c in counts])`` without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def _lognormal(rng: np.random.Generator, median: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    median = np.asarray(median, dtype=np.float64)
    return np.exp(np.log(np.maximum(median, 1e-9)) + np.asarray(sigma) * rng.standard_normal(median.shape))


def _jitter(rng: np.random.Generator, n: int, sigma: np.ndarray | float) -> np.ndarray:
    """Log-normal factors with median 1: ``exp(sigma * N(0, 1))``, shape ``(n,)``."""
    return np.exp(np.asarray(sigma) * rng.standard_normal(n))


def _decode_burst(t: np.ndarray, n_seg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position ``t`` in a burst laid out as ``seg seg ack seg seg ack ...`` (an ACK every 2 segments).

    Returns (is_segment, segment index, ack index).
    """
    m, r = np.divmod(t, 3)
    j = 2 * m + r
    is_seg = (r < 2) & (j < n_seg)
    return is_seg, j, m


def _simulate_packets(plan: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[PacketArrays, np.ndarray]:
    """Simulate the packets of planned flows (a plan as :class:`_Plan` builds it).

    Returns the padded packets ``(n, L)``, ``L`` = the longest flow, and the int64 number of valid
    packets per flow ``(n,)``. Flows are cut at :data:`FLOW_TIMEOUT_US` like CICFlowMeter does.
    """
    flat, counts = _simulate_flat(plan, rng)
    width = int(counts.max()) if len(counts) else 1
    return _pad(flat, counts, np.arange(len(counts)), width), counts


def _simulate_flat(plan: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Packets of all planned flows as flat arrays (flows contiguous, in order), and valid counts."""
    prof = plan["profile"].astype(np.int64)
    n = len(prof)
    hs = plan["hs"].astype(np.int64)
    retries = np.clip(plan["retries"].astype(np.int64), 0, _MAX_RETRIES)
    sf, sb = plan["stack_f"].astype(np.int64), plan["stack_b"].astype(np.int64)
    tcp = _PT["proto"][prof] == 6
    hs = np.where(tcp, hs, HS_NONE)
    connected = (hs == HS_FULL) | (hs == HS_NONE)
    rtt_f = plan["rtt_f"].astype(np.float64)
    rtt_b = plan["rtt_b"].astype(np.float64)
    mss = np.where(tcp, np.minimum(_ST["mss"][sf], _ST["mss"][sb]), _UDP_MAX_PAYLOAD).astype(np.float64)
    ts_ok = tcp & _ST["ts"][sf] & _ST["ts"][sb]
    ecn = tcp & _ST["ecn"][sf] & _ST["ecn"][sb]
    head_len = np.where(hs == HS_FULL, _PT["head_len"][prof], 0)
    rounds = np.where(connected, np.clip(plan["rounds"].astype(np.int64), 0, _MAX_ROUNDS) + head_len, 0)
    td = np.where(tcp & connected, plan["td"].astype(np.int64), TD_NONE)

    # ---- handshake packets
    hs_n = _HS_BASE_LEN[hs] + np.where((hs == HS_UNANSWERED) | (hs == HS_SYNACK_RETRY), retries, 0)
    hs_n = np.where(tcp, hs_n, 0)
    hf = np.repeat(np.arange(n), hs_n)
    hk = _ragged_arange(hs_n)
    h_dir = _HS_DIR[hs[hf], hk]
    h_flags = _HS_FLAGS[hs[hf], hk].copy()
    h_kind = _HS_KIND[hs[hf], hk]
    override = (hk == 0) | ((hs[hf] == HS_UNANSWERED) & h_dir)
    h_flags = np.where(override & (plan["flags0"][hf] != 0), plan["flags0"][hf], h_flags).astype(np.uint8)
    syn_pkt = (h_flags & SYN) != 0
    h_flags = np.where(ecn[hf] & syn_pkt & h_dir, h_flags | ECE | CWR, h_flags)
    h_flags = np.where(ecn[hf] & syn_pkt & ~h_dir, h_flags | ECE, h_flags).astype(np.uint8)
    backoff_k = np.where(hs[hf] == HS_SYNACK_RETRY, hk - 2, hk - 1).clip(0)
    h_iat = np.select(
        [h_kind == 1, h_kind == 2, h_kind == 3, h_kind == 4],
        [rtt_b[hf] * _jitter(rng, len(hf), .15),
         rtt_f[hf] * _jitter(rng, len(hf), .15) + 20,
         _ST["rto_us"][sf[hf]] * 2.0 ** backoff_k * (1 + .01 * rng.random(len(hf))),
         _ST["rto_us"][sb[hf]] * 2.0 ** backoff_k * (1 + .01 * rng.random(len(hf)))],
        0.0)

    # ---- request/response rounds
    rf = np.repeat(np.arange(n), rounds)
    rr = _ragged_arange(rounds)
    rp = prof[rf]
    in_head = rr < head_len[rf]
    head = _PT["head"][rp, np.minimum(rr, _PT["head"].shape[1] - 1)]
    req_med = np.where(in_head, head[:, 0], _PT["req_med"][rp])
    req_sig = np.where(in_head, head[:, 1], _PT["req_sig"][rp])
    resp_med = np.where(in_head, head[:, 2], _PT["resp_med"][rp])
    resp_sig = np.where(in_head, head[:, 3], _PT["resp_sig"][rp])
    svc_med = np.where(in_head, head[:, 4], _PT["svc_a"][rp])
    req_lo = np.where(in_head, np.maximum(1.0, req_med / 4), _PT["req_lo"][rp])
    req_hi = np.where(in_head, req_med * 4 + 1, _PT["req_hi"][rp])
    resp_lo = np.where(in_head, np.maximum(1.0, resp_med / 4), _PT["resp_lo"][rp])
    resp_hi = np.where(in_head, resp_med * 4 + 1, _PT["resp_hi"][rp])
    flow_sig = _PT["flow_sig"][prof]
    off_req = plan["size_shift"].astype(np.float64) + flow_sig * rng.standard_normal(n)
    off_resp = 0.5 * plan["size_shift"].astype(np.float64) + flow_sig * rng.standard_normal(n)
    req = np.clip(np.rint(_lognormal(rng, req_med, req_sig) * np.exp(off_req[rf])), req_lo, req_hi)
    req = np.where(req_med > 0, req, 0.0)
    # A flow without handshake starts with its source's data: round 0 needs a request.
    req = np.where((rr == 0) & (hs[rf] == HS_NONE), np.maximum(req, 1.0), req)
    has_resp = (resp_med > 0) & (in_head | (rng.random(len(rf)) < _PT["p_resp"][rp]))
    resp = np.clip(np.rint(_lognormal(rng, resp_med, resp_sig) * np.exp(off_resp[rf])), resp_lo, resp_hi)
    resp = np.where(has_resp, resp, 0.0)
    r_mss = mss[rf]
    nq = np.ceil(req / r_mss).astype(np.int64)
    nr = np.ceil(resp / r_mss).astype(np.int64)
    r_tcp = tcp[rf]
    peer_acks = r_tcp & _PT["acks"][rp]
    kb = np.where(peer_acks, np.where(nr == 0, (nq + 1) // 2, nq // 2), 0)
    ka = np.where(r_tcp, (nr + 1) // 2, 0)
    phase_a = nq + kb
    c = phase_a + nr + ka
    # Gap before each round: the client's protocol work right after the handshake and within the
    # opening exchanges, think/period time afterwards.
    cpu = _ST["cpu_us"][sf[rf]] * _jitter(rng, len(rf), .6)
    think = plan["gap_us"].astype(np.float64)[rf] * _jitter(rng, len(rf), _PT["gap_b"][rp])
    gap = np.where(rr <= head_len[rf], cpu, think)
    lat = rtt_b[rf] * _jitter(rng, len(rf), .15) + svc_med * _jitter(rng, len(rf), _PT["svc_b"][rp])

    # ---- teardown
    td_n = _TD_LEN[td]
    data_n = np.bincount(rf, weights=c, minlength=n).astype(np.int64)
    total = hs_n + data_n + td_n
    flow_off = np.cumsum(total) - total

    n_pkt = int(total.sum())
    out_fwd = np.zeros(n_pkt, bool)
    out_size = np.zeros(n_pkt)
    out_flags = np.zeros(n_pkt, np.uint8)
    out_iat = np.zeros(n_pkt)

    idx = flow_off[hf] + hk
    out_fwd[idx], out_flags[idx], out_iat[idx] = h_dir, h_flags, h_iat

    # Each round is laid out as [request segments with the responder's ACKs every two segments]
    # then [response segments with the initiator's ACKs every two segments].
    round_off = np.cumsum(c) - c  # position of each round among all rounds' packets
    flow_round_start = (np.cumsum(data_n) - data_n)[rf]  # ... and of its flow's first round
    pf_round = np.repeat(np.arange(len(rf)), c)
    i = _ragged_arange(c)
    f_of = rf[pf_round]
    in_a = i < phase_a[pf_round]
    t_a = i
    t_b = i - phase_a[pf_round]
    seg_a, j_a, a_a = _decode_burst(t_a, nq[pf_round])
    seg_b, j_b, a_b = _decode_burst(t_b, nr[pf_round])
    is_seg = np.where(in_a, seg_a, seg_b)
    j = np.where(in_a, j_a, j_b)
    ack_i = np.where(in_a, a_a, a_b)
    nseg = np.where(in_a, nq[pf_round], nr[pf_round])
    nbytes = np.where(in_a, req[pf_round], resp[pf_round])
    p_mss = r_mss[pf_round]
    size = np.where(is_seg, np.where(j < nseg - 1, p_mss, nbytes - (nseg - 1) * p_mss), 0.0)
    fwd = np.where(in_a, is_seg, ~is_seg)
    p_tcp = r_tcp[pf_round]
    flags = np.where(p_tcp, np.where(is_seg & (j == nseg - 1), ACK | PSH, ACK), 0).astype(np.uint8)
    rp_p = rp[pf_round]
    intra_f = _PT["intra_a"][rp_p]
    intra_b = _PT["intra_b"][rp_p]
    unit = _jitter(rng, len(i), .5)
    first_of_round = i == 0
    # Inter-arrival time before each packet, as seen at the gateway: the round's think/protocol gap,
    # back-to-back segment spacing, ACKs after the peer's round trip, the response after the
    # responder's round trip plus its service time.
    iat = np.select(
        [first_of_round & in_a,
         in_a & is_seg,
         in_a & (ack_i == 0),
         in_a,
         t_b == 0,
         is_seg,
         ack_i == 0],
        [gap[pf_round],
         intra_f * unit,
         rtt_b[f_of] * unit ** .4,
         intra_f * unit,
         lat[pf_round] + np.where(phase_a[pf_round] == 0, gap[pf_round], 0.0),
         intra_b * unit,
         rtt_f[f_of] * unit ** .4 + 20],
        intra_b * unit)
    idx = flow_off[f_of] + hs_n[f_of] + (round_off[pf_round] - flow_round_start[pf_round]) + i
    out_fwd[idx], out_size[idx], out_flags[idx], out_iat[idx] = fwd, size, flags, iat

    tf = np.repeat(np.arange(n), td_n)
    tk = _ragged_arange(td_n)
    t_dir = _TD_DIR[td[tf], tk]
    t_kind = _TD_KIND[td[tf], tk]
    close = _lognormal(rng, _PT["close_a"][prof[tf]], _PT["close_b"][prof[tf]])
    t_iat = np.select([t_kind == 5, t_kind == 1], [close, rtt_b[tf] * _jitter(rng, len(tf), .15)],
                      rtt_f[tf] * _jitter(rng, len(tf), .15) + 20)
    idx = flow_off[tf] + hs_n[tf] + data_n[tf] + tk
    out_fwd[idx], out_flags[idx], out_iat[idx] = t_dir, _TD_FLAGS[td[tf], tk], t_iat

    # ---- times, header lengths, windows
    pflow = np.repeat(np.arange(n), total)
    out_iat = np.maximum(np.rint(out_iat), 1.0)
    out_iat[flow_off] = 0.0
    cum = np.cumsum(out_iat)
    ts = cum - np.repeat(cum[flow_off], total)
    keep = ts <= FLOW_TIMEOUT_US
    counts = np.bincount(pflow, weights=keep, minlength=n).astype(np.int64)

    p_tcp = tcp[pflow]
    syn = (out_flags & SYN) != 0
    rst = (out_flags & RST) != 0
    own = np.where(out_fwd, sf[pflow], sb[pflow])
    header = np.where(p_tcp, np.where(syn, 20 + _ST["syn_opt"][own], np.where(rst, 20, 20 + 12 * ts_ok[pflow])), 8)
    win_syn = _ST["win_syn"][own].astype(np.float64)
    win_syn = np.where(win_syn < 0, rng.integers(0, 65536, n_pkt), win_syn)
    win_est = _ST["win_est"][own].astype(np.float64)
    win_est = np.where(win_est < 0, rng.integers(0, 65536, n_pkt),
                       np.rint(win_est * _jitter(rng, n_pkt, .25)))
    window = np.where(p_tcp, np.where(syn, win_syn, np.where(rst, 0.0, win_est)), -1.0)
    flat = {"ts": ts, "size": out_size, "fwd": out_fwd, "flags": out_flags,
            "header": header.astype(np.float64), "window": window, "flow_off": flow_off}
    return flat, counts


def _pad(flat: dict[str, np.ndarray], counts: np.ndarray, rows: np.ndarray, width: int) -> PacketArrays:
    """Gather flows ``rows`` of the flat packet arrays into ``(len(rows), width)`` padded arrays."""
    cols = np.arange(width)
    valid = cols[None, :] < counts[rows, None]
    idx = flat["flow_off"][rows, None] + np.where(valid, cols[None, :], 0)
    return PacketArrays(
        ts_us=flat["ts"][idx], size=flat["size"][idx], fwd=flat["fwd"][idx] & valid,
        flags=flat["flags"][idx], header=flat["header"][idx], window=flat["window"][idx], valid=valid)


def _features_of_plan(plan: dict[str, np.ndarray], rng: np.random.Generator,
                      progress: Callable[[int], None] | None, chunk: int = 20000) -> np.ndarray:
    """Simulate packets and compute features for every planned flow, chunk by chunk (flat packet
    arrays, no padding)."""
    n = len(plan["profile"])
    out = np.empty((n, len(FEATURES)))
    done = 0
    for lo in range(0, n, chunk):
        part = {k: v[lo:lo + chunk] for k, v in plan.items()}
        flat, counts = _simulate_flat(part, rng)
        p = _flat_packets(flat["ts"], flat["size"], flat["fwd"], flat["flags"], flat["header"],
                          flat["window"], first=flat["flow_off"], counts=counts)
        out[lo:lo + len(counts)] = flow_features(p, part["dport"], SYNTHETIC)
        done += len(counts)
        if progress is not None:
            progress(done)
    return out


# --------------------------------------------------------------------------------------------
# Flow plan
# --------------------------------------------------------------------------------------------

_PLAN_DTYPES = {
    "t0": np.float64, "src": np.int32, "dst": np.int32, "sport": np.int32, "dport": np.int32,
    "label": np.int16, "device": np.int32, "profile": np.int16, "hs": np.int8, "retries": np.int8,
    "flags0": np.uint8, "rounds": np.int32, "td": np.int8, "rtt_f": np.float32, "rtt_b": np.float32,
    "size_shift": np.float32, "gap_us": np.float32, "stack_f": np.int8, "stack_b": np.int8,
}

_KINDS = ("camera", "thermostat", "plug", "speaker", "hub", "door_sensor", "bulb")
_KIND_WEIGHTS = np.array([0.2, 0.1, 0.2, 0.12, 0.08, 0.14, 0.16])
_CAMERA, _THERMOSTAT, _PLUG, _SPEAKER, _HUB, _DOOR, _BULB = range(7)
_KIND_STACKS = {
    _CAMERA: ("linux_iot", "linux_iot_new"), _THERMOSTAT: ("linux_iot", "lwip"),
    _PLUG: ("lwip", "rtos_small"), _SPEAKER: ("linux_iot_new", "android"), _HUB: ("linux_iot", "linux_iot_new"),
    _DOOR: ("lwip", "rtos_small"), _BULB: ("rtos_small", "lwip"),
}
# Local service ports a device of each kind listens on (what a scan finds open).
_KIND_PORTS = {
    _CAMERA: (80, 554, 8000), _THERMOSTAT: (80,), _PLUG: (6668,), _SPEAKER: (8008, 8009, 8443, 10001),
    _HUB: (80, 443, 8080, 1883), _DOOR: (), _BULB: (55443,),
}
_LOCAL_API_PORT = {_CAMERA: 80, _THERMOSTAT: 80, _PLUG: 6668, _SPEAKER: 8009, _HUB: 8080, _BULB: 55443}
_DISCOVERY_PORTS = np.array([80, 443, 1400, 5000, 7000, 8008, 8009, 8080, 8443, 9000, 49152, 49153, 55443])
_SCAN_PORTS = np.array([
    21, 22, 23, 25, 53, 80, 81, 88, 110, 111, 135, 139, 143, 443, 445, 465, 554, 587, 993, 995, 1080,
    1433, 1723, 1883, 2000, 2323, 3306, 3389, 5000, 5060, 5222, 5432, 5555, 5900, 6379, 6668, 7547,
    8000, 8008, 8009, 8080, 8081, 8443, 8883, 8888, 9000, 9090, 9100, 9999, 10000, 37777, 49152,
    49153, 55443,
])
_OTHER_PORTS = np.setdiff1d(np.arange(1, 65536), _SCAN_PORTS)
_EXPLOIT_PORTS = np.array([80, 81, 443, 5555, 7547, 8080, 8443, 37215, 52869, 60001])
_CLOUD_OCTETS = (3, 13, 18, 34, 35, 44, 52, 54, 104, 142, 143, 151, 157, 162, 184)
_ATTACKER_OCTETS = (5, 31, 37, 45, 46, 77, 80, 89, 91, 103, 109, 112, 117, 176, 178, 185, 193, 194,
                    195, 212, 213, 217, 222)


class _Hosts:
    """IP address table: flows refer to hosts by index."""

    def __init__(self) -> None:
        self.ips: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, ip: str) -> int:
        if ip not in self._index:
            self._index[ip] = len(self.ips)
            self.ips.append(ip)
        return self._index[ip]

    def public(self, rng: np.random.Generator, n: int, octets: tuple[int, ...]) -> np.ndarray:
        """``n`` new distinct public-looking addresses whose first octet is one of ``octets``."""
        out: list[int] = []
        while len(out) < n:
            m = n - len(out)
            a = np.asarray(octets)[rng.integers(0, len(octets), m)]
            b, c, d = rng.integers(0, 256, m), rng.integers(0, 256, m), rng.integers(1, 255, m)
            for ip in map("{}.{}.{}.{}".format, a.tolist(), b.tolist(), c.tolist(), d.tolist()):
                if ip not in self._index:
                    out.append(self.add(ip))
        return np.array(out, dtype=np.int32)


class _Plan:
    """Accumulates flow rows (dict of arrays) from the emitters."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, **cols: object) -> None:
        n = len(np.asarray(cols["t0"]))
        if n == 0:
            return
        part = {}
        for name, dtype in _PLAN_DTYPES.items():
            value = np.asarray(cols.pop(name, 0))
            part[name] = np.broadcast_to(value, (n,)).astype(dtype)
        if cols:
            raise TypeError(f"unknown plan columns {sorted(cols)}")
        self.parts.append(part)

    def build(self) -> dict[str, np.ndarray]:
        if not self.parts:
            return {name: np.zeros(0, dtype) for name, dtype in _PLAN_DTYPES.items()}
        return {name: np.concatenate([p[name] for p in self.parts]) for name in _PLAN_DTYPES}

    def count(self) -> int:
        return sum(len(p["t0"]) for p in self.parts)


@dataclass
class _World:
    """The simulated site: devices, their cloud services, user clients, and the plan being built."""

    cfg: SynthConfig
    rng: np.random.Generator
    T: float
    hosts: _Hosts
    plan: _Plan
    kind: np.ndarray
    gw: np.ndarray
    ip: np.ndarray
    stack: np.ndarray
    rtt_lan: np.ndarray
    rtt_wan: np.ndarray
    size: np.ndarray
    pace: np.ndarray
    cloud: np.ndarray        # (n_devices, 4): api, broker, update server, extra endpoint
    cloud_stack: np.ndarray
    telnet: np.ndarray
    ssh: np.ndarray
    ftp: np.ndarray
    weak: np.ndarray         # telnet with factory credentials: what a Mirai-like worm can infect
    names: list[str]
    gw_ip: np.ndarray        # (G,) gateway address (DNS forwarder)
    bcast: np.ndarray        # (G,) subnet broadcast address
    phones: np.ndarray       # (G, 2)
    laptop: np.ndarray       # (G,)
    ntp: np.ndarray
    relays: np.ndarray
    cdn: np.ndarray
    public_dns: np.ndarray
    mcast: dict[str, int]

    @property
    def n(self) -> int:
        return len(self.kind)

    def of_kind(self, *kinds: int) -> np.ndarray:
        return np.flatnonzero(np.isin(self.kind, kinds))

    def sports(self, stacks: np.ndarray) -> np.ndarray:
        lo, hi = _ST_SPORT[stacks, 0], _ST_SPORT[stacks, 1]
        return (lo + self.rng.integers(0, 1 << 30, len(stacks)) % (hi - lo + 1)).astype(np.int32)

    def wan_rtt(self, dev: np.ndarray) -> np.ndarray:
        return self.rtt_wan[dev] * _jitter(self.rng, len(dev), .2)

    def lan_rtt(self, dev: np.ndarray) -> np.ndarray:
        return self.rtt_lan[dev] * _jitter(self.rng, len(dev), .4)

    def ports_open(self, dev: int) -> set[int]:
        ports = set(_KIND_PORTS[int(self.kind[dev])])
        if self.telnet[dev]:
            ports.add(23)
        if self.ssh[dev]:
            ports.add(22)
        if self.ftp[dev]:
            ports.add(21)
        return ports


def _build_world(cfg: SynthConfig, rng: np.random.Generator) -> _World:
    n, G = cfg.devices, cfg.gateways
    hosts = _Hosts()
    counts = np.floor(_KIND_WEIGHTS * n).astype(int)
    if n >= len(_KINDS):
        counts = np.maximum(counts, 1)
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    order = np.argsort(-(_KIND_WEIGHTS * n - counts), kind="stable")
    k = 0
    while counts.sum() < n:
        counts[order[k % len(order)]] += 1
        k += 1
    kind = rng.permutation(np.repeat(np.arange(len(_KINDS)), counts))
    gw = (np.arange(n) % G) + 1
    slot = np.arange(n) // G
    ip = np.array([hosts.add(f"192.168.{g}.{10 + s}") for g, s in zip(gw, slot)], dtype=np.int32)
    names = [f"{_KINDS[k]}-{i:03d}" for i, k in enumerate(kind)]
    stack = np.array([_STACK[_KIND_STACKS[k][int(rng.random() < .4)]] for k in kind], dtype=np.int64)
    gw_ip = np.array([hosts.add(f"192.168.{g}.1") for g in range(1, G + 1)], dtype=np.int32)
    bcast = np.array([hosts.add(f"192.168.{g}.255") for g in range(1, G + 1)], dtype=np.int32)
    phones = np.array([[hosts.add(f"192.168.{g}.{200 + p}") for p in range(2)] for g in range(1, G + 1)],
                      dtype=np.int32)
    laptop = np.array([hosts.add(f"192.168.{g}.210") for g in range(1, G + 1)], dtype=np.int32)
    mcast = {name: hosts.add(ip_) for name, ip_ in (
        ("ssdp", "239.255.255.250"), ("mdns", "224.0.0.251"), ("wsd", "239.255.255.250"))}
    # Each device kind talks to its vendor's cloud: a pool of addresses per kind.
    pools = [hosts.public(rng, 6, _CLOUD_OCTETS) for _ in _KINDS]
    cloud = np.stack([rng.choice(pools[k], 4, replace=False) for k in kind]).astype(np.int32)
    cloud_stack = np.where(rng.random(n) < .6, _STACK["cloud_linux"], _STACK["cloud_lb"])
    public_dns = np.array([hosts.add("8.8.8.8"), hosts.add("1.1.1.1")], dtype=np.int32)
    gw_rtt = _lognormal(rng, np.full(G, 18e3), .5)  # access-link RTT of each gateway to the clouds
    rtt_wan = gw_rtt[gw - 1] * _jitter(rng, n, .3)
    rtt_lan = _lognormal(rng, np.full(n, 1.5e3), .6)  # Wi-Fi hop between device and gateway
    linuxish = np.isin(kind, (_CAMERA, _PLUG, _BULB))
    telnet = linuxish & (rng.random(n) < np.where(kind == _CAMERA, .45, .25))
    weak = telnet & (rng.random(n) < .7)
    # Keep a worm able to spread: at least two devices (where possible) with factory credentials.
    spare = np.flatnonzero(linuxish & ~weak)
    need = max(0, min(2, int(linuxish.sum())) - int(weak.sum()))
    if need:
        pick = rng.choice(spare, need, replace=False)
        telnet[pick] = weak[pick] = True
    return _World(
        cfg=cfg, rng=rng, T=cfg.hours * 3600e6, hosts=hosts, plan=_Plan(), kind=kind, gw=gw, ip=ip,
        stack=stack, rtt_lan=rtt_lan, rtt_wan=rtt_wan, size=0.25 * rng.standard_normal(n),
        pace=_jitter(rng, n, .25), cloud=cloud, cloud_stack=cloud_stack,
        telnet=telnet, weak=weak,
        ssh=np.isin(kind, (_HUB, _CAMERA)) & (rng.random(n) < np.where(kind == _HUB, .8, .3)),
        ftp=(kind == _CAMERA) & (rng.random(n) < .35),
        names=names, gw_ip=gw_ip, bcast=bcast, phones=phones, laptop=laptop,
        ntp=hosts.public(rng, 4, _CLOUD_OCTETS), relays=hosts.public(rng, 3, _CLOUD_OCTETS),
        cdn=hosts.public(rng, 4, _CLOUD_OCTETS), public_dns=public_dns, mcast=mcast,
    )


# ---- timing processes -------------------------------------------------------------------

def _activity(t_us: np.ndarray) -> np.ndarray:
    """Diurnal activity of people at home, in (0, 1]: morning and evening peaks, quiet nights."""
    hour = (8.0 + np.asarray(t_us) / 3.6e9) % 24.0
    bumps = (0.6 * np.exp(-0.5 * ((hour - 7.5) / 1.2) ** 2) + np.exp(-0.5 * ((hour - 20.0) / 2.2) ** 2)
             + 0.35 * np.exp(-0.5 * ((hour - 13.0) / 2.5) ** 2))
    return np.clip(0.12 + 0.88 * bumps, 0.0, 1.0)


def _poisson(w: _World, devs: np.ndarray, rate_h: float | np.ndarray,
             diurnal: bool = False, lo: float = 0.0, hi: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Event times (us) of a Poisson process per device on ``[lo, hi)``; ``diurnal`` thins by activity."""
    hi = w.T if hi is None else hi
    devs = np.asarray(devs, dtype=np.int64)
    rate = np.broadcast_to(np.asarray(rate_h, dtype=float), devs.shape) * (hi - lo) / 3.6e9
    k = w.rng.poisson(rate)
    d = np.repeat(devs, k)
    t = lo + w.rng.random(len(d)) * (hi - lo)
    if diurnal:
        keep = w.rng.random(len(t)) < _activity(t)
        d, t = d[keep], t[keep]
    return d, t


def _periodic(w: _World, devs: np.ndarray, period_s: np.ndarray | float,
              jitter: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Times of a jittered periodic process per device with a random phase."""
    devs = np.asarray(devs, dtype=np.int64)
    period = np.broadcast_to(np.asarray(period_s, dtype=float), devs.shape) * 1e6
    phase = w.rng.random(len(devs)) * period
    k = np.maximum(np.floor((w.T - phase) / period).astype(np.int64) + 1, 0)
    d_idx = np.repeat(np.arange(len(devs)), k)
    t = phase[d_idx] + _ragged_arange(k) * period[d_idx] + jitter * period[d_idx] * w.rng.standard_normal(len(d_idx))
    keep = (t >= 0) & (t < w.T)
    return devs[d_idx][keep], t[keep]


def _chunks(w: _World, devs: np.ndarray, period_s: np.ndarray, reconnect_h: float) -> dict[str, np.ndarray]:
    """120-s flow chunks of one persistent connection per device (with occasional reconnects).

    The connection existing before the capture starts, its first chunk has no handshake. Returns
    arrays per chunk: ``di`` (index into ``devs``), ``dev``, ``t0``, ``first`` (carries the handshake),
    ``last`` (connection ends after it), ``conn`` (connection id) and ``rounds`` (messages in the
    chunk), and ``conn_dev``, the device of every connection id.
    """
    rng = w.rng
    devs = np.asarray(devs, dtype=np.int64)
    period = np.broadcast_to(np.asarray(period_s, dtype=float), devs.shape) * 1e6
    n_rc = rng.poisson(reconnect_h * w.T / 3.6e9, len(devs))
    seg_dev_i = np.repeat(np.arange(len(devs)), n_rc + 1)
    k = _ragged_arange(n_rc + 1)
    start = np.where(k == 0, -rng.random(len(k)) * FLOW_TIMEOUT_US, rng.random(len(k)) * w.T)
    order = np.lexsort((start, seg_dev_i))
    seg_dev_i, start, k = seg_dev_i[order], start[order], _ragged_arange(n_rc + 1)
    end = np.append(start[1:], w.T)
    is_last_seg = np.append(seg_dev_i[1:] != seg_dev_i[:-1], True)
    end = np.where(is_last_seg, w.T, end)
    p = period[seg_dev_i]
    step = FLOW_TIMEOUT_US + 0.5 * p
    n_ch = np.maximum(np.ceil((end - start) / step).astype(np.int64), 1)
    ci = np.repeat(np.arange(len(start)), n_ch)
    ck = _ragged_arange(n_ch)
    t0 = start[ci] + ck * step[ci] + 0.3 * p[ci] * rng.random(len(ci))
    first = (ck == 0) & (start[ci] >= 0)
    last = (ck == n_ch[ci] - 1) & ~is_last_seg[ci]
    ok = t0 + step[ci] > 0
    # The chunk running when the capture starts is seen from its first packet after time 0.
    t0 = np.where(t0 < 0, rng.random(len(t0)) * np.minimum(p[ci], step[ci]), t0)
    ok &= (t0 < w.T) & (t0 < end[ci])
    rounds = np.maximum(rng.poisson(FLOW_TIMEOUT_US / p[ci]), 1)
    return {"di": seg_dev_i[ci][ok], "dev": devs[seg_dev_i[ci]][ok], "t0": t0[ok], "first": first[ok],
            "last": last[ok], "conn": ci[ok], "rounds": rounds[ok],
            "conn_dev": devs[seg_dev_i]}


def _choice(rng: np.random.Generator, options: tuple, probs: tuple, n: int) -> np.ndarray:
    return np.asarray(options)[rng.choice(len(options), size=n, p=np.asarray(probs) / np.sum(probs))]


# ---- benign emitters ----------------------------------------------------------------------

def _emit(w: _World, dev: np.ndarray, t0: np.ndarray, profile: str, dst: np.ndarray | int, dport,
          *, src=None, sport=None, hs=HS_FULL, rounds=1, td=TD_FIN, rtt_f=None, rtt_b=None,
          stack_f=None, stack_b=None, gap_us=None, size_shift=None, label: int = 0,
          retries=0, flags0=0) -> None:
    """Add flows of one profile; unspecified columns get the device's defaults."""
    dev = np.asarray(dev, dtype=np.int64)
    n = len(dev)
    if n == 0:
        return
    sf = w.stack[dev] if stack_f is None else np.broadcast_to(stack_f, (n,))
    pid = _PROFILE[profile]
    w.plan.add(
        t0=t0, src=w.ip[dev] if src is None else src, dst=dst,
        sport=w.sports(np.asarray(sf, dtype=np.int64)) if sport is None else sport, dport=dport,
        label=label, device=dev, profile=pid, hs=hs, retries=retries, flags0=flags0, rounds=rounds, td=td,
        rtt_f=w.lan_rtt(dev) if rtt_f is None else rtt_f, rtt_b=w.wan_rtt(dev) if rtt_b is None else rtt_b,
        size_shift=w.size[dev] if size_shift is None else size_shift,
        gap_us=_PT["gap_default"][pid] if gap_us is None else gap_us,
        stack_f=sf, stack_b=w.cloud_stack[dev] if stack_b is None else stack_b)


def _teardown(rng: np.random.Generator, n: int, p_fin: float = .72, p_server: float = .1,
              p_rst_f: float = .04, p_rst_b: float = .04) -> np.ndarray:
    """Teardown mix of ordinary connections; the rest are left open (cut by the flow timeout)."""
    p_none = max(0.0, 1 - p_fin - p_server - p_rst_f - p_rst_b)
    return _choice(rng, (TD_FIN, TD_FIN_SERVER, TD_RST_FWD, TD_RST_BWD, TD_NONE),
                   (p_fin, p_server, p_rst_f, p_rst_b, p_none), n)


def _dns(w: _World, dev: np.ndarray, t: np.ndarray) -> None:
    rng = w.rng
    n = len(dev)
    public = (w.kind[dev] == _SPEAKER) | (rng.random(n) < .1)
    dst = np.where(public, w.public_dns[rng.integers(0, 2, n)], w.gw_ip[w.gw[dev] - 1])
    # The gateway forwarder answers from its cache or asks upstream: latency is bimodal.
    rtt_b = np.where(public, w.wan_rtt(dev), w.lan_rtt(dev))
    # A lost answer is retried from the same socket (same flow) after ~1-5 s.
    retry = rng.random(n) < .04 + .02 * w.cfg.difficulty
    rounds = np.where(retry, 2, np.where(rng.random(n) < .25, 2, 1))
    gap = np.where(retry, _lognormal(rng, np.full(n, 2e6), .4), _lognormal(rng, np.full(n, 3e3), 1.0))
    _emit(w, dev, t, "dns", dst, 53, hs=HS_NONE, rounds=rounds, td=TD_NONE, rtt_b=rtt_b, gap_us=gap)


def _connections(w: _World, dev: np.ndarray, t: np.ndarray, profile: str, dst: np.ndarray, dport,
                 rounds: np.ndarray | int = 1, p_dns: float = 0.3, **kw) -> None:
    """Ordinary client connections, a DNS lookup before some of them (cache misses)."""
    rng = w.rng
    n = len(dev)
    if n == 0:
        return
    lookup = rng.random(n) < p_dns
    _dns(w, dev[lookup], np.maximum(t[lookup] - _lognormal(rng, np.full(lookup.sum(), 3e4), .8), 0))
    kw.setdefault("td", _teardown(rng, n))
    _emit(w, dev, t, profile, dst, dport, rounds=rounds, **kw)


def _persistent(w: _World, devs: np.ndarray, profile: str, dst: np.ndarray, dport, period_s: np.ndarray,
                reconnect_h: float = .3) -> None:
    """A long-lived TCP connection per device (MQTT, vendor keep-alive), seen as 120-s chunks."""
    if len(devs) == 0:
        return
    rng = w.rng
    ch = _chunks(w, devs, period_s, reconnect_h)
    dev, di, n = ch["dev"], ch["di"], len(ch["dev"])
    sport = w.sports(w.stack[ch["conn_dev"]])[ch["conn"]]  # one source port per connection
    td = np.where(ch["last"], _choice(rng, (TD_RST_BWD, TD_RST_FWD, TD_FIN, TD_NONE), (.3, .2, .2, .3), n),
                  TD_NONE)
    dst_arr = np.asarray(dst)[di] if np.ndim(dst) else dst
    gap = np.broadcast_to(period_s, devs.shape)[di] * 1e6
    _emit(w, dev, ch["t0"], profile, dst_arr, dport, sport=sport, hs=np.where(ch["first"], HS_FULL, HS_NONE),
          rounds=ch["rounds"], td=td, gap_us=gap)


def _udp_stream(w: _World, devs: np.ndarray, profile: str, dst: np.ndarray, dport, sport,
                period_s: np.ndarray, rtt_b: str = "wan") -> None:
    """Periodic UDP exchanges between fixed ports: CICFlowMeter cuts them into 120-s flows."""
    if len(devs) == 0:
        return
    ch = _chunks(w, devs, period_s, 0.0)
    dev, pos = ch["dev"], ch["di"]
    dst_arr = np.asarray(dst)[pos] if np.ndim(dst) else dst
    sport_arr = np.asarray(sport)[pos] if np.ndim(sport) else sport
    gap = np.broadcast_to(period_s, devs.shape)[pos] * 1e6
    rtt = w.wan_rtt(dev) if rtt_b == "wan" else w.lan_rtt(dev)
    _emit(w, dev, ch["t0"], profile, dst_arr, dport, sport=sport_arr, hs=HS_NONE, rounds=ch["rounds"],
          td=TD_NONE, gap_us=gap, rtt_b=rtt)


def _failed(w: _World, dev: np.ndarray, t: np.ndarray, dst: np.ndarray, dport: np.ndarray,
            rtt_b: np.ndarray, stack_b=None, label: int = 0, p_refused: float = .5) -> None:
    """Connection attempts that fail: refused (SYN, RST) or unanswered (SYN and retransmissions)."""
    rng = w.rng
    n = len(dev)
    refused = rng.random(n) < p_refused
    retries = np.where(refused, 0, rng.integers(1, 6, n))  # OS stacks retransmit an unanswered SYN
    _emit(w, dev, t, "probe", dst, dport, hs=np.where(refused, HS_REFUSED, HS_UNANSWERED), rounds=0,
          td=TD_NONE, retries=retries, rtt_b=rtt_b, stack_b=stack_b, label=label)


# A hub, sweeper or SSDP asker deals with at most this many LAN peers, so that flows per device stay
# the same however many devices share a subnet (flow count linear in devices x hours).
_MAX_LAN_PEERS = 12


def _lan_hosts(w: _World, g: int) -> np.ndarray:
    return np.flatnonzero(w.gw == g)


def _plan_benign(w: _World) -> None:
    rng, cfg = w.rng, w.cfg
    noise = 0.5 + 0.5 * cfg.difficulty  # attack-like benign noise grows with difficulty
    all_dev = np.arange(w.n)

    # DNS: low TTLs and little caching make IoT devices chatty resolvers.
    dns_rate = np.array([220, 120, 140, 400, 200, 30, 100], float)[w.kind] * w.pace
    _dns(w, *_poisson(w, all_dev, dns_rate))
    # NTP/SNTP at a device-specific period.
    d, t = _periodic(w, all_dev, np.array([3600, 1800, 3600, 900, 1024, 3600, 3600], float)[w.kind] * w.pace)
    _emit(w, d, t, "ntp", w.ntp[rng.integers(0, 4, len(d))], 123, hs=HS_NONE,
          rounds=np.where(rng.random(len(d)) < .15, 4, 1), td=TD_NONE, gap_us=2e6)

    # Telemetry over persistent MQTT (TLS or plain) / vendor keep-alive connections.
    tele = w.of_kind(_CAMERA, _THERMOSTAT, _HUB, _SPEAKER)
    tls = tele[rng.random(len(tele)) < .8]
    _persistent(w, tls, "mqtts", w.cloud[tls, 1], 8883, 30 * w.pace[tls])
    plain = np.setdiff1d(tele, tls)
    _persistent(w, plain, "mqtt", w.cloud[plain, 1], 1883, 45 * w.pace[plain])
    small = w.of_kind(_PLUG, _BULB)
    tuya = small[rng.random(len(small)) < .5]
    _persistent(w, tuya, "keepalive_tcp", w.cloud[tuya, 1], 8886, 40 * w.pace[tuya], reconnect_h=.5)
    other = np.setdiff1d(small, tuya)
    _persistent(w, other, "mqtt", w.cloud[other, 1], 1883, 60 * w.pace[other], reconnect_h=.5)
    # CoAP telemetry from thermostats and plugs (fixed port 5683 on both ends).
    coap = w.of_kind(_THERMOSTAT, _PLUG)
    coap = coap[rng.random(len(coap)) < .5]
    _udp_stream(w, coap, "coap", w.cloud[coap, 0], 5683, 5683, 20 * w.pace[coap])
    # Local UDP broadcasts announcing plugs and bulbs (Tuya-style, every few seconds).
    bc = small[rng.random(len(small)) < .6]
    _udp_stream(w, bc, "bcast", w.bcast[w.gw[bc] - 1], 6667, 6667, 5 * w.pace[bc], rtt_b="lan")

    # Cameras: P2P relay hellos, motion-triggered notification + clip upload, hole punching.
    cam = w.of_kind(_CAMERA)
    for r in range(3):
        _udp_stream(w, cam, "p2p_hello", w.relays[(np.arange(len(cam)) + r) % 3], 32100,
                    w.sports(w.stack[cam]), 15 * w.pace[cam])
    d, t = _poisson(w, cam, 14 * w.pace[cam], diurnal=True)
    _connections(w, d, t, "https_api", w.cloud[d, 0], 443, rounds=rng.integers(1, 3, len(d)), p_dns=.5)
    up = rng.random(len(d)) < .8
    _connections(w, d[up], t[up] + _lognormal(rng, np.full(up.sum(), 5e5), .5), "video_upload",
                 w.cloud[d[up], 3], 443, rounds=rng.integers(4, 40, up.sum()), gap_us=8e5, p_dns=.3)
    d, t = _poisson(w, cam, 3 * noise, diurnal=False)
    k = rng.integers(3, 9, len(d))
    d, t = np.repeat(d, k), np.repeat(t, k) + _ragged_arange(k) * _lognormal(rng, np.full(k.sum(), 2e5), .8)
    peer = w.hosts.public(rng, max(len(d) // 5, 1), _ATTACKER_OCTETS + _CLOUD_OCTETS)
    _emit(w, d, t, "p2p_punch", peer[rng.integers(0, len(peer), len(d))], rng.integers(10000, 65000, len(d)),
          hs=HS_NONE, rounds=rng.integers(1, 3, len(d)), td=TD_NONE)
    # Live view from a phone: RTSP sessions, cut into 120-s flows.
    d, t = _poisson(w, cam, 0.6, diurnal=True)
    minutes = _lognormal(rng, np.full(len(d), 2.0), .7)
    k = np.ceil(minutes * 60e6 / (FLOW_TIMEOUT_US + 5e5)).astype(np.int64)
    d_r = np.repeat(d, k)
    kk = _ragged_arange(k)
    session = np.repeat(np.arange(len(d)), k)
    phone = w.phones[w.gw[d] - 1, rng.integers(0, 2, len(d))]
    phone_stack = np.where(rng.random(len(d)) < .5, _STACK["android"], _STACK["ios"])
    _emit(w, d_r, np.repeat(t, k) + kk * (FLOW_TIMEOUT_US + 5e5), "rtsp_live", w.ip[d_r], 554,
          src=phone[session], sport=w.sports(phone_stack)[session],
          hs=np.where(kk == 0, HS_FULL, HS_NONE), rounds=110, gap_us=1e6,
          td=np.where(kk == k[session] - 1, TD_FIN, TD_NONE),
          rtt_f=w.lan_rtt(d_r), rtt_b=w.lan_rtt(d_r), stack_f=phone_stack[session], stack_b=w.stack[d_r])
    # WS-Discovery/ONVIF hello.
    d, t = _poisson(w, cam, 2)
    _emit(w, d, t, "wsd", w.mcast["wsd"], 3702, hs=HS_NONE, rounds=rng.integers(1, 3, len(d)), td=TD_NONE,
          rtt_b=w.lan_rtt(d))

    # Cloud API calls and firmware checks, all device kinds.
    api_rate = np.array([14, 16, 10, 30, 24, 8, 8], float)[w.kind] * w.pace
    d, t = _poisson(w, all_dev, api_rate, diurnal=True)
    _connections(w, d, t, "https_api", w.cloud[d, 0], 443, rounds=rng.geometric(.5, len(d)), p_dns=.4)
    # Heartbeats over a fresh HTTPS connection every few minutes (devices without persistent links).
    hb = all_dev[w.kind != _DOOR]
    d, t = _periodic(w, hb, rng.choice([30.0, 60.0, 120.0, 180.0], len(hb)) * w.pace[hb], jitter=.02)
    _connections(w, d, t, "https_api", w.cloud[d, 0], 443, rounds=1, p_dns=.15,
                 td=_teardown(rng, len(d), p_fin=.8))
    d, t = _periodic(w, all_dev, 3600 * w.pace, jitter=.2)
    plain_http = rng.random(len(d)) < .5
    _connections(w, d[plain_http], t[plain_http], "http_api", w.cloud[d[plain_http], 2], 80, p_dns=.6)
    d, t = d[~plain_http], t[~plain_http]
    _connections(w, d, t, "https_api", w.cloud[d, 2], 443, p_dns=.6)
    d, t = _poisson(w, all_dev, .03)
    _connections(w, d, t, "fw_download", w.cloud[d, 2], 80, p_dns=1.0)
    # Door sensors wake up on events and heartbeats: a fresh TLS connection each time.
    door = w.of_kind(_DOOR)
    d, t = _poisson(w, door, 4, diurnal=True)
    d2, t2 = _periodic(w, door, 600 * w.pace[door], jitter=.05)
    d, t = np.concatenate([d, d2]), np.concatenate([t, t2])
    _connections(w, d, t, "mqtts", w.cloud[d, 1], 8883, rounds=rng.integers(1, 3, len(d)), p_dns=.9,
                 td=_teardown(rng, len(d), p_fin=.85))

    # Smart speakers: voice sessions (bursts of HTTPS), audio streaming, mDNS, SSDP.
    spk = w.of_kind(_SPEAKER)
    d, t = _poisson(w, spk, 5, diurnal=True)
    k = rng.integers(3, 9, len(d))
    d, t = np.repeat(d, k), np.repeat(t, k) + _ragged_arange(k) * _lognormal(rng, np.full(k.sum(), 4e5), 1.0)
    _connections(w, d, t, "https_api", w.cloud[d, rng.integers(0, 4, len(d))], 443,
                 rounds=rng.integers(1, 5, len(d)), p_dns=.6)
    d, t = _poisson(w, spk, .4, diurnal=True)
    minutes = _lognormal(rng, np.full(len(d), 15.0), .8)
    k = np.ceil(minutes * 60e6 / (FLOW_TIMEOUT_US + 2e5)).astype(np.int64)
    d_r, kk = np.repeat(d, k), _ragged_arange(k)
    last = kk == np.repeat(k, k) - 1
    _emit(w, d_r, np.repeat(t, k) + kk * (FLOW_TIMEOUT_US + 2e5), "audio_stream",
          w.cdn[rng.integers(0, 4, len(d_r))], 443, sport=np.repeat(w.sports(w.stack[d]), k),
          hs=np.where(kk == 0, HS_FULL, HS_NONE), rounds=rng.integers(15, 30, len(d_r)), gap_us=5e6,
          td=np.where(last, TD_FIN, TD_NONE))
    for devs in (spk, w.of_kind(_HUB)):
        _udp_stream(w, devs, "mdns", w.mcast["mdns"], 5353, 5353, 25 * w.pace[devs], rtt_b="lan")
        d, t = _poisson(w, devs, 6)
        sport = w.sports(w.stack[d])
        _emit(w, d, t, "ssdp", w.mcast["ssdp"], 1900, sport=sport, hs=HS_NONE,
              rounds=rng.integers(1, 4, len(d)), td=TD_NONE, gap_us=1e5, rtt_b=w.lan_rtt(d))
        # UPnP devices of the subnet answer the M-SEARCH by unicast from port 1900 to the asker's
        # ephemeral port: UDP flows to "random" high ports, one per responder.
        upnp = np.isin(w.kind, (_CAMERA, _SPEAKER, _HUB)) | w.telnet
        for asker, t_s, port in zip(d, t, sport):
            resp = np.flatnonzero(upnp & (w.gw == w.gw[asker]))
            resp = resp[resp != asker]
            if len(resp) == 0:
                continue
            resp = np.sort(rng.choice(resp, min(len(resp), _MAX_LAN_PEERS // 3), replace=False))
            _emit(w, resp, t_s + _lognormal(rng, np.full(len(resp), 3e5), .8), "ssdp", w.ip[asker], port,
                  sport=1900, hs=HS_NONE, rounds=rng.integers(1, 3, len(resp)), td=TD_NONE, gap_us=5e3,
                  rtt_b=w.lan_rtt(resp))

    # Discovery sweeps (speakers, hubs): probe every live LAN host on a few ports. Scan-like.
    sweepers = w.of_kind(_SPEAKER, _HUB)
    d, t = _poisson(w, sweepers, 1.2 * noise)
    for dev, t_s in zip(d, t):
        g = w.gw[dev]
        targets = np.setdiff1d(_lan_hosts(w, g), [dev])
        if len(targets) == 0:
            continue
        targets = np.sort(rng.choice(targets, min(len(targets), _MAX_LAN_PEERS), replace=False))
        ports = rng.choice(_DISCOVERY_PORTS, size=int(rng.integers(2, 5)), replace=False)
        tg = np.repeat(targets, len(ports))
        pt = np.tile(ports, len(targets))
        times = t_s + np.cumsum(_lognormal(rng, np.full(len(tg), 2e4), 1.0))
        open_ = np.array([p in w.ports_open(x) for x, p in zip(tg, pt)], bool)
        devv = np.full(len(tg), dev)
        _emit(w, devv[open_], times[open_], "probe_http", w.ip[tg[open_]], pt[open_], rounds=1,
              td=_teardown(rng, int(open_.sum()), p_fin=.9), rtt_b=w.lan_rtt(tg[open_]),
              stack_b=w.stack[tg[open_]])
        _emit(w, devv[~open_], times[~open_], "probe", w.ip[tg[~open_]], pt[~open_], hs=HS_REFUSED,
              rounds=0, td=TD_NONE, rtt_b=w.lan_rtt(tg[~open_]), stack_b=w.stack[tg[~open_]])

    # Hubs poll the local API of the devices in their subnet: many short LAN connections.
    for hub in w.of_kind(_HUB):
        targets = np.array([x for x in _lan_hosts(w, w.gw[hub]) if int(w.kind[x]) in _LOCAL_API_PORT
                            and x != hub], dtype=np.int64)
        if len(targets) == 0:
            continue
        targets = np.sort(rng.choice(targets, min(len(targets), _MAX_LAN_PEERS), replace=False))
        period = rng.choice([15.0, 30.0, 60.0, 120.0], len(targets))
        tg, t = _periodic(w, targets, period, jitter=.01)
        port = np.array([_LOCAL_API_PORT[int(k)] for k in w.kind[tg]], dtype=np.int64)
        hubv = np.full(len(tg), hub)
        # A polled device that is busy or rebooting refuses or ignores the connection.
        fail = rng.random(len(tg)) < .03 * noise
        _emit(w, hubv[~fail], t[~fail], "hub_poll_http", w.ip[tg[~fail]], port[~fail], rounds=1,
              td=_teardown(rng, int((~fail).sum()), p_fin=.9), rtt_b=w.lan_rtt(tg[~fail]),
              stack_b=w.stack[tg[~fail]])
        _failed(w, hubv[fail], t[fail], w.ip[tg[fail]], port[fail], w.lan_rtt(tg[fail]),
                stack_b=w.stack[tg[fail]])

    # People control devices from their phones (local API), diurnal.
    ctl = np.flatnonzero(np.isin(w.kind, list(_LOCAL_API_PORT)))
    d, t = _poisson(w, ctl, 3, diurnal=True)
    phone = w.phones[w.gw[d] - 1, rng.integers(0, 2, len(d))]
    pst = np.where(rng.random(len(d)) < .5, _STACK["android"], _STACK["ios"])
    port = np.array([_LOCAL_API_PORT[int(k)] for k in w.kind[d]], dtype=np.int64)
    _emit(w, d, t, "lan_tcp", w.ip[d], port, src=phone, rounds=rng.integers(1, 6, len(d)),
          td=_teardown(w.rng, len(d)), rtt_f=w.lan_rtt(d), rtt_b=w.lan_rtt(d), stack_f=pst, stack_b=w.stack[d])
    # Web UI logins and automation over SSH (hubs, cameras), FTP snapshot uploads (cameras).
    web = w.of_kind(_CAMERA, _HUB)
    d, t = _poisson(w, web, .5, diurnal=True)
    phone = w.phones[w.gw[d] - 1, rng.integers(0, 2, len(d))]
    _emit(w, d, t, "web_ui", w.ip[d], np.where(w.kind[d] == _HUB, 8080, 80), src=phone,
          rounds=rng.integers(2, 30, len(d)), td=_teardown(rng, len(d)), rtt_f=w.lan_rtt(d), rtt_b=w.lan_rtt(d),
          stack_f=_STACK["android"], stack_b=w.stack[d])
    sshd = np.flatnonzero(w.ssh)
    d, t = _poisson(w, sshd, .4)
    _emit(w, d, t, "ssh_admin", w.ip[d], 22, src=w.laptop[w.gw[d] - 1], rounds=rng.integers(1, 80, len(d)),
          td=_teardown(rng, len(d), p_fin=.9), rtt_f=w.lan_rtt(d), rtt_b=w.lan_rtt(d),
          stack_f=_STACK["linux_iot_new"], stack_b=w.stack[d])
    ftpd = np.flatnonzero(w.ftp)
    d, t = _poisson(w, ftpd, 1.5, diurnal=True)
    _connections(w, d, t, "ftp_upload", w.cloud[d, 3], 21, rounds=rng.integers(3, 8, len(d)), p_dns=.5)

    # Attack look-alikes: failed cloud connections with retries, in small bursts.
    d, t = _poisson(w, all_dev, 1.5 * noise)
    k = rng.integers(1, 5, len(d))
    d, t = np.repeat(d, k), np.repeat(t, k) + _ragged_arange(k) * _lognormal(rng, np.full(k.sum(), 5e6), .8)
    port = _choice(rng, (443, 8883, 80, 1883, 8886, 9000, 5222, 10001), (5, 3, 2, 1, 1, 1, 1, 1), len(d))
    _failed(w, d, t, w.cloud[d, rng.integers(0, 4, len(d))], port, w.wan_rtt(d), p_refused=.4)


# ---- attack episodes ------------------------------------------------------------------------

_FAMILY_SHARE = {"ddos": .28, "dos": .2, "portscan": .2, "botnet": .16, "bruteforce": .16}
_EPISODE_MINUTES = {"ddos": (4, 10), "dos": (5, 14), "portscan": (3, 10), "botnet": (15, 40),
                    "bruteforce": (5, 15)}


@dataclass(frozen=True)
class _Episode:
    family: str
    start: float
    end: float
    budget: int


def _schedule(w: _World, n_benign: int, benign_t: np.ndarray) -> list[_Episode]:
    """Attack episodes: each family on both sides of the 70/30 split of benign flows in time."""
    cfg, rng = w.cfg, w.rng
    if cfg.attack_fraction <= 0:
        return []
    total = n_benign * cfg.attack_fraction / (1 - cfg.attack_fraction)
    t70 = float(np.quantile(benign_t, .7)) if len(benign_t) else .7 * w.T
    sides = [(0.02 * w.T, t70 - .05 * w.T, .7), (t70 + .04 * w.T, .98 * w.T, .3)]
    k_side = max(1, int(round(cfg.hours / 3)))
    episodes = []
    for fam, share in _FAMILY_SHARE.items():
        lo_m, hi_m = _EPISODE_MINUTES[fam]
        for lo, hi, weight in sides:
            slot = (hi - lo) / k_side
            for k in range(k_side):
                dur = min(rng.uniform(lo_m, hi_m) * 60e6, .8 * slot)
                start = lo + k * slot + rng.random() * (slot - dur)
                episodes.append(_Episode(fam, start, start + dur, max(8, int(total * share * weight / k_side))))
    return episodes


def _times(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    return np.sort(lo + rng.random(n) * (hi - lo))


def _pick_devices(w: _World, k: int, prefer: tuple[int, ...] = ()) -> np.ndarray:
    rng = w.rng
    weight = np.where(np.isin(w.kind, prefer), 4.0, 1.0) if prefer else np.ones(w.n)
    return rng.choice(w.n, size=min(k, w.n), replace=False, p=weight / weight.sum())


def _stealth(w: _World) -> float:
    """Probability that an attack flow uses the OS stack / benign-like pacing instead of a raw tool."""
    # 0.1 at difficulty 0, about 0.5 at 1, 0.73 at 2, 0.85 at 3, approaching 1 without saturating.
    return float(1.0 - 0.9 * np.exp(-0.6 * w.cfg.difficulty))


def _ddos(w: _World, ep: _Episode) -> None:
    rng = w.rng
    bots = _pick_devices(w, int(np.clip(round(w.n * .12), 3, 12)), (_CAMERA, _PLUG, _BULB))
    target = w.hosts.public(rng, 1, _CLOUD_OCTETS + _ATTACKER_OCTETS)[0]
    vectors = ("syn", "udp", "udpplain", "ack", "http")
    # The C2 orders several attack vectors; every bot runs each of them for its share of the flows.
    mix = rng.dirichlet(np.array([3.0, 2.0, 1.0, 1.5, 2.5]) * 4)
    per_bot = rng.multinomial(ep.budget, np.ones(len(bots)) / len(bots))
    s = _stealth(w)
    label = _L["DDoS"]
    jobs = [(bot, vec, int(k)) for bot, n in zip(bots, per_bot)
            for vec, k in zip(vectors, rng.multinomial(n, mix)) if k > 0]
    for bot, vec, n in jobs:
        lo = ep.start + rng.random() * .15 * (ep.end - ep.start)
        hi = ep.end - rng.random() * .1 * (ep.end - ep.start)
        t = _times(rng, int(n), lo, hi)
        dev = np.full(len(t), bot)
        rtt_b = w.wan_rtt(dev) * 1.5  # the target is far and congested
        dport = int(rng.integers(1024, 65536))
        if vec == "syn":
            raw = rng.random(len(t)) >= s
            _emit(w, dev, t, "probe", target, rng.choice([80, 443], len(t)),
                  hs=np.where(rng.random(len(t)) < .5, HS_UNANSWERED, HS_HALF_OPEN), rounds=0, td=TD_NONE,
                  stack_f=np.where(raw, _STACK["mirai_syn"], w.stack[bot]), stack_b=_STACK["cloud_linux"],
                  rtt_b=rtt_b, label=label)
        elif vec == "udp":
            # Random source port per packet: (almost) every packet is a flow of its own.
            prof = "flood_udp" if rng.random() >= s else "flood_udp_rand"
            _emit(w, dev, t, prof, target, rng.integers(1, 65536, len(t)), hs=HS_NONE,
                  rounds=rng.integers(1, 4, len(t)), td=TD_NONE, gap_us=_lognormal(rng, np.full(len(t), 1e3), .5),
                  rtt_b=rtt_b, label=label)
        elif vec == "udpplain":
            # One socket: bursts of hundreds to thousands of datagrams on a fixed 5-tuple.
            m = max(1, len(t) // 20)
            tb = t[:: max(1, len(t) // m)][:m]
            prof = "flood_udp" if rng.random() >= s else "flood_udp_rand"
            _emit(w, dev[:m], tb, prof, target, dport, sport=int(rng.integers(32768, 61000)), hs=HS_NONE,
                  rounds=rng.integers(300, 3000, m), td=TD_NONE, gap_us=_lognormal(rng, np.full(m, 5e2), .4),
                  rtt_b=rtt_b[:m], label=label)
        elif vec == "ack":
            _emit(w, dev, t, "flood_ack", target, rng.choice([80, 443], len(t)), hs=HS_NONE,
                  rounds=rng.integers(1, 3, len(t)),
                  td=np.where(rng.random(len(t)) < .6, TD_RST_BWD, TD_NONE),
                  stack_f=_STACK["mirai"], stack_b=_STACK["cloud_linux"], rtt_b=rtt_b, label=label)
        else:
            _emit(w, dev, t, "flood_http", target, 80, rounds=rng.integers(1, 4, len(t)),
                  td=_teardown(rng, len(t), p_fin=.4, p_rst_f=.2, p_rst_b=.15),
                  gap_us=_lognormal(rng, np.full(len(t), 2e4 * (1 + 10 * s)), 1.0),
                  stack_b=_STACK["cloud_linux"], rtt_b=rtt_b, label=label)


def _dos(w: _World, ep: _Episode) -> None:
    """Two external hosts attack the web servers of one or two devices with a mix of DoS tools."""
    rng = w.rng
    web = w.of_kind(_CAMERA, _HUB, _THERMOSTAT)
    web = web if len(web) else np.arange(w.n)
    victims = rng.choice(web, size=min(len(web), int(rng.integers(1, 3))), replace=False)
    web_port = np.where(w.kind == _HUB, 8080, 80)
    attacker = w.hosts.public(rng, 2, _ATTACKER_OCTETS)
    s = _stealth(w)
    variants = ("hulk", "slowloris", "slowpost", "synflood")
    # Every episode mixes the tools in its own proportions, so each tool occurs on both sides of a split.
    share = rng.multinomial(ep.budget, rng.dirichlet(np.full(len(variants), 6.0)))
    for variant, n in zip(variants, share):
        n = int(n)
        if n == 0:
            continue
        t = _times(rng, n, ep.start + rng.random() * .2 * (ep.end - ep.start), ep.end)
        dev = victims[rng.integers(0, len(victims), n)]
        port = web_port[dev]
        src = attacker[rng.integers(0, 2, n)]
        rtt_f = _lognormal(rng, np.full(n, 6e4), .4)  # the attacker's packets cross the Internet
        astack = np.where(rng.random(n) < .5, _STACK["kali"], _STACK["windows"])
        if variant == "hulk":
            _emit(w, dev, t, "hulk", w.ip[dev], port, src=src, rounds=rng.integers(1, 3, n),
                  td=_teardown(rng, n, p_fin=.3, p_server=.1, p_rst_f=.1, p_rst_b=.2),
                  gap_us=_lognormal(rng, np.full(n, 5e3 * (1 + 20 * s)), 1.0), rtt_f=rtt_f,
                  rtt_b=w.lan_rtt(dev) * 3, stack_f=astack, stack_b=w.stack[dev], label=_L["DoS Hulk"])
        elif variant in ("slowloris", "slowpost"):
            # Each connection trickles a few bytes every ~10-15 s until the flow timeout or a reset.
            gap = _lognormal(rng, np.full(n, 1.2e7 * (1 + .5 * s)), .25)
            _emit(w, dev, t, variant, w.ip[dev], port, src=src, rounds=rng.integers(3, 12, n),
                  td=_choice(rng, (TD_NONE, TD_RST_BWD, TD_FIN_SERVER), (.6, .25, .15), n), gap_us=gap,
                  rtt_f=rtt_f, rtt_b=w.lan_rtt(dev), stack_f=astack, stack_b=w.stack[dev],
                  label=_L["DoS slowloris" if variant == "slowloris" else "DoS Slowhttptest"])
        else:
            # Spoofed sources: every SYN from a fresh address; the victim retransmits its SYN-ACK.
            spoof = w.hosts.public(rng, n, _ATTACKER_OCTETS + _CLOUD_OCTETS)
            _emit(w, dev, t, "probe", w.ip[dev], port, src=spoof, sport=rng.integers(1024, 65536, n),
                  hs=HS_SYNACK_RETRY, retries=rng.integers(0, 5, n), rounds=0, td=TD_NONE, rtt_f=rtt_f,
                  rtt_b=w.lan_rtt(dev), stack_f=np.where(rng.random(n) < s, _STACK["kali"], _STACK["hping"]),
                  stack_b=w.stack[dev], label=_L["DoS SYN Flood"])


def _portscan(w: _World, ep: _Episode) -> None:
    """A scanner (external, or inside a subnet) probes devices.

    Two modes share the budget: *vertical* scans of many ports of a few hosts (nmap's default order:
    well-known ports first) and, a share that grows with difficulty, a *horizontal* sweep of the
    well-known ports across many hosts (masscan style), which resembles benign discovery sweeps.
    """
    rng = w.rng
    s = _stealth(w)
    internal = rng.random() < .5
    g = int(rng.integers(1, w.cfg.gateways + 1))
    pool = _lan_hosts(w, g) if internal else np.arange(w.n)
    if internal:
        scanner = w.laptop[g - 1] if rng.random() < .5 else w.hosts.add(f"192.168.{g}.{230 + int(rng.integers(0, 9))}")
    else:
        scanner = w.hosts.public(rng, 1, _ATTACKER_OCTETS)[0]
    n_sweep = int(rng.binomial(ep.budget, .6 * s))
    n_vertical = ep.budget - n_sweep
    # A target has 65,535 ports: very large budgets spread over more targets.
    n_targets = max(int(rng.integers(2, 6)), -(-n_vertical // 60000))
    targets = rng.choice(pool, size=min(len(pool), n_targets), replace=False)
    per_target = int(np.clip(n_vertical // len(targets), 1, 65535))
    span = (ep.end - ep.start) / (len(targets) + (n_sweep > 0))
    jobs = []  # (target per probe, port per probe, start, end)
    for k, tg in enumerate(targets):
        # nmap order: the well-known ports first (shuffled), then the rest of the range.
        ports = np.concatenate([rng.permutation(_SCAN_PORTS),
                                rng.permutation(_OTHER_PORTS)[:max(0, per_target - len(_SCAN_PORTS))]])[:per_target]
        slow = rng.random() < .3 * s
        lo = ep.start + k * span
        jobs.append((np.full(len(ports), tg), ports, lo, lo + span * (1.0 if slow else .9)))
    if n_sweep:
        # port by port across the hosts of the pool; repeated passes if the budget asks for more
        ports = rng.permutation(_SCAN_PORTS)
        hosts = rng.permutation(pool)
        reps = -(-n_sweep // (len(ports) * len(hosts)))
        pairs_port = np.tile(np.repeat(ports, len(hosts)), reps)[:n_sweep]
        pairs_host = np.tile(np.tile(hosts, len(ports)), reps)[:n_sweep]
        lo = ep.start + len(targets) * span
        jobs.append((pairs_host, pairs_port, lo, ep.end))
    label = _L["PortScan"]
    src_port = int(rng.integers(32768, 61000))  # nmap keeps one source port for its raw probes
    for tg, ports, lo, hi in jobs:
        n = len(ports)
        # Raw SYN scan (nmap -sS: window 1024, MSS-only options) or connect() scan through the OS
        # stack, whose probes look like any failed connection.
        connect = rng.random() < s
        t = _times(rng, n, lo, hi)
        open_ = np.array([int(p) in w.ports_open(int(d)) for d, p in zip(tg, ports)], bool)
        rtt_f = w.lan_rtt(tg) if internal else _lognormal(rng, np.full(n, 5e4), .4)
        stack = _STACK["linux_iot_new"] if connect else _STACK["nmap"]
        sport = w.sports(np.full(n, stack)) if connect else src_port
        hs_open = HS_FULL if connect else HS_HALF_OPEN
        # Closed ports answer with RST; a few probes are dropped and retried by the scanner.
        dropped = rng.random(n) < .08
        hs = np.where(open_, hs_open, np.where(dropped, HS_UNANSWERED, HS_REFUSED))
        flags0 = 0 if connect else np.where(rng.random(n) < .05 * (1 - s), FIN | PSH | URG, 0)
        _emit(w, tg, t, "probe", w.ip[tg], ports, src=scanner, sport=sport, hs=hs, rounds=0,
              td=np.where(open_ & connect, TD_RST_FWD, TD_NONE), retries=np.where(dropped, 1, 0),
              flags0=flags0, rtt_f=rtt_f, rtt_b=w.lan_rtt(tg), stack_f=stack, stack_b=w.stack[tg], label=label)
        # Service/version detection on the open ports found.
        if open_.any():
            dv, op = tg[open_], ports[open_]
            tv = t[-1] + np.cumsum(_lognormal(rng, np.full(len(op), 2e5), 1.0))
            _emit(w, dv, tv, "scan_version", w.ip[dv], op, src=scanner, rounds=rng.integers(1, 4, len(op)),
                  td=_teardown(rng, len(op), p_fin=.5, p_rst_f=.4), rtt_f=rtt_f[open_], rtt_b=w.lan_rtt(dv),
                  stack_f=_STACK["kali"], stack_b=w.stack[dv], label=label)


def _telnet_login(w: _World, bot: int, victim: int, t: float, attempts: int, success: bool,
                  label: int) -> float:
    """Mirai-style credential attempts from ``bot`` to ``victim``'s telnet; returns the end time."""
    rng = w.rng
    starts = t + np.cumsum(_lognormal(rng, np.full(attempts, 3e6), .5))
    rounds = np.full(attempts, 0)
    if success:
        rounds[-1] = int(rng.integers(3, 7))  # shell commands after the login
    dev = np.full(attempts, bot)
    _emit(w, dev, starts, "telnet_login", w.ip[victim], np.where(rng.random(attempts) < .9, 23, 2323),
          rounds=rounds, td=_choice(rng, (TD_FIN_SERVER, TD_RST_FWD, TD_FIN), (.5, .3, .2), attempts),
          rtt_f=w.lan_rtt(dev), rtt_b=w.lan_rtt(np.full(attempts, victim)), stack_b=w.stack[victim], label=label)
    return float(starts[-1] + 5e6)


def _botnet(w: _World, ep: _Episode) -> None:
    """Malware propagation: scanning, telnet logins, payload download, C2 beacons; the set of infected
    devices grows during the episode and is cleaned (devices rebooted) at its end."""
    rng = w.rng
    label = _L["Bot"]
    s = _stealth(w)
    vulnerable = set(np.flatnonzero(w.weak).tolist())
    zero = int(rng.choice(sorted(vulnerable))) if vulnerable else int(rng.integers(0, w.n))
    c2 = w.hosts.public(rng, 1, _ATTACKER_OCTETS)[0]
    loader = w.hosts.public(rng, 1, _ATTACKER_OCTETS)[0]
    c2_port = int(_choice(rng, (23, 443, 6667, 8080), (.4, .3, .15, .15), 1)[0])
    dur = ep.end - ep.start
    infected = {zero: ep.start}
    # Infection spread: a LAN probe of a bot hits a random device; a vulnerable one falls after the
    # login attempts and the download. Probe rate aims at a few generations within the episode.
    lan_rate = 5.0 * w.n / max(len(vulnerable), 1) / dur  # probes per us per bot
    events = [(ep.start, zero)]
    lan_probes: list[tuple[int, int, float]] = []
    while events:
        events.sort()
        t_inf, bot = events.pop(0)
        t = t_inf
        while True:
            t += rng.exponential(1.0 / lan_rate)
            if t >= ep.end:
                break
            victim = int(rng.integers(0, w.n))
            if victim == bot:
                continue
            lan_probes.append((bot, victim, t))
            if w.telnet[victim] and len(lan_probes) < 4 * ep.budget:
                ok = victim in vulnerable and victim not in infected
                t_end = _telnet_login(w, bot, victim, t, int(rng.integers(2, 8)), ok, label)
                if ok and t_end < ep.end:
                    d = np.array([victim])
                    _emit(w, d, np.array([t_end]), "bot_download", loader, 80, rounds=1,
                          td=np.array([TD_FIN]), label=label)
                    infected[victim] = t_end + 2e6
                    events.append((t_end + 2e6, victim))
            if len(lan_probes) > 2 * ep.budget:
                break
    bots = np.array(sorted(infected), dtype=np.int64)
    t_start = np.array([infected[b] for b in bots])
    # LAN probes: closed -> RST, open telnet -> SYN-ACK then the bot's kernel resets (raw scanner).
    pb = np.array([p[0] for p in lan_probes], dtype=np.int64)
    pv = np.array([p[1] for p in lan_probes], dtype=np.int64)
    pt = np.array([p[2] for p in lan_probes])
    if len(pb):
        raw = rng.random(len(pb)) >= s
        _emit(w, pb, pt, "probe", w.ip[pv], np.where(rng.random(len(pb)) < .9, 23, 2323),
              hs=np.where(w.telnet[pv], HS_HALF_OPEN, HS_REFUSED), rounds=0, td=TD_NONE,
              stack_f=np.where(raw, _STACK["mirai"], w.stack[pb]), stack_b=w.stack[pv], rtt_b=w.lan_rtt(pv),
              label=label)
    # C2 beacons: from its infection on, each bot holds a connection to the C2 server with tiny
    # periodic keep-alives, seen as consecutive 120-s flows.
    period = 60e6 * (1 + s * rng.random(len(bots)))
    step = FLOW_TIMEOUT_US + 0.5 * period
    k = np.maximum(np.ceil((ep.end - t_start - 1e6) / step).astype(np.int64), 0)
    bi = np.repeat(np.arange(len(bots)), k)
    kk = _ragged_arange(k)
    cd = bots[bi]
    _emit(w, cd, t_start[bi] + 1e6 + kk * step[bi], "bot_c2", c2, c2_port, sport=w.sports(w.stack[bots])[bi],
          hs=np.where(kk == 0, HS_FULL, HS_NONE), rounds=np.maximum(rng.poisson(FLOW_TIMEOUT_US / period[bi]), 1),
          td=TD_NONE, gap_us=period[bi], stack_b=_STACK["cloud_linux"], rtt_b=w.wan_rtt(cd) * 3, label=label)
    # Internet-wide telnet scanning fills the rest of the budget: SYNs to random public addresses,
    # almost never answered; Mirai's raw scanner sends no retransmissions.
    used = len(pb) + len(bi) + 8 * len(bots)
    rest = max(int(ep.budget - used), len(bots))
    active = np.maximum(ep.end - t_start, 1.0)
    share = rng.multinomial(rest, active / active.sum())
    for bot, k, t0 in zip(bots, share, t_start):
        if k == 0:
            continue
        t = _times(rng, int(k), t0, ep.end)
        dev = np.full(len(t), bot)
        dst = w.hosts.public(rng, len(t), _ATTACKER_OCTETS + _CLOUD_OCTETS)
        raw = rng.random(len(t)) >= s
        answered = rng.random(len(t)) < .1
        # Newer Mirai variants also probe the web and TR-069 ports they have exploits for.
        port = np.where(rng.random(len(t)) < .9, 23, 2323)
        port = np.where(rng.random(len(t)) < .5 * s, _EXPLOIT_PORTS[rng.integers(0, len(_EXPLOIT_PORTS), len(t))], port)
        _emit(w, dev, t, "probe", dst, port,
              hs=np.where(answered, HS_REFUSED, HS_UNANSWERED), retries=np.where(raw, 0, rng.integers(0, 3, len(t))),
              rounds=0, td=TD_NONE, stack_f=np.where(raw, _STACK["mirai"], w.stack[bot]),
              stack_b=_STACK["cloud_linux"], rtt_b=w.wan_rtt(dev) * 4, label=label)


def _bruteforce(w: _World, ep: _Episode) -> None:
    """An attacker tries credentials against the login services it finds (SSH, telnet, FTP, web)."""
    rng = w.rng
    s = _stealth(w)
    by_service: dict[str, list[tuple[int, int]]] = {"ssh": [], "telnet": [], "ftp": [], "http": []}
    for d in range(w.n):
        ports = w.ports_open(d)
        for service, q in (("ssh", 22), ("telnet", 23), ("ftp", 21)):
            if q in ports:
                by_service[service].append((d, q))
        if int(w.kind[d]) in (_CAMERA, _HUB):
            by_service["http"].append((d, 8080 if w.kind[d] == _HUB else 80))
    if not any(by_service.values()):  # tiny sites: every device has some web login
        by_service["http"].append((int(rng.integers(0, w.n)), 80))
    services = [name for name, found in by_service.items() if found]
    internal = rng.random() < .25
    share = rng.multinomial(ep.budget, rng.dirichlet(np.full(len(services), 6.0)))
    for service, n in zip(services, share):
        n = int(n)
        if n == 0:
            continue
        found = by_service[service]
        # one or two devices offering the service (for web logins, cameras and hubs alike)
        picked = [found[i] for i in rng.choice(len(found), size=min(len(found), 2), replace=False)]
        which = rng.integers(0, len(picked), n)
        devv = np.array([d for d, _ in picked], dtype=np.int64)[which]
        port = np.array([q for _, q in picked], dtype=np.int64)[which]
        dev = int(devv[0])
        src = w.laptop[w.gw[dev] - 1] if internal else w.hosts.public(rng, 1, _ATTACKER_OCTETS)[0]
        lo = ep.start + rng.random() * .2 * (ep.end - ep.start)
        # Tool threads open connections at a steady pace; stealthier runs pace themselves irregularly.
        gaps = _jitter(rng, n, .4 + .6 * s)
        t = lo + np.cumsum(gaps) / gaps.sum() * (ep.end - lo) * rng.uniform(.9, 1.0)
        rtt_f = w.lan_rtt(devv) if internal else _lognormal(rng, np.full(n, 5e4), .4)
        stack = np.where(rng.random(n) < .7, _STACK["kali"], _STACK["windows"])
        common = dict(src=src, rtt_f=rtt_f, rtt_b=w.lan_rtt(devv), stack_f=stack, stack_b=w.stack[devv])
        if service == "ssh":
            _emit(w, devv, t, "ssh_brute", w.ip[devv], port, rounds=rng.integers(1, 4, n),
                  td=_choice(rng, (TD_FIN_SERVER, TD_FIN, TD_RST_FWD), (.6, .3, .1), n),
                  label=_L["SSH-Patator"], **common)
        elif service == "ftp":
            _emit(w, devv, t, "ftp_brute", w.ip[devv], port, rounds=rng.integers(0, 6, n),
                  td=_choice(rng, (TD_FIN_SERVER, TD_FIN, TD_RST_FWD), (.4, .5, .1), n),
                  label=_L["FTP-Patator"], **common)
        elif service == "telnet":
            _emit(w, devv, t, "telnet_login", w.ip[devv], port, rounds=rng.integers(0, 5, n),
                  td=_choice(rng, (TD_FIN_SERVER, TD_FIN, TD_RST_FWD), (.5, .3, .2), n),
                  label=_L["Telnet Brute Force"], **common)
        else:
            _emit(w, devv, t, "http_brute", w.ip[devv], port, rounds=rng.integers(1, 10, n),
                  td=_teardown(rng, n, p_fin=.6, p_rst_f=.1),
                  gap_us=_lognormal(rng, np.full(n, 2e4 * (1 + 20 * s)), 1.),
                  label=_L["HTTP Brute Force"], **common)


_ATTACKS = {"ddos": _ddos, "dos": _dos, "portscan": _portscan, "botnet": _botnet, "bruteforce": _bruteforce}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def generate_flows(config: SynthConfig, progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Generate a synthetic IoT capture as a canonical flow frame.

    Parameters
    ----------
    config : SynthConfig
    progress : callable, optional
        Called with the number of flows whose features are computed so far (monotone, ends at
        ``len(frame)``).

    Returns
    -------
    pandas.DataFrame, one row per flow, sorted by ``timestamp`` (ties in generation order), with
    ``flow_id, src_ip, src_port, dst_ip, dst_port, protocol`` (6 TCP, 17 UDP), ``timestamp``
    (``datetime64[us]``, from :data:`START`), the 78 :data:`~fedids.data.schema.FEATURES` as float32,
    ``seq`` (row number), ``label`` (one of :data:`LABELS`), ``family``, ``device`` (the IoT device
    the flow belongs to: its source when a device starts the flow, else its destination) and
    ``gateway`` (that device's gateway, 1-based int).
    """
    rng = np.random.default_rng(config.seed)
    w = _build_world(config, rng)
    _plan_benign(w)
    benign = w.plan.build()
    in_span = benign["t0"] < w.T
    n_benign = int(in_span.sum())
    for ep in _schedule(w, n_benign, benign["t0"][in_span]):
        _ATTACKS[ep.family](w, ep)
    plan = w.plan.build()
    keep = (plan["t0"] >= 0) & (plan["t0"] < w.T)
    order = np.flatnonzero(keep)[np.argsort(plan["t0"][keep], kind="stable")]
    plan = {k: v[order] for k, v in plan.items()}
    plan["t0"] = np.floor(plan["t0"])
    features = _features_of_plan(plan, rng, progress)
    return _assemble(w, plan, features)


def _assemble(w: _World, plan: dict[str, np.ndarray], features: np.ndarray) -> pd.DataFrame:
    ips = np.array(w.hosts.ips, dtype=object)
    proto = _PT["proto"][plan["profile"].astype(np.int64)].astype(np.int64)
    src_ip = pd.Series(ips[plan["src"]], dtype="str")
    dst_ip = pd.Series(ips[plan["dst"]], dtype="str")
    src_port = plan["sport"].astype(np.int64)
    dst_port = plan["dport"].astype(np.int64)
    flow_id = (src_ip + "-" + dst_ip + "-" + pd.Series(src_port).astype("str") + "-"
               + pd.Series(dst_port).astype("str") + "-" + pd.Series(proto).astype("str"))
    labels = np.array(LABELS, dtype=object)[plan["label"].astype(np.int64)]
    families = np.array([family_of(x) for x in LABELS], dtype=object)[plan["label"].astype(np.int64)]
    data: dict[str, object] = {
        "flow_id": flow_id,
        "src_ip": src_ip,
        "src_port": src_port,
        "dst_ip": dst_ip,
        "dst_port": dst_port,
        "protocol": proto,
        "timestamp": START + plan["t0"].astype(np.int64).astype("timedelta64[us]"),
    }
    frame = pd.DataFrame(data)
    feats = pd.DataFrame(features.astype(np.float32), columns=list(FEATURES))
    frame = pd.concat([frame, feats], axis=1)
    frame[SEQ] = np.arange(len(frame), dtype=np.int64)
    frame[LABEL] = pd.Series(labels, dtype="str")
    frame[FAMILY] = pd.Series(families, dtype="str")
    frame["device"] = pd.Series(np.array(w.names, dtype=object)[plan["device"]], dtype="str")
    frame["gateway"] = w.gw[plan["device"]].astype(np.int64)
    return frame


def write_synthetic_csv(config: SynthConfig, path: str | Path) -> Path:
    """Generate flows for ``config`` and write them as a CICIDS2017 TrafficLabelling CSV.

    The ``device`` and ``gateway`` columns are not written (the format has no place for them; a
    loader recovers hosts from ``Source IP``). Returns the path written.
    """
    return write_trafficlabelling_csv(generate_flows(config), path)
