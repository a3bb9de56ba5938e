"""Canary auditing: the one-run bound against hand calculations and a mechanism of known epsilon, offline
LiRA on synthetic scores, and real training runs: without DP the audit finds leakage, under DP-SGD its
bound stays at or below the accountant's epsilon."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import scipy.stats
import torch

from fedids.data.synth import SynthConfig, generate_flows
from fedids.evaluation import audit
from fedids.evaluation.audit import AuditConfig, AuditMode

torch.set_num_threads(1)  # small models: threads only add contention on a shared machine


def _perfect_bound(r: int, confidence: float) -> float:
    """Hand calculation for r correct guesses out of r, delta 0: the p-value is q**r, so the bound is the
    epsilon with e^eps / (1 + e^eps) = (1 - confidence) ** (1 / r)."""
    q = (1 - confidence) ** (1 / r)
    return math.log(q / (1 - q))


@pytest.mark.parametrize("r", [5, 10, 50, 100, 500])
def test_perfect_guessing_matches_the_closed_form_and_grows_with_r(r: int) -> None:
    assert audit.epsilon_lower_bound(1000, r, r, 0.0) == pytest.approx(_perfect_bound(r, 0.95), abs=1e-9)
    # delta > 0 only lowers the bound, and only a little at delta = 1e-5.
    with_delta = audit.epsilon_lower_bound(1000, r, r, 1e-5)
    assert _perfect_bound(r, 0.95) - 0.1 < with_delta <= _perfect_bound(r, 0.95)


def test_bound_grows_with_guesses_and_confidence_costs() -> None:
    bounds = [audit.epsilon_lower_bound(1000, r, r, 1e-5) for r in (10, 50, 100, 500)]
    assert bounds == sorted(bounds) and bounds[0] > 0.9 and bounds[-1] > 5
    assert audit.epsilon_lower_bound(1000, 100, 100, 1e-5, 0.99) < bounds[2]
    # Fewer correct guesses, lower bound.
    assert audit.epsilon_lower_bound(1000, 100, 90, 1e-5) < audit.epsilon_lower_bound(1000, 100, 95, 1e-5)


@pytest.mark.parametrize("r,v", [(0, 0), (100, 50), (1000, 500), (1000, 510), (100, 40), (1, 1), (3, 3)])
def test_chance_level_guessing_refutes_nothing(r: int, v: int) -> None:
    # 510/1000 right is 0.63 standard deviations above chance; 3/3 right has probability 1/8 > 0.05.
    assert audit.epsilon_lower_bound(1000, r, v, 1e-5) == 0.0


def test_p_value_by_hand() -> None:
    # m=10, r=2, v=2, eps=0: q=1/2, P[Bin >= 2] = 1/4; alpha = max(P[Bin=1]/1, (P[Bin=1]+P[Bin=0])/2)
    # = max(1/2, 3/8) = 1/2; p = 1/4 + 1/2 * delta * 2 * 10.
    assert audit.p_value_one_run(10, 2, 2, 0.0, 0.0) == pytest.approx(0.25)
    assert audit.p_value_one_run(10, 2, 2, 0.0, 0.01) == pytest.approx(0.25 + 0.5 * 0.01 * 20)
    # delta = 0: exactly the binomial tail at q = e^eps / (1 + e^eps).
    q = math.exp(1.0) / (1 + math.exp(1.0))
    assert audit.p_value_one_run(100, 40, 30, 1.0, 0.0) == pytest.approx(scipy.stats.binom.sf(29, 40, q))
    assert audit.p_value_one_run(100, 40, 30, 1.0, 0.5) == 1.0  # clipped
    with pytest.raises(ValueError):
        audit.p_value_one_run(10, 11, 2, 0.0, 0.0)


def _randomized_response(epsilon: float, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An exactly epsilon-DP release of m inclusion bits (each kept with probability e^eps/(1+e^eps)),
    as canary scores (1 = looks included)."""
    bits = rng.integers(0, 2, m).astype(bool)
    keep = rng.random(m) < math.exp(epsilon) / (1 + math.exp(epsilon))
    return np.where(keep, bits, ~bits).astype(float) + rng.random(m) * 1e-3, bits


def test_audit_of_a_mechanism_with_known_epsilon_is_valid_and_has_power() -> None:
    """Randomized response at epsilon 2 is exactly 2-DP (delta 0): the 95% bound may exceed 2 in at most
    about 5% of runs (here: 0 of 60 expected, binomial 99.9% limit 9), and it finds most of it."""
    rng = np.random.default_rng(7)
    bounds = []
    for _ in range(60):
        scores, bits = _randomized_response(2.0, 1000, rng)
        bounds.append(audit.compute_one_run_audit(scores, bits, delta=0.0).epsilon_lower_bound)
    assert sum(b > 2.0 for b in bounds) <= 9
    assert np.median(bounds) > 1.2


def test_scores_unrelated_to_membership_rarely_give_a_bound() -> None:
    """Scores independent of the bits (a 0-DP release): the family of 20 guess counts still refutes
    epsilon = 0 in at most about 5% of runs."""
    rng = np.random.default_rng(11)
    hits = sum(
        audit.compute_one_run_audit(
            rng.normal(size=200), rng.integers(0, 2, 200).astype(bool), 1e-5
        ).epsilon_lower_bound
        > 0
        for _ in range(100)
    )
    assert hits <= 12  # binomial(100, 0.05) exceeds 12 with probability < 0.001


def test_separated_scores_reach_the_bonferroni_corrected_perfect_bound() -> None:
    bits = np.array([True, False] * 250)
    result = audit.compute_one_run_audit(bits.astype(float) + np.linspace(0, 0.1, 500), bits, delta=0.0)
    # Best test: k+ = k- = 250, all 500 right, at per-test confidence 1 - 0.05 / 20.
    assert (result.k_plus, result.k_minus, result.correct) == (250, 250, 500)
    assert result.tests == 20
    assert result.epsilon_lower_bound == pytest.approx(_perfect_bound(500, 1 - 0.05 / 20), abs=1e-9)


def test_inclusion_bits_come_from_the_os_not_from_seeds() -> None:
    np.random.seed(0)
    torch.manual_seed(0)
    first = audit.draw_inclusion(4096)
    np.random.seed(0)
    torch.manual_seed(0)
    second = audit.draw_inclusion(4096)
    assert not np.array_equal(first, second)
    assert first.dtype == bool and abs(first.mean() - 0.5) < 0.05


def test_offline_lira_on_synthetic_scores() -> None:
    rng = np.random.default_rng(3)
    m, k = 400, 4
    difficulty = rng.normal(0, 3, m)  # per-canary offsets that a global threshold cannot remove
    shadows = difficulty + rng.normal(0, 0.5, (k, m))
    bits = rng.integers(0, 2, m).astype(bool)
    target = difficulty + rng.normal(0, 0.5, m) + 2.0 * bits
    stat, result = audit.compute_lira_offline(target, shadows, bits)
    assert result.auc > 0.97 > audit.compute_auc(target, bits)
    assert result.tpr_at_fpr[0.01] > 0.5 and result.shadows == k and stat.shape == (m,)
    with pytest.raises(ValueError):
        audit.compute_lira_offline(target, shadows[:1], bits)


@pytest.fixture(scope="module")
def small_data() -> audit.AuditData:
    frame = generate_flows(SynthConfig(devices=8, hours=0.5, seed=3, gateways=2))
    return audit.prepare_audit_data(frame, window=5)


def test_model_trained_without_dp_leaks_its_canaries(small_data: audit.AuditData) -> None:
    config = AuditConfig(canaries=300, epochs=15, shadows=2, seed=1)
    (result,) = audit.run_audit(small_data, [AuditMode("none")], config)
    assert math.isinf(result.accountant_epsilon)
    assert result.one_run.epsilon_lower_bound > 2.0  # clearly above 0
    assert result.auc > 0.9 and result.lira is not None and result.lira.auc > 0.8
    assert result.canary_accuracy["included"] > 0.9 > 0.3 > result.canary_accuracy["excluded"]
    assert result.to_dict()["accountant_epsilon"] is None


def test_dpsgd_bound_stays_below_the_accountant(small_data: audit.AuditData) -> None:
    config = AuditConfig(canaries=300, epochs=4, shadows=0, seed=2)
    (result,) = audit.run_audit(small_data, [AuditMode("dpsgd", 2.0)], config)
    assert result.accountant_epsilon <= 2.0 + 0.02 and result.noise_multiplier is not None
    assert 0.0 <= result.one_run.epsilon_lower_bound <= result.accountant_epsilon
    assert result.lira is None


def test_config_and_mode_checks() -> None:
    for bad in ({"canaries": 1}, {"shadows": 1}, {"delta": 0.0}, {"lr": float("nan")}, {"confidence": 1.0}):
        with pytest.raises(ValueError, match="out of range"):
            AuditConfig(**bad)  # type: ignore[arg-type]
    for mode in (("dpsgd", None), ("dpsgd", 0.0), ("dpsgd", float("nan")), ("dp", 8.0), ("none", 8.0)):
        with pytest.raises(ValueError):
            AuditMode(*mode)


def _fedids(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """Run the console entry point in-process (a subprocess costs seconds of imports per call)."""
    from fedids.cli import main

    monkeypatch.setattr(sys, "argv", ["fedids", "audit", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_cli_reports_each_mode_and_refuses_bad_input(tmp_path, capsys, monkeypatch) -> None:
    from fedids.data.formats import write_trafficlabelling_csv

    csv = tmp_path / "flows.csv"
    write_trafficlabelling_csv(generate_flows(SynthConfig(devices=6, hours=0.25, seed=2, gateways=1)), csv)
    args = ("-d", str(csv), "--canaries", "40", "--epochs", "2", "--shadows", "0")
    code, stdout, stderr = _fedids(capsys, monkeypatch, *args, "--json", "-o", str(tmp_path / "r.json"))
    assert code == 0, stderr
    report = json.loads(stdout)
    assert json.loads((tmp_path / "r.json").read_text()) == report
    none, dp = report["modes"]
    assert none["mode"] == "none" and none["accountant_epsilon"] is None
    assert dp["mode"] == "dpsgd eps=8" and 0 < dp["accountant_epsilon"] <= 8.02
    assert dp["one_run"]["epsilon_lower_bound"] <= dp["accountant_epsilon"]
    assert {"auc", "lira", "one_run", "noise_multiplier"} <= set(dp) and dp["one_run"]["canaries"] == 40
    for bad in (("--canaries", "1"), ("--epsilon", "nan"), ("--shadows", "1"), ("--window", "0")):
        code, _, stderr = _fedids(capsys, monkeypatch, *args, *bad)
        errors = [ln for ln in stderr.splitlines() if ln.strip()]
        assert code == 2 and len(errors) == 1 and errors[0].startswith("error: audit:"), stderr
    code, _, stderr = _fedids(capsys, monkeypatch, "-d", str(tmp_path / "none.csv"))
    assert code == 2 and stderr.startswith("error:") and "no such file" in stderr
