"""The rare-class protocol (fedids.pipelines.rare): each attack class cut to its earliest k training flows.

For the real CICIDS2017 samples under ../shared/data/cicids2017/ (DDoS, PortScan, SQL injection, XSS,
BENIGN; `real` and `real-mixed`, see DATASETS) and for the synthetic default (fedids.data.synth, 11 attack classes): split by
time within each label (`--split label-time`, 70/30), keep the earliest k training flows of every attack
class (all benign training flows), then train and score on the untouched test flows, in one run and on the
same rows: fedids centralized (`fedids train`'s path), fedids federated (Flower simulation, `shared:0.5`)
and a random forest (100 trees, single flows). Per-class F1/precision, macro-F1; mean of the seeds.
Writes benchmarks/results/rare.json (or --out).

    .venv/bin/python benchmarks/bench_rare.py                       # full: k 5,10,20,50, 3 seeds
    .venv/bin/python benchmarks/bench_rare.py --quick               # k 5,10, 1 seed, small synthetic
    .venv/bin/python benchmarks/bench_rare.py --data real --models centralized,random_forest \\
        --recipes early-stop,prototype                              # candidate recipes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from _common import REAL_FILES, write_result
from fedids.data.loader import load_flows
from fedids.pipelines.rare import K_VALUES, MODELS, RareConfig, format_tables, run_protocol
from fedids.task import prepare

QUICK_SYNTH = {"devices": 12, "hours": 0.5, "gateways": 2}
DATASETS = ("real", "real-mixed", "synthetic")
# real: the TrafficLabelling files only, which keep source IPs and timestamps, so windows are per host as
# `fedids detect` builds them. real-mixed: all six files as bench_gru_vs_rf.py loads them; the
# MachineLearningCVE benign file has no IPs or timestamps, so the loader keeps that metadata for no row and
# every window is one stream in file order (a class's first training windows reach into the previous
# file's flows).
TRAFFIC_LABELLING = [p for p in REAL_FILES if "trafficlabelling" in str(p)]


def load_dataset(name: str, quick: bool, seed: int = 0):
    """The canonical flow frame of a real sample (the CLI's loader) or the synthetic default."""
    if name in ("real", "real-mixed"):
        return load_flows([str(p) for p in (TRAFFIC_LABELLING if name == "real" else REAL_FILES)]).frame
    from fedids.data.synth import SynthConfig, generate_flows

    return generate_flows(SynthConfig(seed=seed, **(QUICK_SYNTH if quick else {})))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=",".join(DATASETS), help=f"comma-separated, from {DATASETS}")
    p.add_argument("--k", default=",".join(map(str, K_VALUES)), help="comma-separated k values")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}")
    p.add_argument("--partitions", default="shared:0.5", help="federated partitions, comma-separated")
    p.add_argument("--recipes", default="", help="candidate recipes (fedids.pipelines.rare_recipes)")
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5, help="centralized epochs (fedids train: 5)")
    p.add_argument("--local-epochs", type=int, default=RareConfig.local_epochs, help="federated local epochs")
    p.add_argument("--fed-lr", type=float, default=RareConfig.federated_lr, help="federated client lr")
    p.add_argument("--fed-batch-size", type=int, default=RareConfig.federated_batch_size, help="its batch")
    p.add_argument(
        "--fed-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other FederationConfig field of the federated runs (repeatable; VALUE read as JSON, "
        "else as text), e.g. --fed-option client_weighting=examples",
    )
    p.add_argument(
        "--prototype-variants",
        action="store_true",
        help="also score centralized/federated with a prototype head",
    )
    p.add_argument("--quick", action="store_true", help="k 5,10, one seed, small synthetic, 3 rounds")
    p.add_argument("--render", type=Path, default=None, help="print the markdown tables of a result JSON")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/rare.json)")
    return p.parse_args(argv)


def make_config(args: argparse.Namespace) -> RareConfig:
    split = [s for s in args.recipes.split(",") if s]
    return RareConfig(
        k_values=(5, 10) if args.quick else tuple(int(k) for k in args.k.split(",")),
        seeds=(0,) if args.quick else tuple(range(args.seeds)),
        models=tuple(m for m in args.models.split(",") if m),
        partitions=tuple(p for p in args.partitions.split(",") if p),
        recipes=tuple(split),
        clients=args.clients,
        rounds=3 if args.quick else args.rounds,
        epochs=args.epochs,
        local_epochs=args.local_epochs,
        federated_lr=args.fed_lr,
        federated_batch_size=args.fed_batch_size,
        prototype_variants=args.prototype_variants,
        federation_options=tuple(parse_option(o) for o in args.fed_option),
    )


def parse_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(KEY, VALUE)``; VALUE parsed as JSON (numbers, true/false), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--fed-option {text!r}: use KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        for name, result in json.loads(args.render.read_text())["datasets"].items():
            kept = {k: v["kept"] for k, v in result["splits"].items()}
            print(f"## {name} ({result['flows']:,} flows; training flows kept per k: {kept})\n")
            print(format_tables(result["summary"]) + "\n")
        return
    torch.set_num_threads(1)  # as fedids experiment: one thread per process on a small shared machine
    cfg = make_config(args)
    datasets = [d for d in args.data.split(",") if d]
    if set(datasets) - set(DATASETS):
        raise SystemExit(f"--data: choose from {DATASETS}")
    payload: dict = {
        "command": "benchmarks/bench_rare.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "protocol": "label-time 70/30; earliest k training flows per attack class; test flows untouched",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()},
        "datasets": {},
    }
    for name in datasets:
        start = time.perf_counter()
        data = prepare(load_dataset(name, args.quick), window=cfg.window, split="label-time")
        result = run_protocol(data, cfg, log=lambda line, n=name: print(f"[{n}] {line}", flush=True))
        result["seconds"] = time.perf_counter() - start
        result["flows"] = int(len(data.labels))
        payload["datasets"][name] = result
        print(f"\n## {name}\n\n{format_tables(result['summary'])}\n", flush=True)
        save(payload, args.out)  # after each data set: a long run that is stopped keeps what it finished


def save(payload: dict, out: Path | None) -> None:
    if out is None:
        write_result("rare", payload)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
