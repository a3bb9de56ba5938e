"""The report's page builder: every printed value goes through :class:`Page` (tagged with its source in the
results dict) and :func:`format_value`; section and figure ids; the paper's reference figures."""

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
    "privacy",
    "rare",
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


def has(results: dict, path: Sequence[Any]) -> bool:
    try:
        lookup(results, path)
        return True
    except (KeyError, IndexError, TypeError):
        return False


class Page:
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
        if has(self.r, path):
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
        if has(self.r, [section, "command"]):
            bits.append(f"command: {self.text([section, 'command'], 'code')}")
        if has(self.r, [section, "seed"]):
            bits.append(f"seed: {self.num([section, 'seed'])}")
        return f'<p class="prov">{" &middot; ".join(bits)}</p>' if bits else ""

    def status_line(self, path: Sequence[Any]) -> str:
        """The section's ``status`` when it is not ``ok``; :data:`NOT_MEASURED` when the section is absent."""
        if not has(self.r, path[:1]):
            return f'<p class="missing">{NOT_MEASURED}</p>'
        if has(self.r, path) and lookup(self.r, path) != "ok":
            return f'<p class="missing">{self.text(path)}</p>'
        return ""


def figure(fig_id: str, fig: Any | None, caption: str, missing_reason: str = NOT_MEASURED) -> str:
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


def is_ok(entry: Any) -> bool:
    return isinstance(entry, dict) and bool(entry) and entry.get("status", "ok") == "ok"


MODE_KEYS = ("accuracy", "macro_f1", "weighted_f1", "mcc")


def mode_entries(r: dict) -> dict:
    return r.get("modes", {}).get("entries", {})


def round_epsilon(record: dict) -> float | None:
    """The epsilon spent up to a round record: client-level DP's, else DP-SGD's (largest client)."""
    for key in ("epsilon", "dpsgd_epsilon"):
        if record.get(key) is not None:
            return float(record[key])
    return None
