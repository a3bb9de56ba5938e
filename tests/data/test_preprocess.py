import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedids.data.preprocess import FlowScaler, LabelVocabulary, compute_feature_stats, signed_log1p


def test_scaler_matches_numpy_median_and_iqr_in_log_space():
    rng = np.random.default_rng(0)
    x = np.exp(rng.normal(5, 2, size=(5000, 78)))
    x[:, 3] = 0.0  # constant column
    x[:, 4] = -1.0  # sentinel column
    scaler = FlowScaler.fit(x)
    logs = signed_log1p(x)
    med = np.median(logs, axis=0)
    iqr = np.percentile(logs, 75, axis=0) - np.percentile(logs, 25, axis=0)
    assert np.abs(scaler.center - med).max() <= 0.05
    assert np.abs(scaler.scale[:3] - iqr[:3]).max() <= 0.1
    assert scaler.scale[3] == 1.0 and scaler.scale[4] == 1.0
    out = scaler.transform(x)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(np.median(out[:, :3], axis=0)).max() < 0.05


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 200), st.integers(1, 200), st.integers(0, 10_000))
def test_stats_merge_equals_stats_of_concatenation(n1, n2, seed):
    rng = np.random.default_rng(seed)
    a = rng.lognormal(3, 3, size=(n1, 78)) * rng.choice([-1, 1], size=(n1, 78))
    b = rng.lognormal(1, 4, size=(n2, 78))
    merged = compute_feature_stats(a).merge(compute_feature_stats(b))
    pooled = compute_feature_stats(np.vstack([a, b]))
    assert merged.count == pooled.count == n1 + n2
    assert (merged.hist == pooled.hist).all()
    s1, s2 = FlowScaler.from_stats(merged), FlowScaler.from_stats(pooled)
    assert np.array_equal(s1.center, s2.center) and np.array_equal(s1.scale, s2.scale)


def test_scaler_round_trips_through_dict():
    scaler = FlowScaler.fit(np.random.default_rng(1).random((100, 78)))
    again = FlowScaler.from_dict(scaler.to_dict())
    assert np.array_equal(again.center, scaler.center) and np.array_equal(again.scale, scaler.scale)


def test_vocabulary_puts_benign_first_and_marks_unknown():
    vocab = LabelVocabulary.from_counts({"PortScan": 3, "BENIGN": 10, "DDoS": 1, "Bot": 0})
    assert vocab.labels == ["BENIGN", "DDoS", "PortScan"]
    assert vocab.encode(np.array(["DDoS", "Bot", "BENIGN"])).tolist() == [1, -1, 0]
    assert vocab.decode(np.array([2, 0])).tolist() == ["PortScan", "BENIGN"]
