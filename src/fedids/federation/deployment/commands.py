"""The exact command lines and configuration text of each machine (pure): ``flower-superlink``,
``flower-supernode``, ``flwr supernode register``/``run``/``ls`` and ``$FLWR_HOME/config.toml``."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path

from fedids.errors import InputError

SUPERLINK_PORT = 8000  # Flower 1.42: Fleet, Control and Runtime APIs on one HTTPS port
SUPERNODE_RUNTIME_PORT = 9094  # each SuperNode's local Runtime API (its ClientApp processes dial it)
CONNECTION_NAME = "fedids"  # the [superlink.NAME] entry that `flwr` commands name
# Set on every machine: Flower would otherwise `uv sync` app dependencies at run time (fails offline,
# exit code 608), send telemetry events and check for updates over the internet.
OFFLINE_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
}


def validate_host(host: str) -> str:
    """``host`` stripped of surrounding brackets; raises ``InputError`` for anything but a bare host."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    labels = text.split(".")
    if (
        not text
        or len(text) > 253
        or "://" in host
        or not all(
            lab
            and len(lab) <= 63
            and lab.replace("-", "").isalnum()
            and lab.isascii()
            and not lab.startswith("-")
            and not lab.endswith("-")
            for lab in labels
        )
    ):
        raise InputError(
            f"--superlink-host {host!r}: give a bare host name or IP address "
            "(no scheme, no port; the port is --port)"
        )
    return text


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    host = validate_host(host)
    if not 0 < port < 65536:
        raise InputError(f"--port {port}: must be between 1 and 65535")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_config_pairs(values: Mapping[str, str | int | float | bool]) -> str:
    """Flower's ``key=value`` config string (``--node-config``/``--run-config``), values as TOML literals.

    Strings become TOML basic strings; strings containing ``"``, ``\\`` or control characters are
    rejected, since Flower's parser (a regular expression, then TOML) has no escaping for them.
    """
    pairs = []
    for key, value in values.items():
        if not key or not all(c.isalnum() or c in "-_" for c in key):
            raise ValueError(f"config key {key!r}: use letters, digits, '-' and '_' only")
        if isinstance(value, bool):
            literal = "true" if value else "false"
        elif isinstance(value, int):
            literal = str(value)
        elif isinstance(value, float):
            literal = repr(value)  # keeps the '.', so Flower reads a float, not an int
        elif isinstance(value, str):
            if any(c in value for c in '"\\') or any(ord(c) < 32 for c in value):
                raise InputError(
                    f"{value}: config values may not contain quotes, backslashes or control characters"
                )
            literal = f'"{value}"'
        else:
            raise TypeError(f"config value for {key!r} must be str, int, float or bool")
        pairs.append(f"{key}={literal}")
    return " ".join(pairs)


def superlink_command(
    *,
    ca_cert: str | Path,
    cert: str | Path,
    key: str | Path,
    host: str = "0.0.0.0",
    port: int = SUPERLINK_PORT,
    database: str | Path | None = None,
) -> list[str]:
    """``flower-superlink`` with TLS, SuperNode authentication and no runtime package installation.

    ``host`` is the listening interface (``0.0.0.0``: all); ``database`` an SQLite file that keeps runs
    and registered SuperNodes across restarts (``None``: in memory).
    """
    command = [
        "flower-superlink",
        "--ssl-ca-certfile",
        str(ca_cert),
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--host",
        host,
        "--port",
        str(port),
    ]
    if database is not None:
        command += ["--database", str(database)]
    return command


def supernode_command(
    *,
    superlink: str,
    root_certificates: str | Path,
    private_key: str | Path,
    node_config: Mapping[str, str | int | float | bool],
    runtime_port: int = SUPERNODE_RUNTIME_PORT,
    max_wait_time_s: float | None = None,
) -> list[str]:
    """``flower-supernode`` dialling ``superlink`` (``host:port``) over TLS with its authentication key.

    ``node_config`` is what the ClientApp reads: ``data-path`` (the local flow file, required),
    ``model-dir`` (where every received global model is written for ``fedids detect``), ``client-key``.
    ``runtime_port`` is the SuperNode's local Runtime API port (bound to 127.0.0.1; must differ between
    SuperNodes sharing a host). ``max_wait_time_s`` bounds how long it retries an unreachable SuperLink.
    """
    if "data-path" not in node_config and "site-dir" not in node_config:
        raise ValueError("node_config needs data-path (the local flow file) or, for a site, site-dir")
    command = [
        "flower-supernode",
        "--superlink",
        superlink,
        "--root-certificates",
        str(root_certificates),
        "--auth-supernode-private-key",
        str(private_key),
        "--node-config",
        format_config_pairs(node_config),
        "--port",
        str(runtime_port),
    ]
    if max_wait_time_s is not None:
        command += ["--max-wait-time", f"{max_wait_time_s:g}"]
    return command


def register_command(public_key: str | Path, connection: str = CONNECTION_NAME) -> list[str]:
    """``flwr supernode register`` of one OpenSSH public key on the SuperLink named ``connection``."""
    return ["flwr", "supernode", "register", str(public_key), connection, "--format", "json"]


def run_command(
    app_dir: str | Path, run_config: Mapping[str, str | int | float | bool], connection: str = CONNECTION_NAME
) -> list[str]:
    """``flwr run`` of the fedids Flower app; prints JSON with the run id (``run-id``)."""
    return [
        "flwr",
        "run",
        str(app_dir),
        connection,
        "--run-config",
        format_config_pairs(run_config),
        "--format",
        "json",
    ]


def status_command(run_id: int, connection: str = CONNECTION_NAME) -> list[str]:
    """``flwr ls`` of one run, as JSON."""
    return ["flwr", "ls", connection, "--run-id", str(run_id), "--format", "json"]


def render_flwr_config(address: str, root_certificates: str | Path, connection: str = CONNECTION_NAME) -> str:
    """``$FLWR_HOME/config.toml`` naming one SuperLink connection (the default) with its CA file.

    Flower 1.42 requires ``root-certificates`` to be an absolute path.
    """
    root = Path(root_certificates)
    if not root.is_absolute():
        raise ValueError(f"{root}: root-certificates must be an absolute path")
    for text in (address, str(root), connection):
        if any(c in text for c in '"\\\n'):
            raise InputError(f"{text}: quotes, backslashes and newlines are not allowed here")
    return (
        f'[superlink]\ndefault = "{connection}"\n\n'
        f'[superlink.{connection}]\naddress = "{address}"\nroot-certificates = "{root}"\n'
    )
