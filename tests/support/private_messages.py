"""What a client sends in the private modes, recorded at the ClientApp boundary (a Flower mod): no
per-client plaintext value beyond what the README's threat-model table lists. The recording runs inside
the equivalence test of ``test_private_federation.py`` (real simulated runs on real CICIDS2017 rows).

Listed for ``he`` and ``he+secagg``: the client key (an identifier), and after the statistics sum the
vocabulary and setup digest every client derives from the *aggregate*. For ``secagg`` additionally the
SecAgg protocol messages (public keys, encrypted shares, masked vectors, unmasking shares). Everything
else a client returns is a ciphertext (uint8) or a masked vector.
"""

import json
import os
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

from fedids.federation import messages as m
from fedids.federation.client_app import make_client_app

# What the threat-model table lists per mode: (record key, record kind, allowed entries).
SECAGG_PROTOCOL = {"client_id", "round", "c_pk", "s_pk", "shares", "masked", "b_shares", "s_shares"}
LISTED = {
    "he": {
        (m.CONTRIBUTION, "arrays", frozenset({"ct"})),
        (m.INFO, "config", frozenset({"client-key"})),
        (m.INFO, "config", frozenset({"labels", "digest", "unknown-rows"})),
    },
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


def assert_no_unlisted_plaintext(mode: str, record_dir: Path) -> None:
    """Every reply recorded in ``record_dir`` holds only what LISTED allows for ``mode``."""
    sent = _recorded(record_dir)
    types = {e["type"] for e in sent}
    assert {m.QUERY_STATS, m.TRAIN, m.QUERY_FEATURES, m.QUERY_VALIDATE, m.QUERY_GLOBAL} <= types, types
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


def recording_client_app(partitions: Path, secret: str | None, record_dir: Path):
    """The real ClientApp with a mod that records every reply's shape to ``record_dir``."""
    record_dir.mkdir(parents=True, exist_ok=True)
    return make_client_app(str(partitions), secret, mods=[_recorder(str(record_dir))])
