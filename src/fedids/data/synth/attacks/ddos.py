"""DDoS: infected devices flood an external target with SYN, UDP (random ports or one socket), ACK
or HTTP floods, in the mix of vectors the C2 orders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedids.data.synth.attacks.common import _Episode, _pick_devices, _probes, _stealth, _times
from fedids.data.synth.config import _L
from fedids.data.synth.emitters import _emit, _teardown
from fedids.data.synth.profiles import _STACK, HS_HALF_OPEN, HS_NONE, HS_UNANSWERED, TD_NONE, TD_RST_BWD
from fedids.data.synth.sampling import _lognormal
from fedids.data.synth.world import _ATTACKER_OCTETS, _BULB, _CAMERA, _CLOUD_OCTETS, _PLUG, _World

_VECTORS = ("syn", "udp", "udpplain", "ack", "http")


@dataclass(frozen=True)
class _Volley:
    """One bot's flows of one vector: start times ``t`` (us), ``dev`` (the bot, per flow), the target's
    host index, a destination port (used by the one-socket UDP flood), the target's RTT per flow and the
    episode's stealth share."""

    bot: int
    dev: np.ndarray
    t: np.ndarray
    target: int
    dport: int
    rtt_b: np.ndarray
    stealth: float


def _ddos(w: _World, ep: _Episode) -> None:
    rng = w.rng
    bots = _pick_devices(w, int(np.clip(round(w.n * 0.12), 3, 12)), (_CAMERA, _PLUG, _BULB))
    target = w.hosts.public(rng, 1, _CLOUD_OCTETS + _ATTACKER_OCTETS)[0]
    # The C2 orders several attack vectors; every bot runs each of them for its share of the flows.
    mix = rng.dirichlet(np.array([3.0, 2.0, 1.0, 1.5, 2.5]) * 4)
    per_bot = rng.multinomial(ep.budget, np.ones(len(bots)) / len(bots))
    s = _stealth(w)
    jobs = [
        (bot, vec, int(k))
        for bot, n in zip(bots, per_bot)
        for vec, k in zip(_VECTORS, rng.multinomial(n, mix))
        if k > 0
    ]
    for bot, vec, n in jobs:
        lo = ep.start + rng.random() * 0.15 * (ep.end - ep.start)
        hi = ep.end - rng.random() * 0.1 * (ep.end - ep.start)
        t = _times(rng, int(n), lo, hi)
        dev = np.full(len(t), bot)
        rtt_b = w.wan_rtt(dev) * 1.5  # the target is far and congested
        dport = int(rng.integers(1024, 65536))
        _FLOODS[vec](w, _Volley(int(bot), dev, t, int(target), dport, rtt_b, s))


def _syn_flood(w: _World, v: _Volley) -> None:
    rng, n = w.rng, len(v.t)
    raw = rng.random(n) >= v.stealth
    _probes(
        w,
        v.dev,
        v.t,
        v.target,
        rng.choice([80, 443], n),
        hs=np.where(rng.random(n) < 0.5, HS_UNANSWERED, HS_HALF_OPEN),
        stack_f=np.where(raw, _STACK["mirai_syn"], w.stack[v.bot]),
        stack_b=_STACK["cloud_linux"],
        rtt_b=v.rtt_b,
        label=_L["DDoS"],
    )


def _udp_flood(w: _World, v: _Volley) -> None:
    """Random source port per packet: (almost) every packet is a flow of its own."""
    rng, n = w.rng, len(v.t)
    prof = "flood_udp" if rng.random() >= v.stealth else "flood_udp_rand"
    _emit(
        w,
        v.dev,
        v.t,
        prof,
        v.target,
        rng.integers(1, 65536, n),
        hs=HS_NONE,
        rounds=rng.integers(1, 4, n),
        td=TD_NONE,
        gap_us=_lognormal(rng, np.full(n, 1e3), 0.5),
        rtt_b=v.rtt_b,
        label=_L["DDoS"],
    )


def _udpplain_flood(w: _World, v: _Volley) -> None:
    """One socket: bursts of hundreds to thousands of datagrams on a fixed 5-tuple."""
    rng = w.rng
    m = max(1, len(v.t) // 20)
    tb = v.t[:: max(1, len(v.t) // m)][:m]
    prof = "flood_udp" if rng.random() >= v.stealth else "flood_udp_rand"
    _emit(
        w,
        v.dev[:m],
        tb,
        prof,
        v.target,
        v.dport,
        sport=int(rng.integers(32768, 61000)),
        hs=HS_NONE,
        rounds=rng.integers(300, 3000, m),
        td=TD_NONE,
        gap_us=_lognormal(rng, np.full(m, 5e2), 0.4),
        rtt_b=v.rtt_b[:m],
        label=_L["DDoS"],
    )


def _ack_flood(w: _World, v: _Volley) -> None:
    rng, n = w.rng, len(v.t)
    _emit(
        w,
        v.dev,
        v.t,
        "flood_ack",
        v.target,
        rng.choice([80, 443], n),
        hs=HS_NONE,
        rounds=rng.integers(1, 3, n),
        td=np.where(rng.random(n) < 0.6, TD_RST_BWD, TD_NONE),
        stack_f=_STACK["mirai"],
        stack_b=_STACK["cloud_linux"],
        rtt_b=v.rtt_b,
        label=_L["DDoS"],
    )


def _http_flood(w: _World, v: _Volley) -> None:
    rng, n = w.rng, len(v.t)
    _emit(
        w,
        v.dev,
        v.t,
        "flood_http",
        v.target,
        80,
        rounds=rng.integers(1, 4, n),
        td=_teardown(rng, n, p_fin=0.4, p_rst_f=0.2, p_rst_b=0.15),
        gap_us=_lognormal(rng, np.full(n, 2e4 * (1 + 10 * v.stealth)), 1.0),
        stack_b=_STACK["cloud_linux"],
        rtt_b=v.rtt_b,
        label=_L["DDoS"],
    )


_FLOODS = {
    "syn": _syn_flood,
    "udp": _udp_flood,
    "udpplain": _udpplain_flood,
    "ack": _ack_flood,
    "http": _http_flood,
}
