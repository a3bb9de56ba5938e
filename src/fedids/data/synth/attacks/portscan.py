"""Port scans: an external or internal scanner; vertical nmap-style scans of a few hosts (raw SYN or
connect()) and masscan-style sweeps of the well-known ports across hosts, then version detection on
the open ports found."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedids.data.synth.attacks.common import _Episode, _probes, _stealth, _times
from fedids.data.synth.config import _L, FIN, PSH, URG
from fedids.data.synth.emitters import _emit, _teardown
from fedids.data.synth.profiles import (
    _STACK,
    HS_FULL,
    HS_HALF_OPEN,
    HS_REFUSED,
    HS_UNANSWERED,
    TD_NONE,
    TD_RST_FWD,
)
from fedids.data.synth.sampling import _lognormal
from fedids.data.synth.world import _ATTACKER_OCTETS, _OTHER_PORTS, _SCAN_PORTS, _lan_hosts, _World


@dataclass(frozen=True)
class _Scanner:
    """The scanning host (index into the world's hosts), whether it sits inside a subnet, the source
    port its raw probes keep, and the episode's stealth share."""

    host: int
    internal: bool
    src_port: int
    stealth: float


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
    jobs = _scan_jobs(w, ep, pool, s)
    src_port = int(rng.integers(32768, 61000))  # nmap keeps one source port for its raw probes
    for tg, ports, lo, hi in jobs:
        _scan(w, _Scanner(scanner, internal, src_port, s), tg, ports, lo, hi)


def _scan_jobs(
    w: _World, ep: _Episode, pool: np.ndarray, s: float
) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Split the budget into vertical scans of a few targets and (a share growing with ``s``) one sweep
    of the pool; returns ``(target per probe, port per probe, start, end)`` per scan."""
    rng = w.rng
    n_sweep = int(rng.binomial(ep.budget, 0.6 * s))
    n_vertical = ep.budget - n_sweep
    # A target has 65,535 ports: very large budgets spread over more targets.
    n_targets = max(int(rng.integers(2, 6)), -(-n_vertical // 60000))
    targets = rng.choice(pool, size=min(len(pool), n_targets), replace=False)
    per_target = int(np.clip(n_vertical // len(targets), 1, 65535))
    span = (ep.end - ep.start) / (len(targets) + (n_sweep > 0))
    jobs = []
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
    return jobs


def _scan(w: _World, sc: _Scanner, tg: np.ndarray, ports: np.ndarray, lo: float, hi: float) -> None:
    """One scan: a probe of port ``ports[i]`` of device ``tg[i]`` per flow between ``lo`` and ``hi``
    (us), then version detection on the open ports found."""
    rng, n, s = w.rng, len(ports), sc.stealth
    # Raw SYN scan (nmap -sS: window 1024, MSS-only options) or connect() scan through the OS
    # stack, whose probes look like any failed connection.
    connect = rng.random() < s
    t = _times(rng, n, lo, hi)
    open_ = np.array([int(p) in w.ports_open(int(d)) for d, p in zip(tg, ports)], bool)
    rtt_f = w.lan_rtt(tg) if sc.internal else _lognormal(rng, np.full(n, 5e4), 0.4)
    stack = _STACK["linux_iot_new"] if connect else _STACK["nmap"]
    sport = w.sports(np.full(n, stack)) if connect else sc.src_port
    hs_open = HS_FULL if connect else HS_HALF_OPEN
    # Closed ports answer with RST; a few probes are dropped and retried by the scanner.
    dropped = rng.random(n) < 0.08
    hs = np.where(open_, hs_open, np.where(dropped, HS_UNANSWERED, HS_REFUSED))
    flags0 = 0 if connect else np.where(rng.random(n) < 0.05 * (1 - s), FIN | PSH | URG, 0)
    _probes(
        w,
        tg,
        t,
        w.ip[tg],
        ports,
        src=sc.host,
        sport=sport,
        hs=hs,
        td=np.where(open_ & connect, TD_RST_FWD, TD_NONE),
        retries=np.where(dropped, 1, 0),
        flags0=flags0,
        rtt_f=rtt_f,
        rtt_b=w.lan_rtt(tg),
        stack_f=stack,
        stack_b=w.stack[tg],
        label=_L["PortScan"],
    )
    if open_.any():  # service/version detection on the open ports found
        dv, op = tg[open_], ports[open_]
        tv = t[-1] + np.cumsum(_lognormal(rng, np.full(len(op), 2e5), 1.0))
        _emit(
            w,
            dv,
            tv,
            "scan_version",
            w.ip[dv],
            op,
            src=sc.host,
            rounds=rng.integers(1, 4, len(op)),
            td=_teardown(rng, len(op), p_fin=0.5, p_rst_f=0.4),
            rtt_f=rtt_f[open_],
            rtt_b=w.lan_rtt(dv),
            stack_f=_STACK["kali"],
            stack_b=w.stack[dv],
            label=_L["PortScan"],
        )
