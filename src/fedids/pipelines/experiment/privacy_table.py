"""The privacy table (section ``privacy``): for every privacy mode of the run, what its epsilon protects
and against whom, the accountant's epsilon, the canary audit's empirical lower bound, macro-F1, MCC and the
commands that reproduce them.

The lower bounds come from ``fedids audit --federated MODE --out FILE`` reports given with ``--audit``
(:mod:`fedids.pipelines.audit`): a canary audit trains its own models (canaries in the clients' data, half
of them left out), so it is run once per data set and read here, not re-run inside every experiment. A
mode with no matching audit shows none, never a number from another mode, epsilon or data set (an audit
matches when it read the same ``--data`` files, compared as resolved paths).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedids.pipelines.experiment.config import ExperimentConfig, dp_against, dp_unit

MAX_AUDIT_BYTES = 16 * 1024 * 1024


def load_audit(path: str | Path) -> dict:
    """A ``fedids audit --out`` report of a federated audit; ValueError when it is not one."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_AUDIT_BYTES:
            raise ValueError(f"{path}: larger than {MAX_AUDIT_BYTES} bytes, not an audit report")
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read an audit report ({type(exc).__name__})") from None
    modes = report.get("modes") if isinstance(report, dict) else None
    if not isinstance(modes, list) or not all(isinstance(m, dict) for m in modes):
        raise ValueError(f"{path}: not a `fedids audit --out` report (no list of modes)")
    if not report.get("federated"):
        raise ValueError(
            f"{path}: a central audit; the experiment's modes are federated (audit with --federated)"
        )
    data = report.get("data", [])
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise ValueError(f"{path}: its data files are not a list of paths")
    for m in modes:
        one_run = m.get("one_run")
        bound = one_run.get("epsilon_lower_bound") if isinstance(one_run, dict) else None
        target = m.get("target_epsilon")
        if not (isinstance(m.get("mode"), str) and _finite(bound) and (target is None or _finite(target))):
            raise ValueError(f"{path}: a mode without a name, a finite lower bound or a numeric epsilon")
    return report


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _same_data(a: list | tuple, b: list | tuple) -> bool:
    return sorted(str(Path(p).resolve()) for p in a) == sorted(str(Path(p).resolve()) for p in b)


def _audited(
    reports: list[tuple[str, dict]], mode: str, epsilon: float, data: tuple[str, ...]
) -> dict | None:
    """The audit of federated ``mode`` at ``epsilon`` on ``data`` (no DP: the control of any audit of
    ``data``), or None."""
    for path, report in reports:
        if not _same_data(report.get("data") or [], data):
            continue
        for m in report["modes"]:
            name = m["mode"].split(" eps=")[0]
            target = m.get("target_epsilon")
            no_dp = name == "none" and target is None
            if (mode == "none" and no_dp) or (
                name == mode and target is not None and math.isclose(target, epsilon, rel_tol=1e-9)
            ):
                return {
                    "lower_bound": m["one_run"]["epsilon_lower_bound"],
                    "accountant_epsilon": m.get("accountant_epsilon"),
                    "auc": m.get("auc"),
                    "confidence": m["one_run"].get("confidence"),
                    "file": path,
                    "command": report.get("command", ""),
                }
    return None


def privacy_section(cfg: ExperimentConfig, entries: dict[str, dict]) -> dict[str, Any]:
    """``privacy``: one row per mode of ``cfg.modes`` (see the module docstring)."""
    reports = [(str(p), load_audit(p)) for p in cfg.audits]
    rows: dict[str, dict] = {}
    for mode in cfg.modes:
        entry = entries.get(mode, {"status": "not run"})
        row: dict[str, Any] = {
            "status": entry.get("status", "not run"),
            "dp_unit": dp_unit(mode),
            "dp_against": dp_against(mode),
            "target_epsilon": cfg.target_epsilon if dp_unit(mode) else None,
            "audit": _audited(reports, mode, cfg.target_epsilon, cfg.data),
        }
        if row["status"] == "ok":
            row |= {k: entry.get(k) for k in ("epsilon", "macro_f1", "mcc", "rounds")}
        rows[mode] = row
    missing = "" if cfg.audits else " No audit report was given (--audit): the audited column is empty."
    if cfg.audits and not any(r["audit"] for r in rows.values()):
        missing = " No audit report given matches this run's data, modes and epsilon."
    what = (
        "Per privacy mode: the accountant's epsilon after the run and against whom it holds "
        "(docs/privacy.md), the one-run canary audit's lower bound (Steinke, Nasr and Jagielski 2023) from "
        "the `fedids audit` report named beside it, and the model's macro-F1 and MCC on this run's test "
        "flows." + missing
    )
    return {"command": cfg.command, "seed": cfg.seed, "status": "ok", "what": what, "rows": rows}
