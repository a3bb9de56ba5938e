"""The poisoning grid of docs/evaluation.md ("Three tiers: sites"): attacks against a federation of 10
devices in 2 sites (or --sites K), undefended and with `--robust median` (or --defences normclip, flame),
against the same seed's run without attack, beside the `absent` reference (the malicious devices removed).

Every cell is one `fedids federate` run (10 devices, 2 sites, 5 rounds or --rounds), so the figures are
exactly what the CLI gives; runs already in --work are reused; --jobs runs that many at once. Writes
benchmarks/results/poisoning.json (or --out): per run its macro-F1, MCC, backdoor success and calibration
record; per cell the macro-F1 differences to the clean run of the same seed and defence, their mean, and
whether the issue's criterion holds (mean difference >= -2 points, mean backdoor success <= 0.05).

    .venv/bin/python benchmarks/bench_poisoning.py --data real --partition dirichlet:0.5   # 3 seeds, ~45 min
    .venv/bin/python benchmarks/bench_poisoning.py --data synthetic --seeds 0 --fractions 0.2 \\
        --attacks scale:10 --out poisoning_quick                                          # 3 runs
    .venv/bin/python benchmarks/bench_poisoning.py --data real --rounds 20 --jobs 2 \
        --out poisoning_real_dirichlet_20rounds                                           # trained longer
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import REAL_FILES, ROOT, write_result

ATTACKS = ("label-flip", "noise", "scale:10", "backdoor")
# The file order of docs/evaluation.md's three-tier runs (the MachineLearningCVE file, which has no
# timestamps, before the NetSentinel one): the order of the loaded rows changes the windows and the split.
SITES_FILES = [*REAL_FILES[:4], REAL_FILES[5], REAL_FILES[4]]
DEFENCES = {
    "undefended": [],
    # "median" and "normclip" screen from round 2, as every result since session 18 that names them (the
    # default was 2 then; fedids federate's default is 0 since session 19)
    "median": ["--robust", "median", "--screening", "2"],
    "median-unscreened": ["--robust", "median", "--screening", "0"],
    "normclip": ["--robust", "normclip", "--screening", "2"],
    # screening from round 1 against the site's other devices' class means (session 22)
    "median-peers": ["--robust", "median", "--screening", "1", "--screening-check", "peers"],
    "median-benign": ["--robust", "median", "--screening", "1", "--screening-check", "benign"],
    # the weighted sum bounded at the median norm, screened against the benign mean (session 23)
    "normclip-benign": ["--robust", "normclip", "--screening", "1", "--screening-check", "benign"],
    "flame": ["--robust", "flame"],
}


def federate(work: Path, name: str, args: list[str]) -> dict:
    """One `fedids federate` run (reused when its results.json exists); its federated summary."""
    out = work / name
    if not (out / "results.json").exists():
        cmd = [sys.executable, "-m", "fedids.cli", "federate", *args, "--out", str(out)]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    federated = json.loads((out / "results.json").read_text())["federated"]
    poisoning = federated.get("poisoning") or {}
    return {
        "macro_f1": federated["macro_f1"],
        "mcc": federated["mcc"],
        "backdoor_success": poisoning.get("backdoor_success"),
        "untriggered_benign": poisoning.get("untriggered_benign"),  # recorded since session 23
        "malicious_clients": poisoning.get("malicious_clients", []),
        "calibration": {k: federated["calibration"].get(k) for k in ("kept", "site_defence")},
    }


def run_key(seed: int, fraction: str, attack: str, defence: str) -> str:
    """The undefended ``absent`` run is every defence's reference; named in ``--attacks`` it also runs
    under each other defence (the floor of that defence: its own run with the malicious devices removed)."""
    if attack == "absent" and defence == "undefended":
        return f"{seed}/absent/{fraction}"
    return f"{seed}/{defence}/{fraction}/{attack}"


def summarise(runs: dict[str, dict], seeds: list[int], fraction: str, attack: str, defence: str) -> dict:
    """One cell: macro-F1 points against the clean run of the same seed and defence, backdoor success."""
    attacked = [runs[run_key(s, fraction, attack, defence)] for s in seeds]
    deltas = [
        100 * (r["macro_f1"] - runs[f"{s}/{defence}/clean"]["macro_f1"]) for s, r in zip(seeds, attacked)
    ]
    backdoor = [r["backdoor_success"] or 0.0 for r in attacked]
    cell = {"fraction": float(fraction), "attack": attack, "defence": defence, "delta_points": deltas}
    cell |= {"mean_delta": statistics.mean(deltas), "mean_backdoor": statistics.mean(backdoor)}
    # the family's flows scored BENIGN without the trigger (benchmarks/backdoor_rates.py for older runs)
    untriggered = [r.get("untriggered_benign") for r in attacked]
    cell["mean_untriggered"] = None if None in untriggered else statistics.mean(untriggered)
    cell["holds"] = cell["mean_delta"] >= -2 and cell["mean_backdoor"] <= 0.05
    print(
        f"{fraction} {attack:10s} {defence:10s} mean {cell['mean_delta']:+.1f} points, "
        f"backdoor {cell['mean_backdoor']:.3f}, holds: {cell['holds']}"
    )
    return cell


def plan_runs(
    base: list[str], tag: str, seeds: list[int], defences: list[str], fractions: list[str], attacks: list[str]
) -> list[tuple[str, str, list[str]]]:
    """Every run of the grid: ``(key, folder name, fedids federate arguments)``."""
    jobs = []
    for seed in seeds:
        seeded = [*base, "--seed", str(seed)]
        for defence in defences:
            flags = DEFENCES[defence]
            jobs.append((f"{seed}/{defence}/clean", f"{tag}-{seed}-{defence}-clean", seeded + flags))
            for fraction in fractions:
                for attack in attacks:
                    if attack == "absent" and defence == "undefended":
                        continue  # the reference below
                    poisoned = ["--malicious", fraction, "--attack", attack]
                    name = f"{tag}-{seed}-{defence}-{fraction}-{attack.replace(':', '')}"
                    jobs.append((f"{seed}/{defence}/{fraction}/{attack}", name, seeded + flags + poisoned))
        for fraction in fractions if "undefended" in defences else ():
            absent = ["--malicious", fraction, "--attack", "absent"]
            jobs.append((f"{seed}/absent/{fraction}", f"{tag}-{seed}-absent-{fraction}", seeded + absent))
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("real", "synthetic"), default="synthetic")
    parser.add_argument("--partition", default="dirichlet:0.5")
    parser.add_argument("--seeds", default="0,2,3")
    parser.add_argument("--fractions", default="0.2,0.3")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument(
        "--defences",
        default="undefended,median",
        help=f"any of {', '.join(DEFENCES)} (absent needs undefended)",
    )
    parser.add_argument("--sites", type=int, default=2, help="site aggregators (10 devices in all)")
    parser.add_argument("--rounds", type=int, default=5, help="federated rounds of every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each run uses one core)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "poisoning", help="run folders")
    parser.add_argument("--out", default="poisoning", help="result name under benchmarks/results")
    args = parser.parse_args(argv)
    base = ["--clients", "10", "--partition", args.partition, "--rounds", str(args.rounds)]
    base += ["--sites", str(args.sites)]
    if args.data == "real":
        base += ["--split", "label-time"] + [x for p in SITES_FILES for x in ("-d", str(p))]
    tag = f"{args.data}-{args.partition.replace(':', '')}" + (
        f"-{args.sites}sites" if args.sites != 2 else ""
    )
    tag += f"-{args.rounds}rounds" if args.rounds != 5 else ""
    seeds = [int(s) for s in args.seeds.split(",")]
    defences = [d for d in args.defences.split(",") if d]
    if not defences or set(defences) - set(DEFENCES):
        raise SystemExit(f"--defences: choose from {', '.join(DEFENCES)}")
    fractions = args.fractions.split(",")
    attacks = [a for a in args.attacks.split(",") if a]  # empty: the runs without attack (and absent)
    jobs = plan_runs(base, tag, seeds, defences, fractions, attacks)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = pool.map(lambda job: federate(args.work, job[1], job[2]), jobs)
        runs: dict[str, dict] = {key: result for (key, _, _), result in zip(jobs, results)}
    cells = []
    for fraction in fractions:
        reference = ["absent"] if "undefended" in defences and "absent" not in attacks else []
        for attack in [*attacks, *reference]:
            for defence in defences if attack in attacks else ("undefended",):
                cells.append(summarise(runs, seeds, fraction, attack, defence))
    write_result(
        args.out,
        {
            "data": args.data,
            "partition": args.partition,
            "sites": args.sites,
            "rounds": args.rounds,
            "seeds": seeds,
            "cells": cells,
            "runs": runs,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
