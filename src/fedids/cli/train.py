"""`fedids train` (centralized baseline) and `fedids evaluate`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import typer
from rich.table import Table

from fedids.cli.common import DataOpt, app, load_data
from fedids.cli.outputs import check_outputs
from fedids.console import err, out, progress_bar
from fedids.errors import InputError
from fedids.model.checks import DEFAULT_MAX_FALSE_ALARM_RATE, MAX_HIDDEN, MAX_WINDOW, META_THRESHOLD


def check_number(
    command: str, option: str, value: float, lo: float, hi: float, *, open_low: bool = False
) -> None:
    """One ``error:`` line for a numeric option outside its range (NaN included)."""
    ok = math.isfinite(value) and (lo < value if open_low else lo <= value) and value <= hi
    if not ok:
        left = "(" if open_low else "["
        raise InputError(f"{command}: {option} must be in {left}{lo:g}, {hi:g}], got {value}")


def _check_train_args(
    window: int,
    epochs: int,
    hidden: int,
    test_fraction: float,
    validation_fraction: float,
    seed: int,
    max_false_alarm_rate: float,
) -> None:
    check_number("train", "--window", window, 1, MAX_WINDOW)
    check_number("train", "--epochs", epochs, 1, 10_000)
    check_number("train", "--hidden", hidden, 1, MAX_HIDDEN)
    check_number("train", "--test-fraction", test_fraction, 0, 0.9, open_low=True)
    check_number("train", "--validation-fraction", validation_fraction, 0, 0.9, open_low=True)
    check_number("train", "--seed", seed, 0, 2**32 - 1)
    check_number("train", "--max-false-alarm-rate", max_false_alarm_rate, 0, 1)


PrototypesOpt = typer.Option(
    "on",
    "--prototypes",
    help="on (default): add the prototype head (class means of the GRU embedding under a shared covariance, "
    "linear discriminant analysis), which names attacks seen in a handful of flows; the alert score stays "
    "the linear head's. off: linear head only (docs/rare-classes.md).",
)


@app.command("train")
def train(
    data: list[Path] = DataOpt,
    out_dir: Path = typer.Option(..., "--out", "-o", help="Model directory to write."),
    window: int = typer.Option(
        10, help=f"Flows per window (the flow and its host's predecessors), 1..{MAX_WINDOW}."
    ),
    epochs: int = typer.Option(5, help="Training epochs."),
    hidden: int = typer.Option(64, help=f"GRU hidden units, 1..{MAX_HIDDEN}."),
    split: str = typer.Option(
        "time", help="time: last 30% of flows test; label-time: last 30% of each label."
    ),
    test_fraction: float = typer.Option(0.3, help="Share of flows held out for testing."),
    validation_fraction: float = typer.Option(
        0.2,
        help="Share of the training flows (the latest, per label with label-time) held out to choose the "
        "alert threshold.",
    ),
    max_false_alarm_rate: float = typer.Option(
        DEFAULT_MAX_FALSE_ALARM_RATE,
        help="Default alert budget: false alerts per benign flow on the validation "
        "slice (0.001: one per 1,000).",
    ),
    seed: int = typer.Option(0, help="Random seed."),
    prototypes: str = PrototypesOpt,
) -> None:
    """Centralized baseline: train the GRU detector on pooled data and evaluate it on a time split; the
    default alert threshold is chosen on a validation slice before the test flows in time."""
    from dataclasses import replace

    _check_train_args(window, epochs, hidden, test_fraction, validation_fraction, seed, max_false_alarm_rate)
    if split not in ("time", "label-time"):
        raise InputError(f"train: --split must be time or label-time, got {split!r}")
    if prototypes not in ("on", "off"):
        raise InputError(f"train: --prototypes must be on or off, got {prototypes!r}")
    from fedids.model.checks import METADATA_FILE, MODEL_FILE, PREPROCESSING_FILE

    check_outputs(
        "train",
        [
            ("--out", out_dir, "dir"),
            *(("--out", out_dir / name, "file") for name in (MODEL_FILE, PREPROCESSING_FILE, METADATA_FILE)),
        ],
        inputs=data,
    )
    from fedids.model.artifacts import save_detector
    from fedids.model.train import TrainConfig
    from fedids.task import prepare, train_centralized, validation_mask

    frame = load_data(data).frame
    try:
        prepared = prepare(frame, window=window, test_fraction=test_fraction, split=split)
        config = TrainConfig(epochs=epochs, seed=seed)
    except ValueError as exc:
        raise InputError(f"train: {exc}") from None
    validation = validation_mask(prepared, validation_fraction, per_label=split == "label-time")
    fit_data = replace(prepared, test_mask=prepared.test_mask | validation)
    if len(fit_data.train_rows) == 0 or len(prepared.test_rows) == 0:
        raise InputError("train: the split leaves no training or no test flows")
    with progress_bar("training", epochs * len(fit_data.train_rows)) as advance:
        detector, result = train_centralized(
            fit_data, config, hidden=hidden, window=window, progress=advance, prototypes=prototypes == "on"
        )
    rule = _alert_rule(detector, prepared, validation.nonzero()[0], max_false_alarm_rate)
    metrics, thresholded = _test_metrics(detector, prepared, rule)
    settings = {
        "data": [str(p) for p in data],
        "split": split,
        "test_fraction": test_fraction,
        "validation_fraction": validation_fraction,
        "window": window,
        "prototypes": prototypes,
    }
    _record(detector, settings, config, result, fit_data, validation, prepared, metrics, rule, thresholded)
    save_detector(out_dir, detector)
    print_summary(metrics, title=f"test split ({len(prepared.test_rows):,} flows, top class)")
    if thresholded is not None:
        print_operating_point(thresholded, rule)
    err.print(f"model written to {out_dir}")


def _record(
    detector, settings, config, result, fit_data, validation, prepared, metrics, rule, thresholded
) -> None:  # noqa: ANN001
    """What the model's metadata says of its training: settings, sizes, losses, test figures, alert rule."""
    detector.metadata.update(
        {
            "mode": "centralized",
            **settings,
            "train_config": vars(config) | {},
            "train_rows": int(len(fit_data.train_rows)),
            "validation_rows": int(validation.sum()),
            "test_rows": int(len(prepared.test_rows)),
            "losses": result.losses,
            "train_seconds": result.seconds,
            "test_metrics": {
                k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "mcc", "false_alarms")
            },
        }
    )
    if rule is not None:
        detector.metadata[META_THRESHOLD] = rule
        detector.metadata["test_metrics_at_threshold"] = {
            k: thresholded[k] for k in ("accuracy", "macro_f1", "mcc", "false_alarms", "per_class")
        }


def _alert_rule(detector, prepared, rows, max_rate: float) -> dict | None:  # noqa: ANN001
    """The default alert rule from the validation flows ``rows`` (None without BENIGN or validation flows)."""
    from fedids.data.schema import BENIGN_LABEL
    from fedids.detect.stream import decide
    from fedids.model.metrics import threshold_rule
    from fedids.task import predict_labels

    labels = list(detector.vocabulary.labels)
    if BENIGN_LABEL not in labels or not len(rows):
        return None
    _, proba = predict_labels(detector, prepared.features, prepared.windows[rows])
    _, score, _ = decide(proba, labels, None)
    rule = threshold_rule(score, prepared.labels[rows] == BENIGN_LABEL, max_rate)
    rule["validation"] = "latest benign training flows in time, not trained on"
    return rule


def _test_metrics(detector, prepared, rule: dict | None) -> tuple[dict, dict | None]:  # noqa: ANN001
    """Test-split metrics with the top class, and at the rule's threshold (None without a rule)."""
    from fedids.detect.stream import decide
    from fedids.model.metrics import compute_metrics
    from fedids.task import predict_labels

    rows = prepared.test_rows
    pred, proba = predict_labels(detector, prepared.features, prepared.windows[rows])
    metrics = compute_metrics(prepared.labels[rows], pred)
    if rule is None:
        return metrics, None
    at_threshold, _, _ = decide(proba, list(detector.vocabulary.labels), rule["threshold"])
    return metrics, compute_metrics(prepared.labels[rows], at_threshold)


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
        fam.add_row(
            name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", f"{v['support']:,}"
        )
    out.print(fam)


def print_operating_point(metrics: dict, rule: dict | None, how: str = "") -> None:
    """The thresholded operating point: false alerts per 1,000 benign flows, attack recall, and
    precision per class (the share of a class's alerts that were right)."""
    fa = metrics["false_alarms"]
    threshold = f"{rule['threshold']:.6g}" if rule else "n/a"
    table = Table(title=f"alerts at threshold {threshold}{f' ({how})' if how else ''}")
    for col in ("benign flows", "false alerts", "per 1,000 benign", "attack flows", "attack recall"):
        table.add_column(col, justify="right")
    per_1000 = "n/a" if fa["per_1000"] is None else f"{fa['per_1000']:.3f}"
    recall = "n/a" if fa["attack_recall"] is None else f"{fa['attack_recall']:.4f}"
    table.add_row(
        f"{fa['benign_flows']:,}", f"{fa['false_alerts']:,}", per_1000, f"{fa['attack_flows']:,}", recall
    )
    out.print(table)
    cls = Table(title="per class")
    for col in ("label", "precision", "recall", "support"):
        cls.add_column(col, justify="right" if col != "label" else "left")
    for name, v in metrics["per_class"].items():
        cls.add_row(name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['support']:,}")
    out.print(cls)


@app.command("evaluate")
def evaluate(
    model: Path = typer.Option(
        ...,
        "--model",
        "-m",
        help="Model directory from `fedids train`/`federate`, or an ONNX file from `fedids export`.",
    ),
    data: list[Path] = DataOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    threshold: float | None = typer.Option(None, help="Alert when 1 - P(BENIGN) >= this."),
    max_false_alarm_rate: float | None = typer.Option(
        None,
        help="Alert threshold from the model's validation table: validation false alerts per benign "
        "flow at most this (default: the model's default rule).",
    ),
) -> None:
    """Score every flow of the given files: accuracy, F1, MCC, per-class/family figures with the top class,
    and the alert operating point (false alerts per 1,000 benign flows, attack recall, per-class
    precision) at the model's threshold."""
    from fedids.model.checks import check_threshold_args, resolve_threshold

    check_threshold_args(threshold, max_false_alarm_rate, "evaluate")  # argument errors before loading
    from fedids.data.schema import FEATURES, LABEL
    from fedids.data.windows import compute_window_indices, host_keys, sort_by_time
    from fedids.detect.stream import decide, load_scorer, score_windows
    from fedids.model.metrics import compute_metrics

    scorer = load_scorer(model)
    value, how = resolve_threshold(
        getattr(scorer, "default_threshold", None), threshold, max_false_alarm_rate, "evaluate"
    )
    frame = sort_by_time(load_data(data).frame)
    windows = compute_window_indices(host_keys(frame), scorer.window)
    proba = score_windows(scorer, frame[list(FEATURES)].to_numpy(dtype="float32"), windows)
    truth = frame[LABEL].astype(str).to_numpy()
    top, _, _ = decide(proba, scorer.labels, None)
    metrics = compute_metrics(truth, top)
    at = compute_metrics(truth, decide(proba, scorer.labels, value)[0]) if value is not None else None
    if as_json:
        payload = dict(metrics, at_threshold=None if at is None else dict(at, threshold=value, rule=how))
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    print_summary(metrics, title=f"{len(frame):,} flows, top class")
    print_operating_point(at or metrics, {"threshold": value} if value is not None else None, how)
