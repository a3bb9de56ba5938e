"""Site aggregator processes of a three-tier deployment (devices -> site aggregators -> central server).

A site host runs two Flower apps, bridged by a local channel (:mod:`fedids.federation.site_channel`):

* toward the central SuperLink, a SuperNode whose ClientApp is :data:`client_app` (the central run's
  app, ``flower_app_central``): for each message of the central ServerApp it hands the message to the
  channel and answers with what comes back. It imports neither torch nor pandas (one process per message);
* on the site's own SuperLink, a long-lived run of :data:`server_app` (``flower_app_site``, started with
  ``flwr run`` against the site's Control API), whose Grid holds the site's devices (their ClientApp is
  the flat one, :mod:`fedids.federation.client_app`). It takes each request from the channel, sends it to
  every connected device, and combines their answers as the simulation's site does
  (:class:`fedids.federation.sites.SiteAggregator`).

Every exchange of the pipeline is a sum (:mod:`fedids.federation.aggregation`), so the site's answer to a
message that asks for a sum (``SUM``) is the sum of its devices' contributions: the devices send them to
the site in plaintext (their policies accept this only in a run published with sites), or, with the site
run's ``device-privacy secagg``, SecAgg-masked with the site as their SecAgg server; the site combines
them (plain sum, or under ``robust`` a robust one for model updates, :mod:`fedids.federation.robust`, and
without the devices the global head disputes for the calibration moments,
:mod:`fedids.federation.robust_moments`) and seals the partial
sum for the central tier as the central message says: ``none``/``dp`` in plaintext (float32), ``he``
BFV-encrypted with the *public* context (the site cannot decrypt), ``secagg`` masked by the site's uplink
SuperNode, which is the site's party in the sites' SecAgg (:mod:`fedids.federation.secagg_party`; the
partial sum reaches it over the site host's own channel). ``he+secagg`` across deployed sites is not built
and is refused. Messages without a sum
(``query.setup``: the devices must agree; ``query.global``: every device stores the final model) are
relayed to every device. The central ServerApp (``sites >= 2`` in its run config) treats each site as one
client whose vectors are already combined (:func:`fedids.federation.rounds.run_federation`,
``relayed``), so without a defence the deployed three-tier run computes the flat run's sums.

Guarantees: a device's plaintext vector leaves it only for its own site (its SuperLink authenticates it
with a registered key over TLS); the central server receives one sealed partial sum per site.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedids.federation import messages as m
from fedids.federation.secagg_party import handle_secagg_stage, masked_input
from fedids.federation.site_channel import ChannelError, Envelope, SiteChannel

log = logging.getLogger("fedids.site")
SITE_DIR = "site-dir"  # node config of the site's SuperNode and run config of the site's run
RELAY_TIMEOUT = "timeout-s"  # node config: how long the ClientApp waits for the site's answer
MIN_SITES = "min-sites"  # node config: the fewest parties a sites' SecAgg round may have (the run's K)
DEFAULT_RELAY_TIMEOUT_S = 3600.0
RELAYED = (m.TRAIN, m.QUERY_STATS, m.QUERY_SETUP, m.QUERY_GLOBAL, m.QUERY_FEATURES, m.QUERY_VALIDATE)
WAIT_S = 2.0  # the ServerApp's wait for a request before it checks for stop / idleness again


# ------------------------------------------------------------------------------ central tier
def check_central_config(config: Any) -> None:
    """Refuse central settings a deployed site tier cannot honour (ValueError)."""
    from fedids.federation.compression import Compression
    from fedids.federation.robust import RobustSpec

    check_central_privacy(config.privacy)
    if config.energy_managed or Compression.parse(config.compression).active:
        raise ValueError("energy-aware selection and compression need each device at the central server")
    if RobustSpec.parse(config.robust).active:
        raise ValueError("robust aggregation runs at each site: set robust in the site run's config")
    if config.site_devices < 1:
        raise ValueError("site-devices: the most devices one site holds (the runbook's flwr run sets it)")


def check_central_privacy(privacy: str) -> None:
    """The central tier's privacy modes a deployed site can seal with (ValueError for the others)."""
    from fedids.federation.private import PrivacyMode

    mode = PrivacyMode.parse(privacy)
    if mode.he and mode.secagg:
        raise ValueError("he+secagg across deployed sites is not built: use privacy none, dp, he or secagg")


def _relay(msg: Message, context: Context) -> Message:
    """The site SuperNode's handler of every central message: through the channel to the site's run.
    Under ``secagg`` across sites the site answers a sum with its partial sum in the clear (the channel
    stays on the site's host), and this SuperNode, the site's SecAgg party, masks it."""
    cfg = context.node_config
    if SITE_DIR not in cfg:
        raise RuntimeError(f"node config has no {SITE_DIR}: this SuperNode is not a site aggregator")
    channel = SiteChannel(str(cfg[SITE_DIR]))
    timeout = float(cfg.get(RELAY_TIMEOUT, DEFAULT_RELAY_TIMEOUT_S))
    answer = channel.request(Envelope(msg.metadata.message_type, msg.content), timeout)
    content = answer.content
    mode = _sum_mode(msg.content)
    if mode is not None and mode.secagg:
        partial = m.array_record(content, m.CONTRIBUTION)["value"].numpy()
        masked = masked_input(msg, partial, context, None, mode)
        del content[m.CONTRIBUTION]
        content[m.SECAGG] = masked[m.SECAGG]
    if m.INFO in content.config_records and "client-key" in content.config_records[m.INFO]:
        info = dict(content.config_records[m.INFO])  # the site is one client of the central tier
        info["client-key"] = str(cfg.get("client-key", f"site-{context.node_id}"))
        content[m.INFO] = ConfigRecord(info)
    return Message(content, reply_to=msg)


def _sum_mode(content: RecordDict) -> Any:
    """The privacy mode of the sum a message asks for (a ``PrivacyMode``), None when it asks for none."""
    from fedids.federation.private import PrivacyMode

    if m.SUM not in content.config_records:
        return None
    return PrivacyMode.parse(m.text(m.config_record(content, m.SUM), "privacy"))


def _secagg_stage(stage: str):  # noqa: ANN202 (a Flower handler)
    def handle(msg: Message, context: Context) -> Message:
        if stage == "keys":
            check_site_secagg(m.config_record(msg.content, m.SECAGG_CONFIG), context.node_config)
        return handle_secagg_stage(msg, context, stage, None)

    return handle


def check_site_secagg(secagg_config: Any, node_config: Any) -> None:
    """The sites' SecAgg round as this site accepts it (PermissionError otherwise, before any key leaves):
    at least ``min-sites`` parties (node config, written by ``fedids deploy init``: the run's K) and a
    threshold ``t`` at least fedids' for that ``n``. A lower ``t``, or fewer parties than the run has
    sites, would let the central server unmask this site's partial sum with sybils or few survivors."""
    from fedids.privacy.secagg import SecAggConfig

    n, t = int(m.number(secagg_config, "n_clients")), int(m.number(secagg_config, "threshold"))
    floor = max(2, int(node_config.get(MIN_SITES, 2)))
    if n < floor or t < SecAggConfig(n_clients=n, vector_length=1).t:
        raise PermissionError(
            f"refused: secure aggregation over {n} parties with threshold {t} (at least {floor})"
        )


def make_site_client_app() -> ClientApp:
    """The ClientApp of a site's SuperNode toward the central SuperLink (node config ``site-dir``,
    ``client-key``, optional ``timeout-s``): relays every message to the site's run, and under ``secagg``
    across sites runs the SecAgg stages itself (:mod:`fedids.federation.secagg_party`)."""
    app = ClientApp()
    for message_type in RELAYED:
        category, _, action = message_type.partition(".")
        register = app.train if category == "train" else app.query
        (register(action) if action else register())(_relay)
    for message_type in (m.SECAGG_KEYS, m.SECAGG_SHARES, m.SECAGG_UNMASK):
        action = message_type.partition(".")[2]
        app.train(action)(_secagg_stage(action.removeprefix("secagg_")))
    return app


# ------------------------------------------------------------------------------ site tier
@dataclass(frozen=True)
class SiteConfig:
    """The site run's settings (``flwr run flower_app_site --run-config``; kebab-case keys)."""

    site_dir: str = "/srv/fedids/site"
    min_devices: int = 1  # wait for this many devices before the first answer
    timeout_s: float = 3600.0  # wait for devices and for each exchange with them
    idle_s: float = 0.0  # end the run after this long without a request (0: only the stop file ends it)
    he_public_context: str = ""  # he runs: the clients' public context (the site seals with it)
    # the central tier's privacy mode, as the operator published it: the site refuses a sum the central
    # server asks for in any other mode (an active server's downgrade to the partial sum in the clear)
    privacy: str = "none"
    robust: str = "none"  # defence on the devices' updates and calibration moments (fedids.federation.robust)
    # plain: each device's vector to the site in the clear (its trust domain; robust needs it) | secagg:
    # SecAgg among the site's devices, the site learns only their sum (each device's policy, published with
    # site-privacy secagg, refuses a round of fewer than 3)
    device_privacy: str = "plain"

    @classmethod
    def from_run_config(cls, run_config: dict) -> SiteConfig:
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        unknown = sorted(set(run_config) - set(known))
        if unknown:
            raise ValueError(f"unknown site run config keys: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            kind = type(known[key].default)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not kind:
                raise ValueError(f"site run config {key}={value!r}: expected {kind.__name__}")
            values[known[key].name] = value
        config = cls(**values)
        if config.min_devices < 1 or config.timeout_s <= 0 or config.idle_s < 0:
            raise ValueError("min-devices must be >= 1, timeout-s > 0 and idle-s >= 0")
        from fedids.federation.robust import RobustSpec

        RobustSpec.parse(config.robust)  # raises on an unknown defence
        if config.device_privacy not in ("plain", "secagg"):
            raise ValueError(f"device-privacy {config.device_privacy!r}: plain or secagg")
        if config.device_privacy == "secagg" and RobustSpec.parse(config.robust).active:
            raise ValueError("robust aggregation needs each device's vector: not with device-privacy secagg")
        check_central_privacy(config.privacy)
        return config


def serve_site(grid: Grid, config: SiteConfig) -> int:
    """The site run's loop: answer channel requests until ``stop`` (or ``idle_s``); returns the number
    answered. A request that fails is answered with its error (the central server sees a dropout)."""
    from fedids.federation.plain import wait_for_nodes

    channel = SiteChannel(config.site_dir)
    wait_for_nodes(grid, config.min_devices, config.timeout_s)
    log.info("site: %d devices connected, serving %s", len(list(grid.get_node_ids())), config.site_dir)
    answered, last = 0, time.monotonic()
    while not channel.stopped:
        got = channel.next_request(WAIT_S)
        if got is None:
            if config.idle_s and time.monotonic() - last > config.idle_s:
                log.info("site: idle for %.0f s, stopping", config.idle_s)
                break
            continue
        ident, request = got
        try:
            reply = combine(grid, request, config)
        except Exception as exc:  # noqa: BLE001 (any failure is the central server's dropout, not ours)
            log.warning("site: %s failed: %s", request.message_type, exc)
            reply = Envelope(request.message_type, RecordDict(), f"{type(exc).__name__}: {exc}")
        channel.reply(ident, reply)
        answered, last = answered + 1, time.monotonic()
    return answered


def combine(grid: Grid, request: Envelope, config: SiteConfig) -> Envelope:
    """Send ``request`` to every connected device and combine their answers into the site's answer."""
    from fedids.federation.plain import wait_for_nodes
    from fedids.federation.private import SumResult
    from fedids.federation.secure_rounds import exchange

    if request.message_type not in RELAYED:
        raise ValueError(f"a site relays {', '.join(RELAYED)}, not {request.message_type!r}")
    nodes = wait_for_nodes(grid, config.min_devices, config.timeout_s)
    if m.SUM in request.content.config_records:
        return _site_sum(grid, nodes, request, config)
    replies = exchange(
        grid, {n: request.content for n in nodes}, request.message_type, config.timeout_s, SumResult()
    )
    if not replies:
        raise RuntimeError("no device answered")
    if request.message_type != m.QUERY_SETUP:
        return Envelope(request.message_type, RecordDict())
    infos = [dict(m.config_record(replies[n].content, m.INFO)) for n in sorted(replies)]
    if any((i["labels"], i["digest"]) != (infos[0]["labels"], infos[0]["digest"]) for i in infos):
        raise RuntimeError("the site's devices derived different setups from the same statistics sum")
    return Envelope(request.message_type, RecordDict({m.INFO: ConfigRecord(infos[0])}))


def _site_sum(grid: Grid, nodes: list[int], request: Envelope, config: SiteConfig) -> Envelope:
    """The devices' contributions in plaintext, combined by the site, sealed as the central spec says."""
    from fedids.federation.private import PrivacyMode, SumResult
    from fedids.federation.robust import RobustSpec
    from fedids.federation.secure_rounds import exchange
    from fedids.federation.sites import SITE_TIER_PRIVACY, SiteAggregator, wan_vector

    spec = dict(m.config_record(request.content, m.SUM))
    length, mode = int(m.number(spec, "length")), PrivacyMode.parse(m.text(spec, "privacy"))
    if mode != PrivacyMode.parse(config.privacy):
        raise PermissionError(f"refused: a {mode.name} sum in a site published with privacy {config.privacy}")
    # the central SecAgg stage's records are the uplink's (it masks the partial sum), not the devices'
    content = RecordDict({k: v for k, v in request.content.items() if k not in (m.SECAGG, m.SECAGG_CONFIG)})
    if config.device_privacy == "secagg":
        total = _masked_devices_sum(
            grid, nodes, request.message_type, content, m.text(spec, "values"), length, config
        )
    else:
        content[m.SUM] = ConfigRecord(
            {"values": spec["values"], "length": length, "privacy": SITE_TIER_PRIVACY}
        )
        replies = exchange(
            grid, {n: content for n in nodes}, request.message_type, config.timeout_s, SumResult()
        )
        site = SiteAggregator(0, nodes, length)
        for node in sorted(replies):
            try:
                site.receive(node, m.array_record(replies[node].content, m.CONTRIBUTION)["value"].numpy())
            except (KeyError, ValueError) as exc:
                log.warning("site: %s: rejected vector from device %s: %s", request.message_type, node, exc)
        combined = site.contribution(_defence(request, length, RobustSpec.parse(config.robust)))
        if combined is None:
            raise RuntimeError("no device returned a usable vector")
        total, defence = combined
        if defence is not None:
            log.info("site: defence %s", defence)
        log.info("site: %s summed over %d devices", request.message_type, len(site.received))
    if mode.he:
        sealed = ArrayRecord({"ct": Array(_encrypt(total, spec, config))})
    elif mode.secagg:  # to the site's own uplink, which masks it (the float64 sum SecAgg quantises)
        sealed = ArrayRecord({"value": Array(np.asarray(total, np.float64))})
    else:
        sealed = ArrayRecord({"value": Array(wan_vector(total))})
    reply = RecordDict({m.CONTRIBUTION: sealed})
    if request.message_type == m.QUERY_STATS:
        reply[m.INFO] = ConfigRecord({"client-key": "site"})  # replaced by the site SuperNode's own key
    return Envelope(request.message_type, reply)


def _masked_devices_sum(
    grid: Grid,
    nodes: list[int],
    message_type: str,
    content: RecordDict,
    values: str,
    length: int,
    config: SiteConfig,
) -> np.ndarray:
    """``device-privacy secagg``: SecAgg among the site's devices, the site their SecAgg server; only their
    sum reaches the site (no defence can see a device's vector here)."""
    from fedids.federation.private import PrivacyMode
    from fedids.federation.secure_rounds import secure_sum

    result, _ = secure_sum(
        grid,
        mode=PrivacyMode.parse("secagg"),
        nodes=nodes,
        message_type=message_type,
        make_content=lambda node: RecordDict(dict(content.items())),
        length=length,
        values=values,
        he_public=None,
        timeout=config.timeout_s,
    )
    if result.plaintext is None or not result.survivors:
        raise RuntimeError("the secure sum among the site's devices failed")
    log.info("site: %s securely summed over %d devices", message_type, len(result.survivors))
    return result.plaintext


def _encrypt(total: Any, spec: dict, config: SiteConfig) -> Any:
    """``he``: the partial sum in the central sum's fixed-point code, BFV-encrypted with the public context."""
    from fedids.privacy.he_secagg import encrypt_public
    from fedids.privacy.keys import load_public_context
    from fedids.privacy.secagg import SecAggConfig, quantize

    if not config.he_public_context:
        raise ValueError("an he run needs the site run's he-public-context")
    quantisation = SecAggConfig.from_dict(
        {k[len("quant.") :]: v for k, v in spec.items() if k.startswith("quant.")}
    )
    blob = encrypt_public(load_public_context(config.he_public_context), quantize(total, quantisation))
    return np.frombuffer(blob, dtype=np.uint8)


def _defence(request: Envelope, length: int, robust: Any) -> Any:
    """The site's defence of a sum (None: a plain sum) under ``robust``: of the devices' model updates
    (:mod:`fedids.federation.robust`) and of their head-calibration moments
    (:mod:`fedids.federation.robust_moments`)."""
    from fedids.federation.robust import update_defence

    if not robust.active:
        return None
    if request.message_type == m.QUERY_FEATURES:
        return _moments_defence(request.content, length)
    if request.message_type != m.TRAIN:
        return None
    layout, reference = _defence_inputs(request.content, length)
    return update_defence(layout, robust, reference)


def _moments_defence(content: RecordDict, length: int) -> Any:
    """The devices' moments without those the global head disputes, where the site can read the global
    model and the setup (not under ``he``) and the moments are not noised per device (no DP)."""
    from fedids.federation.calibration_dp import moments_sum_length
    from fedids.federation.robust_moments import moments_defence

    ins = m.ModelInstructions.from_config(m.config_record(content, m.CONFIG))
    readable = m.ARRAYS in content.array_records and m.PREPROCESSING in content.array_records
    if ins.calibration_privacy() is not None or not readable:
        return None
    setup = m.decode_setup_message(content)
    n_classes = len(setup.vocabulary.labels)
    if length != moments_sum_length(n_classes, ins.hidden, None):
        raise ValueError(f"a moments sum of length {length} for a model of {ins.hidden} hidden units")
    arrays = [a.numpy() for a in content.array_records[m.ARRAYS].values()]
    return moments_defence(n_classes, ins.hidden, (arrays[-2], arrays[-1]), setup.class_totals)


def _defence_inputs(content: RecordDict, length: int) -> tuple[Any, Any]:
    """The update layout of a training message and, where the site can read the global model, the
    proposal of a device that did not move (:func:`fedids.federation.bounds.unmoved_reference`)."""
    from fedids.federation import aggregation as agg
    from fedids.federation.bounds import unmoved_reference
    from fedids.model.train import get_weights
    from fedids.task import new_model

    ins = m.TrainInstructions.from_config(m.config_record(content, m.CONFIG))
    layout = agg.UpdateLayout(
        tuple(tuple(w.shape) for w in get_weights(new_model(len(ins.labels), ins.hidden)))
    )
    if layout.length != length:
        raise ValueError(f"a training sum of length {length} for a model of {layout.length} values")
    if m.ARRAYS not in content.array_records:  # he: the site cannot read the model; median reference
        return layout, None
    current = [a.numpy() for a in content.array_records[m.ARRAYS].values()]
    previous = (
        [a.numpy() for a in content.array_records[m.PREVIOUS].values()]
        if m.PREVIOUS in content.array_records
        else None
    )
    return layout, unmoved_reference(layout, current, previous, ins.server_lr, ins.server_momentum)


def _site_main(grid: Grid, context: Context) -> None:
    serve_site(grid, SiteConfig.from_run_config(dict(context.run_config)))


client_app = make_site_client_app()
server_app = ServerApp()
server_app.main()(_site_main)

__all__ = [
    "RELAYED",
    "SITE_DIR",
    "ChannelError",
    "SiteConfig",
    "check_central_config",
    "client_app",
    "combine",
    "make_site_client_app",
    "serve_site",
    "server_app",
]
