"""Three tiers (devices -> site aggregators -> central server) inside Flower's real simulation engine.

Every exchange is a sum, so without a defence the three-tier run must end on the flat run's model, in the
plaintext mode up to the float32 rounding of the sites' partial sums and in a sealed mode up to the
fixed-point code; each site must only ever receive its own devices' contributions; and the tiers' bytes
must be recorded.
"""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fedids.federation import sites
from fedids.federation.server_app import FederationConfig
from fedids.federation.simulation import make_partitions, run_simulated
from fedids.privacy.keys import init_keys
from support.federation_rows import portscan_and_ddos_rows

pytestmark = pytest.mark.slow
CONFIG = dict(rounds=2, min_clients=1, hidden=8, window=4, batch_size=128, lr=1e-2, seed=3)
SITES = [0, 0, 1, 1]


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """Real CICIDS2017 rows with label skew over 4 clients; the flat plaintext run as the reference."""
    torch.set_num_threads(1)
    prepared = portscan_and_ddos_rows()
    parts = make_partitions(prepared, 4, "shared:0.5", seed=0, segment=40)
    assert all(len(p) for p in parts)
    out = tmp_path_factory.mktemp("sites")
    state = run_simulated(prepared, parts, FederationConfig(**CONFIG), out / "flat")
    return prepared, parts, out, state


def _final_weights(run_dir: Path) -> np.ndarray:
    state = torch.load(run_dir / "global" / "model.pt", map_location="cpu", weights_only=True)
    return np.concatenate([v.numpy().ravel() for v in state.values()])


def test_plaintext_three_tiers_end_on_the_flat_model_and_sites_see_only_their_devices(
    federation, monkeypatch
):
    prepared, parts, out, flat = federation
    seen: list[tuple[int, int]] = []
    site_of_node: dict[int, int] = {}
    receive, assign = sites.SiteAggregator.receive, sites.node_sites

    def recording_receive(self, node, vector, check=None):
        seen.append((self.site, node))
        return receive(self, node, vector, check)

    def recording_assign(keys, k, site_of_key=None):
        site_of_node.update(assign(keys, k, site_of_key))
        assert {keys[n]: s for n, s in site_of_node.items()} == site_of_key
        return dict(site_of_node)

    monkeypatch.setattr(sites.SiteAggregator, "receive", recording_receive)
    monkeypatch.setattr(sites, "node_sites", recording_assign)
    state = run_simulated(prepared, parts, FederationConfig(**CONFIG, sites=2), out / "none", sites=SITES)

    # equal up to float32 summation order (two tiers of weighted sums against one)
    np.testing.assert_allclose(
        _final_weights(out / "none"), _final_weights(out / "flat"), rtol=1e-5, atol=1e-6
    )
    assert state.calibration["test"]["macro_f1"] == pytest.approx(flat.calibration["test"]["macro_f1"])
    # every site received exactly its own devices' contributions: 2 rounds + the 2 calibration sums
    assert seen and all(site_of_node[node] == site for site, node in seen)
    for node in site_of_node:
        assert sum(1 for s, n in seen if n == node) == 4, node
    tiers = state.history[-1]["tiers"]
    assert tiers["sites"] == 2 and tiers["lan"]["bytes_up"] == flat.history[-1]["bytes_up"]
    # WAN: one float32 contribution per site instead of one float32 model per device: about K/N of the
    # flat run's uploads (the contribution carries the head rows twice, weights and metrics beside them)
    assert tiers["wan"]["bytes_up"] == state.history[-1]["bytes_up"] > 0
    k_over_n = 2 / flat.history[-1]["clients"]
    assert tiers["wan"]["bytes_up"] <= 1.1 * k_over_n * flat.history[-1]["bytes_up"]
    assert "tiers" not in flat.history[-1]  # the flat run records what it always has


def test_he_across_sites_ends_on_the_flat_model_up_to_the_fixed_point_code(federation, tmp_path):
    """The sites encrypt their partial sums with the public context (no secret key at a site or the
    central server); the devices open the sum: the same model as the flat plaintext run."""
    prepared, parts, out, flat = federation
    keys = init_keys(tmp_path / "keys", "he")
    config = FederationConfig(**CONFIG, sites=2, privacy="he", he_public_context=str(keys.public_context))
    state = run_simulated(
        prepared, parts, config, tmp_path / "he", he_secret_context=str(keys.secret_context), sites=SITES
    )
    assert [h["clients"] for h in state.history] == [4, 4]
    assert np.max(np.abs(_final_weights(tmp_path / "he") - _final_weights(out / "flat"))) <= 1e-4
    assert state.calibration["kept"] == flat.calibration["kept"]
    tiers = state.history[-1]["tiers"]
    # two BFV ciphertext blobs go over the WAN where four devices' would go flat
    assert 0 < tiers["wan"]["bytes_up"] < tiers["lan"]["bytes_up"] * 4


def test_a_site_refuses_a_device_of_another_site():
    site = sites.SiteAggregator(0, [1, 2], length=3)
    site.receive(1, np.zeros(3))
    with pytest.raises(ValueError, match="another site"):
        site.receive(7, np.zeros(3))
    with pytest.raises(ValueError, match="second vector"):
        site.receive(1, np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        site.receive(2, np.array([0.0, np.nan, 0.0]))


def test_sites_are_contiguous_or_follow_gateway_subnets():
    assert sites.assign_sites(10, 2) == [0] * 5 + [1] * 5
    assert sites.assign_sites(5, 2) == [0, 0, 0, 1, 1]
    gateways = ["10.0.3.0/24", "10.0.1.0/24", "10.0.4.0/24", "10.0.2.0/24"]
    assert sites.assign_sites(4, 2, gateways) == [1, 0, 1, 0]
    assert sites.main_gateways([np.array(["10.0.1.5", "10.0.1.9", "10.0.2.1"])]) == ["10.0.1.0/24"]
    with pytest.raises(ValueError, match="--sites 5"):
        sites.assign_sites(4, 5)
    assert sites.node_sites({11: "b", 10: "a", 12: "c"}, 2) == {10: 0, 11: 0, 12: 1}
    assert sites.node_sites({10: "a"}, 1) == {}


def test_a_device_sends_its_site_a_plaintext_vector_only_in_a_run_published_with_sites(tmp_path):
    from fedids.federation.policy import PolicyViolation, PrivacyPolicy, check_sum_mode

    config = FederationConfig(privacy="secagg+dp", noise_multiplier=1.0)
    with pytest.raises(PolicyViolation, match="differs"):
        check_sum_mode(PrivacyPolicy.from_config(config), "none")
    tiered = PrivacyPolicy.from_config(FederationConfig(**{**config.__dict__, "sites": 2}))
    check_sum_mode(tiered, "none")  # the site's trust domain
    with pytest.raises(PolicyViolation):
        check_sum_mode(tiered, "he")  # nothing else weaker than the policy
    # a policy file written before sites existed still loads (flat)
    path = tmp_path / "policy.json"
    PrivacyPolicy.from_config(config).save(path)
    text = path.read_text().replace('"sites": 0', '"unused": 0').replace(',\n  "unused": 0', "")
    assert "sites" not in text
    path.write_text(text)
    assert PrivacyPolicy.load(path).sites == 0


def test_secagg_among_a_sites_devices_hides_each_vector_from_the_site(federation, tmp_path, monkeypatch):
    """``--site-privacy secagg``: each site runs SecAgg with its (three) devices and learns only their
    sum, sealed under ``he`` for the central server. No device vector ever reaches a site, and the run
    ends on the model of the same run with plaintext device -> site vectors, up to the fixed-point codes."""
    prepared = federation[0]
    parts = make_partitions(prepared, 6, "shared:0.5", seed=0, segment=40)
    keys = init_keys(tmp_path / "keys", "he")
    base = dict(CONFIG, sites=2, privacy="he", he_public_context=str(keys.public_context))
    six_sites = [0, 0, 0, 1, 1, 1]

    def run(site_privacy: str) -> dict:
        config = FederationConfig(**base, site_privacy=site_privacy)
        out = tmp_path / site_privacy
        secret = str(keys.secret_context)
        state = run_simulated(prepared, parts, config, out, he_secret_context=secret, sites=six_sites)
        return {"state": state, "weights": _final_weights(out)}

    plain = run("plain")
    received: list[int] = []
    receive = sites.SiteAggregator.receive
    monkeypatch.setattr(
        sites.SiteAggregator,
        "receive",
        lambda self, node, v, c=None: received.append(node) or receive(self, node, v, c),
    )
    masked = run("secagg")
    assert received == []  # the sites only ever held SecAgg sums
    assert [h["clients"] for h in masked["state"].history] == [6, 6]
    assert np.max(np.abs(masked["weights"] - plain["weights"])) <= 1e-3
    tiers = masked["state"].history[-1]["tiers"]
    assert tiers["lan"]["bytes_up"] > 0 and tiers["wan"]["bytes_up"] > 0


def test_site_privacy_secagg_is_checked_by_the_config_and_by_every_device():
    from fedids.federation.policy import PolicyViolation, PrivacyPolicy, check_secagg, check_sum_mode
    from fedids.federation.site_app import check_central_config

    with pytest.raises(ValueError, match="sites K >= 2"):
        FederationConfig(privacy="secagg", site_privacy="secagg")
    with pytest.raises(ValueError, match="in the clear"):
        FederationConfig(sites=2, privacy="dp", noise_multiplier=1.0, site_privacy="secagg")
    with pytest.raises(ValueError, match="robust"):
        FederationConfig(sites=2, privacy="secagg", site_privacy="secagg", robust="median")
    with pytest.raises(ValueError, match="site-privacy"):
        FederationConfig(sites=2, privacy="secagg", site_privacy="masks")
    with pytest.raises(ValueError, match="fraction 1"):
        FederationConfig(sites=2, privacy="secagg", site_privacy="secagg", fraction_train=0.5)
    config = FederationConfig(sites=2, privacy="secagg", site_privacy="secagg")
    from fedids.pipelines.federate import FederateRequest

    with pytest.raises(ValueError, match="at least 3 devices per site"):
        FederateRequest(config=config, out_dir=Path("unused"), clients=5, partition="iid")
    FederateRequest(config=config, out_dir=Path("unused"), clients=6, partition="iid")
    deployed = SimpleNamespace(**{**config.__dict__, "privacy": "he", "energy_managed": False})  # as deployed
    with pytest.raises(ValueError, match="site-devices"):
        check_central_config(deployed)  # the runbook passes the largest site's devices
    check_central_config(SimpleNamespace(**{**deployed.__dict__, "site_devices": 3}))
    policy = PrivacyPolicy.from_config(config)
    # a site that asks for a device's vector in the clear is refused; a SecAgg sum is what it may ask
    with pytest.raises(PolicyViolation, match="in the clear"):
        check_sum_mode(policy, "none")
    check_sum_mode(policy, "secagg")
    with pytest.raises(PolicyViolation, match="differs"):
        check_sum_mode(policy, "he")  # nothing else: the flat statistics round is sealed as the run says
    state: dict = {}
    with pytest.raises(PolicyViolation, match="secure aggregation over 2"):
        check_secagg(policy, 2, 2, state)  # two devices would each learn the other's vector
    check_secagg(policy, 3, 3, state)
    he_plain_sites = dataclasses.replace(policy, privacy="he", site_privacy="plain")
    with pytest.raises(PolicyViolation, match="secure aggregation requested"):
        check_secagg(he_plain_sites, 3, 3, state)
