"""The generator's entry points: :func:`generate_flows` and :func:`write_synthetic_csv`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fedids.data.formats import write_trafficlabelling_csv
from fedids.data.schema import FAMILY, FEATURES, LABEL, SEQ, family_of
from fedids.data.synth.attacks import _ATTACKS, _schedule
from fedids.data.synth.benign import _plan_benign
from fedids.data.synth.config import LABELS, START, SynthConfig
from fedids.data.synth.packets import _features_of_plan
from fedids.data.synth.profiles import _PT
from fedids.data.synth.world import _build_world, _World


def generate_flows(config: SynthConfig, progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Generate a synthetic IoT capture as a canonical flow frame.

    Parameters
    ----------
    config : SynthConfig
    progress : callable, optional
        Called with the number of flows whose features are computed so far (monotone, ends at
        ``len(frame)``).

    Returns
    -------
    pandas.DataFrame, one row per flow, sorted by ``timestamp`` (ties in generation order), with
    ``flow_id, src_ip, src_port, dst_ip, dst_port, protocol`` (6 TCP, 17 UDP), ``timestamp``
    (``datetime64[us]``, from :data:`START`), the 78 :data:`~fedids.data.schema.FEATURES` as float32,
    ``seq`` (row number), ``label`` (one of :data:`LABELS`), ``family``, ``device`` (the IoT device
    the flow belongs to: its source when a device starts the flow, else its destination) and
    ``gateway`` (that device's gateway, 1-based int).
    """
    rng = np.random.default_rng(config.seed)
    w = _build_world(config, rng)
    _plan_benign(w)
    benign = w.plan.build()
    in_span = benign["t0"] < w.T
    n_benign = int(in_span.sum())
    for ep in _schedule(w, n_benign, benign["t0"][in_span]):
        _ATTACKS[ep.family](w, ep)
    plan = w.plan.build()
    keep = (plan["t0"] >= 0) & (plan["t0"] < w.T)
    order = np.flatnonzero(keep)[np.argsort(plan["t0"][keep], kind="stable")]
    plan = {k: v[order] for k, v in plan.items()}
    plan["t0"] = np.floor(plan["t0"])
    features = _features_of_plan(plan, rng, progress)
    return _assemble(w, plan, features)


def _assemble(w: _World, plan: dict[str, np.ndarray], features: np.ndarray) -> pd.DataFrame:
    ips = np.array(w.hosts.ips, dtype=object)
    proto = _PT["proto"][plan["profile"].astype(np.int64)].astype(np.int64)
    src_ip = pd.Series(ips[plan["src"]], dtype="str")
    dst_ip = pd.Series(ips[plan["dst"]], dtype="str")
    src_port = plan["sport"].astype(np.int64)
    dst_port = plan["dport"].astype(np.int64)
    flow_id = (
        src_ip
        + "-"
        + dst_ip
        + "-"
        + pd.Series(src_port).astype("str")
        + "-"
        + pd.Series(dst_port).astype("str")
        + "-"
        + pd.Series(proto).astype("str")
    )
    labels = np.array(LABELS, dtype=object)[plan["label"].astype(np.int64)]
    families = np.array([family_of(x) for x in LABELS], dtype=object)[plan["label"].astype(np.int64)]
    data: dict[str, object] = {
        "flow_id": flow_id,
        "src_ip": src_ip,
        "src_port": src_port,
        "dst_ip": dst_ip,
        "dst_port": dst_port,
        "protocol": proto,
        "timestamp": START + plan["t0"].astype(np.int64).astype("timedelta64[us]"),
    }
    frame = pd.DataFrame(data)
    feats = pd.DataFrame(features.astype(np.float32), columns=list(FEATURES))
    frame = pd.concat([frame, feats], axis=1)
    frame[SEQ] = np.arange(len(frame), dtype=np.int64)
    frame[LABEL] = pd.Series(labels, dtype="str")
    frame[FAMILY] = pd.Series(families, dtype="str")
    frame["device"] = pd.Series(np.array(w.names, dtype=object)[plan["device"]], dtype="str")
    frame["gateway"] = w.gw[plan["device"]].astype(np.int64)
    return frame


def write_synthetic_csv(config: SynthConfig, path: str | Path) -> Path:
    """Generate flows for ``config`` and write them as a CICIDS2017 TrafficLabelling CSV.

    The ``device`` and ``gateway`` columns are not written (the format has no place for them; a
    loader recovers hosts from ``Source IP``). Returns the path written.
    """
    return write_trafficlabelling_csv(generate_flows(config), path)
