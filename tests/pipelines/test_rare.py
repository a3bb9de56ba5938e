"""The rare-class protocol: the k-earliest cut and a tiny end-to-end run on a real CICIDS2017 sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedids.data.loader import load_flows
from fedids.data.schema import BENIGN_LABEL, SEQ
from fedids.pipelines.rare import (
    RareConfig,
    restrict_training,
    run_protocol,
    score_predictions,
    select_earliest_training_rows,
)
from fedids.task import prepare, validation_mask

CICIDS = Path(__file__).resolve().parents[3] / "shared" / "data" / "cicids2017"
SAMPLE = [
    CICIDS / "trafficlabelling-mondirkb" / "baseline_sqli.csv",
    CICIDS / "trafficlabelling-mondirkb" / "baseline_xss.csv",
    CICIDS / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    if not all(p.exists() for p in SAMPLE):
        pytest.skip("real CICIDS2017 samples not available")
    return load_flows([str(p) for p in SAMPLE]).frame


@pytest.fixture(scope="module")
def data(frame):
    return prepare(frame, window=10, split="label-time")


@pytest.mark.parametrize("k", [1, 5, 10, 50])
def test_keeps_exactly_the_k_earliest_training_flows_per_attack_class(data, k):
    kept = select_earliest_training_rows(data, k)
    assert not data.test_mask[kept].any(), "a test flow was selected for training"
    order = list(zip(data.frame["timestamp"], data.frame[SEQ]))
    train = set(data.train_rows.tolist())
    for label in np.unique(data.labels):
        available = [r for r in range(len(data.labels)) if r in train and data.labels[r] == label]
        chosen = kept[data.labels[kept] == label]
        if label == BENIGN_LABEL:
            assert chosen.tolist() == available  # benign training flows are all kept
            continue
        assert len(chosen) == min(k, len(available))
        # The earliest by (timestamp, seq), computed independently of the frame's row order.
        earliest = sorted(available, key=lambda r: order[r])[:k]
        assert sorted(chosen.tolist()) == sorted(earliest)


def test_restricted_split_keeps_every_test_flow_unchanged(data):
    split = restrict_training(data, 5, window=10)
    small = split.data
    np.testing.assert_array_equal(split.source_rows[small.test_mask], data.test_rows)
    np.testing.assert_array_equal(small.labels[small.test_mask], data.labels[data.test_rows])
    np.testing.assert_array_equal(small.features[small.test_mask], data.features[data.test_rows])
    # Training rows are the selection, and windows only reach kept rows.
    np.testing.assert_array_equal(split.source_rows[~small.test_mask], select_earliest_training_rows(data, 5))
    assert small.windows.max() < len(small.labels)
    assert split.kept["Web Attack - XSS"] == 5 and split.available["Web Attack - XSS"] > 5


def test_selection_does_not_depend_on_input_row_order(frame):
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    a, b = prepare(frame, split="label-time"), prepare(shuffled, split="label-time")
    rows_a = a.frame.iloc[select_earliest_training_rows(a, 3)][SEQ].to_numpy()
    rows_b = b.frame.iloc[select_earliest_training_rows(b, 3)][SEQ].to_numpy()
    np.testing.assert_array_equal(np.sort(rows_a), np.sort(rows_b))


def test_score_predictions_by_hand():
    y_true = np.array(["a", "a", "b", "b"])
    y_pred = np.array(["a", "b", "b", "b"])
    s = score_predictions(y_true, y_pred)
    assert s["per_class"]["a"] == {"f1": pytest.approx(2 / 3), "precision": 1.0, "recall": 0.5, "support": 2}
    assert s["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_protocol_end_to_end_on_a_real_sample(data):
    cfg = RareConfig(
        k_values=(5,), seeds=(0,), models=("centralized", "random_forest"), epochs=1, prototype_variants=True
    )
    result = run_protocol(data, cfg)
    models = {r["model"]: r for r in result["runs"]}
    assert set(models) == {
        "centralized",
        "centralized+gated",
        "centralized+linear",
        "centralized+proto",
        "centralized+refit",
        "centralized+refit-ungated",
        "random_forest",
    }
    # fedids train's default read-out is the prototype head; +refit refits it on the same model and rows
    assert models["centralized"]["per_class"] == models["centralized+refit"]["per_class"]
    for run in result["runs"]:
        assert set(run["per_class"]) == set(np.unique(data.labels[data.test_rows]))
        for scores in run["per_class"].values():
            assert 0.0 <= scores["f1"] <= 1.0 and 0.0 <= scores["precision"] <= 1.0
    summary = result["summary"]
    assert 0.0 <= summary["centralized"]["5"]["macro_f1"] <= 1.0
    assert "Web Attack - Sql Injection" in summary["random_forest"]["5"]["per_class"]
    assert result["splits"]["5"]["kept"]["Web Attack - Sql Injection"] == 5


def test_federation_options_must_name_federation_config_fields():
    assert RareConfig(federation_options=(("client_weighting", "examples"),)).federation_options
    with pytest.raises(ValueError, match="unknown federation options"):
        RareConfig(federation_options=(("no_such_field", 1),))


def test_a_flow_space_exemplar_finds_the_training_flow_whatever_the_window_held_before():
    """``proto_space="flow"``: the head compares the window's own flow (its last row). A test window whose
    own flow is a class-1 training flow behind class-0 history is read as class 1, and the reverse; so is
    it with ``"both"``, while the embedding alone follows the history."""
    import torch

    from fedids.model.gru import GRUDetector
    from fedids.pipelines.rare_recipes import prototype_proba

    rng = np.random.default_rng(0)
    scaled = rng.normal(size=(40, 4)).astype(np.float32)
    scaled[20:] += 3.0  # rows 20-39: class 1's flows, far from class 0's (rows 0-19)
    rows = np.r_[np.arange(2, 12), np.arange(22, 32)]
    train = np.stack([rows - 2, rows - 1, rows], axis=1)  # each training flow behind two of its class
    targets = np.r_[np.zeros(10, np.int64), np.ones(10, np.int64)]
    test = np.array([[3, 4, 25], [26, 27, 5]])  # a class-1 flow behind class-0 flows; the reverse
    torch.manual_seed(0)
    model = GRUDetector(5, 2, 8)
    for space in ("flow", "both", "embedding"):
        p = prototype_proba(model, scaled, train, targets, test, 0.1, readout="nearest", space=space)
        assert p.shape == (2, 2) and np.allclose(p.sum(axis=1), 1.0)
        # the flow's own features find its class; this (untrained) GRU's embedding follows the history
        assert p.argmax(axis=1).tolist() == ([0, 1] if space == "embedding" else [1, 0])


def test_class_centroids_respect_their_least_size_and_fall_back_to_the_mean():
    """``proto_readout="clusters"``: two well separated shapes of one class give two centroids, one per
    shape; a shape of fewer rows than the least size is merged (never a centroid of one window); a class
    too small to split keeps its mean."""
    from fedids.pipelines.rare_recipes import _centroids

    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 3)) * 0.01 + np.array([1.0, 0.0, 0.0])
    b = rng.normal(size=(4, 3)) * 0.01 + np.array([0.0, 1.0, 0.0])
    two = _centroids(np.r_[a, b], (2, 2))
    for shape in (a, b):
        assert np.linalg.norm(two - shape.mean(axis=0), axis=1).min() < 1e-9
    # with more centroids allowed, each is still the mean of at least two rows: none equals a single row
    assert all(np.abs(np.r_[a, b] - c).sum(axis=1).min() > 1e-6 for c in _centroids(np.r_[a, b], (4, 2)))
    lone = np.r_[a, b[:1]]  # one row of the second shape: not a centroid of its own at least-size 2
    for c in _centroids(lone, (4, 2)):
        assert np.abs(lone - c).sum(axis=1).min() > 1e-6
    np.testing.assert_allclose(_centroids(np.r_[a[:3]], (4, 2)), a[:3].mean(axis=0, keepdims=True))


def test_fedids_trains_validation_slice_holds_out_benign_flows_only(data):
    """The alert threshold's slice: the benign flows among each label's latest 20% of training flows,
    never an attack flow (a rare class trains on all of its flows), and none of the test flows."""
    every_label = validation_mask(data, 0.2, benign_only=False)
    benign_only = validation_mask(data, 0.2)
    is_benign = data.labels == BENIGN_LABEL
    np.testing.assert_array_equal(benign_only, every_label & is_benign)
    assert benign_only.any() and (every_label & ~is_benign).any()
    assert not (benign_only & data.test_mask).any()
    # the held-out benign flows are the latest benign training flows
    train_benign = data.train_rows[is_benign[data.train_rows]]
    held = benign_only[train_benign]
    assert held[-held.sum() :].all() and not held[: -held.sum()].any()
