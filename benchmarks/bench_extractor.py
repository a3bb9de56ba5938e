"""Speed of the packets-to-flows extractor beside nfstream, on the same capture in the same run.

One synthetic capture (``--flows`` TCP connections of 10 packets each, interleaved in time, Ethernet,
every second connection 802.1Q-tagged) is written once; then each tool turns it into flows in a fresh
Python process, ``--runs`` times, alternating (after one warm-up run each, which fills the page cache):

* **fedids**: ``fedids.detect.extractor.extract_pcap(path)``: reading, decoding, flows and the 78
  CICIDS2017 features as a numpy matrix (what the ONNX scorer consumes);
* **fedids_frame**: the same plus ``result.frame``, the canonical pandas flow frame (metadata,
  addresses as text): pandas' import alone is about 0.4 s of it.
* **nfstream** 6.6 (``pip install fedids[bench]``; a benchmark-only dependency): ``NFStreamer(path,
  statistical_analysis=True, n_dissections=0, n_meters=1)`` iterated to the end (its C core, no nDPI
  dissection, one metering process, statistical features on).

Times are whole-process wall seconds (interpreter start, imports and all), median of the runs; flows/s
is each tool's own flow count over that median, and ``ratio`` is fedids' flows/s over nfstream's.
The real captures in ``../shared/data/pcaps/`` are timed too (fedids only, whole process, median).
Results go to ``benchmarks/results/extractor.json``.

    .venv/bin/python benchmarks/bench_extractor.py          # about 1 minute on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / ".." / "shared" / "data" / "pcaps"
CAPTURES = (
    "esnet_masscan_tcp_0_1000_20190821.pcap",
    "esnet_nmap_80_all.pcap",
    "stopddos_pkt.TCP.synflood.spoofed.pcap",
)
RESULTS = ROOT / "benchmarks" / "results" / "extractor.json"

# One connection: (sender is the client?, TCP flags, payload bytes, microseconds after the previous).
_SYN, _ACK, _PSH, _FIN = 0x02, 0x10, 0x08, 0x01
CONNECTION = (
    (True, _SYN, 0, 0),
    (False, _SYN | _ACK, 0, 180),
    (True, _ACK, 0, 160),
    (True, _PSH | _ACK, 320, 90),
    (False, _ACK, 0, 150),
    (False, _PSH | _ACK, 1200, 2400),
    (True, _ACK, 0, 140),
    (False, _PSH | _ACK, 600, 300),
    (True, _FIN | _ACK, 0, 5000),
    (False, _FIN | _ACK, 0, 170),
)


def write_capture(path: Path, flows: int, seed: int = 0) -> int:
    """Write ``flows`` TCP connections (10 packets each) as a microsecond pcap; returns packets."""
    rng = np.random.default_rng(seed)
    k = len(CONNECTION)
    starts = np.sort(rng.integers(0, 60_000_000, flows))  # connections start within one minute
    offsets = np.cumsum([c[3] for c in CONNECTION])
    ts = (1_500_000_000_000_000 + starts[:, None] + offsets[None, :]).ravel()
    order = np.argsort(ts, kind="stable")
    flow_of = np.repeat(np.arange(flows), k)[order]
    step = np.tile(np.arange(k), flows)[order]
    records = []
    for t, f, s in zip(ts[order].tolist(), flow_of.tolist(), step.tolist()):
        client_sends, flags, size, _ = CONNECTION[s]
        client = bytes((10, 1, (f >> 8) & 0xFF, f & 0xFF))
        server = bytes((192, 168, 0, 1 + f % 50))
        cport, sport = 1024 + f % 60000, 443 if f % 3 else 80
        src, dst, sp, dp = (client, server, cport, sport) if client_sends else (server, client, sport, cport)
        tcp = (
            sp.to_bytes(2, "big")
            + dp.to_bytes(2, "big")
            + (1000 + s).to_bytes(4, "big")
            + (2000 + s).to_bytes(4, "big")
            + bytes((0x50, flags))
            + (64240).to_bytes(2, "big")
            + b"\0\0\0\0"
        )
        ip = bytes((0x45, 0)) + (20 + 20 + size).to_bytes(2, "big") + b"\0\0\x40\0\x40\x06\0\0" + src + dst
        vlan = b"\x81\x00\x00\x0a" if f % 2 else b""
        frame = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02" + vlan + b"\x08\x00" + ip + tcp + b"\xab" * size
        records.append(
            (t // 1_000_000).to_bytes(4, "little")
            + (t % 1_000_000).to_bytes(4, "little")
            + len(frame).to_bytes(4, "little") * 2
            + frame
        )
    header = (0xA1B2C3D4).to_bytes(4, "little") + (2).to_bytes(2, "little") + (4).to_bytes(2, "little")
    header += bytes(8) + (262144).to_bytes(4, "little") + (1).to_bytes(4, "little")
    path.write_bytes(header + b"".join(records))
    return len(records)


FEDIDS = """
import sys
from fedids.detect.extractor import extract_pcap
result = extract_pcap(sys.argv[1])
print(result.flows, result.packets)
"""

FEDIDS_FRAME = """
import sys
from fedids.detect.extractor import extract_pcap
result = extract_pcap(sys.argv[1])
print(len(result.frame), result.packets)
"""

NFSTREAM = """
import sys
from nfstream import NFStreamer
flows = 0
for flow in NFStreamer(source=sys.argv[1], statistical_analysis=True, n_dissections=0, n_meters=1):
    flows += 1
print(flows, 0)
"""


def _run(code: str, path: Path) -> tuple[float, int]:
    """Whole-process wall seconds and the flow count the process printed."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True, cwd=ROOT
    )
    seconds = time.perf_counter() - t0
    return seconds, int(out.stdout.split()[0])


def _timed(tools: dict[str, str], path: Path, runs: int) -> dict[str, dict]:
    """Median whole-process seconds of each tool on ``path``, runs alternating between tools."""
    times: dict[str, list[float]] = {name: [] for name in tools}
    flows: dict[str, int] = {}
    for code in tools.values():  # warm-up: page cache, .pyc files
        _run(code, path)
    for _ in range(runs):
        for name, code in tools.items():
            seconds, flows[name] = _run(code, path)
            times[name].append(seconds)
    out = {}
    for name in tools:
        median = statistics.median(times[name])
        out[name] = {
            "median_s": median,
            "runs_s": times[name],
            "flows": flows[name],
            "flows_per_s": flows[name] / median,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flows", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import nfstream

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "synthetic.pcap"
        packets = write_capture(capture, args.flows)
        same = _timed(
            {"fedids": FEDIDS, "fedids_frame": FEDIDS_FRAME, "nfstream": NFSTREAM}, capture, args.runs
        )
        size = capture.stat().st_size
    ratio = same["fedids"]["flows_per_s"] / same["nfstream"]["flows_per_s"]
    ratio_frame = same["fedids_frame"]["flows_per_s"] / same["nfstream"]["flows_per_s"]
    print(
        f"synthetic capture, {packets:,} packets, {args.flows:,} connections: "
        f"fedids {same['fedids']['median_s']:.2f} s ({same['fedids']['flows_per_s']:,.0f} flows/s), "
        f"with the pandas frame {same['fedids_frame']['median_s']:.2f} s, "
        f"nfstream {same['nfstream']['median_s']:.2f} s ({same['nfstream']['flows_per_s']:,.0f} flows/s): "
        f"{ratio:.2f}x ({ratio_frame:.2f}x with the frame)"
    )
    real = []
    for name in CAPTURES:
        path = PCAPS / name
        if path.exists():
            case = _timed({"fedids": FEDIDS}, path, args.runs)["fedids"]
            real.append({"capture": name, "bytes": path.stat().st_size, **case})
            print(f"{name}: {case['flows']:,} flows in {case['median_s']:.2f} s (whole process)")

    report = {
        "benchmark": "extractor",
        "command": f"python benchmarks/bench_extractor.py --runs {args.runs} --flows {args.flows}",
        "runs": args.runs,
        "statistic": "median of whole-process wall seconds",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            # The machine may be shared: 1-minute load average before and after the runs.
            "loadavg_1min_before": load_before,
            "loadavg_1min_after": os.getloadavg()[0],
        },
        "versions": {"nfstream": nfstream.__version__, "numpy": np.__version__},
        "synthetic": {
            "packets": packets,
            "connections": args.flows,
            "bytes": size,
            **same,
            "ratio_fedids_over_nfstream": ratio,
            "ratio_fedids_frame_over_nfstream": ratio_frame,
        },
        "real_captures": real,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
