"""Cost of a federated round in each privacy mode, measured in one run of the real round loop.

10 simulated clients (Flower's simulation engine, one core each) on the real CICIDS2017 samples in
``../shared/data`` (``shared:0.5``, ``label-time``), the default GRU (hidden 64, window 10), the default
strategy (FedAvgM, objective weights, class-aware head); ``--rounds`` rounds per mode, all modes in the same
process and moment. Per mode:

* ``round_s``: median wall seconds of a round (send, local training, secure sum, server step, test);
* ``ratio_to_none``: that median over the ``none`` median of the same run;
* ``upload_per_client_bytes``: bytes one client uploads in a training round (median round, mean over
  clients), and ``upload_ratio_to_float32``: over the float32 model (what ``none`` uploads);
* ``server_s``: median seconds of the server's sum and step.

A mode ending in ``+dpsgd`` (``dpsgd`` alone: plaintext) trains every client with DP-SGD at epsilon 8 per
flow window (``--modes none,dpsgd`` measures DP-SGD's round against the plaintext round); ``+dpsgd-distributed``
(with ``secagg``) runs distributed DP-SGD, one step of expected pooled batch 1024 a round
(``--modes none,secagg,secagg+dpsgd-distributed``).

Run: ``.venv/bin/python benchmarks/bench_rounds.py`` (writes ``benchmarks/results/rounds.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "rounds.json"
DATA = ROOT / ".." / "shared" / "data" / "cicids2017"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--modes", default="none,he,secagg,he+secagg")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from fedids.data.loader import load_flows
    from fedids.federation.server_app import FederationConfig
    from fedids.federation.simulation import make_partitions, run_simulated
    from fedids.privacy.keys import init_keys
    from fedids.task import new_model, prepare

    files = sorted(DATA.glob("*/*.csv"))
    data = prepare(load_flows(files).frame, window=10, split="label-time")
    parts = make_partitions(data, args.clients, "shared:0.5", seed=0)
    model_bytes = 4 * sum(p.numel() for p in new_model(len(set(data.labels)), 64).parameters())
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            parts_of_mode = mode.split("+")
            privacy = "+".join(p for p in parts_of_mode if not p.startswith("dpsgd")) or "none"
            distributed = "dpsgd-distributed" in parts_of_mode
            keys = init_keys(Path(tmp) / f"keys-{mode}", privacy) if "he" in parts_of_mode else None
            config = FederationConfig(
                rounds=args.rounds,
                min_clients=args.clients,
                privacy=privacy,
                dpsgd_target_epsilon=8.0 if "dpsgd" in parts_of_mode or distributed else 0.0,
                dpsgd_distributed=distributed,
                calibration="none",
                he_public_context=str(keys.public_context) if keys else "",
            )
            state = run_simulated(
                data,
                parts,
                config,
                Path(tmp) / mode,
                he_secret_context=str(keys.secret_context) if keys else None,
            )
            history = state.history
            upload = statistics.median(h["bytes_up"] / max(h["clients"], 1) for h in history)
            rows[mode] = {
                "round_s": statistics.median(h["seconds"] for h in history),
                "rounds_s": [h["seconds"] for h in history],
                "server_s": statistics.median(h.get("server_seconds") or 0.0 for h in history),
                "upload_per_client_bytes": upload,
                "upload_ratio_to_float32": upload / model_bytes,
                "macro_f1": history[-1]["test"]["macro_f1"],
            }
            print(
                f"{mode:10s} round {rows[mode]['round_s']:.2f} s  upload/client {upload / 1e3:.0f} kB "
                f"({rows[mode]['upload_ratio_to_float32']:.2f}x float32)",
                file=sys.stderr,
            )
    base = rows.get("none", {}).get("round_s")
    for row in rows.values():
        row["ratio_to_none"] = row["round_s"] / base if base else None
    result = {
        "benchmark": "rounds",
        "clients": args.clients,
        "rounds": args.rounds,
        "model_float32_bytes": model_bytes,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "cpus": __import__("os").cpu_count(),
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
