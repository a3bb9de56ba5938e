"""Malware propagation (``Bot``): Mirai-like telnet scanning of the LAN and the Internet, login
attempts, payload download and C2 beacons; the infection spreads during the episode and is cleaned at
its end."""

from __future__ import annotations

import numpy as np

from fedids.data.synth.attacks.common import _Episode, _probes, _stealth, _times
from fedids.data.synth.config import _L, FLOW_TIMEOUT_US
from fedids.data.synth.emitters import _emit
from fedids.data.synth.profiles import (
    _STACK,
    HS_FULL,
    HS_HALF_OPEN,
    HS_NONE,
    HS_REFUSED,
    HS_UNANSWERED,
    TD_FIN,
    TD_FIN_SERVER,
    TD_NONE,
    TD_RST_FWD,
)
from fedids.data.synth.sampling import _choice, _lognormal, _ragged_arange
from fedids.data.synth.world import _ATTACKER_OCTETS, _CLOUD_OCTETS, _EXPLOIT_PORTS, _World


def _telnet_login(
    w: _World, bot: int, victim: int, t: float, attempts: int, success: bool, label: int
) -> float:
    """Mirai-style credential attempts from ``bot`` to ``victim``'s telnet; returns the end time."""
    rng = w.rng
    starts = t + np.cumsum(_lognormal(rng, np.full(attempts, 3e6), 0.5))
    rounds = np.full(attempts, 0)
    if success:
        rounds[-1] = int(rng.integers(3, 7))  # shell commands after the login
    dev = np.full(attempts, bot)
    _emit(
        w,
        dev,
        starts,
        "telnet_login",
        w.ip[victim],
        np.where(rng.random(attempts) < 0.9, 23, 2323),
        rounds=rounds,
        td=_choice(rng, (TD_FIN_SERVER, TD_RST_FWD, TD_FIN), (0.5, 0.3, 0.2), attempts),
        rtt_f=w.lan_rtt(dev),
        rtt_b=w.lan_rtt(np.full(attempts, victim)),
        stack_b=w.stack[victim],
        label=label,
    )
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
    c2_port = int(_choice(rng, (23, 443, 6667, 8080), (0.4, 0.3, 0.15, 0.15), 1)[0])
    infected, lan_probes = _botnet_spread(w, ep, zero, vulnerable, loader, label)
    bots = np.array(sorted(infected), dtype=np.int64)
    t_start = np.array([infected[b] for b in bots])
    # LAN probes: closed -> RST, open telnet -> SYN-ACK then the bot's kernel resets (raw scanner).
    pb = np.array([p[0] for p in lan_probes], dtype=np.int64)
    pv = np.array([p[1] for p in lan_probes], dtype=np.int64)
    pt = np.array([p[2] for p in lan_probes])
    if len(pb):
        raw = rng.random(len(pb)) >= s
        _probes(
            w,
            pb,
            pt,
            w.ip[pv],
            np.where(rng.random(len(pb)) < 0.9, 23, 2323),
            hs=np.where(w.telnet[pv], HS_HALF_OPEN, HS_REFUSED),
            stack_f=np.where(raw, _STACK["mirai"], w.stack[pb]),
            stack_b=w.stack[pv],
            rtt_b=w.lan_rtt(pv),
            label=label,
        )
    # C2 beacons: from its infection on, each bot holds a connection to the C2 server with tiny
    # periodic keep-alives, seen as consecutive 120-s flows.
    period = 60e6 * (1 + s * rng.random(len(bots)))
    step = FLOW_TIMEOUT_US + 0.5 * period
    k = np.maximum(np.ceil((ep.end - t_start - 1e6) / step).astype(np.int64), 0)
    bi = np.repeat(np.arange(len(bots)), k)
    kk = _ragged_arange(k)
    cd = bots[bi]
    _emit(
        w,
        cd,
        t_start[bi] + 1e6 + kk * step[bi],
        "bot_c2",
        c2,
        c2_port,
        sport=w.sports(w.stack[bots])[bi],
        hs=np.where(kk == 0, HS_FULL, HS_NONE),
        rounds=np.maximum(rng.poisson(FLOW_TIMEOUT_US / period[bi]), 1),
        td=TD_NONE,
        gap_us=period[bi],
        stack_b=_STACK["cloud_linux"],
        rtt_b=w.wan_rtt(cd) * 3,
        label=label,
    )
    used = len(pb) + len(bi) + 8 * len(bots)
    _botnet_internet_scan(w, ep, bots, t_start, used, s, label)


def _botnet_spread(
    w: _World, ep: _Episode, zero: int, vulnerable: set[int], loader: int, label: int
) -> tuple[dict[int, float], list[tuple[int, int, float]]]:
    """The infection from patient ``zero`` on: LAN probes, telnet logins and payload downloads.

    Returns the infection time of every bot and the LAN probes ``(bot, victim, time)``.
    """
    rng = w.rng
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
                    _emit(
                        w,
                        d,
                        np.array([t_end]),
                        "bot_download",
                        loader,
                        80,
                        rounds=1,
                        td=np.array([TD_FIN]),
                        label=label,
                    )
                    infected[victim] = t_end + 2e6
                    events.append((t_end + 2e6, victim))
            if len(lan_probes) > 2 * ep.budget:
                break
    return infected, lan_probes


def _botnet_internet_scan(
    w: _World, ep: _Episode, bots: np.ndarray, t_start: np.ndarray, used: int, s: float, label: int
) -> None:
    """Telnet (and exploit-port) scanning of the Internet by every bot, for the rest of the budget."""
    rng = w.rng
    # Internet-wide telnet scanning fills the rest of the budget: SYNs to random public addresses,
    # almost never answered; Mirai's raw scanner sends no retransmissions.
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
        answered = rng.random(len(t)) < 0.1
        # Newer Mirai variants also probe the web and TR-069 ports they have exploits for.
        port = np.where(rng.random(len(t)) < 0.9, 23, 2323)
        port = np.where(
            rng.random(len(t)) < 0.5 * s, _EXPLOIT_PORTS[rng.integers(0, len(_EXPLOIT_PORTS), len(t))], port
        )
        _probes(
            w,
            dev,
            t,
            dst,
            port,
            hs=np.where(answered, HS_REFUSED, HS_UNANSWERED),
            retries=np.where(raw, 0, rng.integers(0, 3, len(t))),
            stack_f=np.where(raw, _STACK["mirai"], w.stack[bot]),
            stack_b=_STACK["cloud_linux"],
            rtt_b=w.wan_rtt(dev) * 4,
            label=label,
        )
