"""Time-ordered windows of flows per host.

Every flow is scored together with the ``window - 1`` flows of the same host that precede it, so each
flow gets a prediction and metrics stay per flow (comparable with flow classifiers). Windows only look
back in time: a flow's window never contains a later flow, so a time-ordered split cannot leak, and a
training flow's window never contains a test flow (:func:`split_window_indices`), whatever the split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedids.data.schema import BENIGN_LABEL, SEQ

DEFAULT_WINDOW = 10


def sort_by_time(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` ordered by ``(timestamp, seq)``; ``seq`` alone when there is no timestamp."""
    keys = [c for c in ("timestamp", SEQ) if c in frame.columns]
    if not keys:
        return frame.reset_index(drop=True)
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def host_keys(frame: pd.DataFrame) -> np.ndarray:
    """The host each flow belongs to: its source IP, or one single stream when the format has none
    (MachineLearningCVE files carry no IPs)."""
    if "src_ip" in frame.columns:
        return frame["src_ip"].astype(str).to_numpy()
    return np.zeros(len(frame), dtype=np.int64)


def compute_window_indices(hosts: np.ndarray, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """Row indices of each flow's window, oldest first, ``-1`` where the host has less history.

    Parameters
    ----------
    hosts : array of shape ``(n_flows,)``, the host key of each flow, rows already in time order.
    window : number of flows per window, the flow itself included (last column).

    Returns
    -------
    int64 array of shape ``(n_flows, window)``; ``out[i, -1] == i``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n = len(hosts)
    codes = pd.factorize(np.asarray(hosts), sort=False)[0]
    order = np.argsort(codes, kind="stable")  # rows grouped by host, time order kept inside a group
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    position = np.arange(n) - group_start  # rank of the flow within its host
    out = np.full((n, window), -1, dtype=np.int64)
    for lag in range(window):
        ok = position >= lag
        out[order[ok], window - 1 - lag] = order[np.flatnonzero(ok) - lag]
    return out


def map_to_rows(local: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Window indices computed over a subset of rows (``local``: positions in ``rows``) as indices of the
    whole frame (``rows[local]``), ``-1`` padding kept."""
    return np.where(local >= 0, rows[np.maximum(local, 0)], -1)


def split_window_indices(hosts: np.ndarray, window: int, test_mask: np.ndarray) -> np.ndarray:
    """:func:`compute_window_indices` for a train/test split: a training flow's window holds earlier
    *training* flows of its host only, a test flow's every earlier flow of its host (a detector sees all
    past traffic). Under a per-label time split a class's test flows can precede another class's training
    flows (CICIDS2017: the last XSS flows, held out, come minutes before the first SQL injections), and a
    window over all rows would put test flows' features into training."""
    test_mask = np.asarray(test_mask, dtype=bool)
    out = compute_window_indices(hosts, window)
    train = np.flatnonzero(~test_mask)
    local = compute_window_indices(np.asarray(hosts)[train], window)
    out[train] = map_to_rows(local, train)
    return out


def attack_context_indices(
    hosts: np.ndarray, labels: np.ndarray, window: int, benign_label: str = BENIGN_LABEL
) -> np.ndarray:
    """:func:`compute_window_indices` from the start of each attack: an attack flow's window skips the
    flows of *other attacks* that its host sent before its own attack's first flow (benign flows, and other
    attacks interleaved with it, stay); a benign flow's window is its usual one. ``(n_flows, window)``
    int64, rows already in time order, ``-1`` padding.

    What an attack looks like while it goes on. An attack seen k times in training has k windows, and the
    first of them hold what its host did before the attack began: on the CICIDS2017 samples SQL
    injection's first training windows are nine XSS flows and the flow itself, while a detector meets SQL
    injection in windows of SQL injection. Attacks that run side by side (slowloris beside slowhttptest on
    the synthetic default) keep each other in their windows, as a detector sees them. The prototype
    head's class moments are computed on these windows (:func:`fedids.task.head_windows`); one window per
    flow, so counts and privacy bounds stay per flow. Only training code calls this: it reads labels."""
    hosts, labels = np.asarray(hosts), np.asarray(labels).astype(str)
    if len(hosts) != len(labels):
        raise ValueError(f"{len(hosts)} hosts for {len(labels)} labels")
    out = compute_window_indices(hosts, window)
    codes = pd.factorize(hosts, sort=False)[0]
    attack = labels != benign_label
    position = np.arange(len(labels))
    for label in np.unique(labels[attack]):
        mine = labels == label
        start = np.full(codes.max(initial=-1) + 1, len(labels))
        np.minimum.at(start, codes[mine], position[mine])  # each host's first flow of this attack
        subset = np.flatnonzero(~attack | mine | (position >= start[codes]))
        local = compute_window_indices(hosts[subset], window)
        own = mine[subset]
        out[subset[own]] = map_to_rows(local[own], subset)
    return out


def gather_windows(scaled: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Build model inputs from scaled features and window indices.

    Parameters
    ----------
    scaled : float32 ``(n_flows, n_features)``.
    indices : int64 ``(batch, window)`` from :func:`compute_window_indices` (rows of ``scaled``).

    Returns
    -------
    float32 ``(batch, window, n_features + 1)``: the features, zeros for padding, and a last channel
    that is 1 for a real flow and 0 for padding, so the model knows how much history it has.
    """
    present = indices >= 0
    out = np.zeros((*indices.shape, scaled.shape[1] + 1), dtype=np.float32)
    out[..., :-1] = scaled[np.where(present, indices, 0)]
    out[..., :-1] *= present[..., None]
    out[..., -1] = present
    return out


def train_count(n: int, test_fraction: float) -> int:
    """How many of ``n`` time-ordered flows come before :func:`time_split`'s cut (the rest are held out)."""
    return int(round(n * (1.0 - test_fraction)))


def time_split(frame: pd.DataFrame, test_fraction: float = 0.3, per_label: bool = False) -> np.ndarray:
    """Boolean mask of test rows: the last ``test_fraction`` of flows in time.

    With ``per_label`` the cut is made within each label (the first 70% of each class's flows in time
    train, the rest test): needed when each class comes from a different capture day, as in the
    per-attack CICIDS2017 files. ``frame`` must already be in time order (:func:`sort_by_time`).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = len(frame)
    test = np.zeros(n, dtype=bool)
    if per_label:
        for rows in frame.groupby("label", sort=False).indices.values():
            cut = train_count(len(rows), test_fraction)
            test[np.sort(rows)[cut:]] = True
    else:
        test[train_count(n, test_fraction) :] = True
    return test
