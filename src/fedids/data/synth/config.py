"""Configuration, labels and constants of the synthetic IoT traffic generator."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from fedids.data.schema import BENIGN_LABEL, normalise_label

START = np.datetime64("2017-07-05T08:00:00", "us")
"""Wall-clock time of the first simulated microsecond (a Wednesday, like CICIDS2017's DoS day)."""

FLOW_TIMEOUT_US = 120e6
"""CICFlowMeter's flow timeout: a flow ends 120 s after its first packet (later packets of the same
5-tuple start a new flow, which is why persistent connections appear as 120-s chunks)."""

ACTIVITY_TIMEOUT_US = 5e6
"""CICFlowMeter's activity timeout: a gap longer than this ends an active period (Active/Idle)."""

# TCP flag bits as on the wire.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128

_RAW_LABELS = (
    BENIGN_LABEL,
    "DDoS",
    "DoS Hulk",
    "DoS slowloris",
    "DoS Slowhttptest",
    "DoS SYN Flood",
    "PortScan",
    "Bot",
    "SSH-Patator",
    "FTP-Patator",
    "Telnet Brute Force",
    "HTTP Brute Force",
)
LABELS: tuple[str, ...] = tuple(normalise_label(raw) for raw in _RAW_LABELS)
"""Every label the generator emits: CICIDS2017's names where CICIDS2017 has the class, normalised
like :func:`fedids.data.schema.normalise_label` does. The brute force on web logins is called
``"HTTP Brute Force"``: CICIDS2017's ``"Web Attack - Brute Force"`` belongs to the web-attack family."""
LABEL_FAMILIES: dict[str, str] = dict(
    zip(
        LABELS,
        (
            "benign",
            "ddos",
            "dos",
            "dos",
            "dos",
            "dos",
            "portscan",
            "botnet",
            "bruteforce",
            "bruteforce",
            "bruteforce",
            "bruteforce",
        ),
    )
)
"""The family :func:`fedids.data.schema.family_of` must give each label (checked by the tests)."""
_L = {raw: i for i, raw in enumerate(_RAW_LABELS)}

_UDP_MAX_PAYLOAD = 1472  # 1500-byte MTU minus IPv4 and UDP headers: larger datagrams are split
_MAX_ROUNDS = 20000


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of one synthetic capture.

    Attributes
    ----------
    devices : int
        IoT devices, 4 to 50,000 (at most 180 per gateway: addresses ``.10`` to ``.189``).
    hours : float
        Simulated time span in hours, 0.25 to 168. Flow count grows linearly with
        ``devices * hours`` (about 480 flows per device-hour, 30k-80k flows at the defaults).
    seed : int
        Seed of the only random generator; the same config gives an identical frame.
    gateways : int
        Gateways, 1 to 250; gateway ``g`` (1-based) serves ``192.168.<g>.0/24``.
    difficulty : float
        0 to 5. 0 = attacks use tell-tale tool packets and little benign noise resembles them;
        larger = attack traffic closer to benign behaviour and more attack-like benign noise.
    attack_fraction : float
        Approximate share of attack flows, 0 to 0.6 (CICIDS2017 has about 0.2). 0 = benign only.
    """

    devices: int = 40
    hours: float = 2.0
    seed: int = 0
    gateways: int = 4
    difficulty: float = 1.0
    attack_fraction: float = 0.2

    def __post_init__(self) -> None:
        def _int(name: str, lo: int, hi: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"SynthConfig.{name} must be an integer, got {value!r}")
            if not lo <= int(value) <= hi:  # int(): typeshed's numbers.Integral has no comparisons
                raise ValueError(f"SynthConfig.{name} must be in [{lo}, {hi}], got {value}")

        def _real(name: str, lo: float, hi: float) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"SynthConfig.{name} must be a finite number, got {value!r}")
            if not lo <= float(value) <= hi:  # float(): typeshed's numbers.Real has no comparisons
                raise ValueError(f"SynthConfig.{name} must be in [{lo}, {hi}], got {value}")

        _int("devices", 4, 50_000)
        _int("gateways", 1, 250)
        _int("seed", 0, 2**63 - 1)
        _real("hours", 0.25, 168.0)
        _real("difficulty", 0.0, 5.0)
        _real("attack_fraction", 0.0, 0.6)
        if self.gateways > self.devices:
            raise ValueError(
                f"SynthConfig.gateways ({self.gateways}) must not exceed devices ({self.devices})"
            )
        per_gateway = -(-self.devices // self.gateways)
        if per_gateway > 180:
            raise ValueError(
                f"SynthConfig: {self.devices} devices on {self.gateways} gateways is {per_gateway} per "
                "/24 subnet; at most 180 fit (use more gateways)"
            )
