"""The hardware fedids trains on, as numbers: CPU energy profiles of IoT devices and energy profiles of their
radios. Pure data with the two conversions (CPU seconds to joules, bytes to joules); the formulas, what is
measured and what is modelled are in :mod:`fedids.evaluation.energy`, which summarises federated histories
with these profiles, as :mod:`fedids.federation.adaptive` prices a round with them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
