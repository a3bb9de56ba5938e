"""Scalability of the federated simulation: time per round, server memory and bytes per round for
10, 50, 100, 500 and 1,000 simulated clients (10% sampled per round), privacy ``none`` and ``he``.

Each configuration runs in a fresh Python process (``--one``) so that the peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that configuration alone. The server (the
ServerApp's round loop, aggregation and evaluation) runs in that process; the virtual clients run in Ray
worker processes, whose memory is not counted. ``tracemalloc`` adds the peak of Python-level allocations
(numpy buffers included) in the server process.

Data: a small synthetic capture sized to about ``--rows-per-client`` flows per client, partitioned iid
in segments of 20 flows of a host. Rounds: 2 (``--rounds``). ``seconds_per_round`` is the mean of the
rounds after the first (steady state); ``first_round_seconds`` includes starting the sampled clients'
processes.

    python benchmarks/bench_scalability.py --max-clients 50      # 10 and 50 clients
    python benchmarks/bench_scalability.py                       # all sizes (about an hour on 2 cores)
    python benchmarks/bench_scalability.py --sizes 10,100,1000 --privacy none --name scalability_fedavg

Writes ``benchmarks/results/scalability.json`` (read by ``fedids experiment paper``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

SIZES = (10, 50, 100, 500, 1000)
ROUND_LIMIT_S = 600.0
"""A round longer than this (ten minutes) is taken as where one machine stops being practical."""


def _supports_he() -> str | None:
    import dataclasses

    from fedids.federation.server_app import FederationConfig

    fields = {f.name for f in dataclasses.fields(FederationConfig)}
    if "privacy" not in fields or "he_public_context" not in fields:
        return "this FederationConfig has no he privacy mode"
    return None


def run_one(
    clients: int,
    privacy: str,
    rounds: int,
    fraction: float,
    rows_per_client: int,
    seed: int,
    strategy: str = "fedavg",
) -> dict:
    """One configuration, in this process; returns its measurements."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    tracemalloc.start()
    from fedids.data.synth import SynthConfig, generate_flows
    from fedids.federation.server_app import FederationConfig
    from fedids.federation.simulation import make_partitions, run_simulated
    from fedids.task import prepare

    devices = max(8, math.ceil(clients * rows_per_client / 150))  # about 150 flows per device at 0.25 h
    synth = SynthConfig(devices=devices, hours=0.25, gateways=max(1, math.ceil(devices / 150)), seed=seed)
    t0 = time.perf_counter()
    prepared = prepare(generate_flows(synth), window=10)
    parts = [p for p in make_partitions(prepared, clients, "iid", seed, segment=20) if len(p)]
    setup_s = time.perf_counter() - t0
    kwargs = dict(rounds=rounds, fraction_train=fraction, min_clients=1, seed=seed, strategy=strategy)
    secret = None
    with tempfile.TemporaryDirectory() as tmp:
        if privacy != "none":
            from fedids.privacy.keys import init_keys

            keys = init_keys(Path(tmp) / "keys", privacy)
            kwargs |= {"privacy": privacy, "he_public_context": str(keys.public_context)}
            secret = str(keys.secret_context)
        config = FederationConfig(**kwargs)
        t0 = time.perf_counter()
        extra = {"he_secret_context": secret} if secret else {}
        state = run_simulated(prepared, parts, config, Path(tmp) / "run", **extra)
        total_s = time.perf_counter() - t0
    _, heap_peak = tracemalloc.get_traced_memory()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    hist = state.history
    return {
        "clients": len(parts),
        "requested_clients": clients,
        "privacy": privacy,
        "strategy": strategy,
        "rounds": len(hist),
        "sampled_per_round": int(np.mean([h["clients"] for h in hist])) if hist else None,
        "flows": int(len(prepared.labels)),
        "devices_synthesised": devices,
        # Steady state: the first round also pays for starting every sampled client's Python process
        # (torch import) in the Ray workers, so it is reported apart.
        "seconds_per_round": float(np.mean([h["seconds"] for h in hist[1:]] or [hist[0]["seconds"]]))
        if hist
        else None,
        "first_round_seconds": float(hist[0]["seconds"]) if hist else None,
        "round_seconds": [float(h["seconds"]) for h in hist],
        "run_seconds": total_s,
        "setup_seconds": setup_s,
        "server_peak_rss_mb": rss_kb * 1024 / 1e6,
        "tracemalloc_peak_mb": heap_peak / 1e6,
        "bytes_per_round": int(np.mean([h["bytes_down"] + h["bytes_up"] for h in hist])) if hist else None,
        "bytes_up_per_client": int(np.mean([h["bytes_up"] / h["clients"] for h in hist])) if hist else None,
        "status": "ok",
    }


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares line ``y = a + b x``; None with fewer than two distinct x."""
    if len(set(xs)) < 2:
        return None
    import numpy as np

    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a), float(b)


def extrapolate(runs: list[dict], total_ram_mb: float, fraction: float) -> dict:
    """Linear fits of steady-state round time against sampled clients and of server memory against
    clients, and where one machine stops (a round over :data:`ROUND_LIMIT_S` or memory over half the RAM).

    With few sizes measured the fit is a rough guess; the text says from how many sizes it comes.
    """
    out: dict = {"round_limit_s": ROUND_LIMIT_S, "ram_mb": total_ram_mb}
    lines = []
    for privacy in sorted({r["privacy"] for r in runs if r.get("status") == "ok"}):
        ok = [r for r in runs if r["privacy"] == privacy and r.get("status") == "ok"]
        t = _fit([r["sampled_per_round"] for r in ok], [r["seconds_per_round"] for r in ok])
        mem = _fit([r["clients"] for r in ok], [r["server_peak_rss_mb"] for r in ok])
        entry: dict = {"measured_clients": [r["clients"] for r in ok]}
        words = [
            f"{privacy} ({len(ok)} sizes, {min(entry['measured_clients']):,} to "
            f"{max(entry['measured_clients']):,} clients):"
        ]
        if t and t[1] > 0:
            entry["seconds_per_sampled_client"], entry["round_intercept_s"] = t[1], t[0]
            entry["clients_at_round_limit"] = int(max(0.0, (ROUND_LIMIT_S - t[0]) / t[1]) / fraction)
            words.append(f"each sampled client adds about {t[1]:.2f} s to a steady-state round;")
        else:
            words.append("steady-state round time did not grow measurably with the sampled clients;")
        if mem and mem[1] > 0:
            entry["rss_mb_per_client"], entry["rss_intercept_mb"] = mem[1], mem[0]
            entry["clients_at_half_ram"] = int(max(0.0, (total_ram_mb / 2 - mem[0]) / mem[1]))
            words.append(
                f"each simulated client adds about {mem[1]:.2f} MB to the server's peak memory "
                f"(base {mem[0]:,.0f} MB);"
            )
        limits = [v for k, v in entry.items() if k in ("clients_at_round_limit", "clients_at_half_ram")]
        if limits:
            entry["one_machine_limit_clients"] = min(limits)
            words.append(
                f"extrapolated linearly, one machine like this one reaches a {ROUND_LIMIT_S:.0f}-s round "
                f"or half its {total_ram_mb:,.0f} MB of RAM at about {min(limits):,} clients "
                f"({fraction:.0%} sampled per round)."
            )
        else:
            words.append("too few sizes to extrapolate.")
        lines.append(" ".join(words))
        out[privacy] = entry
    if lines:
        lines.append(
            "Beyond that, and for real devices in any case, the deployment engine takes over: one "
            "SuperNode per device trains in parallel, so a round costs the slowest sampled client plus "
            "the server's aggregation instead of the simulation's shared cores."
        )
    out["text"] = " ".join(lines) if lines else "no configuration completed"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-clients", type=int, default=max(SIZES))
    parser.add_argument("--privacy", default="none,he", help="comma list of privacy modes")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--rows-per-client", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", default="fedavg", help="aggregation strategy (plain FedAvg by default)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma list of client counts")
    parser.add_argument("--name", default="scalability", help="result file: benchmarks/results/NAME.json")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per configuration")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        result = run_one(
            args.one, args.privacy, args.rounds, args.fraction, args.rows_per_client, args.seed, args.strategy
        )
        print("RESULT " + json.dumps(result))
        return
    modes = [m.strip() for m in args.privacy.split(",") if m.strip()]
    runs: list[dict] = []
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    for n in [s for s in sizes if s <= args.max_clients]:
        for privacy in modes:
            reason = _supports_he() if privacy != "none" else None
            if reason:
                runs.append({"clients": n, "privacy": privacy, "status": f"not run: {reason}"})
                continue
            cmd = [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--privacy",
                privacy,
                "--rounds",
                str(args.rounds),
                "--fraction",
                str(args.fraction),
                "--rows-per-client",
                str(args.rows_per_client),
                "--seed",
                str(args.seed),
                "--strategy",
                args.strategy,
            ]
            print(f"{n} clients, privacy {privacy} ...", flush=True)
            try:
                proc = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    timeout=args.timeout_s,
                    env={**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"},
                )
            except subprocess.TimeoutExpired:
                runs.append(
                    {"clients": n, "privacy": privacy, "status": f"not run: over {args.timeout_s:.0f} s"}
                )
                continue
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
                runs.append({"clients": n, "privacy": privacy, "status": f"failed: {tail}"})
                print(f"  failed: {tail}", flush=True)
                continue
            result = json.loads(lines[-1][len("RESULT ") :])
            print(
                f"  {result['seconds_per_round']:.2f} s/round, peak RSS {result['server_peak_rss_mb']:.0f} MB, "
                f"{result['bytes_per_round']:,} bytes/round",
                flush=True,
            )
            runs.append(result)
    ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e6
    command = "python benchmarks/bench_scalability.py " + " ".join(sys.argv[1:])
    write_result(
        args.name,
        {
            "command": command.strip(),
            "strategy": args.strategy,
            "seed": args.seed,
            "rounds": args.rounds,
            "fraction": args.fraction,
            "rows_per_client": args.rows_per_client,
            "runs": runs,
            "extrapolation": extrapolate(runs, ram_mb, args.fraction),
        },
    )


if __name__ == "__main__":
    main()
