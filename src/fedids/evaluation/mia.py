"""Membership inference against a trained detector: does the model reveal which flows it was trained on?

What is measured
----------------
The *examples* are scored flows: a flow together with the window of earlier flows of the same host that
the model sees with it (:class:`Examples`), and its true label. *Members* are exactly the examples the
model was trained on: for a federated model, the windows each participating client built from its own
partition and trained on (all but its local validation slice, see :func:`client_examples`).
*Non-members* are examples of the same kind the model never trained on (in ``fedids experiment``: the
flows of a client that took no part in training, drawn from the same time period and partitioning).

Both sets are sampled to the same size **per class and host** (:func:`balanced_indices`): for every
(label, host) pair present in both sets (label known to the model), the same number of members and
non-members. Without it the attack scores by recognising the pools rather than membership: different
label mixes, or different hosts (measured on the synthetic default: the withheld non-members came from
37 hosts, the members from 265, and *untrained* GRUs separated the two class-balanced pools with
advantage up to 0.10 against a chance level of 0.05; balanced by class and host, 0.01-0.04).

Two attacks, both *black-box* (they see the model's output probabilities and the true label only):

* **loss threshold** (Yeom et al., CSF 2018): score = minus the cross-entropy loss of the true label,
  ``log p(true label | window)``; a low loss suggests a member.
* **shadow models** (Shokri et al., S&P 2017): ``k`` shadow GRUs are trained, like the target, on
  disjoint parts of a pool of examples the target did not train on; each shadow's part is split at
  random into its own members (trained on) and non-members. An attack classifier (scikit-learn
  gradient boosting) learns to tell shadow members from shadow non-members from class-agnostic output
  features: the probability of the true label, the three largest probabilities (sorted) and the
  entropy. It is then applied to the target's members and non-members.

Reported for each attack (:class:`AttackResult`) on the balanced evaluation set:

* ``auc``: ROC AUC of the attack score for member-vs-non-member (0.5 = chance);
* ``advantage``: ``max_t (TPR(t) - FPR(t))`` over all thresholds ``t`` of the score: the membership
  advantage of Yeom et al. for the *best* threshold, chosen with knowledge of the true membership, so
  it is an upper bound on what this score gives any threshold attacker (optimistic for the attacker);
* ``advantage_at_threshold``: TPR - FPR at a threshold the attacker can set without that knowledge
  (loss attack: Yeom's threshold, the members' mean training loss; shadow attack: attack-classifier
  probability 0.5);
* ``accuracy``: balanced accuracy of the best-threshold attack, ``(1 + advantage) / 2``, which is the
  "attack success rate" on a 50/50 member/non-member set (0.5 = guessing);
* ``chance_auc_95``, ``chance_advantage_95``: what a score with no membership information reaches on the
  same set (95th percentile over shuffled membership labels). The best-threshold advantage is biased
  upwards on a finite set, so compare it with this chance level, not with 0.

The paper claims "<15% success"; it does not define success. Read it as ``advantage < 0.15`` (15 points
above guessing), or as an attack accuracy of 0.5 + 0.15 / 2 = 0.575 at most.

All functions are pure apart from PyTorch training inside :func:`shadow_model_attack`; randomness comes
from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score, roc_curve

from fedids.data.windows import host_keys, map_to_rows
from fedids.model.artifacts import Detector
from fedids.model.train import TrainConfig, fit
from fedids.task import PreparedData, fit_preprocessing, new_model, predict_labels, prepare_client

_EPS = 1e-12


@dataclass(frozen=True)
class Examples:
    """Scored flows: ``windows`` int64 ``(n, window)`` row indices into a feature matrix (``-1`` =
    padding, last column = the scored flow), ``labels`` str ``(n,)`` and optionally ``hosts`` str
    ``(n,)``, the host of each scored flow (balancing strata; ``None`` = balance by label only)."""

    windows: np.ndarray
    labels: np.ndarray
    hosts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.windows.ndim != 2 or len(self.windows) != len(self.labels):
            raise ValueError(f"windows {self.windows.shape} and labels {self.labels.shape} do not match")
        if self.hosts is not None and len(self.hosts) != len(self.labels):
            raise ValueError(f"hosts {self.hosts.shape} and labels {self.labels.shape} do not match")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> Examples:
        return Examples(
            self.windows[index], self.labels[index], None if self.hosts is None else self.hosts[index]
        )

    @staticmethod
    def concat(parts: list[Examples], window: int) -> Examples:
        if not parts:
            return Examples(np.zeros((0, window), np.int64), np.zeros(0, dtype=object))
        hosts = None if any(p.hosts is None for p in parts) else np.concatenate([p.hosts for p in parts])
        return Examples(
            np.concatenate([p.windows for p in parts]), np.concatenate([p.labels for p in parts]), hosts
        )


def client_examples(
    data: PreparedData, rows: np.ndarray, window: int, val_fraction: float
) -> tuple[Examples, Examples]:
    """The examples a federated client builds from its partition ``rows`` (indices into ``data``, whose
    time order the partition keeps): :func:`fedids.task.prepare_client` on its own flows, as the client
    does (each window from its own flows of the same host; its local validation slice, the benign flows
    among each label's latest ``val_fraction``, never trained on). ``val_fraction = 0`` gives every flow to
    training (a client that did not take part has no split: use its first element).

    Returns
    -------
    ``(train, validation)``: windows as row indices into ``data`` (``-1`` for padding).
    """
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    local = prepare_client(data.frame.iloc[rows], window=window, validation_fraction=val_fraction)
    windows = map_to_rows(local.windows, rows)
    hosts = np.asarray(host_keys(local.frame)).astype(str)
    train, validation = local.train_rows, local.test_rows
    return (
        Examples(windows[train], local.labels[train], hosts[train]),
        Examples(windows[validation], local.labels[validation], hosts[validation]),
    )


def server_examples(data: PreparedData, rows: np.ndarray) -> Examples:
    """Examples of ``rows`` with the windows the server evaluates with (built over all flows)."""
    rows = np.asarray(rows, dtype=np.int64)
    hosts = np.asarray(host_keys(data.frame.iloc[rows])).astype(str)
    return Examples(data.windows[rows], data.labels[rows], hosts)


@dataclass(frozen=True)
class ExampleScores:
    """Model outputs for examples: ``proba`` float32 ``(n, n_classes)``, ``true_index`` int64 ``(n,)``
    (``-1`` for a label outside the model's vocabulary) and ``loss`` float64 ``(n,)``, the cross-entropy
    ``-log p(true label)`` (NaN where the label is unknown)."""

    proba: np.ndarray
    true_index: np.ndarray
    loss: np.ndarray

    @property
    def known(self) -> np.ndarray:
        return self.true_index >= 0


def score_examples(detector: Detector, features: np.ndarray, examples: Examples) -> ExampleScores:
    """Score ``examples`` with ``detector``; ``features`` is the raw float32 ``(n_flows, 78)`` matrix
    the windows index into."""
    if len(examples) == 0:
        n_classes = len(detector.vocabulary)
        return ExampleScores(np.zeros((0, n_classes), np.float32), np.zeros(0, np.int64), np.zeros(0))
    _, proba = predict_labels(detector, features, examples.windows)
    true_index = detector.vocabulary.encode(examples.labels)
    p_true = proba[np.arange(len(proba)), np.maximum(true_index, 0)].astype(np.float64)
    loss = np.where(true_index >= 0, -np.log(np.maximum(p_true, _EPS)), np.nan)
    return ExampleScores(proba=proba, true_index=true_index, loss=loss)


def balanced_indices(
    member_labels: np.ndarray,
    nonmember_labels: np.ndarray,
    rng: np.random.Generator,
    max_per_class: int | None = None,
    member_hosts: np.ndarray | None = None,
    nonmember_hosts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Equal numbers of members and non-members per class, and per host within a class when hosts are given.

    For each stratum (label, or label and host) in both sets, ``min(count in members, count in
    non-members)`` indices are drawn without replacement from each side and paired; a class with more
    pairs than ``max_per_class`` keeps a random ``max_per_class`` of its pairs, so the host balance
    survives the cap.

    Returns
    -------
    ``(member_idx, nonmember_idx, per_class)``: int64 index arrays of equal length and the number of
    pairs of each label.
    """
    member_labels = np.asarray(member_labels).astype(str)
    nonmember_labels = np.asarray(nonmember_labels).astype(str)
    if (member_hosts is None) != (nonmember_hosts is None):
        raise ValueError("give hosts for both members and non-members, or for neither")
    m_host = (
        np.zeros(len(member_labels), str) if member_hosts is None else np.asarray(member_hosts).astype(str)
    )
    n_host = (
        np.zeros(len(nonmember_labels), str)
        if nonmember_hosts is None
        else np.asarray(nonmember_hosts).astype(str)
    )
    m_idx, n_idx, per_class = [], [], {}
    for label in sorted(set(member_labels) & set(nonmember_labels)):
        m_in, n_in = member_labels == label, nonmember_labels == label
        pairs_m, pairs_n = [], []
        for host in sorted(set(m_host[m_in]) & set(n_host[n_in])):
            m = np.flatnonzero(m_in & (m_host == host))
            n = np.flatnonzero(n_in & (n_host == host))
            k = min(len(m), len(n))
            pairs_m.append(rng.choice(m, size=k, replace=False))
            pairs_n.append(rng.choice(n, size=k, replace=False))
        if not pairs_m:
            continue
        pm, pn = np.concatenate(pairs_m), np.concatenate(pairs_n)
        if max_per_class is not None and len(pm) > max_per_class:
            keep = rng.choice(len(pm), size=max_per_class, replace=False)
            pm, pn = pm[keep], pn[keep]
        if len(pm) == 0:
            continue
        m_idx.append(pm)
        n_idx.append(pn)
        per_class[str(label)] = int(len(pm))
    if not per_class:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), {}
    return np.sort(np.concatenate(m_idx)), np.sort(np.concatenate(n_idx)), per_class


@dataclass(frozen=True)
class AttackResult:
    """Outcome of one membership-inference attack (definitions in the module docstring).

    ``tpr``/``fpr``/``threshold`` are those of the best threshold; ``members`` = ``non_members`` is the
    size of each side of the balanced evaluation set, ``per_class`` its composition.
    ``chance_auc_95`` and ``chance_advantage_95`` are the 95th percentiles of AUC and best-threshold
    advantage when the member/non-member labels are shuffled (a score that carries no membership
    information): on a finite set the best-threshold advantage of pure chance is well above 0 (its 95th
    percentile is about the two-sample Kolmogorov-Smirnov critical value ``1.36 * sqrt(2 / n)`` at n
    examples per side), so an attack is only shown to beat guessing where it exceeds these.
    """

    attack: str
    auc: float
    advantage: float
    accuracy: float
    tpr: float
    fpr: float
    threshold: float
    advantage_at_threshold: float
    members: int
    non_members: int
    per_class: dict[str, int] = field(default_factory=dict)
    chance_auc_95: float = float("nan")
    chance_advantage_95: float = float("nan")

    def as_dict(self) -> dict:
        return asdict(self)


def _best_advantage(y: np.ndarray, s: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.max(tpr - fpr))


def compute_attack_metrics(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    attack: str,
    fixed_threshold: float,
    per_class: dict[str, int] | None = None,
    rng: np.random.Generator | None = None,
    permutations: int = 200,
) -> AttackResult:
    """AUC, best-threshold advantage and advantage at ``fixed_threshold`` of an attack score.

    Parameters
    ----------
    member_scores, nonmember_scores : float ``(n_m,)``, ``(n_n,)``; higher = "member". Each side needs at
        least one example.
    fixed_threshold : predict "member" when ``score >= fixed_threshold``.
    rng, permutations : with a generator, the chance levels (``chance_*_95``) from ``permutations``
        shuffles of the membership labels; NaN without one.
    """
    member_scores = np.asarray(member_scores, dtype=np.float64)
    nonmember_scores = np.asarray(nonmember_scores, dtype=np.float64)
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        raise ValueError("an attack needs at least one member and one non-member")
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    s = np.r_[member_scores, nonmember_scores]
    fpr, tpr, thresholds = roc_curve(y, s)
    best = int(np.argmax(tpr - fpr))
    advantage = float(tpr[best] - fpr[best])
    fixed = float(np.mean(member_scores >= fixed_threshold) - np.mean(nonmember_scores >= fixed_threshold))
    chance_auc = chance_adv = float("nan")
    if rng is not None and permutations > 0:
        null = [
            (roc_auc_score(yy, s), _best_advantage(yy, s))
            for yy in (rng.permutation(y) for _ in range(permutations))
        ]
        chance_auc = float(np.percentile([a for a, _ in null], 95))
        chance_adv = float(np.percentile([b for _, b in null], 95))
    return AttackResult(
        attack=attack,
        auc=float(roc_auc_score(y, s)),
        advantage=advantage,
        accuracy=(1.0 + advantage) / 2.0,
        tpr=float(tpr[best]),
        fpr=float(fpr[best]),
        threshold=float(thresholds[best]),
        advantage_at_threshold=fixed,
        members=int(len(member_scores)),
        non_members=int(len(nonmember_scores)),
        per_class=dict(per_class or {}),
        chance_auc_95=chance_auc,
        chance_advantage_95=chance_adv,
    )


def _known(scores: ExampleScores, examples: Examples) -> tuple[ExampleScores, Examples]:
    keep = scores.known
    return (
        ExampleScores(scores.proba[keep], scores.true_index[keep], scores.loss[keep]),
        examples.take(np.flatnonzero(keep)),
    )


def _balanced_scores(
    detector: Detector,
    features: np.ndarray,
    members: Examples,
    non_members: Examples,
    rng: np.random.Generator,
    max_per_class: int | None,
) -> tuple[ExampleScores, ExampleScores, dict[str, int]]:
    m_scores, m_ex = _known(score_examples(detector, features, members), members)
    n_scores, n_ex = _known(score_examples(detector, features, non_members), non_members)
    both_hosts = m_ex.hosts is not None and n_ex.hosts is not None
    mi, ni, per_class = balanced_indices(
        m_ex.labels,
        n_ex.labels,
        rng,
        max_per_class,
        m_ex.hosts if both_hosts else None,
        n_ex.hosts if both_hosts else None,
    )
    if len(mi) == 0:
        raise ValueError("members and non-members share no class known to the model")

    def pick(s: ExampleScores, i: np.ndarray) -> ExampleScores:
        return ExampleScores(s.proba[i], s.true_index[i], s.loss[i])

    return pick(m_scores, mi), pick(n_scores, ni), per_class


def loss_threshold_attack(
    detector: Detector,
    features: np.ndarray,
    members: Examples,
    non_members: Examples,
    rng: np.random.Generator,
    max_per_class: int | None = None,
) -> AttackResult:
    """Yeom et al.'s loss-threshold attack on a class-balanced member/non-member set.

    Score = ``-loss`` (higher = member). ``advantage_at_threshold`` uses Yeom's threshold: predict
    "member" when the loss is at most the members' mean loss (the expected training loss, which the
    attack assumes known).
    """
    m, n, per_class = _balanced_scores(detector, features, members, non_members, rng, max_per_class)
    return compute_attack_metrics(-m.loss, -n.loss, "loss-threshold", -float(np.mean(m.loss)), per_class, rng)


def attack_features(scores: ExampleScores, top_k: int = 3) -> np.ndarray:
    """Class-agnostic attack features ``(n, top_k + 2)`` float64: p(true label), the ``top_k`` largest
    probabilities in decreasing order (0-padded when the model has fewer classes) and the entropy."""
    p = np.asarray(scores.proba, dtype=np.float64)
    n = len(p)
    top = -np.sort(-p, axis=1)[:, :top_k]
    if top.shape[1] < top_k:
        top = np.hstack([top, np.zeros((n, top_k - top.shape[1]))])
    p_true = p[np.arange(n), np.maximum(scores.true_index, 0)] if n else np.zeros(0)
    entropy = -(p * np.log(np.maximum(p, _EPS))).sum(axis=1)
    return np.column_stack([p_true, top, entropy])


@dataclass(frozen=True)
class ShadowConfig:
    """Shadow-model attack settings.

    ``shadows``: number of shadow GRUs (disjoint data); ``train``: their training settings (match the
    target's total passes over its data, e.g. ``epochs = rounds * local_epochs``); ``hidden``: GRU
    width (as the target); ``max_per_class``: cap per class and side when building the attack's
    training set from each shadow.
    """

    shadows: int = 4
    train: TrainConfig = TrainConfig(epochs=3)
    hidden: int = 64
    max_per_class: int | None = 500
    top_k: int = 3

    def __post_init__(self) -> None:
        if self.shadows < 1:
            raise ValueError("shadows must be >= 1")


def shadow_model_attack(
    target: Detector,
    features: np.ndarray,
    pool: Examples,
    members: Examples,
    non_members: Examples,
    config: ShadowConfig,
    rng: np.random.Generator,
    max_per_class: int | None = None,
) -> AttackResult:
    """Shokri et al.'s shadow-model attack (see the module docstring).

    Parameters
    ----------
    target : the attacked model.
    features : raw float32 ``(n_flows, 78)`` matrix every window indexes into.
    pool : examples the target did *not* train on, for the shadows (disjoint from ``non_members``).
    members, non_members : the target's members and non-members; sampled class-balanced for evaluation.
    config : shadow settings; ``rng`` drives every random choice (pool split, seeds, sampling).
    """
    order = rng.permutation(len(pool))
    shards = np.array_split(order, config.shadows)
    attack_x, attack_y = [], []
    for shard in shards:
        half = rng.permutation(shard)
        in_ex, out_ex = pool.take(half[: len(half) // 2]), pool.take(half[len(half) // 2 :])
        if len(in_ex) == 0 or len(out_ex) == 0:
            continue
        last = in_ex.windows[:, -1]
        scaler, vocab = fit_preprocessing(features[last], in_ex.labels)
        model = new_model(len(vocab), config.hidden, seed=int(rng.integers(0, 2**31 - 1)))
        train_cfg = TrainConfig(**{**asdict(config.train), "seed": int(rng.integers(0, 2**31 - 1))})
        fit(model, scaler.transform(features), in_ex.windows, vocab.encode(in_ex.labels), train_cfg)
        shadow = Detector(model=model, scaler=scaler, vocabulary=vocab, window=target.window, metadata={})
        s_in, s_out, _ = _balanced_scores(shadow, features, in_ex, out_ex, rng, config.max_per_class)
        attack_x += [attack_features(s_in, config.top_k), attack_features(s_out, config.top_k)]
        attack_y += [np.ones(len(s_in.loss)), np.zeros(len(s_out.loss))]
    if not attack_x:
        raise ValueError("the shadow pool is too small to train any shadow model")
    x, y = np.vstack(attack_x), np.concatenate(attack_y)
    if len(np.unique(y)) < 2:
        raise ValueError("the shadow models produced only one class of attack examples")
    classifier = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, random_state=int(rng.integers(0, 2**31 - 1))
    )
    classifier.fit(x, y)
    m, n, per_class = _balanced_scores(target, features, members, non_members, rng, max_per_class)
    m_score = classifier.predict_proba(attack_features(m, config.top_k))[:, 1]
    n_score = classifier.predict_proba(attack_features(n, config.top_k))[:, 1]
    return compute_attack_metrics(m_score, n_score, "shadow-model", 0.5, per_class, rng)
