"""Screening during training: before a round, each site leaves out the devices whose labels the global
model disputes.

Under ``--robust`` with sites, the sites already check their devices' labels once, after the last round,
before the head is refitted (:mod:`fedids.federation.robust_moments`): each device sends its per-class
feature moments under the global model, the site scores how many of its windows lie in classes whose mean
the global head assigns to that class, and leaves out a device far below its site's median. That catches
a label-flipping device reliably (agreement 0.0 to 0.1 against 1.0 for the honest devices of its site,
real samples, 20% ``label-flip``), but only for the refit: by then the flipper has pulled on the body of
every round, and a coordinate-wise median over non-IID devices gives way to it (docs/evaluation.md).

Screening runs the same check before each round from :attr:`FederationConfig.screening` on, with the
current global model: the site sends the round's training request only to the devices it does not
dispute. With ``--screening-check peers`` (:attr:`FederationConfig.screening_check`) the site reads each
device's class means against its other devices' (:func:`~fedids.federation.robust_moments.peer_agreement`)
instead of the global head, and with ``benign`` by their distance to its devices' median benign mean
(:func:`~fedids.federation.robust_moments.benign_agreement`); neither needs a trained model, so both can
start at round 1. Nothing reaches the central tier: the moments stop at the sites
(:func:`sites.site_checks`) and only the names of the devices left out are recorded
(``federated_history[].tiers.screening``).

Guarantees and limits: semi-honest sites, malicious devices that report the labels they train on (as
the harness's attacks do). A device that sends honest moments and trains on flipped labels escapes it,
as it escapes the final check; the update defence (``--robust``) is then all that bounds it. An honest
device whose classes the global model still misreads on most of its windows may be left out of a round
(classes the model misreads for every device of the site do not count against anyone). The peer check
holds while the honest devices are the majority of the holders of each class at a site (each class's
reference is the median of its holders' means); a class held by one device is its own reference. The
benign check holds while they are the majority of the site's BENIGN holders, and reads benign versus
attack only. Not applied where the site cannot read the global model (``he``) or the moments are noised
per device (DP), as the final check. In the simulation the ServerApp plays the sites, so it leaves the
devices out of the round's selection; deployed site aggregators do not screen yet (docs/evaluation.md
says so).
"""

from __future__ import annotations

from fedids.federation import messages as m
from fedids.federation.calibration_dp import moments_sum_length
from fedids.federation.finish import calibration_config, site_moments_defence
from fedids.federation.rounds import Run, model_content, name_devices
from fedids.federation.sites import Combine, site_checks

MIN_DEVICES = 3
"""A site screens its devices only when it has at least this many in the round."""


class Screener:
    """The sites' screening over a run: a device is left out of a round when its site disputes it in
    this round's check and in the previous one, so that one check of a young global model (which can
    misread an honest device's classes for a round or two) leaves out nobody."""

    def __init__(self) -> None:
        self.disputed: set[int] = set()  # node ids the previous check disputed

    def leave_out_disputed(
        self, run: Run, server_round: int, models: dict, chosen: list[int]
    ) -> tuple[list[int], dict | None]:
        """The ``chosen`` devices the sites keep for ``server_round`` and the round's screening record (per
        site: the devices checked (``nodes``) and each one's ``agreement`` in that order, the devices
        ``disputed`` now and those ``left_out``, all by client key; None where the sites do not screen)."""
        defence = _defence(run, server_round, models)
        if defence is None:
            self.disputed = set()
            return chosen, None
        sites, bytes_up = check(run, models, chosen, defence)
        disputed = {node for site in sites for node in site["left_out"]}
        left_out = disputed & self.disputed
        self.disputed = disputed
        for site in sites:
            site["disputed"], site["left_out"] = (
                site["left_out"],
                [n for n in site["left_out"] if n in left_out],
            )
        kept = [n for n in chosen if n not in left_out]
        return kept, {"sites": name_devices(run, sites), "bytes_up": bytes_up}


def _defence(run: Run, server_round: int, models: dict) -> Combine | None:
    """The sites' agreement check of their devices' moments before ``server_round`` (None: they do not
    screen: screening off or not yet, no sites, a global model or setup the sites cannot read, DP)."""
    start, current = run.config.screening, models.get("current")
    if not (start and server_round >= start and run.sites and current is not None):
        return None
    if run.mode.dp or run.config.dpsgd:  # the checks' moments are not noised: no release in a DP run
        return None
    return site_moments_defence(run, current, None, run.config.screening_check)


def check(run: Run, models: dict, nodes: list[int], defence: Combine) -> tuple[list[dict], int]:
    """Each site's ``defence`` (:func:`_defence`) of its ``nodes``' moments under the current global model
    (one moments exchange, device -> site only): per site the defence record (agreement, devices disputed
    as ``left_out``, node ids) and the bytes the devices sent."""
    current = models["current"]
    config = calibration_config(run)

    def combine(vectors):  # noqa: ANN001, ANN202 (a sites.Combine)
        total, record = defence(vectors)
        if len(vectors) < MIN_DEVICES:  # two devices that disagree: nothing says which one is right
            record["left_out"] = []
        return total, record

    base = {"current": current, "previous": models.get("previous")}
    record = site_checks(
        run.grid,
        site_of=run.sites,
        nodes=nodes,
        message_type=m.QUERY_FEATURES,
        make_content=lambda node: model_content(run, base, config),
        length=moments_sum_length(len(run.labels), run.config.hidden, None),
        timeout=run.config.timeout_s,
        combine=combine,
    )
    return record.robust, int(record.lan.bytes_up)


__all__ = ["MIN_DEVICES", "Screener", "check"]
