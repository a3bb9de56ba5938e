"""Can a DP release of the class statistics give a DP-SGD model the head its features allow?

Issue 13's accuracy gap on the real samples is one class: SQL injection, 12 training windows on one
client. A plaintext, class-balanced read-out of the final DP-SGD model's GRU embedding separates it, so the
question is whether any Gaussian release of per-class statistics at epsilon 8 per window can carry it.
For each finished DP-SGD run given (`fedids federate ... --dpsgd-epsilon 8 --out DIR`), in one process:

* `linear`: the run's own head on its test flows;
* `lda exact`: linear discriminant analysis on the unit-normalised embedding (per-class means, one pooled
  covariance with 10% shrinkage, flat prior) from the clients' exact, un-noised training-window sums: an
  upper bound no DP run may use;
* `lda sigma S shares T`: the same from a Gaussian release of each client's per-class counts, sums and its
  total outer product of unit vectors (one window changes them by at most sqrt(3) in L2, a smaller bound
  than the calibration's sqrt(1 + 2H) = 11.3) at noise multiplier S, split in T SecAgg shares (1: each
  client adds all of it; 7: a SecAgg threshold of 7 of 10); the sum's small classes debiased, classes
  with a noisy count under 3 noise stds left out. `--draws` noise draws each (a seeded NumPy generator:
  this simulates noise, it protects nothing).

Beside each S, the epsilon that one such release alone costs at delta 1e-5 (RDP, dp-accounting), which
the run's DP-SGD would have to give up. Writes benchmarks/results/dp_head.json (or --out).

    .venv/bin/fedids federate $REAL --clients 10 --partition dirichlet:0.5 --split label-time --rounds 10 \\
        --dpsgd-epsilon 8 --out runs/dp-dirichlet
    .venv/bin/python benchmarks/bench_dp_head.py --runs runs/dp-dirichlet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from _common import load_run, write_result
from fedids.federation.client import LOCAL_VAL_FRACTION, LOCAL_VAL_SPLIT
from fedids.model.train import embeddings
from fedids.task import prepare

SENSITIVITY = np.sqrt(3.0)  # count 1, unit vector 1, its outer product 1 (Frobenius)
SHRINK = 0.1
MIN_STDS = 3.0


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def run_embeddings(run: Path) -> dict:
    """Per-client unit training embeddings and labels, test embeddings and labels, the run's head."""
    cfg, detector, data = load_run(run)
    model = detector.model
    model.set_prototypes(None)
    test = data.test_rows
    out = {
        "labels": list(detector.vocabulary.labels),
        "test": embeddings(model, detector.scaler.transform(data.features), data.windows[test]).astype(float),
        "test_y": detector.vocabulary.encode(data.labels[test]),
        "head": (model.head.weight.detach().numpy(), model.head.bias.detach().numpy()),
        "clients": [],
    }
    for path in sorted((run / "partitions").glob("*.parquet")):
        d = prepare(
            pd.read_parquet(path),
            window=cfg["window"],
            test_fraction=LOCAL_VAL_FRACTION,
            split=LOCAL_VAL_SPLIT,
        )
        rows = d.train_rows
        x = embeddings(model, detector.scaler.transform(d.features), d.windows[rows]).astype(float)
        y = detector.vocabulary.encode(d.labels[rows])
        out["clients"].append((unit(x[y >= 0]), y[y >= 0]))
    return out


def release(clients: list, n: int, sigma: float, shares: int, rng: np.random.Generator) -> tuple:
    """Summed (noised) per-class counts, sums and the total outer product."""
    hidden = clients[0][0].shape[1]
    count, sums, outer = np.zeros(n), np.zeros((n, hidden)), np.zeros((hidden, hidden))
    std = sigma * SENSITIVITY / np.sqrt(shares)
    for x, y in clients:
        c, s = np.bincount(y, minlength=n).astype(float), np.zeros((n, hidden))
        np.add.at(s, y, x)
        t = x.T @ x
        if sigma > 0:
            c = c + rng.standard_normal(n) * std
            s = s + rng.standard_normal((n, hidden)) * std
            noise = rng.standard_normal((hidden, hidden)) * std
            t = t + (noise + noise.T) / np.sqrt(2.0)
        count, sums, outer = count + c, sums + s, outer + t
    return count, sums, outer


def lda_predict(test: np.ndarray, count, sums, outer, count_std: float) -> np.ndarray:
    """LDA on unit vectors from (noised) sums; classes under MIN_STDS noise stds of count are left out."""
    hidden = sums.shape[1]
    use = count >= max(2.0, MIN_STDS * count_std)
    n = np.where(use, count, 1.0)
    means = sums / n[:, None]
    within = (outer - sum(np.outer(sums[c], sums[c]) / n[c] for c in np.flatnonzero(use))) / count[use].sum()
    values, vectors = np.linalg.eigh((within + within.T) / 2)
    within = (vectors * np.maximum(values, 0.0)) @ vectors.T
    within += SHRINK * np.trace(within) / hidden * np.eye(hidden)
    precision = np.linalg.inv(within)
    weight = means @ precision
    bias = -0.5 * np.einsum("ch,ch->c", weight, means) + 0.5 * (count_std / n) ** 2 * np.trace(precision)
    scores = unit(test) @ weight.T + np.where(use, bias, -np.inf)
    return scores.argmax(axis=1)


def single_release_epsilon(sigma: float, delta: float = 1e-5) -> float:
    import dp_accounting

    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(sigma))
    return float(accountant.get_epsilon(delta))


def scores(y: np.ndarray, pred: np.ndarray, n: int) -> dict:
    per_class = f1_score(y, pred, labels=list(range(n)), average=None, zero_division=0)
    return {"macro_f1": float(per_class.mean()), "per_class_f1": [float(v) for v in per_class]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--sigmas", default="1,2,3")
    parser.add_argument("--shares", default="1,7")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--out", default="dp_head")
    args = parser.parse_args(argv)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    shares_list = [int(s) for s in args.shares.split(",")]
    rng = np.random.default_rng(0)
    results = []
    for run in args.runs:
        e = run_embeddings(run)
        n, y = len(e["labels"]), e["test_y"]
        weight, bias = e["head"]
        row = {"run": str(run), "labels": e["labels"], "test_support": np.bincount(y, minlength=n).tolist()}
        row["linear"] = scores(y, (e["test"] @ weight.T + bias).argmax(axis=1), n)
        row["lda_exact"] = scores(y, lda_predict(e["test"], *release(e["clients"], n, 0.0, 1, rng), 0.0), n)
        row["released"] = []
        for sigma in sigmas:
            for shares in shares_list:
                count_std = sigma * SENSITIVITY * np.sqrt(len(e["clients"]) / shares)
                draws = [
                    scores(
                        y, lda_predict(e["test"], *release(e["clients"], n, sigma, shares, rng), count_std), n
                    )
                    for _ in range(args.draws)
                ]
                row["released"].append(
                    {
                        "sigma": sigma,
                        "shares": shares,
                        "epsilon_of_this_release_alone": single_release_epsilon(sigma),
                        "macro_f1_mean": float(np.mean([d["macro_f1"] for d in draws])),
                        "per_class_f1_mean": np.mean([d["per_class_f1"] for d in draws], axis=0).tolist(),
                        "draws": draws,
                    }
                )
        results.append(row)
        print(f"{run}: linear {row['linear']['macro_f1']:.4f}, exact LDA {row['lda_exact']['macro_f1']:.4f}")
        for r in row["released"]:
            print(
                f"  sigma {r['sigma']} shares {r['shares']} (eps alone {r['epsilon_of_this_release_alone']:.2f}):"
                f" macro-F1 {r['macro_f1_mean']:.4f}, per class {np.round(r['per_class_f1_mean'], 2).tolist()}"
            )
    write_result(args.out, {"runs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
