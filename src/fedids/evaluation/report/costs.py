"""Report sections about cost: energy and communication, the adaptive strategies, scalability."""

from __future__ import annotations

import html
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from fedids.evaluation.report.page import (
    Page,
    figure,
    has,
    is_ok,
)


def energy(p: Page) -> None:
    r = p.r
    p.add('<section id="energy"><h2>Energy and communication</h2>')
    en, com = r.get("energy_j", {}), r.get("communication_mb", {})
    p.section_head("energy_j")
    if is_ok(en) and en.get("modes"):
        _energy_modes(p, en)
        _energy_baselines(p, en)
        _profiles(p, en)
    _communication(p, com)
    p.add(figure("fig-energy", _energy_figure(en), "cumulative client energy and traffic per round"))
    p.add("</section>")


def _energy_modes(p: Page, en: dict) -> None:
    """Joules per client-round and to the target, per mode and device."""
    r = p.r
    p.add(
        f"<p>Radio {p.text(['energy_j', 'radio'], 'code')}; target macro-F1 "
        f"{p.num(['energy_j', 'target_macro_f1'], 3)} ({p.text(['energy_j', 'target_rule'])}). Joules per "
        "client and round, and totals over all clients until the target is first reached.</p>"
    )
    if has(r, ["energy_j", "cpu_seconds_note"]):
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


def _energy_baselines(p: Page, en: dict) -> None:
    """The baselines' joules, this machine's RAPL reading, and the paper's figures."""
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


def _profiles(p: Page, en: dict) -> None:
    """The device and radio profiles the joules come from."""
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


def _communication(p: Page, com: dict) -> None:
    """MB per client-round, in total and to the target, per mode; the baselines' uploads."""
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


def _energy_figure(en: dict) -> Any | None:
    """Cumulative joules and MB per round, per mode (None when no mode has energy figures)."""
    fig = None
    modes = (en.get("modes") or {}) if is_ok(en) else {}
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
    return fig


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


def adaptive(p: Page) -> None:
    r = p.r
    p.add('<section id="adaptive"><h2>Adaptive learning strategies</h2>')
    sec = r.get("adaptive", {})
    p.section_head("adaptive")
    runs = sec.get("runs", {}) if is_ok(sec) else {}
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
            if not is_ok(entry):
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


def scalability(p: Page) -> None:
    r = p.r
    p.add('<section id="scalability"><h2>Scalability of the simulation</h2>')
    sec = r.get("scalability", {})
    p.section_head("scalability")
    runs = sec.get("runs", []) if is_ok(sec) else []
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
    p.add(figure("fig-scalability", fig, "time per round and server memory against the number of clients"))
    p.add("</section>")
