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
from fedids.model.discriminant import ABSENT_OFFSET, gaussian_discriminant
from fedids.model.export import export_onnx
from fedids.model.gru import PROTOTYPE_WEIGHT
from fedids.model.metrics import compute_metrics
from fedids.model.train import embedding_moments, embeddings, fit_prototypes, predict_proba
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


def lda_posteriors(train: np.ndarray, targets: np.ndarray, rows: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's own linear discriminant analysis on the samples: OAS-shrunk class covariances,
    their unweighted mean (equal priors), equal priors."""
    from sklearn.covariance import OAS
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    present = np.unique(targets)
    lda = LinearDiscriminantAnalysis(
        solver="lsqr", covariance_estimator=OAS(), priors=np.full(len(present), 1 / len(present))
    ).fit(train, targets)
    out = np.zeros((len(rows), n_classes))
    out[:, lda.classes_] = lda.predict_proba(rows)
    return out


def gated(linear: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """The documented gate: P(BENIGN) of the linear head, the attack mass shared as the mix shares it."""
    attacks = mix[:, 1:] / mix[:, 1:].sum(axis=1, keepdims=True)
    return np.concatenate([linear[:, :1], (1 - linear[:, :1]) * attacks], axis=1)


def test_eval_output_mixes_the_linear_head_with_sklearns_discriminant_analysis(with_prototypes):
    detector, data, scaled, targets = with_prototypes
    model, rows = detector.model, data.test_rows
    got = predict_proba(model, scaled, data.windows[rows])
    plain = copy.deepcopy(model)
    plain.set_prototypes(None)
    linear = predict_proba(plain, scaled, data.windows[rows])
    keep = targets >= 0
    train = embeddings(plain, scaled, data.windows[data.train_rows][keep]).astype(np.float64)
    lda = lda_posteriors(train, targets[keep], embeddings(plain, scaled, data.windows[rows]), model.n_classes)
    mix = (1 - PROTOTYPE_WEIGHT) * linear + PROTOTYPE_WEIGHT * lda
    expected = gated(linear, mix)  # fit_prototypes' default, fedids train's and fedids federate's
    np.testing.assert_allclose(got, expected, atol=2e-3)
    np.testing.assert_allclose(got[:, 0], linear[:, 0], atol=1e-6)  # the alert score is the linear head's
    ungated = copy.deepcopy(model)
    ungated.set_prototypes(model.prototypes, model.prototype_offset, gated=False)
    np.testing.assert_allclose(predict_proba(ungated, scaled, data.windows[rows]), mix, atol=2e-3)
    assert (got.argmax(1) == expected.argmax(1)).mean() > 0.999
    # The head reads something the linear head does not: predictions differ somewhere.
    assert (got.argmax(1) != linear.argmax(1)).any() or not np.allclose(got, linear, atol=1e-2)


def test_the_discriminant_is_sklearns_oas_lda_on_samples():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.normal(0, 1, (500, 6)), rng.normal(1.5, 0.5, (12, 6)), rng.normal(-1, 2, (40, 6))]
    )
    y = np.repeat([0, 1, 2], [500, 12, 40])
    w, b, present = gaussian_discriminant(*embedding_moments(x, y, 4))
    assert present.tolist() == [True, True, True, False] and b[3] == ABSENT_OFFSET and not w[3].any()
    scores = x @ w.T + b
    ours = np.exp(scores - scores.max(1, keepdims=True))
    ours /= ours.sum(1, keepdims=True)
    np.testing.assert_allclose(ours, lda_posteriors(x, y, x, 4), atol=1e-6)
    with pytest.raises(ValueError, match="no class"):
        gaussian_discriminant(np.zeros(4), np.zeros((4, 6)), np.zeros((4, 6, 6)))


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
    assert offset[absent] == ABSENT_OFFSET and (np.delete(offset, absent) > ABSENT_OFFSET / 2).all()
    plain = copy.deepcopy(model)
    plain.set_prototypes(None)
    linear = predict_proba(plain, scaled, data.windows[data.test_rows])
    # no prototype score for the absent class: in the mix it gets the linear head's share only
    model.set_prototypes(model.prototypes, model.prototype_offset, gated=False)
    got = predict_proba(model, scaled, data.windows[data.test_rows])
    np.testing.assert_allclose(got[:, absent], (1 - PROTOTYPE_WEIGHT) * linear[:, absent], atol=1e-6)


@pytest.mark.parametrize("gated", [True, False])
def test_prototypes_survive_save_onnx_and_streaming(with_prototypes, tmp_path, gated):
    detector, data, scaled, _ = with_prototypes
    if not gated:  # the ungated mix, which also sets P(BENIGN)
        detector = copy.deepcopy(detector)
        model = detector.model
        model.set_prototypes(model.prototypes, model.prototype_offset, gated=False)
        plain = copy.deepcopy(model)
        plain.set_prototypes(None)
        got, linear = (predict_proba(m, scaled, data.windows) for m in (model, plain))
        assert not np.allclose(got[:, 0], linear[:, 0], atol=1e-3)
    again = load_detector(save_detector(tmp_path / "m", detector))
    assert again.model.has_prototypes and again.model.prototype_gated == gated
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
    "no offsets (a model from before session 24)": lambda n, h: ([[0.5] * h] * n, None),
    "offset null where a row is": lambda n, h: ([[0.5] * h] * n, [None] * n),
    "non-finite offset": lambda n, h: ([[0.5] * h] * n, [float("inf")] * n),
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
    corrupt = CORRUPT[case](model.n_classes, model.hidden)
    if isinstance(corrupt, tuple):  # rows and offsets
        prep["prototypes"], prep["prototype_offsets"] = corrupt
    else:
        prep["prototypes"] = corrupt
    prep_path.write_text(json.dumps(prep))
    with pytest.raises(InputError, match="prototype"):
        load_detector(directory)
