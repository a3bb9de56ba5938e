"""The results dict of an experiment: its JSON form, the sections' common fields, and the lines printed at
the end."""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedids.evaluation.report import PAPER_REFERENCE
from fedids.pipelines.experiment.config import SUMMARY_KEYS, ExperimentConfig

if TYPE_CHECKING:
    from fedids.model.artifacts import Detector
    from fedids.task import PreparedData


def summary_metrics(metrics: dict) -> dict:
    """The four headline figures of a metrics dict, as floats."""
    return {k: float(metrics[k]) for k in SUMMARY_KEYS}


def alarms(metrics: dict) -> dict:
    """What a SOC sees (fedids.model.metrics.false_alarms): false alerts per 1,000 benign test flows
    and the share of attack flows alerted, at the model's top-class decision."""
    fa = metrics.get("false_alarms") or {}
    return {"false_alarms_per_1000": fa.get("per_1000"), "attack_recall": fa.get("attack_recall")}


def alarms_at_threshold(detector: Detector, prepared: PreparedData) -> dict:
    """The thresholded operating point on the test rows: the model's own alert rule (chosen on validation
    windows: the clients' summed histograms for a federated model), false alerts per 1,000 benign flows
    and attack recall there. Empty when the model has no rule."""
    from fedids.detect.stream import decide
    from fedids.model.checks import META_THRESHOLD
    from fedids.model.metrics import false_alarms
    from fedids.task import predict_labels

    rule = detector.metadata.get(META_THRESHOLD)
    if not rule:
        return {}
    rows = prepared.test_rows
    _, proba = predict_labels(detector, prepared.features, prepared.windows[rows])
    labels, _, _ = decide(proba, list(detector.vocabulary.labels), float(rule["threshold"]))
    fa = false_alarms(prepared.labels[rows], labels)
    return {
        "threshold": float(rule["threshold"]),
        "threshold_budget": rule.get("max_false_alarm_rate"),
        "threshold_false_alarms_per_1000": fa["per_1000"],
        "threshold_attack_recall": fa["attack_recall"],
    }


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, keys to str."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def clean_results(results: dict) -> dict:
    """A JSON-safe deep copy of ``results`` (what ``results.json`` holds): numpy scalars become Python
    numbers, NaN and infinities become None."""
    return json.loads(json.dumps(_clean(results), allow_nan=False))


def write_results(path: Path, results: dict) -> None:
    """Write ``results`` as JSON (NaN as null), atomically."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(_clean(results), indent=1, allow_nan=False))
    os.replace(tmp, path)


def make_meta(
    cfg: ExperimentConfig, prepared: PreparedData, parts: list[np.ndarray], withheld: np.ndarray, source: dict
) -> dict:
    """The ``meta`` section: data, sizes, settings, versions and the command line."""
    from fedids import __version__

    return {
        "title": "fedids paper evaluation",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "fedids": __version__,
        **source,
        "rows": int(len(prepared.labels)),
        "test_rows": int(len(prepared.test_rows)),
        "clients": len(parts),
        "withheld_rows": int(len(withheld)),
        "rounds": cfg.rounds,
        "partition": cfg.partition,
        "local_epochs": cfg.local_epochs,
        "seed": cfg.seed,
        "quick": cfg.quick,
        "command": cfg.command,
        "torch_threads": 1,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }


def section(cfg: ExperimentConfig, **extra: Any) -> dict:
    """A results section: the command line and seed that produced it, then ``extra``."""
    return {"command": cfg.command, "seed": cfg.seed, **extra}


def load_global(entry: dict) -> Detector | None:
    """The global model of a federated mode entry (None when its run saved none)."""
    from fedids.model.artifacts import load_detector

    path = Path(entry.get("run_dir", "")) / "global"
    return load_detector(path) if path.is_dir() else None


def summary_lines(results: dict) -> list[str]:
    """Five lines for the terminal: the headline figures of a results dict."""
    lines = []
    entries = results.get("modes", {}).get("entries", {})
    ok = {m: e for m, e in entries.items() if e.get("status") == "ok"}
    if ok:
        lines.append("macro-F1: " + ", ".join(f"{m} {e['macro_f1']:.3f}" for m, e in ok.items()))
    shared = results.get("shared_0_5_avg_f1", {})
    if shared.get("status") == "ok":
        lines.append(
            f"average F1 under shared:0.5: {shared['avg_f1']:.3f} (paper {PAPER_REFERENCE['shared_0_5_avg_f1']})"
        )
    size, lat = results.get("model_size_bytes", {}), results.get("latency_ms", {})
    if size.get("status") == "ok" and lat.get("status") == "ok":
        v = size["variants"]
        lines.append(
            f"model: float {v['float']:,} B, int8 {v['int8']:,} B; latency p50 {lat['variants']['float']['p50']:.3f} ms, "
            f"p99 {lat['variants']['float']['p99']:.3f} ms"
        )
    com = results.get("communication_mb", {})
    if com.get("status") == "ok":
        lines.append(
            "MB per client-round: "
            + ", ".join(f"{m} {c['per_client_round_mb']:.3f}" for m, c in com["modes"].items())
        )
    mia_models = results.get("mia", {}).get("models", {})
    bits = [
        f"{m} AUC {v['loss_threshold']['auc']:.3f} adv {v['loss_threshold']['advantage']:.3f}"
        for m, v in mia_models.items()
        if v.get("status") == "ok"
    ]
    if bits:
        lines.append("membership inference (loss threshold): " + "; ".join(bits))
    return lines[:5]
