"""Membership inference (section ``mia``): the loss-threshold and shadow-model attacks of
:mod:`fedids.evaluation.mia` against the model without DP and every DP model, with non-members withheld
from every partition before training (:func:`split_withheld`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fedids.console import err
from fedids.pipelines.experiment.config import ExperimentConfig
from fedids.pipelines.experiment.results import section

if TYPE_CHECKING:
    from fedids.model.artifacts import Detector
    from fedids.task import PreparedData


def split_withheld(prepared: PreparedData, clients: int, seed: int) -> tuple[np.ndarray, PreparedData]:
    """Withhold an iid share of the training rows as the membership-inference non-member pool.

    The training rows are cut into host segments (as every partition scheme does) and dealt iid among
    ``clients + 1`` parts; the last part is withheld, whatever scheme then partitions the rest, so the
    non-members are a random sample of the same segments the members come from.

    Returns
    -------
    ``(withheld_rows, remaining)``: row indices into ``prepared`` and a view of ``prepared`` whose
    training rows exclude them (same frame, features and windows; test rows unchanged).
    """
    from fedids.federation.simulation import make_partitions
    from fedids.task import PreparedData

    withheld = make_partitions(prepared, clients + 1, "iid", seed)[-1]
    mask = prepared.test_mask.copy()
    mask[withheld] = True
    return withheld, PreparedData(prepared.frame, prepared.features, prepared.windows, mask, prepared.labels)


def mia_section(
    prepared: PreparedData,
    parts: list[np.ndarray],
    withheld: np.ndarray,
    targets: dict[str, tuple[Detector | None, dict]],
    cfg: ExperimentConfig,
) -> dict:
    """Loss-threshold and shadow-model attacks against each target ``{name: (detector, entry)}``."""
    from fedids.evaluation import mia
    from fedids.federation.client_app import LOCAL_VAL_FRACTION
    from fedids.model.train import TrainConfig

    members = mia.Examples.concat(
        [mia.client_examples(prepared, p, cfg.window, LOCAL_VAL_FRACTION)[0] for p in parts], cfg.window
    )
    # The withheld rows are cut like a client's (first 80% in time), so that members and non-members
    # cover the same stretch of time.
    non_members = mia.client_examples(prepared, withheld, cfg.window, LOCAL_VAL_FRACTION)[0]
    pool_name = (
        "an iid sample of host segments withheld from every partition (never trained on), first "
        "part in time as for the clients"
    )
    if len(non_members) < 50:
        non_members = mia.Examples.concat(
            [mia.client_examples(prepared, p, cfg.window, LOCAL_VAL_FRACTION)[1] for p in parts], cfg.window
        )
        pool_name = "the clients' local validation flows (never trained on; later in time than the members)"
    shadow_pool = mia.server_examples(prepared, prepared.test_rows)
    shadow_cfg = mia.ShadowConfig(
        shadows=cfg.shadows,
        hidden=cfg.hidden,
        train=TrainConfig(
            epochs=cfg.rounds * cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed
        ),
    )
    out = section(
        cfg,
        status="ok",
        members_pool="the participating clients' training windows, as each client built them",
        nonmember_pool=pool_name,
        shadow_pool="the server's held-out test flows",
        shadows=cfg.shadows,
        shadow_epochs=shadow_cfg.train.epochs,
        max_per_class=cfg.mia_max_per_class,
        what=(
            "Members vs non-members balanced by class and host; AUC and advantage (TPR minus FPR) of a black-box "
            "attacker who sees output probabilities and the true label (see docs/evaluation.md)."
        ),
        models={},
    )
    for k, (name, (detector, entry)) in enumerate(targets.items()):
        if detector is None:
            out["models"][name] = {"status": entry.get("status", "not run")}
            continue
        rng = np.random.default_rng([cfg.seed, 17, k])
        model_out: dict[str, Any] = {
            "status": "ok",
            "epsilon": entry.get("epsilon"),
            "privacy": entry.get("privacy"),
        }
        err.print(f"  membership inference on {name}: loss threshold")
        model_out["loss_threshold"] = mia.loss_threshold_attack(
            detector, prepared.features, members, non_members, rng, cfg.mia_max_per_class
        ).as_dict()
        err.print(f"  membership inference on {name}: {cfg.shadows} shadow models")
        try:
            model_out["shadow_model"] = mia.shadow_model_attack(
                detector,
                prepared.features,
                shadow_pool,
                members,
                non_members,
                shadow_cfg,
                rng,
                cfg.mia_max_per_class,
            ).as_dict()
        except ValueError as exc:
            model_out["shadow_model"] = f"not run: {exc}"
        out["models"][name] = model_out
    return out
