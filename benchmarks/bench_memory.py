"""Memory of a long-running `fedids detect` under two adversarial streams: peak resident memory must not grow
with the length of the stream.

* **many sources**: flows from distinct source hosts, two flows each (the per-host window table is capped at
  ``--max-hosts``, least recently seen hosts forgotten);
* **flood**: payload-less TCP probes from distinct spoofed sources to one service, all with one timestamp (the
  flood rule's per-target window is bounded in count, not only in time).

Each stream is a real TrafficLabelling CSV piped into a real `fedids detect --input -` process with the rules
on, at three lengths; peak RSS is the child's own ``ru_maxrss`` (``os.wait4``). A flat ceiling means the
largest run's peak is close to the smallest's.

    .venv/bin/python benchmarks/bench_memory.py            # -> benchmarks/results/memory.json
    .venv/bin/python benchmarks/bench_memory.py --quick    # smaller streams, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import CICIDS, REAL_FILES, write_result

FEDIDS = str(Path(sys.executable).parent / "fedids")
TEMPLATE = CICIDS / "trafficlabelling-mondirkb" / "baseline_portscan.csv"
CHUNK = 20_000


def _model(root: Path) -> Path:
    """A GRU trained briefly on the real samples, exported to int8 ONNX (what an edge detector runs).

    Trained in a child process: a child's ``ru_maxrss`` includes what it shared with this process at
    ``fork``, so this process must stay small for the detector's figure to be its own."""
    path = root / "model.onnx"
    subprocess.run([sys.executable, __file__, "--train-to", str(path)], check=True)
    return path


def _train_to(path: Path) -> None:
    import torch

    from fedids.data.loader import load_flows
    from fedids.model.export import export_onnx
    from fedids.model.train import TrainConfig
    from fedids.task import prepare, train_centralized

    torch.set_num_threads(1)
    data = prepare(load_flows(REAL_FILES).frame, split="label-time")
    detector, _ = train_centralized(data, TrainConfig(epochs=2))
    export_onnx(detector, path, quantize="int8")


def _row_parts() -> tuple[bytes, list[bytes]]:
    """Header and a payload-less TCP probe row of the real PortScan sample, split into cells."""
    head, _, rest = TEMPLATE.read_bytes().partition(b"\n")
    names = [c.strip() for c in head.decode().split(",")]
    for line in rest.splitlines():
        cells = line.split(b",")
        row = dict(zip(names, cells))
        if (
            row["Protocol"] == b"6"
            and float(row["Total Length of Fwd Packets"]) == 0
            and float(row["Total Length of Bwd Packets"]) == 0
            and float(row["Total Fwd Packets"]) <= 2
        ):
            return head, cells
    raise SystemExit("no payload-less TCP row in the template")


def _stream(kind: str, n: int, head: bytes, cells: list[bytes]):
    """Yield the CSV in byte chunks: ``sources`` (two flows per source, one minute apart) or ``flood``."""
    names = [c.strip() for c in head.decode().split(",")]
    col = {name: i for i, name in enumerate(names)}
    row = list(cells)
    row[col["Destination IP"]] = b"192.168.10.50"
    row[col["Destination Port"]] = b"80"
    yield head + b"\n"
    buf = []
    for i in range(n):
        host = i // 2 if kind == "sources" else i
        src = f"10.{host >> 16 & 255}.{host >> 8 & 255}.{host & 255}".encode()
        row[col["Source IP"]] = src
        row[col["Flow ID"]] = src + b"-" + str(i).encode()
        row[col["Source Port"]] = str(1024 + i % 60000).encode()
        row[col["Timestamp"]] = (
            b"7/7/2017 3:56" if kind == "flood" else f"7/7/2017 3:{56 + i % 2:02d}".encode()
        )
        buf.append(b",".join(row))
        if len(buf) == CHUNK:
            yield b"\n".join(buf) + b"\n"
            buf = []
    if buf:
        yield b"\n".join(buf) + b"\n"


def run_one(model: Path, kind: str, n: int, root: Path) -> dict:
    head, cells = _row_parts()
    summary, alerts = root / f"{kind}-{n}.json", root / f"{kind}-{n}.jsonl"
    with open(root / "stderr.log", "wb") as log:
        proc = subprocess.Popen(
            [
                FEDIDS,
                "detect",
                "--model",
                str(model),
                "--input",
                "-",
                "--out",
                str(alerts),
                "--summary",
                str(summary),
                "--status-every",
                "0",
                "--max-warnings",
                "0",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        start = time.perf_counter()
        for chunk in _stream(kind, n, head, cells):
            proc.stdin.write(chunk)
        proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"fedids detect failed ({proc.returncode}): {(root / 'stderr.log').read_text()[-2000:]}"
        )
    report = json.loads(summary.read_text())
    alerts.unlink()
    return {
        "kind": kind,
        "flows_in": n,
        "flows_scored": report["flows"],
        "skipped": report["skipped"],
        "alerts": report["alerts"],
        "hosts_kept": report["hosts"],
        "hosts_evicted": report["evicted_hosts"],
        "rule_state": report["rule_state"],
        "rule_alerts": report["rule_alerts"],
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(seconds, 2),
        "flows_per_s": round(n / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Short streams (smoke run).")
    parser.add_argument("--model", type=Path, help="ONNX model (default: train one on the real samples).")
    parser.add_argument("--train-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_to:
        _train_to(args.train_to)
        return
    sizes = {
        "sources": (20_000, 50_000, 100_000) if args.quick else (50_000, 100_000, 200_000),
        "flood": (50_000, 100_000, 200_000) if args.quick else (250_000, 500_000, 1_000_000),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or _model(root)
        runs = []
        for kind, ns in sizes.items():
            for n in ns:
                runs.append(run_one(model, kind, n, root))
                print(json.dumps(runs[-1]), flush=True)
    ceiling = {
        kind: {
            "smallest_mib": min(
                r["peak_rss_mib"] for r in runs if r["kind"] == kind and r["flows_in"] == ns[0]
            ),
            "largest_mib": max(
                r["peak_rss_mib"] for r in runs if r["kind"] == kind and r["flows_in"] == ns[-1]
            ),
        }
        for kind, ns in sizes.items()
    }
    write_result(
        "memory" + ("_quick" if args.quick else ""),
        {
            "command": "fedids detect --model MODEL.onnx --input - (rules on, default --max-hosts 16384)",
            "runs": runs,
            "ceiling": ceiling,
        },
    )


if __name__ == "__main__":
    main()
