"""Client-level differential privacy: clipping, (distributed) Gaussian noise and accounting.

Guarantees
----------
* Neighbouring relation: add or remove one *client's* entire contribution (all its flows) in a
  round. Each client clips its update to L2 norm ``clip_norm`` (C) and the aggregate (the sum of
  the clipped updates) carries Gaussian noise of standard deviation ``noise_multiplier * C``;
  the mean is the sum divided by a public count.
* Accounting: Google's ``dp_accounting`` RDP accountant, one
  ``PoissonSampledDpEvent(sample_rate, GaussianDpEvent(noise_multiplier))`` per round, plus one
  ``GaussianDpEvent`` per release of a sum of every client's contribution (the head calibration's).
  fedids passes ``sample_rate = 1``: its clients are picked by a seeded draw the server controls, which
  amplifies nothing.
* Distributed noise (``secagg`` only): each client adds ``N(0, (sigma C)**2 / t)`` with ``t`` the SecAgg
  threshold, so every sum that completes (at least ``t`` contributions) carries at least
  ``N(0, (sigma C)**2)``. Where a reader sees each contribution (``dp`` alone, ``he``, whose shared key a
  client colluding with the server holds), each client adds all of ``N(0, (sigma C)**2)``.
* Noise: :class:`~fedids.privacy.secure_random.SecureGaussian` (ChaCha20 keyed by ``os.urandom``), never a
  seed anyone else knows. Not covered: floating-point side channels of Gaussian sampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from dp_accounting import dp_event
from dp_accounting.mechanism_calibration import ExplicitBracketInterval, calibrate_dp_mechanism
from dp_accounting.rdp import RdpAccountant

from fedids.errors import FedidsError


class PrivacyBudgetExceeded(FedidsError):
    """Another round would push epsilon past the target: training must stop."""


def clip_update(vector: np.ndarray, clip_norm: float) -> tuple[np.ndarray, bool]:
    """Scale an update down to L2 norm at most ``clip_norm``.

    Parameters
    ----------
    vector : numpy.ndarray
        Shape ``(d,)``, float (float32 for model updates), finite.
    clip_norm : float
        C > 0, in the units of the update.

    Returns
    -------
    clipped : numpy.ndarray
        Same shape and dtype; ``vector * min(1, C / ||vector||)``, with
        ``||clipped||_2 <= C`` guaranteed after rounding to the dtype.
    was_clipped : bool
        Whether the norm exceeded C.
    """
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be positive and finite, got {clip_norm}")
    array = np.asarray(vector)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected a 1-D float vector, got {array.dtype} {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("update contains NaN or Inf")
    norm = float(np.linalg.norm(array.astype(np.float64)))
    if norm <= clip_norm:
        return array.copy(), False
    clipped = (array.astype(np.float64) * (clip_norm / norm)).astype(array.dtype)
    # Rounding to float32 can land a hair above C; shave until the bound holds exactly.
    while float(np.linalg.norm(clipped.astype(np.float64))) > clip_norm:
        clipped = (clipped.astype(np.float64) * (1.0 - 2.0**-20)).astype(array.dtype)
    return clipped, True


def add_gaussian_noise(vector: np.ndarray, std: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Add i.i.d. ``N(0, std**2)`` noise to every coordinate.

    Parameters
    ----------
    vector : numpy.ndarray
        Shape ``(d,)``, float.
    std : float
        Standard deviation (>= 0), in the units of the update.
    rng : numpy.random.Generator, optional
        Source of the noise, for tests and simulations that need it reproducible. Privacy noise leaves it
        out: the default is :class:`~fedids.privacy.secure_random.SecureGaussian`, which nobody can re-draw.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``vector``.
    """
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"std must be non-negative and finite, got {std}")
    from fedids.privacy.secure_random import SecureGaussian

    array = np.asarray(vector)
    noise = (
        rng.normal(0.0, std, size=array.shape)
        if rng is not None
        else SecureGaussian().normal(array.shape, std)
    )
    return (array.astype(np.float64) + noise).astype(array.dtype)


def distributed_noise_std(noise_multiplier: float, clip_norm: float, n_clients: int) -> float:
    """Per-client noise std so that the sum of ``n_clients`` shares has std ``sigma * C``.

    Returns ``noise_multiplier * clip_norm / sqrt(n_clients)``.
    """
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1, got {n_clients}")
    if noise_multiplier < 0 or clip_norm <= 0:
        raise ValueError("noise_multiplier must be >= 0 and clip_norm > 0")
    return noise_multiplier * clip_norm / math.sqrt(n_clients)


def _check_delta(target_delta: float) -> None:
    if not 0 < target_delta < 1:
        raise ValueError(f"target_delta must be in (0, 1), got {target_delta}")


def _round_event(noise_multiplier: float, sample_rate: float) -> dp_event.DpEvent:
    return dp_event.PoissonSampledDpEvent(sample_rate, dp_event.GaussianDpEvent(noise_multiplier))


def _epsilon(
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    target_delta: float,
    orders: Sequence[float] | None,
    releases: int = 0,
) -> float:
    if rounds == 0 and releases == 0:
        return 0.0
    accountant = RdpAccountant(orders)
    if rounds:
        accountant.compose(_round_event(noise_multiplier, sample_rate), rounds)
    if releases:
        accountant.compose(dp_event.GaussianDpEvent(noise_multiplier), releases)
    return float(accountant.get_epsilon(target_delta))


class PrivacyAccountant:
    """Client-level (epsilon, delta) spent by federated rounds with the Gaussian mechanism.

    Parameters
    ----------
    noise_multiplier : float
        sigma: noise std on the sum divided by the clip norm (> 0).
    sample_rate : float
        Probability q that a client takes part in a round, in (0, 1].
    orders : sequence of float, optional
        RDP orders; default: ``dp_accounting``'s.

    Examples
    --------
    >>> acc = PrivacyAccountant(noise_multiplier=1.0, sample_rate=1.0)
    >>> acc.step(rounds=10)
    >>> round(acc.epsilon(1e-5), 2) > 0
    True
    """

    def __init__(
        self, noise_multiplier: float, sample_rate: float, orders: Sequence[float] | None = None
    ) -> None:
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise ValueError(f"noise_multiplier must be positive, got {noise_multiplier}")
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.orders = None if orders is None else [float(o) for o in orders]
        self._accountant = RdpAccountant(self.orders)
        self._rounds = 0
        self._releases = 0

    @property
    def rounds(self) -> int:
        """Rounds composed so far."""
        return self._rounds

    def step(self, rounds: int = 1) -> None:
        """Record ``rounds`` more rounds."""
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        if rounds:
            self._accountant.compose(_round_event(self.noise_multiplier, self.sample_rate), rounds)
            self._rounds += rounds

    @property
    def releases(self) -> int:
        """Unsampled Gaussian releases (every client's contribution, e.g. the calibration sums) so far."""
        return self._releases

    def release(self, count: int = 1) -> None:
        """Record ``count`` releases of a sum of every client's contribution, each noised with std
        ``noise_multiplier`` times its sensitivity (no sampling amplification)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if count:
            self._accountant.compose(dp_event.GaussianDpEvent(self.noise_multiplier), count)
            self._releases += count

    def epsilon(self, target_delta: float) -> float:
        """Epsilon spent so far at ``target_delta`` (0 before the first round)."""
        _check_delta(target_delta)
        if self._rounds == 0 and self._releases == 0:
            return 0.0
        return float(self._accountant.get_epsilon(target_delta))

    def epsilon_after(self, rounds: int, target_delta: float, releases: int = 0) -> float:
        """Epsilon that ``rounds`` more rounds and ``releases`` more releases would bring the total to
        (nothing is recorded)."""
        _check_delta(target_delta)
        return _epsilon(
            self.noise_multiplier,
            self.sample_rate,
            self._rounds + rounds,
            target_delta,
            self.orders,
            self._releases + releases,
        )

    def check_budget(self, target_epsilon: float, target_delta: float, rounds: int = 1) -> None:
        """Guard to call before a round: raise if it would exceed the budget.

        Raises
        ------
        PrivacyBudgetExceeded
            ``epsilon_after(rounds, target_delta) > target_epsilon``; the message says so in one
            line, for the command line to print.
        """
        epsilon = self.epsilon_after(rounds, target_delta)
        if epsilon > target_epsilon:
            raise PrivacyBudgetExceeded(
                f"stopping after {self._rounds} rounds: round {self._rounds + rounds} would raise "
                f"epsilon to {epsilon:.3f} > target {target_epsilon:g} (delta={target_delta:g}); "
                f"spent so far: {self.epsilon(target_delta):.3f}"
            )

    def state_dict(self) -> dict[str, object]:
        """JSON-serialisable state (for checkpoints)."""
        return {
            "accountant": "rdp",
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "orders": self.orders,
            "rounds": self._rounds,
            "releases": self._releases,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore the rounds of a checkpoint made with the same mechanism.

        Raises
        ------
        ValueError
            Different accountant, noise multiplier, sample rate or orders, or a bad round count.
        """
        expected = self.state_dict()
        state = {"releases": 0, **state}  # checkpoints written before calibration releases were counted
        if set(state) != set(expected):
            raise ValueError(f"accountant state keys {sorted(state)} != {sorted(expected)}")
        for key in ("accountant", "noise_multiplier", "sample_rate", "orders"):
            if state[key] != expected[key]:
                raise ValueError(
                    f"accountant state has {key}={state[key]!r}, this accountant {expected[key]!r}"
                )
        counts = [state["rounds"], state["releases"]]
        if any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in counts):
            raise ValueError(f"accountant state has an invalid round or release count {counts!r}")
        self._accountant = RdpAccountant(self.orders)
        self._rounds = self._releases = 0
        self.step(int(state["rounds"]))  # type: ignore[call-overload]
        self.release(int(state["releases"]))  # type: ignore[call-overload]


def calibrate_noise_multiplier(
    target_epsilon: float,
    target_delta: float,
    sample_rate: float,
    rounds: int,
    tol: float = 1e-3,
    orders: Sequence[float] | None = None,
    releases: int = 0,
) -> float:
    """Smallest noise multiplier (within ``tol``) that keeps ``rounds`` rounds, and ``releases`` unsampled
    Gaussian releases at the same multiplier (the head calibration's sums), within budget.

    Parameters
    ----------
    target_epsilon : float
        Budget epsilon (> 0).
    target_delta : float
        Budget delta, in (0, 1).
    sample_rate : float
        Client sampling probability per round, in (0, 1].
    rounds : int
        Planned rounds (>= 1).
    tol : float
        Absolute tolerance on the noise multiplier.

    Returns
    -------
    float
        sigma with ``epsilon(sigma) <= target_epsilon``, never above (checked before returning).
        Search: a doubling bracket, then ``dp_accounting.calibrate_dp_mechanism`` (Brent's
        method with a bisection fallback that keeps the non-overshooting end).
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError(f"target_epsilon must be positive, got {target_epsilon}")
    _check_delta(target_delta)
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")

    def epsilon(sigma: float) -> float:
        return _epsilon(sigma, sample_rate, rounds, target_delta, orders, releases)

    # Epsilon falls as sigma grows: find lo (over budget) < hi (within budget).
    hi = 1.0
    while epsilon(hi) > target_epsilon:
        hi *= 2.0
        if hi > 2.0**20:
            raise ValueError("no noise multiplier below 2**20 meets the target")
    lo = hi / 2.0
    while epsilon(lo) <= target_epsilon:
        hi, lo = lo, lo / 2.0
        if lo < tol:
            return hi  # even tiny noise meets the target
    sigma = float(
        calibrate_dp_mechanism(
            make_fresh_accountant=lambda: RdpAccountant(orders),
            make_event_from_param=lambda s: dp_event.ComposedDpEvent(
                [dp_event.SelfComposedDpEvent(_round_event(s, sample_rate), rounds)]
                + ([dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(s), releases)] if releases else [])
            ),
            target_epsilon=target_epsilon,
            target_delta=target_delta,
            bracket_interval=ExplicitBracketInterval(lo, hi),
            tol=tol,
        )
    )
    if epsilon(sigma) > target_epsilon:  # defence in depth: never hand out an overshooting sigma
        sigma = hi
    return sigma
