"""`fedids demo`: the main job of `make demo`, end to end on the embedded synthetic default.

Synthesise IoT traffic -> federated training with ``he+dp`` and ``he+dpsgd`` (and plaintext for comparison) -> evaluation,
membership inference, sizes and latency (``fedids experiment paper``) -> int8 ONNX export -> streaming
detection on a real attack capture -> ``report.html``; prints the report path and a five-line summary.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from fedids.cli.common import app
from fedids.console import err, out
from fedids.errors import InputError

DEMO_MODES = ("none", "he+dp", "he+dpsgd")


@app.command("demo")
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where everything is written."),
    rounds: int = typer.Option(5, help="Federated rounds."),
    clients: int = typer.Option(10, help="Simulated IoT clients."),
    seed: int = typer.Option(0, help="Random seed."),
    pcap: Path | None = typer.Option(
        None,
        help="Real capture to run the detector on (`make demo` passes one; default: the synthetic CSV).",
    ),
    adaptive: bool = typer.Option(
        True,
        "--adaptive/--no-adaptive",
        help="Include the adaptive-strategies comparison (four short federated runs).",
    ),
) -> None:
    """Run the whole pipeline on synthetic IoT traffic and write a report (about 10 minutes on 2 cores)."""
    from fedids.cli.detect import print_summary
    from fedids.cli.outputs import write_json
    from fedids.data.synth import SynthConfig, write_synthetic_csv
    from fedids.model.artifacts import load_detector
    from fedids.model.export import export_onnx
    from fedids.pipelines.detect import DetectRequest, DetectSummary, run_detect
    from fedids.pipelines.experiment import ExperimentConfig, run_experiment, summary_lines

    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = write_synthetic_csv(SynthConfig(seed=seed), out_dir / "data" / "synthetic.csv")
    err.print(f"[bold]1/4[/bold] synthetic IoT traffic: {csv}")
    err.print("[bold]2/4[/bold] federated training (none, he+dp, he+dpsgd), baselines, evaluation, report")
    cfg = ExperimentConfig(
        out_dir=out_dir / "experiment",
        data=(str(csv),),
        rounds=rounds,
        clients=clients,
        seed=seed,
        modes=DEMO_MODES,
        target_epsilon=8.0,
        shadows=2,
        latency_calls=300,
        adaptive=adaptive,
        command=f"fedids demo --out {out_dir} --rounds {rounds} --clients {clients} --seed {seed}"
        + ("" if adaptive else " --no-adaptive"),
    )
    results = run_experiment(cfg)
    entries = results.get("modes", {}).get("entries", {})
    chosen = _choose_model(entries)
    if chosen is None:
        raise InputError(f"demo: no federated model was trained (see {cfg.out_dir / 'results.json'})")
    model_dir = Path(entries[chosen]["run_dir"]) / "global"
    onnx_path = out_dir / f"detector-{chosen.replace('+', '-')}-int8.onnx"
    exported = export_onnx(load_detector(model_dir), onnx_path, quantize="int8")
    err.print(
        f"[bold]3/4[/bold] int8 ONNX model of the {chosen} global model: {onnx_path} ({exported.size_bytes:,} B)"
    )
    alerts, summary = out_dir / "alerts.jsonl", out_dir / "detect-summary.json"
    alerts.unlink(missing_ok=True)
    scanned = pcap if pcap is not None else csv
    request = DetectRequest(
        model=onnx_path, out_path=str(alerts), input_spec=str(scanned), status_every=0.0, max_warnings=5
    )

    def on_summary(result: DetectSummary) -> None:
        print_summary(result)
        write_json(summary, result.as_dict())

    detected = run_detect(request, on_summary=on_summary)
    if detected.stopped_by is not None:
        raise detected.stopped_by
    err.print(f"[bold]4/4[/bold] detection on {scanned.name}: alerts in {alerts}")
    report = Path(cfg.out_dir) / "report.html"
    out.print(f"\nreport: {report.resolve()}")
    lines = summary_lines(results)
    lines.append(f"detector on {scanned.name}: {detected.flows:,} flows, {detected.alerts:,} alerts")
    for line in lines[:5]:
        out.print(f"  {line}")
    err.print(f"[dim]demo finished in {time.perf_counter() - start:.0f} s[/dim]")


def _choose_model(entries: dict[str, dict]) -> str | None:
    """The detector is the best private model (both are epsilon 8); plaintext only if neither trained."""
    private = [m for m in DEMO_MODES if m != "none" and entries.get(m, {}).get("status") == "ok"]
    if private:
        return max(private, key=lambda m: entries[m]["macro_f1"])
    return "none" if entries.get("none", {}).get("status") == "ok" else None
