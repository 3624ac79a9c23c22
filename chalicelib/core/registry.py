"""The platforms built into the bridge: each name and where its connector lives.

A plain table, importing nothing of the bridge, so that any layer may ask which platforms exist
without loading a connector. Adding a code platform adds one line here.
"""

from __future__ import annotations

# Platform → "module:Class". The module is imported on first use, so a cold start pays for the one
# platform it serves.
BUILTIN: dict[str, str] = {
    "deliveroo": "chalicelib.connectors.deliveroo:DeliverooConnector",
    "ubereats": "chalicelib.connectors.ubereats:UberEatsConnector",
    "mews": "chalicelib.connectors.mews:MewsConnector",
    "thefork": "chalicelib.connectors.thefork:TheForkConnector",
    "meta": "chalicelib.connectors.meta:MetaLeadAdsConnector",
    "sevenrooms": "chalicelib.connectors.sevenrooms:SevenRoomsConnector",
    "zelty": "chalicelib.connectors.zelty:ZeltyConnector",
    "oracle": "chalicelib.connectors.oracle:OracleOperaConnector",
    "simphony": "chalicelib.connectors.simphony:OracleSimphonyConnector",
}


def builtin_names() -> list[str]:
    return list(BUILTIN)


def location(platform: str) -> tuple[str, str] | None:
    """``(module, class name)`` of a built-in platform's connector, or None."""
    entry = BUILTIN.get(platform)
    if entry is None:
        return None
    module, _, name = entry.partition(":")
    return module, name
