"""``fedids experiment paper``: the grid behind the paper's section 4, measured by this project.

One call runs, on one data set (the user's CSV files, or the embedded synthetic IoT default):

1. the baselines: ``centralized`` (one model on the pooled training rows of the participating clients)
   and ``local`` (each client alone, mean and worst client);
2. federated training for each privacy mode of :data:`DEFAULT_MODES` the installed
   :class:`~fedids.federation.server_app.FederationConfig` supports (others are recorded as
   ``"not run: <reason>"``), DP modes calibrated to ``target_epsilon``;
3. a ``shared:0.5`` federated run (the paper's "50% shared classes") for the average F1;
4. per-family one-vs-rest metrics and the confusion matrix of the best federated model (highest final
   test macro-F1; chosen on the test split, so slightly optimistic);
5. model sizes (ONNX float, int8, pruned, pruned int8; pruning without fine-tune) and batch-1 latency
   of the best model, the plaintext and CKKS-encrypted update size;
6. energy and communication from the federated histories (device and radio profiles of
   :mod:`fedids.evaluation.energy`), to a target macro-F1;
7. membership inference (:mod:`fedids.evaluation.mia`) against the model without DP and every DP
   model;
8. scalability figures, copied from ``benchmarks/results/scalability.json`` when it exists;
9. the adaptive learning strategies (``adaptive``, unless ``ExperimentConfig.adaptive`` is off): plain
   FedAvg against energy-aware selection with adaptive local epochs under a per-device energy budget,
   int8 and top-k update compression, on the same partition and seed, compared on joules and MB to the
   same target macro-F1 (:func:`adaptive_section`).

Membership needs non-members from the same population as the members, so before partitioning, an iid
sample of the training rows' host segments (one share in ``clients + 1``) is *withheld*
(:func:`split_withheld`): no baseline, privacy mode or ``shared:0.5`` run trains on it, and it serves as
the non-member pool. Every section of ``results.json`` records the command line
and seed that produced it. ``results.json`` is rewritten after each section, so an interrupted run keeps
what it finished; ``report.html`` is rendered at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedids.console import err, progress_bar
from fedids.evaluation import energy as en
from fedids.evaluation.report import PAPER_REFERENCE, round_epsilon, write_report
from fedids.federation.config import FederationConfig
from fedids.model.metrics import compute_metrics

_FEDERATION = FederationConfig()  # the experiment's training settings default to the federation's

if TYPE_CHECKING:
    import pandas as pd

    from fedids.model.artifacts import Detector
    from fedids.task import PreparedData

DEFAULT_MODES: tuple[str, ...] = ("none", "he", "he+dp", "he+dpsgd", "he+secagg+dp")
DP_PARTS = {"dp": "client", "dpsgd": "flow window"}
"""The DP components of a mode and what their epsilon protects: ``dp`` is client-level DP on the
aggregate (:mod:`fedids.privacy.dp`), ``dpsgd`` sample-level DP-SGD on every client
(:mod:`fedids.privacy.dpsgd`); both are calibrated to ``target_epsilon``."""

SUMMARY_KEYS = ("accuracy", "macro_f1", "weighted_f1", "mcc")
RESULTS_FILE, REPORT_FILE = "results.json", "report.html"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SCALABILITY = REPO_ROOT / "benchmarks" / "results" / "scalability.json"
TARGET_FRACTION = 0.9
"""Energy/communication target: this fraction of the final macro-F1 of plaintext federated training
(mode ``none``; the best mode when ``none`` did not run). A mode that never reaches it reports n/a:
the privacy modes' accuracy cost shows up as never reaching the quality plaintext FedAvg reaches."""


def split_mode(mode: str) -> tuple[str, bool]:
    """``"he+dpsgd"`` -> (``"he"``, True): the FederationConfig privacy mode and whether clients run DP-SGD."""
    parts = [p for p in mode.split("+") if p != "dpsgd"]
    return "+".join(parts) or "none", len(parts) != len(mode.split("+"))


def dp_unit(mode: str) -> str | None:
    """What the epsilon of ``mode`` protects (None: no DP)."""
    units = [DP_PARTS[p] for p in mode.split("+") if p in DP_PARTS]
    return " and ".join(units) or None


@dataclass(frozen=True)
class ExperimentConfig:
    """Settings of one ``fedids experiment paper`` run (see the CLI for their meaning)."""

    out_dir: Path
    data: tuple[str, ...] = ()
    rounds: int = _FEDERATION.rounds
    clients: int = 10
    partition: str = "dirichlet:0.5"
    local_epochs: int = _FEDERATION.local_epochs
    batch_size: int = _FEDERATION.batch_size
    lr: float = _FEDERATION.lr
    hidden: int = _FEDERATION.hidden
    window: int = _FEDERATION.window
    split: str = "time"
    test_fraction: float = 0.3
    seed: int = 0
    quick: bool = False
    modes: tuple[str, ...] = DEFAULT_MODES
    target_epsilon: float = 8.0
    shadows: int = 4
    mia_max_per_class: int = 5000
    latency_calls: int = 1000
    prune_amount: float = 0.5
    scalability_path: Path | None = DEFAULT_SCALABILITY
    command: str = ""
    synth: dict = field(default_factory=dict)
    adaptive: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.clients < 1 or self.local_epochs < 1:
            raise ValueError("rounds, clients and local epochs must be >= 1")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not self.target_epsilon > 0:
            raise ValueError("target epsilon must be > 0")


def quick_synth(seed: int) -> dict:
    """The small synthetic capture of ``--quick`` (about three thousand flows)."""
    return {"devices": 12, "hours": 0.5, "gateways": 2, "seed": seed}


# --------------------------------------------------------------------------------------------------
# Small helpers


def _summary(metrics: dict) -> dict:
    return {k: float(metrics[k]) for k in SUMMARY_KEYS}


def _alarms(metrics: dict) -> dict:
    """What a SOC sees (fedids.model.metrics.false_alarms): false alerts per 1,000 benign test flows
    and the share of attack flows alerted, at the model's top-class decision."""
    fa = metrics.get("false_alarms") or {}
    return {"false_alarms_per_1000": fa.get("per_1000"), "attack_recall": fa.get("attack_recall")}


def _alarms_at_threshold(detector: Detector, prepared: PreparedData) -> dict:
    """The thresholded operating point on the test rows: the model's own alert rule (chosen on validation
    windows: the clients' summed histograms for a federated model), false alerts per 1,000 benign flows
    and attack recall there. Empty when the model has no rule."""
    from fedids.detect.stream import decide
    from fedids.model.checks import META_THRESHOLD
    from fedids.model.metrics import false_alarms
    from fedids.task import predict_labels

    rule = detector.metadata.get(META_THRESHOLD)
    if not rule:
        return {}
    rows = prepared.test_rows
    _, proba = predict_labels(detector, prepared.features, prepared.windows[rows])
    labels, _, _ = decide(proba, list(detector.vocabulary.labels), float(rule["threshold"]))
    fa = false_alarms(prepared.labels[rows], labels)
    return {
        "threshold": float(rule["threshold"]),
        "threshold_budget": rule.get("max_false_alarm_rate"),
        "threshold_false_alarms_per_1000": fa["per_1000"],
        "threshold_attack_recall": fa["attack_recall"],
    }


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, keys to str."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def clean_results(results: dict) -> dict:
    """A JSON-safe deep copy of ``results`` (what ``results.json`` holds): numpy scalars become Python
    numbers, NaN and infinities become None."""
    return json.loads(json.dumps(_clean(results), allow_nan=False))


def _write_results(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(_clean(results), indent=1, allow_nan=False))
    os.replace(tmp, path)


def make_meta(
    cfg: ExperimentConfig, prepared: PreparedData, parts: list[np.ndarray], withheld: np.ndarray, source: dict
) -> dict:
    """The ``meta`` section: data, sizes, settings, versions and the command line."""
    from fedids import __version__

    return {
        "title": "fedids paper evaluation",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "fedids": __version__,
        **source,
        "rows": int(len(prepared.labels)),
        "test_rows": int(len(prepared.test_rows)),
        "clients": len(parts),
        "withheld_rows": int(len(withheld)),
        "rounds": cfg.rounds,
        "partition": cfg.partition,
        "local_epochs": cfg.local_epochs,
        "seed": cfg.seed,
        "quick": cfg.quick,
        "command": cfg.command,
        "torch_threads": 1,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }


def _section(cfg: ExperimentConfig, **extra: Any) -> dict:
    return {"command": cfg.command, "seed": cfg.seed, **extra}


def privacy_unsupported_reason(mode: str) -> str | None:
    """None when this FederationConfig can run privacy ``mode``, else why not."""
    from fedids.federation.server_app import FederationConfig

    fields = {f.name for f in dataclasses.fields(FederationConfig)}
    if mode == "none":
        return None
    if "privacy" not in fields:
        return "this version of FederationConfig has no privacy setting"
    privacy, dpsgd = split_mode(mode)
    if dpsgd and "dpsgd_target_epsilon" not in fields:
        return "this version of FederationConfig has no DP-SGD budget"
    try:
        from fedids.federation.private import PrivacyMode

        PrivacyMode.parse(privacy)
    except Exception as exc:  # noqa: BLE001 - any failure to parse means the mode is not available
        return f"privacy mode {mode} is not supported ({str(exc).splitlines()[0][:160]})"
    return None


def federation_kwargs(cfg: ExperimentConfig, mode: str, keys_dir: Path) -> tuple[dict, str | None]:
    """FederationConfig keyword arguments for ``mode`` and the clients' HE key file (or None).

    HE modes get a fresh key set in ``keys_dir`` (``fedids.privacy.keys.init_keys``); DP modes (``dp``
    and ``dpsgd``) are calibrated to ``cfg.target_epsilon`` over ``cfg.rounds``.
    """
    kwargs: dict[str, Any] = dict(
        rounds=cfg.rounds,
        fraction_train=1.0,
        min_clients=1,
        local_epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        hidden=cfg.hidden,
        window=cfg.window,
        seed=cfg.seed,
    )
    secret: str | None = None
    privacy, dpsgd = split_mode(mode)
    if dpsgd:
        kwargs["dpsgd_target_epsilon"] = cfg.target_epsilon
    if privacy != "none":
        kwargs["privacy"] = privacy
        parts = set(privacy.split("+"))
        if "dp" in parts:
            kwargs["target_epsilon"] = cfg.target_epsilon
        if "he" in parts:
            from fedids.privacy.keys import init_keys

            keys = init_keys(keys_dir, privacy, force=True)
            kwargs["he_public_context"] = str(keys.public_context)
            secret = str(keys.secret_context)
    return kwargs, secret


# --------------------------------------------------------------------------------------------------
# Sections


def run_federated(
    prepared: PreparedData,
    parts: list[np.ndarray],
    cfg: ExperimentConfig,
    mode: str,
    run_dir: Path,
    label: str,
) -> tuple[dict, Detector | None]:
    """One federated run; returns its mode entry and the final global detector (or None)."""
    from fedids.federation.server_app import FederationConfig
    from fedids.federation.simulation import run_simulated
    from fedids.model.artifacts import load_detector

    reason = privacy_unsupported_reason(mode)
    if reason:
        return {"status": f"not run: {reason}"}, None
    kwargs, secret = federation_kwargs(cfg, mode, run_dir / "keys")
    config = FederationConfig(**kwargs)
    start = time.perf_counter()
    with progress_bar(f"federated {label}", cfg.rounds) as advance:

        def on_round(rec) -> None:
            spent = round_epsilon(dataclasses.asdict(rec))
            eps = f", epsilon {spent:.2f}" if spent is not None else ""
            err.print(
                f"  {label} round {rec.round:>3}: test macro-F1 {rec.test['macro_f1']:.4f}, "
                f"MCC {rec.test['mcc']:.4f}{eps}, {rec.seconds:.1f} s"
            )
            advance(1)

        extra = {"he_secret_context": secret} if secret else {}
        state = run_simulated(prepared, parts, config, run_dir, on_round=on_round, **extra)
    seconds = time.perf_counter() - start
    if not state.history:
        return {
            "status": f"not run: no round completed ({getattr(state, 'stopped', None) or 'unknown'})"
        }, None
    detector = load_detector(run_dir / "global") if (run_dir / "global").is_dir() else None
    last = state.history[-1]
    final = state.calibration.get("test") or last["test"]  # after head calibration, if any
    alarms = {}
    if detector is not None:
        from fedids.task import evaluate_rows

        alarms = _alarms(evaluate_rows(detector, prepared, prepared.test_rows))
        alarms |= _alarms_at_threshold(detector, prepared)
    entry = {
        "status": "ok",
        "kind": "federated",
        "privacy": mode,
        **_summary(final),
        **alarms,
        "rounds": state.completed_round,
        "seconds": seconds,
        "epsilon": round_epsilon(last),
        "dp_unit": dp_unit(mode),
        "stopped": getattr(state, "stopped", None),
        "history": state.history,
        "run_dir": str(run_dir),
    }
    return entry, detector


def per_family_section(
    detector: Detector, prepared: PreparedData, model_name: str, cfg: ExperimentConfig
) -> dict:
    """Per-family one-vs-rest metrics and the confusion matrix of ``detector`` on the test rows."""
    from fedids.task import evaluate_rows

    metrics = evaluate_rows(detector, prepared, prepared.test_rows)
    families = {
        fam: {k: v[k] for k in ("accuracy", "precision", "recall", "f1", "support")}
        for fam, v in metrics["per_family"].items()
    }
    return _section(
        cfg,
        status="ok",
        model=model_name,
        test_rows=int(len(prepared.test_rows)),
        families=families,
        confusion=metrics["confusion"],
        macro_f1=metrics["macro_f1"],
    )


def size_and_latency_sections(
    detector: Detector, prepared: PreparedData, cfg: ExperimentConfig, work_dir: Path, model_name: str
) -> tuple[dict, dict]:
    """ONNX sizes (float, int8, pruned, pruned int8) with their test macro-F1, and batch-1 latency."""
    try:
        from fedids.detect.stream import OnnxScorer, compact_rows, score_windows
        from fedids.model.compress import prune_detector
        from fedids.model.export import export_onnx
    except ImportError as exc:
        reason = f"not run: export code unavailable ({exc})"
        return _section(cfg, status=reason), _section(cfg, status=reason)
    work_dir.mkdir(parents=True, exist_ok=True)
    test_rows = prepared.test_rows
    windows = prepared.windows[test_rows]
    truth = prepared.labels[test_rows]
    # No fine-tune after pruning: fine-tuning on the pooled training rows would be centralized training
    # (it raised macro-F1 well above the federated model's in a trial), which a federation cannot do.
    pruned = prune_detector(detector, cfg.prune_amount)
    variants = {
        "float": (detector, "none"),
        "int8": (detector, "int8"),
        "pruned": (pruned.detector, "none"),
        "pruned_int8": (pruned.detector, "int8"),
    }
    sizes, f1, blobs = {}, {}, {}
    for name, (det, quant) in variants.items():
        result = export_onnx(
            det,
            work_dir / f"model-{name}.onnx",
            quantize=quant,
            prune_amount=cfg.prune_amount if det is pruned.detector else 0.0,
        )
        blob = result.path.read_bytes()
        blobs[name] = blob
        sizes[name] = int(result.size_bytes)
        scorer = OnnxScorer(blob, source=str(result.path), threads=1)
        proba = score_windows(scorer, prepared.features, windows)
        pred = np.asarray(scorer.labels, dtype=object)[proba.argmax(axis=1)]
        f1[name] = compute_metrics(truth, pred)["macro_f1"]
    import io

    import torch

    buf = io.BytesIO()
    torch.save(detector.model.state_dict(), buf)
    sizes["pytorch_state_dict"] = len(buf.getvalue())
    size_section = _section(
        cfg,
        status="ok",
        model=model_name,
        variants=sizes,
        macro_f1=f1,
        prune_amount=cfg.prune_amount,
        sparsity=pruned.sparsity,
        prune_finetune="none",
    )
    rng = np.random.default_rng(cfg.seed)
    picks = rng.choice(len(test_rows), size=min(cfg.latency_calls, len(test_rows)), replace=False)
    lat: dict[str, dict] = {}
    for name in ("float", "int8"):
        scorer = OnnxScorer(blobs[name], source=name, threads=1)
        times = []
        for i in picks:
            flows, window_rows = compact_rows(prepared.features, windows[i : i + 1])
            t0 = time.perf_counter()
            scorer.score(flows, window_rows)
            times.append((time.perf_counter() - t0) * 1000.0)
        times.sort()
        lat[name] = {
            "p50": float(np.percentile(times, 50)),
            "p99": float(np.percentile(times, 99)),
            "mean": float(statistics.fmean(times)),
        }
    estimate = {
        d.name: {
            "p50": lat["float"]["p50"] * d.core_speed_factor,
            "p99": lat["float"]["p99"] * d.core_speed_factor,
        }
        for d in en.DEVICE_PROFILES.values()
        if d.name != "host"
    }
    latency_section = _section(
        cfg,
        status="ok",
        model=model_name,
        backend="onnxruntime",
        threads=1,
        batch=1,
        calls=int(len(picks)),
        variants=lat,
        device_estimate=estimate,
        what="wall time of one OnnxScorer.score call on one window (float model for the device estimate)",
    )
    return size_section, latency_section


def update_bytes_section(detector: Detector, entries: dict, cfg: ExperimentConfig) -> dict:
    """Parameter count, plaintext update bytes, one CKKS-encrypted update (measured), and the mean upload
    per client and round of each federated mode (from its history)."""
    from fedids.model.train import get_weights

    flat = np.concatenate([w.ravel() for w in get_weights(detector.model)]).astype(np.float32)
    out = _section(
        cfg,
        status="ok",
        parameters=int(flat.size),
        plaintext=int(flat.nbytes),
        he_ckks=None,
        he_encrypt_s=None,
        he_ratio=None,
        per_mode={},
    )
    try:
        from fedids.privacy.he import create_he_keys, encrypt_update

        keys = create_he_keys()
        t0 = time.process_time()
        blob = encrypt_update(keys.secret_context, flat)
        out.update(he_ckks=len(blob), he_encrypt_s=time.process_time() - t0, he_ratio=len(blob) / flat.nbytes)
    except ImportError:
        pass
    for mode, entry in entries.items():
        if entry.get("status") == "ok" and entry.get("history"):
            ups = [h["bytes_up"] / h["clients"] for h in entry["history"] if h.get("clients")]
            out["per_mode"][mode] = int(round(float(np.mean(ups))))
    return out


def energy_sections(
    entries: dict,
    cfg: ExperimentConfig,
    local_cpu_s: float | None,
    client_rows: list[int],
    radio: str = "wifi",
) -> tuple[dict, dict]:
    """``energy_j`` and ``communication_mb`` from the federated histories and the baselines.

    Rounds whose records lack ``client_seconds`` get an estimate from the local baseline's measured CPU
    time per training row and epoch (flagged in ``cpu_seconds_source``).
    """
    feds = {m: e for m, e in entries.items() if e.get("kind") == "federated" and e.get("status") == "ok"}
    r = en.RADIO_PROFILES[radio]
    devices = [d for d in en.DEVICE_PROFILES.values() if d.cpu_load_w is not None]
    if not feds:
        reason = "not run: no federated mode completed"
        return _section(cfg, status=reason), _section(cfg, status=reason)
    reference = "none" if "none" in feds else max(feds, key=lambda m: feds[m]["macro_f1"])
    target = TARGET_FRACTION * feds[reference]["macro_f1"]
    per_row_epoch = (
        local_cpu_s / (sum(client_rows) * cfg.rounds * cfg.local_epochs)
        if local_cpu_s and sum(client_rows)
        else None
    )
    from fedids.federation.client_app import LOCAL_VAL_FRACTION

    modes_out, sources, comm = {}, {}, {}
    for mode, e in feds.items():
        history = e["history"]
        measured = all(h.get("client_seconds") is not None for h in history)
        if not measured and per_row_epoch is not None:
            est = (
                per_row_epoch
                * (1.0 - LOCAL_VAL_FRACTION)
                * cfg.local_epochs
                * sum(client_rows)
                / len(client_rows)
            )
            history = [{**h, "client_seconds": est, "client_privacy_seconds": None} for h in history]
            sources[mode] = "estimated"
        else:
            sources[mode] = "measured" if measured else "not recorded"
        modes_out[mode] = {}
        for d in devices:
            s = en.summarise_history(history, d, r, target)
            modes_out[mode][d.name] = s
        ref = en.summarise_history(e["history"], devices[0], r, target)
        comm[mode] = {
            "per_round_mb": [x["mb"] for x in ref["per_round"]],
            "total_mb": ref["total_mb"],
            "per_client_round_mb": ref["mean_per_client_round_mb"],
            "rounds_to_target": ref["rounds_to_target"],
            "to_target_mb": ref["to_target_mb"],
        }
    from fedids.data.schema import FEATURES

    raw_bytes = int(sum(client_rows)) * len(FEATURES) * 4
    baselines: dict[str, dict] = {
        "centralized": {
            "what": f"radio energy of uploading the clients' raw flow features once over {radio}",
            **{d.name: r.joules(raw_bytes, 0) for d in devices},
        },
    }
    if local_cpu_s is not None:
        baselines["local"] = {
            "what": "CPU energy of local-only training on every client (measured CPU time)",
            **{d.name: d.cpu_joules(local_cpu_s) for d in devices},
        }
    energy_section = _section(
        cfg,
        status="ok",
        radio=radio,
        target_macro_f1=target,
        target_rule=f"{TARGET_FRACTION:g} x the final macro-F1 of federated mode {reference}",
        cpu_seconds_source=sources,
        cpu_seconds_note=(
            "measured: the clients' own timing of local training plus "
            "clipping/noise/encryption/masking, per round; estimated: the "
            "local baseline's CPU time per training row and epoch times the "
            "clients' training rows (privacy work not included)"
        ),
        modes=modes_out,
        baselines=baselines,
        profiles=en.profiles_table(),
    )
    comm_section = _section(
        cfg,
        status="ok",
        modes=comm,
        baselines={
            "centralized": {
                "total_mb": raw_bytes / en.BYTES_PER_MB,
                "what": "raw features of every training flow uploaded once (float32, one value per feature)",
            },
            "local": {"total_mb": 0.0, "what": "nothing leaves the device"},
        },
    )
    return energy_section, comm_section


# The adaptive-strategies comparison (section ``adaptive``). Every run samples this fraction of the
# clients per round, so that energy-aware selection has a choice to make, and aggregates with plain FedAvg.
ADAPTIVE_FRACTION = 0.5
ADAPTIVE_MAX_EPOCHS = 3
ADAPTIVE_TOPK = "topk:0.1"
ADAPTIVE_RUNS: dict[str, str] = {
    "fedavg": "plain FedAvg: random selection, fixed local epochs, float32 updates",
    "energy": "energy-aware selection and adaptive local epochs under a per-device energy budget",
    "int8": "int8 update compression (per-tensor symmetric quantisation)",
    "topk": "top-k update compression with error feedback",
}


def adaptive_budget_j(
    prepared: PreparedData, parts: list[np.ndarray], cfg: ExperimentConfig
) -> tuple[float, dict]:
    """The per-device energy budget of the ``energy`` run, and the fleet (client key -> device profile).

    Budget: what the median client spends, in the ledger's own model, under random sampling at one
    local epoch over the whole training (``ADAPTIVE_FRACTION x rounds`` rounds). Clients on expensive
    hardware or with much data therefore cannot keep up with random participation, cheap ones can
    afford more: the budget binds without starving the fleet.
    """
    from fedids.federation import adaptive
    from fedids.federation.client_app import LOCAL_VAL_FRACTION
    from fedids.model.train import get_weights
    from fedids.task import new_model

    classes = len(set(prepared.labels[np.concatenate(parts)]))
    model_bytes = sum(w.nbytes for w in get_weights(new_model(classes, cfg.hidden)))
    per_example = adaptive.cpu_seconds_per_example_epoch(cfg.hidden, cfg.window)
    # The keys simulated clients report (client_app.client_key): partition-NNNN, by position in parts.
    fleet = adaptive.assign_profiles(f"partition-{i:04d}" for i in range(len(parts)))
    costs = [
        adaptive.estimate_round_j(
            en.DEVICE_PROFILES[fleet[key]],
            int(round(len(p) * (1 - LOCAL_VAL_FRACTION))),
            1,
            model_bytes,
            model_bytes,
            per_example,
        )
        for key, p in zip((f"partition-{i:04d}" for i in range(len(parts))), parts)
    ]
    return ADAPTIVE_FRACTION * cfg.rounds * float(np.median(costs)), fleet


def adaptive_settings(budget_j: float) -> dict[str, dict]:
    """FederationConfig settings of each run of the comparison (beside the common ones)."""
    return {
        "fedavg": {},
        "energy": {
            "selection": "energy",
            "energy_budget_j": budget_j,
            "max_local_epochs": ADAPTIVE_MAX_EPOCHS,
        },
        "int8": {"compression": "int8"},
        "topk": {"compression": ADAPTIVE_TOPK},
    }


def adaptive_section(
    prepared: PreparedData, parts: list[np.ndarray], cfg: ExperimentConfig, run_root: Path
) -> dict:
    """Run the four federations of :data:`ADAPTIVE_RUNS` (Flower simulation) and summarise them."""
    from fedids.federation.server_app import FederationConfig
    from fedids.federation.simulation import run_simulated

    budget, fleet = adaptive_budget_j(prepared, parts, cfg)
    settings = adaptive_settings(budget)
    runs: dict[str, dict] = {}
    for name, extra in settings.items():
        config = FederationConfig(
            rounds=cfg.rounds,
            fraction_train=ADAPTIVE_FRACTION,
            min_clients=1,
            strategy="fedavg",
            local_epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            hidden=cfg.hidden,
            window=cfg.window,
            seed=cfg.seed,
            **extra,
        )
        start = time.perf_counter()
        try:
            with progress_bar(f"adaptive {name}", cfg.rounds) as advance:

                def on_round(rec, name=name) -> None:
                    err.print(
                        f"  {name} round {rec.round:>3}: test macro-F1 {rec.test['macro_f1']:.4f}, "
                        f"{rec.clients} clients, {rec.energy_j:.2f} J, {rec.bytes_up:,} B up"
                    )
                    advance(1)

                state = run_simulated(
                    prepared, parts, config, run_root / f"adaptive-{name}", on_round=on_round
                )
            runs[name] = {
                "status": "ok" if state.history else "not run: no round completed",
                "history": state.history,
                "stopped": state.stopped,
                "seconds": time.perf_counter() - start,
            }
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            reason = str(exc).splitlines()[0][:300] if str(exc) else ""
            runs[name] = {"status": f"failed: {type(exc).__name__}: {reason}"}
    return summarise_adaptive(runs, settings, cfg, budget_j=budget, fleet=fleet)


def summarise_adaptive(
    runs: dict[str, dict],
    settings: dict[str, dict],
    cfg: ExperimentConfig,
    *,
    budget_j: float,
    fleet: dict[str, str],
    radio: str = "wifi",
) -> dict:
    """The ``adaptive`` section from the runs' histories (``runs[name]``: status, history, stopped, seconds).

    Target: :data:`TARGET_FRACTION` x the best test macro-F1 plain FedAvg reached, the same for every run.
    Joules are the ledger's modelled energy (each client on its own device profile, every round's
    ``energy_j``), MB the measured traffic both ways (:func:`fedids.evaluation.energy.summarise_history`);
    both summed over all clients up to the first round at the target (n/a when a run never reaches it).
    ``j_vs_fedavg`` / ``mb_vs_fedavg``: the same divided by plain FedAvg's.
    """
    from fedids.federation import adaptive

    base = runs.get("fedavg", {})
    if base.get("status") != "ok":
        return _section(
            cfg, status=f"not run: plain FedAvg did not complete ({base.get('status', 'missing')})"
        )
    target = TARGET_FRACTION * max(h["test"]["macro_f1"] for h in base["history"])
    device, link = en.DEVICE_PROFILES[adaptive.FLEET_PROFILES[0]], en.RADIO_PROFILES[radio]
    out: dict[str, dict] = {}
    for name, run in runs.items():
        if run.get("status") != "ok":
            out[name] = {"status": run.get("status", "not run"), "what": ADAPTIVE_RUNS.get(name, name)}
            continue
        history = run["history"]
        mb = en.summarise_history(history, device, link, target)  # the device does not enter MB
        k = mb["rounds_to_target"]
        joules = [h.get("energy_j") for h in history]
        have_j = all(j is not None for j in joules)
        epochs = [p["epochs"] for h in history for p in (h.get("participants") or {}).values()]
        extra = settings.get(name, {})
        out[name] = {
            "status": "ok",
            "what": ADAPTIVE_RUNS.get(name, name),
            "selection": extra.get("selection", "random"),
            "compression": extra.get("compression", "none"),
            "rounds": len(history),
            "stopped": run.get("stopped"),
            "seconds": run.get("seconds"),
            "final_macro_f1": history[-1]["test"]["macro_f1"],
            "best_macro_f1": max(h["test"]["macro_f1"] for h in history),
            "rounds_to_target": k,
            "to_target_j": (
                float(sum(h["energy_j"] for h in history if h["round"] <= k))
                if k is not None and have_j
                else None
            ),
            "to_target_mb": mb["to_target_mb"],
            "total_j": float(sum(joules)) if have_j else None,
            "total_mb": mb["total_mb"],
            "mean_clients": float(np.mean([h["clients"] for h in history])),
            "mean_local_epochs": float(np.mean(epochs)) if epochs else None,
            "upload_bytes_per_client_round": float(np.mean([h["bytes_up"] / h["clients"] for h in history])),
            "history": history,
        }
    ref = out["fedavg"]
    for entry in out.values():
        if entry["status"] == "ok":
            for key, ratio in (("to_target_j", "j_vs_fedavg"), ("to_target_mb", "mb_vs_fedavg")):
                entry[ratio] = entry[key] / ref[key] if entry[key] is not None and ref[key] else None
    counts = {p: sum(1 for v in fleet.values() if v == p) for p in adaptive.FLEET_PROFILES}
    return _section(
        cfg,
        status="ok",
        fraction_train=ADAPTIVE_FRACTION,
        clients=len(fleet),
        strategy="fedavg",
        radio=radio,
        target_macro_f1=target,
        target_rule=f"{TARGET_FRACTION:g} x the best test macro-F1 of plain FedAvg (run fedavg)",
        energy_budget_j=budget_j,
        budget_rule=(
            f"the median client's modelled energy for {ADAPTIVE_FRACTION:g} x {cfg.rounds} "
            "one-epoch rounds (its expected spend under random sampling)"
        ),
        max_local_epochs=ADAPTIVE_MAX_EPOCHS,
        energy_model=(
            "joules = device CPU energy of examples x epochs x the reference CPU cost per "
            "example-epoch (fedids.federation.adaptive), plus Wi-Fi radio energy of the bytes "
            "each client sent and received; each client on its own device profile"
        ),
        fleet=counts,
        runs=out,
    )


def load_scalability(path: Path | None) -> dict:
    """The scalability benchmark's JSON, or a "not run" entry."""
    if path is None or not Path(path).exists():
        return {
            "status": f"not run: {path} not found (run python benchmarks/bench_scalability.py)",
            "command": "python benchmarks/bench_scalability.py",
        }
    data = json.loads(Path(path).read_text())
    return {"status": "ok", "source": str(path), **data}


def mia_section(
    prepared: PreparedData,
    parts: list[np.ndarray],
    withheld: np.ndarray,
    targets: dict[str, tuple[Detector | None, dict]],
    cfg: ExperimentConfig,
) -> dict:
    """Loss-threshold and shadow-model attacks against each target ``{name: (detector, entry)}``."""
    from fedids.evaluation import mia
    from fedids.federation.client_app import LOCAL_VAL_FRACTION
    from fedids.model.train import TrainConfig

    members = mia.Examples.concat(
        [mia.client_examples(prepared, p, cfg.window, LOCAL_VAL_FRACTION)[0] for p in parts], cfg.window
    )
    # The withheld rows are cut like a client's (first 80% in time), so that members and non-members
    # cover the same stretch of time.
    non_members = mia.client_examples(prepared, withheld, cfg.window, LOCAL_VAL_FRACTION)[0]
    pool_name = (
        "an iid sample of host segments withheld from every partition (never trained on), first "
        "part in time as for the clients"
    )
    if len(non_members) < 50:
        non_members = mia.Examples.concat(
            [mia.client_examples(prepared, p, cfg.window, LOCAL_VAL_FRACTION)[1] for p in parts], cfg.window
        )
        pool_name = "the clients' local validation flows (never trained on; later in time than the members)"
    shadow_pool = mia.server_examples(prepared, prepared.test_rows)
    shadow_cfg = mia.ShadowConfig(
        shadows=cfg.shadows,
        hidden=cfg.hidden,
        train=TrainConfig(
            epochs=cfg.rounds * cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed
        ),
    )
    out = _section(
        cfg,
        status="ok",
        members_pool="the participating clients' training windows, as each client built them",
        nonmember_pool=pool_name,
        shadow_pool="the server's held-out test flows",
        shadows=cfg.shadows,
        shadow_epochs=shadow_cfg.train.epochs,
        max_per_class=cfg.mia_max_per_class,
        what=(
            "Members vs non-members balanced by class and host; AUC and advantage (TPR minus FPR) of a black-box "
            "attacker who sees output probabilities and the true label (see docs/evaluation.md)."
        ),
        models={},
    )
    for k, (name, (detector, entry)) in enumerate(targets.items()):
        if detector is None:
            out["models"][name] = {"status": entry.get("status", "not run")}
            continue
        rng = np.random.default_rng([cfg.seed, 17, k])
        model_out: dict[str, Any] = {
            "status": "ok",
            "epsilon": entry.get("epsilon"),
            "privacy": entry.get("privacy"),
        }
        err.print(f"  membership inference on {name}: loss threshold")
        model_out["loss_threshold"] = mia.loss_threshold_attack(
            detector, prepared.features, members, non_members, rng, cfg.mia_max_per_class
        ).as_dict()
        err.print(f"  membership inference on {name}: {cfg.shadows} shadow models")
        try:
            model_out["shadow_model"] = mia.shadow_model_attack(
                detector,
                prepared.features,
                shadow_pool,
                members,
                non_members,
                shadow_cfg,
                rng,
                cfg.mia_max_per_class,
            ).as_dict()
        except ValueError as exc:
            model_out["shadow_model"] = f"not run: {exc}"
        out["models"][name] = model_out
    return out


def split_withheld(prepared: PreparedData, clients: int, seed: int) -> tuple[np.ndarray, PreparedData]:
    """Withhold an iid share of the training rows as the membership-inference non-member pool.

    The training rows are cut into host segments (as every partition scheme does) and dealt iid among
    ``clients + 1`` parts; the last part is withheld, whatever scheme then partitions the rest, so the
    non-members are a random sample of the same segments the members come from.

    Returns
    -------
    ``(withheld_rows, remaining)``: row indices into ``prepared`` and a view of ``prepared`` whose
    training rows exclude them (same frame, features and windows; test rows unchanged).
    """
    from fedids.federation.simulation import make_partitions
    from fedids.task import PreparedData

    withheld = make_partitions(prepared, clients + 1, "iid", seed)[-1]
    mask = prepared.test_mask.copy()
    mask[withheld] = True
    return withheld, PreparedData(prepared.frame, prepared.features, prepared.windows, mask, prepared.labels)


# --------------------------------------------------------------------------------------------------
# The grid


def load_frame(cfg: ExperimentConfig) -> tuple[pd.DataFrame, dict]:
    """The user's CSV files, or the synthetic IoT default (``cfg.synth`` overrides its settings)."""
    if cfg.data:
        from fedids.cli.common import load_data

        return load_data([Path(p) for p in cfg.data]).frame, {"data": list(cfg.data), "synth": None}
    from fedids.data.synth import SynthConfig, generate_flows

    synth = SynthConfig(**{"seed": cfg.seed, **cfg.synth})
    return generate_flows(synth), {"data": "synthetic", "synth": dataclasses.asdict(synth)}


def run_experiment(cfg: ExperimentConfig, frame: pd.DataFrame | None = None) -> dict:
    """Run the grid of the module docstring; writes ``results.json`` and ``report.html`` in ``cfg.out_dir``.

    ``frame`` (a canonical flow frame) replaces loading ``cfg.data`` / synthesising.
    """
    import torch

    from fedids.federation.baselines import run_local
    from fedids.federation.simulation import make_partitions
    from fedids.model.train import TrainConfig
    from fedids.task import PreparedData, evaluate_rows, prepare, train_centralized

    # One thread per process: on a small shared machine torch's default thread pool oversubscribes the
    # cores (measured 30x slower training on 2 busy cores) and CPU seconds stop meaning single-core work.
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS_FILE
    if frame is None:
        frame, source = load_frame(cfg)
    else:
        source = {"data": "frame given by the caller", "synth": None}
    prepared = prepare(frame, window=cfg.window, test_fraction=cfg.test_fraction, split=cfg.split)
    withheld, remaining = split_withheld(prepared, cfg.clients, cfg.seed)
    parts = [p for p in make_partitions(remaining, cfg.clients, cfg.partition, cfg.seed) if len(p)]
    if not parts:
        raise ValueError(f"partition {cfg.partition}: no client received any data")
    results: dict[str, Any] = {
        "meta": make_meta(cfg, prepared, parts, withheld, source),
        "paper": PAPER_REFERENCE,
    }
    _write_results(results_path, results)
    err.print(
        f"[bold]experiment[/bold]: {len(prepared.labels):,} flows, {len(parts)} clients "
        f"(+1 withheld for membership inference), {cfg.rounds} rounds, partition {cfg.partition}"
    )

    # Baselines on the participating clients' rows only (the withheld client never trains).
    train_rows = np.sort(np.concatenate(parts))
    entries: dict[str, dict] = {}
    base_cfg = TrainConfig(
        epochs=cfg.rounds * cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed
    )
    mask = np.ones(len(prepared.labels), dtype=bool)
    mask[train_rows] = False
    pooled = PreparedData(prepared.frame, prepared.features, prepared.windows, mask, prepared.labels)
    with progress_bar("centralized baseline", None):
        t0 = time.perf_counter()
        central, _ = train_centralized(pooled, base_cfg, hidden=cfg.hidden, window=cfg.window)
        central_metrics = evaluate_rows(central, prepared, prepared.test_rows)
        entries["centralized"] = {
            "status": "ok",
            "kind": "baseline",
            **_summary(central_metrics),
            **_alarms(central_metrics),
            "seconds": time.perf_counter() - t0,
        }
    with progress_bar("local-only baselines", len(parts)) as advance:
        t0, c0 = time.perf_counter(), time.process_time()
        local = run_local(prepared, parts, base_cfg, hidden=cfg.hidden, window=cfg.window, progress=advance)
        local_cpu_s = time.process_time() - c0
        agg = local.aggregate()
        for key in ("mean", "worst"):
            entries[f"local ({key})"] = {
                "status": "ok",
                "kind": "baseline",
                **{k: agg[key][k] for k in SUMMARY_KEYS},
                "seconds": time.perf_counter() - t0,
            }
    results["modes"] = _section(
        cfg, partition=cfg.partition, test_rows=int(len(prepared.test_rows)), entries=entries
    )
    _write_results(results_path, results)

    # Federated modes, metered with RAPL where readable.
    detectors: dict[str, Any] = {}
    rapl_reason = en.rapl_unavailable_reason()
    meter = en.RaplMeter() if rapl_reason is None else None
    if meter is not None:
        meter.__enter__()
    try:
        for mode in cfg.modes:
            try:
                entry, det = run_federated(
                    prepared, parts, cfg, mode, out / "runs" / f"federated-{mode}", mode
                )
            except Exception as exc:  # noqa: BLE001 - one failed mode must not lose the rest of a long grid
                reason = str(exc).splitlines()[0][:300] if str(exc) else ""
                entry, det = {"status": f"failed: {type(exc).__name__}: {reason}"}, None
            entries[mode] = entry
            detectors[mode] = det
            if entry["status"] != "ok":
                err.print(f"[yellow]{mode}[/yellow]: {entry['status']}")
            _write_results(results_path, results)
        shared_entry, _ = run_federated(
            prepared,
            make_partitions(remaining, len(parts), "shared:0.5", cfg.seed),
            cfg,
            "none",
            out / "runs" / "federated-shared-0.5",
            "shared:0.5",
        )
    finally:
        if meter is not None:
            meter.__exit__(None, None, None)
    rapl = (
        {
            "status": "ok",
            "joules": meter.joules,
            "seconds": meter.seconds,
            "what": "package energy of this machine during the privacy-mode and shared runs (all processes)",
        }
        if meter is not None
        else {"status": f"unavailable: {rapl_reason}"}
    )
    if shared_entry.get("status") == "ok":
        shared_det = _load_global(shared_entry)
        per_class = evaluate_rows(shared_det, prepared, prepared.test_rows)["per_class"] if shared_det else {}
        present = set(prepared.labels[prepared.test_rows])
        results["shared_0_5_avg_f1"] = _section(
            cfg,
            status="ok",
            partition="shared:0.5",
            privacy="none",
            avg_f1=shared_entry["macro_f1"],
            accuracy=shared_entry["accuracy"],
            mcc=shared_entry["mcc"],
            per_class_f1={k: v["f1"] for k, v in per_class.items() if k in present},
            history=shared_entry["history"],
        )
    else:
        results["shared_0_5_avg_f1"] = _section(cfg, status=shared_entry["status"])
    _write_results(results_path, results)

    # The best federated model: per family, sizes, latency, update bytes.
    ran = {
        m: e
        for m, e in entries.items()
        if e.get("kind") == "federated" and e["status"] == "ok" and detectors.get(m) is not None
    }
    if ran:
        best = max(ran, key=lambda m: ran[m]["macro_f1"])
        best_det, best_name = detectors[best], f"federated ({best})"
        err.print(f"best federated model: {best_name}")
        results["per_family"] = per_family_section(best_det, prepared, best_name, cfg)
        _write_results(results_path, results)
        size, latency = size_and_latency_sections(best_det, prepared, cfg, out / "export", best_name)
        results["model_size_bytes"], results["latency_ms"] = size, latency
        results["update_bytes"] = update_bytes_section(best_det, entries, cfg)
    else:
        reason = "not run: no federated model completed"
        for key in ("per_family", "model_size_bytes", "latency_ms", "update_bytes"):
            results[key] = _section(cfg, status=reason)
    _write_results(results_path, results)

    energy_section, comm_section = energy_sections(entries, cfg, local_cpu_s, [len(p) for p in parts])
    energy_section["rapl"] = rapl
    results["energy_j"], results["communication_mb"] = energy_section, comm_section
    results["scalability"] = load_scalability(cfg.scalability_path)
    _write_results(results_path, results)

    if cfg.adaptive:
        results["adaptive"] = adaptive_section(prepared, parts, cfg, out / "runs")
    else:
        results["adaptive"] = _section(cfg, status="not run: switched off (--no-adaptive)")
    _write_results(results_path, results)

    # Membership inference: without DP, and every DP mode.
    targets: dict[str, tuple[Any, dict]] = {}
    if "none" in entries:
        targets["none"] = (detectors.get("none"), entries["none"])
    for m in (m for m in cfg.modes if dp_unit(m)):
        ran = entries.get(m, {}).get("status") == "ok" and detectors.get(m) is not None
        targets[m] = (detectors[m] if ran else None, entries.get(m, {"status": "not run"}))
    with progress_bar("membership inference", None):
        results["mia"] = mia_section(prepared, parts, withheld, targets, cfg)
    results["meta"]["elapsed_s"] = time.perf_counter() - t_start
    _write_results(results_path, results)
    clean = json.loads(results_path.read_text())
    write_report(clean, str(out / REPORT_FILE))
    return clean


def _load_global(entry: dict) -> Detector | None:
    from fedids.model.artifacts import load_detector

    path = Path(entry.get("run_dir", "")) / "global"
    return load_detector(path) if path.is_dir() else None


def summary_lines(results: dict) -> list[str]:
    """Five lines for the terminal: the headline figures of a results dict."""
    lines = []
    entries = results.get("modes", {}).get("entries", {})
    ok = {m: e for m, e in entries.items() if e.get("status") == "ok"}
    if ok:
        lines.append("macro-F1: " + ", ".join(f"{m} {e['macro_f1']:.3f}" for m, e in ok.items()))
    shared = results.get("shared_0_5_avg_f1", {})
    if shared.get("status") == "ok":
        lines.append(
            f"average F1 under shared:0.5: {shared['avg_f1']:.3f} (paper {PAPER_REFERENCE['shared_0_5_avg_f1']})"
        )
    size, lat = results.get("model_size_bytes", {}), results.get("latency_ms", {})
    if size.get("status") == "ok" and lat.get("status") == "ok":
        v = size["variants"]
        lines.append(
            f"model: float {v['float']:,} B, int8 {v['int8']:,} B; latency p50 {lat['variants']['float']['p50']:.3f} ms, "
            f"p99 {lat['variants']['float']['p99']:.3f} ms"
        )
    com = results.get("communication_mb", {})
    if com.get("status") == "ok":
        lines.append(
            "MB per client-round: "
            + ", ".join(f"{m} {c['per_client_round_mb']:.3f}" for m, c in com["modes"].items())
        )
    mia_models = results.get("mia", {}).get("models", {})
    bits = [
        f"{m} AUC {v['loss_threshold']['auc']:.3f} adv {v['loss_threshold']['advantage']:.3f}"
        for m, v in mia_models.items()
        if v.get("status") == "ok"
    ]
    if bits:
        lines.append("membership inference (loss threshold): " + "; ".join(bits))
    return lines[:5]


def make_command(cfg_args: dict[str, Any]) -> str:
    """The ``fedids experiment paper`` command line that reproduces a run (options in a fixed order)."""
    import shlex

    words = ["fedids", "experiment", "paper"]
    for p in cfg_args.get("data") or []:
        words += ["--data", str(p)]
    for key in ("out", "rounds", "clients", "partition", "local_epochs", "split", "seed", "target_epsilon"):
        if cfg_args.get(key) is not None:
            words += [f"--{key.replace('_', '-')}", str(cfg_args[key])]
    if cfg_args.get("modes") and cfg_args["modes"] != ",".join(DEFAULT_MODES):
        words += ["--modes", str(cfg_args["modes"])]
    if cfg_args.get("quick"):
        words.append("--quick")
    if cfg_args.get("adaptive") is False:
        words.append("--no-adaptive")
    return " ".join(shlex.quote(w) for w in words)
