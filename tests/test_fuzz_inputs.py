"""Fuzzing in-process, many cases: the loader, the stdin parser, the model schema and the numeric argument
checks against hypothesis-generated inputs (tests/support/fuzz_corpus.py). Every case either ends in an
:class:`~fedids.errors.InputError` (one line for the user) or accounts for every row it was given:
rows in == rows kept + rows counted as dropped. The same corpus runs through real `fedids` processes in
tests/cli/test_fuzz_cli.py."""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedids.cli.train import check_number
from fedids.data.loader import load_flows
from fedids.data.schema import FEATURES
from fedids.detect.behaviour import BehaviourDetector
from fedids.detect.sources import StdinSource
from fedids.detect.stream import BatchScores
from fedids.errors import InputError
from fedids.model.checks import MAX_WINDOW, check_model_description, resolve_threshold
from support.fuzz_corpus import (
    NUMBERS,
    SQLI,
    STDIN_LINES,
    bad_json_lines,
    csv_lines,
    csv_with_every_row_fault,
    first_line_faults,
    json_flow,
    mutated_csv,
    rows_in,
)

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(data: bytes, labels: str = "required"):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.csv"
        path.write_bytes(data)
        return load_flows([path], drop_duplicates=False, labels=labels)


def _accounts(data: bytes, labels: str) -> None:
    try:
        result = _load(data, labels)
    except InputError as exc:
        assert "\n" not in str(exc)
        assert rows_in(data) == 0 or "header" in str(exc) or "CSV" in str(exc), str(exc)
        return
    rep = result.reports[0]
    assert rep.rows_read == rows_in(data)
    assert rep.rows_kept + sum(rep.dropped.values()) == rep.rows_read
    assert len(result.frame) == rep.rows_kept


@FUZZ
@given(mutated_csv(), st.sampled_from(["required", "optional"]))
def test_loader_accounts_for_every_row_of_a_mutated_file(data, labels):
    _accounts(data, labels)


def test_loader_on_the_hand_made_file_with_every_row_fault():
    data = csv_with_every_row_fault()
    result = _load(data)
    rep = result.reports[0]
    assert rep.rows_read == rows_in(data) == 302
    assert rep.rows_kept + sum(rep.dropped.values()) == rep.rows_read
    got = {k: v for k, v in rep.dropped.items() if v}
    assert got == {
        "malformed row": 3,
        "repeated header": 2,
        "oversized line": 1,
        "unknown label": 1,
        "non-finite value": 1,
        "timestamp out of range": 1,
    }, got
    # the quote did not swallow the rest: every other row is there (the NUL bytes sit in a text cell)
    assert rep.rows_kept == 300 - 7


@pytest.mark.parametrize("cut", [1, 7, 100, 1000, 5000, 9000])
def test_loader_on_a_file_cut_anywhere(cut):
    data = SQLI.read_bytes()[:cut]
    _accounts(data, "optional")


def _stdin(data: bytes) -> tuple[int, dict, StdinSource]:
    source = StdinSource(io.BytesIO(data))
    flows = sum(len(f) for f in source.batches())
    return flows, dict(source.stats.bad), source


def _lines_in(data: bytes) -> int:
    from fedids.detect.sources import _decode

    return sum(1 for raw in data.split(b"\n") if _decode(raw.rstrip(b"\r")).strip())


@FUZZ
@given(STDIN_LINES, st.sampled_from(["json", "csv"]))
def test_stdin_accounts_for_every_line(lines, mode):
    head, rows = csv_lines(SQLI)
    start = [json.dumps(json_flow()).encode()] if mode == "json" else [head]
    data = b"\n".join([*start, *lines, *rows[:3]]) + b"\n"
    flows, bad, source = _stdin(data)
    header = 1 if source.parser.mode == "csv" else 0
    assert flows + sum(bad.values()) + header == _lines_in(data)


def test_stdin_survives_every_line_that_once_killed_the_detector():
    good = json.dumps(json_flow()).encode()
    lines = bad_json_lines()
    data = b"\n".join([good, *lines, good]) + b"\n"
    flows, bad, _ = _stdin(data)
    assert flows + sum(bad.values()) == _lines_in(data)
    assert flows == 2  # the two good lines; the NaN duration is a bad value even though rates get repaired
    assert (
        bad["timestamp out of range"] >= 2 and bad["number out of range"] >= 1 and bad["oversized line"] == 2
    )


@pytest.mark.parametrize("name", sorted(first_line_faults()))
def test_stdin_first_line_faults_cost_only_that_line(name):
    data = first_line_faults()[name]
    flows, bad, _ = _stdin(data)
    assert flows == 21, bad  # all 21 SQL injection rows scored after the bad first line
    assert flows + sum(bad.values()) + 1 == _lines_in(data)  # + 1: the header


# ---- model schema and arguments ----------------------------------------------------------------------


def _prep(window=10, labels=("BENIGN", "DDoS"), n_classes=None, hidden=8, n_inputs=len(FEATURES) + 1):
    return {
        "scaler": {"center": [0.0] * 78, "scale": [1.0] * 78},
        "labels": list(labels),
        "window": window,
        "model": {
            "n_inputs": n_inputs,
            "n_classes": len(labels) if n_classes is None else n_classes,
            "hidden": hidden,
        },
    }


@FUZZ
@given(
    window=st.one_of(NUMBERS, st.text(max_size=5), st.none()),
    labels=st.lists(st.sampled_from(["BENIGN", "DDoS", "PortScan", "Ransomware", "", "benign"]), max_size=5),
    n_classes=st.integers(-2, 8),
)
def test_model_schema_accepts_only_consistent_descriptions(window, labels, n_classes):
    prep = _prep(window=window, labels=labels, n_classes=n_classes)
    try:
        got_window, got_labels = check_model_description(prep, "m")
    except InputError as exc:
        assert str(exc).startswith("m: ") and "\n" not in str(exc)
        return
    assert 1 <= got_window <= MAX_WINDOW and got_window == window
    assert got_labels == labels and len(set(labels)) == len(labels) == n_classes


@pytest.mark.parametrize(
    "prep",
    [
        _prep(window=0),
        _prep(window=-3),
        _prep(window=1_000_000),
        _prep(window=True),
        _prep(window=2.5),
        _prep(labels=("BENIGN", "DDoS"), n_classes=3),
        _prep(labels=("BENIGN", "BENIGN")),
        _prep(labels=("BENIGN", "Ransomware")),
        _prep(hidden=0),
        _prep(n_inputs=12),
        {"labels": []},
        [],
        None,
    ],
)
def test_model_schema_refuses_each_known_fault(prep):
    with pytest.raises(InputError):
        check_model_description(prep, "m")


@FUZZ
@given(NUMBERS)
def test_numeric_checks_refuse_nan_and_out_of_range(value):
    try:
        check_number("cmd", "--x", value, 0, 100)
    except InputError as exc:
        assert not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 100)
        assert str(exc).startswith("cmd: --x must be in")
        return
    assert 0 <= value <= 100


@FUZZ
@given(st.one_of(st.none(), NUMBERS), st.one_of(st.none(), NUMBERS))
def test_threshold_options_resolve_or_refuse(threshold, rate):
    rule = {
        "threshold": 0.3,
        "max_false_alarm_rate": 0.001,
        "table": [{"max_false_alarm_rate": r, "threshold": 1 - r} for r in (0.0, 0.001, 0.01)],
    }
    try:
        value, _ = resolve_threshold(rule, threshold, rate, "detect")
    except InputError:
        return
    assert value is not None and 0.0 <= value <= 1.0


# ---- bounded rule state ------------------------------------------------------------------------------


def test_a_flood_with_one_timestamp_keeps_bounded_rule_state():
    """20,000 probes to one service from 20,000 sources with one timestamp: the flood rule fires and holds
    a bounded number of events (the 1,000,000-probe run is in benchmarks/bench_memory.py)."""
    n = 20_000
    frame = pd.DataFrame(np.zeros((n, len(FEATURES)), dtype=np.float32), columns=list(FEATURES))
    frame["Total Fwd Packets"] = 1.0
    frame.insert(0, "src_ip", [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(n)])
    frame.insert(1, "dst_ip", "192.168.0.1")
    frame.insert(2, "dst_port", 80)
    frame.insert(3, "protocol", 6)
    frame.insert(4, "timestamp", pd.Timestamp("2017-07-07 15:56"))
    rules = BehaviourDetector()
    labels = np.array(["BENIGN"] * n, dtype=object)
    scores = BatchScores(
        labels=labels,
        is_alert=np.zeros(n, bool),
        attack_score=np.zeros(n, np.float32),
        label_probability=np.ones(n, np.float32),
        proba=np.ones((n, 1), np.float32),
        classes=["BENIGN"],
        model="m",
    )
    out = rules.apply(frame, scores)
    sizes = rules.state_sizes()
    assert sizes["flood_keys"] == 1 and sizes["flood_events"] <= rules.rules.flood_events_per_key
    assert sizes["scan_events"] <= rules.rules.max_events
    assert (out.labels == "DDoS").sum() == n - rules.rules.flood_min_flows + 1


# ---- captures and model files --------------------------------------------------------------------------


def _capture_offsets(data: bytes) -> list[int]:
    return sorted({0, 1, 4, 8, 23, 24, 25, 39, 40, 41, *range(50, len(data), max(1, len(data) // 30))})


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_captures_cut_at_many_offsets_and_corrupted_yield_flows_or_one_error(kind, tmp_path):
    from fedids.detect.sources import PcapSource
    from support.fuzz_corpus import NMAP, corrupt, pcap_to_pcapng

    data = NMAP.read_bytes() if kind == "pcap" else pcap_to_pcapng(NMAP.read_bytes())
    path = tmp_path / f"fuzz.{kind}"
    whole = None
    blobs = (
        [data[:cut] for cut in _capture_offsets(data)]
        + [corrupt(data, seed, 60) for seed in range(15)]
        + [data]
    )
    for blob in blobs:
        path.write_bytes(blob)
        try:
            source = PcapSource(path)
            flows = sum(len(frame) for frame in source.batches())
        except InputError as exc:
            assert "\n" not in str(exc)
            continue
        whole = flows
    assert whole and whole > 30  # the intact capture, last


def test_corrupt_onnx_files_are_refused_with_one_line(capsys):
    from fedids.detect.stream import OnnxScorer
    from fedids.model.export import build_onnx_model
    from support.fuzz_corpus import corrupt

    data = build_onnx_model(_small_detector()).SerializeToString()
    refused = 0
    for seed in range(60):
        blob = corrupt(data, seed, 1 + seed % 20) if seed % 3 else data[: (seed * 997) % len(data)]
        try:
            scorer = OnnxScorer(blob, source="m.onnx")
        except InputError as exc:
            refused += 1
            assert str(exc).startswith("m.onnx: ") and "\n" not in str(exc)
            continue
        assert scorer.labels == ["BENIGN", "DDoS"] and scorer.window == 3  # only weights were hit
    assert refused > 40 and "EP Error" not in capsys.readouterr().out


def _small_detector():
    import torch

    from fedids.data.preprocess import FlowScaler, LabelVocabulary
    from fedids.model.artifacts import Detector
    from fedids.model.gru import GRUDetector

    torch.manual_seed(0)
    return Detector(
        model=GRUDetector(79, 2, 4),
        scaler=FlowScaler(np.zeros(78), np.ones(78)),
        vocabulary=LabelVocabulary(["BENIGN", "DDoS"]),
        window=3,
        metadata={},
    )


def test_hot_reload_of_an_inconsistent_model_keeps_the_previous_one(tmp_path):
    """Issue 15: a label list shorter than the head was accepted on reload and crashed mid-stream."""
    from fedids.detect.stream import ModelWatcher, StreamingDetector
    from fedids.model.artifacts import save_detector
    from support.fuzz_corpus import PORTSCAN

    save_detector(tmp_path / "m", _small_detector())
    clock = [0.0]
    warnings: list[str] = []
    watcher = ModelWatcher(tmp_path / "m", clock=lambda: clock[0], warn=warnings.append)
    detector = StreamingDetector(watcher.scorer)
    flows = load_flows([PORTSCAN]).frame
    detector.process(flows.iloc[:100])
    for change in (
        {"labels": ["BENIGN"]},
        {"window": 0},
        {"window": 1_000_000},
        {"labels": ["BENIGN", "BENIGN"]},
    ):
        prep = json.loads((tmp_path / "m" / "preprocessing.json").read_text())
        (tmp_path / "m" / "preprocessing.json").write_text(json.dumps(dict(prep, **change)))
        model_pt = tmp_path / "m" / "model.pt"
        model_pt.write_bytes(model_pt.read_bytes())  # a new model.pt: the watcher's signal to reload
        clock[0] += 10
        assert not watcher.poll()
        assert detector.process(flows.iloc[100:200]).proba.shape == (100, 2)  # still the old model
        (tmp_path / "m" / "preprocessing.json").write_text(json.dumps(prep))
    assert watcher.failures == 4 and all("keeping the previous model" in w for w in warnings)
