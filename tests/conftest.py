"""Fixtures shared by more than one test file.

``tests/`` mirrors ``src/fedids/`` (``tests/data/`` tests ``fedids.data``, ...); tests that cross
packages (the layer check, the in-process fuzzing of every input boundary) sit at the top. Helpers that
are not fixtures (paths to the shared real data, the fuzz corpus, the message recorder, the reference
extractor) are the ``support`` package in ``tests/support/``, importable because ``pyproject.toml`` puts
``tests`` on ``pythonpath``.

The real-data fixtures are session-scoped: each trains or loads once per pytest run, however many
folders use it, and no test modifies what they return (tests that need a changed model deep-copy it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fedids.data.loader import load_flows
from fedids.model.artifacts import Detector
from fedids.model.train import TrainConfig
from fedids.task import PreparedData, prepare, train_centralized
from support.flower_processes import Processes
from support.paths import CICIDS


@pytest.fixture(scope="session")
def cicids_sample() -> PreparedData:
    """The real CICIDS2017 rows the federation tests train on: DDoS, port scan and benign flows, windows
    of 5 flows, label-time split."""
    files = [CICIDS / "trafficlabelling-mondirkb" / f for f in ("baseline_ddos.csv", "baseline_portscan.csv")]
    files.append(CICIDS / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv")
    return prepare(load_flows(files).frame, window=5, split="label-time")


@pytest.fixture(scope="session")
def real_detector() -> tuple[Detector, PreparedData]:
    """A GRU trained for 3 epochs on every real TrafficLabelling sample (label-time split), with its data."""
    torch.set_num_threads(1)  # shared machines: one thread trains faster than two contended ones
    files = sorted(CICIDS.glob("trafficlabelling-*/*.csv"))
    data = prepare(load_flows(files).frame, split="label-time")
    detector, _ = train_centralized(data, TrainConfig(epochs=3))
    return detector, data


@pytest.fixture
def processes(tmp_path) -> Iterator[Processes]:
    """The Flower processes a deployment test starts (logs in ``tmp_path/logs``), all ended afterwards."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    procs = Processes(log_dir)
    try:
        yield procs
    finally:
        procs.stop()
