"""CCVR head calibration (fedids.federation.calibration): mergeable moments and a head refitted on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedids.federation import messages as m
from fedids.federation.calibration import (
    ClassMoments,
    calibrate_head,
    check_confusion_vector,
    check_moments_vector,
    class_moments,
    confusion_vector,
    moments_from_vector,
    moments_prototypes,
    moments_vector,
)
from fedids.model.discriminant import ABSENT_OFFSET
from fedids.model.train import fit_prototypes
from fedids.task import new_model


def _two_gaussians(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4)) * 0.5 + np.where(y[:, None] == 1, 1.0, -1.0)
    return x, y


def test_moments_travel_as_a_vector_scaled_by_the_federations_rows_and_come_back():
    moments = class_moments(np.ones((3, 4)), np.array([0, 1, 1]), 2)
    vector = moments_vector(moments, totals=np.array([1000, 1000]))
    assert np.abs(vector).max() <= 1.0  # within the CKKS and SecAgg ranges
    decoded = moments_from_vector(vector, 2, 4, totals=np.array([1000, 1000]))
    assert decoded.ccvr.count.tolist() == [1.0, 2.0]
    np.testing.assert_allclose(decoded.ccvr.outer, moments.outer)
    check_moments_vector(vector, 2, 4, np.array([1000, 1000]), class_counts=np.array([1, 2]))
    # the second block: the same flows' head windows (the prototype head's), read back apart
    head = class_moments(np.full((3, 4), 0.5), np.array([0, 1, 1]), 2)
    both = moments_from_vector(
        moments_vector(moments, np.array([1000, 1000]), head), 2, 4, np.array([1000, 1000])
    )
    np.testing.assert_allclose(both.ccvr.sum, moments.sum)
    np.testing.assert_allclose(both.head.sum, head.sum)
    other = class_moments(np.ones((2, 4)), np.array([0, 1]), 2)  # a block counting other windows: refused
    with pytest.raises(ValueError, match="different windows"):
        check_moments_vector(
            moments_vector(moments, np.array([1000, 1000]), other),
            2,
            4,
            np.array([1000, 1000]),
            np.array([5, 5]),
        )


def test_moments_of_two_clients_add_up_to_the_moments_of_their_pooled_features():
    rng = np.random.default_rng(0)
    (xa, ya), (xb, yb) = _two_gaussians(rng, 50), _two_gaussians(rng, 70)
    merged = class_moments(xa, ya, 3) + class_moments(xb, yb, 3)
    pooled = class_moments(np.concatenate([xa, xb]), np.concatenate([ya, yb]), 3)
    for a, b in zip((merged.count, merged.sum, merged.outer), (pooled.count, pooled.sum, pooled.outer)):
        np.testing.assert_allclose(a, b)
    assert merged.count.tolist() == [
        float((ya == 0).sum() + (yb == 0).sum()),
        float((ya == 1).sum() + (yb == 1).sum()),
        0.0,
    ]


def test_the_prototype_head_from_two_clients_moments_is_fedids_trains_head_on_their_pooled_windows():
    """The final federated model's prototype head comes from the summed calibration moments; it is the
    same head as ``fedids train``'s ``fit_prototypes`` on every client's windows pooled."""
    from fedids.federation.calibration import hidden_features

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = new_model(4, 8)
    scaled = rng.normal(size=(200, model.gru.input_size - 1)).astype(np.float32)  # + a padding flag
    windows = np.stack([np.arange(i, i + 5) for i in range(190)])
    targets = rng.integers(0, 3, len(windows))  # class 3 has no window
    a, b = slice(0, 120), slice(120, None)
    summed = sum(
        (class_moments(hidden_features(model, scaled, windows[s]), targets[s], 4) for s in (a, b)),
        ClassMoments.zeros(4, 8),
    )
    weights, offsets = moments_prototypes(summed)
    assert not weights[3].any() and offsets[3] == ABSENT_OFFSET and (offsets[:3] > ABSENT_OFFSET).all()
    federated, pooled = new_model(4, 8), new_model(4, 8)
    pooled.load_state_dict(model.state_dict())
    federated.set_prototypes(weights, offsets)
    fit_prototypes(pooled, scaled, windows, targets)
    torch.testing.assert_close(federated.prototypes, pooled.prototypes, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(federated.prototype_offset, pooled.prototype_offset, atol=1e-4, rtol=1e-4)
    # as the server sends them to the clients (float32), and refused when malformed
    decoded = m.decode_prototypes(m.encode_prototypes(weights, offsets), 4, 8)
    np.testing.assert_allclose(decoded[0], weights, rtol=1e-6)
    np.testing.assert_allclose(decoded[1], offsets, rtol=1e-6)
    assert moments_prototypes(ClassMoments.zeros(4, 8)) is None
    for bad in (
        m.encode_prototypes(weights[:3], offsets[:3]),
        m.encode_prototypes(np.where(offsets[:, None] > ABSENT_OFFSET, weights, np.nan), offsets),
        m.encode_prototypes(weights, np.full(4, ABSENT_OFFSET)),
    ):
        with pytest.raises(ValueError):
            m.decode_prototypes(bad, 4, 8)


def test_a_head_that_calls_everything_class_0_is_refitted_to_separate_the_classes():
    rng = np.random.default_rng(1)
    x, y = _two_gaussians(rng, 400)
    head = torch.nn.Linear(4, 2)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0, -5.0]))
    test_x, test_y = _two_gaussians(rng, 1000)
    before = (head(torch.tensor(test_x, dtype=torch.float32)).argmax(1).numpy() == test_y).mean()
    assert calibrate_head(head, class_moments(x, y, 2), seed=0) == 2
    after = (head(torch.tensor(test_x, dtype=torch.float32)).argmax(1).numpy() == test_y).mean()
    assert before < 0.6 and after > 0.95
    again = torch.nn.Linear(4, 2)
    again.load_state_dict({"weight": torch.zeros(2, 4), "bias": torch.tensor([5.0, -5.0])})
    calibrate_head(again, class_moments(x, y, 2), seed=0)
    assert torch.equal(again.weight, head.weight)  # same seed, same head


@pytest.mark.parametrize("spoil", ["nan", "negative", "fraction", "shape"])
def test_malformed_moments_from_a_client_are_refused(spoil):
    moments = class_moments(np.ones((3, 4)), np.array([0, 1, 1]), 2)
    if spoil == "nan":
        moments.sum[0, 0] = np.nan
    elif spoil == "negative":
        moments.count[0] = -1
    elif spoil == "fraction":
        moments.count[0] = 0.5
    else:
        moments = ClassMoments.zeros(3, 4)
    with pytest.raises(ValueError):
        check_moments_vector(
            moments_vector(moments, np.array([100, 100])),
            2,
            4,
            np.array([100, 100]),
            class_counts=np.array([5, 5]),
        )


def test_moments_counting_more_windows_than_the_client_reported_are_refused():
    moments = class_moments(np.ones((3, 4)), np.array([0, 1, 1]), 2)
    with pytest.raises(ValueError, match="more windows"):
        check_moments_vector(
            moments_vector(moments, np.array([100, 100])),
            2,
            4,
            np.array([100, 100]),
            class_counts=np.array([1, 1]),
        )


def test_macro_f1_from_a_merged_confusion_matrix_is_sklearns_on_the_pooled_predictions():
    """The server's check adds the clients' confusion matrices: its macro-F1 must be the one of the pooled
    validation predictions, as fedids.model.metrics computes it (classes present in y_true)."""
    from fedids.federation.calibration import head_confusions, macro_f1_from_confusion
    from fedids.model.metrics import compute_metrics

    rng = np.random.default_rng(3)
    heads = [(rng.normal(size=(4, 6)), rng.normal(size=4)) for _ in range(2)]
    clients = [(rng.normal(size=(n, 6)), rng.integers(0, 3, n)) for n in (40, 25, 60)]  # class 3 never true
    merged = sum(head_confusions(x, y, heads, 4) for x, y in clients)
    x, y = np.concatenate([c[0] for c in clients]), np.concatenate([c[1] for c in clients])
    for i, (w, b) in enumerate(heads):
        pred = np.argmax(x @ w.T + b, axis=1)
        names = np.array(["BENIGN", "DDoS", "PortScan", "Bot"])
        assert macro_f1_from_confusion(merged[i]) == pytest.approx(
            compute_metrics(names[y], names[pred])["macro_f1"]
        )
    assert merged[0].sum() == len(y) and (merged[0].sum(axis=1) == merged[1].sum(axis=1)).all()
    assert np.isnan(macro_f1_from_confusion(np.zeros((3, 3))))


@pytest.mark.parametrize("spoil", ["negative", "unequal rows", "fraction", "shape"])
def test_malformed_confusion_matrices_from_a_client_are_refused(spoil):
    confusions = np.array([[[5, 1], [0, 4]], [[6, 0], [1, 3]]], dtype=np.int64)
    if spoil == "negative":
        confusions[1, 0, 0] = -1
    elif spoil == "unequal rows":
        confusions[1, 0, 0] = 60
    elif spoil == "fraction":
        confusions = confusions.astype(np.float64) + 0.5
    else:
        confusions = np.zeros((2, 3, 3), dtype=np.int64)
    good = np.array([[[5, 1], [0, 4]], [[6, 0], [1, 3]]], dtype=np.int64)
    from fedids.model.metrics import SCORE_BINS

    histograms = np.zeros((2, 2, SCORE_BINS))
    histograms[:, 0, 0] = good.sum(axis=(1, 2))  # every validation window counted once per head
    check_confusion_vector(
        confusion_vector({"validation": good, "train": good}, histograms),
        2,
        class_counts=np.array([100, 100]),
    )
    with pytest.raises(ValueError):
        check_confusion_vector(
            confusion_vector({"validation": good, "train": confusions}, histograms), 2, np.array([100, 100])
        )
    with pytest.raises(ValueError, match="histograms"):  # histograms that do not count the windows
        check_confusion_vector(confusion_vector({"validation": good, "train": good}), 2, np.array([100, 100]))


@pytest.mark.parametrize(
    "scores, kept",
    [
        ({"validation": [0.80, 0.85], "train": [0.99, 0.90]}, False),  # the training windows decide
        ({"validation": [0.96, 0.95], "train": [0.87, 0.92]}, True),
        ({"validation": [1.0, 1.0], "train": [0.999, 0.998]}, False),
        ({"validation": [float("nan")] * 2, "train": [0.5, 0.6]}, True),  # no validation windows at all
        ({"validation": [1.0, 1.0], "train": [1.0, 1.0]}, False),  # no evidence: keep the old head
        ({"validation": [0.5, 0.6], "train": [float("nan")] * 2}, False),
    ],
)
def test_the_calibrated_head_is_kept_only_where_client_windows_show_it_helps(scores, kept):
    from fedids.federation.calibration import keep_calibrated

    assert keep_calibrated(scores)[0] is kept


def test_a_noised_check_keeps_a_refit_only_when_its_gain_stands_out_of_the_noise():
    """DP runs decide from noised counts: a small gain that the noise could give is not enough, a large one
    is; without noise the rule is unchanged."""
    from fedids.federation.calibration import decide, gain_noise

    def pair(old_hits: int, new_hits: int, rare: int) -> np.ndarray:
        """Old and new heads on 3,000 benign, 500 DDoS and ``rare`` windows of a rare class: how many rare
        windows each head names right (the rest it calls benign)."""
        heads = []
        for hits in (old_hits, new_hits):
            c = np.array([[3000, 0, 0], [0, 500, 0], [rare - hits, 0, hits]], dtype=np.float64)
            heads.append(c)
        return np.stack(heads)

    validation = pair(0, 0, 1)
    small = {"train": pair(5, 6, 12), "validation": validation}  # one more of 12 rare windows
    large = {"train": pair(0, 12, 12), "validation": validation}  # the class learnt from nothing
    assert decide(small)[0] and decide(large)[0]  # exact counts: every gain counts
    noise = 3.0 * np.sqrt(2.0)  # calibration_dp's default release noise on the check's sensitivity
    assert gain_noise(small["train"], noise) > 0.02
    kept, reason, _ = decide(small, noise)
    assert not kept and "within the check's noise" in reason
    assert decide(large, noise)[0]
    assert decide(small, noise)[0] is kept  # deterministic: every reader of the same sum decides alike


def test_the_alert_threshold_from_summed_histograms_meets_the_budget_like_the_exact_rule():
    """Clients share score histograms, not scores: the threshold chosen from their sum allows at most the
    budgeted false alerts on the validation windows, and is the first bin edge at or above the exact
    rule's threshold."""
    from fedids.model.metrics import (
        choose_threshold,
        choose_threshold_from_histograms,
        score_edges,
        score_histogram,
    )

    rng = np.random.default_rng(0)
    benign = rng.beta(1, 30, 20_000)  # mostly near 0, a long tail
    attack = rng.beta(8, 2, 3_000)
    clients = np.array_split(np.arange(20_000), 4)
    summed = sum(score_histogram(benign[c]) for c in clients)
    edges = score_edges()
    for rate in (0.0, 1e-3, 1e-2):
        rule = choose_threshold_from_histograms(summed, score_histogram(attack), rate)
        exact = choose_threshold(
            np.r_[benign, attack], np.r_[np.ones(20_000, bool), np.zeros(3_000, bool)], rate
        )
        assert (
            (benign >= rule["threshold"]).sum() == rule["validation_false_alerts"] <= np.floor(rate * 20_000)
        )
        assert rule["threshold"] == edges[np.searchsorted(edges, exact["threshold"], side="left")]
        assert rule["validation_attack_recall"] == pytest.approx((attack >= rule["threshold"]).mean())


def test_the_histogram_rule_keeps_its_recall_when_benign_look_alikes_score_near_one():
    """A trained model gives its confident benign look-alikes scores of 0.999 and above; 0.5% of the
    benign windows here. At a 0.1% budget the exact threshold sits among them, and the histogram rule
    must find it: with bins of 1/4096 in the score every such window fell in the last bin, no threshold
    below 1 met the budget, and the rule alerted on nothing (recall 0)."""
    from fedids.model.metrics import choose_threshold, choose_threshold_from_histograms, score_histogram

    rng = np.random.default_rng(1)
    benign = np.r_[rng.beta(1, 30, 19_900), 1.0 - 10.0 ** -rng.uniform(3.0, 6.0, 100)]
    attack = 1.0 - 10.0 ** -rng.uniform(2.0, 7.0, 3_000)
    rule = choose_threshold_from_histograms(score_histogram(benign), score_histogram(attack), 1e-3)
    exact = choose_threshold(np.r_[benign, attack], np.r_[np.ones(20_000, bool), np.zeros(3_000, bool)], 1e-3)
    assert 0.999 < rule["threshold"] < 1.0
    assert rule["validation_false_alerts"] <= 20
    assert exact["validation_attack_recall"] > 0.3
    assert rule["validation_attack_recall"] == pytest.approx(exact["validation_attack_recall"], abs=0.01)


def test_a_client_reads_the_final_prototype_head_from_the_server_or_from_the_he_moments_sum_it_opens():
    """``final_prototypes``: under ``he`` the client opens the BFV moments sum (two clients' moments,
    quantised and encrypted as in the run) and gets the class means of the summed moments; in the other
    modes it decodes the server's means; with ``prototypes`` 0 it gets none; a malformed record fails."""
    from types import SimpleNamespace

    from flwr.app import ConfigRecord, RecordDict

    from fedids.federation.calibration import final_prototypes
    from fedids.federation.calibration_dp import moments_sum_length
    from fedids.federation.private import REAL, SealedSum, secagg_clip_range
    from fedids.privacy.he_secagg import EncryptedMaskedSum, create_bfv_keys, encrypt_masked
    from fedids.privacy.secagg import SecAggConfig, quantize
    from support.flower_messages import message as flower_message

    rng = np.random.default_rng(3)
    n, hidden, totals = 3, 4, np.array([100, 50, 20])
    setup = SimpleNamespace(
        vocabulary=SimpleNamespace(labels=["BENIGN", "DDoS", "PortScan"]), class_totals=totals
    )
    model = new_model(n, hidden)
    labels = [rng.integers(0, 2, 30) for _ in range(2)]
    clients = [class_moments(rng.normal(size=(30, hidden)), y, n) for y in labels]
    heads = [class_moments(rng.normal(0.3, 0.5, size=(30, hidden)), y, n) for y in labels]  # head windows
    expected = moments_prototypes(heads[0] + heads[1])  # the prototype head reads the head block
    assert expected is not None and (expected[1] > ABSENT_OFFSET).tolist() == [True, True, False]
    length = moments_sum_length(n, hidden, None)
    keys = create_bfv_keys()
    code = SecAggConfig(n_clients=2, vector_length=length, round_id=1, clip_range=secagg_clip_range(REAL, 2))
    total = EncryptedMaskedSum(keys.public_context, length)
    for moments, head in zip(clients, heads):
        total.add(encrypt_masked(keys.secret_context, quantize(moments_vector(moments, totals, head), code)))
    sealed = SealedSum("bfv", total.to_bytes(), REAL, code.to_dict())

    def msg(prototypes: int, privacy: str, record=None):
        ins = m.ModelInstructions(
            ("BENIGN", "DDoS", "PortScan"), 4, hidden, privacy, 1.0, "d", prototypes=prototypes
        )
        content = RecordDict({m.CONFIG: ConfigRecord(ins.to_config())})
        if record is not None:
            content[m.PROTOTYPES] = record
        return flower_message(
            m.add_sealed(content, {"moments": sealed} if privacy == "he" else {}), m.QUERY_GLOBAL
        )

    weights, offsets = final_prototypes(msg(1, "he"), model, setup, keys.secret_context)
    np.testing.assert_allclose(weights, expected[0], atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(offsets, expected[1], atol=1e-3, rtol=1e-3)
    assert final_prototypes(msg(0, "he"), model, setup, keys.secret_context) is None
    sent = final_prototypes(msg(1, "none", m.encode_prototypes(*expected)), model, setup, None)
    np.testing.assert_allclose(sent[0], expected[0], rtol=1e-6)
    with pytest.raises(ValueError):
        final_prototypes(
            msg(1, "none", m.encode_prototypes(expected[0][:2], expected[1][:2])), model, setup, None
        )


def test_noised_moments_whose_every_class_reads_as_absent_give_no_prototype_head():
    """Client-level DP can leave one class above the noise with a near-zero variance: its discriminant
    offset falls below what every reader of a head counts as a class mean. The server and the ``he``
    clients then get no prototype head (the model keeps its linear head) instead of one that the model,
    its file and the federated message all refuse."""
    from fedids.model.discriminant import gaussian_discriminant, has_mean

    n, hidden = 3, 4
    moments = ClassMoments.zeros(n, hidden)
    mean = np.full(hidden, 0.9)
    moments.count[0], moments.sum[0] = 5.0, 5.0 * mean
    moments.outer[0] = 5.0 * (np.diag(np.full(hidden, 1e-5)) + np.outer(mean, mean))
    _, offsets, present = gaussian_discriminant(moments.count, moments.sum, moments.outer)
    assert present.tolist() == [True, False, False] and not has_mean(offsets).any()
    with pytest.raises(ValueError, match="no class has a mean"):
        new_model(n, hidden).set_prototypes(
            *gaussian_discriminant(moments.count, moments.sum, moments.outer)[:2]
        )
    assert moments_prototypes(moments) is None
    moments.outer[0] = 5.0 * (np.eye(hidden) * 0.1 + np.outer(mean, mean))  # a usable variance: a head
    assert moments_prototypes(moments) is not None
