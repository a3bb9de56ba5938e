"""Federated training in Flower's real simulation engine (Ray), on real CICIDS2017 rows."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from fedids.federation import messages as m
from fedids.federation.client import local_training_rows
from fedids.federation.client_app import (
    LOCAL_VAL_FRACTION,
    handle_features,
    handle_stats,
    handle_train,
    handle_validate,
    load_local_frame,
    partition_path,
    prepare_local,
)
from fedids.federation.server_app import FederationConfig, FederationState, load_checkpoint, make_server_app
from fedids.federation.simulation import make_partitions, run_simulated, write_partitions
from fedids.task import evaluate_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(cicids_sample):
    return cicids_sample


CONFIG = dict(min_clients=1, hidden=16, window=5, batch_size=64, lr=1e-2, seed=7)


def test_federated_rounds_improve_the_global_model_and_resume_identically(prepared, tmp_path):
    parts = make_partitions(prepared, 3, "iid", seed=0, segment=50)
    full = run_simulated(prepared, parts, FederationConfig(rounds=2, **CONFIG), tmp_path / "full")
    assert full.completed_round == 2 and [h["round"] for h in full.history] == [1, 2]
    assert all(h["clients"] == 3 and h["rejected"] == 0 for h in full.history)
    assert full.history[-1]["test"]["macro_f1"] > 0.8
    # Interrupted after round 1, then resumed: identical weights to the uninterrupted run.
    run_simulated(prepared, parts, FederationConfig(rounds=1, **CONFIG), tmp_path / "cut")
    resumed = run_simulated(
        prepared, parts, FederationConfig(rounds=2, **CONFIG), tmp_path / "cut", resume=True
    )
    assert [h["test"] for h in resumed.history] == [h["test"] for h in full.history]
    full_models, cut_models = load_checkpoint(tmp_path / "full", 2), load_checkpoint(tmp_path / "cut", 2)
    for name in ("current", "previous"):  # the last two global models carry the server momentum
        assert all(np.array_equal(a, b) for a, b in zip(full_models[name].plain, cut_models[name].plain))
    assert (tmp_path / "full" / "global" / "model.pt").exists()
    # After the last round the head is refitted on the clients' feature moments (CCVR), deterministically.
    assert full.calibration["clients"] == 3 and full.calibration["rejected"] == 0
    assert full.calibration["classes"] == len(set(prepared.labels[prepared.train_rows]))
    assert full.calibration["test"]["macro_f1"] > 0.8
    # The refitted head is checked on the clients' training and validation windows (all of them, merged)
    # and kept only if it scores better on the training windows (keep_calibrated); otherwise the final
    # model is the last round's.
    check = full.calibration["validation"]
    assert check["clients"] == 3 and check["rejected"] == 0
    # Each client's validation slice: the benign flows among each label's latest LOCAL_VAL_FRACTION.
    local = [prepare_local(prepared.frame.iloc[p], CONFIG["window"]) for p in parts]
    n_val = sum(len(d.test_rows) for d in local)
    assert 0 < n_val < sum(int(round(len(p) * LOCAL_VAL_FRACTION)) + 5 for p in parts)
    assert all((d.labels[d.test_rows] == "BENIGN").all() for d in local)
    counts = {
        str(i): dict(zip(*np.unique(prepared.labels[p], return_counts=True))) for i, p in enumerate(parts)
    }
    trained = local_training_rows(
        {str(i): len(p) for i, p in enumerate(parts)}, counts
    )  # the energy ledger's
    assert trained == {str(i): len(d.train_rows) for i, d in enumerate(local)}
    assert check["validation_windows"] == n_val and check["train_windows"] == sum(map(len, parts)) - n_val
    assert full.calibration["kept"] == (check["train_macro_f1_after"] > check["train_macro_f1_before"])
    if not full.calibration["kept"]:
        assert full.calibration["test_linear_head"] == full.calibration["before"]
    assert resumed.calibration == full.calibration
    # The final model reads with the prototype head of the summed moments (fedids train's default head):
    # a class mean for every class with training windows, saved with the model.
    from fedids.model.artifacts import load_detector

    assert full.calibration["prototypes"] is True
    final = load_detector(tmp_path / "full" / "global")
    trained = set(prepared.labels[prepared.train_rows])
    from fedids.model.discriminant import ABSENT_OFFSET

    assert final.model.prototype_gated  # its alert threshold is the linear head's
    # ... and it is fedids train's head on the clients' head windows pooled: each training flow's window of
    # its host's earlier training flows of its label (fedids.task.head_windows), not its real window.
    from fedids.federation.calibration import ClassMoments, class_moments, hidden_features, moments_prototypes
    from fedids.task import head_windows

    summed, differ = ClassMoments.zeros(len(final.vocabulary), CONFIG["hidden"]), 0
    for d in local:
        scaled, rows = final.scaler.transform(d.features), d.train_rows
        summed = summed + class_moments(
            hidden_features(final.model, scaled, head_windows(d, rows)),
            final.vocabulary.encode(d.labels[rows]),
            len(final.vocabulary),
        )
        differ += int((head_windows(d, rows) != d.windows[rows]).any(axis=1).sum())
    assert differ > 0  # the clients hold flows whose windows mix labels
    weights, offsets = moments_prototypes(summed)
    np.testing.assert_allclose(final.model.prototypes.numpy(), weights, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(final.model.prototype_offset.numpy(), offsets, rtol=1e-3, atol=1e-3)
    assert final.model.has_prototypes and (final.model.prototype_offset > ABSENT_OFFSET).tolist() == [
        label in trained for label in final.vocabulary.labels
    ]
    # The alert threshold was chosen from the clients' summed histograms of the linear head's score, which
    # the gate keeps as the model's P(BENIGN): on the clients' benign validation windows the saved model
    # raises the false alerts the rule counted.
    from fedids.model.checks import META_THRESHOLD
    from fedids.task import predict_labels

    rule = final.metadata[META_THRESHOLD]
    scores = np.concatenate(
        [1.0 - predict_labels(final, d.features, d.windows[d.test_rows])[1][:, 0] for d in local]
    )
    assert rule["validation_benign"] == len(scores) == n_val
    # (up to float32 rounding: the clients' histograms are computed in float64, the detector in float32)
    above = [int((scores >= rule["threshold"] + eps).sum()) for eps in (1e-5, -1e-5)]
    assert above[0] <= rule["validation_false_alerts"] <= above[1]


def test_a_misbehaving_client_is_rejected_and_the_round_completes(prepared, tmp_path):
    """Client 0 sends NaN weights and NaN feature moments, client 1 inflated feature counts; the server logs
    and drops them (the plaintext mode sees each vector), the round and the head calibration still complete."""
    from flwr.simulation import run_simulation

    parts = [p for p in make_partitions(prepared, 3, "iid", seed=0, segment=50)]
    write_partitions(prepared, parts, tmp_path / "partitions")
    app = ClientApp()

    def frame_of(context: Context):
        return load_local_frame(
            partition_path(tmp_path / "partitions", int(context.node_config["partition-id"]))
        )

    @app.query("stats")
    def stats(msg: Message, context: Context) -> Message:
        return handle_stats(msg, frame_of(context), f"p{context.node_config['partition-id']}")

    @app.query("features")
    def features(msg: Message, context: Context) -> Message:
        reply = handle_features(msg, frame_of(context))
        vector, pid = (
            reply.content[m.CONTRIBUTION]["value"].numpy().copy(),
            int(context.node_config["partition-id"]),
        )
        n = len(msg.content[m.CONFIG]["labels"])
        if pid == 0:  # NaN moments: rejected, calibration goes on
            vector[n:] = np.nan
        if pid == 1:  # a client inflating its weight in the calibration: more windows than flows it reported
            vector[:n] *= 1000
        reply.content[m.CONTRIBUTION] = ArrayRecord({"value": Array(vector)})
        return reply

    @app.query("validate")
    def validate(msg: Message, context: Context) -> Message:
        reply = handle_validate(msg, frame_of(context))
        vector, pid = (
            reply.content[m.CONTRIBUTION]["value"].numpy().copy(),
            int(context.node_config["partition-id"]),
        )
        if pid == 0:  # negative counts: rejected
            vector[0] -= 1e6
        if pid == 1:  # a score histogram counting a window its confusion matrix does not: rejected
            vector[-1] += 1
        reply.content[m.CONTRIBUTION] = ArrayRecord({"value": Array(vector)})
        return reply

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = handle_train(msg, frame_of(context), f"p{context.node_config['partition-id']}")
        if int(context.node_config["partition-id"]) == 0:
            arrays = [a.numpy() * np.nan for a in reply.content[m.ARRAYS].values()]
            reply.content[m.ARRAYS] = ArrayRecord([np.asarray(a, dtype=np.float32) for a in arrays])
        return reply

    result: list[FederationState] = []
    server = make_server_app(
        FederationConfig(rounds=1, **CONFIG),
        tmp_path / "run",
        expected_clients=3,
        evaluate=lambda d: evaluate_rows(d, prepared, prepared.test_rows),
        result=result,
    )
    run_simulation(
        server_app=server,
        client_app=app,
        num_supernodes=3,
        backend_config={"client_resources": {"num_cpus": 1}},
    )
    record = result[0].history[0]
    assert record["clients"] == 2 and record["rejected"] == 1
    assert np.isfinite(record["test"]["macro_f1"])
    assert result[0].calibration["clients"] == 1 and result[0].calibration["rejected"] == 2
    check = result[0].calibration["validation"]
    assert check["clients"] == 1 and check["rejected"] == 2 and check["validation_windows"] > 0
