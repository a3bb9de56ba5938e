"""`fedids export` (compressed ONNX model for the edge) and `fedids detect` (streaming detector)."""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from fedids.cli.common import app, load_data, write_json
from fedids.console import err, out
from fedids.detect.stream import DEFAULT_MAX_HOSTS
from fedids.errors import InputError


def _metrics_pair(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from fedids.evaluation.metrics import compute_metrics

    m = compute_metrics(y_true, y_pred)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


@app.command("export")
def export(
    model: Path = typer.Option(..., "--model", "-m", help="Model directory from `fedids train`/`federate`."),
    out_path: Path = typer.Option(..., "--out", "-o", help="ONNX file to write (replaced atomically)."),
    prune: float = typer.Option(0.0, "--prune", help="Fraction of weights to zero by magnitude, 0..1."),
    quantize: str = typer.Option("none", "--quantize", help="Weight storage: none (float32) or int8."),
    data: list[Path] = typer.Option([], "--data", "-d",
                                    help="Labelled test CSV(s): compare the export with the float model."),
    finetune_data: list[Path] = typer.Option([], "--finetune-data",
                                             help="Labelled training CSV(s) for a short fine-tune after pruning."),
    finetune_epochs: int = typer.Option(2, help="Fine-tune epochs (with --finetune-data)."),
) -> None:
    """Export a model to ONNX with the preprocessing inside, optionally pruned and int8; report size and
    the accuracy/macro-F1 change against the float PyTorch model (JSON next to the file)."""
    from fedids.data.schema import FEATURES, LABEL
    from fedids.data.windows import compute_window_indices, host_keys, sort_by_time
    from fedids.detect.stream import OnnxScorer, score_windows
    from fedids.model.artifacts import load_detector
    from fedids.model.compress import prune_detector
    from fedids.model.export import QUANTIZE_MODES, export_onnx
    from fedids.model.train import TrainConfig
    from fedids.task import predict_labels

    if quantize not in QUANTIZE_MODES:
        raise InputError(f"export: --quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")
    if not 0.0 <= prune < 1.0:
        raise InputError(f"export: --prune must be in [0, 1), got {prune}")
    if finetune_data and prune == 0.0:
        raise InputError("export: --finetune-data only applies with --prune")
    detector = load_detector(model)
    exported = detector
    report: dict = {"model": str(model), "onnx": str(out_path), "quantize": quantize, "prune_amount": prune}
    if prune > 0:
        frame = load_data(finetune_data).frame if finetune_data else None
        config = TrainConfig(epochs=finetune_epochs, lr=1e-3)
        result = prune_detector(detector, prune, finetune_frame=frame, config=config)
        exported = result.detector
        report.update(sparsity=result.sparsity,
                      finetune_rows=int(result.finetune.examples) if result.finetune else 0)
    written = export_onnx(exported, out_path, quantize=quantize, prune_amount=prune)
    report.update(size_bytes=written.size_bytes, weights=written.weights, zero_weights=written.zero_weights,
                  float32_weights_bytes=4 * sum(p.numel() for p in detector.model.parameters()))
    if data:
        frame = sort_by_time(load_data(data).frame)
        features = frame[list(FEATURES)].to_numpy(dtype=np.float32)
        windows = compute_window_indices(host_keys(frame), detector.window)
        truth = frame[LABEL].astype(str).to_numpy()
        ref_labels, ref_proba = predict_labels(detector, features, windows)
        scorer = OnnxScorer(out_path.read_bytes(), source=str(out_path))
        proba = score_windows(scorer, features, windows)
        labels = np.asarray(scorer.labels, dtype=object)[proba.argmax(axis=1)]
        ref, new = _metrics_pair(truth, ref_labels), _metrics_pair(truth, labels)
        report["evaluation"] = {
            "data": [str(p) for p in data], "flows": int(len(frame)),
            "float_pytorch": ref, "export": new,
            "delta": {k: new[k] - ref[k] for k in ref},
            "label_agreement": float(np.mean(labels == ref_labels)),
            "max_abs_probability_diff": float(np.abs(proba - ref_proba).max()),
        }
    json_path = out_path.with_suffix(".json")
    write_json(json_path, report)
    table = Table(title=f"{out_path} ({quantize}, prune {prune:g})")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("size", f"{written.size_bytes:,} bytes")
    table.add_row("float32 weights", f"{report['float32_weights_bytes']:,} bytes")
    table.add_row("zero weights", f"{written.zero_weights:,} / {written.weights:,}")
    if "evaluation" in report:
        ev = report["evaluation"]
        for key, name in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            table.add_row(name, f"{ev['export'][key]:.4f} (float {ev['float_pytorch'][key]:.4f}, "
                                f"delta {ev['delta'][key]:+.4f})")
        table.add_row("same label as float", f"{ev['label_agreement']:.4%}")
    out.print(table)
    err.print(f"report written to {json_path}", markup=False, highlight=False)


class _Latency:
    """Decision latency of recent flows: each flow waits for its whole batch, so a batch of ``n`` flows
    that took ``s`` seconds contributes ``n`` samples of ``s``. Keeps the last ``max_batches``."""

    def __init__(self, max_batches: int = 4096) -> None:
        self._batches: deque[tuple[float, int]] = deque(maxlen=max_batches)

    def add(self, seconds: float, n: int) -> None:
        if n:
            self._batches.append((seconds, n))

    def quantile_ms(self, q: float) -> float | None:
        if not self._batches:
            return None
        secs, counts = np.array(self._batches).T
        order = np.argsort(secs)
        cum = np.cumsum(counts[order])
        return float(secs[order][np.searchsorted(cum, q * cum[-1])] * 1000.0)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


class _Reporter:
    """Prints the first ``limit`` input problems on stderr, then only counts them."""

    def __init__(self, limit: int) -> None:
        self.limit, self.seen = limit, 0

    def __call__(self, message: str) -> None:
        self.seen += 1
        if self.seen <= self.limit:
            err.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
        elif self.seen == self.limit + 1:
            err.print(f"warning: more than {self.limit} input problems; counting the rest, see the summary",
                      markup=False, highlight=False)


@app.command("detect")
def detect(
    model: Path = typer.Option(..., "--model", "-m",
                               help="Model directory or .onnx file; reloaded when it changes on disk."),
    input_spec: str | None = typer.Option(None, "--input", "-i",
                                          help="CICIDS2017 CSV, .pcap/.pcapng, or - (CSV/JSON lines on stdin)."),
    interface: str | None = typer.Option(None, "--interface", help="Capture live on this interface."),
    out_path: str = typer.Option(..., "--out", "-o", help="Alerts file (EVE JSON lines, appended); - for stdout."),
    threshold: float | None = typer.Option(None, help="Alert when 1 - P(BENIGN) >= this (default: top class)."),
    threads: int = typer.Option(1, help="CPU threads for the model."),
    max_hosts: int = typer.Option(DEFAULT_MAX_HOSTS, help="Hosts remembered (least recently seen forgotten)."),
    status_every: float = typer.Option(5.0, help="Seconds between status lines on stderr; 0 turns them off."),
    summary_path: Path | None = typer.Option(None, "--summary", help="Also write the final summary as JSON."),
    duration: float | None = typer.Option(None, help="Live capture: stop after this many seconds."),
    idle_timeout: float = typer.Option(120.0, help="Live capture: seconds of silence that end a flow."),
    max_warnings: int = typer.Option(20, help="Input problems printed before they are only counted."),
    rules: bool = typer.Option(True, "--rules/--no-rules",
                               help="Host-behaviour rules (SYN floods, scans) beside the model; see docs/edge.md."),
) -> None:
    """Score flows as they arrive and write one Suricata EVE alert line per detected attack flow."""
    from fedids.detect.alerts import AlertWriter, build_alerts
    from fedids.detect.behaviour import BehaviourDetector
    from fedids.detect.sources import open_source
    from fedids.detect.stream import ModelWatcher, StreamingDetector

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InputError(f"detect: --threshold must be in [0, 1], got {threshold}")
    if max_hosts < 1 or threads < 1:
        raise InputError("detect: --max-hosts and --threads must be >= 1")
    if model.is_dir():
        import torch

        torch.set_num_threads(threads)
    say = _Reporter(max_warnings)
    watcher = ModelWatcher(model, threads=threads,
                           warn=lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True))
    capture = {"duration_s": duration, "idle_timeout_s": idle_timeout}
    source = open_source(input_spec, interface, report=say, capture_options=capture)
    detector = StreamingDetector(watcher.scorer, max_hosts=max_hosts, threshold=threshold)
    behaviour = BehaviourDetector() if rules else None
    latency = _Latency()
    by_label: Counter = Counter()
    started = last_status = time.monotonic()
    writer = AlertWriter(out_path)
    flows_at_status = 0
    try:
        for frame in source.batches():
            if watcher.poll():
                detector.set_scorer(watcher.scorer)
            t0 = time.perf_counter()
            scores = detector.process(frame)
            if behaviour is not None:
                scores = behaviour.apply(frame, scores)
            alerts = build_alerts(frame, scores)
            writer.write(alerts)
            latency.add(time.perf_counter() - t0, len(frame))
            by_label.update(a["fedids"]["label"] for a in alerts)
            now = time.monotonic()
            if status_every > 0 and now - last_status >= status_every:
                rate = (detector.flows_seen - flows_at_status) / (now - last_status)
                err.print(f"detect: {detector.flows_seen:,} flows ({rate:,.0f}/s), {writer.count:,} alerts, "
                          f"p99 latency {_ms(latency.quantile_ms(0.99))}, "
                          f"{sum(source.stats.bad.values()):,} skipped, {detector.n_hosts:,} hosts",
                          markup=False, highlight=False)
                last_status, flows_at_status = now, detector.flows_seen
    finally:
        writer.close()
        seconds = time.monotonic() - started
        summary = {
            "source": source.name, "model": str(model), "alerts_file": out_path,
            "flows": detector.flows_seen, "alerts": writer.count, "alerts_by_label": dict(by_label),
            "skipped": dict(source.stats.bad), "hosts": detector.n_hosts, "evicted_hosts": detector.evicted,
            "model_reloads": watcher.reloads, "reload_failures": watcher.failures,
            "rule_alerts": dict(behaviour.relabelled) if behaviour is not None else {},
            "seconds": seconds, "flows_per_s": detector.flows_seen / seconds if seconds > 0 else 0.0,
            "latency_ms": {"p50": latency.quantile_ms(0.5), "p99": latency.quantile_ms(0.99)},
        }
        if source.stats.packets:
            summary.update(packets=source.stats.packets, extract_seconds=source.stats.extract_seconds)
        err.print(f"summary: {summary['flows']:,} flows, {summary['alerts']:,} alerts "
                  f"{json.dumps(summary['alerts_by_label'])}, skipped {json.dumps(summary['skipped'])}, "
                  f"{summary['flows_per_s']:,.0f} flows/s, latency p50 {_ms(summary['latency_ms']['p50'])} "
                  f"p99 {_ms(summary['latency_ms']['p99'])}, {summary['model_reloads']} model reloads",
                  markup=False, highlight=False, soft_wrap=True)
        if summary_path is not None:
            write_json(summary_path, summary)
