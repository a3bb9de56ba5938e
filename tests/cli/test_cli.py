"""The command line as a user runs it: real processes, real files, exit codes and output."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import paths

ROOT = paths.REPO
DATA = paths.CICIDS
FEDIDS = [sys.executable, "-m", "fedids.cli"]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*FEDIDS, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in " ".join(lines), proc.stderr


@pytest.mark.parametrize(
    "content,needle",
    [
        (None, "no such file"),
        ("", "empty"),
        ("Flow ID,Source IP\n", "not a CICIDS2017 flow CSV"),
        ("\x00\x01\x02binary\xff" * 20, ""),
    ],
)
def test_bad_input_is_one_error_line_and_exit_code_2(tmp_path, content, needle):
    path = tmp_path / "flows.csv"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    proc = run("data", "inspect", str(path))
    _assert_one_line_error(proc, str(path.name), needle)


def test_header_only_file(tmp_path):
    header = (
        (DATA / "trafficlabelling-mondirkb" / "baseline_sqli.csv")
        .read_text(encoding="latin-1")
        .splitlines()[0]
    )
    path = tmp_path / "header.csv"
    path.write_text(header + "\n")
    _assert_one_line_error(run("data", "inspect", str(path)), "header.csv")


def test_train_then_evaluate_json_on_real_data(tmp_path):
    files = [
        DATA / "trafficlabelling-mondirkb" / "baseline_portscan.csv",
        DATA / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
    ]
    args = [a for f in files for a in ("--data", str(f))]
    proc = run(
        "train",
        *args,
        "--out",
        str(tmp_path / "model"),
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--split",
        "label-time",
    )  # the default read-out: --prototypes on
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {
        "model.pt",
        "preprocessing.json",
        "metadata.json",
    }
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert meta["split"] == "label-time" and meta["test_rows"] > 0
    # the prototype head's class means travel in preprocessing.json (and evaluate reads them below)
    prep = json.loads((tmp_path / "model" / "preprocessing.json").read_text())
    assert meta["prototypes"] == "on" and len(prep["prototypes"]) == 2
    assert all(row is not None and len(row) == 16 for row in prep["prototypes"])
    proc = run("evaluate", "--model", str(tmp_path / "model"), *args, "--json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert list(metrics) == [
        "accuracy",
        "macro_f1",
        "weighted_f1",
        "mcc",
        "false_alarms",
        "per_class",
        "per_family",
        "confusion",
        "at_threshold",
    ]
    # the default alert rule was chosen on the validation slice and is applied by evaluate
    rule = meta["alert_threshold"]
    assert metrics["at_threshold"]["threshold"] == rule["threshold"]
    assert rule["validation_false_alerts"] <= rule["max_false_alarm_rate"] * rule["validation_benign"]
    assert set(metrics["at_threshold"]["false_alarms"]) >= {"per_1000", "attack_recall"}
    assert metrics["per_class"]["PortScan"]["support"] == 1000
    assert 0.5 < metrics["macro_f1"] <= 1.0


def test_train_refuses_an_unknown_prototype_mode(tmp_path):
    data = DATA / "trafficlabelling-mondirkb" / "baseline_sqli.csv"
    proc = run("train", "--data", str(data), "--out", str(tmp_path / "m"), "--prototypes", "maybe")
    _assert_one_line_error(proc, "--prototypes must be on or off")
    assert not (tmp_path / "m").exists()


def test_evaluate_with_a_corrupt_model_fails_cleanly(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "preprocessing.json").write_text("{not json")
    proc = run(
        "evaluate",
        "--model",
        str(tmp_path / "m"),
        "--data",
        str(DATA / "trafficlabelling-mondirkb" / "baseline_sqli.csv"),
    )
    _assert_one_line_error(proc, "corrupt model")


def test_synth_writes_a_file_the_loader_reads(tmp_path):
    out = tmp_path / "s.csv"
    proc = run("data", "synth", "--devices", "8", "--hours", "0.25", "--seed", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    proc = run("data", "inspect", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)[0]
    assert report["format"] == "trafficlabelling" and report["rows_kept"] > 100
    assert report["family_counts"]["benign"] > 0


@pytest.mark.slow
def test_federate_command_on_real_data_with_baselines(tmp_path):
    """`fedids federate` as a user runs it: a real Flower simulation of 3 clients on real CICIDS2017 rows
    (shared:0.5), the local baseline beside it, the partition table on screen and on disk."""
    files = [
        DATA / "trafficlabelling-mondirkb" / "baseline_portscan.csv",
        DATA / "trafficlabelling-mondirkb" / "baseline_xss.csv",
        DATA / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
    ]
    args = [a for f in files for a in ("--data", str(f))]
    out = tmp_path / "run"
    proc = run(
        "federate",
        *args,
        "--clients",
        "3",
        "--partition",
        "shared:0.5",
        "--rounds",
        "1",
        "--hidden",
        "16",
        "--split",
        "label-time",
        "--mode",
        "federated,local",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "partitions (rows per label and client)" in proc.stderr and "DEPRECATED" not in proc.stderr
    table = (out / "partitions.csv").read_text().splitlines()
    assert table[0].startswith("client,rows,classes,") and len(table) == 4  # header + 3 clients
    results = json.loads((out / "results.json").read_text())
    fed, local = results["federated"], results["local"]
    assert fed["rounds"] == 1 and fed["partition"] == "shared:0.5" and results["test_rows"] > 0
    assert 0.0 <= local["worst"]["macro_f1"] <= local["mean"]["macro_f1"] <= 1.0
    assert fed["macro_f1"] > local["worst"]["macro_f1"]  # one round of federation beats a lone client
    assert (out / "global" / "model.pt").exists()
    assert "held-out test split" in proc.stdout


def test_a_site_too_small_for_its_median_is_warned_about(tmp_path):
    """`--robust` at sites of 2 devices runs (docs/evaluation.md measures it) but says it is weak there."""
    files = [
        DATA / "trafficlabelling-mondirkb" / "baseline_portscan.csv",
        DATA / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
    ]
    common = [a for f in files for a in ("--data", str(f))]
    common += ["--clients", "4", "--partition", "iid", "--rounds", "2", "--hidden", "8", "--window", "4"]
    robust = ("--sites", "2", "--robust", "median", "--screening", "2")
    proc = run("federate", *common, *robust, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert "cannot outvote one attacker" in " ".join(proc.stderr.split())
    # round 2 is screened; sites of two devices leave nobody out (nothing says which one is right)
    assert "in 1 training round(s); devices left out (rounds): none" in " ".join(proc.stderr.split())
    sites = json.loads((tmp_path / "r" / "results.json").read_text())["federated"]["sites"]
    assert sites["screening"] == {"rounds": 1, "left_out": {}}
    assert (tmp_path / "r" / "global" / "model.pt").exists()
    # the final model's prototype head is on by default, and the summary gives both read-outs
    assert "prototype head (discriminant of the summed moments)" in " ".join(proc.stderr.split())


def test_federate_rejects_a_bad_partition_before_training(tmp_path):
    proc = run(
        "federate",
        "--partition",
        "shared:1.5",
        "--clients",
        "3",
        "--rounds",
        "1",
        "--out",
        str(tmp_path / "r"),
    )
    _assert_one_line_error(proc, "shared")


@pytest.mark.slow
def test_federate_scores_the_users_own_test_files_and_names_untrained_classes(tmp_path):
    """`--test-data`: every round and the final model are scored on the given file (all its rows), and a
    class that only the test file holds is named in a warning (the model cannot learn it)."""
    train = [
        DATA / "trafficlabelling-mondirkb" / "baseline_portscan.csv",
        DATA / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
    ]
    test = [
        DATA / "trafficlabelling-mondirkb" / "baseline_sqli.csv",
        DATA / "trafficlabelling-mondirkb" / "baseline_ddos.csv",
    ]
    out = tmp_path / "run"
    proc = run(
        "federate",
        *[a for f in train for a in ("--data", str(f))],
        *[a for f in test for a in ("--test-data", str(f))],
        "--clients",
        "2",
        "--partition",
        "iid",
        "--rounds",
        "1",
        "--hidden",
        "8",
        "--window",
        "4",
        "--privacy",
        "secagg",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "Web Attack - Sql Injection" in proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert "DDoS" in proc.stderr.split("warning:")[1]
    assert results["test_rows"] == 1021  # every row of the test files, nothing of --data
    assert results["federated"]["privacy"] == "secagg" and 0.0 <= results["federated"]["macro_f1"] <= 1.0


def test_a_robust_strategy_with_a_private_mode_is_one_error_line(tmp_path):
    proc = run(
        "federate", "--strategy", "krum", "--privacy", "secagg", "--rounds", "1", "--out", str(tmp_path / "r")
    )
    _assert_one_line_error(proc, "krum", "plaintext")


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--sites", "-1"), "sites must be >= 0"),
        (("--sites", "11"), "--sites 11"),
        (("--robust", "median"), "site tier"),
        (("--sites", "2", "--robust", "trimmed:0.7"), "fraction F"),
        (("--sites", "2", "--robust", "krum"), "unknown robust"),
        (("--sites", "2", "--strategy", "krum"), "krum"),
        (("--sites", "2", "--robust", "median", "--screening", "-1"), "screening must be"),
        (("--sites", "2", "--robust", "median", "--screening-check", "votes"), "screening-check must be"),
    ],
)
def test_bad_sites_or_robust_is_one_error_line(tmp_path, args, needle):
    proc = run("federate", *args, "--rounds", "1", "--out", str(tmp_path / "r"))
    _assert_one_line_error(proc, needle)
