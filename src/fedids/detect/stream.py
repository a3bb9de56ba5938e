"""Streaming detection: per-host windows of raw flows, micro-batched scoring, hot model reload.

Each flow is scored together with the ``window - 1`` flows of the same source host that arrived before
it, exactly as :func:`fedids.task.predict_labels` scores a time-ordered file (same windows, same
zero padding and presence channel), so streaming and batch scoring agree flow for flow. Per host the
detector keeps only the raw features of its last ``window - 1`` flows; the model recomputes the window
for each new flow (a carried GRU state would see the whole history, not the window the model was
trained on).

Memory is bounded by an LRU cap on hosts (:data:`DEFAULT_MAX_HOSTS`): when a new host would exceed it,
the host seen least recently is forgotten (the hosts of one batch count as seen together). Histories
live in one table grown on demand up to ``max_hosts`` rows; at the default window of 10 a host costs
``9 * 78 * 4 = 2,808`` bytes, so 16,384 hosts stay under 46 MB. A forgotten host that comes back starts
with an empty history (its next flows are scored with padding, as a new host's would be): the only case
where streaming differs from batch scoring. A flood of spoofed sources cycles the cap and so also
flushes other hosts' histories.

Backends (:func:`load_scorer`): a model directory (PyTorch, needs torch) or an ``.onnx`` file from
``fedids export`` (needs only onnxruntime and numpy; one intra-op thread by default). This module
imports neither torch nor onnxruntime at import time, so an edge install without torch can use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from fedids.data.schema import BENIGN_LABEL, FEATURES
from fedids.data.windows import compute_window_indices, gather_windows, host_keys
from fedids.errors import FedidsError, InputError
from fedids.model.checks import META_ONNX_THRESHOLD

DEFAULT_MAX_HOSTS = 16_384
DEFAULT_CHUNK_ROWS = 256
"""Windows per model call: small enough that the intermediate tensors stay in the CPU cache (measured
faster per flow than 4,096), large enough to amortise the per-call overhead."""
_MAX_ROWS_PER_PASS = 8192  # bounds the (rows, window, 78) array built per pass


class Scorer(Protocol):
    """A loaded model: raw flows and windows of row indices in, class probabilities out."""

    labels: list[str]
    window: int
    name: str

    def score(self, flows: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """``flows`` float32 ``(n_flows, 78)`` raw features, ``windows`` int64 ``(batch, window)`` rows of
        ``flows`` (oldest first, the scored flow last, -1 for padding, as
        :func:`~fedids.data.windows.compute_window_indices` makes them). Returns float32
        ``(batch, n_classes)``."""
        ...


def compact_rows(flows: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Only the rows of ``flows`` that ``windows`` uses, and ``windows`` renumbered to them (-1 kept):
    a model computes per-flow work once per row it is given, so it should be given no others."""
    used = windows >= 0
    rows, local = np.unique(windows[used], return_inverse=True)
    out = np.full(windows.shape, -1, dtype=np.int64)
    out[used] = local
    return np.ascontiguousarray(flows[rows], dtype=np.float32), out


class OnnxScorer:
    """An ONNX model from ``fedids export``, run by onnxruntime on the CPU.

    Parameters
    ----------
    data : the ``.onnx`` file's bytes (read once by the caller, so a file replaced while loading cannot
        mix two versions).
    source : the file name, for messages and alerts.
    threads : onnxruntime intra-op threads (1: one core, predictable latency).
    chunk_rows : windows per ``session.run`` call.
    """

    def __init__(
        self, data: bytes, *, source: str, threads: int = 1, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # int8 files store weights as int8 + DequantizeLinear. With QDQ handling off, onnxruntime folds
        # those constants into float32 once at load; otherwise it re-dequantises the recurrent weight at
        # every unrolled step (measured about 2x slower). The file stays int8; only the loaded copy is float.
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        try:
            # onnxruntime prints "EP Error ..." banners to stdout for some corrupt files before raising or
            # retrying: the user gets one error line from us instead.
            with contextlib.redirect_stdout(io.StringIO()):
                self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors derive from Exception directly
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{source}: corrupt or unsupported ONNX model ({reason[:200]})") from None
        self._describe(self._session, str(source))
        self.chunk_rows = max(1, int(chunk_rows))

    def _describe(self, session, source: str) -> None:  # noqa: ANN001 - onnxruntime.InferenceSession
        """Read and check the fedids metadata against the graph (labels vs outputs, window vs inputs)."""
        from fedids.model.checks import check_features, check_labels, check_window

        try:
            meta = session.get_modelmeta().custom_metadata_map  # UnicodeDecodeError on corrupt text
            labels = json.loads(meta["fedids.labels"])
            window = json.loads(meta["fedids.window"])
            features = json.loads(meta.get("fedids.features", "null"))
            threshold = json.loads(meta.get(META_ONNX_THRESHOLD, "null"))
        except (KeyError, ValueError, TypeError, RecursionError):
            raise InputError(
                f"{source}: ONNX model lacks fedids metadata (labels, window); export it with `fedids export`"
            ) from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        names = [i.name for i in inputs]
        if names == ["flows", "present"]:
            raise InputError(
                f"{source}: ONNX model in the window format of fedids 0.1 (inputs flows, "
                "present); export it again with this version's `fedids export`"
            )
        if names != ["flows", "windows"] or len(outputs) != 1 or len(outputs[0].shape) != 2:
            raise InputError(f"{source}: ONNX model has inputs {names}, expected ['flows', 'windows']")
        n_out = outputs[0].shape[1] if isinstance(outputs[0].shape[1], int) else None
        self.labels = check_labels(labels, n_out, source)
        self.window = check_window(window, source)
        check_features(features, source)
        if inputs[1].shape[1] != self.window or inputs[0].shape[1] != len(FEATURES):
            raise InputError(
                f"{source}: ONNX graph inputs {inputs[0].shape}, {inputs[1].shape} do not match "
                f"window {self.window} and {len(FEATURES)} features"
            )
        self.default_threshold = threshold if isinstance(threshold, dict) else None
        self.name = source
        self.quantize = meta.get("fedids.quantize", "none")

    def score(self, flows: np.ndarray, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.int64)
        if len(windows) <= self.chunk_rows and len(flows) <= self.window * len(windows):
            # already compact enough (the streaming detector's batches): no renumbering
            parts = [self._run(np.ascontiguousarray(flows, dtype=np.float32), np.ascontiguousarray(windows))]
        else:
            parts = [
                self._run(*compact_rows(flows, windows[lo : lo + self.chunk_rows]))
                for lo in range(0, len(windows), self.chunk_rows)
            ]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)

    def _run(self, flows: np.ndarray, windows: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"flows": flows, "windows": windows})[0]


class TorchScorer:
    """A PyTorch model directory, scored exactly as :func:`fedids.task.predict_labels` does."""

    def __init__(self, detector, *, source: str) -> None:  # noqa: ANN001 - fedids.model.artifacts.Detector
        self.detector = detector
        self.labels = list(detector.vocabulary.labels)
        self.window = int(detector.window)
        self.name = str(source)
        rule = detector.metadata.get("alert_threshold") if isinstance(detector.metadata, dict) else None
        self.default_threshold = rule if isinstance(rule, dict) else None

    def score(self, flows: np.ndarray, windows: np.ndarray) -> np.ndarray:
        import torch

        flows, windows = compact_rows(flows, np.asarray(windows, dtype=np.int64))
        x = gather_windows(self.detector.scaler.transform(flows), windows)
        model = self.detector.model
        model.eval()
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


def load_scorer(path: str | Path, *, threads: int = 1) -> Scorer:
    """Load a model directory (PyTorch backend) or an ONNX file (onnxruntime backend).

    Raises :class:`~fedids.errors.InputError` for a missing, corrupt or foreign model.
    """
    path = Path(path)
    if path.is_dir():
        from fedids.model.checks import read_model_description

        read_model_description(path)  # a bad description fails before torch is imported
        from fedids.model.artifacts import load_detector

        return TorchScorer(load_detector(path), source=str(path))
    if not path.exists():
        raise InputError(f"{path}: no such model directory or ONNX file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data:
        raise InputError(f"{path}: empty file, not an ONNX model")
    return OnnxScorer(data, source=str(path), threads=threads)


def score_windows(
    scorer: Scorer, features: np.ndarray, windows: np.ndarray, batch_rows: int = 4096
) -> np.ndarray:
    """Class probabilities for windows given as row indices, as ``predict_labels`` takes them.

    Parameters
    ----------
    features : float32 ``(n_flows, 78)`` raw features.
    windows : int64 ``(n_rows, window)`` from :func:`~fedids.data.windows.compute_window_indices`.

    Returns
    -------
    float32 ``(n_rows, n_classes)``.
    """
    parts = [
        scorer.score(features, windows[lo : lo + batch_rows]) for lo in range(0, len(windows), batch_rows)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, len(scorer.labels)), np.float32)


# --------------------------------------------------------------------------------------------------
# Hot reload


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What identifies one version of a model on disk. For a directory, only ``model.pt`` counts:
    :func:`~fedids.model.artifacts.save_detector` renames it into place last, after the matching
    preprocessing, so a new ``model.pt`` implies a complete new directory."""
    target = path / "model.pt" if path.is_dir() else path
    try:
        st = target.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ModelWatcher:
    """Holds the current model and reloads it when its file or directory changes.

    The file is checked at most once per ``interval_s`` (a ``stat``, no read). A change is loaded only
    if the file's identity is the same before and after reading it; writers must replace the model by an
    atomic rename (``fedids export``, ``save_detector`` and the federated client do), and a file still
    being written in place fails this check or fails to parse. If loading fails the previous model stays
    in use, ``warn`` is called once for that version, and the next change is tried again.

    Parameters
    ----------
    path : model directory or ONNX file.
    threads : onnxruntime threads for ONNX models.
    interval_s : minimum seconds between checks.
    clock : monotonic clock in seconds (injectable for tests).
    warn : called with one line when a reload fails or succeeds.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int = 1,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.threads = threads
        self.interval_s = interval_s
        self._clock = clock
        self._warn = warn or (lambda _msg: None)
        self._loaded_sig = _signature(self.path)
        self.scorer: Scorer = load_scorer(self.path, threads=threads)
        self._failed_sig: tuple[int, int, int] | None = None
        self._last_check = clock()
        self.reloads = 0
        self.failures = 0

    def poll(self) -> bool:
        """Reload if the model changed since the last load; returns True when a new model is in use."""
        now = self._clock()
        if now - self._last_check < self.interval_s:
            return False
        self._last_check = now
        sig = _signature(self.path)
        if sig is None or sig == self._loaded_sig or sig == self._failed_sig:
            return False
        try:
            scorer = load_scorer(self.path, threads=self.threads)
        except FedidsError as exc:
            if _signature(self.path) != sig:
                return False  # replaced while we read it: try the newer version at the next check
            self._failed_sig = sig
            self.failures += 1
            self._warn(f"model reload failed, keeping the previous model: {exc}")
            return False
        if _signature(self.path) != sig:
            return False  # replaced while we read it: what we loaded may mix versions
        self.scorer, self._loaded_sig, self._failed_sig = scorer, sig, None
        self.reloads += 1
        self._warn(f"model reloaded from {self.path} ({len(scorer.labels)} classes, window {scorer.window})")
        return True


# --------------------------------------------------------------------------------------------------
# The streaming detector


@dataclass(frozen=True)
class BatchScores:
    """Decisions for one batch of flows, in input order.

    ``labels``: object ``(n,)`` decided label (``BENIGN`` or an attack label); ``is_alert``: bool
    ``(n,)``; ``attack_score``: float32 ``(n,)``, ``1 - P(BENIGN)``; ``label_probability``: float32
    ``(n,)``, the probability of the decided label; ``proba``: float32 ``(n, n_classes)`` over
    ``classes``; ``model``: name of the model that scored the batch; ``reasons``: object ``(n,)`` or
    None, for flows a host-behaviour rule (:mod:`fedids.detect.behaviour`) flagged, the rule's reason;
    ``threshold``: the alert threshold on ``attack_score`` in force (None: top class).
    """

    labels: np.ndarray
    is_alert: np.ndarray
    attack_score: np.ndarray
    label_probability: np.ndarray
    proba: np.ndarray
    classes: list[str]
    model: str
    reasons: np.ndarray | None = None
    threshold: float | None = None


def decide(
    proba: np.ndarray, classes: list[str], threshold: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn class probabilities ``(n, n_classes)`` into ``(labels, attack_score, label_probability)``.

    ``threshold=None``: the most probable class (as ``predict_labels``). Otherwise a flow is an attack
    when ``1 - P(BENIGN) >= threshold`` and is then labelled with its most probable attack class.
    """
    proba = np.asarray(proba, dtype=np.float32)
    names = np.asarray(classes, dtype=object)
    benign = classes.index(BENIGN_LABEL) if BENIGN_LABEL in classes else None
    p_benign = proba[:, benign] if benign is not None else np.zeros(len(proba), np.float32)
    attack_score = (1.0 - p_benign).astype(np.float32)
    if threshold is None or benign is None:
        best = proba.argmax(axis=1)
    else:
        attack_only = proba.copy()
        attack_only[:, benign] = -1.0
        best = np.where(attack_score >= threshold, attack_only.argmax(axis=1), benign)
    return names[best], attack_score, proba[np.arange(len(proba)), best].astype(np.float32)


def _hosts_of(frame: pd.DataFrame) -> np.ndarray:
    """:func:`~fedids.data.windows.host_keys`, with a fast path for a string column without gaps (the
    same keys: ``astype(str)`` of a string is the string itself)."""
    column = frame["src_ip"] if "src_ip" in frame.columns else None
    if column is not None and isinstance(column.dtype, pd.StringDtype) and not column.hasnans:
        return column.to_numpy(dtype=object)
    return host_keys(frame)


class StreamingDetector:
    """Score flows as they arrive, keeping each source host's recent flows.

    Parameters
    ----------
    scorer : the model (:func:`load_scorer`); replace it with :meth:`set_scorer`.
    max_hosts : LRU cap on remembered hosts (see the module docstring).
    threshold : alert rule, see :func:`decide`.
    """

    def __init__(
        self, scorer: Scorer, *, max_hosts: int = DEFAULT_MAX_HOSTS, threshold: float | None = None
    ) -> None:
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be >= 1, got {max_hosts}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.scorer = scorer
        self.max_hosts = max_hosts
        self.threshold = threshold
        # Host histories live in one table, (slots, history, 78) float32, right-aligned (newest flow
        # last); _slots maps host -> row in LRU order (least recently seen first). Hand-written rather
        # than a dict of per-host arrays so that a batch's histories are read and written with one
        # numpy gather/scatter each (measured 14 us per host with per-host arrays).
        self._slots: OrderedDict[Hashable, int] = OrderedDict()
        self._table = np.zeros((0, max(scorer.window - 1, 0), len(FEATURES)), dtype=np.float32)
        self._count = np.zeros(0, dtype=np.int64)
        self._free: list[int] = []
        self.flows_seen = 0
        self.evicted = 0

    @property
    def n_hosts(self) -> int:
        return len(self._slots)

    def set_scorer(self, scorer: Scorer) -> None:
        """Use a new model from the next flow on. Host histories are kept (raw features do not depend on
        the model); a different window length applies from the next flow of each host."""
        self.scorer = scorer

    def process(self, frame: pd.DataFrame) -> BatchScores:
        """Score every flow of ``frame`` (canonical flow frame, rows in arrival order).

        All flows of the frame are scored in one pass (micro-batch); a flow's window includes the
        earlier flows of its host within the same frame. Returns :class:`BatchScores` in row order.
        """
        if len(frame) > _MAX_ROWS_PER_PASS:
            parts = [
                self.process(frame.iloc[lo : lo + _MAX_ROWS_PER_PASS])
                for lo in range(0, len(frame), _MAX_ROWS_PER_PASS)
            ]
            return BatchScores(
                labels=np.concatenate([p.labels for p in parts]),
                is_alert=np.concatenate([p.is_alert for p in parts]),
                attack_score=np.concatenate([p.attack_score for p in parts]),
                label_probability=np.concatenate([p.label_probability for p in parts]),
                proba=np.concatenate([p.proba for p in parts]),
                classes=parts[-1].classes,
                model=parts[-1].model,
                threshold=self.threshold,
            )
        return self.process_arrays(_hosts_of(frame), frame[list(FEATURES)].to_numpy(dtype=np.float32))

    def process_arrays(self, hosts: np.ndarray, features: np.ndarray) -> BatchScores:
        """:meth:`process` without pandas: ``hosts`` ``(n,)`` hashable host keys (as
        :func:`~fedids.data.windows.host_keys` makes them), ``features`` float32 ``(n, 78)`` raw, rows in
        arrival order. Selecting 78 columns of a DataFrame costs 1-3 ms here, which dominates
        the latency of one-flow batches; callers that hold arrays skip it."""
        scorer = self.scorer
        features = np.asarray(features, dtype=np.float32)
        flows, windows = self._windows(np.asarray(hosts), features, scorer.window)
        proba = (
            scorer.score(flows, windows) if len(features) else np.zeros((0, len(scorer.labels)), np.float32)
        )
        labels, attack_score, label_p = decide(proba, scorer.labels, self.threshold)
        self.flows_seen += len(features)
        return BatchScores(
            labels=labels,
            is_alert=labels != BENIGN_LABEL,
            attack_score=attack_score,
            label_probability=label_p,
            proba=proba,
            classes=list(scorer.labels),
            model=scorer.name,
            threshold=self.threshold,
        )

    def _windows(self, hosts: np.ndarray, features: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw flows ``(k, 78)`` (stored history, then the batch) and the batch's windows ``(n, window)``
        as row indices into them (-1 for padding); updates host state.

        The stored histories of the batch's hosts are put in front of the batch (they are older) and
        :func:`compute_window_indices` does the per-host windowing, the same function batch scoring uses.
        """
        n, need = len(features), window - 1
        if need > self._table.shape[1]:
            self._widen(need)
        depth = self._table.shape[1]
        if n == 1 and need > 0:
            return self._one(hosts[0], features, window)
        codes, uniques = pd.factorize(np.asarray(hosts), sort=False)
        slots = np.fromiter((self._slots.get(h, -1) for h in uniques), dtype=np.int64, count=len(uniques))
        known = np.flatnonzero(slots >= 0)
        count = np.minimum(self._count[slots[known]], need)
        take = np.arange(depth)[None, :] >= (depth - count)[:, None]  # (known, depth)
        history = self._table[slots[known]][take]  # oldest first, per host
        combined = np.concatenate([history, features]) if len(history) else features
        all_codes = np.concatenate([np.repeat(known, count), codes]) if len(history) else codes
        idx = compute_window_indices(all_codes, window)[len(combined) - n :]
        if need > 0 and n:
            self._store(uniques, slots, codes, idx, combined, need)
        return combined, idx

    def _one(self, host: Hashable, features: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
        """One flow (the live case): the same window as :func:`compute_window_indices` would give,
        read straight from the table (it costs more than the model call for a single flow)."""
        need, depth = window - 1, self._table.shape[1]
        slot = self._slots.get(host, -1)
        if slot >= 0:
            self._slots.move_to_end(host)
        else:
            slot = self._allocate(host)
        count = int(min(self._count[slot], need))
        flows = np.zeros((1, window, features.shape[1]), dtype=np.float32)
        flows[0, window - 1 - count : window - 1] = self._table[slot, depth - count :]
        flows[0, -1] = features[0]
        self._table[slot, depth - need :] = flows[0, 1:]
        self._count[slot] = min(count + 1, need)
        steps = np.arange(window, dtype=np.int64)
        return flows[0], np.where(steps >= window - 1 - count, steps, -1)[None, :]

    def _store(
        self,
        uniques: np.ndarray,
        slots: np.ndarray,
        codes: np.ndarray,
        idx: np.ndarray,
        combined: np.ndarray,
        need: int,
    ) -> None:
        """Write each batch host's newest ``need`` flows into the table; evict least recently seen hosts."""
        last = np.full(len(uniques), -1, dtype=np.int64)
        np.maximum.at(last, codes, np.arange(len(codes)))
        order = np.argsort(last, kind="stable")  # hosts of the batch, least recent first
        if len(order) > self.max_hosts:  # more hosts in one batch than the cap
            for c in order[: len(order) - self.max_hosts]:
                if slots[c] >= 0:
                    self._free.append(int(self._slots.pop(uniques[c])))
                self.evicted += 1  # its history is forgotten, whether it had a slot or not
            order = order[len(order) - self.max_hosts :]
        for c in order:  # the batch's known hosts become the most recent
            if slots[c] >= 0:
                self._slots.move_to_end(uniques[c])
        for c in order:
            if slots[c] < 0:
                slots[c] = self._allocate(uniques[c])
        keep = idx[last[order], 1:]  # (hosts, need): next history, right-aligned
        rows = combined[np.where(keep >= 0, keep, 0)]
        depth = self._table.shape[1]
        self._table[slots[order], depth - need :] = rows
        self._count[slots[order]] = (keep >= 0).sum(axis=1)

    def _allocate(self, host: Hashable) -> int:
        if self._free:
            slot = self._free.pop()
        elif len(self._count) < self.max_hosts:
            slot = len(self._count)
            grown = min(self.max_hosts, max(1024, 2 * len(self._count)))
            self._table = np.concatenate(
                [self._table, np.zeros((grown - len(self._count), *self._table.shape[1:]), dtype=np.float32)]
            )
            self._count = np.concatenate([self._count, np.zeros(grown - len(self._count), np.int64)])
            self._free.extend(range(grown - 1, slot, -1))
        else:
            _, slot = self._slots.popitem(last=False)
            self.evicted += 1
        self._slots[host] = slot
        self._count[slot] = 0
        return slot

    def _widen(self, depth: int) -> None:
        """A model with a longer window arrived: make room for longer histories (right-aligned)."""
        wider = np.zeros((len(self._table), depth, len(FEATURES)), dtype=np.float32)
        wider[:, depth - self._table.shape[1] :] = self._table
        self._table = wider

    def state_dict(self) -> dict:
        """Host histories (least recently seen first, each ``(k, 78)`` oldest first) and counters;
        restore with :meth:`load_state_dict`."""
        depth = self._table.shape[1]
        hosts = [(h, self._table[s, depth - self._count[s] :].copy()) for h, s in self._slots.items()]
        return {
            "hosts": hosts,
            "flows_seen": self.flows_seen,
            "evicted": self.evicted,
            "n_features": len(FEATURES),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; refuses histories of another feature count."""
        if state.get("n_features") != len(FEATURES):
            raise ValueError(f"state has {state.get('n_features')} features, expected {len(FEATURES)}")
        hosts = [(h, np.asarray(rows, dtype=np.float32)) for h, rows in state["hosts"]]
        for host, rows in hosts:
            if rows.ndim != 2 or rows.shape[1] != len(FEATURES):
                raise ValueError(
                    f"host {host!r}: history of shape {rows.shape}, expected (k, {len(FEATURES)})"
                )
        depth = max([self._table.shape[1], *(len(r) for _, r in hosts)])
        self._slots, self._free = OrderedDict(), []
        self._table = np.zeros((0, depth, len(FEATURES)), dtype=np.float32)
        self._count = np.zeros(0, dtype=np.int64)
        for host, rows in hosts[-self.max_hosts :]:
            slot = self._allocate(host)
            if len(rows):
                self._table[slot, depth - len(rows) :] = rows
            self._count[slot] = len(rows)
        self.flows_seen = int(state["flows_seen"])
        self.evicted = int(state["evicted"])
