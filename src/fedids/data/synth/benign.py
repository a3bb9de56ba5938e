"""Benign behaviour of the IoT site: telemetry, DNS/NTP, cloud calls, cameras, speakers, discovery,
hubs, local control, and the attack look-alikes among benign traffic."""

from __future__ import annotations

import numpy as np

from fedids.data.synth.config import FLOW_TIMEOUT_US
from fedids.data.synth.emitters import _connections, _dns, _emit, _failed, _persistent, _teardown, _udp_stream
from fedids.data.synth.profiles import _STACK, HS_FULL, HS_NONE, HS_REFUSED, TD_FIN, TD_NONE
from fedids.data.synth.sampling import _choice, _lognormal, _ragged_arange
from fedids.data.synth.world import (
    _ATTACKER_OCTETS,
    _BULB,
    _CAMERA,
    _CLOUD_OCTETS,
    _DISCOVERY_PORTS,
    _DOOR,
    _HUB,
    _LOCAL_API_PORT,
    _MAX_LAN_PEERS,
    _PLUG,
    _SPEAKER,
    _THERMOSTAT,
    _lan_hosts,
    _periodic,
    _poisson,
    _World,
)


def _plan_benign(w: _World) -> None:
    """Every benign flow of the site, step by step (the order fixes the random draws)."""
    noise = 0.5 + 0.5 * w.cfg.difficulty  # attack-like benign noise grows with difficulty
    _dns_and_ntp(w)
    _telemetry(w)
    _camera_cloud(w, noise)
    _camera_local(w)
    _cloud_calls(w)
    _speakers(w)
    _multicast_discovery(w)
    _discovery_sweeps(w, noise)
    _hub_polling(w, noise)
    _local_control(w)
    _failed_lookalikes(w, noise)


def _dns_and_ntp(w: _World) -> None:
    """DNS lookups and NTP/SNTP of every device."""
    rng = w.rng
    all_dev = np.arange(w.n)
    # DNS: low TTLs and little caching make IoT devices chatty resolvers.
    dns_rate = np.array([220, 120, 140, 400, 200, 30, 100], float)[w.kind] * w.pace
    _dns(w, *_poisson(w, all_dev, dns_rate))
    # NTP/SNTP at a device-specific period.
    d, t = _periodic(w, all_dev, np.array([3600, 1800, 3600, 900, 1024, 3600, 3600], float)[w.kind] * w.pace)
    _emit(
        w,
        d,
        t,
        "ntp",
        w.ntp[rng.integers(0, 4, len(d))],
        123,
        hs=HS_NONE,
        rounds=np.where(rng.random(len(d)) < 0.15, 4, 1),
        td=TD_NONE,
        gap_us=2e6,
    )


def _telemetry(w: _World) -> None:
    """Persistent telemetry connections, CoAP streams and local UDP broadcasts."""
    rng = w.rng
    # Telemetry over persistent MQTT (TLS or plain) / vendor keep-alive connections.
    tele = w.of_kind(_CAMERA, _THERMOSTAT, _HUB, _SPEAKER)
    tls = tele[rng.random(len(tele)) < 0.8]
    _persistent(w, tls, "mqtts", w.cloud[tls, 1], 8883, 30 * w.pace[tls])
    plain = np.setdiff1d(tele, tls)
    _persistent(w, plain, "mqtt", w.cloud[plain, 1], 1883, 45 * w.pace[plain])
    small = w.of_kind(_PLUG, _BULB)
    tuya = small[rng.random(len(small)) < 0.5]
    _persistent(w, tuya, "keepalive_tcp", w.cloud[tuya, 1], 8886, 40 * w.pace[tuya], reconnect_h=0.5)
    other = np.setdiff1d(small, tuya)
    _persistent(w, other, "mqtt", w.cloud[other, 1], 1883, 60 * w.pace[other], reconnect_h=0.5)
    # CoAP telemetry from thermostats and plugs (fixed port 5683 on both ends).
    coap = w.of_kind(_THERMOSTAT, _PLUG)
    coap = coap[rng.random(len(coap)) < 0.5]
    _udp_stream(w, coap, "coap", w.cloud[coap, 0], 5683, 5683, 20 * w.pace[coap])
    # Local UDP broadcasts announcing plugs and bulbs (Tuya-style, every few seconds).
    bc = small[rng.random(len(small)) < 0.6]
    _udp_stream(w, bc, "bcast", w.bcast[w.gw[bc] - 1], 6667, 6667, 5 * w.pace[bc], rtt_b="lan")


def _camera_cloud(w: _World, noise: float) -> None:
    """Cameras and the Internet: P2P relay hellos, motion notifications and clip uploads, hole punching."""
    rng = w.rng
    cam = w.of_kind(_CAMERA)
    for r in range(3):
        _udp_stream(
            w,
            cam,
            "p2p_hello",
            w.relays[(np.arange(len(cam)) + r) % 3],
            32100,
            w.sports(w.stack[cam]),
            15 * w.pace[cam],
        )
    d, t = _poisson(w, cam, 14 * w.pace[cam], diurnal=True)
    _connections(w, d, t, "https_api", w.cloud[d, 0], 443, rounds=rng.integers(1, 3, len(d)), p_dns=0.5)
    up = rng.random(len(d)) < 0.8
    _connections(
        w,
        d[up],
        t[up] + _lognormal(rng, np.full(up.sum(), 5e5), 0.5),
        "video_upload",
        w.cloud[d[up], 3],
        443,
        rounds=rng.integers(4, 40, up.sum()),
        gap_us=8e5,
        p_dns=0.3,
    )
    d, t = _poisson(w, cam, 3 * noise, diurnal=False)
    k = rng.integers(3, 9, len(d))
    d, t = np.repeat(d, k), np.repeat(t, k) + _ragged_arange(k) * _lognormal(rng, np.full(k.sum(), 2e5), 0.8)
    peer = w.hosts.public(rng, max(len(d) // 5, 1), _ATTACKER_OCTETS + _CLOUD_OCTETS)
    _emit(
        w,
        d,
        t,
        "p2p_punch",
        peer[rng.integers(0, len(peer), len(d))],
        rng.integers(10000, 65000, len(d)),
        hs=HS_NONE,
        rounds=rng.integers(1, 3, len(d)),
        td=TD_NONE,
    )


def _camera_local(w: _World) -> None:
    """Cameras on the LAN: live view from a phone (RTSP) and WS-Discovery hellos."""
    rng = w.rng
    cam = w.of_kind(_CAMERA)
    # Live view from a phone: RTSP sessions, cut into 120-s flows.
    d, t = _poisson(w, cam, 0.6, diurnal=True)
    minutes = _lognormal(rng, np.full(len(d), 2.0), 0.7)
    k = np.ceil(minutes * 60e6 / (FLOW_TIMEOUT_US + 5e5)).astype(np.int64)
    d_r = np.repeat(d, k)
    kk = _ragged_arange(k)
    session = np.repeat(np.arange(len(d)), k)
    phone = w.phones[w.gw[d] - 1, rng.integers(0, 2, len(d))]
    phone_stack = np.where(rng.random(len(d)) < 0.5, _STACK["android"], _STACK["ios"])
    _emit(
        w,
        d_r,
        np.repeat(t, k) + kk * (FLOW_TIMEOUT_US + 5e5),
        "rtsp_live",
        w.ip[d_r],
        554,
        src=phone[session],
        sport=w.sports(phone_stack)[session],
        hs=np.where(kk == 0, HS_FULL, HS_NONE),
        rounds=110,
        gap_us=1e6,
        td=np.where(kk == k[session] - 1, TD_FIN, TD_NONE),
        rtt_f=w.lan_rtt(d_r),
        rtt_b=w.lan_rtt(d_r),
        stack_f=phone_stack[session],
        stack_b=w.stack[d_r],
    )
    # WS-Discovery/ONVIF hello.
    d, t = _poisson(w, cam, 2)
    _emit(
        w,
        d,
        t,
        "wsd",
        w.mcast["wsd"],
        3702,
        hs=HS_NONE,
        rounds=rng.integers(1, 3, len(d)),
        td=TD_NONE,
        rtt_b=w.lan_rtt(d),
    )


def _cloud_calls(w: _World) -> None:
    """Cloud API calls, heartbeats, update checks, firmware downloads, door-sensor events."""
    rng = w.rng
    all_dev = np.arange(w.n)
    # Cloud API calls and firmware checks, all device kinds.
    api_rate = np.array([14, 16, 10, 30, 24, 8, 8], float)[w.kind] * w.pace
    d, t = _poisson(w, all_dev, api_rate, diurnal=True)
    _connections(w, d, t, "https_api", w.cloud[d, 0], 443, rounds=rng.geometric(0.5, len(d)), p_dns=0.4)
    # Heartbeats over a fresh HTTPS connection every few minutes (devices without persistent links).
    hb = all_dev[w.kind != _DOOR]
    d, t = _periodic(w, hb, rng.choice([30.0, 60.0, 120.0, 180.0], len(hb)) * w.pace[hb], jitter=0.02)
    _connections(
        w, d, t, "https_api", w.cloud[d, 0], 443, rounds=1, p_dns=0.15, td=_teardown(rng, len(d), p_fin=0.8)
    )
    d, t = _periodic(w, all_dev, 3600 * w.pace, jitter=0.2)
    plain_http = rng.random(len(d)) < 0.5
    _connections(w, d[plain_http], t[plain_http], "http_api", w.cloud[d[plain_http], 2], 80, p_dns=0.6)
    d, t = d[~plain_http], t[~plain_http]
    _connections(w, d, t, "https_api", w.cloud[d, 2], 443, p_dns=0.6)
    d, t = _poisson(w, all_dev, 0.03)
    _connections(w, d, t, "fw_download", w.cloud[d, 2], 80, p_dns=1.0)
    # Door sensors wake up on events and heartbeats: a fresh TLS connection each time.
    door = w.of_kind(_DOOR)
    d, t = _poisson(w, door, 4, diurnal=True)
    d2, t2 = _periodic(w, door, 600 * w.pace[door], jitter=0.05)
    d, t = np.concatenate([d, d2]), np.concatenate([t, t2])
    _connections(
        w,
        d,
        t,
        "mqtts",
        w.cloud[d, 1],
        8883,
        rounds=rng.integers(1, 3, len(d)),
        p_dns=0.9,
        td=_teardown(rng, len(d), p_fin=0.85),
    )


def _speakers(w: _World) -> None:
    """Smart speakers: voice sessions (bursts of HTTPS) and audio streaming."""
    rng = w.rng
    spk = w.of_kind(_SPEAKER)
    d, t = _poisson(w, spk, 5, diurnal=True)
    k = rng.integers(3, 9, len(d))
    d, t = np.repeat(d, k), np.repeat(t, k) + _ragged_arange(k) * _lognormal(rng, np.full(k.sum(), 4e5), 1.0)
    _connections(
        w,
        d,
        t,
        "https_api",
        w.cloud[d, rng.integers(0, 4, len(d))],
        443,
        rounds=rng.integers(1, 5, len(d)),
        p_dns=0.6,
    )
    d, t = _poisson(w, spk, 0.4, diurnal=True)
    minutes = _lognormal(rng, np.full(len(d), 15.0), 0.8)
    k = np.ceil(minutes * 60e6 / (FLOW_TIMEOUT_US + 2e5)).astype(np.int64)
    d_r, kk = np.repeat(d, k), _ragged_arange(k)
    last = kk == np.repeat(k, k) - 1
    _emit(
        w,
        d_r,
        np.repeat(t, k) + kk * (FLOW_TIMEOUT_US + 2e5),
        "audio_stream",
        w.cdn[rng.integers(0, 4, len(d_r))],
        443,
        sport=np.repeat(w.sports(w.stack[d]), k),
        hs=np.where(kk == 0, HS_FULL, HS_NONE),
        rounds=rng.integers(15, 30, len(d_r)),
        gap_us=5e6,
        td=np.where(last, TD_FIN, TD_NONE),
    )


def _multicast_discovery(w: _World) -> None:
    """mDNS and SSDP from speakers and hubs, with the unicast answers of the subnet's UPnP devices."""
    rng = w.rng
    spk = w.of_kind(_SPEAKER)
    for devs in (spk, w.of_kind(_HUB)):
        _udp_stream(w, devs, "mdns", w.mcast["mdns"], 5353, 5353, 25 * w.pace[devs], rtt_b="lan")
        d, t = _poisson(w, devs, 6)
        sport = w.sports(w.stack[d])
        _emit(
            w,
            d,
            t,
            "ssdp",
            w.mcast["ssdp"],
            1900,
            sport=sport,
            hs=HS_NONE,
            rounds=rng.integers(1, 4, len(d)),
            td=TD_NONE,
            gap_us=1e5,
            rtt_b=w.lan_rtt(d),
        )
        # UPnP devices of the subnet answer the M-SEARCH by unicast from port 1900 to the asker's
        # ephemeral port: UDP flows to "random" high ports, one per responder.
        upnp = np.isin(w.kind, (_CAMERA, _SPEAKER, _HUB)) | w.telnet
        for asker, t_s, port in zip(d, t, sport):
            resp = np.flatnonzero(upnp & (w.gw == w.gw[asker]))
            resp = resp[resp != asker]
            if len(resp) == 0:
                continue
            resp = np.sort(rng.choice(resp, min(len(resp), _MAX_LAN_PEERS // 3), replace=False))
            _emit(
                w,
                resp,
                t_s + _lognormal(rng, np.full(len(resp), 3e5), 0.8),
                "ssdp",
                w.ip[asker],
                port,
                sport=1900,
                hs=HS_NONE,
                rounds=rng.integers(1, 3, len(resp)),
                td=TD_NONE,
                gap_us=5e3,
                rtt_b=w.lan_rtt(resp),
            )


def _discovery_sweeps(w: _World, noise: float) -> None:
    """Discovery sweeps of the LAN by speakers and hubs."""
    rng = w.rng
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
        _emit(
            w,
            devv[open_],
            times[open_],
            "probe_http",
            w.ip[tg[open_]],
            pt[open_],
            rounds=1,
            td=_teardown(rng, int(open_.sum()), p_fin=0.9),
            rtt_b=w.lan_rtt(tg[open_]),
            stack_b=w.stack[tg[open_]],
        )
        _emit(
            w,
            devv[~open_],
            times[~open_],
            "probe",
            w.ip[tg[~open_]],
            pt[~open_],
            hs=HS_REFUSED,
            rounds=0,
            td=TD_NONE,
            rtt_b=w.lan_rtt(tg[~open_]),
            stack_b=w.stack[tg[~open_]],
        )


def _hub_polling(w: _World, noise: float) -> None:
    """Hubs polling the local API of the devices in their subnet."""
    rng = w.rng
    # Hubs poll the local API of the devices in their subnet: many short LAN connections.
    for hub in w.of_kind(_HUB):
        targets = np.array(
            [x for x in _lan_hosts(w, w.gw[hub]) if int(w.kind[x]) in _LOCAL_API_PORT and x != hub],
            dtype=np.int64,
        )
        if len(targets) == 0:
            continue
        targets = np.sort(rng.choice(targets, min(len(targets), _MAX_LAN_PEERS), replace=False))
        period = rng.choice([15.0, 30.0, 60.0, 120.0], len(targets))
        tg, t = _periodic(w, targets, period, jitter=0.01)
        port = np.array([_LOCAL_API_PORT[int(k)] for k in w.kind[tg]], dtype=np.int64)
        hubv = np.full(len(tg), hub)
        # A polled device that is busy or rebooting refuses or ignores the connection.
        fail = rng.random(len(tg)) < 0.03 * noise
        _emit(
            w,
            hubv[~fail],
            t[~fail],
            "hub_poll_http",
            w.ip[tg[~fail]],
            port[~fail],
            rounds=1,
            td=_teardown(rng, int((~fail).sum()), p_fin=0.9),
            rtt_b=w.lan_rtt(tg[~fail]),
            stack_b=w.stack[tg[~fail]],
        )
        _failed(
            w, hubv[fail], t[fail], w.ip[tg[fail]], port[fail], w.lan_rtt(tg[fail]), stack_b=w.stack[tg[fail]]
        )


def _local_control(w: _World) -> None:
    """People on the LAN: phone control, web UI logins, SSH automation, FTP snapshot uploads."""
    rng = w.rng
    # People control devices from their phones (local API), diurnal.
    ctl = np.flatnonzero(np.isin(w.kind, list(_LOCAL_API_PORT)))
    d, t = _poisson(w, ctl, 3, diurnal=True)
    phone = w.phones[w.gw[d] - 1, rng.integers(0, 2, len(d))]
    pst = np.where(rng.random(len(d)) < 0.5, _STACK["android"], _STACK["ios"])
    port = np.array([_LOCAL_API_PORT[int(k)] for k in w.kind[d]], dtype=np.int64)
    _emit(
        w,
        d,
        t,
        "lan_tcp",
        w.ip[d],
        port,
        src=phone,
        rounds=rng.integers(1, 6, len(d)),
        td=_teardown(w.rng, len(d)),
        rtt_f=w.lan_rtt(d),
        rtt_b=w.lan_rtt(d),
        stack_f=pst,
        stack_b=w.stack[d],
    )
    # Web UI logins and automation over SSH (hubs, cameras), FTP snapshot uploads (cameras).
    web = w.of_kind(_CAMERA, _HUB)
    d, t = _poisson(w, web, 0.5, diurnal=True)
    phone = w.phones[w.gw[d] - 1, rng.integers(0, 2, len(d))]
    _emit(
        w,
        d,
        t,
        "web_ui",
        w.ip[d],
        np.where(w.kind[d] == _HUB, 8080, 80),
        src=phone,
        rounds=rng.integers(2, 30, len(d)),
        td=_teardown(rng, len(d)),
        rtt_f=w.lan_rtt(d),
        rtt_b=w.lan_rtt(d),
        stack_f=_STACK["android"],
        stack_b=w.stack[d],
    )
    sshd = np.flatnonzero(w.ssh)
    d, t = _poisson(w, sshd, 0.4)
    _emit(
        w,
        d,
        t,
        "ssh_admin",
        w.ip[d],
        22,
        src=w.laptop[w.gw[d] - 1],
        rounds=rng.integers(1, 80, len(d)),
        td=_teardown(rng, len(d), p_fin=0.9),
        rtt_f=w.lan_rtt(d),
        rtt_b=w.lan_rtt(d),
        stack_f=_STACK["linux_iot_new"],
        stack_b=w.stack[d],
    )
    ftpd = np.flatnonzero(w.ftp)
    d, t = _poisson(w, ftpd, 1.5, diurnal=True)
    _connections(w, d, t, "ftp_upload", w.cloud[d, 3], 21, rounds=rng.integers(3, 8, len(d)), p_dns=0.5)


def _failed_lookalikes(w: _World, noise: float) -> None:
    """Attack look-alikes: failed cloud connections with retries, in small bursts."""
    rng = w.rng
    all_dev = np.arange(w.n)
    d, t = _poisson(w, all_dev, 1.5 * noise)
    k = rng.integers(1, 5, len(d))
    d, t = np.repeat(d, k), np.repeat(t, k) + _ragged_arange(k) * _lognormal(rng, np.full(k.sum(), 5e6), 0.8)
    port = _choice(rng, (443, 8883, 80, 1883, 8886, 9000, 5222, 10001), (5, 3, 2, 1, 1, 1, 1, 1), len(d))
    _failed(w, d, t, w.cloud[d, rng.integers(0, 4, len(d))], port, w.wan_rtt(d), p_refused=0.4)
