"""Split a time-ordered training frame among federated clients.

The unit of assignment is a *segment*: up to ``segment`` consecutive flows of one host. Keeping a host's
consecutive flows together preserves the time windows the GRU needs (a window is built only from the
client's own rows, so splitting a host flow by flow would destroy every sequence), while splitting long
host streams into segments lets one busy attacker (CICIDS2017's DDoS comes from a single IP) appear at
several clients, as the same attacker seen by several gateways would.

Schemes (``--partition``):

* ``iid``: segments dealt to clients uniformly at random;
* ``dirichlet:ALPHA``: label skew (Hsu et al. 2019): for each class, client shares ~ Dir(ALPHA) and the
  class's segments are dealt by those shares; small ALPHA = strong skew;
* ``shared:FRACTION``: the paper's "shared classes": every client holds benign traffic; round(FRACTION x
  attack classes) attack classes are common to all clients; each remaining attack class is held by one
  client only (dealt round-robin);
* ``host``: natural split: one client per gateway (source /24 subnet), groups merged round-robin when
  there are more subnets than clients.

Every function is pure: it returns row indices and takes its randomness from ``rng``.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedids.data.schema import BENIGN_LABEL

DEFAULT_SEGMENT = 100


@dataclass(frozen=True)
class PartitionSpec:
    scheme: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> PartitionSpec:
        """Parse ``iid``, ``host``, ``dirichlet:ALPHA`` or ``shared:FRACTION``; ValueError otherwise."""
        name, _, arg = text.strip().partition(":")
        if name in ("iid", "host") and not arg:
            return cls(name)
        if name in ("dirichlet", "shared") and arg:
            try:
                value = float(arg)
            except ValueError:
                raise ValueError(f"partition {text!r}: {arg!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"partition {text!r}: {arg!r} is not a finite number")
            if name == "dirichlet" and value <= 0:
                raise ValueError(f"partition {text!r}: ALPHA must be > 0")
            if name == "shared" and not 0.0 <= value <= 1.0:
                raise ValueError(f"partition {text!r}: FRACTION must be in [0, 1]")
            return cls(name, value)
        raise ValueError(f"unknown partition {text!r}: use iid, host, dirichlet:ALPHA or shared:FRACTION")

    def __str__(self) -> str:
        return self.scheme if self.value is None else f"{self.scheme}:{self.value:g}"

    @property
    def parameter(self) -> float:
        """ALPHA (``dirichlet``) or FRACTION (``shared``); ValueError for a scheme without one."""
        if self.value is None:
            raise ValueError(f"partition {self.scheme!r} takes no parameter")
        return self.value


def compute_segments(hosts: np.ndarray, segment: int = DEFAULT_SEGMENT) -> np.ndarray:
    """Segment id of each row: consecutive runs of ``segment`` flows of the same host (rows in time order)."""
    codes = pd.factorize(np.asarray(hosts))[0]
    rank = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    return pd.factorize(pd.Series(codes).astype(str) + ":" + pd.Series(rank // segment).astype(str))[0]


def _segment_labels(segments: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Majority label of each segment (attack preferred over benign on ties)."""
    frame = pd.DataFrame({"seg": segments, "label": labels})
    counts = frame.groupby(["seg", "label"]).size().reset_index(name="n")
    counts["benign"] = counts["label"] == BENIGN_LABEL
    counts = counts.sort_values(["seg", "n", "benign"], ascending=[True, False, True])
    return (
        counts.drop_duplicates("seg").set_index("seg")["label"].reindex(range(segments.max() + 1)).to_numpy()
    )


def gateway_subnet(ip: str) -> str:
    """The /24 network of a source IP (its gateway subnet); the text itself where it is no IP."""
    try:
        return str(ipaddress.ip_network(f"{ip}/24", strict=False))
    except ValueError:
        return str(ip)


def partition_rows(
    labels: np.ndarray,
    hosts: np.ndarray,
    n_clients: int,
    spec: PartitionSpec,
    rng: np.random.Generator,
    segment: int = DEFAULT_SEGMENT,
) -> list[np.ndarray]:
    """Assign rows to ``n_clients`` clients.

    Parameters
    ----------
    labels, hosts : arrays ``(n_rows,)`` of the training rows, in time order.
    Returns one sorted int64 index array per client; together they cover every row exactly once.
    A client may be empty when there is too little data for the scheme (the caller reports it).
    """
    if n_clients < 1:
        raise ValueError("need at least one client")
    labels = np.asarray(labels).astype(str)
    if spec.scheme == "host":
        groups = pd.factorize(np.array([gateway_subnet(h) for h in np.asarray(hosts).astype(str)]))[0]
        order = rng.permutation(groups.max() + 1)
        owner_of_group = np.empty_like(order)
        owner_of_group[order] = np.arange(len(order)) % n_clients
        owner = owner_of_group[groups]
        return [np.flatnonzero(owner == c) for c in range(n_clients)]

    segments = compute_segments(hosts, segment)
    seg_label = _segment_labels(segments, labels)
    n_seg = len(seg_label)
    seg_owner = np.empty(n_seg, dtype=np.int64)
    classes = sorted(set(seg_label))
    if spec.scheme == "iid":
        seg_owner[:] = rng.permutation(n_seg) % n_clients
    elif spec.scheme == "dirichlet":
        for cls in classes:
            segs = rng.permutation(np.flatnonzero(seg_label == cls))
            shares = rng.dirichlet(np.full(n_clients, spec.parameter))
            cuts = (np.cumsum(shares)[:-1] * len(segs)).round().astype(int)
            for client, part in enumerate(np.split(segs, cuts)):
                seg_owner[part] = client
    elif spec.scheme == "shared":
        attacks = [c for c in classes if c != BENIGN_LABEL]
        n_shared = int(round(spec.parameter * len(attacks)))
        shared = set(rng.permutation(attacks)[:n_shared].tolist()) | {BENIGN_LABEL}
        exclusive = [c for c in rng.permutation(attacks).tolist() if c not in shared]
        for cls in classes:
            segs = rng.permutation(np.flatnonzero(seg_label == cls))
            if cls in shared:
                seg_owner[segs] = np.arange(len(segs)) % n_clients
            else:
                seg_owner[segs] = exclusive.index(cls) % n_clients
    else:
        raise ValueError(f"unknown partition scheme {spec.scheme!r}")
    owner = seg_owner[segments]
    return [np.flatnonzero(owner == c) for c in range(n_clients)]


def summarise_partitions(labels: np.ndarray, parts: list[np.ndarray]) -> pd.DataFrame:
    """One row per client: rows, number of classes, and rows per label."""
    labels = np.asarray(labels).astype(str)
    rows = []
    for client, idx in enumerate(parts):
        counts = pd.Series(labels[idx]).value_counts()
        rows.append(
            {"client": client, "rows": len(idx), "classes": int((counts > 0).sum()), **counts.to_dict()}
        )
    return pd.DataFrame(rows).fillna(0)
