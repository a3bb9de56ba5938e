"""`fedids detect`: the streaming detector as a command a security team can leave running.

Arguments are checked before anything starts (``--threads`` is capped at the machine's cores; output paths
must not be inputs or each other, see :mod:`fedids.cli.outputs`). SIGTERM and SIGHUP (how systemd and a
closing terminal stop a service) end the run like SIGINT: the batch being written is finished, so the
alerts file holds whole lines only, and the summary is printed and written. The loop itself is
:func:`fedids.pipelines.detect.run_detect`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from fedids.cli.common import app
from fedids.cli.outputs import check_outputs, write_json
from fedids.cli.train import check_number
from fedids.console import err
from fedids.pipelines.detect import DEFAULT_MAX_HOSTS, DetectRequest, DetectSummary, format_ms, run_detect

MAX_HOSTS_LIMIT = 10_000_000


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
    from fedids.model.checks import check_threshold_args

    threads = _check_detect_args(threads, max_hosts, status_every, duration, idle_timeout, max_warnings)
    inputs = [model] + ([Path(input_spec)] if input_spec not in (None, "-") else [])
    check_outputs(
        "detect", [("--out", Path(out_path), "append"), ("--summary", summary_path, "file")], inputs
    )
    check_threshold_args(threshold, max_false_alarm_rate, "detect")  # argument errors before loading
    request = DetectRequest(
        model=model,
        out_path=out_path,
        input_spec=input_spec,
        interface=interface,
        threshold=threshold,
        max_false_alarm_rate=max_false_alarm_rate,
        threads=threads,
        max_hosts=max_hosts,
        status_every=status_every,
        duration=duration,
        idle_timeout=idle_timeout,
        max_warnings=max_warnings,
        rules=rules,
    )

    def report(summary: DetectSummary) -> None:
        print_summary(summary)
        if summary_path is not None:
            write_json(summary_path, summary.as_dict())

    stopped = run_detect(request, on_summary=report).stopped_by
    if stopped is not None:
        err.print(f"interrupted ({stopped})", markup=False, highlight=False)
        raise typer.Exit(128 + stopped.signum)


def print_summary(summary: DetectSummary) -> None:
    """One line on stderr: flows, alerts by label, threshold, skipped rows, throughput, latency, reloads."""
    s = summary
    threshold = "top class" if s.threshold is None else f"threshold {s.threshold:.6g}"
    err.print(
        f"summary: {s.flows:,} flows, {s.alerts:,} alerts "
        f"{json.dumps(s.alerts_by_label)} ({threshold}), skipped {json.dumps(s.skipped)}, "
        f"{s.flows_per_s:,.0f} flows/s, latency p50 {format_ms(s.latency_ms['p50'])} "
        f"p99 {format_ms(s.latency_ms['p99'])}, {s.model_reloads} model reloads",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
