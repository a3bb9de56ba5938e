"""The sites' defence of the head calibration's moments (fedids.federation.robust_moments): a device whose
labels the global head disputes is left out, honest devices are summed as they are, and in a real
three-tier simulation a label-flipping device is left out of its site's moments."""

import numpy as np
import pytest

from fedids.federation.calibration import class_moments, moments_vector
from fedids.federation.robust_moments import (
    agreement,
    benign_agreement,
    moments_defence,
    peer_agreement,
    robust_moments,
)

C, H = 3, 4
HEAD = (np.eye(C, H) * 4.0, np.zeros(C))  # class k <-> feature direction k
TOTALS = np.array([400.0, 120.0, 60.0])


def _features(classes: list[int], rng: np.random.Generator) -> np.ndarray:
    return np.eye(C, H)[classes] * 2.0 + rng.normal(0.0, 0.3, (len(classes), H))


def _device(counts: dict[int, int], seed: int, flip: bool = False) -> np.ndarray:
    """A device's moments vector: ``counts`` windows per true class; ``flip``: attack windows labelled 0
    (BENIGN), benign windows labelled 1 (label-flip)."""
    rng = np.random.default_rng(seed)
    truth = np.concatenate([np.full(n, k) for k, n in counts.items()])
    labels = np.where(truth == 0, 1, 0) if flip else truth
    return moments_vector(class_moments(_features(list(truth), rng), labels, C), TOTALS)


def test_a_device_honest_in_its_first_block_and_flipped_in_its_head_block_is_left_out():
    """The moments' second block (head windows) feeds the prototype head: a device cannot pass the check on
    its first block and skew the prototype head through the second."""
    honest = [_device({0: 80, 1: 20}, 1), _device({0: 50, 2: 10}, 2), _device({0: 70, 1: 5, 2: 5}, 4)]
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], [90, 10])
    real = class_moments(_features(list(labels), rng), labels, C)
    skewed = class_moments(_features(list(np.where(labels == 0, 2, 0)), rng), labels, C)  # same counts
    device = moments_vector(real, TOTALS, skewed)
    assert robust_moments([*honest, moments_vector(real, TOTALS)], C, H, HEAD, TOTALS)[1].left_out == []
    total, record = robust_moments([*honest, device], C, H, HEAD, TOTALS)
    assert record.left_out == [3]
    np.testing.assert_allclose(total, np.sum(honest, axis=0))


def test_agreement_is_the_share_of_windows_in_classes_the_head_reads_as_labelled():
    honest = [_device({0: 80, 1: 20}, 1), _device({0: 50, 2: 10}, 2)]
    flipped = _device({0: 90, 1: 10}, 3, flip=True)
    v = np.asarray([*honest, flipped]) * 1.0
    counts = v[:, :C] * TOTALS
    sums = v[:, C : C * (1 + H)].reshape(3, C, H) * TOTALS[:, None]
    assert agreement(counts, sums, HEAD).tolist() == [1.0, 1.0, 0.0]
    assert np.isnan(agreement(np.zeros((1, C)), np.zeros((1, C, H)), HEAD)[0])


def test_a_label_flipping_device_is_left_out_and_honest_ones_are_summed():
    honest = [_device({0: 80, 1: 20}, 1), _device({0: 50, 2: 10}, 2), _device({0: 70, 1: 5, 2: 5}, 4)]
    flipped = _device({0: 90, 1: 10}, 3, flip=True)
    total, record = robust_moments([*honest, flipped], C, H, HEAD, TOTALS)
    assert record.left_out == [3] and record.devices == 4
    np.testing.assert_allclose(total, np.sum(honest, axis=0))
    # without an attacker the site's contribution is the plain sum
    total, record = robust_moments(honest, C, H, HEAD, TOTALS)
    assert record.left_out == [] and np.array_equal(total, np.sum(honest, axis=0))
    combined, as_dict = moments_defence(C, H, HEAD, TOTALS)([*honest, flipped])
    assert as_dict["left_out"] == [3] and np.array_equal(combined, np.sum(honest, axis=0))


def test_the_only_holder_of_a_class_the_head_misreads_is_not_left_out():
    """A head poisoned on class 2 (it reads class-2 features as class 0) disputes every window of the
    site's only class-2 holder; since it misreads class 2 for every device, that does not count."""
    poisoned = (np.array([[4.0, 0, 4.0, 0], [0, 4.0, 0, 0], [0, 0, 0, 0]]), np.zeros(C))
    devices = [_device({0: 80, 1: 20}, 1), _device({2: 50}, 2), _device({0: 50, 1: 10}, 4)]
    total, record = robust_moments(devices, C, H, poisoned, TOTALS)
    assert record.left_out == [] and record.agreement[1] is None
    np.testing.assert_allclose(total, np.sum(devices, axis=0))


def _counts_and_sums(vectors: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vectors)
    return v[:, :C] * TOTALS, v[:, C : C * (1 + H)].reshape(len(v), C, H) * TOTALS[:, None]


def test_peers_dispute_a_flipper_without_any_head():
    """The peer check reads the flipper from its site's other devices alone: its BENIGN mean lies at the
    others' attack mean and its attack mean at their BENIGN mean. The only holder of class 2 agrees (it is
    its own reference), and a head that misreads everything changes nothing."""
    honest = [_device({0: 80, 1: 20}, 1), _device({0: 50, 2: 10}, 2), _device({0: 70, 1: 5}, 4)]
    flipped = _device({0: 90, 1: 10}, 3, flip=True)
    counts, sums = _counts_and_sums([*honest, flipped])
    assert peer_agreement(counts, sums).tolist() == [1.0, 1.0, 1.0, 0.0]
    wrong_head = (np.roll(HEAD[0], 1, axis=0), HEAD[1])
    total, record = robust_moments([*honest, flipped], C, H, wrong_head, TOTALS, check="peers")
    assert record.left_out == [3]
    np.testing.assert_allclose(total, np.sum(honest, axis=0))
    assert robust_moments([*honest, flipped], C, H, wrong_head, TOTALS)[1].left_out != [3]  # head check


def test_peers_follow_the_majority_of_a_class_holders_not_the_head():
    """Two flippers of five devices: each class's reference is the median of its holders' means, so the
    three honest devices hold it; a device with no window is NaN."""
    honest = [_device({0: 60, 1: 20}, seed) for seed in (1, 2, 4)]
    flipped = [_device({0: 60, 1: 20}, seed, flip=True) for seed in (5, 6)]
    counts, sums = _counts_and_sums([*honest, *flipped])
    assert peer_agreement(counts, sums).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert np.isnan(peer_agreement(np.zeros((1, C)), np.zeros((1, C, H)))[0])


def test_the_benign_check_finds_two_flippers_that_hold_most_of_a_class():
    """Two flippers and one honest device hold class 1: the class's peer reference is the flippers'
    benign mean, so the peer check disputes the honest holder and passes the flippers; the benign check,
    which reads every class mean only by its distance to the site's BENIGN reference, finds the two."""
    honest = [_device({0: 80, 1: 20}, 1), _device({0: 50, 2: 10}, 2), _device({0: 70, 2: 5}, 4)]
    flipped = [_device({0: 60, 1: 20}, seed, flip=True) for seed in (5, 6)]
    counts, sums = _counts_and_sums([*honest, *flipped])
    assert benign_agreement(counts, sums).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert peer_agreement(counts, sums)[0] < 1.0  # the honest class-1 holder is disputed by its peers
    total, record = robust_moments([*honest, *flipped], C, H, HEAD, TOTALS, check="benign")
    assert record.left_out == [3, 4]
    np.testing.assert_allclose(total, np.sum(honest, axis=0))


def test_the_benign_check_disputes_nobody_where_attacks_do_not_stand_apart():
    """Where the site's attack means lie no farther from its benign reference than its benign means (an
    untrained body that maps everything together), nobody is disputed; a device with no window is NaN."""
    same = [_device({0: 50, 1: 10}, seed) for seed in (1, 2, 3)]
    v = np.asarray(same)
    counts = v[:, :C] * TOTALS
    sums = np.repeat(np.ones((3, 1, H)), C, axis=1) * counts[..., None]  # every class mean at [1, .., 1]
    assert benign_agreement(counts, sums).tolist() == [1.0, 1.0, 1.0]
    assert np.isnan(benign_agreement(np.zeros((1, C)), np.zeros((1, C, H)))[0])


@pytest.mark.parametrize("check", ["head", "peers", "benign"])
def test_moments_that_are_not_numbers_are_left_out_not_summed(check):
    """A device that sends NaN or infinite moments is left out of its site's sum under either check, and
    the honest devices' sum is what the site passes on."""
    honest = [_device({0: 80, 1: 20}, 1), _device({0: 50, 2: 10}, 2), _device({0: 70, 1: 5}, 4)]
    broken = _device({0: 60, 1: 10}, 5)
    broken[C + 1], broken[-1] = np.nan, np.inf
    total, record = robust_moments([*honest, broken], C, H, HEAD, TOTALS, check=check)
    assert record.left_out == [3] and record.agreement[3] is None
    np.testing.assert_allclose(total, np.sum(honest, axis=0))


def test_malformed_moments_are_refused():
    with pytest.raises(ValueError, match="moments vectors"):
        robust_moments([np.zeros(7)], C, H, HEAD, TOTALS)
    with pytest.raises(ValueError, match="moments vectors"):
        robust_moments([], C, H, HEAD, TOTALS)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="session 25: since clients train on every attack flow (benign-only validation slice), the "
    "global head reads the BENIGN class mean of every device at the flipper's site as PortScan from round 4, "
    "so BENIGN no longer counts (robust_moments.agreement) and screening never disputes the flipper "
    "(docs/evaluation.md, three tiers)",
)
def test_sites_leave_a_label_flipping_device_out_of_rounds_and_calibration(tmp_path):
    """Real simulation, real rows: 6 devices in 2 sites of 3 under --robust median, device 0 flips its
    labels. From round 2 the sites check their devices before every round (federation.screening): a
    device is left out of a round only when two checks in a row dispute it, so the young model's one-off
    misreadings of honest devices leave nobody out, and the flipper is left out of the last round. Its
    site also leaves it out of the head calibration's moments sum."""
    import torch

    from fedids.federation.attacks import Attack
    from fedids.federation.server_app import FederationConfig
    from fedids.federation.simulation import make_partitions, run_simulated
    from support.federation_rows import portscan_and_ddos_rows

    torch.set_num_threads(1)
    prepared = portscan_and_ddos_rows()
    parts = make_partitions(prepared, 6, "iid", seed=0, segment=40)
    config = FederationConfig(
        rounds=5,
        min_clients=1,
        hidden=8,
        window=4,
        batch_size=128,
        lr=1e-2,
        seed=3,
        sites=2,
        robust="median",
        screening=2,  # off by default
    )
    attacks = {0: Attack.parse("label-flip")}
    state = run_simulated(
        prepared, parts, config, tmp_path / "run", attacks=attacks, sites=[0, 0, 0, 1, 1, 1]
    )
    screened = [(h.get("tiers") or {}).get("screening") for h in state.history]
    assert screened[0] is None and all(s is not None for s in screened[1:])  # from round 2 on
    left_out = [[key for site in s["sites"] for key in site["left_out"]] for s in screened[1:]]
    assert left_out[-1] == ["partition-0000"] and {k for keys in left_out for k in keys} == {"partition-0000"}
    assert [h["clients"] for h in state.history][-1] == 5
    disputed = [key for s in screened[1:] for site in s["sites"] for key in site["disputed"]]
    assert len(disputed) > len(left_out[-1])  # disputed once: honest devices the young model misread
    defence = state.calibration["site_defence"]
    assert [d["site"] for d in defence] == [0, 1]
    assert defence[0]["left_out"] == ["partition-0000"], defence  # by client key
    assert min(defence[0]["agreement"]) < 0.5 * max(defence[0]["agreement"]), defence
    # the per-device lists come with the devices' names, in the same order
    agreement = dict(zip(defence[0]["nodes"], defence[0]["agreement"]))
    assert sorted(agreement) == ["partition-0000", "partition-0001", "partition-0002"], defence
    assert min(agreement, key=lambda k: agreement[k] if agreement[k] is not None else 2.0) == "partition-0000"
    last = screened[-1]["sites"][0]  # the flipper is checked before it is left out of the round
    assert sorted(last["nodes"]) == sorted(agreement), last
    assert len(last["agreement"]) == 3, last


def test_a_deployed_site_defends_the_moments_only_where_it_can_read_model_and_setup():
    """site_app: a query.features message with the global model and the setup in the clear gets the
    moments defence (the flipped device left out); without the model (he) or under DP, a plain sum."""
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    from fedids.data.preprocess import FlowScaler, LabelVocabulary
    from fedids.data.schema import FEATURES
    from fedids.federation import messages as m
    from fedids.federation.robust import RobustSpec
    from fedids.federation.setup import RunSetup
    from fedids.federation.site_app import _defence
    from fedids.federation.site_channel import Envelope
    from fedids.model.train import compute_class_weights

    labels = ("BENIGN", "DDoS", "PortScan")
    setup = RunSetup(
        FlowScaler.from_dict({"center": [0.0] * len(FEATURES), "scale": [1.0] * len(FEATURES)}),
        LabelVocabulary(labels),
        TOTALS.astype(np.int64),
        compute_class_weights(TOTALS.astype(np.int64)),
        int(TOTALS.sum()),
        0,
    )
    prep, entries = m.setup_entries(setup)

    def request(dp_unit: str = "", with_model: bool = True) -> Envelope:
        ins = m.ModelInstructions(
            labels=labels,
            window=4,
            hidden=H,
            privacy="none",
            server_lr=1.0,
            setup_digest=setup.digest(),
            calibration_dp_unit=dp_unit,
            calibration_dp_noise=1.0 if dp_unit else 0.0,
        )
        content = RecordDict({m.CONFIG: ConfigRecord({**ins.to_config(), **entries}), m.PREPROCESSING: prep})
        if with_model:
            content[m.ARRAYS] = ArrayRecord([np.zeros((3, 3, H), np.float32), *HEAD])
        return Envelope(m.QUERY_FEATURES, content)

    honest = [_device({0: 80, 1: 20}, 1), _device({0: 50, 2: 10}, 2), _device({0: 70, 1: 5, 2: 5}, 4)]
    flipped = _device({0: 90, 1: 10}, 3, flip=True)
    length, median = len(flipped), RobustSpec.parse("median")
    combine = _defence(request(), length, median)
    assert combine is not None and combine([*honest, flipped])[1]["left_out"] == [3]
    assert _defence(request(with_model=False), length, median) is None  # he: the model is sealed
    assert _defence(request(dp_unit="window"), length, median) is None  # DP: noised per device
    assert _defence(request(), length, RobustSpec.parse("none")) is None
    with pytest.raises(ValueError, match="moments sum of length"):
        _defence(request(), length + 1, median)
