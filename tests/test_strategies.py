"""Class-aware head aggregation and objective client weights (fedids.federation.strategies) against hand-computed means."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict

from fedids.federation import messages as m
from fedids.federation.strategies import (OBJECTIVE_WEIGHT, add_objective_weights, make_strategy, objective_weights,
                                         reweight_head_rows)


def reply(node: int, body: float, head: np.ndarray, n: int) -> Message:
    content = RecordDict({
        m.ARRAYS: ArrayRecord({"body": Array(np.full(4, body, np.float32)),
                               "head.weight": Array(head.astype(np.float32)),
                               "head.bias": Array(head[:, 0].astype(np.float32))}),
        m.METRICS: MetricRecord({m.NUM_EXAMPLES: n}),
    })
    # a reply from `node`, as the ServerApp receives it
    return Message(content, metadata=Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                                              reply_to_message_id="i", group_id="1", created_at=0.0, ttl=60.0,
                                              message_type="train"))


def test_fedavg_with_reweighted_heads_averages_each_class_row_by_its_own_examples():
    # client 1: 90 examples, classes (a, b) = (90, 0); client 2: 10 examples, (5, 5)
    heads = {1: np.array([[1.0, 1.0], [10.0, 10.0]]), 2: np.array([[3.0, 3.0], [-2.0, -2.0]])}
    replies = [reply(1, 1.0, heads[1], 90), reply(2, 3.0, heads[2], 10)]
    counts = {1: np.array([90, 0]), 2: np.array([5, 5])}
    reweight_head_rows(replies, counts)
    arrays, _ = make_strategy("fedavg").aggregate_train(1, replies)
    got = {k: v.numpy() for k, v in arrays.items()}
    np.testing.assert_allclose(got["body"], 0.9 * 1.0 + 0.1 * 3.0)                       # untouched
    np.testing.assert_allclose(got["head.weight"][0], (90 * 1.0 + 5 * 3.0) / 95, rtol=1e-6)  # class a
    np.testing.assert_allclose(got["head.weight"][1], -2.0, rtol=1e-6)                      # only client 2 has b
    np.testing.assert_allclose(got["head.bias"], got["head.weight"][:, 0], rtol=1e-6)


def test_a_class_no_replying_client_holds_keeps_the_plain_average():
    replies = [reply(1, 0.0, np.array([[2.0], [4.0]]), 30), reply(2, 0.0, np.array([[6.0], [8.0]]), 10)]
    reweight_head_rows(replies, {1: np.array([30, 0]), 2: np.array([10, 0])})
    arrays, _ = make_strategy("fedavg").aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["head.weight"].numpy()[1], 0.75 * 4.0 + 0.25 * 8.0, rtol=1e-6)


def test_missing_counts_for_a_replying_node_fail_loudly():
    with pytest.raises(KeyError):
        reweight_head_rows([reply(7, 0.0, np.ones((2, 1)), 5)], {1: np.array([1, 1])})


def test_objective_weighting_averages_bodies_by_each_clients_share_of_the_weighted_loss():
    # class weights (benign, attack) = (0.1, 2.0): client 1 holds 90 benign flows (W = 9),
    # client 2 holds 5 benign and 5 attack flows (W = 0.5 + 10 = 10.5)
    replies = [reply(1, 1.0, np.array([[1.0], [10.0]]), 90), reply(2, 3.0, np.array([[3.0], [-2.0]]), 10)]
    counts = {1: np.array([90, 0]), 2: np.array([5, 5])}
    add_objective_weights(replies, objective_weights(counts, np.array([0.1, 2.0])))
    assert [r.content[m.METRICS][OBJECTIVE_WEIGHT] for r in replies] == pytest.approx([9.0, 10.5])
    reweight_head_rows(replies, counts, weighted_by_key=OBJECTIVE_WEIGHT)
    arrays, _ = make_strategy("fedavg", weighted_by_key=OBJECTIVE_WEIGHT).aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["body"].numpy(), (9.0 * 1.0 + 10.5 * 3.0) / 19.5, rtol=1e-6)
    # the head rows still average by class examples, whatever the body's weights
    np.testing.assert_allclose(arrays["head.weight"].numpy()[:, 0], [(90 * 1.0 + 5 * 3.0) / 95, -2.0], rtol=1e-6)
