"""The rare-class protocol: how well a detector learns an attack from its first k training flows.

For every attack class, only the earliest ``k`` of its *training* flows are kept; its test flows, and every
benign flow, stay as they are. The split is the one of ``fedids train --split label-time``: flows sorted by
time, the last ``test_fraction`` of each label tests. The dropped training flows are removed from the frame
before windows are built (a rare attack that happened k times has no later flows to look back on), so
windows and the federated clients' partitions see exactly the kept rows. Test flows are never dropped,
moved or relabelled: their rows, labels and order are those of the full split.

Three models train on the same kept rows in the same run, for each seed:

* ``centralized``: :func:`fedids.task.train_centralized`, the path of ``fedids train`` (which also holds
  out the latest ``validation_fraction`` of the benign training flows to choose the alert threshold,
  :func:`fedids.task.validation_mask`; the protocol does the same, so an attack class trains on all k);
* ``federated``: a Flower simulation (:func:`fedids.federation.simulation.run_simulated`) over the kept
  training rows split by a partition scheme (``shared:0.5`` by default);
* ``random_forest``: scikit-learn, 100 trees, one flow's raw features at a time, on all kept training rows.

Scores are per class (F1, precision, recall, support on the test flows) and macro-F1 over the classes of
the test flows. Everything here is pure but the federated run, which writes its partitions and model under
a work directory.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from fedids.data.schema import BENIGN_LABEL
from fedids.data.windows import host_keys, split_window_indices
from fedids.federation.config import FederationConfig
from fedids.model.artifacts import Detector
from fedids.task import PreparedData, validation_mask

K_VALUES: tuple[int, ...] = (5, 10, 20, 50)
MODELS: tuple[str, ...] = ("centralized", "federated", "random_forest")


@dataclass(frozen=True)
class RareConfig:
    """Settings of one protocol run.

    ``epochs`` is the centralized training length (``fedids train``'s default 5); ``clients``, ``rounds``
    and ``local_epochs`` size the federated runs (defaults smaller than ``fedids federate``'s 10 rounds, to
    fit a small CPU budget); ``partitions`` are the federated partition schemes, one run each.
    ``recipes`` name centralized training recipes of :mod:`fedids.pipelines.rare_recipes`, each run as
    one more model. ``prototype_variants`` also scores the centralized and federated models with a
    nearest-class-mean head mixed into their linear head (``MODEL+proto``, the same trained weights).
    ``federation_options`` sets any other :class:`FederationConfig` field of the federated runs (to
    measure which part of ``fedids federate``'s recipe a result depends on).
    """

    k_values: tuple[int, ...] = K_VALUES
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = MODELS
    window: int = 10
    hidden: int = 64
    epochs: int = 5
    test_fraction: float = 0.3
    validation_fraction: float = 0.2
    clients: int = 5
    rounds: int = 5
    local_epochs: int = 1
    federated_lr: float = FederationConfig.lr  # client lr and batch size: fedids federate's by default
    federated_batch_size: int = FederationConfig.batch_size
    partitions: tuple[str, ...] = ("shared:0.5",)
    recipes: tuple[str, ...] = ()
    forest_trees: int = 100
    prototype_variants: bool = False
    federation_options: tuple[tuple[str, Any], ...] = ()  # other FederationConfig fields, (name, value)

    def __post_init__(self) -> None:
        if not self.k_values or min(self.k_values) < 1:
            raise ValueError("k values must be >= 1")
        if not self.seeds:
            raise ValueError("at least one seed")
        unknown = set(self.models) - set(MODELS)
        if unknown:
            raise ValueError(f"unknown models {sorted(unknown)}: choose from {MODELS}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError("validation fraction must be in (0, 1)")
        fields = {f.name for f in dataclasses.fields(FederationConfig)}
        unknown_options = {name for name, _ in self.federation_options} - fields
        if unknown_options:
            raise ValueError(f"unknown federation options {sorted(unknown_options)}")


@dataclass
class RareSplit:
    """The full split restricted to the kept rows.

    ``data``: the kept rows only (time order kept, windows rebuilt); ``source_rows``: int64 ``(n_kept,)``,
    each kept row's index in the full split; ``kept``: training flows kept per label; ``available``:
    training flows per label before the cut.
    """

    data: PreparedData
    source_rows: np.ndarray
    kept: dict[str, int]
    available: dict[str, int]


def select_earliest_training_rows(data: PreparedData, k: int, benign_label: str = BENIGN_LABEL) -> np.ndarray:
    """Training rows to keep: every benign training flow and the earliest ``k`` of each attack class's.

    ``data`` must be in time order (as :func:`fedids.task.prepare` returns it), so the earliest flows are
    the lowest row indices. Returns sorted int64 row indices into ``data``, all of them training rows.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    train = data.train_rows
    labels = data.labels[train]
    keep = [train[labels == benign_label]]
    for label in np.unique(labels[labels != benign_label]):
        keep.append(train[labels == label][:k])
    return np.sort(np.concatenate(keep)).astype(np.int64)


def restrict_training(data: PreparedData, k: int, window: int) -> RareSplit:
    """``data`` with each attack class cut to its earliest ``k`` training flows (see module docstring).

    Windows are recomputed on the kept rows only; every test row of ``data`` is kept, in order.
    """
    kept_train = select_earliest_training_rows(data, k)
    rows = np.sort(np.concatenate([kept_train, data.test_rows]))
    frame = data.frame.iloc[rows].reset_index(drop=True)
    restricted = PreparedData(
        frame=frame,
        features=data.features[rows],
        windows=split_window_indices(host_keys(frame), window, data.test_mask[rows]),
        test_mask=data.test_mask[rows],
        labels=data.labels[rows],
    )
    return RareSplit(
        data=restricted,
        source_rows=rows,
        kept=_counts(data.labels[kept_train]),
        available=_counts(data.labels[data.train_rows]),
    )


def _counts(labels: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(labels, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}


def score_predictions(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Per-class F1, precision, recall and support over the labels of ``y_true``, and their macro-F1.

    A class never predicted has precision 0 (scikit-learn's ``zero_division=0``). Returns
    ``{"macro_f1": float, "per_class": {label: {"f1", "precision", "recall", "support"}}}``.
    """
    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    labels = sorted(set(y_true))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        c: {"f1": float(fi), "precision": float(pi), "recall": float(ri), "support": int(si)}
        for c, pi, ri, fi, si in zip(labels, p, r, f, s)
    }
    return {"macro_f1": float(np.mean(f)) if len(f) else float("nan"), "per_class": per_class}


# --------------------------------------------------------------------------------------------------
# The models


def run_centralized(split: RareSplit, cfg: RareConfig, seed: int) -> dict[str, Any]:
    """``fedids train``'s path on the kept rows: validation slice held out, :func:`train_centralized`
    with its default prototype head (``--prototypes on``; the ``+linear`` variant is ``--prototypes off``)."""
    from fedids.model.train import TrainConfig
    from fedids.task import train_centralized

    data = split.data
    fit_data = dataclasses.replace(
        data, test_mask=data.test_mask | validation_mask(data, cfg.validation_fraction)
    )
    detector, _ = train_centralized(
        fit_data,
        TrainConfig(epochs=cfg.epochs, seed=seed),
        hidden=cfg.hidden,
        window=cfg.window,
        prototypes=True,
    )
    return score_detector(detector, data, fit_data.train_rows, cfg.prototype_variants)


def score_detector(
    detector: Detector, data: PreparedData, fit_rows: np.ndarray, prototype: bool
) -> dict[str, Any]:
    """Scores of ``detector`` (its own read-out) on the test flows of ``data``; with ``prototype``, also
    (under ``"variants"``) those of its linear head alone (``"linear"``), of the prototype head
    ``fedids train --prototypes on`` fits from the head windows of ``fit_rows`` (``"refit"``,
    :func:`fedids.task.head_windows`; for a federated model, from every kept training window instead of
    the clients' own; and ungated, ``"refit-ungated"``, :mod:`fedids.model.gru`), and of the cosine heads before session 24: the ungated half-and-half mix of session 10 (``"proto"``) and the
    gated one of sessions 11-23 (``"gated"``: P(BENIGN) of the linear head)."""
    from fedids.model.train import fit_prototypes
    from fedids.pipelines.rare_recipes import gate, prototype_proba
    from fedids.task import head_windows, predict_labels

    test = data.test_rows
    pred, _ = predict_labels(detector, data.features, data.windows[test])
    scores = score_predictions(data.labels[test], pred)
    if prototype:
        linear = copy.deepcopy(detector)
        linear.model.set_prototypes(None)
        linear_pred, proba = predict_labels(linear, data.features, data.windows[test])
        targets = detector.vocabulary.encode(data.labels[fit_rows])
        scaled = detector.scaler.transform(data.features)
        windows = data.windows[fit_rows][targets >= 0]
        proto = prototype_proba(linear.model, scaled, windows, targets[targets >= 0], data.windows[test], 0.1)
        mix = 0.5 * proba + 0.5 * proto
        gated = gate(proba, mix)
        refit = copy.deepcopy(linear)
        fit_prototypes(refit.model, scaled, head_windows(data, fit_rows), targets)
        ungated = copy.deepcopy(refit)  # the same head, read without the gate
        ungated.model.set_prototypes(refit.model.prototypes, refit.model.prototype_offset, gated=False)
        decode = detector.vocabulary.decode
        scores["variants"] = {
            "linear": score_predictions(data.labels[test], linear_pred),
            "proto": score_predictions(data.labels[test], decode(mix.argmax(axis=1))),
            "gated": score_predictions(data.labels[test], decode(gated.argmax(axis=1))),
            **{
                name: score_predictions(
                    data.labels[test], predict_labels(d, data.features, data.windows[test])[0]
                )
                for name, d in (("refit", refit), ("refit-ungated", ungated))
            },
        }
    return scores


def run_forest(split: RareSplit, cfg: RareConfig, seed: int) -> dict[str, Any]:
    """A random forest on single flows' raw features, trained on every kept training row."""
    from sklearn.ensemble import RandomForestClassifier

    data = split.data
    forest = RandomForestClassifier(n_estimators=cfg.forest_trees, random_state=seed, n_jobs=1)
    forest.fit(data.features[data.train_rows], data.labels[data.train_rows])
    return score_predictions(data.labels[data.test_rows], forest.predict(data.features[data.test_rows]))


def run_federated(
    split: RareSplit, cfg: RareConfig, seed: int, partition: str, work_dir: Path
) -> dict[str, Any]:
    """A Flower simulation over the kept training rows split by ``partition``; the final global model
    (after fedids' head calibration, with its prototype head from the summed moments, as `fedids
    federate` makes it) is scored on the test flows."""
    from fedids.federation.simulation import make_partitions, run_simulated
    from fedids.model.artifacts import load_detector

    data = split.data
    parts = [p for p in make_partitions(data, cfg.clients, partition, seed) if len(p)]
    config = FederationConfig(
        rounds=cfg.rounds,
        min_clients=1,
        local_epochs=cfg.local_epochs,
        lr=cfg.federated_lr,
        batch_size=cfg.federated_batch_size,
        hidden=cfg.hidden,
        window=cfg.window,
        seed=seed,
    )
    config = dataclasses.replace(config, **dict(cfg.federation_options))
    run_simulated(data, parts, config, work_dir)
    detector = load_detector(work_dir / "global")
    # Variants: "linear" is the model without its prototype head; "gated" and "proto" use class means of
    # every kept training window (the federated head's cover the clients' training windows only).
    scores = score_detector(detector, data, data.train_rows, cfg.prototype_variants)
    scores["clients"] = len(parts)
    return scores


# --------------------------------------------------------------------------------------------------
# The grid


def model_names(cfg: RareConfig) -> list[str]:
    """The models of one protocol run, in a fixed order: ``centralized``, ``centralized+RECIPE`` per
    recipe, ``federated PARTITION`` per partition, ``random_forest``."""
    names = ["centralized"] if "centralized" in cfg.models else []
    names += [f"centralized+{r}" for r in cfg.recipes]
    if "federated" in cfg.models:
        names += [f"federated {p}" for p in cfg.partitions]
    return names + (["random_forest"] if "random_forest" in cfg.models else [])


def run_model(name: str, split: RareSplit, cfg: RareConfig, seed: int, work_dir: Path) -> dict[str, Any]:
    """Train and score the model ``name`` (one of :func:`model_names`) on ``split``."""
    if name == "centralized":
        return run_centralized(split, cfg, seed)
    if name == "random_forest":
        return run_forest(split, cfg, seed)
    if name.startswith("federated "):
        return run_federated(split, cfg, seed, name.removeprefix("federated "), work_dir)
    if name.startswith("centralized+"):
        from fedids.pipelines import rare_recipes

        recipe = rare_recipes.get_recipe(name.removeprefix("centralized+"))
        return rare_recipes.run_recipe(split, cfg, seed, recipe)
    raise ValueError(f"unknown model {name!r}")


def run_protocol(
    data: PreparedData,
    cfg: RareConfig,
    *,
    work_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every model of ``cfg`` for every k and seed on the full split ``data`` (time-ordered,
    ``label-time``). Returns ``{"splits": {k: kept counts}, "runs": [...], "summary": ...}``: one run
    per (model, k, seed) with its scores and seconds; the summary is :func:`summarise` of the runs."""
    runs: list[dict[str, Any]] = []
    splits: dict[str, Any] = {}
    models = model_names(cfg)
    with tempfile.TemporaryDirectory(prefix="fedids-rare-") as tmp:
        root = Path(work_dir) if work_dir else Path(tmp)
        for k in cfg.k_values:
            split = restrict_training(data, k, cfg.window)
            splits[str(k)] = {"kept": split.kept, "available": split.available}
            for seed in cfg.seeds:
                for name in models:
                    start = time.perf_counter()
                    run_dir = root / f"k{k}-seed{seed}-{name.replace(' ', '-').replace(':', '')}"
                    scores = run_model(name, split, cfg, seed, run_dir)
                    seconds = time.perf_counter() - start
                    variants = scores.pop("variants", {})
                    runs.append({"model": name, "k": k, "seed": seed, "seconds": seconds, **scores})
                    for variant, extra in variants.items():
                        runs.append({"model": f"{name}+{variant}", "k": k, "seed": seed, **extra})
                    if log:
                        log(f"k={k} seed={seed} {name}: macro-F1 {scores['macro_f1']:.4f} ({seconds:.1f} s)")
    return {"splits": splits, "runs": runs, "summary": summarise(runs)}


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds per model and k: ``{model: {k: {"macro_f1", "macro_f1_min", "macro_f1_max",
    "seeds", "per_class": {label: {"f1", "precision", "recall"}}}}}``."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["model"], int(run["k"])), []).append(run)
    out: dict[str, Any] = {}
    for (model, k), group in groups.items():
        f1s = [g["macro_f1"] for g in group]
        labels = sorted({c for g in group for c in g["per_class"]})
        per_class = {
            c: {
                m: statistics.fmean(g["per_class"][c][m] for g in group if c in g["per_class"])
                for m in ("f1", "precision", "recall")
            }
            for c in labels
        }
        out.setdefault(model, {})[str(k)] = {
            "macro_f1": statistics.fmean(f1s),
            "macro_f1_min": min(f1s),
            "macro_f1_max": max(f1s),
            "seeds": len(group),
            "per_class": per_class,
        }
    return out


def format_tables(summary: dict[str, Any], attack_only: bool = True) -> str:
    """Markdown: one macro-F1 table (model x k) and one per-class table (class x k, F1 / precision per
    model), means over seeds."""
    models = sorted(summary)  # a model's variants ("MODEL+proto") right after it
    ks = sorted({int(k) for m in models for k in summary[m]})
    out = ["| model | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for m in models:
        cells = [f"{summary[m][str(k)]['macro_f1']:.3f}" if str(k) in summary[m] else "–" for k in ks]
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    labels = sorted({c for m in models for k in summary[m] for c in summary[m][k]["per_class"]})
    if attack_only:
        labels = [c for c in labels if c != BENIGN_LABEL]
    out += ["", "| class | k | " + " | ".join(models) + " |", "|---" * (len(models) + 2) + "|"]
    for c in labels:
        for k in ks:
            cells = []
            for m in models:
                pc = summary[m].get(str(k), {}).get("per_class", {}).get(c)
                cells.append(f"{pc['f1']:.2f} / {pc['precision']:.2f}" if pc else "–")
            out.append(f"| {c} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(out)
