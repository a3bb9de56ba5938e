"""The prototype head (fedids.model.gru): what it computes, that it survives saving, ONNX export and
streaming, and that a corrupt one is refused. Real CICIDS2017 samples (the conftest detector)."""

import copy
import json

import numpy as np
import pytest
import torch

from fedids.data.windows import gather_windows
from fedids.detect.stream import load_scorer, score_windows
from fedids.errors import InputError
from fedids.model.artifacts import load_detector, save_detector
from fedids.model.export import export_onnx
from fedids.model.gru import PROTOTYPE_TEMPERATURE, PROTOTYPE_WEIGHT
from fedids.model.metrics import compute_metrics
from fedids.model.train import fit_prototypes, predict_proba
from fedids.pipelines.rare_recipes import prototype_proba
from fedids.task import predict_labels


@pytest.fixture(scope="module")
def with_prototypes(real_detector):
    """The conftest detector, copied, with prototypes from its training windows."""
    detector, data = real_detector
    detector = copy.deepcopy(detector)
    scaled = detector.scaler.transform(data.features)
    rows = data.train_rows
    targets = detector.vocabulary.encode(data.labels[rows])
    fit_prototypes(detector.model, scaled, data.windows[rows], targets)
    return detector, data, scaled, targets


def gated(linear: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """The documented read-out: P(BENIGN) of the linear head, the attack mass shared as the mix shares it."""
    mix = (1 - PROTOTYPE_WEIGHT) * linear + PROTOTYPE_WEIGHT * nearest
    attacks = mix[:, 1:] / mix[:, 1:].sum(axis=1, keepdims=True)
    return np.concatenate([linear[:, :1], (1 - linear[:, :1]) * attacks], axis=1)


def test_eval_output_is_the_linear_benign_score_and_the_mix_among_attacks(with_prototypes):
    detector, data, scaled, targets = with_prototypes
    model, rows = detector.model, data.test_rows
    got = predict_proba(model, scaled, data.windows[rows])
    plain = copy.deepcopy(model)
    plain.set_prototypes(None)
    linear = predict_proba(plain, scaled, data.windows[rows])
    nearest = prototype_proba(
        plain, scaled, data.windows[data.train_rows], targets, data.windows[rows], PROTOTYPE_TEMPERATURE
    )
    np.testing.assert_allclose(got, gated(linear, nearest), atol=1e-5)
    # The alert score (1 - P(BENIGN)) is the linear head's; which attack is not.
    np.testing.assert_allclose(got[:, 0], linear[:, 0], atol=1e-6)
    attack = linear[:, 0] < 0.5
    assert not np.allclose(got[attack, 1:], linear[attack, 1:], atol=1e-3)


def test_training_mode_reads_the_linear_head_only(with_prototypes):
    detector, data, scaled, _ = with_prototypes
    x = torch.from_numpy(gather_windows(scaled, data.windows[:64]))
    plain = copy.deepcopy(detector.model)
    plain.set_prototypes(None)
    detector.model.train()
    try:
        torch.testing.assert_close(detector.model(x), plain.train()(x))
    finally:
        detector.model.eval()


def test_a_class_without_windows_gets_no_prototype(with_prototypes):
    detector, data, scaled, targets = with_prototypes
    model = copy.deepcopy(detector.model)
    absent = int(np.bincount(targets).argmin())
    keep = targets != absent
    fit_prototypes(model, scaled, data.windows[data.train_rows][keep], targets[keep])
    offset = model.prototype_offset.numpy()
    assert offset[absent] < -1e3 and (np.delete(offset, absent) == 0).all()
    plain = copy.deepcopy(model)
    plain.set_prototypes(None)
    got = predict_proba(model, scaled, data.windows[data.test_rows])
    linear = predict_proba(plain, scaled, data.windows[data.test_rows])
    nearest = prototype_proba(
        plain,
        scaled,
        data.windows[data.train_rows][keep],
        targets[keep],
        data.windows[data.test_rows],
        PROTOTYPE_TEMPERATURE,
    )
    assert nearest[:, absent].max() == 0.0  # no mean, no similarity
    np.testing.assert_allclose(got, gated(linear, nearest), atol=1e-5)


def test_prototypes_survive_save_onnx_and_streaming(with_prototypes, tmp_path):
    detector, data, _, _ = with_prototypes
    again = load_detector(save_detector(tmp_path / "m", detector))
    assert again.model.has_prototypes
    ref_labels, ref = predict_labels(detector, data.features, data.windows)
    np.testing.assert_array_equal(predict_labels(again, data.features, data.windows)[1], ref)
    for quantize, atol in (("none", 2e-5), ("int8", None)):
        path = export_onnx(detector, tmp_path / f"m-{quantize}.onnx", quantize=quantize).path
        got = score_windows(load_scorer(path), data.features, data.windows)
        if atol is not None:
            np.testing.assert_allclose(got, ref, atol=atol, rtol=0)
        labels = np.asarray(detector.vocabulary.labels, dtype=object)[got.argmax(1)]
        rows = data.test_rows
        f1 = compute_metrics(data.labels[rows], labels[rows])["macro_f1"]
        assert abs(f1 - compute_metrics(data.labels[rows], ref_labels[rows])["macro_f1"]) <= 0.005
    # The streaming scorer of the model directory (one GRU step per flow) reads the same head.
    stream = score_windows(load_scorer(tmp_path / "m"), data.features, data.windows)
    np.testing.assert_allclose(stream, ref, atol=2e-5, rtol=0)


CORRUPT = {
    "empty list": lambda n, h: [],
    "every class null": lambda n, h: [None] * n,
    "short rows": lambda n, h: [[0.5] * (h - 1)] * n,
    "not a list": lambda n, h: "x",
    "one row too many": lambda n, h: [[0.5] * h] * (n + 1),
    "non-finite": lambda n, h: [[float("nan")] * h] * n,
    "booleans": lambda n, h: [[True] * h] * n,
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_corrupt_prototype_head_is_refused(with_prototypes, tmp_path, case):
    model = with_prototypes[0].model
    directory = save_detector(tmp_path / "m", with_prototypes[0])
    prep_path = directory / "preprocessing.json"
    prep = json.loads(prep_path.read_text())
    prep["prototypes"] = CORRUPT[case](model.n_classes, model.hidden)
    prep_path.write_text(json.dumps(prep))
    with pytest.raises(InputError, match="prototypes"):
        load_detector(directory)
