import numpy as np
import pandas as pd
import pytest

from fedids.data.windows import compute_window_indices, gather_windows, sort_by_time, time_split


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
