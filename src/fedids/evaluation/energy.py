"""Energy and communication of federated training on IoT devices: device profiles, radio profiles, a RAPL
meter for the machine itself, and per-round / to-target summaries of a federated history.

What is measured and what is modelled
-------------------------------------
*Measured* (by the federation, per round, in the history records): bytes sent to and received from the
clients (``bytes_down``, ``bytes_up``) and, where the record carries them, the clients' mean seconds of
local training (``client_seconds``, the client's own timing of one-thread training) and mean CPU seconds
of clipping, noise, encryption or masking (``client_privacy_seconds``) on *this* machine. On this machine itself,
package energy is measured with RAPL when ``/sys/class/powercap/intel-rapl*`` is readable
(:class:`RaplMeter`).

*Modelled* (this module): what the same work would cost on an IoT device. A device profile turns CPU
seconds on this machine into joules on the device::

    device_seconds = cpu_seconds * core_speed_factor / cores      (work spread over the device's cores)
    cpu_joules     = cpu_load_w * device_seconds                  (board power with all cores busy)

and a radio profile turns bytes into joules::

    radio_joules = bytes_up / 1e6 * tx_j_per_mb + bytes_down / 1e6 * rx_j_per_mb
    j_per_mb     = power_w * 8 / throughput_mbit_s                (energy of one MB = 1e6 bytes on air)

Radio joules are the radio's *incremental* energy while transferring (the board's own power during the
transfer is not added), CPU joules include the whole board at full load: both choices are stated so
that figures can be compared, not because they are exact.

Sources of every constant are given beside it and in ``docs/evaluation.md``. ``core_speed_factor`` is an
estimate (see :data:`DEVICE_PROFILES`); :func:`measure_reference_workload` times a fixed GRU training
workload so that the factor can be measured on a real device: run it there and here and divide.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BYTES_PER_MB = 1_000_000
"""Communication is reported in MB of 10^6 bytes (network convention), not MiB."""


# --------------------------------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class DeviceProfile:
    """CPU energy model of one device (see the module docstring for the formula).

    Attributes
    ----------
    name : short key used in results (``jetson-nano-5w``).
    description : human-readable name and mode.
    cpu_load_w : board power in watts with all cores busy; None when unknown (the host without RAPL).
    cores : CPU cores the device trains on.
    core_speed_factor : seconds one device core needs for work one core of *this* machine does in 1 s
        (> 1: the device is slower). 1.0 for the host by definition.
    source : where ``cpu_load_w`` and the core count come from, and how the speed factor was estimated.
    """

    name: str
    description: str
    cpu_load_w: float | None
    cores: int
    core_speed_factor: float
    source: str

    def __post_init__(self) -> None:
        if self.cores < 1 or not self.core_speed_factor > 0:
            raise ValueError(f"{self.name}: cores must be >= 1 and core_speed_factor > 0")
        if self.cpu_load_w is not None and not self.cpu_load_w > 0:
            raise ValueError(f"{self.name}: cpu_load_w must be > 0 or None")

    def device_seconds(self, cpu_seconds: float) -> float:
        """Wall seconds the device needs for ``cpu_seconds`` of single-core work on this machine."""
        return float(cpu_seconds) * self.core_speed_factor / self.cores

    def cpu_joules(self, cpu_seconds: float) -> float | None:
        """Joules for ``cpu_seconds`` (CPU seconds on this machine); None when the power is unknown."""
        if self.cpu_load_w is None:
            return None
        return self.cpu_load_w * self.device_seconds(cpu_seconds)


@dataclass(frozen=True)
class RadioProfile:
    """Radio energy model: power while sending / receiving at a stated application throughput.

    ``tx_w``/``rx_w`` in watts, ``tx_mbit_s``/``rx_mbit_s`` in Mbit/s; :attr:`tx_j_per_mb` and
    :attr:`rx_j_per_mb` follow from them (1 MB = 10^6 bytes).
    """

    name: str
    description: str
    tx_w: float
    rx_w: float
    tx_mbit_s: float
    rx_mbit_s: float
    source: str

    @property
    def tx_j_per_mb(self) -> float:
        return self.tx_w * 8.0 / self.tx_mbit_s

    @property
    def rx_j_per_mb(self) -> float:
        return self.rx_w * 8.0 / self.rx_mbit_s

    def joules(self, bytes_sent: float, bytes_received: float) -> float:
        """Incremental radio energy in joules for the given byte counts."""
        return bytes_sent / BYTES_PER_MB * self.tx_j_per_mb + bytes_received / BYTES_PER_MB * self.rx_j_per_mb

    def as_dict(self) -> dict:
        return asdict(self) | {"tx_j_per_mb": self.tx_j_per_mb, "rx_j_per_mb": self.rx_j_per_mb}


# Core speed factors. There is no published benchmark of this GRU on these boards, so the factors are
# estimates, stated with their reasoning and meant to be replaced by a measurement
# (measure_reference_workload on the device / on this machine):
# * this machine: one core of an AMD EPYC (Zen 3, family 25 model 1, 2.45 GHz base, AVX2) in a VM;
# * Raspberry Pi 4: Cortex-A72 at 1.5 GHz. Clock ratio about 2x (2.45-3.5 GHz vs 1.5 GHz), per-clock
#   scalar throughput of Zen 3 about 1.5-2x an A72, and 256-bit AVX2 FMA vs 128-bit NEON for the GEMM part
#   of training: 5x is taken as the middle of the 3x-10x range these ratios span;
# * Jetson Nano: Cortex-A57 at 1.479 GHz (MAXN) or 0.918 GHz (5 W) (NVIDIA's nvpmodel table). The A57
#   is taken as about 20% slower per clock than the A72: 5 x 1.5 / 1.479 x 1.2 ~= 6.1 at MAXN, and
#   6.1 x 1479 / 918 ~= 9.8 in the 5 W mode (frequency ratio).
_NANO_MAXN_FACTOR = 6.1
_NANO_5W_FACTOR = _NANO_MAXN_FACTOR * 1479 / 918  # same cores, clock capped at 918 instead of 1479 MHz
_SPEED_SOURCE = (
    "core_speed_factor is an estimate (clock ratio x per-clock throughput ratio, see "
    "fedids.evaluation.energy); measure it with measure_reference_workload on the device"
)

DEVICE_PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile(
            "jetson-nano-10w",
            "NVIDIA Jetson Nano, MAXN (10 W) mode: 4 x Cortex-A57 at 1479 MHz",
            cpu_load_w=10.0,
            cores=4,
            core_speed_factor=_NANO_MAXN_FACTOR,
            source=(
                "NVIDIA L4T Development Guide, 'Power Management for Jetson Nano', Supported Modes and Power "
                "Efficiency: mode 0 MAXN, power budget 10 W, 4 cores online, CPU max 1479 MHz. The budget is "
                "used as the board's power under CPU load (an upper bound: CPU-only training stays below it). "
                + _SPEED_SOURCE
            ),
        ),
        DeviceProfile(
            "jetson-nano-5w",
            "NVIDIA Jetson Nano, 5 W mode: 2 x Cortex-A57 at 918 MHz",
            cpu_load_w=5.0,
            cores=2,
            core_speed_factor=_NANO_5W_FACTOR,
            source=(
                "NVIDIA L4T Development Guide, 'Power Management for Jetson Nano': mode 1 '5W', power budget "
                "5 W, 2 cores online, CPU max 918 MHz; budget used as load power (upper bound). "
                + _SPEED_SOURCE
            ),
        ),
        DeviceProfile(
            "raspberry-pi-4",
            "Raspberry Pi 4 Model B: 4 x Cortex-A72 at 1.5 GHz",
            cpu_load_w=6.4,
            cores=4,
            core_speed_factor=5.0,
            source=(
                "J. Geerling, Raspberry Pi Dramble power-consumption benchmarks (pidramble.com/wiki/benchmarks/"
                "power-consumption): Pi 4 B with 'stress --cpu 4' (400% CPU load) 1280 mA at 5 V = 6.4 W "
                "(idle 540 mA, 2.7 W). " + _SPEED_SOURCE
            ),
        ),
        DeviceProfile(
            "host",
            "this machine (measured with RAPL where readable)",
            cpu_load_w=None,
            cores=1,
            core_speed_factor=1.0,
            source=(
                "Intel/AMD RAPL package energy counters via Linux powercap "
                "(/sys/class/powercap/intel-rapl*/energy_uj); no power figure is assumed when unreadable"
            ),
        ),
    )
}
"""The device table. ``host`` has no assumed power: its energy is measured (RAPL) or reported unavailable."""

# Wi-Fi: Huang et al., "A Close Examination of Performance and Power Characteristics of 4G LTE Networks",
# MobiSys 2012, Table 3 (linear power model P = alpha * throughput + beta, measured on smartphones):
# WiFi alpha_u = 283.17 mW/Mbps, alpha_d = 137.01 mW/Mbps, beta = 132.86 mW. Evaluated at an application
# throughput of 10 Mbit/s in both directions (an assumption; an IoT gateway on 2.4 GHz 802.11n).
_WIFI_MBIT_S = 10.0
_WIFI_TX_W = (283.17 * _WIFI_MBIT_S + 132.86) / 1000.0
_WIFI_RX_W = (137.01 * _WIFI_MBIT_S + 132.86) / 1000.0
# BLE: Nordic nRF52840 Product Specification: radio TX at 0 dBm 4.8 mA and RX at 1 Mbit/s 4.6 mA, DC/DC at
# 3 V (radio only). Application throughput of 0.5 Mbit/s over LE 1M PHY with data length extension is an
# assumption (the PHY rate is 1 Mbit/s; GATT/L2CAP overhead and connection events cut it about in half).
_BLE_MBIT_S = 0.5
# LTE-M: Nordic nRF9160 Product Specification, modem current consumption, Cat-M1 uplink 180 kbit/s at
# 23 dBm (3GPP TS 36.521-1 RMC): 100-115 mA by band at 3.7 V; 105 mA (band 20) is used. No receive figure
# at a matching rate is given there, so reception is charged at the same power and rate (conservative).
_LTEM_MBIT_S = 0.18
_LTEM_W = 0.105 * 3.7

RADIO_PROFILES: dict[str, RadioProfile] = {
    r.name: r
    for r in (
        RadioProfile(
            "wifi",
            "Wi-Fi 802.11n at 10 Mbit/s",
            _WIFI_TX_W,
            _WIFI_RX_W,
            _WIFI_MBIT_S,
            _WIFI_MBIT_S,
            source=(
                "Huang et al., MobiSys 2012, Table 3 WiFi power model (alpha_u 283.17, alpha_d "
                "137.01 mW/Mbps, beta 132.86 mW) evaluated at 10 Mbit/s (assumed throughput)"
            ),
        ),
        RadioProfile(
            "ble",
            "Bluetooth Low Energy, LE 1M PHY, 0.5 Mbit/s application throughput",
            4.8e-3 * 3.0,
            4.6e-3 * 3.0,
            _BLE_MBIT_S,
            _BLE_MBIT_S,
            source=(
                "Nordic nRF52840 Product Specification: TX 0 dBm 4.8 mA, RX 1 Mbit/s 4.6 mA at 3 V "
                "(DC/DC); 0.5 Mbit/s application throughput assumed"
            ),
        ),
        RadioProfile(
            "lte-m",
            "LTE-M (Cat-M1), 23 dBm, 180 kbit/s",
            _LTEM_W,
            _LTEM_W,
            _LTEM_MBIT_S,
            _LTEM_MBIT_S,
            source=(
                "Nordic nRF9160 Product Specification, modem current consumption: Cat-M1 uplink "
                "180 kbit/s at 23 dBm, 105 mA (band 20) at 3.7 V; downlink charged the same "
                "(conservative, no matching receive figure)"
            ),
        ),
    )
}


# --------------------------------------------------------------------------------------------------
# RAPL


RAPL_ROOT = Path("/sys/class/powercap")


def _rapl_domains(root: Path) -> list[Path]:
    """Top-level package domains (``intel-rapl:N``), not their sub-zones (``intel-rapl:N:M``)."""
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1 and (p / "energy_uj").exists()
    )


def rapl_unavailable_reason(root: Path = RAPL_ROOT) -> str | None:
    """None when RAPL package counters are readable, else why not (one line)."""
    if not root.is_dir():
        return f"{root} does not exist (no powercap driver, e.g. a virtual machine)"
    domains = _rapl_domains(root)
    if not domains:
        return f"{root} has no intel-rapl package domain"
    try:
        for d in domains:
            int((d / "energy_uj").read_text())
    except (OSError, ValueError) as exc:
        return f"{domains[0] / 'energy_uj'} is not readable ({exc.__class__.__name__}; usually root-only)"
    return None


class RaplMeter:
    """Context manager measuring package energy (joules, all sockets, all processes) with RAPL.

    Usage::

        with RaplMeter() as meter:
            work()
        meter.joules, meter.seconds

    The counters wrap at ``max_energy_range_uj``; one wrap per domain between enter and exit is
    corrected (a counter wraps after minutes to hours at full load, so long runs should be metered in
    parts). Raises ``RuntimeError`` on entry when RAPL is not readable (check
    :func:`rapl_unavailable_reason` first).
    """

    def __init__(self, root: Path = RAPL_ROOT) -> None:
        self.root = root
        self.joules: float = math.nan
        self.seconds: float = math.nan
        self._start: list[int] = []
        self._t0 = 0.0

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in _rapl_domains(self.root)]

    def __enter__(self) -> RaplMeter:
        reason = rapl_unavailable_reason(self.root)
        if reason:
            raise RuntimeError(f"RAPL unavailable: {reason}")
        self._start = self._read()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        self.seconds = time.perf_counter() - self._t0
        total = 0
        for d, a, b in zip(_rapl_domains(self.root), self._start, end):
            delta = b - a
            if delta < 0:
                max_path = d / "max_energy_range_uj"
                delta += int(max_path.read_text()) if max_path.exists() else 0
            total += delta
        self.joules = total / 1e6


# --------------------------------------------------------------------------------------------------
# From histories to joules and MB


@dataclass(frozen=True)
class RoundEnergy:
    """Energy and traffic of one federated round on one device/radio pair.

    ``cpu_seconds`` (this machine, all clients of the round) and ``cpu_j`` are None when the record does
    not carry ``client_seconds``. Joules and MB are totals over the round's clients; ``per_client_*`` are
    the same divided by ``clients``.
    """

    round: int
    clients: int
    macro_f1: float
    bytes_up: int
    bytes_down: int
    cpu_seconds: float | None
    cpu_seconds_parts: dict[str, float]
    cpu_j: float | None
    radio_j: float
    epsilon: float | None

    @property
    def total_j(self) -> float | None:
        return None if self.cpu_j is None else self.cpu_j + self.radio_j

    @property
    def mb(self) -> float:
        return (self.bytes_up + self.bytes_down) / BYTES_PER_MB

    @property
    def per_client_j(self) -> float | None:
        total = self.total_j
        return None if total is None or self.clients == 0 else total / self.clients

    @property
    def per_client_mb(self) -> float:
        return self.mb / self.clients if self.clients else 0.0


def compute_round_energy(record: Mapping, device: DeviceProfile, radio: RadioProfile) -> RoundEnergy:
    """Energy of one history record (a dict as in ``FederationState.history``).

    Reads ``round``, ``clients``, ``bytes_up``, ``bytes_down`` (totals over the round's clients),
    ``test.macro_f1`` and, when present, ``epsilon``, ``client_seconds`` (mean seconds of local training
    per client, as :class:`fedids.federation.server_app.RoundRecord` stores it) and
    ``client_privacy_seconds`` (mean CPU seconds of clipping, noise, encryption or masking per client).
    CPU seconds of the round = ``(client_seconds + client_privacy_seconds) * clients``.
    """
    clients = int(record.get("clients", 0))
    up, down = int(record.get("bytes_up", 0)), int(record.get("bytes_down", 0))
    train_s = record.get("client_seconds")
    if train_s is not None and math.isfinite(float(train_s)):
        privacy_s = record.get("client_privacy_seconds")
        parts = {
            "train": float(train_s) * clients,
            "privacy": float(privacy_s) * clients if privacy_s is not None else 0.0,
        }
        seconds: float | None = parts["train"] + parts["privacy"]
        cpu_j = device.cpu_joules(seconds)  # type: ignore[arg-type]
    else:
        seconds, parts, cpu_j = None, {}, None
    epsilon = record.get("epsilon")
    return RoundEnergy(
        round=int(record.get("round", 0)),
        clients=clients,
        macro_f1=float(record.get("test", {}).get("macro_f1", math.nan)),
        bytes_up=up,
        bytes_down=down,
        cpu_seconds=seconds,
        cpu_seconds_parts=parts,
        cpu_j=cpu_j,
        radio_j=radio.joules(up, down),
        epsilon=None if epsilon is None else float(epsilon),
    )


def rounds_to_target(history: Sequence[Mapping], target_macro_f1: float) -> int | None:
    """First round (1-based round number) whose test macro-F1 reaches ``target_macro_f1``; None if never."""
    for record in history:
        if float(record.get("test", {}).get("macro_f1", -1.0)) >= target_macro_f1:
            return int(record["round"])
    return None


def summarise_history(
    history: Sequence[Mapping],
    device: DeviceProfile,
    radio: RadioProfile,
    target_macro_f1: float | None = None,
) -> dict:
    """Per-round and cumulative joules and MB of a federated history on one device/radio pair.

    Returns
    -------
    dict with ``device``, ``radio``, ``per_round`` (list of dicts: round, clients, macro_f1, mb,
    per_client_mb, cpu_seconds, cpu_j, radio_j, total_j, per_client_j, epsilon), ``total_j`` (None when
    CPU seconds are missing in any round), ``total_radio_j``, ``total_mb``, ``mean_per_client_round_j``,
    ``mean_per_client_round_mb`` and, with a target, ``target_macro_f1``, ``rounds_to_target`` and
    ``to_target_j`` / ``to_target_mb`` (cumulative over all clients up to that round; None when the
    target is never reached).
    """
    rounds = [compute_round_energy(r, device, radio) for r in history]
    per_round = [
        {
            "round": r.round,
            "clients": r.clients,
            "macro_f1": r.macro_f1,
            "mb": r.mb,
            "per_client_mb": r.per_client_mb,
            "cpu_seconds": r.cpu_seconds,
            "cpu_j": r.cpu_j,
            "radio_j": r.radio_j,
            "total_j": r.total_j,
            "per_client_j": r.per_client_j,
            "epsilon": r.epsilon,
        }
        for r in rounds
    ]
    have_cpu = bool(rounds) and all(r.cpu_j is not None for r in rounds)
    per_client_j = [r.per_client_j for r in rounds if r.per_client_j is not None]
    out: dict = {
        "device": device.name,
        "radio": radio.name,
        "per_round": per_round,
        "total_j": float(sum(r.total_j for r in rounds)) if have_cpu else None,  # type: ignore[misc]
        "total_radio_j": float(sum(r.radio_j for r in rounds)),
        "total_mb": float(sum(r.mb for r in rounds)),
        "mean_per_client_round_j": float(np.mean(per_client_j)) if have_cpu and per_client_j else None,
        "mean_per_client_round_mb": float(np.mean([r.per_client_mb for r in rounds])) if rounds else 0.0,
    }
    if target_macro_f1 is not None:
        k = rounds_to_target(history, target_macro_f1)
        upto = [r for r in rounds if k is not None and r.round <= k]
        out["target_macro_f1"] = float(target_macro_f1)
        out["rounds_to_target"] = k
        out["to_target_mb"] = float(sum(r.mb for r in upto)) if k is not None else None
        out["to_target_j"] = (
            float(sum(r.total_j for r in upto))
            if k is not None and have_cpu  # type: ignore[misc]
            else None
        )
    return out


# --------------------------------------------------------------------------------------------------
# Calibration


def measure_reference_workload(
    rng: np.random.Generator,
    *,
    rows: int = 4096,
    epochs: int = 1,
    hidden: int = 64,
    window: int = 10,
    n_classes: int = 6,
) -> float:
    """CPU seconds (``time.process_time``) of a fixed GRU training workload on random data.

    Run it on a device and on this machine, one thread each, and divide: that is the device's
    ``core_speed_factor`` for this model. The data are random (shape matters, not content): ``rows``
    windows of ``window`` flows x 78 features, ``n_classes`` classes, batch 128, Adam.
    """
    import torch

    from fedids.model.train import TrainConfig, fit
    from fedids.task import new_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n_flows = rows + window
        scaled = rng.standard_normal((n_flows, 78)).astype(np.float32)
        windows = (np.arange(rows)[:, None] + np.arange(window)[None, :]).astype(np.int64)
        targets = rng.integers(0, n_classes, size=rows).astype(np.int64)
        model = new_model(n_classes, hidden, seed=int(rng.integers(0, 2**31 - 1)))
        start = time.process_time()
        fit(model, scaled, windows, targets, TrainConfig(epochs=epochs, batch_size=128, seed=0))
        return time.process_time() - start
    finally:
        torch.set_num_threads(threads)


def profiles_table() -> dict:
    """Every device and radio profile as plain dicts (for results.json and the report)."""
    return {
        "devices": {k: asdict(v) for k, v in DEVICE_PROFILES.items()},
        "radios": {k: v.as_dict() for k, v in RADIO_PROFILES.items()},
    }
