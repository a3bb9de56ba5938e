import numpy as np
import pandas as pd
import pytest
import torch

from fedids.data.schema import FEATURES
from fedids.errors import InputError
from fedids.model.artifacts import load_detector, save_detector
from fedids.model.train import TrainConfig, compute_class_weights, get_weights, set_weights
from fedids.task import evaluate_rows, predict_labels, prepare, train_centralized


def _history_task(n=3000, seed=0) -> pd.DataFrame:
    """Scanners send many flows to *different* ports; a single flow looks like a benign one.

    Only the window (several flows of one host with varying Destination Port) separates the classes,
    so a model that ignores history cannot beat ~50% on the attack class.
    """
    rng = np.random.default_rng(seed)
    hosts = rng.integers(0, 40, n)
    scanner = hosts < 8
    feats = np.abs(rng.normal(100, 0.1, size=(n, len(FEATURES))))
    port = np.where(scanner, rng.integers(1, 65536, n), 443)
    feats[:, 0] = port
    frame = pd.DataFrame(feats, columns=list(FEATURES))
    frame["src_ip"] = [f"10.0.0.{h}" for h in hosts]
    frame["seq"] = np.arange(n)
    frame["label"] = np.where(scanner, "PortScan", "BENIGN")
    frame["family"] = np.where(scanner, "portscan", "benign")
    # Half the scanner flows hit 443 as well: on its own that flow is indistinguishable.
    frame.loc[scanner & (rng.random(n) < 0.5), "Destination Port"] = 443
    return frame


def test_gru_learns_from_history_and_round_trips(tmp_path):
    data = prepare(_history_task(), window=6)
    detector, result = train_centralized(
        data, TrainConfig(epochs=6, batch_size=32, lr=1e-2), hidden=16, window=6
    )
    assert result.losses[-1] < result.losses[0]
    metrics = evaluate_rows(detector, data, data.test_rows)
    assert metrics["macro_f1"] > 0.9, metrics
    save_detector(tmp_path / "m", detector)
    again = load_detector(tmp_path / "m")
    p1 = predict_labels(detector, data.features, data.windows[:200])[1]
    p2 = predict_labels(again, data.features, data.windows[:200])[1]
    np.testing.assert_allclose(p1, p2, rtol=0, atol=0)
    assert again.vocabulary.labels == ["BENIGN", "PortScan"] and again.window == 6


def test_training_is_deterministic_for_a_seed():
    data = prepare(_history_task(800), window=4)
    w = [
        get_weights(train_centralized(data, TrainConfig(epochs=1, seed=3), hidden=8, window=4)[0].model)
        for _ in range(2)
    ]
    assert all(np.array_equal(a, b) for a, b in zip(*w))


def test_corrupt_or_missing_model_is_an_input_error(tmp_path):
    data = prepare(_history_task(300), window=2)
    detector, _ = train_centralized(data, TrainConfig(epochs=1), hidden=8, window=2)
    save_detector(tmp_path / "m", detector)
    (tmp_path / "m" / "model.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="corrupt model"):
        load_detector(tmp_path / "m")
    (tmp_path / "m" / "model.pt").unlink()
    with pytest.raises(InputError, match="model.pt missing"):
        load_detector(tmp_path / "m")
    with pytest.raises(InputError, match="does not exist"):
        load_detector(tmp_path / "nope")


def test_set_weights_rejects_wrong_shapes():
    data = prepare(_history_task(200), window=2)
    detector, _ = train_centralized(data, TrainConfig(epochs=1), hidden=8, window=2)
    weights = get_weights(detector.model)
    with pytest.raises(ValueError):
        set_weights(detector.model, weights[:-1])
    with pytest.raises(ValueError):
        set_weights(detector.model, [w.T if w.ndim == 2 else w for w in weights])


def test_class_weights_inverse_sqrt_and_absent_zero():
    w = compute_class_weights(np.array([10000, 100, 0]))
    assert w[2] == 0 and w[1] / w[0] == pytest.approx(10.0)
    assert w[:2].mean() == pytest.approx(1.0)


def test_step_matches_full_window():
    torch.manual_seed(0)
    from fedids.model.gru import GRUDetector

    model = GRUDetector(5, 3, hidden=7).eval()
    x = torch.randn(4, 6, 5)
    full = model(x)
    h = None
    for t in range(6):
        logits, h = model.step(x[:, t], h)
    torch.testing.assert_close(logits, full)
