"""`fedids deploy`: helpers for running fedids on Flower's deployment engine across machines.

``init`` generates a CA, the SuperLink certificate, SuperNode authentication keys and a copy-paste
runbook; ``wait`` turns a run's final status into an exit code (``flwr run`` itself exits 0 even when the
run fails); ``fingerprint`` prints a public key's OpenSSH fingerprint to check it against the runbook.
"""

from __future__ import annotations

from pathlib import Path

import typer

from fedids.cli.common import app
from fedids.console import err, out
from fedids.errors import InputError

deploy_app = typer.Typer(
    no_args_is_help=True,
    help="Run fedids on separate machines (Flower SuperLink + SuperNodes, TLS, node keys).",
)
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("init")
def deploy_init(
    out_dir: Path = typer.Option(
        ..., "--out", "-o", help="Deployment folder to create (one sub-folder per machine)."
    ),
    superlink_host: str = typer.Option(
        ..., "--superlink-host", help="Host name or IP address by which SuperNodes reach the SuperLink."
    ),
    nodes: int = typer.Option(3, "--nodes", "-n", help="Number of SuperNodes (one key pair each)."),
    port: int = typer.Option(8000, help="SuperLink port (Fleet, Control and Runtime APIs share it)."),
    extra_host: list[str] | None = typer.Option(
        None, "--extra-host", help="Another name/IP for the SuperLink certificate; repeatable."
    ),
    data_path: str = typer.Option("/srv/fedids/flows.csv", help="Runbook: each SuperNode's local flow file."),
    model_dir: str = typer.Option(
        "/srv/fedids/model", help="Runbook: where each SuperNode writes the global model."
    ),
    test_data: str = typer.Option(
        "/srv/fedids/test.csv", help="Runbook: the server's test file (SuperLink host)."
    ),
    run_dir: str = typer.Option(
        "/srv/fedids/run", help="Runbook: the server's run directory (SuperLink host)."
    ),
    app_dir: Path | None = typer.Option(
        None, help="Runbook: the Flower app folder (default: deploy/flower-app)."
    ),
    rounds: int = typer.Option(10, help="Runbook: federated rounds."),
    sites: int = typer.Option(
        0, "--sites", help="Three tiers: split the --nodes devices into this many site aggregators (>= 2)."
    ),
    site_host: list[str] | None = typer.Option(
        None, "--site-host", help="Three tiers: host of site K's SuperLink; one per site, in order."
    ),
    site_port: int | None = typer.Option(
        None, "--site-port", help="Three tiers: sites' SuperLink port (default --port)."
    ),
    site_dir: str = typer.Option(
        "/srv/fedids/site", "--site-dir", help="Three tiers: the channel folder on each site host."
    ),
    force: bool = typer.Option(False, "--force", help="Replace existing keys in --out."),
) -> None:
    """Generate a CA, the SuperLink TLS certificate and SuperNode key pairs, and print the runbook."""
    from fedids.cli.outputs import check_outputs
    from fedids.cli.train import check_number
    from fedids.federation.deployment import APP_DIR, RUNBOOK, init_deployment, render_runbook

    check_number("deploy init", "--nodes", nodes, 1, 10_000)
    check_number("deploy init", "--port", port, 1, 65_535)
    check_number("deploy init", "--rounds", rounds, 1, 100_000)
    check_number("deploy init", "--sites", sites, 0, 10_000)
    if site_port is not None:
        check_number("deploy init", "--site-port", site_port, 1, 65_535)
    check_outputs("deploy init", [("--out", out_dir, "dir")])

    plan = init_deployment(
        out_dir,
        superlink_host,
        nodes=nodes,
        port=port,
        force=force,
        extra_hosts=extra_host or (),
        data_path=data_path,
        model_dir=model_dir,
        test_data=test_data,
        run_dir=run_dir,
        app_dir=app_dir or APP_DIR,
        rounds=rounds,
        sites=sites,
        site_hosts=site_host or (),
        site_ports=[site_port] * sites if site_port is not None and sites >= 2 else (),
        site_dir=site_dir,
    )
    out.print(render_runbook(plan), markup=False, highlight=False, soft_wrap=True)
    err.print(
        f"[green]wrote[/green] {plan.root} ({plan.nodes} SuperNode key pairs"
        f"{f' in {plan.sites} sites' if plan.sites else ''}, private keys mode 0600); "
        f"runbook: {Path(plan.root) / RUNBOOK}",
        highlight=False,
    )


@deploy_app.command("wait")
def deploy_wait(
    run_id: int = typer.Argument(..., help="Run ID printed by `flwr run`."),
    connection: str = typer.Option("fedids", help="SuperLink connection name in $FLWR_HOME/config.toml."),
    timeout_s: float = typer.Option(24 * 3600.0, "--timeout", help="Give up after this many seconds."),
    poll_s: float = typer.Option(5.0, "--poll", help="Seconds between status queries."),
) -> None:
    """Wait until a run finishes; exit 0 if it completed, 1 if it failed or was stopped."""
    from fedids.cli.train import check_number
    from fedids.federation.deployment import wait_for_run

    check_number("deploy wait", "--timeout", timeout_s, 0, 10 * 365 * 86_400, open_low=True)
    check_number("deploy wait", "--poll", poll_s, 0, 86_400, open_low=True)

    try:
        status = wait_for_run(run_id, connection=connection, timeout_s=timeout_s, poll_s=poll_s)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"run {run_id}: {exc}") from None
    except TimeoutError as exc:
        err.print(f"[red]timeout:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    out.print(f"run {run_id}: {status.status}", highlight=False)
    if not status.succeeded:
        err.print(f"see the ServerApp's log: flwr log {run_id} {connection} --show", highlight=False)
        raise typer.Exit(1)


@deploy_app.command("fingerprint")
def deploy_fingerprint(
    public_key: Path = typer.Argument(..., help="OpenSSH public key file (auth.pub)."),
) -> None:
    """Print a SuperNode public key's fingerprint (the same as `ssh-keygen -lf`)."""
    from fedids.federation.deployment import node_key_fingerprint

    try:
        line = public_key.read_bytes()
    except OSError as exc:
        raise InputError(f"{public_key}: cannot read ({exc.strerror})") from None
    try:
        out.print(node_key_fingerprint(line), highlight=False)
    except InputError:
        raise InputError(f"{public_key}: not an OpenSSH public-key line") from None
