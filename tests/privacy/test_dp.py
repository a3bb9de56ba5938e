"""Client-level differential privacy (fedids.privacy.dp)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from fedids.errors import FedidsError
from fedids.privacy.dp import (
    PrivacyAccountant,
    PrivacyBudgetExceeded,
    add_gaussian_noise,
    calibrate_noise_multiplier,
    clip_update,
    distributed_noise_std,
)

# Integer orders keep property tests fast (the default set adds slow fractional orders).
FAST_ORDERS = list(range(2, 64)) + [128, 256]


def _opacus_rdp():
    """Opacus's own RDP analysis (an independent implementation), loaded without torch."""
    path = Path(importlib.metadata.distribution("opacus").locate_file("opacus/accountants/analysis/rdp.py"))
    spec = importlib.util.spec_from_file_location("opacus_rdp_analysis", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------- clipping
def test_clip_scales_down_to_the_norm_and_keeps_direction():
    v = np.array([3.0, 4.0, 0.0], dtype=np.float32)  # norm 5
    clipped, was_clipped = clip_update(v, 1.0)
    assert was_clipped and clipped.dtype == np.float32
    assert np.linalg.norm(clipped.astype(np.float64)) <= 1.0
    assert np.allclose(clipped, [0.6, 0.8, 0.0], atol=1e-6)


def test_clip_leaves_small_updates_alone():
    v = np.array([0.3, -0.4], dtype=np.float32)
    clipped, was_clipped = clip_update(v, 1.0)
    assert not was_clipped and np.array_equal(clipped, v) and clipped is not v


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float32, st.integers(1, 300), elements=st.floats(-1e4, 1e4, allow_nan=False, width=32)),
    st.floats(1e-3, 1e3),
)
def test_clipped_norm_never_exceeds_the_bound(vector, clip_norm):
    clipped, was_clipped = clip_update(vector, clip_norm)
    norm = np.linalg.norm(clipped.astype(np.float64))
    assert norm <= clip_norm
    original = np.linalg.norm(vector.astype(np.float64))
    assert was_clipped == (original > clip_norm)
    if was_clipped:
        assert norm >= clip_norm * (1 - 1e-5)


@pytest.mark.parametrize("bad", [np.array([np.nan], np.float32), np.zeros((2, 2), np.float32)])
def test_clip_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        clip_update(bad, 1.0)


# ------------------------------------------------------------------------------------- noise
def test_distributed_noise_sums_to_the_calibrated_variance():
    sigma, clip_norm, n, d = 1.2, 0.5, 10, 20_000
    std = distributed_noise_std(sigma, clip_norm, n)
    assert std == pytest.approx(sigma * clip_norm / math.sqrt(n))
    rng = np.random.default_rng(42)
    total = sum(add_gaussian_noise(np.zeros(d, np.float32), std, rng).astype(np.float64) for _ in range(n))
    target = (sigma * clip_norm) ** 2
    # (d - 1) s^2 / target ~ chi2(d - 1): two-sided 99.99% interval.
    lo, hi = stats.chi2.ppf([5e-5, 1 - 5e-5], d - 1) / (d - 1) * target
    assert lo <= np.var(total, ddof=1) <= hi
    assert abs(np.mean(total)) < 5 * math.sqrt(target / d)
    assert stats.normaltest(total).pvalue > 1e-4


def test_noise_keeps_dtype_and_needs_a_generator():
    v = np.ones(5, np.float32)
    out = add_gaussian_noise(v, 0.1, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == (5,) and not np.array_equal(out, v)
    assert np.array_equal(add_gaussian_noise(v, 0.0, np.random.default_rng(0)), v)
    with pytest.raises(ValueError):
        add_gaussian_noise(v, -1.0, np.random.default_rng(0))


# -------------------------------------------------------------------------------- accounting
@pytest.mark.parametrize("sigma, q, rounds", [(1.0, 0.1, 50), (2.0, 1.0, 30), (1.1, 0.05, 200)])
def test_epsilon_matches_independent_computations(sigma, q, rounds):
    accountant = PrivacyAccountant(sigma, q)
    assert accountant.epsilon(1e-5) == 0.0
    accountant.step(rounds)
    epsilon = accountant.epsilon(1e-5)
    # Opacus's RDP analysis with the same orders: the same bound, computed independently.
    opacus = _opacus_rdp()
    rdp = opacus.compute_rdp(q=q, noise_multiplier=sigma, steps=rounds, orders=DEFAULT_RDP_ORDERS)
    reference, _ = opacus.get_privacy_spent(orders=DEFAULT_RDP_ORDERS, rdp=rdp, delta=1e-5)
    assert epsilon == pytest.approx(reference, rel=5e-3)
    # PLD accounting is tight; RDP must be an upper bound, and not a loose one.
    pld = PLDAccountant()
    pld.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), rounds)
    tight = pld.get_epsilon(1e-5)
    assert tight <= epsilon <= 1.25 * tight


def test_full_participation_reduces_to_the_gaussian_mechanism():
    # q = 1: T rounds of sigma compose to one Gaussian mechanism with sigma / sqrt(T); its exact
    # epsilon (Balle & Wang 2018, in dp_accounting) must lie below the RDP bound.
    from dp_accounting import get_epsilon_gaussian

    sigma, rounds = 3.0, 16
    accountant = PrivacyAccountant(sigma, 1.0)
    accountant.step(rounds)
    exact = get_epsilon_gaussian(sigma / math.sqrt(rounds), 1e-5)
    assert exact <= accountant.epsilon(1e-5) <= 1.3 * exact


def test_state_dict_round_trip_and_mismatch():
    accountant = PrivacyAccountant(1.3, 0.2, orders=FAST_ORDERS)
    accountant.step(3)
    accountant.step()
    state = json.loads(json.dumps(accountant.state_dict()))
    restored = PrivacyAccountant(1.3, 0.2, orders=FAST_ORDERS)
    restored.load_state_dict(state)
    assert restored.rounds == 4
    assert restored.epsilon(1e-5) == pytest.approx(accountant.epsilon(1e-5), rel=1e-12)
    with pytest.raises(ValueError, match="noise_multiplier"):
        PrivacyAccountant(1.0, 0.2, orders=FAST_ORDERS).load_state_dict(state)
    with pytest.raises(ValueError, match="round or release count"):
        restored.load_state_dict(dict(state, rounds=-1))


def test_calibration_round_trip():
    sigma = calibrate_noise_multiplier(4.0, 1e-5, sample_rate=0.2, rounds=40, orders=FAST_ORDERS)
    accountant = PrivacyAccountant(sigma, 0.2, orders=FAST_ORDERS)
    accountant.step(40)
    epsilon = accountant.epsilon(1e-5)
    assert epsilon <= 4.0
    assert epsilon > 3.95  # tight: within the tolerance of the optimum
    louder = PrivacyAccountant(sigma - 2e-3, 0.2, orders=FAST_ORDERS)
    louder.step(40)
    assert louder.epsilon(1e-5) > 4.0


@settings(max_examples=10, deadline=None)
@given(target=st.floats(0.5, 20.0), q=st.sampled_from([0.02, 0.1, 0.3, 1.0]), rounds=st.integers(1, 300))
def test_calibrated_noise_never_overshoots(target, q, rounds):
    sigma = calibrate_noise_multiplier(target, 1e-5, q, rounds, orders=FAST_ORDERS)
    accountant = PrivacyAccountant(sigma, q, orders=FAST_ORDERS)
    accountant.step(rounds)
    assert accountant.epsilon(1e-5) <= target


def test_budget_guard_stops_training_before_exceeding_the_target():
    target, delta = 3.0, 1e-5
    sigma = calibrate_noise_multiplier(target, delta, sample_rate=1.0, rounds=10)
    accountant = PrivacyAccountant(sigma, 1.0)
    completed = 0
    for _ in range(50):
        try:
            accountant.check_budget(target, delta)
        except PrivacyBudgetExceeded as stop:
            error = stop
            break
        accountant.step()
        completed += 1
        assert accountant.epsilon(delta) <= target
    assert completed == 10
    message = str(error)
    assert "\n" not in message and "stopping after 10 rounds" in message
    assert isinstance(error, FedidsError)  # the CLI prints it as one line, exit code 2


def test_calibration_releases_are_composed_and_budgeted():
    # Two unsampled Gaussian releases (the head calibration's sums) after the rounds raise epsilon; a
    # noise multiplier calibrated with them keeps rounds and releases within the target together.
    accountant = PrivacyAccountant(1.3, 0.2, orders=FAST_ORDERS)
    accountant.step(5)
    before = accountant.epsilon(1e-5)
    assert accountant.epsilon_after(0, 1e-5, releases=2) > before
    accountant.release(2)
    assert accountant.releases == 2 and accountant.epsilon(1e-5) > before
    restored = PrivacyAccountant(1.3, 0.2, orders=FAST_ORDERS)
    restored.load_state_dict(json.loads(json.dumps(accountant.state_dict())))
    assert restored.epsilon(1e-5) == pytest.approx(accountant.epsilon(1e-5), rel=1e-12)
    plain = calibrate_noise_multiplier(8.0, 1e-5, 1.0, 10, orders=FAST_ORDERS)
    sigma = calibrate_noise_multiplier(8.0, 1e-5, 1.0, 10, orders=FAST_ORDERS, releases=2)
    assert sigma > plain
    budgeted = PrivacyAccountant(sigma, 1.0, orders=FAST_ORDERS)
    budgeted.step(10)
    budgeted.release(2)
    assert 7.5 < budgeted.epsilon(1e-5) <= 8.0


def test_dpsgd_noise_calibrated_with_the_releases_stays_within_the_target():
    from fedids.privacy.dpsgd import calibrate_noise, epsilon_spent

    rate, steps = 0.05, 400
    alone = calibrate_noise(8.0, 1e-5, rate, steps)
    noise = calibrate_noise(8.0, 1e-5, rate, steps, releases=(3.0, 2))
    assert noise > alone
    assert 7.9 < epsilon_spent(noise, rate, steps, 1e-5, (3.0, 2)) <= 8.0
    with pytest.raises(ValueError, match="releases alone"):
        calibrate_noise(1.0, 1e-5, rate, steps, releases=(0.5, 2))
