"""Flow data for the pipelines: the user's CSV files (with one summary line per file on stderr), or the
embedded synthetic IoT default."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedids.console import err, progress_bar
from fedids.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from fedids.data.loader import LoadResult


def load_data(paths: Sequence[Path], labels: str = "required") -> LoadResult:
    """Load CSV files with a progress bar; one summary line per file on stderr, naming the reasons of
    dropped rows (every row read is either kept or counted under a reason)."""
    from fedids.data.loader import load_flows

    with progress_bar("reading flows", None) as advance:
        result = load_flows([str(p) for p in paths], progress=advance, labels=labels)
    for rep in result.reports:
        dropped = sum(rep.dropped.values())
        reasons = ", ".join(f"{k} {v:,}" for k, v in rep.dropped.items() if v)
        unknown = ", ".join(repr(w) for w in list(rep.unknown_labels)[:3])
        err.print(
            f"[dim]{rep.path}: {rep.format}, {rep.rows_read:,} rows read, {rep.rows_kept:,} kept, "
            f"{dropped:,} dropped{f' ({reasons})' if reasons else ''}"
            f"{f'; unknown labels {unknown}' if unknown else ''}[/dim]",
            soft_wrap=True,
            highlight=False,
        )
    if len(result.frame) == 0:
        raise InputError(f"{', '.join(map(str, paths))}: no usable flows")
    return result


def load_frame(data: Sequence[Path], seed: int) -> pd.DataFrame:
    """The user's CSV files, or the embedded synthetic IoT default when none are given."""
    if data:
        return load_data(data).frame
    from fedids.data.synth import SynthConfig, generate_flows

    err.print("[dim]no --data given: using the synthetic IoT default (fedids data synth)[/dim]")
    return generate_flows(SynthConfig(seed=seed))
