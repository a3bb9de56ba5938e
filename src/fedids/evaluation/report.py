"""One self-contained HTML report from a ``results.json`` dict (written by ``fedids experiment paper``).

The page has no scripts and loads nothing: plots are PNGs (matplotlib, Agg backend) embedded as base64
``data:`` URIs, styles are inline. Every number on the page is read from the results dict and printed by
one helper, :func:`format_value`, inside an element that names its source::

    <td data-key='["modes", "entries", "none", "mcc"]' data-decimals="3">0.812</td>

so a reader (or ``tests/test_report.py``) can check each printed figure against the JSON. Prose carries
no digits of its own. The paper's published figures are part of the results dict too (``paper``, from
:data:`PAPER_REFERENCE`), so they obey the same rule.

Sections (element ids): ``summary``, ``per-attack``, ``modes``, ``shared``, ``sizes``, ``curves``,
``energy``, ``adaptive``, ``scalability``, ``mia``. Figures: :data:`FIGURE_IDS`. A section or figure whose data are
missing says so ("not measured in this run") instead of showing a number.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

SECTION_IDS: tuple[str, ...] = (
    "summary",
    "per-attack",
    "modes",
    "shared",
    "sizes",
    "curves",
    "energy",
    "adaptive",
    "scalability",
    "mia",
)
FIGURE_IDS: tuple[str, ...] = (
    "fig-per-family",
    "fig-modes",
    "fig-f1-curves",
    "fig-epsilon",
    "fig-confusion",
    "fig-energy",
    "fig-scalability",
    "fig-mia",
)
NOT_MEASURED = "not measured in this run"

PAPER_REFERENCE: dict[str, Any] = {
    "source": (
        "Rahmati, M.; Pagano, A. Federated Learning-Driven Cybersecurity Framework for IoT Networks "
        "with Privacy Preserving and Real-Time Threat Detection Capabilities. Informatics 2025, 12(3), "
        "62. doi:10.3390/informatics12030062, section 4 tables"
    ),
    # Per-attack table (percent in the paper, fractions here). Keys are fedids families.
    "per_family": {
        "ddos": {"name": "DDoS", "accuracy": 0.986, "precision": 0.974, "recall": 0.969, "f1": 0.972},
        "portscan": {
            "name": "Port Scanning",
            "accuracy": 0.972,
            "precision": 0.958,
            "recall": 0.961,
            "f1": 0.960,
        },
        "botnet": {
            "name": "Malware Propagation",
            "accuracy": 0.989,
            "precision": 0.981,
            "recall": 0.978,
            "f1": 0.979,
        },
    },
    "shared_0_5_avg_f1": 0.946,
    "mcc": 0.89,
    "accuracy": 0.982,
    "latency_ms": 21.0,
    "model_size_bytes": 1_200_000,  # "1.2 MB" after quantisation and pruning (MB read as 10^6 bytes)
    "update_bytes": 2_400_000,  # "2.4 MB" homomorphically encrypted update per round
    "mia_success_below": 0.15,  # "<15% success rate" (undefined in the paper; see fedids.evaluation.mia)
    "energy_j": 200.0,  # "Proposed" row: energy (J), no unit of work stated
    "communication_mb": 85.0,  # "Proposed" row: communication (MB)
}


# --------------------------------------------------------------------------------------------------
# Formatting: the one place numbers become text.


def format_value(value: Any, decimals: int = 3) -> str:
    """Text of one value as the report prints it.

    ``None`` and NaN -> ``"n/a"``; bool -> ``"yes"``/``"no"``; int -> thousands separators
    (``1,234``); float -> ``decimals`` places with thousands separators; anything else -> ``str``.
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:,.{decimals}f}"
    return str(value)


def lookup(results: dict, path: Sequence[Any]) -> Any:
    """``results[path[0]][path[1]]...``; lists are indexed by int. KeyError/IndexError when absent."""
    node: Any = results
    for key in path:
        node = node[key]
    return node


def _has(results: dict, path: Sequence[Any]) -> bool:
    try:
        lookup(results, path)
        return True
    except (KeyError, IndexError, TypeError):
        return False


class _Page:
    """Builds the HTML; every value goes through :meth:`num` or :meth:`text` (source-tagged)."""

    def __init__(self, results: dict) -> None:
        self.r = results
        self.parts: list[str] = []

    def _attr(self, path: Sequence[Any]) -> str:
        return html.escape(json.dumps(list(path)), quote=True)

    def num(self, path: Sequence[Any], decimals: int = 3, tag: str = "span") -> str:
        value = lookup(self.r, path)
        return (
            f'<{tag} class="num" data-key=\'{self._attr(path)}\' data-decimals="{decimals}">'
            f"{html.escape(format_value(value, decimals))}</{tag}>"
        )

    def maybe(self, path: Sequence[Any], decimals: int = 3, tag: str = "span") -> str:
        """:meth:`num` when the value exists, else an untagged "n/a"."""
        if _has(self.r, path):
            return self.num(path, decimals, tag)
        return f'<{tag} class="na">n/a</{tag}>'

    def text(self, path: Sequence[Any], tag: str = "span") -> str:
        value = lookup(self.r, path)
        shown = value if isinstance(value, str) else json.dumps(value)
        return f"<{tag} data-key='{self._attr(path)}'>{html.escape(shown)}</{tag}>"

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def section_head(self, section: str) -> None:
        """The provenance line (command, seed) and status line every section starts with."""
        self.add(self.provenance(section))
        self.add(self.status_line([section, "status"]))

    def provenance(self, section: str) -> str:
        bits = []
        if _has(self.r, [section, "command"]):
            bits.append(f"command: {self.text([section, 'command'], 'code')}")
        if _has(self.r, [section, "seed"]):
            bits.append(f"seed: {self.num([section, 'seed'])}")
        return f'<p class="prov">{" &middot; ".join(bits)}</p>' if bits else ""

    def status_line(self, path: Sequence[Any]) -> str:
        """The section's ``status`` when it is not ``ok``; :data:`NOT_MEASURED` when the section is absent."""
        if not _has(self.r, path[:1]):
            return f'<p class="missing">{NOT_MEASURED}</p>'
        if _has(self.r, path) and lookup(self.r, path) != "ok":
            return f'<p class="missing">{self.text(path)}</p>'
        return ""


def _figure(fig_id: str, fig: Any | None, caption: str, missing_reason: str = NOT_MEASURED) -> str:
    if fig is None:
        return (
            f'<figure id="{fig_id}" class="missing"><figcaption>{html.escape(caption)}: '
            f"{html.escape(missing_reason)}</figcaption></figure>"
        )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<figure id="{fig_id}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _ok(entry: Any) -> bool:
    return isinstance(entry, dict) and bool(entry) and entry.get("status", "ok") == "ok"


# --------------------------------------------------------------------------------------------------
# Sections


def _summary(p: _Page) -> None:
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
        if not _has(r, path):
            continue
        value = lookup(r, path)
        cell = (
            p.num(path, dec or 0, "td")
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else p.text(path, "td")
        )
        p.add(f"<tr><th>{label}</th>{cell}</tr>")
    p.add("</table>")
    if _has(r, ["paper", "source"]):
        p.add(f'<p class="small">Published figures beside ours come from {p.text(["paper", "source"])}.</p>')
    p.add("</section>")


def _per_attack(p: _Page) -> None:
    r = p.r
    p.add('<section id="per-attack"><h2>Per-attack detection (one-vs-rest per family)</h2>')
    sec = r.get("per_family", {})
    p.section_head("per_family")
    families = sec.get("families", {}) if _ok(sec) else {}
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
    p.add(_figure("fig-per-family", fig, "F1 per attack family, this run vs the paper"))
    p.add("</section>")


_MODE_KEYS = ("accuracy", "macro_f1", "weighted_f1", "mcc")


def _mode_entries(r: dict) -> dict:
    return r.get("modes", {}).get("entries", {})


def round_epsilon(record: dict) -> float | None:
    """The epsilon spent up to a round record: client-level DP's, else DP-SGD's (largest client)."""
    for key in ("epsilon", "dpsgd_epsilon"):
        if record.get(key) is not None:
            return float(record[key])
    return None


def _modes(p: _Page) -> None:
    r = p.r
    p.add('<section id="modes"><h2>Baselines and privacy modes</h2>')
    p.section_head("modes")
    entries = _mode_entries(r)
    if entries:
        p.add(
            "<table><tr><th>mode</th><th>accuracy</th><th>macro-F1</th><th>weighted-F1</th><th>MCC</th>"
            "<th>false alerts per thousand benign flows</th><th>attack recall</th>"
            "<th>alert threshold (validation)</th><th>false alerts per thousand benign at it</th>"
            "<th>attack recall at it</th>"
            "<th>final epsilon</th><th>epsilon protects one</th><th>wall time (s)</th></tr>"
        )
        for mode, entry in entries.items():
            name = html.escape(mode)
            if not _ok(entry):
                p.add(
                    f'<tr><th>{name}</th><td colspan="12" class="missing">'
                    f"{p.text(['modes', 'entries', mode, 'status'])}</td></tr>"
                )
                continue
            cells = "".join(p.num(["modes", "entries", mode, k], 3, "td") for k in _MODE_KEYS)
            cells += p.maybe(["modes", "entries", mode, "false_alarms_per_1000"], 2, "td")
            cells += p.maybe(["modes", "entries", mode, "attack_recall"], 3, "td")
            for key, decimals in (
                ("threshold", 4),
                ("threshold_false_alarms_per_1000", 2),
                ("threshold_attack_recall", 3),
            ):
                cells += p.maybe(["modes", "entries", mode, key], decimals, "td")
            cells += p.maybe(["modes", "entries", mode, "epsilon"], 2, "td")
            cells += f"<td>{html.escape(str(entry.get('dp_unit') or ''))}</td>"
            cells += p.maybe(["modes", "entries", mode, "seconds"], 1, "td")
            p.add(f"<tr><th>{name}</th>{cells}</tr>")
        p.add("</table>")
        if _has(r, ["paper", "mcc"]):
            p.add(
                f"<p>Paper: MCC {p.num(['paper', 'mcc'], 2)}, accuracy {p.num(['paper', 'accuracy'], 3)} "
                "(proposed framework).</p>"
            )
    ok = {m: e for m, e in entries.items() if _ok(e)}
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
    p.add(_figure("fig-modes", fig, "accuracy, macro-F1 and MCC per mode on the held-out test split"))
    p.add("</section>")


def _shared(p: _Page) -> None:
    r = p.r
    p.add('<section id="shared"><h2>Average F1 with half of the attack classes shared</h2>')
    sec = r.get("shared_0_5_avg_f1", {})
    p.section_head("shared_0_5_avg_f1")
    if _ok(sec) and "avg_f1" in sec:
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


def _sizes(p: _Page) -> None:
    r = p.r
    p.add('<section id="sizes"><h2>Model size, inference latency, update size</h2>')
    size = r.get("model_size_bytes", {})
    p.section_head("model_size_bytes")
    if _ok(size) and size.get("variants"):
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
    if _ok(lat) and lat.get("variants"):
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
    if _ok(upd):
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


def _curves(p: _Page) -> None:
    r = p.r
    p.add('<section id="curves"><h2>Training curves and confusion matrix</h2>')
    entries = {m: e for m, e in _mode_entries(r).items() if _ok(e) and e.get("history")}
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
        if _ok(shared) and shared.get("history"):
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
    p.add(_figure("fig-f1-curves", fig, "macro-F1 of the global model per round, per mode"))
    eps = {
        m: [(h["round"], round_epsilon(h)) for h in e["history"] if round_epsilon(h) is not None]
        for m, e in entries.items()
    }
    eps = {m: v for m, v in eps.items() if v}
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
        _figure(
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
    p.add(_figure("fig-confusion", fig, "confusion matrix (rows normalised) of the best federated model"))
    if conf and conf.get("matrix"):
        p.add(f"<p>Model: {p.text(['per_family', 'model'])}.</p>")
    p.add("</section>")


def _energy(p: _Page) -> None:
    r = p.r
    p.add('<section id="energy"><h2>Energy and communication</h2>')
    en, com = r.get("energy_j", {}), r.get("communication_mb", {})
    p.section_head("energy_j")
    if _ok(en) and en.get("modes"):
        p.add(
            f"<p>Radio {p.text(['energy_j', 'radio'], 'code')}; target macro-F1 "
            f"{p.num(['energy_j', 'target_macro_f1'], 3)} ({p.text(['energy_j', 'target_rule'])}). Joules per "
            "client and round, and totals over all clients until the target is first reached.</p>"
        )
        if _has(r, ["energy_j", "cpu_seconds_note"]):
            p.add(f'<p class="small">Client CPU seconds: {p.text(["energy_j", "cpu_seconds_note"])}.</p>')
        p.add(
            "<table><tr><th>mode</th><th>client CPU seconds</th><th>device</th><th>J per client-round</th>"
            "<th>rounds to target</th><th>J to target</th></tr>"
        )
        for mode, per_dev in en["modes"].items():
            for dev in per_dev:
                base = ["energy_j", "modes", mode, dev]
                p.add(
                    f"<tr><th>{html.escape(mode)}</th>{p.text(['energy_j', 'cpu_seconds_source', mode], 'td')}"
                    f"<td>{html.escape(dev)}</td>{p.maybe(base + ['mean_per_client_round_j'], 3, 'td')}"
                    f"{p.maybe(base + ['rounds_to_target'], 0, 'td')}{p.maybe(base + ['to_target_j'], 1, 'td')}</tr>"
                )
        p.add("</table>")
        base = en.get("baselines", {})
        if base:
            p.add("<table><tr><th>baseline</th><th>device</th><th>J (all clients)</th><th>what</th></tr>")
            for name, per_dev in base.items():
                for dev in per_dev:
                    if dev == "what":
                        continue
                    p.add(
                        f"<tr><th>{html.escape(name)}</th><td>{html.escape(dev)}</td>"
                        f"{p.maybe(['energy_j', 'baselines', name, dev], 1, 'td')}"
                        f"{p.text(['energy_j', 'baselines', name, 'what'], 'td')}</tr>"
                    )
            p.add("</table>")
        rapl = en.get("rapl", {})
        if rapl:
            if rapl.get("joules") is not None:
                p.add(
                    f"<p>This machine (RAPL, package energy of the whole federated grid): "
                    f"{p.num(['energy_j', 'rapl', 'joules'], 1)} J over {p.num(['energy_j', 'rapl', 'seconds'], 1)} s.</p>"
                )
            else:
                p.add(f"<p>This machine: {p.text(['energy_j', 'rapl', 'status'])}.</p>")
        p.add(
            f"<p>Paper (proposed): {p.maybe(['paper', 'energy_j'], 0)} J and {p.maybe(['paper', 'communication_mb'], 0)} MB, "
            "unit of work not stated.</p>"
        )
        radios = en.get("profiles", {}).get("radios", {})
        devices = en.get("profiles", {}).get("devices", {})
        if devices:
            p.add(
                "<h3>Device profiles</h3><table><tr><th>device</th><th>load power (W)</th><th>cores</th>"
                "<th>core speed factor</th><th>source</th></tr>"
            )
            for d in devices:
                b = ["energy_j", "profiles", "devices", d]
                p.add(
                    f"<tr><th>{html.escape(d)}</th>{p.maybe(b + ['cpu_load_w'], 1, 'td')}{p.num(b + ['cores'], 0, 'td')}"
                    f"{p.num(b + ['core_speed_factor'], 1, 'td')}{p.text(b + ['source'], 'td')}</tr>"
                )
            p.add("</table>")
        if radios:
            p.add(
                "<h3>Radio profiles</h3><table><tr><th>radio</th><th>send (J/MB)</th><th>receive (J/MB)</th>"
                "<th>source</th></tr>"
            )
            for name in radios:
                b = ["energy_j", "profiles", "radios", name]
                p.add(
                    f"<tr><th>{html.escape(name)}</th>{p.num(b + ['tx_j_per_mb'], 3, 'td')}"
                    f"{p.num(b + ['rx_j_per_mb'], 3, 'td')}{p.text(b + ['source'], 'td')}</tr>"
                )
            p.add("</table>")
    p.add("<h3>Communication</h3>")
    p.section_head("communication_mb")
    if com.get("modes"):
        p.add(
            "<table><tr><th>mode</th><th>MB per client-round</th><th>MB total</th><th>rounds to target</th>"
            "<th>MB to target</th></tr>"
        )
        for mode in com["modes"]:
            b = ["communication_mb", "modes", mode]
            p.add(
                f"<tr><th>{html.escape(mode)}</th>{p.num(b + ['per_client_round_mb'], 4, 'td')}"
                f"{p.num(b + ['total_mb'], 3, 'td')}{p.maybe(b + ['rounds_to_target'], 0, 'td')}"
                f"{p.maybe(b + ['to_target_mb'], 3, 'td')}</tr>"
            )
        for name in com.get("baselines", {}):
            b = ["communication_mb", "baselines", name]
            p.add(
                f'<tr><th>{html.escape(name)}</th><td class="na">n/a</td>{p.num(b + ["total_mb"], 3, "td")}'
                f'<td colspan="2">{p.text(b + ["what"])}</td></tr>'
            )
        p.add("</table>")
    fig = None
    modes = (en.get("modes") or {}) if _ok(en) else {}
    if modes:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
        for mode, per_dev in modes.items():
            dev = next(iter(per_dev.values()))
            rounds = [x["round"] for x in dev["per_round"]]
            mb = [x["mb"] for x in dev["per_round"]]
            ax2.plot(rounds, [sum(mb[: i + 1]) for i in range(len(mb))], marker="o", label=mode)
            j = [x["total_j"] for x in dev["per_round"]]
            if all(v is not None for v in j):
                ax1.plot(rounds, [sum(j[: i + 1]) for i in range(len(j))], marker="o", label=f"{mode}")
        ax1.set_title(f"cumulative J ({next(iter(next(iter(modes.values()))))})", fontsize=9)
        ax2.set_title("cumulative MB (all clients)", fontsize=9)
        for ax in (ax1, ax2):
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.legend(fontsize=7)
        if ax1.lines:
            ax1.legend(fontsize=7)
    p.add(_figure("fig-energy", fig, "cumulative client energy and traffic per round"))
    p.add("</section>")


_ADAPTIVE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("mean_local_epochs", "local epochs (mean)", 2),
    ("mean_clients", "clients per round (mean)", 1),
    ("rounds", "rounds run", 0),
    ("final_macro_f1", "final macro-F1", 3),
    ("rounds_to_target", "rounds to target", 0),
    ("to_target_j", "J to target", 2),
    ("to_target_mb", "MB to target", 3),
    ("j_vs_fedavg", "J vs FedAvg", 2),
    ("mb_vs_fedavg", "MB vs FedAvg", 2),
    ("upload_bytes_per_client_round", "upload per client-round (bytes)", 0),
    ("total_j", "J (all rounds)", 2),
    ("total_mb", "MB (all rounds)", 3),
)


def _adaptive(p: _Page) -> None:
    r = p.r
    p.add('<section id="adaptive"><h2>Adaptive learning strategies</h2>')
    sec = r.get("adaptive", {})
    p.section_head("adaptive")
    runs = sec.get("runs", {}) if _ok(sec) else {}
    if runs:
        p.add(
            f"<p>Plain FedAvg against energy-aware client selection with adaptive local epochs, and against "
            f"compressed updates. Every run: strategy {p.text(['adaptive', 'strategy'], 'code')}, a share of "
            f"{p.num(['adaptive', 'fraction_train'], 2)} of the {p.num(['adaptive', 'clients'], 0)} clients per "
            f"round, same partition and seed. Target macro-F1 {p.num(['adaptive', 'target_macro_f1'], 3)} "
            f"({p.text(['adaptive', 'target_rule'])}); joules and MB are totals over all clients until a run "
            "first reaches it.</p>"
        )
        p.add(
            f"<p>Energy budget of every device in the energy-aware run: {p.num(['adaptive', 'energy_budget_j'], 2)} J "
            f"({p.text(['adaptive', 'budget_rule'])}), local epochs between one and "
            f"{p.num(['adaptive', 'max_local_epochs'], 0)}. Radio {p.text(['adaptive', 'radio'], 'code')}.</p>"
        )
        p.add(f'<p class="small">Energy model: {p.text(["adaptive", "energy_model"])}.</p>')
        fleet = sec.get("fleet", {})
        if fleet:
            p.add(
                "<p>Fleet: "
                + ", ".join(f"{html.escape(d)} {p.num(['adaptive', 'fleet', d], 0)}" for d in fleet)
                + " clients.</p>"
            )
        head = "".join(f"<th>{label}</th>" for _, label, _ in _ADAPTIVE_COLUMNS)
        p.add(f"<table><tr><th>run</th><th>selection</th><th>compression</th>{head}</tr>")
        for name, entry in runs.items():
            b = ["adaptive", "runs", name]
            if not _ok(entry):
                p.add(
                    f'<tr><th>{html.escape(name)}</th><td colspan="{len(_ADAPTIVE_COLUMNS) + 2}" '
                    f'class="missing">{p.text(b + ["status"])}</td></tr>'
                )
                continue
            cells = "".join(p.maybe(b + [key], dec, "td") for key, _, dec in _ADAPTIVE_COLUMNS)
            p.add(
                f"<tr><th>{html.escape(name)}</th>{p.text(b + ['selection'], 'td')}"
                f"{p.text(b + ['compression'], 'td')}{cells}</tr>"
            )
        p.add('</table><ul class="small">')
        for name, entry in runs.items():
            b = ["adaptive", "runs", name]
            stopped = f"; stopped early: {p.text(b + ['stopped'])}" if entry.get("stopped") else ""
            p.add(f"<li><b>{html.escape(name)}</b>: {p.text(b + ['what'])}{stopped}</li>")
        p.add("</ul>")
    p.add("</section>")


def _scalability(p: _Page) -> None:
    r = p.r
    p.add('<section id="scalability"><h2>Scalability of the simulation</h2>')
    sec = r.get("scalability", {})
    p.section_head("scalability")
    runs = sec.get("runs", []) if _ok(sec) else []
    if runs:
        p.add(
            "<table><tr><th>clients</th><th>sampled per round</th><th>privacy</th><th>s per round</th>"
            "<th>first round (s)</th><th>server peak RSS (MB)</th><th>Python heap peak (MB)</th>"
            "<th>bytes per round</th></tr>"
        )
        for i, run in enumerate(runs):
            b = ["scalability", "runs", i]
            if run.get("status", "ok") != "ok":
                p.add(
                    "<tr>"
                    + p.num(b + ["clients"], 0, "td")
                    + "<td></td>"
                    + p.text(b + ["privacy"], "td")
                    + f'<td colspan="5" class="missing">{p.text(b + ["status"])}</td></tr>'
                )
                continue
            p.add(
                "<tr>"
                + p.num(b + ["clients"], 0, "td")
                + p.maybe(b + ["sampled_per_round"], 0, "td")
                + p.text(b + ["privacy"], "td")
                + p.maybe(b + ["seconds_per_round"], 2, "td")
                + p.maybe(b + ["first_round_seconds"], 2, "td")
                + p.maybe(b + ["server_peak_rss_mb"], 1, "td")
                + p.maybe(b + ["tracemalloc_peak_mb"], 1, "td")
                + p.maybe(b + ["bytes_per_round"], 0, "td")
                + "</tr>"
            )
        p.add("</table>")
        ex = sec.get("extrapolation", {})
        if ex.get("text"):
            p.add(f"<p>{p.text(['scalability', 'extrapolation', 'text'])}</p>")
    fig = None
    ok_runs = [x for x in runs if x.get("seconds_per_round") is not None]
    if ok_runs:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
        for priv in sorted({x["privacy"] for x in ok_runs}):
            pts = sorted(
                (x["clients"], x["seconds_per_round"], x.get("server_peak_rss_mb"))
                for x in ok_runs
                if x["privacy"] == priv
            )
            ax1.plot([a for a, _, _ in pts], [b for _, b, _ in pts], marker="o", label=priv)
            ax2.plot(
                [a for a, _, c in pts if c is not None],
                [c for _, _, c in pts if c is not None],
                marker="o",
                label=priv,
            )
        for ax, label in ((ax1, "seconds per round"), (ax2, "server peak RSS (MB)")):
            ax.set_xscale("log")
            ax.set_xlabel("simulated clients")
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
    p.add(_figure("fig-scalability", fig, "time per round and server memory against the number of clients"))
    p.add("</section>")


def _mia(p: _Page) -> None:
    r = p.r
    p.add('<section id="mia"><h2>Membership inference</h2>')
    sec = r.get("mia", {})
    p.section_head("mia")
    models = sec.get("models", {})
    if models:
        if "what" in sec:
            p.add(f"<p>{p.text(['mia', 'what'])}</p>")
        p.add(
            "<table><tr><th>model</th><th>epsilon</th><th>attack</th><th>AUC</th><th>advantage (best threshold)</th>"
            "<th>attack accuracy</th><th>advantage (attacker's own threshold)</th><th>chance AUC</th>"
            "<th>chance advantage</th><th>examples per side</th></tr>"
        )
        for model, entry in models.items():
            if not _ok(entry):
                p.add(
                    f'<tr><th>{html.escape(model)}</th><td colspan="9" class="missing">'
                    f"{p.text(['mia', 'models', model, 'status'])}</td></tr>"
                )
                continue
            for attack in ("loss_threshold", "shadow_model"):
                b = ["mia", "models", model, attack]
                if not _has(r, b):
                    continue
                if isinstance(lookup(r, b), str):
                    p.add(
                        f"<tr><th>{html.escape(model)}</th><td></td><td>{html.escape(attack)}</td>"
                        f'<td colspan="7" class="missing">{p.text(b)}</td></tr>'
                    )
                    continue
                p.add(
                    f"<tr><th>{html.escape(model)}</th>{p.maybe(['mia', 'models', model, 'epsilon'], 2, 'td')}"
                    f"<td>{html.escape(attack)}</td>{p.num(b + ['auc'], 3, 'td')}{p.num(b + ['advantage'], 3, 'td')}"
                    f"{p.num(b + ['accuracy'], 3, 'td')}{p.num(b + ['advantage_at_threshold'], 3, 'td')}"
                    f"{p.maybe(b + ['chance_auc_95'], 3, 'td')}{p.maybe(b + ['chance_advantage_95'], 3, 'td')}"
                    f"{p.num(b + ['members'], 0, 'td')}</tr>"
                )
        p.add("</table>")
        p.add(
            f"<p>Paper: attack success below {p.maybe(['paper', 'mia_success_below'], 2)} (success undefined there; "
            "read here as advantage). The chance columns give what a score without any membership information "
            "reaches on the same examples (ninety-fifth percentile over shuffled membership labels): an attack "
            "is shown to beat guessing only above them.</p>"
        )
    fig = None
    bars = [
        (f"{m}\n{a}", models[m][a]["auc"])
        for m in models
        if _ok(models[m])
        for a in ("loss_threshold", "shadow_model")
        if isinstance(models[m].get(a), dict)
    ]
    if bars:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar(range(len(bars)), [b for _, b in bars])
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(bars)), [a for a, _ in bars], fontsize=7)
        ax.set_ylabel("attack AUC")
        ax.set_ylim(0.3, 1.0)
    p.add(_figure("fig-mia", fig, "membership-inference AUC per model and attack (dashed: chance)"))
    p.add("</section>")


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:right;vertical-align:top}th{background:#f4f4f4;text-align:left}td:not(.num){text-align:left}
td.num{font-variant-numeric:tabular-nums;text-align:right}.missing,.na{color:#a33;font-style:italic}
.prov{font-size:.8em;color:#555}code{font-size:.85em;background:#f6f6f6;padding:0 .2em}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.85em;color:#555}.small{font-size:.85em}
table.kv th{width:12em}
"""


def render_report(results: dict) -> str:
    """The report's HTML (one string) for a results dict; see the module docstring."""
    p = _Page(results)
    p.add(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>fedids evaluation report</title>"
        f"<style>{_STYLE}</style></head><body><h1>fedids: evaluation against the paper's section four</h1>"
    )
    p.add(
        "<p>Federated, privacy-preserving intrusion detection (GRU over per-host windows of flows). Every "
        "figure below was measured by this run unless it is marked as the paper's or as an estimate.</p>"
    )
    for build in (
        _summary,
        _per_attack,
        _modes,
        _shared,
        _sizes,
        _curves,
        _energy,
        _adaptive,
        _scalability,
        _mia,
    ):
        build(p)
    p.add("</body></html>")
    return "".join(p.parts)


def write_report(results: dict, path: str) -> None:
    """Render and write ``path`` atomically (temporary name, then rename)."""
    import os
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    tmp.write_text(render_report(results), encoding="utf-8")
    os.replace(tmp, target)
