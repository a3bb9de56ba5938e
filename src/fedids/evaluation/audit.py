"""Canary-based privacy auditing: an empirical lower bound on epsilon that a leaky model cannot pass.

The membership attacks of :mod:`fedids.evaluation.mia` score ordinary flows, which a detector barely
memorises, so they find nothing even without DP and cannot show that DP protects anything. This module
audits with *canaries*: crafted flow windows that a model can only get right by memorising them.

How an audit runs (:func:`run_audit`)
-------------------------------------
1. ``m`` canary windows are crafted (:func:`make_canaries`): ``window`` flows whose scaled features are
   independent ``N(0, scale**2)`` draws (out of distribution: real flow features are strongly
   correlated) and a label drawn uniformly from the model's classes, so the label cannot be predicted
   from the features. Canaries are crafted in the scaled feature space and appended after scaling; the
   scaler and class weights are computed from the real rows only, so they do not depend on which
   canaries are included.
2. Each canary is included in the training rows independently with probability 1/2. The inclusion bits
   are the audit's secret and come from ``secrets`` (the OS's cryptographic source), never from a seed.
3. The model is trained once per mode (plain, or DP-SGD at a target epsilon) on the real rows plus the
   included canaries, with the same hyper-parameters.
4. Each canary is scored (:func:`compute_canary_scores`) by the logit-scaled confidence of its label,
   ``log p(label) - log(1 - p(label))`` (the statistic LiRA uses), computed from the logits.
5. **One-run audit** (Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run",
   NeurIPS 2023; arXiv:2305.08846): guess "included" for the ``k+`` highest scores and "excluded" for
   the ``k-`` lowest, abstain on the rest; with ``r = k+ + k-`` guesses of which ``v`` are right, an
   (epsilon, delta)-DP algorithm gives at most ``P[Binomial(r, e^eps / (1 + e^eps)) >= v]`` plus a
   delta term (their Theorem 5.2 / Corollary 5.4, the p-value of :func:`p_value_one_run`, which is
   their Appendix D code). :func:`epsilon_lower_bound` returns the largest epsilon that this rejects
   at the given confidence. Several ``(k+, k-)`` choices are tried and the confidence is split between
   them (Bonferroni), so the reported maximum still holds at the stated confidence.
6. **LiRA** (Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022), in
   its *offline* form (their Sec. VI-B): ``shadows`` models are trained like the target (same mode,
   same hyper-parameters) on random halves of the real rows and *no* canary; each canary's score on
   them estimates its non-member distribution (per-canary mean, standard deviation pooled over all
   canaries, as the paper advises for few shadows); the attack statistic is the target's score in
   those standard deviations above that mean. Reported: AUC and TPR at low FPR (:class:`LiraResult`).

Guarantees and limits
---------------------
* The bound is a *lower* bound at the stated confidence (default 0.95): if the training algorithm were
  (epsilon, delta)-DP for every epsilon up to the bound, this outcome would have had probability below
  ``1 - confidence``. It says nothing about how private a model *is*; it can only show that a claimed
  epsilon is false. For a correct DP-SGD the bound stays at or below the accountant's epsilon.
* The unit audited is one flow window (one training row), DP-SGD's neighbouring relation
  (:mod:`fedids.privacy.dpsgd`). Canaries are in-the-input-space, black-box (scores from outputs
  only); with ``m`` canaries the bound cannot exceed what ``m`` perfect guesses give (about 4.4 for 500
  canaries at 0.95 with the default guess grid), however leaky the model.
* The number of training rows (real rows plus included canaries) sets DP-SGD's sample rate; like
  Opacus, fedids treats it as public. It reveals how many canaries were included, not which.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.stats
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from fedids.model.gru import GRUDetector
from fedids.model.train import TrainConfig, compute_class_weights, fit, forward_batches

DEFAULT_CONFIDENCE = 0.95
# Guess counts tried by the one-run audit, as fractions of the canaries: k+ from the first tuple,
# k- from the second (0 = guess "included" only). 4 x 5 = 20 tests share the confidence.
GUESS_IN_FRACTIONS = (0.05, 0.1, 0.25, 0.5)
GUESS_OUT_FRACTIONS = (0.0, 0.05, 0.1, 0.25, 0.5)
LOW_FPRS = (0.01, 0.05)
NO_DP = "none"
DPSGD = "dpsgd"


# --------------------------------------------------------------------------------------------------
# The one-run bound (pure functions)


def p_value_one_run(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Probability of ``v`` or more correct guesses out of ``r`` under an (epsilon, delta)-DP algorithm.

    Steinke, Nasr and Jagielski (NeurIPS 2023), Theorem 5.2 with Corollary 5.4 (their Appendix D's
    ``p_value_DP_audit``): ``P[Binomial(r, q) >= v] + 2 m delta max_{1<=i<=v} P[v > Binomial(r, q) >=
    v - i] / i`` with ``q = e^eps / (1 + e^eps)``, clipped to 1.

    Parameters
    ----------
    m : canaries, each included independently with probability 1/2.
    r : guesses made (abstentions excluded), ``0 <= v <= r <= m``.
    v : correct guesses.
    epsilon, delta : the DP claim under test (``epsilon >= 0``, ``0 <= delta <= 1``).
    """
    if not (0 <= v <= r <= m) or epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(
            f"need 0 <= v <= r <= m, epsilon >= 0, delta in [0, 1]; got {m, r, v, epsilon, delta}"
        )
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(scipy.stats.binom.sf(v - 1, r, q))
    alpha = 0.0
    if delta > 0 and v > 0:
        i = np.arange(1, v + 1)
        alpha = float(np.max(np.cumsum(scipy.stats.binom.pmf(v - i, r, q)) / i))
    return min(beta + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(
    m: int, r: int, v: int, delta: float, confidence: float = DEFAULT_CONFIDENCE, *, iterations: int = 40
) -> float:
    """The largest epsilon that ``v`` correct guesses out of ``r`` (``m`` canaries) refute.

    The algorithm is not (epsilon, delta)-DP for any epsilon below the returned value, at ``confidence``
    (Steinke et al.'s ``get_eps_audit``: the p-value of :func:`p_value_one_run` grows with epsilon; the
    bound is the bisection's low end, i.e. conservative). 0 when nothing is refuted (e.g. ``r = 0``, or
    guesses no better than chance).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    level = 1.0 - confidence
    if p_value_one_run(m, r, v, 0.0, delta) >= level:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value_one_run(m, r, v, hi, delta) < level:
        lo, hi = hi, hi * 2
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value_one_run(m, r, v, mid, delta) < level else (lo, mid)
    return lo


@dataclass(frozen=True)
class OneRunAudit:
    """Result of :func:`compute_one_run_audit`: the best bound and the guesses that gave it.

    ``epsilon_lower_bound`` holds at ``confidence`` for the whole family of ``tests`` guess counts
    (each was tested at ``1 - (1 - confidence) / tests``). ``guesses`` = ``k_plus + k_minus``.
    """

    epsilon_lower_bound: float
    canaries: int
    included: int
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    confidence: float
    delta: float
    tests: int


def _guess_counts(m: int) -> list[tuple[int, int]]:
    pairs = {
        (max(1, round(fp * m)), round(fm * m)) for fp in GUESS_IN_FRACTIONS for fm in GUESS_OUT_FRACTIONS
    }
    return sorted((kp, km) for kp, km in pairs if kp + km <= m)


def compute_one_run_audit(
    scores: np.ndarray, included: np.ndarray, delta: float, confidence: float = DEFAULT_CONFIDENCE
) -> OneRunAudit:
    """One-run audit of canary ``scores`` float ``(m,)`` (higher = more likely included) against the
    secret ``included`` bool ``(m,)``: guess "in" for the top ``k+``, "out" for the bottom ``k-``."""
    scores, included = np.asarray(scores, dtype=np.float64), np.asarray(included, dtype=bool)
    if scores.shape != included.shape or scores.ndim != 1 or len(scores) < 2:
        raise ValueError(f"scores {scores.shape} and included {included.shape} must be (m,), m >= 2")
    if not np.isfinite(scores).all():
        raise ValueError("canary scores must be finite")
    m = len(scores)
    order = np.argsort(-scores, kind="stable")
    ranked = included[order]
    pairs = _guess_counts(m)
    per_test = 1.0 - (1.0 - confidence) / len(pairs)
    results = []
    for kp, km in pairs:
        correct = int(ranked[:kp].sum()) + (int((~ranked[m - km :]).sum()) if km else 0)
        results.append((epsilon_lower_bound(m, kp + km, correct, delta, per_test), kp + km, kp, km, correct))
    # The largest bound; among equal bounds (e.g. all 0), the test with the most guesses.
    eps, _, kp, km, correct = max(results)
    return OneRunAudit(
        epsilon_lower_bound=eps,
        canaries=m,
        included=int(included.sum()),
        k_plus=kp,
        k_minus=km,
        guesses=kp + km,
        correct=correct,
        confidence=confidence,
        delta=delta,
        tests=len(pairs),
    )


# --------------------------------------------------------------------------------------------------
# Attack metrics


def compute_auc(scores: np.ndarray, included: np.ndarray) -> float:
    """ROC AUC of ``scores`` for included (positive) versus excluded canaries; NaN if one side is empty."""
    included = np.asarray(included, dtype=bool)
    if included.all() or not included.any():
        return float("nan")
    return float(roc_auc_score(included, scores))


def tpr_at_fpr(scores: np.ndarray, included: np.ndarray, fpr: float) -> float:
    """The largest true-positive rate at a threshold whose false-positive rate is at most ``fpr``."""
    included = np.asarray(included, dtype=bool)
    if included.all() or not included.any():
        return float("nan")
    f, t, _ = roc_curve(included, scores)
    return float(t[f <= fpr + 1e-12].max())


def compute_canary_accuracy(scores: np.ndarray, included: np.ndarray) -> dict[str, float]:
    """Share of included / excluded canaries whose label the model predicts (score > 0: ``p(label) >
    1/2``, so the label is the top class), ``{"included": ..., "excluded": ...}`` (NaN for an empty side):
    a check that the canaries are learnt."""
    right, included = np.asarray(scores) > 0, np.asarray(included, dtype=bool)
    return {
        "included": float(right[included].mean()) if included.any() else float("nan"),
        "excluded": float(right[~included].mean()) if (~included).any() else float("nan"),
    }


@dataclass(frozen=True)
class LiraResult:
    """Offline LiRA on the canaries: ``auc``, ``tpr_at_fpr`` {fpr: tpr} and the ``shadows`` used.
    FPR resolution is ``1 / excluded``: TPR at 1% FPR needs 100 or more excluded canaries to mean much."""

    auc: float
    tpr_at_fpr: dict[float, float]
    shadows: int


def compute_lira_offline(
    target_scores: np.ndarray, shadow_scores: np.ndarray, included: np.ndarray
) -> tuple[np.ndarray, LiraResult]:
    """Offline LiRA statistic per canary and its metrics.

    Parameters
    ----------
    target_scores : float ``(m,)``, the canaries' scores on the audited model.
    shadow_scores : float ``(k, m)``, their scores on ``k >= 2`` shadow models trained without canaries.
    included : bool ``(m,)``, the secret inclusion bits (used for the metrics only).

    Returns
    -------
    ``(statistic, result)``: ``statistic`` float ``(m,)`` = (target - per-canary shadow mean) / pooled
    shadow standard deviation (higher = more likely a member; monotone in the one-sided Gaussian
    likelihood ratio of the offline attack).
    """
    shadow_scores = np.asarray(shadow_scores, dtype=np.float64)
    if shadow_scores.ndim != 2 or shadow_scores.shape[0] < 2 or shadow_scores.shape[1] != len(target_scores):
        raise ValueError(f"shadow scores must be (k >= 2, {len(target_scores)}), got {shadow_scores.shape}")
    mean = shadow_scores.mean(axis=0)
    std = max(float(np.sqrt(((shadow_scores - mean) ** 2).sum() / (shadow_scores.size - len(mean)))), 1e-6)
    statistic = (np.asarray(target_scores, dtype=np.float64) - mean) / std
    result = LiraResult(
        auc=compute_auc(statistic, included),
        tpr_at_fpr={f: tpr_at_fpr(statistic, included, f) for f in LOW_FPRS},
        shadows=int(shadow_scores.shape[0]),
    )
    return statistic, result


# --------------------------------------------------------------------------------------------------
# Canaries


def draw_inclusion(m: int) -> np.ndarray:
    """``m`` independent fair bits, bool ``(m,)``, from the OS's cryptographic source (``secrets``):
    the audit's secret, which nobody can re-derive from a seed."""
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    raw = np.frombuffer(secrets.token_bytes(m), dtype=np.uint8)
    return (raw & 1).astype(bool)


@dataclass(frozen=True)
class Canaries:
    """Crafted flow windows: ``features`` float32 ``(m * window, n_features)`` scaled-space rows,
    ``windows`` int64 ``(m, window)`` row indices into ``features`` and ``labels`` int64 ``(m,)``."""

    features: np.ndarray
    windows: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def make_canaries(
    m: int, n_features: int, window: int, n_classes: int, rng: np.random.Generator, scale: float = 1.0
) -> Canaries:
    """``m`` canaries of ``window`` flows each: i.i.d. ``N(0, scale**2)`` scaled features (no padding)
    and uniform labels in ``[0, n_classes)``. Their features and labels need not be secret."""
    if m < 2 or window < 1 or n_classes < 2 or not scale > 0:
        raise ValueError("need m >= 2, window >= 1, n_classes >= 2 and scale > 0")
    features = (rng.standard_normal((m * window, n_features)) * scale).astype(np.float32)
    windows = np.arange(m * window, dtype=np.int64).reshape(m, window)
    return Canaries(features, windows, rng.integers(0, n_classes, m).astype(np.int64))


def compute_canary_scores(
    model: GRUDetector, scaled: np.ndarray, windows: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """Logit-scaled confidence of each window's label, ``log p(y) - log(1 - p(y))``, float64 ``(n,)``,
    computed stably from the logits as ``logit_y - logsumexp(other logits)``.

    ``scaled`` float32 ``(n_flows, n_features)``; ``windows`` int64 ``(n, window)`` into ``scaled``;
    ``labels`` int64 ``(n,)`` class indices."""
    model.eval()
    logits = torch.from_numpy(forward_batches(model, scaled, windows, model.n_classes)).double()
    idx = torch.as_tensor(labels, dtype=torch.int64)
    own = logits.gather(1, idx[:, None]).squeeze(1)
    others = logits.scatter(1, idx[:, None], float("-inf"))
    return (own - torch.logsumexp(others, dim=1)).numpy()


# --------------------------------------------------------------------------------------------------
# Training with canaries


@dataclass(frozen=True)
class AuditMode:
    """A training mode to audit: ``mechanism`` ``"none"`` (plain training, epsilon infinite) or
    ``"dpsgd"`` (DP-SGD per flow window, noise calibrated to ``target_epsilon`` at the audit's delta)."""

    mechanism: str
    target_epsilon: float | None = None

    def __post_init__(self) -> None:
        if self.mechanism == NO_DP and self.target_epsilon is None:
            return
        if self.mechanism != DPSGD or self.target_epsilon is None:
            raise ValueError(f"a mode is {NO_DP!r}, or {DPSGD!r} with a target epsilon; got {self}")
        if not 0 < self.target_epsilon <= 1000:
            raise ValueError(f"target epsilon must be in (0, 1000], got {self.target_epsilon}")

    @property
    def name(self) -> str:
        return NO_DP if self.mechanism == NO_DP else f"{DPSGD} eps={self.target_epsilon:g}"


# Inclusive ranges of AuditConfig's fields (NaN fails every comparison, so it is refused too); the
# open ends (lr, clip_norm, delta, confidence, canary_scale > 0) use the smallest positive float.
_TINY = 5e-324
_CONFIG_RANGES: dict[str, tuple[float, float]] = {
    "canaries": (2, 100_000),
    "canary_scale": (_TINY, 100),
    "epochs": (1, 10_000),
    "batch_size": (1, 1_000_000),
    "lr": (_TINY, 10),
    "hidden": (1, 1024),
    "clip_norm": (_TINY, 1e6),
    "shadows": (0, 64),
    "delta": (_TINY, 0.5),
    "confidence": (0.5, 1 - 1e-12),
    "seed": (0, 2**32 - 1),
}


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit run depends on besides the data and the modes.

    ``canaries``: m, 2 to 100,000; ``canary_scale``: standard deviation of canary features in the
    scaled space; ``epochs``, ``batch_size`` (expected batch under DP-SGD), ``lr``, ``hidden``: training
    of the target and shadow models (weighted cross-entropy, Adam); ``clip_norm``: DP-SGD's per-window
    gradient L2 bound; ``shadows``: offline-LiRA shadow models (0 = no LiRA, else >= 2); ``delta``: of
    the accountant and of the audited claim; ``confidence`` of the bound; ``seed``: model
    initialisation, canary features and labels, shadow subsets (never the inclusion bits or DP noise).
    """

    canaries: int = 500
    canary_scale: float = 1.0
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    hidden: int = 32
    clip_norm: float = 1.0
    shadows: int = 4
    delta: float = 1e-5
    confidence: float = DEFAULT_CONFIDENCE
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [
            f"{name}={getattr(self, name)!r} (allowed {lo:g}..{hi:g})"
            for name, (lo, hi) in _CONFIG_RANGES.items()
            if not lo <= getattr(self, name) <= hi
        ]
        if self.shadows == 1:
            bad.append("shadows=1 (0 for no LiRA, else at least 2)")
        if bad:
            raise ValueError(f"audit settings out of range: {', '.join(bad)}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, loss="weighted_ce", seed=self.seed
        )


@dataclass(frozen=True)
class AuditData:
    """Real training rows in model space: ``scaled`` float32 ``(n_flows, n_features)``, ``windows``
    int64 ``(n_rows, window)`` into ``scaled`` (-1 = padding), ``targets`` int64 ``(n_rows,)`` in
    ``[0, n_classes)``."""

    scaled: np.ndarray
    windows: np.ndarray
    targets: np.ndarray
    n_classes: int


@dataclass(frozen=True)
class ModeAudit:
    """One mode's audit. ``accountant_epsilon`` is ``inf`` without DP; ``auc`` is the raw canary score's
    attack AUC; ``lira`` is None when no shadows were trained; ``canary_accuracy`` gives the share of
    included / excluded canaries whose label the model predicts (a check that the canaries are learnt)."""

    mode: str
    target_epsilon: float | None
    accountant_epsilon: float
    noise_multiplier: float | None
    one_run: OneRunAudit
    auc: float
    lira: LiraResult | None
    canary_accuracy: dict[str, float]
    train_seconds: float
    shadow_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: infinite epsilon becomes None (no DP), float keys become strings."""
        out = asdict(self)
        out["accountant_epsilon"] = None if math.isinf(self.accountant_epsilon) else self.accountant_epsilon
        if self.lira is not None:
            out["lira"]["tpr_at_fpr"] = {f"{k:g}": v for k, v in self.lira.tpr_at_fpr.items()}
        return out


def prepare_audit_data(frame, window: int) -> AuditData:  # noqa: ANN001 - a flow DataFrame
    """Every flow of ``frame`` as a training row: time order, per-host windows, scaler and labels fitted
    on all of them (an audit trains on everything; there is no test split)."""
    from fedids.data.schema import FEATURES, LABEL
    from fedids.data.windows import compute_window_indices, host_keys, sort_by_time
    from fedids.task import fit_preprocessing

    frame = sort_by_time(frame)
    features = frame[list(FEATURES)].to_numpy(dtype=np.float32)
    labels = frame[LABEL].astype(str).to_numpy()
    scaler, vocabulary = fit_preprocessing(features, labels)
    if len(vocabulary) < 2:
        raise ValueError("an audit needs at least two labels in the data")
    windows = compute_window_indices(host_keys(frame), window)
    return AuditData(scaler.transform(features), windows, vocabulary.encode(labels), len(vocabulary))


def _train(
    mode: AuditMode,
    scaled: np.ndarray,
    windows: np.ndarray,
    targets: np.ndarray,
    class_weights: np.ndarray,
    config: AuditConfig,
    seed: int,
) -> tuple[GRUDetector, float, float | None, float]:
    """A fresh GRU trained in ``mode``: ``(model, accountant epsilon, noise multiplier, seconds)``."""
    from fedids.privacy import dpsgd

    torch.manual_seed(seed)
    model = GRUDetector(scaled.shape[1] + 1, len(class_weights), config.hidden)
    train_config = config.train_config()
    start = time.perf_counter()
    if mode.mechanism == NO_DP:
        fit(model, scaled, windows, targets, train_config, class_weights=class_weights)
        return model, math.inf, None, time.perf_counter() - start
    assert mode.target_epsilon is not None
    n = len(targets)
    steps = config.epochs * dpsgd.steps_per_epoch(n, config.batch_size)
    noise = dpsgd.calibrate_noise(
        mode.target_epsilon, config.delta, dpsgd.sample_rate(n, config.batch_size), steps
    )
    result = dpsgd.fit_dpsgd(
        model,
        scaled,
        windows,
        targets,
        train_config,
        noise_multiplier=noise,
        max_grad_norm=config.clip_norm,
        target_delta=config.delta,
        class_weights=class_weights,
    )
    return model, result.epsilon, noise, time.perf_counter() - start


def _shadow_scores(
    mode: AuditMode, data: AuditData, canaries: Canaries, class_weights: np.ndarray, config: AuditConfig
) -> np.ndarray:
    """Canary scores ``(shadows, m)`` on shadow models trained like the target on random halves of the
    real rows and no canary (offline LiRA)."""
    scaled = np.concatenate([data.scaled, canaries.features])
    canary_windows = canaries.windows + len(data.scaled)
    rows = []
    for k in range(config.shadows):
        rng = np.random.default_rng([config.seed, 1 + k])
        half = rng.permutation(len(data.targets))[: len(data.targets) // 2]
        model, *_ = _train(
            mode,
            data.scaled,
            data.windows[half],
            data.targets[half],
            class_weights,
            config,
            config.seed + 1 + k,
        )
        rows.append(compute_canary_scores(model, scaled, canary_windows, canaries.labels))
    return np.stack(rows)


def audit_mode(
    mode: AuditMode,
    data: AuditData,
    canaries: Canaries,
    config: AuditConfig,
    included: np.ndarray | None = None,
) -> ModeAudit:
    """Train once in ``mode`` on ``data`` plus the ``included`` canaries (default: fresh secret bits from
    :func:`draw_inclusion`), score every canary and audit (one-run bound, AUC, offline LiRA)."""
    if included is None:
        included = draw_inclusion(len(canaries))
    # Class weights from the real rows only: they must not depend on which canaries are included.
    class_weights = compute_class_weights(np.bincount(data.targets, minlength=data.n_classes))
    scaled = np.concatenate([data.scaled, canaries.features])
    canary_windows = canaries.windows + len(data.scaled)
    windows = np.concatenate([data.windows, canary_windows[included]])
    targets = np.concatenate([data.targets, canaries.labels[included]])
    model, epsilon, noise, seconds = _train(
        mode, scaled, windows, targets, class_weights, config, config.seed
    )
    scores = compute_canary_scores(model, scaled, canary_windows, canaries.labels)
    lira, shadow_seconds = None, 0.0
    if config.shadows:
        start = time.perf_counter()
        shadow = _shadow_scores(mode, data, canaries, class_weights, config)
        _, lira = compute_lira_offline(scores, shadow, included)
        shadow_seconds = time.perf_counter() - start
    return ModeAudit(
        mode=mode.name,
        target_epsilon=mode.target_epsilon,
        accountant_epsilon=epsilon,
        noise_multiplier=noise,
        one_run=compute_one_run_audit(scores, included, config.delta, config.confidence),
        auc=compute_auc(scores, included),
        lira=lira,
        canary_accuracy=compute_canary_accuracy(scores, included),
        train_seconds=seconds,
        shadow_seconds=shadow_seconds,
    )


def run_audit(
    data: AuditData,
    modes: list[AuditMode],
    config: AuditConfig,
    on_mode: Callable[[ModeAudit], None] | None = None,
) -> list[ModeAudit]:
    """Audit every mode with the same canaries (features and labels from ``config.seed``) and fresh
    secret inclusion bits per mode; ``on_mode`` is called with each mode's result as it is done."""
    window = data.windows.shape[1]
    rng = np.random.default_rng([config.seed, 0])
    canaries = make_canaries(
        config.canaries, data.scaled.shape[1], window, data.n_classes, rng, config.canary_scale
    )
    results = []
    for mode in modes:
        results.append(audit_mode(mode, data, canaries, config))
        if on_mode is not None:
            on_mode(results[-1])
    return results
