"""The aggregation pipeline (fedids.federation.aggregation) against hand-computed means and against
Flower's own FedAvgM: the sum of weighted proposals must be the server step every mode shares."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvgM

from fedids.federation import aggregation as agg
from support.flower_messages import message

SHAPES = ((4,), (2, 1), (2,))  # a body of 4 values and a head of 2 classes x 1 feature, with biases
LAYOUT = agg.UpdateLayout(SHAPES)


def model(body: float, head: np.ndarray) -> list[np.ndarray]:
    return [
        np.full(4, body, np.float32),
        head.astype(np.float32).reshape(2, 1),
        head[:, 0].astype(np.float32),
    ]


def summed(proposals, weights, shares, metrics=None) -> np.ndarray:
    return sum(
        agg.update_contribution(LAYOUT, p, w, s, metrics or {}) for p, w, s in zip(proposals, weights, shares)
    )


def test_each_class_row_is_averaged_by_its_own_examples_and_the_body_by_client_weights():
    # client 1: classes (a, b) = (90, 0); client 2: (5, 5); weights = their shares of the examples
    locals_ = [model(1.0, np.array([[1.0], [10.0]])), model(3.0, np.array([[3.0], [-2.0]]))]
    totals = np.array([95, 5])
    shares = [
        agg.client_shares(c, totals, np.ones(2), weighting="examples", class_head=True)
        for c in (np.array([90, 0]), np.array([5, 5]))
    ]
    result = agg.finalize_update(LAYOUT, summed(locals_, [s[0] for s in shares], [s[1] for s in shares]))
    np.testing.assert_allclose(result.weights[0], 0.9 * 1.0 + 0.1 * 3.0, rtol=1e-6)
    np.testing.assert_allclose(result.weights[1][:, 0], [(90 * 1.0 + 5 * 3.0) / 95, -2.0], rtol=1e-6)
    np.testing.assert_allclose(result.weights[2], result.weights[1][:, 0], rtol=1e-6)


def test_a_class_no_contributing_client_holds_keeps_the_plain_average():
    locals_ = [model(0.0, np.array([[2.0], [4.0]])), model(0.0, np.array([[6.0], [8.0]]))]
    result = agg.finalize_update(
        LAYOUT, summed(locals_, [0.75, 0.25], [np.array([0.75, 0.0]), np.array([0.25, 0.0])])
    )
    np.testing.assert_allclose(result.weights[1][1, 0], 0.75 * 4.0 + 0.25 * 8.0, rtol=1e-6)


def test_objective_weights_are_each_clients_share_of_the_class_weighted_loss():
    # class weights (benign, attack) = (0.1, 2.0): W1 = 90 * 0.1 = 9, W2 = 5 * 0.1 + 5 * 2 = 10.5
    totals, weights = np.array([95, 5]), np.array([0.1, 2.0])
    w1, _ = agg.client_shares(np.array([90, 0]), totals, weights, weighting="objective", class_head=False)
    w2, _ = agg.client_shares(np.array([5, 5]), totals, weights, weighting="objective", class_head=False)
    assert (w1, w2) == pytest.approx((9.0 / 19.5, 10.5 / 19.5))


def _reply(node: int, weights: list[np.ndarray], n: float) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({f"w{i}": Array(w) for i, w in enumerate(weights)}),
            "metrics": MetricRecord({"num-examples": float(n)}),
        }
    )
    return message(content, "train", src=node, dst=0, reply_to="i", message_id=f"m{node}")


@pytest.mark.parametrize("lr, mu", [(1.0, 0.5), (0.7, 0.9), (1.0, 0.0)])
def test_weighted_proposals_reproduce_flowers_fedavgm_round_after_round(lr, mu):
    """Three rounds, three clients with unequal weights: the pipeline (momentum recovered from the last two
    global models) and Flower's FedAvgM (which stores its momentum) end with the same model."""
    rng = np.random.default_rng(0)
    weights = np.array([0.5, 0.3, 0.2])
    flower = FedAvgM(
        server_learning_rate=lr,
        server_momentum=mu,
        min_available_nodes=1,
        min_train_nodes=1,
        fraction_evaluate=0.0,
    )
    ours = [model(0.5, np.array([[0.1], [-0.2]]))]
    theirs = [w.copy() for w in ours[0]]
    for server_round in range(1, 4):
        locals_ = [[w + rng.normal(0, 0.1, w.shape).astype(np.float32) for w in theirs] for _ in weights]
        flower.current_arrays = ArrayRecord({f"w{i}": Array(w) for i, w in enumerate(theirs)})
        arrays, _ = flower.aggregate_train(
            server_round, [_reply(i, loc, w) for i, (loc, w) in enumerate(zip(locals_, weights))]
        )
        theirs = [a.numpy() for a in arrays.values()]
        current = ours[-1]
        momentum = agg.momentum_between(ours[-2] if len(ours) > 1 else None, current, lr)
        proposals = [agg.propose(current, momentum, loc, server_lr=lr, server_momentum=mu) for loc in locals_]
        ours.append(agg.finalize_update(LAYOUT, summed(proposals, weights, [np.zeros(2)] * 3)).weights)
        for a, b in zip(ours[-1], theirs):
            np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f"round {server_round}")


def test_the_sum_of_the_survivors_is_their_weighted_mean_and_carries_their_metrics():
    """A client that drops out is simply missing from the sum: the mean renormalises by the weights the
    vector carries, and the summed metrics count the survivors."""
    locals_ = [model(float(i), np.array([[i], [i]])) for i in range(3)]
    metrics = [
        {"clients": 1.0, "examples": 0.2, "loss": 0.2 * 0.5},
        {"clients": 1.0, "examples": 0.3, "loss": 0.3 * 1.0},
    ]
    result = agg.finalize_update(
        LAYOUT,
        summed(locals_[:2], [0.2, 0.3], [np.zeros(2)] * 2, None)
        + sum(
            agg.update_contribution(LAYOUT, [np.zeros_like(w) for w in locals_[0]], 0.0, np.zeros(2), m)
            for m in metrics
        ),
    )
    np.testing.assert_allclose(result.weights[0], (0.2 * 0 + 0.3 * 1) / 0.5, rtol=1e-6)
    means = result.mean_metrics()
    assert means["clients"] == 2 and means["train_loss"] == pytest.approx((0.1 + 0.3) / 0.5)
    with pytest.raises(ValueError, match="no contribution"):
        agg.finalize_update(LAYOUT, np.zeros(LAYOUT.length))


def test_a_robust_strategy_gets_the_plaintext_replies_and_takes_their_median():
    from fedids.federation.strategies import make_strategy

    locals_ = [model(v, np.array([[v], [v]])) for v in (0.0, 1.0, 100.0)]  # one outlier
    arrays, _ = make_strategy("fedmedian").aggregate_train(
        1, [_reply(i, loc, 1.0) for i, loc in enumerate(locals_)]
    )
    assert all(np.allclose(a.numpy(), 1.0) for a in arrays.values())


@pytest.mark.parametrize("n", [2, 5, 40])
def test_distributed_dp_sgd_steps_on_the_sum_of_the_updates_whatever_the_number_of_clients(n):
    """Each client weighs 1 and proposes ``r + lr * delta_i`` (``r``: the unmoved proposal, momentum
    included); the pooled step is ``r + lr * sum(delta_i)``: the same for n clients as for one client
    holding all their rows, where the mean would shrink it as 1 / n."""
    rng = np.random.default_rng(n)
    lr, mu = 1.0, 0.5
    previous, current = model(0.5, np.array([[0.2], [0.4]])), model(0.25, np.array([[0.1], [0.3]]))
    momentum = agg.momentum_between(previous, current, lr)
    deltas = [[rng.normal(0, 1e-3, w.shape) for w in current] for _ in range(n)]
    proposals = [
        agg.propose(
            current, momentum, [w + d for w, d in zip(current, delta)], server_lr=lr, server_momentum=mu
        )
        for delta in deltas
    ]
    total = summed(proposals, [1.0] * n, [np.zeros(2)] * n)
    pooled = agg.finalize_pooled_step(LAYOUT, total, current, previous, lr, mu)
    one_client = agg.propose(
        current,
        momentum,
        [w + sum(d[i] for d in deltas) for i, w in enumerate(current)],
        server_lr=lr,
        server_momentum=mu,
    )
    for got, want in zip(pooled.weights, one_client):
        np.testing.assert_allclose(got, want, atol=1e-6)
    mean = agg.finalize_update(LAYOUT, total).weights
    assert not np.allclose(mean[0] - one_client[0], 0, atol=1e-6)  # the mean's step is 1 / n of it
