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

from fedids.federation.deployment.commands import (
    CONNECTION_NAME,
    OFFLINE_ENV,
    SUPERLINK_PORT,
    SUPERNODE_RUNTIME_PORT,
    format_address,
    format_config_pairs,
    register_command,
    render_flwr_config,
    run_command,
    status_command,
    superlink_command,
    supernode_command,
    validate_host,
)
from fedids.federation.deployment.create import init_deployment
from fedids.federation.deployment.keys import (
    CA_VALID_DAYS,
    CLOCK_SKEW,
    NODE_KEY_CURVE,
    SERVER_VALID_DAYS,
    TLS_KEY_CURVE,
    create_ca,
    create_node_key,
    create_server_certificate,
    encode_certificate,
    encode_node_private_key,
    encode_node_public_key,
    encode_private_key,
    node_key_fingerprint,
    subject_alt_names,
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
    load_plan,
    supernode_name,
)
from fedids.federation.deployment.runbook import render_runbook
from fedids.federation.deployment.status import (
    RunStatus,
    flwr_executable,
    parse_json_output,
    parse_run_status,
    read_run_status,
    wait_for_run,
)

__all__ = [
    # commands and configuration text
    "SUPERLINK_PORT",
    "SUPERNODE_RUNTIME_PORT",
    "CONNECTION_NAME",
    "OFFLINE_ENV",
    "validate_host",
    "format_address",
    "format_config_pairs",
    "superlink_command",
    "supernode_command",
    "register_command",
    "run_command",
    "status_command",
    "render_flwr_config",
    # key material
    "NODE_KEY_CURVE",
    "TLS_KEY_CURVE",
    "CA_VALID_DAYS",
    "SERVER_VALID_DAYS",
    "CLOCK_SKEW",
    "create_ca",
    "subject_alt_names",
    "create_server_certificate",
    "create_node_key",
    "encode_certificate",
    "encode_private_key",
    "encode_node_private_key",
    "encode_node_public_key",
    "node_key_fingerprint",
    # the deployment folder
    "DEFAULT_DATA_PATH",
    "DEFAULT_MODEL_DIR",
    "DEFAULT_TEST_DATA",
    "DEFAULT_RUN_DIR",
    "APP_DIR",
    "CA_CERT",
    "CA_KEY",
    "SERVER_CERT",
    "SERVER_KEY",
    "NODE_KEY",
    "POLICY_FILE",
    "NODE_PUB",
    "RUNBOOK",
    "MANIFEST",
    "DeploymentLayout",
    "supernode_name",
    "DeploymentPlan",
    "load_plan",
    "init_deployment",
    "render_runbook",
    # run status
    "RunStatus",
    "flwr_executable",
    "parse_json_output",
    "parse_run_status",
    "read_run_status",
    "wait_for_run",
]
