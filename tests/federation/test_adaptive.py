"""Energy-aware client selection and adaptive local epochs (fedids.federation.adaptive)."""

from collections import Counter

import pytest

from fedids.evaluation.energy import DEVICE_PROFILES
from fedids.federation import adaptive
from fedids.federation.server_app import FederationConfig, load_state, sample_clients
from fedids.federation.simulation import make_partitions, run_simulated

MODEL_BYTES = 20_000


def _ledger(budget: float, profiles=None, rows=None) -> adaptive.EnergyLedger:
    keys = [f"c{i}" for i in range(6)]
    profiles = profiles or {k: adaptive.FLEET_PROFILES[i % 3] for i, k in enumerate(keys)}
    rows = rows or {k: 800 for k in keys}
    return adaptive.EnergyLedger.create(profiles, rows, budget_j=budget, hidden=64, window=10)


def test_profiles_are_a_fixed_balanced_mix_and_reports_are_checked() -> None:
    keys = [f"partition-{i:04d}" for i in range(10)]
    fleet = adaptive.assign_profiles(keys)
    assert fleet == adaptive.assign_profiles(reversed(keys))  # order of arrival does not matter
    assert sorted(Counter(fleet.values()).values()) == [3, 3, 4]  # equal shares, even for few clients
    assert set(fleet.values()) == set(adaptive.FLEET_PROFILES)
    assert adaptive.resolve_profile(None, "raspberry-pi-4") == ("raspberry-pi-4", None)
    assert adaptive.resolve_profile("jetson-nano-5w", "raspberry-pi-4") == ("jetson-nano-5w", None)
    for bad in ("host", "toaster"):  # no power figure / unknown: the assigned one instead
        profile, reason = adaptive.resolve_profile(bad, "raspberry-pi-4")
        assert profile == "raspberry-pi-4" and bad in reason


def test_energy_model_and_charging() -> None:
    ledger = _ledger(budget=100.0)
    pi = DEVICE_PROFILES["raspberry-pi-4"]
    cpu_s = 800 * 2 * adaptive.REFERENCE_CPU_S_PER_EXAMPLE_EPOCH  # 800 training rows
    radio = ledger.radio.joules(MODEL_BYTES, MODEL_BYTES)
    assert ledger.cost_j("c0", 2, MODEL_BYTES, MODEL_BYTES) == pytest.approx(pi.cpu_joules(cpu_s) + radio)
    charged = ledger.charge("c0", epochs=2, examples=800, bytes_down=MODEL_BYTES, bytes_up=MODEL_BYTES // 4)
    assert charged < pi.cpu_joules(cpu_s) + radio  # a smaller upload costs less radio energy
    assert ledger.remaining_j("c0") == pytest.approx(100.0 - charged)
    assert ledger.accounts["c0"].bytes_up == MODEL_BYTES // 4 and ledger.accounts["c0"].rounds == 1
    copy = _ledger(budget=100.0)
    copy.load_state_dict(ledger.state_dict())
    assert copy.state_dict() == ledger.state_dict()
    assert adaptive.cpu_seconds_per_example_epoch(64, 10) == adaptive.REFERENCE_CPU_S_PER_EXAMPLE_EPOCH
    assert adaptive.cpu_seconds_per_example_epoch(16, 5) < adaptive.REFERENCE_CPU_S_PER_EXAMPLE_EPOCH / 10


def test_adaptive_epochs_fit_the_per_round_share() -> None:
    ledger = _ledger(budget=1.0)
    one = ledger.cost_j("c0", 1, MODEL_BYTES, MODEL_BYTES)
    for rounds_left in (1, 2, 5, 50):
        e = ledger.epochs_for("c0", rounds_left, 4, MODEL_BYTES, MODEL_BYTES)
        assert 1 <= e <= 4
        share = ledger.remaining_j("c0") / rounds_left
        assert e == 1 or ledger.cost_j("c0", e, MODEL_BYTES, MODEL_BYTES) <= share  # fits, or the minimum
        assert (
            e == 4 or ledger.cost_j("c0", e + 1, MODEL_BYTES, MODEL_BYTES) > share
        )  # and is the most that fits
    assert ledger.epochs_for("c0", 50, 4, MODEL_BYTES, MODEL_BYTES) == 1 and one < 1.0


def test_selection_never_picks_a_client_that_cannot_pay() -> None:
    ledger = _ledger(budget=2.0)
    keys = {100 + i: f"c{i}" for i in range(6)}
    rounds_paid = Counter()
    for r in range(1, 60):
        chosen = adaptive.select_clients(
            ledger,
            keys,
            k=3,
            rule="energy",
            epochs=1,
            seed=1,
            server_round=r,
            bytes_down=MODEL_BYTES,
            full_up=MODEL_BYTES,
        )
        assert chosen == adaptive.select_clients(
            ledger,
            keys,
            k=3,
            rule="energy",
            epochs=1,
            seed=1,
            server_round=r,
            bytes_down=MODEL_BYTES,
            full_up=MODEL_BYTES,
        )  # reproducible
        if not chosen:
            break
        for node in chosen:
            key = keys[node]
            cost = ledger.cost_j(key, 1, MODEL_BYTES, MODEL_BYTES)
            assert ledger.remaining_j(key) >= cost > 0
            ledger.charge(key, epochs=1, examples=800, bytes_down=MODEL_BYTES, bytes_up=MODEL_BYTES)
            rounds_paid[key] += 1
    else:
        pytest.fail("the budget never ran out")
    for key, acc in ledger.accounts.items():
        assert acc.spent_j <= 2.0  # nobody overspent
        assert ledger.remaining_j(key) < ledger.cost_j(
            key, 1, MODEL_BYTES, MODEL_BYTES
        )  # all exhausted at the end
    # Cheaper hardware pays for more rounds out of the same budget.
    assert rounds_paid["c0"] > rounds_paid["c2"]  # raspberry-pi-4 vs jetson-nano-5w


def test_energy_selection_prefers_efficient_clients_but_keeps_everyone_in() -> None:
    ledger = _ledger(budget=0.0)  # unlimited: efficiency alone
    keys = {i: f"c{i}" for i in range(6)}
    counts = Counter()
    for r in range(1, 401):
        counts.update(
            keys[n]
            for n in adaptive.select_clients(
                ledger,
                keys,
                k=2,
                rule="energy",
                epochs=1,
                seed=0,
                server_round=r,
                bytes_down=MODEL_BYTES,
                full_up=MODEL_BYTES,
            )
        )
    pi, nano10, nano5 = (
        counts["c0"] + counts["c3"],
        counts["c1"] + counts["c4"],
        counts["c2"] + counts["c5"],
    )
    assert pi > nano10 > nano5 > 0, counts


def test_random_selection_matches_the_plain_sampler_when_everyone_can_pay() -> None:
    ledger = _ledger(budget=1e9)
    keys = {7 + 3 * i: f"c{i}" for i in range(6)}
    for r in range(1, 20):
        assert adaptive.select_clients(
            ledger,
            keys,
            k=3,
            rule="random",
            epochs=1,
            seed=4,
            server_round=r,
            bytes_down=MODEL_BYTES,
            full_up=MODEL_BYTES,
        ) == sample_clients(keys, 0.5, 1, 4, r)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="selection"):
        FederationConfig(selection="greedy")
    with pytest.raises(ValueError, match="needs an energy-budget-j"):
        FederationConfig(max_local_epochs=3)
    with pytest.raises(ValueError, match=">= 0"):
        FederationConfig(energy_budget_j=-1.0)
    with pytest.raises(ValueError, match="plaintext"):
        FederationConfig(privacy="dp", target_epsilon=8.0, selection="energy")
    assert not FederationConfig().energy_managed
    assert FederationConfig(selection="energy").energy_managed


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_energy_aware_run_respects_budgets_and_resumes_identically(cicids_sample, tmp_path) -> None:
    """Real Flower simulation: no client is asked to train once it cannot pay, epochs adapt, and a run
    interrupted after round 1 and resumed makes exactly the same choices as an uninterrupted one."""
    data = cicids_sample
    parts = make_partitions(data, 4, "iid", seed=0, segment=50)
    base = dict(
        rounds=3,
        min_clients=1,
        fraction_train=0.5,
        hidden=16,
        window=5,
        batch_size=64,
        lr=1e-2,
        seed=7,
        strategy="fedavg",
        selection="energy",
        max_local_epochs=3,
    )
    # Each client's cost of a one-epoch round, from a plain run in which all of them trained once; the
    # budget pays the most expensive client one such round (and a fifth), cheaper hardware a few.
    probe = run_simulated(
        data,
        parts,
        FederationConfig(rounds=1, min_clients=1, hidden=16, window=5, seed=7, strategy="fedavg"),
        tmp_path / "probe",
    )
    one_epoch = {k: p["energy_j"] for k, p in probe.history[0]["participants"].items()}
    assert len(one_epoch) == 4 and all(p["epochs"] == 1 for p in probe.history[0]["participants"].values())
    budget = 1.2 * max(one_epoch.values())
    config = FederationConfig(energy_budget_j=budget, **base)

    full = run_simulated(data, parts, config, tmp_path / "full")
    ledger = full.adaptive
    remaining = {k: budget for k in ledger["accounts"]}
    for h in full.history:
        assert h["clients"] == len(h["participants"]) <= 2 and h["rejected"] == 0
        for key, p in h["participants"].items():
            assert 1 <= p["epochs"] <= 3
            assert remaining[key] >= p["energy_j"] > 0  # could pay for what it was asked to do
            remaining[key] -= p["energy_j"]
        assert h["energy_j"] == pytest.approx(sum(p["energy_j"] for p in h["participants"].values()))
    for key, acc in ledger["accounts"].items():
        assert acc["spent_j"] == pytest.approx(budget - remaining[key]) and acc["spent_j"] <= budget
    assert any(remaining[k] < one_epoch[k] for k in remaining)  # the budget bit: someone ran out
    assert full.stopped is None or "energy budget exhausted" in full.stopped

    def stop_after_first(record) -> None:
        if record.round == 1:
            raise _Stop()

    with pytest.raises(_Stop):  # the simulation passes it through
        run_simulated(data, parts, config, tmp_path / "cut", on_round=stop_after_first)
    assert load_state(tmp_path / "cut").completed_round == 1
    resumed = run_simulated(data, parts, config, tmp_path / "cut", resume=True)
    assert [(h["test"], h["participants"]) for h in resumed.history] == [
        (h["test"], h["participants"]) for h in full.history
    ]
    assert resumed.adaptive == full.adaptive and resumed.stopped == full.stopped
