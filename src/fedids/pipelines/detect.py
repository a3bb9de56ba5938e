"""The streaming detector: source -> model (+ host-behaviour rules) -> EVE alert lines, with hot model
reload, batching, decision latency and a summary. ``fedids detect`` and ``fedids demo`` call
:func:`run_detect`; so can any Python caller, without Typer.

SIGTERM and SIGHUP (how systemd and a closing terminal stop a service) end the run like SIGINT: the batch
being scored is finished and written, so the alerts file holds whole lines only, every flow the summary
counts has its alerts in the file, and the summary is still produced
(:attr:`DetectSummary.stopped_by` names the signal).
"""

from __future__ import annotations

import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedids.console import err

DEFAULT_MAX_HOSTS = 16_384
"""Hosts remembered (:data:`fedids.detect.stream.DEFAULT_MAX_HOSTS`, not imported: pandas would load at
start-up)."""
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


class StopGuard:
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
    def installed(self) -> Iterator[StopGuard]:
        previous = {s: signal.signal(s, self.handler) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class Latency:
    """Decision latency of recent flows: each flow waits for its whole batch, so a batch of ``n`` flows
    that took ``s`` seconds contributes ``n`` samples of ``s``. Keeps the last ``max_batches``."""

    def __init__(self, max_batches: int = 4096) -> None:
        self._batches: deque[tuple[float, int]] = deque(maxlen=max_batches)

    def add(self, seconds: float, n: int) -> None:
        if n:
            self._batches.append((seconds, n))

    def quantile_ms(self, q: float) -> float | None:
        """The ``q`` quantile of the per-flow latency, in milliseconds (None before the first batch)."""
        if not self._batches:
            return None
        import numpy as np

        secs, counts = np.array(self._batches).T
        order = np.argsort(secs)
        cum = np.cumsum(counts[order])
        return float(secs[order][np.searchsorted(cum, q * cum[-1])] * 1000.0)


def format_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


class Reporter:
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


@dataclass(frozen=True)
class DetectRequest:
    """One detection run (see ``fedids detect --help`` for each setting).

    ``input_spec``: a CSV, pcap/pcapng, or ``-`` for CSV/JSON lines on stdin (None with ``interface``);
    ``out_path``: the EVE alerts file (appended), ``-`` for stdout; ``threshold``: alert when
    ``1 - P(BENIGN) >=`` it; ``max_false_alarm_rate``: choose the threshold from the model's validation
    table instead; neither: the model's default rule, else the top class. ``status_every``: seconds
    between status lines (0: none); ``duration`` and ``idle_timeout``: live capture, in seconds.
    """

    model: Path
    out_path: str
    input_spec: str | None = None
    interface: str | None = None
    threshold: float | None = None
    max_false_alarm_rate: float | None = None
    threads: int = 1
    max_hosts: int = DEFAULT_MAX_HOSTS
    status_every: float = 5.0
    duration: float | None = None
    idle_timeout: float = 120.0
    max_warnings: int = 20
    rules: bool = True


@dataclass
class DetectSummary:
    """What a detection run did; :meth:`as_dict` is the ``--summary`` JSON."""

    source: str
    model: str
    alerts_file: str
    flows: int
    alerts: int
    alerts_by_label: dict[str, int]
    threshold: float | None
    threshold_rule: str
    skipped: dict[str, int]
    hosts: int
    evicted_hosts: int
    model_reloads: int
    reload_failures: int
    rule_alerts: dict[str, int]
    rule_state: dict[str, int]
    seconds: float
    flows_per_s: float
    latency_ms: dict[str, float | None]
    packets: int | None = None
    extract_seconds: float | None = None
    stopped_by: Stopped | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        out = {
            k: v for k, v in self.__dict__.items() if k not in ("packets", "extract_seconds", "stopped_by")
        }
        if self.packets:
            out.update(packets=self.packets, extract_seconds=self.extract_seconds)
        return out


class DetectionLoop:
    """One detection run: source -> model (+ rules) -> alerts, with status lines and counters."""

    def __init__(
        self, *, source: Any, watcher: Any, writer: Any, detector: Any, behaviour: Any, status_every: float
    ) -> None:
        self.source, self.watcher, self.writer = source, watcher, writer
        self.detector, self.behaviour, self.status_every = detector, behaviour, status_every
        self.latency = Latency()
        self.by_label: Counter[str] = Counter()
        self.started = self.last_status = time.monotonic()
        self.flows_at_status = 0

    def loop(self, guard: StopGuard) -> None:
        from fedids.detect.alerts import build_alerts

        for frame in self.source.batches():
            if self.watcher.poll():
                self.detector.set_scorer(self.watcher.scorer)
            t0 = time.perf_counter()
            # A batch is scored and written as one step: a stop signal waits for it, so every flow counted
            # in the summary has its alert lines (whole lines) in the file, and none is counted unwritten.
            with guard.critical():
                scores = self.detector.process(frame)
                if self.behaviour is not None:
                    scores = self.behaviour.apply(frame, scores)
                alerts = build_alerts(frame, scores)
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
                f"p99 latency {format_ms(self.latency.quantile_ms(0.99))}, "
                f"{sum(self.source.stats.bad.values()):,} skipped, {d.n_hosts:,} hosts",
                markup=False,
                highlight=False,
            )
            self.last_status, self.flows_at_status = now, d.flows_seen

    def summary(self, model: Path, out_path: str, how: str) -> DetectSummary:
        seconds = time.monotonic() - self.started
        d, source, behaviour = self.detector, self.source, self.behaviour
        return DetectSummary(
            source=source.name,
            model=str(model),
            alerts_file=out_path,
            flows=d.flows_seen,
            alerts=self.writer.count,
            alerts_by_label=dict(self.by_label),
            threshold=d.threshold,
            threshold_rule=how,
            skipped=dict(source.stats.bad),
            hosts=d.n_hosts,
            evicted_hosts=d.evicted,
            model_reloads=self.watcher.reloads,
            reload_failures=self.watcher.failures,
            rule_alerts=dict(behaviour.relabelled) if behaviour is not None else {},
            rule_state=behaviour.state_sizes() if behaviour is not None else {},
            seconds=seconds,
            flows_per_s=d.flows_seen / seconds if seconds > 0 else 0.0,
            latency_ms={"p50": self.latency.quantile_ms(0.5), "p99": self.latency.quantile_ms(0.99)},
            packets=source.stats.packets or None,
            extract_seconds=source.stats.extract_seconds if source.stats.packets else None,
        )


def run_detect(
    request: DetectRequest, on_summary: Callable[[DetectSummary], None] | None = None
) -> DetectSummary:
    """Run the detector until the input ends or a stop signal arrives; returns the summary.

    ``on_summary`` is called with the summary however the run ends (input exhausted, stop signal, or an
    error that then propagates), after the alerts file is closed. A stop signal does not raise: the
    summary's ``stopped_by`` holds it.
    """
    from fedids.detect.alerts import AlertWriter
    from fedids.detect.behaviour import BehaviourDetector
    from fedids.detect.sources import open_source
    from fedids.detect.stream import ModelWatcher, StreamingDetector
    from fedids.model.checks import resolve_threshold

    r = request
    say = Reporter(r.max_warnings)
    watcher = ModelWatcher(
        r.model, threads=r.threads, warn=lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True)
    )
    if r.model.is_dir():
        import torch

        torch.set_num_threads(r.threads)
    value, how = resolve_threshold(
        getattr(watcher.scorer, "default_threshold", None), r.threshold, r.max_false_alarm_rate, "detect"
    )
    capture = {"duration_s": r.duration, "idle_timeout_s": r.idle_timeout}
    source = open_source(r.input_spec, r.interface, report=say, capture_options=capture)
    run = DetectionLoop(
        source=source,
        watcher=watcher,
        writer=AlertWriter(r.out_path, warn=say),
        detector=StreamingDetector(watcher.scorer, max_hosts=r.max_hosts, threshold=value),
        behaviour=BehaviourDetector() if r.rules else None,
        status_every=r.status_every,
    )
    stopped: Stopped | None = None
    try:
        with StopGuard().installed() as guard:
            run.loop(guard)
    except Stopped as exc:
        stopped = exc
    finally:
        run.writer.close()
        summary = run.summary(r.model, r.out_path, how)
        summary.stopped_by = stopped
        if on_summary is not None:
            on_summary(summary)
    return summary
