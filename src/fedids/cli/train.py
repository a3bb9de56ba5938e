"""`fedids train` (centralized baseline) and `fedids evaluate`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from fedids.cli.common import DataOpt, app, load_data
from fedids.console import err, out, progress_bar
from fedids.errors import InputError


@app.command("train")
def train(
    data: list[Path] = DataOpt,
    out_dir: Path = typer.Option(..., "--out", "-o", help="Model directory to write."),
    window: int = typer.Option(10, help="Flows per window (the flow and its host's predecessors)."),
    epochs: int = typer.Option(5, help="Training epochs."),
    hidden: int = typer.Option(64, help="GRU hidden units."),
    split: str = typer.Option("time", help="time: last 30% of flows test; label-time: last 30% of each label."),
    test_fraction: float = typer.Option(0.3, help="Share of flows held out for testing."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Centralized baseline: train the GRU detector on pooled data and evaluate it on a time split."""
    from fedids.model.artifacts import save_detector
    from fedids.model.train import TrainConfig
    from fedids.task import evaluate_rows, prepare, train_centralized

    frame = load_data(data).frame
    try:
        prepared = prepare(frame, window=window, test_fraction=test_fraction, split=split)
        config = TrainConfig(epochs=epochs, seed=seed)
    except ValueError as exc:
        raise InputError(f"train: {exc}") from None
    if len(prepared.train_rows) == 0 or len(prepared.test_rows) == 0:
        raise InputError("train: the split leaves no training or no test flows")
    with progress_bar("training", epochs * len(prepared.train_rows)) as advance:
        detector, result = train_centralized(prepared, config, hidden=hidden, window=window, progress=advance)
    metrics = evaluate_rows(detector, prepared, prepared.test_rows)
    detector.metadata.update({
        "mode": "centralized", "data": [str(p) for p in data], "split": split,
        "test_fraction": test_fraction, "window": window, "train_config": vars(config) | {},
        "train_rows": int(len(prepared.train_rows)), "test_rows": int(len(prepared.test_rows)),
        "losses": result.losses, "train_seconds": result.seconds,
        "test_metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "mcc")},
    })
    save_detector(out_dir, detector)
    print_summary(metrics, title=f"test split ({len(prepared.test_rows):,} flows)")
    err.print(f"model written to {out_dir}")


def print_summary(metrics: dict, title: str) -> None:
    table = Table(title=title)
    for col in ("accuracy", "macro-F1", "weighted-F1", "MCC"):
        table.add_column(col, justify="right")
    table.add_row(*(f"{metrics[k]:.4f}" for k in ("accuracy", "macro_f1", "weighted_f1", "mcc")))
    out.print(table)
    fam = Table(title="per family (one-vs-rest)")
    for col in ("family", "precision", "recall", "F1", "support"):
        fam.add_column(col, justify="right" if col != "family" else "left")
    for name, v in metrics["per_family"].items():
        fam.add_row(name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", f"{v['support']:,}")
    out.print(fam)


@app.command("evaluate")
def evaluate(
    model: Path = typer.Option(..., "--model", "-m", help="Model directory from `fedids train`/`federate`."),
    data: list[Path] = DataOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Score every flow of the given files and print accuracy, F1, MCC, per-class/family figures."""
    from fedids.data.windows import compute_window_indices, host_keys, sort_by_time
    from fedids.data.schema import FEATURES, LABEL
    from fedids.evaluation.metrics import compute_metrics
    from fedids.model.artifacts import load_detector
    from fedids.task import predict_labels

    detector = load_detector(model)
    frame = sort_by_time(load_data(data).frame)
    windows = compute_window_indices(host_keys(frame), detector.window)
    pred, _ = predict_labels(detector, frame[list(FEATURES)].to_numpy(dtype="float32"), windows)
    metrics = compute_metrics(frame[LABEL].astype(str).to_numpy(), pred)
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
    else:
        print_summary(metrics, title=f"{len(frame):,} flows")


