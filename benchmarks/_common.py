"""Shared helpers for the benchmarks: real data paths, finished runs, timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
CICIDS = DATA / "cicids2017"
RESULTS = Path(__file__).resolve().parent / "results"

# The real TrafficLabelling attack samples plus the benign files (see ../shared/data/README.md).
REAL_FILES = [
    CICIDS / "trafficlabelling-mondirkb" / "baseline_ddos.csv",
    CICIDS / "trafficlabelling-mondirkb" / "baseline_portscan.csv",
    CICIDS / "trafficlabelling-mondirkb" / "baseline_sqli.csv",
    CICIDS / "trafficlabelling-mondirkb" / "baseline_xss.csv",
    CICIDS / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
    CICIDS / "machinelearningcve-paris-svg" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
]


def load_run(run: Path):  # -> (dict, Detector, PreparedData); fedids imported here, not at start-up
    """A finished ``fedids federate`` run: its run.json, its final ``global`` detector and its own flows split
    as the run split them (its files, window, test fraction and split; no files: the synthetic default of its
    seed). A data file of a run made in another checkout (a git worktree since removed) is read from this
    checkout's ``../shared``."""
    from fedids.model.artifacts import load_detector
    from fedids.pipelines.data import load_frame
    from fedids.task import prepare

    cfg = json.loads((run / "run.json").read_text())
    files = [_here(Path(p)) for p in cfg["data"] or []]
    frame = load_frame(files, cfg["seed"])
    data = prepare(frame, window=cfg["window"], test_fraction=cfg["test_fraction"], split=cfg["split"])
    return cfg, load_detector(run / "global"), data


def _here(path: Path) -> Path:
    if path.exists() or "shared" not in path.parts:
        return path
    return ROOT.parent / Path(*path.parts[path.parts.index("shared") :])


def median_time(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """Median wall time in seconds of ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return path
