"""Sites: the middle tier of a three-tier federation (devices -> site aggregators -> central server).

The paper's architecture has an IoT device layer, a federated aggregation layer and a central server.
``fedids federate --sites K`` groups the clients (devices) into K sites: each training round every site
combines the contributions of its own devices (a plain sum, or a robust one with ``--robust``,
:mod:`fedids.federation.robust`) and the central server sums the K site contributions. Every exchange of
the pipeline is a sum (:mod:`fedids.federation.aggregation`), so without a defence the three-tier sum is
the flat sum and the run ends on the flat run's model (``tests/federation/test_sites.py``).

Privacy per tier
----------------
* device -> site (LAN), ``--site-privacy``: ``plain`` (default), the device's vector in plaintext, inside
  the site's trust domain: the site sees each of its devices' updates (after the device's own DP noise,
  if any), which its robust aggregation needs; ``secagg``, SecAgg among the site's devices (at least
  three) with the site as its server: the site learns only their sum, and no defence can run at the site.
  Either way every device carries all of its DP noise (the site may see its vector, or collude);
* site -> central (WAN): the run's ``--privacy``. ``none``/``dp``: the site's partial sum in plaintext.
  ``he``: the site quantises its partial sum (SecAgg's fixed-point code) and BFV-encrypts it with the
  *public* context, which cannot decrypt; the central server adds the ciphertexts and the devices open the
  sum, as in the flat run. ``secagg``: the sites are the SecAgg parties (the central server learns only the
  sum over all sites). ``he+secagg``: the sites' masked vectors, BFV-encrypted.

What the simulation co-locates
------------------------------
Flower has no hierarchy (flwr #2212, #3926): the sites are logical aggregators inside the ServerApp
process. Flower's Grid carries every device message to that process; :func:`tiered_sum` and
:func:`plain_site_sum` hand each reply to the :class:`SiteAggregator` of its device's site and no other
(a site refuses a device it does not own). The site -> central protocol (encryption, the four SecAgg
stages) runs in-process on the objects a deployment would use; its bytes are those of the messages it
would send, counted as the flat run counts its own, not transmitted. The statistics round before training
and the publication of the final model go straight between the central server and the devices.

Bytes and seconds per tier (:class:`TierRecord`): LAN = device <-> site (the global model to each device,
each device's upload); WAN = site <-> central (one copy of the global model per site, one contribution per
site). Seconds: LAN = wall time of the devices' exchange (their local training included), ``site_seconds``
the sites' own summing and defence, WAN = the sites' sealing and the central sum (in-process, so no
network time).
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedids.federation import aggregation as agg
from fedids.federation import messages as m
from fedids.federation.partition import gateway_subnet
from fedids.federation.private import COUNT, REAL, PrivacyMode, SealedSum, SumResult
from fedids.federation.secure_rounds import (
    check_plain_vector,
    exchange,
    node_clip_range,
    payload_bytes,
    run_secagg,
)

log = logging.getLogger("fedids.server")
_SITE_SUM_IDS = itertools.count(1 << 40)  # SecAgg round ids of the site tier, apart from the flat ones
SITE_TIER_PRIVACY = "none"
"""How a device seals its vector for its site: in the clear, inside the site's trust domain."""
Check = Callable[[int, np.ndarray], None]
Combine = Callable[[list[np.ndarray]], tuple[np.ndarray, dict]]
"""A site's defence: its devices' vectors (node order) -> its contribution and a record of what it did."""
DEVICE_LISTS = ("excluded", "left_out", "disputed")
"""The fields of a site's defence record that list devices (positions, then node ids, then client keys);
its ``nodes`` field gives the order of its per-device lists (``agreement``, ``norms``)."""


# ------------------------------------------------------------------------------ assignment
def _network_key(text: str) -> tuple:
    try:
        network = ipaddress.ip_network(text, strict=False)
        return (0, network.version, int(network.network_address))
    except ValueError:
        return (1, 0, text)


def main_gateways(hosts_per_client: Iterable[np.ndarray]) -> list[str]:
    """Each client's most frequent gateway subnet (/24 of its flows' source IPs; ``""`` without any)."""
    out = []
    for hosts in hosts_per_client:
        counts = Counter(gateway_subnet(str(h)) for h in np.asarray(hosts).astype(str))
        out.append(min(counts, key=lambda g: (-counts[g], _network_key(g))) if counts else "")
    return out


def assign_sites(n_clients: int, k: int, gateways: list[str] | None = None) -> list[int]:
    """The site (``0..k-1``) of each client ``0..n_clients-1``: contiguous groups of nearly equal size,
    ordered by the clients' gateway subnets when ``gateways`` gives them (``--partition host``), so that
    devices of neighbouring subnets share a site."""
    if not 1 <= k <= n_clients:
        raise ValueError(f"--sites {k}: between 1 and the {n_clients} clients")
    order = list(range(n_clients))
    if gateways is not None:
        order.sort(key=lambda i: _network_key(gateways[i]))
    site_of = [0] * n_clients
    for rank, client in enumerate(order):
        site_of[client] = rank * k // n_clients
    return site_of


def node_sites(
    keys: Mapping[int, str], k: int, site_of_key: Mapping[str, int] | None = None
) -> dict[int, int]:
    """Node id -> site for a run with ``k`` sites (empty for a flat run, ``k <= 1``): from ``site_of_key``
    (client key -> site, the simulation's assignment), else contiguous over the sorted client keys."""
    if k <= 1:
        return {}
    ordered = sorted(keys, key=keys.__getitem__)
    if site_of_key is None:
        contiguous = assign_sites(len(ordered), min(k, len(ordered)))
        return {node: contiguous[i] for i, node in enumerate(ordered)}
    missing = [keys[n] for n in ordered if keys[n] not in site_of_key]
    if missing:
        raise ValueError(f"no site for clients {', '.join(missing)}")
    return {node: int(site_of_key[keys[node]]) for node in ordered}


# ------------------------------------------------------------------------------ records
@dataclass
class Tier:
    """Traffic of one tier in one exchange: payload bytes each way and seconds."""

    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0


@dataclass
class TierRecord:
    """Bytes and seconds per tier of one exchange (see the module docstring), and what a defence did."""

    sites: int
    lan: Tier = field(default_factory=Tier)
    wan: Tier = field(default_factory=Tier)
    site_seconds: float = 0.0
    robust: list[dict] = field(default_factory=list)  # per site: devices, clipped, bound, update norms

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------ the site
class SiteAggregator:
    """One site: it receives the contributions of its own ``devices`` (node ids), never another site's,
    checks each like the flat server does, and combines them into the site's contribution."""

    def __init__(self, site: int, devices: Iterable[int], length: int) -> None:
        self.site, self.devices, self.length = site, frozenset(devices), length
        self.received: dict[int, np.ndarray] = {}

    def receive(self, node: int, vector: np.ndarray, check: Check | None = None) -> None:
        """Accept one device's ``(length,)`` float64 vector; ValueError for a stranger, a duplicate or a
        malformed vector (``check``: the flat server's plausibility checks)."""
        if node not in self.devices:
            raise ValueError(f"site {self.site}: device {node} belongs to another site")
        if node in self.received:
            raise ValueError(f"site {self.site}: a second vector from device {node}")
        value = np.asarray(vector)
        check_plain_vector(node, value, self.length, check)
        self.received[node] = value

    def contribution(self, combine: Combine | None = None) -> tuple[np.ndarray, dict | None] | None:
        """The site's contribution (None without devices) and, under a defence (``combine``: the devices'
        vectors in node order -> the site's vector and what the defence did), what it did."""
        if not self.received:
            return None
        nodes = sorted(self.received)
        vectors = [self.received[n] for n in nodes]
        if combine is None:
            return np.sum(np.asarray(vectors, np.float64), axis=0), None
        total, record = combine(vectors)
        for key in DEVICE_LISTS:  # positions in node order -> node ids
            if key in record:
                record[key] = [nodes[i] for i in record[key]]
        return total, {"site": self.site, "nodes": nodes, **record}  # nodes: the order of per-device lists


def make_sites(site_of: Mapping[int, int], length: int) -> dict[int, SiteAggregator]:
    by_site: dict[int, list[int]] = {}
    for node, site in site_of.items():
        by_site.setdefault(site, []).append(node)
    return {site: SiteAggregator(site, nodes, length) for site, nodes in sorted(by_site.items())}


def _route(sites: dict[int, SiteAggregator], site_of: Mapping[int, int], node: int, vector, check) -> None:
    if node not in site_of:
        raise ValueError(f"device {node} belongs to no site")
    sites[site_of[node]].receive(node, vector, check)


def site_contributions(
    sites: dict[int, SiteAggregator], combine: Combine | None, record: TierRecord
) -> dict[int, np.ndarray]:
    """Each site's contribution (sites without a surviving device left out); the sites' seconds and
    defence records go into ``record``."""
    start = time.perf_counter()
    partials: dict[int, np.ndarray] = {}
    for site in sorted(sites):
        out = sites[site].contribution(combine)
        if out is None:
            continue
        partials[site], defence = out
        if defence is not None:
            record.robust.append(defence)
    record.site_seconds = time.perf_counter() - start
    return partials


def wan_vector(partial: np.ndarray) -> np.ndarray:
    """What a site sends the central server in the unsealed modes: its partial sum in float32, the
    precision of a device's own model (the float64 sum would double the WAN bytes: 2 K/N of the flat run's
    uploads instead of K/N). Its rounding, 2**-24 of each value, is below the model's own float32 step."""
    return np.asarray(partial, np.float32)


# ------------------------------------------------------------------------------ the WAN tier
def site_quantisation(n_sites: int, length: int, values: str, sum_id: int, devices_per_site: int):
    """The fixed-point code of the site tier: SecAgg's, with the sites as its ``n`` parties and each site's
    range that of its largest number of devices (the same step as the flat run's for balanced sites)."""
    from fedids.privacy.secagg import SecAggConfig

    n = max(n_sites, 2)
    clip = node_clip_range(values, n, devices_per_site)
    return SecAggConfig(n_clients=n, vector_length=length, round_id=sum_id, clip_range=clip)


def central_sum(
    mode: PrivacyMode,
    partials: dict[int, np.ndarray],
    *,
    values: str,
    length: int,
    he_public: bytes | None,
    devices_per_site: int,
    result: SumResult,
    record: TierRecord,
) -> None:
    """The central server's sum of the site contributions, sealed by the sites as ``mode`` says; sets
    ``result``'s plaintext or sealed sum and the WAN traffic of ``record``."""
    start = time.perf_counter()
    if not mode.sealed:
        uploads = [wan_vector(partials[site]) for site in sorted(partials)]
        for vector in uploads:
            content = RecordDict({m.CONTRIBUTION: ArrayRecord({"value": Array(vector)})})
            record.wan.bytes_up += payload_bytes(content)
        result.plaintext = np.sum([v.astype(np.float64) for v in uploads], axis=0)
    else:
        config = site_quantisation(len(partials), length, values, next(_SITE_SUM_IDS), devices_per_site)
        result.atol = config.n_clients * config.quantization_error_bound
        if mode.secagg:
            _secagg_across_sites(mode, partials, config, values, he_public, result, record)
        else:
            _he_across_sites(partials, config, values, he_public, result, record)
    record.wan.seconds = time.perf_counter() - start


def _he_across_sites(partials, config, values: str, he_public, result: SumResult, record: TierRecord) -> None:
    """``he``: each site encrypts its quantised partial sum with the public context; the central adds."""
    from fedids.privacy.he_secagg import EncryptedMaskedSum, encrypt_public
    from fedids.privacy.secagg import quantize

    if he_public is None:
        raise ValueError("he across sites needs the public context")
    total = EncryptedMaskedSum(he_public, config.vector_length)  # refuses a context with a secret key
    for site in sorted(partials):
        blob = encrypt_public(he_public, quantize(partials[site], config))
        record.wan.bytes_up += len(blob)
        total.add(blob)
    result.sealed = SealedSum("bfv", total.to_bytes(), values, config.to_dict())


def _secagg_across_sites(
    mode, partials, config, values: str, he_public, result: SumResult, record: TierRecord
) -> None:
    """``secagg`` (``he+secagg``): the sites run SecAgg's four stages as its parties, the central server as
    its server (masked vectors BFV-encrypted with the public context under ``he+secagg``)."""
    from fedids.privacy.secagg import SecAggClient, SecAggServer, dequantize_sum

    if len(partials) < 2:
        raise RuntimeError("secure aggregation across sites needs at least 2 sites with devices")
    ids = {site: i + 1 for i, site in enumerate(sorted(partials))}
    server: SecAggServer
    clients: dict[int, SecAggClient]
    if mode.he:
        from fedids.privacy.he_secagg import HESecAggServer, PublicKeyHESecAggClient

        if he_public is None:
            raise ValueError("he+secagg across sites needs the public context")
        server = HESecAggServer(config, he_public)
        clients = {s: PublicKeyHESecAggClient(config, ids[s], he_public) for s in ids}
    else:
        server = SecAggServer(config)
        clients = {s: SecAggClient(config, ids[s]) for s in ids}

    def size(message) -> int:
        return payload_bytes(RecordDict({m.SECAGG: ConfigRecord(dict(message))}))

    def up(message):
        record.wan.bytes_up += size(message)
        return message

    def down(message):
        record.wan.bytes_down += size(message)
        return message

    for client in clients.values():
        server.receive_advertisement(up(client.advertise_keys()))
    broadcast = server.public_keys_message()
    for client in clients.values():
        server.receive_shares(up(client.share_keys(down(broadcast))))
    routed = server.forward_shares()
    for site, client in clients.items():
        server.receive_masked_input(up(client.masked_input(down(routed[ids[site]]), partials[site])))
    request = server.unmask_request()
    for client in clients.values():
        server.receive_unmask_response(up(client.unmask(down(request))))
    if mode.he:
        result.sealed = SealedSum("bfv", server.encrypted_aggregate(), values, config.to_dict())  # type: ignore[attr-defined]
    else:
        total = dequantize_sum(server.aggregate(), config)
        result.plaintext = np.rint(total) if values == COUNT else total


# ------------------------------------------------------------------------------ a tiered exchange
def tiered_sum(
    grid: Grid,
    *,
    mode: PrivacyMode,
    site_of: Mapping[int, int],
    nodes: list[int],
    message_type: str,
    make_content: Callable[[int], RecordDict],
    length: int,
    values: str,
    he_public: bytes | None,
    timeout: float,
    combine: Combine | None = None,
    check: Check | None = None,
    device_secagg: bool = False,
) -> tuple[SumResult, list[Message], TierRecord]:
    """:func:`fedids.federation.secure_rounds.secure_sum` through the sites: the ``nodes`` send their
    vectors to their sites in plaintext, each site combines its own (a sum, or ``combine``: a defence,
    :func:`fedids.federation.robust.update_defence`), the sites seal their contributions for the central
    sum as ``mode`` says. With ``device_secagg`` the devices of each site run SecAgg with their site as its
    server instead (:func:`_secagg_device_tier`: the site learns only their sum; no ``combine`` or
    ``check``). Returns the sum (with the WAN traffic as its bytes), the accepted replies and the tiers'
    record."""
    result = SumResult()
    record = TierRecord(sites=len({site_of[n] for n in nodes if n in site_of}))
    contents = {node: make_content(node) for node in nodes}
    tier = _secagg_device_tier if device_secagg else _plain_device_tier
    partials, largest, accepted = tier(
        grid, site_of, contents, message_type, length, values, timeout, result, record, combine, check
    )
    relayed = {site_of[n]: n for n in reversed(nodes) if n in site_of}  # one copy of the model per site
    record.wan.bytes_down = sum(payload_bytes(contents[n]) for n in relayed.values())
    if partials:
        central_sum(
            mode,
            partials,
            values=values,
            length=length,
            he_public=he_public,
            devices_per_site=largest,
            result=result,
            record=record,
        )
    result.bytes_up, result.bytes_down = record.wan.bytes_up, record.wan.bytes_down
    result.server_seconds = record.wan.seconds
    return result, accepted, record


def site_checks(
    grid: Grid,
    *,
    site_of: Mapping[int, int],
    nodes: list[int],
    message_type: str,
    make_content: Callable[[int], RecordDict],
    length: int,
    timeout: float,
    combine: Combine,
) -> TierRecord:
    """The device -> site half of :func:`tiered_sum` alone: the ``nodes`` send their vectors to their sites
    in plaintext and each site runs ``combine`` on its own; nothing goes on to the central tier. Returns
    the tier record (LAN traffic, what each site's ``combine`` did, devices by node id)."""
    record = TierRecord(sites=len({site_of[n] for n in nodes if n in site_of}))
    contents = {node: make_content(node) for node in nodes}
    _plain_device_tier(
        grid, site_of, contents, message_type, length, REAL, timeout, SumResult(), record, combine, None
    )
    return record


def _plain_device_tier(
    grid, site_of, contents, message_type, length, values, timeout, result, record, combine, check
) -> tuple[dict[int, np.ndarray], int, list[Message]]:
    """device -> site in the clear: each site receives its devices' vectors and combines them. Returns the
    sites' contributions, the largest number of devices a site combined, and the accepted replies."""
    lan = SumResult()
    spec: dict = {"values": values, "length": length, "privacy": SITE_TIER_PRIVACY}
    for content in contents.values():
        content[m.SUM] = ConfigRecord(spec)
    started = time.perf_counter()
    replies = exchange(grid, contents, message_type, timeout, lan)
    record.lan = Tier(lan.bytes_down, lan.bytes_up, time.perf_counter() - started)
    sites = make_sites(site_of, length)
    accepted = []
    for node in sorted(replies):
        try:
            vector = m.array_record(replies[node].content, m.CONTRIBUTION)["value"].numpy()
            _route(sites, site_of, node, vector, check)
        except (KeyError, ValueError) as exc:
            log.warning("%s: rejected vector from %s: %s", message_type, node, exc)
            result.rejected += 1
            continue
        result.survivors.append(node)
        accepted.append(replies[node])
    result.rejected += lan.rejected
    partials = site_contributions(sites, combine, record)
    return partials, max((len(s.received) for s in sites.values()), default=0), accepted


def _secagg_device_tier(
    grid, site_of, contents, message_type, length, values, timeout, result, record, combine, check
) -> tuple[dict[int, np.ndarray], int, list[Message]]:
    """device -> site under SecAgg (``--site-privacy secagg``): each site runs SecAgg's four stages with
    its chosen devices as the parties and itself as the server, and learns only their sum. A site with
    fewer than :data:`~fedids.federation.policy.MIN_SITE_SECAGG` devices in the exchange leaves them out
    (with two, each would learn the other's vector from the sum); the devices refuse such a round too."""
    from fedids.federation.policy import MIN_SITE_SECAGG

    if combine is not None:
        raise ValueError("a site defence needs each device's vector: not with device-tier secagg")
    by_site: dict[int, list[int]] = {}
    for node in contents:
        if node in site_of:
            by_site.setdefault(site_of[node], []).append(node)
    partials: dict[int, np.ndarray] = {}
    accepted: list[Message] = []
    started = time.perf_counter()
    for site, nodes in sorted(by_site.items()):
        if len(nodes) < MIN_SITE_SECAGG:
            log.warning(
                "site %d: %d devices, fewer than SecAgg's %d: left out", site, len(nodes), MIN_SITE_SECAGG
            )
            result.rejected += len(nodes)
            continue
        lan = SumResult()
        replies = run_secagg(
            grid,
            PrivacyMode.parse("secagg"),
            nodes,
            message_type,
            contents.__getitem__,
            length,
            values,
            next(_SITE_SUM_IDS),
            None,
            timeout,
            lan,
        )
        record.lan.bytes_down += lan.bytes_down
        record.lan.bytes_up += lan.bytes_up
        result.rejected += lan.rejected
        if lan.plaintext is not None and lan.survivors:
            partials[site] = lan.plaintext
            result.survivors.extend(lan.survivors)
            accepted.extend(replies)
    record.lan.seconds = time.perf_counter() - started
    return partials, max((len(n) for n in by_site.values()), default=0), accepted


def plain_site_sum(
    layout: agg.UpdateLayout,
    vectors: Mapping[int, np.ndarray],
    site_of: Mapping[int, int],
    *,
    combine: Combine | None,
    lan: Tier,
    model_bytes: int,
) -> tuple[np.ndarray, TierRecord]:
    """The plaintext mode's round through the sites: each site combines the update contributions of its
    own devices (``vectors`` by node, built from their plaintext replies), the central server adds the
    site contributions. Returns the sum and the tiers' record (``lan``: the devices' exchange)."""
    record = TierRecord(sites=len({site_of[n] for n in vectors}), lan=lan)
    sites = make_sites(site_of, layout.length)
    for node in sorted(vectors):
        _route(sites, site_of, node, vectors[node], None)
    partials = site_contributions(sites, combine, record)
    result = SumResult()
    central_sum(
        PrivacyMode(),
        partials,
        values=REAL,
        length=layout.length,
        he_public=None,
        devices_per_site=1,
        result=result,
        record=record,
    )
    record.wan.bytes_down = model_bytes * len(partials)
    assert result.plaintext is not None
    return result.plaintext, record


__all__ = [
    "SITE_TIER_PRIVACY",
    "Combine",
    "SiteAggregator",
    "Tier",
    "TierRecord",
    "assign_sites",
    "central_sum",
    "main_gateways",
    "node_sites",
    "plain_site_sum",
    "site_contributions",
    "tiered_sum",
    "wan_vector",
]
