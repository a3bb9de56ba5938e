"""After the last round: head calibration (in every mode) and publishing the final model to the clients.

Calibration (:mod:`fedids.federation.calibration`) takes two more secure sums: the clients' per-class
feature moments under the final model, then the confusion matrices of the old and the refitted head on
their local windows. Where the server may read the sums (``none``, ``secagg``), it refits the head and
decides; under ``he`` the server only forwards the sealed sums, and every client refits the head from the
decrypted moments with the run's calibration seed and applies the same decision (all deterministic, so
every client ends with the same model). The server learns nothing it could not before: at most the sums.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.app import RecordDict

from fedids.federation import messages as m
from fedids.federation.bounds import model_bound_fields
from fedids.federation.calibration import (
    CalibrationMoments,
    alert_rule,
    check_confusion_vector,
    check_moments_vector,
    decide,
    moments_prototypes,
    refit_head,
    validation_length,
)
from fedids.federation.calibration_dp import (
    RELEASES,
    CalibrationPrivacy,
    check_noise_std,
    moments_sum_length,
    read_check,
    read_moments,
)
from fedids.federation.client import derive_seed
from fedids.federation.private import COUNT, REAL, SumResult
from fedids.federation.robust import RobustSpec
from fedids.federation.robust_moments import moments_defence
from fedids.federation.rounds import Run, model_content, name_devices, secagg_threshold
from fedids.federation.secure_rounds import exchange, secure_sum
from fedids.federation.sites import Combine, tiered_sum
from fedids.federation.state import GLOBAL_DIR, SUMMARY_KEYS, FederationState, GlobalModel
from fedids.model.artifacts import save_detector
from fedids.privacy.dp import PrivacyAccountant
from fedids.task import new_model

log = logging.getLogger("fedids.server")


def calibration_config(run: Run, rule: dict | None = None, dp: CalibrationPrivacy | None = None) -> dict:
    c = run.config
    alert: dict[str, Any] = (
        {}
        if not rule
        else {
            "alert_threshold": float(rule["threshold"]),
            "alert_max_false_alarm_rate": float(rule["max_false_alarm_rate"]),
        }
    )
    private: dict[str, Any] = (
        {}
        if dp is None
        else {
            "calibration_dp_unit": dp.unit,
            "calibration_dp_noise": dp.noise_multiplier,
            "calibration_dp_shares": dp.shares,
        }
    )
    return m.ModelInstructions(
        labels=tuple(run.labels),
        window=c.window,
        hidden=c.hidden,
        privacy=run.mode.name,
        server_lr=c.server_step[0],
        setup_digest=run.digest,
        calibration_seed=derive_seed(c.seed, "ccvr"),
        prototypes=int(c.prototypes == "on"),
        **alert,
        **private,
        **model_bound_fields(c, run.mode),  # he: the clients check the final sum with them
    ).to_config()


def _model(run: Run, weights: list[np.ndarray]):
    from fedids.model.train import set_weights

    model = new_model(len(run.labels), run.config.hidden)
    set_weights(model, weights)
    return model


def _readable(run: Run, result: SumResult, length: int) -> np.ndarray | None:
    if result.plaintext is not None:
        return result.plaintext
    if result.sealed is None or run.opener is None:
        return None
    return run.opener(result.sealed, length)


def calibration_privacy(run: Run, accountant: PrivacyAccountant | None) -> CalibrationPrivacy | None:
    """How a DP run releases its calibration sums (None without DP): client-level ``dp`` at the rounds'
    noise multiplier, DP-SGD per window at ``dpsgd_calibration_noise``; noise shares = the SecAgg threshold
    under ``secagg``, else 1 (each contribution carries the full noise)."""
    c = run.config
    shares = secagg_threshold(len(run.keys)) if run.mode.secagg and not run.sites else 1
    if run.mode.dp and accountant is not None:
        return CalibrationPrivacy("client", accountant.noise_multiplier, shares)
    if c.dpsgd:
        return CalibrationPrivacy("window", c.dpsgd_calibration_noise, shares)
    return None


def _sum(
    run: Run, kind: str, make_content, dp: CalibrationPrivacy | None, combine: Combine | None = None
) -> tuple[SumResult, list[dict]]:
    """One calibration sum (``kind``: moments or check); with sites, each site combines its devices'
    vectors (``combine``: its defence, else a sum). Returns the sum and what the sites' defence did."""
    n, hidden = len(run.labels), run.config.hidden
    length = moments_sum_length(n, hidden, dp) if kind == "moments" else validation_length(n)
    spec: dict[str, Any] = dict(
        mode=run.mode,
        nodes=sorted(run.keys),
        message_type=m.QUERY_FEATURES if kind == "moments" else m.QUERY_VALIDATE,
        make_content=make_content,
        length=length,
        values=REAL if kind == "moments" else COUNT,  # noised counts: rounding is post-processing
        he_public=run.he_public,
        timeout=run.config.timeout_s,
        check=None if dp is not None else _plain_check(run, kind),
    )
    if run.relayed:  # deployed sites: each vector a site's partial sum
        spec["parties_per_node"] = run.per_node
    if run.sites:  # through the sites, as the rounds
        result, _, tiers = tiered_sum(
            run.grid, site_of=run.sites, combine=combine, device_secagg=run.config.site_secagg, **spec
        )
        return result, tiers.robust
    result, _ = secure_sum(run.grid, **spec)
    return result, []


def site_moments_defence(
    run: Run, current: GlobalModel, dp: CalibrationPrivacy | None, check: str = "head"
) -> Combine | None:
    """Under ``--robust`` with sites, the sites leave out the moments of devices whose labels the global
    model disputes (:mod:`fedids.federation.robust_moments`): where the site can read the global model
    (not ``he``) and the moments are not noised per device (no DP)."""
    if not (run.sites and RobustSpec.parse(run.config.robust).active) or dp is not None:
        return None
    if current.plain is None or run.mode.he or run.setup is None:
        return None
    head = (current.plain[-2], current.plain[-1])
    return moments_defence(len(run.labels), run.config.hidden, head, run.setup.class_totals, check)


def _read_moments(run: Run, result: SumResult, dp: CalibrationPrivacy | None) -> CalibrationMoments | None:
    n, hidden = len(run.labels), run.config.hidden
    total = _readable(run, result, moments_sum_length(n, hidden, dp))
    if total is None or run.setup is None:  # he without an evaluator: only the clients read it
        return None
    return read_moments(total, n, hidden, run.setup.class_totals, dp)


def calibrate(
    run: Run, models: dict, accountant: PrivacyAccountant | None = None
) -> tuple[GlobalModel, dict]:
    """CCVR head calibration with its check; returns the final global model and the calibration record."""
    current = models["current"]
    base = {"current": current, "previous": models.get("previous")}
    dp = calibration_privacy(run, accountant)
    c = run.config
    if dp is not None and accountant is not None and c.target_epsilon > 0:
        after = accountant.epsilon_after(0, c.target_delta, releases=RELEASES)
        if after > c.target_epsilon:  # a run that stopped at its budget has none left for the releases
            return current, {"method": "ccvr", "clients": 0, "kept": False, "reason": "privacy budget spent"}
    config = calibration_config(run, dp=dp)
    moments_sum, defence = _sum(
        run,
        "moments",
        lambda node: model_content(run, base, config),
        dp,
        site_moments_defence(run, current, dp),
    )
    if dp is not None and accountant is not None:
        accountant.release()  # the noised moments left the clients, whatever happens next
    if not moments_sum.ok:
        return current, {"method": "ccvr", "clients": 0, "kept": False, "reason": "no moments"}
    moments = _read_moments(run, moments_sum, dp)
    seed = derive_seed(run.config.seed, "ccvr")
    heads = None
    if moments is not None and moments_sum.plaintext is not None and current.plain is not None:
        # the server may read the sum: it refits and sends the heads
        model = _model(run, current.plain)
        old = (model.head.weight.detach().numpy().copy(), model.head.bias.detach().numpy().copy())
        heads = [old, refit_head(model.head, moments.ccvr, seed)]

    def validate_content(node: int) -> RecordDict:
        if heads is not None:
            content = model_content(run, base, config)
            content[m.HEADS] = m.encode_heads(heads)
            return content
        return model_content(run, base, config, {"moments": moments_sum.sealed})

    check_sum, _ = _sum(run, "check", validate_content, dp)
    if dp is not None and accountant is not None:
        accountant.release()
    record = {
        "method": "ccvr",
        "clients": len(moments_sum.survivors),
        "rejected": moments_sum.rejected,
        "classes": int((moments.ccvr.count >= 2).sum()) if moments is not None else 0,
        "bytes_up": int(moments_sum.bytes_up + check_sum.bytes_up),
        "kept": None,
        "privacy": None
        if dp is None
        else {"unit": dp.unit, "noise": dp.noise_multiplier, "shares": dp.shares},
        "validation": {"clients": len(check_sum.survivors), "rejected": check_sum.rejected},
    }
    if defence:  # per site: each device's agreement with the global head, the devices left out
        record["site_defence"] = name_devices(run, defence)
    final = GlobalModel(current.plain, current.sealed)
    if (
        run.config.prototypes == "on" and moments is not None
    ):  # he without an evaluator: each client reads them
        final.prototypes = moments_prototypes(moments.head)
        record["prototypes"] = final.prototypes is not None
    if not check_sum.ok:
        return final, record | {"kept": False, "reason": "no client could check it"}
    if run.mode.he:
        final.calibration = {"moments": moments_sum.sealed, "confusion": check_sum.sealed}
    confusion_total = _readable(run, check_sum, validation_length(len(run.labels)))
    if confusion_total is None:  # he without an evaluator: only the clients know the outcome
        return final, record | {"reason": "sealed: decided by the clients"}
    check = read_check(confusion_total, len(run.labels), dp)
    return _decide(run, current, final, record, (moments, heads, seed), (*check, check_noise_std(dp)))


def _decide(run: Run, current: GlobalModel, final: GlobalModel, record: dict, refit, check) -> tuple:
    """Keep or discard the refitted head from the summed check counts (and their DP noise per cell), and
    choose the alert rule."""
    moments, heads, seed = refit
    confusions, histograms, noise_std = check
    if current.plain is None:
        raise RuntimeError("calibration decided without a readable global model")
    kept, reason, scores = decide(confusions, noise_std)
    if kept and heads is not None and all(np.array_equal(a, b) for a, b in zip(*heads)):
        # a DP refit with fewer than two classes above the noise is the old head: nothing to keep
        kept, reason = False, "the refit used fewer than two classes above the noise: head unchanged"
    final.alert_rule = record["alert_rule"] = alert_rule(histograms, int(kept))
    log.info("calibration: calibrated head %s (%s)", "kept" if kept else "discarded", reason)
    before = _test(run, current.plain)
    if kept:
        if heads is None:  # he with an evaluator: refit as the clients do, for the server-side test
            heads = [None, refit_head(_model(run, current.plain).head, moments.ccvr, seed)]
        final.plain = current.plain[:-2] + [heads[1][0].astype(np.float32), heads[1][1].astype(np.float32)]
    record["validation"] |= {
        "kept": bool(kept),
        "reason": reason,
        **{f"{split}_windows": int(confusions[split][0].sum()) for split in m.CHECK_SPLITS},
        **{
            f"{split}_macro_f1_{w}": scores[split][i]
            for split in m.CHECK_SPLITS
            for i, w in enumerate(("before", "after"))
        },
    }
    record |= {"kept": bool(kept), "reason": reason, "before": before}
    if final.prototypes is not None:  # the same final model read by its linear head alone
        record["test_linear_head"] = _test(run, final.plain)
    record["test"] = _test(run, final.plain, final.prototypes)
    return final, record


def _plain_check(run: Run, what: str):
    """Per-client plausibility checks where the server sees each vector (plaintext mode only)."""
    if run.summed or run.setup is None:
        return None
    n, hidden, totals = len(run.labels), run.config.hidden, run.setup.class_totals
    if what == "moments":
        return lambda node, v: check_moments_vector(v, n, hidden, totals, run.plain_counts[node])
    return lambda node, v: check_confusion_vector(v, n, run.plain_counts[node])


def _test(run: Run, weights: list[np.ndarray] | None, prototypes: tuple | None = None) -> dict:
    detector = run.detector(weights, {}, prototypes) if weights is not None else None
    if detector is None:
        return {k: float("nan") for k in SUMMARY_KEYS}
    result = run.evaluate(detector)
    return {k: result[k] for k in SUMMARY_KEYS}


def save_final(run: Run, final: GlobalModel, state: FederationState) -> None:
    if final.plain is None or run.setup is None:
        return
    from fedids.model.checks import META_THRESHOLD

    metadata = {
        "mode": "federated",
        "round": state.completed_round,
        "calibrated": bool(state.calibration.get("kept")),
        "test_metrics": state.calibration.get("test"),
    }
    if final.alert_rule:
        metadata[META_THRESHOLD] = final.alert_rule
    detector = run.detector(final.plain, metadata, final.prototypes)
    if detector is not None:
        save_detector(run.out_dir / GLOBAL_DIR, detector)


def publish(run: Run, models: dict) -> None:
    """Send the final global model to every client (``query.global``), so a node's detector gets the last
    round's (calibrated) model. Failures are logged: training itself is already complete."""
    final = models["current"]
    if run.mode.he:  # clients open the sums themselves; the evaluator's plaintext copy never leaves
        content = model_content(
            run,
            {
                "current": GlobalModel(None, final.sealed, final.calibration),
                "previous": models.get("previous"),
            },
            calibration_config(run),
        )
    else:  # the server chose the alert threshold from the summed histograms: the clients store it
        content = model_content(
            run, {"current": GlobalModel(final.plain)}, calibration_config(run, final.alert_rule)
        )
        if final.prototypes is not None:
            content[m.PROTOTYPES] = m.encode_prototypes(*final.prototypes)
    replies = exchange(
        run.grid, {n: content for n in sorted(run.keys)}, m.QUERY_GLOBAL, run.config.timeout_s, SumResult()
    )
    missing = set(run.keys) - set(replies)
    if missing:
        log.warning("%d clients did not store the final model", len(missing))


__all__ = ["calibrate", "publish", "save_final"]
