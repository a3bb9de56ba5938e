"""Per-class F1 of finished `fedids federate` runs on their own held-out test split.

results.json keeps the macro figures; the tables of docs/privacy.md ("How much noise SQL injection can
take") also need each class's F1 and the macro-F1 before the head calibration. For each run directory
given: the run's final `global` model scored on the test rows its run.json defines (same files, window
and split), and `calibration.before` from its results.json. Prints one line per run and writes
benchmarks/results/per_class_f1.json (or --out).

    .venv/bin/fedids federate $REAL --clients 10 --partition shared:0.5 --split label-time --rounds 20 \\
        --dpsgd-noise 0.6 --calibration none --out runs/noise-0.6
    .venv/bin/python benchmarks/per_class_f1.py runs/noise-0.6
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import load_run, write_result
from fedids.task import evaluate_rows


def score_run(run: Path) -> dict:
    _, detector, data = load_run(run)
    per_class = evaluate_rows(detector, data, data.test_rows)["per_class"]
    federated = json.loads((run / "results.json").read_text())["federated"]
    calibration = federated.get("calibration") or {}
    return {
        "run": str(run),
        "macro_f1": float(federated["macro_f1"]),
        "macro_f1_before_calibration": (calibration.get("before") or {}).get("macro_f1"),
        "calibration_kept": calibration.get("kept"),
        "dpsgd_epsilon": federated.get("dpsgd_epsilon"),
        "per_class_f1": {label: scores["f1"] for label, scores in per_class.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", default="per_class_f1")
    args = parser.parse_args(argv)
    rows = []
    for run in args.runs:
        row = score_run(run)
        rows.append(row)
        before = row["macro_f1_before_calibration"]
        print(
            f"{run}: macro-F1 {row['macro_f1']:.4f} (before calibration "
            f"{'-' if before is None else f'{before:.4f}'}), per class "
            + ", ".join(f"{k} {v:.3f}" for k, v in row["per_class_f1"].items())
        )
    write_result(args.out, {"runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
