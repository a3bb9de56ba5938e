import numpy as np

from fedids.model.metrics import METRIC_KEYS, choose_threshold, compute_metrics


def test_metrics_hand_computed():
    y_true = np.array(["BENIGN", "BENIGN", "BENIGN", "DDoS", "DDoS", "PortScan"])
    y_pred = np.array(["BENIGN", "BENIGN", "DDoS", "DDoS", "DDoS", "BENIGN"])
    m = compute_metrics(y_true, y_pred)
    assert tuple(m) == METRIC_KEYS
    assert m["accuracy"] == 4 / 6
    # F1: BENIGN p=2/3 r=2/3 -> 2/3 ; DDoS p=2/3 r=1 -> 0.8 ; PortScan 0
    assert abs(m["macro_f1"] - (2 / 3 + 0.8 + 0) / 3) < 1e-12
    assert m["per_class"]["DDoS"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["confusion"]["labels"] == ["BENIGN", "DDoS", "PortScan"]
    assert m["confusion"]["matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_family"]["portscan"]["recall"] == 0.0
    assert m["per_family"]["benign"]["accuracy"] == 4 / 6
    assert -1.0 <= m["mcc"] <= 1.0


def test_perfect_prediction():
    y = np.array(["BENIGN", "Web Attack - XSS", "Bot"])
    m = compute_metrics(y, y)
    assert m["accuracy"] == m["macro_f1"] == m["mcc"] == 1.0
    assert set(m["per_family"]) == {"benign", "webattack", "botnet"}


def test_false_alarm_rate_hand_computed():
    m = compute_metrics(
        np.array(["BENIGN", "BENIGN", "BENIGN", "DDoS", "DDoS", "PortScan"]),
        np.array(["BENIGN", "BENIGN", "DDoS", "DDoS", "PortScan", "BENIGN"]),
    )
    assert m["false_alarms"] == {
        "benign_flows": 3,
        "false_alerts": 1,
        "per_1000": 1000 / 3,
        "attack_flows": 3,
        "attack_alerts": 2,
        "attack_recall": 2 / 3,
    }


def test_threshold_keeps_the_validation_false_alarm_rate_within_budget():
    rng = np.random.default_rng(0)
    benign = rng.uniform(0, 0.6, 5000)
    attack = rng.uniform(0.4, 1.0, 500)
    score = np.concatenate([benign, attack])
    is_benign = np.arange(len(score)) < len(benign)
    for rate in (0.0, 0.001, 0.01, 0.2):
        rule = choose_threshold(score, is_benign, rate)
        fa = int((benign >= rule["threshold"]).sum())
        assert fa == rule["validation_false_alerts"] <= np.floor(rate * len(benign) + 1e-9)
        # the lowest such threshold: one benign score more would exceed the budget
        below = benign[benign < rule["threshold"]]
        if len(below):
            assert fa + 1 > np.floor(rate * len(benign) + 1e-9)
    assert choose_threshold(score, is_benign, 1.0)["threshold"] == 0.0
