"""Per-sample gradients of :class:`~fedids.model.gru.GRUDetector` from one batched backward pass.

DP-SGD needs every row's gradient norm and the sum of the clipped gradients. Every parameter of the
detector enters the loss through an affine map (the GRU's input and hidden projections, the head), and a
row's gradient of such a weight is a sum of outer products: for ``gi_t = W_ih x_t + b_ih``,
``grad W_ih = sum_t dgi_t x_t^T``. So one ordinary backward pass through a GRU written with plain tensor
ops (:func:`trace_gru`), asked for the gradients of the *pre-activations* ``gi``, ``gh_t`` and the
logits instead of the weights, gives everything:

* per-sample gradients (:func:`per_sample_grads`), materialised ``(batch, *shape)`` (for tests);
* per-sample norms without materialising them (:func:`sample_norms`, "ghost" norms, Li et al. 2022,
  "Large Language Models Can Be Strong Differentially Private Learners"):
  ``||sum_t a_t b_t^T||_F^2 = sum_{t,s} (a_t . a_s)(b_t . b_s)``, two ``(batch, window, window)`` Gram
  matrices per weight;
* the weighted sum ``sum_b c_b g_b`` of the per-sample gradients (:func:`weighted_grad_sum`): one
  matrix product per weight, the cost of an ordinary weight gradient.

The equations and parameter layout are ``nn.GRU``'s (gate rows ordered reset, update, new; ``h_0 = 0``)::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   h' = (1 - z) * n + z * h

so the gradients are those of the caller's detector itself: no twin model, no weight copies.

Measured at the default size (batch 256, window 10, 78 features + 1, hidden 64, 16 classes, one thread,
CPU milliseconds of one forward+backward, median of 15, ``benchmarks/bench_dpsgd.py`` ``per_step_ms``):
plaintext ``nn.GRU`` 6.8 ms; this module with ghost norms and the clipped sum 10.5 ms; materialised
per-sample gradients clipped and summed as Opacus' optimizer does 18.6 ms; ``torch.func``
``vmap(grad)`` over the same plain-op GRU 70 ms (per-sample gradients only; ``vmap`` over ``nn.GRU``
itself fails). Hence ghost norms in training, and backpropagation through time written by hand
(:func:`trace_gru`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from fedids.model.gru import GRUDetector

#: The detector's parameters in ``model.named_parameters()`` order.
PARAMETER_NAMES = (
    "gru.weight_ih_l0",
    "gru.weight_hh_l0",
    "gru.bias_ih_l0",
    "gru.bias_hh_l0",
    "head.weight",
    "head.bias",
)


@dataclass(frozen=True)
class GRUTrace:
    """A batch's activations and the gradients of the summed loss with respect to the pre-activations.

    ``x`` ``(batch, window, n_inputs)``; ``d_gi`` ``(batch, window, 3 * hidden)`` (input projections);
    ``h_prev`` ``(batch, window, hidden)`` (the hidden state entering step t, zeros at t = 0);
    ``d_gh`` ``(batch, window, 3 * hidden)`` (hidden projections); ``h_last`` ``(batch, hidden)``;
    ``d_logits`` ``(batch, n_classes)``; ``losses`` ``(batch,)`` per-sample losses, float32, detached.
    """

    x: torch.Tensor
    d_gi: torch.Tensor
    h_prev: torch.Tensor
    d_gh: torch.Tensor
    h_last: torch.Tensor
    d_logits: torch.Tensor
    losses: torch.Tensor


def check_detector(model: GRUDetector) -> None:
    """Refuse a detector whose GRU is not the one-layer, unidirectional, batch_first GRU traced here."""
    gru = model.gru
    if gru.num_layers != 1 or gru.bidirectional or not gru.batch_first or not gru.bias:
        raise ValueError("per-sample gradients need a one-layer, unidirectional, batch_first GRU with biases")
    names = tuple(name for name, _ in model.named_parameters())
    if names != PARAMETER_NAMES:
        raise ValueError(f"unexpected detector parameters {names}")


@dataclass(frozen=True)
class _Forward:
    """The forward pass's saved activations: ``rz`` ``(batch, window, 2 * hidden)`` the reset and update
    gates, ``n`` and ``gh_n`` ``(batch, window, hidden)`` the candidate state and ``W_hn h + b_hn``,
    ``hs`` ``(batch, window + 1, hidden)`` the hidden states ``h_0 = 0 .. h_T``."""

    rz: torch.Tensor
    n: torch.Tensor
    gh_n: torch.Tensor
    hs: torch.Tensor


def _forward(gru: torch.nn.GRU, x: torch.Tensor) -> _Forward:
    """nn.GRU's recurrence over ``x`` ``(batch, window, n_inputs)`` with plain ops, activations saved."""
    batch, window, _ = x.shape
    hidden = gru.hidden_size
    w_ih, w_hh, b_ih, b_hh = (
        gru.get_parameter(f"{k}_l0") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )
    gi = F.linear(x, w_ih, b_ih)
    rz = x.new_empty(batch, window, 2 * hidden)
    n = x.new_empty(batch, window, hidden)
    gh_n = x.new_empty(batch, window, hidden)
    hs = x.new_zeros(batch, window + 1, hidden)
    for t in range(window):
        gh = F.linear(hs[:, t], w_hh, b_hh)
        torch.sigmoid(gi[:, t, : 2 * hidden] + gh[:, : 2 * hidden], out=rz[:, t])
        gh_n[:, t] = gh[:, 2 * hidden :]
        torch.tanh(torch.addcmul(gi[:, t, 2 * hidden :], rz[:, t, :hidden], gh_n[:, t]), out=n[:, t])
        hs[:, t + 1] = torch.lerp(n[:, t], hs[:, t], rz[:, t, hidden:])  # (1 - z) * n + z * h
    return _Forward(rz=rz, n=n, gh_n=gh_n, hs=hs)


def _backward(w_hh: torch.Tensor, fwd: _Forward, d_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagation through time by hand from ``d_h`` ``(batch, hidden)``, the gradient of the summed
    loss with respect to ``h_T``: the gradients with respect to ``gi`` and to every step's ``gh``, both
    ``(batch, window, 3 * hidden)``."""
    batch, window, hidden = fwd.n.shape
    d_gi = d_h.new_empty(batch, window, 3 * hidden)
    d_gh = d_h.new_empty(batch, window, 3 * hidden)
    for t in reversed(range(window)):
        rz, n = fwd.rz[:, t], fwd.n[:, t]
        r, z = rz[:, :hidden], rz[:, hidden:]
        d_n_pre = d_h * (1.0 - z) * (1.0 - n * n)  # through h' = (1 - z) n + z h and n = tanh(.)
        d_z = d_h * (fwd.hs[:, t] - n)
        d_rz_pre = torch.cat([d_n_pre * fwd.gh_n[:, t], d_z], dim=1) * rz * (1.0 - rz)  # sigmoid'
        d_gi[:, t, : 2 * hidden] = d_rz_pre
        d_gi[:, t, 2 * hidden :] = d_n_pre
        d_gh[:, t, : 2 * hidden] = d_rz_pre
        d_gh[:, t, 2 * hidden :] = d_n_pre * r
        d_h = d_h * z + d_gh[:, t] @ w_hh
    return d_gi, d_gh


@torch.no_grad()
def trace_gru(
    model: GRUDetector, x: torch.Tensor, per_sample_loss: Callable[[torch.Tensor], torch.Tensor]
) -> GRUTrace:
    """Run ``model`` on ``x`` ``(batch, window, n_inputs)`` with plain tensor ops (``nn.GRU``'s equations)
    and backpropagate ``per_sample_loss(logits).sum()`` to the pre-activations: autograd through the
    loss only, then through time by hand (autograd's per-op bookkeeping cost more than the arithmetic
    at this size: 18.6 ms against 11.4 ms per batch of 256).

    ``per_sample_loss`` maps logits ``(batch, n_classes)`` to losses ``(batch,)``; row b's loss must
    depend on row b's logits only (no batch normalisation), so that the gradient of the sum, restricted
    to row b, is row b's own gradient.
    """
    x = x.detach()
    fwd = _forward(model.gru, x)
    h_last = fwd.hs[:, -1]
    logits = F.linear(h_last, model.head.weight, model.head.bias)
    with torch.enable_grad():
        logits.requires_grad_()
        losses = per_sample_loss(logits)
        (d_logits,) = torch.autograd.grad(losses.sum(), logits)
    d_gi, d_gh = _backward(model.gru.get_parameter("weight_hh_l0"), fwd, d_logits @ model.head.weight)
    return GRUTrace(
        x=x,
        d_gi=d_gi,
        h_prev=fwd.hs[:, :-1],
        d_gh=d_gh,
        h_last=h_last,
        d_logits=d_logits,
        losses=losses.detach(),
    )


def per_sample_grads(trace: GRUTrace) -> dict[str, torch.Tensor]:
    """Every row's gradient of its own loss: ``{name: (batch, *parameter.shape)}``, names as
    :data:`PARAMETER_NAMES`. Materialised (``batch`` times the model's size); training uses
    :func:`sample_norms` and :func:`weighted_grad_sum` instead."""
    return {
        "gru.weight_ih_l0": torch.bmm(trace.d_gi.transpose(1, 2), trace.x),
        "gru.weight_hh_l0": torch.bmm(trace.d_gh.transpose(1, 2), trace.h_prev),
        "gru.bias_ih_l0": trace.d_gi.sum(1),
        "gru.bias_hh_l0": trace.d_gh.sum(1),
        "head.weight": trace.d_logits[:, :, None] * trace.h_last[:, None, :],
        "head.bias": trace.d_logits,
    }


def _outer_sum_sq_norms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||sum_t a[i, t] b[i, t]^T||_F^2`` for every i, from ``(n, T, p)`` and ``(n, T, q)``, float64."""
    gram_a = torch.bmm(a, a.transpose(1, 2)).double()
    gram_b = torch.bmm(b, b.transpose(1, 2)).double()
    return (gram_a * gram_b).sum((1, 2)).clamp_min(0.0)


def sample_norms(trace: GRUTrace) -> torch.Tensor:
    """The L2 norm of every row's whole gradient (all parameters together), ``(batch,)`` float32,
    computed from Gram matrices without materialising the gradients."""
    sq = (
        _outer_sum_sq_norms(trace.d_gi, trace.x)
        + _outer_sum_sq_norms(trace.d_gh, trace.h_prev)
        + trace.d_gi.sum(1).double().pow(2).sum(1)
        + trace.d_gh.sum(1).double().pow(2).sum(1)
        # head: ||dl h^T||^2 = ||dl||^2 ||h||^2, plus the bias ||dl||^2
        + trace.d_logits.double().pow(2).sum(1) * (trace.h_last.double().pow(2).sum(1) + 1.0)
    )
    return sq.sqrt().float()


def weighted_grad_sum(trace: GRUTrace, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sum_b weights[b] * g_b`` for the per-sample gradients ``g_b``: ``{name: parameter.shape}``.

    ``weights`` ``(batch,)``; all ones gives the ordinary gradient of the summed loss.
    """
    # The row weights go on the smaller factor of each outer product (inputs, hidden states).
    x = trace.x * weights[:, None, None]
    h_prev = trace.h_prev * weights[:, None, None]
    n_gates, n_in, n_hidden = trace.d_gi.shape[2], x.shape[2], h_prev.shape[2]
    return {
        "gru.weight_ih_l0": trace.d_gi.reshape(-1, n_gates).T @ x.reshape(-1, n_in),
        "gru.weight_hh_l0": trace.d_gh.reshape(-1, n_gates).T @ h_prev.reshape(-1, n_hidden),
        "gru.bias_ih_l0": weights @ trace.d_gi.sum(1),
        "gru.bias_hh_l0": weights @ trace.d_gh.sum(1),
        "head.weight": (trace.d_logits * weights[:, None]).T @ trace.h_last,
        "head.bias": weights @ trace.d_logits,
    }
