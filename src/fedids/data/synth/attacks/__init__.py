"""Attack episodes: their schedule on both sides of the 70/30 time split (:func:`_schedule`), and one
planner per family (:data:`_ATTACKS`), each in its own module: :mod:`.ddos`, :mod:`.dos`,
:mod:`.portscan`, :mod:`.botnet` and :mod:`.bruteforce`. What they share (episodes, start times,
victim picking, the stealth share, probe emission) is in :mod:`.common`.

A planner adds the flows of one episode to the world's plan, drawing from the world's one generator:
the order of its draws is part of the generator's output (same seed, same flows)."""

from __future__ import annotations

from collections.abc import Callable

from fedids.data.synth.attacks.botnet import _botnet
from fedids.data.synth.attacks.bruteforce import _bruteforce
from fedids.data.synth.attacks.common import _Episode, _schedule
from fedids.data.synth.attacks.ddos import _ddos
from fedids.data.synth.attacks.dos import _dos
from fedids.data.synth.attacks.portscan import _portscan
from fedids.data.synth.world import _World

_ATTACKS: dict[str, Callable[[_World, _Episode], None]] = {
    "ddos": _ddos,
    "dos": _dos,
    "portscan": _portscan,
    "botnet": _botnet,
    "bruteforce": _bruteforce,
}

__all__ = ["_ATTACKS", "_Episode", "_schedule"]
