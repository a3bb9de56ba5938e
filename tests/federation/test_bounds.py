"""Bounded contributions across sites and in every sealed mode (fedids.federation.bounds).

Honest clients cut their update to the run's bound before sealing; whoever opens a sum checks it is in the
range honest bounded contributions produce. The misbehaving client here skips the cut (a contribution 50x
the bound), inflates its weight, or writes raw field elements into its SecAgg upload; the sums go through
the real SecAgg state machines and real BFV ciphertexts (TenSEAL), and the honest sums pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedids.federation import aggregation as agg
from fedids.federation import messages as m
from fedids.federation.bounds import (
    SumBounds,
    SumRangeError,
    bound_client_proposal,
    check_round_sum,
    check_update_sum,
    site_check,
    unmoved_reference,
)
from fedids.federation.client import global_models
from fedids.federation.config import FederationConfig
from fedids.federation.policy import PolicyViolation, PrivacyPolicy, check_train
from fedids.federation.private import REAL, SealedSum, secagg_clip_range
from fedids.federation.sites import SiteAggregator
from fedids.model.train import get_weights
from fedids.task import new_model
from support.flower_messages import message as flower_message

N_CLASSES, HIDDEN, LR, MU, BOUND = 2, 4, 1.0, 0.5, 2.0
RNG = np.random.default_rng(0)


class _Models(dict):
    """``{"current": ..., "previous": ...}`` of objects with ``.plain`` (rounds' GlobalModel)."""


class _Plain:
    def __init__(self, plain):
        self.plain = plain


def _weights(scale: float = 0.1) -> list[np.ndarray]:
    return [
        (RNG.normal(0, scale, w.shape)).astype(np.float32) for w in get_weights(new_model(N_CLASSES, HIDDEN))
    ]


LAYOUT = agg.UpdateLayout(tuple(tuple(w.shape) for w in _weights()))
CURRENT = _weights()
PREVIOUS = [
    w + RNG.normal(0, 0.01, w.shape).astype(np.float32) for w in CURRENT
]  # momentum below B / (1 - mu)
MOMENTUM = agg.momentum_between(PREVIOUS, CURRENT, LR)


def _ins(privacy: str = "secagg", **changes) -> m.ModelInstructions:
    fields = dict(
        labels=("BENIGN", "DDoS"),
        window=4,
        hidden=HIDDEN,
        privacy=privacy,
        server_lr=LR,
        setup_digest="d",
        server_momentum=MU,
        clip_norm=BOUND,
    )
    return m.ModelInstructions(**(fields | changes))


def _contribution(weight: float, shares, scale: float = 1.0, honest: bool = True) -> np.ndarray:
    """A client's vector: an update of norm ``scale`` x 3 bounds, cut to the bound unless ``honest`` is off."""
    local = [w + RNG.normal(0, 1, w.shape).astype(np.float32) for w in CURRENT]
    delta = agg.flatten(local) - agg.flatten(CURRENT)
    delta *= 3 * BOUND * scale / np.linalg.norm(delta)
    local = agg.unflatten(agg.flatten(CURRENT) + delta, list(LAYOUT.shapes))
    proposal = agg.propose(CURRENT, MOMENTUM, local, server_lr=LR, server_momentum=MU)
    if honest:
        proposal = bound_client_proposal(_ins(), CURRENT, MOMENTUM, proposal)
    metrics = {
        "clients": 1.0,
        "examples": weight,
        "loss": weight * 0.3,
        "local_f1": 0.9,
        "local_f1_clients": 1.0,
    }
    return agg.update_contribution(LAYOUT, proposal, weight, np.asarray(shares, float), metrics)


def _honest(n: int = 4) -> list[np.ndarray]:
    return [_contribution(1 / n, [1 / n, 0.0 if i else 1.0]) for i in range(n)]


def _exact() -> SumBounds:
    reference = unmoved_reference(LAYOUT, CURRENT, PREVIOUS, LR, MU)
    return SumBounds(reference, LR * BOUND, parties=4, atol=1e-6)


def test_an_honest_client_cuts_its_update_to_the_bound_and_honest_sums_pass():
    vector = _honest(1)[0]
    x = agg.flatten(agg.finalize_update(LAYOUT, vector).weights)
    reference = agg.flatten(agg.propose(CURRENT, MOMENTUM, CURRENT, server_lr=LR, server_momentum=MU))
    assert np.linalg.norm(x - reference) == pytest.approx(LR * BOUND, rel=1e-5)  # 3 bounds, cut to 1
    check_update_sum(LAYOUT, np.sum(_honest(), axis=0), _exact(), per_part=False)
    with pytest.raises(ValueError, match="without an update bound"):
        bound_client_proposal(_ins(clip_norm=0.0), CURRENT, MOMENTUM, CURRENT)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda: _contribution(0.25, [0.25, 0.0], scale=50, honest=False), "weighted update norm"),
        (lambda: _contribution(3.0, [0.25, 0.0]), "summed weight"),
        (lambda: _contribution(0.25, [0.25, 2.0]), "share of class 1"),
    ],
)
def test_a_sum_with_a_client_out_of_range_is_refused_with_a_logged_reason(bad, reason, caplog):
    total = np.sum(_honest()[:3], axis=0) + bad()
    with pytest.raises(SumRangeError, match=reason):
        check_update_sum(LAYOUT, total, _exact(), per_part=False)
    assert "refused a sum out of range" in caplog.text


def _secagg_sum(vectors: list[np.ndarray], raw_offset: np.ndarray | None) -> np.ndarray:
    """The real SecAgg round (X25519, Shamir, ChaCha20 masks); client 1 adds ``raw_offset`` (uint32 field
    elements) to its masked upload when given."""
    from fedids.privacy.secagg import SecAggClient, SecAggConfig, SecAggServer, dequantize_sum, simulate_round

    config = SecAggConfig(
        n_clients=len(vectors), vector_length=LAYOUT.length, round_id=7, clip_range=secagg_clip_range(REAL, 4)
    )

    class RawClient(SecAggClient):
        def _encode_input(self, masked: np.ndarray) -> bytes:
            return super()._encode_input((masked + raw_offset).astype(np.uint32))

    clients = {
        i + 1: (RawClient if i == 0 and raw_offset is not None else SecAggClient)(config, i + 1)
        for i in range(len(vectors))
    }
    server = SecAggServer(config)
    simulate_round(server, clients, {i + 1: v for i, v in enumerate(vectors)})
    return dequantize_sum(server.aggregate(), config)


def test_secagg_raw_out_of_range_field_elements_are_refused_and_honest_masked_sums_pass():
    vectors = _honest()
    models = _Models(current=_Plain(CURRENT), previous=_Plain(PREVIOUS))
    config = _ins().to_config()
    check_round_sum(LAYOUT, _secagg_sum(vectors, None), config, models, parties=4, atol=1e-6)
    offset = np.zeros(LAYOUT.length, np.uint64)
    offset[3] = 2**30  # one coordinate of the body, a quarter of the field: decodes to a huge value
    with pytest.raises(SumRangeError, match="body and head"):
        check_round_sum(LAYOUT, _secagg_sum(vectors, offset), config, models, parties=4, atol=1e-6)


def test_he_clients_refuse_an_encrypted_sum_out_of_range_before_training_on_it():
    """Flat ``he``: each client quantises and BFV-encrypts; the server adds ciphertexts; a client opens the
    sum in ``global_models`` and checks it against the previous global model."""
    from fedids.privacy.he_secagg import EncryptedMaskedSum, create_bfv_keys, encrypt_masked
    from fedids.privacy.secagg import SecAggConfig, quantize

    keys = create_bfv_keys()
    code = SecAggConfig(
        n_clients=4, vector_length=LAYOUT.length, round_id=3, clip_range=secagg_clip_range(REAL, 4)
    )

    def message(vectors: list[np.ndarray]):
        total = EncryptedMaskedSum(keys.public_context, LAYOUT.length)
        for v in vectors:
            total.add(encrypt_masked(keys.secret_context, quantize(v, code)))
        sealed = SealedSum("bfv", total.to_bytes(), REAL, code.to_dict())
        content = RecordDict({m.CONFIG: ConfigRecord(_ins("he").to_config())})
        content[m.PREVIOUS] = ArrayRecord(list(CURRENT))
        return flower_message(m.add_sealed(content, {"current": sealed}), m.TRAIN)

    honest = _honest()
    weights, _ = global_models(message(honest), N_CLASSES, HIDDEN, keys.secret_context, LR)
    assert np.allclose(
        agg.flatten(weights), agg.flatten(agg.finalize_update(LAYOUT, np.sum(honest, 0)).weights), atol=1e-5
    )
    scaled = honest[:3] + [_contribution(0.25, [0.25, 0.0], scale=50, honest=False)]
    with pytest.raises(SumRangeError, match="weighted update norm"):
        global_models(message(scaled), N_CLASSES, HIDDEN, keys.secret_context, LR)


@pytest.mark.parametrize("per_node", [2, 1])
def test_deployed_sites_he_sum_is_coded_for_their_devices_so_the_devices_accept_it(per_node):
    """Deployed three tiers under ``he``: 2 sites each encrypt the partial sum of 2 devices. The central
    code counts ``site-devices`` contributions per site (2): the devices accept the opened sum; counted as
    one per site (the code before session 15) the sum of 4 devices reads as out of range for 2 parties."""
    from fedids.federation.secure_rounds import he_quantisation
    from fedids.privacy.he_secagg import EncryptedMaskedSum, create_bfv_keys, encrypt_masked
    from fedids.privacy.secagg import quantize

    keys = create_bfv_keys()
    code = he_quantisation([1, 2], LAYOUT.length, REAL, 5, per_node)
    devices = _honest()
    total = EncryptedMaskedSum(keys.public_context, LAYOUT.length)
    for partial in (devices[0] + devices[1], devices[2] + devices[3]):
        total.add(encrypt_masked(keys.secret_context, quantize(partial, code)))
    sealed = SealedSum("bfv", total.to_bytes(), REAL, code.to_dict())
    content = RecordDict({m.CONFIG: ConfigRecord(_ins("he").to_config())})
    content[m.PREVIOUS] = ArrayRecord(list(CURRENT))
    msg = flower_message(m.add_sealed(content, {"current": sealed}), m.TRAIN)
    if per_node == 1:
        with pytest.raises(SumRangeError, match="summed metric clients"):
            global_models(msg, N_CLASSES, HIDDEN, keys.secret_context, LR)
        return
    weights, _ = global_models(msg, N_CLASSES, HIDDEN, keys.secret_context, LR)
    want = agg.finalize_update(LAYOUT, np.sum(devices, 0)).weights
    assert np.allclose(agg.flatten(weights), agg.flatten(want), atol=1e-5)


def test_a_site_leaves_out_a_device_out_of_range_in_a_sealed_run():
    models = _Models(current=_Plain(CURRENT), previous=_Plain(PREVIOUS))
    check = site_check(LAYOUT, _ins("secagg").to_config(), models)
    assert check is not None and site_check(LAYOUT, _ins("none").to_config(), models) is None
    site = SiteAggregator(0, [1, 2], LAYOUT.length)
    site.receive(1, _contribution(0.5, [0.5, 1.0]), check)
    with pytest.raises(SumRangeError, match="weighted update norm"):
        site.receive(2, _contribution(0.5, [0.5, 0.0], scale=50, honest=False), check)
    # he: the site cannot read the global model; it still checks the weights and metrics
    blind = site_check(LAYOUT, _ins("he").to_config(), models)
    assert blind is not None
    blind(3, _contribution(0.5, [0.5, 0.0], scale=50, honest=False))
    with pytest.raises(SumRangeError, match="summed weight"):
        blind(3, _contribution(2.0, [0.5, 0.0]))


def test_the_policy_refuses_a_larger_update_bound_or_none_in_a_sealed_run(caplog):
    import dataclasses

    policy = PrivacyPolicy.from_config(FederationConfig(privacy="secagg"))
    ins = m.TrainInstructions(
        **dataclasses.asdict(_ins("secagg", clip_norm=policy.update_bound)) | {"server_round": 1, "rounds": 1},
        local_epochs=1, batch_size=8, lr=1e-3, seed=0, absent_logit_scale=1.0, proximal_mu=0.0,
        client_weighting="objective", head_aggregation="class", compression="none", dpsgd_noise=0.0,
        dpsgd_target_epsilon=0.0, dpsgd_clip=1.0, dpsgd_delta=1e-5, dpsgd_batch_size=8, dpsgd_lr=1e-2,
        dpsgd_release_noise=0.0,
    )  # fmt: skip
    check_train(policy, ins, {})
    check_train(policy, dataclasses.replace(ins, clip_norm=1.0), {})  # a smaller bound is fine
    with pytest.raises(PolicyViolation, match="update bound"):
        check_train(policy, dataclasses.replace(ins, clip_norm=2 * policy.update_bound), {})
    with pytest.raises(PolicyViolation, match="without an update bound"):
        check_train(policy, dataclasses.replace(ins, clip_norm=0.0), {})
