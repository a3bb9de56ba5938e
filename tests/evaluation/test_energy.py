"""Energy model: device and radio profiles against hand calculations, history summaries built from the
federation's own record type, and the RAPL reader on a powercap tree laid out like the kernel's."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

from fedids.evaluation import energy as en


def test_device_joules_by_hand() -> None:
    pi = en.DEVICE_PROFILES["raspberry-pi-4"]
    # 10 CPU seconds here -> 10 * 5.0 / 4 = 12.5 s on the Pi's four cores at 6.4 W -> 80 J.
    assert pi.device_seconds(10.0) == pytest.approx(12.5)
    assert pi.cpu_joules(10.0) == pytest.approx(80.0)
    nano5 = en.DEVICE_PROFILES["jetson-nano-5w"]
    # The 5 W mode runs the same cores at 918 instead of 1479 MHz: slower by the clock ratio.
    assert nano5.core_speed_factor == pytest.approx(
        en.DEVICE_PROFILES["jetson-nano-10w"].core_speed_factor * 1479 / 918
    )
    assert nano5.cpu_joules(2.0) == pytest.approx(5.0 * 2.0 * nano5.core_speed_factor / 2)
    assert en.DEVICE_PROFILES["host"].cpu_joules(5.0) is None  # no assumed power for the host


def test_radio_energy_per_mb_by_hand() -> None:
    wifi = en.RADIO_PROFILES["wifi"]
    # Huang et al. 2012: P = 283.17 mW/Mbps * 10 Mbps + 132.86 mW = 2.96456 W; 1 MB = 8 Mbit = 0.8 s.
    assert wifi.tx_j_per_mb == pytest.approx(2.96456 * 0.8)
    assert wifi.rx_j_per_mb == pytest.approx((137.01 * 10 + 132.86) / 1000 * 0.8)
    ltem = en.RADIO_PROFILES["lte-m"]
    assert ltem.tx_j_per_mb == pytest.approx(0.105 * 3.7 * 8 / 0.18)
    # 3 MB up and 1 MB down.
    assert wifi.joules(3_000_000, 1_000_000) == pytest.approx(3 * wifi.tx_j_per_mb + wifi.rx_j_per_mb)
    # BLE < Wi-Fi < LTE-M per byte, as the sources say.
    ble = en.RADIO_PROFILES["ble"]
    assert ble.tx_j_per_mb < wifi.tx_j_per_mb < ltem.tx_j_per_mb


def _history() -> list[dict]:
    """Three rounds in the federation's own record format (RoundRecord), as run_federation writes them."""
    from fedids.federation.server_app import RoundRecord

    def rec(r: int, f1: float, secs: float | None, priv: float | None, eps: float | None) -> dict:
        return asdict(
            RoundRecord(
                round=r,
                clients=4,
                rejected=0,
                train_loss=0.5,
                local_val_macro_f1=0.5,
                test={"accuracy": 0.9, "macro_f1": f1, "weighted_f1": 0.9, "mcc": 0.8},
                seconds=3.0,
                bytes_down=400_000,
                bytes_up=800_000,
                privacy="he+dp",
                epsilon=eps,
                client_seconds=secs,
                client_privacy_seconds=priv,
            )
        )

    return [rec(1, 0.40, 2.0, 0.5, 1.0), rec(2, 0.70, 2.0, 0.5, 1.5), rec(3, 0.80, 2.0, 0.5, 1.9)]


def test_round_energy_from_a_federation_record() -> None:
    pi, wifi = en.DEVICE_PROFILES["raspberry-pi-4"], en.RADIO_PROFILES["wifi"]
    r = en.compute_round_energy(_history()[0], pi, wifi)
    assert r.cpu_seconds == pytest.approx((2.0 + 0.5) * 4)  # per-client means times clients
    assert r.cpu_seconds_parts == {"train": 8.0, "privacy": 2.0}
    assert r.cpu_j == pytest.approx(6.4 * 10.0 * 5.0 / 4)  # 80 J
    assert r.radio_j == pytest.approx(0.8 * wifi.tx_j_per_mb + 0.4 * wifi.rx_j_per_mb)
    assert r.total_j == pytest.approx(r.cpu_j + r.radio_j)
    assert r.mb == pytest.approx(1.2) and r.per_client_mb == pytest.approx(0.3)
    assert r.epsilon == 1.0


def test_summary_to_target() -> None:
    pi, wifi = en.DEVICE_PROFILES["raspberry-pi-4"], en.RADIO_PROFILES["wifi"]
    history = _history()
    s = en.summarise_history(history, pi, wifi, target_macro_f1=0.7)
    one = en.compute_round_energy(history[0], pi, wifi).total_j
    assert s["rounds_to_target"] == 2  # first round with macro-F1 >= 0.7
    assert s["to_target_j"] == pytest.approx(2 * one)  # identical rounds
    assert s["to_target_mb"] == pytest.approx(2.4)
    assert s["total_mb"] == pytest.approx(3.6)
    assert s["total_j"] == pytest.approx(3 * one)
    assert s["mean_per_client_round_j"] == pytest.approx(one / 4)
    assert [x["epsilon"] for x in s["per_round"]] == [1.0, 1.5, 1.9]
    never = en.summarise_history(history, pi, wifi, target_macro_f1=0.95)
    assert (
        never["rounds_to_target"] is None and never["to_target_j"] is None and never["to_target_mb"] is None
    )


def test_missing_cpu_seconds_gives_no_joules_but_keeps_radio() -> None:
    history = [{**h, "client_seconds": None} for h in _history()]
    s = en.summarise_history(history, en.DEVICE_PROFILES["jetson-nano-10w"], en.RADIO_PROFILES["ble"], 0.7)
    assert s["total_j"] is None and s["to_target_j"] is None and s["mean_per_client_round_j"] is None
    assert s["total_radio_j"] > 0 and s["to_target_mb"] == pytest.approx(2.4)


def _powercap(root, domains: dict[str, int], max_range: int = 2**32) -> None:
    for name, value in domains.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "energy_uj").write_text(f"{value}\n")
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")
        (d / "name").write_text("package-0\n")


def test_rapl_meter_sums_packages_and_corrects_wraparound(tmp_path) -> None:
    # Two packages and one sub-zone (core), which must not be counted twice.
    _powercap(tmp_path, {"intel-rapl:0": 1_000_000, "intel-rapl:1": 4_294_000_000, "intel-rapl:0:0": 5})
    assert en.rapl_unavailable_reason(tmp_path) is None
    with en.RaplMeter(tmp_path) as meter:
        _powercap(
            tmp_path,
            {"intel-rapl:0": 3_500_000, "intel-rapl:1": 1_032_704, "intel-rapl:0:0": 999_999_999},
            max_range=4_294_967_296,
        )
    # package 0: 2.5 J; package 1 wrapped: 4_294_967_296 - 4_294_000_000 + 1_032_704 = 2_000_000 uJ.
    assert meter.joules == pytest.approx(4.5)
    assert meter.seconds >= 0


def test_rapl_unavailable(tmp_path) -> None:
    assert "does not exist" in en.rapl_unavailable_reason(tmp_path / "absent")
    assert "no intel-rapl" in en.rapl_unavailable_reason(tmp_path)
    with pytest.raises(RuntimeError, match="RAPL unavailable"):
        with en.RaplMeter(tmp_path / "absent"):
            pass


def test_reference_workload_measures_cpu_time() -> None:
    seconds = en.measure_reference_workload(np.random.default_rng(0), rows=256)
    assert seconds > 0 and math.isfinite(seconds)


def test_profiles_table_is_complete() -> None:
    table = en.profiles_table()
    assert {"jetson-nano-5w", "jetson-nano-10w", "raspberry-pi-4", "host"} <= set(table["devices"])
    assert {"wifi", "ble", "lte-m"} == set(table["radios"])
    assert all(d["source"] for d in table["devices"].values())
    assert all(r["source"] and r["tx_j_per_mb"] > 0 for r in table["radios"].values())
