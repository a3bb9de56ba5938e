"""`fedids keys init`: the HE key set for ``--privacy he...`` (clients get the secret part out of band)."""

from __future__ import annotations

from pathlib import Path

import typer

from fedids.cli.common import app
from fedids.console import err

keys_app = typer.Typer(no_args_is_help=True, help="Create homomorphic-encryption key sets.")
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(
    out_dir: Path = typer.Option(
        ..., "--out", "-o", help="Directory for client/ (secret) and server/ (public)."
    ),
    mode: str = typer.Option("he", help="Privacy mode the keys are for: he, he+dp, he+secagg, he+secagg+dp."),
    force: bool = typer.Option(False, help="Replace an existing key set."),
) -> None:
    """Create a key set: client/he_secret_context.bin (0600, give to every client out of band) and
    server/he_public_context.bin (public only: the server can add ciphertexts, never decrypt)."""
    from fedids.cli.outputs import check_outputs
    from fedids.privacy.keys import init_keys

    check_outputs("keys init", [("--out", out_dir, "dir")])
    files = init_keys(out_dir, mode, force=force)
    err.print(
        f"{files.scheme} key set for {mode}:\n  clients (secret, 0600): {files.secret_context}\n"
        f"  server (public only):   {files.public_context}\n  manifest:               {files.manifest}\n"
        f"  public context SHA-256: {files.public_sha256}"
    )
