"""Private aggregation modes inside Flower's real simulation engine, on real CICIDS2017 rows.

Every mode runs the same aggregation pipeline (FedAvgM server momentum, objective client weights,
class-aware head rows, head calibration), so ``he``, ``secagg`` and ``he+secagg`` must end with the same
global model as ``none`` up to encoding error; and secure aggregation must complete a round when 30% of
the selected clients drop out after sending their keys.
"""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedids.data.loader import load_flows
from fedids.errors import InputError
from fedids.federation.client_app import (
    handle_secagg_stage,
    handle_stats,
    handle_train,
    load_local_frame,
    partition_path,
)
from fedids.federation.server_app import FederationConfig
from fedids.federation.simulation import make_partitions, run_simulated
from fedids.privacy.keys import init_keys, load_secret_context
from fedids.task import prepare
from support import paths
from support.private_messages import assert_no_unlisted_plaintext, recording_client_app

DATA = paths.CICIDS
pytestmark = pytest.mark.slow
CONFIG = dict(rounds=1, min_clients=1, hidden=8, window=4, batch_size=128, lr=1e-2, seed=3, strategy="fedavg")


@pytest.fixture(scope="module")
def prepared():
    files = [
        DATA / "trafficlabelling-mondirkb" / "baseline_portscan.csv",
        DATA / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
    ]
    return prepare(load_flows(files).frame, window=4, split="label-time")


def _final_weights(run_dir: Path) -> np.ndarray:
    """The saved final model (after head calibration), as the operator's evaluator opened it."""
    import torch

    state = torch.load(run_dir / "global" / "model.pt", map_location="cpu", weights_only=True)
    return np.concatenate([v.numpy().ravel() for v in state.values()])


def _prototypes(run_dir: Path) -> np.ndarray:
    """The saved final model's prototype head: weights and offset of each class with windows, one row each."""
    from fedids.model.artifacts import load_detector
    from fedids.model.discriminant import ABSENT_OFFSET

    model = load_detector(run_dir / "global").model
    assert model.has_prototypes
    present = model.prototype_offset > ABSENT_OFFSET
    return np.concatenate(
        [model.prototypes[present].numpy(), model.prototype_offset[present, None].numpy()], 1
    )


def test_every_private_mode_ends_with_the_plaintext_global_model(prepared, tmp_path):
    """Default strategy (FedAvgM, objective weights, class-aware head, CCVR calibration), 3 rounds, real
    rows with label skew: the largest parameter difference to ``none`` stays below 1e-3."""
    parts = make_partitions(prepared, 3, "shared:0.5", seed=0, segment=40)
    config = {**CONFIG, "strategy": "fedavgm", "rounds": 3}
    reference_state = run_simulated(prepared, parts, FederationConfig(**config), tmp_path / "none")
    reference = _final_weights(tmp_path / "none")
    for mode in ("he", "secagg", "he+secagg"):
        keys = init_keys(tmp_path / f"keys-{mode}", mode) if "he" in mode else None
        secret = str(keys.secret_context) if keys else None
        # he and secagg also record every reply a client sends (tests/support/private_messages.py)
        app = (
            recording_client_app(tmp_path / mode / "partitions", secret, tmp_path / f"sent-{mode}")
            if mode in ("he", "secagg")
            else None
        )
        cfg = FederationConfig(
            **config, privacy=mode, he_public_context=str(keys.public_context) if keys else ""
        )
        state = run_simulated(prepared, parts, cfg, tmp_path / mode, he_secret_context=secret, client_app=app)
        assert [h["clients"] for h in state.history] == [3, 3, 3] and state.history[0]["privacy"] == mode
        assert state.calibration["kept"] == reference_state.calibration["kept"], mode
        assert np.max(np.abs(_final_weights(tmp_path / mode) - reference)) <= 1e-3, mode
        # the prototype head read from the summed moments (opened by the evaluator under he, as each
        # client opens it): the plaintext run's, up to the secure sums' fixed point (relative to its scale)
        head, plain_head = _prototypes(tmp_path / mode), _prototypes(tmp_path / "none")
        assert np.max(np.abs(head - plain_head)) <= 1e-3 * max(1.0, np.abs(plain_head).max()), mode
        assert all(h["participants"] is None for h in state.history)  # no per-client record at the server
        if app is not None:
            assert_no_unlisted_plaintext(mode, tmp_path / f"sent-{mode}")
        if "he" in mode:
            # The server's copy of the key set is public: it cannot decrypt what the clients sent.
            public = (tmp_path / f"keys-{mode}" / "server" / "he_public_context.bin").read_bytes()
            assert public != load_secret_context(keys.secret_context)
            with pytest.raises(InputError, match="secret key"):
                load_secret_context(keys.public_context)


def test_dp_reports_epsilon_and_stops_at_the_budget(prepared, tmp_path):
    parts = make_partitions(prepared, 3, "iid", seed=0, segment=40)
    cfg = FederationConfig(**{**CONFIG, "rounds": 3}, privacy="dp", noise_multiplier=1.0)
    state = run_simulated(prepared, parts, cfg, tmp_path / "dp")
    eps = [h["epsilon"] for h in state.history]
    assert len(eps) == 3 and eps[0] > 0 and eps[0] < eps[1] < eps[2]
    # A budget between the first and second round's epsilon: one round runs, then a clear stop.
    cfg = FederationConfig(
        **{**CONFIG, "rounds": 3}, privacy="dp", noise_multiplier=1.0, target_epsilon=(eps[0] + eps[1]) / 2
    )
    stopped = run_simulated(prepared, parts, cfg, tmp_path / "dp-budget")
    assert stopped.completed_round >= 1 and stopped.stopped and "epsilon" in stopped.stopped
    assert all(h["epsilon"] <= cfg.target_epsilon for h in stopped.history)


def test_secagg_completes_when_30_percent_drop_out_after_sending_keys(prepared, tmp_path):
    parts = make_partitions(prepared, 10, "iid", seed=0, segment=20)
    parts = [p for p in parts if len(p)]
    assert len(parts) == 10
    dropouts = {0, 4, 7}
    app = ClientApp()
    base = tmp_path / "run" / "partitions"

    def frame(context: Context):
        return load_local_frame(partition_path(base, int(context.node_config["partition-id"])))

    @app.query("stats")
    def stats(msg: Message, context: Context) -> Message:
        return handle_stats(
            msg, frame(context), f"p{int(context.node_config['partition-id']):02d}", context=context
        )

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if int(context.node_config["partition-id"]) in dropouts:
            raise ConnectionError("device went offline after sending its keys")
        return handle_train(
            msg, frame(context), f"p{int(context.node_config['partition-id']):02d}", context=context
        )

    for stage in ("keys", "shares", "unmask"):
        app.train(f"secagg_{stage}")(lambda msg, context, s=stage: handle_secagg_stage(msg, context, s, None))

    cfg = FederationConfig(**CONFIG, privacy="secagg", calibration="none")  # this app answers training only
    state = run_simulated(prepared, parts, cfg, tmp_path / "run", client_app=app)
    record = state.history[0]
    assert record["clients"] == 7
    assert np.isfinite(record["test"]["macro_f1"])


def test_clients_train_with_opacus_dp_sgd_within_a_budget_for_all_rounds(prepared, tmp_path):
    """Each client calibrates its DP-SGD noise for the planned rounds and ends at the budget, never
    above (the round-by-round account is tested in test_dpsgd.py), the head calibration's two noised
    releases included (tests/federation/test_calibration_dp.py)."""
    parts = make_partitions(prepared, 2, "iid", seed=0, segment=40)
    cfg = FederationConfig(**CONFIG, dpsgd_target_epsilon=4.0, dpsgd_clip_norm=1.0)
    state = run_simulated(prepared, parts, cfg, tmp_path / "dpsgd")
    (last,) = state.history
    assert last["clients"] == 2
    assert 3.9 < last["dpsgd_epsilon"] <= 4.0
    assert np.isfinite(last["test"]["macro_f1"])
    assert state.calibration["privacy"]["unit"] == "window"
    with pytest.raises(ValueError, match="not both"):
        FederationConfig(**CONFIG, dpsgd_target_epsilon=4.0, dpsgd_noise_multiplier=1.0)


def test_distributed_dp_sgd_under_secagg_takes_one_step_a_round_within_the_budget(prepared, tmp_path):
    """Distributed DP-SGD: 3 clients under SecAgg, each round one step of the federation's account,
    the noise shared out over the sum; the account grows by round and the last round ends at the budget,
    never above. Refused where no SecAgg sum carries every share: without secagg, with client-level dp."""
    parts = make_partitions(prepared, 3, "iid", seed=0, segment=40)
    cfg = FederationConfig(
        **{**CONFIG, "rounds": 3, "strategy": "fedavgm"},
        privacy="secagg",
        dpsgd_target_epsilon=4.0,
        dpsgd_distributed=True,
        dpsgd_batch_size=64,
        calibration="none",
    )
    state = run_simulated(prepared, parts, cfg, tmp_path / "distributed")
    assert [r["clients"] for r in state.history] == [3, 3, 3]
    epsilons = [r["dpsgd_epsilon"] for r in state.history]
    assert epsilons == sorted(epsilons) and 3.9 < epsilons[-1] <= 4.0
    assert np.isfinite(state.history[-1]["test"]["macro_f1"])
    refused = ({"privacy": "none"}, {"privacy": "secagg+dp", "target_epsilon": 8.0}, {"privacy": "he"})
    for bad in refused + ({"privacy": "he+secagg"}, {"privacy": "secagg", "sites": 2}):
        with pytest.raises(ValueError, match="dpsgd-distributed"):
            FederationConfig(**CONFIG, dpsgd_target_epsilon=4.0, dpsgd_distributed=True, **bad)
