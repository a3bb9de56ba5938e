"""Where the tests find the checkout and the real data samples shared beside it (``../shared/data``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO / ".." / "shared" / "data"
CICIDS = SHARED_DATA / "cicids2017"
PCAPS = SHARED_DATA / "pcaps"
