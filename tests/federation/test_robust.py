"""Robust aggregation at a site: the statistics against numpy, and a scaled update bounded.

The contributions are built with the pipeline's own :func:`~fedids.federation.aggregation.update_contribution`
and read back with its :func:`~fedids.federation.aggregation.finalize_update`, so the defended site
contribution is checked in the weighted-sum form the central tier adds.
"""

import numpy as np
import pytest

from fedids.federation import aggregation as agg
from fedids.federation.robust import (
    RobustSpec,
    decode,
    reference_proposal,
    robust_contribution,
    weighted_median,
    weighted_trimmed_mean,
)

SHAPES = ((6, 3), (6,), (3, 6), (3,))  # a body of two arrays, a head of 3 classes
LAYOUT = agg.UpdateLayout(SHAPES)


def _model(rng, scale=1.0):
    return [scale * rng.standard_normal(s) for s in SHAPES]


def _devices(rng, n=5, attacker_scale=None):
    """``n`` devices' contributions around a global model; device 0 scaled by ``attacker_scale``."""
    glob = _model(rng)
    vectors, honest = [], []
    for i in range(n):
        update = _model(rng, 0.05)
        if i == 0 and attacker_scale:
            update = [attacker_scale * u for u in update]
        else:
            honest.append(update)
        proposal = [g + u for g, u in zip(glob, update)]
        shares = np.array([0.2, 0.2, 0.2])
        vectors.append(agg.update_contribution(LAYOUT, proposal, 0.2, shares, {"clients": 1.0}))
    return glob, vectors, honest


def test_the_statistics_match_numpy_for_equal_weights():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((7, 40))
    ones = np.ones_like(values)
    assert np.allclose(weighted_median(values, ones), np.median(values, axis=0))
    assert np.allclose(weighted_median(values[:6], ones[:6]), np.median(values[:6], axis=0))
    ordered = np.sort(values, axis=0)
    assert np.allclose(weighted_trimmed_mean(values, ones, 2 / 7), ordered[2:5].mean(axis=0))
    assert np.allclose(weighted_trimmed_mean(values, ones, 0.0), values.mean(axis=0))
    # a zero weight leaves a value out; all-zero weights give zero
    w = ones.copy()
    w[0] = 0.0
    assert np.allclose(weighted_median(values, w), np.median(values[1:], axis=0))
    assert np.all(weighted_median(values, np.zeros_like(values)) == 0)


def test_decode_reads_back_the_proposal_weights_and_shares():
    rng = np.random.default_rng(1)
    proposal = _model(rng)
    shares = np.array([0.5, 0.0, 0.25])
    vector = agg.update_contribution(LAYOUT, proposal, 0.3, shares, {"clients": 1.0})
    d = decode(LAYOUT, [vector])
    assert np.allclose(d.x[0], reference_proposal(LAYOUT, proposal))
    assert d.a[0] == pytest.approx(0.3) and np.allclose(d.shares[0], shares)


def test_without_a_defence_the_site_contribution_is_the_sum():
    rng = np.random.default_rng(2)
    _, vectors, _ = _devices(rng)
    total, record = robust_contribution(LAYOUT, vectors, RobustSpec.parse("none"), None)
    assert np.array_equal(total, np.sum(vectors, axis=0)) and record.devices == 5


@pytest.mark.parametrize("spec", ["normclip", "normclip:0.5", "median", "trimmed:0.2"])
def test_a_device_scaled_by_100_moves_the_defended_aggregate_far_less(spec):
    rng = np.random.default_rng(3)
    glob, vectors, honest = _devices(rng, attacker_scale=100.0)
    target = agg.flatten([g + np.mean([u[i] for u in honest], axis=0) for i, g in enumerate(glob)])
    reference = reference_proposal(LAYOUT, glob)

    def error(total):
        return float(np.linalg.norm(agg.flatten(agg.finalize_update(LAYOUT, total).weights) - target))

    undefended = error(np.sum(vectors, axis=0))
    defended, record = robust_contribution(LAYOUT, vectors, RobustSpec.parse(spec), reference)
    assert error(defended) < undefended / 20, (error(defended), undefended)
    assert record.clipped >= 1 and record.norms[0] == max(record.norms)
    # the site's weight and metrics are its devices' total, as the central tier expects
    assert defended[LAYOUT.body_size + 2 * LAYOUT.head_size] == pytest.approx(1.0)
    assert defended[-len(agg.METRICS)] == pytest.approx(5.0)


def test_without_the_global_model_the_median_of_the_proposals_is_the_reference():
    """Under ``he`` the site cannot read the global model: updates are bounded around the median."""
    rng = np.random.default_rng(4)
    glob, vectors, honest = _devices(rng, n=7, attacker_scale=100.0)
    target = agg.flatten([g + np.mean([u[i] for u in honest], axis=0) for i, g in enumerate(glob)])

    def error(total):
        return float(np.linalg.norm(agg.flatten(agg.finalize_update(LAYOUT, total).weights) - target))

    defended, _ = robust_contribution(LAYOUT, vectors, RobustSpec.parse("normclip"), None)
    assert error(defended) < error(np.sum(vectors, axis=0)) / 20


@pytest.mark.parametrize("text", ["median:1", "trimmed", "trimmed:0.5", "normclip:0", "normclip:x", "krum"])
def test_bad_specs_are_refused(text):
    with pytest.raises(ValueError):
        RobustSpec.parse(text)
