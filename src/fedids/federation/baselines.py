"""The paper's comparison baselines, evaluated on the same server-side test split as federated runs.

* ``centralized``: one model on the pooled training data (the upper bound federated learning aims at);
* ``local``: every client trains alone on its own partition with its own preprocessing, no federation;
  reported as the mean and the worst client.

Both use the same total number of passes over each example as the federated run
(``rounds x local_epochs``), so the comparison is about federation, not about training budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedids.data.windows import compute_window_indices, host_keys
from fedids.model.artifacts import Detector
from fedids.model.train import TrainConfig
from fedids.task import (
    PreparedData,
    environment,
    evaluate_rows,
    fit_preprocessing,
    new_model,
    train_centralized,
    train_rows,
)

SUMMARY_KEYS = ("accuracy", "macro_f1", "weighted_f1", "mcc")


@dataclass
class LocalResult:
    per_client: list[dict] = field(
        default_factory=list
    )  # one summary dict per client (with "client", "rows")

    def aggregate(self) -> dict:
        scores = [c for c in self.per_client if c.get("macro_f1") is not None]
        if not scores:
            return {}
        f1 = np.array([c["macro_f1"] for c in scores])
        worst = scores[int(f1.argmin())]
        return {
            "mean": {k: float(np.mean([c[k] for c in scores])) for k in SUMMARY_KEYS},
            "worst": {k: worst[k] for k in SUMMARY_KEYS} | {"client": worst["client"]},
            "clients": len(scores),
        }


def _summary(metrics: dict) -> dict:
    return {k: metrics[k] for k in SUMMARY_KEYS}


def run_centralized(
    data: PreparedData, config: TrainConfig, *, hidden: int, window: int
) -> tuple[Detector, dict]:
    detector, _ = train_centralized(data, config, hidden=hidden, window=window)
    return detector, evaluate_rows(detector, data, data.test_rows)


def run_local(
    data: PreparedData,
    parts: list[np.ndarray],
    config: TrainConfig,
    *,
    hidden: int,
    window: int,
    progress=None,
) -> LocalResult:
    """Train one model per client partition (rows of ``data``), each evaluated on ``data``'s test rows."""
    result = LocalResult()
    for client, rows in enumerate(parts):
        if len(rows) == 0:
            continue
        # The client's windows are built from its own rows only, as in federated training.
        local = data.frame.iloc[rows]
        local_windows = compute_window_indices(host_keys(local), window)
        local_data = PreparedData(
            local, data.features[rows], local_windows, np.zeros(len(rows), dtype=bool), data.labels[rows]
        )
        scaler, vocab = fit_preprocessing(local_data.features, local_data.labels)
        model = new_model(len(vocab), hidden, config.seed)
        train_rows(
            model, local_data, scaler.transform(local_data.features), vocab, np.arange(len(rows)), config
        )
        detector = Detector(model, scaler, vocab, window, {"environment": environment()})
        result.per_client.append(
            {
                "client": client,
                "rows": int(len(rows)),
                **_summary(evaluate_rows(detector, data, data.test_rows)),
            }
        )
        if progress:
            progress(1)
    return result
