"""Head calibration under DP (fedids.federation.calibration_dp): the sensitivity bounds the noise is sized
for hold, the noise is fresh and of the stated size, the noised sums read back to the right Gaussians, and
a federated DP-SGD run calibrates within its epsilon."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedids.federation.calibration_dp import (
    CHECK_SENSITIVITY,
    CalibrationPrivacy,
    check_from_private_sum,
    moments_contribution,
    moments_from_private_sum,
    moments_sensitivity,
    pair_sensitivity,
    private_check_vector,
    private_moments_vector,
)
from fedids.federation.config import FederationConfig
from fedids.federation.simulation import make_partitions, run_simulated

HIDDEN, CLASSES = 16, 4
SMALL = dict(rounds=1, min_clients=3, hidden=16, window=5, seed=7)


def _features(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    # tanh of anything: the GRU's last hidden state, extreme values included
    return np.tanh(rng.normal(0, 3, (n, HIDDEN))), rng.integers(0, CLASSES, n)


def test_one_window_moves_the_moments_by_at_most_the_sensitivity():
    rng = np.random.default_rng(0)
    features, targets = _features(rng, 200)
    full = moments_contribution(features, targets, CLASSES, "window")
    worst = 0.0
    for i in range(len(features)):
        keep = np.arange(len(features)) != i
        worst = max(
            worst,
            float(
                np.linalg.norm(full - moments_contribution(features[keep], targets[keep], CLASSES, "window"))
            ),
        )
    # the bound is reached by a window at a corner of [-1, 1]^H
    corner = np.ones((1, HIDDEN))
    with_corner = moments_contribution(
        np.vstack([features, corner]), np.append(targets, 0), CLASSES, "window"
    )
    assert worst <= moments_sensitivity(HIDDEN)
    assert np.linalg.norm(with_corner - full) == pytest.approx(moments_sensitivity(HIDDEN))


def test_a_whole_client_moves_the_client_unit_sum_by_at_most_the_sensitivity():
    rng = np.random.default_rng(1)
    for n in (1, 7, 500):
        features, targets = _features(rng, n)
        assert np.linalg.norm(
            moments_contribution(features, targets, CLASSES, "client")
        ) <= moments_sensitivity(HIDDEN)


def test_features_outside_the_bound_are_refused():
    with pytest.raises(ValueError, match="sensitivity"):
        moments_contribution(np.full((3, HIDDEN), 1.5), np.zeros(3, int), CLASSES, "window")


def test_the_noise_is_fresh_and_of_the_stated_size():
    rng = np.random.default_rng(2)
    features, targets = _features(rng, 50)
    totals = np.ones(CLASSES)  # no rescaling: the vector is the contribution plus noise
    dp = CalibrationPrivacy("window", noise_multiplier=2.0, shares=4)
    clean = np.tile(moments_contribution(features, targets, CLASSES, "window"), 2)  # real and head windows
    a = private_moments_vector(features, targets, totals, dp)
    b = private_moments_vector(features, targets, totals, dp)
    assert not np.allclose(a, b)  # nobody, the client included, can re-draw the same noise
    expected = 2.0 * pair_sensitivity(HIDDEN) / math.sqrt(4)  # one flow moves both blocks
    assert np.std(a - clean) == pytest.approx(expected, rel=0.3)  # 132 draws: 4 standard errors
    from fedids.federation.calibration import validation_length

    counts = np.arange(validation_length(CLASSES), dtype=float)
    size = 2 * 2 * CLASSES * CLASSES  # two splits x two heads of confusion counts, then the histograms
    noised = private_check_vector(counts, 10, CLASSES, CalibrationPrivacy("window", 1.0, 1))
    assert np.std(noised[:size] - counts[:size]) == pytest.approx(CHECK_SENSITIVITY, rel=0.35)
    assert (noised[size:] == 0).all()  # the score histograms are not released


def test_a_noised_sum_reads_back_to_the_class_gaussians():
    rng = np.random.default_rng(3)
    means = rng.uniform(-0.5, 0.5, (CLASSES, HIDDEN))
    targets = np.repeat(np.arange(CLASSES), [20_000, 20_000, 20_000, 3])  # the last class: below the noise
    features = np.clip(means[targets] + rng.normal(0, 0.1, (len(targets), HIDDEN)), -1, 1)
    totals = np.bincount(targets, minlength=CLASSES).astype(float)
    dp = CalibrationPrivacy("window", noise_multiplier=1.0, shares=1)
    read = moments_from_private_sum(
        private_moments_vector(features, targets, totals, dp, np.clip(features + 0.2, -1, 1)),
        HIDDEN,
        totals,
        dp,
    )
    moments = read.ccvr
    # 3 windows are not estimable under noise of std 8.1: a class below 3 stds is left out. Checked on the
    # sum with negligible noise, since the fresh noise reads 3 windows as 24 or more once in 150 draws.
    noiseless = private_moments_vector(features, targets, totals, CalibrationPrivacy("window", 1e-9, 1))
    for block in ("ccvr", "head"):
        counts = getattr(moments_from_private_sum(noiseless, HIDDEN, totals, dp), block).count
        assert counts.tolist() == [20_000] * 3 + [0]
    for c in range(3):  # the head block: the head windows' features (here shifted by 0.2)
        shifted = np.clip(means[c] + 0.2, -1, 1)
        assert np.abs(read.head.sum[c] / read.head.count[c] - shifted).max() < 0.02
    for c in range(3):
        assert abs(moments.count[c] - 20_000) < 40
        assert np.abs(moments.sum[c] / moments.count[c] - means[c]).max() < 0.01
        variance = np.diag(moments.outer[c]) / moments.count[c] - (moments.sum[c] / moments.count[c]) ** 2
        assert np.abs(variance - 0.01).max() < 0.005


def test_a_noised_check_sum_keeps_negative_counts_so_row_and_column_sums_stay_unbiased():
    from fedids.federation.calibration import macro_f1_from_confusion, validation_length

    truth = np.diag([500.0, 300.0, 200.0, 100.0])
    size = 2 * CLASSES * CLASSES
    dp = CalibrationPrivacy("window", 3.0, 1)
    scores = []
    for _ in range(200):
        vector = np.zeros(validation_length(CLASSES))
        vector[: 2 * size] = np.tile(truth.ravel(), 4)
        confusions, histograms = check_from_private_sum(
            private_check_vector(vector, 1100, CLASSES, dp), CLASSES
        )
        assert (histograms == 0).all()
        noisy = confusions["train"][0]
        scores.append((macro_f1_from_confusion(noisy), macro_f1_from_confusion(np.maximum(noisy, 0))))
    kept, clipped = np.mean(scores, axis=0)
    # a perfect head: clipping every empty cell at 0 adds half a noise std to each and drags macro-F1 down
    # much further than the unbiased reading (whose only loss is F1's own clip at 1)
    assert 1.0 - kept < 0.5 * (1.0 - clipped)


@pytest.mark.slow
def test_a_dpsgd_federation_calibrates_its_head_within_its_epsilon(cicids_sample, tmp_path):
    parts = make_partitions(cicids_sample, 3, "iid", seed=0, segment=40)
    cfg = FederationConfig(**SMALL, privacy="secagg", dpsgd_target_epsilon=8.0)
    state = run_simulated(cicids_sample, parts, cfg, tmp_path / "dpsgd")
    cal = state.calibration
    assert cal["privacy"] == {"unit": "window", "noise": cfg.dpsgd_calibration_noise, "shares": 3}
    assert cal["clients"] == 3 and cal["kept"] in (True, False) and "reason" in cal
    assert cal["validation"]["train_windows"] > 0  # the check ran on every client's windows
    # every client budgeted the two releases: the whole run, calibration included, is within epsilon 8
    assert 7.0 < state.history[-1]["dpsgd_epsilon"] <= 8.0


@pytest.mark.slow
def test_client_level_dp_counts_the_calibration_releases(cicids_sample, tmp_path):
    parts = make_partitions(cicids_sample, 3, "iid", seed=0, segment=40)
    cfg = FederationConfig(**SMALL, privacy="dp", target_epsilon=20.0)
    state = run_simulated(cicids_sample, parts, cfg, tmp_path / "dp")
    cal = state.calibration
    assert cal["privacy"]["unit"] == "client" and cal["validation"]["clients"] == 3
    assert state.history[-1]["epsilon"] < cal["epsilon"] <= cfg.target_epsilon
