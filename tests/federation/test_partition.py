import numpy as np
import pytest

from fedids.federation.partition import PartitionSpec, compute_segments, partition_rows


def _data(seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array(["BENIGN"] * 3000 + ["DDoS"] * 600 + ["PortScan"] * 400 + ["Bot"] * 300 + ["XSS"] * 200)
    hosts = np.concatenate(
        [
            rng.integers(0, 60, 3000).astype(str),
            ["a"] * 600,
            ["b"] * 400,
            rng.choice(["c", "d"], 300),
            ["e"] * 200,
        ]
    )
    hosts = np.array([f"192.168.{int(h) % 3}.{h}" if h.isdigit() else f"10.0.0.{ord(h)}" for h in hosts])
    return labels, hosts


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.5", "shared:0.5", "host"])
def test_partitions_cover_every_row_exactly_once(scheme):
    labels, hosts = _data()
    parts = partition_rows(
        labels, hosts, 7, PartitionSpec.parse(scheme), np.random.default_rng(1), segment=50
    )
    assert len(parts) == 7
    allrows = np.concatenate(parts)
    assert len(allrows) == len(labels) and len(np.unique(allrows)) == len(labels)


def test_segments_keep_consecutive_flows_of_a_host_together():
    hosts = np.array(["a", "b", "a", "a", "b", "a"])
    seg = compute_segments(hosts, segment=2)
    assert seg[0] == seg[2] and seg[3] == seg[5] and seg[0] != seg[3] and seg[1] == seg[4]


def test_shared_fraction_means_shared_attack_classes_at_every_client():
    labels, hosts = _data()
    parts = partition_rows(
        labels, hosts, 4, PartitionSpec.parse("shared:0.5"), np.random.default_rng(0), segment=50
    )
    per_client = [set(labels[p]) for p in parts]
    attacks = {"DDoS", "PortScan", "Bot", "XSS"}
    common = set.intersection(*per_client) & attacks
    exclusive = attacks - common
    assert len(common) == 2 and all("BENIGN" in c for c in per_client)
    for cls in exclusive:
        assert sum(cls in c for c in per_client) == 1


def test_dirichlet_small_alpha_skews_labels_more_than_iid():
    labels, hosts = _data()

    def skew(scheme):
        parts = partition_rows(
            labels, hosts, 5, PartitionSpec.parse(scheme), np.random.default_rng(3), segment=20
        )
        shares = np.array(
            [[np.mean(labels[p] == c) if len(p) else 0 for c in np.unique(labels)] for p in parts]
        )
        return shares.std(axis=0).mean()

    assert skew("dirichlet:0.1") > 2 * skew("iid")


def test_host_partition_keeps_each_subnet_at_one_client():
    labels, hosts = _data()
    parts = partition_rows(labels, hosts, 3, PartitionSpec.parse("host"), np.random.default_rng(0))
    subnets = [set(".".join(h.split(".")[:3]) for h in hosts[p]) for p in parts]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not subnets[i] & subnets[j]


@pytest.mark.parametrize("bad", ["dirichlet", "dirichlet:0", "shared:1.5", "shared:x", "random", "iid:3"])
def test_bad_partition_specs_are_rejected(bad):
    with pytest.raises(ValueError):
        PartitionSpec.parse(bad)
