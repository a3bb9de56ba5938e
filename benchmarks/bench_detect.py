"""Benchmark of edge detection on one CPU thread: latency, throughput, model size, pcap path.

Usage::

    .venv/bin/python benchmarks/bench_detect.py [--model DIR] [--repeats 5] [--out benchmarks/results/detect.json]

Without ``--model`` a GRU (defaults: hidden 64, window 10) is trained for 3 epochs on the real CICIDS2017
TrafficLabelling samples in ``../shared/data/cicids2017/`` (label-time split), then exported to float and
int8 ONNX. Every measurement uses one thread (``torch.set_num_threads(1)``, onnxruntime
``intra_op_num_threads=1``) and real flows.

Measured, for the PyTorch float model and the ONNX float and int8 files:

* ``latency_ms``: one flow per call (batch size 1), p50/p99 over 2,000 calls after 200 warm-up calls,
  wall clock (``p50``, ``p99``) and the thread's CPU time (``cpu_p50``, ``cpu_p99``: without the time
  the thread waited for a core); ``model`` is the model call on a prepared window, ``detector`` is
  :meth:`StreamingDetector.process_arrays` on one flow (host state, window, model and decision),
  ``detector_frame`` the same through :meth:`StreamingDetector.process` on a one-row DataFrame
  (selecting the 78 feature columns of a DataFrame adds milliseconds per call).
* ``throughput_flows_per_s``: median over ``--repeats`` runs; ``model`` scores 16,384 prepared windows
  in calls of 256 (each given only the flows its windows use), ``detector`` streams the same number of real flows through
  :meth:`StreamingDetector.process` in batches of 4,096. ``cpu`` variants divide by the thread's CPU
  time instead of wall time: on a shared machine they show the cost without the waiting.
* sizes of ``model.pt`` and the two ONNX files.
* the pcap path: the extractor alone (``extract_pcap``) and extractor + detector, on the real captures.

The machine's load average is recorded before and after: these machines are shared, and wall-clock
figures taken under load are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import torch

from fedids import __version__
from fedids.data.loader import load_flows
from fedids.data.schema import FEATURES
from fedids.data.windows import host_keys
from fedids.detect.extractor import extract_pcap
from fedids.detect.stream import OnnxScorer, StreamingDetector, TorchScorer, compact_rows, load_scorer
from fedids.model.artifacts import load_detector, save_detector
from fedids.model.export import export_onnx
from fedids.model.train import TrainConfig
from fedids.task import prepare, train_centralized

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
CAPTURES = (
    "esnet_masscan_tcp_0_1000_20190821.pcap",
    "esnet_nmap_80_all.pcap",
    "stopddos_pkt.TCP.synflood.spoofed.pcap",
)
N_WINDOWS = 16_384
LATENCY_CALLS, LATENCY_WARMUP = 2000, 200


def _percentiles(samples: list[tuple[float, float]]) -> dict:
    """``samples``: (wall, thread CPU) seconds per call -> p50/p99 in ms of both."""
    wall, cpu = (np.asarray(x) * 1000.0 for x in zip(*samples))
    return {
        "p50": float(np.percentile(wall, 50)),
        "p99": float(np.percentile(wall, 99)),
        "cpu_p50": float(np.percentile(cpu, 50)),
        "cpu_p99": float(np.percentile(cpu, 99)),
        "calls": len(wall),
    }


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w0, time.thread_time() - c0


def _median_rate(run, n: int, repeats: int) -> dict:
    """``run()`` processes ``n`` flows; median flows/s over ``repeats`` runs, wall and thread CPU."""
    run()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        run()
        wall.append(n / (time.perf_counter() - w0))
        cpu.append(n / (time.thread_time() - c0))
    return {"wall": statistics.median(wall), "cpu": statistics.median(cpu), "runs": repeats}


def measure_backend(scorer, features: np.ndarray, windows: np.ndarray, frame, repeats: int) -> dict:
    """Latency and throughput of one backend on prepared windows and on the raw flow frame."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(windows), LATENCY_WARMUP + LATENCY_CALLS)
    times = []
    for k, i in enumerate(picks):
        f, w = compact_rows(features, windows[i : i + 1])
        sample = _timed(lambda f=f, w=w: scorer.score(f, w))
        if k >= LATENCY_WARMUP:
            times.append(sample)
    model_latency = _percentiles(times)

    hosts = host_keys(frame)
    features = frame[list(FEATURES)].to_numpy(dtype=np.float32)
    detector, times = StreamingDetector(scorer), []
    for k in range(LATENCY_WARMUP + LATENCY_CALLS):
        sample = _timed(lambda k=k: detector.process_arrays(hosts[k : k + 1], features[k : k + 1]))
        if k >= LATENCY_WARMUP:
            times.append(sample)
    detector_latency = _percentiles(times)
    one_flow = [frame.iloc[i : i + 1] for i in range(LATENCY_WARMUP + LATENCY_CALLS)]
    detector, times = StreamingDetector(scorer), []
    for k, part in enumerate(one_flow):
        sample = _timed(lambda part=part: detector.process(part))
        if k >= LATENCY_WARMUP:
            times.append(sample)
    frame_latency = _percentiles(times)

    # The model's own cost: each call gets 256 windows and just the flows they use (prepared here).
    chunks = [compact_rows(features, windows[lo : lo + 256]) for lo in range(0, len(windows), 256)]

    def score_all() -> None:
        for f, w in chunks:
            scorer.score(f, w)

    def stream_all() -> None:
        d = StreamingDetector(scorer)
        for lo in range(0, len(frame), 4096):
            d.process(frame.iloc[lo : lo + 4096])

    return {
        "latency_ms": {"model": model_latency, "detector": detector_latency, "detector_frame": frame_latency},
        "throughput_flows_per_s": {
            "model": _median_rate(score_all, len(windows), repeats),
            "detector": _median_rate(stream_all, len(frame), repeats),
        },
    }


def measure_pcaps(scorer, repeats: int) -> dict:
    """Extractor speed and extractor + detector speed on each real capture (median of runs)."""
    out = {}
    for name in CAPTURES:
        path = SHARED / "pcaps" / name
        extract_s, total_s, flows, packets = [], [], 0, 0
        for _ in range(max(1, repeats // 2)):
            t0 = time.perf_counter()
            result = extract_pcap(path)
            t1 = time.perf_counter()
            scores = StreamingDetector(scorer).process(result.frame)
            t2 = time.perf_counter()
            labels, counts = np.unique(scores.labels, return_counts=True)
            extract_s.append(t1 - t0)
            total_s.append(t2 - t0)
            flows, packets = result.flows, int(result.packets or 0)
        e, t = statistics.median(extract_s), statistics.median(total_s)
        out[name] = {
            "flows": flows,
            "packets": packets,
            "extractor_flows_per_s": flows / e,
            "extractor_packets_per_s": packets / e,
            "extract_and_detect_flows_per_s": flows / t,
            "detector_share_of_time": (t - e) / t,
            "labels": {str(k): int(v) for k, v in zip(labels, counts)},
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: train one on the real samples)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "detect.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    started = time.perf_counter()

    files = sorted((SHARED / "cicids2017").glob("trafficlabelling-*/*.csv"))
    data = prepare(load_flows(files).frame, split="label-time")
    work = Path(tempfile.mkdtemp(prefix="bench_detect_"))
    if args.model is None:
        detector, _ = train_centralized(data, TrainConfig(epochs=3))
        model_dir = save_detector(work / "model", detector)
    else:
        model_dir, detector = args.model, load_detector(args.model)
    float_onnx = export_onnx(detector, work / "float.onnx").path
    int8_onnx = export_onnx(detector, work / "int8.onnx", quantize="int8").path

    # Real windows, repeated up to N_WINDOWS; the flow frame repeated with fresh sequence numbers.
    reps = -(-N_WINDOWS // len(data.windows))
    idx = np.tile(data.windows, (reps, 1))[:N_WINDOWS]
    frame = pd.concat([data.frame] * reps, ignore_index=True).iloc[:N_WINDOWS]
    frame = frame.assign(seq=np.arange(len(frame)))

    backends = {
        "pytorch_float": TorchScorer(load_detector(model_dir), source=str(model_dir)),
        "onnx_float": OnnxScorer(float_onnx.read_bytes(), source=str(float_onnx)),
        "onnx_int8": OnnxScorer(int8_onnx.read_bytes(), source=str(int8_onnx)),
    }
    results = {
        name: measure_backend(s, data.features, idx, frame, args.repeats) for name, s in backends.items()
    }
    pcaps = measure_pcaps(load_scorer(int8_onnx), args.repeats)

    report = {
        "benchmark": "bench_detect",
        "threads": 1,
        "window": detector.window,
        "hidden": detector.model.hidden,
        "classes": detector.vocabulary.labels,
        "model_sizes_bytes": {
            "pytorch_state_dict": (Path(model_dir) / "model.pt").stat().st_size,
            "float32_weights": 4 * sum(p.numel() for p in detector.model.parameters()),
            "onnx_float": float_onnx.stat().st_size,
            "onnx_int8": int8_onnx.stat().st_size,
        },
        "backends": results,
        "pcap": pcaps,
        "targets": {"p99_latency_ms_max": 1.0, "batched_flows_per_s_min": 50_000},
        "environment": {
            "fedids": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cores_visible": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "seconds": time.perf_counter() - started,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        lat, thr = r["latency_ms"], r["throughput_flows_per_s"]
        print(
            f"{name:14s} latency model p50 {lat['model']['p50']:.3f} p99 {lat['model']['p99']:.3f} "
            f"(cpu p99 {lat['model']['cpu_p99']:.3f}) ms | "
            f"detector p50 {lat['detector']['p50']:.3f} p99 {lat['detector']['p99']:.3f} "
            f"(cpu p99 {lat['detector']['cpu_p99']:.3f}) ms "
            f"(frame p50 {lat['detector_frame']['p50']:.3f}) | "
            f"batched model {thr['model']['wall']:,.0f}/s (cpu {thr['model']['cpu']:,.0f}/s), "
            f"detector {thr['detector']['wall']:,.0f}/s (cpu {thr['detector']['cpu']:,.0f}/s)"
        )
    print("sizes:", report["model_sizes_bytes"])
    for name, p in pcaps.items():
        print(
            f"{name}: {p['flows']:,} flows, extractor {p['extractor_flows_per_s']:,.0f} flows/s, "
            f"extractor+detector {p['extract_and_detect_flows_per_s']:,.0f} flows/s, labels {p['labels']}"
        )
    print(
        f"load average before {load_before}, after {report['environment']['loadavg_after']}; wrote {args.out}"
    )
    return report


if __name__ == "__main__":
    main()
