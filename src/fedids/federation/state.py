"""What a federated run records and resumes from: per-round records, the run state, checkpoints.

The run directory holds ``state.json`` (settings, history, privacy and energy ledgers, calibration),
``checkpoints/round-NNNN.npz`` (the last two global models, plaintext arrays and/or sealed sums) and
``global/`` (the detector the node-side detector reloads). Checkpoint first, then the state that points at
it, so an interrupted run resumes from a consistent round (bit-identical to an uninterrupted run).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fedids.federation.private import SealedSum

SUMMARY_KEYS = ("accuracy", "macro_f1", "weighted_f1", "mcc")
STATE_FILE = "state.json"
GLOBAL_DIR = "global"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class RoundRecord:
    round: int
    clients: int
    rejected: int
    train_loss: float
    local_val_macro_f1: float  # over the clients' validation slices: benign flows only (F1 of BENIGN)
    test: dict
    seconds: float
    bytes_down: int
    bytes_up: int
    privacy: str = "none"
    epsilon: float | None = None
    client_seconds: float | None = None  # mean CPU seconds of local training per client
    client_privacy_seconds: float | None = None  # mean CPU seconds of clipping/noise/encryption/masking
    dpsgd_epsilon: float | None = None  # sample-level DP-SGD epsilon so far (largest over clients in the
    # plaintext mode; their mean where only the sum is seen)
    energy_j: float | None = None  # modelled joules of this round's clients (plaintext mode only)
    participants: dict | None = None  # client key -> epochs, examples, bytes_up, energy_j (plaintext)
    server_seconds: float | None = None  # the server's own work in the round (summing, unmasking, the server
    # step), without the time spent waiting for clients
    tiers: dict | None = None  # three tiers: bytes and seconds per tier (fedids.federation.sites.TierRecord)


@dataclass
class FederationState:
    config: dict
    completed_round: int = 0
    history: list[dict] = field(default_factory=list)
    privacy: dict = field(default_factory=dict)  # accountant state, sealed global sums' metadata
    stopped: str | None = None  # why training ended early (privacy or energy budget)
    adaptive: dict = field(default_factory=dict)  # the energy ledger (fedids.federation.adaptive)
    calibration: dict = field(
        default_factory=dict
    )  # head calibration after the last round: test before/after
    setup: dict = field(default_factory=dict)  # what the server learned of the setup (vocabulary, digest)


@dataclass
class GlobalModel:
    """A global model as the server holds it: plaintext arrays, a sealed sum (``he``), or both when the
    operator's evaluator opened the sum for the server-side test (never sent in plaintext then)."""

    plain: list[np.ndarray] | None = None
    sealed: SealedSum | None = None
    calibration: dict | None = None  # he: sealed "moments" and "confusion" sums that decide the final head
    alert_rule: dict | None = None  # the alert threshold chosen on the clients' summed validation histograms
    prototypes: tuple[np.ndarray, np.ndarray] | None = None  # prototype head weights (C, H), offsets (C,)


def write_state(out_dir: Path, state: FederationState) -> None:
    tmp = out_dir / (STATE_FILE + ".part")
    tmp.write_text(json.dumps(asdict(state), indent=1, default=float))
    os.replace(tmp, out_dir / STATE_FILE)


def load_state(out_dir: Path) -> FederationState | None:
    path = Path(out_dir) / STATE_FILE
    if not path.exists():
        return None
    return FederationState(**json.loads(path.read_text()))


def save_checkpoint(out_dir: Path, server_round: int, models: dict[str, GlobalModel]) -> dict:
    """Save ``{"current": ..., "previous": ...}``; returns the sealed sums' metadata for the state."""
    directory = out_dir / CHECKPOINT_DIR
    directory.mkdir(exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, dict] = {}
    for name, model in models.items():
        if model is None:
            continue
        arrays |= {f"{name}.w{i}": w for i, w in enumerate(model.plain or [])}
        if model.sealed is not None:
            arrays[f"{name}.ct"] = np.frombuffer(model.sealed.ciphertext, dtype=np.uint8)
            meta[name] = model.sealed.meta()
    tmp = directory / f"tmp-round-{server_round:04d}.npz"
    np.savez(tmp, allow_pickle=True, **arrays)  # the default, named: mypy then types **arrays as arrays
    os.replace(tmp, directory / f"round-{server_round:04d}.npz")
    for old in sorted(directory.glob("round-*.npz"))[:-2]:  # keep the last two
        old.unlink()
    return meta


def load_checkpoint(
    out_dir: Path, server_round: int, sealed_meta: dict | None = None
) -> dict[str, GlobalModel]:
    path = out_dir / CHECKPOINT_DIR / f"round-{server_round:04d}.npz"
    out: dict[str, GlobalModel] = {}
    with np.load(path, allow_pickle=False) as saved:
        for name in ("current", "previous"):
            count = sum(k.startswith(f"{name}.w") for k in saved.files)
            plain = [saved[f"{name}.w{i}"] for i in range(count)] or None
            sealed = None
            if f"{name}.ct" in saved.files:
                sealed = SealedSum.from_meta((sealed_meta or {})[name], saved[f"{name}.ct"].tobytes())
            if plain is not None or sealed is not None:
                out[name] = GlobalModel(plain, sealed)
    return out
