"""Three-tier deployment (issue 14, point 2): the site channel and the deployment material (fast), and on
loopback, every process real: 1 central SuperLink, 2 site aggregators (each its own SuperLink plus a
SuperNode toward the central one) and 2 device SuperNodes per site, TLS and node authentication on both
tiers, on real CICIDS2017 rows across the sites: 2 rounds in SecAgg (each site's uplink a SecAgg party) and 1
in BFV (each site seals its partial sum with the public context; only the devices decrypt), and an
unregistered device refused by its site (integration)."""

from __future__ import annotations

import json
import stat
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedids.errors import InputError
from fedids.federation import deployment as dep
from fedids.federation.config import FederationConfig
from fedids.federation.deployment import sites as ds
from fedids.federation.policy import PrivacyPolicy
from fedids.federation.site_app import SiteConfig
from fedids.federation.site_channel import (
    ChannelError,
    Envelope,
    SiteChannel,
    decode_envelope,
    encode_envelope,
)
from support.flower_processes import (
    SMALL_RUN_CONFIG,
    Processes,
    follow_run,
    free_ports,
    host_env,
    submit_run,
    wait_for_port,
    write_node_files,
)

# --------------------------------------------------------------------------------------------------
# The channel and the material (fast)


def test_envelopes_round_trip_through_flowers_protobuf_and_refuse_other_bytes():
    content = RecordDict(
        {"arrays": ArrayRecord({"w": Array(np.arange(6.0).reshape(2, 3))}), "config": ConfigRecord({"a": 1})}
    )
    back = decode_envelope(encode_envelope(Envelope("train", content, "")))
    assert back.message_type == "train" and back.error == ""
    assert np.array_equal(back.content.array_records["arrays"]["w"].numpy(), np.arange(6.0).reshape(2, 3))
    assert dict(back.content.config_records["config"]) == {"a": 1}
    for junk in (b"", b"\x80\x03}q\x00.", b"not protobuf at all"):  # a pickle among them: never loaded
        with pytest.raises(ValueError):
            decode_envelope(junk)


def test_channel_hands_a_request_to_the_server_side_and_back(tmp_path):
    channel = SiteChannel(tmp_path / "site")
    assert stat.S_IMODE((tmp_path / "site").stat().st_mode) == 0o700

    def serve() -> None:
        got = channel.next_request(10)
        assert got is not None
        ident, request = got
        total = request.content.array_records["v"]["x"].numpy().sum()
        channel.reply(ident, Envelope(request.message_type, RecordDict({"s": ConfigRecord({"sum": total})})))

    thread = threading.Thread(target=serve)
    thread.start()
    answer = channel.request(
        Envelope("query.stats", RecordDict({"v": ArrayRecord({"x": Array(np.ones(4))})})), 10
    )
    thread.join(10)
    assert answer.content.config_records["s"]["sum"] == 4.0
    assert not list((tmp_path / "site").iterdir())  # request and reply files removed


def test_channel_reports_an_error_or_silence_and_refuses_an_open_folder(tmp_path):
    channel = SiteChannel(tmp_path / "site")

    def fail() -> None:
        ident, request = channel.next_request(10) or ("", None)
        channel.reply(ident, Envelope("train", RecordDict(), "RuntimeError: no device answered"))

    thread = threading.Thread(target=fail)
    thread.start()
    with pytest.raises(ChannelError, match="no device answered"):
        channel.request(Envelope("train", RecordDict()), 10)
    thread.join(10)
    with pytest.raises(ChannelError, match="did not answer"):
        channel.request(Envelope("train", RecordDict()), 0.3)
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    with pytest.raises(PermissionError):
        SiteChannel(tmp_path / "open")


def test_site_run_config_is_checked_and_the_site_app_lists_every_key():
    from flwr.cli.config_utils import load_and_validate

    config, _ = load_and_validate(ds.SITE_APP_DIR / "pyproject.toml")
    assert config["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "fedids.federation.site_app:server_app",
        "clientapp": "fedids.federation.client_app:app",
    }
    run_config = config["tool"]["flwr"]["app"]["config"]
    assert SiteConfig.from_run_config(run_config) == SiteConfig()
    assert SiteConfig.from_run_config({"min-devices": 2, "timeout-s": 5}).timeout_s == 5.0
    for bad in ({"min-devices": 0}, {"robust": "nonsense"}, {"site-dir": 3}, {"other": 1}):
        with pytest.raises(ValueError):
            SiteConfig.from_run_config(bad)


def test_a_site_refuses_a_downgraded_sum_and_a_weak_secagg_round_before_any_key_leaves():
    """Against an active central server: a site published with ``secagg`` answers no sum asked for in
    another mode (its partial sum in the clear), and its uplink joins no SecAgg round with fewer parties
    than the run's sites or a threshold below fedids' for its size."""
    from fedids.federation import site_app as sa
    from fedids.privacy.secagg import SecAggConfig

    spec = ConfigRecord({"values": "real", "length": 4, "privacy": "none"})
    downgrade = Envelope("train", RecordDict({"sum": spec}))
    with pytest.raises(PermissionError, match="published with privacy secagg"):
        sa._site_sum(None, [1], downgrade, SiteConfig(privacy="secagg"))  # refused before any device is asked
    node = {"min-sites": 3}
    sa.check_site_secagg(SecAggConfig(n_clients=3, vector_length=1).to_dict(), node)
    weak = (
        SecAggConfig(n_clients=2, vector_length=1),
        SecAggConfig(n_clients=5, vector_length=1, threshold=3),
    )
    for config in weak:
        with pytest.raises(PermissionError, match="refused"):
            sa.check_site_secagg(config.to_dict(), node)
    with pytest.raises(ValueError, match="he\\+secagg"):
        SiteConfig.from_run_config({"privacy": "he+secagg"})
    with pytest.raises(ValueError, match="robust"):
        SiteConfig.from_run_config({"device-privacy": "secagg", "robust": "median"})
    with pytest.raises(ValueError, match="plain or secagg"):
        SiteConfig.from_run_config({"device-privacy": "masks"})


def test_central_app_is_derived_from_the_flat_app_with_site_aggregators_as_its_clients(tmp_path):
    from flwr.cli.config_utils import load_and_validate

    flat, _ = load_and_validate(dep.APP_DIR / "pyproject.toml")
    central, _ = load_and_validate(ds.write_central_app(tmp_path) / "pyproject.toml")
    flat_app, central_app = flat["tool"]["flwr"]["app"], central["tool"]["flwr"]["app"]
    assert central_app["components"] == {
        "serverapp": flat_app["components"]["serverapp"],
        "clientapp": "fedids.federation.site_app:client_app",
    }
    assert {k: v for k, v in central_app["config"].items() if k != "sites"} == {
        k: v for k, v in flat_app["config"].items() if k != "sites"
    }
    assert central_app["config"]["sites"] == 2


def test_init_with_sites_writes_both_tiers_keys_0600_and_the_runbook(tmp_path):
    out = tmp_path / "d"
    plan = dep.init_deployment(out, "198.51.100.1", nodes=5, sites=2, site_hosts=["10.0.1.1", "10.0.2.1"])
    assert ds.devices_per_site(5, 2) == [3, 2] and plan.sites == 2
    private = [out / "ca" / dep.CA_KEY, out / "superlink" / dep.SERVER_KEY] + [
        p for k, n in ((1, 3), (2, 2)) for p in ds.SiteLayout(out, k).private_files(n)
    ]
    assert len(private) == 2 + 2 * 2 + 5
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
    assert not list(out.glob("supernode-*"))  # no flat SuperNodes
    assert len(plan.fingerprints) == 2 + 5 and len(set(plan.fingerprints.values())) == 7
    policy = json.loads((ds.SiteLayout(out, 2).device_dir(2) / dep.POLICY_FILE).read_text())
    assert policy["sites"] == 2
    runbook = (out / dep.RUNBOOK).read_text()
    assert runbook.count("export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1") >= 6
    assert "flower-supernode --superlink 10.0.1.1:8000" in runbook  # a device of site 1
    assert "flower-supernode --superlink 198.51.100.1:8000" in runbook  # a site's uplink
    assert str(ds.SITE_APP_DIR) in runbook and str(out / "operator" / ds.CENTRAL_APP) in runbook
    assert "sites=2" in runbook and "min-clients=2" in runbook
    for k, n in ((1, 3), (2, 2)):
        for j in range(1, n + 1):
            assert f"flwr supernode register {ds.SiteLayout(out, k).device_public_key(j)} fedids" in runbook
    assert "PRIVATE KEY" not in runbook
    assert dep.load_plan(out) == plan
    # the central run counts a site's partial sum as its largest site's devices; an uplink's SecAgg floor
    assert plan.run_config()["site-devices"] == 3 and ds.uplink_node_config(plan, 1)["min-sites"] == 2
    with pytest.raises(InputError, match="already exists"):
        dep.init_deployment(out, "198.51.100.1", nodes=5, sites=2, site_hosts=["10.0.1.1", "10.0.2.1"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sites": 2, "site_hosts": ["a.example"]}, "one --site-host per site"),
        ({"sites": 4, "site_hosts": ["a", "b", "c", "d"]}, "between 2 and the 3"),
        ({"sites": 2, "site_hosts": ["a.example", "bad host"]}, "superlink-host"),
    ],
)
def test_bad_site_requests_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        dep.init_deployment(tmp_path / "d", "central.example", nodes=3, **kwargs)
    assert not (tmp_path / "d").exists()


def test_cli_init_with_sites_exits_2_on_bad_input(tmp_path):
    import sys

    fedids = Path(sys.executable).parent / "fedids"
    base = [str(fedids), "deploy", "init", "--out", str(tmp_path / "d"), "--superlink-host", "10.0.0.1"]
    ok = subprocess.run(
        [*base, "--nodes", "4", "--sites", "2", "--site-host", "10.0.1.1", "--site-host", "10.0.2.1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "site-1" in ok.stdout and "PRIVATE KEY" not in ok.stdout
    bad = subprocess.run(
        [*base, "--nodes", "4", "--sites", "2", "--site-host", "10.0.1.1", "--force"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------------------------------
# Integration: every process real, on loopback


def _register(processes: Processes, keys: dict[str, tuple[Path, dict]], cwd: Path) -> None:
    """``flwr supernode register`` of every key (in parallel: each `flwr` start costs seconds)."""
    started = {
        name: processes.start(name, dep.register_command(pub), cwd=cwd, env=env)
        for name, (pub, env) in keys.items()
    }
    for name, proc in started.items():
        code = proc.wait(timeout=180)
        output = processes.log(name)
        assert code == 0 and dep.parse_json_output(output)["success"], output


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("privacy", "rounds"), [("secagg", 2), ("he", 1)])
def test_central_superlink_two_sites_and_four_devices_train_and_a_site_refuses_an_unregistered_device(
    tmp_path, processes, privacy, rounds
):
    """``he`` across deployed sites was broken with more than one device per site until the runbook's
    ``site-devices`` sized the central fixed-point code for them (docs/deployment.md). The test's time is
    in Flower's polling (every 3 s at each of two tiers, per exchange) and the ClientApp processes started
    for every message, not in training: ``he`` runs one round, which shows that bug as well as two."""
    import torch

    from fedids.federation.server_app import GLOBAL_DIR, STATE_FILE
    from fedids.model.artifacts import load_detector
    from fedids.model.train import get_weights
    from fedids.privacy.keys import init_keys

    started = time.monotonic()
    central_port, site_ports, uplink_ports, device_ports = (lambda p: (p[0], p[1:3], p[3:5], p[5:10]))(
        free_ports(10)
    )
    files = write_node_files(tmp_path, parts=5)  # 4 devices' flows + the central server's test file
    run_dir = tmp_path / "central-run"
    plan = dep.init_deployment(
        tmp_path / "deploy",
        "127.0.0.1",
        nodes=4,
        port=central_port,
        test_data=str(files[4]),
        run_dir=str(run_dir),
        rounds=rounds,
        sites=2,
        site_hosts=["127.0.0.1", "127.0.0.1"],
        site_ports=site_ports,
    )
    root = Path(plan.root)
    site_layouts = {k: ds.SiteLayout(root, k) for k in (1, 2)}
    # he: the devices hold the secret context (out of band), the sites and the central server the public one
    keys = init_keys(tmp_path / "keys", "he") if privacy == "he" else None
    secret = {"he-secret-context": str(keys.secret_context)} if keys else {}
    public = {"he-public-context": str(keys.public_context)} if keys else {}
    # the operator publishes the run's mode to every device and to each site's run
    policy = PrivacyPolicy.from_config(
        FederationConfig(
            rounds=rounds,
            min_clients=2,
            sites=2,
            privacy=privacy,
            he_public_context=public.get("he-public-context", ""),
        )
    )
    for site in site_layouts.values():
        for j in (1, 2):
            policy.save(site.device_dir(j) / dep.POLICY_FILE)
    central_env = host_env(plan.layout.flwr_home)
    site_env = {k: host_env(s.flwr_home) for k, s in site_layouts.items()}

    failure = processes.failure

    # 1. Three SuperLinks (TLS + node authentication), each the runbook's command in its own folder.
    links = {"central": (plan.layout.superlink_dir, central_port)} | {
        f"site-{k}": (s.superlink_dir, site_ports[k - 1]) for k, s in site_layouts.items()
    }
    for name, (folder, port) in links.items():
        processes.start(
            f"superlink-{name}",
            dep.superlink_command(
                ca_cert=dep.CA_CERT, cert=dep.SERVER_CERT, key=dep.SERVER_KEY, host="127.0.0.1", port=port
            ),
            cwd=folder,
            env=host_env(tmp_path / "hosts" / name / "superlink"),
        )
    for name, (_, port) in links.items():
        try:
            wait_for_port(port, processes.procs[f"superlink-{name}"], 120)
        except AssertionError as exc:
            pytest.fail(failure(str(exc)))
    marks = {"superlinks": time.monotonic()}

    # 2. Registrations: the sites' uplink keys on the central SuperLink, each site's devices on its own.
    keys = {f"register-site-{k}": (ds.site_public_key(root, k), central_env) for k in (1, 2)}
    keys |= {
        f"register-site-{k}-device-{j}": (s.device_public_key(j), site_env[k])
        for k, s in site_layouts.items()
        for j in (1, 2)
    }
    try:
        _register(processes, keys, tmp_path)
    except AssertionError as exc:
        pytest.fail(failure(str(exc)))
    marks["registered"] = time.monotonic()

    # 3. Devices (the flat ClientApp, TLS to their site's SuperLink), and one device whose key no site knows.
    devices = {}
    for k, site in site_layouts.items():
        for j in (1, 2):
            index = 2 * (k - 1) + j
            config = (
                ds.device_node_config(plan, k, j)
                | {
                    "data-path": str(files[index - 1]),
                    "model-dir": str(tmp_path / "hosts" / f"site-{k}-device-{j}" / "model"),
                }
                | secret
            )
            devices[(k, j)] = processes.start(
                f"site-{k}-device-{j}",
                dep.supernode_command(
                    superlink=ds.site_address(plan, k),
                    root_certificates=dep.CA_CERT,
                    private_key=dep.NODE_KEY,
                    node_config=config,
                    runtime_port=device_ports[index - 1],
                ),
                cwd=site.device_dir(j),
                env=host_env(tmp_path / "hosts" / f"site-{k}-device-{j}" / "flwr-home"),
            )
    stranger_dir = tmp_path / "stranger"
    stranger_dir.mkdir(mode=0o700)
    key = dep.create_node_key()
    (stranger_dir / dep.NODE_KEY).write_bytes(dep.encode_node_private_key(key))
    (stranger_dir / dep.NODE_KEY).chmod(0o600)
    stranger = processes.start(
        "stranger-device",
        dep.supernode_command(
            superlink=ds.site_address(plan, 1),
            root_certificates=site_layouts[1].superlink_dir / dep.CA_CERT,
            private_key=dep.NODE_KEY,
            node_config={"data-path": str(files[0]), "model-dir": str(stranger_dir / "model")},
            runtime_port=device_ports[4],
        ),
        cwd=stranger_dir,
        env=host_env(stranger_dir / "flwr-home"),
    )

    # 4. Each site's long-lived run on its SuperLink, then its SuperNode toward the central SuperLink.
    site_dirs = {k: tmp_path / "hosts" / f"site-{k}" / "channel" for k in (1, 2)}
    for k, site in site_layouts.items():
        site_config = (
            ds.site_run_config(plan, k)
            | {
                "site-dir": str(site_dirs[k]),
                "timeout-s": 600.0,
                "privacy": privacy,
            }
            | public
        )
        try:
            submit_run(ds.SITE_APP_DIR, site_config, site_env[k])
        except AssertionError as exc:
            pytest.fail(failure(f"site {k}: flwr run failed\n{exc}"))
        processes.start(
            f"site-{k}-uplink",
            dep.supernode_command(
                superlink=plan.address,
                root_certificates=dep.CA_CERT,
                private_key=dep.NODE_KEY,
                node_config=ds.uplink_node_config(plan, k)
                | {"site-dir": str(site_dirs[k]), "timeout-s": 600.0},
                runtime_port=uplink_ports[k - 1],
            ),
            cwd=site.uplink_dir,
            env=host_env(tmp_path / "hosts" / f"site-{k}" / "uplink-flwr-home"),
        )

    marks["sites submitted"] = time.monotonic()
    # 5. The central run (2 sites as its clients), followed to its real end.
    # calibration none: two fewer exchanges through both tiers (the test's time is in process starts)
    run_config = plan.run_config() | SMALL_RUN_CONFIG | {"calibration": "none", "privacy": privacy} | public
    try:
        run_id = submit_run(plan.app_dir, run_config, central_env)
    except AssertionError as exc:
        pytest.fail(failure(f"central: flwr run failed\n{exc}"))
    marks["central submitted"] = time.monotonic()

    def done() -> bool:
        state = run_dir / STATE_FILE
        return (
            state.exists()
            and json.loads(state.read_text())["completed_round"] == rounds
            and all(
                (tmp_path / "hosts" / f"site-{k}-device-{j}" / "model" / "metadata.json").exists()
                for k, j in devices
            )
        )

    try:
        status = follow_run(
            run_id,
            central_env,
            watched={f"registered device {name}": proc for name, proc in devices.items()},
            reaped=[stranger],
            done=done,
            query_every_s=30,
        )
    except AssertionError as exc:
        pytest.fail(failure(str(exc)))
    if status is None or not status.succeeded:
        pytest.fail(failure(f"central run {run_id}: {status}"))
    marks["central run done"] = time.monotonic()

    # The central server trained with the 2 sites for every round.
    state = json.loads((run_dir / STATE_FILE).read_text())
    assert [h["round"] for h in state["history"]] == list(range(1, rounds + 1)), failure(
        str(state["history"])
    )
    assert all(h["clients"] == 2 and h["rejected"] == 0 for h in state["history"]), failure(
        str(state["history"])
    )

    # Every device ends with the same global model: the central server's final one; under he the server
    # never held it in the clear (only the devices decrypt), so the devices agree with each other.
    if privacy == "he":
        assert not (run_dir / GLOBAL_DIR).exists()
        final = load_detector(tmp_path / "hosts" / "site-1-device-1" / "model")
    else:
        final = load_detector(run_dir / GLOBAL_DIR)
    for k, j in devices:
        received = load_detector(tmp_path / "hosts" / f"site-{k}-device-{j}" / "model")
        assert received.metadata.get("final") is True, (k, j)
        assert all(
            np.array_equal(a, b) for a, b in zip(get_weights(received.model), get_weights(final.model))
        ), (k, j)
        assert received.vocabulary.labels == final.vocabulary.labels
        # and the same prototype head (none here: calibration none, so there are no summed moments)
        assert received.model.has_prototypes is final.model.has_prototypes is False, (k, j)
        assert torch.equal(received.model.prototypes, final.model.prototypes), (k, j)
        assert torch.equal(received.model.prototype_offset, final.model.prototype_offset), (k, j)

    # The unregistered device was refused by site 1's SuperLink (Flower exit code 305, process status 1).
    try:
        code = stranger.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(failure("the unregistered device is still running"))
    assert code == 1 and "Exit Code: 305" in processes.log("stranger-device"), failure(f"exit {code}")
    assert "No SuperNode found with the given public key" in processes.log("superlink-site-1")
    assert not (stranger_dir / "model").exists()
    for k in (1, 2):  # the site runs end on their stop file
        (site_dirs[k] / "stop").touch()
    scores = [h["test"]["macro_f1"] for h in state["history"]]  # NaN under he: the server cannot score
    print(
        f"\nthree-tier deployment test ({privacy}): {time.monotonic() - started:.0f} s, central run {run_id}, "
        f"server's macro-F1 by round {scores}; seconds to "
        + ", ".join(f"{name} {t - started:.0f}" for name, t in marks.items())
    )
