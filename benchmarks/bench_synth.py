"""Benchmark of the synthetic IoT traffic generator: speed and how separable its classes are.

Measures

* generation speed (flows/s, wall clock and process CPU time) for the default config and for a
  config of about one million flows;
* a single-flow random forest (``RandomForestClassifier(n_estimators=100, random_state=0)`` on the 78
  features, time-ordered 70/30 split, no shuffling): macro-F1 over families and per-family F1, for
  the default config (several seeds) and for other difficulties;
* the same forest with *host context*: each flow's features plus the mean features, the number of
  distinct destination ports and addresses, and the time span of the last 10 flows of its source
  host (the information a sequence model over a host's recent flows sees). It shows how much of the
  remaining error a window of host history can remove.

Writes ``benchmarks/results/synth.json``. Run from the repository root::

    .venv/bin/python benchmarks/bench_synth.py            # full run (several minutes on 2 cores)
    .venv/bin/python benchmarks/bench_synth.py --quick    # default config, seed 0, no 1M run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score

from fedids.data.schema import FEATURES
from fedids.data.synth import SynthConfig, generate_flows
from fedids.data.windows import compute_window_indices

RESULTS = Path(__file__).resolve().parent / "results" / "synth.json"


def timed_generate(config: SynthConfig) -> tuple[pd.DataFrame, dict]:
    wall, cpu = time.perf_counter(), time.process_time()
    frame = generate_flows(config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return frame, {
        "config": config.__dict__,
        "flows": len(frame),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "flows_per_s_wall": round(len(frame) / wall),
        "flows_per_s_cpu": round(len(frame) / cpu),
        "attack_share": round(float((frame["family"] != "benign").mean()), 4),
        "family_counts": frame["family"].value_counts().to_dict(),
    }


def host_context_features(frame: pd.DataFrame, x: np.ndarray, window: int = 10) -> np.ndarray:
    """Flow features + summary of the source host's last ``window`` flows (the flow included)."""
    idx = compute_window_indices(frame["src_ip"].to_numpy(), window)
    present = idx >= 0
    sel = np.where(present, idx, 0)

    def distinct(codes: np.ndarray) -> np.ndarray:
        codes = np.where(present, codes[sel], -1)
        s = np.sort(codes, axis=1)
        return ((np.diff(s, axis=1) != 0) & (s[:, 1:] >= 0)).sum(axis=1) + 1

    ts = frame["timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64)
    first = np.where(present, ts[sel], np.iinfo(np.int64).max).min(axis=1)
    mean = (x[sel] * present[..., None]).sum(axis=1) / present.sum(axis=1, keepdims=True)
    return np.column_stack(
        [
            x,
            mean,
            distinct(frame["dst_port"].to_numpy()),
            distinct(pd.factorize(frame["dst_ip"])[0]),
            present.sum(axis=1),
            (ts - first) / 1e6,
        ]
    )


def rf_scores(frame: pd.DataFrame, context: bool, n_jobs: int) -> dict:
    x = frame[list(FEATURES)].to_numpy(np.float32)
    if context:
        x = host_context_features(frame, x).astype(np.float32)
    y = frame["family"].to_numpy()
    cut = int(0.7 * len(frame))
    start = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=n_jobs).fit(x[:cut], y[:cut])
    pred = rf.predict(x[cut:])
    families = sorted(set(y))
    per = f1_score(y[cut:], pred, labels=families, average=None, zero_division=0)
    return {
        "macro_f1": round(float(f1_score(y[cut:], pred, average="macro", zero_division=0)), 4),
        "per_family_f1": {fam: round(float(v), 4) for fam, v in zip(families, per)},
        "train_rows": cut,
        "test_rows": len(frame) - cut,
        "fit_predict_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="default config, seed 0 only, no 1M run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--difficulties", type=float, nargs="+", default=[0.0, 2.0, 3.0])
    parser.add_argument(
        "--big",
        type=str,
        default="devices=1000,hours=2,gateways=100",
        help="config of the ~1M-flow speed run, e.g. devices=1000,hours=2,gateways=100",
    )
    parser.add_argument("--jobs", type=int, default=2, help="random-forest worker processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.difficulties, args.big = [0], [], ""

    result: dict = {
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "sklearn": sklearn.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_start": [round(v, 2) for v in os.getloadavg()],
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    speed = []
    rf_default = []
    for seed in args.seeds:
        frame, timing = timed_generate(SynthConfig(seed=seed))
        speed.append(timing)
        entry = {
            "seed": seed,
            "flows": len(frame),
            "rf": rf_scores(frame, False, args.jobs),
            "rf_host_context": rf_scores(frame, True, args.jobs),
        }
        rf_default.append(entry)
        print(
            f"default seed={seed}: {timing['flows']} flows in {timing['wall_s']} s; RF macro-F1 "
            f"{entry['rf']['macro_f1']}, with host context {entry['rf_host_context']['macro_f1']}",
            flush=True,
        )
    result["speed_default"] = speed
    result["rf_default"] = rf_default
    macro = [e["rf"]["macro_f1"] for e in rf_default]
    result["rf_default_macro_f1_mean"] = round(float(np.mean(macro)), 4)
    result["rf_host_context_macro_f1_mean"] = round(
        float(np.mean([e["rf_host_context"]["macro_f1"] for e in rf_default])), 4
    )
    by_difficulty = []
    for difficulty in args.difficulties:
        frame = generate_flows(SynthConfig(difficulty=difficulty))
        entry = {"difficulty": difficulty, "flows": len(frame), "rf": rf_scores(frame, False, args.jobs)}
        by_difficulty.append(entry)
        print(f"difficulty={difficulty}: RF macro-F1 {entry['rf']['macro_f1']}", flush=True)
    result["rf_by_difficulty_seed0"] = by_difficulty
    if args.big:
        kwargs = {
            k: (float(v) if "." in v or k in ("hours", "difficulty") else int(v))
            for k, v in (item.split("=") for item in args.big.split(","))
        }
        frame, timing = timed_generate(SynthConfig(**kwargs))
        timing["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        result["speed_big"] = timing
        print(
            f"big {kwargs}: {timing['flows']} flows in {timing['wall_s']} s wall / {timing['cpu_s']} s CPU "
            f"({timing['flows_per_s_wall']} flows/s wall)",
            flush=True,
        )
        del frame
    result["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
