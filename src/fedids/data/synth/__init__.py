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

The package is split by what each part is: :mod:`~fedids.data.synth.config` (:class:`SynthConfig`,
labels, constants), :mod:`~fedids.data.synth.profiles` (TCP stacks, behaviour profiles, handshake
templates), :mod:`~fedids.data.synth.world` (devices, gateways, addresses, the flow plan, timing
processes), :mod:`~fedids.data.synth.emitters` (flows of one profile), :mod:`~fedids.data.synth.benign`
and :mod:`~fedids.data.synth.attacks` (the planners), :mod:`~fedids.data.synth.packets` (packets and
features) and :mod:`~fedids.data.synth.generate` (the entry points).
"""

from __future__ import annotations

from fedids.data.synth.config import (  # noqa: F401 (re-exported)
    ACK,
    ACTIVITY_TIMEOUT_US,
    CWR,
    ECE,
    FIN,
    FLOW_TIMEOUT_US,
    LABEL_FAMILIES,
    LABELS,
    PSH,
    RST,
    START,
    SYN,
    URG,
    SynthConfig,
)
from fedids.data.synth.generate import generate_flows, write_synthetic_csv
from fedids.data.synth.packets import PacketArrays, _simulate_packets, compute_flow_features  # noqa: F401
from fedids.data.synth.profiles import (  # noqa: F401 (re-exported)
    _PROFILE,
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
from fedids.data.synth.world import _PLAN_DTYPES  # noqa: F401 (tests build plans)

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
