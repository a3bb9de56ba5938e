"""`fedids export`: a compressed ONNX model for the edge, with its size/accuracy report.

Output paths are checked before any work, every input (``--data``, ``--finetune-data``) is read before
anything is written, and both outputs (the ``.onnx`` file and its ``.json`` report) are written atomically
at the end: a refused ``--data`` leaves an existing ONNX file untouched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from fedids.cli.common import app, load_data
from fedids.cli.outputs import check_outputs, write_atomic, write_json
from fedids.cli.train import check_number
from fedids.console import err, out
from fedids.errors import InputError


def _metrics_pair(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from fedids.model.metrics import compute_metrics

    m = compute_metrics(y_true, y_pred)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def _evaluate_export(detector, onnx_bytes: bytes, frame, source: str) -> dict:  # noqa: ANN001
    """Float PyTorch vs exported ONNX on a labelled, time-ordered frame."""
    from fedids.data.schema import FEATURES, LABEL
    from fedids.data.windows import compute_window_indices, host_keys
    from fedids.detect.stream import OnnxScorer, score_windows
    from fedids.task import predict_labels

    features = frame[list(FEATURES)].to_numpy(dtype=np.float32)
    windows = compute_window_indices(host_keys(frame), detector.window)
    truth = frame[LABEL].astype(str).to_numpy()
    ref_labels, ref_proba = predict_labels(detector, features, windows)
    scorer = OnnxScorer(onnx_bytes, source=source)
    proba = score_windows(scorer, features, windows)
    labels = np.asarray(scorer.labels, dtype=object)[proba.argmax(axis=1)]
    ref, new = _metrics_pair(truth, ref_labels), _metrics_pair(truth, labels)
    return {
        "flows": int(len(frame)),
        "float_pytorch": ref,
        "export": new,
        "delta": {k: new[k] - ref[k] for k in ref},
        "label_agreement": float(np.mean(labels == ref_labels)),
        "max_abs_probability_diff": float(np.abs(proba - ref_proba).max()),
    }


def _print_report(out_path: Path, report: dict) -> None:
    table = Table(title=f"{out_path} ({report['quantize']}, prune {report['prune_amount']:g})")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("size", f"{report['size_bytes']:,} bytes")
    table.add_row("float32 weights", f"{report['float32_weights_bytes']:,} bytes")
    table.add_row("zero weights", f"{report['zero_weights']:,} / {report['weights']:,}")
    if "evaluation" in report:
        ev = report["evaluation"]
        for key, name in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            table.add_row(
                name,
                f"{ev['export'][key]:.4f} (float {ev['float_pytorch'][key]:.4f}, "
                f"delta {ev['delta'][key]:+.4f})",
            )
        table.add_row("same label as float", f"{ev['label_agreement']:.4%}")
    out.print(table)


@app.command("export")
def export(
    model: Path = typer.Option(..., "--model", "-m", help="Model directory from `fedids train`/`federate`."),
    out_path: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="ONNX file to write (replaced atomically); the report goes beside it with the suffix .json.",
    ),
    prune: float = typer.Option(0.0, "--prune", help="Fraction of weights to zero by magnitude, 0..1."),
    quantize: str = typer.Option("none", "--quantize", help="Weight storage: none (float32) or int8."),
    data: list[Path] = typer.Option(
        [], "--data", "-d", help="Labelled test CSV(s): compare the export with the float model."
    ),
    finetune_data: list[Path] = typer.Option(
        [], "--finetune-data", help="Labelled training CSV(s) for a short fine-tune after pruning."
    ),
    finetune_epochs: int = typer.Option(2, help="Fine-tune epochs (with --finetune-data), 1..100."),
) -> None:
    """Export a model to ONNX with the preprocessing inside, optionally pruned and int8; report size and
    the accuracy/macro-F1 change against the float PyTorch model (JSON next to the file). The model's
    default alert threshold (chosen on validation data by `fedids train`) travels in the ONNX metadata."""
    if quantize not in ("none", "int8"):  # fedids.model.export.QUANTIZE_MODES, without importing onnx yet
        raise InputError(f"export: --quantize must be one of none, int8, got {quantize!r}")
    check_number("export", "--prune", prune, 0.0, 0.99)
    check_number("export", "--finetune-epochs", finetune_epochs, 1, 100)
    if finetune_data and prune == 0.0:
        raise InputError("export: --finetune-data only applies with --prune")
    json_path = out_path.with_suffix(".json")
    check_outputs(
        "export",
        [("--out", out_path, "file"), ("report (--out with suffix .json)", json_path, "file")],
        inputs=[model, *data, *finetune_data],
    )
    from fedids.data.windows import sort_by_time

    test_frame = sort_by_time(load_data(data).frame) if data else None  # read before anything is written
    tune_frame = load_data(finetune_data).frame if finetune_data else None
    from fedids.model.artifacts import load_detector
    from fedids.model.compress import prune_detector
    from fedids.model.export import build_onnx_model, export_result
    from fedids.model.train import TrainConfig

    detector = load_detector(model)
    exported = detector
    report: dict = {"model": str(model), "onnx": str(out_path), "quantize": quantize, "prune_amount": prune}
    if prune > 0:
        result = prune_detector(
            detector, prune, finetune_frame=tune_frame, config=TrainConfig(epochs=finetune_epochs, lr=1e-3)
        )
        exported = result.detector
        report.update(
            sparsity=result.sparsity, finetune_rows=int(result.finetune.examples) if result.finetune else 0
        )
    onnx_bytes = build_onnx_model(exported, quantize=quantize, prune_amount=prune).SerializeToString()
    written = export_result(exported, out_path, onnx_bytes, quantize)
    report.update(
        size_bytes=written.size_bytes,
        weights=written.weights,
        zero_weights=written.zero_weights,
        float32_weights_bytes=4 * sum(p.numel() for p in detector.model.parameters()),
    )
    if test_frame is not None:
        report["evaluation"] = {
            "data": [str(p) for p in data],
            **_evaluate_export(detector, onnx_bytes, test_frame, str(out_path)),
        }
    write_atomic(out_path, onnx_bytes)
    write_json(json_path, report)
    _print_report(out_path, report)
    err.print(f"report written to {json_path}", markup=False, highlight=False)
