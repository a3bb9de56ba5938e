"""Backdoor success beside the family's miss rate without the trigger, for finished `fedids federate` runs.

The backdoor success rate is the share of triggered test flows of the backdoor family the final model
scores BENIGN. Part of it is the model missing that family anyway; `fedids federate` now records that
share too (`poisoning.untriggered_benign`), runs made before it do not. For each run directory given, its
final `global` model rescores its own test rows (the files, window, split and seed of its run.json) with
and without the trigger. Prints one line per run and one per (attack, fraction) group (means), and writes
benchmarks/results/backdoor_rates.json (or --out).

    .venv/bin/python benchmarks/backdoor_rates.py runs/poisoning-s21-synth10/*-median-unscreened-{clean,0.?-backdoor}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from _common import load_run, write_result
from fedids.evaluation.backdoor import backdoor_success_rate
from fedids.federation.attacks import TRIGGER


def rescore(run: Path) -> dict:
    """One run's triggered and untriggered BENIGN rates of its backdoor family's test flows."""
    _, detector, data = load_run(run)
    poisoning = json.loads((run / "results.json").read_text())["federated"].get("poisoning") or {}
    family = poisoning.get("backdoor_family", "ddos")
    triggered, flows = backdoor_success_rate(detector, data, data.test_rows, TRIGGER, family)
    untriggered, _ = backdoor_success_rate(detector, data, data.test_rows, {}, family)
    return {
        "run": str(run),
        "attack": poisoning.get("attack", "none"),
        "fraction": poisoning.get("malicious_fraction", 0.0),
        "family": family,
        "flows": flows,
        "backdoor_success": triggered,
        "untriggered_benign": untriggered,
        "recorded_backdoor_success": poisoning.get("backdoor_success"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", default="backdoor_rates")
    args = parser.parse_args(argv)
    rows, groups = [], defaultdict(list)
    for run in args.runs:
        row = rescore(run)
        rows.append(row)
        groups[f"{row['attack']} {row['fraction']}"].append(row)
        print(
            f"{run.name}: triggered {row['backdoor_success']:.3f}, untriggered {row['untriggered_benign']:.3f} "
            f"({row['flows']} {row['family']} test flows)"
        )
    summary = {
        name: {
            "runs": len(members),
            "mean_backdoor_success": statistics.mean(r["backdoor_success"] for r in members),
            "mean_untriggered_benign": statistics.mean(r["untriggered_benign"] for r in members),
        }
        for name, members in sorted(groups.items())
    }
    for name, s in summary.items():
        print(
            f"{name}: {s['runs']} runs, backdoor success {s['mean_backdoor_success']:.3f}, "
            f"untriggered {s['mean_untriggered_benign']:.3f}"
        )
    write_result(args.out, {"runs": rows, "groups": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
