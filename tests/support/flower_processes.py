"""Real Flower processes on loopback for the deployment tests: free ports, per-host environments, process
groups with their logs and cleanup, and small node files cut from the real CICIDS2017 samples."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fedids.federation import deployment as dep
from support import paths

DATA = paths.CICIDS


def free_ports(n: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (read from /proc; empty where /proc is unavailable)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


class Processes:
    """The Flower processes one test starts, with their logs; :meth:`stop` ends them and their children."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def report(self) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"----- {path.name} (last 4000 chars) -----\n{text[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        # Children first recorded (the SuperLink's and SuperNodes' SuperExec and app processes), since they
        # are re-parented once their parent exits.
        descendants = [c for p in self.procs.values() if p.poll() is None for c in children(p.pid)]
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        deadline = time.monotonic() + 15  # SuperExec processes watch their parent and exit by themselves
        while descendants and time.monotonic() < deadline:
            descendants = [pid for pid in descendants if Path(f"/proc/{pid}").exists() and not zombie(pid)]
            time.sleep(0.5)
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def write_node_files(directory: Path, parts: int = 4) -> list[Path]:
    """``parts`` small CSVs from real CICIDS2017 rows (e.g. 3 SuperNodes' local files and the server's test
    file).

    The first 400 flows (in time order) of each source file are dealt round-robin, so every file holds
    every class (BENIGN, DDoS, PortScan, XSS, SQL injection) and no flow is in two files.
    """
    import pandas as pd

    from fedids.data.formats import write_trafficlabelling_csv
    from fedids.data.loader import load_flows

    sources = sorted((DATA / "trafficlabelling-mondirkb").glob("*.csv")) + sorted(
        (DATA / "trafficlabelling-netsentinel").glob("*.csv")
    )
    assert len(sources) == 5, sources
    chunks_of: list[list] = [[] for _ in range(parts)]
    for source in sources:
        frame = load_flows([source]).frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
        frame = frame.iloc[:400]
        for k in range(parts):
            chunks_of[k].append(frame.iloc[k::parts])
    paths = []
    for k, chunks in enumerate(chunks_of):
        paths.append(
            write_trafficlabelling_csv(pd.concat(chunks, ignore_index=True), directory / f"flows-{k}.csv")
        )
    return paths


def host_env(flwr_home: Path) -> dict[str, str]:
    """Environment of one simulated host: its own FLWR_HOME, the venv's bin/ first, nothing fetched."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(dep.OFFLINE_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"  # 2 cores, 5 Python processes: no thread oversubscription
    return env


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"SuperLink exited with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"SuperLink not listening on port {port} after {timeout_s:.0f} s")
