"""One self-contained HTML report from a ``results.json`` dict (written by ``fedids experiment paper``).

The page has no scripts and loads nothing: plots are PNGs (matplotlib, Agg backend) embedded as base64
``data:`` URIs, styles are inline. Every number on the page is read from the results dict and printed by
one helper, :func:`format_value`, inside an element that names its source::

    <td data-key='["modes", "entries", "none", "mcc"]' data-decimals="3">0.812</td>

so a reader (or ``tests/evaluation/test_report.py``) can check each printed figure against the JSON. Prose carries
no digits of its own. The paper's published figures are part of the results dict too (``paper``, from
:data:`PAPER_REFERENCE`), so they obey the same rule.

Sections (element ids): ``summary``, ``per-attack``, ``modes``, ``shared``, ``sizes``, ``curves``,
``energy``, ``adaptive``, ``scalability``, ``mia``, ``rare``. Figures: :data:`FIGURE_IDS`. A section or figure whose data are
missing says so ("not measured in this run") instead of showing a number.
"""

from __future__ import annotations

from fedids.evaluation.report import costs, privacy, quality
from fedids.evaluation.report.page import (
    FIGURE_IDS,
    NOT_MEASURED,
    PAPER_REFERENCE,
    SECTION_IDS,
    Page,
    format_value,
    lookup,
    round_epsilon,
)

__all__ = [
    "FIGURE_IDS",
    "NOT_MEASURED",
    "PAPER_REFERENCE",
    "SECTION_IDS",
    "format_value",
    "lookup",
    "render_report",
    "round_epsilon",
    "write_report",
]

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
    p = Page(results)
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
        quality.summary,
        quality.per_attack,
        quality.modes,
        quality.shared,
        quality.sizes,
        quality.curves,
        costs.energy,
        costs.adaptive,
        costs.scalability,
        privacy.mia,
        privacy.privacy_table,
        quality.rare,
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
