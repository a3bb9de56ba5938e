"""A trained detector on disk: one directory with the weights, the fitted preprocessing and metadata.

Layout of a model directory::

    model.pt            PyTorch state_dict (loaded with weights_only=True: no pickle execution)
    preprocessing.json  scaler center/scale, label vocabulary, window length, model config and the
                        prototype head's weights and offsets (optional; see fedids.model.gru)
    metadata.json       how it was trained (data, split, metrics, versions)

Writes go to temporary names first and are renamed, so a crash never leaves a half-written model, and a
reader (the streaming detector) never sees one.

Every load checks the directory against the model schema (:func:`check_model_description`): window in
1..:data:`MAX_WINDOW`, a non-empty list of distinct CICIDS2017 labels as long as the head, the 78 input
features (plus the presence channel), scaler shapes and values, hidden size in 1..:data:`MAX_HIDDEN`,
weight shapes as the configuration says. The same label/window checks serve ONNX files
(:mod:`fedids.detect.stream`), so a model that fails on hot reload leaves the previous one running.
"""

from __future__ import annotations

import io
import json
import os
import pickle  # only for its exception type: torch.load(weights_only=True) raises UnpicklingError
from dataclasses import dataclass
from pathlib import Path

import torch

from fedids.data.preprocess import FlowScaler, LabelVocabulary
from fedids.errors import InputError
from fedids.model.checks import (
    MAX_HIDDEN,
    MAX_WINDOW,
    META_THRESHOLD,
    METADATA_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    read_model_description,
)
from fedids.model.discriminant import ABSENT_OFFSET, has_mean
from fedids.model.gru import GRUDetector

__all__ = [
    "Detector",
    "MAX_HIDDEN",
    "MAX_WINDOW",
    "META_THRESHOLD",
    "METADATA_FILE",
    "MODEL_FILE",
    "PREPROCESSING_FILE",
    "load_detector",
    "save_detector",
]


@dataclass
class Detector:
    """Everything needed to score flows: model, scaler, labels and window length."""

    model: GRUDetector
    scaler: FlowScaler
    vocabulary: LabelVocabulary
    window: int
    metadata: dict


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_detector(directory: str | Path, detector: Detector) -> Path:
    """Write ``detector`` to ``directory`` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prep = {
        "scaler": detector.scaler.to_dict(),
        "labels": detector.vocabulary.labels,
        "window": detector.window,
        "model": detector.model.config(),
    }
    if detector.model.has_prototypes:
        model = detector.model
        present = has_mean(model.prototype_offset).tolist()
        prep["prototypes"] = [row if p else None for row, p in zip(model.prototypes.tolist(), present)]
        prep["prototype_offsets"] = [
            off if p else None for off, p in zip(model.prototype_offset.tolist(), present)
        ]
        prep["prototype_gated"] = model.prototype_gated
    buf = io.BytesIO()
    torch.save(detector.model.state_dict(), buf)
    _write_atomic(directory / PREPROCESSING_FILE, json.dumps(prep, indent=1).encode())
    _write_atomic(directory / METADATA_FILE, json.dumps(detector.metadata, indent=2, default=str).encode())
    # Weights last: a reader that sees a new model.pt also sees the matching preprocessing.
    _write_atomic(directory / MODEL_FILE, buf.getvalue())
    return directory


def load_detector(directory: str | Path) -> Detector:
    """Load a model directory; any missing or corrupt part raises :class:`InputError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: model directory does not exist")
    try:
        prep, window, labels = read_model_description(directory)
        meta_path = directory / METADATA_FILE
        metadata = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if not isinstance(metadata, dict):
            raise ValueError("metadata.json is not an object")
        model = GRUDetector(**prep["model"])
        state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        if prep.get("prototypes") is not None:
            rows, offsets = prep["prototypes"], prep["prototype_offsets"]
            model.set_prototypes(
                torch.tensor([r or [0.0] * model.hidden for r in rows], dtype=torch.float32),
                torch.tensor([ABSENT_OFFSET if o is None else o for o in offsets], dtype=torch.float32),
                gated=prep.get("prototype_gated", True),
            )
        model.eval()
        return Detector(
            model=model,
            scaler=FlowScaler.from_dict(prep["scaler"]),
            vocabulary=LabelVocabulary(labels),
            window=window,
            metadata=metadata,
        )
    except FileNotFoundError as exc:
        raise InputError(
            f"{directory}: not a fedids model directory ({Path(exc.filename).name} missing)"
        ) from None
    except (
        ValueError,
        KeyError,
        TypeError,
        RuntimeError,
        EOFError,
        OSError,
        RecursionError,
        pickle.UnpicklingError,
    ) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{directory}: corrupt model ({reason[:200]})") from None
