"""ONNX export of a trained detector, preprocessing included, for edge devices with only onnxruntime.

The exported graph takes **raw** CICIDS2017 features, exactly as they come out of a flow CSV or the
packet extractor, and does everything :func:`fedids.task.predict_labels` does before and inside the
model:

    inputs   flows    float32 (n_flows, 78)     raw features of the flows the windows refer to
             windows  int64   (batch, window)   per scored flow, the rows of ``flows`` of its host's
                                                last ``window`` flows, oldest first, the scored flow
                                                last; -1 for padding (as compute_window_indices)
    output   probabilities float32 (batch, n_classes)  softmax over the label vocabulary

    1. signed log1p, ``(v - center) / scale``, NaN -> 0, clip to [-10, 10]    (FlowScaler.transform)
    2. the GRU's input projection of every flow, once; a padding slot (feature vector and presence
       channel both 0, as gather_windows makes it) projects to the bias alone: that row is appended
       last, so index -1 selects it
    3. the GRU, unrolled over the fixed window, reading each step's projections by index, then the
       linear head and a softmax.

Why flows and indices rather than ``(batch, window, 78)`` windows: consecutive flows of a host share
``window - 1`` flows, so a window tensor repeats every flow ``window`` times, and preprocessing and the
input projection (58% of the GRU's multiply-adds at hidden 64) would be computed ``window`` times per
flow. Indexed, they are computed once per flow: measured about 1.8x the batched throughput.

Why the GRU is unrolled into MatMul/Sigmoid/Tanh nodes instead of ONNX's ``GRU`` op: onnxruntime's
quantisers leave the ``GRU`` op's weights in float (see the stack notes), so an int8 file needs the
recurrence expressed with ops whose weights can be stored as int8. The window length is fixed per model,
so unrolling costs nothing in generality. The ``batch`` dimension is dynamic.

int8 (``quantize="int8"``): every weight matrix is stored as int8 with one float32 scale per output
column (symmetric, zero point 0) and expanded by a ``DequantizeLinear`` node: weight-only quantisation in
ONNX's standard QDQ representation. Activations stay float32, so the only error is the weights' rounding
(at most half a quantisation step per weight). Written by hand (:func:`quantize_int8_per_column`, ten
lines) rather than with ``onnxruntime.quantization.quantize_dynamic``, which on this same unrolled graph
gives 63.5 KB (its extra quantise/convert nodes; the limit is 64 KB) and, because it also quantises
activations at run time, a 25x larger probability error (max 0.067 against 0.0026 on the real test
flows) for no speed gain (measured).

The file describes itself in ``metadata_props``: :data:`META_LABELS` (JSON list, class index order),
:data:`META_WINDOW`, :data:`META_FEATURES` (JSON list of the 78 input feature names, in order) and a few
provenance keys (see :func:`build_onnx_model`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any  # ONNX node attributes: ints, floats, strings, tensors and lists of them

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fedids import __version__
from fedids.data.schema import FEATURES
from fedids.model.artifacts import Detector
from fedids.model.checks import META_ONNX_THRESHOLD, META_THRESHOLD

OPSET = 17
INPUT_FLOWS, INPUT_WINDOWS, OUTPUT_PROBABILITIES = "flows", "windows", "probabilities"
META_LABELS, META_WINDOW, META_FEATURES = "fedids.labels", "fedids.window", "fedids.features"
META_QUANTIZE, META_PRUNE, META_VERSION, META_FORMAT = (
    "fedids.quantize",
    "fedids.prune",
    "fedids.version",
    "fedids.format",
)
FORMAT_NAME = "fedids-gru-indexed/2"
"""Value of :data:`META_FORMAT`: the input/output contract described in this module's docstring."""

QUANTIZE_MODES: tuple[str, ...] = ("none", "int8")
_CLIP = 10.0  # FlowScaler's clip


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote: ``path``, ``size_bytes`` of the file, ``quantize`` mode and the
    number of weight parameters that are exactly zero (``zero_weights``) out of ``weights``."""

    path: Path
    size_bytes: int
    quantize: str
    weights: int
    zero_weights: int


def quantize_int8_per_column(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantisation with one scale per column.

    Parameters
    ----------
    weight : float ``(n_in, n_out)``.

    Returns
    -------
    ``(q, scale)``: int8 ``(n_in, n_out)`` in [-127, 127] and float32 ``(n_out,)`` with
    ``q * scale ~= weight``; the error per weight is at most ``scale / 2``. A column of zeros gets
    scale 1 (any scale represents it exactly).
    """
    weight = np.asarray(weight, dtype=np.float32)
    peak = np.abs(weight).max(axis=0)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return q, scale


class _GraphBuilder:
    """Collects nodes and initializers with unique names (tiny helper over ``onnx.helper``)."""

    def __init__(self, quantize: str) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.quantize = quantize
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(
        self, op_type: str, inputs: list[str], stem: str | None = None, n_out: int = 1, **attrs: Any
    ) -> list[str]:
        outs = [self.name(stem or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs

    def one(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs: Any) -> str:
        return self.op(op_type, inputs, stem, 1, **attrs)[0]

    def weight(self, stem: str, matrix: np.ndarray) -> str:
        """A weight ``(n_in, n_out)`` for ``x @ w``: float32, or int8 + DequantizeLinear with one scale
        per output column."""
        matrix = np.asarray(matrix, dtype=np.float32)
        if self.quantize == "none":
            return self.const(stem, matrix)
        q, scale = quantize_int8_per_column(matrix)
        zero = np.zeros(scale.shape, dtype=np.int8)
        return self.one(
            "DequantizeLinear",
            [
                self.const(stem + "_q", q),
                self.const(stem + "_scale", scale),
                self.const(stem + "_zero", zero),
            ],
            stem,
            axis=1,
        )


def build_onnx_model(
    detector: Detector,
    *,
    quantize: str = "none",
    prune_amount: float = 0.0,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """Build the self-contained ONNX graph of ``detector`` (see the module docstring).

    Parameters
    ----------
    detector : a loaded detector with a one-layer :class:`~fedids.model.gru.GRUDetector`.
    quantize : ``"none"`` (float32 weights) or ``"int8"`` (int8 weights, per-column scales).
    prune_amount : recorded in the metadata only (pruning happens before, in
        :mod:`fedids.model.compress`).
    metadata : extra ``metadata_props`` entries (string values).

    Returns
    -------
    A checked ``onnx.ModelProto`` (opset :data:`OPSET`).
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    weights = _gru_weights(detector)
    g = _GraphBuilder(quantize)
    scaled = _preprocess(g, detector)
    gate_steps = _input_projections(g, scaled, weights)
    h = _unrolled_gru(g, gate_steps, weights)
    logits = g.one(
        "Add", [g.one("MatMul", [h, g.weight("w_head", weights.w_head.T)]), g.const("b_head", weights.b_head)]
    )
    if detector.model.has_prototypes:
        linear = g.one("Softmax", [logits], "p_linear", axis=1)
        _prototype_mix(g, h, linear, detector.model)
    else:
        g.nodes.append(helper.make_node("Softmax", [logits], [OUTPUT_PROBABILITIES], name="softmax", axis=1))
    proto = _model_proto(g, weights.window, len(detector.vocabulary))
    helper.set_model_props(proto, _model_props(detector, weights.window, quantize, prune_amount, metadata))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _prototype_mix(g: _GraphBuilder, h: str, linear: str, model: Any) -> None:
    """The prototype head of :mod:`fedids.model.gru` (``model`` has prototypes): the output is
    ``mix = (1 - w) linear + w softmax(h @ prototypes.T + offsets)``; a gated head keeps the linear head's
    P(BENIGN) (class 0) and shares ``1 - P(BENIGN)`` over the attack classes as ``mix`` does (masks and
    MatMul, no Slice/ReduceSum, whose signatures change between opsets). The prototype weights are a
    weight like the head's (int8 with a scale per class under ``quantize="int8"``)."""
    from fedids.model.gru import PROTOTYPE_WEIGHT

    weights = model.prototypes.detach().cpu().numpy().astype(np.float32).T
    offset = model.prototype_offset.detach().cpu().numpy().astype(np.float32)
    scores = g.one(
        "Add", [g.one("MatMul", [h, g.weight("prototypes", weights)]), g.const("proto_offset", offset)]
    )
    proto = g.one("Softmax", [scores], "p_prototype", axis=1)
    weight = np.float32(PROTOTYPE_WEIGHT)
    parts = [
        g.one("Mul", [linear, g.const("w_linear", np.array(1.0 - weight, dtype=np.float32))]),
        g.one("Mul", [proto, g.const("w_prototype", np.array(weight, dtype=np.float32))]),
    ]
    if not model.prototype_gated:
        g.nodes.append(helper.make_node("Add", parts, [OUTPUT_PROBABILITIES], name="prototype_mix"))
        return
    mix = g.one("Add", parts, "p_mix")
    benign = np.zeros(len(offset), dtype=np.float32)
    benign[0] = 1.0
    attack_mass = g.one("MatMul", [mix, g.const("attack_column", (1.0 - benign)[:, None])], "attack_mass")
    p_benign = g.one("MatMul", [linear, g.const("benign_column", benign[:, None])], "p_benign")
    scale = g.one(
        "Div",
        [
            g.one("Sub", [g.const("one", np.array(1.0, dtype=np.float32)), p_benign]),
            g.one("Max", [attack_mass, g.const("tiny", np.array(1e-30, dtype=np.float32))]),
        ],
        "attack_scale",
    )
    attacks = g.one("Mul", [g.one("Mul", [mix, g.const("attack_mask", 1.0 - benign)]), scale])
    kept = g.one("Mul", [linear, g.const("benign_mask", benign)])
    g.nodes.append(helper.make_node("Add", [kept, attacks], [OUTPUT_PROBABILITIES], name="prototype_gate"))


@dataclass(frozen=True)
class _GRUWeights:
    """The exported model's parameters as float32 arrays (gates in PyTorch's order r, z, n): ``w_ih``
    ``(3H, 78 + 1)`` (the last input is the presence channel), ``w_hh`` ``(3H, H)``, biases ``(3H,)``,
    the head ``(n_classes, H)`` and ``(n_classes,)``; with the window and hidden size ``H``."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    w_head: np.ndarray
    b_head: np.ndarray
    window: int
    hidden: int


def _gru_weights(detector: Detector) -> _GRUWeights:
    """The weights of ``detector``'s GRU and head; ValueError for a model the graph cannot express."""
    model = detector.model
    gru = model.gru
    if gru.num_layers != 1 or gru.bidirectional or not gru.batch_first:
        raise ValueError("only a one-layer, unidirectional, batch_first GRU can be exported")
    window, hidden, n_feat = int(detector.window), int(model.hidden), len(FEATURES)
    if model.n_inputs != n_feat + 1:
        raise ValueError(f"model expects {model.n_inputs} inputs, the export needs {n_feat} + 1")

    def arr(t) -> np.ndarray:  # noqa: ANN001 - torch tensor; torch stays an implicit dependency here
        return t.detach().cpu().numpy().astype(np.float32)

    return _GRUWeights(
        w_ih=arr(gru.weight_ih_l0),
        w_hh=arr(gru.weight_hh_l0),
        b_ih=arr(gru.bias_ih_l0),
        b_hh=arr(gru.bias_hh_l0),
        w_head=arr(model.head.weight),
        b_head=arr(model.head.bias),
        window=window,
        hidden=hidden,
    )


def _preprocess(g: _GraphBuilder, detector: Detector) -> str:
    """Step 1: every flow of ``flows`` preprocessed once, as FlowScaler.transform (float64 there,
    float32 here: differences ~1e-6); returns the ``(N, 78)`` tensor's name."""
    one = g.const("one", np.array(1.0, dtype=np.float32))
    zero = g.const("zero", np.array(0.0, dtype=np.float32))
    log1p = g.one("Log", [g.one("Add", [g.one("Abs", [INPUT_FLOWS]), one])])
    # sign(x) * log1p(|x|) as a select: onnxruntime's Sign + Mul measured 1.4x the time of Less/Neg/Where.
    signed = g.one("Where", [g.one("Less", [INPUT_FLOWS, zero]), g.one("Neg", [log1p]), log1p])
    center = g.const("center", detector.scaler.center.astype(np.float32))
    scale = g.const("scale", detector.scaler.scale.astype(np.float32))
    scaled = g.one("Div", [g.one("Sub", [signed, center]), scale])
    scaled = g.one("Where", [g.one("IsNaN", [scaled]), zero, scaled])
    return g.one(
        "Clip",
        [scaled, g.const("lo", np.array(-_CLIP, np.float32)), g.const("hi", np.array(_CLIP, np.float32))],
    )  # (N, 78)


def _input_projections(g: _GraphBuilder, scaled: str, wt: _GRUWeights) -> list[list[str]]:
    """Step 2: the input projection of every flow, once, read per window step by index; returns per
    gate (r, z, n) the ``window`` tensors ``(B, H)`` of steps oldest first.

    One weight matrix per gate, so that no tensor is ever split along its last axis (ORT copies such
    splits row by row: measured 15-20% of the run time). A real flow's presence channel is 1, so its
    column of W_ih joins the bias; the r and z biases of both projections add up (b_hn must stay inside
    r * (W_hn h + b_hn)). The padding row (x = 0) is the bias alone, appended last so that index -1
    reads it.
    """
    hidden, n_feat = wt.hidden, len(FEATURES)
    index_t = g.one("Transpose", [INPUT_WINDOWS], perm=[1, 0])  # (W, B)
    step_index = [
        g.one("Gather", [index_t, g.const(f"t{t}", np.array(t, dtype=np.int64))], "idx", axis=0)
        for t in range(wt.window)
    ]  # W x (B,)
    gate_steps: list[list[str]] = []
    for k, gate in enumerate("rzn"):
        rows = slice(k * hidden, (k + 1) * hidden)
        bias = wt.b_ih[rows] + (wt.b_hh[rows] if gate != "n" else 0.0)
        proj = g.one(
            "Add",
            [
                g.one("MatMul", [scaled, g.weight(f"w_i{gate}", wt.w_ih[rows, :n_feat].T)]),
                g.const(f"b_i{gate}_present", bias + wt.w_ih[rows, n_feat]),
            ],
        )
        proj = g.one("Concat", [proj, g.const(f"b_i{gate}_pad", bias[None, :])], axis=0)  # (N + 1, H)
        gate_steps.append(
            [g.one("Gather", [proj, step_index[t]], f"gi{gate}", axis=0) for t in range(wt.window)]
        )  # W x (B, H)
    return gate_steps


def _unrolled_gru(g: _GraphBuilder, gate_steps: list[list[str]], wt: _GRUWeights) -> str:
    """Step 3: the GRU recurrence unrolled over the window from h0 = 0; returns the last hidden state's
    name ``(B, H)``."""
    hidden = wt.hidden
    w_hr, w_hz, w_hn = (
        g.weight(f"w_h{gate}", wt.w_hh[k * hidden : (k + 1) * hidden].T) for k, gate in enumerate("rzn")
    )
    b_hn = g.const("b_hn", wt.b_hh[2 * hidden :])
    h: str | None = None  # (B, H)
    for t in range(wt.window):
        gi_r, gi_z, gi_n = gate_steps[0][t], gate_steps[1][t], gate_steps[2][t]
        if h is None:
            # h0 = 0: W_hh h0 vanishes, only the bias remains.
            r, z = g.one("Sigmoid", [gi_r]), g.one("Sigmoid", [gi_z])
            n = g.one("Tanh", [g.one("Add", [gi_n, g.one("Mul", [r, b_hn])])])
            h = g.one("Sub", [n, g.one("Mul", [z, n])])  # (1 - z) * n
            continue
        r = g.one("Sigmoid", [g.one("Add", [gi_r, g.one("MatMul", [h, w_hr])])])
        z = g.one("Sigmoid", [g.one("Add", [gi_z, g.one("MatMul", [h, w_hz])])])
        gh_n = g.one("Add", [g.one("MatMul", [h, w_hn]), b_hn])
        n = g.one("Tanh", [g.one("Add", [gi_n, g.one("Mul", [r, gh_n])])])
        h = g.one("Add", [n, g.one("Mul", [z, g.one("Sub", [h, n])])])  # (1 - z) n + z h
    assert h is not None
    return h


def _model_proto(g: _GraphBuilder, window: int, n_classes: int) -> onnx.ModelProto:
    """The graph of ``g`` with its inputs and output declared, as an opset :data:`OPSET`, IR 8 model."""
    graph = helper.make_graph(
        g.nodes,
        "fedids_gru_detector",
        inputs=[
            helper.make_tensor_value_info(INPUT_FLOWS, TensorProto.FLOAT, ["n_flows", len(FEATURES)]),
            helper.make_tensor_value_info(INPUT_WINDOWS, TensorProto.INT64, ["batch", window]),
        ],
        outputs=[
            helper.make_tensor_value_info(OUTPUT_PROBABILITIES, TensorProto.FLOAT, ["batch", n_classes])
        ],
        initializer=g.inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="fedids",
        producer_version=__version__,
    )
    proto.ir_version = 8  # onnxruntime >= 1.14 reads IR 8; newer IRs would lock out older edge runtimes
    return proto


def _model_props(
    detector: Detector, window: int, quantize: str, prune_amount: float, metadata: dict[str, str] | None
) -> dict[str, str]:
    """``metadata_props``: labels, window, features, provenance, and the default alert rule chosen on
    validation data at training time (:data:`~fedids.model.checks.META_ONNX_THRESHOLD`) when the model
    has one."""
    props = {
        META_FORMAT: FORMAT_NAME,
        META_LABELS: json.dumps(list(detector.vocabulary.labels)),
        META_WINDOW: str(window),
        META_FEATURES: json.dumps(list(FEATURES)),
        META_QUANTIZE: quantize,
        META_PRUNE: f"{prune_amount:g}",
        META_VERSION: __version__,
    }
    rule = detector.metadata.get(META_THRESHOLD) if isinstance(detector.metadata, dict) else None
    if isinstance(rule, dict):
        props[META_ONNX_THRESHOLD] = json.dumps(rule)
    props.update(metadata or {})
    return props


def count_zero_weights(detector: Detector) -> tuple[int, int]:
    """``(zero, total)`` over the GRU and head weight matrices (biases excluded)."""
    names = ("gru.weight_ih_l0", "gru.weight_hh_l0", "head.weight")
    mats = [p for name, p in detector.model.named_parameters() if name in names]
    total = sum(int(m.numel()) for m in mats)
    zero = sum(int((m == 0).sum()) for m in mats)
    return zero, total


def export_onnx(
    detector: Detector,
    path: str | Path,
    *,
    quantize: str = "none",
    prune_amount: float = 0.0,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Write :func:`build_onnx_model` to ``path`` atomically (temporary name, then rename), so a
    detector watching ``path`` never reads a half-written file."""
    path = Path(path)
    data = build_onnx_model(
        detector, quantize=quantize, prune_amount=prune_amount, metadata=metadata
    ).SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return export_result(detector, path, data, quantize)


def export_result(detector: Detector, path: Path, data: bytes, quantize: str) -> ExportResult:
    """The :class:`ExportResult` of ``data`` (the serialised model) written to ``path``."""
    zero, total = count_zero_weights(detector)
    return ExportResult(
        path=Path(path), size_bytes=len(data), quantize=quantize, weights=total, zero_weights=zero
    )
