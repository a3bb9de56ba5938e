"""Sample-level DP-SGD for :class:`~fedids.model.gru.GRUDetector` with Opacus.

Opacus computes per-sample gradients with module hooks and has none for ``nn.GRU`` (cuDNN fuses the
whole recurrence), so training runs on a twin model whose GRU is ``opacus.layers.DPGRU``: the same
equations built from ``nn.Linear`` layers. Weights are copied into the twin before training and back
into the caller's :class:`GRUDetector` afterwards, so everything else in fedids (federation, export,
streaming) keeps seeing a plain ``nn.GRU``.

Guarantees
----------
* Neighbouring relation: add or remove *one flow window* (one training row: a flow together with its
  host's preceding flows, and its label) from the rows this call trains on, i.e. the client's own
  local data. Each row's gradient is clipped to L2 norm ``max_grad_norm`` and every step adds
  Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm``; batches are drawn by
  Poisson sampling with rate ``batch_size / n_rows``.
* Accounting: Opacus' RDP accountant over all steps of this call; ``epsilon`` is what it reports for
  ``target_delta``. It covers the model returned by this call and anything computed from it.
* Across federated rounds (:func:`calibrate_noise`, :func:`epsilon_spent`): every round runs the same
  mechanism (same rows, sample rate and noise), so ``r`` rounds compose into one RDP account of
  ``r * steps_per_round`` steps; a client calibrates its noise once for all planned rounds and reports
  the account after the rounds so far (an upper bound if it sat some rounds out). Clients hold disjoint
  rows, so the global model built from all of them protects each flow window at the largest client
  epsilon (parallel composition; the aggregation is post-processing).
* Not covered: a single flow appears in up to ``window`` windows (its own and those of its host's next
  flows), so protecting one *flow* (rather than one window) costs up to ``window`` times the group
  privacy; protecting a whole host or the whole client needs more again.
* Not covered: client-level privacy across federated rounds. Each round's call is a separate
  mechanism on the same rows; the per-round epsilons compose (sum them, or account all rounds'
  steps together), and client-level DP (:mod:`fedids.privacy.dp`) is accounted separately.
* Not covered: data-dependent choices made outside DP-SGD. When ``class_weights`` is None they are
  computed from the local label counts, and ``TrainConfig.absent_logit_scale`` depends on which classes
  are present; pass public (e.g. server-provided) weights and keep the scale at 1.0 for a strict
  guarantee. ``n_rows`` itself is treated as public, as Opacus does.
* Privacy randomness is nobody's seed: the Gaussian noise comes from a ChaCha20 keystream keyed by
  ``os.urandom`` (:mod:`fedids.privacy.secure_random`), and Poisson sampling from a generator seeded by
  ``os.urandom``, never from ``config.seed``, which the server knows. Two runs with the same seed differ.
* Not covered: floating-point side channels of Gaussian sampling (``secure_mode`` is off).
"""

from __future__ import annotations

import math
import os
import time
import types
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.layers import DPGRU
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedids.data.windows import gather_windows
from fedids.model.gru import GRUDetector
from fedids.model.train import TrainConfig, TrainResult, compute_class_weights

_GRU_TENSORS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Optimizer steps per epoch of :func:`fit_dpsgd`: the batches of its (non-private) loader."""
    if n_rows < 1 or batch_size < 1:
        raise ValueError("n_rows and batch_size must be >= 1")
    return math.ceil(n_rows / min(batch_size, n_rows))


def sample_rate(n_rows: int, batch_size: int) -> float:
    """The Poisson sample rate :func:`fit_dpsgd` trains at: Opacus uses 1 / (batches per epoch)."""
    return 1.0 / steps_per_epoch(n_rows, batch_size)


class _QuietRDP(warnings.catch_warnings):
    """Silences Opacus' "optimal order is the largest alpha": the bound is valid, only looser."""

    def __enter__(self):
        entered = super().__enter__()
        warnings.filterwarnings("ignore", message="Optimal order")
        return entered


def epsilon_spent(
    noise_multiplier: float, rate: float, steps: int, delta: float, releases: tuple[float, int] = (0.0, 0)
) -> float:
    """Epsilon (RDP, Opacus' accountant) of ``steps`` DP-SGD steps at ``rate`` and ``noise_multiplier``,
    composed with ``releases = (sigma, count)``: ``count`` unsampled Gaussian releases of statistics of the
    same windows at noise multiplier ``sigma`` (the head calibration's moments and confusion sums)."""
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, rate, steps)]
    if releases[1]:
        accountant.history.append((releases[0], 1.0, releases[1]))
    with _QuietRDP():
        return float(accountant.get_epsilon(delta=delta))


def calibrate_noise(
    target_epsilon: float, delta: float, rate: float, steps: int, releases: tuple[float, int] = (0.0, 0)
) -> float:
    """The smallest noise multiplier (to 0.01 in epsilon) whose ``steps`` steps, with ``releases`` (see
    :func:`epsilon_spent`), spend at most ``target_epsilon`` at ``delta`` (Opacus' RDP accountant)."""
    if not target_epsilon > 0 or steps < 1:
        raise ValueError("target epsilon must be > 0 and steps >= 1")
    if not releases[1]:
        with _QuietRDP():
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=rate,
                    steps=steps,
                    accountant="rdp",
                    epsilon_tolerance=0.01,
                )
            )
    if epsilon_spent(1e6, rate, steps, delta, releases) >= target_epsilon:
        raise ValueError(
            f"the calibration releases alone (noise {releases[0]:g}, {releases[1]} releases) spend the "
            f"whole epsilon {target_epsilon:g}: raise their noise or the target"
        )
    lo, hi = 0.0, 1.0
    while epsilon_spent(hi, rate, steps, delta, releases) > target_epsilon:
        lo, hi = hi, hi * 2.0
    while epsilon_spent(hi, rate, steps, delta, releases) < target_epsilon - 0.01 and hi - lo > 1e-4:
        mid = (lo + hi) / 2.0  # invariant: hi is within budget
        if epsilon_spent(mid, rate, steps, delta, releases) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class DPSGDResult:
    """What :func:`fit_dpsgd` returns: the training log and the spent ``(epsilon, delta)``."""

    result: TrainResult
    epsilon: float
    delta: float


class _DPGRUDetector(nn.Module):
    """:class:`GRUDetector` with its GRU swapped for Opacus' ``DPGRU``: same inputs, outputs, equations."""

    def __init__(self, n_inputs: int, n_classes: int, hidden: int) -> None:
        super().__init__()
        self.gru = DPGRU(n_inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(windows)
        return self.head(out[:, -1, :])


def _dpgru_tensor(dpgru: DPGRU, name: str) -> torch.Tensor:
    # DPGRU keeps layer 0's weights in cell ``l0`` as two Linear layers ``ih``/``hh`` whose gate rows are
    # ordered (reset, update, new) exactly like nn.GRU's, so ``weight_ih_l0`` <-> ``l0.ih.weight`` etc.
    kind, matrix = name.split("_")
    return getattr(getattr(dpgru.l0, matrix), kind)


@torch.no_grad()
def to_dp_model(model: GRUDetector) -> _DPGRUDetector:
    """A fresh twin of ``model`` whose GRU is a ``DPGRU``, holding copies of ``model``'s weights.

    The twin maps ``(batch, window, n_inputs)`` float32 to ``(batch, n_classes)`` logits like ``model``.
    """
    if model.gru.num_layers != 1 or model.gru.bidirectional or not model.gru.batch_first:
        raise ValueError("only a one-layer, unidirectional, batch_first GRU has a DPGRU twin here")
    twin = _DPGRUDetector(model.n_inputs, model.n_classes, model.hidden)
    for name in _GRU_TENSORS:
        _dpgru_tensor(twin.gru, name).copy_(getattr(model.gru, f"{name}_l0"))
    twin.head.load_state_dict(model.head.state_dict())
    return twin


@torch.no_grad()
def copy_back(twin: nn.Module, model: GRUDetector) -> None:
    """Copy a :func:`to_dp_model` twin's weights into ``model`` in place (the inverse mapping)."""
    inner = getattr(twin, "_module", twin)  # unwrap Opacus' GradSampleModule
    if not isinstance(inner, _DPGRUDetector):
        raise TypeError(f"{type(inner).__name__} is not a to_dp_model twin")
    for name in _GRU_TENSORS:
        getattr(model.gru, f"{name}_l0").copy_(_dpgru_tensor(inner.gru, name))
    model.head.load_state_dict(inner.head.state_dict())
    # nn.GRU keeps a flattened copy of its weights for cuDNN; re-point it at the updated tensors.
    model.gru.flatten_parameters()


def _per_sample_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, cfg: TrainConfig
) -> torch.Tensor:
    # Unlike fit()'s loss, nothing is normalised by the batch's total weight: that would make one row's
    # gradient depend on the other rows' labels and break the per-sample sensitivity bound DP-SGD needs.
    logp = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    loss = -weight[target] * logp
    if cfg.loss == "focal":
        loss = loss * (1.0 - logp.exp()).clamp_min(0.0) ** cfg.focal_gamma
    return loss


def fit_dpsgd(
    model: GRUDetector,
    scaled: np.ndarray,
    windows: np.ndarray,
    targets: np.ndarray,
    config: TrainConfig,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    target_delta: float = 1e-5,
    class_weights: np.ndarray | None = None,
) -> DPSGDResult:
    """Train ``model`` in place with DP-SGD (Opacus, Adam) on the rows given by ``windows`` / ``targets``.

    Parameters
    ----------
    model : the detector to train; its weights are replaced by the trained ones.
    scaled : float32 ``(n_flows, n_features)``, scaled flow features.
    windows : int64 ``(n_rows, window)`` window indices into ``scaled`` (see :mod:`fedids.data.windows`).
    targets : int64 ``(n_rows,)`` class indices; rows with target ``-1`` are skipped (and are not
        counted in the sample rate).
    config : ``epochs``, ``batch_size`` (the *expected* Poisson batch size), ``lr``, ``loss`` and
        ``seed`` are used; ``max_grad_norm`` is not (the DP clip norm is the argument below).
        ``proximal_mu > 0`` is refused: its gradient is not per-sample and Opacus would discard it.
    noise_multiplier : Gaussian noise standard deviation as a multiple of ``max_grad_norm`` (> 0).
    max_grad_norm : per-sample gradient L2 clip norm (> 0).
    target_delta : the delta at which epsilon is reported.
    class_weights : float32 ``(n_classes,)``; default :func:`compute_class_weights` of the local counts.

    Returns
    -------
    DPSGDResult with ``result.losses`` (mean per-sample loss per epoch, weighted), ``result.steps``
    (optimizer steps, empty Poisson batches included), ``result.examples`` (rows used) and the
    ``epsilon`` spent at ``delta = target_delta``. See the module docstring for what it guarantees.
    """
    if noise_multiplier <= 0 or max_grad_norm <= 0:
        raise ValueError("noise_multiplier and max_grad_norm must be positive")
    if not 0 < target_delta < 1:
        raise ValueError(f"target_delta must be in (0, 1), got {target_delta}")
    if config.proximal_mu > 0:
        raise ValueError("proximal_mu > 0 is not supported under DP-SGD")
    keep = targets >= 0
    windows, targets = windows[keep], np.asarray(targets[keep], dtype=np.int64)
    if len(targets) == 0:
        raise ValueError("no rows with a target >= 0 to train on")
    n_classes = model.n_classes
    counts = np.bincount(targets, minlength=n_classes)
    if class_weights is None:
        class_weights = compute_class_weights(counts)
    weight = torch.as_tensor(class_weights, dtype=torch.float32)
    logit_scale = torch.as_tensor(np.where(counts > 0, 1.0, config.absent_logit_scale), dtype=torch.float32)

    # Sampling: a generator seeded from the OS, not from config.seed (which the server knows).
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "big") >> 1)
    twin = to_dp_model(model)
    # The loader yields row numbers only; windows are gathered per batch, as in fit(), so memory stays
    # O(n_flows * n_features).
    rows = TensorDataset(torch.arange(len(targets)))
    loader = DataLoader(rows, batch_size=min(config.batch_size, len(targets)), generator=gen)
    optimizer = torch.optim.Adam(twin.parameters(), lr=config.lr)
    with warnings.catch_warnings():
        # Opacus warns that secure_mode is off; that limitation is stated in the module docstring.
        warnings.filterwarnings("ignore", message=".*[Ss]ecure.*")
        engine = PrivacyEngine(accountant="rdp")
        dp_model, dp_optimizer, dp_loader = engine.make_private(
            module=twin,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            loss_reduction="sum",
        )
    _secure_noise(dp_optimizer)

    result = TrainResult(examples=len(targets))
    start = time.perf_counter()
    dp_model.train()
    with warnings.catch_warnings():
        # Opacus' per-sample hooks fire on the first layer, whose input needs no gradient: harmless.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(config.epochs):
            total, seen = 0.0, 0
            for (idx,) in dp_loader:
                batch = idx.numpy()
                x = torch.from_numpy(gather_windows(scaled, windows[batch]))
                y = torch.from_numpy(targets[batch])
                dp_optimizer.zero_grad()
                if len(batch):
                    loss = _per_sample_loss(dp_model(x) * logit_scale, y, weight, config).sum()
                    loss.backward()
                    total += float(loss.detach())
                    seen += len(batch)
                else:
                    # An empty Poisson batch still takes a (pure noise) step: skipping it would reveal that
                    # the batch was empty, which the accountant does not allow for.
                    for p in dp_model.parameters():
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
                dp_optimizer.step()
                result.steps += 1
            result.losses.append(total / max(seen, 1))
    result.seconds = time.perf_counter() - start
    copy_back(dp_model, model)
    epsilon = float(engine.get_epsilon(delta=target_delta))
    return DPSGDResult(result=result, epsilon=epsilon, delta=target_delta)


def _secure_noise(optimizer) -> None:  # noqa: ANN001 (Opacus' DPOptimizer)
    """Make ``optimizer`` add its Gaussian noise from :class:`~fedids.privacy.secure_random.SecureGaussian`
    instead of a torch generator (Opacus' ``add_noise`` with only the source of the noise replaced)."""
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    from fedids.privacy.secure_random import SecureGaussian

    source = SecureGaussian()

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            noise = torch.from_numpy(source.normal(tuple(p.summed_grad.shape), std)).to(p.summed_grad.dtype)
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.add_noise = types.MethodType(add_noise, optimizer)
