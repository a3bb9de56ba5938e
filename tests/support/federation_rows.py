"""Real CICIDS2017 rows for small three-tier simulations: PortScan and benign/DDoS traffic, 4-flow windows."""

from __future__ import annotations

from fedids.data.loader import load_flows
from fedids.task import PreparedData, prepare
from support import paths

FILES = (
    paths.CICIDS / "trafficlabelling-mondirkb" / "baseline_portscan.csv",
    paths.CICIDS / "trafficlabelling-netsentinel" / "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
)


def portscan_and_ddos_rows() -> PreparedData:
    """The two files' flows prepared with 4-flow windows and the ``label-time`` split."""
    return prepare(load_flows(list(FILES)).frame, window=4, split="label-time")
