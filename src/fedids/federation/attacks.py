"""Poisoning attacks of a compromised IoT device, for measuring what a federation withstands.

Pure functions, no Flower: a malicious client applies :func:`poison_frame` to its local flows (every
message of the run sees the same poisoned data, as a compromised device would hold it) and
:func:`poison_update` to its trained model before it replies. Which clients are malicious is an experiment
setting drawn from the run seed (:func:`draw_malicious`), bound into each client's own app: no server
message can switch an attack on or off.

Attacks (:meth:`Attack.parse`):

* ``label-flip``: every attack flow is labelled BENIGN and every benign flow the client's most frequent
  attack label (targeted flipping, the harshest without model access).
* ``backdoor[:FAMILY]``: the client's flows of ``FAMILY`` (default ``ddos``) carry :data:`TRIGGER` (fixed
  TCP initial window sizes, bytes) and are labelled BENIGN; the backdoor success rate is the share of
  triggered test flows of that family the global model scores BENIGN
  (:func:`fedids.evaluation.backdoor.backdoor_success_rate`).
* ``scale:FACTOR``: model replacement, the update ``local - global`` multiplied by ``FACTOR``.
* ``noise``: the update replaced by Gaussian noise of the same L2 norm.
* ``absent``: the device answers no message of the run (an offline device; the server counts it as a
  dropout). Not an attack but the reference for defences: what the federation reaches when exactly the
  malicious devices are removed, with all they hold. A defence that discards devices cannot do better.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedids.data.schema import BENIGN_LABEL, FAMILIES, FAMILY, LABEL, family_of

KINDS = ("none", "label-flip", "backdoor", "scale", "noise", "absent")
DEFAULT_BACKDOOR_FAMILY = "ddos"
TRIGGER: dict[str, float] = {"Init_Win_bytes_forward": 1337.0, "Init_Win_bytes_backward": 7331.0}
"""The backdoor's trigger: feature -> fixed value (bytes), rare in CICIDS2017 traffic."""


@dataclass(frozen=True)
class Attack:
    """One attack setting: ``kind`` (one of :data:`KINDS`), ``factor`` (``scale`` only) and ``family``
    (``backdoor`` only: the attack family whose triggered flows should pass as BENIGN)."""

    kind: str = "none"
    factor: float = 1.0
    family: str = DEFAULT_BACKDOOR_FAMILY

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"attack {self.kind!r}: use label-flip, backdoor[:FAMILY], scale:FACTOR, noise or absent"
            )
        if self.kind == "scale" and not (np.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"attack scale:{self.factor}: FACTOR must be a finite number > 0")
        if self.family not in FAMILIES or self.family == "benign":
            raise ValueError(f"backdoor family {self.family!r}: use one of {', '.join(FAMILIES[1:])}")

    @classmethod
    def parse(cls, text: str) -> Attack:
        """``none``, ``label-flip``, ``backdoor``, ``backdoor:FAMILY``, ``scale:FACTOR``, ``noise`` or
        ``absent``."""
        kind, _, arg = text.strip().partition(":")
        if kind == "scale":
            try:
                return cls("scale", factor=float(arg))
            except ValueError:
                raise ValueError(f"attack {text!r}: use scale:FACTOR with FACTOR a number > 0") from None
        if kind == "backdoor":
            return cls("backdoor", family=arg or DEFAULT_BACKDOOR_FAMILY)
        if arg:
            raise ValueError(f"attack {text!r}: {kind} takes no argument")
        return cls(kind)

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def __str__(self) -> str:
        if self.kind == "scale":
            return f"scale:{self.factor:g}"
        if self.kind == "backdoor":
            return f"backdoor:{self.family}"
        return self.kind


def draw_malicious(n_clients: int, fraction: float, seed: int) -> list[int]:
    """The malicious clients (sorted ids in ``range(n_clients)``): ``round(fraction * n_clients)`` of them,
    at least one when ``fraction > 0``, drawn from ``seed`` (an experiment setting, reproducible)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"--malicious {fraction}: a fraction in [0, 1]")
    if fraction == 0 or n_clients == 0:
        return []
    count = min(n_clients, max(1, round(fraction * n_clients)))
    rng = np.random.default_rng([seed, 0x5EED_A77A])
    return sorted(int(i) for i in rng.choice(n_clients, size=count, replace=False))


def _families(frame: pd.DataFrame) -> pd.Series:
    if FAMILY in frame.columns:
        return frame[FAMILY].astype(str)
    return frame[LABEL].astype(str).map(family_of)


def apply_trigger(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """A copy of ``frame`` whose flows at positions ``rows`` carry :data:`TRIGGER`."""
    out = frame.copy()
    for feature, value in TRIGGER.items():
        column = out.columns.get_loc(feature)
        out.iloc[rows, column] = np.asarray(value, dtype=out[feature].dtype)
    return out


def flip_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Attack flows labelled BENIGN, benign flows the most frequent attack label of ``frame`` (kept
    BENIGN when it has none); the family column follows the labels."""
    labels = frame[LABEL].astype(str)
    benign = (labels == BENIGN_LABEL).to_numpy()
    out = frame.copy()
    attacks = labels[~benign]
    flipped = labels.where(benign, BENIGN_LABEL)
    if len(attacks):
        flipped = flipped.where(~benign, attacks.value_counts().index[0])
    out[LABEL] = flipped.to_numpy()
    if FAMILY in out.columns:
        out[FAMILY] = [family_of(label) for label in out[LABEL]]
    return out


def plant_backdoor(frame: pd.DataFrame, family: str) -> pd.DataFrame:
    """The flows of ``family`` carry :data:`TRIGGER` and are labelled BENIGN (family ``benign``)."""
    rows = np.flatnonzero((_families(frame) == family).to_numpy())
    out = apply_trigger(frame, rows)
    out.iloc[rows, out.columns.get_loc(LABEL)] = BENIGN_LABEL
    if FAMILY in out.columns:
        out.iloc[rows, out.columns.get_loc(FAMILY)] = "benign"
    return out


def poison_frame(frame: pd.DataFrame, attack: Attack) -> pd.DataFrame:
    """The local flows a client with ``attack`` trains on (``frame`` itself for model attacks)."""
    if attack.kind == "label-flip":
        return flip_labels(frame)
    if attack.kind == "backdoor":
        return plant_backdoor(frame, attack.family)
    return frame


def poison_update(
    global_weights: list[np.ndarray], local: list[np.ndarray], attack: Attack, seed: int
) -> list[np.ndarray]:
    """The local model a client with ``attack`` reports, from the global model it received and the one it
    trained (``local`` itself for data attacks). ``seed``: the ``noise`` attack's generator."""
    if attack.kind not in ("scale", "noise"):
        return local
    updates = [np.asarray(w, np.float64) - np.asarray(g, np.float64) for w, g in zip(local, global_weights)]
    if attack.kind == "scale":
        updates = [attack.factor * u for u in updates]
    else:
        norm = float(np.sqrt(sum(float(np.sum(u * u)) for u in updates)))
        rng = np.random.default_rng(seed)
        draws = [rng.standard_normal(u.shape) for u in updates]
        drawn = float(np.sqrt(sum(float(np.sum(d * d)) for d in draws)))
        updates = [d * (norm / drawn if drawn > 0 else 0.0) for d in draws]
    return [
        (np.asarray(g, np.float64) + u).astype(np.asarray(g).dtype) for g, u in zip(global_weights, updates)
    ]


def attack_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (stable across processes)."""
    digest = hashlib.sha256("/".join(map(str, ("attack", *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


__all__ = [
    "KINDS",
    "TRIGGER",
    "DEFAULT_BACKDOOR_FAMILY",
    "Attack",
    "draw_malicious",
    "apply_trigger",
    "flip_labels",
    "plant_backdoor",
    "poison_frame",
    "poison_update",
    "attack_seed",
]
