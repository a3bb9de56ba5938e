"""Secure aggregation (fedids.privacy.secagg) and its BFV-encrypted variant (he_secagg)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import tenseal as ts
from scipy import stats

from fedids.privacy.he import SCHEME_BFV, parse_secret_context, unpack_chunks
from fedids.privacy.he_secagg import (
    BFV_PLAIN_MODULUS,
    MAX_CLIENTS,
    EncryptedMaskedSum,
    HESecAggClient,
    HESecAggServer,
    create_bfv_keys,
    decrypt_masked_sum,
    encrypt_masked,
)
from fedids.privacy.secagg import (
    B_SHARES,
    MASKED,
    S_SHARES,
    SHAMIR_PRIME,
    SHARES,
    InvalidMessageError,
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggError,
    SecAggServer,
    dequantize_sum,
    message_size,
    pack_records,
    quantize,
    shamir_combine,
    shamir_split,
    simulate_round,
    unpack_records,
)

D = 1000


def _vectors(ids, d=D, seed=0):
    rng = np.random.default_rng(seed)
    return {c: rng.uniform(-1.0, 1.0, size=d).astype(np.float32) for c in ids}


def _round(n=10, d=D, round_id=3, dropouts=None, keep_messages=False, first_id=1000):
    config = SecAggConfig(n_clients=n, vector_length=d, round_id=round_id)
    ids = list(range(first_id, first_id + n))
    vectors = _vectors(ids, d)
    server = SecAggServer(config)
    clients = {c: SecAggClient(config, c) for c in ids}
    trace = simulate_round(server, clients, vectors, dropouts, keep_messages)
    return config, vectors, server, clients, trace


def _expected_sum(config, vectors, ids):
    total = sum(quantize(vectors[c], config).astype(np.uint64) for c in ids)
    return (total % (1 << 32)).astype(np.uint32)


# ------------------------------------------------------------------------------ correctness
def test_aggregate_equals_plaintext_sum_of_quantised_updates_exactly():
    config, vectors, server, _, trace = _round()
    assert trace.survivors == tuple(sorted(vectors))
    total = server.aggregate()
    assert total.dtype == np.uint32
    assert np.array_equal(total, _expected_sum(config, vectors, vectors))
    # De-quantised mean vs numpy's mean: within the bound computed from the config.
    mean = dequantize_sum(total, config) / len(trace.survivors)
    reference = np.mean(np.stack(list(vectors.values())).astype(np.float64), axis=0)
    bound = config.quantization_error_bound
    assert bound == pytest.approx(0.5 * 10 / (2**31 - 1), rel=1e-6)
    assert np.max(np.abs(mean - reference)) <= bound
    assert server.reconstructed_s == set() and server.reconstructed_b == set(vectors)


def test_quantisation_clips_and_wraps():
    config = SecAggConfig(n_clients=4, vector_length=5, clip_range=0.5)
    q = quantize(np.array([-2.0, -0.5, 0.0, 0.25, 3.0], dtype=np.float32), config)
    assert q.dtype == np.uint32
    scale = config.scale
    assert scale == math.floor((2**31 - 1) / (4 * 0.5))
    assert q.view(np.int32).tolist() == [
        -round(0.5 * scale),
        -round(0.5 * scale),
        0,
        round(0.25 * scale),
        round(0.5 * scale),
    ]
    # The sum of n extreme values still decodes without overflow.
    extremes = np.full(5, 0.5, dtype=np.float32)
    total = sum(quantize(-extremes, config).astype(np.uint64) for _ in range(4)) % (1 << 32)
    assert np.allclose(dequantize_sum(total.astype(np.uint32), config), -2.0, atol=4 / scale)


def test_default_threshold_tolerates_30_percent():
    assert SecAggConfig(10, 5).t == 7
    assert SecAggConfig(100, 5).t == 70
    assert SecAggConfig(7, 5).t == 5  # floor(2.1) = 2 may drop
    for bad in (5, 11):
        with pytest.raises(ValueError):
            SecAggConfig(10, 5, threshold=bad)  # must be > n/2 and <= n
    with pytest.raises(ValueError):
        SecAggConfig(1, 5)
    config = SecAggConfig(10, 7, round_id=9, clip_range=0.25)
    assert SecAggConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "dropouts",
    [
        {"share": [1000, 1001, 1002]},  # 30% vanish after advertising keys
        {"input": [1003, 1004, 1005]},  # after sharing keys
        {"share": [1000], "input": [1005], "unmask": [1009]},  # one at each later stage
    ],
)
def test_round_completes_with_30_percent_dropouts(dropouts):
    config, vectors, server, _, trace = _round(dropouts=dropouts)
    gone_before_input = set(dropouts.get("share", [])) | set(dropouts.get("input", []))
    survivors = sorted(set(vectors) - gone_before_input)
    assert list(trace.survivors) == survivors
    total = server.aggregate()
    assert np.array_equal(total, _expected_sum(config, vectors, survivors))
    mean = dequantize_sum(total, config) / len(survivors)
    reference = np.mean([vectors[c].astype(np.float64) for c in survivors], axis=0)
    assert np.max(np.abs(mean - reference)) <= config.quantization_error_bound
    dropped_after_sharing = set(dropouts.get("input", []))
    assert server.reconstructed_s == dropped_after_sharing
    assert server.reconstructed_b == set(survivors)


@pytest.mark.parametrize(
    "stage, closing",
    [
        ("share", "forward_shares"),
        ("input", "unmask_request"),
        ("unmask", "aggregate"),
    ],
)
def test_more_than_threshold_dropouts_abort(stage, closing):
    config = SecAggConfig(n_clients=10, vector_length=50)
    ids = list(range(10))
    server = SecAggServer(config)
    clients = {c: SecAggClient(config, c) for c in ids}
    with pytest.raises(SecAggAbort, match="threshold is 7"):
        simulate_round(server, clients, _vectors(ids, 50), {stage: ids[:4]})
        getattr(server, closing)()


def test_too_few_advertisements_abort():
    config = SecAggConfig(n_clients=10, vector_length=50)
    server = SecAggServer(config)
    clients = {c: SecAggClient(config, c) for c in range(10)}
    with pytest.raises(SecAggAbort):
        simulate_round(server, clients, _vectors(range(10), 50), {"advertise": [0, 1, 2, 3]})


# -------------------------------------------------------------------------------- privacy
def test_masked_upload_is_uniform_and_uncorrelated_with_the_input():
    d = 60_000
    config = SecAggConfig(n_clients=3, vector_length=d)
    ramp = np.linspace(-1, 1, d).astype(np.float32)
    vectors = {0: ramp, 1: np.zeros(d, np.float32), 2: np.full(d, 0.9, np.float32)}
    server = SecAggServer(config)
    clients = {c: SecAggClient(config, c) for c in vectors}
    trace = simulate_round(server, clients, vectors, keep_messages=True)
    uploads = {m["client_id"]: np.frombuffer(m[MASKED], dtype="<u4") for m in trace.received if MASKED in m}
    for c, y in uploads.items():
        # Top 6 bits in 64 equally likely bins, and uniform as a whole (KS).
        counts = np.bincount(y >> 26, minlength=64)
        assert stats.chisquare(counts).pvalue > 1e-4
        assert stats.kstest(y / 2.0**32, "uniform").pvalue > 1e-4
        assert not np.array_equal(y, quantize(vectors[c], config))
    r = np.corrcoef(uploads[0].astype(np.float64), ramp.astype(np.float64))[0, 1]
    assert abs(r) < 5 / math.sqrt(d)
    # Identical inputs (0 vs 0.9 would differ anyway): masks still differ per client.
    assert np.mean(uploads[1] == uploads[2]) < 1e-3
    assert np.array_equal(server.aggregate(), _expected_sum(config, vectors, vectors))


def _drive_manually(n=10, d=40, drop_at_input=(1003, 1004)):
    """Run a round stage by stage, capturing each client's secrets before they are wiped."""
    config = SecAggConfig(n_clients=n, vector_length=d, round_id=11)
    ids = list(range(1000, 1000 + n))
    vectors = _vectors(ids, d)
    server = SecAggServer(config)
    clients = {c: SecAggClient(config, c) for c in ids}
    received = []
    for c in ids:
        message = clients[c].advertise_keys()
        received.append(message)
        server.receive_advertisement(message)
    broadcast = server.public_keys_message()
    for c in ids:
        message = clients[c].share_keys(broadcast)
        received.append(message)
        server.receive_shares(message)
    routed = server.forward_shares()
    secrets = {c: (clients[c]._b, clients[c]._s_sk.private_bytes_raw()) for c in ids}
    for c in ids:
        if c in drop_at_input:
            continue
        message = clients[c].masked_input(routed[c], vectors[c])
        received.append(message)
        server.receive_masked_input(message)
    request = server.unmask_request()
    return config, vectors, server, clients, received, secrets, request


def test_server_never_receives_a_survivors_secrets():
    config, vectors, server, clients, received, secrets, request = _drive_manually()
    survivors = list(server.survivors)
    for c in survivors:
        message = clients[c].unmask(request)
        received.append(message)
        server.receive_unmask_response(message)
        # Only shares of survivors' b and dropped clients' s are revealed.
        assert set(unpack_records(message[B_SHARES], B_SHARES)) == set(survivors)
        assert set(unpack_records(message[S_SHARES], S_SHARES)) == {1003, 1004}
    total = server.aggregate()
    assert np.array_equal(total, _expected_sum(config, vectors, survivors))
    assert server.reconstructed_s == {1003, 1004}
    assert server.reconstructed_b == set(survivors)
    wire = b"".join(v for m in received for v in m.values() if isinstance(v, bytes))
    for c in survivors:
        b, s = secrets[c]
        assert b not in wire and s not in wire  # never in the clear
    for c in (1003, 1004):
        assert secrets[c][0] not in wire  # a dropped client's self-mask seed neither


def test_clients_refuse_requests_that_would_reveal_both_secrets():
    from fedids.privacy.secagg import DROPPED, ROUND, SURVIVORS, pack_ids

    config, _, server, clients, _, _, request = _drive_manually()
    survivors = list(server.survivors)
    both = {
        ROUND: config.round_id,
        SURVIVORS: pack_ids(survivors),
        DROPPED: pack_ids([1003, 1004, survivors[-1]]),
    }
    with pytest.raises(SecAggAbort, match="both"):
        clients[survivors[0]].unmask(both)
    me = survivors[1]
    me_dropped = {
        ROUND: config.round_id,
        SURVIVORS: pack_ids([c for c in survivors if c != me]),
        DROPPED: pack_ids([1003, 1004, me]),
    }
    with pytest.raises(SecAggAbort, match="this client as dropped"):
        clients[me].unmask(me_dropped)
    with pytest.raises(SecAggAbort, match="does not match"):
        clients[survivors[2]].unmask(
            {ROUND: config.round_id, SURVIVORS: pack_ids(survivors), DROPPED: pack_ids([1003])}
        )
    # The honest request is answered.
    assert B_SHARES in clients[survivors[3]].unmask(request)


def _routed(n=5, d=20):
    config = SecAggConfig(n_clients=n, vector_length=d)
    server = SecAggServer(config)
    clients = {c: SecAggClient(config, c) for c in range(n)}
    for c in clients:
        server.receive_advertisement(clients[c].advertise_keys())
    broadcast = server.public_keys_message()
    for c in clients:
        server.receive_shares(clients[c].share_keys(broadcast))
    return clients, server.forward_shares()


def test_tampered_share_ciphertext_fails_closed():
    # 1) one flipped bit in a ciphertext
    clients, routed = _routed()
    records = unpack_records(routed[0][SHARES], SHARES)
    blob = bytearray(records[3])
    blob[40] ^= 0x01
    records[3] = bytes(blob)
    with pytest.raises(SecAggAbort, match="authentication"):
        clients[0].masked_input(
            dict(routed[0], **{SHARES: pack_records(sorted(records.items()))}), np.zeros(20, np.float32)
        )
    # 2) a genuine ciphertext presented as another sender's (associated data mismatch)
    clients, routed = _routed()
    records = unpack_records(routed[0][SHARES], SHARES)
    records[1], records[2] = records[2], records[1]
    with pytest.raises(SecAggAbort, match="authentication"):
        clients[0].masked_input(
            dict(routed[0], **{SHARES: pack_records(sorted(records.items()))}), np.zeros(20, np.float32)
        )
    # 3) untouched, the same flow goes through
    clients, routed = _routed()
    message = clients[0].masked_input(routed[0], np.zeros(20, np.float32))
    assert len(message[MASKED]) == 80


def test_invalid_messages_are_rejected_and_the_round_goes_on():
    config = SecAggConfig(n_clients=10, vector_length=30, round_id=5)
    ids = list(range(10))
    vectors = _vectors(ids, 30)
    server = SecAggServer(config)
    clients = {c: SecAggClient(config, c) for c in ids}
    adverts = {c: clients[c].advertise_keys() for c in ids}
    for c in ids:
        server.receive_advertisement(adverts[c])
    with pytest.raises(InvalidMessageError, match="duplicate"):
        server.receive_advertisement(adverts[0])
    with pytest.raises(InvalidMessageError, match="round"):
        server.receive_advertisement(dict(SecAggClient(config, 77).advertise_keys(), round=4))
    broadcast = server.public_keys_message()
    with pytest.raises(InvalidMessageError, match="stage"):
        server.receive_advertisement(SecAggClient(config, 78).advertise_keys())  # too late
    for c in ids:
        server.receive_shares(clients[c].share_keys(broadcast))
    routed = server.forward_shares()
    inputs = {c: clients[c].masked_input(routed[c], vectors[c]) for c in ids}
    with pytest.raises(InvalidMessageError, match="bytes"):
        server.receive_masked_input(dict(inputs[0], **{MASKED: inputs[0][MASKED][:-4]}))
    with pytest.raises(InvalidMessageError, match="missing"):
        server.receive_masked_input({"round": 5, "client_id": 0})
    for c in ids[1:]:
        server.receive_masked_input(inputs[c])
    with pytest.raises(InvalidMessageError, match="duplicate"):
        server.receive_masked_input(inputs[1])
    request = server.unmask_request()  # client 0's rejected upload makes it a dropout
    for c in server.survivors:
        server.receive_unmask_response(clients[c].unmask(request))
    assert np.array_equal(server.aggregate(), _expected_sum(config, vectors, ids[1:]))


def test_inconsistent_shares_abort_reconstruction():
    config, _, server, clients, _, _, request = _drive_manually()
    for i, c in enumerate(server.survivors):
        message = clients[c].unmask(request)
        if i == len(server.survivors) - 1:  # the last responder lies about one share
            shares = unpack_records(message[B_SHARES], B_SHARES)
            owner = next(iter(shares))
            shares[owner] = ((int.from_bytes(shares[owner], "big") + 1) % SHAMIR_PRIME).to_bytes(66, "big")
            message[B_SHARES] = pack_records(sorted(shares.items()))
        server.receive_unmask_response(message)
    with pytest.raises(SecAggAbort, match="inconsistent"):
        server.aggregate()


def test_shamir_any_threshold_subset_reconstructs():
    secret = bytes(range(32))
    shares = shamir_split(secret, 3, 5)
    points = [(i + 1, y) for i, y in enumerate(shares)]
    for subset in itertools.combinations(points, 3):
        assert shamir_combine(subset) == secret
    for subset in itertools.combinations(points, 2):  # below the threshold: not the secret
        try:
            value = shamir_combine(subset)
        except SecAggAbort:  # out of range for a 32-byte secret: detected as inconsistent
            continue
        assert value != secret


def test_upload_sizes():
    config, vectors, server, _, trace = _round(n=10, d=D)
    masked = 4 * D
    for c in vectors:
        # Masked input (4 bytes/value) plus keys, 9 share ciphertexts and 10 revealed shares.
        assert masked < trace.upload_bytes[c] < masked + 3000
    assert message_size({"a": b"xyz", "b": 1}) == 11


# ------------------------------------------------------------------------------- he+secagg
@pytest.fixture(scope="module")
def bfv_keys():
    return create_bfv_keys()


def test_bfv_parameters_do_not_wrap():
    from Crypto.Util.number import isPrime

    assert isPrime(BFV_PLAIN_MODULUS) and BFV_PLAIN_MODULUS % (2 * 4096) == 1
    assert (MAX_CLIENTS + 1) * (2**32 - 1) < BFV_PLAIN_MODULUS
    assert (MAX_CLIENTS + 2) * (2**32 - 1) >= BFV_PLAIN_MODULUS


def test_he_secagg_round_is_exact_and_only_clients_decrypt(bfv_keys):
    d = 5000  # two BFV ciphertexts
    config = SecAggConfig(n_clients=10, vector_length=d, round_id=21)
    ids = list(range(10))
    vectors = _vectors(ids, d, seed=4)
    server = HESecAggServer(config, bfv_keys.public_context)
    clients = {c: HESecAggClient(config, c, bfv_keys.secret_context) for c in ids}
    dropouts = {"share": [0], "input": [1], "unmask": [2]}
    trace = simulate_round(server, clients, vectors, dropouts, keep_messages=True)
    with pytest.raises(SecAggError, match="no plaintext aggregate"):
        server.aggregate()
    blob = server.encrypted_aggregate()
    survivors = list(trace.survivors)
    assert survivors == ids[2:]
    total = decrypt_masked_sum(bfv_keys.secret_context, blob, d)
    assert np.array_equal(total, _expected_sum(config, vectors, survivors))
    mean = dequantize_sum(total, config) / len(survivors)
    reference = np.mean([vectors[c].astype(np.float64) for c in survivors], axis=0)
    assert np.max(np.abs(mean - reference)) <= config.quantization_error_bound
    # The server's context cannot decrypt the aggregate.
    assert not server._encrypted._context.has_secret_key()
    with pytest.raises(ValueError, match="no secret key"):
        decrypt_masked_sum(bfv_keys.public_context, blob, d)
    # A client colluding with the server decrypts an individual upload: it is still masked.
    upload = next(m[MASKED] for m in trace.received if m.get("client_id") == 5 and MASKED in m)
    context = parse_secret_context(bfv_keys.secret_context)
    chunks = unpack_chunks(upload, SCHEME_BFV, d, 4096)
    decrypted = np.concatenate(
        [np.mod(ts.bfv_vector_from(context, c).decrypt(), BFV_PLAIN_MODULUS) for c in chunks]
    ).astype(np.uint32)
    assert not np.array_equal(decrypted, quantize(vectors[5], config))
    assert stats.kstest(decrypted / 2.0**32, "uniform").pvalue > 1e-4


def test_he_secagg_server_refuses_secret_context_and_bad_uploads(bfv_keys):
    config = SecAggConfig(n_clients=3, vector_length=100)
    with pytest.raises(ValueError, match="secret key"):
        HESecAggServer(config, bfv_keys.secret_context)
    with pytest.raises(ValueError, match="at most 2046"):
        HESecAggServer(SecAggConfig(n_clients=3000, vector_length=10), bfv_keys.public_context)
    total = EncryptedMaskedSum(bfv_keys.public_context, 100)
    good = encrypt_masked(bfv_keys.secret_context, np.arange(100, dtype=np.uint32))
    for bad in (good[:-3], encrypt_masked(bfv_keys.secret_context, np.arange(99, dtype=np.uint32))):
        with pytest.raises(ValueError):
            total.add(bad)
    total.add(good)
    total.add(good)
    total.add_plain(np.full(100, 2**32 - 1, dtype=np.uint32))
    out = decrypt_masked_sum(bfv_keys.secret_context, total.to_bytes(), 100)
    expected = ((2 * np.arange(100, dtype=np.uint64) + 2**32 - 1) % 2**32).astype(np.uint32)
    assert np.array_equal(out, expected)


def test_bfv_sum_of_many_full_range_uploads_is_exact(bfv_keys):
    # 300 uploads of uniform 32-bit values plus a correction: the integer sum reaches 2**40.
    rng = np.random.default_rng(8)
    d = 4096
    total = EncryptedMaskedSum(bfv_keys.public_context, d)
    expected = np.zeros(d, dtype=np.uint64)
    for _ in range(300):
        y = rng.integers(0, 2**32, size=d, dtype=np.uint64).astype(np.uint32)
        expected += y
        total.add(encrypt_masked(bfv_keys.secret_context, y))
    correction = rng.integers(0, 2**32, size=d, dtype=np.uint64).astype(np.uint32)
    total.add_plain(correction)
    expected = ((expected + correction) % 2**32).astype(np.uint32)
    assert np.array_equal(decrypt_masked_sum(bfv_keys.secret_context, total.to_bytes(), d), expected)
