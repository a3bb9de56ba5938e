"""The prototype head as a read-out of federated models: does it help on the full data sets?

For each finished `fedids federate --out DIR` run given, score its global model on the run's held-out
test flows twice, in the same process: with its linear head, and mixed half and half with the prototype
head (each class's mean GRU embedding over every training window, what summing the clients' per-class
feature sums and counts gives; `fedids.pipelines.rare.score_detector`). The runs must have been made with
the same `--data` and `--split` as given here. Writes benchmarks/results/prototype_readout.json (or --out).

    .venv/bin/fedids federate $REAL --clients 10 --partition dirichlet:0.5 --split label-time \\
        --rounds 5 --out runs/real-dirichlet
    .venv/bin/python benchmarks/bench_prototype_readout.py --split label-time --runs runs/real-dirichlet \\
        --data $FILES                                   # FILES: the six files of REAL, without -d
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import write_result
from fedids.federation.config import FederationConfig
from fedids.model.artifacts import load_detector
from fedids.pipelines.federate import FederateRequest, prepare_federate
from fedids.pipelines.rare import score_detector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="fedids federate output folders")
    parser.add_argument(
        "--data", nargs="*", type=Path, default=[], help="the runs' data files (none: synthetic)"
    )
    parser.add_argument("--split", default="time", help="the runs' --split")
    parser.add_argument("--out", default="prototype_readout", help="result name under benchmarks/results")
    args = parser.parse_args(argv)
    request = FederateRequest(
        config=FederationConfig(),
        out_dir=Path("unused"),
        data=tuple(args.data),
        split=args.split,
        partition="iid",
    )
    data = prepare_federate(request).prepared  # the same split as the runs': the partition does not matter
    rows = []
    for run in args.runs:
        scores = score_detector(load_detector(run / "global"), data, data.train_rows, prototype=True)
        proto = scores["variants"]["proto"]
        rows.append(
            {
                "run": str(run),
                "linear_macro_f1": scores["macro_f1"],
                "prototype_macro_f1": proto["macro_f1"],
                "per_class": {"linear": scores["per_class"], "prototype": proto["per_class"]},
            }
        )
        print(f"{run}: macro-F1 linear {scores['macro_f1']:.4f}, with prototypes {proto['macro_f1']:.4f}")
    write_result(args.out, {"split": args.split, "data": [str(p) for p in args.data], "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
