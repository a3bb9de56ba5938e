"""ONNX export and compression, checked against the float PyTorch model on the real CICIDS2017 samples."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fedids.data.schema import FEATURES
from fedids.detect.stream import OnnxScorer, TorchScorer, load_scorer, score_windows
from fedids.errors import InputError
from fedids.model.artifacts import load_detector, save_detector
from fedids.model.compress import compute_sparsity, prune_detector
from fedids.model.export import META_FEATURES, META_LABELS, META_WINDOW, export_onnx, quantize_int8_per_column
from fedids.model.metrics import compute_metrics
from fedids.model.train import TrainConfig
from fedids.task import predict_labels
from support import paths

DATA = paths.CICIDS
FEDIDS = Path(sys.executable).parent / "fedids"


@pytest.fixture(scope="module")
def real(real_detector, tmp_path_factory):
    """The GRU trained on the real TrafficLabelling samples (conftest), saved as a model directory."""
    detector, data = real_detector
    model_dir = save_detector(tmp_path_factory.mktemp("model") / "m", detector)
    return detector, data, model_dir


def _macro_f1(truth, pred):
    return compute_metrics(truth, pred)["macro_f1"]


def test_float_onnx_equals_pytorch(real, tmp_path):
    detector, data, _ = real
    path = export_onnx(detector, tmp_path / "m.onnx").path
    scorer = load_scorer(path)
    ref_labels, ref = predict_labels(detector, data.features, data.windows)
    got = score_windows(scorer, data.features, data.windows)
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)
    assert (np.asarray(scorer.labels, dtype=object)[got.argmax(1)] == ref_labels).all()


def test_int8_onnx_is_small_and_keeps_macro_f1(real, tmp_path):
    detector, data, _ = real
    result = export_onnx(detector, tmp_path / "m8.onnx", quantize="int8")
    assert result.size_bytes == (tmp_path / "m8.onnx").stat().st_size <= 64 * 1024
    # Every weight matrix is stored as int8: no float initializer holds more than a bias' worth.
    proto = onnx.load(tmp_path / "m8.onnx")
    big = [i for i in proto.graph.initializer if np.prod(i.dims) > 256]
    assert big and all(i.data_type == onnx.TensorProto.INT8 for i in big)
    rows = data.test_rows
    truth = data.labels[rows]
    ref_labels, _ = predict_labels(detector, data.features, data.windows[rows])
    proba = score_windows(load_scorer(tmp_path / "m8.onnx"), data.features, data.windows[rows])
    labels = np.asarray(detector.vocabulary.labels, dtype=object)[proba.argmax(1)]
    assert abs(_macro_f1(truth, labels) - _macro_f1(truth, ref_labels)) <= 0.005


def test_int8_rounding_error_is_at_most_half_a_step():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(79, 64)).astype(np.float32)
    w[:, 3] = 0.0
    q, scale = quantize_int8_per_column(w)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127
    np.testing.assert_allclose(scale, np.where(np.abs(w).max(0) > 0, np.abs(w).max(0) / 127, 1.0), rtol=1e-6)
    assert (np.abs(q * scale - w) <= scale / 2 + 1e-7).all()
    assert (q[:, 3] == 0).all()


def test_preprocessing_inside_the_graph_matches_the_scaler(real, tmp_path):
    """Raw values the scaler must survive: -1 sentinels, zeros, huge rates, Infinity, NaN."""
    detector, data, _ = real
    onnx_scorer = load_scorer(export_onnx(detector, tmp_path / "m.onnx").path)
    torch_scorer = TorchScorer(detector, source="dir")
    rng = np.random.default_rng(1)
    flows = data.features[rng.integers(0, len(data.features), size=(64, detector.window))].copy()
    flows[0, -1, :] = -1.0
    flows[1, -1, :] = 0.0
    flows[2, -1, :] = 1e12
    flows[3, -1, 14] = np.inf
    flows[4, -1, 15] = np.nan
    flows[5, -1, 66] = -np.inf
    present = (rng.random((64, detector.window)) < 0.7).astype(np.float32)
    present[:, -1] = 1.0
    flows[present == 0] = np.nan  # padding must not matter, whatever it holds
    rows = np.where(present > 0, np.arange(flows.shape[0] * flows.shape[1]).reshape(present.shape), -1)
    flat = flows.reshape(-1, flows.shape[2])
    np.testing.assert_allclose(
        onnx_scorer.score(flat, rows), torch_scorer.score(flat, rows), atol=2e-5, rtol=0
    )


def test_onnx_metadata_makes_the_file_self_describing(real, tmp_path):
    detector, _, _ = real
    proto = onnx.load(export_onnx(detector, tmp_path / "m.onnx", quantize="int8").path)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props[META_LABELS]) == detector.vocabulary.labels
    assert int(props[META_WINDOW]) == detector.window
    assert json.loads(props[META_FEATURES]) == list(FEATURES)
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert [i.name for i in proto.graph.input] == ["flows", "windows"]
    assert dims == [["n_flows", 78], ["batch", detector.window]]


def _weights(detector) -> torch.Tensor:
    """The prunable weights, flattened: GRU input and recurrent matrices, head matrix."""
    m = detector.model
    return torch.cat([m.gru.weight_ih_l0.flatten(), m.gru.weight_hh_l0.flatten(), m.head.weight.flatten()])


def test_pruning_zeroes_the_smallest_weights_and_finetune_keeps_the_mask(real):
    detector, data, _ = real
    before = [p.detach().clone() for p in detector.model.parameters()]
    plain = prune_detector(detector, 0.5)
    assert abs(plain.sparsity - 0.5) < 1e-3
    # Global magnitude pruning: every surviving weight is at least as large as every pruned one.
    w, orig = _weights(plain.detector), _weights(detector)
    assert orig[w == 0].abs().max() <= orig[w != 0].abs().min()
    assert torch.equal(w[w != 0], orig[w != 0])
    tuned = prune_detector(
        detector, 0.5, finetune_frame=data.frame.iloc[data.train_rows], config=TrainConfig(epochs=1, lr=1e-3)
    )
    assert tuned.finetune is not None and tuned.finetune.steps > 0
    wt = _weights(tuned.detector)
    assert torch.equal(wt == 0, w == 0)  # same mask after the fine-tune
    assert not torch.equal(wt[wt != 0], w[w != 0])  # and the survivors did train
    assert all(torch.equal(a, b) for a, b in zip(before, detector.model.parameters()))  # input untouched
    assert compute_sparsity(tuned.detector) == tuned.sparsity


def test_pruned_model_round_trips_and_exports(real, tmp_path):
    detector, data, _ = real
    pruned = prune_detector(detector, 0.5).detector
    again = load_detector(save_detector(tmp_path / "p", pruned))
    rows = data.test_rows[:300]
    np.testing.assert_array_equal(
        predict_labels(pruned, data.features, data.windows[rows])[1],
        predict_labels(again, data.features, data.windows[rows])[1],
    )
    result = export_onnx(again, tmp_path / "p8.onnx", quantize="int8", prune_amount=0.5)
    assert result.zero_weights >= result.weights // 2 - 1


def test_corrupt_or_foreign_onnx_is_an_input_error(real, tmp_path):
    detector, _, _ = real
    good = export_onnx(detector, tmp_path / "m.onnx").path.read_bytes()
    (tmp_path / "garbage.onnx").write_bytes(b"this is not a protobuf at all" * 10)
    (tmp_path / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.onnx").write_bytes(b"")
    foreign = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    foreign.ir_version = 8
    (tmp_path / "foreign.onnx").write_bytes(foreign.SerializeToString())
    for name, message in (
        ("garbage", "corrupt or unsupported ONNX"),
        ("truncated", "corrupt or unsupported ONNX"),
        ("empty", "empty file"),
        ("foreign", "lacks fedids metadata"),
        ("missing", "no such"),
    ):
        with pytest.raises(InputError, match=message):
            load_scorer(tmp_path / f"{name}.onnx")
    with pytest.raises(InputError):
        OnnxScorer(b"\x08\x01garbage", source="bytes")


def test_export_command_reports_size_and_delta(real, tmp_path):
    _, _, model_dir = real
    test_csv = DATA / "trafficlabelling-mondirkb" / "baseline_portscan.csv"
    out = tmp_path / "edge.onnx"
    run = subprocess.run(
        [
            str(FEDIDS),
            "export",
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--prune",
            "0.3",
            "--quantize",
            "int8",
            "--data",
            str(test_csv),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["size_bytes"] == out.stat().st_size <= 64 * 1024
    ev = report["evaluation"]
    assert ev["flows"] == 1000
    assert ev["delta"]["macro_f1"] == pytest.approx(
        ev["export"]["macro_f1"] - ev["float_pytorch"]["macro_f1"]
    )
    assert abs(report["sparsity"] - 0.3) < 1e-3
    assert "macro-F1" in run.stdout
    bad = subprocess.run(
        [str(FEDIDS), "export", "--model", str(tmp_path / "nope"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
