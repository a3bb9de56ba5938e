"""The simulated site (devices, gateways, cloud services, address table), the flow plan being built, and
the timing processes (Poisson, periodic, 120-s chunks of persistent connections) that place flows in time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedids.data.synth.config import FLOW_TIMEOUT_US, SynthConfig
from fedids.data.synth.profiles import _ST_SPORT, _STACK
from fedids.data.synth.sampling import _jitter, _lognormal, _ragged_arange

_PLAN_DTYPES = {
    "t0": np.float64,
    "src": np.int32,
    "dst": np.int32,
    "sport": np.int32,
    "dport": np.int32,
    "label": np.int16,
    "device": np.int32,
    "profile": np.int16,
    "hs": np.int8,
    "retries": np.int8,
    "flags0": np.uint8,
    "rounds": np.int32,
    "td": np.int8,
    "rtt_f": np.float32,
    "rtt_b": np.float32,
    "size_shift": np.float32,
    "gap_us": np.float32,
    "stack_f": np.int8,
    "stack_b": np.int8,
}

_KINDS = ("camera", "thermostat", "plug", "speaker", "hub", "door_sensor", "bulb")
_KIND_WEIGHTS = np.array([0.2, 0.1, 0.2, 0.12, 0.08, 0.14, 0.16])
_CAMERA, _THERMOSTAT, _PLUG, _SPEAKER, _HUB, _DOOR, _BULB = range(7)
_KIND_STACKS = {
    _CAMERA: ("linux_iot", "linux_iot_new"),
    _THERMOSTAT: ("linux_iot", "lwip"),
    _PLUG: ("lwip", "rtos_small"),
    _SPEAKER: ("linux_iot_new", "android"),
    _HUB: ("linux_iot", "linux_iot_new"),
    _DOOR: ("lwip", "rtos_small"),
    _BULB: ("rtos_small", "lwip"),
}
# Local service ports a device of each kind listens on (what a scan finds open).
_KIND_PORTS = {
    _CAMERA: (80, 554, 8000),
    _THERMOSTAT: (80,),
    _PLUG: (6668,),
    _SPEAKER: (8008, 8009, 8443, 10001),
    _HUB: (80, 443, 8080, 1883),
    _DOOR: (),
    _BULB: (55443,),
}
_LOCAL_API_PORT = {_CAMERA: 80, _THERMOSTAT: 80, _PLUG: 6668, _SPEAKER: 8009, _HUB: 8080, _BULB: 55443}
_DISCOVERY_PORTS = np.array([80, 443, 1400, 5000, 7000, 8008, 8009, 8080, 8443, 9000, 49152, 49153, 55443])
_SCAN_PORTS = np.array(
    [
        21,
        22,
        23,
        25,
        53,
        80,
        81,
        88,
        110,
        111,
        135,
        139,
        143,
        443,
        445,
        465,
        554,
        587,
        993,
        995,
        1080,
        1433,
        1723,
        1883,
        2000,
        2323,
        3306,
        3389,
        5000,
        5060,
        5222,
        5432,
        5555,
        5900,
        6379,
        6668,
        7547,
        8000,
        8008,
        8009,
        8080,
        8081,
        8443,
        8883,
        8888,
        9000,
        9090,
        9100,
        9999,
        10000,
        37777,
        49152,
        49153,
        55443,
    ]
)
_OTHER_PORTS = np.setdiff1d(np.arange(1, 65536), _SCAN_PORTS)
_EXPLOIT_PORTS = np.array([80, 81, 443, 5555, 7547, 8080, 8443, 37215, 52869, 60001])
_CLOUD_OCTETS = (3, 13, 18, 34, 35, 44, 52, 54, 104, 142, 143, 151, 157, 162, 184)
_ATTACKER_OCTETS = (
    5,
    31,
    37,
    45,
    46,
    77,
    80,
    89,
    91,
    103,
    109,
    112,
    117,
    176,
    178,
    185,
    193,
    194,
    195,
    212,
    213,
    217,
    222,
)


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
    cloud: np.ndarray  # (n_devices, 4): api, broker, update server, extra endpoint
    cloud_stack: np.ndarray
    telnet: np.ndarray
    ssh: np.ndarray
    ftp: np.ndarray
    weak: np.ndarray  # telnet with factory credentials: what a Mirai-like worm can infect
    names: list[str]
    gw_ip: np.ndarray  # (G,) gateway address (DNS forwarder)
    bcast: np.ndarray  # (G,) subnet broadcast address
    phones: np.ndarray  # (G, 2)
    laptop: np.ndarray  # (G,)
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
        return self.rtt_wan[dev] * _jitter(self.rng, len(dev), 0.2)

    def lan_rtt(self, dev: np.ndarray) -> np.ndarray:
        return self.rtt_lan[dev] * _jitter(self.rng, len(dev), 0.4)

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
    stack = np.array([_STACK[_KIND_STACKS[k][int(rng.random() < 0.4)]] for k in kind], dtype=np.int64)
    gw_ip = np.array([hosts.add(f"192.168.{g}.1") for g in range(1, G + 1)], dtype=np.int32)
    bcast = np.array([hosts.add(f"192.168.{g}.255") for g in range(1, G + 1)], dtype=np.int32)
    phones = np.array(
        [[hosts.add(f"192.168.{g}.{200 + p}") for p in range(2)] for g in range(1, G + 1)], dtype=np.int32
    )
    laptop = np.array([hosts.add(f"192.168.{g}.210") for g in range(1, G + 1)], dtype=np.int32)
    mcast = {
        name: hosts.add(ip_)
        for name, ip_ in (("ssdp", "239.255.255.250"), ("mdns", "224.0.0.251"), ("wsd", "239.255.255.250"))
    }
    # Each device kind talks to its vendor's cloud: a pool of addresses per kind.
    pools = [hosts.public(rng, 6, _CLOUD_OCTETS) for _ in _KINDS]
    cloud = np.stack([rng.choice(pools[k], 4, replace=False) for k in kind]).astype(np.int32)
    cloud_stack = np.where(rng.random(n) < 0.6, _STACK["cloud_linux"], _STACK["cloud_lb"])
    public_dns = np.array([hosts.add("8.8.8.8"), hosts.add("1.1.1.1")], dtype=np.int32)
    gw_rtt = _lognormal(rng, np.full(G, 18e3), 0.5)  # access-link RTT of each gateway to the clouds
    rtt_wan = gw_rtt[gw - 1] * _jitter(rng, n, 0.3)
    rtt_lan = _lognormal(rng, np.full(n, 1.5e3), 0.6)  # Wi-Fi hop between device and gateway
    linuxish = np.isin(kind, (_CAMERA, _PLUG, _BULB))
    telnet = linuxish & (rng.random(n) < np.where(kind == _CAMERA, 0.45, 0.25))
    weak = telnet & (rng.random(n) < 0.7)
    # Keep a worm able to spread: at least two devices (where possible) with factory credentials.
    spare = np.flatnonzero(linuxish & ~weak)
    need = max(0, min(2, int(linuxish.sum())) - int(weak.sum()))
    if need:
        pick = rng.choice(spare, need, replace=False)
        telnet[pick] = weak[pick] = True
    return _World(
        cfg=cfg,
        rng=rng,
        T=cfg.hours * 3600e6,
        hosts=hosts,
        plan=_Plan(),
        kind=kind,
        gw=gw,
        ip=ip,
        stack=stack,
        rtt_lan=rtt_lan,
        rtt_wan=rtt_wan,
        size=0.25 * rng.standard_normal(n),
        pace=_jitter(rng, n, 0.25),
        cloud=cloud,
        cloud_stack=cloud_stack,
        telnet=telnet,
        weak=weak,
        ssh=np.isin(kind, (_HUB, _CAMERA)) & (rng.random(n) < np.where(kind == _HUB, 0.8, 0.3)),
        ftp=(kind == _CAMERA) & (rng.random(n) < 0.35),
        names=names,
        gw_ip=gw_ip,
        bcast=bcast,
        phones=phones,
        laptop=laptop,
        ntp=hosts.public(rng, 4, _CLOUD_OCTETS),
        relays=hosts.public(rng, 3, _CLOUD_OCTETS),
        cdn=hosts.public(rng, 4, _CLOUD_OCTETS),
        public_dns=public_dns,
        mcast=mcast,
    )


# ---- timing processes -------------------------------------------------------------------


def _activity(t_us: np.ndarray) -> np.ndarray:
    """Diurnal activity of people at home, in (0, 1]: morning and evening peaks, quiet nights."""
    hour = (8.0 + np.asarray(t_us) / 3.6e9) % 24.0
    bumps = (
        0.6 * np.exp(-0.5 * ((hour - 7.5) / 1.2) ** 2)
        + np.exp(-0.5 * ((hour - 20.0) / 2.2) ** 2)
        + 0.35 * np.exp(-0.5 * ((hour - 13.0) / 2.5) ** 2)
    )
    return np.clip(0.12 + 0.88 * bumps, 0.0, 1.0)


def _poisson(
    w: _World,
    devs: np.ndarray,
    rate_h: float | np.ndarray,
    diurnal: bool = False,
    lo: float = 0.0,
    hi: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
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


def _periodic(
    w: _World, devs: np.ndarray, period_s: np.ndarray | float, jitter: float = 0.03
) -> tuple[np.ndarray, np.ndarray]:
    """Times of a jittered periodic process per device with a random phase."""
    devs = np.asarray(devs, dtype=np.int64)
    period = np.broadcast_to(np.asarray(period_s, dtype=float), devs.shape) * 1e6
    phase = w.rng.random(len(devs)) * period
    k = np.maximum(np.floor((w.T - phase) / period).astype(np.int64) + 1, 0)
    d_idx = np.repeat(np.arange(len(devs)), k)
    t = (
        phase[d_idx]
        + _ragged_arange(k) * period[d_idx]
        + jitter * period[d_idx] * w.rng.standard_normal(len(d_idx))
    )
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
    return {
        "di": seg_dev_i[ci][ok],
        "dev": devs[seg_dev_i[ci]][ok],
        "t0": t0[ok],
        "first": first[ok],
        "last": last[ok],
        "conn": ci[ok],
        "rounds": rounds[ok],
        "conn_dev": devs[seg_dev_i],
    }


# A hub, sweeper or SSDP asker deals with at most this many LAN peers, so that flows per device stay
# the same however many devices share a subnet (flow count linear in devices x hours).
_MAX_LAN_PEERS = 12


def _lan_hosts(w: _World, g: int) -> np.ndarray:
    return np.flatnonzero(w.gw == g)
