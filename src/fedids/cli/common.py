"""Shared pieces of the command line: the Typer app, data loading with progress, JSON output."""

from __future__ import annotations

from pathlib import Path

import typer

from fedids.console import err, progress_bar
from fedids.errors import InputError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Federated, privacy-preserving intrusion detection for IoT networks.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect and generate flow data.")
app.add_typer(data_app, name="data")

DataOpt = typer.Option(..., "--data", "-d", help="CICIDS2017-format CSV file(s); repeat for several.")


def load_data(paths: list[Path], labels: str = "required"):
    """Load CSV files with a progress bar; one summary line per file on stderr, naming the reasons of
    dropped rows (every row read is either kept or counted under a reason)."""
    from fedids.data.loader import load_flows

    with progress_bar("reading flows", None) as advance:
        result = load_flows([str(p) for p in paths], progress=advance, labels=labels)
    for rep in result.reports:
        dropped = sum(rep.dropped.values())
        reasons = ", ".join(f"{k} {v:,}" for k, v in rep.dropped.items() if v)
        unknown = ", ".join(repr(w) for w in list(rep.unknown_labels)[:3])
        err.print(
            f"[dim]{rep.path}: {rep.format}, {rep.rows_read:,} rows read, {rep.rows_kept:,} kept, "
            f"{dropped:,} dropped{f' ({reasons})' if reasons else ''}"
            f"{f'; unknown labels {unknown}' if unknown else ''}[/dim]",
            soft_wrap=True,
            highlight=False,
        )
    if len(result.frame) == 0:
        raise InputError(f"{', '.join(map(str, paths))}: no usable flows")
    return result


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically (temporary file, then rename); see :mod:`fedids.cli.outputs`."""
    from fedids.cli.outputs import write_json as _write

    _write(path, payload)
