"""Energy-aware client selection and adaptive local epochs under a per-device energy budget.

The paper's "adaptive learning strategies" for IoT gateways that run on a battery or a power cap. The
server keeps an :class:`EnergyLedger`: one entry per client with its device profile, its energy budget
(joules for the whole training) and what it has spent so far. Each round it

1. **excludes** every client whose remaining budget cannot pay for one more round (at one local epoch,
   or at the fixed ``local_epochs`` when epochs are not adaptive): such a client is never asked to train;
2. **selects** among the rest (:func:`select_clients`): ``random`` draws uniformly (as without a budget);
   ``energy`` draws without replacement with probability proportional to the score

   ``score = (remaining / budget) * (cheapest joules per example / this client's joules per example)``

   (the first factor is 1 without a budget). Both factors lie in (0, 1]: clients with more budget left
   and on more efficient hardware are preferred, but every eligible client keeps a chance, so no data
   source is shut out for good. The draw (Efraimidis-Spirakis keys) uses a generator seeded by
   (seed, round): the same seed gives the same selection, and a resumed run (the ledger is saved in
   ``state.json``) makes the same choices as an uninterrupted one;
3. with adaptive epochs (``max_local_epochs > 0``), gives each selected client the most local epochs
   whose estimated round energy fits its per-round share of the budget, ``remaining / rounds left``
   (at least 1, at most ``max_local_epochs``; see :meth:`EnergyLedger.epochs_for`);
4. after the round, **charges** each client that replied for the work and bytes it reported.

Energy model (what a client is charged for one round)::

    cpu_seconds = examples per epoch x epochs x cpu_seconds_per_example_epoch(hidden, window)
    joules      = device.cpu_joules(cpu_seconds) + radio.joules(bytes_up, bytes_down)

with the device and radio profiles of :mod:`fedids.devices` (Wi-Fi). ``examples per epoch``
and ``bytes_up`` are what the client reported for its last round (before its first round: the training
rows its statistics imply); ``cpu_seconds_per_example_epoch`` is a reference cost measured once on this
project's machine. The ledger deliberately charges *work* (examples x epochs) rather than the seconds
the client timed: timings vary from run to run with the machine's load (tens of percent on a busy host),
so a ledger fed with them would make selection, and therefore the whole training, irreproducible. The
clients' measured seconds still go to ``client_seconds`` in the history for the report.

A budget is not overspent: a client is selected only if its remaining budget covers the estimated cost
of the round. The estimate is exact when the client reports the same work and upload size as in its
last round, and an upper bound before its first upload (charged at the full model size); a simulated
client's work never changes, so there ``spent <= budget`` always holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from fedids.devices import DEVICE_PROFILES, RADIO_PROFILES, DeviceProfile, RadioProfile

SELECTIONS: tuple[str, ...] = ("random", "energy")
FLEET_PROFILES: tuple[str, ...] = ("raspberry-pi-4", "jetson-nano-10w", "jetson-nano-5w")
"""The device mix of a simulated fleet, in equal shares (:func:`assign_profiles`)."""
RADIO = "wifi"
"""The radio every client is charged for (the report's energy section uses the same)."""

REFERENCE_CPU_S_PER_EXAMPLE_EPOCH = 8.2e-5
"""CPU seconds of one training example (one window) for one epoch, GRU hidden 64, window 10, batch 128,
one thread, on this project's machine (one core of an AMD EPYC Zen 3, 2.45 GHz): the best of three
``measure_reference_workload(rows=4096)`` runs (0.081-0.083 ms). The clients of the synthetic default
timed 0.08-0.18 ms per example-epoch on the same machine under load."""
_REFERENCE_HIDDEN, _REFERENCE_WINDOW, _FEATURES = 64, 10, 78


def cpu_seconds_per_example_epoch(hidden: int, window: int) -> float:
    """The reference cost scaled to another model size.

    A GRU step costs about ``3 * hidden * (features + hidden)`` multiply-adds and a window has ``window``
    steps, so the cost is scaled by those two ratios (an estimate; exact at the reference size).
    """
    macs = window * hidden * (_FEATURES + hidden)
    reference = _REFERENCE_WINDOW * _REFERENCE_HIDDEN * (_FEATURES + _REFERENCE_HIDDEN)
    return REFERENCE_CPU_S_PER_EXAMPLE_EPOCH * macs / reference


def assign_profiles(client_keys: Iterable[str]) -> dict[str, str]:
    """Device profiles for a simulated fleet: :data:`FLEET_PROFILES` in equal shares (counts differ by
    at most one), dealt in an order fixed by a hash of each key, so the mix is balanced even for a few
    clients and the same keys always get the same devices (across runs, processes and ``--resume``)."""
    from fedids.federation.client_app import derive_seed

    ordered = sorted(set(client_keys), key=lambda k: (derive_seed("device-profile", k), k))
    return {key: FLEET_PROFILES[i % len(FLEET_PROFILES)] for i, key in enumerate(ordered)}


def resolve_profile(reported: str | None, assigned: str) -> tuple[str, str | None]:
    """The profile the server uses for a client and, when it ignores what the client reported, why.

    A client may report its hardware (node config ``device-profile``); without a report, or with a name
    that has no known power figure (which cannot be charged), the simulation's ``assigned`` one is used.
    """
    if not reported:
        return assigned, None
    profile = DEVICE_PROFILES.get(reported)
    if profile is None or profile.cpu_load_w is None:
        return assigned, f"unknown or unpowered device profile {reported!r}"
    return reported, None


def estimate_round_j(
    profile: DeviceProfile,
    examples: int,
    epochs: int,
    bytes_down: int,
    bytes_up: int,
    cpu_s_per_example_epoch: float,
    radio: RadioProfile | None = None,
) -> float:
    """Joules of one round on ``profile``: training work plus radio (see the module docstring)."""
    radio = radio or RADIO_PROFILES[RADIO]
    cpu_j = profile.cpu_joules(examples * epochs * cpu_s_per_example_epoch)
    if cpu_j is None:
        raise ValueError(f"device profile {profile.name} has no power figure")
    return float(cpu_j + radio.joules(bytes_up, bytes_down))


@dataclass
class ClientAccount:
    """One client's entry in the ledger (JSON-serialisable, saved in ``state.json``)."""

    profile: str
    examples: int  # examples per local epoch: last reported, first estimated from the rows
    bytes_up: int | None = None  # last upload size; None before the first (charged at full model size)
    spent_j: float = 0.0
    rounds: int = 0


class EnergyLedger:
    """Per-client energy accounts against a per-device budget (``budget_j`` 0 = unlimited)."""

    def __init__(
        self, accounts: dict[str, ClientAccount], budget_j: float, cpu_s_per_example_epoch: float
    ) -> None:
        if budget_j < 0 or not cpu_s_per_example_epoch > 0:
            raise ValueError("budget_j must be >= 0 and the per-example cost > 0")
        self.accounts = accounts
        self.budget_j = float(budget_j)
        self.cpu_s = float(cpu_s_per_example_epoch)
        self.radio = RADIO_PROFILES[RADIO]

    @classmethod
    def create(
        cls,
        profiles: Mapping[str, str],
        rows: Mapping[str, int],
        *,
        budget_j: float,
        hidden: int,
        window: int,
    ) -> EnergyLedger:
        """A fresh ledger: ``rows`` are the rows each client trains on (its statistics round's rows less its
        local validation slice, :func:`fedids.federation.client.local_training_rows`)."""
        accounts = {key: ClientAccount(profiles[key], max(1, int(n))) for key, n in rows.items()}
        return cls(accounts, budget_j, cpu_seconds_per_example_epoch(hidden, window))

    # ---- estimates

    def cost_j(self, key: str, epochs: int, bytes_down: int, full_up: int) -> float:
        """Estimated joules of a round of ``epochs`` for ``key`` (upload: last reported size, or ``full_up``)."""
        acc = self.accounts[key]
        up = acc.bytes_up if acc.bytes_up is not None else full_up
        return estimate_round_j(
            DEVICE_PROFILES[acc.profile], acc.examples, epochs, bytes_down, up, self.cpu_s, self.radio
        )

    def remaining_j(self, key: str) -> float:
        return math.inf if not self.budget_j else self.budget_j - self.accounts[key].spent_j

    def can_afford(self, key: str, epochs: int, bytes_down: int, full_up: int) -> bool:
        return self.remaining_j(key) >= self.cost_j(key, epochs, bytes_down, full_up)

    def epochs_for(self, key: str, rounds_left: int, max_epochs: int, bytes_down: int, full_up: int) -> int:
        """Local epochs for ``key`` this round: the most (up to ``max_epochs``) whose estimated energy fits
        ``remaining / rounds_left``, at least 1 (a selected client can always pay one epoch)."""
        if not self.budget_j:
            return max_epochs
        share = self.remaining_j(key) / max(1, rounds_left)
        radio = self.cost_j(key, 0, bytes_down, full_up)
        per_epoch = self.cost_j(key, 1, bytes_down, full_up) - radio
        fits = math.floor((share - radio) / per_epoch) if per_epoch > 0 else max_epochs
        return int(min(max_epochs, max(1, fits)))

    def score(self, key: str, bytes_down: int, full_up: int, cheapest_j_per_example: float) -> float:
        """Selection weight in (0, 1]: remaining budget share times relative efficiency (module docstring)."""
        j_per_example = self.cost_j(key, 1, bytes_down, full_up) / self.accounts[key].examples
        left = 1.0 if not self.budget_j else max(0.0, self.remaining_j(key)) / self.budget_j
        return left * cheapest_j_per_example / j_per_example

    # ---- bookkeeping

    def charge(self, key: str, *, epochs: int, examples: int, bytes_down: int, bytes_up: int) -> float:
        """Record one round the client reported; returns the joules charged."""
        acc = self.accounts[key]
        acc.examples, acc.bytes_up = int(examples), int(bytes_up)
        joules = estimate_round_j(
            DEVICE_PROFILES[acc.profile], examples, epochs, bytes_down, bytes_up, self.cpu_s, self.radio
        )
        acc.spent_j += joules
        acc.rounds += 1
        return joules

    def state_dict(self) -> dict:
        return {
            "budget_j": self.budget_j,
            "cpu_s_per_example_epoch": self.cpu_s,
            "accounts": {k: asdict(a) for k, a in self.accounts.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore the accounts saved by :meth:`state_dict` (a resumed run continues where it stopped); a
        client the saved ledger does not know keeps its fresh account."""
        self.accounts = {**self.accounts, **{k: ClientAccount(**a) for k, a in state["accounts"].items()}}


def select_clients(
    ledger: EnergyLedger,
    keys: Mapping[int, str],
    *,
    k: int,
    rule: str,
    epochs: int,
    seed: int,
    server_round: int,
    bytes_down: int,
    full_up: int,
) -> list[int]:
    """Nodes for one round under a budget; see the module docstring for the rule.

    ``keys`` maps node ids to client keys (iteration happens in key order, never node-id order, since
    node ids change between runs). ``epochs`` is the least a selected client will train (1 with adaptive
    epochs). Returns at most ``k`` nodes, in key order; an empty list when no client can pay for a round.
    """
    from fedids.federation.client_app import derive_seed

    if rule not in SELECTIONS:
        raise ValueError(f"unknown selection {rule!r}: choose one of {', '.join(SELECTIONS)}")
    ordered = sorted(keys, key=keys.__getitem__)
    eligible = [n for n in ordered if ledger.can_afford(keys[n], epochs, bytes_down, full_up)]
    k = min(k, len(eligible))
    if k == 0:
        return []
    if rule == "random":
        # Same generator as server_app.sample_clients: with every client eligible the draw is identical.
        rng = np.random.default_rng(derive_seed(seed, "sample", server_round))
        return [eligible[i] for i in sorted(rng.choice(len(eligible), size=k, replace=False))]
    cheapest = min(
        ledger.cost_j(keys[n], 1, bytes_down, full_up) / ledger.accounts[keys[n]].examples for n in eligible
    )
    weights = np.array([ledger.score(keys[n], bytes_down, full_up, cheapest) for n in eligible])
    rng = np.random.default_rng(derive_seed(seed, "energy-select", server_round))
    # Efraimidis-Spirakis: the k largest u^(1/w) are a weighted sample without replacement.
    draw = rng.random(len(eligible)) ** (1.0 / np.maximum(weights, 1e-12))
    picked = np.argsort(-draw, kind="stable")[:k]
    return [eligible[i] for i in sorted(picked)]
