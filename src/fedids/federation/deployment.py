"""Multi-machine deployment on Flower's deployment engine (SuperLink + SuperNodes), made copy-paste.

What this module provides, for ``fedids deploy init`` and the loopback integration test:

* the key material a TLS-protected, authenticated federation needs, generated with ``cryptography``:
  a private CA, the SuperLink's server certificate (signed by the CA; its subjectAltName lists the host
  the SuperNodes dial plus ``localhost``/``127.0.0.1``/``::1``: a SuperLink listening on ``0.0.0.0``
  makes its own ServerApp process dial ``127.0.0.1`` and verify the same certificate), and one ECDSA
  P-384 authentication key pair per SuperNode in the OpenSSH formats that Flower 1.42 reads
  (``flower-supernode --auth-supernode-private-key`` calls ``load_ssh_private_key``; ``flwr supernode
  register`` calls ``load_ssh_public_key`` and accepts NIST curves only);
* one folder per machine (``superlink/``, ``supernode-K/``, ``operator/``) holding exactly what that
  machine needs, and a Flower CLI configuration (``operator/flwr-home/config.toml``) that points
  ``flwr`` at the SuperLink and its CA;
* the exact commands for each machine (:func:`superlink_command`, :func:`supernode_command`,
  :func:`register_command`, :func:`run_command`), rendered into ``RUNBOOK.md``; the integration test
  runs the commands these same functions build, so the runbook cannot drift from what is tested;
* :func:`read_run_status` / :func:`wait_for_run`: ``flwr run`` returns 0 as soon as the SuperLink has
  accepted a run, even if the run later fails, so the real outcome is read with ``flwr ls``.

Guarantees: private keys are written with mode 0600 (created that way, never world-readable for an
instant) inside 0700 folders and are never printed or logged. The CA key is only needed to issue
certificates; no running component reads it. Key generation draws from the operating system's
CSPRNG (through ``cryptography``), never from a seeded generator. Existing keys are never overwritten
unless asked (``force=True``).

Limits of Flower 1.42 (open-source build) worth knowing: the Fleet API (SuperNodes), the Control API
(``flwr run``/``flwr supernode register``) and the Runtime API (the ServerApp process) share one HTTPS
port; the Control API has no account authentication unless Flower's OIDC plugin is installed, so whoever
can reach the port and trusts the CA can register a key or submit a run. Restrict the port to the known
SuperNode and operator addresses (see docs/deployment.md).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedids.errors import InputError

SUPERLINK_PORT = 8000  # Flower 1.42: Fleet, Control and Runtime APIs on one HTTPS port
SUPERNODE_RUNTIME_PORT = 9094  # each SuperNode's local Runtime API (its ClientApp processes dial it)
CONNECTION_NAME = "fedids"  # the [superlink.NAME] entry that `flwr` commands name
# Set on every machine: Flower would otherwise `uv sync` app dependencies at run time (fails offline,
# exit code 608), send telemetry events and check for updates over the internet.
OFFLINE_ENV = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
               "FLWR_DISABLE_UPDATE_CHECK": "1"}
NODE_KEY_CURVE = ec.SECP384R1  # Flower's documentation uses `ssh-keygen -t ecdsa -b 384`
TLS_KEY_CURVE = ec.SECP384R1
CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 825  # the longest validity TLS clients commonly accept for a server certificate
CLOCK_SKEW = dt.timedelta(minutes=5)  # notBefore in the past, so hosts with slightly slow clocks accept it

# Default paths written into the runbook; every one is overridable in `fedids deploy init`.
DEFAULT_DATA_PATH = "/srv/fedids/flows.csv"
DEFAULT_MODEL_DIR = "/srv/fedids/model"
DEFAULT_TEST_DATA = "/srv/fedids/test.csv"
DEFAULT_RUN_DIR = "/srv/fedids/run"
APP_DIR = Path(__file__).resolve().parents[3] / "deploy" / "flower-app"  # in a source checkout

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "superlink.crt", "superlink.key"
NODE_KEY, NODE_PUB = "auth.key", "auth.pub"
RUNBOOK, MANIFEST = "RUNBOOK.md", "deployment.json"


# --------------------------------------------------------------------------------------------------
# Key material (pure apart from drawing random keys from the OS CSPRNG)


def create_ca(common_name: str = "fedids deployment CA", *, valid_days: int = CA_VALID_DAYS,
              now: dt.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed certificate authority (ECDSA P-384) that may sign end-entity certificates only.

    Parameters
    ----------
    common_name : str
        Subject CN of the CA.
    valid_days : int
        Validity in days, from ``now`` (minus five minutes of clock-skew allowance).
    now : datetime, optional
        Issue time (UTC); defaults to the current time.

    Returns
    -------
    (key, certificate)
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(TLS_KEY_CURVE())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedids")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """subjectAltName entries for ``hosts`` plus ``localhost``, ``127.0.0.1`` and ``::1``, deduplicated.

    IP literals become ``IPAddress`` entries, everything else ``DNSName`` entries (TLS clients match
    an IP address only against ``IPAddress`` entries).
    """
    names: list[x509.GeneralName] = []
    for host in [*hosts, "localhost", "127.0.0.1", "::1"]:
        host = validate_host(host)
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host.lower())
        if entry not in names:
            names.append(entry)
    return names


def create_server_certificate(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                              hosts: Sequence[str], *, valid_days: int = SERVER_VALID_DAYS,
                              now: dt.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The SuperLink's TLS server certificate, signed by ``ca_key``.

    ``hosts`` are the names or IP addresses SuperNodes and the operator use to reach the SuperLink;
    the loopback names are always added (see :func:`subject_alt_names`). The subject CN is the first host.
    """
    if not hosts:
        raise ValueError("at least one SuperLink host name or address is needed")
    now = now or dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(TLS_KEY_CURVE())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        # CN is at most 64 characters; clients match names against the subjectAltName, not the CN.
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64]),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedids")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def create_node_key() -> ec.EllipticCurvePrivateKey:
    """A SuperNode authentication key (ECDSA on NIST P-384, as Flower's own guide generates)."""
    return ec.generate_private_key(NODE_KEY_CURVE())


def encode_certificate(cert: x509.Certificate) -> bytes:
    """PEM bytes of ``cert``."""
    return cert.public_bytes(serialization.Encoding.PEM)


def encode_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, the form uvicorn/OpenSSL load for ``--ssl-keyfile``."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def encode_node_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """OpenSSH private-key bytes (``-----BEGIN OPENSSH PRIVATE KEY-----``), unencrypted.

    Unencrypted because ``flower-supernode`` loads the key with no passphrase; protect it with file
    permissions (0600) instead.
    """
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def encode_node_public_key(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey, comment: str = "") -> bytes:
    """One OpenSSH public-key line (``ecdsa-sha2-nistp384 AAAA... comment``) with a trailing newline."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line + (b" " + comment.encode() if comment else b"") + b"\n"


# --------------------------------------------------------------------------------------------------
# Commands and configuration text (pure)


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
    if (not text or len(text) > 253 or "://" in host
            or not all(lab and len(lab) <= 63 and lab.replace("-", "").isalnum() and lab.isascii()
                       and not lab.startswith("-") and not lab.endswith("-") for lab in labels)):
        raise InputError(f"--superlink-host {host!r}: give a bare host name or IP address "
                         "(no scheme, no port; the port is --port)")
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
                raise InputError(f"{value}: config values may not contain quotes, backslashes or control characters")
            literal = f'"{value}"'
        else:
            raise TypeError(f"config value for {key!r} must be str, int, float or bool")
        pairs.append(f"{key}={literal}")
    return " ".join(pairs)


def superlink_command(*, ca_cert: str | Path, cert: str | Path, key: str | Path, host: str = "0.0.0.0",
                      port: int = SUPERLINK_PORT, database: str | Path | None = None) -> list[str]:
    """``flower-superlink`` with TLS, SuperNode authentication and no runtime package installation.

    ``host`` is the listening interface (``0.0.0.0``: all); ``database`` an SQLite file that keeps runs
    and registered SuperNodes across restarts (``None``: in memory).
    """
    command = ["flower-superlink", "--ssl-ca-certfile", str(ca_cert), "--ssl-certfile", str(cert),
               "--ssl-keyfile", str(key), "--enable-supernode-auth", "--disable-runtime-dependency-installation",
               "--host", host, "--port", str(port)]
    if database is not None:
        command += ["--database", str(database)]
    return command


def supernode_command(*, superlink: str, root_certificates: str | Path, private_key: str | Path,
                      node_config: Mapping[str, str | int | float | bool],
                      runtime_port: int = SUPERNODE_RUNTIME_PORT,
                      max_wait_time_s: float | None = None) -> list[str]:
    """``flower-supernode`` dialling ``superlink`` (``host:port``) over TLS with its authentication key.

    ``node_config`` is what the ClientApp reads: ``data-path`` (the local flow file, required),
    ``model-dir`` (where every received global model is written for ``fedids detect``), ``client-key``.
    ``runtime_port`` is the SuperNode's local Runtime API port (bound to 127.0.0.1; must differ between
    SuperNodes sharing a host). ``max_wait_time_s`` bounds how long it retries an unreachable SuperLink.
    """
    if "data-path" not in node_config:
        raise ValueError("node_config needs data-path (the SuperNode's local flow file)")
    command = ["flower-supernode", "--superlink", superlink, "--root-certificates", str(root_certificates),
               "--auth-supernode-private-key", str(private_key),
               "--node-config", format_config_pairs(node_config), "--port", str(runtime_port)]
    if max_wait_time_s is not None:
        command += ["--max-wait-time", f"{max_wait_time_s:g}"]
    return command


def register_command(public_key: str | Path, connection: str = CONNECTION_NAME) -> list[str]:
    """``flwr supernode register`` of one OpenSSH public key on the SuperLink named ``connection``."""
    return ["flwr", "supernode", "register", str(public_key), connection, "--format", "json"]


def run_command(app_dir: str | Path, run_config: Mapping[str, str | int | float | bool],
                connection: str = CONNECTION_NAME) -> list[str]:
    """``flwr run`` of the fedids Flower app; prints JSON with the run id (``run-id``)."""
    return ["flwr", "run", str(app_dir), connection, "--run-config", format_config_pairs(run_config),
            "--format", "json"]


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
    return (f'[superlink]\ndefault = "{connection}"\n\n'
            f'[superlink.{connection}]\naddress = "{address}"\nroot-certificates = "{root}"\n')


# --------------------------------------------------------------------------------------------------
# The deployment folder


@dataclass(frozen=True)
class DeploymentLayout:
    """Where ``fedids deploy init`` puts each file; one sub-folder per machine.

    ``ca/`` stays with whoever issues certificates (it holds the CA key); ``superlink/`` goes to the
    SuperLink host; ``supernode-K/`` to SuperNode K (K = 1..N); ``operator/`` to the machine that runs
    ``flwr`` (its ``flwr-home/config.toml`` holds the absolute path of ``operator/ca.crt`` as it was
    when generated: regenerate or edit it if the folder moves).
    """

    root: Path

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def superlink_dir(self) -> Path:
        return self.root / "superlink"

    @property
    def operator_dir(self) -> Path:
        return self.root / "operator"

    @property
    def flwr_home(self) -> Path:
        return self.operator_dir / "flwr-home"

    def supernode_dir(self, index: int) -> Path:
        return self.root / supernode_name(index)

    def node_public_key(self, index: int) -> Path:
        """The copy of SuperNode ``index``'s public key that the operator registers."""
        return self.operator_dir / "node-keys" / f"{supernode_name(index)}.pub"

    def private_files(self, nodes: int) -> list[Path]:
        """Every private key of a deployment with ``nodes`` SuperNodes."""
        return ([self.ca_dir / CA_KEY, self.superlink_dir / SERVER_KEY]
                + [self.supernode_dir(i) / NODE_KEY for i in range(1, nodes + 1)])


def supernode_name(index: int) -> str:
    """``supernode-K``: the folder, client key and registration name of SuperNode K (1-based)."""
    return f"supernode-{index}"


@dataclass(frozen=True)
class DeploymentPlan:
    """What ``fedids deploy init`` generated, saved as ``deployment.json`` next to the runbook.

    ``node_fingerprints``: OpenSSH fingerprint (``SHA256:...``) of each SuperNode's public key, to check
    a key on a host against the one registered.
    """

    root: str
    superlink_host: str
    port: int
    nodes: int
    data_path: str = DEFAULT_DATA_PATH
    model_dir: str = DEFAULT_MODEL_DIR
    test_data: str = DEFAULT_TEST_DATA
    run_dir: str = DEFAULT_RUN_DIR
    app_dir: str = str(APP_DIR)
    rounds: int = 10
    node_fingerprints: list[str] = field(default_factory=list)
    created: str = ""

    @property
    def address(self) -> str:
        return format_address(self.superlink_host, self.port)

    @property
    def layout(self) -> DeploymentLayout:
        return DeploymentLayout(Path(self.root))

    def run_config(self) -> dict[str, str | int | float | bool]:
        """The run config the runbook's ``flwr run`` passes (paths are on the SuperLink host)."""
        return {"rounds": self.rounds, "min-clients": self.nodes, "test-data": self.test_data,
                "out-dir": self.run_dir}

    def node_config(self, index: int) -> dict[str, str | int | float | bool]:
        """The node config of SuperNode ``index`` (paths are on that SuperNode's host)."""
        return {"data-path": self.data_path, "model-dir": self.model_dir, "client-key": supernode_name(index)}


def render_runbook(plan: DeploymentPlan) -> str:
    """The copy-paste runbook (Markdown) for ``plan``: one section per machine, commands in order."""
    layout = plan.layout
    exports = "export " + " ".join(f"{k}={v}" for k, v in OFFLINE_ENV.items())
    link = superlink_command(ca_cert=CA_CERT, cert=SERVER_CERT, key=SERVER_KEY, port=plan.port,
                             database="superlink-state.db")
    node = supernode_command(superlink=plan.address, root_certificates=CA_CERT, private_key=NODE_KEY,
                             node_config=plan.node_config(1))
    registers = "\n".join(shlex.join(register_command(layout.node_public_key(i)))
                          for i in range(1, plan.nodes + 1))
    run = shlex.join(run_command(plan.app_dir, plan.run_config()))
    flwr_home = shlex.quote(str(layout.flwr_home))
    fingerprints = "\n".join(f"- {supernode_name(i)}: `{fp}`" for i, fp in enumerate(plan.node_fingerprints, 1))
    names = ", ".join(str(n.value) for n in subject_alt_names([plan.superlink_host]))
    return f"""# fedids deployment runbook: SuperLink {plan.address}, {plan.nodes} SuperNodes

Generated by `fedids deploy init` in `{plan.root}` ({plan.created}); docs/deployment.md explains
each step. Every machine needs Python 3.11 with fedids and its `full` extra installed (it brings
`flwr[simulation]==1.42.0`) and that venv's `bin/` first on `PATH` (the SuperLink starts
`flower-superexec`, SuperNodes start `flwr-clientapp`, by name). Nothing is installed or fetched at
run time: the `export` line in each section disables Flower's `uv sync` of app dependencies (which
fails offline with exit code 608), its telemetry and its update check.

Copy each folder to its machine only: `superlink/` to the SuperLink host, `supernode-K/` to SuperNode
K, `operator/` to the machine that runs `flwr`. Keep `ca/` (the CA key) offline; no running component
needs it. Private keys (`*.key`) are mode 0600: keep them so (`scp -p`), owned by the service user.

Firewall: allow TCP {plan.port} on the SuperLink host from the SuperNode hosts and the operator
machine only. Flower 1.42 serves the Fleet, Control and Runtime APIs on this one port, and its
open-source Control API has no login: whoever reaches it and trusts the CA can submit runs and
register keys. SuperNode hosts need no inbound port (they dial out; their Runtime API,
port {SUPERNODE_RUNTIME_PORT}, listens on 127.0.0.1).

## 1. SuperLink host, in the copied `superlink/` folder

```sh
{exports}
{shlex.join(link)}
```

The certificate is valid for: {names}. The ServerApp runs on this host, so `test-data` and `out-dir`
in step 4 are paths here. `superlink-state.db` keeps registered keys and runs across restarts.

## 2. Operator machine, in the folder that holds `operator/`: register the SuperNode keys

Only registered keys may join; each SuperNode's key pair never leaves its host except this public half.

```sh
{exports}
export FLWR_HOME={flwr_home}
{registers}
```

Key fingerprints, to compare with `ssh-keygen -lf auth.pub` (or `fedids deploy fingerprint auth.pub`)
on each SuperNode host:
{fingerprints}

## 3. SuperNode host K, in the copied `supernode-K/` folder

Set `data-path` to this gateway's own flow file (CICIDS2017 CSV or Parquet) and `client-key` to
`supernode-K`; shown for K=1. Two SuperNodes on one host need different `--port` values.

```sh
{exports}
{shlex.join(node)}
```

Every global model the node receives is written (atomically) to `model-dir`; run the detector
beside it: `fedids detect --model {plan.model_dir} ...` reloads it when it changes. A SuperNode whose
key is not registered stops with "Exit Code: 305" ("Failed to activate SuperNode"; process status 1).

## 4. Operator machine: start a run and check its real outcome

```sh
{exports}
export FLWR_HOME={flwr_home}
{run}
fedids deploy wait RUN_ID       # exits 0 only if the run finished:completed
flwr log RUN_ID {CONNECTION_NAME} --show    # the ServerApp's log
```

`flwr run` exits 0 as soon as the SuperLink accepts the run, even if the run fails later: use
`fedids deploy wait` (or `flwr ls {CONNECTION_NAME} --run-id RUN_ID`). The ServerApp waits for
`min-clients` SuperNodes, then writes per-round metrics to `<out-dir>/state.json` and the global
model to `<out-dir>/global/` on the SuperLink host.
"""


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


def init_deployment(out_dir: str | Path, superlink_host: str, *, nodes: int = 3, port: int = SUPERLINK_PORT,
                    force: bool = False, extra_hosts: Sequence[str] = (), data_path: str = DEFAULT_DATA_PATH,
                    model_dir: str = DEFAULT_MODEL_DIR, test_data: str = DEFAULT_TEST_DATA,
                    run_dir: str = DEFAULT_RUN_DIR, app_dir: str | Path = APP_DIR,
                    rounds: int = 10) -> DeploymentPlan:
    """Generate the CA, the SuperLink certificate, ``nodes`` SuperNode key pairs and the runbook.

    Parameters
    ----------
    out_dir : path
        Deployment folder (created); see :class:`DeploymentLayout`.
    superlink_host : str
        Name or IP address by which SuperNodes and the operator reach the SuperLink.
    nodes : int
        Number of SuperNodes (>= 1).
    port : int
        SuperLink port (Fleet, Control and Runtime APIs).
    force : bool
        Replace existing keys; without it, any existing key file raises ``InputError``.
    extra_hosts : sequence of str
        More names/addresses for the server certificate.
    data_path, model_dir, test_data, run_dir, app_dir, rounds
        Defaults written into the runbook's commands.

    Returns
    -------
    DeploymentPlan
        Also written to ``out_dir/deployment.json``; the runbook to ``out_dir/RUNBOOK.md``.
    """
    if nodes < 1:
        raise InputError(f"--nodes {nodes}: need at least one SuperNode")
    if rounds < 1:
        raise InputError(f"--rounds {rounds}: must be >= 1")
    host = validate_host(superlink_host)
    hosts = [host, *(validate_host(h) for h in extra_hosts)]
    format_address(host, port)
    root = Path(out_dir).expanduser().resolve()
    for value in (data_path, model_dir, test_data, run_dir):
        if not Path(value).is_absolute():
            raise InputError(f"{value}: give an absolute path (it is read by a Flower process on another host)")
        format_config_pairs({"path": value})
    layout = DeploymentLayout(root)
    existing = [p for p in layout.private_files(nodes) if p.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]}: key already exists; pass --force to replace every key in {root}")
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a directory")

    ca_key, ca_cert = create_ca(f"fedids CA for {host}"[:64])
    server_key, server_cert = create_server_certificate(ca_key, ca_cert, hosts)
    ca_pem = encode_certificate(ca_cert)

    _write_private(_private_dir(layout.ca_dir) / CA_KEY, encode_private_key(ca_key))
    _write_public(layout.ca_dir / CA_CERT, ca_pem)
    _write_private(_private_dir(layout.superlink_dir) / SERVER_KEY, encode_private_key(server_key))
    _write_public(layout.superlink_dir / SERVER_CERT, encode_certificate(server_cert))
    _write_public(layout.superlink_dir / CA_CERT, ca_pem)

    fingerprints = []
    (layout.operator_dir / "node-keys").mkdir(parents=True, exist_ok=True)
    for index in range(1, nodes + 1):
        key = create_node_key()
        public = encode_node_public_key(key, comment=supernode_name(index))
        directory = _private_dir(layout.supernode_dir(index))
        _write_private(directory / NODE_KEY, encode_node_private_key(key))
        _write_public(directory / NODE_PUB, public)
        _write_public(directory / CA_CERT, ca_pem)
        _write_public(layout.node_public_key(index), public)
        fingerprints.append(node_key_fingerprint(public))
    _write_public(layout.operator_dir / CA_CERT, ca_pem)
    layout.flwr_home.mkdir(parents=True, exist_ok=True)
    _write_public(layout.flwr_home / "config.toml",
                  render_flwr_config(format_address(host, port), layout.operator_dir / CA_CERT).encode())

    plan = DeploymentPlan(root=str(root), superlink_host=host, port=port, nodes=nodes, data_path=data_path,
                          model_dir=model_dir, test_data=test_data, run_dir=run_dir, app_dir=str(app_dir),
                          rounds=rounds, node_fingerprints=fingerprints,
                          created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    _write_public(root / MANIFEST, json.dumps(asdict(plan), indent=1).encode())
    _write_public(root / RUNBOOK, render_runbook(plan).encode())
    return plan


def node_key_fingerprint(public_key_line: bytes) -> str:
    """OpenSSH's fingerprint of a public-key line: ``SHA256:`` + unpadded base64 of SHA-256(key blob).

    The same string ``ssh-keygen -lf auth.pub`` prints, so a key can be checked on any host.
    """
    parts = public_key_line.split()
    if len(parts) < 2:
        raise InputError("public key: not an OpenSSH public-key line")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise InputError("public key: not an OpenSSH public-key line") from None
    digest = hashes.Hash(hashes.SHA256())
    digest.update(blob)
    return "SHA256:" + base64.b64encode(digest.finalize()).decode().rstrip("=")


def load_plan(out_dir: str | Path) -> DeploymentPlan:
    """Read ``deployment.json`` written by :func:`init_deployment`."""
    path = Path(out_dir) / MANIFEST
    try:
        return DeploymentPlan(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise InputError(f"{path}: missing; run `fedids deploy init` first") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a fedids deployment manifest ({exc})") from None


# --------------------------------------------------------------------------------------------------
# Run status (I/O: calls the `flwr` command line)


@dataclass(frozen=True)
class RunStatus:
    """One run as ``flwr ls`` reports it. ``status`` is e.g. ``running`` or ``finished:completed``."""

    run_id: int
    status: str

    @property
    def finished(self) -> bool:
        return self.status.startswith("finished")

    @property
    def succeeded(self) -> bool:
        return self.status == "finished:completed"


def flwr_executable() -> str:
    """``flwr`` from ``PATH``, else the one installed beside this Python (a venv used without activation)."""
    found = shutil.which("flwr")
    if found:
        return found
    beside = Path(sys.executable).parent / "flwr"
    if beside.exists():
        return str(beside)
    raise InputError("flwr: command not found; install fedids[full] (it brings flwr) and put its bin/ on PATH")


def parse_json_output(text: str) -> dict:
    """The JSON object that a ``flwr ... --format json`` command printed (its last ``{...}`` block)."""
    start = text.find("{")
    while start != -1:
        try:
            return json.loads(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
    raise ValueError(f"no JSON object in flwr output: {text.strip()[:300]!r}")


def parse_run_status(text: str, run_id: int) -> RunStatus:
    """The status of ``run_id`` from ``flwr ls --format json`` output."""
    payload = parse_json_output(text)
    if not payload.get("success", False):
        raise RuntimeError(f"flwr ls failed: {payload.get('error-message', payload)}")
    for run in payload.get("runs", []):
        if int(run.get("run-id", -1)) == run_id:
            return RunStatus(run_id, str(run.get("status", "")))
    raise RuntimeError(f"run {run_id} not listed by flwr ls")


def read_run_status(run_id: int, *, connection: str = CONNECTION_NAME, env: Mapping[str, str] | None = None,
                    timeout_s: float = 300.0) -> RunStatus:
    """Ask the SuperLink (``flwr ls``) for the status of ``run_id``.

    Raises ``subprocess.TimeoutExpired`` if ``flwr ls`` takes longer than ``timeout_s`` (it needs about
    2.5 CPU-seconds to start, which can be a minute of wall time on an overloaded host).
    """
    command = status_command(run_id, connection)
    command[0] = flwr_executable()
    result = subprocess.run(command, capture_output=True, text=True,
                            env=dict(env) if env is not None else None, timeout=timeout_s, check=False)
    return parse_run_status(result.stdout, run_id)


def wait_for_run(run_id: int, *, connection: str = CONNECTION_NAME, env: Mapping[str, str] | None = None,
                 timeout_s: float = 3600.0, poll_s: float = 2.0) -> RunStatus:
    """Poll ``flwr ls`` until ``run_id`` has finished; returns its final status (raises on timeout)."""
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while True:
        try:
            current = read_run_status(run_id, connection=connection, env=env)
        except subprocess.TimeoutExpired:
            pass  # a slow `flwr ls` says nothing about the run: ask again
        else:
            if current.finished:
                return current
            status = current.status
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {status!r} after {timeout_s:.0f} s")
        time.sleep(poll_s)
