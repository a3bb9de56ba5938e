"""Bounded update contributions and the range check of their sum, for the sealed modes (no Flower).

Where the vectors are encrypted or masked (``he``, ``secagg``, ``he+secagg``; flat or across sites) the
server adds vectors it cannot read, so a client could move every coordinate of the aggregate as far as the
fixed-point code allows (``|x| <= 8`` per client, :data:`~fedids.federation.private.SECAGG_CLIP_RANGE`).
Two measures bound what one client can do, without reading any vector:

* **Every honest client bounds its own update** before it is quantised and sealed
  (:func:`bound_proposal`): its proposal ``x_i`` (:func:`fedids.federation.aggregation.propose`) minus the
  proposal ``r`` of a client that did not move is ``lr * (local - w)``; its L2 norm is cut to
  ``lr * B``. ``B`` is the run's published bound (``FederationConfig.update_bound``, checked by every
  client's policy); under client-level DP it is DP's own clip norm ``C`` plus a high-probability bound on
  the norm of the client's Gaussian noise (:func:`effective_bound`; the cut after the noise is
  post-processing and, with probability ``1 - 2e-22``, never fires).
* **Whoever opens a sum checks it** (:func:`check_update_sum`): the summed weights, class shares and metrics
  must lie in the range that at most ``parties`` honest contributions produce, and the weighted update
  part within the weight times ``lr * B`` of the reference (L2, so every coordinate too). The server checks
  the sums it opens (``secagg``, and under ``he`` the operator's evaluator); under ``he`` every client
  checks the sum it decrypts before it trains on it. A failed check fails closed: the sum is refused with a
  logged reason (:class:`SumRangeError`) and the run stops; nobody can tell which client sent the excess.

Threat model: a malicious *client* (device) or *site* that sends any vector it likes, with an honest
opener. An accepted sum moves the global model's body and by-client head rows at most ``lr * B`` (L2)
from the reference, and each class-aware head row at most ``lr * B``, whatever a minority or majority of
clients sent; within that range a client that skips its own bound can still replace the honest update by
any update of norm up to ``B`` (cancelling the honest ones), misreport its weight and class shares within
their totals, or abort the run (denial of service). No range proof shows the server that an individual
sealed vector was bounded (docs/evaluation.md, Three tiers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedids.federation.aggregation import METRICS, UpdateLayout, flatten, propose, unmoved_proposal
from fedids.federation.private import SECAGG_CLIP_RANGE, PrivacyMode
from fedids.federation.robust import reference_proposal

log = logging.getLogger("fedids.bounds")

GAUSS_MARGIN = 10.0
"""``||N(0, s^2 I_d)|| <= s (sqrt(d) + t)`` fails with probability at most ``exp(-t^2 / 2)``: 2e-22 at 10."""
METRIC_MAX = {
    "clients": 1.0,
    "examples": 1.0,
    "local_f1": 1.0,
    "local_f1_clients": 1.0,
}
"""Largest value one honest contribution holds per metric (the rest: the fixed-point range, 8)."""
_REL = 1e-9  # relative slack for float round trips


class SumRangeError(ValueError):
    """An opened sum lies outside what honest bounded contributions can produce: refuse it (fail closed)."""


def effective_bound(clip_norm: float, noise_std: float, size: int) -> float:
    """L2 bound of an honest client's local update: ``clip_norm`` plus, under client-level DP, the norm of
    its ``(size,)`` Gaussian noise of standard deviation ``noise_std`` (``GAUSS_MARGIN`` above its mean)."""
    if not (math.isfinite(clip_norm) and clip_norm > 0) or not noise_std >= 0:
        raise ValueError(f"bound needs clip norm > 0 and noise >= 0, got {clip_norm}, {noise_std}")
    return clip_norm + (noise_std * (math.sqrt(size) + GAUSS_MARGIN) if noise_std else 0.0)


def bound_proposal(
    proposal: list[np.ndarray], reference: list[np.ndarray], radius: float
) -> tuple[list[np.ndarray], float]:
    """Cut ``proposal - reference`` to L2 norm ``radius`` (float64 arrays); returns the bounded proposal
    and the norm before the cut (the client's ``lr * ||local - w||``)."""
    x, r = flatten(proposal), flatten(reference)
    deviation = x - r
    norm = float(np.linalg.norm(deviation))
    if norm > radius:
        deviation *= radius * (1 - _REL) / norm
    shapes = [tuple(np.shape(a)) for a in proposal]
    sizes = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]
    return [p.reshape(s) for p, s in zip(np.split(r + deviation, sizes), shapes)], norm


@dataclass(frozen=True)
class SumBounds:
    """What an opened model-update sum is checked against.

    ``reference``: ``(body + head,)`` in the decoded layout (:func:`fedids.federation.robust.reference_proposal`)
    or None (only the weights and metrics are checked: a party that cannot read the global model);
    ``radius``: the L2 bound of the weighted mean update (``lr * B``, or ``lr * B / (1 - mu)`` measured
    from the previous global model, :func:`radius_from_previous`); ``parties``: the most contributions the
    sum may hold; ``equal_weights``: every client weighs 1 (client-level DP), else weights and class shares
    are shares of federation totals (at most 1 summed); ``atol``: the fixed-point code's error per
    coordinate of the sum."""

    reference: np.ndarray | None
    radius: float
    parties: int
    equal_weights: bool = False
    atol: float = 0.0


def radius_from_previous(server_lr: float, bound: float, server_momentum: float) -> float:
    """The radius for a sum measured from the previous global model ``w`` instead of the unmoved proposal
    ``w - lr mu m``: honest momentum obeys ``||m|| <= mu ||m_prev|| + B < B / (1 - mu)`` in every part of
    the model (body, each head row) once every earlier sum passed, so each part moves at most
    ``lr B / (1 - mu)``. Used by ``he`` clients, who hold the last two global models only."""
    return server_lr * bound / (1.0 - server_momentum)


def _within(value: float, low: float, high: float, what: str, tol: float) -> None:
    if not low - tol <= value <= high + tol:
        raise SumRangeError(f"{what} {value:.6g} outside [{low:g}, {high:g}]")


def _deviation(what: str, part: np.ndarray, weight: float, reference: np.ndarray, b: SumBounds) -> None:
    """``||part - weight * reference|| <= weight * radius`` plus the fixed-point error."""
    norm = float(np.linalg.norm(part - weight * reference))
    tol = b.atol * (math.sqrt(part.size) + float(np.linalg.norm(reference))) + _REL * weight * b.radius
    if norm > weight * b.radius + tol:
        raise SumRangeError(
            f"{what}: weighted update norm {norm:.6g} exceeds {weight:.6g} x the bound {b.radius:.6g}"
        )


def check_update_sum(layout: UpdateLayout, total: np.ndarray, bounds: SumBounds, *, per_part: bool) -> None:
    """Raise :class:`SumRangeError` (logged) unless ``total`` ``(layout.length,)`` could be the sum of at
    most ``bounds.parties`` honest, bounded contributions (:func:`~fedids.federation.aggregation.update_contribution`).

    ``per_part``: check the body and each head row on its own (a reference from the previous global model,
    :func:`radius_from_previous`); else the body with the by-client rows as one vector (the exact reference).
    """
    try:
        _check(layout, np.asarray(total, np.float64), bounds, per_part)
    except SumRangeError as err:
        log.error("refused a sum out of range: %s", err)
        raise


def _check(layout: UpdateLayout, total: np.ndarray, b: SumBounds, per_part: bool) -> None:
    if total.shape != (layout.length,) or not np.isfinite(total).all():
        raise SumRangeError(f"sum of shape {total.shape} is not {layout.length} finite values")
    body_n, head_n, c = layout.body_size, layout.head_size, layout.n_classes
    weight = float(total[body_n + 2 * head_n])
    shares = total[body_n + 2 * head_n + 1 : body_n + 2 * head_n + 1 + c]
    tol, n = b.atol + _REL, b.parties
    _within(weight, 0.0, float(n) if b.equal_weights else 1.0, "summed weight", tol)
    if not weight > tol:
        raise SumRangeError("the sum holds no weight")
    for k, share in enumerate(shares):
        _within(float(share), 0.0, 1.0, f"summed share of class {k}", tol)
    for name, value in zip(METRICS, total[-len(METRICS) :]):
        low = 1.0 if name == "clients" else 0.0
        high = (1.0 if name == "examples" else float(n)) * METRIC_MAX.get(name, 8.0)
        _within(float(value), low, high, f"summed metric {name}", tol * n)
    if b.reference is None:
        return
    by_class = total[body_n : body_n + head_n].reshape(c, -1)
    by_client = total[body_n + head_n : body_n + 2 * head_n]
    rows_ref = b.reference[body_n:].reshape(c, -1)
    if per_part:
        _deviation("body", total[:body_n], weight, b.reference[:body_n], b)
        for k, row in enumerate(by_client.reshape(c, -1)):
            _deviation(f"head row {k}", row, weight, rows_ref[k], b)
    else:
        block = np.concatenate([total[:body_n], by_client])
        _deviation("body and head", block, weight, b.reference, b)
    for k in range(c):
        if shares[k] > tol:
            _deviation(f"class-aware head row {k}", by_class[k], float(shares[k]), rows_ref[k], b)


# ------------------------------------------------------------------------------ where they apply
def instruction_bound(ins: Any, size: int) -> float:
    """The L2 bound of each honest local update a message's instructions imply (``ins``: a
    :class:`~fedids.federation.messages.ModelInstructions`; ``size``: the model's parameters)."""
    return effective_bound(ins.clip_norm, ins.noise_std, size)


def unmoved_reference(
    layout: UpdateLayout,
    current: list[np.ndarray],
    previous: list[np.ndarray] | None,
    server_lr: float,
    server_momentum: float,
) -> np.ndarray:
    """The proposal of a client that did not move (``w - lr mu m``), in the decoded layout: the point each
    update is measured from (a site's defence, the checks of an opened sum)."""
    return reference_proposal(layout, unmoved_proposal(current, previous, server_lr, server_momentum))


def bound_client_proposal(
    ins: Any, global_weights: list[np.ndarray], momentum: list[np.ndarray] | None, proposal: list[np.ndarray]
) -> list[np.ndarray]:
    """An honest client's proposal, its update cut to the instructions' bound in the sealed modes (the
    plaintext modes' vectors are seen, and bounded at a site, as they are). A sealed run without a bound
    is refused (ValueError): the client's policy requires one."""
    if not PrivacyMode.parse(ins.privacy).sealed:
        return proposal
    if not ins.clip_norm > 0:
        raise ValueError("a sealed run without an update bound (clip-norm): refused")
    size = sum(int(np.size(w)) for w in global_weights)
    reference = propose(
        global_weights, momentum, global_weights, server_lr=ins.server_lr, server_momentum=ins.server_momentum
    )
    radius = ins.server_lr * instruction_bound(ins, size)
    bounded, norm = bound_proposal(proposal, reference, radius)
    if norm > radius:
        log.info("update of L2 norm %.4g bounded to %.4g before sealing", norm / ins.server_lr, radius)
    return bounded


def check_round_sum(
    layout: UpdateLayout,
    total: np.ndarray | None,
    config: Mapping,
    models: Mapping,
    parties: int,
    atol: float,
) -> None:
    """The server's check of a training sum it opened in a sealed mode (``secagg``; ``he`` through the
    operator's evaluator), against the unmoved proposal of the global models ``models`` (``current``,
    ``previous``: objects with a ``plain`` list of arrays or None) and the round's instructions ``config``."""
    from fedids.federation.messages import ModelInstructions

    ins = ModelInstructions.from_config(config)
    mode = PrivacyMode.parse(ins.privacy)
    current, previous = models["current"], models.get("previous")
    if total is None or not mode.sealed or current is None or current.plain is None:
        return
    old = previous.plain if previous is not None else None
    reference = unmoved_reference(layout, current.plain, old, ins.server_lr, ins.server_momentum)
    radius = ins.server_lr * instruction_bound(ins, layout.model_size)
    equal = mode.dp or _shared_dpsgd(config)
    check_update_sum(layout, total, SumBounds(reference, radius, parties, equal, atol), per_part=False)


def site_check(
    layout: UpdateLayout, config: Mapping, models: Mapping
) -> Callable[[int, np.ndarray], None] | None:
    """A site's check of each device's plaintext vector in a sealed run (a device out of range is left out
    of the site's sum): the weights and metrics always, the update where the site reads the global model
    (every sealed mode but ``he``)."""
    from fedids.federation.messages import ModelInstructions

    ins = ModelInstructions.from_config(config)
    mode = PrivacyMode.parse(ins.privacy)
    if not mode.sealed:
        return None
    current, previous = models["current"], models.get("previous")
    reference = None
    if not mode.he and current is not None and current.plain is not None:
        old = previous.plain if previous is not None else None
        reference = unmoved_reference(layout, current.plain, old, ins.server_lr, ins.server_momentum)
    bounds = SumBounds(reference, ins.server_lr * instruction_bound(ins, layout.model_size), 1, mode.dp)

    def check(node: int, vector: np.ndarray) -> None:
        check_update_sum(layout, vector, bounds, per_part=False)

    return check


def check_opened_sum(
    layout: UpdateLayout, total: np.ndarray, previous: list[np.ndarray], ins: Any, quantisation: Mapping
) -> None:
    """An ``he`` client's check of the training sum it decrypted (``total``), measured from the previous
    global model ``previous`` (:func:`radius_from_previous`); ``quantisation``: the sealed sum's SecAgg
    configuration (its parties and fixed-point error). A sealed run without a bound fails closed."""
    from fedids.privacy.secagg import SecAggConfig

    if not ins.clip_norm > 0:
        raise SumRangeError("an encrypted sum without an update bound to check it against")
    code = SecAggConfig.from_dict(quantisation)
    parties = code.n_clients * max(1, round(code.clip_range / SECAGG_CLIP_RANGE))
    bound = instruction_bound(ins, layout.model_size)
    bounds = SumBounds(
        reference_proposal(layout, previous),
        radius_from_previous(ins.server_lr, bound, ins.server_momentum),
        parties,
        PrivacyMode.parse(ins.privacy).dp,
        code.n_clients * code.quantization_error_bound,
    )
    check_update_sum(layout, total, bounds, per_part=True)


def _shared_dpsgd(config: Mapping) -> bool:
    """Whether a training message's config asks for distributed DP-SGD (equal client weights)."""
    return int(config.get("dpsgd-noise-shares", 0)) > 0


def model_bound_fields(config: Any, mode: PrivacyMode) -> dict[str, Any]:
    """What bounded a run's training sums, as :class:`~fedids.federation.messages.ModelInstructions` fields
    (``config``: the :class:`~fedids.federation.config.FederationConfig`): the ``he`` clients check the
    final sum with them. Under dp the noise std of a client that carries all the noise (the largest)."""
    fields: dict[str, Any] = {"server_momentum": float(config.server_step[1])}
    if not mode.sealed:
        return fields
    if not mode.dp:
        return fields | {"clip_norm": float(config.update_bound), "noise_std": 0.0}
    from fedids.federation.policy import PrivacyPolicy

    sigma = PrivacyPolicy.from_config(config).client_noise_multiplier()
    return fields | {"clip_norm": float(config.clip_norm), "noise_std": sigma * float(config.clip_norm)}


__all__ = [
    "GAUSS_MARGIN",
    "SumBounds",
    "SumRangeError",
    "bound_client_proposal",
    "bound_proposal",
    "check_opened_sum",
    "check_round_sum",
    "check_update_sum",
    "effective_bound",
    "model_bound_fields",
    "radius_from_previous",
    "site_check",
    "unmoved_reference",
]
