"""Report sections about what was measured on the test split: the run, per attack, modes, the shared
partition, sizes and latency, learning curves."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from fedids.evaluation.report.page import (
    MODE_KEYS,
    NOT_MEASURED,
    Page,
    figure,
    has,
    is_ok,
    lookup,
    mode_entries,
    round_epsilon,
)


def summary(p: Page) -> None:
    r = p.r
    p.add('<section id="summary"><h2>Run</h2><table class="kv">')
    rows = [
        ("data", ["meta", "data"], None),
        ("flows", ["meta", "rows"], 0),
        ("test flows", ["meta", "test_rows"], 0),
        ("clients", ["meta", "clients"], 0),
        ("rounds", ["meta", "rounds"], 0),
        ("partition", ["meta", "partition"], None),
        ("local epochs", ["meta", "local_epochs"], 0),
        ("seed", ["meta", "seed"], 0),
        ("quick", ["meta", "quick"], None),
        ("created", ["meta", "created"], None),
        ("fedids", ["meta", "fedids"], None),
        ("wall time (s)", ["meta", "elapsed_s"], 1),
        ("command", ["meta", "command"], None),
    ]
    for label, path, dec in rows:
        if not has(r, path):
            continue
        value = lookup(r, path)
        cell = (
            p.num(path, dec or 0, "td")
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else p.text(path, "td")
        )
        p.add(f"<tr><th>{label}</th>{cell}</tr>")
    p.add("</table>")
    if has(r, ["paper", "source"]):
        p.add(f'<p class="small">Published figures beside ours come from {p.text(["paper", "source"])}.</p>')
    p.add("</section>")


def per_attack(p: Page) -> None:
    r = p.r
    p.add('<section id="per-attack"><h2>Per-attack detection (one-vs-rest per family)</h2>')
    sec = r.get("per_family", {})
    p.section_head("per_family")
    families = sec.get("families", {}) if is_ok(sec) else {}
    paper = r.get("paper", {}).get("per_family", {})
    if families:
        p.add(f"<p>Model: {p.text(['per_family', 'model'])}; held-out test split of the run.</p>")
        p.add(
            '<table><tr><th rowspan="2">family</th><th colspan="5">this run</th>'
            '<th colspan="4">paper (published)</th></tr><tr><th>accuracy</th><th>precision</th>'
            "<th>recall</th><th>F1</th><th>support</th><th>accuracy</th><th>precision</th><th>recall</th>"
            "<th>F1</th></tr>"
        )
        for fam in families:
            cells = "".join(
                p.num(["per_family", "families", fam, k], 3, "td")
                for k in ("accuracy", "precision", "recall", "f1")
            )
            cells += p.num(["per_family", "families", fam, "support"], 0, "td")
            if fam in paper:
                cells += "".join(
                    p.num(["paper", "per_family", fam, k], 3, "td")
                    for k in ("accuracy", "precision", "recall", "f1")
                )
                name = f"{html.escape(fam)} ({p.text(['paper', 'per_family', fam, 'name'])})"
            else:
                cells += '<td class="na" colspan="4">no published row</td>'
                name = html.escape(fam)
            p.add(f"<tr><th>{name}</th>{cells}</tr>")
        p.add("</table>")
    fig = None
    if families:
        fams = list(families)
        fig, ax = plt.subplots(figsize=(7, 3))
        xs = range(len(fams))
        ax.bar([x - 0.2 for x in xs], [families[f]["f1"] for f in fams], 0.4, label="this run")
        ax.bar(
            [x + 0.2 for x in xs], [paper[f]["f1"] if f in paper else 0.0 for f in fams], 0.4, label="paper"
        )
        ax.set_xticks(list(xs), fams, rotation=30, ha="right")
        ax.set_ylabel("F1 (one-vs-rest)")
        ax.set_ylim(0, 1.05)
        ax.legend()
    p.add(figure("fig-per-family", fig, "F1 per attack family, this run vs the paper"))
    p.add("</section>")


def modes(p: Page) -> None:
    r = p.r
    p.add('<section id="modes"><h2>Baselines and privacy modes</h2>')
    p.section_head("modes")
    entries = mode_entries(r)
    if entries:
        p.add(
            "<table><tr><th>mode</th><th>accuracy</th><th>macro-F1</th><th>weighted-F1</th><th>MCC</th>"
            "<th>false alerts per thousand benign flows</th><th>attack recall</th>"
            "<th>alert threshold (validation)</th><th>false alerts per thousand benign at it</th>"
            "<th>attack recall at it</th>"
            "<th>final epsilon</th><th>epsilon protects one (holds against)</th><th>wall time (s)</th></tr>"
        )
        for mode, entry in entries.items():
            name = html.escape(mode)
            if not is_ok(entry):
                p.add(
                    f'<tr><th>{name}</th><td colspan="12" class="missing">'
                    f"{p.text(['modes', 'entries', mode, 'status'])}</td></tr>"
                )
                continue
            cells = "".join(p.num(["modes", "entries", mode, k], 3, "td") for k in MODE_KEYS)
            cells += p.maybe(["modes", "entries", mode, "false_alarms_per_1000"], 2, "td")
            cells += p.maybe(["modes", "entries", mode, "attack_recall"], 3, "td")
            for key, decimals in (
                ("threshold", 4),
                ("threshold_false_alarms_per_1000", 2),
                ("threshold_attack_recall", 3),
            ):
                cells += p.maybe(["modes", "entries", mode, key], decimals, "td")
            cells += p.maybe(["modes", "entries", mode, "epsilon"], 2, "td")
            unit, against = entry.get("dp_unit"), entry.get("dp_against")
            cells += f"<td>{html.escape(str(unit or ''))}{html.escape(f' (against {against})' if against else '')}</td>"
            cells += p.maybe(["modes", "entries", mode, "seconds"], 1, "td")
            p.add(f"<tr><th>{name}</th>{cells}</tr>")
        p.add("</table>")
        if has(r, ["paper", "mcc"]):
            p.add(
                f"<p>Paper: MCC {p.num(['paper', 'mcc'], 2)}, accuracy {p.num(['paper', 'accuracy'], 3)} "
                "(proposed framework).</p>"
            )
    ok = {m: e for m, e in entries.items() if is_ok(e)}
    fig = None
    if ok:
        fig, ax = plt.subplots(figsize=(8, 3))
        names = list(ok)
        width = 0.27
        for i, (key, label) in enumerate(
            (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("mcc", "MCC"))
        ):
            ax.bar(
                [x + (i - 1) * width for x in range(len(names))],
                [ok[n][key] for n in names],
                width,
                label=label,
            )
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_ylim(min(0.0, min(ok[n]["mcc"] for n in names)), 1.05)
        ax.legend(ncol=3, fontsize=8)
    p.add(figure("fig-modes", fig, "accuracy, macro-F1 and MCC per mode on the held-out test split"))
    p.add("</section>")


def shared(p: Page) -> None:
    r = p.r
    p.add('<section id="shared"><h2>Average F1 with half of the attack classes shared</h2>')
    sec = r.get("shared_0_5_avg_f1", {})
    p.section_head("shared_0_5_avg_f1")
    if is_ok(sec) and "avg_f1" in sec:
        p.add(
            f"<p>Partition {p.text(['shared_0_5_avg_f1', 'partition'], 'code')}, privacy "
            f"{p.text(['shared_0_5_avg_f1', 'privacy'], 'code')}: average (macro) F1 "
            f"<b>{p.num(['shared_0_5_avg_f1', 'avg_f1'], 3)}</b>, accuracy "
            f"{p.num(['shared_0_5_avg_f1', 'accuracy'], 3)}, MCC {p.num(['shared_0_5_avg_f1', 'mcc'], 3)}; "
            f"paper {p.maybe(['paper', 'shared_0_5_avg_f1'], 3)}.</p>"
        )
        per_class = sec.get("per_class_f1", {})
        if per_class:
            p.add("<table><tr><th>class</th><th>F1</th></tr>")
            for label in per_class:
                p.add(
                    f"<tr><th>{html.escape(label)}</th>{p.num(['shared_0_5_avg_f1', 'per_class_f1', label], 3, 'td')}</tr>"
                )
            p.add("</table>")
    p.add("</section>")


def sizes(p: Page) -> None:
    r = p.r
    p.add('<section id="sizes"><h2>Model size, inference latency, update size</h2>')
    size = r.get("model_size_bytes", {})
    p.section_head("model_size_bytes")
    if is_ok(size) and size.get("variants"):
        p.add("<table><tr><th>variant</th><th>bytes</th><th>macro-F1 (test)</th></tr>")
        for v in size["variants"]:
            p.add(
                f"<tr><th>{html.escape(v)}</th>{p.num(['model_size_bytes', 'variants', v], 0, 'td')}"
                f"{p.maybe(['model_size_bytes', 'macro_f1', v], 3, 'td')}</tr>"
            )
        p.add("</table>")
        if "prune_amount" in size:
            p.add(
                f"<p>Pruning: {p.num(['model_size_bytes', 'prune_amount'], 2)} of the weights requested, "
                f"measured sparsity {p.num(['model_size_bytes', 'sparsity'], 3)}. Paper (compressed): "
                f"{p.maybe(['paper', 'model_size_bytes'], 0)} bytes.</p>"
            )
    lat = r.get("latency_ms", {})
    p.add("<h3>Inference latency (one window per call)</h3>")
    p.section_head("latency_ms")
    if is_ok(lat) and lat.get("variants"):
        p.add(
            f"<p>Backend {p.text(['latency_ms', 'backend'])}, threads {p.num(['latency_ms', 'threads'], 0)}, "
            f"calls per variant {p.num(['latency_ms', 'calls'], 0)}; milliseconds on this machine.</p>"
        )
        p.add("<table><tr><th>variant</th><th>p50 (ms)</th><th>p99 (ms)</th><th>mean (ms)</th></tr>")
        for v in lat["variants"]:
            p.add(
                f"<tr><th>{html.escape(v)}</th>"
                + "".join(p.num(["latency_ms", "variants", v, k], 3, "td") for k in ("p50", "p99", "mean"))
                + "</tr>"
            )
        p.add("</table>")
        est = lat.get("device_estimate", {})
        if est:
            p.add(
                "<p>Estimated on devices (p50 and p99 here times the device's core speed factor; "
                "an estimate, not a measurement):</p><table><tr><th>device</th><th>p50 (ms)</th>"
                "<th>p99 (ms)</th></tr>"
            )
            for d in est:
                p.add(
                    f"<tr><th>{html.escape(d)}</th>{p.num(['latency_ms', 'device_estimate', d, 'p50'], 2, 'td')}"
                    f"{p.num(['latency_ms', 'device_estimate', d, 'p99'], 2, 'td')}</tr>"
                )
            p.add("</table>")
        p.add(f"<p>Paper: {p.maybe(['paper', 'latency_ms'], 1)} ms per device.</p>")
    upd = r.get("update_bytes", {})
    p.add("<h3>Update size per client and round</h3>")
    p.section_head("update_bytes")
    if is_ok(upd):
        p.add("<table><tr><th>what</th><th>bytes</th></tr>")
        p.add(f"<tr><th>model parameters (count)</th>{p.num(['update_bytes', 'parameters'], 0, 'td')}</tr>")
        p.add(f"<tr><th>plaintext float32 update</th>{p.num(['update_bytes', 'plaintext'], 0, 'td')}</tr>")
        if upd.get("he_ckks") is not None:
            p.add(
                f"<tr><th>CKKS-encrypted update (fedids.privacy.he)</th>{p.num(['update_bytes', 'he_ckks'], 0, 'td')}</tr>"
            )
        for mode in upd.get("per_mode", {}):
            p.add(
                f"<tr><th>measured upload per client, mode {html.escape(mode)}</th>"
                f"{p.num(['update_bytes', 'per_mode', mode], 0, 'td')}</tr>"
            )
        p.add("</table>")
        if upd.get("he_ckks") is not None:
            p.add(
                f"<p>Encryption took {p.num(['update_bytes', 'he_encrypt_s'], 3)} s on this machine; "
                f"ciphertext is {p.num(['update_bytes', 'he_ratio'], 2)} times the plaintext. Paper: "
                f"{p.maybe(['paper', 'update_bytes'], 0)} bytes.</p>"
            )
    p.add("</section>")


def curves(p: Page) -> None:
    r = p.r
    p.add('<section id="curves"><h2>Training curves and confusion matrix</h2>')
    entries = {m: e for m, e in mode_entries(r).items() if is_ok(e) and e.get("history")}
    shared = r.get("shared_0_5_avg_f1", {})
    fig = None
    if entries:
        fig, ax = plt.subplots(figsize=(7, 3))
        for mode, e in entries.items():
            ax.plot(
                [h["round"] for h in e["history"]],
                [h["test"]["macro_f1"] for h in e["history"]],
                marker="o",
                label=mode,
            )
        if is_ok(shared) and shared.get("history"):
            ax.plot(
                [h["round"] for h in shared["history"]],
                [h["test"]["macro_f1"] for h in shared["history"]],
                linestyle="--",
                marker="x",
                label=f"{shared.get('partition', 'shared')}",
            )
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("test macro-F1")
        ax.legend(fontsize=8)
    p.add(figure("fig-f1-curves", fig, "macro-F1 of the global model per round, per mode"))
    eps: dict[str, list[tuple[int, float]]] = {}
    for m, e in entries.items():
        spent = [(h["round"], round_epsilon(h)) for h in e["history"]]
        if points := [(x, y) for x, y in spent if y is not None]:
            eps[m] = points
    fig = None
    if eps:
        fig, ax = plt.subplots(figsize=(7, 3))
        for mode, pts in eps.items():
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=mode)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("epsilon spent")
        ax.legend(fontsize=8)
    p.add(
        figure(
            "fig-epsilon",
            fig,
            "privacy budget spent per round (dp: client-level epsilon; dpsgd: epsilon "
            "per flow window, largest client)",
            NOT_MEASURED + ": no run recorded epsilon",
        )
    )
    conf = r.get("per_family", {}).get("confusion")
    fig = None
    if conf and conf.get("matrix"):
        import numpy as np

        m = np.asarray(conf["matrix"], dtype=float)
        norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)
        fig, ax = plt.subplots(figsize=(6, 5))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(conf["labels"])), conf["labels"], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(conf["labels"])), conf["labels"], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.colorbar(im, ax=ax, label="share of the true class")
    p.add(figure("fig-confusion", fig, "confusion matrix (rows normalised) of the best federated model"))
    if conf and conf.get("matrix"):
        p.add(f"<p>Model: {p.text(['per_family', 'model'])}.</p>")
    p.add("</section>")


def rare(p: Page) -> None:
    """The rare-class protocol: macro-F1 per model and k, then each class's F1 (issue 17)."""
    r = p.r
    p.add('<section id="rare"><h2>Rare attacks: each attack class cut to its earliest k training flows</h2>')
    p.section_head("rare")
    sec = r.get("rare", {})
    if is_ok(sec) and sec.get("summary"):
        models, ks = list(sec["summary"]), [str(k) for k in sec["k"]]
        heads = {k: f"k = {p.num(['rare', 'k', i], 0)}" for i, k in enumerate(ks)}
        p.add(
            f"<p>Mean of {p.num(['rare', 'seeds'], 0)} seeds, the same kept rows for both models, test flows "
            "untouched: <code>fedids train</code>'s path (its default prototype head) against a random "
            "forest on single flows.</p><table><tr><th>macro-F1</th>"
            + "".join(f"<th>{heads[k]}</th>" for k in ks)
            + "</tr>"
        )
        for model in models:
            cells = "".join(p.maybe(["rare", "summary", model, k, "macro_f1"], 3, "td") for k in ks)
            p.add(f"<tr><th>{html.escape(model)}</th>{cells}</tr>")
        p.add("</table>")
        classes = sorted(
            {c for by_k in sec["summary"].values() for v in by_k.values() for c in v["per_class_f1"]}
        )
        columns = [(m, k) for m in models for k in ks]
        head = "".join(f"<th>{html.escape(m)}, {heads[k]}</th>" for m, k in columns)
        p.add(f"<table><tr><th>F1 per class</th>{head}</tr>")
        for c in classes:
            cells = "".join(
                p.maybe(["rare", "summary", m, k, "per_class_f1", c], 2, "td") for m, k in columns
            )
            p.add(f"<tr><th>{html.escape(c)}</th>{cells}</tr>")
        p.add("</table>")
    p.add("</section>")
