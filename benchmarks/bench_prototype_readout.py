"""The prototype head as a read-out of federated models: does it help on the full data sets?

For each finished `fedids federate --out DIR` run given, score its global model on the run's held-out
test flows in the same process: with its linear head, and with the (gated) prototype head of
`fedids.model.gru` (each class's mean GRU embedding over every training window, what summing the
clients' per-class feature sums and counts gives; `fedids.pipelines.rare.score_detector`), and, for
reference, with the ungated half-and-half mix measured in session 10. The runs must have been made with
the same `--data` and `--split` as given here. Writes benchmarks/results/prototype_readout.json (or --out).

Beside the test scores, the clients' own check of the two read-outs, as the CCVR check would sum it: every
client of the run (its `partitions/` files) scores both on its local training and validation windows
(the latest 20% of each label, `fedids.federation.client`), with class means from the clients' training
windows, and the confusion matrices are summed before macro-F1 (`clients_check`).

    .venv/bin/fedids federate $REAL --clients 10 --partition dirichlet:0.5 --split label-time \\
        --rounds 5 --out runs/real-dirichlet
    .venv/bin/python benchmarks/bench_prototype_readout.py --split label-time --runs runs/real-dirichlet \\
        --data $FILES                                   # FILES: the six files of REAL, without -d
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _common import write_result
from fedids.federation.calibration import macro_f1_from_confusion
from fedids.federation.client import LOCAL_VAL_FRACTION, LOCAL_VAL_SPLIT
from fedids.federation.config import FederationConfig
from fedids.model.artifacts import Detector, load_detector
from fedids.model.train import embedding_moments, embeddings, prototypes_from_moments
from fedids.pipelines.federate import FederateRequest, prepare_federate
from fedids.pipelines.rare import score_detector
from fedids.task import prepare


def clients_check(run: Path, detector: Detector) -> dict:
    """Macro-F1 ``[linear, with prototypes]`` of the clients' summed confusion matrices per local split."""
    window = json.loads((run / "run.json").read_text())["window"]
    model, n = copy.deepcopy(detector.model), len(detector.vocabulary.labels)
    model.set_prototypes(None)
    local = []
    for path in sorted((run / "partitions").glob("*.parquet")):
        d = prepare(
            pd.read_parquet(path), window=window, test_fraction=LOCAL_VAL_FRACTION, split=LOCAL_VAL_SPLIT
        )
        scaled = detector.scaler.transform(d.features)
        local.append(
            {
                name: (embeddings(model, scaled, d.windows[rows]), detector.vocabulary.encode(d.labels[rows]))
                for name, rows in (("train", d.train_rows), ("validation", d.test_rows))
            }
        )
    moments = [embedding_moments(emb[y >= 0], y[y >= 0], n) for emb, y in (c["train"] for c in local)]
    proto = copy.deepcopy(model)
    prototypes_from_moments(proto, tuple(sum(parts) for parts in zip(*moments)))
    out = {}
    for split in ("train", "validation"):
        confusion = np.zeros((2, n, n))
        for client in local:
            emb, y = client[split]
            keep = y >= 0
            with torch.no_grad():
                for i, m in enumerate((model.eval(), proto.eval())):
                    pred = m.read_out(torch.from_numpy(emb[keep])).argmax(1).numpy()
                    np.add.at(confusion[i], (y[keep], pred), 1)
        out[split] = [macro_f1_from_confusion(c) for c in confusion]
    return out


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
        detector = load_detector(run / "global")
        detector.model.set_prototypes(None)
        scores = score_detector(detector, data, data.train_rows, prototype=True)
        proto, mix = scores["variants"]["gated"], scores["variants"]["proto"]
        check = clients_check(run, detector)
        rows.append(
            {
                "run": str(run),
                "linear_macro_f1": scores["macro_f1"],
                "prototype_macro_f1": proto["macro_f1"],
                "ungated_mix_macro_f1": mix["macro_f1"],
                "per_class": {"linear": scores["per_class"], "prototype": proto["per_class"]},
                "clients_check": check,
            }
        )
        print(
            f"{run}: test macro-F1 linear {scores['macro_f1']:.4f}, with prototypes {proto['macro_f1']:.4f} "
            f"(ungated mix {mix['macro_f1']:.4f}); "
            f"clients' check: training windows {check['train'][0]:.4f} -> {check['train'][1]:.4f}, "
            f"validation {check['validation'][0]:.4f} -> {check['validation'][1]:.4f}"
        )
    write_result(args.out, {"split": args.split, "data": [str(p) for p in args.data], "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
