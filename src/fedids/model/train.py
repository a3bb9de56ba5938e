"""Training and inference loops for :class:`~fedids.model.gru.GRUDetector` (plain PyTorch).

Inputs are always the scaled flow matrix ``(n_flows, n_features)`` plus window indices
``(n_rows, window)`` from :mod:`fedids.data.windows`; windows are gathered batch by batch so memory
stays ``O(n_flows * n_features)`` rather than ``O(n_flows * window * n_features)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedids.data.windows import gather_windows
from fedids.model.discriminant import gaussian_discriminant
from fedids.model.gru import GRUDetector


@dataclass(frozen=True)
class TrainConfig:
    """Local training hyper-parameters.

    ``loss`` is ``"focal"`` (focal loss with class weights, gamma ``focal_gamma``) or ``"weighted_ce"``.
    ``proximal_mu > 0`` adds FedProx's proximal term ``mu/2 * ||w - w_global||^2``.
    ``absent_logit_scale < 1`` is FedRS's restricted softmax (Li & Zhan, KDD 2021): logits of classes absent
    from the local data are scaled by it, so a client that never sees a class does not keep pushing that
    class's output down; 1.0 (centralized training) changes nothing.
    """

    epochs: int = 3
    batch_size: int = 256
    lr: float = 3e-3
    loss: str = "focal"
    focal_gamma: float = 2.0
    max_grad_norm: float = 5.0
    proximal_mu: float = 0.0
    absent_logit_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")
        if self.loss not in ("focal", "weighted_ce"):
            raise ValueError(f"loss must be 'focal' or 'weighted_ce', got {self.loss!r}")


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    steps: int = 0
    examples: int = 0
    seconds: float = 0.0


def compute_class_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse square-root frequency weights, mean 1 over present classes; absent classes get 0.

    The square root tempers the weights: CICIDS2017 spans 5 orders of magnitude between classes.
    """
    counts = np.asarray(counts, dtype=np.float64)
    w = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
    present = counts > 0
    return (w / w[present].mean()).astype(np.float32) if present.any() else w.astype(np.float32)


def _loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    if cfg.loss == "weighted_ce":
        return F.cross_entropy(logits, target, weight=weight)
    logp = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    focal = (1.0 - logp.exp()).clamp_min(0.0) ** cfg.focal_gamma
    w = weight[target]
    return -(w * focal * logp).sum() / w.sum().clamp_min(1e-12)


def _n_classes(model: nn.Module) -> int:
    """The number of classes of a detector (:class:`~fedids.model.gru.GRUDetector`):
    the outputs of its linear ``head``."""
    head = model.head
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{type(model).__name__} has no linear head")
    return head.out_features


def fit(
    model: nn.Module,
    scaled: np.ndarray,
    windows: np.ndarray,
    targets: np.ndarray,
    config: TrainConfig,
    *,
    class_weights: np.ndarray | None = None,
    global_params: list[torch.Tensor] | None = None,
    progress: Callable[[int], None] | None = None,
    epoch_end: Callable[[int], bool] | None = None,
) -> TrainResult:
    """Train ``model`` in place with Adam on the rows given by ``windows`` / ``targets``.

    ``targets`` are int64 class indices ``(n_rows,)``; rows with target ``-1`` are skipped.
    ``progress(n)`` is called after each batch with the number of rows just seen; ``epoch_end(epoch)``
    after each epoch (0-based), and training stops early when it returns True (early stopping).
    """
    keep = targets >= 0
    windows, targets = windows[keep], targets[keep]
    n_classes = _n_classes(model)
    if class_weights is None:
        class_weights = compute_class_weights(np.bincount(targets, minlength=n_classes))
    weight = torch.as_tensor(class_weights, dtype=torch.float32)
    present = np.bincount(targets, minlength=n_classes) > 0
    logit_scale = torch.as_tensor(np.where(present, 1.0, config.absent_logit_scale), dtype=torch.float32)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    mu = config.proximal_mu
    anchors = [p.detach().clone() for p in global_params] if (mu > 0 and global_params) else None
    result = TrainResult(examples=len(targets))
    start = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(targets), generator=gen).numpy()
        total, seen = 0.0, 0
        for lo in range(0, len(order), config.batch_size):
            rows = order[lo : lo + config.batch_size]
            x = torch.from_numpy(gather_windows(scaled, windows[rows]))
            y = torch.from_numpy(targets[rows])
            loss = _loss(model(x) * logit_scale, y, weight, config)
            if anchors is not None:
                loss = loss + (mu / 2) * sum(
                    ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchors)
                )
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            opt.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
            result.steps += 1
            if progress:
                progress(len(rows))
        result.losses.append(total / max(seen, 1))
        if epoch_end is not None and epoch_end(epoch):
            break
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def forward_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    scaled: np.ndarray,
    windows: np.ndarray,
    width: int,
    batch_size: int = 4096,
) -> np.ndarray:
    """``fn`` applied without gradients to the windows in batches: ``(n_rows, width)`` float32."""
    parts = []
    with torch.no_grad():
        for lo in range(0, len(windows), batch_size):
            parts.append(fn(torch.from_numpy(gather_windows(scaled, windows[lo : lo + batch_size]))).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.float32)


def predict_proba(
    model: nn.Module, scaled: np.ndarray, windows: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """Class probabilities ``(n_rows, n_classes)`` float32 for each window."""
    model.eval()
    n_classes = _n_classes(model)
    return forward_batches(lambda x: torch.softmax(model(x), dim=1), scaled, windows, n_classes, batch_size)


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's parameters as float32 numpy arrays, in ``state_dict`` order."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    """Load float32 arrays produced by :func:`get_weights`; shapes must match exactly."""
    keys = list(model.state_dict().keys())
    if len(weights) != len(keys):
        raise ValueError(f"expected {len(keys)} weight arrays, got {len(weights)}")
    state = {}
    for k, w, ref in zip(keys, weights, model.state_dict().values()):
        if tuple(w.shape) != tuple(ref.shape):
            raise ValueError(f"weight {k}: shape {tuple(w.shape)} != {tuple(ref.shape)}")
        state[k] = torch.as_tensor(np.asarray(w, dtype=np.float32))
    model.load_state_dict(state)


def embeddings(
    model: GRUDetector, scaled: np.ndarray, windows: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """The GRU's embedding of each window (its last hidden state, what the heads read): ``(n, hidden)``
    float32, in evaluation mode."""
    model.eval()
    return forward_batches(model.embed, scaled, windows, model.hidden, batch_size)


def fit_prototypes(
    model: GRUDetector, scaled: np.ndarray, windows: np.ndarray, targets: np.ndarray, gated: bool = True
) -> None:
    """Set ``model``'s prototype head from its embedding of these training windows (rows with target
    ``-1`` skipped; classes without a window get none; ``gated``: see :mod:`fedids.model.gru`)."""
    keep = targets >= 0
    emb = embeddings(model, scaled, windows[keep]).astype(np.float64)
    prototypes_from_moments(model, embedding_moments(emb, targets[keep], model.n_classes), gated)


def embedding_moments(
    emb: np.ndarray, targets: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class window ``count (C,)``, embedding ``sum (C, H)`` and ``outer (C, H, H)`` of ``emb`` rows
    grouped by ``targets`` (all >= 0): what the prototype head and CCVR calibration read."""
    hidden = emb.shape[1]
    count, sums, outer = (
        np.zeros(n_classes),
        np.zeros((n_classes, hidden)),
        np.zeros((n_classes, hidden, hidden)),
    )
    for c in np.unique(targets):
        f = emb[targets == c]
        count[c], sums[c], outer[c] = len(f), f.sum(axis=0), f.T @ f
    return count, sums, outer


def prototypes_from_moments(
    model: GRUDetector, moments: tuple[np.ndarray, np.ndarray, np.ndarray], gated: bool = True
) -> None:
    """Give ``model`` the prototype head of class ``moments`` ``(count, sum, outer)``
    (:func:`fedids.model.discriminant.gaussian_discriminant`)."""
    weights, offsets, _ = gaussian_discriminant(*moments)
    model.set_prototypes(weights, offsets, gated=gated)
