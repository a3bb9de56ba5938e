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


def test_eval_output_is_the_mix_of_linear_and_nearest_class_mean(with_prototypes):
    detector, data, scaled, targets = with_prototypes
    model, rows = detector.model, data.test_rows
    mixed = predict_proba(model, scaled, data.windows[rows])
    plain = copy.deepcopy(model)
    plain.set_prototypes(None)
    linear = predict_proba(plain, scaled, data.windows[rows])
    nearest = prototype_proba(
        plain, scaled, data.windows[data.train_rows], targets, data.windows[rows], PROTOTYPE_TEMPERATURE
    )
    expected = (1 - PROTOTYPE_WEIGHT) * linear + PROTOTYPE_WEIGHT * nearest
    np.testing.assert_allclose(mixed, expected, atol=1e-5)
    assert not np.allclose(mixed, linear, atol=1e-3)  # the head changes the output


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
    p_mix = predict_proba(model, scaled, data.windows[data.test_rows])[:, absent]
    p_lin = predict_proba(plain, scaled, data.windows[data.test_rows])[:, absent]
    np.testing.assert_allclose(p_mix, (1 - PROTOTYPE_WEIGHT) * p_lin, atol=1e-6)


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
