"""From a flow frame to a trained, evaluated detector: the plain-PyTorch core shared by the centralized
baseline (`fedids train`), federated clients and the evaluation code. Nothing here imports Flower.

Order of operations, chosen so nothing leaks from test to train: sort flows by time, split by time
(globally or within each label), fit the scaler and label vocabulary on the training rows only, build
each flow's window from the flows of the same host that precede it.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fedids import __version__
from fedids.data.preprocess import FeatureStats, FlowScaler, LabelVocabulary
from fedids.data.schema import BENIGN_LABEL, FEATURES, LABEL
from fedids.data.windows import (
    DEFAULT_WINDOW,
    attack_context_indices,
    compute_window_indices,
    host_keys,
    map_to_rows,
    sort_by_time,
    split_window_indices,
    time_split,
)
from fedids.model.artifacts import Detector
from fedids.model.gru import DEFAULT_HIDDEN, GRUDetector
from fedids.model.metrics import compute_metrics
from fedids.model.train import TrainConfig, TrainResult, fit, fit_prototypes, predict_proba

SPLITS = ("time", "label-time")


@dataclass
class PreparedData:
    """A time-ordered flow frame with its raw feature matrix, windows and train/test split.

    ``features``: float32 ``(n_flows, 78)``; ``windows``: int64 ``(n_flows, window)`` row indices;
    ``test_mask``: bool ``(n_flows,)``; ``labels``: str ``(n_flows,)``.
    """

    frame: pd.DataFrame
    features: np.ndarray
    windows: np.ndarray
    test_mask: np.ndarray
    labels: np.ndarray

    @property
    def train_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.test_mask)

    @property
    def test_rows(self) -> np.ndarray:
        return np.flatnonzero(self.test_mask)


def prepare(
    frame: pd.DataFrame, *, window: int = DEFAULT_WINDOW, test_fraction: float = 0.3, split: str = "time"
) -> PreparedData:
    """Sort ``frame`` by time, split it and compute every flow's window (see module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    frame = sort_by_time(frame)
    test = time_split(frame, test_fraction, per_label=(split == "label-time"))
    return _prepared(frame, split_window_indices(host_keys(frame), window, test), test)


def _prepared(frame: pd.DataFrame, windows: np.ndarray, test_mask: np.ndarray) -> PreparedData:
    """:class:`PreparedData` of a time-ordered ``frame`` with its ``windows`` and ``test_mask``."""
    return PreparedData(
        frame=frame,
        features=frame[list(FEATURES)].to_numpy(dtype=np.float32),
        windows=windows,
        test_mask=test_mask,
        labels=frame[LABEL].astype(str).to_numpy(),
    )


def prepare_with_test(
    train_frame: pd.DataFrame, test_frame: pd.DataFrame, *, window: int = DEFAULT_WINDOW
) -> PreparedData:
    """Train on every flow of ``train_frame`` and test on every flow of ``test_frame`` (the user's own
    held-out files): each is time-ordered and windowed on its own, so no window reaches across them."""
    parts = []
    for frame in (train_frame, test_frame):
        frame = sort_by_time(frame)
        parts.append(
            (
                frame,
                frame[list(FEATURES)].to_numpy(dtype=np.float32),
                compute_window_indices(host_keys(frame), window),
                frame[LABEL].astype(str).to_numpy(),
            )
        )
    (train, f_train, w_train, l_train), (test, f_test, w_test, l_test) = parts
    return PreparedData(
        frame=pd.concat([train, test], ignore_index=True),
        features=np.concatenate([f_train, f_test]),
        windows=np.concatenate([w_train, np.where(w_test >= 0, w_test + len(train), -1)]),
        test_mask=np.r_[np.zeros(len(train), dtype=bool), np.ones(len(test), dtype=bool)],
        labels=np.concatenate([l_train, l_test]),
    )


def classes_without_training_rows(data: PreparedData) -> list[str]:
    """Labels that occur among the test rows but not among the training rows (a model cannot learn them)."""
    return sorted(set(data.labels[data.test_rows]) - set(data.labels[data.train_rows]))


def compute_label_counts(labels: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}


def fit_preprocessing(features: np.ndarray, labels: np.ndarray) -> tuple[FlowScaler, LabelVocabulary]:
    """Fit the scaler and label vocabulary on training rows only."""
    return FlowScaler.fit(features), LabelVocabulary.from_counts(compute_label_counts(labels))


def preprocessing_from_stats(
    stats: FeatureStats, label_counts: dict[str, int]
) -> tuple[FlowScaler, LabelVocabulary]:
    """The same preprocessing from aggregated statistics (federated clients send these, not rows)."""
    return FlowScaler.from_stats(stats), LabelVocabulary.from_counts(label_counts)


def new_model(n_classes: int, hidden: int = DEFAULT_HIDDEN, seed: int = 0) -> GRUDetector:
    torch.manual_seed(seed)
    return GRUDetector(len(FEATURES) + 1, n_classes, hidden)


def train_rows(
    model: GRUDetector,
    data: PreparedData,
    scaled: np.ndarray,
    vocabulary: LabelVocabulary,
    rows: np.ndarray,
    config: TrainConfig,
    *,
    global_params: list[torch.Tensor] | None = None,
    class_weights: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train on the windows ending at ``rows`` (indices into ``data``).

    ``class_weights`` default to the local label frequencies; federated clients pass the weights of the
    global label counts so that every client optimises the same objective.
    """
    targets = vocabulary.encode(data.labels[rows])
    return fit(
        model,
        scaled,
        data.windows[rows],
        targets,
        config,
        class_weights=class_weights,
        global_params=global_params,
        progress=progress,
    )


def predict_labels(
    detector: Detector, features: np.ndarray, windows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted label strings ``(n,)`` and class probabilities ``(n, n_classes)`` for each window."""
    proba = predict_proba(detector.model, detector.scaler.transform(features), windows)
    return detector.vocabulary.decode(proba.argmax(axis=1)), proba


def evaluate_rows(detector: Detector, data: PreparedData, rows: np.ndarray) -> dict:
    """Metrics of ``detector`` on the flows ``rows`` of ``data`` (windows may reach earlier rows)."""
    pred, _ = predict_labels(detector, data.features, data.windows[rows])
    return compute_metrics(data.labels[rows], pred)


def environment() -> dict:
    return {"fedids": __version__, "torch": torch.__version__, "python": platform.python_version()}


def prepare_client(frame: pd.DataFrame, *, window: int, validation_fraction: float) -> PreparedData:
    """A federated client's own flows, time-ordered and windowed (each window from the client's flows
    alone); ``test_rows`` are its local validation slice, the benign flows among each label's latest
    ``validation_fraction`` (:func:`validation_mask`, the slice ``fedids train`` holds out), ``train_rows``
    the rest: every attack flow trains. ``validation_fraction = 0``: no slice."""
    frame = sort_by_time(frame)
    # windows over all the client's flows: its validation flows are its own past traffic, not test flows
    data = _prepared(
        frame, compute_window_indices(host_keys(frame), window), np.zeros(len(frame), dtype=bool)
    )
    if validation_fraction == 0:
        return data
    return dataclasses.replace(data, test_mask=validation_mask(data, validation_fraction))


def validation_mask(
    data: PreparedData, fraction: float, per_label: bool = True, benign_only: bool = True
) -> np.ndarray:
    """``fedids train``'s validation slice, bool ``(n_flows,)``: the BENIGN flows among the latest
    ``fraction`` of the training flows in time (per label with ``per_label``, as ``--split label-time``).
    It is never trained on and sets the alert threshold, a false-alarm budget that only benign flows
    decide. Attack flows all train: a class seen in ten flows cannot spare two, and a class's latest flows
    can be its only ones of a new shape (PortScan's probes after its first HTTP sessions on the real
    samples: docs/rare-classes.md, session 24). ``benign_only=False``: every label's latest flows, the
    slice before session 24."""
    rows = data.train_rows
    mask = np.zeros(len(data.labels), dtype=bool)
    if len(rows) > 1:
        mask[rows[time_split(data.frame.iloc[rows], fraction, per_label=per_label)]] = True
    return mask & (data.labels == BENIGN_LABEL) if benign_only else mask


def head_windows(data: PreparedData, rows: np.ndarray) -> np.ndarray:
    """The windows the prototype head's class moments are computed on, one per flow of ``rows`` (time
    ordered), indices into ``data``: each flow's window of the earlier ``rows`` of its host, where an
    attack flow's window skips the other attacks its host sent before that attack's first flow
    (:func:`fedids.data.windows.attack_context_indices`). The linear head trains on the real windows
    (``data.windows[rows]``); the prototype head represents each attack as it looks while it goes on, not
    by windows that hold the attack its host ran before (measured in docs/rare-classes.md, session 26)."""
    rows = np.asarray(rows, dtype=np.int64)
    local = attack_context_indices(host_keys(data.frame.iloc[rows]), data.labels[rows], data.windows.shape[1])
    return map_to_rows(local, rows)


def train_centralized(
    data: PreparedData,
    config: TrainConfig,
    *,
    hidden: int = DEFAULT_HIDDEN,
    window: int = DEFAULT_WINDOW,
    progress: Callable[[int], None] | None = None,
    prototypes: bool = False,
) -> tuple[Detector, TrainResult]:
    """Centralized training: fit preprocessing and the GRU on the training rows of ``data``; with
    ``prototypes``, add the prototype head (from the class moments of the training windows' embedding,
    :mod:`fedids.model.gru`)."""
    rows = data.train_rows
    scaler, vocab = fit_preprocessing(data.features[rows], data.labels[rows])
    model = new_model(len(vocab), hidden, config.seed)
    scaled = scaler.transform(data.features)
    result = train_rows(model, data, scaled, vocab, rows, config, progress=progress)
    if prototypes:
        fit_prototypes(model, scaled, head_windows(data, rows), vocab.encode(data.labels[rows]))
    detector = Detector(
        model=model, scaler=scaler, vocabulary=vocab, window=window, metadata={"environment": environment()}
    )
    return detector, result
