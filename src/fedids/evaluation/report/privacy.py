"""Report sections about privacy: membership inference against each model, and the privacy table (each
mode's epsilon, against whom, the canary audit's lower bound, quality)."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt

from fedids.evaluation.report.page import (
    Page,
    figure,
    has,
    is_ok,
    lookup,
)


def mia(p: Page) -> None:
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
            if not is_ok(entry):
                p.add(
                    f'<tr><th>{html.escape(model)}</th><td colspan="9" class="missing">'
                    f"{p.text(['mia', 'models', model, 'status'])}</td></tr>"
                )
                continue
            for attack in ("loss_threshold", "shadow_model"):
                b = ["mia", "models", model, attack]
                if not has(r, b):
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
        if is_ok(models[m])
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
    p.add(figure("fig-mia", fig, "membership-inference AUC per model and attack (dashed: chance)"))
    p.add("</section>")


def privacy_table(p: Page) -> None:
    """Section ``privacy``: per mode, the epsilon and against whom, the audited lower bound, quality."""
    p.add('<section id="privacy"><h2>Privacy: epsilon, against whom, audited lower bound</h2>')
    p.section_head("privacy")
    rows = p.r.get("privacy", {}).get("rows", {})
    if rows:
        p.add(f"<p>{p.text(['privacy', 'what'])}</p>")
        p.add(
            "<table><tr><th>mode</th><th>epsilon (accountant)</th><th>protects one</th>"
            "<th>holds against</th><th>audited lower bound</th><th>audit AUC</th><th>macro-F1</th><th>MCC</th>"
            "<th>audit command</th></tr>"
        )
        for mode, row in rows.items():
            b = ["privacy", "rows", mode]
            audit = b + ["audit"]
            cells = p.maybe(b + ["epsilon"], 2, "td") if row.get("dp_unit") else "<td>none</td>"
            for key in ("dp_unit", "dp_against"):
                cells += p.text(b + [key], "td") if row.get(key) else "<td>-</td>"
            cells += p.maybe(audit + ["lower_bound"], 2, "td") + p.maybe(audit + ["auc"], 3, "td")
            if is_ok(row):
                cells += p.num(b + ["macro_f1"], 4, "td") + p.num(b + ["mcc"], 4, "td")
            else:
                cells += f'<td colspan="2" class="missing">{p.text(b + ["status"])}</td>'
            cells += (
                f"<td>{p.text(audit + ['command'], 'code')}</td>"
                if has(p.r, audit + ["command"])
                else "<td></td>"
            )
            p.add(f"<tr><th>{html.escape(mode)}</th>{cells}</tr>")
        p.add("</table>")
        p.add(
            "<p>A lower bound far below the accountant's epsilon is expected (the one-run audit is loose); a "
            "bound above it would falsify the claim. The model without DP is the audit's control: its bound "
            "shows that the audit can detect leakage on these flows.</p>"
        )
    p.add("</section>")
