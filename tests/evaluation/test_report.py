"""The HTML report: rendered from a results dict measured on real (synthetic) flows, every section and figure
present, every printed number traceable to the JSON and equal to it.

The fast fixture trains real models without Flower (Ray start-up alone takes longer than a test may): a
centralized GRU, local-only baselines, and two small federated-averaging runs written in the federation's
own round-record format, one of them with client-level DP (clipping, Gaussian noise, the project's RDP
accountant). Sizes, latency, update bytes, energy and membership inference come from the same functions
``fedids experiment paper`` calls. The slow test runs the real command end to end.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from dataclasses import asdict, replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from fedids.data.synth import SynthConfig, generate_flows
from fedids.evaluation import report
from fedids.evaluation.mia import client_examples
from fedids.federation.baselines import run_local
from fedids.federation.server_app import RoundRecord
from fedids.federation.simulation import make_partitions
from fedids.model.artifacts import Detector
from fedids.model.train import TrainConfig, fit, get_weights, set_weights
from fedids.pipelines import experiment as ex
from fedids.privacy.dp import PrivacyAccountant, add_gaussian_noise, clip_update
from fedids.task import PreparedData, evaluate_rows, fit_preprocessing, new_model, prepare, train_centralized

torch.set_num_threads(1)
HIDDEN, WINDOW, ROUNDS = 32, 10, 2


def _fedavg(
    data: PreparedData,
    parts: list[np.ndarray],
    rounds: int,
    *,
    dp_sigma: float | None = None,
    clip: float = 1.0,
) -> tuple[Detector, list[dict]]:
    """Plain federated averaging over ``parts`` (each client trains on its own windows, as the ClientApp
    does); with ``dp_sigma`` every update is clipped and the sum carries N(0, (sigma * clip)^2)."""
    rows = np.concatenate(parts)
    scaler, vocab = fit_preprocessing(data.features[rows], data.labels[rows])
    scaled = scaler.transform(data.features)
    model = new_model(len(vocab), HIDDEN, 0)
    accountant = PrivacyAccountant(dp_sigma, 1.0) if dp_sigma else None
    rng = np.random.default_rng(0)
    history = []
    for r in range(1, rounds + 1):
        start = time.perf_counter()
        global_w = get_weights(model)
        flat_global = np.concatenate([w.ravel() for w in global_w])
        deltas, train_s, priv_s = [], [], []
        for part in parts:
            train, _ = client_examples(data, part, WINDOW, 0.2)
            local = new_model(len(vocab), HIDDEN, 0)
            set_weights(local, global_w)
            c0 = time.process_time()
            fit(
                local,
                scaled,
                train.windows,
                vocab.encode(train.labels),
                TrainConfig(epochs=1, batch_size=64, seed=r),
            )
            train_s.append(time.process_time() - c0)
            c0 = time.process_time()
            delta = np.concatenate([w.ravel() for w in get_weights(local)]) - flat_global
            if dp_sigma:
                delta, _ = clip_update(delta.astype(np.float32), clip)
            deltas.append(delta)
            priv_s.append(time.process_time() - c0)
        total = np.sum(deltas, axis=0)
        if dp_sigma:
            total = add_gaussian_noise(total.astype(np.float32), dp_sigma * clip, rng)
            accountant.step()
        flat = flat_global + total / len(parts)
        sizes = np.cumsum([w.size for w in global_w])[:-1]
        set_weights(
            model, [p.reshape(w.shape) for p, w in zip(np.split(flat.astype(np.float32), sizes), global_w)]
        )
        det = Detector(model, scaler, vocab, WINDOW, {})
        test = evaluate_rows(det, data, data.test_rows)
        nbytes = int(flat.size * 4)
        history.append(
            asdict(
                RoundRecord(
                    round=r,
                    clients=len(parts),
                    rejected=0,
                    train_loss=float("nan"),
                    local_val_macro_f1=float("nan"),
                    test={k: test[k] for k in ("accuracy", "macro_f1", "weighted_f1", "mcc")},
                    seconds=time.perf_counter() - start,
                    bytes_down=nbytes * len(parts),
                    bytes_up=nbytes * len(parts),
                    privacy="dp" if dp_sigma else "none",
                    epsilon=accountant.epsilon(1e-5) if accountant else None,
                    client_seconds=float(np.mean(train_s)),
                    client_privacy_seconds=float(np.mean(priv_s)) if dp_sigma else None,
                )
            )
        )
    return Detector(model, scaler, vocab, WINDOW, {}), history


def _adaptive_section(data, parts, cfg, hist_none: list[dict], hist_dp: list[dict]) -> dict:
    """The ``adaptive`` section from this fixture's Flower-free histories: plain FedAvg is ``hist_none``
    at one joule per client-round; the other runs reuse a history with less energy or fewer bytes (the
    report is under test here, not the strategies: tests/federation/test_adaptive.py and test_compression.py run them)."""
    budget, fleet = ex.adaptive_budget_j(data, parts, cfg)

    def costed(history, joules, up=1.0):
        return [
            {
                **h,
                "energy_j": joules * h["clients"],
                "bytes_up": int(h["bytes_up"] * up),
                "participants": {k: {"epochs": 1 + i % 2} for i, k in enumerate(list(fleet)[: h["clients"]])},
            }
            for h in history
        ]

    runs = {
        "fedavg": {"status": "ok", "history": costed(hist_none, 1.0), "stopped": None, "seconds": 1.0},
        "energy": {
            "status": "ok",
            "history": costed(hist_dp, 0.6),
            "seconds": 1.0,
            "stopped": "energy budget exhausted: no client can pay for round 4",
        },
        "int8": {"status": "ok", "history": costed(hist_none, 1.0, 0.25), "stopped": None, "seconds": 1.0},
        "topk": {"status": "failed: RuntimeError: not run in this fixture"},
    }
    return ex.summarise_adaptive(runs, ex.adaptive_settings(budget), cfg, budget_j=budget, fleet=fleet)


def _entry(history: list[dict], privacy: str) -> dict:
    last = history[-1]
    return {
        "status": "ok",
        "kind": "federated",
        "privacy": privacy,
        **{k: last["test"][k] for k in ex.SUMMARY_KEYS},
        "rounds": len(history),
        "seconds": sum(h["seconds"] for h in history),
        "epsilon": report.round_epsilon(last),
        "dp_unit": ex.dp_unit(privacy),
        "history": history,
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("report")
    frame = generate_flows(SynthConfig(devices=8, hours=0.5, seed=5, gateways=2))
    data = prepare(frame, window=WINDOW)
    cfg = ex.ExperimentConfig(
        out_dir=tmp,
        rounds=ROUNDS,
        clients=3,
        hidden=HIDDEN,
        window=WINDOW,
        seed=5,
        command="pytest tests/evaluation/test_report.py",
        shadows=1,
        mia_max_per_class=100,
        latency_calls=30,
        partition="iid",
    )
    withheld, remaining = ex.split_withheld(data, 3, cfg.seed)
    parts = make_partitions(remaining, 3, "iid", cfg.seed)
    out: dict = {
        "meta": ex.make_meta(cfg, data, parts, withheld, {"data": "synthetic", "synth": None}),
        "paper": report.PAPER_REFERENCE,
    }
    base = TrainConfig(epochs=ROUNDS, batch_size=64, seed=cfg.seed)
    mask = np.ones(len(data.labels), bool)
    mask[np.concatenate(parts)] = False
    central, _ = train_centralized(
        PreparedData(data.frame, data.features, data.windows, mask, data.labels),
        base,
        hidden=HIDDEN,
        window=WINDOW,
    )
    c0 = time.process_time()
    local = run_local(data, parts, base, hidden=HIDDEN, window=WINDOW).aggregate()
    local_cpu = time.process_time() - c0
    det_none, hist_none = _fedavg(data, parts, ROUNDS)
    det_dp, hist_dp = _fedavg(data, parts, ROUNDS, dp_sigma=0.8)
    entries = {
        "centralized": {
            "status": "ok",
            "kind": "baseline",
            **{k: v for k, v in evaluate_rows(central, data, data.test_rows).items() if k in ex.SUMMARY_KEYS},
        },
        "local (mean)": {"status": "ok", "kind": "baseline", **local["mean"]},
        "none": _entry(hist_none, "none"),
        "dp": _entry(hist_dp, "dp"),
        "he": {"status": "not run: this fixture trains without Flower"},
    }
    out["modes"] = ex.section(cfg, partition="iid", entries=entries)
    shared_det, shared_hist = _fedavg(data, make_partitions(remaining, 3, "shared:0.5", cfg.seed), ROUNDS)
    per_class = evaluate_rows(shared_det, data, data.test_rows)["per_class"]
    out["shared_0_5_avg_f1"] = ex.section(
        cfg,
        status="ok",
        partition="shared:0.5",
        privacy="none",
        avg_f1=shared_hist[-1]["test"]["macro_f1"],
        accuracy=shared_hist[-1]["test"]["accuracy"],
        mcc=shared_hist[-1]["test"]["mcc"],
        per_class_f1={k: v["f1"] for k, v in per_class.items()},
        history=shared_hist,
    )
    best = det_none if entries["none"]["macro_f1"] >= entries["dp"]["macro_f1"] else det_dp
    out["per_family"] = ex.per_family_section(best, data, "federated (best)", cfg)
    out["model_size_bytes"], out["latency_ms"] = ex.size_and_latency_sections(
        best, data, cfg, tmp / "export", "federated (best)"
    )
    out["update_bytes"] = ex.update_bytes_section(best, entries, cfg)
    out["energy_j"], out["communication_mb"] = ex.energy_sections(
        entries, cfg, local_cpu, [len(p) for p in parts]
    )
    out["energy_j"]["rapl"] = {"status": "unavailable: not metered in this test"}
    out["scalability"] = ex.load_scalability(ex.DEFAULT_SCALABILITY)
    out["adaptive"] = _adaptive_section(data, parts, cfg, hist_none, hist_dp)
    out["mia"] = ex.mia_section(
        data, parts, withheld, {"none": (det_none, entries["none"]), "dp": (det_dp, entries["dp"])}, cfg
    )
    out["rare"] = ex.rare_section(data, cfg)
    audit_file = (
        tmp / "audit.json"
    )  # the shape `fedids audit -f dp --out` writes (its real output: test_audit_federated)
    audit_file.write_text(
        json.dumps(
            {
                "federated": True,
                "command": "fedids audit -f dp",
                "modes": [
                    {
                        "mode": "none",
                        "target_epsilon": None,
                        "accountant_epsilon": None,
                        "auc": 0.93,
                        "one_run": {"epsilon_lower_bound": 2.1, "confidence": 0.95},
                    },
                    {
                        "mode": "dp eps=8",
                        "target_epsilon": 8.0,
                        "accountant_epsilon": 7.9,
                        "auc": 0.51,
                        "one_run": {"epsilon_lower_bound": 0.0, "confidence": 0.95},
                    },
                    {
                        "mode": "dp eps=4",
                        "target_epsilon": 4.0,
                        "accountant_epsilon": 3.9,
                        "auc": 0.5,
                        "one_run": {"epsilon_lower_bound": 0.3, "confidence": 0.95},
                    },
                ],
            }
        )
    )
    table_cfg = replace(cfg, modes=("none", "dp", "he", "he+dpsgd"), audits=(str(audit_file),))
    out["privacy"] = ex.privacy_section(table_cfg, entries)
    return ex.clean_results(out)


@pytest.fixture(scope="module")
def page(results) -> str:
    return report.render_report(results)


class _Collector(HTMLParser):
    """Elements with data-key (path, decimals, text), ids, figures, and text outside tagged elements."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict]] = []
        self.tagged: list[dict] = []
        self.ids: set[str] = set()
        self.figures: dict[str, dict] = {}
        self.free_text: list[str] = []
        self._figure: str | None = None

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "figure":
            self._figure = a["id"]
            self.figures[a["id"]] = {"class": a.get("class", ""), "img": None}
        if tag == "img" and self._figure:
            self.figures[self._figure]["img"] = a.get("src")
        if tag in ("img", "meta", "br"):
            return
        self.stack.append((tag, a))
        if "data-key" in a:
            self.tagged.append(
                {"path": json.loads(a["data-key"]), "decimals": a.get("data-decimals"), "text": ""}
            )

    def handle_endtag(self, tag) -> None:
        if tag == "figure":
            self._figure = None
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break

    def handle_data(self, data) -> None:
        inside = [a for _, a in self.stack if "data-key" in a]
        if inside:
            self.tagged[-1]["text"] += data
        elif not any(t in ("style", "title") for t, _ in self.stack):
            self.free_text.append(data)


def _parse(page: str) -> _Collector:
    c = _Collector()
    c.feed(page)
    return c


def _check_page(results: dict, page: str) -> _Collector:
    c = _parse(page)
    for section in report.SECTION_IDS:
        assert section in c.ids, f"section {section} missing"
    for fig in report.FIGURE_IDS:
        assert fig in c.figures, f"figure {fig} missing"
        f = c.figures[fig]
        if "missing" in f["class"]:
            assert f["img"] is None
        else:
            assert f["img"].startswith("data:image/png;base64,")
            assert base64.b64decode(f["img"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert c.tagged, "no sourced values at all"
    for item in c.tagged:
        value = report.lookup(results, item["path"])
        if item["decimals"] is None:  # text: the JSON string itself
            assert item["text"] == (value if isinstance(value, str) else json.dumps(value)), item
            continue
        decimals = int(item["decimals"])
        assert item["text"] == report.format_value(value, decimals), item
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            # Independent of the formatter: the printed number rounds the JSON number.
            assert float(item["text"].replace(",", "")) == pytest.approx(
                value, abs=0.5 * 10**-decimals + 1e-9
            )
    # No number on the page that does not come from the JSON.
    stray = [m.group() for t in c.free_text for m in re.finditer(r"(?<![\w.+-])\d[\d,]*(?:\.\d+)?", t)]
    assert not stray, f"numbers printed without a JSON source: {stray[:10]}"
    return c


def test_report_sections_figures_and_numbers(results, page) -> None:
    c = _check_page(results, page)
    # The fixture measured these, so their figures must be real images, not "not measured".
    for fig in (
        "fig-per-family",
        "fig-modes",
        "fig-f1-curves",
        "fig-epsilon",
        "fig-confusion",
        "fig-energy",
        "fig-mia",
    ):
        assert c.figures[fig]["img"], fig
    assert (c.figures["fig-scalability"]["img"] is not None) == (results["scalability"]["status"] == "ok")
    # Key figures are on the page with their JSON paths.
    paths = {json.dumps(t["path"]) for t in c.tagged}
    for path in (
        ["modes", "entries", "dp", "mcc"],
        ["shared_0_5_avg_f1", "avg_f1"],
        ["paper", "per_family", "ddos", "f1"],
        ["latency_ms", "variants", "float", "p99"],
        ["model_size_bytes", "variants", "int8"],
        ["update_bytes", "he_ckks"],
        ["mia", "models", "dp", "loss_threshold", "auc"],
        ["energy_j", "modes", "none", "raspberry-pi-4", "mean_per_client_round_j"],
        ["communication_mb", "modes", "dp", "per_client_round_mb"],
        ["modes", "command"],
        ["mia", "seed"],
        ["adaptive", "target_macro_f1"],
        ["adaptive", "energy_budget_j"],
        ["adaptive", "seed"],
        ["adaptive", "runs", "energy", "to_target_j"],
        ["adaptive", "runs", "int8", "to_target_mb"],
        ["adaptive", "runs", "int8", "mb_vs_fedavg"],
        ["adaptive", "runs", "fedavg", "final_macro_f1"],
        ["rare", "summary", "fedids train", "10", "macro_f1"],
        ["rare", "summary", "random forest", "20", "macro_f1"],
        ["privacy", "rows", "dp", "audit", "lower_bound"],
        ["privacy", "rows", "dp", "epsilon"],
        ["privacy", "rows", "none", "audit", "lower_bound"],
    ):
        assert json.dumps(path) in paths, path
    rows = results["privacy"]["rows"]
    # The audit of the run's own mode and epsilon (not eps=4's), the control for the model without DP,
    # nothing for a mode the audit did not cover or that did not run.
    assert rows["dp"]["audit"]["lower_bound"] == 0.0 and rows["dp"]["audit"]["accountant_epsilon"] == 7.9
    assert rows["none"]["audit"]["lower_bound"] == 2.1 and rows["none"]["dp_against"] is None
    assert rows["he+dpsgd"]["audit"] is None and rows["he+dpsgd"]["status"] == "not run"
    assert rows["dp"]["macro_f1"] == results["modes"]["entries"]["dp"]["macro_f1"]
    adaptive = results["adaptive"]["runs"]
    assert adaptive["int8"]["mb_vs_fedavg"] < 1.0 and adaptive["fedavg"]["j_vs_fedavg"] == 1.0
    assert "failed: RuntimeError: not run in this fixture" in page
    # A mode that did not run says why instead of showing numbers.
    assert "not run: this fixture trains without Flower" in page


def test_report_is_self_contained(page) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing loaded from the network


def test_missing_sections_say_so() -> None:
    minimal = {
        "meta": {"command": "x", "seed": 1},
        "paper": report.PAPER_REFERENCE,
        "latency_ms": {"status": "not run: export code unavailable", "command": "x", "seed": 1},
    }
    page = report.render_report(minimal)
    c = _check_page(minimal, page)
    assert all("missing" in f["class"] for f in c.figures.values())
    assert report.NOT_MEASURED in page and "not run: export code unavailable" in page


def test_format_value() -> None:
    assert report.format_value(1234567) == "1,234,567"
    assert report.format_value(0.98765, 3) == "0.988"
    assert report.format_value(12345.678, 1) == "12,345.7"
    assert report.format_value(None) == report.format_value(float("nan")) == "n/a"
    assert report.format_value(True) == "yes"


def test_results_round_trip_json(results, tmp_path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results, allow_nan=False))
    assert json.loads(path.read_text()) == results
    for key in (
        "per_family",
        "modes",
        "shared_0_5_avg_f1",
        "model_size_bytes",
        "latency_ms",
        "update_bytes",
        "energy_j",
        "communication_mb",
        "scalability",
        "mia",
        "adaptive",
    ):
        assert key in results, key


@pytest.mark.slow
def test_experiment_command_end_to_end(tmp_path) -> None:
    """`fedids experiment paper --quick` through the CLI: real Flower runs, results.json and report.html."""
    from typer.testing import CliRunner

    from fedids.cli import app

    out = tmp_path / "exp"
    # Two of the five privacy modes and no adaptive runs, to keep the suite's time: every mode and every
    # adaptive strategy also runs through Flower in test_private_federation, test_adaptive and
    # test_compression, and `make demo` runs this command's adaptive section.
    result = CliRunner().invoke(
        app,
        [
            "experiment",
            "paper",
            "--quick",
            "--rounds",
            "2",
            "--clients",
            "3",
            "--modes",
            "none,he+dpsgd",
            "--no-adaptive",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    page = (out / "report.html").read_text()
    _check_page(results, page)
    entries = results["modes"]["entries"]
    assert entries["none"]["status"] == "ok" and entries["he+dpsgd"]["status"] == "ok"
    assert entries["he+dpsgd"]["dp_unit"] == "flow window" and 7.9 < entries["he+dpsgd"]["epsilon"] <= 8.0
    assert set(results["mia"]["models"]) == {"none", "he+dpsgd"}
    assert "--modes none,he+dpsgd" in results["meta"]["command"]
    assert results["adaptive"]["status"].startswith("not run")
    assert "report:" in result.output


def test_privacy_mode_names() -> None:
    assert ex.split_mode("he+dpsgd") == ("he", True) and ex.split_mode("dpsgd") == ("none", True)
    assert ex.split_mode("he+secagg+dp") == ("he+secagg+dp", False)
    assert (
        ex.dp_unit("he+dp") == "client"
        and ex.dp_unit("he+dpsgd") == "flow window"
        and ex.dp_unit("he") is None
        and ex.dp_against("he+dpsgd") == "the server, other clients, model users"
        and "n - t + 1" in ex.dp_against("secagg+dp")
        and ex.dp_against("he") is None
    )
    assert (
        report.round_epsilon({"epsilon": None, "dpsgd_epsilon": 3.0}) == 3.0
        and report.round_epsilon({}) is None
    )
    assert ex.privacy_unsupported_reason("he+dpsgd") is None
    assert ex.split_mode("secagg+dpsgd-distributed") == ("secagg", True)
    assert ex.is_distributed("secagg+dpsgd-distributed") and not ex.is_distributed("secagg+dpsgd")
    assert ex.dp_unit("secagg+dpsgd-distributed") == "flow window"
    assert "colluding" in ex.dp_against("secagg+dpsgd-distributed")
    assert ex.privacy_unsupported_reason("secagg+dpsgd-distributed") is None
    for mode in ("he+dpsgd-distributed", "he+secagg+dpsgd-distributed", "secagg+dp+dpsgd-distributed"):
        assert "under --privacy secagg" in ex.privacy_unsupported_reason(mode), mode
    dist = ex.federation_config(
        ex.ExperimentConfig(out_dir=Path("u"), distributed_rounds=7), "secagg+dpsgd-distributed", Path("u")
    )
    assert dist.dpsgd_distributed and dist.rounds == 7 and dist.dpsgd_batch_size == 1024
    with pytest.raises(ValueError, match="distributed rounds"):
        ex.ExperimentConfig(out_dir=Path("u"), distributed_rounds=0)
    config = ex.federation_config(ex.ExperimentConfig(out_dir=Path("unused")), "dpsgd", Path("unused"))
    assert config.dpsgd_target_epsilon == 8.0 and config.privacy == "none" and not config.he_public_context
    he = ex.federation_config(ex.ExperimentConfig(out_dir=Path("e")), "he+dp", Path("e") / "keys")
    assert he.privacy == "he+dp" and he.target_epsilon == 8.0 and he.he_public_context.startswith("e/keys/")


def test_experiment_helpers(tmp_path) -> None:
    cmd = ex.make_command(
        {
            "data": [Path("a b.csv")],
            "out": tmp_path / "o",
            "rounds": 3,
            "clients": 4,
            "partition": "iid",
            "local_epochs": 1,
            "split": "time",
            "seed": 7,
            "target_epsilon": 8.0,
            "quick": True,
        }
    )
    assert cmd.startswith("fedids experiment paper --data 'a b.csv' --out ")
    assert "--rounds 3 --clients 4 --partition iid" in cmd and cmd.endswith(
        "--seed 7 --target-epsilon 8.0 --quick"
    )
    assert ex.privacy_unsupported_reason("none") is None
    assert "not supported" in ex.privacy_unsupported_reason("he+quantum")
    missing = ex.load_scalability(tmp_path / "absent.json")
    assert missing["status"].startswith("not run:")
    (tmp_path / "s.json").write_text(json.dumps({"runs": [], "command": "c"}))
    assert ex.load_scalability(tmp_path / "s.json")["status"] == "ok"


def test_audit_reports_are_checked_before_they_are_read(tmp_path) -> None:
    cases = {
        "missing.json": None,
        "text.json": "not json",
        "list.json": "[]",
        "central.json": json.dumps({"modes": [{"mode": "none", "one_run": {"epsilon_lower_bound": 1.0}}]}),
        "nan.json": json.dumps(
            {
                "federated": True,
                "modes": [{"mode": "dp eps=8", "one_run": {"epsilon_lower_bound": float("nan")}}],
            }
        ),
        "eps.json": json.dumps(
            {
                "federated": True,
                "modes": [
                    {"mode": "dp eps=8", "target_epsilon": "8", "one_run": {"epsilon_lower_bound": 0.1}}
                ],
            }
        ),
        "data.json": json.dumps({"federated": True, "data": "a.csv", "modes": []}),
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=name):
            ex.load_audit(tmp_path / name)


def test_split_withheld() -> None:
    data = prepare(generate_flows(SynthConfig(devices=6, hours=0.25, seed=2, gateways=1)), window=WINDOW)
    withheld, remaining = ex.split_withheld(data, 4, seed=3)
    train = set(data.train_rows)
    assert set(withheld) <= train  # only training-period rows
    assert not set(withheld) & set(remaining.train_rows)  # never given to a client
    assert set(remaining.train_rows) | set(withheld) == train
    assert np.array_equal(remaining.test_rows, np.sort(np.r_[data.test_rows, withheld]))
    assert 0.1 < len(withheld) / len(train) < 0.3  # about one share in five


def test_summary_lines(results) -> None:
    lines = ex.summary_lines(results)
    assert 1 <= len(lines) <= 5
    assert lines[0].startswith("macro-F1: ") and "dp" in lines[0]
