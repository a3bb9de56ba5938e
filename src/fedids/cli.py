"""The `fedids` command line. Each command is a thin shell over library functions.

Bad input (missing file, malformed CSV, corrupt model) prints one ``error:`` line on stderr and exits
with code 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fedids.console import err, out, progress_bar
from fedids.errors import FedidsError, InputError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Federated, privacy-preserving intrusion detection for IoT networks.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and generate flow data.")
app.add_typer(data_app, name="data")

DataOpt = typer.Option(..., "--data", "-d", help="CICIDS2017-format CSV file(s); repeat for several.")


def _load(paths: list[Path]):
    from fedids.data.loader import load_flows

    with progress_bar("reading flows", None) as advance:
        result = load_flows([str(p) for p in paths], progress=advance)
    for rep in result.reports:
        dropped = sum(rep.dropped.values())
        err.print(f"[dim]{rep.path}: {rep.format}, {rep.rows_read:,} rows read, {dropped:,} dropped[/dim]")
    if len(result.frame) == 0:
        raise InputError(f"{', '.join(map(str, paths))}: no usable flows")
    return result


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


@data_app.command("inspect")
def data_inspect(paths: list[Path] = typer.Argument(..., help="CSV files to inspect."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
    """Format, rows, dropped rows with reasons, label and family counts of each file."""
    result = _load(paths)
    reports = [r.to_dict() for r in result.reports]
    if as_json:
        out.print_json(json.dumps(reports))
        return
    for rep in result.reports:
        table = Table(title=f"{rep.path} ({rep.format})", show_header=True)
        table.add_column("item")
        table.add_column("count", justify="right")
        table.add_row("rows read", f"{rep.rows_read:,}")
        table.add_row("rows kept", f"{rep.rows_kept:,}")
        for reason, n in rep.dropped.items():
            table.add_row(f"dropped: {reason}", f"{n:,}")
        for reason, n in rep.repaired.items():
            table.add_row(f"repaired: {reason}", f"{n:,}")
        for label, n in sorted(rep.label_counts.items(), key=lambda kv: -kv[1]):
            table.add_row(f"label {label}", f"{n:,}")
        for fam, n in sorted(rep.family_counts.items(), key=lambda kv: -kv[1]):
            table.add_row(f"family {fam}", f"{n:,}")
        out.print(table)


@data_app.command("synth")
def data_synth(
    devices: int = typer.Option(40, help="Number of IoT devices."),
    hours: float = typer.Option(2.0, help="Simulated hours of traffic."),
    seed: int = typer.Option(0, help="Random seed (same seed, same file)."),
    difficulty: float = typer.Option(1.0, help="Overlap between attack and benign traffic (>1 harder)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Output CSV (CICIDS2017 TrafficLabelling format)."),
) -> None:
    """Generate synthetic IoT traffic with attack episodes, as a CICIDS2017 TrafficLabelling CSV."""
    from fedids.data.formats import write_trafficlabelling_csv
    from fedids.data.synth import SynthConfig, generate_flows

    try:
        config = SynthConfig(devices=devices, hours=hours, seed=seed, difficulty=difficulty)
    except ValueError as exc:
        raise InputError(f"data synth: {exc}") from None
    with progress_bar("simulating", None) as advance:
        frame = generate_flows(config, progress=advance)
    write_trafficlabelling_csv(frame, out_path)
    counts = frame["family"].value_counts().to_dict()
    err.print(f"wrote {len(frame):,} flows to {out_path}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


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

    frame = _load(data).frame
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
    _print_summary(metrics, title=f"test split ({len(prepared.test_rows):,} flows)")
    err.print(f"model written to {out_dir}")


def _print_summary(metrics: dict, title: str) -> None:
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
    frame = sort_by_time(_load(data).frame)
    windows = compute_window_indices(host_keys(frame), detector.window)
    pred, _ = predict_labels(detector, frame[list(FEATURES)].to_numpy(dtype="float32"), windows)
    metrics = compute_metrics(frame[LABEL].astype(str).to_numpy(), pred)
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
    else:
        _print_summary(metrics, title=f"{len(frame):,} flows")


def main() -> None:
    """Console-script entry point: run the app, turning input errors into one line and exit code 2."""
    try:
        app()
    except FedidsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
