"""What a client sends in the private modes, recorded at the ClientApp boundary (a Flower mod) during a
real simulated run on real CICIDS2017 rows: no per-client plaintext value beyond what the README's
threat-model table lists.

Listed for ``he`` and ``he+secagg``: the client key (an identifier), and after the statistics sum the
vocabulary and setup digest every client derives from the *aggregate*. For ``secagg`` additionally the
SecAgg protocol messages (public keys, encrypted shares, masked vectors, unmasking shares). Everything
else a client returns is a ciphertext (uint8) or a masked vector.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

from fedids.data.loader import load_flows
from fedids.federation import messages as m
from fedids.federation.client_app import make_client_app
from fedids.federation.server_app import FederationConfig
from fedids.federation.simulation import make_partitions, run_simulated
from fedids.privacy.keys import init_keys
from fedids.task import prepare

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cicids2017"
pytestmark = pytest.mark.slow

# What the threat-model table lists per mode: (record key, record kind, allowed entries).
SECAGG_PROTOCOL = {"client_id", "round", "c_pk", "s_pk", "shares", "masked", "b_shares", "s_shares"}
LISTED = {
    "he": {(m.CONTRIBUTION, "arrays", frozenset({"ct"})), (m.INFO, "config", frozenset({"client-key"})),
           (m.INFO, "config", frozenset({"labels", "digest", "unknown-rows"}))},
    "secagg": {(m.INFO, "config", frozenset({"client-key"}))},
}


def _recorder(directory: str):
    """A Flower mod writing the shape of every reply (record kinds, keys, array dtypes) to ``directory``."""
    def mod(message, context, call_next):
        reply = call_next(message, context)
        entry = {"type": message.metadata.message_type, "records": []}
        for key, record in reply.content.items():
            if isinstance(record, ArrayRecord):
                kind, fields = "arrays", {k: str(a.numpy().dtype) for k, a in record.items()}
            elif isinstance(record, MetricRecord):
                kind, fields = "metrics", {k: repr(v) for k, v in record.items()}
            elif isinstance(record, ConfigRecord):
                kind, fields = "config", {k: type(v).__name__ for k, v in record.items()}
            else:
                kind, fields = type(record).__name__, {}
            entry["records"].append({"key": key, "kind": kind, "fields": fields})
        with open(os.path.join(directory, f"{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps(entry) + "\n")
        return reply
    return mod


def _recorded(directory: Path) -> list[dict]:
    return [json.loads(line) for p in directory.glob("*.jsonl") for line in p.read_text().splitlines()]


@pytest.mark.parametrize("mode", ["he", "secagg"])
def test_a_client_sends_no_unlisted_plaintext(mode, tmp_path):
    files = [DATA / "trafficlabelling-mondirkb" / "baseline_portscan.csv",
             DATA / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv"]
    data = prepare(load_flows(files).frame, window=4, split="label-time")
    parts = make_partitions(data, 3, "shared:0.5", seed=0, segment=40)
    keys = init_keys(tmp_path / "keys", mode) if "he" in mode else None
    record_dir = tmp_path / "sent"
    record_dir.mkdir()
    app = make_client_app(str(tmp_path / "run" / "partitions"), str(keys.secret_context) if keys else None,
                          mods=[_recorder(str(record_dir))])
    cfg = FederationConfig(rounds=2, min_clients=1, hidden=8, window=4, batch_size=128, lr=1e-2, seed=3,
                           privacy=mode, he_public_context=str(keys.public_context) if keys else "")
    state = run_simulated(data, parts, cfg, tmp_path / "run", client_app=app,
                          he_secret_context=str(keys.secret_context) if keys else None)
    assert state.completed_round == 2 and state.calibration["clients"] == 3
    sent = _recorded(record_dir)
    types = {e["type"] for e in sent}
    assert {m.QUERY_STATS, m.TRAIN, m.QUERY_FEATURES, m.QUERY_VALIDATE, m.QUERY_GLOBAL} <= types
    for entry in sent:
        for record in entry["records"]:
            fields = record["fields"]
            if record["key"] == m.SECAGG:  # the SecAgg protocol: keys, encrypted shares, masked vector
                assert mode == "secagg" and set(fields) <= SECAGG_PROTOCOL, entry
                continue
            listed = (record["key"], record["kind"], frozenset(fields))
            assert listed in LISTED[mode], f"{entry['type']} sent an unlisted record {listed}"
            if record["kind"] == "arrays":
                assert set(fields.values()) == {"uint8"}, entry  # ciphertext bytes only
    # Nothing per client in the clear reached the server's records either: no per-client metrics.
    assert all(h["participants"] is None for h in state.history)
    assert np.isfinite(state.history[-1]["test"]["macro_f1"])  # the operator's evaluator opened the sums
