"""Cost of the private aggregation modes for one update of the default GRU detector.

For ``none`` (plaintext float32), ``he`` (CKKS), ``secagg`` and ``he+secagg`` (BFV over SecAgg),
with 10 and 100 clients, all in one process on this machine, median of 3 runs:

* ``client_s``: one client's time to produce what it uploads (median over clients): encryption
  for ``he``; all four SecAgg stages (keys, shares, masking, unmasking) for ``secagg``;
* ``upload_bytes``: bytes one client sends in the round (median over clients), and the ratio to
  the float32 update;
* ``server_s``: the server's time for the whole round: receiving and adding every upload, and for
  SecAgg routing shares, reconstructing seeds and removing masks;
* ``decrypt_s``: a client's time to decrypt the aggregate (encrypted modes);
* ``max_abs_error``: of the aggregated mean against numpy's mean of the same updates.

Run: ``.venv/bin/python benchmarks/bench_privacy.py`` (writes ``benchmarks/results/privacy.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedids.privacy.he import EncryptedSum, create_he_keys, decrypt_sum, encrypt_update
from fedids.privacy.he_secagg import HESecAggClient, HESecAggServer, create_bfv_keys, decrypt_masked_sum
from fedids.privacy.secagg import (
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    dequantize_sum,
    simulate_round,
)

UPDATE_LENGTH = 28_000  # parameters of the default GRU detector
RESULTS = Path(__file__).resolve().parent / "results" / "privacy.json"


def _updates(n: int, seed: int) -> np.ndarray:
    # Model deltas are small; 0.01 is the typical scale of one local epoch's change.
    return np.random.default_rng(seed).normal(0.0, 0.01, size=(n, UPDATE_LENGTH)).astype(np.float32)


def run_none(updates: np.ndarray, round_id: int) -> dict[str, float]:
    client_times, blobs = [], []
    for update in updates:
        start = time.perf_counter()
        blobs.append(update.tobytes())
        client_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    total = np.zeros(UPDATE_LENGTH, dtype=np.float64)
    for blob in blobs:
        total += np.frombuffer(blob, dtype=np.float32)
    server = time.perf_counter() - start
    mean = total / len(updates)
    return {
        "client_s": statistics.median(client_times),
        "upload_bytes": len(blobs[0]),
        "server_s": server,
        "decrypt_s": 0.0,
        "mean": mean,
    }


def run_he(updates: np.ndarray, round_id: int, keys) -> dict[str, float]:  # noqa: ANN001
    client_times, server_time, upload = [], 0.0, 0
    start = time.perf_counter()
    total = EncryptedSum(keys.public_context, UPDATE_LENGTH)
    server_time += time.perf_counter() - start
    for update in updates:
        start = time.perf_counter()
        blob = encrypt_update(keys.secret_context, update)
        client_times.append(time.perf_counter() - start)
        upload = len(blob)
        start = time.perf_counter()
        total.add(blob)  # added on arrival and dropped, as a server would
        server_time += time.perf_counter() - start
    start = time.perf_counter()
    aggregate = total.to_bytes()
    server_time += time.perf_counter() - start
    start = time.perf_counter()
    summed = decrypt_sum(keys.secret_context, aggregate, UPDATE_LENGTH)
    decrypt = time.perf_counter() - start
    return {
        "client_s": statistics.median(client_times),
        "upload_bytes": upload,
        "server_s": server_time,
        "decrypt_s": decrypt,
        "mean": summed / len(updates),
    }


def _run_secagg(
    updates: np.ndarray,
    round_id: int,
    make_client: Callable,
    make_server: Callable,
    server_finish: Callable,
    client_finish: Callable,
) -> dict[str, float]:
    """One SecAgg round; ``server_finish(server)`` ends stage 4 on the server and
    ``client_finish(result, config)`` turns its result into the uint32 aggregate on a client."""
    n = len(updates)
    config = SecAggConfig(n_clients=n, vector_length=UPDATE_LENGTH, round_id=round_id)
    server = make_server(config)
    clients = {c: make_client(config, c) for c in range(n)}
    trace = simulate_round(server, clients, dict(enumerate(updates)))
    start = time.perf_counter()
    result = server_finish(server)
    server_time = trace.server_seconds + time.perf_counter() - start
    start = time.perf_counter()
    total = client_finish(result, config)
    decrypt = time.perf_counter() - start
    mean = dequantize_sum(total, config) / len(trace.survivors)
    return {
        "client_s": statistics.median(trace.client_seconds.values()),
        "upload_bytes": statistics.median(trace.upload_bytes.values()),
        "server_s": server_time,
        "decrypt_s": decrypt,
        "mean": mean,
    }


def run_secagg(updates: np.ndarray, round_id: int) -> dict[str, float]:
    return _run_secagg(
        updates,
        round_id,
        SecAggClient,
        SecAggServer,
        lambda server: server.aggregate(),
        lambda total, config: total,
    )


def run_he_secagg(updates: np.ndarray, round_id: int, keys) -> dict[str, float]:  # noqa: ANN001
    return _run_secagg(
        updates,
        round_id,
        lambda config, c: HESecAggClient(config, c, keys.secret_context),
        lambda config: HESecAggServer(config, keys.public_context),
        lambda server: server.encrypted_aggregate(),
        lambda blob, config: decrypt_masked_sum(keys.secret_context, blob, config.vector_length),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    ckks, bfv = create_he_keys(), create_bfv_keys()
    modes: dict[str, Callable] = {
        "none": run_none,
        "he": lambda u, r: run_he(u, r, ckks),
        "secagg": run_secagg,
        "he+secagg": lambda u, r: run_he_secagg(u, r, bfv),
    }
    float_bytes = 4 * UPDATE_LENGTH
    rows = []
    round_id = 0
    for n in args.clients:
        updates = _updates(n, seed=n)
        reference = updates.astype(np.float64).mean(axis=0)
        for mode, run in modes.items():
            runs = []
            for _ in range(args.repeats):
                round_id += 1
                runs.append(run(updates, round_id))
            row = {"mode": mode, "clients": n}
            for key in ("client_s", "upload_bytes", "server_s", "decrypt_s"):
                row[key] = statistics.median(r[key] for r in runs)
            row["upload_ratio"] = row["upload_bytes"] / float_bytes
            row["max_abs_error"] = max(float(np.max(np.abs(r["mean"] - reference))) for r in runs)
            rows.append(row)
            print(
                f"{mode:>10} n={n:<4} client {row['client_s'] * 1e3:9.2f} ms  upload "
                f"{row['upload_bytes'] / 1e3:8.1f} KB ({row['upload_ratio']:5.2f}x)  server "
                f"{row['server_s'] * 1e3:9.1f} ms  decrypt {row['decrypt_s'] * 1e3:7.1f} ms  "
                f"err {row['max_abs_error']:.1e}",
                flush=True,
            )
    report = {
        "benchmark": "privacy aggregation cost per round",
        "update_length": UPDATE_LENGTH,
        "float32_update_bytes": float_bytes,
        "repeats": args.repeats,
        "statistic": "median over repeats (per-client figures: median over clients)",
        "command": " ".join(["python benchmarks/bench_privacy.py", *(argv or sys.argv[1:])]),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "parameters": {
            "he": "CKKS N=4096 [49,60] scale 2^36",
            "secagg": "X25519 + ChaCha20-Poly1305 shares, Shamir GF(2^521-1), "
            "ChaCha20 masks, uint32, threshold n - floor(0.3 n)",
            "he+secagg": "secagg with BFV N=4096 [60,49] t=8796092858369",
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
