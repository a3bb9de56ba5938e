"""Magnitude pruning of a trained detector, with an optional short fine-tune that keeps the mask.

Pruning uses :mod:`torch.nn.utils.prune` (global L1-unstructured): the ``amount`` fraction of weights
with the smallest magnitude *across* the GRU's input and recurrent matrices and the head's matrix is set
to zero (biases are kept: 3% of the parameters, and a zero bias is not free). While the pruning
re-parametrisation is active, each pruned weight is ``weight_orig * mask``, so a fine-tune with
:func:`fedids.model.train.fit` can only move the surviving weights; :func:`torch.nn.utils.prune.remove`
then makes the zeros permanent and the model is a plain :class:`~fedids.model.gru.GRUDetector` again
(same ``state_dict`` keys, loadable by :func:`~fedids.model.artifacts.load_detector`).

The zeros do not shrink the dense ONNX file by themselves; they make the weights compress well (zip,
flash file systems) and are preserved exactly by int8 quantisation (0 maps to 0).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.nn.utils import prune

from fedids.data.schema import FEATURES, LABEL
from fedids.data.windows import compute_window_indices, host_keys, sort_by_time
from fedids.model.artifacts import Detector
from fedids.model.train import TrainConfig, TrainResult, fit

PRUNED_PARAMETERS: tuple[tuple[str, str], ...] = (
    ("gru", "weight_ih_l0"),
    ("gru", "weight_hh_l0"),
    ("head", "weight"),
)
"""(submodule, parameter) pairs that pruning may zero."""

DEFAULT_FINETUNE = TrainConfig(epochs=2, lr=1e-3)
"""A short, gentle fine-tune: two epochs at a third of the training learning rate."""


@dataclass(frozen=True)
class PruneResult:
    """A pruned copy of the detector and what pruning did.

    ``sparsity``: measured fraction of exact zeros over :data:`PRUNED_PARAMETERS` (``amount`` rounded to
    whole weights, plus any weight that was zero before). ``finetune``: the fit's losses and timing, or
    None without fine-tune data.
    """

    detector: Detector
    amount: float
    sparsity: float
    finetune: TrainResult | None


def compute_sparsity(detector: Detector) -> float:
    """Fraction of exact zeros over the weights of :data:`PRUNED_PARAMETERS` (0.0 .. 1.0)."""
    mats = [getattr(getattr(detector.model, mod), name) for mod, name in PRUNED_PARAMETERS]
    return float(sum(int((m == 0).sum()) for m in mats) / sum(int(m.numel()) for m in mats))


def prune_detector(
    detector: Detector,
    amount: float,
    *,
    finetune_frame: pd.DataFrame | None = None,
    config: TrainConfig = DEFAULT_FINETUNE,
) -> PruneResult:
    """Prune the smallest-magnitude ``amount`` of the weights; optionally fine-tune with the mask held.

    Parameters
    ----------
    detector : the trained detector; it is not modified (the result holds a deep copy).
    amount : fraction of the prunable weights to zero, in ``[0, 1)``.
    finetune_frame : labelled canonical flow frame to fine-tune on (training data, never the test
        file the export is evaluated on). Flows whose label is not in the detector's vocabulary are
        skipped. Its windows are built as in training (time order, per source host).
    config : fine-tune hyper-parameters (:data:`DEFAULT_FINETUNE`).

    Returns
    -------
    :class:`PruneResult`; ``result.detector.metadata["compression"]`` records amount, sparsity and the
    fine-tune.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"prune amount must be in [0, 1), got {amount}")
    pruned = copy.deepcopy(detector)
    model = pruned.model
    targets = [(getattr(model, mod), name) for mod, name in PRUNED_PARAMETERS]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(amount))
    trained: TrainResult | None = None
    if finetune_frame is not None and len(finetune_frame) > 0:
        frame = sort_by_time(finetune_frame)
        windows = compute_window_indices(host_keys(frame), pruned.window)
        labels = pruned.vocabulary.encode(frame[LABEL].astype(str).to_numpy())
        scaled = pruned.scaler.transform(frame[list(FEATURES)].to_numpy(dtype=np.float32))
        if (labels >= 0).any():
            trained = fit(model, scaled, windows, labels, config)
    for module, name in targets:
        prune.remove(module, name)  # weight = weight_orig * mask, made permanent
    model.eval()
    with torch.no_grad():
        sparsity = compute_sparsity(pruned)
    pruned.metadata = dict(pruned.metadata)
    pruned.metadata["compression"] = {
        "prune_amount": float(amount),
        "sparsity": sparsity,
        "method": "global L1-unstructured",
        "finetune_rows": int(trained.examples) if trained else 0,
        "finetune_losses": trained.losses if trained else [],
    }
    return PruneResult(detector=pruned, amount=float(amount), sparsity=sparsity, finetune=trained)
