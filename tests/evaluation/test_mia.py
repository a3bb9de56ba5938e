"""Membership inference: metrics against hand calculations, class balancing, the client's exact training
windows, and both attacks on a model that provably memorised its members (random labels) versus a model
that never saw them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedids.data.synth import SynthConfig, generate_flows
from fedids.evaluation import mia
from fedids.model.artifacts import Detector
from fedids.model.train import TrainConfig, fit
from fedids.task import fit_preprocessing, new_model, prepare

torch.set_num_threads(1)  # small models: threads only add contention on a shared machine


def test_attack_metrics_by_hand() -> None:
    members, non_members = np.array([3.0, 2.0, 1.0]), np.array([0.0, 1.5])
    r = mia.compute_attack_metrics(members, non_members, "x", fixed_threshold=1.0)
    # Pairs (member > non-member): 3>0, 3>1.5, 2>0, 2>1.5, 1>0; 1<1.5 -> AUC 5/6.
    assert r.auc == pytest.approx(5 / 6)
    # Threshold 2: TPR 2/3, FPR 0 -> 2/3 (threshold 1: 1 - 1/2 = 1/2).
    assert r.advantage == pytest.approx(2 / 3) and r.tpr == pytest.approx(2 / 3) and r.fpr == 0.0
    assert r.threshold == 2.0 and r.accuracy == pytest.approx((1 + 2 / 3) / 2)
    # Fixed threshold 1: TPR 1, FPR 1/2.
    assert r.advantage_at_threshold == pytest.approx(0.5)
    assert r.members == 3 and r.non_members == 2
    assert np.isnan(r.chance_auc_95) and np.isnan(r.chance_advantage_95)  # no generator: no null
    with pytest.raises(ValueError):
        mia.compute_attack_metrics(np.array([]), non_members, "x", 0.0)


def test_chance_levels_from_shuffled_labels() -> None:
    rng = np.random.default_rng(0)
    n = 400
    separated = mia.compute_attack_metrics(
        rng.normal(2, 1, n), rng.normal(0, 1, n), "x", 1.0, rng=np.random.default_rng(1)
    )
    # Chance AUC stays near 0.5 and the chance advantage near the KS critical value 1.36 * sqrt(2 / n).
    assert 0.5 < separated.chance_auc_95 < 0.56
    assert 0.5 * 1.36 * np.sqrt(2 / n) < separated.chance_advantage_95 < 1.5 * 1.36 * np.sqrt(2 / n)
    assert separated.auc > 0.9 > separated.chance_auc_95
    assert separated.advantage > separated.chance_advantage_95


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from("abcd"), min_size=1, max_size=40),
    st.lists(st.sampled_from("abce"), min_size=1, max_size=40),
    st.one_of(st.none(), st.integers(1, 5)),
    st.integers(0, 2**32 - 1),
)
def test_balanced_indices(members, non_members, cap, seed) -> None:
    m, n = np.array(members), np.array(non_members)
    mi, ni, per_class = mia.balanced_indices(m, n, np.random.default_rng(seed), cap)
    assert len(mi) == len(ni) == sum(per_class.values())
    assert len(set(mi)) == len(mi) and len(set(ni)) == len(ni)  # no example drawn twice
    for label in set(members) | set(non_members):
        expected = min(members.count(label), non_members.count(label), cap or len(members))
        assert (m[mi] == label).sum() == (n[ni] == label).sum() == expected
        assert per_class.get(label, 0) == expected


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from("xyz")), min_size=1, max_size=60),
    st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from("xyw")), min_size=1, max_size=60),
    st.one_of(st.none(), st.integers(1, 8)),
    st.integers(0, 2**32 - 1),
)
def test_balanced_indices_by_class_and_host(members, non_members, cap, seed) -> None:
    (ml, mh), (nl, nh) = (np.array(members).T, np.array(non_members).T)
    mi, ni, per_class = mia.balanced_indices(ml, nl, np.random.default_rng(seed), cap, mh, nh)
    assert len(mi) == len(ni) == sum(per_class.values())
    assert len(set(mi)) == len(mi) and len(set(ni)) == len(ni)
    for label in "ab":
        pairs = sum(min(members.count((label, h)), non_members.count((label, h))) for h in "xyzw")
        assert per_class.get(label, 0) == min(pairs, cap if cap is not None else pairs)
        if cap is None or pairs <= cap:  # uncapped: every (label, host) stratum exactly balanced
            for h in "xyzw":
                assert (
                    ((ml[mi] == label) & (mh[mi] == h)).sum()
                    == ((nl[ni] == label) & (nh[ni] == h)).sum()
                    == min(members.count((label, h)), non_members.count((label, h)))
                )


def test_host_balancing_removes_a_host_confound() -> None:
    """A score that depends only on the host (an untrained model's loss is such a score when the pools
    cover different hosts) separates class-balanced pools, but not class-and-host-balanced ones."""
    rng = np.random.default_rng(0)
    hosts = np.array([f"10.0.0.{i}" for i in range(20)])
    member_hosts = rng.choice(hosts, 3000)
    nonmember_hosts = rng.choice(hosts[:5], 600)  # non-members from a quarter of the hosts
    host_score = dict(zip(hosts, rng.normal(size=len(hosts))))
    labels_m, labels_n = np.full(3000, "BENIGN"), np.full(600, "BENIGN")
    score = np.vectorize(host_score.get)
    for by_host, expect_confound in ((False, True), (True, False)):
        mi, ni, _ = mia.balanced_indices(
            labels_m,
            labels_n,
            np.random.default_rng(1),
            None,
            member_hosts if by_host else None,
            nonmember_hosts if by_host else None,
        )
        r = mia.compute_attack_metrics(score(member_hosts[mi]), score(nonmember_hosts[ni]), "host", 0.0)
        if expect_confound:
            assert abs(r.auc - 0.5) > 0.1 and r.advantage > 0.2
        else:
            assert r.auc == pytest.approx(0.5) and r.advantage == pytest.approx(0.0)


@pytest.fixture(scope="module")
def data():
    frame = generate_flows(SynthConfig(devices=8, hours=0.5, seed=3, gateways=2))
    return prepare(frame, window=10)


def test_client_examples_are_the_clients_training_windows(data) -> None:
    """The member set equals what the client (prepare_local) builds on the client's own partition file."""
    from fedids.federation.client_app import LOCAL_VAL_FRACTION, prepare_local
    from fedids.federation.simulation import make_partitions

    parts = make_partitions(data, 3, "iid", seed=1)
    rows = parts[0]
    train, val = mia.client_examples(data, rows, window=10, val_fraction=LOCAL_VAL_FRACTION)
    local = prepare_local(data.frame.iloc[rows], window=10)  # what the client computes
    local_to_global = np.where(local.windows >= 0, rows[np.maximum(local.windows, 0)], -1)
    assert np.array_equal(train.windows, local_to_global[local.train_rows])
    assert np.array_equal(val.windows, local_to_global[local.test_rows])
    assert list(train.labels) == list(local.labels[local.train_rows])
    assert len(train) + len(val) == len(rows) and set(val.labels) == {"BENIGN"}
    assert set(train.labels) == set(local.labels)  # every attack flow trains
    everything, nothing = mia.client_examples(data, rows, window=10, val_fraction=0.0)
    assert len(everything) == len(rows) and len(nothing) == 0


_CLASSES = np.array(["BENIGN", "DDoS", "PortScan", "Bot"], dtype=object)


def _random_label_model(data, rows: np.ndarray, labels: np.ndarray, seed: int) -> Detector:
    """A GRU trained to memorise labels drawn independently of the flows: only memorisation can fit them."""
    scaler, vocab = fit_preprocessing(data.features[rows], labels[rows])
    model = new_model(len(vocab), 64, seed)
    fit(
        model,
        scaler.transform(data.features),
        data.windows[rows],
        vocab.encode(labels[rows]),
        TrainConfig(epochs=30, batch_size=32, loss="weighted_ce", seed=seed),
    )
    return Detector(model, scaler, vocab, 10, {})


def test_attacks_detect_memorisation_and_not_chance(data) -> None:
    rng = np.random.default_rng(0)
    labels = _CLASSES[rng.integers(0, len(_CLASSES), len(data.labels))]
    perm = rng.permutation(data.train_rows)
    a, b, c, pool = (
        np.sort(perm[:250]),
        np.sort(perm[250:500]),
        np.sort(perm[500:750]),
        np.sort(perm[750:1250]),
    )

    def examples(rows: np.ndarray) -> mia.Examples:
        return mia.Examples(data.windows[rows], labels[rows])

    memorised = _random_label_model(data, a, labels, seed=1)  # trained on a: a are members
    unrelated = _random_label_model(data, c, labels, seed=1)  # never saw a or b
    hit = mia.loss_threshold_attack(
        memorised, data.features, examples(a), examples(b), np.random.default_rng(1)
    )
    assert hit.auc > 0.8 and hit.advantage > 0.5 and hit.advantage_at_threshold > 0.3
    assert hit.members == hit.non_members == sum(hit.per_class.values())
    chance = mia.loss_threshold_attack(
        unrelated, data.features, examples(a), examples(b), np.random.default_rng(1)
    )
    assert 0.4 < chance.auc < 0.6 and chance.advantage < 0.2

    shadow_cfg = mia.ShadowConfig(
        shadows=1,
        hidden=64,
        max_per_class=200,
        train=TrainConfig(epochs=30, batch_size=32, loss="weighted_ce"),
    )
    shadow = mia.shadow_model_attack(
        memorised,
        data.features,
        examples(pool),
        examples(a),
        examples(b),
        shadow_cfg,
        np.random.default_rng(2),
    )
    assert shadow.attack == "shadow-model" and shadow.auc > 0.75 and shadow.advantage_at_threshold > 0.3


def test_attack_features_pad_small_vocabularies() -> None:
    proba = np.array([[0.7, 0.3], [0.2, 0.8]], dtype=np.float32)
    scores = mia.ExampleScores(proba, np.array([0, 0]), -np.log(proba[:, 0]))
    x = mia.attack_features(scores, top_k=3)
    assert x.shape == (2, 5)
    np.testing.assert_allclose(x[:, 0], [0.7, 0.2], rtol=1e-6)  # p(true label)
    np.testing.assert_allclose(x[:, 1:4], [[0.7, 0.3, 0.0], [0.8, 0.2, 0.0]], rtol=1e-6)
    entropy = -(proba * np.log(proba)).sum(axis=1)
    np.testing.assert_allclose(x[:, 4], entropy, rtol=1e-5)
