"""What the attack planners share: the episodes and their schedule on both sides of the 70/30 time
split, start times, victim picking, the stealth share that grows with difficulty, and the emission of
probes (a connection attempt without payload)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any  # _emit's keyword columns: arrays, scalars or None

import numpy as np

from fedids.data.synth.emitters import _emit
from fedids.data.synth.profiles import TD_NONE
from fedids.data.synth.world import _World

_FAMILY_SHARE = {"ddos": 0.28, "dos": 0.2, "portscan": 0.2, "botnet": 0.16, "bruteforce": 0.16}
_EPISODE_MINUTES = {
    "ddos": (4, 10),
    "dos": (5, 14),
    "portscan": (3, 10),
    "botnet": (15, 40),
    "bruteforce": (5, 15),
}


@dataclass(frozen=True)
class _Episode:
    family: str
    start: float
    end: float
    budget: int


def _schedule(w: _World, n_benign: int, benign_t: np.ndarray) -> list[_Episode]:
    """Attack episodes: each family on both sides of the 70/30 split of benign flows in time."""
    cfg, rng = w.cfg, w.rng
    if cfg.attack_fraction <= 0:
        return []
    total = n_benign * cfg.attack_fraction / (1 - cfg.attack_fraction)
    t70 = float(np.quantile(benign_t, 0.7)) if len(benign_t) else 0.7 * w.T
    sides = [(0.02 * w.T, t70 - 0.05 * w.T, 0.7), (t70 + 0.04 * w.T, 0.98 * w.T, 0.3)]
    k_side = max(1, int(round(cfg.hours / 3)))
    episodes = []
    for fam, share in _FAMILY_SHARE.items():
        lo_m, hi_m = _EPISODE_MINUTES[fam]
        for lo, hi, weight in sides:
            slot = (hi - lo) / k_side
            for k in range(k_side):
                dur = min(rng.uniform(lo_m, hi_m) * 60e6, 0.8 * slot)
                start = lo + k * slot + rng.random() * (slot - dur)
                episodes.append(
                    _Episode(fam, start, start + dur, max(8, int(total * share * weight / k_side)))
                )
    return episodes


def _times(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    return np.sort(lo + rng.random(n) * (hi - lo))


def _pick_devices(w: _World, k: int, prefer: tuple[int, ...] = ()) -> np.ndarray:
    rng = w.rng
    weight = np.where(np.isin(w.kind, prefer), 4.0, 1.0) if prefer else np.ones(w.n)
    return rng.choice(w.n, size=min(k, w.n), replace=False, p=weight / weight.sum())


def _stealth(w: _World) -> float:
    """Probability that an attack flow uses the OS stack / benign-like pacing instead of a raw tool."""
    # 0.1 at difficulty 0, about 0.5 at 1, 0.73 at 2, 0.85 at 3, approaching 1 without saturating.
    return float(1.0 - 0.9 * np.exp(-0.6 * w.cfg.difficulty))


def _probes(
    w: _World,
    dev: np.ndarray,
    t: np.ndarray,
    dst: np.ndarray | int,
    dport: np.ndarray | int,
    *,
    hs: np.ndarray | int,
    td: np.ndarray | int = TD_NONE,
    **kw: Any,
) -> None:
    """Emit probe flows (profile ``probe``): connection attempts with handshake ``hs`` and no request
    round, teardown ``td`` (none by default); other keywords go to :func:`_emit` as they are."""
    _emit(w, dev, t, "probe", dst, dport, hs=hs, rounds=0, td=td, **kw)
