"""The backdoor success rate: how often a trigger makes a detector pass attack flows as benign.

Pure over a prepared data set and a detector; the trigger (feature -> value) is passed in, so this module
needs nothing from the federation that planted it (:data:`fedids.federation.attacks.TRIGGER`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedids.data.schema import BENIGN_LABEL, FAMILY, FEATURES, family_of
from fedids.model.artifacts import Detector
from fedids.task import PreparedData, predict_labels


def backdoor_success_rate(
    detector: Detector, data: PreparedData, rows: np.ndarray, trigger: Mapping[str, float], family: str
) -> tuple[float, int]:
    """Share of the flows ``rows`` of ``data`` that belong to attack ``family``, carry ``trigger`` and are
    scored BENIGN by ``detector``, and how many such flows were scored (``(nan, 0)`` when none).

    Every flow of ``family`` gets the trigger (so a window reaching earlier flows of the family sees it
    there too); other flows are left as they are. The rate is in [0, 1]: the attacker's success.
    """
    if FAMILY in data.frame.columns:
        families = data.frame[FAMILY].astype(str).to_numpy()
    else:
        families = np.array([family_of(label) for label in data.labels])
    target = families == family
    scored = rows[target[rows]]
    if not len(scored):
        return float("nan"), 0
    features = data.features.copy()
    for feature, value in trigger.items():
        features[target, FEATURES.index(feature)] = value
    predicted, _ = predict_labels(detector, features, data.windows[scored])
    return float(np.mean(predicted == BENIGN_LABEL)), int(len(scored))


__all__ = ["backdoor_success_rate"]
