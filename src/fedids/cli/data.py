"""`fedids data inspect` and `fedids data synth`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from fedids.cli.common import data_app, load_data
from fedids.console import err, out, progress_bar
from fedids.errors import InputError


@data_app.command("inspect")
def data_inspect(
    paths: list[Path] = typer.Argument(..., help="CSV files to inspect."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Format, rows, dropped rows with reasons, label and family counts of each file."""
    result = load_data(paths)
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
        if rep.unlabelled:
            table.add_row("kept without a label", f"{rep.unlabelled:,}")
        for word, n in rep.unknown_labels.items():
            table.add_row(f"unknown label {word!r}", f"{n:,}")
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
    out_path: Path = typer.Option(
        ..., "--out", "-o", help="Output CSV (CICIDS2017 TrafficLabelling format)."
    ),
) -> None:
    """Generate synthetic IoT traffic with attack episodes, as a CICIDS2017 TrafficLabelling CSV."""
    from fedids.cli.outputs import check_outputs
    from fedids.cli.train import check_number

    check_number("data synth", "--difficulty", difficulty, 0, 100, open_low=True)
    check_number("data synth", "--seed", seed, 0, 2**32 - 1)
    check_number("data synth", "--devices", devices, 4, 50_000)
    check_number("data synth", "--hours", hours, 0.25, 168)
    check_outputs("data synth", [("--out", out_path, "file")])
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
    err.print(
        f"wrote {len(frame):,} flows to {out_path}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )
