"""``fedids deploy init``: generate and write every key, certificate and configuration file of a deployment
(private keys mode 0600 from the first byte, in 0700 folders), its plan and its runbook."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from fedids.errors import InputError
from fedids.federation.deployment.commands import (
    SUPERLINK_PORT,
    format_address,
    format_config_pairs,
    render_flwr_config,
    validate_host,
)
from fedids.federation.deployment.keys import (
    create_ca,
    create_node_key,
    create_server_certificate,
    encode_certificate,
    encode_node_private_key,
    encode_node_public_key,
    encode_private_key,
    node_key_fingerprint,
)
from fedids.federation.deployment.layout import (
    APP_DIR,
    CA_CERT,
    CA_KEY,
    DEFAULT_DATA_PATH,
    DEFAULT_MODEL_DIR,
    DEFAULT_RUN_DIR,
    DEFAULT_TEST_DATA,
    MANIFEST,
    NODE_KEY,
    NODE_PUB,
    POLICY_FILE,
    RUNBOOK,
    SERVER_CERT,
    SERVER_KEY,
    DeploymentLayout,
    DeploymentPlan,
    supernode_name,
)
from fedids.federation.deployment.runbook import render_runbook


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (then rename into place)."""
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)  # in case the umask was stricter than needed, keep the mode exact
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def init_deployment(
    out_dir: str | Path,
    superlink_host: str,
    *,
    nodes: int = 3,
    port: int = SUPERLINK_PORT,
    force: bool = False,
    extra_hosts: Sequence[str] = (),
    data_path: str = DEFAULT_DATA_PATH,
    model_dir: str = DEFAULT_MODEL_DIR,
    test_data: str = DEFAULT_TEST_DATA,
    run_dir: str = DEFAULT_RUN_DIR,
    app_dir: str | Path = APP_DIR,
    rounds: int = 10,
    sites: int = 0,
    site_hosts: Sequence[str] = (),
    site_ports: Sequence[int] = (),
    site_dir: str = "/srv/fedids/site",
) -> DeploymentPlan:
    """Generate the CA, the SuperLink certificate, ``nodes`` SuperNode key pairs and the runbook; returns the
    plan, also written to ``out_dir/deployment.json`` (the runbook to ``out_dir/RUNBOOK.md``).

    Parameters
    ----------
    out_dir : path
        Deployment folder (created); see :class:`DeploymentLayout`.
    superlink_host : str
        Name or IP address by which SuperNodes and the operator reach the SuperLink.
    nodes : int
        Number of SuperNodes (>= 1); with sites, of devices over all sites.
    port : int
        SuperLink port (Fleet, Control and Runtime APIs).
    force : bool
        Replace existing keys; without it, any existing key file raises ``InputError``.
    extra_hosts : sequence of str (more names/addresses for the server certificate)
    data_path, model_dir, test_data, run_dir, app_dir, rounds
        Defaults written into the runbook's commands.
    sites, site_hosts, site_ports, site_dir
        Three tiers (``sites >= 2``, :mod:`fedids.federation.deployment.sites`): ``nodes`` devices in
        ``sites`` sites, each site SuperLink's host and port (default ``port``), the channel folder.
    """
    host, hosts, root = _check_request(
        out_dir,
        superlink_host,
        extra_hosts,
        nodes=nodes,
        port=port,
        rounds=rounds,
        paths=(data_path, model_dir, test_data, run_dir, site_dir),
        force=force,
        sites=sites,
    )
    hosts_of_sites, ports_of_sites = _check_sites(sites, nodes, site_hosts, site_ports, port)
    layout = DeploymentLayout(root)
    ca_pem, ca = _write_tls(layout, host, hosts)
    fingerprints, named = _write_keys(layout, ca_pem, ca, nodes, rounds, sites, hosts_of_sites)
    if sites >= 2 and Path(app_dir) == APP_DIR:
        app_dir = _central_app(layout)
    _write_operator(layout, format_address(host, port), ca_pem)
    plan = DeploymentPlan(
        root=str(root),
        superlink_host=host,
        port=port,
        nodes=nodes,
        data_path=data_path,
        model_dir=model_dir,
        test_data=test_data,
        run_dir=run_dir,
        app_dir=str(app_dir),
        rounds=rounds,
        node_fingerprints=fingerprints,
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        sites=sites if sites >= 2 else 0,
        site_hosts=hosts_of_sites,
        site_ports=ports_of_sites,
        site_dir=site_dir,
        fingerprints=named,
    )
    _save_plan(plan)
    return plan


def _central_app(layout: DeploymentLayout) -> Path:
    from fedids.federation.deployment.sites import write_central_app

    return write_central_app(layout.operator_dir)


def _save_plan(plan: DeploymentPlan) -> None:
    """The site operators' Flower configurations (three tiers), the manifest and the runbook."""
    root = Path(plan.root)
    if plan.sites >= 2:
        from fedids.federation.deployment.sites import write_site_operators

        write_site_operators(plan)
    _write_public(root / MANIFEST, json.dumps(asdict(plan), indent=1).encode())
    _write_public(root / RUNBOOK, render_runbook(plan).encode())


def _check_request(
    out_dir: str | Path,
    superlink_host: str,
    extra_hosts: Sequence[str],
    *,
    nodes: int,
    port: int,
    rounds: int,
    paths: Sequence[str],
    force: bool,
    sites: int = 0,
) -> tuple[str, list[str], Path]:
    """Validate :func:`init_deployment`'s arguments before anything is written.

    Returns the SuperLink host, every host for its certificate, and the resolved deployment folder.
    """
    if nodes < 1:
        raise InputError(f"--nodes {nodes}: need at least one SuperNode")
    if rounds < 1:
        raise InputError(f"--rounds {rounds}: must be >= 1")
    host = validate_host(superlink_host)
    hosts = [host, *(validate_host(h) for h in extra_hosts)]
    format_address(host, port)
    root = Path(out_dir).expanduser().resolve()
    for value in paths:
        if not Path(value).is_absolute():
            raise InputError(
                f"{value}: give an absolute path (it is read by a Flower process on another host)"
            )
        format_config_pairs({"path": value})
    layout = DeploymentLayout(root)
    private = layout.private_files(nodes)
    if sites >= 2:
        from fedids.federation.deployment.sites import SiteLayout, devices_per_site

        counts = devices_per_site(nodes, sites) if sites <= nodes else []
        private = private[:2] + [
            p for k, n in enumerate(counts, 1) for p in SiteLayout(root, k).private_files(n)
        ]
    existing = [p for p in private if p.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]}: key already exists; pass --force to replace every key in {root}")
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a directory")
    return host, hosts, root


def _write_keys(
    layout: DeploymentLayout,
    ca_pem: bytes,
    ca: tuple,
    nodes: int,
    rounds: int,
    sites: int,
    site_hosts: list[str],
) -> tuple[list[str], dict[str, str]]:
    """The nodes' key pairs and policies: flat SuperNodes, or both tiers of a three-tier deployment.
    Returns the fingerprints in order and (three tiers) by key name."""
    if sites >= 2:
        from fedids.federation.deployment.sites import write_sites

        named = write_sites(layout.root, ca, sites, nodes, site_hosts, rounds)
        return list(named.values()), named
    fingerprints = _write_node_keys(layout, nodes, ca_pem)
    _write_policies(layout, nodes, rounds)
    return fingerprints, {}


def _check_sites(
    sites: int, nodes: int, site_hosts: Sequence[str], site_ports: Sequence[int], port: int
) -> tuple[list[str], list[int]]:
    """Each site's SuperLink host and port (InputError for a bad request); empty for a flat deployment."""
    if sites in (0, 1) and not site_hosts:
        return [], []
    if not 2 <= sites <= nodes:
        raise InputError(f"--sites {sites}: between 2 and the {nodes} devices (--nodes)")
    if len(site_hosts) != sites:
        raise InputError(f"--sites {sites}: give one --site-host per site ({len(site_hosts)} given)")
    ports = list(site_ports) or [port] * sites
    if len(ports) != sites:
        raise InputError(f"--sites {sites}: give one site port per site")
    hosts = [validate_host(h) for h in site_hosts]
    for h, p in zip(hosts, ports):
        format_address(h, p)
    return hosts, ports


def _write_tls(layout: DeploymentLayout, host: str, hosts: Sequence[str]) -> tuple[bytes, tuple]:
    """The CA (``ca/``) and the SuperLink's certificate (``superlink/``); returns the CA certificate (PEM)
    and the CA (key, certificate), which also signs the site SuperLinks' certificates."""
    ca_key, ca_cert = create_ca(f"fedids CA for {host}"[:64])
    server_key, server_cert = create_server_certificate(ca_key, ca_cert, hosts)
    ca_pem = encode_certificate(ca_cert)

    _write_private(_private_dir(layout.ca_dir) / CA_KEY, encode_private_key(ca_key))
    _write_public(layout.ca_dir / CA_CERT, ca_pem)
    write_superlink_tls(layout.superlink_dir, server_key, server_cert, ca_pem)
    return ca_pem, (ca_key, ca_cert)


def write_superlink_tls(directory: Path, server_key, server_cert, ca_pem: bytes) -> None:  # noqa: ANN001
    """A SuperLink's TLS files in ``directory`` (0700): its key (0600), its certificate and the CA's."""
    _write_private(_private_dir(directory) / SERVER_KEY, encode_private_key(server_key))
    _write_public(directory / SERVER_CERT, encode_certificate(server_cert))
    _write_public(directory / CA_CERT, ca_pem)


def write_node_key_pair(directory: Path, name: str, registered: Path, ca_pem: bytes) -> str:
    """A SuperNode's key pair in ``directory`` (0700; private half 0600) with the CA certificate, and the
    public half at ``registered`` (the operator's copy to register); returns its fingerprint."""
    key = create_node_key()
    public = encode_node_public_key(key, comment=name)
    _write_private(_private_dir(directory) / NODE_KEY, encode_node_private_key(key))
    _write_public(directory / NODE_PUB, public)
    _write_public(directory / CA_CERT, ca_pem)
    registered.parent.mkdir(parents=True, exist_ok=True)
    _write_public(registered, public)
    return node_key_fingerprint(public)


def _write_node_keys(layout: DeploymentLayout, nodes: int, ca_pem: bytes) -> list[str]:
    """One key pair per SuperNode (``supernode-K/``, public half also in ``operator/node-keys/``);
    returns their fingerprints."""
    return [
        write_node_key_pair(layout.supernode_dir(i), supernode_name(i), layout.node_public_key(i), ca_pem)
        for i in range(1, nodes + 1)
    ]


def _write_policies(layout: DeploymentLayout, nodes: int, rounds: int) -> None:
    """Each SuperNode's copy of the run's published privacy configuration (``privacy-policy.json``, read
    through node config ``privacy-policy``): the run config's defaults for ``rounds`` rounds over ``nodes``
    clients. Its ClientApp refuses any message that asks for less (fedids.federation.policy); an operator
    who changes the run's privacy settings installs the matching policy on every SuperNode."""
    from fedids.federation.config import FederationConfig
    from fedids.federation.policy import PrivacyPolicy

    policy = PrivacyPolicy.from_config(FederationConfig(rounds=rounds, min_clients=nodes))
    for index in range(1, nodes + 1):
        policy.save(layout.supernode_dir(index) / POLICY_FILE)


def _write_operator(layout: DeploymentLayout, address: str, ca_pem: bytes) -> None:
    """The operator's CA copy and its Flower CLI configuration (``operator/flwr-home/config.toml``)."""
    _write_public(layout.operator_dir / CA_CERT, ca_pem)
    layout.flwr_home.mkdir(parents=True, exist_ok=True)
    _write_public(
        layout.flwr_home / "config.toml", render_flwr_config(address, layout.operator_dir / CA_CERT).encode()
    )
