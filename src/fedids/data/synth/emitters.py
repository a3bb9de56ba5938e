"""Emitters: add flows of one behaviour profile to the plan (ordinary connections, DNS lookups,
persistent connections seen as 120-s chunks, periodic UDP streams, failed connection attempts)."""

from __future__ import annotations

import numpy as np

from fedids.data.synth.profiles import (
    _PROFILE,
    _PT,
    HS_FULL,
    HS_NONE,
    HS_REFUSED,
    HS_UNANSWERED,
    TD_FIN,
    TD_FIN_SERVER,
    TD_NONE,
    TD_RST_BWD,
    TD_RST_FWD,
)
from fedids.data.synth.sampling import _choice, _lognormal
from fedids.data.synth.world import _SPEAKER, _chunks, _World


def _emit(
    w: _World,
    dev: np.ndarray,
    t0: np.ndarray,
    profile: str,
    dst: np.ndarray | int,
    dport,
    *,
    src=None,
    sport=None,
    hs=HS_FULL,
    rounds=1,
    td=TD_FIN,
    rtt_f=None,
    rtt_b=None,
    stack_f=None,
    stack_b=None,
    gap_us=None,
    size_shift=None,
    label: int = 0,
    retries=0,
    flags0=0,
) -> None:
    """Add flows of one profile; unspecified columns get the device's defaults."""
    dev = np.asarray(dev, dtype=np.int64)
    n = len(dev)
    if n == 0:
        return
    sf = w.stack[dev] if stack_f is None else np.broadcast_to(stack_f, (n,))
    pid = _PROFILE[profile]
    w.plan.add(
        t0=t0,
        src=w.ip[dev] if src is None else src,
        dst=dst,
        sport=w.sports(np.asarray(sf, dtype=np.int64)) if sport is None else sport,
        dport=dport,
        label=label,
        device=dev,
        profile=pid,
        hs=hs,
        retries=retries,
        flags0=flags0,
        rounds=rounds,
        td=td,
        rtt_f=w.lan_rtt(dev) if rtt_f is None else rtt_f,
        rtt_b=w.wan_rtt(dev) if rtt_b is None else rtt_b,
        size_shift=w.size[dev] if size_shift is None else size_shift,
        gap_us=_PT["gap_default"][pid] if gap_us is None else gap_us,
        stack_f=sf,
        stack_b=w.cloud_stack[dev] if stack_b is None else stack_b,
    )


def _teardown(
    rng: np.random.Generator,
    n: int,
    p_fin: float = 0.72,
    p_server: float = 0.1,
    p_rst_f: float = 0.04,
    p_rst_b: float = 0.04,
) -> np.ndarray:
    """Teardown mix of ordinary connections; the rest are left open (cut by the flow timeout)."""
    p_none = max(0.0, 1 - p_fin - p_server - p_rst_f - p_rst_b)
    return _choice(
        rng,
        (TD_FIN, TD_FIN_SERVER, TD_RST_FWD, TD_RST_BWD, TD_NONE),
        (p_fin, p_server, p_rst_f, p_rst_b, p_none),
        n,
    )


def _dns(w: _World, dev: np.ndarray, t: np.ndarray) -> None:
    rng = w.rng
    n = len(dev)
    public = (w.kind[dev] == _SPEAKER) | (rng.random(n) < 0.1)
    dst = np.where(public, w.public_dns[rng.integers(0, 2, n)], w.gw_ip[w.gw[dev] - 1])
    # The gateway forwarder answers from its cache or asks upstream: latency is bimodal.
    rtt_b = np.where(public, w.wan_rtt(dev), w.lan_rtt(dev))
    # A lost answer is retried from the same socket (same flow) after ~1-5 s.
    retry = rng.random(n) < 0.04 + 0.02 * w.cfg.difficulty
    rounds = np.where(retry, 2, np.where(rng.random(n) < 0.25, 2, 1))
    gap = np.where(retry, _lognormal(rng, np.full(n, 2e6), 0.4), _lognormal(rng, np.full(n, 3e3), 1.0))
    _emit(w, dev, t, "dns", dst, 53, hs=HS_NONE, rounds=rounds, td=TD_NONE, rtt_b=rtt_b, gap_us=gap)


def _connections(
    w: _World,
    dev: np.ndarray,
    t: np.ndarray,
    profile: str,
    dst: np.ndarray,
    dport,
    rounds: np.ndarray | int = 1,
    p_dns: float = 0.3,
    **kw,
) -> None:
    """Ordinary client connections, a DNS lookup before some of them (cache misses)."""
    rng = w.rng
    n = len(dev)
    if n == 0:
        return
    lookup = rng.random(n) < p_dns
    _dns(w, dev[lookup], np.maximum(t[lookup] - _lognormal(rng, np.full(lookup.sum(), 3e4), 0.8), 0))
    kw.setdefault("td", _teardown(rng, n))
    _emit(w, dev, t, profile, dst, dport, rounds=rounds, **kw)


def _persistent(
    w: _World,
    devs: np.ndarray,
    profile: str,
    dst: np.ndarray,
    dport,
    period_s: np.ndarray,
    reconnect_h: float = 0.3,
) -> None:
    """A long-lived TCP connection per device (MQTT, vendor keep-alive), seen as 120-s chunks."""
    if len(devs) == 0:
        return
    rng = w.rng
    ch = _chunks(w, devs, period_s, reconnect_h)
    dev, di, n = ch["dev"], ch["di"], len(ch["dev"])
    sport = w.sports(w.stack[ch["conn_dev"]])[ch["conn"]]  # one source port per connection
    td = np.where(
        ch["last"], _choice(rng, (TD_RST_BWD, TD_RST_FWD, TD_FIN, TD_NONE), (0.3, 0.2, 0.2, 0.3), n), TD_NONE
    )
    dst_arr = np.asarray(dst)[di] if np.ndim(dst) else dst
    gap = np.broadcast_to(period_s, devs.shape)[di] * 1e6
    _emit(
        w,
        dev,
        ch["t0"],
        profile,
        dst_arr,
        dport,
        sport=sport,
        hs=np.where(ch["first"], HS_FULL, HS_NONE),
        rounds=ch["rounds"],
        td=td,
        gap_us=gap,
    )


def _udp_stream(
    w: _World,
    devs: np.ndarray,
    profile: str,
    dst: np.ndarray | int,
    dport,
    sport,
    period_s: np.ndarray,
    rtt_b: str = "wan",
) -> None:
    """Periodic UDP exchanges between fixed ports: CICFlowMeter cuts them into 120-s flows."""
    if len(devs) == 0:
        return
    ch = _chunks(w, devs, period_s, 0.0)
    dev, pos = ch["dev"], ch["di"]
    dst_arr = np.asarray(dst)[pos] if np.ndim(dst) else dst
    sport_arr = np.asarray(sport)[pos] if np.ndim(sport) else sport
    gap = np.broadcast_to(period_s, devs.shape)[pos] * 1e6
    rtt = w.wan_rtt(dev) if rtt_b == "wan" else w.lan_rtt(dev)
    _emit(
        w,
        dev,
        ch["t0"],
        profile,
        dst_arr,
        dport,
        sport=sport_arr,
        hs=HS_NONE,
        rounds=ch["rounds"],
        td=TD_NONE,
        gap_us=gap,
        rtt_b=rtt,
    )


def _failed(
    w: _World,
    dev: np.ndarray,
    t: np.ndarray,
    dst: np.ndarray,
    dport: np.ndarray,
    rtt_b: np.ndarray,
    stack_b=None,
    label: int = 0,
    p_refused: float = 0.5,
) -> None:
    """Connection attempts that fail: refused (SYN, RST) or unanswered (SYN and retransmissions)."""
    rng = w.rng
    n = len(dev)
    refused = rng.random(n) < p_refused
    retries = np.where(refused, 0, rng.integers(1, 6, n))  # OS stacks retransmit an unanswered SYN
    _emit(
        w,
        dev,
        t,
        "probe",
        dst,
        dport,
        hs=np.where(refused, HS_REFUSED, HS_UNANSWERED),
        rounds=0,
        td=TD_NONE,
        retries=retries,
        rtt_b=rtt_b,
        stack_b=stack_b,
        label=label,
    )
