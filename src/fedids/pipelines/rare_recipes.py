"""Candidate training recipes for rare classes, measured on the rare-class protocol (:mod:`.rare`).

Each recipe is a :class:`Recipe` (options) that trains the centralized GRU on the same kept rows as the
protocol's ``centralized`` model and is scored the same way. The recipes were measured before session 24
and keep that ``fedids train``: a validation slice of every label's latest 20% of training flows
(``validate_benign_only`` holds out the benign ones only, as ``fedids train`` now does) and, with
``prototype``, an ungated cosine head (``proto_readout="gauss"``: the Gaussian head that
:mod:`fedids.model.discriminant` now gives ``fedids train``, ungated; ``proto_gated``: P(BENIGN) of the
linear head, as the head before session 24):

* ``epochs``: a fixed epoch count other than ``fedids train``'s 5;
* ``early_stopping``: up to ``epochs`` epochs, keeping the weights of the epoch with the best macro-F1
  on the time-ordered validation slice (the latest 20% of each label's training flows), stopping after
  ``patience`` epochs without improvement;
* ``logit_adjust``: logit-adjusted cross-entropy (Menon et al., ICLR 2021): training logits are offset by
  ``tau * log(prior)``, inference uses the raw logits; with uniform class weights instead of focal loss;
* ``balanced``: class-balanced sampling (each epoch draws rows with probability proportional to
  ``1 / count(class)``), uniform class weights;
* ``prototype``: a nearest-class-mean head on the GRU's embedding (cosine similarity to each class's mean
  training embedding, softmax at temperature ``proto_temperature``), its probabilities mixed with the
  linear head's by ``proto_weight``; with ``proto_readout="nearest"`` a class's similarity is that of its
  nearest training window instead of its mean (a nearest-exemplar head: a class whose few flows come in
  two shapes, PortScan's first HTTP sessions and later probes, keeps both); ``proto_space`` ``"flow"``
  reads the flow's own scaled features instead of the embedding (what a single-flow forest reads: a test
  probe can match a training probe whatever its window held before), ``"both"`` the two unit vectors
  side by side; ``proto_readout="clusters"`` keeps up to ``proto_clusters`` k-means centroids per class,
  each the mean of at least ``proto_cluster_min`` training windows (the exemplar head's two shapes
  without keeping any single training flow in the model; a federated version needs only per-cluster
  sums, securely aggregated like the calibration's class moments);
* ``flow_skip``: the head reads the last flow's scaled features beside the GRU's window summary;
* ``hidden`` / ``window``: model size and window length;
* ``min_steps``: at least this many optimizer steps (more epochs on small data: ``fedids train``'s 5
  epochs of batch 256 are 5 steps on a few hundred flows);
* ``copies`` / ``truncate``: train on ``copies`` extra copies of every training window; with ``truncate``
  each copy keeps only the last j flows of its window (j uniform in 1..W, the rest padding), so that a
  class whose few training flows have short histories (its first flows ever) is learnt in a form that
  transfers to the full windows of later traffic; without ``truncate`` the copies are the control (the
  same number of optimizer steps);
* ``burst_train`` (session 26): also train the GRU on the head windows (:func:`fedids.task.head_windows`,
  windows that start with the attack) of the rows whose head and real windows differ; ``head_windows``:
  the windows the prototype head's moments are taken over: ``"train"`` (those the GRU trained on),
  ``"real"``, ``"head"`` (what ``fedids train`` does since session 26) or ``"mix"`` (real and head
  windows stacked);
* ``proto_space="concat"`` (session 26): the embedding and the flow's own scaled features side by side,
  unnormalised; ``proto_readout="lda-poe"``: the product of the embedding's and the flow's LDA posteriors;
* ``train_validation``: also train on the validation slice (``fedids train`` holds it out for the alert
  threshold, which costs a rare class ``round(0.2 k)`` of its k flows).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedids.data.preprocess import LabelVocabulary
from fedids.data.schema import BENIGN_LABEL, FEATURES
from fedids.data.windows import host_keys, split_window_indices
from fedids.model.discriminant import gaussian_discriminant
from fedids.model.gru import GRUDetector
from fedids.model.train import TrainConfig, embedding_moments, fit, forward_batches, predict_proba
from fedids.pipelines.rare import RareConfig, RareSplit, score_predictions
from fedids.task import PreparedData, fit_preprocessing, head_windows, validation_mask


@dataclass(frozen=True)
class Recipe:
    """One candidate (see module docstring); the defaults reproduce ``fedids train`` before session 24
    without its prototype head."""

    epochs: int = 5
    early_stopping: bool = False
    patience: int = 5
    loss: str = "focal"
    logit_adjust: float = 0.0
    balanced: bool = False
    prototype: bool = False
    proto_weight: float = 0.5
    proto_temperature: float = 0.1
    proto_readout: str = "mean"
    proto_space: str = "embedding"
    proto_clusters: int = 4
    proto_cluster_min: int = 2
    proto_gated: bool = False
    validate_benign_only: bool = False
    flow_skip: bool = False
    hidden: int | None = None
    window: int | None = None
    train_validation: bool = False
    min_steps: int = 0
    copies: int = 0
    truncate: bool = False
    repeat: bool = False
    burst_train: bool = False
    head_windows: str = "train"


RECIPES: dict[str, Recipe] = {
    "default": Recipe(),
    "epochs30": Recipe(epochs=30),
    "early-stop": Recipe(epochs=50, early_stopping=True),
    "logit-adjust": Recipe(loss="weighted_ce", logit_adjust=1.0),
    "balanced": Recipe(loss="weighted_ce", balanced=True),
    "prototype": Recipe(prototype=True),
    "flow-skip": Recipe(flow_skip=True),
    "hidden128": Recipe(hidden=128),
    "window5": Recipe(window=5),
    "train-val": Recipe(train_validation=True),
    "es+prototype": Recipe(epochs=50, early_stopping=True, prototype=True),
    "es+logit-adjust": Recipe(epochs=50, early_stopping=True, loss="weighted_ce", logit_adjust=1.0),
    "es+flow-skip": Recipe(epochs=50, early_stopping=True, flow_skip=True),
    "prototype-only": Recipe(prototype=True, proto_weight=1.0),
    "exemplar": Recipe(prototype=True, proto_readout="nearest"),
    "epochs15+prototype": Recipe(epochs=15, prototype=True),
    "truncate3": Recipe(copies=3, truncate=True),
    "copies3": Recipe(copies=3),
    "truncate3+prototype": Recipe(copies=3, truncate=True, prototype=True),
    "copies3+prototype": Recipe(copies=3, prototype=True),
    "train-val+prototype": Recipe(train_validation=True, prototype=True),
    "train-val+steps300+prototype": Recipe(train_validation=True, min_steps=300, prototype=True),
    "train-val+epochs30+prototype": Recipe(train_validation=True, epochs=30, prototype=True),
    "train-val+truncate3+prototype": Recipe(train_validation=True, copies=3, truncate=True, prototype=True),
    "repeat1": Recipe(copies=1, repeat=True),
    "repeat1+prototype": Recipe(copies=1, repeat=True, prototype=True),
    "copies1+prototype": Recipe(copies=1, prototype=True),
    "train-val+repeat1+prototype": Recipe(train_validation=True, copies=1, repeat=True, prototype=True),
    "train-val+exemplar": Recipe(train_validation=True, prototype=True, proto_readout="nearest"),
    "flow-prototype": Recipe(prototype=True, proto_space="flow"),
    "flow-exemplar": Recipe(prototype=True, proto_readout="nearest", proto_space="flow"),
    "both-prototype": Recipe(prototype=True, proto_space="both"),
    "both-exemplar": Recipe(prototype=True, proto_readout="nearest", proto_space="both"),
    "train-val+flow-exemplar": Recipe(
        train_validation=True, prototype=True, proto_readout="nearest", proto_space="flow"
    ),
    "train-val+both-exemplar": Recipe(
        train_validation=True, prototype=True, proto_readout="nearest", proto_space="both"
    ),
    "both-clusters": Recipe(prototype=True, proto_readout="clusters", proto_space="both"),
    "train-val+both-clusters": Recipe(
        train_validation=True, prototype=True, proto_readout="clusters", proto_space="both"
    ),
    **{
        f"both-clusters{most}x{least}": Recipe(
            prototype=True,
            proto_readout="clusters",
            proto_space="both",
            proto_clusters=most,
            proto_cluster_min=least,
        )
        for most, least in ((16, 4), (32, 10))
    },
    "emb-clusters32x10": Recipe(
        prototype=True, proto_readout="clusters", proto_clusters=32, proto_cluster_min=10
    ),
    **{
        f"{space}-lda": Recipe(prototype=True, proto_readout="lda", proto_space=space)
        for space in ("embedding", "flow", "both")
    },
    **{
        f"train-val+{space}-lda": Recipe(
            train_validation=True, prototype=True, proto_readout="lda", proto_space=space
        )
        for space in ("embedding", "flow", "both")
    },
    **{
        f"{tv}embedding-gauss{g}": Recipe(
            train_validation=bool(tv), prototype=True, proto_readout="gauss", proto_gated=bool(g)
        )
        for tv in ("", "train-val+")
        for g in ("", "-gated")
    },
    **{
        f"val-benign+{name}": Recipe(
            validate_benign_only=True, prototype=True, proto_readout=readout, proto_gated=g
        )
        for name, readout, g in (
            ("gauss", "gauss", False),
            ("gauss-gated", "gauss", True),
            ("prototype-gated", "mean", True),
        )
    },
    **{  # session 25: the head on the flow's own features, or on them beside the embedding
        f"val-benign+{space}-{readout}{'-gated' if g else ''}": Recipe(
            validate_benign_only=True, prototype=True, proto_readout=readout, proto_space=space, proto_gated=g
        )
        for space in ("flow", "both")
        for readout in ("gauss", "lda")
        for g in (False, True)
    },
    **{  # session 25: more optimizer steps under the product's head (5 epochs of a few hundred rows: ~10)
        f"val-benign+steps{steps}+gauss": Recipe(
            validate_benign_only=True,
            prototype=True,
            proto_readout="gauss",
            proto_gated=False,
            min_steps=steps,
        )
        for steps in (100, 300)
    },
    **{  # session 26: head windows (fedids.task.head_windows) in training and in the prototype head
        f"val-benign+{name}+{readout}{'-gated' if g else ''}": Recipe(
            validate_benign_only=True,
            prototype=True,
            proto_readout=readout,
            proto_gated=g,
            burst_train=train,
            head_windows=head,
            copies=int(repeat),
            repeat=repeat,
        )
        for name, train, head, repeat in (
            ("burst", True, "train", False),
            ("repeat1", False, "train", True),
            ("burst+repeat1", True, "train", True),
            ("burst-train", True, "real", False),
            ("burst-replace", True, "head", False),
            ("context-head", False, "head", False),
            ("mix-head", False, "mix", False),
        )
        for readout in ("gauss", "lda")
        for g in (False, True)
    },
    **{  # session 26: the embedding and the flow's own features together, ungated
        f"val-benign+{b}{name}": Recipe(
            validate_benign_only=True,
            prototype=True,
            proto_readout=readout,
            proto_space=space,
            burst_train=bool(b),
        )
        for b in ("", "burst+")
        for name, readout, space in (
            ("concat-lda", "lda", "concat"),
            ("poe-lda", "lda-poe", "embedding"),
            ("concat-gauss", "gauss", "concat"),
        )
    },
    "steps300": Recipe(min_steps=300),
    "steps300+prototype": Recipe(min_steps=300, prototype=True),
    "steps300+balanced+prototype": Recipe(min_steps=300, loss="weighted_ce", balanced=True, prototype=True),
}
"""Named candidates for ``bench_rare.py --recipes``."""


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (a key of :data:`RECIPES`)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose from {', '.join(RECIPES)}")
    return RECIPES[name]


class FlowSkipGRU(GRUDetector):
    """A :class:`GRUDetector` whose head reads ``[GRU summary, last flow's inputs]``: ``(batch, hidden +
    n_inputs)`` into ``(batch, n_classes)`` logits."""

    def __init__(self, n_inputs: int, n_classes: int, hidden: int) -> None:
        super().__init__(n_inputs, n_classes, hidden)
        self.head = nn.Linear(hidden + n_inputs, n_classes)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(windows)
        return torch.cat([out[:, -1, :], windows[:, -1, :]], dim=1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(windows))


class AdjustedLogits(nn.Module):
    """Adds ``offsets`` ``(n_classes,)`` to ``model``'s logits in training mode only (logit adjustment)."""

    def __init__(self, model: GRUDetector, offsets: np.ndarray) -> None:
        super().__init__()
        self.model, self.head = model, model.head
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.float32))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        logits = self.model(windows)
        return logits + self.offsets if self.training else logits


def _embed(model: GRUDetector, scaled: np.ndarray, windows: np.ndarray) -> np.ndarray:
    model.eval()  # FlowSkipGRU's embedding is wider than the GRU's: its head's input
    return forward_batches(model.embed, scaled, windows, model.head.in_features)


def prototype_proba(
    model: GRUDetector,
    scaled: np.ndarray,
    train_windows: np.ndarray,
    train_targets: np.ndarray,
    windows: np.ndarray,
    temperature: float,
    readout: str = "mean",
    space: str = "embedding",
    clusters: tuple[int, int] = (4, 2),
) -> np.ndarray:
    """Nearest-class-mean probabilities ``(n, n_classes)``: softmax of the cosine similarity between each
    window's embedding and each class's mean training embedding, over ``temperature``. ``readout``
    ``"nearest"``: each class's similarity is that of its most similar training window instead;
    ``"clusters"``: that of its nearest k-means centroid (``clusters``: at most this many per class, each of
    at least this many windows, :func:`_centroids`).
    ``space``: ``"embedding"``, ``"flow"`` (the window's own flow, scaled) or ``"both"``."""
    n_classes = model.head.out_features
    train_emb = _space(model, scaled, train_windows, space)
    emb = _unit(_space(model, scaled, windows, space))
    sim = np.full((len(emb), n_classes), -np.inf)
    for c in np.unique(train_targets[train_targets >= 0]):
        members = train_emb[train_targets == c]
        if readout in ("lda", "gauss"):
            continue
        if readout == "nearest":
            sim[:, c] = (emb @ _unit(members).T).max(axis=1)
        elif readout == "clusters":
            sim[:, c] = (emb @ _unit(_centroids(_unit(members), clusters)).T).max(axis=1)
        else:
            sim[:, c] = emb @ _unit(members.mean(axis=0, keepdims=True))[0]
    if readout == "lda-poe":  # product of the embedding's and the flow's LDA posteriors
        both = [
            _lda_proba(
                _space(model, scaled, train_windows, v),
                train_targets,
                _space(model, scaled, windows, v),
                n_classes,
            )
            for v in ("embedding", "flow")
        ]
        p = both[0] * both[1]
        return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    if readout == "lda":
        return _lda_proba(train_emb, train_targets, _space(model, scaled, windows, space), n_classes)
    if readout == "gauss":
        return _gauss_proba(train_emb, train_targets, _space(model, scaled, windows, space), n_classes)
    sim /= temperature
    sim -= sim.max(axis=1, keepdims=True)
    p = np.exp(sim)
    return p / p.sum(axis=1, keepdims=True)


def _lda_proba(train: np.ndarray, targets: np.ndarray, rows: np.ndarray, n_classes: int) -> np.ndarray:
    """Gaussian class posteriors with one shared covariance (scikit-learn's LDA, Ledoit-Wolf shrinkage)
    and equal class priors, so that a class of ten windows is not outvoted by its prior; only per-class
    sums and one pooled second moment enter, which clients could sum securely like CCVR's moments."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    keep = targets >= 0
    present = np.unique(targets[keep])
    lda = LinearDiscriminantAnalysis(
        solver="lsqr", shrinkage="auto", priors=np.full(len(present), 1 / len(present))
    )
    lda.fit(train[keep], targets[keep])
    proba = np.zeros((len(rows), n_classes))
    proba[:, lda.classes_] = lda.predict_proba(rows)
    return proba


def gate(linear: np.ndarray, mixed: np.ndarray) -> np.ndarray:
    """The gate of :mod:`fedids.model.gru` on probabilities ``(n, C)``: P(BENIGN) (class 0) of ``linear``,
    the attack mass ``1 - P(BENIGN)`` shared over the attack classes in ``mixed``'s proportions."""
    attacks = mixed[:, 1:] / np.maximum(mixed[:, 1:].sum(axis=1, keepdims=True), 1e-30)
    return np.concatenate([linear[:, :1], (1.0 - linear[:, :1]) * attacks], axis=1)


def _gauss_proba(train: np.ndarray, targets: np.ndarray, rows: np.ndarray, n_classes: int) -> np.ndarray:
    """The product's prototype head (:func:`fedids.model.discriminant.gaussian_discriminant`, from the
    class moments of ``train``) read ungated: class posteriors ``(n, n_classes)`` of ``rows``."""
    keep = targets >= 0
    weights, offsets, _ = gaussian_discriminant(*embedding_moments(train[keep], targets[keep], n_classes))
    scores = rows @ weights.T + offsets
    scores -= scores.max(axis=1, keepdims=True)
    proba = np.exp(scores)
    return proba / proba.sum(axis=1, keepdims=True)


def _centroids(members: np.ndarray, clusters: tuple[int, int]) -> np.ndarray:
    """Up to ``clusters[0]`` k-means centroids of ``members``, every cluster at least ``clusters[1]``
    rows (fewer clusters until that holds; one mean if nothing else does)."""
    from sklearn.cluster import KMeans

    most, least = clusters
    for n in range(min(most, len(members) // least), 1, -1):
        km = KMeans(n_clusters=n, n_init=4, random_state=0).fit(members)
        if np.bincount(km.labels_, minlength=n).min() >= least:
            return km.cluster_centers_
    return members.mean(axis=0, keepdims=True)


def _space(model: GRUDetector, scaled: np.ndarray, windows: np.ndarray, space: str) -> np.ndarray:
    """The vectors a prototype head compares: the GRU embedding, the window's last (own) flow's scaled
    features, or both unit vectors concatenated."""
    if space == "embedding":
        return _embed(model, scaled, windows).astype(np.float64)
    flow = scaled[windows[:, -1]].astype(np.float64)
    if space == "flow":
        return flow
    if space == "concat":
        return np.concatenate([_embed(model, scaled, windows).astype(np.float64), flow], axis=1)
    return np.concatenate([_unit(_embed(model, scaled, windows)), _unit(flow)], axis=1)


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _fit_data(split: RareSplit, cfg: RareConfig, recipe: Recipe) -> tuple[PreparedData, np.ndarray]:
    """The kept rows (windows rebuilt for the recipe's window) and the validation mask."""
    data = split.data
    window = recipe.window or cfg.window
    if window != cfg.window:
        windows = split_window_indices(host_keys(data.frame), window, data.test_mask)
        data = dataclasses.replace(data, windows=windows)
    return data, validation_mask(data, cfg.validation_fraction, benign_only=False)


def _balanced_rows(targets: np.ndarray, epochs: int, seed: int) -> np.ndarray:
    """Row positions for ``epochs`` epochs of class-balanced sampling: ``len(targets)`` draws per epoch,
    each class equally likely, rows of a class uniformly (with replacement)."""
    counts = np.bincount(targets)
    p = 1.0 / counts[targets]
    return np.random.default_rng(seed).choice(len(targets), size=len(targets) * epochs, p=p / p.sum())


def _augmented(
    windows: np.ndarray, targets: np.ndarray, recipe: Recipe, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``recipe.copies`` extra copies of the windows and their targets, each window truncated to its last j
    flows (j uniform in 1..W) when ``recipe.truncate``, or made of the window's own flow repeated when
    ``recipe.repeat``."""
    rng = np.random.default_rng(seed)
    n, width = windows.shape
    parts = []
    for _ in range(recipe.copies):
        if recipe.repeat:
            copy_ = np.repeat(windows[:, -1:], width, axis=1)
        else:
            copy_ = windows.copy()
            if recipe.truncate:
                keep = rng.integers(1, width + 1, size=n)  # flows kept at the window's end
                copy_[np.arange(width)[None, :] < (width - keep)[:, None]] = -1
        parts.append(copy_)
    return np.concatenate(parts), np.tile(targets, recipe.copies)


def _training_windows(
    recipe: Recipe, data: PreparedData, rows: np.ndarray, targets: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The windows the GRU trains on and their targets: those ending at ``rows``; with ``burst_train``
    also the head windows that differ from them; with ``copies``, copies of the real ones."""
    real = data.windows[rows]
    windows, out = [real], [targets]
    if recipe.burst_train:
        head = head_windows(data, rows)
        differ = (head != real).any(axis=1)
        windows.append(head[differ])
        out.append(targets[differ])
    if recipe.copies:
        extra, extra_targets = _augmented(real, targets, recipe, seed)
        windows.append(extra)
        out.append(extra_targets)
    return np.concatenate(windows), np.concatenate(out)


def _head_windows(
    recipe: Recipe, data: PreparedData, rows: np.ndarray, targets: np.ndarray, trained: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """The windows (and targets) the prototype head is fitted on, as ``recipe.head_windows`` says."""
    if recipe.head_windows == "train":
        return trained
    if recipe.head_windows == "real":
        return data.windows[rows], targets
    head = head_windows(data, rows)
    if recipe.head_windows == "head":
        return head, targets
    return np.concatenate([data.windows[rows], head]), np.tile(targets, 2)


def _train(
    recipe: Recipe,
    model: GRUDetector,
    scaled: np.ndarray,
    data: PreparedData,
    windows: np.ndarray,
    targets: np.ndarray,
    val_rows: np.ndarray,
    config: TrainConfig,
    vocabulary: LabelVocabulary,
) -> None:
    """Train ``model`` in place as ``recipe`` says (sampling, loss, early stopping)."""
    n_classes = model.head.out_features
    weights = None
    if recipe.loss == "weighted_ce":
        weights = np.where(np.bincount(targets, minlength=n_classes) > 0, 1.0, 0.0).astype(np.float32)
    if recipe.balanced:
        order = _balanced_rows(targets, config.epochs, config.seed)
        windows, targets = windows[order], targets[order]
        config = dataclasses.replace(config, epochs=1)
    trained: nn.Module = model
    if recipe.logit_adjust:
        prior = np.bincount(targets, minlength=n_classes) / len(targets)
        trained = AdjustedLogits(model, recipe.logit_adjust * np.log(np.maximum(prior, 1e-12)))
    hook = None
    if recipe.early_stopping:
        hook = _EarlyStopping(model, scaled, data, val_rows, vocabulary, recipe.patience)
    fit(trained, scaled, windows, targets, config, class_weights=weights, epoch_end=hook)
    if hook is not None:
        hook.restore()


class _EarlyStopping:
    """``epoch_end`` hook: macro-F1 on the validation windows after each epoch; keeps the best weights."""

    def __init__(
        self,
        model: GRUDetector,
        scaled: np.ndarray,
        data: PreparedData,
        rows: np.ndarray,
        vocabulary: LabelVocabulary,
        patience: int,
    ) -> None:
        self.model, self.scaled, self.data, self.rows, self.patience = model, scaled, data, rows, patience
        self.vocabulary = vocabulary
        self.best, self.best_epoch, self.state = -1.0, -1, copy.deepcopy(model.state_dict())

    def __call__(self, epoch: int) -> bool:
        proba = predict_proba(self.model, self.scaled, self.data.windows[self.rows])
        self.model.train()
        score = score_predictions(self.data.labels[self.rows], self.vocabulary.decode(proba.argmax(axis=1)))
        if score["macro_f1"] > self.best:
            self.best, self.best_epoch = score["macro_f1"], epoch
            self.state = copy.deepcopy(self.model.state_dict())
        return epoch - self.best_epoch >= self.patience

    def restore(self) -> None:
        self.model.load_state_dict(self.state)


def run_recipe(split: RareSplit, cfg: RareConfig, seed: int, recipe: Recipe) -> dict[str, Any]:
    """Train the centralized GRU on the protocol's kept rows with ``recipe`` and score its test flows."""
    data, val = _fit_data(split, cfg, recipe)
    if recipe.validate_benign_only:  # attack classes train on all their flows; BENIGN's latest are held out
        val = val & (data.labels == BENIGN_LABEL)
    fit_rows = data.train_rows if recipe.train_validation else data.train_rows[~val[data.train_rows]]
    scaler, vocab = fit_preprocessing(data.features[fit_rows], data.labels[fit_rows])
    scaled = scaler.transform(data.features)
    hidden = recipe.hidden or cfg.hidden
    torch.manual_seed(seed)
    cls = FlowSkipGRU if recipe.flow_skip else GRUDetector
    model = cls(len(FEATURES) + 1, len(vocab), hidden)
    targets = vocab.encode(data.labels[fit_rows])
    keep = targets >= 0
    fit_rows, targets = fit_rows[keep], targets[keep]
    steps_per_epoch = -(-len(targets) // TrainConfig.batch_size)
    epochs = max(recipe.epochs, -(-recipe.min_steps // max(steps_per_epoch, 1)))
    config = TrainConfig(epochs=epochs, seed=seed, loss=recipe.loss)
    val_rows = np.flatnonzero(val)
    windows, train_targets = _training_windows(recipe, data, fit_rows, targets, seed)
    _train(recipe, model, scaled, data, windows, train_targets, val_rows, config, vocab)
    test = data.test_rows
    proba = predict_proba(model, scaled, data.windows[test])
    if recipe.prototype:
        head, head_targets = _head_windows(recipe, data, fit_rows, targets, (windows, train_targets))
        proto = prototype_proba(
            model,
            scaled,
            head,
            head_targets,
            data.windows[test],
            recipe.proto_temperature,
            recipe.proto_readout,
            recipe.proto_space,
            (recipe.proto_clusters, recipe.proto_cluster_min),
        )
        mixed = (1.0 - recipe.proto_weight) * proba + recipe.proto_weight * proto
        proba = gate(proba, mixed) if recipe.proto_gated else mixed
    return score_predictions(data.labels[test], vocab.decode(proba.argmax(axis=1)))
