"""`fedids detect`: the streaming detector as a command a security team can leave running.

Arguments are checked before anything starts (``--threads`` is capped at the machine's cores; output paths
must not be inputs or each other, see :mod:`fedids.cli.outputs`). SIGTERM and SIGHUP (how systemd and a
closing terminal stop a service) end the run like SIGINT: the batch being written is finished, so the
alerts file holds whole lines only, and the summary is printed and written.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from fedids.cli.common import app
from fedids.cli.outputs import check_outputs, write_json
from fedids.cli.train import check_number
from fedids.console import err

MAX_HOSTS_LIMIT = 10_000_000
DEFAULT_MAX_HOSTS = (
    16_384  # fedids.detect.stream.DEFAULT_MAX_HOSTS, not imported: pandas would load at startup
)
STOP_SIGNALS = tuple(
    s
    for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None), signal.SIGINT)
    if s is not None
)


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived; ``signum`` says which (exit code 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopGuard:
    """Turns stop signals into :class:`Stopped`, but never in the middle of writing alert lines: a signal
    that arrives inside :meth:`critical` is raised when the block ends."""

    def __init__(self) -> None:
        self._depth = 0
        self.pending: int | None = None

    def handler(self, signum: int, _frame: object) -> None:
        if self._depth:
            self.pending = signum
        else:
            raise Stopped(signum)

    @contextmanager
    def critical(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self.pending is not None:
            signum, self.pending = self.pending, None
            raise Stopped(signum)

    @contextmanager
    def installed(self) -> Iterator[_StopGuard]:
        previous = {s: signal.signal(s, self.handler) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


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
        import numpy as np

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
            err.print(
                f"warning: more than {self.limit} input problems; counting the rest, see the summary",
                markup=False,
                highlight=False,
            )


def _check_detect_args(
    threads: int,
    max_hosts: int,
    status_every: float,
    duration: float | None,
    idle_timeout: float,
    max_warnings: int,
) -> int:
    """Range checks (NaN fails every one); returns ``threads`` capped at the machine's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    check_number("detect", "--threads", threads, 1, 1_000_000)
    check_number("detect", "--max-hosts", max_hosts, 1, MAX_HOSTS_LIMIT)
    check_number("detect", "--status-every", status_every, 0, 86_400)
    check_number("detect", "--idle-timeout", idle_timeout, 0, 86_400, open_low=True)
    check_number("detect", "--max-warnings", max_warnings, 0, 1_000_000)
    if duration is not None:
        check_number("detect", "--duration", duration, 0, 10 * 365 * 86_400, open_low=True)
    if threads > cores:
        err.print(
            f"warning: --threads {threads} capped at the {cores} cores of this machine",
            markup=False,
            highlight=False,
        )
    return min(threads, cores)


@app.command("detect")
def detect(
    model: Path = typer.Option(
        ..., "--model", "-m", help="Model directory or .onnx file; reloaded when it changes on disk."
    ),
    input_spec: str | None = typer.Option(
        None,
        "--input",
        "-i",
        help="CICIDS2017 CSV (Label column optional), .pcap/.pcapng, or - (CSV/JSON lines on stdin).",
    ),
    interface: str | None = typer.Option(None, "--interface", help="Capture live on this interface."),
    out_path: str = typer.Option(
        ..., "--out", "-o", help="Alerts file (EVE JSON lines, appended); - for stdout."
    ),
    threshold: float | None = typer.Option(None, help="Alert when 1 - P(BENIGN) >= this."),
    max_false_alarm_rate: Annotated[
        float | None,
        typer.Option(
            help="Alert threshold from the model's validation table: at most this many false alerts per benign "
            "validation flow (default: the model's default rule, else the top class)."
        ),
    ] = None,
    threads: int = typer.Option(1, help="CPU threads for the model (capped at the machine's cores)."),
    max_hosts: int = typer.Option(
        DEFAULT_MAX_HOSTS, help="Hosts remembered (least recently seen forgotten)."
    ),
    status_every: float = typer.Option(5.0, help="Seconds between status lines on stderr; 0 turns them off."),
    summary_path: Path | None = typer.Option(None, "--summary", help="Also write the final summary as JSON."),
    duration: float | None = typer.Option(None, help="Live capture: stop after this many seconds."),
    idle_timeout: float = typer.Option(120.0, help="Live capture: seconds of silence that end a flow."),
    max_warnings: int = typer.Option(20, help="Input problems printed before they are only counted."),
    rules: Annotated[
        bool,
        typer.Option(
            "--rules/--no-rules",
            help="Host-behaviour rules (SYN floods, scans) beside the model; see docs/edge.md.",
        ),
    ] = True,
) -> None:
    """Score flows as they arrive and write one Suricata EVE alert line per detected attack flow."""
    from fedids.model.checks import check_threshold_args, resolve_threshold

    threads = _check_detect_args(threads, max_hosts, status_every, duration, idle_timeout, max_warnings)
    inputs = [model] + ([Path(input_spec)] if input_spec not in (None, "-") else [])
    check_outputs(
        "detect", [("--out", Path(out_path), "append"), ("--summary", summary_path, "file")], inputs
    )
    check_threshold_args(threshold, max_false_alarm_rate, "detect")  # argument errors before loading
    from fedids.detect.alerts import AlertWriter
    from fedids.detect.behaviour import BehaviourDetector
    from fedids.detect.sources import open_source
    from fedids.detect.stream import ModelWatcher, StreamingDetector

    say = _Reporter(max_warnings)
    watcher = ModelWatcher(
        model, threads=threads, warn=lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True)
    )
    if model.is_dir():
        import torch

        torch.set_num_threads(threads)
    value, how = resolve_threshold(
        getattr(watcher.scorer, "default_threshold", None), threshold, max_false_alarm_rate, "detect"
    )
    capture = {"duration_s": duration, "idle_timeout_s": idle_timeout}
    source = open_source(input_spec, interface, report=say, capture_options=capture)
    run = _Run(
        source=source,
        watcher=watcher,
        writer=AlertWriter(out_path, warn=say),
        detector=StreamingDetector(watcher.scorer, max_hosts=max_hosts, threshold=value),
        behaviour=BehaviourDetector() if rules else None,
        status_every=status_every,
    )
    stopped: Stopped | None = None
    try:
        with _StopGuard().installed() as guard:
            run.loop(guard)
    except Stopped as exc:
        stopped = exc
    finally:
        run.writer.close()
        summary = run.summary(model, out_path, how)
        _print_summary(summary)
        if summary_path is not None:
            write_json(summary_path, summary)
    if stopped is not None:
        err.print(f"interrupted ({stopped})", markup=False, highlight=False)
        raise typer.Exit(128 + stopped.signum)


class _Run:
    """One detection run: source -> model (+ rules) -> alerts, with status lines and counters."""

    def __init__(self, *, source, watcher, writer, detector, behaviour, status_every: float) -> None:  # noqa: ANN001
        self.source, self.watcher, self.writer = source, watcher, writer
        self.detector, self.behaviour, self.status_every = detector, behaviour, status_every
        self.latency = _Latency()
        self.by_label: Counter = Counter()
        self.started = self.last_status = time.monotonic()
        self.flows_at_status = 0

    def loop(self, guard: _StopGuard) -> None:
        from fedids.detect.alerts import build_alerts

        for frame in self.source.batches():
            if self.watcher.poll():
                self.detector.set_scorer(self.watcher.scorer)
            t0 = time.perf_counter()
            scores = self.detector.process(frame)
            if self.behaviour is not None:
                scores = self.behaviour.apply(frame, scores)
            alerts = build_alerts(frame, scores)
            with guard.critical():  # whole lines only: a stop signal waits for the batch to be written
                self.writer.write(alerts)
            self.latency.add(time.perf_counter() - t0, len(frame))
            self.by_label.update(a["fedids"]["label"] for a in alerts)
            self._status()

    def _status(self) -> None:
        now = time.monotonic()
        if self.status_every > 0 and now - self.last_status >= self.status_every:
            d = self.detector
            rate = (d.flows_seen - self.flows_at_status) / (now - self.last_status)
            err.print(
                f"detect: {d.flows_seen:,} flows ({rate:,.0f}/s), {self.writer.count:,} alerts, "
                f"p99 latency {_ms(self.latency.quantile_ms(0.99))}, "
                f"{sum(self.source.stats.bad.values()):,} skipped, {d.n_hosts:,} hosts",
                markup=False,
                highlight=False,
            )
            self.last_status, self.flows_at_status = now, d.flows_seen

    def summary(self, model: Path, out_path: str, how: str) -> dict:
        seconds = time.monotonic() - self.started
        d, source, behaviour = self.detector, self.source, self.behaviour
        summary = {
            "source": source.name,
            "model": str(model),
            "alerts_file": out_path,
            "flows": d.flows_seen,
            "alerts": self.writer.count,
            "alerts_by_label": dict(self.by_label),
            "threshold": d.threshold,
            "threshold_rule": how,
            "skipped": dict(source.stats.bad),
            "hosts": d.n_hosts,
            "evicted_hosts": d.evicted,
            "model_reloads": self.watcher.reloads,
            "reload_failures": self.watcher.failures,
            "rule_alerts": dict(behaviour.relabelled) if behaviour is not None else {},
            "rule_state": behaviour.state_sizes() if behaviour is not None else {},
            "seconds": seconds,
            "flows_per_s": d.flows_seen / seconds if seconds > 0 else 0.0,
            "latency_ms": {"p50": self.latency.quantile_ms(0.5), "p99": self.latency.quantile_ms(0.99)},
        }
        if source.stats.packets:
            summary.update(packets=source.stats.packets, extract_seconds=source.stats.extract_seconds)
        return summary


def _print_summary(summary: dict) -> None:
    threshold = "top class" if summary["threshold"] is None else f"threshold {summary['threshold']:.6g}"
    err.print(
        f"summary: {summary['flows']:,} flows, {summary['alerts']:,} alerts "
        f"{json.dumps(summary['alerts_by_label'])} ({threshold}), skipped {json.dumps(summary['skipped'])}, "
        f"{summary['flows_per_s']:,.0f} flows/s, latency p50 {_ms(summary['latency_ms']['p50'])} "
        f"p99 {_ms(summary['latency_ms']['p99'])}, {summary['model_reloads']} model reloads",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
