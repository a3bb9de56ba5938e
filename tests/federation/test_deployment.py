"""Multi-machine deployment: generated key material checked with Flower's own loaders and a real TLS
handshake (fast), and a real SuperLink + 3 SuperNodes on loopback with TLS and SuperNode
authentication running 2 federated rounds on real CICIDS2017 rows (integration, slow)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509

from fedids.errors import InputError
from fedids.federation import deployment as dep
from support import paths
from support.flower_processes import (
    SMALL_RUN_CONFIG,
    follow_run,
    free_ports,
    host_env,
    submit_run,
    wait_for_port,
    write_node_files,
)

ROOT = paths.REPO
DATA = paths.CICIDS
APP = dep.APP_DIR  # the Flower app shipped in the package; deploy/flower-app links to it


# --------------------------------------------------------------------------------------------------
# Key material, configuration text, runbook (fast)


@pytest.fixture(scope="module")
def ca():
    return dep.create_ca()


def test_server_certificate_is_signed_by_the_ca_and_names_the_host_and_loopback(ca):
    ca_key, ca_cert = ca
    _, cert = dep.create_server_certificate(ca_key, ca_cert, ["superlink.example.org", "10.0.0.5"])
    cert.verify_directly_issued_by(ca_cert)  # raises if the signature or issuer does not match
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["superlink.example.org", "localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5", "127.0.0.1", "::1"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc
    assert (cert.not_valid_after_utc - now).days >= dep.SERVER_VALID_DAYS - 1


def _serve_tls_once(cert_pem: Path, key_pem: Path) -> tuple[int, threading.Thread]:
    """A one-connection TLS server on 127.0.0.1 using the generated certificate; returns its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_pem, key_pem)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            try:
                conn, _ = listener.accept()
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass  # the client rejected the certificate: the test checks the client side

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


@pytest.mark.parametrize(
    "server_name, accepted",
    [("superlink.example.org", True), ("127.0.0.1", True), ("localhost", True), ("other.example.org", False)],
)
def test_tls_handshake_verifies_against_the_generated_ca(tmp_path, server_name, accepted):
    plan = dep.init_deployment(tmp_path / "d", "superlink.example.org", nodes=1, port=9443)
    link = plan.layout.superlink_dir
    port, thread = _serve_tls_once(link / dep.SERVER_CERT, link / dep.SERVER_KEY)
    client = ssl.create_default_context(cafile=str(plan.layout.operator_dir / dep.CA_CERT))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if accepted:
            with client.wrap_socket(raw, server_hostname=server_name) as tls:
                assert tls.recv(2) == b"ok"
        else:
            with pytest.raises(ssl.SSLCertVerificationError):
                client.wrap_socket(raw, server_hostname=server_name)
    thread.join(10)


def test_a_client_trusting_another_ca_rejects_the_superlink(tmp_path):
    plan = dep.init_deployment(tmp_path / "d", "127.0.0.1", nodes=1)
    other = dep.init_deployment(tmp_path / "other", "127.0.0.1", nodes=1)
    link = plan.layout.superlink_dir
    port, thread = _serve_tls_once(link / dep.SERVER_CERT, link / dep.SERVER_KEY)
    client = ssl.create_default_context(cafile=str(other.layout.operator_dir / dep.CA_CERT))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            client.wrap_socket(raw, server_hostname="127.0.0.1")
    thread.join(10)


def test_node_keys_load_with_flowers_own_loaders(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

    plan = dep.init_deployment(tmp_path / "d", "127.0.0.1", nodes=2)
    for index in (1, 2):
        node = plan.layout.supernode_dir(index)
        registered = try_load_public_key(
            plan.layout.node_public_key(index)
        )  # what `flwr supernode register` sends
        private, public = _try_setup_client_authentication(
            argparse.Namespace(
                auth_supernode_private_key=str(node / dep.NODE_KEY), auth_supernode_public_key=None
            )
        )
        assert public_key_to_bytes(public) == registered  # the SuperNode proves the key that was registered
        assert private.curve.name == "secp384r1"
        assert (node / dep.NODE_PUB).read_bytes() == plan.layout.node_public_key(index).read_bytes()
    keys = {plan.layout.node_public_key(i).read_bytes() for i in (1, 2)}
    assert len(keys) == 2


def test_init_writes_private_keys_0600_refuses_to_overwrite_and_force_replaces(tmp_path):
    out = tmp_path / "d"
    plan = dep.init_deployment(out, "192.0.2.7", nodes=3)
    private = plan.layout.private_files(3)
    assert len(private) == 5
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
    before = {p: p.read_bytes() for p in private}
    with pytest.raises(InputError, match="already exists; pass --force"):
        dep.init_deployment(out, "192.0.2.7", nodes=3)
    assert {p: p.read_bytes() for p in private} == before  # nothing was touched
    dep.init_deployment(out, "192.0.2.7", nodes=3, force=True)
    assert all(p.read_bytes() != before[p] for p in private)
    assert not list(out.rglob("*.part"))
    runbook = (out / dep.RUNBOOK).read_text()
    secrets = [p.read_bytes().decode() for p in private]
    assert "PRIVATE KEY" not in runbook and not any(s.splitlines()[1] in runbook for s in secrets)


def test_flower_app_ships_inside_the_package():
    package = Path(dep.__file__).resolve().parent
    assert APP.resolve().is_relative_to(package) and (APP / "pyproject.toml").is_file()
    assert (ROOT / "deploy" / "flower-app").resolve() == APP.resolve()  # the checkout's path still works


def test_runbook_holds_the_exact_commands_with_offline_settings(tmp_path):
    plan = dep.init_deployment(tmp_path / "d", "10.1.2.3", nodes=2, port=8443, rounds=5)
    runbook = (tmp_path / "d" / dep.RUNBOOK).read_text()
    link = dep.superlink_command(
        ca_cert="ca.crt", cert="superlink.crt", key="superlink.key", port=8443, database="superlink-state.db"
    )
    assert " ".join(link) in runbook
    assert "--disable-runtime-dependency-installation" in link and "--enable-supernode-auth" in link
    assert runbook.count("export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1") == 4  # every machine
    assert "flower-supernode --superlink 10.1.2.3:8443 --root-certificates ca.crt" in runbook
    assert "--auth-supernode-private-key auth.key" in runbook
    for index in (1, 2):
        assert f"flwr supernode register {plan.layout.node_public_key(index)} fedids" in runbook
    assert "rounds=5 min-clients=2" in runbook and str(APP) in runbook
    saved = dep.load_plan(tmp_path / "d")
    assert saved == plan and len(saved.node_fingerprints) == 2


def test_fingerprint_matches_ssh_keygen(tmp_path):
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    plan = dep.init_deployment(tmp_path / "d", "127.0.0.1", nodes=1)
    pub = plan.layout.supernode_dir(1) / dep.NODE_PUB
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True
    ).stdout
    assert listed.split()[1] == plan.node_fingerprints[0] == dep.node_key_fingerprint(pub.read_bytes())
    assert listed.split()[0] == "384"


@pytest.mark.parametrize(
    "host", ["https://a.example", "a.example:8000", "bad host", "", "-a.example", "a..b"]
)
def test_bad_superlink_hosts_are_refused(tmp_path, host):
    with pytest.raises(InputError, match="superlink-host"):
        dep.init_deployment(tmp_path / "d", host, nodes=1)
    assert not (tmp_path / "d").exists()


def test_ipv6_hosts_are_bracketed_in_addresses():
    assert dep.format_address("::1", 8000) == "[::1]:8000"
    assert dep.format_address("[2001:db8::1]", 9) == "[2001:db8::1]:9"
    assert dep.format_address("superlink.example.org", 8000) == "superlink.example.org:8000"


def test_config_pairs_round_trip_through_flowers_parser():
    from flwr.common.config import parse_config_args

    values = {
        "rounds": 2,
        "lr": 0.003,
        "fraction-train": 1.0,
        "test-data": "/srv/my data/t.csv",
        "flag": True,
        "strategy": "fedavg",
    }
    parsed = parse_config_args([dep.format_config_pairs(values)])
    assert parsed == values
    assert all(type(parsed[k]) is type(v) for k, v in values.items())  # 1.0 stays a float
    with pytest.raises(InputError):
        dep.format_config_pairs({"data-path": 'a"b'})
    with pytest.raises(InputError):
        dep.format_config_pairs({"data-path": "C:\\data"})


def test_flower_app_is_valid_and_its_run_config_is_what_the_server_accepts():
    from flwr.cli.config_utils import load_and_validate

    from fedids.federation.server_app import FederationConfig

    config, _ = load_and_validate(APP / "pyproject.toml")  # what `flwr run` checks, modules included
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {
        "serverapp": "fedids.federation.server_app:app",
        "clientapp": "fedids.federation.client_app:app",
    }
    run_config = config["tool"]["flwr"]["app"]["config"]
    FederationConfig.from_run_config(run_config)  # no unknown key, valid values
    every_key = {f.replace("_", "-") for f in FederationConfig.__dataclass_fields__} | {
        "test-data",
        "out-dir",
        "split",
    }
    assert set(run_config) == every_key  # every server setting can be overridden with --run-config
    for key, value in FederationConfig().__dict__.items():
        assert type(run_config[key.replace("_", "-")]) is type(value), (
            key
        )  # neither Flower nor the server converts
    plan = dep.DeploymentPlan(root="/x", superlink_host="h", port=1, nodes=3)
    assert set(plan.run_config()) <= set(run_config)


def test_flwr_config_is_read_by_flower(tmp_path, monkeypatch):
    from flwr.cli.flower_config import read_superlink_connection

    plan = dep.init_deployment(tmp_path / "d", "superlink.example.org", nodes=1, port=8443)
    monkeypatch.setenv("FLWR_HOME", str(plan.layout.flwr_home))
    connection = read_superlink_connection(None)  # the default connection
    assert connection.name == dep.CONNECTION_NAME
    assert connection.address == "superlink.example.org:8443"
    assert connection.root_certificates == str(plan.layout.operator_dir / dep.CA_CERT)
    assert not connection.insecure


def test_run_status_is_parsed_from_flwr_ls_json():
    # Shape of `flwr ls fedids --run-id N --format json` output from flwr 1.42.0 (abridged).
    text = "Using SuperLink: fedids\n" + json.dumps(
        {
            "success": True,
            "runs": [
                {
                    "run-id": "12650074625087512603",
                    "federation-id": "@none/default",
                    "status": "finished:completed",
                }
            ],
        }
    )
    status = dep.parse_run_status(text, 12650074625087512603)
    assert status.finished and status.succeeded
    failed = json.dumps({"success": True, "runs": [{"run-id": "7", "status": "finished:failed"}]})
    assert dep.parse_run_status(failed, 7).finished and not dep.parse_run_status(failed, 7).succeeded
    with pytest.raises(RuntimeError, match="not listed"):
        dep.parse_run_status(failed, 8)


def test_cli_init_prints_the_runbook_but_no_key_and_refuses_to_overwrite(tmp_path):
    fedids = Path(sys.executable).parent / "fedids"
    args = [
        str(fedids),
        "deploy",
        "init",
        "--out",
        str(tmp_path / "d"),
        "--superlink-host",
        "10.0.0.1",
        "--nodes",
        "2",
    ]
    first = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "flower-superlink --ssl-ca-certfile ca.crt" in first.stdout
    assert "PRIVATE KEY" not in first.stdout + first.stderr
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "--force" in second.stderr and "Traceback" not in second.stderr
    pub = tmp_path / "d" / "supernode-1" / dep.NODE_PUB
    printed = subprocess.run(
        [str(fedids), "deploy", "fingerprint", str(pub)], capture_output=True, text=True, timeout=120
    )
    assert printed.stdout.strip() == dep.node_key_fingerprint(pub.read_bytes())


# --------------------------------------------------------------------------------------------------
# Integration: real SuperLink and SuperNodes as separate processes on loopback


@pytest.mark.integration
@pytest.mark.slow
def test_superlink_and_three_authenticated_supernodes_train_over_tls_and_refuse_an_unregistered_node(
    tmp_path, processes
):
    import torch

    from fedids.data.loader import load_flows
    from fedids.federation.server_app import CHECKPOINT_DIR, GLOBAL_DIR, STATE_FILE
    from fedids.model.artifacts import Detector, load_detector
    from fedids.model.train import get_weights
    from fedids.task import evaluate_rows, new_model, prepare

    started = time.monotonic()
    link_port, *node_ports = free_ports(5)
    files = write_node_files(tmp_path)
    run_dir = tmp_path / "server-run"
    # 4 key pairs; only 1-3 are registered, so SuperNode 4 must be refused.
    plan = dep.init_deployment(
        tmp_path / "deploy",
        "127.0.0.1",
        nodes=4,
        port=link_port,
        test_data=str(files[3]),
        run_dir=str(run_dir),
        app_dir=APP,
        rounds=2,
    )
    layout = plan.layout
    operator_env = host_env(layout.flwr_home)

    failure = processes.failure

    # 1. SuperLink host: the runbook's command, in the superlink/ folder (TLS + node authentication).
    link = processes.start(
        "superlink",
        dep.superlink_command(
            ca_cert=dep.CA_CERT, cert=dep.SERVER_CERT, key=dep.SERVER_KEY, host="127.0.0.1", port=link_port
        ),
        cwd=layout.superlink_dir,
        env=host_env(tmp_path / "hosts" / "superlink"),
    )
    try:
        wait_for_port(link_port, link, 120)
    except AssertionError as exc:
        pytest.fail(failure(str(exc)))

    # 2. Operator: register the public keys of SuperNodes 1-3 (in parallel: each `flwr` start costs seconds).
    registrations = {
        i: processes.start(
            f"register-{i}", dep.register_command(layout.node_public_key(i)), cwd=tmp_path, env=operator_env
        )
        for i in (1, 2, 3)
    }
    for i, reg in registrations.items():
        try:
            code = reg.wait(timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail(failure(f"flwr supernode register {i} did not finish in 180 s"))
        output = processes.log(f"register-{i}")
        assert code == 0 and dep.parse_json_output(output)["success"], failure(output)

    # 3. SuperNode hosts: the runbook's command, each with its own data file, model dir and FLWR_HOME.
    nodes = {}
    for index in (1, 2, 3, 4):
        config = {
            "data-path": str(files[index - 1] if index < 4 else files[0]),
            "model-dir": str(tmp_path / "hosts" / f"node-{index}" / "model"),
            "client-key": dep.supernode_name(index),
            "privacy-policy": dep.POLICY_FILE,  # written by `fedids deploy init`; every message is checked
        }
        nodes[index] = processes.start(
            f"supernode-{index}",
            dep.supernode_command(
                superlink=plan.address,
                root_certificates=dep.CA_CERT,
                private_key=dep.NODE_KEY,
                node_config=config,
                runtime_port=node_ports[index - 1],
            ),
            cwd=layout.supernode_dir(index),
            env=host_env(tmp_path / "hosts" / f"node-{index}" / "flwr-home"),
        )

    # 4. Operator: start the run (the runbook's `flwr run`) and follow its real status.
    # min-clients 3: the plan counts 4 key pairs, but only the 3 registered nodes can join.
    run_config = plan.run_config() | {"min-clients": 3} | SMALL_RUN_CONFIG
    try:
        run_id = submit_run(APP, run_config, operator_env)
    except AssertionError as exc:
        pytest.fail(failure(str(exc)))

    def state_done() -> bool:
        state = run_dir / STATE_FILE
        return state.exists() and json.loads(state.read_text())["completed_round"] == 2

    try:  # the refused node is reaped at once: its SuperExec watches for the parent to disappear
        status = follow_run(
            run_id,
            operator_env,
            watched={f"registered SuperNode {i}": nodes[i] for i in (1, 2, 3)},
            reaped=[nodes[4]],
            done=state_done,
            query_every_s=20,
        )
    except AssertionError as exc:
        pytest.fail(failure(str(exc)))
    if status is None or not status.succeeded:
        try:
            server_log = subprocess.run(
                ["flwr", "log", str(run_id), dep.CONNECTION_NAME, "--show"],
                env=operator_env,
                capture_output=True,
                text=True,
                timeout=300,
            ).stdout
        except subprocess.TimeoutExpired:
            server_log = "(flwr log did not answer within 300 s)"
        pytest.fail(failure(f"run {run_id}: {status}\n----- ServerApp log -----\n{server_log}"))
    # The operator's check from the runbook agrees (exit 0 only for finished:completed).
    waited = subprocess.run(
        [str(Path(sys.executable).parent / "fedids"), "deploy", "wait", str(run_id)],
        env=operator_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert waited.returncode == 0 and "finished:completed" in waited.stdout, waited.stdout + waited.stderr

    # The unregistered SuperNode was refused: Flower logs its exit code 305 ("Failed to activate
    # SuperNode"); the process itself exits with status 1, as every Flower error exit does.
    try:
        code = nodes[4].wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(failure("the unregistered SuperNode 4 is still running"))
    assert code == 1, failure(f"unregistered SuperNode exited with {code}")
    assert "Exit Code: 305" in processes.log("supernode-4")
    assert "Failed to activate SuperNode" in processes.log("supernode-4")
    assert "No SuperNode found with the given public key" in processes.log("superlink")

    # The server trained with exactly the 3 registered nodes for 2 rounds.
    state = json.loads((run_dir / STATE_FILE).read_text())
    history = state["history"]
    assert [h["round"] for h in history] == [1, 2], failure(str(history))
    assert all(h["clients"] == 3 and h["rejected"] == 0 for h in history), failure(str(history))

    # The global model improved: against the untrained model with the same initialisation, scaler and
    # labels (what the server starts from), on the server's test file. (Round 2 >= round 1 is not
    # asserted: with 3 tiny clients and 2 rounds it held in one configuration and not in another.)
    final = load_detector(run_dir / GLOBAL_DIR)
    test = prepare(load_flows([files[3]]).frame, window=5, test_fraction=0.5, split="time")
    rows = np.arange(len(test.labels))
    final_f1 = evaluate_rows(final, test, rows)["macro_f1"]
    untrained = Detector(new_model(len(final.vocabulary), 16, 0), final.scaler, final.vocabulary, 5, {})
    untrained_f1 = evaluate_rows(untrained, test, rows)["macro_f1"]
    # The saved model is the one scored: the round-2 aggregate with its head calibrated on the 3 nodes'
    # feature moments (query.features) after training, kept if the nodes' validation windows
    # (query.validate) do not score it worse.
    assert state["calibration"]["clients"] == 3 and state["calibration"]["rejected"] == 0, failure(str(state))
    assert state["calibration"]["validation"]["clients"] == 3, failure(str(state))
    assert final_f1 == pytest.approx(state["calibration"]["test"]["macro_f1"], abs=1e-9)
    assert state["calibration"]["before"]["macro_f1"] == pytest.approx(
        history[-1]["test"]["macro_f1"], abs=1e-9
    )
    assert final_f1 >= untrained_f1 + 0.15, (untrained_f1, history)

    # Each SuperNode wrote the final global model (sent once more after the last round) for its
    # detector to reload: exactly the server's final model, whose GRU is the round-2 aggregate the server
    # checkpointed (calibration refits only the head).
    with np.load(run_dir / CHECKPOINT_DIR / "round-0002.npz", allow_pickle=False) as saved:
        round2 = [saved[f"w{i}"] for i in range(sum(k.startswith("w") for k in saved.files))]
    for index in (1, 2, 3):
        received = load_detector(tmp_path / "hosts" / f"node-{index}" / "model")
        assert received.metadata.get("final") is True
        assert all(
            np.array_equal(a, b) for a, b in zip(get_weights(received.model), get_weights(final.model))
        )
        assert all(np.array_equal(a, b) for a, b in zip(get_weights(received.model)[:-2], round2[:-2]))
        assert received.vocabulary.labels == final.vocabulary.labels
        assert received.model.has_prototypes  # the server's class means, as it sent them
        assert torch.equal(received.model.prototypes, final.model.prototypes)
    assert not (tmp_path / "hosts" / "node-4" / "model").exists()
    print(
        f"\ndeployment integration test: {time.monotonic() - started:.0f} s, run {run_id}, "
        f"macro-F1 untrained {untrained_f1:.3f} -> round 1 {history[0]['test']['macro_f1']:.3f} -> "
        f"round 2 {history[1]['test']['macro_f1']:.3f} -> calibrated {final_f1:.3f}"
    )
