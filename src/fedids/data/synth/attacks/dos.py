"""DoS: two external hosts run Hulk, slowloris, slow-POST or a spoofed SYN flood against the web
server of one or two devices, each episode in its own mix of tools."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedids.data.synth.attacks.common import _Episode, _probes, _stealth, _times
from fedids.data.synth.config import _L
from fedids.data.synth.emitters import _emit, _teardown
from fedids.data.synth.profiles import _STACK, HS_SYNACK_RETRY, TD_FIN_SERVER, TD_NONE, TD_RST_BWD
from fedids.data.synth.sampling import _choice, _lognormal
from fedids.data.synth.world import _ATTACKER_OCTETS, _CAMERA, _CLOUD_OCTETS, _HUB, _THERMOSTAT, _World

_TOOLS = ("hulk", "slowloris", "slowpost", "synflood")


@dataclass(frozen=True)
class _Strike:
    """Flows of one tool against the victims: per flow the victim device ``dev``, start time ``t`` (us),
    its web ``port``, the attacking host ``src``, the attacker's RTT ``rtt_f`` (us) and TCP stack
    ``stack_f``; and the episode's stealth share."""

    dev: np.ndarray
    t: np.ndarray
    port: np.ndarray
    src: np.ndarray
    rtt_f: np.ndarray
    stack_f: np.ndarray
    stealth: float


def _dos(w: _World, ep: _Episode) -> None:
    """Two external hosts attack the web servers of one or two devices with a mix of DoS tools."""
    rng = w.rng
    web = w.of_kind(_CAMERA, _HUB, _THERMOSTAT)
    web = web if len(web) else np.arange(w.n)
    victims = rng.choice(web, size=min(len(web), int(rng.integers(1, 3))), replace=False)
    web_port = np.where(w.kind == _HUB, 8080, 80)
    attacker = w.hosts.public(rng, 2, _ATTACKER_OCTETS)
    s = _stealth(w)
    # Every episode mixes the tools in its own proportions, so each tool occurs on both sides of a split.
    share = rng.multinomial(ep.budget, rng.dirichlet(np.full(len(_TOOLS), 6.0)))
    for tool, n in zip(_TOOLS, share):
        n = int(n)
        if n == 0:
            continue
        t = _times(rng, n, ep.start + rng.random() * 0.2 * (ep.end - ep.start), ep.end)
        dev = victims[rng.integers(0, len(victims), n)]
        port = web_port[dev]
        src = attacker[rng.integers(0, 2, n)]
        rtt_f = _lognormal(rng, np.full(n, 6e4), 0.4)  # the attacker's packets cross the Internet
        astack = np.where(rng.random(n) < 0.5, _STACK["kali"], _STACK["windows"])
        strike = _Strike(dev, t, port, src, rtt_f, astack, s)
        if tool == "hulk":
            _hulk(w, strike)
        elif tool == "synflood":
            _spoofed_syn_flood(w, strike)
        else:
            _slow_http(w, strike, tool)


def _hulk(w: _World, a: _Strike) -> None:
    rng, n = w.rng, len(a.t)
    _emit(
        w,
        a.dev,
        a.t,
        "hulk",
        w.ip[a.dev],
        a.port,
        src=a.src,
        rounds=rng.integers(1, 3, n),
        td=_teardown(rng, n, p_fin=0.3, p_server=0.1, p_rst_f=0.1, p_rst_b=0.2),
        gap_us=_lognormal(rng, np.full(n, 5e3 * (1 + 20 * a.stealth)), 1.0),
        rtt_f=a.rtt_f,
        rtt_b=w.lan_rtt(a.dev) * 3,
        stack_f=a.stack_f,
        stack_b=w.stack[a.dev],
        label=_L["DoS Hulk"],
    )


def _slow_http(w: _World, a: _Strike, tool: str) -> None:
    """slowloris / slow POST: each connection trickles a few bytes every ~10-15 s until the flow
    timeout or a reset."""
    rng, n = w.rng, len(a.t)
    gap = _lognormal(rng, np.full(n, 1.2e7 * (1 + 0.5 * a.stealth)), 0.25)
    _emit(
        w,
        a.dev,
        a.t,
        tool,
        w.ip[a.dev],
        a.port,
        src=a.src,
        rounds=rng.integers(3, 12, n),
        td=_choice(rng, (TD_NONE, TD_RST_BWD, TD_FIN_SERVER), (0.6, 0.25, 0.15), n),
        gap_us=gap,
        rtt_f=a.rtt_f,
        rtt_b=w.lan_rtt(a.dev),
        stack_f=a.stack_f,
        stack_b=w.stack[a.dev],
        label=_L["DoS slowloris" if tool == "slowloris" else "DoS Slowhttptest"],
    )


def _spoofed_syn_flood(w: _World, a: _Strike) -> None:
    """Spoofed sources: every SYN from a fresh address; the victim retransmits its SYN-ACK."""
    rng, n = w.rng, len(a.t)
    spoof = w.hosts.public(rng, n, _ATTACKER_OCTETS + _CLOUD_OCTETS)
    _probes(
        w,
        a.dev,
        a.t,
        w.ip[a.dev],
        a.port,
        src=spoof,
        sport=rng.integers(1024, 65536, n),
        hs=HS_SYNACK_RETRY,
        retries=rng.integers(0, 5, n),
        rtt_f=a.rtt_f,
        rtt_b=w.lan_rtt(a.dev),
        stack_f=np.where(rng.random(n) < a.stealth, _STACK["kali"], _STACK["hping"]),
        stack_b=w.stack[a.dev],
        label=_L["DoS SYN Flood"],
    )
