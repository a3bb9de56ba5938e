"""Which windows should the federated prototype head's moments come from? Refit it offline from a finished
`fedids federate` run's own partitions and global model, three ways, and score the real test split.

    .venv/bin/python benchmarks/diag_federated_head_windows.py RUN_DIR

RUN_DIR: the `--out` of `fedids federate` on the six real CSVs with `--split label-time` (it holds
`partitions/` and `global/`). Variants: `real` (each client's real training windows, session 25), `head`
(their head windows, `fedids.task.head_windows`, the default since session 26) and `head-full` (a head
window only where it holds as many flows as the real one, so that no client's head window is padded) and
`head-repeat` (a head window's padding slots hold its earliest flow, as if the attack had been going on).
Prints macro-F1 and per-class F1 / precision; nothing is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from _common import REAL_FILES
from fedids.data.loader import load_flows
from fedids.federation.calibration import ClassMoments, class_moments, hidden_features, moments_prototypes
from fedids.federation.client import prepare_local
from fedids.federation.client_app import load_local_frame
from fedids.model.artifacts import load_detector
from fedids.pipelines.rare import score_predictions
from fedids.task import head_windows, predict_labels, prepare


def main(run: Path) -> None:
    data = prepare(load_flows([str(p) for p in REAL_FILES]).frame, split="label-time")
    detector = load_detector(run / "global")
    n, hidden = len(detector.vocabulary), detector.model.hidden
    clients = [
        prepare_local(load_local_frame(p), detector.window) for p in sorted(run.glob("partitions/*.parquet"))
    ]
    for variant in ("real", "head", "head-full", "head-repeat"):
        total = ClassMoments.zeros(n, hidden)
        for local in clients:
            rows = local.train_rows
            real, head = local.windows[rows], head_windows(local, rows)
            windows = {"real": real, "head": head}.get(variant)
            if variant == "head-full":
                windows = np.where(((head >= 0).sum(1) >= (real >= 0).sum(1))[:, None], head, real)
            elif variant == "head-repeat":  # padding slots hold the window's earliest flow instead
                earliest = np.take_along_axis(head, np.argmax(head >= 0, axis=1)[:, None], axis=1)
                windows = np.where(head >= 0, head, earliest)
            scaled = detector.scaler.transform(local.features)
            targets = detector.vocabulary.encode(local.labels[rows])
            total = total + class_moments(hidden_features(detector.model, scaled, windows), targets, n)
        prototypes = moments_prototypes(total)
        assert prototypes is not None
        detector.model.set_prototypes(*prototypes, gated=True)
        pred, _ = predict_labels(detector, data.features, data.windows[data.test_rows])
        scores = score_predictions(data.labels[data.test_rows], pred)
        per_class = " ".join(
            f"{c}={s['f1']:.3f}/{s['precision']:.2f}" for c, s in scores["per_class"].items()
        )
        print(f"{variant}: macro-F1 {scores['macro_f1']:.4f}  {per_class}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
