"""Random draws shared by the generator's stages (vectorised, from the one seeded generator)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(c) for c in counts])`` without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def _lognormal(rng: np.random.Generator, median: npt.ArrayLike, sigma: npt.ArrayLike) -> np.ndarray:
    median = np.asarray(median, dtype=np.float64)
    return np.exp(np.log(np.maximum(median, 1e-9)) + np.asarray(sigma) * rng.standard_normal(median.shape))


def _jitter(rng: np.random.Generator, n: int, sigma: np.ndarray | float) -> np.ndarray:
    """Log-normal factors with median 1: ``exp(sigma * N(0, 1))``, shape ``(n,)``."""
    return np.exp(np.asarray(sigma) * rng.standard_normal(n))


def _choice(rng: np.random.Generator, options: tuple, probs: tuple, n: int) -> np.ndarray:
    return np.asarray(options)[rng.choice(len(options), size=n, p=np.asarray(probs) / np.sum(probs))]
