"""Attack episodes: their schedule on both sides of the 70/30 time split, and one planner per family
(DDoS, DoS, port scans, botnet propagation, brute force)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedids.data.synth.config import _L, FIN, FLOW_TIMEOUT_US, PSH, URG
from fedids.data.synth.emitters import _emit, _teardown
from fedids.data.synth.profiles import (
    _STACK,
    HS_FULL,
    HS_HALF_OPEN,
    HS_NONE,
    HS_REFUSED,
    HS_SYNACK_RETRY,
    HS_UNANSWERED,
    TD_FIN,
    TD_FIN_SERVER,
    TD_NONE,
    TD_RST_BWD,
    TD_RST_FWD,
)
from fedids.data.synth.sampling import _choice, _jitter, _lognormal, _ragged_arange
from fedids.data.synth.world import (
    _ATTACKER_OCTETS,
    _BULB,
    _CAMERA,
    _CLOUD_OCTETS,
    _EXPLOIT_PORTS,
    _HUB,
    _OTHER_PORTS,
    _PLUG,
    _SCAN_PORTS,
    _THERMOSTAT,
    _lan_hosts,
    _World,
)

_FAMILY_SHARE = {"ddos": 0.28, "dos": 0.2, "portscan": 0.2, "botnet": 0.16, "bruteforce": 0.16}
_EPISODE_MINUTES = {
    "ddos": (4, 10),
    "dos": (5, 14),
    "portscan": (3, 10),
    "botnet": (15, 40),
    "bruteforce": (5, 15),
}


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
    t70 = float(np.quantile(benign_t, 0.7)) if len(benign_t) else 0.7 * w.T
    sides = [(0.02 * w.T, t70 - 0.05 * w.T, 0.7), (t70 + 0.04 * w.T, 0.98 * w.T, 0.3)]
    k_side = max(1, int(round(cfg.hours / 3)))
    episodes = []
    for fam, share in _FAMILY_SHARE.items():
        lo_m, hi_m = _EPISODE_MINUTES[fam]
        for lo, hi, weight in sides:
            slot = (hi - lo) / k_side
            for k in range(k_side):
                dur = min(rng.uniform(lo_m, hi_m) * 60e6, 0.8 * slot)
                start = lo + k * slot + rng.random() * (slot - dur)
                episodes.append(
                    _Episode(fam, start, start + dur, max(8, int(total * share * weight / k_side)))
                )
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
    bots = _pick_devices(w, int(np.clip(round(w.n * 0.12), 3, 12)), (_CAMERA, _PLUG, _BULB))
    target = w.hosts.public(rng, 1, _CLOUD_OCTETS + _ATTACKER_OCTETS)[0]
    vectors = ("syn", "udp", "udpplain", "ack", "http")
    # The C2 orders several attack vectors; every bot runs each of them for its share of the flows.
    mix = rng.dirichlet(np.array([3.0, 2.0, 1.0, 1.5, 2.5]) * 4)
    per_bot = rng.multinomial(ep.budget, np.ones(len(bots)) / len(bots))
    s = _stealth(w)
    label = _L["DDoS"]
    jobs = [
        (bot, vec, int(k))
        for bot, n in zip(bots, per_bot)
        for vec, k in zip(vectors, rng.multinomial(n, mix))
        if k > 0
    ]
    for bot, vec, n in jobs:
        lo = ep.start + rng.random() * 0.15 * (ep.end - ep.start)
        hi = ep.end - rng.random() * 0.1 * (ep.end - ep.start)
        t = _times(rng, int(n), lo, hi)
        dev = np.full(len(t), bot)
        rtt_b = w.wan_rtt(dev) * 1.5  # the target is far and congested
        dport = int(rng.integers(1024, 65536))
        if vec == "syn":
            raw = rng.random(len(t)) >= s
            _emit(
                w,
                dev,
                t,
                "probe",
                target,
                rng.choice([80, 443], len(t)),
                hs=np.where(rng.random(len(t)) < 0.5, HS_UNANSWERED, HS_HALF_OPEN),
                rounds=0,
                td=TD_NONE,
                stack_f=np.where(raw, _STACK["mirai_syn"], w.stack[bot]),
                stack_b=_STACK["cloud_linux"],
                rtt_b=rtt_b,
                label=label,
            )
        elif vec == "udp":
            # Random source port per packet: (almost) every packet is a flow of its own.
            prof = "flood_udp" if rng.random() >= s else "flood_udp_rand"
            _emit(
                w,
                dev,
                t,
                prof,
                target,
                rng.integers(1, 65536, len(t)),
                hs=HS_NONE,
                rounds=rng.integers(1, 4, len(t)),
                td=TD_NONE,
                gap_us=_lognormal(rng, np.full(len(t), 1e3), 0.5),
                rtt_b=rtt_b,
                label=label,
            )
        elif vec == "udpplain":
            # One socket: bursts of hundreds to thousands of datagrams on a fixed 5-tuple.
            m = max(1, len(t) // 20)
            tb = t[:: max(1, len(t) // m)][:m]
            prof = "flood_udp" if rng.random() >= s else "flood_udp_rand"
            _emit(
                w,
                dev[:m],
                tb,
                prof,
                target,
                dport,
                sport=int(rng.integers(32768, 61000)),
                hs=HS_NONE,
                rounds=rng.integers(300, 3000, m),
                td=TD_NONE,
                gap_us=_lognormal(rng, np.full(m, 5e2), 0.4),
                rtt_b=rtt_b[:m],
                label=label,
            )
        elif vec == "ack":
            _emit(
                w,
                dev,
                t,
                "flood_ack",
                target,
                rng.choice([80, 443], len(t)),
                hs=HS_NONE,
                rounds=rng.integers(1, 3, len(t)),
                td=np.where(rng.random(len(t)) < 0.6, TD_RST_BWD, TD_NONE),
                stack_f=_STACK["mirai"],
                stack_b=_STACK["cloud_linux"],
                rtt_b=rtt_b,
                label=label,
            )
        else:
            _emit(
                w,
                dev,
                t,
                "flood_http",
                target,
                80,
                rounds=rng.integers(1, 4, len(t)),
                td=_teardown(rng, len(t), p_fin=0.4, p_rst_f=0.2, p_rst_b=0.15),
                gap_us=_lognormal(rng, np.full(len(t), 2e4 * (1 + 10 * s)), 1.0),
                stack_b=_STACK["cloud_linux"],
                rtt_b=rtt_b,
                label=label,
            )


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
        t = _times(rng, n, ep.start + rng.random() * 0.2 * (ep.end - ep.start), ep.end)
        dev = victims[rng.integers(0, len(victims), n)]
        port = web_port[dev]
        src = attacker[rng.integers(0, 2, n)]
        rtt_f = _lognormal(rng, np.full(n, 6e4), 0.4)  # the attacker's packets cross the Internet
        astack = np.where(rng.random(n) < 0.5, _STACK["kali"], _STACK["windows"])
        if variant == "hulk":
            _emit(
                w,
                dev,
                t,
                "hulk",
                w.ip[dev],
                port,
                src=src,
                rounds=rng.integers(1, 3, n),
                td=_teardown(rng, n, p_fin=0.3, p_server=0.1, p_rst_f=0.1, p_rst_b=0.2),
                gap_us=_lognormal(rng, np.full(n, 5e3 * (1 + 20 * s)), 1.0),
                rtt_f=rtt_f,
                rtt_b=w.lan_rtt(dev) * 3,
                stack_f=astack,
                stack_b=w.stack[dev],
                label=_L["DoS Hulk"],
            )
        elif variant in ("slowloris", "slowpost"):
            # Each connection trickles a few bytes every ~10-15 s until the flow timeout or a reset.
            gap = _lognormal(rng, np.full(n, 1.2e7 * (1 + 0.5 * s)), 0.25)
            _emit(
                w,
                dev,
                t,
                variant,
                w.ip[dev],
                port,
                src=src,
                rounds=rng.integers(3, 12, n),
                td=_choice(rng, (TD_NONE, TD_RST_BWD, TD_FIN_SERVER), (0.6, 0.25, 0.15), n),
                gap_us=gap,
                rtt_f=rtt_f,
                rtt_b=w.lan_rtt(dev),
                stack_f=astack,
                stack_b=w.stack[dev],
                label=_L["DoS slowloris" if variant == "slowloris" else "DoS Slowhttptest"],
            )
        else:
            # Spoofed sources: every SYN from a fresh address; the victim retransmits its SYN-ACK.
            spoof = w.hosts.public(rng, n, _ATTACKER_OCTETS + _CLOUD_OCTETS)
            _emit(
                w,
                dev,
                t,
                "probe",
                w.ip[dev],
                port,
                src=spoof,
                sport=rng.integers(1024, 65536, n),
                hs=HS_SYNACK_RETRY,
                retries=rng.integers(0, 5, n),
                rounds=0,
                td=TD_NONE,
                rtt_f=rtt_f,
                rtt_b=w.lan_rtt(dev),
                stack_f=np.where(rng.random(n) < s, _STACK["kali"], _STACK["hping"]),
                stack_b=w.stack[dev],
                label=_L["DoS SYN Flood"],
            )


def _portscan(w: _World, ep: _Episode) -> None:
    """A scanner (external, or inside a subnet) probes devices.

    Two modes share the budget: *vertical* scans of many ports of a few hosts (nmap's default order:
    well-known ports first) and, a share that grows with difficulty, a *horizontal* sweep of the
    well-known ports across many hosts (masscan style), which resembles benign discovery sweeps.
    """
    rng = w.rng
    s = _stealth(w)
    internal = rng.random() < 0.5
    g = int(rng.integers(1, w.cfg.gateways + 1))
    pool = _lan_hosts(w, g) if internal else np.arange(w.n)
    if internal:
        scanner = (
            w.laptop[g - 1]
            if rng.random() < 0.5
            else w.hosts.add(f"192.168.{g}.{230 + int(rng.integers(0, 9))}")
        )
    else:
        scanner = w.hosts.public(rng, 1, _ATTACKER_OCTETS)[0]
    n_sweep = int(rng.binomial(ep.budget, 0.6 * s))
    n_vertical = ep.budget - n_sweep
    # A target has 65,535 ports: very large budgets spread over more targets.
    n_targets = max(int(rng.integers(2, 6)), -(-n_vertical // 60000))
    targets = rng.choice(pool, size=min(len(pool), n_targets), replace=False)
    per_target = int(np.clip(n_vertical // len(targets), 1, 65535))
    span = (ep.end - ep.start) / (len(targets) + (n_sweep > 0))
    jobs = []  # (target per probe, port per probe, start, end)
    for k, tg in enumerate(targets):
        # nmap order: the well-known ports first (shuffled), then the rest of the range.
        ports = np.concatenate(
            [
                rng.permutation(_SCAN_PORTS),
                rng.permutation(_OTHER_PORTS)[: max(0, per_target - len(_SCAN_PORTS))],
            ]
        )[:per_target]
        slow = rng.random() < 0.3 * s
        lo = ep.start + k * span
        jobs.append((np.full(len(ports), tg), ports, lo, lo + span * (1.0 if slow else 0.9)))
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
        rtt_f = w.lan_rtt(tg) if internal else _lognormal(rng, np.full(n, 5e4), 0.4)
        stack = _STACK["linux_iot_new"] if connect else _STACK["nmap"]
        sport = w.sports(np.full(n, stack)) if connect else src_port
        hs_open = HS_FULL if connect else HS_HALF_OPEN
        # Closed ports answer with RST; a few probes are dropped and retried by the scanner.
        dropped = rng.random(n) < 0.08
        hs = np.where(open_, hs_open, np.where(dropped, HS_UNANSWERED, HS_REFUSED))
        flags0 = 0 if connect else np.where(rng.random(n) < 0.05 * (1 - s), FIN | PSH | URG, 0)
        _emit(
            w,
            tg,
            t,
            "probe",
            w.ip[tg],
            ports,
            src=scanner,
            sport=sport,
            hs=hs,
            rounds=0,
            td=np.where(open_ & connect, TD_RST_FWD, TD_NONE),
            retries=np.where(dropped, 1, 0),
            flags0=flags0,
            rtt_f=rtt_f,
            rtt_b=w.lan_rtt(tg),
            stack_f=stack,
            stack_b=w.stack[tg],
            label=label,
        )
        # Service/version detection on the open ports found.
        if open_.any():
            dv, op = tg[open_], ports[open_]
            tv = t[-1] + np.cumsum(_lognormal(rng, np.full(len(op), 2e5), 1.0))
            _emit(
                w,
                dv,
                tv,
                "scan_version",
                w.ip[dv],
                op,
                src=scanner,
                rounds=rng.integers(1, 4, len(op)),
                td=_teardown(rng, len(op), p_fin=0.5, p_rst_f=0.4),
                rtt_f=rtt_f[open_],
                rtt_b=w.lan_rtt(dv),
                stack_f=_STACK["kali"],
                stack_b=w.stack[dv],
                label=label,
            )


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
        _emit(
            w,
            pb,
            pt,
            "probe",
            w.ip[pv],
            np.where(rng.random(len(pb)) < 0.9, 23, 2323),
            hs=np.where(w.telnet[pv], HS_HALF_OPEN, HS_REFUSED),
            rounds=0,
            td=TD_NONE,
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
        _emit(
            w,
            dev,
            t,
            "probe",
            dst,
            port,
            hs=np.where(answered, HS_REFUSED, HS_UNANSWERED),
            retries=np.where(raw, 0, rng.integers(0, 3, len(t))),
            rounds=0,
            td=TD_NONE,
            stack_f=np.where(raw, _STACK["mirai"], w.stack[bot]),
            stack_b=_STACK["cloud_linux"],
            rtt_b=w.wan_rtt(dev) * 4,
            label=label,
        )


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
    internal = rng.random() < 0.25
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
        lo = ep.start + rng.random() * 0.2 * (ep.end - ep.start)
        # Tool threads open connections at a steady pace; stealthier runs pace themselves irregularly.
        gaps = _jitter(rng, n, 0.4 + 0.6 * s)
        t = lo + np.cumsum(gaps) / gaps.sum() * (ep.end - lo) * rng.uniform(0.9, 1.0)
        rtt_f = w.lan_rtt(devv) if internal else _lognormal(rng, np.full(n, 5e4), 0.4)
        stack = np.where(rng.random(n) < 0.7, _STACK["kali"], _STACK["windows"])
        common = dict(src=src, rtt_f=rtt_f, rtt_b=w.lan_rtt(devv), stack_f=stack, stack_b=w.stack[devv])
        if service == "ssh":
            _emit(
                w,
                devv,
                t,
                "ssh_brute",
                w.ip[devv],
                port,
                rounds=rng.integers(1, 4, n),
                td=_choice(rng, (TD_FIN_SERVER, TD_FIN, TD_RST_FWD), (0.6, 0.3, 0.1), n),
                label=_L["SSH-Patator"],
                **common,
            )
        elif service == "ftp":
            _emit(
                w,
                devv,
                t,
                "ftp_brute",
                w.ip[devv],
                port,
                rounds=rng.integers(0, 6, n),
                td=_choice(rng, (TD_FIN_SERVER, TD_FIN, TD_RST_FWD), (0.4, 0.5, 0.1), n),
                label=_L["FTP-Patator"],
                **common,
            )
        elif service == "telnet":
            _emit(
                w,
                devv,
                t,
                "telnet_login",
                w.ip[devv],
                port,
                rounds=rng.integers(0, 5, n),
                td=_choice(rng, (TD_FIN_SERVER, TD_FIN, TD_RST_FWD), (0.5, 0.3, 0.2), n),
                label=_L["Telnet Brute Force"],
                **common,
            )
        else:
            _emit(
                w,
                devv,
                t,
                "http_brute",
                w.ip[devv],
                port,
                rounds=rng.integers(1, 10, n),
                td=_teardown(rng, n, p_fin=0.6, p_rst_f=0.1),
                gap_us=_lognormal(rng, np.full(n, 2e4 * (1 + 20 * s)), 1.0),
                label=_L["HTTP Brute Force"],
                **common,
            )


_ATTACKS = {"ddos": _ddos, "dos": _dos, "portscan": _portscan, "botnet": _botnet, "bruteforce": _bruteforce}
