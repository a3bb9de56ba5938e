"""The model schema, checked on every load of a model directory or ONNX file (torch-free, so that the
edge detector can use it): window range, labels against the head, features, scaler values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from fedids.data.schema import FEATURES, family_of
from fedids.errors import InputError

MODEL_FILE, PREPROCESSING_FILE, METADATA_FILE = "model.pt", "preprocessing.json", "metadata.json"
MAX_WINDOW = 128
"""Longest window (flows per host) a model may have: `fedids train --window` refuses more. The training
window index array alone is 8 bytes x flows x window (2.8 M CICIDS2017 flows at 128: 2.9 GB)."""
MAX_HIDDEN = 1024
"""Largest GRU hidden size accepted (`fedids train --hidden`)."""
MAX_CLASSES = 64
DEFAULT_MAX_FALSE_ALARM_RATE = 0.001
"""Default alert budget on validation data: one false alert per 1,000 benign flows."""
META_THRESHOLD = "alert_threshold"
"""Metadata key: the default alert rule chosen on validation data at training time (see
:func:`fedids.model.metrics.choose_threshold`): ``{"threshold", "max_false_alarm_rate", ...}``."""
META_ONNX_THRESHOLD = "fedids.alert_threshold"
"""The same rule in an exported ONNX file's ``metadata_props`` (JSON object), written by
:mod:`fedids.model.export` and read by :mod:`fedids.detect.stream`."""


def check_window(window: object, source: str = "model") -> int:
    """``window`` as an int in 1..MAX_WINDOW, else :class:`InputError`."""
    if (
        isinstance(window, bool)
        or not isinstance(window, (int, float))
        or not float(window).is_integer()
        or not 1 <= window <= MAX_WINDOW
    ):
        raise InputError(f"{source}: window must be an integer in 1..{MAX_WINDOW}, got {window!r}")
    return int(window)


def check_labels(labels: object, n_outputs: int | None, source: str = "model") -> list[str]:
    """A non-empty list of distinct CICIDS2017 labels, as long as the model's output when known."""
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise InputError(f"{source}: labels must be a non-empty list of label strings")
    if len(labels) > MAX_CLASSES:
        raise InputError(f"{source}: {len(labels)} labels, at most {MAX_CLASSES}")
    if len(set(labels)) != len(labels):
        twice = sorted({x for x in labels if labels.count(x) > 1})
        raise InputError(f"{source}: labels repeated: {', '.join(map(repr, twice[:5]))}")
    for label in labels:
        try:
            family_of(label)
        except ValueError:
            raise InputError(f"{source}: unknown label {label[:60]!r} in the model's label list") from None
    if n_outputs is not None and n_outputs != len(labels):
        raise InputError(f"{source}: {len(labels)} labels for a model with {n_outputs} outputs")
    return list(labels)


def check_features(features: Sequence[str] | None, source: str = "model") -> None:
    if features is not None and list(features) != list(FEATURES):
        raise InputError(f"{source}: model expects other input features than the CICIDS2017 78")


def read_model_description(directory: Path) -> tuple[dict, int, list[str]]:
    """Read and check a model directory's ``preprocessing.json`` without torch (a bad model fails fast);
    returns ``(description, window, labels)``."""
    try:
        prep = json.loads((Path(directory) / PREPROCESSING_FILE).read_text())
    except FileNotFoundError:
        raise InputError(
            f"{directory}: not a fedids model directory ({PREPROCESSING_FILE} missing)"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{directory}: corrupt model ({reason[:200]})") from None
    window, labels = check_model_description(prep, str(directory))
    return prep, window, labels


def check_model_description(prep: object, source: str) -> tuple[int, list[str]]:
    """Check ``preprocessing.json`` (parsed) against the schema; returns ``(window, labels)``."""
    if not isinstance(prep, dict) or not {"scaler", "labels", "window", "model"} <= set(prep):
        raise InputError(
            f"{source}: corrupt model (preprocessing.json lacks scaler, labels, window or model)"
        )
    config = prep["model"]
    if (
        not isinstance(config, dict)
        or set(config) != {"n_inputs", "n_classes", "hidden"}
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in config.values())
    ):
        raise InputError(f"{source}: corrupt model (model config {str(config)[:80]})")
    if config["n_inputs"] != len(FEATURES) + 1:
        raise InputError(f"{source}: model takes {config['n_inputs']} inputs, expected {len(FEATURES) + 1}")
    if not 1 <= config["hidden"] <= MAX_HIDDEN:
        raise InputError(f"{source}: hidden size {config['hidden']} outside 1..{MAX_HIDDEN}")
    window = check_window(prep["window"], source)
    labels = check_labels(prep["labels"], config["n_classes"], source)
    check_features(prep.get("features"), source)
    check_prototypes(
        prep.get("prototypes"),
        prep.get("prototype_offsets"),
        prep.get("prototype_gated", True),
        config["n_classes"],
        config["hidden"],
        source,
    )
    scaler = prep["scaler"]
    try:
        values = [float(v) for key in ("center", "scale") for v in scaler[key]]
    except (TypeError, KeyError, ValueError):
        raise InputError(f"{source}: corrupt model (scaler)") from None
    if not all(math.isfinite(v) for v in values) or min(scaler["scale"]) <= 0:
        raise InputError(f"{source}: corrupt model (scaler has non-finite or non-positive values)")
    return window, labels


def check_prototypes(
    prototypes: object, offsets: object, gated: object, n_classes: int, hidden: int, source: str
) -> None:
    """``preprocessing.json``'s optional prototype head: ``prototypes``, one entry per class, ``null`` (no
    prototype) or ``hidden`` finite numbers, at least one class with a prototype, and
    ``prototype_offsets``, one finite number per class, ``null`` exactly where its row is (a model written
    before session 24 has class means and no offsets: it is refused, retrain it), and
    ``prototype_gated``, true or false (absent: true)."""
    if prototypes is None:
        return

    def finite(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def row_ok(row: object) -> bool:
        return row is None or (isinstance(row, list) and len(row) == hidden and all(finite(v) for v in row))

    if not (
        isinstance(prototypes, list)
        and len(prototypes) == n_classes
        and any(r is not None for r in prototypes)
        and all(row_ok(r) for r in prototypes)
    ):
        raise InputError(
            f"{source}: corrupt model (prototypes: {n_classes} rows of {hidden} finite numbers or null)"
        )
    if not isinstance(gated, bool):
        raise InputError(f"{source}: corrupt model (prototype_gated must be true or false)")
    if not (
        isinstance(offsets, list)
        and len(offsets) == n_classes
        and all((o is None) == (r is None) and (o is None or finite(o)) for o, r in zip(offsets, prototypes))
    ):
        raise InputError(
            f"{source}: corrupt model (prototype_offsets: {n_classes} finite numbers, null where prototypes "
            "are; a model from before fedids' session 24 has none: retrain it)"
        )


def threshold_for_rate(rule: dict, max_false_alarm_rate: float) -> float:
    """The stored threshold for the largest tabulated rate at or below ``max_false_alarm_rate``
    (conservative: the validation false-alarm rate stays within the budget)."""
    rows = [r for r in rule.get("table", []) if r["max_false_alarm_rate"] <= max_false_alarm_rate + 1e-12]
    if not rows:
        raise ValueError(f"no stored threshold for a false-alarm rate of {max_false_alarm_rate:g}")
    return float(max(rows, key=lambda r: r["max_false_alarm_rate"])["threshold"])


def check_threshold_args(threshold: float | None, max_false_alarm_rate: float | None, command: str) -> None:
    """Range and exclusivity of ``--threshold`` and ``--max-false-alarm-rate`` (NaN fails), before any work."""
    if threshold is not None and max_false_alarm_rate is not None:
        raise InputError(f"{command}: give --threshold or --max-false-alarm-rate, not both")
    for option, value in (("--threshold", threshold), ("--max-false-alarm-rate", max_false_alarm_rate)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise InputError(f"{command}: {option} must be in [0, 1], got {value}")


def resolve_threshold(
    rule: dict | None, threshold: float | None, max_false_alarm_rate: float | None, command: str
) -> tuple[float | None, str]:
    """The alert threshold a command uses, and how it was chosen (for messages and summaries).

    ``--threshold`` wins; ``--max-false-alarm-rate R`` reads the model's validation table (``rule``, the
    :data:`META_THRESHOLD` metadata); neither: the model's default rule, else the top class (None).
    """
    check_threshold_args(threshold, max_false_alarm_rate, command)
    if threshold is not None:
        return float(threshold), f"--threshold {threshold:g}"
    valid_rule = rule if isinstance(rule, dict) and isinstance(rule.get("threshold"), (int, float)) else None
    if max_false_alarm_rate is not None:
        if valid_rule is None:
            raise InputError(
                f"{command}: the model has no validation threshold table (train it with "
                "`fedids train`), so --max-false-alarm-rate cannot be met; use --threshold"
            )
        try:
            value = threshold_for_rate(valid_rule, max_false_alarm_rate)
        except (ValueError, KeyError, TypeError):
            raise InputError(
                f"{command}: the model's threshold table has no entry at or below {max_false_alarm_rate:g}"
            ) from None
        return value, f"validation false-alarm rate <= {max_false_alarm_rate:g}"
    if valid_rule is not None:
        return float(valid_rule["threshold"]), (
            f"model default: validation false-alarm rate <= {valid_rule.get('max_false_alarm_rate', 0):g}"
        )
    return None, "top class (the model has no validation threshold)"
