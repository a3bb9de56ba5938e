"""Sections about the best federated model: per-family metrics, ONNX sizes and latency, update bytes."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedids.devices import DEVICE_PROFILES
from fedids.model.metrics import compute_metrics
from fedids.pipelines.experiment.config import ExperimentConfig
from fedids.pipelines.experiment.results import section

if TYPE_CHECKING:
    from fedids.model.artifacts import Detector
    from fedids.task import PreparedData


def per_family_section(
    detector: Detector, prepared: PreparedData, model_name: str, cfg: ExperimentConfig
) -> dict:
    """Per-family one-vs-rest metrics and the confusion matrix of ``detector`` on the test rows."""
    from fedids.task import evaluate_rows

    metrics = evaluate_rows(detector, prepared, prepared.test_rows)
    families = {
        fam: {k: v[k] for k in ("accuracy", "precision", "recall", "f1", "support")}
        for fam, v in metrics["per_family"].items()
    }
    return section(
        cfg,
        status="ok",
        model=model_name,
        test_rows=int(len(prepared.test_rows)),
        families=families,
        confusion=metrics["confusion"],
        macro_f1=metrics["macro_f1"],
    )


def size_and_latency_sections(
    detector: Detector, prepared: PreparedData, cfg: ExperimentConfig, work_dir: Path, model_name: str
) -> tuple[dict, dict]:
    """ONNX sizes (float, int8, pruned, pruned int8) with their test macro-F1, and batch-1 latency."""
    try:
        import fedids.detect.stream  # noqa: F401
        import fedids.model.compress  # noqa: F401
        import fedids.model.export  # noqa: F401
    except ImportError as exc:
        reason = f"not run: export code unavailable ({exc})"
        return section(cfg, status=reason), section(cfg, status=reason)
    sizes, f1, blobs, sparsity = _export_variants(detector, prepared, cfg, work_dir)
    import io

    import torch

    buf = io.BytesIO()
    torch.save(detector.model.state_dict(), buf)
    sizes["pytorch_state_dict"] = len(buf.getvalue())
    size_section = section(
        cfg,
        status="ok",
        model=model_name,
        variants=sizes,
        macro_f1=f1,
        prune_amount=cfg.prune_amount,
        sparsity=sparsity,
        prune_finetune="none",
    )
    return size_section, _latency_section(blobs, prepared, cfg, model_name)


def _export_variants(
    detector: Detector, prepared: PreparedData, cfg: ExperimentConfig, work_dir: Path
) -> tuple[dict[str, int], dict[str, float], dict[str, bytes], float]:
    """Export the float, int8, pruned and pruned int8 ONNX models; their sizes (bytes), test macro-F1,
    file contents, and the pruned model's sparsity."""
    from fedids.detect.stream import OnnxScorer, score_windows
    from fedids.model.compress import prune_detector
    from fedids.model.export import export_onnx

    work_dir.mkdir(parents=True, exist_ok=True)
    test_rows = prepared.test_rows
    windows = prepared.windows[test_rows]
    truth = prepared.labels[test_rows]
    # No fine-tune after pruning: fine-tuning on the pooled training rows would be centralized training
    # (it raised macro-F1 well above the federated model's in a trial), which a federation cannot do.
    pruned = prune_detector(detector, cfg.prune_amount)
    variants = {
        "float": (detector, "none"),
        "int8": (detector, "int8"),
        "pruned": (pruned.detector, "none"),
        "pruned_int8": (pruned.detector, "int8"),
    }
    sizes: dict[str, int] = {}
    f1: dict[str, float] = {}
    blobs: dict[str, bytes] = {}
    for name, (det, quant) in variants.items():
        result = export_onnx(
            det,
            work_dir / f"model-{name}.onnx",
            quantize=quant,
            prune_amount=cfg.prune_amount if det is pruned.detector else 0.0,
        )
        blob = result.path.read_bytes()
        blobs[name] = blob
        sizes[name] = int(result.size_bytes)
        scorer = OnnxScorer(blob, source=str(result.path), threads=1)
        proba = score_windows(scorer, prepared.features, windows)
        pred = np.asarray(scorer.labels, dtype=object)[proba.argmax(axis=1)]
        f1[name] = compute_metrics(truth, pred)["macro_f1"]
    return sizes, f1, blobs, pruned.sparsity


def _latency_section(
    blobs: dict[str, bytes], prepared: PreparedData, cfg: ExperimentConfig, model_name: str
) -> dict:
    """Batch-1 latency (ms) of the float and int8 models on test windows, and the devices' estimate."""
    from fedids.detect.stream import OnnxScorer, compact_rows

    test_rows = prepared.test_rows
    windows = prepared.windows[test_rows]
    rng = np.random.default_rng(cfg.seed)
    picks = rng.choice(len(test_rows), size=min(cfg.latency_calls, len(test_rows)), replace=False)
    lat: dict[str, dict] = {}
    for name in ("float", "int8"):
        scorer = OnnxScorer(blobs[name], source=name, threads=1)
        times = []
        for i in picks:
            flows, window_rows = compact_rows(prepared.features, windows[i : i + 1])
            t0 = time.perf_counter()
            scorer.score(flows, window_rows)
            times.append((time.perf_counter() - t0) * 1000.0)
        times.sort()
        lat[name] = {
            "p50": float(np.percentile(times, 50)),
            "p99": float(np.percentile(times, 99)),
            "mean": float(statistics.fmean(times)),
        }
    estimate = {
        d.name: {
            "p50": lat["float"]["p50"] * d.core_speed_factor,
            "p99": lat["float"]["p99"] * d.core_speed_factor,
        }
        for d in DEVICE_PROFILES.values()
        if d.name != "host"
    }
    latency_section = section(
        cfg,
        status="ok",
        model=model_name,
        backend="onnxruntime",
        threads=1,
        batch=1,
        calls=int(len(picks)),
        variants=lat,
        device_estimate=estimate,
        what="wall time of one OnnxScorer.score call on one window (float model for the device estimate)",
    )
    return latency_section


def update_bytes_section(detector: Detector, entries: dict, cfg: ExperimentConfig) -> dict:
    """Parameter count, plaintext update bytes, one CKKS-encrypted update (measured), and the mean upload
    per client and round of each federated mode (from its history)."""
    from fedids.model.train import get_weights

    flat = np.concatenate([w.ravel() for w in get_weights(detector.model)]).astype(np.float32)
    out = section(
        cfg,
        status="ok",
        parameters=int(flat.size),
        plaintext=int(flat.nbytes),
        he_ckks=None,
        he_encrypt_s=None,
        he_ratio=None,
        per_mode={},
    )
    try:
        from fedids.privacy.he import create_he_keys, encrypt_update

        keys = create_he_keys()
        t0 = time.process_time()
        blob = encrypt_update(keys.secret_context, flat)
        out.update(he_ckks=len(blob), he_encrypt_s=time.process_time() - t0, he_ratio=len(blob) / flat.nbytes)
    except ImportError:
        pass
    for mode, entry in entries.items():
        if entry.get("status") == "ok" and entry.get("history"):
            ups = [h["bytes_up"] / h["clients"] for h in entry["history"] if h.get("clients")]
            out["per_mode"][mode] = int(round(float(np.mean(ups))))
    return out
