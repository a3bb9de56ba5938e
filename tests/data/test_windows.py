import numpy as np
import pandas as pd
import pytest

from fedids.data.windows import (
    attack_context_indices,
    compute_window_indices,
    gather_windows,
    sort_by_time,
    time_split,
)


def test_window_indices_follow_each_host_back_in_time():
    hosts = np.array(["a", "b", "a", "a", "b", "c", "a"])
    idx = compute_window_indices(hosts, window=3)
    assert idx.shape == (7, 3)
    assert (idx[:, -1] == np.arange(7)).all()
    assert idx[3].tolist() == [0, 2, 3]
    assert idx[6].tolist() == [2, 3, 6]
    assert idx[4].tolist() == [-1, 1, 4]
    assert idx[5].tolist() == [-1, -1, 5]
    # no window ever reaches forward in time or into another host
    for i, row in enumerate(idx):
        prev = row[row >= 0]
        assert (prev <= i).all() and (hosts[prev] == hosts[i]).all()
        assert (np.diff(prev) > 0).all()


def test_window_of_one_is_the_flow_itself():
    assert compute_window_indices(np.array([1, 1, 2]), 1).tolist() == [[0], [1], [2]]
    with pytest.raises(ValueError):
        compute_window_indices(np.array([1]), 0)


def test_gather_pads_with_zeros_and_marks_presence():
    scaled = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    idx = np.array([[-1, 0], [1, 3]])
    x = gather_windows(scaled, idx)
    assert x.shape == (2, 2, 4)
    assert x[0, 0].tolist() == [0, 0, 0, 0]
    assert x[0, 1].tolist() == [1, 2, 3, 1]
    assert x[1, 1].tolist() == [10, 11, 12, 1]


def test_time_split_global_and_per_label():
    frame = pd.DataFrame({"label": ["A"] * 10 + ["B"] * 10, "seq": range(20)})
    test = time_split(frame, 0.3)
    assert test.tolist() == [False] * 14 + [True] * 6
    per = time_split(frame, 0.3, per_label=True)
    assert per[:10].tolist() == [False] * 7 + [True] * 3
    assert per[10:].tolist() == [False] * 7 + [True] * 3


def test_sort_by_time_breaks_ties_with_seq():
    ts = pd.to_datetime(["2017-07-07 15:56", "2017-07-07 15:55", "2017-07-07 15:56"])
    frame = pd.DataFrame({"timestamp": ts, "seq": [0, 1, 2]})
    assert sort_by_time(frame)["seq"].tolist() == [1, 0, 2]


def test_no_training_window_holds_a_test_flow_under_a_per_label_split():
    """On the real samples a per-label time cut holds out the last XSS flows, which come minutes before the
    first SQL injections of the same attacker host: a training window must skip them, a test window not."""
    from pathlib import Path

    from fedids.data.loader import load_flows
    from fedids.data.windows import host_keys, split_window_indices
    from fedids.task import prepare

    files = sorted((Path(__file__).parents[2] / "../shared/data/cicids2017").glob("trafficlabelling-*/*.csv"))
    data = prepare(load_flows(files).frame, window=10, split="label-time")
    everything = compute_window_indices(host_keys(data.frame), 10)
    train, test = data.train_rows, data.test_rows
    reach = everything[train]
    assert data.test_mask[reach[reach >= 0]].any()  # the case exists in the data
    windows = data.windows
    assert not data.test_mask[windows[train][windows[train] >= 0]].any()
    assert np.array_equal(windows[test], everything[test])
    assert np.array_equal(windows[:, -1], np.arange(len(windows)))
    # a plain time cut puts every test flow after every training flow: nothing to skip
    hosts = np.array(["a", "a", "b", "a", "b"])
    plain = np.array([False, False, False, True, True])
    assert np.array_equal(split_window_indices(hosts, 3, plain), compute_window_indices(hosts, 3))


def test_attack_context_windows_start_with_the_attack():
    hosts = np.array(["a", "a", "b", "a", "a", "a", "a"])
    labels = np.array(["BENIGN", "y", "x", "x", "y", "x", "BENIGN"])
    out = attack_context_indices(hosts, labels, 3)
    # x on host a starts at row 3: the earlier y (row 1) is another phase and skipped, the y interleaved
    # after the start (row 4) stays, as does the benign flow; y began first, so its window keeps x (row 3);
    # benign flows keep their usual window
    assert out.tolist() == [[-1, -1, 0], [-1, 0, 1], [-1, -1, 2], [-1, 0, 3], [1, 3, 4], [3, 4, 5], [4, 5, 6]]
    with pytest.raises(ValueError):
        attack_context_indices(hosts, labels[:-1], 3)


def test_head_windows_of_the_real_samples_start_with_the_attack_and_hold_training_flows_only():
    """On the real samples SQL injection's first training windows are XSS flows of the same attacker; its
    head windows (what the prototype head's class moments read) begin with its own first flow."""
    from pathlib import Path

    from fedids.data.loader import load_flows
    from fedids.task import head_windows, prepare

    files = sorted((Path(__file__).parents[2] / "../shared/data/cicids2017").glob("trafficlabelling-*/*.csv"))
    data = prepare(load_flows(files).frame, window=10, split="label-time")
    rows = data.train_rows
    head = head_windows(data, rows)
    assert head.shape == (len(rows), 10) and np.array_equal(head[:, -1], rows)
    members = head >= 0
    assert np.isin(head[members], rows).all()  # training flows only
    attack = data.labels[rows] != "BENIGN"
    assert np.array_equal(head[~attack], data.windows[rows[~attack]])
    sql = rows[data.labels[rows] == "Web Attack - Sql Injection"]
    first = data.windows[sql[0]]
    assert (data.labels[first[first >= 0]] != "Web Attack - Sql Injection").any()  # the real window mixes
    assert np.array_equal(head_windows(data, sql)[-1], np.r_[np.full(10 - min(len(sql), 10), -1), sql[-10:]])
