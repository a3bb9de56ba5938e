"""Packets of planned flows (simulation) and their 78 CICIDS2017 features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedids.data.features import SYNTHETIC, FlowPackets, flow_features
from fedids.data.schema import FEATURES
from fedids.data.synth.config import (
    _MAX_ROUNDS,
    _UDP_MAX_PAYLOAD,
    ACK,
    CWR,
    ECE,
    FLOW_TIMEOUT_US,
    PSH,
    RST,
    SYN,
)
from fedids.data.synth.profiles import (
    _HS_BASE_LEN,
    _HS_DIR,
    _HS_FLAGS,
    _HS_KIND,
    _MAX_RETRIES,
    _PT,
    _ST,
    _TD_DIR,
    _TD_FLAGS,
    _TD_KIND,
    _TD_LEN,
    HS_FULL,
    HS_NONE,
    HS_SYNACK_RETRY,
    HS_UNANSWERED,
    TD_NONE,
)
from fedids.data.synth.sampling import _jitter, _lognormal, _ragged_arange


@dataclass(frozen=True)
class PacketArrays:
    """Packets of ``n`` flows, padded to ``L`` packets; all arrays have shape ``(n, L)``.

    Valid packets form a prefix of each row (``valid``); padding values are ignored.

    Attributes
    ----------
    ts_us : float64, packet time in microseconds since the flow's first packet (non-decreasing).
    size : float64, payload bytes (CICFlowMeter's "packet length" is the transport payload).
    fwd : bool, True when the packet travels from the flow's source (its first packet's sender).
    flags : uint8, TCP flag bits (FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64, CWR 128); 0 for UDP.
    header : float64, transport header bytes (TCP: 20 + options; UDP: 8).
    window : float64, TCP window field; -1 for UDP.
    valid : bool, real packet (True) or padding (False).
    """

    ts_us: np.ndarray
    size: np.ndarray
    fwd: np.ndarray
    flags: np.ndarray
    header: np.ndarray
    window: np.ndarray
    valid: np.ndarray


def _flat_packets(
    ts: np.ndarray,
    size: np.ndarray,
    fwd: np.ndarray,
    flags: np.ndarray,
    header: np.ndarray,
    window: np.ndarray,
    first: np.ndarray,
    counts: np.ndarray,
) -> FlowPackets:
    """The first ``counts[i]`` packets from ``first[i]`` on of each flow, as :class:`FlowPackets`."""
    counts = np.asarray(counts, dtype=np.int64)
    idx = np.repeat(np.asarray(first, dtype=np.int64), counts) + _ragged_arange(counts)
    return FlowPackets(
        starts=np.cumsum(counts) - counts,
        ts_us=ts[idx],
        size=size[idx],
        fwd=fwd[idx],
        flags=flags[idx],
        header=header[idx],
        window=window[idx],
    )


def compute_flow_features(packets: PacketArrays, dst_port: np.ndarray) -> np.ndarray:
    """All 78 CICIDS2017 features of ``n`` flows from their packets, CICFlowMeter semantics.

    Parameters
    ----------
    packets : PacketArrays with arrays of shape ``(n, L)``; every row has at least one valid packet
        and its first packet is forward.
    dst_port : int array ``(n,)``, the flows' destination ports (feature ``Destination Port``).

    Returns
    -------
    float64 array ``(n, 78)``, columns in :data:`fedids.data.schema.FEATURES` order. Units: durations
    and IATs in microseconds, lengths in bytes, rates per second.

    Notes
    -----
    The definition is :func:`fedids.data.features.flow_features`, the one the packet extractor uses,
    with :data:`fedids.data.features.SYNTHETIC` semantics:

    * Standard deviations and the variance are sample statistics (``n - 1``), 0 below two values.
    * Rates (``Flow Bytes/s`` ...) are 0 for zero-duration flows, where CICIDS2017 has Infinity/NaN,
      so that every feature is finite (python CICFlowMeter ports also write 0).
    * ``Down/Up Ratio`` is ``floor(bwd / fwd)`` (CICFlowMeter divides integers).
    * Flag counts are the numbers of packets carrying the flag (CICIDS2017's released files have 0/1
      there because of a CICFlowMeter bug); ``CWE Flag Count`` counts CWR.
    * Active/Idle: a gap longer than :data:`ACTIVITY_TIMEOUT_US` ends an active period; idle values
      are those gaps, active values the positive lengths of the periods between them (the last one,
      up to the flow's last packet, included).
    * Bulk features are 0: CICFlowMeter's bulk detection left them 0 in every CICIDS2017 row, and
      models learn nothing from them.
    * Subflow features equal the totals (one subflow per flow, as in CICIDS2017).
    """
    valid = packets.valid
    counts = valid.sum(axis=1)
    width = valid.shape[1]
    ts, size, fwd, flags, header, window = (
        np.asarray(a).reshape(-1)
        for a in (packets.ts_us, packets.size, packets.fwd, packets.flags, packets.header, packets.window)
    )
    first = np.arange(len(counts), dtype=np.int64) * width
    p = _flat_packets(ts, size, fwd, flags, header, window, first=first, counts=counts)
    return flow_features(p, dst_port, SYNTHETIC)


# --------------------------------------------------------------------------------------------
# Packet simulation
# --------------------------------------------------------------------------------------------


def _decode_burst(t: np.ndarray, n_seg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position ``t`` in a burst laid out as ``seg seg ack seg seg ack ...`` (an ACK every 2 segments).

    Returns (is_segment, segment index, ack index).
    """
    m, r = np.divmod(t, 3)
    j = 2 * m + r
    is_seg = (r < 2) & (j < n_seg)
    return is_seg, j, m


def _simulate_packets(
    plan: dict[str, np.ndarray], rng: np.random.Generator
) -> tuple[PacketArrays, np.ndarray]:
    """Simulate the packets of planned flows (a plan as :class:`_Plan` builds it).

    Returns the padded packets ``(n, L)``, ``L`` = the longest flow, and the int64 number of valid
    packets per flow ``(n,)``. Flows are cut at :data:`FLOW_TIMEOUT_US` like CICFlowMeter does.
    """
    flat, counts = _simulate_flat(plan, rng)
    width = int(counts.max()) if len(counts) else 1
    return _pad(flat, counts, np.arange(len(counts)), width), counts


def _simulate_flat(
    plan: dict[str, np.ndarray], rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Packets of all planned flows as flat arrays (flows contiguous, in order), and valid counts.

    Per flow: handshake packets, then request/response rounds, then the teardown. The steps draw from
    ``rng`` in a fixed order (the generator's output depends on it).
    """
    f = _flow_columns(plan)
    h = _handshake(f, plan, rng)
    r = _round_sizes(f, plan, rng)
    td_n = _TD_LEN[f["td"]]
    data_n = np.bincount(r["rf"], weights=r["c"], minlength=len(f["prof"])).astype(np.int64)
    total = h["hs_n"] + data_n + td_n
    flow_off = np.cumsum(total) - total

    n_pkt = int(total.sum())
    out = {
        "fwd": np.zeros(n_pkt, bool),
        "size": np.zeros(n_pkt),
        "flags": np.zeros(n_pkt, np.uint8),
        "iat": np.zeros(n_pkt),
    }
    idx = flow_off[h["hf"]] + h["hk"]
    out["fwd"][idx], out["flags"][idx], out["iat"][idx] = h["dir"], h["flags"], h["iat"]
    _place_rounds(out, f, r, flow_off + h["hs_n"], data_n, rng)
    _place_teardown(out, f, td_n, flow_off + h["hs_n"] + data_n, rng)
    return _packet_fields(out, f, total, flow_off, rng)


def _flow_columns(plan: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-flow columns the packet steps share: profile, stacks, handshake, rounds, teardown, MSS (all of
    length ``n``, the number of flows: ``len(f["prof"])``)."""
    prof = plan["profile"].astype(np.int64)
    hs = plan["hs"].astype(np.int64)
    sf, sb = plan["stack_f"].astype(np.int64), plan["stack_b"].astype(np.int64)
    tcp = _PT["proto"][prof] == 6
    hs = np.where(tcp, hs, HS_NONE)
    connected = (hs == HS_FULL) | (hs == HS_NONE)
    head_len = np.where(hs == HS_FULL, _PT["head_len"][prof], 0)
    return {
        "prof": prof,
        "hs": hs,
        "sf": sf,
        "sb": sb,
        "tcp": tcp,
        "retries": np.clip(plan["retries"].astype(np.int64), 0, _MAX_RETRIES),
        "rtt_f": plan["rtt_f"].astype(np.float64),
        "rtt_b": plan["rtt_b"].astype(np.float64),
        "mss": np.where(tcp, np.minimum(_ST["mss"][sf], _ST["mss"][sb]), _UDP_MAX_PAYLOAD).astype(np.float64),
        "ts_ok": tcp & _ST["ts"][sf] & _ST["ts"][sb],
        "ecn": tcp & _ST["ecn"][sf] & _ST["ecn"][sb],
        "head_len": head_len,
        "rounds": np.where(connected, np.clip(plan["rounds"].astype(np.int64), 0, _MAX_ROUNDS) + head_len, 0),
        "td": np.where(tcp & connected, plan["td"].astype(np.int64), TD_NONE),
    }


def _handshake(
    f: dict[str, np.ndarray], plan: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Handshake packets of every flow: flow ``hf``, position ``hk``, direction, flags, inter-arrival time."""
    n, hs, tcp, ecn, sf, sb = len(f["prof"]), f["hs"], f["tcp"], f["ecn"], f["sf"], f["sb"]
    rtt_f, rtt_b = f["rtt_f"], f["rtt_b"]
    hs_n = _HS_BASE_LEN[hs] + np.where((hs == HS_UNANSWERED) | (hs == HS_SYNACK_RETRY), f["retries"], 0)
    hs_n = np.where(tcp, hs_n, 0)
    hf = np.repeat(np.arange(n), hs_n)
    hk = _ragged_arange(hs_n)
    h_dir = _HS_DIR[hs[hf], hk]
    h_flags = _HS_FLAGS[hs[hf], hk].copy()
    h_kind = _HS_KIND[hs[hf], hk]
    override = (hk == 0) | ((hs[hf] == HS_UNANSWERED) & h_dir)
    h_flags = np.where(override & (plan["flags0"][hf] != 0), plan["flags0"][hf], h_flags).astype(np.uint8)
    syn_pkt = (h_flags & SYN) != 0
    h_flags = np.where(ecn[hf] & syn_pkt & h_dir, h_flags | ECE | CWR, h_flags)
    h_flags = np.where(ecn[hf] & syn_pkt & ~h_dir, h_flags | ECE, h_flags).astype(np.uint8)
    backoff_k = np.where(hs[hf] == HS_SYNACK_RETRY, hk - 2, hk - 1).clip(0)
    h_iat = np.select(
        [h_kind == 1, h_kind == 2, h_kind == 3, h_kind == 4],
        [
            rtt_b[hf] * _jitter(rng, len(hf), 0.15),
            rtt_f[hf] * _jitter(rng, len(hf), 0.15) + 20,
            _ST["rto_us"][sf[hf]] * 2.0**backoff_k * (1 + 0.01 * rng.random(len(hf))),
            _ST["rto_us"][sb[hf]] * 2.0**backoff_k * (1 + 0.01 * rng.random(len(hf))),
        ],
        0.0,
    )
    return {"hs_n": hs_n, "hf": hf, "hk": hk, "dir": h_dir, "flags": h_flags, "iat": h_iat}


def _round_sizes(
    f: dict[str, np.ndarray], plan: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Request/response rounds of every flow (flow ``rf``, index ``rr``): bytes, segments, ACKs, gaps."""
    n, prof, hs, head_len, tcp, sf = len(f["prof"]), f["prof"], f["hs"], f["head_len"], f["tcp"], f["sf"]
    rf = np.repeat(np.arange(n), f["rounds"])
    rr = _ragged_arange(f["rounds"])
    rp = prof[rf]
    in_head = rr < head_len[rf]
    head = _PT["head"][rp, np.minimum(rr, _PT["head"].shape[1] - 1)]
    req_med = np.where(in_head, head[:, 0], _PT["req_med"][rp])
    req_sig = np.where(in_head, head[:, 1], _PT["req_sig"][rp])
    resp_med = np.where(in_head, head[:, 2], _PT["resp_med"][rp])
    resp_sig = np.where(in_head, head[:, 3], _PT["resp_sig"][rp])
    svc_med = np.where(in_head, head[:, 4], _PT["svc_a"][rp])
    req_lo = np.where(in_head, np.maximum(1.0, req_med / 4), _PT["req_lo"][rp])
    req_hi = np.where(in_head, req_med * 4 + 1, _PT["req_hi"][rp])
    resp_lo = np.where(in_head, np.maximum(1.0, resp_med / 4), _PT["resp_lo"][rp])
    resp_hi = np.where(in_head, resp_med * 4 + 1, _PT["resp_hi"][rp])
    flow_sig = _PT["flow_sig"][prof]
    off_req = plan["size_shift"].astype(np.float64) + flow_sig * rng.standard_normal(n)
    off_resp = 0.5 * plan["size_shift"].astype(np.float64) + flow_sig * rng.standard_normal(n)
    req = np.clip(np.rint(_lognormal(rng, req_med, req_sig) * np.exp(off_req[rf])), req_lo, req_hi)
    req = np.where(req_med > 0, req, 0.0)
    # A flow without handshake starts with its source's data: round 0 needs a request.
    req = np.where((rr == 0) & (hs[rf] == HS_NONE), np.maximum(req, 1.0), req)
    has_resp = (resp_med > 0) & (in_head | (rng.random(len(rf)) < _PT["p_resp"][rp]))
    resp = np.clip(np.rint(_lognormal(rng, resp_med, resp_sig) * np.exp(off_resp[rf])), resp_lo, resp_hi)
    resp = np.where(has_resp, resp, 0.0)
    r_mss = f["mss"][rf]
    nq = np.ceil(req / r_mss).astype(np.int64)
    nr = np.ceil(resp / r_mss).astype(np.int64)
    r_tcp = tcp[rf]
    peer_acks = r_tcp & _PT["acks"][rp]
    kb = np.where(peer_acks, np.where(nr == 0, (nq + 1) // 2, nq // 2), 0)
    ka = np.where(r_tcp, (nr + 1) // 2, 0)
    phase_a = nq + kb
    c = phase_a + nr + ka
    # Gap before each round: the client's protocol work right after the handshake and within the
    # opening exchanges, think/period time afterwards.
    cpu = _ST["cpu_us"][sf[rf]] * _jitter(rng, len(rf), 0.6)
    think = plan["gap_us"].astype(np.float64)[rf] * _jitter(rng, len(rf), _PT["gap_b"][rp])
    gap = np.where(rr <= head_len[rf], cpu, think)
    lat = f["rtt_b"][rf] * _jitter(rng, len(rf), 0.15) + svc_med * _jitter(rng, len(rf), _PT["svc_b"][rp])
    return {
        "rf": rf,
        "rp": rp,
        "req": req,
        "resp": resp,
        "nq": nq,
        "nr": nr,
        "r_mss": r_mss,
        "r_tcp": r_tcp,
        "phase_a": phase_a,
        "c": c,
        "gap": gap,
        "lat": lat,
    }


def _place_rounds(
    out: dict[str, np.ndarray],
    f: dict[str, np.ndarray],
    r: dict[str, np.ndarray],
    data_start: np.ndarray,
    data_n: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Write the rounds' packets into ``out`` from each flow's ``data_start`` on."""
    rf, rp, c, phase_a, nq, nr = r["rf"], r["rp"], r["c"], r["phase_a"], r["nq"], r["nr"]
    rtt_f, rtt_b = f["rtt_f"], f["rtt_b"]
    # Each round is laid out as [request segments with the responder's ACKs every two segments]
    # then [response segments with the initiator's ACKs every two segments].
    round_off = np.cumsum(c) - c  # position of each round among all rounds' packets
    flow_round_start = (np.cumsum(data_n) - data_n)[rf]  # ... and of its flow's first round
    pf_round = np.repeat(np.arange(len(rf)), c)
    i = _ragged_arange(c)
    f_of = rf[pf_round]
    in_a = i < phase_a[pf_round]
    t_a = i
    t_b = i - phase_a[pf_round]
    seg_a, j_a, a_a = _decode_burst(t_a, nq[pf_round])
    seg_b, j_b, a_b = _decode_burst(t_b, nr[pf_round])
    is_seg = np.where(in_a, seg_a, seg_b)
    j = np.where(in_a, j_a, j_b)
    ack_i = np.where(in_a, a_a, a_b)
    nseg = np.where(in_a, nq[pf_round], nr[pf_round])
    nbytes = np.where(in_a, r["req"][pf_round], r["resp"][pf_round])
    p_mss = r["r_mss"][pf_round]
    size = np.where(is_seg, np.where(j < nseg - 1, p_mss, nbytes - (nseg - 1) * p_mss), 0.0)
    fwd = np.where(in_a, is_seg, ~is_seg)
    p_tcp = r["r_tcp"][pf_round]
    flags = np.where(p_tcp, np.where(is_seg & (j == nseg - 1), ACK | PSH, ACK), 0).astype(np.uint8)
    rp_p = rp[pf_round]
    intra_f = _PT["intra_a"][rp_p]
    intra_b = _PT["intra_b"][rp_p]
    unit = _jitter(rng, len(i), 0.5)
    first_of_round = i == 0
    gap, lat = r["gap"], r["lat"]
    # Inter-arrival time before each packet, as seen at the gateway: the round's think/protocol gap,
    # back-to-back segment spacing, ACKs after the peer's round trip, the response after the
    # responder's round trip plus its service time.
    iat = np.select(
        [first_of_round & in_a, in_a & is_seg, in_a & (ack_i == 0), in_a, t_b == 0, is_seg, ack_i == 0],
        [
            gap[pf_round],
            intra_f * unit,
            rtt_b[f_of] * unit**0.4,
            intra_f * unit,
            lat[pf_round] + np.where(phase_a[pf_round] == 0, gap[pf_round], 0.0),
            intra_b * unit,
            rtt_f[f_of] * unit**0.4 + 20,
        ],
        intra_b * unit,
    )
    idx = data_start[f_of] + (round_off[pf_round] - flow_round_start[pf_round]) + i
    out["fwd"][idx], out["size"][idx], out["flags"][idx], out["iat"][idx] = fwd, size, flags, iat


def _place_teardown(
    out: dict[str, np.ndarray],
    f: dict[str, np.ndarray],
    td_n: np.ndarray,
    td_start: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Write the teardown packets into ``out`` from each flow's ``td_start`` on."""
    n, td, prof, rtt_f, rtt_b = len(f["prof"]), f["td"], f["prof"], f["rtt_f"], f["rtt_b"]
    tf = np.repeat(np.arange(n), td_n)
    tk = _ragged_arange(td_n)
    t_dir = _TD_DIR[td[tf], tk]
    t_kind = _TD_KIND[td[tf], tk]
    close = _lognormal(rng, _PT["close_a"][prof[tf]], _PT["close_b"][prof[tf]])
    t_iat = np.select(
        [t_kind == 5, t_kind == 1],
        [close, rtt_b[tf] * _jitter(rng, len(tf), 0.15)],
        rtt_f[tf] * _jitter(rng, len(tf), 0.15) + 20,
    )
    idx = td_start[tf] + tk
    out["fwd"][idx], out["flags"][idx], out["iat"][idx] = t_dir, _TD_FLAGS[td[tf], tk], t_iat


def _packet_fields(
    out: dict[str, np.ndarray],
    f: dict[str, np.ndarray],
    total: np.ndarray,
    flow_off: np.ndarray,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Times, header lengths and windows of the laid-out packets; the valid count per flow."""
    n, tcp, sf, sb = len(f["prof"]), f["tcp"], f["sf"], f["sb"]
    out_fwd, out_flags = out["fwd"], out["flags"]
    n_pkt = len(out_fwd)
    pflow = np.repeat(np.arange(n), total)
    out_iat = np.maximum(np.rint(out["iat"]), 1.0)
    out_iat[flow_off] = 0.0
    cum = np.cumsum(out_iat)
    ts = cum - np.repeat(cum[flow_off], total)
    keep = ts <= FLOW_TIMEOUT_US
    counts = np.bincount(pflow, weights=keep, minlength=n).astype(np.int64)

    p_tcp = tcp[pflow]
    syn = (out_flags & SYN) != 0
    rst = (out_flags & RST) != 0
    own = np.where(out_fwd, sf[pflow], sb[pflow])
    header = np.where(
        p_tcp, np.where(syn, 20 + _ST["syn_opt"][own], np.where(rst, 20, 20 + 12 * f["ts_ok"][pflow])), 8
    )
    win_syn = _ST["win_syn"][own].astype(np.float64)
    win_syn = np.where(win_syn < 0, rng.integers(0, 65536, n_pkt), win_syn)
    win_est = _ST["win_est"][own].astype(np.float64)
    win_est = np.where(
        win_est < 0, rng.integers(0, 65536, n_pkt), np.rint(win_est * _jitter(rng, n_pkt, 0.25))
    )
    window = np.where(p_tcp, np.where(syn, win_syn, np.where(rst, 0.0, win_est)), -1.0)
    flat = {
        "ts": ts,
        "size": out["size"],
        "fwd": out_fwd,
        "flags": out_flags,
        "header": header.astype(np.float64),
        "window": window,
        "flow_off": flow_off,
    }
    return flat, counts


def _pad(flat: dict[str, np.ndarray], counts: np.ndarray, rows: np.ndarray, width: int) -> PacketArrays:
    """Gather flows ``rows`` of the flat packet arrays into ``(len(rows), width)`` padded arrays."""
    cols = np.arange(width)
    valid = cols[None, :] < counts[rows, None]
    idx = flat["flow_off"][rows, None] + np.where(valid, cols[None, :], 0)
    return PacketArrays(
        ts_us=flat["ts"][idx],
        size=flat["size"][idx],
        fwd=flat["fwd"][idx] & valid,
        flags=flat["flags"][idx],
        header=flat["header"][idx],
        window=flat["window"][idx],
        valid=valid,
    )


def _features_of_plan(
    plan: dict[str, np.ndarray],
    rng: np.random.Generator,
    progress: Callable[[int], None] | None,
    chunk: int = 20000,
) -> np.ndarray:
    """Simulate packets and compute features for every planned flow, chunk by chunk (flat packet
    arrays, no padding)."""
    n = len(plan["profile"])
    out = np.empty((n, len(FEATURES)))
    done = 0
    for lo in range(0, n, chunk):
        part = {k: v[lo : lo + chunk] for k, v in plan.items()}
        flat, counts = _simulate_flat(part, rng)
        p = _flat_packets(
            flat["ts"],
            flat["size"],
            flat["fwd"],
            flat["flags"],
            flat["header"],
            flat["window"],
            first=flat["flow_off"],
            counts=counts,
        )
        out[lo : lo + len(counts)] = flow_features(p, part["dport"], SYNTHETIC)
        done += len(counts)
        if progress is not None:
            progress(done)
    return out
