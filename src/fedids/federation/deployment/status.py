"""Run status (I/O: calls the ``flwr`` command line): ``flwr run`` returns 0 as soon as the SuperLink has
accepted a run, so the real outcome is read with ``flwr ls``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedids.errors import InputError
from fedids.federation.deployment.commands import CONNECTION_NAME, status_command


@dataclass(frozen=True)
class RunStatus:
    """One run as ``flwr ls`` reports it. ``status`` is e.g. ``running`` or ``finished:completed``."""

    run_id: int
    status: str

    @property
    def finished(self) -> bool:
        return self.status.startswith("finished")

    @property
    def succeeded(self) -> bool:
        return self.status == "finished:completed"


def flwr_executable() -> str:
    """``flwr`` from ``PATH``, else the one installed beside this Python (a venv used without activation)."""
    found = shutil.which("flwr")
    if found:
        return found
    beside = Path(sys.executable).parent / "flwr"
    if beside.exists():
        return str(beside)
    raise InputError(
        "flwr: command not found; install fedids[full] (it brings flwr) and put its bin/ on PATH"
    )


def parse_json_output(text: str) -> dict:
    """The JSON object that a ``flwr ... --format json`` command printed (its last ``{...}`` block)."""
    start = text.find("{")
    while start != -1:
        try:
            return json.loads(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
    raise ValueError(f"no JSON object in flwr output: {text.strip()[:300]!r}")


def parse_run_status(text: str, run_id: int) -> RunStatus:
    """The status of ``run_id`` from ``flwr ls --format json`` output."""
    payload = parse_json_output(text)
    if not payload.get("success", False):
        raise RuntimeError(f"flwr ls failed: {payload.get('error-message', payload)}")
    for run in payload.get("runs", []):
        if int(run.get("run-id", -1)) == run_id:
            return RunStatus(run_id, str(run.get("status", "")))
    raise RuntimeError(f"run {run_id} not listed by flwr ls")


def read_run_status(
    run_id: int,
    *,
    connection: str = CONNECTION_NAME,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300.0,
) -> RunStatus:
    """Ask the SuperLink (``flwr ls``) for the status of ``run_id``.

    Raises ``subprocess.TimeoutExpired`` if ``flwr ls`` takes longer than ``timeout_s`` (it needs about
    2.5 CPU-seconds to start, which can be a minute of wall time on an overloaded host).
    """
    command = status_command(run_id, connection)
    command[0] = flwr_executable()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        timeout=timeout_s,
        check=False,
    )
    return parse_run_status(result.stdout, run_id)


def wait_for_run(
    run_id: int,
    *,
    connection: str = CONNECTION_NAME,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 2.0,
) -> RunStatus:
    """Poll ``flwr ls`` until ``run_id`` has finished; returns its final status (raises on timeout)."""
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while True:
        try:
            current = read_run_status(run_id, connection=connection, env=env)
        except subprocess.TimeoutExpired:
            pass  # a slow `flwr ls` says nothing about the run: ask again
        else:
            if current.finished:
                return current
            status = current.status
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {status!r} after {timeout_s:.0f} s")
        time.sleep(poll_s)
