"""Speed of the packets-to-flows extractor (fedids.detect.extractor.extract_pcap) on the real captures.

For each capture in ../shared/data/pcaps/ (see ../shared/data/README.md): flows/s and packets/s of
:func:`extract_pcap` (reading, decoding, flow table, feature mapping, frame building), median of
``--runs`` runs in this process after one warm-up run, one thread, in wall and in CPU seconds. For
reference, the same for netflower's own ``convert_pcap_to_csv`` (its dpkt reader and parser, CSV
output), which this extractor builds on, so the cost of the extra decoding and mapping is visible.
Results go to ``benchmarks/results/extractor.json``.

    .venv/bin/python benchmarks/bench_extractor.py          # 1-2 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / ".." / "shared" / "data" / "pcaps"
CAPTURES = (
    "esnet_masscan_tcp_0_1000_20190821.pcap",
    "esnet_nmap_80_all.pcap",
    "stopddos_pkt.TCP.synflood.spoofed.pcap",
)
RESULTS = ROOT / "benchmarks" / "results" / "extractor.json"


def _median_seconds(fn, runs: int) -> tuple[float, list[float], float, object]:
    """Median wall seconds, all wall seconds, median CPU seconds of this process, last output.

    CPU seconds are reported too because the machine may be shared: under load, wall time grows
    with the other processes while CPU time stays close to the cost of the work itself."""
    out = fn()  # warm-up: imports, libpcap load, page cache
    walls, cpus = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), walls, statistics.median(cpus), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import netflower

    from fedids.detect.extractor import extract_pcap

    load_before = os.getloadavg()[0]
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in CAPTURES:
            path = PCAPS / name
            median, times, cpu, result = _median_seconds(lambda: extract_pcap(path), args.runs)
            csv = Path(tmp) / "flows.csv"
            nf_median, nf_times, nf_cpu, nf_flows = _median_seconds(
                lambda: netflower.convert_pcap_to_csv(str(path), str(csv)), args.runs)
            case = {
                "capture": name,
                "bytes": path.stat().st_size,
                "packets": result.packets,
                "flows": result.flows,
                "skipped": result.skipped,
                "extract_pcap": {
                    "median_s": median, "runs_s": times,
                    "flows_per_s": result.flows / median, "packets_per_s": result.packets / median,
                    "median_cpu_s": cpu, "flows_per_cpu_s": result.flows / cpu,
                    "packets_per_cpu_s": result.packets / cpu,
                },
                "netflower_convert_pcap_to_csv": {
                    "median_s": nf_median, "runs_s": nf_times, "flows": nf_flows,
                    "flows_per_s": nf_flows / nf_median, "packets_per_s": result.packets / nf_median,
                    "median_cpu_s": nf_cpu, "flows_per_cpu_s": nf_flows / nf_cpu,
                },
            }
            cases.append(case)
            print(f"{name}: {result.packets} packets -> {result.flows} flows, "
                  f"{case['extract_pcap']['flows_per_s']:,.0f} flows/s, "
                  f"{case['extract_pcap']['packets_per_s']:,.0f} packets/s "
                  f"({case['extract_pcap']['flows_per_cpu_s']:,.0f} flows per CPU-s; netflower CSV: "
                  f"{case['netflower_convert_pcap_to_csv']['flows_per_s']:,.0f} flows/s, "
                  f"{case['netflower_convert_pcap_to_csv']['flows_per_cpu_s']:,.0f} per CPU-s)")

    report = {
        "benchmark": "extractor",
        "command": "python benchmarks/bench_extractor.py",
        "runs": args.runs,
        "statistic": "median",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "threads_used": 1,
                    # The machine may be shared: 1-minute load average before and after the runs.
                    "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0]},
        "versions": {"netflower": netflower.__version__},
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
