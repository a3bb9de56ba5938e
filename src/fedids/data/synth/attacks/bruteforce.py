"""Brute force: an attacker, external or on a gateway's laptop, tries credentials against the login
services it finds (SSH, telnet, FTP, the web logins of cameras and hubs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedids.data.synth.attacks.common import _Episode, _stealth
from fedids.data.synth.config import _L
from fedids.data.synth.emitters import _emit, _teardown
from fedids.data.synth.profiles import _STACK, TD_FIN, TD_FIN_SERVER, TD_RST_FWD
from fedids.data.synth.sampling import _choice, _jitter, _lognormal
from fedids.data.synth.world import _ATTACKER_OCTETS, _CAMERA, _HUB, _World


@dataclass(frozen=True)
class _Login:
    """How the tool's connections to one service look: behaviour profile, request rounds per connection
    (``[lo, hi)``), teardown mix over (server FIN, client FIN, client RST) (None: ordinary web
    teardowns, with paced requests) and label."""

    profile: str
    rounds: tuple[int, int]
    teardown: tuple[float, float, float] | None
    label: str


_LOGINS = {
    "ssh": _Login("ssh_brute", (1, 4), (0.6, 0.3, 0.1), "SSH-Patator"),
    "telnet": _Login("telnet_login", (0, 5), (0.5, 0.3, 0.2), "Telnet Brute Force"),
    "ftp": _Login("ftp_brute", (0, 6), (0.4, 0.5, 0.1), "FTP-Patator"),
    "http": _Login("http_brute", (1, 10), None, "HTTP Brute Force"),
}


def _bruteforce(w: _World, ep: _Episode) -> None:
    """An attacker tries credentials against the login services it finds (SSH, telnet, FTP, web)."""
    rng = w.rng
    s = _stealth(w)
    by_service = _login_services(w)
    services = [name for name, found in by_service.items() if found]
    internal = rng.random() < 0.25
    share = rng.multinomial(ep.budget, rng.dirichlet(np.full(len(services), 6.0)))
    for service, n in zip(services, share):
        n = int(n)
        if n == 0:
            continue
        _login_attempts(w, ep, service, by_service[service], n, internal, s)


def _login_services(w: _World) -> dict[str, list[tuple[int, int]]]:
    """``(device, port)`` of every login service of the site, per service (``ssh``, ``telnet``, ``ftp``,
    ``http``, in that order)."""
    by_service: dict[str, list[tuple[int, int]]] = {"ssh": [], "telnet": [], "ftp": [], "http": []}
    for d in range(w.n):
        ports = w.ports_open(d)
        for service, q in (("ssh", 22), ("telnet", 23), ("ftp", 21)):
            if q in ports:
                by_service[service].append((d, q))
        if int(w.kind[d]) in (_CAMERA, _HUB):
            by_service["http"].append((d, 8080 if w.kind[d] == _HUB else 80))
    if not any(by_service.values()):  # tiny sites: every device has some web login
        by_service["http"].append((int(w.rng.integers(0, w.n)), 80))
    return by_service


def _login_attempts(
    w: _World, ep: _Episode, service: str, found: list[tuple[int, int]], n: int, internal: bool, s: float
) -> None:
    """``n`` connections of the tool to one or two of the devices ``found`` offering ``service``."""
    rng = w.rng
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
    login = _LOGINS[service]
    rounds = rng.integers(login.rounds[0], login.rounds[1], n)
    if login.teardown is None:  # web logins: ordinary teardowns, requests paced by the tool
        td = _teardown(rng, n, p_fin=0.6, p_rst_f=0.1)
        gap_us = _lognormal(rng, np.full(n, 2e4 * (1 + 20 * s)), 1.0)
    else:
        td = _choice(rng, (TD_FIN_SERVER, TD_FIN, TD_RST_FWD), login.teardown, n)
        gap_us = None
    _emit(
        w,
        devv,
        t,
        login.profile,
        w.ip[devv],
        port,
        rounds=rounds,
        td=td,
        gap_us=gap_us,
        label=_L[login.label],
        **common,
    )
