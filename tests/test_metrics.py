import numpy as np

from fedids.evaluation.metrics import METRIC_KEYS, compute_metrics


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
