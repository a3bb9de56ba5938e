"""The client's privacy policy: what a gateway checks before it answers the server.

Every privacy setting of a round travels from the server: the mode a sum is sealed in, the DP clip norm and
noise, the SecAgg threshold, the rounds DP-SGD budgets for, the calibration releases' noise. A server that
lowers one of them (noise 0, a plaintext sum in an encrypted run, a threshold of 2, one more round than
budgeted) would learn a client's update; a larger update bound, or none, would let one client move the sum
further. So each client holds the run's *published* privacy configuration
(:class:`PrivacyPolicy`: in deployment a file its operator installs, node config ``privacy-policy``; in
simulation built from the same :class:`~fedids.federation.config.FederationConfig`) and
:func:`check_message` refuses, with a logged reason, every message that asks for less.

Threat model: an *active* server (it may send any message) that does not control the clients' code or
policy files. It can still refuse to run, drop clients, or lie about the aggregate it returns; it cannot
make an honest client send a contribution weaker than the policy allows. Sybils (fake clients that make a
sum of "many" hold one real contribution) need node authentication (``fedids deploy init``); the policy's
``min_clients`` bounds how small a sum a client joins.

Checks are deterministic functions of the policy and the message: the DP noise a client requires is
computed here from the policy (:meth:`PrivacyPolicy.client_noise_multiplier`), with the same calibration the
server uses, so an honest server always passes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message

from fedids.federation.config import FederationConfig
from fedids.federation.private import PrivacyMode

log = logging.getLogger("fedids.client")

POLICY_KEY = "privacy-policy"  # node config: path to the policy file (JSON)
LEDGER = "fedids.policy"  # node state (ConfigRecord): what this client has checked and answered so far
ROUNDS_DONE = "rounds-trained"  # training rounds this client has answered (the DP budget's ledger)
MIN_SITE_SECAGG = 3  # devices in a site's SecAgg: with 2, each would learn the other's vector from the sum
SECAGG_T = "secagg-t"  # the threshold of the current round's checked SecAgg configuration
_TOLERANCE = 1e-9  # relative: float round trips through records


class PolicyViolation(ValueError):
    """A message asks for weaker privacy than the client's policy allows; the client refuses it."""


@dataclass(frozen=True)
class PrivacyPolicy:
    """The published privacy configuration of a run, as every client holds it."""

    privacy: str
    min_clients: int
    rounds: int
    dpsgd_local_epochs: int
    clip_norm: float
    noise_multiplier: float
    target_epsilon: float
    target_delta: float
    calibration: str
    dpsgd_noise_multiplier: float
    dpsgd_target_epsilon: float
    dpsgd_batch_size: int
    dpsgd_calibration_noise: float
    sites: int = 0  # >= 2: the client's site sees its vectors in plaintext (fedids.federation.sites)
    site_privacy: str = "plain"  # secagg: its site gets only SecAgg sums of its devices, never a vector
    update_bound: float = 20.0  # he/secagg without dp: the L2 bound of each update (fedids.federation.bounds)
    dpsgd_distributed: int = 0  # 1: DP-SGD's noise is shared out over the SecAgg sum (fedids.privacy.dpsgd)
    dpsgd_distributed_lr: float = 6.0
    # The server step every client applies to its own update before the sum (aggregation.propose): under
    # shared noise a client scaled differently from the others changes its share of the noise.
    server_lr: float = 1.0
    server_momentum: float = 0.0

    @classmethod
    def from_config(cls, config: FederationConfig) -> PrivacyPolicy:
        """The policy of a run configured by ``config`` (the fields of the same names)."""
        server_lr, server_momentum = config.server_step
        values = asdict(config) | {
            "dpsgd_distributed": int(config.dpsgd_distributed),
            "dpsgd_batch_size": config.dpsgd_batch,
            "server_lr": server_lr,
            "server_momentum": server_momentum,
        }
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    @classmethod
    def load(cls, path: str | Path) -> PrivacyPolicy:
        """Read a policy file written by :meth:`save`; raises ValueError on a bad one."""
        try:
            data = json.loads(Path(path).read_text())
            types = {"int": int, "float": float, "str": str}
            return cls(
                **{
                    f.name: types[str(f.type)](
                        data[f.name] if f.name in data or f.default is MISSING else f.default
                    )
                    for f in fields(cls)
                }
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a fedids privacy policy ({type(err).__name__}: {err})") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @property
    def mode(self) -> PrivacyMode:
        return PrivacyMode.parse(self.privacy)

    @property
    def site_secagg(self) -> bool:
        """A three-tier run whose devices send their site only SecAgg-masked vectors."""
        return self.sites >= 2 and self.site_privacy == "secagg"

    @property
    def dpsgd(self) -> bool:
        return self.dpsgd_noise_multiplier > 0 or self.dpsgd_target_epsilon > 0

    @property
    def releases(self) -> int:
        """Gaussian releases the head calibration adds to the budget (fedids.federation.calibration_dp)."""
        from fedids.federation.calibration_dp import RELEASES

        return RELEASES if self.calibration == "ccvr" else 0

    def client_noise_multiplier(self) -> float:
        """Client-level ``dp``: sigma, fixed or calibrated for ``rounds`` rounds and the calibration
        releases at sample rate 1 (fixed-size selection from a public seed amplifies nothing)."""
        if self.noise_multiplier > 0:
            return self.noise_multiplier
        from fedids.privacy.dp import calibrate_noise_multiplier

        return calibrate_noise_multiplier(
            self.target_epsilon, self.target_delta, 1.0, self.rounds, releases=self.releases
        )


def _refuse(reason: str) -> PolicyViolation:
    log.warning("refused a message from the server: %s", reason)
    return PolicyViolation(f"privacy policy: {reason}")


def _at_least(value: float, floor: float, what: str) -> None:
    if value < floor * (1 - _TOLERANCE):
        raise _refuse(f"{what} {value:g} is below the policy's {floor:g}")


def _at_most(value: float, ceiling: float, what: str) -> None:
    if value > ceiling * (1 + _TOLERANCE):
        raise _refuse(f"{what} {value:g} is above the policy's {ceiling:g}")


def _exactly(value: float, expected: float, what: str) -> None:
    if abs(value - expected) > _TOLERANCE * (abs(expected) or 1.0):  # relative; absolute around 0
        raise _refuse(f"{what} {value:g} differs from the policy's {expected:g} (shared noise)")


def check_secagg(policy: PrivacyPolicy, n_clients: int, threshold: int, state: Any) -> None:
    """A SecAgg round's ``n`` and ``t``: at least ``min_clients`` clients (a site's SecAgg under
    ``site_privacy`` secagg: at least :data:`MIN_SITE_SECAGG` devices), and ``t`` at least fedids' threshold
    for ``n`` (a lower one lets fewer survivors, or the server with sybils, unmask)."""
    from fedids.privacy.secagg import SecAggConfig

    if not (policy.mode.secagg or policy.site_secagg):
        raise _refuse(f"secure aggregation requested in a {policy.privacy} run")
    floor = MIN_SITE_SECAGG if policy.site_secagg else policy.min_clients
    _at_least(n_clients, floor, "secure aggregation over")
    _at_least(threshold, SecAggConfig(n_clients=n_clients, vector_length=1).t, "SecAgg threshold")
    state[SECAGG_T] = int(threshold)


def _shares(policy: PrivacyPolicy, state: Any) -> int:
    """Noise shares a released sum is guaranteed to hold: the checked SecAgg threshold, else 1 (also with
    sites: the client's site sees its vector, so it must carry all of its noise)."""
    if not policy.mode.secagg or policy.sites >= 2:
        return 1
    if SECAGG_T not in state:
        raise _refuse("a secure-aggregation round without a checked SecAgg configuration")
    return int(state[SECAGG_T])


def check_mode(policy: PrivacyPolicy, privacy: str) -> None:
    if PrivacyMode.parse(privacy) != policy.mode:
        raise _refuse(f"privacy mode {privacy!r} differs from the policy's {policy.privacy!r}")


def check_sum_mode(policy: PrivacyPolicy, privacy: str) -> None:
    """How a vector is sealed: the policy's mode, or, in a three-tier run (``sites >= 2``), for the client's
    own site as ``site_privacy`` says: in the clear (its trust domain) or SecAgg-masked (the site seals the
    partial sum in the policy's mode). A site that asks a ``secagg`` device for its vector in the clear is
    refused."""
    mode = PrivacyMode.parse(privacy)
    if policy.site_secagg and mode == PrivacyMode():
        raise _refuse(
            "the site asks for this device's vector in the clear; the policy's site privacy is secagg"
        )
    if policy.sites >= 2 and mode == (PrivacyMode.parse("secagg") if policy.site_secagg else PrivacyMode()):
        return
    check_mode(policy, privacy)


def check_bound(policy: PrivacyPolicy, ins: Any) -> None:
    """The update bound of a sealed run (``he``, ``secagg``): every client cuts its update to it before
    sealing and checks opened sums against it, so a server may ask for a smaller one, never a larger one
    or none (dp modes: the clip norm, checked with the noise)."""
    if not policy.mode.sealed:
        return
    if not ins.clip_norm > 0:
        raise _refuse("a sealed run without an update bound")
    if policy.mode.dp:
        _at_most(ins.clip_norm, policy.clip_norm, "clip norm")
    else:
        _at_most(ins.clip_norm, policy.update_bound, "update bound")


def check_train(policy: PrivacyPolicy, ins: Any, state: Any) -> None:
    """A training message (:class:`~fedids.federation.messages.TrainInstructions`)."""
    check_mode(policy, ins.privacy)
    check_bound(policy, ins)
    done = int(state.get(ROUNDS_DONE, 0))
    if (policy.mode.dp or policy.dpsgd) and done >= policy.rounds:
        raise _refuse(f"round {done + 1} is beyond the {policy.rounds} rounds the DP budget covers")
    if policy.mode.dp:
        _at_most(ins.clip_norm, policy.clip_norm, "clip norm")
        required = policy.client_noise_multiplier() * ins.clip_norm / math.sqrt(_shares(policy, state))
        _at_least(ins.noise_std, required, "noise std")
        if ins.client_weighting != "equal" or ins.head_aggregation != "examples":
            raise _refuse("client-level DP needs equal client weights and whole-update averaging")
    if policy.dpsgd:
        _check_dpsgd(policy, ins)
    if (policy.mode.dp and _shares(policy, state) > 1) or ins.dpsgd_noise_shares:
        _check_shared_noise(policy, ins, state)


def _check_shared_noise(policy: PrivacyPolicy, ins: Any, state: Any) -> None:
    """Noise shared out over a SecAgg sum protects a client only if every client's vector is scaled alike:
    a server that sent the others a smaller clip norm, learning rate or server step would shrink their
    noise in the sum. So each of these must be the policy's exactly, and a distributed DP-SGD round's
    shares at most the checked SecAgg threshold."""
    _exactly(ins.server_lr, policy.server_lr, "server learning rate")
    _exactly(ins.server_momentum, policy.server_momentum, "server momentum")
    if policy.mode.dp:
        _at_least(ins.clip_norm, policy.clip_norm, "clip norm under shared noise")
    if not ins.dpsgd_noise_shares:
        return
    if not policy.dpsgd_distributed:
        raise _refuse("distributed DP-SGD noise requested; the policy has each client add all of it")
    _at_most(ins.dpsgd_noise_shares, _shares(policy, state), "DP-SGD noise shares")
    _exactly(ins.dpsgd_lr, policy.dpsgd_distributed_lr, "DP-SGD learning rate")
    if ins.client_weighting != "equal" or ins.head_aggregation != "examples":
        raise _refuse("shared DP-SGD noise needs equal client weights and whole-update averaging")


def _check_dpsgd(policy: PrivacyPolicy, ins: Any) -> None:
    # Each client calibrates its noise for rounds x local steps (+ the calibration releases): every input
    # of that calibration must be the policy's, or the budget no longer holds.
    if policy.dpsgd_target_epsilon > 0:
        if not 0 < ins.dpsgd_target_epsilon <= policy.dpsgd_target_epsilon * (1 + _TOLERANCE):
            raise _refuse(f"DP-SGD epsilon {ins.dpsgd_target_epsilon:g} is not within the policy's")
    else:
        _at_least(ins.dpsgd_noise, policy.dpsgd_noise_multiplier, "DP-SGD noise multiplier")
    _at_most(ins.dpsgd_delta, policy.target_delta, "DP-SGD delta")
    if ins.rounds != policy.rounds or ins.local_epochs != policy.dpsgd_local_epochs:
        raise _refuse("DP-SGD rounds or local epochs differ from those the budget was calibrated for")
    if ins.dpsgd_batch_size != policy.dpsgd_batch_size:
        raise _refuse("DP-SGD batch size differs from the policy's (it sets the sampling rate)")
    if policy.releases:
        _at_least(ins.dpsgd_release_noise, policy.dpsgd_calibration_noise, "calibration noise")
    if ins.absent_logit_scale != 1.0:
        raise _refuse("DP-SGD needs absent-logit-scale 1 (the restricted softmax breaks its sensitivity)")


def check_model(policy: PrivacyPolicy, ins: Any, state: Any, releases_sum: bool) -> None:
    """A message carrying a global model (:class:`~fedids.federation.messages.ModelInstructions`); where
    it asks for a calibration sum (``releases_sum``) in a DP run, the sum must be released with at least
    the policy's noise."""
    check_mode(policy, ins.privacy)
    check_bound(policy, ins)
    if not (policy.mode.dp or policy.dpsgd) or not releases_sum:
        return
    dp = ins.calibration_privacy()
    if dp is None:
        raise _refuse("a calibration sum without DP noise in a DP run")
    unit, floor = (
        ("client", policy.client_noise_multiplier())
        if policy.mode.dp
        else ("window", policy.dpsgd_calibration_noise)
    )
    if dp.unit != unit:
        raise _refuse(f"calibration released per {dp.unit}, the policy protects each {unit}")
    _at_least(dp.noise_multiplier, floor, "calibration noise")
    _at_most(dp.shares, _shares(policy, state), "calibration noise shares")


def check_message(policy: PrivacyPolicy, msg: Message, state: dict) -> None:
    """Refuse (:class:`PolicyViolation`, logged) a server message that asks for weaker privacy than
    ``policy``; ``state`` is the client's ledger (:data:`LEDGER`), updated in place."""
    from fedids.federation import messages as m

    kind, content = msg.metadata.message_type, msg.content
    if m.SUM in content.config_records:
        check_sum_mode(policy, str(m.config_record(content, m.SUM)["privacy"]))
    if m.SECAGG_CONFIG in content.config_records:  # every SecAgg stage repeats the round's n and t
        cfg = m.config_record(content, m.SECAGG_CONFIG)
        check_secagg(policy, int(m.number(cfg, "n_clients")), int(m.number(cfg, "threshold")), state)
    if m.CONFIG not in content.config_records:
        return
    if kind == m.TRAIN:
        check_train(policy, m.TrainInstructions.from_config(m.config_record(content, m.CONFIG)), state)
        state[ROUNDS_DONE] = int(state.get(ROUNDS_DONE, 0)) + 1  # answered or not, the budget counts it
    elif kind in (m.QUERY_FEATURES, m.QUERY_VALIDATE, m.QUERY_GLOBAL):
        ins = m.ModelInstructions.from_config(m.config_record(content, m.CONFIG))
        check_model(policy, ins, state, releases_sum=kind != m.QUERY_GLOBAL)


def policy_mod(policy: PrivacyPolicy | None) -> Callable[[Message, Context, Callable], Message]:
    """A Flower mod that checks every message against ``policy`` (or the node config's
    :data:`POLICY_KEY` file) before the ClientApp's handler runs; a refused message never reaches it."""

    def mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        active = policy
        if active is None and POLICY_KEY in context.node_config:
            active = PrivacyPolicy.load(str(context.node_config[POLICY_KEY]))
        if active is not None:
            ledger = dict(context.state.config_records.get(LEDGER, ConfigRecord()))
            check_message(active, msg, ledger)
            context.state[LEDGER] = ConfigRecord(ledger)
        return call_next(msg, context)

    return mod


__all__ = [
    "POLICY_KEY",
    "PolicyViolation",
    "PrivacyPolicy",
    "check_bound",
    "check_mode",
    "check_sum_mode",
    "check_model",
    "check_secagg",
    "check_message",
    "check_train",
    "policy_mod",
]
