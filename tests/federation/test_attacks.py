"""The poisoning harness: each attack as a pure function, and one real simulation with a malicious client."""

import json

import numpy as np
import pandas as pd
import pytest

from fedids.data.schema import BENIGN_LABEL, FAMILY, FEATURES, LABEL
from fedids.federation.attacks import (
    TRIGGER,
    Attack,
    draw_malicious,
    flip_labels,
    plant_backdoor,
    poison_frame,
    poison_update,
)


def _frame() -> pd.DataFrame:
    labels = [BENIGN_LABEL, "DDoS", "PortScan", "DDoS", BENIGN_LABEL, "DDoS"]
    families = ["benign", "ddos", "portscan", "ddos", "benign", "ddos"]
    frame = pd.DataFrame(np.ones((len(labels), len(FEATURES)), np.float32), columns=list(FEATURES))
    return frame.assign(**{LABEL: labels, FAMILY: families})


def test_attack_settings_parse_and_refuse_typos():
    assert Attack.parse("scale:10") == Attack("scale", factor=10.0)
    assert Attack.parse("backdoor") == Attack("backdoor", family="ddos")
    assert str(Attack.parse("backdoor:portscan")) == "backdoor:portscan"
    assert not Attack.parse("none").active and Attack.parse("noise").active and Attack.parse("absent").active
    for bad in ("scale", "scale:-1", "scale:x", "flip", "backdoor:benign", "backdoor:xss", "noise:2"):
        with pytest.raises(ValueError):
            Attack.parse(bad)


def test_malicious_clients_are_drawn_from_the_seed():
    assert draw_malicious(10, 0.3, seed=7) == draw_malicious(10, 0.3, seed=7)
    assert len(draw_malicious(10, 0.3, seed=7)) == 3 and len(draw_malicious(3, 0.1, seed=0)) == 1
    assert draw_malicious(10, 0.0, seed=7) == [] and draw_malicious(4, 1.0, seed=1) == [0, 1, 2, 3]
    assert {tuple(draw_malicious(10, 0.2, seed=s)) for s in range(20)} != {tuple(draw_malicious(10, 0.2, 0))}
    with pytest.raises(ValueError):
        draw_malicious(10, 1.5, seed=0)


def test_label_flip_turns_attacks_benign_and_benign_into_the_commonest_attack():
    flipped = flip_labels(_frame())
    assert list(flipped[LABEL]) == ["DDoS", BENIGN_LABEL, BENIGN_LABEL, BENIGN_LABEL, "DDoS", BENIGN_LABEL]
    assert list(flipped[FAMILY]) == ["ddos", "benign", "benign", "benign", "ddos", "benign"]
    assert list(_frame()[LABEL])[1] == "DDoS"  # the input is left alone


def test_backdoor_triggers_the_family_and_labels_it_benign():
    frame = _frame()
    poisoned = plant_backdoor(frame, "ddos")
    ddos = (frame[FAMILY] == "ddos").to_numpy()
    for feature, value in TRIGGER.items():
        assert (poisoned.loc[ddos, feature] == value).all() and (poisoned.loc[~ddos, feature] == 1).all()
    assert (poisoned.loc[ddos, LABEL] == BENIGN_LABEL).all() and (
        poisoned.loc[ddos, FAMILY] == "benign"
    ).all()
    assert poisoned.loc[~ddos, LABEL].tolist() == frame.loc[~ddos, LABEL].tolist()
    others = [c for c in FEATURES if c not in TRIGGER]
    assert poisoned[others].equals(frame[others])
    assert poison_frame(frame, Attack("scale", factor=3)) is frame


def test_scale_multiplies_the_update_and_noise_keeps_its_norm():
    rng = np.random.default_rng(0)
    global_w = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    local = [w + rng.standard_normal(w.shape).astype(np.float32) * 0.1 for w in global_w]
    scaled = poison_update(global_w, local, Attack("scale", factor=10.0), seed=0)
    for g, w, s in zip(global_w, local, scaled):
        assert s.dtype == np.float32 and np.allclose(s - g, 10 * (w - g), atol=1e-5)

    def norm(ws):
        return np.sqrt(sum(float(np.sum((w.astype(np.float64) - g) ** 2)) for w, g in zip(ws, global_w)))

    noised = poison_update(global_w, local, Attack("noise"), seed=3)
    assert norm(noised) == pytest.approx(norm(local), rel=1e-5)
    update, honest = (
        np.concatenate([(w - g).ravel() for w, g in zip(noised, global_w)]),
        np.concatenate([(w - g).ravel() for w, g in zip(local, global_w)]),
    )
    assert abs(np.dot(update, honest)) / (np.linalg.norm(update) * np.linalg.norm(honest)) < 0.9
    assert all(
        np.array_equal(a, b) for a, b in zip(noised, poison_update(global_w, local, Attack("noise"), 3))
    )
    assert poison_update(global_w, local, Attack("backdoor"), seed=0) is local


def test_backdoor_success_counts_triggered_family_flows_scored_benign(cicids_sample):
    from fedids.evaluation.backdoor import backdoor_success_rate
    from fedids.model.artifacts import Detector
    from fedids.task import fit_preprocessing, new_model, predict_labels

    data = cicids_sample
    scaler, vocabulary = fit_preprocessing(data.features[data.train_rows], data.labels[data.train_rows])
    detector = Detector(new_model(len(vocabulary), 8), scaler, vocabulary, 5, {})
    rows = data.test_rows
    rate, flows = backdoor_success_rate(detector, data, rows, TRIGGER, "ddos")
    ddos = rows[data.frame[FAMILY].to_numpy()[rows] == "ddos"]
    assert flows == len(ddos) > 0 and 0.0 <= rate <= 1.0
    # Without a trigger (an empty one) it is the clean miss rate of the family.
    clean, _ = backdoor_success_rate(detector, data, rows, {}, "ddos")
    predicted, _ = predict_labels(detector, data.features, data.windows[ddos])
    assert clean == pytest.approx(float(np.mean(predicted == BENIGN_LABEL)))
    assert backdoor_success_rate(detector, data, rows[:0], TRIGGER, "ddos") == (
        pytest.approx(np.nan, nan_ok=True),
        0,
    )


@pytest.mark.slow
def test_one_scaling_client_moves_the_global_model_far_more(cicids_sample, tmp_path):
    """3 clients, 1 round, one of them malicious with scale:20: the first global step is several times
    longer than the clean run's, and results.json names the malicious client. With ``absent`` the same
    client answers nothing and the round goes on with the other two."""
    from fedids.federation.config import FederationConfig
    from fedids.federation.simulation import make_partitions, summarise_partitions
    from fedids.federation.state import load_checkpoint
    from fedids.model.train import get_weights
    from fedids.pipelines.federate import FederateData, FederateRequest, run_federate
    from fedids.task import new_model

    config = FederationConfig(
        rounds=1, min_clients=1, hidden=16, window=5, batch_size=64, lr=1e-2, seed=7, calibration="none"
    )
    parts = make_partitions(cicids_sample, 3, "iid", seed=0, segment=50)
    data = FederateData(cicids_sample, parts, [], summarise_partitions(cicids_sample.labels, parts))
    steps, entries = {}, {}
    runs = (("clean", 0.0, "none"), ("scaled", 0.34, "scale:20"), ("absent", 0.34, "absent"))
    for name, malicious, attack in runs:
        request = FederateRequest(config, tmp_path / name, malicious=malicious, attack=attack)
        result = run_federate(request, data)
        entries[name] = json.loads(result.results_path.read_text())["federated"]
        current = load_checkpoint(tmp_path / name, 1)["current"].plain
        initial = get_weights(new_model(current[-1].shape[0], 16, config.seed))
        steps[name] = np.sqrt(sum(float(np.sum((c - i) ** 2)) for c, i in zip(current, initial)))
    assert steps["scaled"] > 3 * steps["clean"], steps
    assert entries["clean"]["poisoning"]["malicious_clients"] == []
    poisoning = entries["scaled"]["poisoning"]
    assert poisoning["attack"] == "scale:20" and len(poisoning["malicious_clients"]) == 1
    assert poisoning["malicious_clients"][0] in range(3)
    assert poisoning["backdoor_flows"] > 0 and 0 <= poisoning["backdoor_success"] <= 1
    # beside it, the same family's flows without the trigger, scored by the run's own final model
    from fedids.evaluation.backdoor import backdoor_success_rate
    from fedids.model.artifacts import load_detector

    detector = load_detector(tmp_path / "scaled" / "global")
    untriggered, _ = backdoor_success_rate(detector, cicids_sample, cicids_sample.test_rows, {}, "ddos")
    assert poisoning["untriggered_benign"] == pytest.approx(untriggered)
    # an absent device answers nothing: every round goes on with the other two, as with a dropout
    assert [h["clients"] for h in json.loads(result.results_path.read_text())["federated_history"]] == [2]
    assert entries["absent"]["poisoning"]["malicious_clients"] == poisoning["malicious_clients"]


def test_federate_refuses_a_bad_attack_with_one_error_line(tmp_path):
    import subprocess
    import sys

    for args, needle in (
        (["--malicious", "0.2", "--attack", "scale:x"], "scale:FACTOR"),
        (["--malicious", "0.2"], "--attack"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "fedids.cli", "federate", *args, "--out", str(tmp_path / "r")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and needle in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
