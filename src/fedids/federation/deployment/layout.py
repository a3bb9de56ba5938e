"""The deployment folder: file names, one sub-folder per machine (:class:`DeploymentLayout`), and the
plan saved beside the runbook (:class:`DeploymentPlan`, ``deployment.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fedids.errors import InputError
from fedids.federation.deployment.commands import format_address

# Default paths written into the runbook; every one is overridable in `fedids deploy init`.
DEFAULT_DATA_PATH = "/srv/fedids/flows.csv"
DEFAULT_MODEL_DIR = "/srv/fedids/model"
DEFAULT_TEST_DATA = "/srv/fedids/test.csv"
DEFAULT_RUN_DIR = "/srv/fedids/run"
APP_DIR = Path(__file__).resolve().parent / "flower_app"  # the Flower app, shipped in the package

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "superlink.crt", "superlink.key"
NODE_KEY, NODE_PUB = "auth.key", "auth.pub"
POLICY_FILE = "privacy-policy.json"  # the run's published privacy configuration (fedids.federation.policy)
RUNBOOK, MANIFEST = "RUNBOOK.md", "deployment.json"


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
        return [self.ca_dir / CA_KEY, self.superlink_dir / SERVER_KEY] + [
            self.supernode_dir(i) / NODE_KEY for i in range(1, nodes + 1)
        ]


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
    # Three tiers (sites >= 2; fedids.federation.deployment.sites): nodes = devices over all sites
    sites: int = 0
    site_hosts: list[str] = field(default_factory=list)
    site_ports: list[int] = field(default_factory=list)
    site_dir: str = "/srv/fedids/site"
    fingerprints: dict[str, str] = field(default_factory=dict)  # three tiers: key name -> fingerprint

    @property
    def address(self) -> str:
        return format_address(self.superlink_host, self.port)

    @property
    def layout(self) -> DeploymentLayout:
        return DeploymentLayout(Path(self.root))

    def run_config(self) -> dict[str, str | int | float | bool]:
        """The run config the runbook's ``flwr run`` passes (paths are on the SuperLink host)."""
        tiers: dict[str, str | int | float | bool] = {}
        if self.sites >= 2:
            from fedids.federation.deployment.sites import devices_per_site

            tiers = {"sites": self.sites, "site-devices": max(devices_per_site(self.nodes, self.sites))}
        return {
            "rounds": self.rounds,
            "min-clients": self.sites if self.sites >= 2 else self.nodes,
            "test-data": self.test_data,
            "out-dir": self.run_dir,
            **tiers,
        }

    def node_config(self, index: int) -> dict[str, str | int | float | bool]:
        """The node config of SuperNode ``index`` (paths are on that SuperNode's host)."""
        return {
            "data-path": self.data_path,
            "model-dir": self.model_dir,
            "client-key": supernode_name(index),
            "privacy-policy": POLICY_FILE,  # in the SuperNode's folder, the command's working directory
        }


def load_plan(out_dir: str | Path) -> DeploymentPlan:
    """Read ``deployment.json`` written by :func:`init_deployment`."""
    path = Path(out_dir) / MANIFEST
    try:
        return DeploymentPlan(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise InputError(f"{path}: missing; run `fedids deploy init` first") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a fedids deployment manifest ({exc})") from None
