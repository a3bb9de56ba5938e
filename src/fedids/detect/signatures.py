"""Payload signatures of well-known scanning tools, matched by the packet extractor.

Flow features cannot tell a scanner's service and script probes from ordinary short connections:
``nmap -p 80 -A`` probes one port and then opens ~30 HTTP connections that, flow by flow, look like
CICIDS2017's LOIC HTTP flood (docs/edge.md). The tools say who they are, though: their default HTTP
User-Agent strings are what Suricata's Emerging Threats ``ET SCAN`` rules match (for example "ET SCAN
Nmap Scripting Engine User-Agent Detected"). These byte patterns are looked for in TCP payloads
during extraction (a substring search per payload-carrying packet, in C), and a flow that carries one is
recorded with the tool's name (column ``tool`` of the flow frame). :mod:`fedids.detect.behaviour` turns
such flows into ``PortScan`` alerts that name the tool; a signature outranks the model's guess.

Only reconnaissance tools are listed: their traffic is a scan whatever the model thinks of a flow. A
patterned User-Agent is trivial to change, so this catches default configurations only: one more layer,
not a substitute for the model.
"""

from __future__ import annotations

TOOL = "tool"
"""Optional flow-frame column: the scanning tool whose payload signature the flow carried (or None);
present only in batches where some flow matched."""

SCANNER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"Nmap Scripting Engine", "nmap"),  # NSE's default User-Agent
    (b"User-Agent: masscan/", "masscan"),  # masscan --banners HTTP probe
    (b"User-Agent: zgrab/", "zgrab"),  # ZMap project's banner grabber
)


def match_scanner(payload: bytes) -> str | None:
    """The tool whose signature ``payload`` contains, or ``None``."""
    for pattern, tool in SCANNER_SIGNATURES:
        if pattern in payload:
            return tool
    return None


def conversation_key(protocol: int, a_ip: str, a_port: int, b_ip: str, b_port: int) -> tuple:
    """A key for a flow that is the same whichever direction a packet goes."""
    a, b = (a_ip, a_port), (b_ip, b_port)
    return (protocol, a, b) if a <= b else (protocol, b, a)
