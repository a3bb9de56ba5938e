"""Centralized GRU vs a scikit-learn random forest on the same real CICIDS2017 split, in one run.

Data: the real TrafficLabelling samples (DDoS, PortScan, SQL injection, XSS) plus the BENIGN files under
../shared/data/cicids2017/; split: time-ordered 70/30 within each label (`--split label-time`), the
scaler fitted on training rows only. The forest sees single flows (raw features), the GRU sees each flow's
window of its host's preceding flows. Writes benchmarks/results/gru_vs_rf.json.

    .venv/bin/python benchmarks/bench_gru_vs_rf.py [--epochs 10] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from sklearn.ensemble import RandomForestClassifier

from _common import REAL_FILES, write_result
from fedids.data.loader import load_flows
from fedids.model.metrics import compute_metrics
from fedids.model.train import TrainConfig
from fedids.task import evaluate_rows, prepare, train_centralized

SUMMARY = ("accuracy", "macro_f1", "weighted_f1", "mcc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    data = prepare(load_flows(REAL_FILES).frame, window=10, split="label-time")
    train, test = data.train_rows, data.test_rows
    runs = {"gru": [], "random_forest": []}
    for seed in range(args.seeds):
        start = time.perf_counter()
        detector, _ = train_centralized(data, TrainConfig(epochs=args.epochs, seed=seed))
        gru = evaluate_rows(detector, data, test)
        runs["gru"].append(
            {k: gru[k] for k in SUMMARY}
            | {
                "seconds": time.perf_counter() - start,
                "per_class_f1": {c: v["f1"] for c, v in gru["per_class"].items()},
            }
        )
        start = time.perf_counter()
        forest = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
        forest.fit(data.features[train], data.labels[train])
        rf = compute_metrics(data.labels[test], forest.predict(data.features[test]))
        runs["random_forest"].append(
            {k: rf[k] for k in SUMMARY}
            | {
                "seconds": time.perf_counter() - start,
                "per_class_f1": {c: v["f1"] for c, v in rf["per_class"].items()},
            }
        )
        print(
            f"seed {seed}: GRU macro-F1 {gru['macro_f1']:.4f} MCC {gru['mcc']:.4f} | "
            f"RF macro-F1 {rf['macro_f1']:.4f} MCC {rf['mcc']:.4f}"
        )
    median = {name: {k: statistics.median(r[k] for r in rs) for k in SUMMARY} for name, rs in runs.items()}
    write_result(
        "gru_vs_rf",
        {
            "data": [str(p.name) for p in REAL_FILES],
            "split": "label-time 70/30",
            "train_rows": int(len(train)),
            "test_rows": int(len(test)),
            "epochs": args.epochs,
            "seeds": args.seeds,
            "median": median,
            "gru_minus_rf_macro_f1": median["gru"]["macro_f1"] - median["random_forest"]["macro_f1"],
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
