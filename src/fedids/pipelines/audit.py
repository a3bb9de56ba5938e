"""Canary audit of *federated* training, per privacy mode: the accountant's epsilon beside an audited lower
bound (issue 13.6). The pure audit (one-run bound, AUC, offline LiRA) is :mod:`fedids.evaluation.audit`;
this module puts its canaries into the clients' data of a real simulated federation
(:func:`fedids.pipelines.federate.run_federation`) and scores them on the released global model.

How a federated audit runs (:func:`run_federated_audit`)
--------------------------------------------------------
1. The training rows are partitioned among the clients as ``fedids federate`` does
   (:func:`fedids.federation.simulation.make_partitions`).
2. ``m`` canaries are crafted as raw flow rows (:func:`make_flow_canaries`): one flow each, from a source
   host of its own (``198.18.0.0/15``, the benchmarking range), so each canary is exactly one training
   row, a window of padding and one flow: the unit DP-SGD protects. Its features are ``N(0,
   scale**2)`` draws mapped back through a reference scaler fitted on the real training rows, so that
   in the model's scaled space they look like the centralized audit's canaries: independent, out of
   distribution. Its label is drawn uniformly from the training labels (so it can only be memorised).
   Its timestamp precedes every real flow: clients hold out their *latest* flows for local validation
   (``fedids.federation.client.LOCAL_VAL_FRACTION``), so canaries always land in local training.
   Each canary is assigned to a client uniformly at random (public, from ``seed``).
3. Each mode draws fresh secret inclusion bits (:func:`fedids.evaluation.audit.draw_inclusion`, from
   the OS): an included canary is appended to its client's partition, an excluded one to none.
4. The federation runs in Flower's simulation engine with the mode's settings; every canary is scored on
   the saved global model (``run_dir/global``, after head calibration: the model that is released), and
   the one-run bound, the canary AUC and (with ``shadows``) offline LiRA are computed as centrally.
   LiRA's shadow federations run the same mode on a random half of each client's real rows, no canary.

What is audited, per mode
-------------------------
* ``none``: plaintext federated training, no DP: the control, which must show leakage.
* ``dpsgd`` (with ``secagg``, ``he``, ...): every client trains with DP-SGD; epsilon per flow window of
  a client's data, so one canary (one window) is exactly the neighbouring unit.
* ``dp`` (with ``secagg``, ``he``, ...): client-level DP on the aggregate; the neighbouring unit is a
  whole client. A canary is one window *inside* a client, a smaller change than the unit, so the
  client-level epsilon bounds it too (DP for every client's whole data implies DP for any subset of
  it): the audited bound must stay at or below the accountant's epsilon. The audit cannot reach a
  client-level epsilon: that would need whole canary clients.

Not covered by any epsilon: the setup round's securely summed label counts and feature histograms
(:mod:`fedids.federation.setup`) include the canaries; they change the scaler and class weights by a
row's worth, which an attack on the final model barely sees.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedids.evaluation import audit as ev
from fedids.federation.config import DISTRIBUTED_DPSGD_NEEDS, FederationConfig, distributed_dpsgd_runs

if TYPE_CHECKING:
    from fedids.federation.state import FederationState
    from fedids.model.artifacts import Detector
    from fedids.task import PreparedData

CANARY_NETWORK = (198, 18)  # 198.18.0.0/15 (RFC 2544): no real host of a capture uses it
DP_MECHANISMS = ("dp", "dpsgd", "dpsgd-distributed")


# --------------------------------------------------------------------------------------------------
# Modes and settings


@dataclass(frozen=True)
class FederatedMode:
    """A federated mode to audit: ``privacy`` is a ``FederationConfig`` privacy mode (``none``,
    ``secagg+dp``, ``he``, ...), ``dpsgd`` whether clients train with DP-SGD, ``target_epsilon`` the
    budget of the one DP mechanism (client-level ``dp`` or DP-SGD; None without DP); ``distributed``:
    DP-SGD with its noise shared out over the SecAgg sum (``secagg+dpsgd-distributed``)."""

    privacy: str = "none"
    dpsgd: bool = False
    target_epsilon: float | None = None
    distributed: bool = False

    @classmethod
    def parse(cls, text: str, target_epsilon: float | None = None) -> FederatedMode:
        """``"he+dpsgd"`` -> privacy ``he`` with DP-SGD; ValueError for an unknown or doubly-DP mode,
        a DP mode without an epsilon or a mode without DP with one."""
        from fedids.errors import FedidsError
        from fedids.federation.private import PrivacyMode

        parts = [p.strip() for p in text.split("+")]
        distributed = "dpsgd-distributed" in parts
        dpsgd = "dpsgd" in parts or distributed
        privacy = "+".join(p for p in parts if p not in ("dpsgd", "dpsgd-distributed")) or "none"
        try:
            parsed = PrivacyMode.parse(privacy)
        except FedidsError as exc:
            raise ValueError(f"mode {text!r}: {exc}") from None
        if parts.count("dpsgd") + parts.count("dpsgd-distributed") > 1:
            raise ValueError(f"mode {text!r}: dpsgd twice")
        return cls(parsed.name, dpsgd, target_epsilon, distributed)

    def __post_init__(self) -> None:
        dp = "dp" in self.privacy.split("+")
        if dp and self.dpsgd:
            raise ValueError(f"mode {self.name}: audit one DP mechanism at a time (dp or dpsgd)")
        if self.distributed and not distributed_dpsgd_runs(self.privacy, self.dpsgd):
            raise ValueError(f"mode {self.name}: {DISTRIBUTED_DPSGD_NEEDS}")
        if (dp or self.dpsgd) != (self.target_epsilon is not None):
            raise ValueError(f"mode {self.name}: a DP mode needs a target epsilon, a mode without DP none")
        if self.target_epsilon is not None and not 0 < self.target_epsilon <= 1000:
            raise ValueError(f"target epsilon must be in (0, 1000], got {self.target_epsilon}")

    @property
    def mechanism(self) -> str | None:
        """``"dp"`` (client-level), ``"dpsgd"`` (per flow window) or None (no DP)."""
        return "dpsgd" if self.dpsgd else ("dp" if "dp" in self.privacy.split("+") else None)

    @property
    def text(self) -> str:
        """The mode as ``fedids experiment`` spells it (``he+dpsgd``, ``secagg+dp``, ``none``)."""
        if not self.dpsgd:
            return self.privacy
        dpsgd = "dpsgd-distributed" if self.distributed else "dpsgd"
        return dpsgd if self.privacy == "none" else f"{self.privacy}+{dpsgd}"

    @property
    def name(self) -> str:
        eps = "" if self.target_epsilon is None else f" eps={self.target_epsilon:g}"
        return f"{self.text}{eps}"


@dataclass(frozen=True)
class FederatedAuditConfig:
    """Settings of a federated audit besides the data and the modes.

    ``audit``: the canaries (``canaries``, ``canary_scale``), ``shadows``, ``delta`` (also the
    federation's target delta), ``confidence`` and ``seed`` of :class:`fedids.evaluation.audit.AuditConfig`
    (its ``epochs``, ``batch_size``, ``lr``, ``hidden`` and ``clip_norm`` give the clients' local epochs,
    batch size, learning rate, the GRU size and DP-SGD's per-window clip norm). ``clients``,
    ``partition``, ``segment``, ``rounds`` and ``window`` as in ``fedids federate``; ``client_clip_norm``
    is client-level ``dp``'s update clip. Every other federation setting keeps its default.
    """

    audit: ev.AuditConfig
    clients: int = 5
    partition: str = "iid"
    segment: int = 100
    rounds: int = 5
    window: int = 5
    client_clip_norm: float = 1.0

    def __post_init__(self) -> None:
        from fedids.federation.partition import PartitionSpec

        if not 1 <= self.clients <= 1000 or self.segment < 1:
            raise ValueError(
                f"clients must be in 1..1000 and segment >= 1, got {self.clients}, {self.segment}"
            )
        PartitionSpec.parse(self.partition)
        self.federation_config(FederatedMode())  # rounds, window, ... checked by FederationConfig

    def federation_config(self, mode: FederatedMode, he_public_context: str = "") -> FederationConfig:
        """The FederationConfig of ``mode``: every client every round, the audit's training settings,
        the mode's one DP mechanism calibrated to its target epsilon over all rounds at ``delta``."""
        a = self.audit
        dp: dict[str, Any] = {}
        if mode.privacy != "none":
            dp = {"privacy": mode.privacy, "he_public_context": he_public_context}
        if mode.mechanism == "dp":
            dp["target_epsilon"] = mode.target_epsilon
        elif mode.mechanism == "dpsgd":
            dp["dpsgd_target_epsilon"] = mode.target_epsilon
            dp["dpsgd_distributed"] = mode.distributed
        return FederationConfig(
            rounds=self.rounds,
            min_clients=1,
            local_epochs=a.epochs,
            batch_size=a.batch_size,
            lr=a.lr,
            hidden=a.hidden,
            window=self.window,
            seed=a.seed,
            target_delta=a.delta,
            clip_norm=self.client_clip_norm,
            dpsgd_clip_norm=a.clip_norm,
            **dp,
        )


# --------------------------------------------------------------------------------------------------
# Canaries as flow rows (pure: randomness from the generator passed in)


@dataclass(frozen=True)
class FlowCanaries:
    """``m`` canaries as raw flow rows: ``frame`` (``m`` rows, the partition columns), ``labels`` str
    ``(m,)`` and ``client`` int64 ``(m,)``, the index of the client each would join."""

    frame: pd.DataFrame
    labels: np.ndarray
    client: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def make_flow_canaries(
    data: PreparedData, m: int, n_clients: int, rng: np.random.Generator, scale: float = 1.0
) -> FlowCanaries:
    """``m`` one-flow canaries for ``data`` (see the module docstring): features ``N(0, scale**2)`` in
    the scaled space of a scaler fitted on ``data``'s training rows, uniform training labels, own source
    hosts, timestamps (and sequence numbers) before every flow of ``data``, clients uniform in
    ``[0, n_clients)``."""
    from fedids.data.preprocess import FlowScaler
    from fedids.data.schema import FAMILY, FEATURES, LABEL, SEQ, family_of

    if m < 2 or n_clients < 1 or not scale > 0:
        raise ValueError("need m >= 2, n_clients >= 1 and scale > 0")
    if m > 2**17:
        raise ValueError(f"at most {2**17} canaries (one address of 198.18.0.0/15 each), got {m}")
    train = data.train_rows
    labels_seen = np.unique(data.labels[train])
    if len(labels_seen) < 2:
        raise ValueError("an audit needs at least two labels in the training rows")
    reference = FlowScaler.fit(data.features[train])
    z = np.clip(rng.standard_normal((m, len(FEATURES))) * scale, -9.5, 9.5)
    logs = reference.center + reference.scale * z
    frame = pd.DataFrame(np.sign(logs) * np.expm1(np.abs(logs)), columns=list(FEATURES))
    labels = labels_seen[rng.integers(0, len(labels_seen), m)]
    a, b = CANARY_NETWORK
    frame["src_ip"] = [f"{a}.{b + (i >> 16)}.{(i >> 8) & 255}.{i & 255}" for i in range(m)]
    first = np.arange(-m, 0)  # canary i comes (m - i) steps before the earliest real flow
    if "timestamp" in data.frame.columns:
        start = pd.Timestamp(data.frame["timestamp"].min()) - pd.Timedelta(seconds=1)
        frame["timestamp"] = (start + pd.to_timedelta(first, unit="ms")).astype(data.frame["timestamp"].dtype)
    if SEQ in data.frame.columns:
        frame[SEQ] = int(data.frame[SEQ].min()) + first
    elif "timestamp" not in data.frame.columns:
        raise ValueError("the flows carry neither timestamps nor sequence numbers: canaries cannot go first")
    frame[LABEL] = labels
    frame[FAMILY] = [family_of(str(label)) for label in labels]
    return FlowCanaries(frame, labels, rng.integers(0, n_clients, m).astype(np.int64))


def with_canaries(data: PreparedData, canaries: FlowCanaries) -> tuple[PreparedData, np.ndarray]:
    """``data`` with the canary rows appended (training rows, each its own one-flow window) and their row
    indices int64 ``(m,)`` in the result. The test rows and their windows are unchanged."""
    from fedids.data.schema import FEATURES
    from fedids.task import PreparedData

    n, m, window = len(data.labels), len(canaries), data.windows.shape[1]
    frame = pd.concat([data.frame, canaries.frame], ignore_index=True)
    windows = np.full((m, window), -1, dtype=data.windows.dtype)
    windows[:, -1] = np.arange(n, n + m)
    augmented = PreparedData(
        frame=frame,
        features=np.concatenate([data.features, canaries.frame[list(FEATURES)].to_numpy(np.float32)]),
        windows=np.concatenate([data.windows, windows]),
        test_mask=np.concatenate([data.test_mask, np.zeros(m, dtype=bool)]),
        labels=np.concatenate([data.labels, canaries.labels.astype(data.labels.dtype)]),
    )
    return augmented, np.arange(n, n + m)


def add_included(
    parts: list[np.ndarray], canary_rows: np.ndarray, client: np.ndarray, included: np.ndarray
) -> list[np.ndarray]:
    """Each client's rows plus the included canaries assigned to it (``canary_rows``, ``client`` and
    ``included`` are ``(m,)``); excluded canaries join no client."""
    return [np.concatenate([rows, canary_rows[(client == c) & included]]) for c, rows in enumerate(parts)]


def score_flow_canaries(detector: Detector, canaries: FlowCanaries) -> np.ndarray:
    """Each canary's logit-scaled label confidence on ``detector`` (float64 ``(m,)``): its flow scaled by
    the detector's own scaler, as a one-flow window (padding before it)."""
    from fedids.data.schema import FEATURES

    scaled = detector.scaler.transform(canaries.frame[list(FEATURES)].to_numpy(np.float32))
    m = len(canaries)
    windows = np.full((m, detector.window), -1, dtype=np.int64)
    windows[:, -1] = np.arange(m)
    labels = detector.vocabulary.encode(canaries.labels)
    if (labels < 0).any():
        raise ValueError("a canary's label is not in the global model's vocabulary")
    return ev.compute_canary_scores(detector.model, scaled, windows, labels)


# --------------------------------------------------------------------------------------------------
# Running federations


@dataclass
class _Run:
    detector: Detector
    state: FederationState
    seconds: float


def _federate(data: PreparedData, parts: list[np.ndarray], config: FederationConfig, run_dir: Path) -> _Run:
    """One simulated federation (fresh HE keys for ``he`` modes) and its saved global model."""
    from fedids.pipelines.federate import run_federation

    run = run_federation(data, parts, config, run_dir, fresh_keys=True)
    detector = run.load_detector()
    if detector is None:
        raise RuntimeError(f"the federated run in {run_dir} saved no global model ({run.state.stopped})")
    return _Run(detector, run.state, run.seconds)


def _mode_config(mode: FederatedMode, config: FederatedAuditConfig, run_dir: Path) -> FederationConfig:
    from fedids.pipelines.federate import he_public_context

    return config.federation_config(mode, he_public_context(mode.privacy, run_dir / "keys"))


def accountant_epsilon(mode: FederatedMode, state: FederationState) -> float:
    """The epsilon the run's accountant reports for ``mode``'s mechanism (``inf`` without DP): client-level
    ``dp``: the final epsilon, calibration releases included; DP-SGD: the largest per-window epsilon the
    clients reported (the last round's includes the calibration releases)."""
    if mode.mechanism is None:
        return math.inf
    key = "epsilon" if mode.mechanism == "dp" else "dpsgd_epsilon"
    recorded = [h.get(key) for h in state.history]
    if mode.mechanism == "dp":
        recorded.append(state.calibration.get("epsilon"))
    values = [float(v) for v in recorded if v is not None]
    if not values:
        raise RuntimeError(f"mode {mode.name}: the run recorded no epsilon")
    return max(values)


def _shadow_scores(
    data: PreparedData,
    parts: list[np.ndarray],
    canaries: FlowCanaries,
    mode: FederatedMode,
    config: FederatedAuditConfig,
    run_dir: Path,
) -> np.ndarray:
    """Canary scores ``(shadows, m)`` on federations of ``mode`` over a random half of each client's real
    rows and no canary (offline LiRA)."""
    rows = []
    for k in range(config.audit.shadows):
        rng = np.random.default_rng([config.audit.seed, 2, k])
        half = [np.sort(rng.permutation(p)[: len(p) // 2]) for p in parts]
        shadow_dir = run_dir / f"shadow-{k}"
        run = _federate(data, half, _mode_config(mode, config, shadow_dir), shadow_dir)
        rows.append(score_flow_canaries(run.detector, canaries))
    return np.stack(rows)


def audit_federated_mode(
    mode: FederatedMode,
    data: PreparedData,
    parts: list[np.ndarray],
    canaries: FlowCanaries,
    config: FederatedAuditConfig,
    run_dir: Path,
    included: np.ndarray | None = None,
) -> ev.ModeAudit:
    """Federate in ``mode`` with the ``included`` canaries (default: fresh secret bits) in their clients'
    data, score every canary on the global model and audit it (one-run bound, AUC, offline LiRA).

    ``data`` already holds the canary rows (:func:`with_canaries`, at its end); ``parts`` are the clients'
    real rows only."""
    from fedids.pipelines.experiment.config import dp_against, dp_unit

    if included is None:
        included = ev.draw_inclusion(len(canaries))
    canary_rows = np.arange(len(data.labels) - len(canaries), len(data.labels))
    with_bits = add_included(parts, canary_rows, canaries.client, included)
    run = _federate(data, with_bits, _mode_config(mode, config, run_dir), run_dir)
    scores = score_flow_canaries(run.detector, canaries)
    lira, shadow_seconds = None, 0.0
    if config.audit.shadows:
        start = time.perf_counter()
        shadow = _shadow_scores(data, parts, canaries, mode, config, run_dir)
        _, lira = ev.compute_lira_offline(scores, shadow, included)
        shadow_seconds = time.perf_counter() - start
    a = config.audit
    return ev.ModeAudit(
        mode=mode.name,
        target_epsilon=mode.target_epsilon,
        accountant_epsilon=accountant_epsilon(mode, run.state),
        noise_multiplier=None,
        one_run=ev.compute_one_run_audit(scores, included, a.delta, a.confidence),
        auc=ev.compute_auc(scores, included),
        lira=lira,
        canary_accuracy=ev.compute_canary_accuracy(scores, included),
        train_seconds=run.seconds,
        shadow_seconds=shadow_seconds,
        extra={
            "federated": True,
            "privacy": mode.privacy,
            "dpsgd": mode.dpsgd,
            "dp_unit": dp_unit(mode.text),
            "dp_against": dp_against(mode.text),
            "rounds_completed": run.state.completed_round,
            "stopped": run.state.stopped,
            "macro_f1": _final_macro_f1(run.state),
        },
    )


def _final_macro_f1(state: FederationState) -> float | None:
    final = state.calibration.get("test") or (state.history[-1]["test"] if state.history else {})
    value = final.get("macro_f1")
    return None if value is None else float(value)


def federated_modes(texts: list[str], epsilons: list[float]) -> list[FederatedMode]:
    """The modes to audit: the control ``none`` first, then each of ``texts`` (``none``, ``secagg``,
    ``secagg+dp``, ``he+dpsgd``, ...): once when it has no DP, at each of ``epsilons`` when it has;
    duplicates dropped. ValueError for an unknown mode or a bad epsilon."""
    modes = [FederatedMode()]
    for text in texts:
        probe = FederatedMode.parse(text, 1.0 if _has_dp(text) else None)
        for eps in epsilons if probe.mechanism else [None]:
            mode = FederatedMode(probe.privacy, probe.dpsgd, eps, probe.distributed)
            if mode not in modes:
                modes.append(mode)
    return modes


def _has_dp(text: str) -> bool:
    return any(p.strip() in DP_MECHANISMS for p in text.split("+"))


def prepare_federated_audit(frame: pd.DataFrame, config: FederatedAuditConfig) -> PreparedData:
    """The flows of ``frame`` as a federation sees them: time order, per-host windows of
    ``config.window`` flows, the latest 30% held out for the server's test (macro-F1 only)."""
    from fedids.task import prepare

    data = prepare(frame, window=config.window)
    if len(np.unique(data.labels[data.train_rows])) < 2:
        raise ValueError("an audit needs at least two labels in the training rows")
    return data


def run_federated_audit(
    data: PreparedData,
    modes: list[FederatedMode],
    config: FederatedAuditConfig,
    work_dir: Path | None = None,
    on_mode: Callable[[ev.ModeAudit], None] | None = None,
) -> list[ev.ModeAudit]:
    """Audit every federated ``mode`` over ``data`` (:func:`prepare_federated_audit`) with the same
    partitions and canaries (from ``config.audit.seed``) and fresh secret inclusion bits per mode. Each
    mode's runs go to ``work_dir/<index>-<mode>`` (None: a temporary directory, removed at the end);
    ``on_mode`` gets each result as it is done."""
    import tempfile

    from fedids.federation.simulation import make_partitions

    if data.windows.shape[1] != config.window:
        raise ValueError(f"data windows of {data.windows.shape[1]} flows, config window {config.window}")
    parts = make_partitions(data, config.clients, config.partition, config.audit.seed, config.segment)
    parts = [p for p in parts if len(p)]
    rng = np.random.default_rng([config.audit.seed, 0])
    canaries = make_flow_canaries(data, config.audit.canaries, len(parts), rng, config.audit.canary_scale)
    augmented, _ = with_canaries(data, canaries)
    results = []
    with tempfile.TemporaryDirectory(prefix="fedids-audit-") as temporary:
        base = Path(work_dir) if work_dir is not None else Path(temporary)
        for i, mode in enumerate(modes):
            run_dir = base / f"{i}-{mode.text.replace('+', '-')}"
            if mode.target_epsilon is not None:
                run_dir = run_dir.with_name(f"{run_dir.name}-eps{mode.target_epsilon:g}")
            results.append(audit_federated_mode(mode, augmented, parts, canaries, config, run_dir))
            if on_mode is not None:
                on_mode(results[-1])
    return results
