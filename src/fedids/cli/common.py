"""Shared pieces of the command line: the Typer app, data loading (:mod:`fedids.pipelines.data`), JSON
output."""

from __future__ import annotations

from pathlib import Path

import typer

from fedids.pipelines.data import load_data

__all__ = ["DataOpt", "app", "data_app", "load_data", "write_json"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Federated, privacy-preserving intrusion detection for IoT networks.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect and generate flow data.")
app.add_typer(data_app, name="data")

DataOpt = typer.Option(..., "--data", "-d", help="CICIDS2017-format CSV file(s); repeat for several.")


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically (temporary file, then rename); see :mod:`fedids.cli.outputs`."""
    from fedids.cli.outputs import write_json as _write

    _write(path, payload)
