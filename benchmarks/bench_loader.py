"""Throughput and peak memory of fedids.data.loader.load_flows.

Cases
-----
* ``machinelearningcve``: the real 9,998-row MachineLearningCVE file in ../shared/data.
* ``trafficlabelling_1m``: a 1,000,000-row TrafficLabelling file built here by tiling the 2,972 real
  TrafficLabelling rows of ../shared/data and perturbing them (timestamps, source ports, flow
  durations; 0.1 % of rows get Infinity rates), written with
  :func:`fedids.data.formats.write_trafficlabelling_csv` into a temporary directory.

Each load runs in a fresh child process (median of ``--runs``); the child reports its peak resident
memory (``VmHWM``) after the load and right after the imports, and the Arrow memory pool's peak.
One ``pandas.read_csv`` of each file (C engine, whole file at once) is timed the same way for
reference. Results go to ``benchmarks/results/loader.json``.

    .venv/bin/python benchmarks/bench_loader.py            # about 3-4 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "cicids2017"
MLCVE = DATA / "machinelearningcve-paris-svg" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv"
TRAFFICLABELLING = sorted((DATA / "trafficlabelling-mondirkb").glob("*.csv")) + sorted(
    (DATA / "trafficlabelling-netsentinel").glob("*.csv")
)
RESULTS = ROOT / "benchmarks" / "results" / "loader.json"

_CHILD = r"""
import json, resource, sys, time
mode, path, chunk_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])

def peak_rss_kib():
    # VmHWM belongs to this process's own address space; ru_maxrss would also count the parent's
    # pages that a vfork/exec child inherits in its high-water mark.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

import numpy, pandas, pyarrow
from fedids.data.loader import load_flows
rss_imports_kib = peak_rss_kib()
t0 = time.perf_counter()
if mode == "loader":
    result = load_flows([path], chunk_rows=chunk_rows)
    rows_read, rows_kept = result.reports[0].rows_read, result.reports[0].rows_kept
    frame_bytes = int(result.frame.memory_usage(deep=True).sum())
else:
    frame = pandas.read_csv(path, low_memory=False, encoding="latin-1")
    rows_read = rows_kept = len(frame)
    frame_bytes = int(frame.memory_usage(deep=True).sum())
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "rows_read": rows_read, "rows_kept": rows_kept,
                  "frame_mib": frame_bytes / 2**20,
                  "peak_rss_mib": peak_rss_kib() / 1024,
                  "rss_after_imports_mib": rss_imports_kib / 1024,
                  "arrow_pool_peak_mib": pyarrow.default_memory_pool().max_memory() / 2**20}))
"""


def build_trafficlabelling(path: Path, n_rows: int, rng: np.random.Generator) -> Path:
    """Write an ``n_rows`` TrafficLabelling CSV made of perturbed copies of the real rows."""
    from fedids.data.formats import write_trafficlabelling_csv
    from fedids.data.loader import load_flows

    real = load_flows(TRAFFICLABELLING).frame
    reps = -(-n_rows // len(real))
    frame = pd.concat([real] * reps, ignore_index=True).iloc[:n_rows].copy()
    # Distinct rows (the loader drops exact duplicates) that still look like the originals.
    frame["timestamp"] = frame["timestamp"].to_numpy() + (np.arange(n_rows) * 1_000).astype("timedelta64[us]")
    frame["src_port"] = rng.integers(1024, 65536, n_rows).astype(np.int32)
    frame["Flow Duration"] = (
        frame["Flow Duration"].to_numpy(np.float64) + rng.integers(0, 1_000, n_rows)
    ).astype(np.float32)
    inf_rows = rng.choice(n_rows, size=n_rows // 1000, replace=False)
    frame.loc[inf_rows, ["Flow Bytes/s", "Flow Packets/s"]] = np.inf
    return write_trafficlabelling_csv(frame, path)


def run_child(mode: str, path: Path, chunk_rows: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(path), str(chunk_rows)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({mode}, {path}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(path: Path, runs: int, chunk_rows: int, reference: bool) -> dict:
    loads = [run_child("loader", path, chunk_rows) for _ in range(runs)]
    median_s = statistics.median(r["seconds"] for r in loads)
    out = {
        "file": (
            str(path.resolve().relative_to(ROOT.parent.resolve()))
            if path.resolve().is_relative_to(ROOT.parent.resolve())
            else "synthetic (temp dir)"
        ),
        "bytes": path.stat().st_size,
        "rows_read": loads[0]["rows_read"],
        "rows_kept": loads[0]["rows_kept"],
        "chunk_rows": chunk_rows,
        "runs_s": [round(r["seconds"], 4) for r in loads],
        "median_s": round(median_s, 4),
        "rows_per_s": round(loads[0]["rows_read"] / median_s),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in loads), 1),
        "rss_after_imports_mib": round(statistics.median(r["rss_after_imports_mib"] for r in loads), 1),
        "arrow_pool_peak_mib": round(max(r["arrow_pool_peak_mib"] for r in loads), 1),
        "frame_mib": round(loads[0]["frame_mib"], 1),
    }
    if reference:
        ref = run_child("pandas", path, chunk_rows)
        out["reference_pandas_read_csv"] = {
            "seconds": round(ref["seconds"], 4),
            "rows_per_s": round(ref["rows_read"] / ref["seconds"]),
            "peak_rss_mib": round(ref["peak_rss_mib"], 1),
            "frame_mib": round(ref["frame_mib"], 1),
            "note": "one run; whole file at once, float64/object columns, no cleaning",
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic file")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chunk-rows", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=2017)
    ap.add_argument("--no-reference", action="store_true", help="skip the pandas.read_csv reference")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    results: dict = {
        "benchmark": "fedids.data.loader.load_flows",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "pyarrow": pa.__version__,
        },
        "cases": {},
    }
    results["cases"]["machinelearningcve"] = measure(MLCVE, args.runs, args.chunk_rows, not args.no_reference)
    print(json.dumps(results["cases"]["machinelearningcve"], indent=1), flush=True)
    with tempfile.TemporaryDirectory(prefix="fedids-bench-") as tmp:
        t0 = time.perf_counter()
        big = build_trafficlabelling(Path(tmp) / "synthetic.csv", args.rows, np.random.default_rng(args.seed))
        build_s = time.perf_counter() - t0
        case = measure(big, args.runs, args.chunk_rows, not args.no_reference)
        case["build_s"] = round(build_s, 1)
        results["cases"]["trafficlabelling_1m"] = case
        print(json.dumps(case, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
