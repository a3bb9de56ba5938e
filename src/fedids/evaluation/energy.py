"""Energy and communication of federated training on IoT devices: a RAPL meter for the machine itself and
per-round / to-target summaries of a federated history, with the device and radio profiles of
:mod:`fedids.devices`.

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

from fedids.devices import (  # noqa: F401 (re-exported: the profiles the summaries use)
    BYTES_PER_MB,
    DEVICE_PROFILES,
    RADIO_PROFILES,
    DeviceProfile,
    RadioProfile,
)

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
        "total_j": float(sum(r.total_j for r in rounds if r.total_j is not None)) if have_cpu else None,
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
            float(sum(r.total_j for r in upto if r.total_j is not None))
            if k is not None and have_cpu
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
