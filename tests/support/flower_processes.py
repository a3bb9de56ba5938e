"""Real Flower processes on loopback for the deployment tests: free ports, per-host environments, process
groups with their logs and cleanup, and small node files cut from the real CICIDS2017 samples."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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

    def failure(self, message: str) -> str:
        """``message`` with every process log (and a hint when Flower's app processes started too late)."""
        report = self.report()
        if "Runtime task-token authentication failed" in report:
            # Flower gives a freshly started flwr-clientapp/-serverapp 30 s to send its first heartbeat;
            # past that the task is re-queued and a new process started, forever on an overloaded host.
            message += (
                f"\nhint: app processes did not start within Flower's 30 s task-claim window; "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            )
        return f"{message}\n{report}"

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


# The small model both deployment tests train (fast on 2 cores; the pipeline is what they check).
SMALL_RUN_CONFIG = {"hidden": 16, "window": 5, "batch-size": 64, "lr": 0.01, "timeout-s": 600.0}


def submit_run(app: Path, run_config: dict, env: dict) -> int:
    """``flwr run`` of ``app`` (the runbook's command) with ``run_config``; its run id, or AssertionError
    with Flower's output."""
    submitted = subprocess.run(
        dep.run_command(app, run_config), env=env, capture_output=True, text=True, timeout=300
    )
    if submitted.returncode != 0:
        raise AssertionError(submitted.stdout + submitted.stderr)
    return int(dep.parse_json_output(submitted.stdout)["run-id"])


def follow_run(
    run_id: int,
    env: dict,
    *,
    watched: dict[str, subprocess.Popen],
    reaped: list[subprocess.Popen],
    done: Callable[[], bool],
    query_every_s: float,
    timeout_s: float = 900,
):  # noqa: ANN201 - fedids.federation.deployment.RunStatus or None
    """Follow run ``run_id`` to its end (``flwr ls``; None if it never answered); AssertionError when a
    ``watched`` process exits first. ``reaped``: processes expected to exit (polled so they do not linger
    as zombies); ``flwr ls`` costs a Python start-up, so it is asked every ``query_every_s`` or at once
    when ``done()`` says the run's own files show its end."""
    deadline, last_query, status = time.monotonic() + timeout_s, 0.0, None
    while time.monotonic() < deadline:
        for proc in reaped:
            proc.poll()
        for name, proc in watched.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with code {proc.returncode}")
        if done() or time.monotonic() - last_query > query_every_s:
            try:
                status = dep.read_run_status(run_id, env=env)
            except subprocess.TimeoutExpired:
                continue  # `flwr ls` itself was too slow (overloaded host): ask again
            finally:
                last_query = time.monotonic()
            if status.finished:
                break
        time.sleep(2)
    return status
