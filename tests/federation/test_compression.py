"""Update compression (fedids.federation.compression): codecs, validation, and a real Flower run."""

import numpy as np
import pytest

from fedids.federation.compression import Compression, decode, encode, payload_bytes
from fedids.federation.server_app import FederationConfig
from fedids.federation.simulation import make_partitions, run_simulated

SHAPES = [(3, 4), (4,), (300,)]


def _delta(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) * scale for s, scale in zip(SHAPES, (0.1, 5.0, 0.01))]


def test_parse() -> None:
    assert Compression.parse("none") == Compression() and not Compression().active
    assert Compression.parse("int8").kind == "int8"
    assert Compression.parse("topk:0.1") == Compression("topk", 0.1)
    for bad in ("topk", "topk:0", "topk:1.5", "topk:x", "int4", "int8:2"):
        with pytest.raises(ValueError):
            Compression.parse(bad)


def test_int8_round_trip_error_is_at_most_half_a_step_per_tensor() -> None:
    delta = _delta()
    payload, residual = encode(delta, Compression("int8"))
    assert residual is None and payload["q"].dtype == np.int8 and payload["scale"].dtype == np.float32
    back = decode(payload, Compression("int8"), SHAPES)
    for d, b, scale in zip(delta, back, payload["scale"]):
        assert b.shape == d.shape and b.dtype == np.float32
        assert scale == pytest.approx(np.abs(d).max() / 127)
        assert np.abs(d - b).max() <= scale / 2 * (1 + 1e-5)  # per-tensor scale: small tensors keep precision
    n = sum(int(np.prod(s)) for s in SHAPES)
    assert payload_bytes(payload) == n + 4 * len(SHAPES)  # one byte per value, one float per tensor


def test_int8_all_zero_update() -> None:
    zero = [np.zeros(s, np.float32) for s in SHAPES]
    payload, _ = encode(zero, Compression("int8"))
    assert all(np.array_equal(b, z) for b, z in zip(decode(payload, Compression("int8"), SHAPES), zero))


def test_topk_keeps_exactly_k_largest_and_feeds_back_the_rest() -> None:
    spec = Compression("topk", 0.1)
    delta = _delta()
    flat = np.concatenate([d.ravel() for d in delta])
    k = spec.k(flat.size)
    payload, residual = encode(delta, spec)
    assert payload["index"].dtype == np.uint16 and payload["index"].shape == (k,) == payload["value"].shape
    assert payload_bytes(payload) == k * (2 + 4)
    back = np.concatenate([b.ravel() for b in decode(payload, spec, SHAPES)])
    assert np.count_nonzero(back) == k
    assert np.abs(back).min(initial=np.inf, where=back != 0) >= np.abs(flat[back == 0]).max()  # the k largest
    assert np.array_equal(back + residual, flat)  # nothing lost: sent + kept = update

    # Error feedback: the residual is added to the next update, so entries too small to be sent once
    # accumulate until they are.
    payload2, residual2 = encode(delta, spec, residual)
    sent2 = np.concatenate([b.ravel() for b in decode(payload2, spec, SHAPES)])
    assert np.allclose(sent2 + residual2, flat + residual)
    small = np.argsort(np.abs(flat))[flat.size // 2]  # a median entry: not sent at first
    assert back[small] == 0.0
    total, r = 0.0, None
    for _ in range(200):
        p, r = encode(delta, spec, r)
        total += np.concatenate([b.ravel() for b in decode(p, spec, SHAPES)])[small]
    assert total + r[small] == pytest.approx(200 * flat[small], rel=1e-3)  # it gets through too
    assert total != 0.0


def test_decode_rejects_malformed_payloads() -> None:
    int8, topk = Compression("int8"), Compression("topk", 0.1)
    good8, _ = encode(_delta(), int8)
    goodk, _ = encode(_delta(), topk)
    bad = [
        (int8, {**good8, "q": good8["q"].astype(np.int16)}),  # wrong dtype
        (int8, {**good8, "q": good8["q"][:-1]}),  # wrong length
        (int8, {**good8, "scale": np.array([np.nan, 1, 1], np.float32)}),  # NaN scale
        (int8, {"q": good8["q"]}),  # missing array
        (
            topk,
            {
                **goodk,
                "value": np.where(np.arange(goodk["value"].size) == 0, np.inf, goodk["value"]).astype(
                    np.float32
                ),
            },
        ),
        (topk, {**goodk, "index": np.full_like(goodk["index"], 3)}),  # repeated indices
        (topk, {**goodk, "index": (goodk["index"] + 60000).astype(np.uint16)}),  # out of range
        (topk, {**goodk, "value": goodk["value"][:-1]}),  # wrong count
    ]
    for spec, payload in bad:
        with pytest.raises(ValueError):
            decode(payload, spec, SHAPES)


def test_compression_is_refused_with_private_modes() -> None:
    with pytest.raises(ValueError, match="plaintext"):
        FederationConfig(privacy="dp", target_epsilon=8.0, compression="int8")
    with pytest.raises(ValueError, match="plaintext"):
        FederationConfig(privacy="secagg", compression="topk:0.1")


@pytest.mark.slow
def test_int8_and_topk_uploads_in_a_real_flower_run(cicids_sample, tmp_path) -> None:
    """int8 cuts the upload about 4x and still trains; top-k (error feedback in node state) cuts it more."""
    data = cicids_sample
    parts = make_partitions(data, 3, "iid", seed=0, segment=50)
    base = dict(
        rounds=2, min_clients=1, hidden=16, window=5, batch_size=64, lr=1e-2, seed=7, strategy="fedavg"
    )
    runs = {
        c: run_simulated(data, parts, FederationConfig(compression=c, **base), tmp_path / c.replace(":", "-"))
        for c in ("none", "int8", "topk:0.05")
    }
    for name, state in runs.items():
        assert [h["clients"] for h in state.history] == [3, 3] and all(
            h["rejected"] == 0 for h in state.history
        ), name
    plain = runs["none"].history[-1]
    assert plain["bytes_up"] == plain["bytes_down"]  # full float32 weights each way
    for h in runs["int8"].history:
        assert 0.24 < h["bytes_up"] / h["bytes_down"] < 0.27  # 1 byte instead of 4, plus the scales
        assert sum(p["bytes_up"] for p in h["participants"].values()) == h["bytes_up"]
    for h in runs["topk:0.05"].history:
        assert 0.07 < h["bytes_up"] / h["bytes_down"] < 0.08  # 5% of the values, 6 bytes each
    f1 = {name: state.history[-1]["test"]["macro_f1"] for name, state in runs.items()}
    assert f1["none"] > 0.8 and f1["int8"] > f1["none"] - 0.05, f1
    assert f1["topk:0.05"] > 0.3, f1  # above any one-class guess (0.2)
