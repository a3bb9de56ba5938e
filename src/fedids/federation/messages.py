"""Message keys and payload codecs shared by the ServerApp and the ClientApp: one place for each fact.

Every reply is checked on arrival (:func:`check_reply`), so a client that sends a malformed payload is
rejected with a logged reason instead of failing deep inside aggregation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.typing import ConfigRecordValues

from fedids.data.preprocess import FeatureStats, FlowScaler, LabelVocabulary
from fedids.model.discriminant import has_mean

if TYPE_CHECKING:
    from fedids.federation.private import SealedSum
    from fedids.federation.setup import RunSetup

# Message types (Flower routes "<category>.<action>" to the handler registered for that action).
QUERY_STATS = "query.stats"
QUERY_GLOBAL = "query.global"  # the final global model, for the node's detector
QUERY_FEATURES = "query.features"  # per-class feature moments under the final model (calibration)
QUERY_VALIDATE = "query.validate"  # confusion matrices of candidate heads on local validation windows
TRAIN = "train"
QUERY_SETUP = "query.setup"  # he modes: clients open the sealed statistics sum and derive the run's setup
SECAGG_KEYS, SECAGG_SHARES, SECAGG_UNMASK = "train.secagg_keys", "train.secagg_shares", "train.secagg_unmask"

# RecordDict keys.
ARRAYS = "arrays"  # model weights (ArrayRecord), same key as Flower's strategies
METRICS = "metrics"  # MetricRecord, same key as Flower's strategies
CONFIG = "config"  # ConfigRecord sent by the server
PREPROCESSING = "preprocessing"  # ArrayRecord: scaler center/scale
STATS = "stats"  # ArrayRecord: feature histogram of a client
INFO = "info"  # ConfigRecord: client key, labels, label counts
HEADS = "heads"  # ArrayRecord: candidate heads, "<i>.weight" / "<i>.bias"
PROTOTYPES = "prototypes"  # ArrayRecord: the final model's prototype head "weights" (C, H), "offsets" (C,)
CHECK_SPLITS = ("validation", "train")  # the local windows a query.validate reply scores the heads on
SUM = "sum"  # ConfigRecord: the secure sum a message asks for: "values" (real|count), "length",
# "privacy" (the mode that seals it)
CONTRIBUTION = "contribution"  # ArrayRecord: {"value": float64 (d,)} in the clear or {"ct": uint8} sealed
SECAGG = "secagg"  # ConfigRecord: one SecAgg protocol message (flat int/bytes dict)
SECAGG_CONFIG = "secagg-config"  # ConfigRecord: SecAggConfig.to_dict() plus "secagg-id"
SEALED = "sealed"  # ArrayRecord: "<name>" = uint8 ciphertext of a sealed sum (he modes)
SEALED_META = "sealed-meta"  # ConfigRecord: "<name>.kind", "<name>.values", "<name>.secagg.<field>"

# Metric keys.
NUM_EXAMPLES = "num-examples"  # Flower's default weighting key
TRAIN_LOSS = "train-loss"
LOCAL_F1 = "local-val-macro-f1"
TRAIN_SECONDS = "train-seconds"
TRAIN_EXAMPLES = "train-examples"  # examples per local epoch (the work the energy ledger charges)
LOCAL_EPOCHS = "local-epochs"  # epochs the client trained this round

# Info keys.
DEVICE_PROFILE = "device-profile"  # optional in the stats reply: the client's hardware profile


# ------------------------------------------------------------------------- typed record access
# Flower types a RecordDict's values as ``ArrayRecord | MetricRecord | ConfigRecord`` and a ConfigRecord's
# as a union of scalars and lists. These accessors narrow both on arrival and raise ValueError, naming the
# key, when a message holds the wrong kind (a missing key stays a KeyError).


def array_record(content: RecordDict, key: str) -> ArrayRecord:
    """``content[key]``, which must be an ArrayRecord."""
    return _record(content, key, ArrayRecord)


def metric_record(content: RecordDict, key: str) -> MetricRecord:
    """``content[key]``, which must be a MetricRecord."""
    return _record(content, key, MetricRecord)


def config_record(content: RecordDict, key: str) -> ConfigRecord:
    """``content[key]``, which must be a ConfigRecord."""
    return _record(content, key, ConfigRecord)


_R = TypeVar("_R", ArrayRecord, MetricRecord, ConfigRecord)


def _record(content: RecordDict, key: str, kind: type[_R]) -> _R:
    record = content[key]
    if not isinstance(record, kind):
        raise ValueError(f"{key} must be a {kind.__name__}, got a {type(record).__name__}")
    return record


def number(record: Mapping[str, ConfigRecordValues], key: str) -> int | float:
    """A numeric entry (int or float) of a config or metric record (or a dict of one)."""
    value = record[key]
    if not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {type(value).__name__}")
    return value


def optional_number(record: Mapping[str, ConfigRecordValues], key: str, default: int | float) -> int | float:
    """Like :func:`number`, with ``default`` when ``key`` is absent."""
    return number(record, key) if key in record else default


def text(record: Mapping[str, ConfigRecordValues], key: str) -> str:
    """A string entry of a config record."""
    value = record[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {type(value).__name__}")
    return value


def blob(record: Mapping[str, ConfigRecordValues], key: str) -> bytes:
    """A bytes entry of a config record."""
    value = record[key]
    if not isinstance(value, bytes):
        raise ValueError(f"{key} must be bytes, got {type(value).__name__}")
    return value


def texts(record: Mapping[str, ConfigRecordValues], key: str) -> list[str]:
    """A list-of-strings entry of a config record (an empty list is one)."""
    value = record[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings")
    return [v for v in value if isinstance(v, str)]  # all of them (the filter narrows the type)


def numbers(record: Mapping[str, ConfigRecordValues], key: str) -> list[int | float]:
    """A list-of-numbers entry (ints or floats) of a config or metric record."""
    value = record[key]
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
        raise ValueError(f"{key} must be a list of numbers")
    return [v for v in value if isinstance(v, (int, float))]  # all of them (the filter narrows the type)


def config_from(values: Mapping[str, ConfigRecordValues]) -> ConfigRecord:
    """A ConfigRecord of ``values`` (any mapping whose values a ConfigRecord holds)."""
    return ConfigRecord(dict(values))


def error_reason(reply: Message) -> str:
    """The first line of a failed reply's error reason, at most 200 characters."""
    return ((reply.error.reason or "").splitlines() or [""])[0][:200]


def record_bytes(record: ArrayRecord) -> int:
    """Array bytes of a record, from its metadata (no decoding)."""
    return int(sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in record.values()))


def encode_preprocessing(scaler: FlowScaler) -> ArrayRecord:
    return ArrayRecord(
        {"center": Array(scaler.center.astype(np.float64)), "scale": Array(scaler.scale.astype(np.float64))}
    )


def decode_preprocessing(record: ArrayRecord) -> FlowScaler:
    return FlowScaler.from_dict({"center": record["center"].numpy(), "scale": record["scale"].numpy()})


def encode_vocabulary(vocab: LabelVocabulary) -> list[str]:
    return list(vocab.labels)


def stats_reply(
    msg: Message,
    client_key: str,
    stats: FeatureStats,
    label_counts: dict[str, int],
    device_profile: str | None = None,
) -> Message:
    """The reply to ``query.stats``; ``device_profile`` (a name of ``fedids.devices``) tells the
    server the client's hardware for energy accounting (absent: the server assigns one from the key)."""
    labels = sorted(label_counts)
    info: dict[str, ConfigRecordValues] = {
        "client-key": client_key,
        "labels": labels,
        "label-counts": [int(label_counts[k]) for k in labels],
    }
    if device_profile:
        info[DEVICE_PROFILE] = str(device_profile)
    content = RecordDict(
        {
            STATS: ArrayRecord({"hist": Array(stats.hist.astype(np.int64))}),
            METRICS: MetricRecord({NUM_EXAMPLES: int(stats.count)}),
            INFO: ConfigRecord(info),
        }
    )
    return Message(content, reply_to=msg)


def decode_stats_reply(
    content: RecordDict, n_features: int, n_bins: int
) -> tuple[str, FeatureStats, dict[str, int]]:
    """Validate and decode a stats reply; raises ValueError with the reason on a malformed payload."""
    hist = array_record(content, STATS)["hist"].numpy()
    if hist.shape != (n_features, n_bins) or hist.dtype != np.int64 or (hist < 0).any():
        raise ValueError(f"bad histogram: shape {hist.shape}, dtype {hist.dtype}")
    count = int(number(metric_record(content, METRICS), NUM_EXAMPLES))
    if int(hist[0].sum()) != count:
        raise ValueError("histogram does not add up to the reported row count")
    info = config_record(content, INFO)
    labels, counts = texts(info, "labels"), [int(c) for c in numbers(info, "label-counts")]
    if len(labels) != len(counts) or sum(counts) != count:
        raise ValueError("label counts do not add up to the reported row count")
    return text(info, "client-key"), FeatureStats(count, hist), dict(zip(labels, counts))


def check_train_reply(content: RecordDict, shapes: list[tuple[int, ...]]) -> None:
    """Raise ValueError unless ``content`` holds finite float32 weights of ``shapes`` and a sane weight."""
    if ARRAYS not in content or METRICS not in content:
        raise ValueError("reply lacks arrays or metrics")
    arrays = [a.numpy() for a in array_record(content, ARRAYS).values()]
    if [tuple(a.shape) for a in arrays] != [tuple(s) for s in shapes]:
        raise ValueError("weights have the wrong shapes")
    for a in arrays:
        if a.dtype != np.float32:
            raise ValueError(f"weights have dtype {a.dtype}, expected float32")
        if not np.isfinite(a).all():
            raise ValueError("weights contain NaN or Inf")
    n = metric_record(content, METRICS).get(NUM_EXAMPLES)
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"invalid {NUM_EXAMPLES}: {n!r}")


def encode_heads(heads: list[tuple[np.ndarray, np.ndarray]]) -> ArrayRecord:
    """Candidate linear heads ``[(weight (C, H), bias (C,)), ...]`` as float32 arrays."""
    record = ArrayRecord()
    for i, (weight, bias) in enumerate(heads):
        record[f"{i}.weight"] = Array(np.asarray(weight, dtype=np.float32))
        record[f"{i}.bias"] = Array(np.asarray(bias, dtype=np.float32))
    return record


def decode_heads(record: ArrayRecord, n_classes: int, hidden: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inverse of :func:`encode_heads`; raises ValueError on a missing, misshapen or non-finite head."""
    n = len(record) // 2
    heads = []
    for i in range(n):
        weight, bias = record[f"{i}.weight"].numpy(), record[f"{i}.bias"].numpy()
        if weight.shape != (n_classes, hidden) or bias.shape != (n_classes,):
            raise ValueError(f"head {i} has shapes {weight.shape}, {bias.shape}")
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise ValueError(f"head {i} contains NaN or Inf")
        heads.append((weight, bias))
    return heads


def encode_prototypes(weights: np.ndarray, offsets: np.ndarray) -> ArrayRecord:
    """The prototype head's ``weights (C, H)`` and ``offsets (C,)`` (float32, :mod:`fedids.model.gru`)."""
    return ArrayRecord(
        {
            "weights": Array(np.asarray(weights, dtype=np.float32)),
            "offsets": Array(np.asarray(offsets, dtype=np.float32)),
        }
    )


def decode_prototypes(record: ArrayRecord, n_classes: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_prototypes`; raises ValueError on missing, misshapen or non-finite arrays,
    or on no class present."""
    if set(record) != {"weights", "offsets"}:
        raise ValueError(f"prototypes record has arrays {sorted(record)}, expected weights and offsets")
    weights, offsets = record["weights"].numpy(), record["offsets"].numpy()
    if weights.shape != (n_classes, hidden) or offsets.shape != (n_classes,):
        raise ValueError(f"prototypes have shapes {weights.shape}, {offsets.shape}")
    if weights.dtype != np.float32 or offsets.dtype != np.float32:
        raise ValueError("prototypes must be float32")
    if not (np.isfinite(weights).all() and np.isfinite(offsets).all()) or not has_mean(offsets).any():
        raise ValueError("prototypes must be finite, with at least one class present")
    return weights, offsets


# ------------------------------------------------------------------------- run setup and sums
PREVIOUS = "previous"  # ArrayRecord: the global model before the current one (server momentum)
DPSGD_EPSILON = "dpsgd-epsilon"


def encode_setup(setup: RunSetup) -> ConfigRecord:
    """A :class:`~fedids.federation.setup.RunSetup` as one ConfigRecord (float64 exact)."""
    return ConfigRecord(
        {
            "center": [float(x) for x in setup.scaler.center],
            "scale": [float(x) for x in setup.scaler.scale],
            "labels": list(setup.vocabulary.labels),
            "class-totals": [int(x) for x in setup.class_totals],
            "class-weights": [float(x) for x in setup.class_weights],
            "rows": int(setup.rows),
            "unknown-rows": int(setup.unknown_rows),
        }
    )


def decode_setup(record: ConfigRecord) -> RunSetup:
    """Inverse of :func:`encode_setup`; raises ValueError on inconsistent fields."""
    from fedids.federation.setup import RunSetup

    labels = texts(record, "labels")
    totals = np.asarray(numbers(record, "class-totals"), dtype=np.int64)
    weights = np.asarray(numbers(record, "class-weights"), dtype=np.float32)
    if (
        len(labels) < 1
        or totals.shape != (len(labels),)
        or weights.shape != totals.shape
        or (totals < 0).any()
    ):
        raise ValueError("setup: labels, class totals and class weights disagree")
    scaler = FlowScaler.from_dict({"center": numbers(record, "center"), "scale": numbers(record, "scale")})
    rows, unknown_rows = int(number(record, "rows")), int(number(record, "unknown-rows"))
    return RunSetup(scaler, LabelVocabulary(labels), totals, weights, rows, unknown_rows)


def setup_entries(setup: RunSetup) -> tuple[ArrayRecord, dict[str, ConfigRecordValues]]:
    """The setup as a plaintext message carries it: the PREPROCESSING record and config entries."""
    record = encode_setup(setup)
    entries = {k: record[k] for k in ("class-totals", "class-weights", "rows", "unknown-rows")}
    return encode_preprocessing(setup.scaler), entries


def decode_setup_message(content: RecordDict) -> RunSetup:
    """The setup of a plaintext message (PREPROCESSING record plus config entries)."""
    config = config_record(content, CONFIG)
    scaler = decode_preprocessing(array_record(content, PREPROCESSING))
    record = ConfigRecord(
        {
            "center": [float(x) for x in scaler.center],
            "scale": [float(x) for x in scaler.scale],
            "labels": texts(config, "labels"),
            **{k: config[k] for k in ("class-totals", "class-weights", "rows", "unknown-rows")},
        }
    )
    return decode_setup(record)


def encode_sealed(sums: dict[str, SealedSum]) -> tuple[ArrayRecord, ConfigRecord]:
    """Sealed sums (:class:`~fedids.federation.private.SealedSum`) by name, as two records."""
    arrays, meta = ArrayRecord(), dict[str, ConfigRecordValues]()
    for name, sealed in sums.items():
        arrays[name] = Array(np.frombuffer(sealed.ciphertext, dtype=np.uint8))
        meta[f"{name}.kind"], meta[f"{name}.values"] = sealed.kind, sealed.values
        meta |= {f"{name}.secagg.{k}": v for k, v in sealed.secagg.items()}
    return arrays, ConfigRecord(meta)


def add_sealed(content: RecordDict, sums: dict[str, SealedSum]) -> RecordDict:
    """Put sealed sums into a message's content (nothing if ``sums`` is empty)."""
    if sums:
        content[SEALED], content[SEALED_META] = encode_sealed(sums)
    return content


def decode_sealed(content: RecordDict, names: tuple[str, ...]) -> dict[str, SealedSum]:
    """The sealed sums of ``names`` that a message carries; raises ValueError on a malformed entry."""
    from fedids.federation.private import SealedSum

    if SEALED not in content:
        return {}
    arrays, meta = array_record(content, SEALED), config_record(content, SEALED_META)
    out = {}
    for name in names:
        if name not in arrays:
            continue
        blob = arrays[name].numpy()
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise ValueError(f"sealed sum {name} must be a 1-D uint8 array")
        prefix = f"{name}.secagg."
        secagg = {k[len(prefix) :]: meta[k] for k in meta if k.startswith(prefix)}
        out[name] = SealedSum.from_meta(
            {"kind": meta.get(f"{name}.kind"), "values": meta.get(f"{name}.values"), "secagg": secagg},
            blob.tobytes(),
        )
    return out


# ------------------------------------------------------------------- typed instruction records
def _decode_fields(cls: type[_Instructions], record: Mapping[str, ConfigRecordValues]) -> dict[str, Any]:
    """Read a dataclass's fields from a ConfigRecord (kebab-case keys), checking each value's type."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f.name.replace("_", "-")
        if key not in record:
            if f.default is dataclasses.MISSING:
                raise ValueError(f"{cls.__name__}: missing {key}")
            continue
        value: ConfigRecordValues | tuple[str, ...] = record[key]
        kind: type = {"int": int, "float": float, "str": str, "tuple[str, ...]": tuple}[str(f.type)]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is tuple and isinstance(value, list):
            value = tuple(str(v) for v in value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{cls.__name__}: {key} must be {kind.__name__}, got {type(value).__name__}")
        if isinstance(value, float) and not np.isfinite(value):  # kind is float
            raise ValueError(f"{cls.__name__}: {key} must be finite")
        values[f.name] = value
    return values


@dataclass(frozen=True)
class _Instructions:
    """A typed ConfigRecord: ``to_config()`` for the sender, ``from_config()`` validates on receipt."""

    def to_config(self) -> dict[str, ConfigRecordValues]:
        return {
            f.name.replace("_", "-"): (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_config(cls, record: Mapping[str, ConfigRecordValues]) -> Self:
        instructions = cls(**_decode_fields(cls, record))
        instructions.check()
        return instructions

    def check(self) -> None:
        """Raise ValueError on values no honest server sends."""


@dataclass(frozen=True)
class ModelInstructions(_Instructions):
    """What every message carrying a global model says about it (calibration, final model)."""

    labels: tuple[str, ...]
    window: int
    hidden: int
    privacy: str
    server_lr: float
    setup_digest: str
    calibration_seed: int = 0
    prototypes: int = 0  # 1: the final model reads with the prototype head of the calibration moments
    alert_threshold: float = -1.0  # the final model's alert threshold (-1: none chosen)
    alert_max_false_alarm_rate: float = 0.0  # the validation false-alarm budget it was chosen for
    # DP runs release the calibration sums with noise (fedids.federation.calibration_dp): unit "window"
    # or "client" ("" = no DP), noise multiplier and noise shares.
    calibration_dp_unit: str = ""
    calibration_dp_noise: float = 0.0
    calibration_dp_shares: int = 1
    # What bounded the training sums (fedids.federation.bounds): the server step's momentum, each update's
    # L2 bound (dp: the clip norm; sealed modes: the run's update bound; 0: none) and dp's noise std.
    server_momentum: float = 0.0
    clip_norm: float = 0.0
    noise_std: float = 0.0

    def check(self) -> None:
        if not self.labels or self.window < 1 or self.hidden < 1 or not self.server_lr > 0:
            raise ValueError("labels, window, hidden and server-lr must be non-empty / positive")
        if not 0 <= self.server_momentum < 1 or min(self.clip_norm, self.noise_std) < 0:
            raise ValueError("server-momentum must be in [0, 1), clip-norm and noise-std >= 0")
        if self.prototypes not in (0, 1):
            raise ValueError("prototypes must be 0 or 1")
        if self.calibration_dp_unit:
            self.calibration_privacy()  # raises ValueError on a unit, noise or share count out of range

    def calibration_privacy(self):
        """The calibration sums' :class:`~fedids.federation.calibration_dp.CalibrationPrivacy` (None
        without DP)."""
        if not self.calibration_dp_unit:
            return None
        from fedids.federation.calibration_dp import CalibrationPrivacy

        return CalibrationPrivacy(
            self.calibration_dp_unit, self.calibration_dp_noise, self.calibration_dp_shares
        )


@dataclass(frozen=True, kw_only=True)
class TrainInstructions(ModelInstructions):
    """A training message's settings (:func:`fedids.federation.rounds.train_config` writes them, from
    :class:`~fedids.federation.config.FederationConfig`: no defaults here, so a missing key is an error,
    not a second copy of a default)."""

    server_round: int
    rounds: int
    local_epochs: int
    batch_size: int
    lr: float
    seed: int
    absent_logit_scale: float
    proximal_mu: float
    client_weighting: str
    head_aggregation: str
    compression: str
    dpsgd_noise: float
    dpsgd_target_epsilon: float
    dpsgd_clip: float
    dpsgd_delta: float
    dpsgd_batch_size: int
    dpsgd_release_noise: float  # > 0: budget two calibration releases at this noise multiplier
    dpsgd_lr: float
    # Distributed DP-SGD (fedids.privacy.dpsgd): > 0, this round is one DP-SGD step whose noise each client
    # adds a 1 / sqrt(dpsgd_noise_shares) part of (the round's SecAgg threshold); 0: local DP-SGD.
    dpsgd_noise_shares: int = 0

    def check(self) -> None:
        super().check()
        if (
            not 1 <= self.server_round <= self.rounds
            or self.local_epochs < 1
            or self.batch_size < 1
            or not self.lr > 0
        ):
            raise ValueError("server-round, rounds, local-epochs, batch-size and lr out of range")
        if self.client_weighting not in ("objective", "examples", "equal") or self.head_aggregation not in (
            "class",
            "examples",
        ):
            raise ValueError(f"unknown weighting {self.client_weighting!r} / {self.head_aggregation!r}")
        if min(self.dpsgd_noise, self.dpsgd_target_epsilon, self.dpsgd_noise_shares) < 0:
            raise ValueError("DP parameters must be >= 0")

    @property
    def dpsgd(self) -> bool:
        return self.dpsgd_noise > 0 or self.dpsgd_target_epsilon > 0
