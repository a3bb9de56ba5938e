"""Clients check the server (fedids.federation.policy): what an honest server sends passes; every setting a
misbehaving server could lower to learn a client's update is refused with a logged reason, before any
handler runs; a whole simulated run against a server that halves the DP noise trains nothing."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedids.federation import messages as m
from fedids.federation import rounds
from fedids.federation.config import DPSGD_BATCH_SIZE, FederationConfig
from fedids.federation.policy import LEDGER, PolicyViolation, PrivacyPolicy, check_message, policy_mod
from fedids.federation.simulation import make_partitions, run_simulated
from fedids.privacy.secagg import SecAggConfig
from support.flower_messages import message

LABELS = ("BENIGN", "DDoS")
DP = FederationConfig(privacy="secagg+dp", target_epsilon=8.0, rounds=3)
DPSGD = FederationConfig(privacy="none", dpsgd_target_epsilon=8.0, rounds=3)
DIST = FederationConfig(privacy="secagg", dpsgd_target_epsilon=8.0, dpsgd_distributed=True, rounds=3)


def _message(kind: str, records: dict) -> Message:
    return message(RecordDict(records), kind)


def _secagg(n: int = 10, t: int | None = None) -> ConfigRecord:
    cfg = SecAggConfig(n_clients=n, vector_length=8, threshold=t).to_dict()
    return ConfigRecord({**cfg, "secagg-id": 1})


def _train(config: FederationConfig, **changes) -> ConfigRecord:
    """The instructions an honest server sends for ``config`` (rounds.train_config's choices)."""
    policy = PrivacyPolicy.from_config(config)
    dp = policy.mode.dp
    t = SecAggConfig(n_clients=10, vector_length=1).t
    equal = dp or config.dpsgd_distributed
    ins = m.TrainInstructions(
        labels=LABELS,
        window=config.window,
        hidden=config.hidden,
        privacy=config.privacy,
        server_lr=1.0,
        setup_digest="d",
        server_round=1,
        rounds=config.rounds,
        local_epochs=config.dpsgd_local_epochs if config.dpsgd else config.local_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=0,
        absent_logit_scale=1.0 if config.dpsgd else config.absent_logit_scale,
        proximal_mu=0.0,
        server_momentum=0.5,
        client_weighting="equal" if equal else "objective",
        head_aggregation="examples" if equal else "class",
        compression="none",
        dpsgd_noise=0.0,
        dpsgd_target_epsilon=config.dpsgd_target_epsilon,
        dpsgd_clip=1.0,
        dpsgd_delta=config.target_delta,
        dpsgd_batch_size=config.dpsgd_batch,
        dpsgd_lr=config.dpsgd_distributed_lr if config.dpsgd_distributed else config.dpsgd_lr,
        dpsgd_noise_shares=t if config.dpsgd_distributed else 0,
        dpsgd_release_noise=config.dpsgd_calibration_noise,
        clip_norm=config.clip_norm if dp else (config.update_bound if policy.mode.sealed else 0.0),
        noise_std=policy.client_noise_multiplier() * config.clip_norm / t**0.5 if dp else 0.0,
    )
    return ConfigRecord(dataclasses.replace(ins, **changes).to_config())


def _train_message(config: FederationConfig, **changes) -> Message:
    records = {m.CONFIG: _train(config, **changes)}
    if PrivacyPolicy.from_config(config).mode.secagg:
        records[m.SECAGG_CONFIG] = _secagg()
    return _message(m.TRAIN, records)


def test_an_honest_server_passes_and_the_ledger_counts_rounds():
    for config in (DP, DPSGD, DIST):
        policy, ledger = PrivacyPolicy.from_config(config), {}
        for _ in range(config.rounds):
            check_message(policy, _train_message(config), ledger)
        with pytest.raises(PolicyViolation, match="beyond the 3 rounds"):
            check_message(policy, _train_message(config), ledger)


@pytest.mark.parametrize(
    ("config", "changes", "reason"),
    [
        (DP, {"noise_std": 0.0}, "noise std"),
        (DP, {"clip_norm": 10.0}, "clip norm"),
        (DP, {"privacy": "secagg"}, "privacy mode"),
        (DP, {"client_weighting": "objective"}, "equal client weights"),
        (DPSGD, {"dpsgd_target_epsilon": 50.0}, "DP-SGD epsilon"),
        (DPSGD, {"rounds": 1}, "rounds or local epochs"),
        (DPSGD, {"local_epochs": 5}, "rounds or local epochs"),
        (DPSGD, {"dpsgd_batch_size": 8}, "batch size"),
        (DPSGD, {"dpsgd_release_noise": 0.1}, "calibration noise"),
        (DPSGD, {"absent_logit_scale": 0.5}, "absent-logit-scale"),
        (DPSGD, {"dpsgd_delta": 0.1}, "delta"),
        # Shared noise (secagg+dp, distributed DP-SGD): every client's vector scaled alike, or a server that
        # scaled the others' down would shrink their noise in the sum.
        (DP, {"clip_norm": 0.5}, "clip norm under shared noise"),
        (DP, {"server_momentum": 0.0}, "server momentum"),
        (DPSGD, {"dpsgd_noise_shares": 7}, "each client add all of it"),
        (DIST, {"dpsgd_noise_shares": 8}, "noise shares"),
        (DIST, {"dpsgd_lr": 600.0}, "DP-SGD learning rate"),
        (DIST, {"server_lr": 2.0}, "server learning rate"),
        (DIST, {"client_weighting": "objective"}, "equal client weights"),
    ],
)
def test_weaker_training_instructions_are_refused_with_a_logged_reason(config, changes, reason, caplog):
    policy = PrivacyPolicy.from_config(config)
    with (
        caplog.at_level(logging.WARNING, logger="fedids.client"),
        pytest.raises(PolicyViolation, match=reason),
    ):
        check_message(policy, _train_message(config, **changes), {})
    assert reason in caplog.text


def test_dpsgd_batch_defaults_by_mode_and_the_policy_pins_the_batch_the_run_uses():
    """0 (the default) is the mode's measured batch: a client's own for local DP-SGD, the larger pooled
    batch for distributed DP-SGD; a batch given explicitly wins; the policy holds the resolved one."""
    local = FederationConfig(dpsgd_target_epsilon=8.0)
    assert local.dpsgd_batch_size == 0 and local.dpsgd_batch == DPSGD_BATCH_SIZE["local"]
    assert DIST.dpsgd_batch == DPSGD_BATCH_SIZE["distributed"] > local.dpsgd_batch
    assert dataclasses.replace(DIST, dpsgd_batch_size=64).dpsgd_batch == 64
    assert PrivacyPolicy.from_config(DIST).dpsgd_batch_size == DPSGD_BATCH_SIZE["distributed"]
    with pytest.raises(ValueError, match="batch size"):
        FederationConfig(dpsgd_target_epsilon=8.0, dpsgd_batch_size=-1)


def test_a_secure_aggregation_round_too_small_or_with_a_low_threshold_is_refused():
    policy = PrivacyPolicy.from_config(dataclasses.replace(DP, min_clients=5))
    with pytest.raises(PolicyViolation, match="threshold"):
        check_message(policy, _message(m.SECAGG_KEYS, {m.SECAGG_CONFIG: _secagg(10, t=6)}), {})
    with pytest.raises(PolicyViolation, match="secure aggregation over 3"):
        check_message(policy, _message(m.SECAGG_KEYS, {m.SECAGG_CONFIG: _secagg(3)}), {})
    check_message(policy, _message(m.SECAGG_KEYS, {m.SECAGG_CONFIG: _secagg(10)}), {})


def test_a_plaintext_sum_in_a_sealed_run_is_refused():
    policy = PrivacyPolicy.from_config(DP)
    spec = ConfigRecord({"values": "real", "length": 4, "privacy": "none"})
    with pytest.raises(PolicyViolation, match="privacy mode 'none'"):
        check_message(policy, _message(m.QUERY_STATS, {m.SUM: spec}), {})


def _model_config(config: FederationConfig, **dp) -> ConfigRecord:
    ins = m.ModelInstructions(
        labels=LABELS, window=10, hidden=64, privacy=config.privacy, server_lr=1.0, setup_digest="d", **dp
    )
    return ConfigRecord(ins.to_config())


def test_calibration_sums_must_carry_the_policy_noise():
    policy = PrivacyPolicy.from_config(DPSGD)
    honest = {"calibration_dp_unit": "window", "calibration_dp_noise": DPSGD.dpsgd_calibration_noise}
    check_message(policy, _message(m.QUERY_FEATURES, {m.CONFIG: _model_config(DPSGD, **honest)}), {})
    for dp, reason in [
        ({}, "without DP noise"),
        ({**honest, "calibration_dp_noise": 0.5}, "calibration noise"),
        ({**honest, "calibration_dp_unit": "client"}, "per client"),
        ({**honest, "calibration_dp_shares": 9}, "shares"),
    ]:
        with pytest.raises(PolicyViolation, match=reason):
            check_message(policy, _message(m.QUERY_VALIDATE, {m.CONFIG: _model_config(DPSGD, **dp)}), {})
    # the final model asks for no sum: nothing to release
    check_message(policy, _message(m.QUERY_GLOBAL, {m.CONFIG: _model_config(DPSGD)}), {})


def test_the_mod_refuses_before_the_handler_and_keeps_its_ledger_in_node_state():
    policy = PrivacyPolicy.from_config(DPSGD)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    handled = []

    def handler(msg: Message, ctx: Context) -> Message:
        handled.append(msg.metadata.message_type)
        return msg

    mod = policy_mod(policy)
    mod(_train_message(DPSGD), context, handler)
    assert handled == [m.TRAIN] and context.state.config_records[LEDGER]["rounds-trained"] == 1
    with pytest.raises(PolicyViolation):
        mod(_train_message(DPSGD, dpsgd_target_epsilon=100.0), context, handler)
    assert handled == [m.TRAIN]


def test_a_policy_file_round_trips_and_a_bad_one_is_refused(tmp_path):
    policy = PrivacyPolicy.from_config(DP)
    policy.save(tmp_path / "policy.json")
    assert PrivacyPolicy.load(tmp_path / "policy.json") == policy
    (tmp_path / "bad.json").write_text('{"privacy": "none"}')
    with pytest.raises(ValueError, match="not a fedids privacy policy"):
        PrivacyPolicy.load(tmp_path / "bad.json")


@pytest.mark.slow
def test_a_server_that_lowers_the_noise_trains_nothing(cicids_sample, tmp_path, monkeypatch, caplog):
    honest = rounds.train_config

    def halve_the_noise(run, server_round, chosen, accountant) -> dict:
        config = honest(run, server_round, chosen, accountant)
        config["noise-std"] = config["noise-std"] / 2  # a server that wants to see the updates
        return config

    monkeypatch.setattr(rounds, "train_config", halve_the_noise)
    parts = make_partitions(cicids_sample, 3, "iid", seed=0, segment=40)
    cfg = FederationConfig(rounds=1, min_clients=2, hidden=16, window=5, privacy="dp", target_epsilon=20.0)
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="no valid client update"):
        run_simulated(cicids_sample, parts, cfg, tmp_path / "run")
    # every client refused, saying why (the server logs the reason each one returned)
    assert caplog.text.count("dropped out") == 3 and "noise std" in caplog.text
